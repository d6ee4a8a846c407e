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
#pragma once

#include <cstdint>
#include <string_view>
#include <type_traits>

#include "molt/context.hpp"
#include "molt/error.hpp"
#include "molt/message.hpp"
#include "molt/state.hpp"
#include "molt/types.hpp"

extern "C" {
/// A module image's metadata, exported as the data symbol `molt_module_info`.
/// Plain constant data, no pointers: the host reads it from the file before
/// loading it, so a wrong image is refused without running any of its code.
/// `abi_version` stays the first field in every ABI version.
struct MoltModuleInfo {
  std::uint32_t abi_version;        ///< molt::api::kAbiVersion the image was built with
  std::uint32_t info_size;          ///< sizeof(MoltModuleInfo) in that ABI
  std::uint32_t module_version;     ///< ModuleVersion, > 0
  std::uint32_t state_schema;       ///< SchemaVersion, > 0
  std::uint32_t call_mode;          ///< molt::api::CallMode
  std::uint32_t cxx_abi;            ///< _GLIBCXX_USE_CXX11_ABI of the build (std::string layout)
  std::uint64_t state_fingerprint;  ///< reserved, 0
  char name[64];                    ///< NUL-terminated module name
};
}

namespace molt::api {

/// How the host admits calls into one module instance.
enum class CallMode : std::uint32_t {
  Serial = 0,      ///< one call at a time, in arrival order (default): no locks needed
  Concurrent = 1,  ///< calls may overlap; the module synchronises its own state
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
constexpr MoltModuleInfo make_module_info() {
  MoltModuleInfo info{};
  info.abi_version = kAbiVersion;
  info.info_size = sizeof(MoltModuleInfo);
  info.module_version = M::kVersion.value;
  info.state_schema = M::kSchema.value;
  info.call_mode = static_cast<std::uint32_t>(call_mode_of<M>());
  info.cxx_abi = _GLIBCXX_USE_CXX11_ABI;
  info.state_fingerprint = 0;
  for (std::size_t i = 0; i < M::kName.size(); ++i) info.name[i] = M::kName[i];
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
  extern "C" MOLT_API_EXPORT const MoltModuleInfo molt_module_info =                              \
      ::molt::api::detail::make_module_info<Class>();                                              \
  extern "C" MOLT_API_EXPORT ::molt::api::Module* molt_module_create() { return new Class(); }   \
  extern "C" MOLT_API_EXPORT void molt_module_destroy(::molt::api::Module* module) noexcept {    \
    delete module;                                                                                 \
  }
