// batch's HTTP routing, parameter checks and JSON, shared by every version.
#include "http.hpp"

#include <charconv>
#include <cstdio>

#include "state.hpp"

namespace batch {
namespace {

/// At most this much of a rejected value is echoed in an error.
constexpr std::size_t kEchoBytes = 64;

std::string echo(std::string_view value) {
  return value.size() > kEchoBytes ? std::string(value.substr(0, kEchoBytes)) + "..." : std::string(value);
}

void append_job_fields(std::string& out, const JobView& job) {
  auto field = [&](std::string_view key, std::uint64_t value) {
    out += ",\"";
    out += key;
    out += "\":";
    out += std::to_string(value);
  };
  out += "\"job\":";
  out += json_string(job.name);
  field("items", job.items);
  field("chunk", job.chunk);
  field("chunks", job.chunks);
  field("chunks_done", job.chunks_done);
  field("recorded", job.tally.recorded);
  field("duplicates", job.tally.duplicates);
  // A string: JSON numbers above 2^53 lose digits in most clients.
  out += ",\"checksum\":\"" + std::to_string(job.tally.checksum) + '"';
  field("pace_ms", job.pace_ms);
  field(job.checkpoint_name, job.checkpoint);
}

}  // namespace

Route route(const molt::api::Request& request) {
  const std::string& path = request.path;
  const bool get = request.method == "GET" || request.method == "HEAD";
  const bool post = request.method == "POST";
  if (path == "/batch" || path == "/batch/") return get ? Route::Show : Route::WrongMethod;
  Route r = Route::NotFound;
  if (path == "/batch/start") r = Route::Start;
  else if (path == "/batch/pace") r = Route::Pace;
  else if (path == "/batch/fail-once") r = Route::FailOnce;
  else if (path == "/batch/slow-once") r = Route::SlowOnce;
  if (r == Route::NotFound) return r;
  return post ? r : Route::WrongMethod;
}

molt::api::Response route_error(Route route, const molt::api::Request& request) {
  if (route == Route::WrongMethod)
    return error_response(405, "method " + request.method + " not allowed on " + request.path);
  return error_response(404, "no such resource: " + request.path);
}

molt::api::Response error_response(int status, std::string_view message) {
  return molt::api::Response::json(R"({"error":)" + json_string(message) + "}\n", status);
}

Checked<std::string> job_param(const molt::api::Request& request) {
  constexpr std::string_view kRule = "1 to 32 characters of [a-z0-9_-]";
  const auto value = request.query_param("job");
  if (!value) return {{}, "job is required (" + std::string(kRule) + ")"};
  if (!valid_job_name(*value)) return {{}, "job must be " + std::string(kRule) + ", got '" + echo(*value) + "'"};
  return {*value, {}};
}

Checked<std::uint64_t> number_param(const molt::api::Request& request, std::string_view key, std::uint64_t min,
                                    std::uint64_t max, Presence presence, std::uint64_t fallback) {
  const std::string rule = "an integer from " + std::to_string(min) + " to " + std::to_string(max);
  const auto text = request.query_param(key);
  if (!text) {
    if (presence == Presence::Optional) return {fallback, {}};
    return {0, std::string(key) + " is required (" + rule + ")"};
  }
  // Digits only: from_chars takes no sign and no spaces for an unsigned
  // type, but stops quietly at trailing junk ("12abc"), hence `stop != end`.
  std::uint64_t value = 0;
  const char* begin = text->data();
  const char* end = begin + text->size();
  const auto [stop, ec] = std::from_chars(begin, end, value);
  if (text->empty() || ec != std::errc() || stop != end || value < min || value > max)
    return {0, std::string(key) + " must be " + rule + ", got '" + echo(*text) + "'"};
  return {value, {}};
}

Checked<StartParams> start_params(const molt::api::Request& request) {
  StartParams params;
  auto job = job_param(request);
  if (!job.ok()) return {{}, std::move(job.error)};
  params.job = std::move(job.value);
  const auto items = number_param(request, "items", 1, kMaxItems);
  if (!items.ok()) return {{}, items.error};
  params.items = items.value;
  const auto chunk = number_param(request, "chunk", 1, kMaxChunk);
  if (!chunk.ok()) return {{}, chunk.error};
  params.chunk = chunk.value;
  const auto pace = number_param(request, "pace_ms", 0, kMaxPaceMs, Presence::Optional, 0);
  if (!pace.ok()) return {{}, pace.error};
  params.pace_ms = static_cast<std::uint32_t>(pace.value);
  return {std::move(params), {}};
}

std::string job_json(std::uint32_t version, const JobView& job) {
  std::string out = "{\"version\":" + std::to_string(version) + ',';
  append_job_fields(out, job);
  out += "}\n";
  return out;
}

std::string jobs_json(std::uint32_t version, const std::vector<JobView>& jobs) {
  std::string out = "{\"version\":" + std::to_string(version) + ",\"jobs\":{";
  const char* separator = "";
  for (const JobView& job : jobs) {
    out += separator;
    out += json_string(job.name);
    out += ":{";
    append_job_fields(out, job);
    out += '}';
    separator = ",";
  }
  out += "}}\n";
  return out;
}

}  // namespace batch
