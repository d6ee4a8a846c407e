#include "molt/host/common/threads.hpp"

#include <pthread.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstring>

namespace molt::host {

void name_this_thread(const char* name) noexcept {
  char kept[16] = {};
  std::strncpy(kept, name, sizeof kept - 1);
  (void)::pthread_setname_np(::pthread_self(), kept);
}

void run_in_background() noexcept {
  // nice +10: about a tenth of a serving thread's share when both want the
  // core. SCHED_IDLE was measured too (bench (e), 1M keys, perf sched): it
  // took the background threads out of the serving thread's way, but the
  // client's longest round trip stayed 5-7 ms (other causes remain, below)
  // while a reload with its snapshots took 5 s instead of 3.
  constexpr int kNice = 10;
  (void)::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), kNice);
}

}  // namespace molt::host
