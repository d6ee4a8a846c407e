// What every batch version answers alike: routing, checking query
// parameters, and writing the JSON. The versions differ only in their state
// and checkpoint, which reach this file as a JobView.
//
//   POST /batch/start?job=NAME&items=N&chunk=C[&pace_ms=P]
//   POST /batch/pace?job=NAME&ms=P
//   GET  /batch[?job=NAME]
//   POST /batch/fail-once?chunk=K     (instance only, for tests)
//   POST /batch/slow-once?ms=M        (instance only, for tests)
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "checksum.hpp"
#include "molt/json_text.hpp"
#include "molt/message.hpp"

namespace batch {

enum class Route { Show, Start, Pace, FailOnce, SlowOnce, NotFound, WrongMethod };

Route route(const molt::api::Request& request);

/// The answer for Route::NotFound and Route::WrongMethod.
molt::api::Response route_error(Route route, const molt::api::Request& request);

/// `{"error":<message>}` with `status`.
molt::api::Response error_response(int status, std::string_view message);

using molt::api::json_string;  // molt/json_text.hpp

/// A checked query parameter: `value`, or why it is unacceptable in `error`
/// (one line, naming the parameter).
template <class T>
struct Checked {
  T value{};
  std::string error;
  [[nodiscard]] bool ok() const noexcept { return error.empty(); }
};

/// `job`: required, 1 to 32 characters of [a-z0-9_-].
Checked<std::string> job_param(const molt::api::Request& request);

/// Query parameter `key` as a decimal integer from `min` to `max`. When it
/// is absent: `fallback` if Presence::Optional, else an error.
enum class Presence { Required, Optional };
Checked<std::uint64_t> number_param(const molt::api::Request& request, std::string_view key, std::uint64_t min,
                                    std::uint64_t max, Presence presence = Presence::Required,
                                    std::uint64_t fallback = 0);

/// The parameters of POST /batch/start, all checked.
struct StartParams {
  std::string job;
  std::uint64_t items = 0;
  std::uint64_t chunk = 0;
  std::uint32_t pace_ms = 0;
};
Checked<StartParams> start_params(const molt::api::Request& request);

/// One job as the answers show it, whatever the version's state looks like.
struct JobView {
  std::string_view name;
  std::uint64_t items = 0;
  std::uint64_t chunk = 0;
  std::uint64_t chunks = 0;
  std::uint64_t chunks_done = 0;
  std::uint32_t pace_ms = 0;
  Tally tally;
  std::string_view checkpoint_name;  ///< the version's own checkpoint field: "next_item", "next_chunk"
  std::uint64_t checkpoint = 0;
};

/// GET /batch?job=NAME: {"version":V,"job":NAME,...,"next_item":X}
std::string job_json(std::uint32_t version, const JobView& job);

/// GET /batch: {"version":V,"jobs":{NAME:{"job":NAME,...},...}}
std::string jobs_json(std::uint32_t version, const std::vector<JobView>& jobs);

}  // namespace batch
