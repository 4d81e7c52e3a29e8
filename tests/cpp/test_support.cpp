#include "test_support.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "common/numeric.h"

namespace testing_support {

using flash::DType;

Buffer::Buffer(DType dtype, int64_t elements, double fill)
    : dtype_(dtype), size_(elements), bytes_(static_cast<size_t>(elements) * flash::dtype_size(dtype)) {
  for (int64_t i = 0; i < elements; ++i) set(i, fill);
}

double Buffer::get(int64_t i) const {
  if (dtype_ == DType::kFloat32) {
    float f;
    std::memcpy(&f, &bytes_[i * 4], 4);
    return f;
  }
  uint16_t h;
  std::memcpy(&h, &bytes_[i * 2], 2);
  return dtype_ == DType::kFloat16 ? flash::numeric::half_to_float(h)
                                   : flash::numeric::bf16_to_float(h);
}

void Buffer::set(int64_t i, double v) {
  const float f = static_cast<float>(v);
  if (dtype_ == DType::kFloat32) {
    std::memcpy(&bytes_[i * 4], &f, 4);
    return;
  }
  const uint16_t h = dtype_ == DType::kFloat16 ? flash::numeric::float_to_half(f)
                                               : flash::numeric::float_to_bf16(f);
  std::memcpy(&bytes_[i * 2], &h, 2);
}

double round_to(DType dtype, double v) {
  const float f = static_cast<float>(v);
  switch (dtype) {
    case DType::kFloat16: return flash::numeric::round_to_half(f);
    case DType::kBFloat16: return flash::numeric::round_to_bf16(f);
    default: return f;
  }
}

double dtype_eps(DType dtype) {
  switch (dtype) {
    case DType::kFloat16: return 1.0 / 2048;
    case DType::kBFloat16: return 1.0 / 256;
    default: return 1.0 / 16777216;
  }
}

std::vector<double> random_normal(std::mt19937& rng, size_t n, double stddev) {
  std::normal_distribution<double> dist(0.0, stddev);
  std::vector<double> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

double max_rel_error(const std::vector<double>& got, const std::vector<double>& want,
                     double floor) {
  double scale = floor, err = 0;
  for (size_t i = 0; i < want.size(); ++i) scale = std::max(scale, std::fabs(want[i]));
  for (size_t i = 0; i < want.size(); ++i) {
    const double e = std::fabs(got[i] - want[i]);
    if (std::isnan(got[i]) || std::isnan(e)) return INFINITY;
    err = std::max(err, e);
  }
  return err / scale;
}

std::string dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kFloat16: return "fp16";
    case DType::kBFloat16: return "bf16";
    default: return "fp32";
  }
}

}  // namespace testing_support
