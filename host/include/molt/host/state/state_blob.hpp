// A module's saved state with what is needed to read it back: which module,
// which version wrote it, in which schema.
//
// On disk (snapshots, fixtures) a state archive is one JSON header line
// followed by the state bytes:
//
//   {"format":"molt-state/1","module":"counter","version":1,"schema":1,"length":52,"sha256":"…"}\n
//   <length bytes of Boost.Serialization binary archive>
//
// The header is readable with `head -1`; the length and checksum catch a
// truncated or altered file before any module code reads it. A snapshot's
// header also carries the host's part, when there is one: the module's job
// records and timers ("host", with its own "host_sha256"), saved in the same
// pause as the state.
//
// The bytes are what the module's save_state wrote (its load_state reads
// them), unless the header says "encoding":"parts": then they are the parts
// of a pre-copy as its transfer hooks wrote them, framed (part_file.hpp),
// and a new instance's receive_part applies them in order. A snapshot of a
// module that implements pre-copy is written that way, a part at a time
// while the module serves, so it never holds the whole state in memory.
// Such a header may end in spaces: it was written last, into room kept for
// it before the parts.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include "molt/host/common/error.hpp"
#include "molt/host/common/file_checks.hpp"
#include "molt/types.hpp"

namespace molt::host {

/// How a state's bytes are laid out.
enum class StateEncoding {
  Archive,  ///< written by save_state, read by load_state
  Parts,    ///< pre-copy parts, framed (part_file.hpp), applied in order by receive_part
};

struct StateBlob {
  std::string module;
  api::ModuleVersion version;  ///< the module version that wrote it
  api::SchemaVersion schema;   ///< the schema it is written in
  std::string bytes;
  /// The host's part saved with it (ModuleSlot::host_part, host_part.hpp): JSON, or empty.
  std::string host = {};
  StateEncoding encoding = StateEncoding::Archive;
};

inline constexpr std::string_view kStateFormat = "molt-state/1";
inline constexpr std::string_view kPartsEncoding = "parts";  ///< the header's "encoding" for StateEncoding::Parts
inline constexpr std::size_t kMaxStateHeaderBytes = 1 << 20;  ///< room for the host's part

/// The archive file's contents for `blob` (header line, then bytes).
[[nodiscard]] std::string encode_state_file(const StateBlob& blob);
/// Its header line alone, newline included: the bytes follow it.
[[nodiscard]] std::string encode_state_header(const StateBlob& blob);
/// The header line for a state described by `about` (its bytes unused)
/// whose bytes are `length` long with checksum `sha256`: for bytes that are
/// not in memory.
[[nodiscard]] std::string encode_state_header(const StateBlob& about, std::uint64_t length, std::string_view sha256);

/// Parses an archive file's contents. Refuses a malformed, oversized or
/// deeply nested header, a length other than the bytes present, a length
/// above `max_state_bytes`, and a checksum mismatch. Allocates no more than
/// the contents' size plus what parsing the header takes (at most
/// kMaxStateHeaderBytes of JSON, nested at most 16 deep).
[[nodiscard]] Result<StateBlob> decode_state_file(std::string_view contents, std::uint64_t max_state_bytes);

/// Reads and decodes the archive at `path`; errors name the file. Anything
/// but a regular file is refused at once (read_file); so is a symbolic link
/// with Symlinks::Refuse (for the host's own snapshots). The state bytes are
/// not copied: the file's size is read into memory once.
[[nodiscard]] Result<StateBlob> read_state_file(const std::filesystem::path& path, std::uint64_t max_state_bytes,
                                                Symlinks symlinks = Symlinks::Follow);

/// Writes the archive atomically: a temporary file in the same directory,
/// fsync, rename over `path`, fsync of the directory. A crash leaves either
/// the old file or the new one, never a mix.
[[nodiscard]] Result<void> write_state_file(const std::filesystem::path& path, const StateBlob& blob);

}  // namespace molt::host
