// flash::apply_rotary: argument validation and dispatch to the CPU or CUDA backend.
#include <string>

#include "flash/errors.h"
#include "flash/rotary.h"
#include "rotary/rotary_backend.h"

namespace flash {
namespace {

void validate(RotaryParams& p) {
  check_arg(p.device == Device::kCPU || p.device == Device::kCUDA, "device", "must be cpu or cuda");
  check_arg(p.batch >= 0, "batch", "must be >= 0, got " + std::to_string(p.batch));
  check_arg(p.seqlen >= 0, "seqlen", "must be >= 0, got " + std::to_string(p.seqlen));
  check_arg(p.nheads >= 0, "nheads", "must be >= 0, got " + std::to_string(p.nheads));
  // An empty x has nothing to rotate, and torch hands out null data pointers for it.
  const bool empty = p.batch == 0 || p.seqlen == 0 || p.nheads == 0;
  check_arg(empty || p.x != nullptr, "x", "must not be null");
  check_arg(empty || p.out != nullptr, "out", "must not be null");
  check_arg(p.cos != nullptr, "cos", "must not be null");
  check_arg(p.sin != nullptr, "sin", "must not be null");
  check_arg(p.headdim > 0, "headdim", "must be > 0, got " + std::to_string(p.headdim));
  check_arg(p.rotary_dim > 0 && p.rotary_dim % 2 == 0, "rotary_dim",
            "must be even and > 0, got " + std::to_string(p.rotary_dim));
  check_arg(p.rotary_dim <= p.headdim, "rotary_dim",
            "must be <= headdim (" + std::to_string(p.headdim) + "), got " + std::to_string(p.rotary_dim));
  check_arg(p.seqlen_ro > 0, "cos", "must have at least one row (seqlen_ro > 0)");
  const int half = p.rotary_dim / 2;
  if (p.cos_row_stride == 0) p.cos_row_stride = half;
  if (p.sin_row_stride == 0) p.sin_row_stride = half;
  check_arg(p.cos_row_stride >= half, "cos", "row stride must be >= rotary_dim / 2");
  check_arg(p.sin_row_stride >= half, "sin", "row stride must be >= rotary_dim / 2");
  if (p.cu_seqlens == nullptr) {
    if (p.seqlen_offsets == nullptr) {
      check_arg(p.seqlen_offset >= 0, "seqlen_offsets", "must be >= 0");
      // flash-attn asserts this for an int offset; tensor offsets are only known on the device.
      check_arg(static_cast<int64_t>(p.seqlen_offset) + p.seqlen <= p.seqlen_ro, "cos",
                "seqlen_ro (" + std::to_string(p.seqlen_ro) + ") must be >= seqlen_offsets + seqlen (" +
                    std::to_string(static_cast<int64_t>(p.seqlen_offset) + p.seqlen) + ")");
    }
  } else {
    check_arg(p.seqlen_offset >= 0, "seqlen_offsets", "must be >= 0");
  }
  if (p.out == p.x) {
    check_arg(p.out_row_stride == p.x_row_stride && p.out_head_stride == p.x_head_stride &&
                  (p.cu_seqlens != nullptr || p.out_batch_stride == p.x_batch_stride),
              "out", "in-place rotation (out == x) needs out's strides to equal x's");
  }
}

}  // namespace

void apply_rotary(RotaryParams& p, void* stream) {
  validate(p);
  if (p.batch == 0 || p.seqlen == 0 || p.nheads == 0) return;
  if (p.device == Device::kCPU) {
    rotary::run_cpu(p);
    return;
  }
#if defined(FLASH_ATTN_WITH_CUDA)
  rotary::run_cuda(p, stream);
#else
  (void)stream;
  throw DeviceError("apply_rotary: x is a CUDA tensor but flash_attn was built without CUDA");
#endif
}

}  // namespace flash
