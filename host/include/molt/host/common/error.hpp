// Errors of the host, and Result<T> for functions that can fail.
//
// An Error prints as one line that an operator can act on:
//   counter v2 (build/plugins/counter-2.so): migrate: state schema 3 unknown, newest known is 2
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

#include "molt/types.hpp"

namespace molt::host {

/// Where in the life of a module something failed.
enum class Phase {
  Load,      ///< reading, checking or loading an image
  Start,     ///< creating and starting an instance
  Call,      ///< a request into the module
  Prepare,   ///< upgrade: new version loaded and started, old one still serving
  Quiesce,   ///< upgrade: waiting for in-flight calls to finish
  Save,      ///< upgrade: old version writes its state
  Migrate,   ///< upgrade: new version reads it
  Resume,    ///< upgrade: switching to the new version
  Rollback,  ///< upgrade: going back to the old version
  Snapshot,  ///< saving or reading a state archive
  Config,    ///< reading the host's configuration
  Control,   ///< a request on the control socket
  Script,    ///< reading or checking an upgrade script
  Release,   ///< installing, committing or rolling back a release
  HotRestart,  ///< handing the host over to a new moltd process (handover/hot_restart.hpp)
  Handoff,     ///< moving a module to another moltd (handoff/handoff.hpp)
};

[[nodiscard]] std::string_view to_string(Phase phase) noexcept;

struct Error {
  std::string module;                       ///< may be empty when not yet known
  std::optional<api::ModuleVersion> version;
  std::string file;                         ///< image or archive involved, may be empty
  Phase phase = Phase::Load;
  std::string reason;                       ///< one line, no trailing period

  /// "module vN (file): phase: reason", leaving out what is unknown.
  [[nodiscard]] std::string to_string() const;
};

/// The value of a function that can fail: a T, or an Error saying why not.
template <class T>
class [[nodiscard]] Result {
 public:
  // Two overloads rather than one by value: a value moved in is moved once
  // (a module call's api::Response, on every call through a slot).
  Result(const T& value) : v_(std::in_place_index<0>, value) {}             // NOLINT: implicit by design
  Result(T&& value) : v_(std::in_place_index<0>, std::move(value)) {}       // NOLINT
  Result(Error error) : v_(std::in_place_index<1>, std::move(error)) {}      // NOLINT

  [[nodiscard]] bool ok() const noexcept { return v_.index() == 0; }
  explicit operator bool() const noexcept { return ok(); }

  [[nodiscard]] T& value() & { return std::get<0>(v_); }
  [[nodiscard]] const T& value() const& { return std::get<0>(v_); }
  [[nodiscard]] T&& value() && { return std::get<0>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }

  [[nodiscard]] const Error& error() const& { return std::get<1>(v_); }
  [[nodiscard]] Error&& error() && { return std::get<1>(std::move(v_)); }

 private:
  std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error error) : error_(std::move(error)) {}  // NOLINT: implicit by design

  [[nodiscard]] bool ok() const noexcept { return !error_.has_value(); }
  explicit operator bool() const noexcept { return ok(); }
  [[nodiscard]] const Error& error() const& { return *error_; }
  [[nodiscard]] Error&& error() && { return std::move(*error_); }

 private:
  std::optional<Error> error_;
};

}  // namespace molt::host
