// sm90 forward, head_dim 64, bf16, the 192 x 128 tile with three consumer warpgroups (opt-in:
// FLASH_SM90_FWD_D64_M192=1, fwd_api.cu).
#include "cuda/sm90/fwd_launch.h"

FLASH_SM90_INSTANTIATE_FWD_ALT(cutlass::bfloat16_t, 64)
