// Error types of the public API. Every message names the offending argument.
#pragma once

#include <stdexcept>
#include <string>

namespace flash {

// A caller passed something the API does not accept (shape, dtype, flag combination...).
// Derives from std::invalid_argument so the Python binding maps it to ValueError.
class Error : public std::invalid_argument {
 public:
  Error(std::string argument, const std::string& what)
      : std::invalid_argument(argument + ": " + what), argument_(std::move(argument)) {}
  const std::string& argument() const { return argument_; }

 private:
  std::string argument_;
};

// A device runtime call failed (launch failure, out of memory...). Maps to RuntimeError.
class DeviceError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Throws flash::Error(arg, msg) when cond is false.
inline void check_arg(bool cond, const char* arg, const std::string& msg) {
  if (!cond) throw Error(arg, msg);
}

}  // namespace flash
