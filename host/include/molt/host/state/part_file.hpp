// A state file made of pre-copy parts (StateEncoding::Parts), written while
// the module serves.
//
// A snapshot taken by pre-copy (ModuleSlot::save_state) goes straight to its
// file: each part the module's transfer hooks write is appended as it
// comes, and the file is put in place (atomically, like every state file)
// once the final part, taken in the pause, is in. Nothing holds the whole
// state but the module itself: no second instance, no serialized copy. The
// parts are applied in order to a fresh instance (receive_part) to read it
// back, which gives the state the module had when it wrote the final part
// (molt/transfer.hpp).
//
// The body is the parts one after the other, each framed as
//   1 byte   the part's kind (api::TransferPart: 0 chunk, 1 delta, 2 final)
//   8 bytes  its length, little-endian
//   the part's bytes
// and the last one, only that one, is the final part. The header line
// (state_blob.hpp) comes first but is written last, into room kept for it:
// padded with spaces before its newline when shorter, the parts moved along
// when longer (a host part with many jobs).
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "molt/host/common/atomic_file.hpp"
#include "molt/host/common/error.hpp"
#include "molt/host/common/sha256.hpp"
#include "molt/host/state/state_blob.hpp"
#include "molt/transfer.hpp"

namespace molt::host {

/// The frame before a part of `length` bytes of `kind`.
[[nodiscard]] std::string part_frame(api::TransferPart kind, std::uint64_t length);

/// Calls `apply` on each part of `body` in order; stops at the first that
/// returns a reason. Why `body` is not a sequence of parts ending with the
/// final one (and with no other), or why a part could not be applied.
using ApplyPart = std::function<std::optional<std::string>(api::TransferPart kind, std::string_view bytes)>;
[[nodiscard]] std::optional<std::string> for_each_part(std::string_view body, const ApplyPart& apply);
/// for_each_part applying nothing: whether `body` is well formed.
[[nodiscard]] std::optional<std::string> check_parts(std::string_view body);

class PartFile {
 public:
  /// Room kept for the header before the first part.
  static constexpr std::uint64_t kHeaderRoom = 4096;

  /// Begins the state file at `path` for the state `about` describes
  /// (module, version, schema; its bytes unused). A body larger than
  /// `max_bytes` is refused (a boot could not read it back).
  static Result<std::unique_ptr<PartFile>> create(const std::filesystem::path& path, const StateBlob& about,
                                                  std::uint64_t max_bytes);
  PartFile(const PartFile&) = delete;
  PartFile& operator=(const PartFile&) = delete;
  ~PartFile() = default;  ///< without commit(): the temporary file is removed, the target untouched

  /// Appends a part; why not (a write error, the limit).
  [[nodiscard]] std::optional<std::string> append(api::TransferPart kind, std::string_view bytes);
  /// Writes the header, with `host` (the host's part: JSON, or empty), and
  /// puts the file in place: fsync, rename, fsync of the directory. The
  /// size of the body, or why not (an Error naming the file).
  Result<std::uint64_t> commit(std::string host);

  [[nodiscard]] const std::filesystem::path& path() const noexcept { return file_.path(); }

 private:
  PartFile(StateBlob about, std::uint64_t max_bytes) : about_(std::move(about)), max_bytes_(max_bytes) {}
  /// Moves the body `by` bytes further into the file (a header longer than
  /// the room kept for it).
  std::optional<std::string> move_body(std::uint64_t by);
  Error failed(std::string reason) const;

  StateBlob about_;
  std::uint64_t max_bytes_;
  AtomicFile file_;
  Sha256 digest_;
  std::uint64_t length_ = 0;  ///< of the body so far
  bool final_ = false;        ///< the final part is in: nothing may follow
};

}  // namespace molt::host
