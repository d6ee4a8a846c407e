#include "molt/host/common/log_context.hpp"

namespace molt::host {

LogContext& log_context() noexcept {
  thread_local LogContext context;
  return context;
}

}  // namespace molt::host
