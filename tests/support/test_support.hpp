// Helpers shared by Molt's tests: paths to built images, temporary
// directories, a logger, and the one way tests wait for something.
#pragma once

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <spdlog/logger.h>

#include "molt/host/loader/loader.hpp"
#include "molt/host/slot/module_slot.hpp"
#include "molt/message.hpp"

namespace molt::test {

/// build/plugins/<module>-<version>.so: the shipped modules.
std::filesystem::path plugin_path(std::string_view module, unsigned version);
/// build/tests/images/<file_name>: the test modules of tests/plugins.
std::filesystem::path test_image_path(std::string_view file_name);
/// build/tests/images/probe-<version>.so
std::filesystem::path probe_path(unsigned version);
/// tests/fixtures in the source tree.
std::filesystem::path fixture_root();

/// A fresh private directory (mode 0700), removed with everything in it.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  [[nodiscard]] const std::filesystem::path& path() const noexcept { return path_; }

 private:
  std::filesystem::path path_;
};

/// A logger named `module` that keeps quiet unless MOLT_TEST_LOG is set.
std::shared_ptr<spdlog::logger> test_logger(const std::string& module);

/// Polls `condition` until it holds or `timeout` passes; returns whether it
/// held. The only way tests wait: never a fixed sleep.
bool wait_until(const std::function<bool()>& condition,
                std::chrono::milliseconds timeout = std::chrono::seconds(10));

/// "POST /counter/incr?key=a" -> Request{POST, /counter/incr, key=a}
api::Request request(std::string_view method, std::string_view target, std::string body = {});

/// A loader with its image directory inside a TempDir.
struct Harness {
  TempDir dir;
  host::Loader loader{host::LoaderOptions{dir.path() / "images"}};

  /// Loads `image` (module `module`) into a new slot; fails the test otherwise.
  std::shared_ptr<host::ModuleSlot> start(const std::filesystem::path& image, std::string_view module,
                                          api::Values config = {}, std::shared_ptr<host::JobRunner> jobs = nullptr);
};

/// The body of a call that must succeed with status 200.
std::string call_ok(host::ModuleSlot& slot, std::string_view method, std::string_view target);

/// Whether /proc/self/maps maps `path`.
bool is_mapped(const std::filesystem::path& path);

/// A TCP socket as /proc/PID/net/tcp lists it (the process's network namespace).
struct TcpSocketRow {
  std::string state;          ///< hex, e.g. "0A" for listening, "01" established
  std::uint64_t rx_queue = 0;  ///< bytes received and not read by the process
  unsigned long inode = 0;     ///< as /proc/PID/fd shows it: socket:[inode]
};
/// The socket on the local `port` whose remote port is `peer`, or, with
/// `peer` 0, the one listening on `port`; nothing if none is listed.
std::optional<TcpSocketRow> tcp_socket(pid_t pid, std::uint16_t port, std::uint16_t peer = 0);

/// How often `needle` occurs in `text`, not overlapping.
std::size_t occurrences(std::string_view text, std::string_view needle);

/// Whether `text` holds both `first` and `second`, the first `first` before
/// the first `second`. (`find(a) < find(b)` alone also holds when `b` is
/// missing: npos is past everything.)
bool appears_before(std::string_view text, std::string_view first, std::string_view second);

/// The whole of `path` (empty when it cannot be read).
std::string read_file(const std::filesystem::path& path);
/// Replaces `path`'s content with `text` (fails the test when it cannot).
void write_file(const std::filesystem::path& path, std::string_view text);

}  // namespace molt::test
