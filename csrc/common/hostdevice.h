// FLASH_HD marks functions that compile for both the host (CPU backend) and the device (kernels).
#pragma once

#if defined(__CUDACC__)
#define FLASH_HD __host__ __device__ __forceinline__
#else
#define FLASH_HD inline
#endif
