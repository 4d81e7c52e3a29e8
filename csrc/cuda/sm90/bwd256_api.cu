// Placeholder until the wide-head-dim sm90 backward lands: refuses every call (the dispatcher
// then runs the sm80 backward), naming head_dim.
#include "cuda/sm90/sm90_bwd256.h"

#include <stdexcept>

namespace flash::sm90 {

bool supports_bwd256(const BwdParams&, std::string* why) {
  if (why) *why = "head_dim";
  return false;
}

size_t bwd256_workspace_size(const BwdParams&) { return 0; }

void run_bwd256(const BwdParams&, void*) {
  throw std::logic_error("run_bwd256 called although supports_bwd256 refused");
}

}  // namespace flash::sm90
