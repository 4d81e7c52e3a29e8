// sm90 backward, head_dim 192, fp16 (wide-head-dim kernel, bwd256_*.h).
#include "cuda/sm90/bwd256_launch.h"

FLASH_SM90_INSTANTIATE_BWD256(cutlass::half_t, 192)
