#include "molt/host/release/quarantine.hpp"

#include <algorithm>
#include <cctype>

#include <nlohmann/json.hpp>

#include "molt/host/common/atomic_file.hpp"
#include "molt/host/common/json_text.hpp"

namespace molt::host {
namespace {

using Json = nlohmann::ordered_json;
constexpr std::string_view kFormat = "molt-quarantine/1";
constexpr std::uint64_t kMaxQuarantineBytes = 4u << 20;
/// The shortest start of a sha256 that clear() takes: what crash_line shows.
constexpr std::size_t kMinShaPrefix = 12;

Json to_json(const QuarantineEntry& e) {
  return Json{{"file", e.file},     {"sha256", e.sha256}, {"module", e.module}, {"version", e.version.value},
              {"reason", e.reason}, {"since_ms", e.since_ms}};
}

QuarantineEntry entry_from(const Json& j) {
  return QuarantineEntry{j.at("file").get<std::string>(),   j.at("sha256").get<std::string>(),
                         j.at("module").get<std::string>(), api::ModuleVersion{j.at("version").get<std::uint32_t>()},
                         j.at("reason").get<std::string>(), j.at("since_ms").get<std::int64_t>()};
}

bool lowercase_hex(std::string_view text) {
  return !text.empty() && std::all_of(text.begin(), text.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

std::string lowercase(std::string_view text) {
  std::string out(text);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

Error quarantine_error(std::string reason) { return Error{{}, {}, {}, Phase::Release, std::move(reason)}; }

}  // namespace

Result<std::unique_ptr<Quarantine>> Quarantine::open(std::filesystem::path path) {
  std::unique_ptr<Quarantine> quarantine(new Quarantine(std::move(path)));
  const auto& at = quarantine->path_;
  std::error_code ec;
  // A dangling link is not "no quarantine": read_file refuses it, like a FIFO.
  if (!std::filesystem::exists(std::filesystem::symlink_status(at, ec))) return quarantine;
  auto fail = [&](std::string reason) { return Error{{}, {}, at.string(), Phase::Start, "quarantine: " + reason}; };
  std::string contents;
  if (auto why = read_file(at, kMaxQuarantineBytes, contents, Symlinks::Refuse)) return fail(*why);
  const Json j = Json::parse(contents, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return fail("not valid JSON");
  try {
    if (j.at("format").get<std::string>() != kFormat)
      return fail("format " + json_text(j.at("format")) + " unknown, this moltd reads \"" + std::string(kFormat) + "\"");
    for (const auto& e : j.at("images")) quarantine->entries_.push_back(entry_from(e));
  } catch (const std::exception& e) {
    return fail(std::string("malformed: ") + e.what());
  }
  return quarantine;
}

Result<void> Quarantine::write(const std::vector<QuarantineEntry>& entries) const {
  Json images = Json::array();
  for (const auto& e : entries) images.push_back(to_json(e));
  const Json j{{"format", kFormat}, {"images", images}};
  if (auto why = write_file_atomically(path_, json_text(j, 2) + '\n'))
    return Error{{}, {}, path_.string(), Phase::Release, "quarantine: " + *why};
  return {};
}

Result<void> Quarantine::add(QuarantineEntry entry) {
  const std::lock_guard lock(mutex_);
  auto next = entries_;
  const auto same = std::find_if(next.begin(), next.end(), [&](const QuarantineEntry& e) { return e.sha256 == entry.sha256; });
  if (same != next.end()) {
    entry.since_ms = same->since_ms;
    *same = std::move(entry);
  } else {
    next.push_back(std::move(entry));
  }
  if (auto written = write(next); !written) return written;
  entries_ = std::move(next);
  return {};
}

std::optional<QuarantineEntry> Quarantine::find_sha256(std::string_view sha256) const {
  const std::lock_guard lock(mutex_);
  for (const auto& e : entries_)
    if (e.sha256 == sha256) return e;
  return std::nullopt;
}

Result<std::vector<QuarantineEntry>> Quarantine::clear(std::string_view file_or_sha256) {
  const std::lock_guard lock(mutex_);
  // The crash line shows a sha256 as its start and "…": take it as shown.
  std::string_view shown = file_or_sha256;
  if (shown.ends_with("…")) shown.remove_suffix(std::string_view("…").size());
  const std::string sha = lowercase(shown);
  const bool by_sha = sha.size() >= kMinShaPrefix && lowercase_hex(sha);
  const std::string file = std::filesystem::path(file_or_sha256).lexically_normal().string();

  auto matches = [&](const QuarantineEntry& e) {
    return e.file == file_or_sha256 || e.file == file || (by_sha && e.sha256.starts_with(sha));
  };
  std::vector<QuarantineEntry> cleared;
  std::vector<QuarantineEntry> kept;
  for (const auto& e : entries_) (matches(e) ? cleared : kept).push_back(e);
  const std::string named(file_or_sha256);
  if (cleared.empty())
    return quarantine_error("no quarantined image matches '" + named + "' (moltctl quarantine lists them)");
  const bool by_file = std::any_of(cleared.begin(), cleared.end(), [&](const QuarantineEntry& e) {
    return e.file == file_or_sha256 || e.file == file;
  });
  if (!by_file && cleared.size() > 1 && sha.size() < 64)
    return quarantine_error("'" + named + "' is the start of the sha256 of " + std::to_string(cleared.size()) +
                            " quarantined images; give more of it (moltctl quarantine lists them)");
  if (auto written = write(kept); !written) return std::move(written).error();
  entries_ = std::move(kept);
  return cleared;
}

std::vector<QuarantineEntry> Quarantine::list() const {
  const std::lock_guard lock(mutex_);
  return entries_;
}

}  // namespace molt::host
