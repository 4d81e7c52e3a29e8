// OpenMP is optional: without it the pragmas vanish and loops run serially.
#pragma once

#if defined(_OPENMP)
#include <omp.h>
#define FLASH_CPU_PRAGMA(x) _Pragma(#x)
#else
#define FLASH_CPU_PRAGMA(x)
#endif

// Parallel loop over independent tasks of uneven cost (sequences of different lengths, masked
// blocks), hence dynamic scheduling. Each task writes disjoint outputs, so the result does not
// depend on the thread count.
#define FLASH_CPU_PARALLEL_FOR FLASH_CPU_PRAGMA(omp parallel for schedule(dynamic, 1))
