#include "molt/host/control/control_handler.hpp"

#include <array>
#include <optional>
#include <set>

#include "molt/host/common/json_text.hpp"
#include "molt/host/state/state_blob.hpp"
#include "molt/host/upgrade/progress.hpp"

namespace molt::host {
namespace {

using Json = nlohmann::json;

/// The request's "module" member, or an error naming what is missing.
std::optional<std::string> module_of(const Json& request) {
  const auto it = request.find("module");
  if (it == request.end() || !it->is_string() || it->get<std::string>().empty()) return std::nullopt;
  return it->get<std::string>();
}

/// The request's "extra" member as Values; refuses non-string values.
std::optional<api::Values> extra_of(const Json& request, std::string& why) {
  api::Values extra;
  const auto it = request.find("extra");
  if (it == request.end()) return extra;
  if (!it->is_object()) {
    why = "extra must be an object of strings";
    return std::nullopt;
  }
  for (const auto& [key, value] : it->items()) {
    if (!value.is_string()) {
      why = "extra." + key + " must be a string";
      return std::nullopt;
    }
    extra[key] = value.get<std::string>();
  }
  return extra;
}

/// The request's `key` as a string (`fallback` when absent), or an error
/// saying what it must be.
std::optional<std::string> string_of(const Json& request, const char* key, std::string fallback, std::string& why) {
  const auto it = request.find(key);
  if (it == request.end()) return fallback;
  if (!it->is_string()) {
    why = std::string("\"") + key + "\" must be a string";
    return std::nullopt;
  }
  return it->get<std::string>();
}

/// The request's `key` as a flag (false when absent), or an error.
std::optional<bool> flag_of(const Json& request, const char* key, std::string& why) {
  const auto it = request.find(key);
  if (it == request.end()) return false;
  if (!it->is_boolean()) {
    why = std::string("\"") + key + "\" must be true or false";
    return std::nullopt;
  }
  return it->get<bool>();
}

Json upgrade_reply(Result<UpgradeReport> result) {
  if (!result) return error_reply(result.error().to_string());
  const bool ok = result->outcome == Outcome::Succeeded;
  Json reply{{"ok", ok}, {"report", result.value()}};
  if (!ok) reply["error"] = result->summary();
  return reply;
}

/// One step of a checked plan, as `moltctl upgrade --check` prints it.
Json plan_step_json(const ReleaseStep& step) {
  Json out{{"step", origin_of(step).number}, {"module", host::module_of(step)}, {"depends_on", Json::array()}};
  const auto version = [](std::optional<api::ModuleVersion> v) { return v ? Json(v->value) : Json(nullptr); };
  std::visit(
      [&](const auto& s) {
        using Step = std::decay_t<decltype(s)>;
        if constexpr (std::is_same_v<Step, release_step::Add>) {
          out.update({{"action", "add"}, {"from", 0}, {"to", s.to.value}, {"file", s.module.file.string()}});
          out["sha256"] = s.sha256.value_or("");
        } else if constexpr (std::is_same_v<Step, release_step::Upgrade>) {
          out.update({{"action", "upgrade"}, {"from", s.from.value}, {"to", s.to.value}, {"file", s.file.string()},
                      {"depends_on", s.depends_on}});
          out["sha256"] = s.sha256.value_or("");
        } else if constexpr (std::is_same_v<Step, release_step::Remove>) {
          out.update({{"action", "remove"}, {"from", s.from.value}, {"to", version(std::nullopt)}, {"file", ""}, {"sha256", ""}});
        } else {
          out.update({{"action", "restore"}, {"from", s.state.version.value}, {"to", version(std::nullopt)}, {"file", ""}, {"sha256", ""}});
        }
      },
      step);
  return out;
}

/// What `moltctl releases` prints with --json.
Json releases_json(const ReleaseView& view) {
  const auto release_json = [](const Release& r) {
    Json modules = Json::array();
    for (const auto& m : r.modules)
      modules.push_back({{"name", m.name}, {"version", m.version.value}, {"file", m.file}, {"sha256", m.sha256}});
    return Json{{"name", r.name}, {"installed_at_ms", r.installed_at_ms},
                {"permanent", r.permanent_at_ms.has_value()},
                {"permanent_at_ms", r.permanent_at_ms ? Json(*r.permanent_at_ms) : Json(nullptr)}, {"modules", modules}};
  };
  const ReleaseRecord& record = view.record;
  Json events = Json::array();
  for (const auto& e : record.events)
    events.push_back({{"at_ms", e.at_ms}, {"release", e.release}, {"what", e.what}, {"detail", e.detail}});
  return Json{{"ok", true},
              {"current", release_json(record.current)},
              {"previous", record.previous ? release_json(*record.previous) : Json(nullptr)},
              {"permanent", release_json(record.permanent)},
              {"events", events},
              {"probation_left_s", view.probation_left ? Json(view.probation_left->count()) : Json(nullptr)}};
}

}  // namespace

Json error_reply(const std::string& message) { return Json{{"ok", false}, {"error", message}}; }

void put_file(Json& request, const std::filesystem::path& file) {
  const std::string& bytes = file.native();
  if (is_valid_utf8(bytes)) request["file"] = bytes;
  else request["file_hex"] = hex_encode(bytes);
}

FileField file_of(const Json& request) {
  const auto text = request.find("file");
  const auto hex = request.find("file_hex");
  if (text != request.end() && hex != request.end()) return {std::nullopt, "give \"file\" or \"file_hex\", not both"};
  if (hex != request.end()) {
    std::optional<std::string> bytes;
    if (hex->is_string()) bytes = hex_decode(hex->get<std::string>());
    if (!bytes || bytes->empty() || bytes->find('\0') != std::string::npos)
      return {std::nullopt, "file_hex must be a path's bytes in hex, two digits a byte"};
    return {std::filesystem::path(std::move(*bytes)), {}};
  }
  if (text == request.end()) return {};
  if (!text->is_string() || text->get<std::string>().empty()) return {std::nullopt, "file must be a path"};
  return {std::filesystem::path(text->get<std::string>()), {}};
}

Json ControlHandler::jobs(const Json& request) {
  const auto module = module_of(request);
  std::string why;
  const auto action_of = string_of(request, "action", "list", why);
  if (!action_of) return error_reply("jobs: " + why);
  const std::string& action = *action_of;
  if (action == "list") {
    Json list = Json::array();
    for (const auto& slot : table_.slots()) {
      if (module && slot->name() != *module) continue;
      for (const auto& record : slot->jobs()) {
        Json entry = record;
        entry["module"] = slot->name();
        list.push_back(std::move(entry));
      }
    }
    if (module && !table_.find(*module)) return error_reply("jobs: no module '" + *module + "'");
    return Json{{"ok", true}, {"jobs", list}};
  }
  if (action != "cancel" && action != "restart") return error_reply("jobs: action must be list, cancel or restart");
  const auto job = request.find("job");
  if (!module || job == request.end() || !job->is_string()) return error_reply("jobs " + action + ": needs \"module\" and \"job\"");
  const auto slot = table_.find(*module);
  if (!slot) return error_reply("jobs " + action + ": no module '" + *module + "'");
  const std::string name = job->get<std::string>();
  auto done = action == "cancel" ? slot->cancel_job(name) : slot->restart_job(name);
  if (!done) return error_reply(done.error().to_string());
  for (const auto& record : slot->jobs())
    if (record.name == name) {
      Json entry = record;
      entry["module"] = slot->name();
      return Json{{"ok", true}, {"job", entry}};
    }
  return Json{{"ok", true}};
}

Json ControlHandler::upgrade(const Json& request) {
  const auto text = request.find("script");
  if (text == request.end() || !text->is_string()) return error_reply("upgrade: needs \"script\" (the script's text)");
  std::string why;
  const auto source = string_of(request, "source", "script", why);
  const auto down = flag_of(request, "down", why);
  const auto check = flag_of(request, "check", why);
  if (!source || !down || !check) return error_reply("upgrade: " + why);
  auto script = parse_upgrade_script(text->get<std::string>(), *source);
  if (!script) return error_reply(script.error().to_string());
  if (*down) script = releases_.down_script(script.value());
  if (*check) {
    auto plan = releases_.check(script.value());
    if (!plan) return error_reply(plan.error().to_string());
    Json steps = Json::array();
    for (const auto& step : plan->steps) steps.push_back(plan_step_json(step));
    return Json{{"ok", true}, {"release", plan->release}, {"plan", steps}};
  }
  const ReleaseOutcome outcome = releases_.install(script.value());
  Json reports = Json::array();
  for (const auto& report : outcome.reports) reports.push_back(report);
  Json reply{{"ok", outcome.installed}, {"release", outcome.release}, {"reports", reports}};
  if (outcome.error)
    reply["error"] = outcome.installed || outcome.reports.empty()
                         ? outcome.error->to_string()
                         : "release '" + outcome.release + "' not installed: " + outcome.error->to_string();
  if (outcome.installed) reply["releases"] = releases_json(releases_.view());
  return reply;
}

ControlReply ControlHandler::handle(std::string_view line, const std::function<void(const nlohmann::json&)>& progress) {
  const Json request = Json::parse(line, nullptr, /*allow_exceptions=*/false);
  std::string command = "request";
  if (request.is_object())
    if (const auto it = request.find("command"); it != request.end() && it->is_string()) command = it->get<std::string>();
  // Whatever a command throws (a host bug, or input nothing checked) is its
  // reply: an exception must not reach the connection's thread, where it
  // would end the process and every module with it.
  try {
    std::optional<ProgressScope> watching;
    const auto wants_progress = request.is_object() ? request.find("progress") : request.end();
    if (progress && request.is_object() && wants_progress != request.end() && wants_progress->is_boolean() &&
        wants_progress->get<bool>()) {
      watching.emplace([&progress, last_phase = std::string(), last_sent = std::chrono::steady_clock::time_point()](
                           const UpgradeProgress& p) mutable {
        // Runs inside the upgrade, during its pause: nothing may escape from here into the transaction.
        try {
          const auto now = std::chrono::steady_clock::now();
          const std::string phase = p.module + '/' + std::string(p.phase);
          if (phase == last_phase && now - last_sent < std::chrono::milliseconds(50)) return;  // throttled
          last_phase = phase;
          last_sent = now;
          progress(Json{{"progress", {{"module", p.module}, {"phase", p.phase}, {"saved", p.saved},
                                      {"loaded", p.loaded}, {"expected", p.expected}, {"round", p.round}}}});
        } catch (...) {
          // A progress line is dropped: the next one tells the same story.
        }
      });
    }
    return answer(request);
  } catch (const std::exception& e) {
    ControlReply reply{error_reply(command + ": failed: " + e.what()), {}};
    reply.exception = e.what();
    return reply;
  } catch (...) {
    ControlReply reply{error_reply(command + ": failed: an unknown exception"), {}};
    reply.exception = "an unknown exception";
    return reply;
  }
}

ControlReply ControlHandler::answer(const Json& request) {
  if (!request.is_object()) return {error_reply("malformed request: expected one JSON object per line"), {}};
  const auto command_it = request.find("command");
  if (command_it == request.end() || !command_it->is_string())
    return {error_reply("malformed request: no \"command\""), {}};
  const std::string command = command_it->get<std::string>();
  static const std::set<std::string, std::less<>> kCommands{"status",  "reload",  "rollback", "history",
                                                            "snapshot", "restore", "upgrade",  "commit", "quarantine",
                                                            "releases", "save",    "jobs", "hot-restart", "handoff", "drain"};
  if (!kCommands.contains(command)) {
    std::string known;
    for (const auto& name : kCommands) known += (known.empty() ? "" : ", ") + name;
    return {error_reply("unknown command '" + command + "' (" + known + ")"), {}};
  }
  if (command == "jobs") return {jobs(request), {}};
  if (command == "releases") return {releases_json(releases_.view()), {}};
  if (command == "quarantine") {
    Quarantine* quarantine = releases_.quarantine();
    if (quarantine == nullptr) return {error_reply("this moltd keeps no quarantine"), {}};
    const auto entry_json = [](const QuarantineEntry& e) {
      return Json{{"file", e.file},     {"sha256", e.sha256}, {"module", e.module},
                  {"version", e.version.value}, {"reason", e.reason}, {"since_ms", e.since_ms}};
    };
    Json images = Json::array();
    if (request.contains("clear")) {
      if (!request["clear"].is_string()) return {error_reply("quarantine: 'clear' must be a file or a sha256"), {}};
      auto cleared = quarantine->clear(request["clear"].get<std::string>());
      if (!cleared) return {error_reply(cleared.error().to_string()), {}};
      for (const auto& e : cleared.value()) images.push_back(entry_json(e));
      return {Json{{"ok", true}, {"cleared", images}}, {}};
    }
    for (const auto& e : quarantine->list()) images.push_back(entry_json(e));
    return {Json{{"ok", true}, {"images", images}}, {}};
  }
  if (command == "save") {
    const auto failed = releases_.save_all();
    if (!failed.empty()) {  // one line, as moltctl prints it: each module and why
      std::string why;
      for (const auto& line : failed) why += (why.empty() ? "" : "; ") + line;
      return {error_reply("snapshot failed for " + std::to_string(failed.size()) + " module(s) (the last snapshot of "
                          "each stands): " + why), {}};
    }
    return {Json{{"ok", true}, {"modules", table_.slots().size()}}, {}};
  }
  if (command == "hot-restart") {
    if (!host_.hot_restart) return {error_reply("hot-restart: not offered by this moltd"), {}};
    std::optional<std::string> binary;
    if (request.contains("binary")) {
      if (!request["binary"].is_string()) return {error_reply("hot-restart: 'binary' must be a path"), {}};
      binary = request["binary"].get<std::string>();
    }
    auto report = host_.hot_restart(binary);
    if (!report) return {error_reply(report.error().to_string()), {}};
    return {Json{{"ok", true}, {"report", Json::parse(report.value())}}, {}};
  }
  if (command == "handoff") {
    if (!host_.handoff) return {error_reply("handoff: not offered by this moltd"), {}};
    const auto module = module_of(request);
    if (!module) return {error_reply("handoff: which module? (\"module\")"), {}};
    std::optional<std::string> to;
    if (request.contains("to")) {
      if (!request["to"].is_string()) return {error_reply("handoff: 'to' must be HOST:PORT"), {}};
      to = request["to"].get<std::string>();
    }
    auto report = host_.handoff(*module, to);
    if (!report) return {error_reply(report.error().to_string()), {}};
    return {Json{{"ok", true}, {"handoff", Json::parse(report.value())}}, {}};
  }
  if (command == "drain") {
    if (!host_.drain) return {error_reply("drain: not offered by this moltd"), {}};
    if (!request.contains("to") || !request["to"].is_string()) return {error_reply("drain: where to? (\"to\": HOST:PORT)"), {}};
    const auto deadline_ms = request.value("deadline_ms", std::int64_t{3600000});
    if (deadline_ms <= 0) return {error_reply("drain: \"deadline_ms\" must be positive"), {}};
    auto drained = host_.drain(request["to"].get<std::string>(),
                               std::chrono::steady_clock::now() + std::chrono::milliseconds(deadline_ms));
    if (!drained) return {error_reply(drained.error().to_string()), {}};
    Json reply = Json::parse(drained.value());
    reply["ok"] = reply["failed"].empty();
    if (!reply["failed"].empty()) {
      std::string why;
      for (const auto& f : reply["failed"]) why += (why.empty() ? "" : "; ") + f["error"].get<std::string>();
      reply["error"] = "drain: " + std::to_string(reply["failed"].size()) + " module(s) not handed over: " + why;
    }
    return {reply, {}};
  }
  if (command == "commit") {
    auto committed = releases_.commit();
    if (!committed) return {error_reply(committed.error().to_string()), {}};
    return {releases_json(releases_.view()), {}};
  }
  if (command == "upgrade") return {upgrade(request), {}};

  if (command == "status") return {status_json(table_, host_), {}};

  if (command == "history") return {history_json(table_.history_log(), module_of(request).value_or("")), {}};

  if (command == "reload" && request.contains("changed")) {  // what SIGHUP does, answered when it is done
    if (!request["changed"].is_boolean() || !request["changed"].get<bool>() || request.contains("module"))
      return {error_reply("reload: \"changed\" must be true, without \"module\""), {}};
    Json reports = Json::array();
    std::string failed;
    for (const auto& report : releases_.reload_changed()) {
      reports.push_back(report);
      if (report.outcome != Outcome::Succeeded && failed.empty()) failed = report.summary();
    }
    Json reply{{"ok", failed.empty()}, {"reports", reports}};
    if (!failed.empty()) reply["error"] = failed;
    return {std::move(reply), {}};
  }

  const auto module = module_of(request);
  if (!module) return {error_reply(command + ": needs \"module\""), {}};
  std::string why;
  const auto extra = extra_of(request, why);
  if (!extra) return {error_reply(command + ": " + why), {}};

  if (command == "reload") {
    const FileField file = file_of(request);
    if (!file.error.empty()) return {error_reply("reload: " + file.error), {}};
    return {upgrade_reply(releases_.reload(*module, file.path, *extra)), {}};
  }
  if (command == "rollback") return {upgrade_reply(releases_.rollback_module(*module, *extra)), {}};
  if (command == "restore") {
    const FileField file = file_of(request);
    if (!file.error.empty()) return {error_reply("restore: " + file.error), {}};
    if (!file.path) return {error_reply("restore: needs \"file\""), {}};
    return {upgrade_reply(releases_.restore(*module, *file.path)), {}};
  }
  if (command == "snapshot") {
    auto blob = table_.snapshot(*module);
    if (!blob) return {error_reply(blob.error().to_string()), {}};
    std::string file = encode_state_file(blob.value());
    Json reply{{"ok", true},
               {"module", blob->module},
               {"version", blob->version.value},
               {"schema", blob->schema.value},
               {"state_bytes", blob->bytes.size()},
               {"attachment_bytes", file.size()}};
    return {std::move(reply), std::move(file)};
  }
  return {error_reply("unknown command '" + command + "'"), {}};  // unreachable: kCommands lists them all
}

}  // namespace molt::host
