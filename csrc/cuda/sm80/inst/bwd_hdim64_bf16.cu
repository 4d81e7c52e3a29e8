// sm80 backward main kernel for head-dim bucket 64, bf16.
#include "cuda/sm80/bwd_launch.cuh"

FLASH_SM80_BWD_INSTANTIATE(__nv_bfloat16, 64)
