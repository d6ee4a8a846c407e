#include "molt/host/upgrade/progress.hpp"

namespace molt::host {
namespace {

ProgressListener*& current() noexcept {
  thread_local ProgressListener* listener = nullptr;
  return listener;
}

}  // namespace

ProgressScope::ProgressScope(ProgressListener listener) : saved_(current()), listener_(std::move(listener)) {
  current() = &listener_;
}

ProgressScope::~ProgressScope() { current() = saved_; }

void report_progress(const UpgradeProgress& progress) {
  if (ProgressListener* listener = current(); listener != nullptr && *listener) (*listener)(progress);
}

}  // namespace molt::host
