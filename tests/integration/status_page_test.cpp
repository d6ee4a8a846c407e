// The status page, GET /-/, as an operator sees it: served by a real moltd,
// opened in Debian's headless Chromium, which runs its script. The page stays
// open across an upgrade and must show it by itself (it polls), and a
// screenshot of it is kept in <build>/tests/artifacts/status-page.png.
//
// The browser is driven over the DevTools protocol on a pipe
// (--remote-debugging-pipe): no npm, no websocket, nothing downloaded.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <thread>

#include <catch2/catch.hpp>

#include "daemon.hpp"
#include "skip.hpp"

using namespace molt::test;
using Json = nlohmann::json;
namespace fs = std::filesystem;

extern char** environ;

namespace {

/// Debian's chromium on PATH, if it is installed (scripts/install-deps installs it).
std::optional<fs::path> find_chromium() {
  const char* path = std::getenv("PATH");
  std::string_view rest = path ? path : "/usr/bin";
  while (!rest.empty()) {
    const auto colon = rest.find(':');
    const fs::path dir(rest.substr(0, colon));
    rest = colon == std::string_view::npos ? std::string_view{} : rest.substr(colon + 1);
    for (const char* name : {"chromium", "chromium-browser"})
      if (::access((dir / name).c_str(), X_OK) == 0) return dir / name;
  }
  return std::nullopt;
}

std::string base64_decode(std::string_view in) {
  std::string out;
  unsigned bits = 0, buffer = 0;
  for (const char c : in) {
    unsigned value;
    if (c >= 'A' && c <= 'Z') value = static_cast<unsigned>(c - 'A');
    else if (c >= 'a' && c <= 'z') value = static_cast<unsigned>(c - 'a' + 26);
    else if (c >= '0' && c <= '9') value = static_cast<unsigned>(c - '0' + 52);
    else if (c == '+') value = 62;
    else if (c == '/') value = 63;
    else continue;  // '=' padding
    buffer = ((buffer << 6) | value) & 0xFFFFFFu;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((buffer >> bits) & 0xFFu);
    }
  }
  return out;
}

