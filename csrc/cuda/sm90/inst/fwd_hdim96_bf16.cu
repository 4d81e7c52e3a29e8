// sm90 forward, head_dim 96, bf16.
#include "cuda/sm90/fwd_launch.h"

FLASH_SM90_INSTANTIATE_FWD(cutlass::bfloat16_t, 96)
