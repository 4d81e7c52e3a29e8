// Argument validation shared by every entry point. Each check throws flash::Error naming the
// argument (in flash-attn's vocabulary: q, k, v, cu_seqlens_q, window_size, ...). Validation also
// canonicalises the params so backends see one form: causal folds into window_right == 0 and
// windows that cannot bind become -1.
#pragma once

#include "flash/params.h"

namespace flash::detail {

void validate_fwd(FwdParams& p);
void validate_bwd(BwdParams& p);
void validate_kvcache(KvcacheParams& p);

// Checks that the caller supplied at least `needed` bytes of workspace.
void check_workspace(const FwdParams& p, size_t needed);

}  // namespace flash::detail