/// Headless Chromium and one page in it, over the DevTools protocol: commands
/// go to the browser's fd 3, replies and events come from its fd 4, each a
/// JSON message ended by '\0'.
class Browser {
 public:
  /// `host`: the only host name or address it may connect to.
  Browser(const fs::path& chromium, const fs::path& profile, const std::string& host)
      : log_(profile / "chromium.log") {
    // A browser that crashed must fail the test with its log, not kill the
    // test program by SIGPIPE on the next command: writes then fail with EPIPE.
    ::signal(SIGPIPE, SIG_IGN);
    int commands[2], replies[2];
    REQUIRE(::pipe2(commands, O_CLOEXEC) == 0);
    REQUIRE(::pipe2(replies, O_CLOEXEC) == 0);
    // Above 4, so that the dup2s to 3 and 4 below cannot overwrite one another.
    const int child_in = ::fcntl(commands[0], F_DUPFD_CLOEXEC, 10), child_out = ::fcntl(replies[1], F_DUPFD_CLOEXEC, 10);
    ::close(commands[0]);
    ::close(replies[1]);
    to_ = commands[1];
    from_ = replies[0];

    const std::vector<std::string> argv{
        chromium.string(), "--headless=new", "--no-sandbox",  // as root (CI), Chromium starts only without its sandbox
        "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
        "--disable-extensions", "--disable-background-networking", "--disable-component-update",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE " + host,  // no other host resolves: the page needs none
        "--user-data-dir=" + profile.string(), "--window-size=1280,1000", "--remote-debugging-pipe", "about:blank"};
    std::vector<char*> args;
    for (const auto& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
    args.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, child_in, 3);
    posix_spawn_file_actions_adddup2(&actions, child_out, 4);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&actions, 1, log_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    posix_spawnattr_t attributes;
    posix_spawnattr_init(&attributes);
    posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETPGROUP);  // its own group: its renderers go with it
    posix_spawnattr_setpgroup(&attributes, 0);
    const int spawned = ::posix_spawn(&pid_, args[0], &actions, &attributes, args.data(), environ);
    posix_spawnattr_destroy(&attributes);
    posix_spawn_file_actions_destroy(&actions);
    ::close(child_in);
    ::close(child_out);
    REQUIRE(spawned == 0);
  }

  /// Closes the browser; its whole process group, renderers included, if it
  /// does not exit by itself.
  ~Browser() {
    if (pid_ <= 0) return;
    const std::string close = Json{{"id", next_id_++}, {"method", "Browser.close"}}.dump() + '\0';
    const bool asked = ::write(to_, close.data(), close.size()) == static_cast<ssize_t>(close.size());
    bool exited = false;
    if (asked)
      exited = wait_until([&] { return ::waitpid(pid_, nullptr, WNOHANG) == pid_; }, std::chrono::seconds(10));
    ::kill(-pid_, SIGKILL);
    if (!exited) ::waitpid(pid_, nullptr, 0);
    ::close(to_);
    ::close(from_);
  }
  Browser(const Browser&) = delete;
  Browser& operator=(const Browser&) = delete;

  /// Opens `url` in a new page of `width` x `height` CSS pixels; later calls go to it.
  void open(const std::string& url, int width, int height) {
    const Json target = call("Target.createTarget", {{"url", "about:blank"}});
    session_ = call("Target.attachToTarget", {{"targetId", target["targetId"]}, {"flatten", true}})["sessionId"];
    call("Runtime.enable");  // reports the page's uncaught exceptions as events (exceptions_)
    call("Emulation.setDeviceMetricsOverride",
         {{"width", width}, {"height", height}, {"deviceScaleFactor", 1}, {"mobile", false}});
    const Json navigated = call("Page.navigate", {{"url", url}});
    if (navigated.contains("errorText")) FAIL("cannot open " << url << ": " << navigated["errorText"]);
  }

  /// The value of a JavaScript expression in the page.
  Json evaluate(const std::string& expression) {
    const Json reply = call("Runtime.evaluate", {{"expression", expression}, {"returnByValue", true}});
    if (reply.contains("exceptionDetails")) FAIL("page: " << expression << ": " << reply["exceptionDetails"].dump());
    return reply["result"].value("value", Json(nullptr));
  }

  /// The page as a PNG, its viewport as set by open().
  std::string screenshot() {
    return base64_decode(call("Page.captureScreenshot", {{"format", "png"}})["data"].get<std::string>());
  }

  /// Uncaught exceptions the page's script threw so far.
  [[nodiscard]] const std::vector<std::string>& exceptions() const noexcept { return exceptions_; }
  [[nodiscard]] std::string log() const {
    std::ifstream in(log_);
    return {std::istreambuf_iterator<char>(in), {}};
  }

 private:
  /// Sends one command (to the page, once open) and returns its result; events
  /// read meanwhile are kept if they matter.
  Json call(const std::string& method, Json params = Json::object()) {
    const int id = next_id_++;
    Json message{{"id", id}, {"method", method}, {"params", std::move(params)}};
    if (!session_.empty() && !method.starts_with("Target.")) message["sessionId"] = session_;
    const std::string bytes = message.dump() + '\0';
    for (std::size_t sent = 0; sent < bytes.size();) {
      const ssize_t n = ::write(to_, bytes.data() + sent, bytes.size() - sent);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) FAIL(method << ": cannot write to chromium; its log:\n" << log());
      sent += static_cast<std::size_t>(n);
    }
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (true) {
      for (std::size_t end; (end = buffer_.find('\0')) != std::string::npos;) {
        const Json reply = Json::parse(buffer_.substr(0, end), nullptr, /*allow_exceptions=*/false);
        buffer_.erase(0, end + 1);
        if (reply.value("method", "") == "Runtime.exceptionThrown") exceptions_.push_back(reply["params"].dump());
        if (reply.value("id", 0) != id) continue;
        if (reply.contains("error")) FAIL(method << " -> " << reply.dump());
        return reply["result"];
      }
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) FAIL(method << ": no reply from chromium in 30 s; its log:\n" << log());
      pollfd fd{from_, POLLIN, 0};
      if (::poll(&fd, 1, static_cast<int>(left.count())) <= 0) continue;
      char chunk[65536];
      const ssize_t n = ::read(from_, chunk, sizeof chunk);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) FAIL(method << ": chromium closed the pipe; its log:\n" << log());
      buffer_.append(chunk, static_cast<std::size_t>(n));
    }
  }

  fs::path log_;
  pid_t pid_ = -1;
  int to_ = -1;
  int from_ = -1;
  int next_id_ = 1;
  std::string buffer_;  ///< bytes read from the browser, not yet a whole message
  std::string session_;
  std::vector<std::string> exceptions_;
};

