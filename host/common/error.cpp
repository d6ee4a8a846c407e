#include "molt/host/common/error.hpp"

namespace molt::host {

std::string_view to_string(Phase phase) noexcept {
  switch (phase) {
    case Phase::Load: return "load";
    case Phase::Start: return "start";
    case Phase::Call: return "call";
    case Phase::Prepare: return "prepare";
    case Phase::Quiesce: return "quiesce";
    case Phase::Save: return "save";
    case Phase::Migrate: return "migrate";
    case Phase::Resume: return "resume";
    case Phase::Rollback: return "rollback";
    case Phase::Snapshot: return "snapshot";
    case Phase::Config: return "config";
    case Phase::Control: return "control";
    case Phase::Script: return "script";
    case Phase::Release: return "release";
    case Phase::HotRestart: return "hot-restart";
    case Phase::Handoff: return "handoff";
  }
  return "unknown";
}

std::string Error::to_string() const {
  std::string out = module;
  if (version) {
    if (!out.empty()) out += ' ';
    out += 'v' + std::to_string(version->value);
  }
  if (!file.empty()) out += out.empty() ? file : " (" + file + ")";
  if (!out.empty()) out += ": ";
  out += host::to_string(phase);
  out += ": ";
  out += reason;
  return out;
}

}  // namespace molt::host
