#include "molt/host/release/release_record.hpp"

#include <chrono>

#include <nlohmann/json.hpp>

#include "molt/host/common/atomic_file.hpp"
#include "molt/host/common/json_text.hpp"

namespace molt::host {
namespace {

using Json = nlohmann::ordered_json;
constexpr std::size_t kMaxEvents = 200;
constexpr std::uint64_t kMaxRecordBytes = 16u << 20;

Json to_json(const ReleaseModule& m) {
  Json listen = Json::array();
  for (const auto& endpoint : m.listen) listen.push_back(endpoint.to_string());
  return Json{{"name", m.name}, {"version", m.version.value}, {"file", m.file},
              {"sha256", m.sha256}, {"listen", listen}, {"config", m.config}};
}

Json to_json(const Release& r) {
  Json modules = Json::array();
  for (const auto& m : r.modules) modules.push_back(to_json(m));
  Json out{{"name", r.name}, {"installed_at_ms", r.installed_at_ms}, {"modules", modules}};
  out["permanent_at_ms"] = r.permanent_at_ms ? Json(*r.permanent_at_ms) : Json(nullptr);
  return out;
}

ReleaseModule module_from(const Json& j) {
  ReleaseModule m;
  m.name = j.at("name").get<std::string>();
  m.version.value = j.at("version").get<std::uint32_t>();
  m.file = j.at("file").get<std::string>();
  m.sha256 = j.at("sha256").get<std::string>();
  for (const auto& endpoint : j.at("listen")) {
    auto parsed = parse_endpoint(endpoint.get<std::string>());
    if (!parsed) throw std::runtime_error("bad listen address " + json_text(endpoint));
    m.listen.push_back(*parsed);
  }
  for (const auto& [key, value] : j.at("config").items()) m.config[key] = value.get<std::string>();
  return m;
}

Release release_from(const Json& j) {
  Release r;
  r.name = j.at("name").get<std::string>();
  r.installed_at_ms = j.at("installed_at_ms").get<std::int64_t>();
  if (!j.at("permanent_at_ms").is_null()) r.permanent_at_ms = j.at("permanent_at_ms").get<std::int64_t>();
  for (const auto& m : j.at("modules")) r.modules.push_back(module_from(m));
  return r;
}

}  // namespace

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

const ReleaseModule* Release::find(std::string_view module) const {
  for (const auto& m : modules)
    if (m.name == module) return &m;
  return nullptr;
}

ReleaseModule* Release::find(std::string_view module) {
  for (auto& m : modules)
    if (m.name == module) return &m;
  return nullptr;
}

void ReleaseRecord::note(std::string release, std::string what, std::string detail) {
  events.push_back(ReleaseEvent{now_ms(), std::move(release), std::move(what), std::move(detail)});
  while (events.size() > kMaxEvents) events.pop_front();
}

Result<std::optional<ReleaseRecord>> read_release_record(const std::filesystem::path& path) {
  std::error_code ec;
  // A dangling link is not "no record": read_file refuses it, like a FIFO.
  if (!std::filesystem::exists(std::filesystem::symlink_status(path, ec))) return std::optional<ReleaseRecord>();
  auto fail = [&](std::string reason) { return Error{{}, {}, path.string(), Phase::Start, "release record: " + reason}; };
  std::string contents;
  if (auto why = read_file(path, kMaxRecordBytes, contents, Symlinks::Refuse)) return fail(*why);
  const Json j = Json::parse(contents, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return fail("not valid JSON");
  try {
    ReleaseRecord record;
    record.current = release_from(j.at("current"));
    record.permanent = release_from(j.at("permanent"));
    if (j.contains("previous") && !j["previous"].is_null()) record.previous = release_from(j["previous"]);
    for (const auto& e : j.value("events", Json::array()))
      record.events.push_back({e.at("at_ms").get<std::int64_t>(), e.at("release").get<std::string>(),
                               e.at("what").get<std::string>(), e.value("detail", "")});
    return std::optional<ReleaseRecord>(std::move(record));
  } catch (const std::exception& e) {
    return fail(std::string("malformed: ") + e.what());
  }
}

Result<void> write_release_record(const std::filesystem::path& path, const ReleaseRecord& record) {
  Json events = Json::array();
  for (const auto& e : record.events)
    events.push_back({{"at_ms", e.at_ms}, {"release", e.release}, {"what", e.what}, {"detail", e.detail}});
  const Json j{{"format", "molt-releases/1"},
               {"current", to_json(record.current)},
               {"previous", record.previous ? to_json(*record.previous) : Json(nullptr)},
               {"permanent", to_json(record.permanent)},
               {"events", events}};
  if (auto why = write_file_atomically(path, json_text(j, 2) + '\n'))
    return Error{{}, {}, path.string(), Phase::Snapshot, "release record: " + *why};
  return {};
}

}  // namespace molt::host
