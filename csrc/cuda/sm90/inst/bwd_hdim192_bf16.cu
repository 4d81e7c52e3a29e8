// sm90 backward, head_dim 192, bf16 (wide-head-dim kernel, bwd256_*.h).
#include "cuda/sm90/bwd256_launch.h"

FLASH_SM90_INSTANTIATE_BWD256(cutlass::bfloat16_t, 192)
