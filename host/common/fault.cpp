#include "molt/host/common/fault.hpp"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <algorithm>
#include <cstdlib>
#include <string>

namespace molt::host {
namespace {

struct FaultConfig {
  std::string point;
  std::string subject;  ///< after '@': only points whose subject contains it
  long countdown = 1;
  bool armed = false;
};

const FaultConfig& config() {
  static const FaultConfig parsed = [] {
    FaultConfig c;
    if (const char* env = std::getenv("MOLT_FAULT"); env != nullptr && *env != '\0') {
      c.point = env;
      if (const auto at = c.point.find('@'); at != std::string::npos) {
        c.subject = c.point.substr(at + 1);
        c.point.resize(at);
      }
      if (const auto colon = c.point.find(':'); colon != std::string::npos) {
        c.countdown = std::max(1L, std::strtol(c.point.c_str() + colon + 1, nullptr, 10));
        c.point.resize(colon);
      }
      c.armed = true;
    }
    return c;
  }();
  return parsed;
}

std::atomic<long> reached{0};

}  // namespace

void fault_point(std::string_view name, std::string_view subject) noexcept {
  const FaultConfig& c = config();
  if (!c.armed || name != c.point) return;
  if (!c.subject.empty() && subject.find(c.subject) == std::string_view::npos) return;
  if (reached.fetch_add(1) + 1 < c.countdown) return;
  static constexpr char kMessage[] = "molt: MOLT_FAULT reached, killing this process\n";
  (void)!::write(2, kMessage, sizeof kMessage - 1);
  ::kill(::getpid(), SIGKILL);
}

}  // namespace molt::host
