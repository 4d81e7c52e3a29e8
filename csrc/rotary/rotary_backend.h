// Backends of flash::apply_rotary. Both receive params that rotary_api.cpp has validated and
// normalised (cos/sin row strides filled in).
#pragma once

#include "flash/rotary.h"

namespace flash::rotary {

void run_cpu(const RotaryParams& p);

// Defined in rotary_cuda.cu; only linked when the library is built with CUDA.
void run_cuda(const RotaryParams& p, void* stream);

}  // namespace flash::rotary
