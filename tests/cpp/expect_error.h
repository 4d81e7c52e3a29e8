// The validation tests' one assertion: a call throws flash::Error naming the expected argument.
#pragma once

#include <gtest/gtest.h>

#include <functional>
#include <string>

#include "flash/errors.h"

namespace testing_support {

// Runs `call` and expects flash::Error whose argument() is `arg` and whose message names it.
inline void expect_error(const std::function<void()>& call, const std::string& arg) {
  try {
    call();
    ADD_FAILURE() << "expected flash::Error naming '" << arg << "'";
  } catch (const flash::Error& e) {
    EXPECT_EQ(e.argument(), arg) << e.what();
    EXPECT_NE(std::string(e.what()).find(arg), std::string::npos) << e.what();
  }
}

}  // namespace testing_support
