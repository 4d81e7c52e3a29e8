// sm80 backward main kernel for head-dim bucket 64, fp16.
#include "cuda/sm80/bwd_launch.cuh"

FLASH_SM80_BWD_INSTANTIATE(__half, 64)
