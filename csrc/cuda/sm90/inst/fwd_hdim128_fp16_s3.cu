// sm90 forward, head_dim 128, fp16, the 128 x 128 tile with 3 K/V stages and 1 Q buffer for calls
// without a window (opt-in: FLASH_SM90_FWD_D128_TILE=2, fwd_api.cu).
#include "cuda/sm90/fwd_launch.h"

FLASH_SM90_INSTANTIATE_FWD_TILE(cutlass::half_t, 128, 2)
