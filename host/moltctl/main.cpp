// moltctl: controls a running moltd over its control socket.
// Exit status: 0 success, 1 the operation failed (or moltd could not be
// reached), 2 usage error; one line on stderr for a failure, never an abort.
// A file name that is not valid UTF-8 goes to moltd as its bytes in hex
// ("file_hex"); what moltd replies is valid UTF-8 already (json_text).
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <map>
#include <sstream>
#include <cstdlib>
#include <ctime>
#include <iostream>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "molt/host/common/atomic_file.hpp"
#include "molt/host/common/json_text.hpp"
#include "molt/host/common/sha256.hpp"
#include "molt/host/control/control_server.hpp"
#include "molt/host/release/upgrade_script.hpp"
#include "molt/host/state/state_blob.hpp"

using Json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

std::string duration_text(std::int64_t us) {
  char buf[32];
  if (us < 10000) std::snprintf(buf, sizeof buf, "%lld us", static_cast<long long>(us));
  else if (us < 10000000) std::snprintf(buf, sizeof buf, "%.1f ms", us / 1000.0);
  else std::snprintf(buf, sizeof buf, "%.1f s", us / 1e6);
  return buf;
}

std::string bytes_text(const Json& bytes) {
  if (!bytes.is_number()) return "-";
  const double b = bytes.get<double>();
  char buf[32];
  if (b < 1024) std::snprintf(buf, sizeof buf, "%.0f B", b);
  else if (b < 1024 * 1024) std::snprintf(buf, sizeof buf, "%.1f KiB", b / 1024);
  else if (b < 1024.0 * 1024 * 1024) std::snprintf(buf, sizeof buf, "%.1f MiB", b / 1024 / 1024);
  else std::snprintf(buf, sizeof buf, "%.1f GiB", b / 1024 / 1024 / 1024);
  return buf;
}

std::string time_text(std::int64_t epoch_ms) {
  const std::time_t t = epoch_ms / 1000;
  std::tm tm{};
  localtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm);
  return buf;
}

std::string uptime_text(std::int64_t s) {
  char buf[48];
  if (s < 60) std::snprintf(buf, sizeof buf, "%llds", static_cast<long long>(s));
  else if (s < 3600) std::snprintf(buf, sizeof buf, "%lldm%02llds", static_cast<long long>(s / 60), static_cast<long long>(s % 60));
  else std::snprintf(buf, sizeof buf, "%lldh%02lldm", static_cast<long long>(s / 3600), static_cast<long long>(s / 60 % 60));
  return buf;
}

void print_status(const Json& reply) {
  const Json& host = reply["host"];
  std::printf("moltd %s  pid %lld  generation %llu  up %s  http://%s/\n", host["version"].get<std::string>().c_str(),
              host["pid"].get<long long>(), host.value("generation", 1ull),
              uptime_text(host["uptime_s"].get<std::int64_t>()).c_str(), host["http"].get<std::string>().c_str());
  if (host.contains("binary_sha256"))
    std::printf("binary %s  sha256 %.12s…\n", host.value("binary", std::string()).c_str(),
                host.value("binary_sha256", std::string()).c_str());
  std::printf("plugin dir %s\n\n", host["plugin_dir"].get<std::string>().c_str());
  std::printf("%-16s %7s %6s %10s %7s %10s  %-20s  %-19s  %s\n", "MODULE", "VERSION", "SCHEMA", "CALLS", "FAILED",
              "STATE", "BUSY", "SINCE", "FILE");
  std::vector<std::string> stuck;
  for (const Json& m : reply["modules"]) {
    std::string busy = "-";
    if (const Json& oldest = m["oldest_call"]; oldest.is_object()) {
      const auto ms = oldest["running_ms"].get<std::int64_t>();
      char seconds[32];
      std::snprintf(seconds, sizeof seconds, "%.1fs", static_cast<double>(ms) / 1000);
      busy = oldest["what"].get<std::string>() + " " + seconds;
      if (const auto queued = m["queued"].get<std::uint64_t>(); queued > 0) busy += " +" + std::to_string(queued);
      if (const Json& warn = host["call_warn_ms"]; warn.is_number() && warn.get<std::int64_t>() > 0 &&
                                                    ms >= warn.get<std::int64_t>())
        stuck.push_back(m["name"].get<std::string>() + ": " + oldest["what"].get<std::string>() + " has run for " +
                        seconds + ", " + std::to_string(m["queued"].get<std::uint64_t>()) + " call(s) waiting");
    }
    std::printf("%-16s %7s %6s %10llu %7llu %10s  %-20s  %-19s  %s\n", m["name"].get<std::string>().c_str(),
                ("v" + std::to_string(m["version"].get<unsigned>())).c_str(), std::to_string(m["schema"].get<unsigned>()).c_str(),
                m["calls"].get<unsigned long long>(), m["failed_calls"].get<unsigned long long>(),
                bytes_text(m["state_bytes"]).c_str(), busy.c_str(), time_text(m["since_ms"].get<std::int64_t>()).c_str(),
                m["file"].get<std::string>().c_str());
  }
  for (const auto& line : stuck) std::printf("\nstuck? %s", line.c_str());
  if (!stuck.empty()) std::printf("\n");
  // A snapshot after an install is written in the background, a moment later.
  std::string pending;
  for (const Json& m : reply["modules"])
    if (const auto it = m.find("snapshot_pending"); it != m.end() && it->is_string())
      pending += (pending.empty() ? "" : ", ") + m["name"].get<std::string>() + " (" + it->get<std::string>() + ")";
  if (!pending.empty()) std::printf("\nsnapshot pending: %s\n", pending.c_str());
  if (const auto it = reply.find("handoff"); it != reply.end() && it->contains("modules") && !(*it)["modules"].empty()) {
    std::printf("\n");
    for (const auto& [name, entry] : (*it)["modules"].items())
      std::printf("handoff: %s: %s\n", name.c_str(), entry.value("text", std::string()).c_str());
  }
  // Modules of the release that boot refused: no state their version can read.
  if (const auto it = reply.find("not_started"); it != reply.end() && !it->empty()) {
    std::printf("\n");
    for (const Json& m : *it)
      std::printf("not started: %s: %s\n", m["module"].get<std::string>().c_str(), m["reason"].get<std::string>().c_str());
  }
}

