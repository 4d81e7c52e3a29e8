// sm90 backward, head_dim 96, bf16.
#include "cuda/sm90/bwd_launch.h"

FLASH_SM90_INSTANTIATE_BWD(cutlass::bfloat16_t, 96)
