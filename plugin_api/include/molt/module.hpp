// The module interface, its metadata, and the macro that exports both.
//
// A module is a class derived from molt::api::Module that declares
//
//   static constexpr std::string_view kName = "counter";  // [a-z0-9_-], 1..63 chars
//   static constexpr molt::api::ModuleVersion kVersion{2};
//   static constexpr molt::api::SchemaVersion kSchema{2};
//   static constexpr molt::api::CallMode kCallMode = CallMode::Serial;  // optional
//
// and is exported, once per image, with MOLT_MODULE(ClassName). Build it with
// molt_add_plugin() from CMake, which sets the compiler flags that make two
// versions of one module safe to load side by side. See docs/plugin-api.md.
//
// A module that derives from StatefulModule<State> (below) also lets the host
// hand its state object to the next version in memory, when both declare the
// same schema and the same state layout: a code-only upgrade then costs the
// same whatever the state's size.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>

#include "molt/context.hpp"
#include "molt/error.hpp"
#include "molt/job.hpp"
#include "molt/message.hpp"
#include "molt/one_schema.hpp"
#include "molt/state.hpp"
#include "molt/state_rules.hpp"
#include "molt/stream.hpp"
#include "molt/transfer.hpp"
#include "molt/types.hpp"

extern "C" {
/// A module image's metadata, exported as the data symbol `molt_module_info`.
/// Plain constant data, no pointers: the host reads it from the file before
/// loading it, so a wrong image is refused without running any of its code.
/// `abi_version` and `info_size` stay the first two fields in every ABI
/// version, and fields are only ever appended (a minor ABI bump): the host
/// reads a field only when the image's `info_size` covers it.
struct MoltModuleInfo {
  std::uint32_t abi_version;        ///< molt::api::kAbiVersion the image was built with
  std::uint32_t info_size;          ///< sizeof(MoltModuleInfo) in that ABI
  std::uint32_t module_version;     ///< ModuleVersion, > 0
  std::uint32_t state_schema;       ///< SchemaVersion, > 0
  std::uint32_t call_mode;          ///< molt::api::CallMode
  std::uint32_t cxx_abi;            ///< _GLIBCXX_USE_CXX11_ABI of the build (std::string layout)
  std::uint64_t state_fingerprint;  ///< layout of the state object (StatefulModule), 0: none
  char name[64];                    ///< NUL-terminated module name
  // ABI 5 ends here (96 bytes).
  /// molt::api::Feature bits: the optional hooks the module implements. 64
  /// bits rather than 32 so that the struct has no padding at its end, where
  /// a field appended later would otherwise sit unnoticed by info_size.
  std::uint64_t features;
};
}

namespace molt::api {

/// How the host admits calls into one module instance.
enum class CallMode : std::uint32_t {
  Serial = 0,      ///< one call at a time, in arrival order (default): no locks needed
  Concurrent = 1,  ///< calls may overlap; the module synchronises its own state
};

/// Why the host turns a client away before the module sees it.
enum class Refusal : std::uint32_t {
  TooManyClients = 0,  ///< the listener has `maxclients` connections already
};

/// What an image implements beyond the required hooks (start, handle,
/// save_state, load_state, stop), declared in MoltModuleInfo::features since
/// ABI 6 and computed by MOLT_MODULE from which hooks the class overrides.
/// The host calls the hooks of a feature only when its bit is set; otherwise
/// it does what the default in Module does, without entering the image. For
/// an image built before ABI 6 the host assumes every feature of its ABI.
enum class Feature : std::uint64_t {
  Streams = 1u << 0,        ///< on_connect, on_data or on_disconnect
  Timers = 1u << 1,         ///< on_timer
  Jobs = 1u << 2,           ///< run_job_step
  Health = 1u << 3,         ///< health
  RefusalReply = 1u << 4,   ///< refusal_reply
  StateInMemory = 1u << 5,  ///< detach_state and attach_state (StatefulModule)
  Transfer = 1u << 6,       ///< the pre-copy hooks: transfer_begin ... receive_part (ABI 7)
};

/// A set of Feature bits.
struct Features {
  std::uint64_t bits = 0;
  [[nodiscard]] constexpr bool has(Feature feature) const noexcept {
    return (bits & static_cast<std::uint64_t>(feature)) != 0;
  }
  constexpr Features& add(Feature feature) noexcept {
    bits |= static_cast<std::uint64_t>(feature);
    return *this;
  }
  friend constexpr bool operator==(Features, Features) = default;
};

/// A service module. The host creates one instance per running version and
/// calls it as follows:
///
///   start ──► (load_state)? ──► handle* / save_state* ──► stop ──► destroyed
///
/// In CallMode::Serial no two of these calls overlap. `load_state` follows
/// `start` only when the instance takes over state (an upgrade or a restore);
/// otherwise the instance begins with its initial state.
class Module {
 public:
  virtual ~Module() = default;

