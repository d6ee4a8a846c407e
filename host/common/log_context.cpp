#include "molt/host/common/log_context.hpp"

namespace molt::host {

constinit thread_local LogContext detail::log_context{};

}  // namespace molt::host
