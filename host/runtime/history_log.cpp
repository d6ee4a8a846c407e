#include "molt/host/runtime/history_log.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cstring>

#include "molt/host/common/atomic_file.hpp"
#include "molt/host/common/json_text.hpp"

namespace molt::host {
namespace {
/// Largest history file read at start: `keep` entries of a few hundred bytes, twice over, with room.
constexpr std::uint64_t kMaxHistoryFileBytes = 64ull << 20;
}  // namespace

HistoryLog::HistoryLog(std::filesystem::path file, std::size_t keep) : file_(std::move(file)), keep_(keep) {
  if (file_.empty()) return;
  std::error_code ec;
  if (!std::filesystem::exists(std::filesystem::symlink_status(file_, ec))) return;
  std::string contents;
  if (auto why = read_file(file_, kMaxHistoryFileBytes, contents, Symlinks::Refuse)) {
    load_problem_ = file_.string() + ": " + *why + "; the history of earlier runs is not shown";
    return;
  }
  std::size_t start = 0;
  while (start < contents.size()) {
    std::size_t end = contents.find('\n', start);
    if (end == std::string::npos) end = contents.size();
    ++lines_in_file_;
    auto entry = nlohmann::json::parse(contents.begin() + static_cast<std::ptrdiff_t>(start),
                                       contents.begin() + static_cast<std::ptrdiff_t>(end), nullptr, false);
    if (entry.is_object()) {
      entries_.push_back(std::move(entry));
      if (entries_.size() > keep_) entries_.pop_front();
    }
    start = end + 1;
  }
}

std::optional<std::string> HistoryLog::append(const nlohmann::json& entry) {
  std::lock_guard lock(mutex_);
  entries_.push_back(entry);
  if (entries_.size() > keep_) entries_.pop_front();
  if (file_.empty()) return std::nullopt;
  if (lines_in_file_ + 1 > 2 * keep_) {  // compact: only what is kept
    std::string all;
    for (const auto& kept : entries_) all += json_text(kept) + '\n';
    if (auto why = write_file_atomically(file_, all)) return file_.string() + ": " + *why;
    lines_in_file_ = entries_.size();
    return std::nullopt;
  }
  const std::string line = json_text(entry) + '\n';
  const int fd = ::open(file_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return file_.string() + ": cannot open: " + std::strerror(errno);
  const ssize_t written = ::write(fd, line.data(), line.size());  // one write: a line is whole or cut, never mixed
  const int saved_errno = errno;
  ::close(fd);
  if (written != static_cast<ssize_t>(line.size()))
    return file_.string() + ": cannot append: " + (written < 0 ? std::strerror(saved_errno) : "short write");
  ++lines_in_file_;
  return std::nullopt;
}

std::vector<nlohmann::json> HistoryLog::entries(std::string_view module, std::size_t last) const {
  std::lock_guard lock(mutex_);
  std::vector<nlohmann::json> out;
  for (const auto& entry : entries_) {
    if (!module.empty() && !(entry.contains("module") && entry["module"].is_string() && entry["module"] == module))
      continue;
    out.push_back(entry);
  }
  if (out.size() > last) out.erase(out.begin(), out.end() - static_cast<std::ptrdiff_t>(last));
  return out;
}

}  // namespace molt::host
