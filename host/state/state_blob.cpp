#include "molt/host/state/state_blob.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <system_error>

#include <nlohmann/json.hpp>

#include "molt/host/common/atomic_file.hpp"
#include "molt/host/common/json_text.hpp"
#include "molt/host/common/sha256.hpp"
#include "molt/host/state/part_file.hpp"

namespace molt::host {
namespace fs = std::filesystem;
namespace {

Error snapshot_error(std::string module, std::string file, std::string reason) {
  return Error{std::move(module), {}, std::move(file), Phase::Snapshot, std::move(reason)};
}

}  // namespace

std::string encode_state_header(const StateBlob& blob) {
  return encode_state_header(blob, blob.bytes.size(), sha256_hex(blob.bytes));
}

std::string encode_state_header(const StateBlob& blob, std::uint64_t length, std::string_view sha256) {
  nlohmann::ordered_json header = {
      {"format", kStateFormat}, {"module", blob.module}, {"version", blob.version.value}, {"schema", blob.schema.value},
  };
  // Absent for an archive: files written before there were parts read the same.
  if (blob.encoding == StateEncoding::Parts) header["encoding"] = kPartsEncoding;
  header["length"] = length;
  header["sha256"] = sha256;
  if (!blob.host.empty()) {
    // The checksum is of the compact dump with sorted keys: what the reader computes.
    const std::string host = json_text(nlohmann::json::parse(blob.host));
    header["host"] = nlohmann::ordered_json::parse(host);
    header["host_sha256"] = sha256_hex(host);
  }
  std::string out = json_text(header);
  out += '\n';
  return out;
}

std::string encode_state_file(const StateBlob& blob) { return encode_state_header(blob) + blob.bytes; }

namespace {

/// How deep the header's JSON may nest. A header nests 4 deep (header, host
/// part, jobs, a job); serializing a deeper value recurses once per level,
/// and a crafted header 500000 levels deep would overflow the stack.
constexpr std::size_t kMaxHeaderDepth = 16;

/// Reads the header's JSON without building it, to refuse nesting deeper
/// than kMaxHeaderDepth before the parser builds it (nlohmann's SAX interface).
class DepthCheck {
 public:
  bool null() { return true; }
  bool boolean(bool) { return true; }
  bool number_integer(std::int64_t) { return true; }
  bool number_unsigned(std::uint64_t) { return true; }
  bool number_float(double, const std::string&) { return true; }
  bool string(std::string&) { return true; }
  bool binary(std::vector<std::uint8_t>&) { return true; }
  bool start_object(std::size_t) { return ++depth_ <= kMaxHeaderDepth; }
  bool key(std::string&) { return true; }
  bool end_object() { return leave(); }
  bool start_array(std::size_t) { return ++depth_ <= kMaxHeaderDepth; }
  bool end_array() { return leave(); }
  bool parse_error(std::size_t, const std::string&, const nlohmann::json::exception&) { return false; }
  [[nodiscard]] bool too_deep() const { return depth_ > kMaxHeaderDepth; }

 private:
  bool leave() {
    --depth_;
    return true;
  }
  std::size_t depth_ = 0;
};

/// Decodes `contents` but for the state bytes, and returns where they begin.
Result<std::size_t> decode_header(std::string_view contents, std::uint64_t max_state_bytes, StateBlob& blob) {
  auto refuse = [](std::string reason, std::string module = {}) {
    return snapshot_error(std::move(module), {}, std::move(reason));
  };
  const auto newline = contents.substr(0, kMaxStateHeaderBytes).find('\n');
  if (newline == std::string_view::npos) return refuse("not a state archive: no header line in the first " + std::to_string(kMaxStateHeaderBytes) + " bytes");
  const std::string_view header_text = contents.substr(0, newline);
  DepthCheck depth;
  nlohmann::json::sax_parse(header_text, &depth);
  if (depth.too_deep())
    return refuse("not a state archive: its header nests deeper than " + std::to_string(kMaxHeaderDepth) + " levels");
  const auto header = nlohmann::json::parse(header_text, nullptr, /*allow_exceptions=*/false);
  if (!header.is_object() || header.value("format", "") != kStateFormat)
    return refuse("not a state archive: header is not a " + std::string(kStateFormat) + " header");

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
    if (const auto encoding = header.find("encoding"); encoding != header.end()) {
      if (*encoding != kPartsEncoding)
        return refuse("unknown encoding " + encoding->dump() + " (this moltd reads \"" + std::string(kPartsEncoding) +
                          "\" or none)",
                      blob.module);
      blob.encoding = StateEncoding::Parts;
      if (auto malformed = check_parts(body)) return refuse("malformed parts: " + *malformed, blob.module);
    }
    if (const auto host = header.find("host"); host != header.end()) {
      const auto host_checksum = header.at("host_sha256").get<std::string>();
      if (!host->is_object()) return refuse("the host's part (jobs, timers) is not a JSON object", blob.module);
      std::string text = json_text(*host);
      if (sha256_hex(text) != host_checksum)
        return refuse("checksum mismatch: the host's part (jobs, timers) was altered", blob.module);
      blob.host = std::move(text);
    }
  } catch (const nlohmann::json::exception& e) {
    return refuse(std::string("malformed header: ") + e.what(), blob.module);
  }
  return newline + 1;
}

}  // namespace

Result<StateBlob> decode_state_file(std::string_view contents, std::uint64_t max_state_bytes) {
  StateBlob blob;
  auto body = decode_header(contents, max_state_bytes, blob);
  if (!body) return std::move(body).error();
  blob.bytes.assign(contents.substr(body.value()));
  return blob;
}

Result<StateBlob> read_state_file(const fs::path& path, std::uint64_t max_state_bytes, Symlinks symlinks) {
  std::string contents;
  if (auto why = read_file(path, max_state_bytes + kMaxStateHeaderBytes, contents, symlinks))
    return snapshot_error({}, path.string(), *why);
  StateBlob blob;
  auto body = decode_header(contents, max_state_bytes, blob);
  if (!body) {
    Error error = std::move(body).error();
    error.file = path.string();
    return error;
  }
  // The state bytes stay where they were read: no second copy of a state
  // that may be most of the host's memory.
  contents.erase(0, body.value());
  blob.bytes = std::move(contents);
  return blob;
}

Result<void> write_state_file(const fs::path& path, const StateBlob& blob) {
  // The state is written from the blob: a copy behind the header would add
  // its size to the host's peak memory, and a state may be most of it.
  const std::string header = encode_state_header(blob);
  const std::string_view pieces[] = {header, blob.bytes};
  if (auto why = write_file_atomically(path, pieces))
    return snapshot_error(blob.module, path.string(), *why);
  return {};
}

}  // namespace molt::host