std::string progress_text(const Json& job) {
  const auto done = job["done"].get<std::uint64_t>();
  const auto total = job["total"].get<std::uint64_t>();
  if (total == 0) return std::to_string(done);
  return std::to_string(done) + "/" + std::to_string(total) + " (" + std::to_string(done * 100 / total) + "%)";
}

void print_jobs(const Json& reply) {
  if (reply["jobs"].empty()) {
    std::printf("no jobs\n");
    return;
  }
  std::printf("%-12s %-16s %-9s %-22s %7s  %-19s  %-19s  %s\n", "MODULE", "JOB", "STATE", "PROGRESS", "STEPS", "STARTED",
              "UPDATED", "NOTE");
  for (const Json& job : reply["jobs"])
    std::printf("%-12s %-16s %-9s %-22s %7llu  %-19s  %-19s  %s\n", job["module"].get<std::string>().c_str(),
                job["name"].get<std::string>().c_str(), job["state"].get<std::string>().c_str(), progress_text(job).c_str(),
                job["steps"].get<unsigned long long>(), time_text(job["started_ms"].get<std::int64_t>()).c_str(),
                time_text(job["updated_ms"].get<std::int64_t>()).c_str(), job["note"].get<std::string>().c_str());
}

void print_report(const Json& r) {
  const auto phase = [&](const char* name) { return r["phases_us"][name].get<std::int64_t>(); };
  const std::string from = "v" + std::to_string(r["from"].get<unsigned>());
  const std::string to = r["to"].get<unsigned>() == 0 ? "?" : "v" + std::to_string(r["to"].get<unsigned>());
  const bool succeeded = r["outcome"] == "succeeded";
  std::printf("%s %s -> %s: %s%s\n", r["module"].get<std::string>().c_str(), from.c_str(), to.c_str(),
              r["outcome"].get<std::string>().c_str(), succeeded ? "" : (" (" + from + " keeps serving)").c_str());
  if (r["outcome"] == "refused") return;  // the reason goes to stderr
  if (r.contains("rehearsal") && r["rehearsal"].is_string())
    std::printf("  %-9s %10s   %s\n", "rehearse", duration_text(phase("rehearse")).c_str(),
                ("in a child process: " + r["rehearsal"].get<std::string>()).c_str());
  std::printf("  %-9s %10s   %s\n", "prepare", duration_text(phase("prepare")).c_str(),
              ("load, check and start " + to + " while " + from + " serves").c_str());
  if (const auto it = r.find("precopy"); it != r.end() && it->is_object()) {
    // Pre-copy: the state moved in rounds while the old version served.
    const Json& precopy = *it;
    std::printf("  %-9s %10s   %s\n", "precopy", duration_text(phase("precopy")).c_str(),
                ("state moved while " + from + " serves: " + precopy["ended"].get<std::string>()).c_str());
    unsigned k = 0;
    for (const Json& round : precopy["rounds"]) {
      std::printf("    round %-2u %10s   %llu %s in %llu call(s), %s; longest call %s; applied %s later\n", k,
                  duration_text(round["us"].get<std::int64_t>()).c_str(), round["entries"].get<unsigned long long>(),
                  k == 0 ? "entries" : "changed", round["parts"].get<unsigned long long>(),
                  bytes_text(round["bytes"]).c_str(), duration_text(round["longest_call_us"].get<std::int64_t>()).c_str(),
                  duration_text(round.value("caught_up_us", std::int64_t{0})).c_str());
      ++k;
    }
  }
  {
    std::printf("  %-9s %10s   %s\n", "quiesce", duration_text(phase("quiesce")).c_str(), "wait for calls in flight");
    const std::string schema =
        std::to_string(r["direction"] == "down" ? r["to_schema"].get<unsigned>() : r["from_schema"].get<unsigned>());
    std::string saved = r.value("state_transfer", "") == "memory"
                            ? "state object handed over in memory (same schema " + schema + ", same layout)"
                            : bytes_text(r["state_bytes"]) + " in schema " + schema;
    if (const auto it = r.find("precopy"); it != r.end() && it->is_object())
      saved = "the last " + std::to_string((*it)["final"]["entries"].get<std::uint64_t>()) + " change(s) and " +
              "per-connection state, " + bytes_text((*it)["final"]["bytes"]) + " in schema " + schema;
    std::printf("  %-9s %10s   %s\n", "save", duration_text(phase("save")).c_str(), saved.c_str());
    std::printf("  %-9s %10s\n", "migrate", duration_text(phase("migrate")).c_str());
    std::printf("  %-9s %10s\n", "resume", duration_text(phase("resume")).c_str());
    if (phase("rollback") > 0) std::printf("  %-9s %10s\n", "rollback", duration_text(phase("rollback")).c_str());
    std::printf("  %-9s %10s   %s\n", "pause", duration_text(r["pause_us"].get<std::int64_t>()).c_str(),
                ("calls held back; " + std::to_string(r["queued_calls"].get<std::uint64_t>()) + " waited").c_str());
  }
  if (r["outcome"] == "succeeded")
    std::printf("  %-9s %10s   %s\n", "cleanup", duration_text(phase("cleanup")).c_str(),
                (from + " stopped and unloaded").c_str());
  std::printf("  file      %s%s\n", r["to_file"].get<std::string>().c_str(),
              r["to_sha256"].get<std::string>().empty() ? ""
                                                        : (" (sha256 " + r["to_sha256"].get<std::string>().substr(0, 12) + ")").c_str());
}

