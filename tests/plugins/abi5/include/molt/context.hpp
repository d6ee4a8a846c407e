// What the host gives a module instance: its logger and its configuration.
#pragma once

#include <chrono>
#include <string_view>

#include <spdlog/logger.h>

#include "molt/types.hpp"

namespace molt::api {

/// The host's limits on a module's connections (Context::stream_limits).
struct StreamLimits {
  /// Most bytes a connection may hold that the module has not consumed; past
  /// it the host closes the connection. A frame larger than this can never
  /// be completed: refuse it as soon as its header announces it.
  std::uint64_t max_input_bytes = 0;
  /// Unsent output at which StreamOutput::has_room() turns false.
  std::uint64_t output_soft_limit = 0;
};

/// The host's side of a module instance. The host owns it and keeps it alive
/// from `Module::start` until after `Module::stop` returns; a module may keep
/// the reference for that long.
class Context {
 public:
  /// The module's logger, created by the host and named after the module, so
  /// every line it writes names the module. Modules create no loggers of
  /// their own (a logger registered by module code would outlive the image).
  virtual spdlog::logger& log() = 0;

  /// The module's configuration values, from the host's configuration file.
  [[nodiscard]] virtual const Values& config() const = 0;

  /// The name this module is served under, e.g. "counter".
  [[nodiscard]] virtual std::string_view module_name() const = 0;

  /// The limits the host puts on this module's connections, from its
  /// configuration; constant for the instance's life.
  [[nodiscard]] virtual StreamLimits stream_limits() const = 0;

  /// Calls Module::on_timer(name) every `period`, starting one period from
  /// now, serialised with the module's other calls. Setting a name again
  /// replaces that timer. Timers belong to the host, not to the instance:
  /// they keep firing across upgrades, into the new version. Modules own no
  /// threads; this is how they do periodic work.
  virtual void set_timer(std::string_view name, std::chrono::milliseconds period) = 0;

  /// Calls Module::on_timer(name) once, `delay` from now, serialised with
  /// the module's other calls. Setting a name again replaces that timer,
  /// periodic or not. Host-owned like set_timer's: a pending one-shot timer
  /// survives upgrades, and host restarts (it is saved with the state).
  virtual void set_timer_once(std::string_view name, std::chrono::milliseconds delay) = 0;

  /// Stops the timer `name`, if any.
  virtual void cancel_timer(std::string_view name) = 0;

  /// Starts job `name` (see job.hpp): the host will call
  /// Module::run_job_step(name, ...) on its job workers until a step reports
  /// the job finished. Record the job's parameters and checkpoint in the
  /// state in the same call, before or after this. Returns false, changing
  /// nothing, when a job of that name is running already; a job that
  /// finished, failed or was cancelled starts again. Throws
  /// std::length_error when the module has 256 jobs running already. Only during a call
  /// (handle, on_data, on_timer, run_job_step), not during start or
  /// load_state: a job's record comes back with the state by itself.
  virtual bool start_job(std::string_view name) = 0;

 protected:
  ~Context() = default;  // not owned by modules
};

}  // namespace molt::api
