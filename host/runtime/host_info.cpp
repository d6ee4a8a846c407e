#include "molt/host/runtime/host_info.hpp"

namespace molt::host {

std::string_view to_string(LimitClose why) noexcept {
  switch (why) {
    case LimitClose::Timeout: return "timeout";
    case LimitClose::QueryBuffer: return "client_query_buffer_limit";
    case LimitClose::OutputBuffer: return "client_output_buffer_hard_limit";
    case LimitClose::Memory: return "max_connection_memory";
  }
  return "unknown";
}

}  // namespace molt::host
