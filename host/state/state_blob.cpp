#include "molt/host/state/state_blob.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <system_error>

#include <nlohmann/json.hpp>

#include "molt/host/common/sha256.hpp"

namespace molt::host {
namespace fs = std::filesystem;
namespace {

Error snapshot_error(std::string module, std::string file, std::string reason) {
  return Error{std::move(module), {}, std::move(file), Phase::Snapshot, std::move(reason)};
}

std::string errno_text(int err) { return std::error_code(err, std::generic_category()).message(); }

bool write_all(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t n = ::write(fd, bytes.data(), bytes.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return false;
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

}  // namespace

std::string encode_state_file(const StateBlob& blob) {
  const nlohmann::ordered_json header = {
      {"format", kStateFormat},        {"module", blob.module}, {"version", blob.version.value},
      {"schema", blob.schema.value},   {"length", blob.bytes.size()}, {"sha256", sha256_hex(blob.bytes)},
  };
  std::string out = header.dump();
  out += '\n';
  out += blob.bytes;
  return out;
}

Result<StateBlob> decode_state_file(std::string_view contents, std::uint64_t max_state_bytes) {
  auto refuse = [](std::string reason, std::string module = {}) {
    return snapshot_error(std::move(module), {}, std::move(reason));
  };
  const auto newline = contents.substr(0, kMaxStateHeaderBytes).find('\n');
  if (newline == std::string_view::npos) return refuse("not a state archive: no header line in the first 4096 bytes");
  const auto header = nlohmann::json::parse(contents.substr(0, newline), nullptr, /*allow_exceptions=*/false);
  if (!header.is_object() || header.value("format", "") != kStateFormat)
    return refuse("not a state archive: header is not a " + std::string(kStateFormat) + " header");

  StateBlob blob;
  try {
    blob.module = header.at("module").get<std::string>();
    blob.version.value = header.at("version").get<std::uint32_t>();
    blob.schema.value = header.at("schema").get<std::uint32_t>();
    const auto length = header.at("length").get<std::uint64_t>();
    const auto checksum = header.at("sha256").get<std::string>();
    if (blob.version.value == 0 || blob.schema.value == 0) return refuse("version and schema must be positive", blob.module);
    if (length > max_state_bytes)
      return refuse("state is " + std::to_string(length) + " bytes, more than the limit of " +
                        std::to_string(max_state_bytes),
                    blob.module);
    const std::string_view body = contents.substr(newline + 1);
    if (body.size() != length)
      return refuse("truncated or padded: header says " + std::to_string(length) + " bytes, file has " +
                        std::to_string(body.size()),
                    blob.module);
    if (sha256_hex(body) != checksum) return refuse("checksum mismatch: the state bytes were altered", blob.module);
    blob.bytes.assign(body);
  } catch (const nlohmann::json::exception& e) {
    return refuse(std::string("malformed header: ") + e.what(), blob.module);
  }
  return blob;
}

Result<StateBlob> read_state_file(const fs::path& path, std::uint64_t max_state_bytes) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return snapshot_error({}, path.string(), "cannot open: " + errno_text(errno));
  struct stat st {};
  std::string contents;
  bool ok = ::fstat(fd, &st) == 0;
  if (ok && static_cast<std::uint64_t>(st.st_size) > max_state_bytes + kMaxStateHeaderBytes) {
    ::close(fd);
    return snapshot_error({}, path.string(),
                          "file is " + std::to_string(st.st_size) + " bytes, more than the state limit of " +
                              std::to_string(max_state_bytes));
  }
  if (ok) {
    contents.resize(static_cast<std::size_t>(st.st_size));
    std::size_t done = 0;
    while (ok && done < contents.size()) {
      const ssize_t n = ::read(fd, contents.data() + done, contents.size() - done);
      if (n < 0 && errno == EINTR) continue;
      ok = n > 0;
      if (ok) done += static_cast<std::size_t>(n);
    }
  }
  const int err = errno;
  ::close(fd);
  if (!ok) return snapshot_error({}, path.string(), "cannot read: " + errno_text(err));
  auto blob = decode_state_file(contents, max_state_bytes);
  if (!blob) {
    Error error = std::move(blob).error();
    error.file = path.string();
    return error;
  }
  return blob;
}

Result<void> write_state_file(const fs::path& path, const StateBlob& blob) {
  auto fail = [&](std::string reason) { return snapshot_error(blob.module, path.string(), std::move(reason)); };
  const fs::path dir = path.has_parent_path() ? path.parent_path() : fs::path(".");
  std::error_code exists_error;
  if (!fs::is_directory(dir, exists_error)) return fail("directory " + dir.string() + " does not exist");
  const fs::path temp = dir / ("." + path.filename().string() + ".tmp." + std::to_string(::getpid()));
  const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return fail("cannot create " + temp.string() + ": " + errno_text(errno));
  const bool written = write_all(fd, encode_state_file(blob)) && ::fsync(fd) == 0;
  const int err = errno;
  ::close(fd);
  std::error_code ec;
  if (!written) {
    fs::remove(temp, ec);
    return fail("cannot write " + temp.string() + ": " + errno_text(err));
  }
  if (::rename(temp.c_str(), path.c_str()) != 0) {
    const int rename_err = errno;
    fs::remove(temp, ec);
    return fail("cannot rename into place: " + errno_text(rename_err));
  }
  if (const int dir_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); dir_fd >= 0) {
    ::fsync(dir_fd);  // makes the rename itself durable
    ::close(dir_fd);
  }
  return {};
}

}  // namespace molt::host
