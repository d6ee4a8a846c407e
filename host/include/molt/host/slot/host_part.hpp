// The host part: what the host keeps for a module besides its state, saved
// beside the state in every snapshot (StateBlob::host) and given back with it
// after a restart. It is the module's job records (ModuleJobs) and timers
// (ModuleTimers); the slot collects them in the same pause as the state, so
// a job's record and its checkpoint agree.
//
// The text is JSON, one object, keys in order (as nlohmann::json sorts them):
//
//   {"jobs":[{"done":13,"name":"sum","note":"…","started_ms":1795444925247,
//             "state":"cancelled","steps":13,"total":100,"updated_ms":1795444926455}],
//    "timers":[{"due_in_ms":250,"name":"flush","period_ms":1000}]}
//
// A job is a JobRecord as jobs.hpp writes it (state: running, finished,
// failed, cancelled). A timer's period_ms is 0 for a one-shot, else its
// period; due_in_ms is how long it had left when saved. A module with
// neither has an empty host part (no text at all). Snapshots written by
// older moltd are read by the same rules: this format only grows.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "molt/host/common/error.hpp"
#include "molt/host/slot/jobs.hpp"
#include "molt/host/slot/module_timers.hpp"

namespace molt::host {

struct HostPart {
  std::vector<JobRecord> jobs;
  std::vector<SavedTimer> timers;
};

/// `part` as text (see above); empty when it holds neither jobs nor timers.
/// A job's note is the module's text: any bytes (json_text escapes them).
[[nodiscard]] std::string encode_host_part(const HostPart& part);

/// The host part of module `module` in `text`; empty text is an empty part.
/// Malformed text is an Error (Phase::Snapshot) naming the module.
[[nodiscard]] Result<HostPart> decode_host_part(std::string_view text, const std::string& module);

}  // namespace molt::host