  /// Called once, before any other call. `context` outlives the instance.
  /// Throwing refuses the start (or the upgrade that created this instance).
  virtual void start(Context& context) = 0;

  /// Answers one request. Throwing answers 500 and logs the reason; the
  /// instance keeps serving.
  virtual Response handle(const Request& request) = 0;

  /// Writes the whole state in `target.schema`. Must not change the state:
  /// if the upgrade fails afterwards this instance keeps serving as it was.
  /// Throw UnknownSchema for a schema it cannot write.
  virtual void save_state(StateWriter& out, const SaveTarget& target) const = 0;

  /// Replaces the initial state with the one in `in`, written in
  /// `migration.from_schema` by `migration.from_version`. An upgrade migrates
  /// here from the older schema; a downgrade arrives already converted by the
  /// newer version's save_state. Throw MigrationRefused to refuse; the host
  /// then discards this instance.
  virtual void load_state(StateReader& in, const Migration& migration) = 0;

  /// Called once, last. Release external resources here; must not throw.
  virtual void stop() noexcept {}

  // Streams: connections accepted on the module's listeners (see stream.hpp).

  /// A client connected.
  virtual void on_connect(ConnectionId /*connection*/) {}

  /// Bytes arrived. `input` is everything the module has not consumed yet on
  /// this connection, oldest first. Returns how many bytes from its front
  /// are consumed; the host keeps the rest and calls again when more arrive
  /// (in the next version, if an upgrade happens meanwhile). Neither `input`
  /// nor `out` may be kept past the call. Throwing closes the connection.
  virtual std::size_t on_data(ConnectionId /*connection*/, std::string_view input, StreamOutput& /*out*/) {
    return input.size();
  }

  /// The connection is gone (closed by either side). Drop what was kept for it.
  virtual void on_disconnect(ConnectionId /*connection*/) {}

  /// What to send a client the host turns away for `reason`, before it
  /// closes the connection, in the module's protocol (kv: Redis's
  /// "-ERR max number of clients reached\r\n"). Asked once per reason when
  /// the instance starts, never during an overload; must not depend on the
  /// state. Default: nothing, the connection is just closed.
  [[nodiscard]] virtual std::string refusal_reply(Refusal /*reason*/) const { return {}; }

  /// A timer set with Context::set_timer or set_timer_once fired.
  virtual void on_timer(std::string_view /*name*/) {}

  /// Runs one step of job `job`, started with Context::start_job (see
  /// job.hpp): a bounded piece of work that advances the checkpoint kept in
  /// the state, and reports progress in `step`. Throwing marks the job failed
  /// with the reason (it is not retried); the state must then be unchanged.
  virtual void run_job_step(std::string_view job, JobStep& /*step*/) {
    throw std::logic_error("module has no job '" + std::string(job) + "'");
  }

  /// Asked about once a second while a release that changed this module is
  /// on probation. A reason (one line) makes the host roll the release back.
  /// Must be quick and must not change the state. Default: healthy.
  [[nodiscard]] virtual std::optional<std::string> health() const { return std::nullopt; }

  // State handoff: implemented by StatefulModule, not by hand.

  /// Gives up the state object and returns it, or null if this module does
  /// not hand its state over in memory.
  virtual void* detach_state() noexcept { return nullptr; }
  /// Takes over a state object detached from the previous version, whose
  /// schema and layout fingerprint equal this one's. Replaces load_state.
  virtual void attach_state(void* /*state*/) noexcept {}

