// sm90 forward, head_dim 192, bf16.
#include "cuda/sm90/fwd_launch.h"

FLASH_SM90_INSTANTIATE_FWD(cutlass::bfloat16_t, 192)
