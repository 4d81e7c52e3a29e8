// kvcache attention kernel instantiation (file name: head-dim bucket and dtype); smaller head dims
// (multiples of 8) run in the smallest built bucket that holds them, extra dims predicated off.
#include "cuda/kvcache/kvcache_attn_kernel.cuh"

FLASH_KVCACHE_INSTANTIATE(kHalf, 96)
