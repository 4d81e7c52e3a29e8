// Helpers shared by the C++ tests: typed host buffers, random fills, tolerance checks.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "flash/types.h"

namespace testing_support {

// A host tensor of any backend dtype, read and written as double (writes round to nearest even).
class Buffer {
 public:
  Buffer() = default;
  Buffer(flash::DType dtype, int64_t elements, double fill = 0.0);
  void* data() { return bytes_.data(); }
  const void* data() const { return bytes_.data(); }
  int64_t size() const { return size_; }
  double get(int64_t i) const;
  void set(int64_t i, double v);
  flash::DType dtype() const { return dtype_; }

 private:
  flash::DType dtype_ = flash::DType::kFloat32;
  int64_t size_ = 0;
  std::vector<unsigned char> bytes_;
};

// The value `v` becomes once stored in dtype.
double round_to(flash::DType dtype, double v);

// Unit roundoff of the dtype (2^-24, 2^-11, 2^-8).
double dtype_eps(flash::DType dtype);

std::vector<double> random_normal(std::mt19937& rng, size_t n, double stddev = 1.0);

// Largest |a - b| relative to max(|b|) (floored at `floor`).
double max_rel_error(const std::vector<double>& got, const std::vector<double>& want,
                     double floor = 1.0);

std::string dtype_name(flash::DType dtype);

}  // namespace testing_support
