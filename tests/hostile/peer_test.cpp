// The peer listener (host.peer, docs/handoff.md "Security") against
// strangers, on a real moltd: connections that say nothing, more of them than
// it admits, a first message announcing a gigabyte. Each is closed by its step
// deadline or at once, moltd's descriptors and memory stay bounded, kv serves
// its clients throughout, and a peer that knows the secret is still let in.
#include <sys/socket.h>

#include <chrono>
#include <fstream>
#include <vector>

#include <catch2/catch.hpp>

#include "daemon.hpp"
#include "hostile.hpp"
#include "molt/host/handoff/peer_auth.hpp"
#include "resp_client.hpp"

using namespace molt::test;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;

TEST_CASE("strangers on the peer listener: at most 4 held, each closed by the step deadline, a huge first message "
          "refused unread: kv serves throughout, a real peer is let in after and cannot take over a client",
          "[hostile][handoff]") {
  const std::uint16_t peer = free_port();
  TempDir secrets;
  const fs::path secret = secrets.path() / "peer.secret";
  std::ofstream(secret) << "the shared secret of this test\n";
  fs::permissions(secret, fs::perms::owner_read | fs::perms::owner_write, fs::perm_options::replace);
  Daemon d({{"kv", plugin_path("kv", 1), 1, "listen = \"127.0.0.1:0\"\n"}},
           "peer = \"127.0.0.1:" + std::to_string(peer) + "\"\npeer_secret_file = \"" + secret.string() +
               "\"\nhandoff_timeout_ms = 1000\n");
  d.start();
  const pid_t pid = d.pid();
  RespClient kv(d.stream_port("kv"));
  REQUIRE(kv.call({"SET", "before", "1"}) == "+OK\r\n");
  const std::size_t fds_before = open_fds(pid);
  const std::uint64_t rss_before = rss_bytes(pid);

  // 20 connections that say nothing: 4 are held (each until its deadline), the rest closed at once.
  std::vector<RawConnection> silent;
  for (int i = 0; i < 20; ++i) silent.emplace_back(peer);
  const auto opened = Clock::now();
  CHECK(kv.call({"GET", "before"}) == "$1\r\n1\r\n");  // served meanwhile
  std::size_t closed_at_once = 0;
  for (auto& c : silent)
    if (c.wait_closed(300ms)) ++closed_at_once;
  measured("silent peer connections closed at once (of 20; 4 may be held)", std::to_string(closed_at_once));
  CHECK(closed_at_once >= 16);
  const std::size_t fds_held = open_fds(pid);
  measured("moltd's descriptors with 20 silent peer connections", std::to_string(fds_held) + " (before: " +
                                                                        std::to_string(fds_before) + ")");
  CHECK(fds_held <= fds_before + 4);
  for (auto& c : silent) CHECK(c.wait_closed(5s));  // the held ones, at their 1 s deadline
  const auto all_closed = Clock::now() - opened;
  measured("the last silent peer connection closed after",
           std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(all_closed).count()) + " ms");
  CHECK(all_closed < 4s);

  // A first message that announces 1 GiB: refused on its length, nothing read into memory.
  RawConnection huge(peer);
  const unsigned char length[4] = {0xff, 0xff, 0xff, 0x3f};
  REQUIRE(huge.send_all(std::string_view(reinterpret_cast<const char*>(length), 4)));
  (void)huge.send_some(std::string(64 * 1024, 'x'));
  CHECK(huge.wait_closed(5s));
  REQUIRE(wait_until([&] { return d.log().find("over the bound of 4096") != std::string::npos; }));
  if (!kSanitized) {
    const std::uint64_t grown = rss_bytes(pid) > rss_before ? rss_bytes(pid) - rss_before : 0;
    measured("moltd's RSS growth after a 1 GiB hello", std::to_string(grown / 1024) + " KiB");
    CHECK(grown < 16u << 20);
  }
  REQUIRE(wait_until([&] { return open_fds(pid) <= fds_before + 1; }));

  // A peer that knows the secret is let in, and kv kept its data and its pid.
  RawConnection real(peer);
  molt::host::HandoverChannel channel{molt::host::FileDescriptor(::dup(real.fd()))};
  const auto authenticated =
      molt::host::authenticate_as_client(channel, "the shared secret of this test", Clock::now() + 5s);
  CHECK(authenticated.ok());
  // Even it cannot take over a client this moltd did not receive with a handoff (its own kv client's id here).
  const std::string id = kv.call({"CLIENT", "ID"});
  REQUIRE(id.starts_with(':'));
  const auto kv_client = std::stoull(id.substr(1));
  REQUIRE(!channel.send({{"step", "adopt"}, {"module", "kv"}, {"epoch", 1}, {"connection", kv_client}}, {}, Clock::now() + 5s));
  const auto adopted = channel.receive(Clock::now() + 5s);
  REQUIRE_FALSE(adopted.ok());
  CHECK(adopted.error().reason == "refused: kv: connection " + std::to_string(kv_client) +
                                      ": not a client this moltd expects at epoch 1");
  CHECK(kv.call({"GET", "before"}) == "$1\r\n1\r\n");
  CHECK(kv.call({"CLIENT", "ID"}) == id);
  CHECK(d.pid() == pid);
}
