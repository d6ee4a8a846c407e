#include "test_support.hpp"

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>

#include <catch2/catch.hpp>
#include <spdlog/sinks/null_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>

namespace molt::test {
namespace fs = std::filesystem;

fs::path plugin_path(std::string_view module, unsigned version) {
  return fs::path(MOLT_PLUGIN_DIR) / (std::string(module) + '-' + std::to_string(version) + ".so");
}

fs::path test_image_path(std::string_view file_name) { return fs::path(MOLT_TEST_IMAGE_DIR) / file_name; }

fs::path probe_path(unsigned version) { return test_image_path("probe-" + std::to_string(version) + ".so"); }

fs::path fixture_root() { return fs::path(MOLT_FIXTURE_DIR); }

TempDir::TempDir() {
  std::string pattern = (fs::temp_directory_path() / "molt-test-XXXXXX").string();
  if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  path_ = pattern;
}

TempDir::~TempDir() {
  if (std::getenv("MOLT_TEST_KEEP") != nullptr) {  // for a post-mortem of a failed test
    std::fprintf(stderr, "MOLT_TEST_KEEP: kept %s\n", path_.c_str());
    return;
  }
  std::error_code ec;
  fs::permissions(path_, fs::perms::owner_all, fs::perm_options::add, ec);
  fs::remove_all(path_, ec);
}

std::shared_ptr<spdlog::logger> test_logger(const std::string& module) {
  if (std::getenv("MOLT_TEST_LOG") != nullptr) {
    auto logger = std::make_shared<spdlog::logger>(module, std::make_shared<spdlog::sinks::stderr_color_sink_mt>());
    logger->set_level(spdlog::level::debug);
    return logger;
  }
  return std::make_shared<spdlog::logger>(module, std::make_shared<spdlog::sinks::null_sink_mt>());
}

bool wait_until(const std::function<bool()>& condition, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!condition()) {
    if (std::chrono::steady_clock::now() >= deadline) return condition();
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

api::Request request(std::string_view method, std::string_view target, std::string body) {
  api::Request req;
  req.method = std::string(method);
  const auto question = target.find('?');
  req.path = std::string(target.substr(0, question));
  if (question != std::string_view::npos) req.query = std::string(target.substr(question + 1));
  req.body = std::move(body);
  return req;
}

std::shared_ptr<host::ModuleSlot> Harness::start(const fs::path& path, std::string_view module, api::Values config,
                                                 std::shared_ptr<host::JobRunner> jobs) {
  auto image = loader.load(path, module);
  if (!image) FAIL(image.error().to_string());
  auto slot = host::ModuleSlot::start(std::move(image.value()),
                                      host::SlotOptions{test_logger(std::string(module)), std::move(config), nullptr, std::move(jobs)});
  if (!slot) FAIL(slot.error().to_string());
  return std::move(slot.value());
}

std::string call_ok(host::ModuleSlot& slot, std::string_view method, std::string_view target) {
  auto response = slot.call(request(method, target));
  if (!response) FAIL(response.error().to_string());
  INFO(method << ' ' << target << " -> " << response->status << ' ' << response->body);
  REQUIRE(response->status == 200);
  return response->body;
}

bool is_mapped(const fs::path& path) {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line))
    if (line.find(path.string()) != std::string::npos) return true;
  return false;
}

std::size_t occurrences(std::string_view text, std::string_view needle) {
  std::size_t n = 0;
  for (auto at = text.find(needle); at != std::string_view::npos; at = text.find(needle, at + needle.size())) ++n;
  return n;
}

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

void write_file(const std::filesystem::path& path, std::string_view text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  out.close();
  REQUIRE(out.good());
}

bool appears_before(std::string_view text, std::string_view first, std::string_view second) {
  const auto a = text.find(first);
  const auto b = text.find(second);
  return a != std::string_view::npos && b != std::string_view::npos && a < b;
}

std::optional<TcpSocketRow> tcp_socket(pid_t pid, std::uint16_t port, std::uint16_t peer) {
  std::ifstream table("/proc/" + std::to_string(pid) + "/net/tcp");
  std::string line;
  std::getline(table, line);  // header
  char local_port[8], remote_port[8];
  std::snprintf(local_port, sizeof local_port, ":%04X", port);
  std::snprintf(remote_port, sizeof remote_port, ":%04X", peer);
  const auto ends_with = [](const std::string& text, const char* end) {
    return text.size() >= 5 && text.compare(text.size() - 5, 5, end) == 0;
  };
  while (std::getline(table, line)) {
    std::istringstream fields(line);
    std::string slot, local, remote, queues, timer, retransmits, uid, timeout;
    TcpSocketRow row;
    fields >> slot >> local >> remote >> row.state >> queues >> timer >> retransmits >> uid >> timeout >> row.inode;
    if (!ends_with(local, local_port)) continue;
    if (peer == 0 ? row.state != "0A" : !ends_with(remote, remote_port)) continue;
    row.rx_queue = std::stoull(queues.substr(queues.find(':') + 1), nullptr, 16);
    return row;
  }
  return std::nullopt;
}

}  // namespace molt::test
