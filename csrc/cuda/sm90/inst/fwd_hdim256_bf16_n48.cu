// sm90 forward, head_dim 256, bf16, the 128 x 48 tile with 2 Q buffers (opt-in:
// FLASH_SM90_FWD_D256_TILE=1, fwd_api.cu).
#include "cuda/sm90/fwd_launch.h"

FLASH_SM90_INSTANTIATE_FWD_TILE(cutlass::bfloat16_t, 256, 1)