/// What the page shows, read through its test hooks (see host/net/status_page.html);
/// it may still be loading (or be about:blank).
constexpr const char* kViewExpression = R"js(({
  loaded: document.body?.dataset.loaded === '1',
  counter: document.querySelector('tr[data-module="counter"]')?.dataset.version ?? null,
  upgrades: Number(document.getElementById('upgrade-count')?.textContent ?? -1),
  newest: [...document.querySelectorAll('[data-upgrade]')].map((e) => ({
    n: Number(e.dataset.upgrade), outcome: e.dataset.outcome, from: e.dataset.from, to: e.dataset.to}))
    .sort((a, b) => b.n - a.n)[0] ?? null,
  modules: document.querySelectorAll('tr[data-module]').length,
}))js";

}  // namespace

TEST_CASE("GET /-/ serves the status page: HTML that loads nothing from another host", "[moltd][status-page]") {
  Daemon d;
  d.start();

  const auto page = d.curl({"-w", "\n%{http_code} %{content_type}", "/-/"});
  REQUIRE(page.exit_code == 0);
  const auto last_newline = page.out.rfind('\n');
  const std::string body = page.out.substr(0, last_newline);
  CHECK(page.out.substr(last_newline + 1) == "200 text/html; charset=utf-8");
  CHECK_THAT(body, Catch::StartsWith("<!doctype html>"));
  CHECK_THAT(body, Catch::Contains("</html>"));
  // Self-contained: no URL of any scheme, so no script, style, font or image from elsewhere.
  CHECK(body.find("://") == std::string::npos);
  CHECK(d.curl({"/-/index.html"}).out == body);

  const Json history = d.get_json("/-/history");
  CHECK(history["ok"] == true);
  CHECK(history["reports"] == Json::array());
  CHECK(history["limit"] == 200);
  CHECK(d.http_code("GET", "/-/nothing") == "404");
  CHECK(d.stop() == 0);
}

TEST_CASE("/-/history has each upgrade with all its phases, oldest first, as moltctl history does",
          "[moltd][status-page]") {
  Daemon d;
  d.start();
  d.install(plugin_path("counter", 2), "counter-2.so");
  REQUIRE(d.ctl({"reload", "counter"}).exit_code == 0);
  REQUIRE(d.ctl({"rollback", "counter"}).exit_code == 0);

  const Json reports = d.get_json("/-/history")["reports"];
  REQUIRE(reports.size() == 2);
  CHECK(reports[0]["from"] == 1);
  CHECK(reports[0]["to"] == 2);
  CHECK(reports[1]["from"] == 2);
  CHECK(reports[1]["to"] == 1);
  for (const auto& report : reports) {
    CHECK(report["module"] == "counter");
    CHECK(report["outcome"] == "succeeded");
    CHECK(report["started_at_ms"].is_number());
    CHECK(report["pause_us"].is_number());
    for (const char* phase : {"prepare", "quiesce", "save", "migrate", "resume", "rollback", "cleanup"})
      CHECK(report["phases_us"][phase].is_number());
  }
  // The same reports as moltctl history.
  const auto ctl = d.ctl({"history", "--json"});
  REQUIRE(ctl.exit_code == 0);
  CHECK(Json::parse(ctl.out)["reports"] == reports);
  CHECK(d.stop() == 0);
}

