#include "molt/host/slot/state_hooks.hpp"

#include "molt/host/slot/module_call.hpp"
#include "molt/host/state/buffers.hpp"
#include "molt/host/state/part_file.hpp"

namespace molt::host {

std::optional<std::string> save_state_into(const Hooks& hooks, const api::SaveTarget& target, std::streambuf& out) {
  api::StateWriter writer(out);
  return guard_module_call("save_state", [&] { hooks.save_state(writer, target); });
}

Result<std::string> save_state_to_string(const Hooks& hooks, const api::SaveTarget& target, std::uint64_t max_bytes) {
  StringSink sink(max_bytes);
  const auto failure = save_state_into(hooks, target, sink);
  // Over the limit, save_state fails because the sink refused a write: the
  // limit is the cause.
  if (sink.over_limit()) return Error{{}, {}, {}, Phase::Save, over_limit_reason(max_bytes)};
  if (failure) return Error{{}, {}, {}, Phase::Save, *failure};
  return sink.take();
}

std::string over_limit_reason(std::uint64_t max_bytes) {
  return "state is larger than the limit of " + std::to_string(max_bytes) + " bytes";
}

std::optional<std::string> load_state_from(const Hooks& hooks, std::streambuf& source, std::uint64_t size,
                                           const api::Migration& migration) {
  api::StateReader reader(source, size);
  return guard_module_call("load_state", [&] { hooks.load_state(reader, migration); });
}

std::optional<std::string> load_state_from_bytes(const Hooks& hooks, std::string_view bytes,
                                                 const api::Migration& migration) {
  ViewSource source(bytes);
  if (auto failure = load_state_from(hooks, source, bytes.size(), migration)) return failure;
  if (source.remaining() != 0) return unread_reason(source.remaining(), bytes.size());
  return std::nullopt;
}

std::optional<std::string> receive_part_from_bytes(const Hooks& hooks, std::string_view bytes,
                                                   const api::Migration& migration, api::TransferPart part) {
  ViewSource source(bytes);
  api::StateReader reader(source, bytes.size());
  if (auto failure = guard_module_call("receive_part", [&] { hooks.receive_part(reader, migration, part); }))
    return failure;
  if (reader.remaining() != 0)
    return "receive_part left " + std::to_string(reader.remaining()) + " of the part's " + std::to_string(bytes.size()) +
           " bytes unread";
  return std::nullopt;
}

std::optional<std::string> load_state_blob(const Hooks& hooks, const StateBlob& blob, const api::Migration& migration) {
  if (blob.encoding == StateEncoding::Archive) return load_state_from_bytes(hooks, blob.bytes, migration);
  if (!hooks.can_transfer())
    return "the state is pre-copy parts (written by " + blob.module + " " + std::to_string(blob.version.value) +
           " while it served), and this version does not implement receive_part (Feature::Transfer) to read them";
  return for_each_part(blob.bytes, [&](api::TransferPart part, std::string_view bytes) {
    return receive_part_from_bytes(hooks, bytes, migration, part);
  });
}

std::string unread_reason(std::uint64_t left, std::uint64_t total) {
  return "load_state returned with " + std::to_string(left) + " of " + std::to_string(total) +
         " bytes unread (does it read the schema it was given?)";
}

}  // namespace molt::host