void print_history(const Json& reply) {
  if (reply["reports"].empty()) std::printf("no upgrades recorded\n");
  for (const Json& r : reply["reports"]) {
    if (r.value("kind", "") == "crash") {  // from a crash record, by the boot after it
      std::printf("%s  %-12s crashed: %s\n", time_text(r["at_ms"].get<std::int64_t>()).c_str(),
                  r["module"].get<std::string>().c_str(), r["line"].get<std::string>().c_str());
      continue;
    }
    // `to` is 0 when the new image could not even be read: "?", as print_report and the summary write it.
    const unsigned to = r["to"].get<unsigned>();
    const std::string target = to == 0 ? "?" : "v" + std::to_string(to);
    std::printf("%s  %-12s v%u -> %-3s %-11s pause %9s  state %9s", time_text(r["started_at_ms"].get<std::int64_t>()).c_str(),
                r["module"].get<std::string>().c_str(), r["from"].get<unsigned>(), target.c_str(),
                r["outcome"].get<std::string>().c_str(), duration_text(r["pause_us"].get<std::int64_t>()).c_str(),
                bytes_text(r["state_bytes"]).c_str());
    if (!r["error"].is_null()) std::printf("  %s", r["error"].get<std::string>().c_str());
    std::printf("\n");
  }
}

void print_releases(const Json& reply) {
  const auto line = [](const char* role, const Json& r, const std::string& note) {
    std::printf("%-10s %-24s %-26s installed %s\n", role, r["name"].get<std::string>().c_str(), note.c_str(),
                time_text(r["installed_at_ms"].get<std::int64_t>()).c_str());
    std::string modules;
    for (const auto& m : r["modules"])
      modules += (modules.empty() ? "" : ", ") + m["name"].get<std::string>() + " v" + std::to_string(m["version"].get<unsigned>());
    std::printf("%-10s %s\n", "", modules.empty() ? "(no modules)" : modules.c_str());
  };
  const Json& current = reply["current"];
  std::string note = current["permanent"].get<bool>() ? "permanent" : "on probation";
  if (!reply["probation_left_s"].is_null()) note += " (" + std::to_string(reply["probation_left_s"].get<long long>()) + " s left)";
  line("current", current, note);
  if (!reply["previous"].is_null())
    line("previous", reply["previous"], reply["previous"]["permanent"].get<bool>() ? "permanent" : "was on probation");
  if (reply["permanent"]["name"] != current["name"]) line("boots", reply["permanent"], "last permanent");
  if (!reply["events"].empty()) std::printf("\nevents:\n");
  for (const auto& e : reply["events"])
    std::printf("  %s  %-24s %-14s %s\n", time_text(e["at_ms"].get<std::int64_t>()).c_str(),
                e["release"].get<std::string>().c_str(), e["what"].get<std::string>().c_str(),
                e["detail"].get<std::string>().c_str());
}

