#include "molt/host/state/snapshot_store.hpp"

#include <algorithm>
#include <ctime>

namespace molt::host {
namespace fs = std::filesystem;

fs::path SnapshotStore::path_of(std::string_view module) const { return dir_ / (std::string(module) + ".molt"); }

Result<void> SnapshotStore::save(const StateBlob& blob) const {
  // A snapshot is read back with this limit (load): one that exceeds it is
  // not written, so that every snapshot on disk is one a boot can read.
  if (blob.bytes.size() > max_state_bytes_)
    return Error{blob.module, blob.version, path_of(blob.module).string(), Phase::Snapshot,
                 "state of " + std::to_string(blob.bytes.size()) + " bytes is larger than host.max_state_bytes (" +
                     std::to_string(max_state_bytes_) +
                     "), which a boot could not read back: not written, the previous snapshot stands; raise "
                     "host.max_state_bytes"};
  std::error_code ec;
  // Owner-only, like the run directory: states may hold users' data.
  if (fs::create_directories(dir_, ec) && !ec) fs::permissions(dir_, fs::perms::owner_all, fs::perm_options::replace, ec);
  if (ec) return Error{blob.module, blob.version, dir_.string(), Phase::Snapshot, "cannot create: " + ec.message()};
  return write_state_file(path_of(blob.module), blob);
}

Result<std::optional<StateBlob>> SnapshotStore::load(std::string_view module) const {
  const fs::path path = path_of(module);
  // Whatever is at the path counts, a dangling link or a FIFO too: it is
  // refused (and then moved aside), not taken for "no snapshot".
  std::error_code ec;
  if (!fs::exists(fs::symlink_status(path, ec))) return std::optional<StateBlob>();
  // Only moltd writes here: a link is not followed, and a FIFO or a device
  // is refused at once instead of hanging the boot in open(2).
  auto blob = read_state_file(path, max_state_bytes_, Symlinks::Refuse);
  if (!blob) {
    Error error = std::move(blob).error();
    error.module = std::string(module);
    return error;
  }
  if (blob->module != module)
    return Error{std::string(module), {}, path.string(), Phase::Snapshot,
                 "holds the state of module '" + blob->module + "'"};
  return std::optional<StateBlob>(std::move(blob.value()));
}

Result<fs::path> SnapshotStore::move_aside(std::string_view module, std::string_view why) const {
  const fs::path from = path_of(module);
  char stamp[32];
  const std::time_t now = std::time(nullptr);
  std::tm utc{};
  gmtime_r(&now, &utc);
  std::strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &utc);
  fs::path to = from;
  to += "." + std::string(why) + "-" + stamp;
  std::error_code ec;
  for (int n = 1; fs::exists(fs::symlink_status(to, ec)); ++n) {  // never overwrite an earlier one
    to = from;
    to += "." + std::string(why) + "-" + stamp + "." + std::to_string(n);
  }
  fs::rename(from, to, ec);
  if (ec) return Error{std::string(module), {}, from.string(), Phase::Snapshot, "cannot move aside: " + ec.message()};
  return to;
}

std::vector<std::string> SnapshotStore::modules() const {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir_, ec))
    if (entry.path().extension() == ".molt") names.push_back(entry.path().stem().string());
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace molt::host
