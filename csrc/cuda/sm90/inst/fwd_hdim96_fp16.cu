// sm90 forward, head_dim 96, fp16.
#include "cuda/sm90/fwd_launch.h"

FLASH_SM90_INSTANTIATE_FWD(cutlass::half_t, 96)