void print_plan(const Json& reply) {
  std::printf("release %s: %zu step(s), in the order modules pause\n", reply["release"].get<std::string>().c_str(),
              reply["plan"].size());
  for (const auto& p : reply["plan"]) {
    const std::string action = p["action"];
    std::string change = action == "add"      ? "add v" + std::to_string(p["to"].get<unsigned>())
                         : action == "remove" ? "remove v" + std::to_string(p["from"].get<unsigned>())
                                              : "v" + std::to_string(p["from"].get<unsigned>()) + " -> v" +
                                                    std::to_string(p["to"].get<unsigned>());
    std::printf("  %u. %-12s %-14s %s%s\n", p["step"].get<unsigned>(), p["module"].get<std::string>().c_str(),
                change.c_str(), p["file"].get<std::string>().c_str(),
                p["sha256"].get<std::string>().empty() ? "" : ("  sha256 " + p["sha256"].get<std::string>().substr(0, 12)).c_str());
  }
}

/// Writes the sha256 of each step's files into the script, right under its
/// [[step]] line (keys there belong to the step whatever follows), keeping
/// everything else, comments included, as it was.
int pin_script(const fs::path& path, const std::string& text, const molt::host::UpgradeScript& script,
               const fs::path& plugin_dir) {
  const auto resolve = [&](const std::string& file) { return fs::path(file).is_absolute() ? fs::path(file) : plugin_dir / file; };
  std::vector<std::string> lines;
  {
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) lines.push_back(line);
  }
  const auto refuse = [&](const std::string& why) {
    std::fprintf(stderr, "moltctl: %s: cannot place the pins: %s; nothing was changed\n", path.c_str(), why.c_str());
    return 1;
  };
  std::string out;
  std::size_t step = 0;
  std::vector<std::string> pinned;
  std::map<std::size_t, std::pair<std::string, std::string>> pins;  // step number -> sha256, from_sha256
  for (const auto& line : lines) {
    std::string squeezed;  // the line without blanks: "[[ step ]]" is "[[step]]" too
    for (const char c : line)
      if (c != ' ' && c != '\t') squeezed += c;
    if (squeezed.starts_with("sha256=") || squeezed.starts_with("from_sha256=")) continue;  // replaced below
    out += line + '\n';
    if (!squeezed.starts_with("[[step]]")) continue;
    if (step >= script.steps.size()) return refuse("more [[step]] lines than steps");
    const auto& s = script.steps[step++];
    for (const auto& [key, file] : {std::pair<const char*, std::string>{"sha256", s.file}, {"from_sha256", s.from_file}}) {
      if (file.empty()) continue;
      std::string bytes;
      if (auto why = molt::host::read_file(resolve(file), 1ull << 30, bytes)) {
        if (std::string_view(key) == "sha256") {
          std::fprintf(stderr, "moltctl: %s: step %zu (%s): %s: %s\n", path.c_str(), s.number, s.module.c_str(),
                       resolve(file).c_str(), why->c_str());
          return 1;
        }
        continue;  // the `from` image is optional: --down needs it, running up does not
      }
      const std::string sha = molt::host::sha256_hex(bytes);
      out += std::string(key) + " = \"" + sha + "\"   # " + file + ", pinned by moltctl upgrade --pin\n";
      (std::string_view(key) == "sha256" ? pins[s.number].first : pins[s.number].second) = sha;
      pinned.push_back(s.module + ": " + file + " " + sha.substr(0, 12));
    }
  }
  // The rewrite is line by line, so check it: the same steps, each with its own pins.
  if (step != script.steps.size())
    return refuse("write each step as a line [[step]] (found " + std::to_string(step) + " for " +
                  std::to_string(script.steps.size()) + " steps)");
  auto again = molt::host::parse_upgrade_script(out, path.string());
  if (!again) return refuse("the pinned script does not parse: " + again.error().to_string());
  for (std::size_t i = 0; i < script.steps.size(); ++i) {
    const auto& before = script.steps[i];
    const auto& after = again->steps.at(i);
    const auto& want = pins[before.number];
    if (after.module != before.module || after.file != before.file || after.from_file != before.from_file ||
        after.extra != before.extra || after.depends_on != before.depends_on ||
        after.sha256.value_or("") != want.first || after.from_sha256.value_or("") != want.second)
      return refuse("step " + std::to_string(before.number) + " (" + before.module +
                    ") would change; write each step as a [[step]] table, one key per line");
  }
  if (auto why = molt::host::write_file_atomically(path, out)) {
    std::fprintf(stderr, "moltctl: %s: %s\n", path.c_str(), why->c_str());
    return 1;
  }
  std::printf("pinned %zu file(s) in %s:\n", pinned.size(), path.c_str());
  for (const auto& p : pinned) std::printf("  %s\n", p.c_str());
  return 0;
}