TEST_CASE("the status page in headless Chromium shows an upgrade by itself, and a screenshot is kept",
          "[moltd][status-page][browser]") {
  const auto chromium = find_chromium();
  if (!chromium)
    MOLT_SKIP("chromium is not installed, so the status page was not tried in a browser "
              "(scripts/install-deps installs it)",
              SkipInCi::Fails);
  Daemon d;
  d.start();
  for (int i = 0; i < 3; ++i) REQUIRE(d.http_code("POST", "/counter/incr") == "200");

  TempDir profile;
  Browser browser(*chromium, profile.path(), d.http().substr(0, d.http().rfind(':')));
  browser.open("http://" + d.http() + "/-/", 1280, 1000);

  Json view;
  const auto shows = [&](const std::function<bool(const Json&)>& condition) {
    return wait_until([&] {
      view = browser.evaluate(kViewExpression);
      return condition(view);
    }, std::chrono::seconds(20));
  };
  const bool loaded = shows([](const Json& v) { return v["loaded"] == true; });
  INFO("the page showed: " << view.dump());
  REQUIRE(loaded);
  CHECK(view["counter"] == "1");
  CHECK(view["modules"] == 1);
  const int upgrades = view["upgrades"].get<int>();
  CHECK(upgrades == 0);

  // The page is not reloaded: it must notice the upgrade by polling.
  d.install(plugin_path("counter", 2), "counter-2.so");
  const auto reload = d.ctl({"reload", "counter"});
  INFO(reload.out << reload.err);
  REQUIRE(reload.exit_code == 0);
  const bool updated = shows([&](const Json& v) { return v["counter"] == "2" && v["upgrades"] == upgrades + 1; });
  INFO("then the page showed: " << view.dump());
  REQUIRE(updated);
  CHECK(view["newest"] == Json{{"n", upgrades + 1}, {"outcome", "succeeded"}, {"from", "1"}, {"to", "2"}});
  CHECK(browser.evaluate("document.querySelector('#live').className") == "up");
  INFO("chromium log:\n" << browser.log());
  CHECK(browser.exceptions().empty());

  const fs::path artifacts(MOLT_ARTIFACT_DIR);
  fs::create_directories(artifacts);
  const fs::path png = artifacts / "status-page.png";
  const std::string image = browser.screenshot();
  std::ofstream(png, std::ios::binary | std::ios::trunc) << image;
  REQUIRE(fs::exists(png));
  CHECK(fs::file_size(png) > 10 * 1024);
  std::string signature(8, '\0');
  std::ifstream(png, std::ios::binary).read(signature.data(), 8);
  CHECK(signature == std::string("\x89PNG\r\n\x1a\n", 8));
  CHECK(d.stop() == 0);
}

TEST_CASE("the status page in headless Chromium lists a module boot did not start, with why",
          "[moltd][status-page][browser]") {
  const auto chromium = find_chromium();
  if (!chromium)
    MOLT_SKIP("chromium is not installed, so the status page was not tried in a browser "
              "(scripts/install-deps installs it)",
              SkipInCi::Fails);
  Daemon d({{"counter", plugin_path("counter", 1), 1}, {"probe", probe_path(1), 1}});
  d.start();
  REQUIRE(d.http_code("POST", "/counter/incr") == "200");
  CHECK(d.stop() == 0);
  const fs::path snapshot = d.run_dir() / "snapshots" / "counter.molt";
  fs::resize_file(snapshot, fs::file_size(snapshot) - 5);  // truncated, and no kept state: not started
  d.start();

  TempDir profile;
  Browser browser(*chromium, profile.path(), d.http().substr(0, d.http().rfind(':')));
  browser.open("http://" + d.http() + "/-/", 1280, 1000);
  Json row;
  const bool shown = wait_until([&] {
    row = browser.evaluate("document.querySelector('tr[data-not-started]')?.textContent ?? null");
    return row.is_string();
  }, std::chrono::seconds(20));
  REQUIRE(shown);
  CHECK_THAT(row.get<std::string>(), Catch::StartsWith("counternot started: no state v1 can read (") &&
                                         Catch::Contains("moltctl restore counter FILE"));
  CHECK(browser.evaluate(kViewExpression)["modules"] == 2);  // probe, and counter's row
  INFO("chromium log:\n" << browser.log());
  CHECK(browser.exceptions().empty());
  CHECK(d.stop() == 0);
}
