// CPU backend of flash::apply_rotary: fp32 math on each head vector, one (sequence, token) row per
// task. Also the reference that the CUDA kernel is tested against (same fp32 formula, same rounding).
#include <algorithm>
#include <vector>

#include "common/rotary.h"
#include "cpu/parallel.h"
#include "cpu/tensor_access.h"
#include "rotary/rotary_backend.h"

namespace flash::rotary {

void run_cpu(const RotaryParams& p) {
  const int half = p.rotary_dim / 2;
  const int64_t rows = static_cast<int64_t>(p.batch) * p.seqlen;
  FLASH_CPU_PARALLEL_FOR
  for (int64_t row = 0; row < rows; ++row) {
    const int b = static_cast<int>(row / p.seqlen);
    const int s = static_cast<int>(row % p.seqlen);
    int64_t x_base, out_base;
    if (p.cu_seqlens != nullptr) {
      const int start = p.cu_seqlens[b];
      if (s >= p.cu_seqlens[b + 1] - start) continue;  // past this sequence's end
      x_base = (start + s) * p.x_row_stride;
      out_base = (start + s) * p.out_row_stride;
    } else {
      x_base = b * p.x_batch_stride + s * p.x_row_stride;
      out_base = b * p.out_batch_stride + s * p.out_row_stride;
    }
    const int64_t pos = static_cast<int64_t>(p.seqlen_offsets ? p.seqlen_offsets[b] : p.seqlen_offset) + s;
    std::vector<float> cs(half, 1.0f), sn(half, 0.0f), vec(p.headdim);
    if (pos >= 0 && pos < p.seqlen_ro) {  // past the table: identity, as flash-attn's kernel
      cpu::load_row(p.cos, p.cos_dtype, pos * p.cos_row_stride, half, cs.data());
      cpu::load_row(p.sin, p.cos_dtype, pos * p.sin_row_stride, half, sn.data());
      if (p.conjugate)
        for (float& v : sn) v = -v;
    }
    for (int h = 0; h < p.nheads; ++h) {
      cpu::load_row(p.x, p.dtype, x_base + h * p.x_head_stride, p.headdim, vec.data());
      apply_rotary(vec.data(), cs.data(), sn.data(), p.rotary_dim, p.interleaved);
      cpu::store_row(p.out, p.dtype, out_base + h * p.out_head_stride, p.headdim, vec.data());
    }
  }
}

}  // namespace flash::rotary