/// A failure found by moltctl itself: one line on stderr, and with --json
/// the same reply shape moltd gives, on stdout.
int fail(bool json, const std::string& message) {
  const std::string line = molt::host::utf8_safe(message);  // a path of ours may hold any bytes
  std::fprintf(stderr, "moltctl: %s\n", line.c_str());
  if (json) std::cout << molt::host::json_text(Json{{"ok", false}, {"error", line}}, 2) << '\n';
  return 1;
}

molt::api::Values parse_extra(const std::vector<std::string>& pairs) {
  molt::api::Values extra;
  for (const auto& pair : pairs) {
    const auto eq = pair.find('=');
    if (eq == std::string::npos || eq == 0) throw CLI::ValidationError("--extra", "expected KEY=VALUE, got '" + pair + "'");
    extra[pair.substr(0, eq)] = pair.substr(eq + 1);
  }
  return extra;
}

}  // namespace

int run(int argc, char** argv, bool& json) {
  CLI::App app{"moltctl: control a running moltd through its control socket"};
  app.require_subcommand(1, 1);
  app.fallthrough();  // --json and --socket may also follow the command
  const char* env_socket = std::getenv("MOLT_SOCKET");
  std::string socket = env_socket != nullptr ? env_socket : "run/control.sock";
  app.add_option("-s,--socket", socket, "control socket of the moltd to talk to (default: $MOLT_SOCKET, else run/control.sock)");
  app.add_flag("--json", json, "print moltd's reply as JSON instead of text, for scripts");
  app.set_version_flag("--version", std::string("moltctl ") + MOLT_VERSION);
  app.footer("Exit status: 0 success, 1 the operation failed or moltd is unreachable, 2 usage error.");

  std::string module, output;
  std::optional<std::string> file;
  std::vector<std::string> extras;
  auto* status = app.add_subcommand("status", "the host, and each module: version, schema, calls served, state size");
  bool changed = false;
  auto* reload = app.add_subcommand(
      "reload", "upgrade (or downgrade) MODULE to FILE, or to the newest MODULE-<N>.so in the plugin directory;\n"
                "prints the upgrade report with each phase's duration. Exit 1 if it rolled back or was refused");
  auto* reload_module = reload->add_option("module", module, "module name");
  reload->add_option("file", file, "image to upgrade to (default: newest in the plugin directory)");
  reload->add_flag("--changed", changed,
                   "instead of MODULE: every module whose newest file differs from the running one, as SIGHUP,\n"
                   "but answered when done (systemd's ExecReload=). Exit 1 if one rolled back or was refused")
      ->excludes(reload_module);
  reload->add_option("-e,--extra", extras, "KEY=VALUE argument for the migration hooks (repeatable)");
  auto* rollback = app.add_subcommand(
      "rollback", "return MODULE to the version that ran before its last upgrade, through the newer version's migration");
  rollback->add_option("module", module, "module name")->required();
  rollback->add_option("-e,--extra", extras, "KEY=VALUE argument for the migration hooks (repeatable)");
  auto* history = app.add_subcommand("history", "past upgrade reports, oldest first, of MODULE or of all modules");
  history->add_option("module", module, "module name (default: all)");
  auto* snapshot = app.add_subcommand("snapshot", "write MODULE's current state archive, with its header, to FILE");
  snapshot->add_option("module", module, "module name")->required();
  snapshot->add_option("-o,--output", output, "file to write (replaced atomically)")->required();
  auto* restore = app.add_subcommand("restore", "replace MODULE's state with a state archive (migrated if another version wrote it); "
                                     "a module boot did not start (moltctl status) starts with it");
  restore->add_option("module", module, "module name")->required();
  restore->add_option("file", output, "state archive, e.g. written by moltctl snapshot")->required()->check(CLI::ExistingFile);
  std::string script_file, plugin_dir;
  bool check = false, down = false, pin = false;
  auto* upgrade = app.add_subcommand(
      "upgrade", "install the release an upgrade script describes, as one transaction (see docs/releases.md);\n"
                 "it is on probation until made permanent. Exit 1 if refused or rolled back");
  upgrade->add_option("script", script_file, "upgrade script (TOML)")->required()->check(CLI::ExistingFile);
  upgrade->add_flag("--check", check, "validate the script against the running host and print the plan; change nothing");
  upgrade->add_flag("--down", down, "run the script backwards: downgrade through the newer versions' migrations");
  upgrade->add_flag("--pin", pin, "write the sha256 of the script's files (as present now) into the script");
  upgrade->add_option("--plugin-dir", plugin_dir, "with --pin: where relative file names point (default: ask moltd)");
  auto* commit = app.add_subcommand("commit", "make the current release permanent now (ends its probation)");
  std::string quarantined;
  auto* quarantine = app.add_subcommand(
      "quarantine", "the images moltd will not run again: each crashed moltd before it was ever permanent, or\n"
                    "in a crash loop (docs/operations.md, When a module misbehaves)");
  auto* quarantine_clear = quarantine->add_subcommand("clear", "let moltd run FILE again (or the image with that sha256)");
  quarantine_clear->add_option("file", quarantined, "the image's file, or its sha256 (12 hex digits or more)")->required();
  auto* save = app.add_subcommand("save", "snapshot every module now, into the run directory, as at shutdown");
  std::optional<std::string> binary;
  auto* hot_restart = app.add_subcommand(
      "hot-restart", "hand moltd over to a new process of its binary (or --binary PATH), with its listeners, open\n"
                     "connections and module states, closing no connection (docs/operations.md, Upgrading moltd itself);\n"
                     "same as SIGUSR2. Exit 1 if refused or rolled back: the old process then serves on");
  hot_restart->add_option("--binary", binary, "the moltd to start (default: the file this moltd was started from)");
  std::string handoff_to;
  bool handoff_back = false;
  auto* handoff = app.add_subcommand(
      "handoff", "move MODULE, with its state, to the moltd whose peer listener is --to HOST:PORT (or --back to\n"
                 "the one it came from); its clients are sent there (docs/handoff.md). Exit 1 if refused or failed:\n"
                 "the module then serves here as before");
  handoff->add_option("module", module, "module name")->required();
  handoff->add_option("--to", handoff_to, "the target moltd's host.peer address");
  handoff->add_flag("--back", handoff_back, "to the moltd this module was received from");
  std::string drain_to;
  double drain_deadline = 3600;
  auto* drain = app.add_subcommand(
      "drain", "hand every module to the moltd whose peer listener is --to HOST:PORT, one after the other; GET\n"
               "/-/ready answers 503 from the start (a Kubernetes preStop hook; docs/handoff.md). Exit 1 unless all moved");
  drain->add_option("--to", drain_to, "the target moltd's host.peer address")->required();
  drain->add_option("--deadline", drain_deadline, "seconds: modules whose turn comes later stay here (default 3600)")
      ->check(CLI::PositiveNumber);
  auto* releases = app.add_subcommand("releases", "the current, previous and permanent releases, and what happened to them");
  std::string job;
  auto* jobs = app.add_subcommand("jobs", "the modules' jobs (all, or MODULE's): state, progress, steps, times (see docs/jobs.md)");
  jobs->add_option("module", module, "module name (default: all)");
  auto* cancel_job = jobs->add_subcommand("cancel", "stop running MODULE's JOB after its step in progress (its checkpoint stays)");
  cancel_job->add_option("module", module, "module name")->required();
  cancel_job->add_option("job", job, "job name")->required();
  auto* restart_job = jobs->add_subcommand("restart", "run MODULE's failed or cancelled JOB again, from its checkpoint");
  restart_job->add_option("module", module, "module name")->required();
  restart_job->add_option("job", job, "job name")->required();

  Json request;
  try {
    app.parse(argc, argv);
    if (status->parsed()) request = {{"command", "status"}};
    if (reload->parsed() && changed) {
      if (file || !extras.empty()) throw CLI::ValidationError("--changed", "takes no FILE and no --extra");
      request = {{"command", "reload"}, {"changed", true}};
    } else if (reload->parsed()) {
      if (module.empty()) throw CLI::RequiredError("module (or --changed)");
      request = {{"command", "reload"}, {"module", module}, {"extra", parse_extra(extras)}};
      if (file) molt::host::put_file(request, fs::absolute(*file).lexically_normal());  // moltd's cwd is not ours
    }
    if (rollback->parsed()) request = {{"command", "rollback"}, {"module", module}, {"extra", parse_extra(extras)}};
    if (history->parsed()) request = {{"command", "history"}, {"module", module}};
    if (snapshot->parsed()) request = {{"command", "snapshot"}, {"module", module}};
    if (restore->parsed()) {
      request = {{"command", "restore"}, {"module", module}};
      molt::host::put_file(request, fs::absolute(output).lexically_normal());
    }
    if (commit->parsed()) request = {{"command", "commit"}};
    if (quarantine->parsed()) {
      request = {{"command", "quarantine"}};
      if (quarantine_clear->parsed()) {
        const bool is_path = quarantined.find('/') != std::string::npos || fs::exists(quarantined);
        request["clear"] = is_path ? fs::absolute(quarantined).lexically_normal().string() : quarantined;
      }
    }
    if (save->parsed()) request = {{"command", "save"}};
    if (hot_restart->parsed()) {
      request = {{"command", "hot-restart"}};
      if (binary) request["binary"] = fs::absolute(*binary).lexically_normal().string();
    }
    if (handoff->parsed()) {
      if (handoff_back == !handoff_to.empty()) throw CLI::ValidationError("handoff", "give --to HOST:PORT or --back");
      request = {{"command", "handoff"}, {"module", module}};
      if (!handoff_to.empty()) request["to"] = handoff_to;
    }
    if (drain->parsed())
      request = {{"command", "drain"}, {"to", drain_to}, {"deadline_ms", static_cast<std::int64_t>(drain_deadline * 1000)}};
    if (releases->parsed()) request = {{"command", "releases"}};
    if (jobs->parsed()) {
      request = {{"command", "jobs"}};
      if (cancel_job->parsed() || restart_job->parsed())
        request.update({{"action", cancel_job->parsed() ? "cancel" : "restart"}, {"module", module}, {"job", job}});
      else if (!module.empty())
        request["module"] = module;
    }
    if (upgrade->parsed()) {
      std::string text;
      if (auto why = molt::host::read_file(script_file, molt::host::kMaxScriptBytes, text)) {
        return fail(json, script_file + ": " + *why);
      }
      auto parsed = molt::host::parse_upgrade_script(text, script_file);
      if (!parsed) {
        return fail(json, parsed.error().to_string());
      }
      if (pin) {
        if (plugin_dir.empty()) {
          auto status_reply = molt::host::control_call(socket, {{"command", "status"}});
          if (!status_reply) {
            return fail(json, status_reply.error().to_string() + " (or give --plugin-dir)");
          }
          plugin_dir = status_reply->body["host"]["plugin_dir"];
        }
        return pin_script(script_file, text, parsed.value(), plugin_dir);
      }
      request = {{"command", "upgrade"}, {"script", text}, {"source", fs::path(script_file).filename().string()},
                 {"check", check}, {"down", down}};
    }
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }

  const std::string command = request["command"];
  // On a terminal, an upgrade shows where it is while it runs (one line,
  // rewritten in place); piped or with --json, only the result is printed.
  const bool upgrades = command == "reload" || command == "rollback" || command == "upgrade" || command == "restore";
  const bool show_progress = upgrades && !json && ::isatty(STDOUT_FILENO) == 1 && !request.value("check", false);
  bool progress_shown = false;
  std::function<void(const Json&)> on_progress;
  if (show_progress) {
    request["progress"] = true;
    on_progress = [&](const Json& p) {
      std::string text = p.value("module", "") + ": " + p.value("phase", "");
      const auto saved = p.value("saved", std::uint64_t{0});
      const auto expected = p.value("expected", std::uint64_t{0});
      if (p.value("phase", "") == "migrate" && (saved > 0 || expected > 0)) {
        if (expected > 0)
          text += " " + std::to_string(std::min<std::uint64_t>(100, saved * 100 / expected)) + "% (" + bytes_text(saved) +
                  " of about " + bytes_text(expected) + ", " + bytes_text(p.value("loaded", std::uint64_t{0})) + " loaded)";
        else
          text += " " + bytes_text(saved) + " saved, " + bytes_text(p.value("loaded", std::uint64_t{0})) + " loaded";
      }
      if (p.value("phase", "") == "precopy" && saved > 0)
        text += " round " + std::to_string(p.value("round", 0u)) + ", " + bytes_text(saved) +
                (p.value("round", 0u) == 0 ? " of the state" : " changed");
      std::printf("\r\033[K%s", text.c_str());
      std::fflush(stdout);
      progress_shown = true;
    };
  }
  auto response = molt::host::control_call(socket, request, std::chrono::minutes(5), on_progress);
  if (progress_shown) {
    std::printf("\r\033[K");  // the report replaces the progress line
    std::fflush(stdout);
  }
  if (!response) {
    return fail(json, response.error().to_string());
  }
  const Json& reply = response->body;
  const bool ok = reply.value("ok", false);

  if (ok && command == "snapshot") {
    auto blob = molt::host::decode_state_file(response->attachment, UINT64_MAX);
    if (!blob) {
      return fail(json, "snapshot from moltd is damaged: " + blob.error().reason);
    }
    if (auto written = molt::host::write_state_file(output, blob.value()); !written) {
      return fail(json, written.error().to_string());
    }
  }
  if (json) {
    std::cout << molt::host::json_text(reply, 2) << '\n';
  } else if (command == "upgrade" && reply.contains("plan")) {
    print_plan(reply);
    std::printf("check passed: nothing was changed\n");
  } else if (command == "upgrade") {
    for (const auto& report : reply.value("reports", Json::array())) print_report(report);
    if (ok) {
      const Json& current = reply["releases"]["current"];
      std::printf("release %s installed%s\n", current["name"].get<std::string>().c_str(),
                  current["permanent"].get<bool>() ? ", permanent"
                                                   : "; on probation (moltctl commit makes it permanent now)");
    }
  } else if (ok && command == "jobs" && reply.contains("jobs")) {
    print_jobs(reply);
  } else if (ok && command == "jobs" && reply.contains("job")) {
    const Json& j = reply["job"];
    std::printf("%s %s: %s at %s\n", j["module"].get<std::string>().c_str(), j["name"].get<std::string>().c_str(),
                j["state"].get<std::string>().c_str(), progress_text(j).c_str());
  } else if (ok && command == "quarantine" && reply.contains("cleared")) {
    for (const auto& e : reply["cleared"])
      std::printf("cleared %s (%s v%u, sha256 %s…): moltd may run it again\n", e["file"].get<std::string>().c_str(),
                  e["module"].get<std::string>().c_str(), e["version"].get<unsigned>(),
                  e["sha256"].get<std::string>().substr(0, 12).c_str());
  } else if (ok && command == "quarantine") {
    if (reply["images"].empty()) std::printf("no image is quarantined\n");
    for (const auto& e : reply["images"])
      std::printf("%s  %s v%u  %s  sha256 %s…\n    %s\n", time_text(e["since_ms"].get<std::int64_t>()).c_str(),
                  e["module"].get<std::string>().c_str(), e["version"].get<unsigned>(), e["file"].get<std::string>().c_str(),
                  e["sha256"].get<std::string>().substr(0, 12).c_str(), e["reason"].get<std::string>().c_str());
  } else if (ok && command == "hot-restart") {
    const Json& r = reply["report"];
    std::printf("moltd pid %lld handed over to pid %lld (generation %llu)\n", r["old_pid"].get<long long>(),
                r["new_pid"].get<long long>(), r["generation"].get<unsigned long long>());
    std::printf("  %zu listener(s), %zu connection(s), %zu idle HTTP connection(s), %s of state, %s of buffered bytes\n",
                r["listeners"].get<std::size_t>(), r["connections"].get<std::size_t>(),
                r["http_connections"].get<std::size_t>(), bytes_text(r["state_bytes"]).c_str(),
                bytes_text(r["leftover_bytes"]).c_str());
    for (const auto& p : r["phases"])
      std::printf("  %-9s %10.1f ms\n", p["phase"].get<std::string>().c_str(), p["us"].get<double>() / 1000.0);
  } else if (ok && command == "handoff") {
    const Json& r = reply["handoff"];
    std::printf("%s moved to %s at epoch %llu (%s of state, %s)\n", r["module"].get<std::string>().c_str(),
                r["to"].get<std::string>().c_str(), r["epoch"].get<unsigned long long>(),
                bytes_text(r["state_bytes"]).c_str(), r["precopy"].get<bool>() ? "pre-copied" : "whole, in the pause");
    for (const auto& where : r["redirect"]) std::printf("  clients connect to %s\n", where.get<std::string>().c_str());
    if (const auto n = r.value("clients", 0u); n > 0)
      std::printf("  %u connection(s) here go on, forwarded there with their per-connection state\n", n);
    for (const auto& p : r["phases"])
      std::printf("  %-9s %10.1f ms\n", p["phase"].get<std::string>().c_str(), p["us"].get<double>() / 1000.0);
  } else if (command == "drain" && reply.contains("modules")) {
    for (const auto& r : reply["modules"])
      std::printf("%s moved to %s at epoch %llu\n", r["module"].get<std::string>().c_str(), r["to"].get<std::string>().c_str(),
                  r["epoch"].get<unsigned long long>());
    for (const auto& f : reply["failed"])
      std::printf("%s not moved: %s\n", f["module"].get<std::string>().c_str(), f["error"].get<std::string>().c_str());
    if (reply["modules"].empty() && reply["failed"].empty()) std::printf("no module runs here: nothing to drain\n");
  } else if (ok && command == "save") {
    std::printf("saved %d module(s)\n", reply["modules"].get<int>());
  } else if (ok && (command == "releases" || command == "commit")) {
    if (command == "commit") std::printf("release %s is permanent\n", reply["current"]["name"].get<std::string>().c_str());
    else print_releases(reply);
  } else if (command == "reload" && reply.contains("reports")) {
    for (const auto& report : reply["reports"]) print_report(report);
    if (reply["reports"].empty()) std::printf("no module's file changed: nothing to reload\n");
  } else if (reply.contains("report")) {
    print_report(reply["report"]);
  } else if (ok && command == "status") {
    print_status(reply);
  } else if (ok && command == "history") {
    print_history(reply);
  } else if (ok && command == "snapshot") {
    std::printf("wrote %s v%u state (%s, schema %u) to %s\n", reply["module"].get<std::string>().c_str(),
                reply["version"].get<unsigned>(), bytes_text(reply["state_bytes"]).c_str(), reply["schema"].get<unsigned>(),
                output.c_str());
  }
  if (!ok) {
    std::fprintf(stderr, "moltctl: %s\n", reply.value("error", std::string("failed")).c_str());
    return 1;
  }
  return 0;
}

int main(int argc, char** argv) {
  bool json = false;
  // A reply not in the shape expected, a path that cannot be made absolute:
  // one line and exit 1, as for any other failure, never an abort.
  try {
    return run(argc, argv, json);
  } catch (const std::exception& e) {
    return fail(json, std::string("unexpected: ") + e.what());
  }
}
