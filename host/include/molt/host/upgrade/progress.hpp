// Progress of the upgrades running on this thread, for whoever asked to
// watch them (moltctl reload on a terminal): the phase each module is in and,
// while its state is saved and loaded, how many bytes of it.
//
// A scope, like LogScope: the control server opens one around a request
// whose client asked for progress, and the transaction reports into it. The
// listener must be quick and must never block: it runs inside the upgrade,
// during the pause (the control server drops an update rather than wait for
// a slow client).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

namespace molt::host {

struct UpgradeProgress {
  std::string module;
  std::string_view phase;      ///< "prepare", "precopy", "quiesce", "migrate" (state saved and loaded), "resume", "cleanup", "rollback"
  std::uint64_t saved = 0;     ///< state bytes saved so far (phase "save")
  std::uint64_t loaded = 0;    ///< of those, loaded by the new version
  std::uint64_t expected = 0;  ///< the state's size at its last save, 0 if unknown: an estimate
  std::uint32_t round = 0;     ///< phase "precopy": the round (0: the whole state; `saved`: its bytes so far)
};

using ProgressListener = std::function<void(const UpgradeProgress&)>;

/// Upgrades on this thread report to `listener` while the scope lives.
class ProgressScope {
 public:
  explicit ProgressScope(ProgressListener listener);
  ~ProgressScope();
  ProgressScope(const ProgressScope&) = delete;
  ProgressScope& operator=(const ProgressScope&) = delete;

 private:
  ProgressListener* saved_;
  ProgressListener listener_;
};

/// Reports to this thread's listener, if any; otherwise does nothing.
void report_progress(const UpgradeProgress& progress);

}  // namespace molt::host
