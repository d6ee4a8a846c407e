// Upgrade scripts: a release as an ordered list of steps, like OTP's relup.
//
//   release = "2026.11.1"
//   [[step]]                      # action = "upgrade" (the default): from -> to
//   module = "counter"
//   from = 1
//   to = 2
//   file = "counter-2.so"         # relative to the plugin directory
//   sha256 = "<64 hex>"           # optional pin: a file that differs is refused
//   from_file = "counter-1.so"    # optional: the `from` image, for --down (default <module>-<from>.so)
//   extra = { default_key = "default" }   # optional: for the migration hooks
//   depends_on = ["kv"]           # optional: this module calls kv, so kv is
//                                 # paused after it and resumed before it
//   [[step]]
//   action = "add"                # a new module: to, file, optional listen and config
//   [[step]]
//   action = "remove"             # a module taken out (its state is snapshotted first)
//
// Every error is one line naming the script and the step.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "molt/host/common/error.hpp"
#include "molt/host/config/host_config.hpp"
#include "molt/types.hpp"

namespace molt::host {

enum class StepAction { Upgrade, Add, Remove };

struct ScriptStep {
  std::size_t number = 0;  ///< 1-based, as in the file
  StepAction action = StepAction::Upgrade;
  std::string module;
  std::optional<api::ModuleVersion> from;
  std::optional<api::ModuleVersion> to;
  std::string file;  ///< the `to` image
  std::optional<std::string> sha256;
  std::string from_file;  ///< the `from` image (for running the script down)
  std::optional<std::string> from_sha256;
  api::Values extra;
  std::vector<std::string> depends_on;
  std::vector<Endpoint> listen;  ///< add
  api::Values config;            ///< add
};

struct UpgradeScript {
  std::string release;
  std::vector<ScriptStep> steps;
  std::string source;  ///< where it came from, for messages
};

inline constexpr std::size_t kMaxScriptBytes = 64 * 1024;

/// Parses a script; errors are "<source>: step N (<module>): <reason>".
[[nodiscard]] Result<UpgradeScript> parse_upgrade_script(std::string_view text, const std::string& source);

/// The script that undoes `script`: steps in reverse order, each inverted
/// (to <-> from, add <-> remove). The release it installs is named by the caller.
[[nodiscard]] UpgradeScript reversed(const UpgradeScript& script);

/// An Error about step `step` of `script`.
[[nodiscard]] Error step_error(const UpgradeScript& script, const ScriptStep& step, std::string reason);

}  // namespace molt::host
