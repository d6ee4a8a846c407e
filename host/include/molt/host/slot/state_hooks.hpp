// Calling a module's state hooks, save_state and load_state, the one way the
// host does it: guarded (guard_module_call), told the direction between the
// versions, bounded in size, and with load_state made to read all it is
// given. The upgrade transaction (upgrade/transaction.cpp), the slot's own
// saves (module_slot.cpp) and the rehearsal helper (molt_rehearse/main.cpp)
// all go through these, so a module meets the same rules in each.
//
// Each returns why the call failed, as one line, or nothing; callers add the
// module, version, file and phase (an Error) themselves.
#pragma once

#include <cstdint>
#include <optional>
#include <streambuf>
#include <string>
#include <string_view>

#include "molt/host/common/error.hpp"
#include "molt/host/slot/hooks.hpp"
#include "molt/host/state/state_blob.hpp"
#include "molt/module.hpp"

namespace molt::host {

/// Which way a move from version `from` to version `to` goes.
[[nodiscard]] constexpr api::Direction direction_between(api::ModuleVersion from, api::ModuleVersion to) noexcept {
  if (to > from) return api::Direction::Up;
  if (to < from) return api::Direction::Down;
  return api::Direction::Same;
}

/// save_state(target) into `out`; why it failed, if it did. `out` refusing
/// bytes (a full pipe, a limit) shows as save_state throwing.
[[nodiscard]] std::optional<std::string> save_state_into(const Hooks& hooks, const api::SaveTarget& target,
                                                         std::streambuf& out);

/// save_state(target) into memory, at most `max_bytes`: the bytes, or an
/// Error (Phase::Save, only its reason set) saying why not.
[[nodiscard]] Result<std::string> save_state_to_string(const Hooks& hooks, const api::SaveTarget& target,
                                                       std::uint64_t max_bytes);

/// "state is larger than the limit of N bytes"
[[nodiscard]] std::string over_limit_reason(std::uint64_t max_bytes);

/// load_state over `source`, which holds at most `size` bytes, told
/// `migration`; why it failed, if it did. Whether it read everything is the
/// caller's to check (unread_reason): only the caller knows when the state
/// has ended.
[[nodiscard]] std::optional<std::string> load_state_from(const Hooks& hooks, std::streambuf& source,
                                                         std::uint64_t size, const api::Migration& migration);

/// load_state over all of `bytes`, which it must read to the end; why not.
[[nodiscard]] std::optional<std::string> load_state_from_bytes(const Hooks& hooks, std::string_view bytes,
                                                               const api::Migration& migration);

/// receive_part over all of `bytes` (one part of a pre-copy), which it must
/// read to the end; why not.
[[nodiscard]] std::optional<std::string> receive_part_from_bytes(const Hooks& hooks, std::string_view bytes,
                                                                 const api::Migration& migration,
                                                                 api::TransferPart part);

/// A saved state read into a fresh instance, whatever its encoding: an
/// archive by load_state, pre-copy parts by receive_part, each in order
/// (part_file.hpp); why not. A module that does not implement pre-copy
/// cannot read parts: that is said.
[[nodiscard]] std::optional<std::string> load_state_blob(const Hooks& hooks, const StateBlob& blob,
                                                         const api::Migration& migration);

/// Why a load_state that returned with `left` of `total` bytes unread
/// failed: it most likely read another schema than the one it was given.
[[nodiscard]] std::string unread_reason(std::uint64_t left, std::uint64_t total);

}  // namespace molt::host
