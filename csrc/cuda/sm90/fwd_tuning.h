// Tuning switches of the sm90 forward path, read from FLASH_SM90_FWD_* environment variables, for
// A/B measurements without a rebuild. Host only.
//
// By default a switch is read once per process (getenv costs ~0.5 us per call, which a decode loop
// would notice). With FLASH_SM90_FWD_AB=1 (itself read once) every call re-reads its switches, so
// one benchmark process can interleave the variants of a kernel (os.environ[...] = ... between
// calls): run-to-run noise between processes at 1K tokens is 5-10 %, more than the effects measured.
#pragma once

#include <cstdlib>

namespace flash::sm90::tuning {

// Integer value of environment variable `name`, or `fallback` when unset or empty.
inline int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return (v != nullptr && *v != '\0') ? std::atoi(v) : fallback;
}

inline bool ab_mode() {
  static const bool on = env_int("FLASH_SM90_FWD_AB", 0) != 0;
  return on;
}

// One switch: construct it as a function-local static at the point of use.
class Switch {
 public:
  Switch(const char* name, int fallback)
      : name_(name), fallback_(fallback), cached_(env_int(name, fallback)) {}
  int get() const { return ab_mode() ? env_int(name_, fallback_) : cached_; }

 private:
  const char* name_;
  int fallback_;
  int cached_;
};

}  // namespace flash::sm90::tuning
