// How long since a moment on the steady clock, in the microseconds the
// upgrade and pre-copy reports count in.
#pragma once

#include <chrono>

namespace molt::host {

[[nodiscard]] inline std::chrono::microseconds since(std::chrono::steady_clock::time_point start) noexcept {
  return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - start);
}

}  // namespace molt::host
