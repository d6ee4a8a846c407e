#include "molt/host/state/part_file.hpp"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <system_error>

namespace molt::host {
namespace {

constexpr std::size_t kFrameBytes = 9;

const char* kind_name(api::TransferPart kind) {
  switch (kind) {
    case api::TransferPart::Chunk: return "chunk";
    case api::TransferPart::Delta: return "delta";
    case api::TransferPart::Final: return "final";
  }
  return "?";
}

}  // namespace

std::string part_frame(api::TransferPart kind, std::uint64_t length) {
  std::string frame(kFrameBytes, '\0');
  frame[0] = static_cast<char>(kind);
  for (int i = 0; i < 8; ++i) frame[1 + i] = static_cast<char>((length >> (8 * i)) & 0xff);
  return frame;
}

std::optional<std::string> for_each_part(std::string_view body, const ApplyPart& apply) {
  std::uint64_t offset = 0;
  for (std::uint64_t index = 0;; ++index) {
    const auto at = [&] { return "part " + std::to_string(index) + " (at byte " + std::to_string(offset) + ")"; };
    if (body.empty()) return index == 0 ? "no parts" : "no final part: the parts end after " + std::to_string(index);
    if (body.size() < kFrameBytes) return at() + ": " + std::to_string(body.size()) + " bytes, less than a part's frame";
    const auto kind_byte = static_cast<unsigned char>(body[0]);
    if (kind_byte > static_cast<unsigned char>(api::TransferPart::Final))
      return at() + ": unknown kind " + std::to_string(kind_byte);
    const auto kind = static_cast<api::TransferPart>(kind_byte);
    std::uint64_t length = 0;
    for (int i = 0; i < 8; ++i) length |= std::uint64_t{static_cast<unsigned char>(body[1 + i])} << (8 * i);
    if (length > body.size() - kFrameBytes)
      return at() + ": " + kind_name(kind) + " of " + std::to_string(length) + " bytes, but only " +
             std::to_string(body.size() - kFrameBytes) + " follow";
    const std::string_view bytes = body.substr(kFrameBytes, length);
    body.remove_prefix(kFrameBytes + length);
    if (kind == api::TransferPart::Final && !body.empty())
      return at() + ": the final part is followed by " + std::to_string(body.size()) + " more bytes";
    if (apply)
      if (auto failure = apply(kind, bytes)) return failure;
    offset += kFrameBytes + length;
    if (kind == api::TransferPart::Final) return std::nullopt;
  }
}

std::optional<std::string> check_parts(std::string_view body) { return for_each_part(body, {}); }

Result<std::unique_ptr<PartFile>> PartFile::create(const std::filesystem::path& path, const StateBlob& about,
                                                   std::uint64_t max_bytes) {
  StateBlob described{about.module, about.version, about.schema, {}, {}, StateEncoding::Parts};
  std::unique_ptr<PartFile> file(new PartFile(std::move(described), max_bytes));
  if (auto why = AtomicFile::open(path, file->file_))
    return Error{about.module, about.version, path.string(), Phase::Snapshot, *why};
  if (auto why = file->file_.seek(kHeaderRoom)) return file->failed(*why);
  return file;
}

Error PartFile::failed(std::string reason) const {
  return Error{about_.module, about_.version, file_.path().string(), Phase::Snapshot, std::move(reason)};
}

std::optional<std::string> PartFile::append(api::TransferPart kind, std::string_view bytes) {
  if (final_) return "a part after the final one";
  if (length_ + kFrameBytes + bytes.size() > max_bytes_)
    return "state is larger than host.max_state_bytes (" + std::to_string(max_bytes_) +
           " bytes), which a boot could not read back: not written; raise host.max_state_bytes";
  const std::string frame = part_frame(kind, bytes.size());
  if (auto why = file_.write(frame)) return why;
  if (auto why = file_.write(bytes)) return why;
  digest_.update(frame);
  digest_.update(bytes);
  length_ += frame.size() + bytes.size();
  final_ = kind == api::TransferPart::Final;
  return std::nullopt;
}

std::optional<std::string> PartFile::move_body(std::uint64_t by) {
  // From the end backwards, a block at a time: no block is overwritten
  // before it has been copied.
  std::string block(1 << 20, '\0');
  for (std::uint64_t end = length_; end > 0;) {
    const std::uint64_t size = std::min<std::uint64_t>(block.size(), end);
    const std::uint64_t from = kHeaderRoom + end - size;
    for (std::uint64_t done = 0; done < size;) {
      const ssize_t n = ::pread(file_.fd(), block.data() + done, size - done, static_cast<off_t>(from + done));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return "cannot read back " + file_.path().string() + "'s temporary: " +
                         std::error_code(n < 0 ? errno : EIO, std::generic_category()).message();
      done += static_cast<std::uint64_t>(n);
    }
    if (auto why = file_.write_at(from + by, std::string_view(block.data(), size))) return why;
    end -= size;
  }
  return std::nullopt;
}

Result<std::uint64_t> PartFile::commit(std::string host) {
  if (!final_) return failed("the state has no final part: not written");
  about_.host = std::move(host);
  std::string header = encode_state_header(about_, length_, digest_.hex());
  header.pop_back();  // the newline goes at the end of the room
  if (header.size() + 1 > kHeaderRoom) {
    if (auto why = move_body(header.size() + 1 - kHeaderRoom)) return failed(*why);
  } else {
    header.append(kHeaderRoom - 1 - header.size(), ' ');
  }
  header += '\n';
  if (auto why = file_.write_at(0, header)) return failed(*why);
  if (auto why = file_.commit()) return failed(*why);
  return length_;
}

}  // namespace molt::host
