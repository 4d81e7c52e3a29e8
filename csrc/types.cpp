// Names of the public enums, for messages and the Python side.
#include "flash/types.h"

namespace flash {

const char* to_string(DType t) {
  switch (t) {
    case DType::kFloat32: return "float32";
    case DType::kFloat16: return "float16";
    case DType::kBFloat16: return "bfloat16";
  }
  return "unknown";
}

const char* to_string(Impl i) {
  switch (i) {
    case Impl::kCpu: return "cpu";
    case Impl::kSm80: return "sm80";
    case Impl::kSm90: return "sm90";
  }
  return "unknown";
}

}  // namespace flash
