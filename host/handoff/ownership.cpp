#include "molt/host/handoff/ownership.hpp"

#include <chrono>

#include "molt/host/common/atomic_file.hpp"
#include "molt/host/common/json_text.hpp"

namespace molt::host {
namespace {
using Json = nlohmann::json;
constexpr std::uint64_t kMaxRecordBytes = 16u << 20;
}  // namespace

const char* to_string(Ownership ownership) noexcept {
  switch (ownership) {
    case Ownership::Owned: return "owned";
    case Ownership::Moving: return "moving";
    case Ownership::Moved: return "moved";
  }
  return "?";
}

std::string OwnershipEntry::describe() const {
  const std::string at = " at epoch " + std::to_string(epoch);
  switch (ownership) {
    case Ownership::Owned: return "received from " + peer + at;
    case Ownership::Moving: return "being handed to " + peer + at + " (not confirmed)";
    case Ownership::Moved: return "moved to " + peer + at;
  }
  return "?";
}

Json OwnershipEntry::to_json() const {
  Json json{{"ownership", to_string(ownership)}, {"epoch", epoch}, {"peer", peer}, {"at_ms", at_ms},
            {"text", describe()}};
  if (prior) json["prior"] = prior->to_json();
  if (!redirect.empty()) json["redirect"] = redirect;
  if (!http.empty()) json["http"] = http;
  return json;
}

namespace {
std::optional<OwnershipEntry> entry_from(const Json& e, std::string& problem) {
  OwnershipEntry entry;
  const std::string kind = e.at("ownership").get<std::string>();
  if (kind == "owned") entry.ownership = Ownership::Owned;
  else if (kind == "moving") entry.ownership = Ownership::Moving;
  else if (kind == "moved") entry.ownership = Ownership::Moved;
  else {
    problem = "unknown ownership '" + kind + "'";
    return std::nullopt;
  }
  entry.epoch = e.at("epoch").get<std::uint64_t>();
  entry.peer = e.at("peer").get<std::string>();
  entry.at_ms = e.value("at_ms", std::int64_t{0});
  entry.redirect = e.value("redirect", std::string());
  entry.http = e.value("http", std::string());
  if (e.contains("prior")) {
    auto prior = entry_from(e["prior"], problem);
    if (!prior) return std::nullopt;
    entry.prior = std::make_shared<const OwnershipEntry>(std::move(*prior));
  }
  return entry;
}
}  // namespace

Result<std::unique_ptr<OwnershipRecord>> OwnershipRecord::open(std::filesystem::path path) {
  std::unique_ptr<OwnershipRecord> record(new OwnershipRecord(path));
  const auto fail = [&](std::string why) {
    return Error{"(host)", {}, path.string(), Phase::Handoff, std::move(why) + "; it says which moltd owns a module "
                 "that moved: repair it from the other host's, never delete it"};
  };
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return record;
  std::string text;
  if (auto why = read_file(path, kMaxRecordBytes, text)) return fail(*why);
  try {
    const Json json = Json::parse(text);
    for (const auto& [module, e] : json.at("modules").items()) {
      std::string problem;
      auto entry = entry_from(e, problem);
      if (!entry) return fail(module + ": " + problem);
      record->entries_[module] = std::move(*entry);
    }
  } catch (const std::exception& e) {
    return fail(std::string("unreadable: ") + e.what());
  }
  return record;
}

std::optional<OwnershipEntry> OwnershipRecord::find(const std::string& module) const {
  std::lock_guard lock(mutex_);
  const auto it = entries_.find(module);
  if (it == entries_.end()) return std::nullopt;
  return it->second;
}

std::uint64_t OwnershipRecord::epoch(const std::string& module) const {
  const auto entry = find(module);
  return entry ? entry->epoch : 0;
}

Result<void> OwnershipRecord::set(const std::string& module, OwnershipEntry entry) {
  std::lock_guard lock(mutex_);
  entry.at_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                    std::chrono::system_clock::now().time_since_epoch()).count();
  auto next = entries_;
  next[module] = entry;
  return write_locked(module, std::move(next));
}

Result<void> OwnershipRecord::put(const std::string& module, const std::optional<OwnershipEntry>& entry) {
  if (entry) return set(module, *entry);
  std::lock_guard lock(mutex_);
  auto next = entries_;
  if (next.erase(module) == 0) return {};
  return write_locked(module, std::move(next));
}

Result<void> OwnershipRecord::revert(const std::string& module) {
  std::lock_guard lock(mutex_);
  auto next = entries_;
  const auto it = next.find(module);
  if (it == next.end() || it->second.ownership != Ownership::Moving) return {};
  if (it->second.prior) it->second = *it->second.prior;
  else next.erase(it);
  return write_locked(module, std::move(next));
}

Result<void> OwnershipRecord::write_locked(const std::string& module, std::map<std::string, OwnershipEntry> next) {
  Json modules = Json::object();
  for (const auto& [name, e] : next) modules[name] = e.to_json();
  if (auto why = write_file_atomically(path_, json_text(Json{{"modules", modules}}, 2) + "\n"))
    return Error{module, {}, path_.string(), Phase::Handoff, "cannot record its ownership: " + *why};
  entries_ = std::move(next);
  return {};
}

std::map<std::string, OwnershipEntry> OwnershipRecord::entries() const {
  std::lock_guard lock(mutex_);
  return entries_;
}

}  // namespace molt::host
