// CPU backend: the readable, multi-threaded reference implementation of the API's semantics.
// Params arrive validated and canonicalised (causal folded into window_right == 0).
#pragma once

#include "flash/params.h"

namespace flash::cpu {

void fwd(const FwdParams& params);
void bwd(const BwdParams& params);
void fwd_kvcache(const KvcacheParams& params);

}  // namespace flash::cpu