  // Pre-copy (ABI 7; Feature::Transfer; molt/transfer.hpp): the state
  // transferred while the module serves. Implement all six or none. The
  // host calls the sending hooks on the running version through its call
  // gate, like any call (clients wait for one call at most), and the
  // receiving hook on the new version before it serves.

  /// Begins a transfer of the state in `target.schema` (as save_state would
  /// write it): from now until transfer_end, note every entry written or
  /// removed. At most one transfer runs at a time.
  virtual void transfer_begin(const SaveTarget& /*target*/) {}
  /// Writes the next entries of the whole state as one part, within
  /// `budget`; `done` once every entry has been written.
  virtual TransferStep transfer_chunk(StateWriter& /*out*/, const TransferBudget& /*budget*/) { return {0, true}; }
  /// Writes, within `budget`, entries noted as changed (their value now, or
  /// that they are gone) as one part of the current round; `done` once the
  /// round's entries are written. A round is what was noted when it began.
  virtual TransferStep transfer_delta(StateWriter& /*out*/, const TransferBudget& /*budget*/) { return {0, true}; }
  /// Called while the module is paused: every change not written yet, and
  /// the state that is not entries (per-connection state), as the last part.
  virtual TransferStep transfer_final(StateWriter& /*out*/) { return {0, true}; }
  /// Stops noting changes: the transfer is complete, or abandoned. Must not
  /// throw.
  virtual void transfer_end() noexcept {}
  /// On the new version, before it serves: applies one part, written by
  /// `migration.from_version` in `migration.from_schema` (converting from an
  /// older schema entry by entry, as load_state does for a whole state).
  /// Parts arrive in the order they were written, starting from this
  /// instance's initial state. Throwing fails the upgrade (MigrationRefused).
  virtual void receive_part(StateReader& /*in*/, const Migration& /*migration*/, TransferPart /*part*/) {}

  // Hooks added by a later ABI go here, after every existing one, never
  // between: an image built for an older ABI has a vtable without their
  // slots. Give each a default, a Feature bit, and a row in the host's hook
  // table (host/include/molt/host/loader/abi.hpp), which records its first
  // ABI so that the host never calls it in an older image.
};

/// A module whose state is one object of type `State`, kept on the heap so
/// that the host can hand it to the next version without copying it. `State`
/// must follow the rules in state_rules.hpp; MOLT_MODULE checks them at
/// compile time. The fingerprint also needs the headers defining `State`
/// listed in molt_add_plugin(... STATE_HEADERS ...); without them the state
/// is always serialized.
template <class State>
class StatefulModule : public Module {
 public:
  using StateType = State;

  void* detach_state() noexcept final { return state_.release(); }
  void attach_state(void* state) noexcept final { state_.reset(static_cast<State*>(state)); }

 protected:
  [[nodiscard]] State& state() noexcept { return *state_; }
  [[nodiscard]] const State& state() const noexcept { return *state_; }

