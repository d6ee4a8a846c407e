#include "molt/host/state/snapshot_store.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <ctime>

namespace molt::host {
namespace fs = std::filesystem;

namespace {

/// `from` with ".<why>-<UTC time>" appended, and a number after that if such
/// a file exists already: a name nothing overwrites.
fs::path aside_path(const fs::path& from, std::string_view why) {
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
  return to;
}

bool present(const fs::path& path) {
  std::error_code ec;
  return fs::exists(fs::symlink_status(path, ec));
}

}  // namespace

fs::path SnapshotStore::path_of(std::string_view module) const { return dir_ / (std::string(module) + ".molt"); }

fs::path SnapshotStore::path_of_kept(std::string_view module, api::SchemaVersion schema) const {
  return dir_ / (std::string(module) + ".schema-" + std::to_string(schema.value) + ".molt");
}

Result<void> SnapshotStore::save(const StateBlob& blob) const { return write(path_of(blob.module), blob); }

Result<void> SnapshotStore::save_kept(const StateBlob& blob) const {
  return write(path_of_kept(blob.module, blob.schema), blob);
}

Result<void> SnapshotStore::write(const fs::path& path, const StateBlob& blob) const {
  // A snapshot is read back with this limit (load): one that exceeds it is
  // not written, so that every snapshot on disk is one a boot can read.
  if (blob.bytes.size() > max_state_bytes_)
    return Error{blob.module, blob.version, path.string(), Phase::Snapshot,
                 "state of " + std::to_string(blob.bytes.size()) + " bytes is larger than host.max_state_bytes (" +
                     std::to_string(max_state_bytes_) +
                     "), which a boot could not read back: not written, the previous snapshot stands; raise "
                     "host.max_state_bytes"};
  if (auto made = make_dir(blob); !made) return made;
  return write_state_file(path, blob);
}

Result<void> SnapshotStore::make_dir(const StateBlob& about) const {
  std::error_code ec;
  // Owner-only, like the run directory: states may hold users' data.
  if (fs::create_directories(dir_, ec) && !ec) fs::permissions(dir_, fs::perms::owner_all, fs::perm_options::replace, ec);
  if (ec) return Error{about.module, about.version, dir_.string(), Phase::Snapshot, "cannot create: " + ec.message()};
  return {};
}

Result<std::unique_ptr<PartFile>> SnapshotStore::open_parts(const StateBlob& about) const {
  return open_parts_at(path_of(about.module), about);
}

Result<std::unique_ptr<PartFile>> SnapshotStore::open_kept_parts(const StateBlob& about) const {
  return open_parts_at(path_of_kept(about.module, about.schema), about);
}

Result<std::unique_ptr<PartFile>> SnapshotStore::open_parts_at(const fs::path& path, const StateBlob& about) const {
  if (auto made = make_dir(about); !made) return std::move(made).error();
  // The same limit as write(): a body a boot could not read is not written.
  return PartFile::create(path, about, max_state_bytes_);
}

Result<std::optional<StateBlob>> SnapshotStore::load(std::string_view module) const {
  return read(path_of(module), module);
}

Result<std::optional<StateBlob>> SnapshotStore::read(const fs::path& path, std::string_view module) const {
  // Whatever is at the path counts, a dangling link or a FIFO too: it is
  // refused (and then moved aside), not taken for "no snapshot".
  if (!present(path)) return std::optional<StateBlob>();
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

Result<std::optional<SnapshotStore::Kept>> SnapshotStore::load_kept(std::string_view module,
                                                                    api::SchemaVersion schema) const {
  const fs::path path = path_of_kept(module, schema);
  auto blob = read(path, module);
  if (!blob) return std::move(blob).error();
  if (!blob.value()) return std::optional<Kept>();
  if (blob.value()->schema != schema)
    return Error{std::string(module), blob.value()->version, path.string(), Phase::Snapshot,
                 "holds a state in schema " + std::to_string(blob.value()->schema.value) + ", not " +
                     std::to_string(schema.value)};
  struct stat st{};
  std::chrono::system_clock::time_point at{};
  if (::lstat(path.c_str(), &st) == 0) at = std::chrono::system_clock::from_time_t(st.st_mtime);
  return std::optional<Kept>(Kept{std::move(*blob.value()), at});
}

Result<fs::path> SnapshotStore::move_aside(std::string_view module, std::string_view why) const {
  const fs::path from = path_of(module);
  const fs::path to = aside_path(from, why);
  std::error_code ec;
  fs::rename(from, to, ec);
  if (ec) return Error{std::string(module), {}, from.string(), Phase::Snapshot, "cannot move aside: " + ec.message()};
  return to;
}

Result<std::optional<fs::path>> SnapshotStore::move_kept_aside(std::string_view module, api::SchemaVersion schema,
                                                               std::string_view why) const {
  const fs::path from = path_of_kept(module, schema);
  if (!present(from)) return std::optional<fs::path>();
  const fs::path to = aside_path(from, why);
  std::error_code ec;
  fs::rename(from, to, ec);
  if (ec) return Error{std::string(module), {}, from.string(), Phase::Snapshot, "cannot move aside: " + ec.message()};
  return std::optional<fs::path>(to);
}

Result<std::optional<fs::path>> SnapshotStore::replace(const StateBlob& blob, std::string_view why) const {
  const fs::path from = path_of(blob.module);
  std::optional<fs::path> kept;
  if (present(from)) {
    // A second name first, then the atomic rename of save() over the first:
    // at every moment one of them is the old snapshot.
    kept = aside_path(from, why);
    std::error_code ec;
    fs::create_hard_link(from, *kept, ec);
    if (ec) {  // a file system without links: moved instead
      auto moved = move_aside(blob.module, why);
      if (!moved) return std::move(moved).error();
      kept = moved.value();
    }
  }
  if (auto saved = save(blob); !saved) return std::move(saved).error();
  return kept;
}

std::vector<std::string> SnapshotStore::modules() const {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir_, ec)) {
    // <module>.molt; a module name has no dot, a kept state's has one.
    const std::string stem = entry.path().stem().string();
    if (entry.path().extension() == ".molt" && stem.find('.') == std::string::npos) names.push_back(stem);
  }
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace molt::host
