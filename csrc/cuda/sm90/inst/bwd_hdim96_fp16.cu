// sm90 backward, head_dim 96, fp16.
#include "cuda/sm90/bwd_launch.h"

FLASH_SM90_INSTANTIATE_BWD(cutlass::half_t, 96)
