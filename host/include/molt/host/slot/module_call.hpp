// The one place where a module's exceptions become the host's errors.
//
// Modules fail by throwing; the host never lets that cross into its own code.
// Every call into module code goes through guard_module_call, which runs it
// and returns why it failed, as one line, or nothing.
#pragma once

#include <exception>
#include <optional>
#include <string>
#include <string_view>

#include "molt/error.hpp"

namespace molt::host {

/// Runs `fn` (module code) and returns what it returns; on an exception,
/// returns on_failure(reason) instead, the reason being
/// "refused: <what()>" for api::MigrationRefused (the module said no),
/// "<what> threw: <what()>" for another std::exception,
/// "<what> threw a non-standard exception" for anything else.
/// Both return R, which is built where the caller's result goes (a module's
/// api::Response is moved once, into it).
template <class R, class F, class OnFailure>
[[nodiscard]] R guard_module_value(std::string_view what, F&& fn, OnFailure&& on_failure) noexcept {
  try {
    return fn();
  } catch (const api::MigrationRefused& e) {
    return on_failure(std::string("refused: ") + e.what());
  } catch (const std::exception& e) {
    return on_failure(std::string(what) + " threw: " + e.what());
  } catch (...) {
    return on_failure(std::string(what) + " threw a non-standard exception");
  }
}

/// Runs `fn` (module code). On an exception returns the reason, worded as
/// guard_module_value words it; nothing when `fn` returned.
template <class F>
[[nodiscard]] std::optional<std::string> guard_module_call(std::string_view what, F&& fn) noexcept {
  return guard_module_value<std::optional<std::string>>(
      what,
      [&]() -> std::optional<std::string> {
        fn();
        return std::nullopt;
      },
      [](std::string reason) { return std::optional<std::string>(std::move(reason)); });
}

}  // namespace molt::host
