// sm90 forward, head_dim 128, bf16, the 128 x 176 tile variant for calls without a window.
#include "cuda/sm90/fwd_launch.h"

FLASH_SM90_INSTANTIATE_FWD_WIDE_N(cutlass::bfloat16_t, 128)