 private:
  std::unique_ptr<State> state_ = std::make_unique<State>();
};

namespace detail {

constexpr bool valid_module_name(std::string_view name) {
  if (name.empty() || name.size() >= sizeof(MoltModuleInfo{}.name)) return false;
  for (char c : name)
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-')) return false;
  return true;
}

template <class M>
constexpr CallMode call_mode_of() {
  if constexpr (requires { M::kCallMode; })
    return M::kCallMode;
  else
    return CallMode::Serial;
}

template <class M>
constexpr std::uint64_t state_fingerprint_of() {
  if constexpr (requires { typename M::StateType; })
    return state_fingerprint<typename M::StateType>();
  else
    return 0;
}

/// Instantiated (never run) by MOLT_MODULE: fails to compile if the state of
/// a StatefulModule breaks the rules in state_rules.hpp.
template <class M>
void check_state_rules() {
  if constexpr (requires { typename M::StateType; }) {
    StateRulesChecker checker;
    check_type<typename M::StateType>(checker);
  }
}

/// Whether M overrides `hook`: true unless `&M::hook` is Module's own. An
/// override the check cannot see (private, overloaded) counts as one, so the
/// host calls it: wrongly assuming an override only costs a call.
#define MOLT_DETAIL_OVERRIDES(M, hook) \
  (!requires { requires std::is_same_v<decltype(&M::hook), decltype(&::molt::api::Module::hook)>; })

template <class M>
constexpr Features features_of() {
  Features features;
  if (MOLT_DETAIL_OVERRIDES(M, on_connect) || MOLT_DETAIL_OVERRIDES(M, on_data) ||
      MOLT_DETAIL_OVERRIDES(M, on_disconnect))
    features.add(Feature::Streams);
  if (MOLT_DETAIL_OVERRIDES(M, on_timer)) features.add(Feature::Timers);
  if (MOLT_DETAIL_OVERRIDES(M, run_job_step)) features.add(Feature::Jobs);
  if (MOLT_DETAIL_OVERRIDES(M, health)) features.add(Feature::Health);
  if (MOLT_DETAIL_OVERRIDES(M, refusal_reply)) features.add(Feature::RefusalReply);
  if (MOLT_DETAIL_OVERRIDES(M, detach_state) || MOLT_DETAIL_OVERRIDES(M, attach_state))
    features.add(Feature::StateInMemory);
  if (MOLT_DETAIL_OVERRIDES(M, transfer_begin) || MOLT_DETAIL_OVERRIDES(M, transfer_chunk) ||
      MOLT_DETAIL_OVERRIDES(M, transfer_delta) || MOLT_DETAIL_OVERRIDES(M, transfer_final) ||
      MOLT_DETAIL_OVERRIDES(M, transfer_end) || MOLT_DETAIL_OVERRIDES(M, receive_part))
    features.add(Feature::Transfer);
  return features;
}
#undef MOLT_DETAIL_OVERRIDES

template <class M>
constexpr MoltModuleInfo make_module_info() {
  MoltModuleInfo info{};
  info.abi_version = kAbiVersion;
  info.info_size = sizeof(MoltModuleInfo);
  info.module_version = M::kVersion.value;
  info.state_schema = M::kSchema.value;
  info.call_mode = static_cast<std::uint32_t>(call_mode_of<M>());
  info.cxx_abi = _GLIBCXX_USE_CXX11_ABI;
  info.state_fingerprint = state_fingerprint_of<M>();
  for (std::size_t i = 0; i < M::kName.size(); ++i) info.name[i] = M::kName[i];
  info.features = features_of<M>().bits;
  return info;
}

template <class M>
constexpr bool check_module_declaration() {
  static_assert(std::is_base_of_v<Module, M>, "MOLT_MODULE: the class must derive from molt::api::Module");
  static_assert(valid_module_name(M::kName), "MOLT_MODULE: kName must be 1..63 characters of [a-z0-9_-]");
  static_assert(M::kVersion.value > 0, "MOLT_MODULE: kVersion must be positive");
  static_assert(M::kSchema.value > 0, "MOLT_MODULE: kSchema must be positive");
#ifdef MOLT_BUILD_MODULE_NAME
  static_assert(M::kName == std::string_view(MOLT_BUILD_MODULE_NAME),
                "MOLT_MODULE: kName differs from the module name given to molt_add_plugin()");
#endif
#ifdef MOLT_BUILD_MODULE_VERSION
  static_assert(M::kVersion.value == MOLT_BUILD_MODULE_VERSION,
                "MOLT_MODULE: kVersion differs from the VERSION given to molt_add_plugin()");
#endif
  return true;
}

}  // namespace detail
}  // namespace molt::api

#define MOLT_API_EXPORT __attribute__((visibility("default")))

/// Exports `Class` as this image's module: its metadata and its factory.
/// Use exactly once per image, at namespace scope.
#define MOLT_MODULE(Class)                                                                         \
  static_assert(::molt::api::detail::check_module_declaration<Class>());                          \
  [[maybe_unused]] static void (*const molt_detail_state_rules)() = &::molt::api::detail::check_state_rules<Class>; \
  extern "C" MOLT_API_EXPORT const MoltModuleInfo molt_module_info =                              \
      ::molt::api::detail::make_module_info<Class>();                                              \
  extern "C" MOLT_API_EXPORT ::molt::api::Module* molt_module_create() { return new Class(); }   \
  extern "C" MOLT_API_EXPORT void molt_module_destroy(::molt::api::Module* module) noexcept {    \
    delete module;                                                                                 \
  }
