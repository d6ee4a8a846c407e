#include "molt/host/common/threads.hpp"

#include <pthread.h>

#include <cstring>

namespace molt::host {

void name_this_thread(const char* name) noexcept {
  char kept[16] = {};
  std::strncpy(kept, name, sizeof kept - 1);
  (void)::pthread_setname_np(::pthread_self(), kept);
}

}  // namespace molt::host
