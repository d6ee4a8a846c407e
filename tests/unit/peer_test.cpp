// The peer channel of handoffs (handoff/peer_auth.hpp, handoff/ownership.hpp),
// without a network: HMAC-SHA-256, the handshake over a socket pair, the
// secret file's checks, the ownership record, and the configuration.
#include <sys/socket.h>

#include <fstream>
#include <future>

#include <catch2/catch.hpp>

#include "molt/host/common/secret_file.hpp"
#include "molt/host/config/host_config.hpp"
#include "molt/host/handoff/ownership.hpp"
#include "molt/host/handoff/peer_auth.hpp"
#include "test_support.hpp"

using namespace molt;
namespace fs = std::filesystem;

namespace {

std::pair<host::HandoverChannel, host::HandoverChannel> connected() {
  int pair[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) == 0);
  return {host::HandoverChannel(host::FileDescriptor(pair[0])), host::HandoverChannel(host::FileDescriptor(pair[1]))};
}

/// Both sides of the handshake at once: the client's outcome and the server's.
std::pair<host::Result<void>, host::Result<void>> handshake(const std::string& client_secret,
                                                            const std::string& server_secret) {
  auto [client, server] = connected();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  auto served = std::async(std::launch::async, [&, s = &server] { return host::authenticate_as_server(*s, server_secret, deadline); });
  auto outcome = host::authenticate_as_client(client, client_secret, deadline);
  return {std::move(outcome), served.get()};
}

fs::path write_secret(const fs::path& path, const std::string& text, fs::perms mode) {
  std::ofstream(path) << text;
  fs::permissions(path, mode, fs::perm_options::replace);
  return path;
}

}  // namespace

TEST_CASE("HMAC-SHA-256 gives RFC 4231's test vector", "[peer]") {
  CHECK(host::hmac_sha256_hex("Jefe", "what do ya want for nothing?") ==
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

TEST_CASE("peers that share the secret authenticate each other, and a wrong secret is refused on both sides", "[peer]") {
  const std::string secret = "0123456789abcdef-shared";
  auto [client, server] = handshake(secret, secret);
  CHECK(client.ok());
  CHECK(server.ok());

  auto [wrong_client, wrong_server] = handshake("not-the-secret-at-all", secret);
  REQUIRE_FALSE(wrong_client.ok());
  CHECK(wrong_client.error().reason == "the peer does not know the secret (host.peer_secret_file differs)");
  REQUIRE_FALSE(wrong_server.ok());  // the client stops at the server's proof: the server hears nothing more
}

TEST_CASE("a client that cannot prove it knows the secret is refused by the server", "[peer]") {
  auto [client, server] = connected();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  auto served = std::async(std::launch::async, [&, s = &server] {
    return host::authenticate_as_server(*s, "0123456789abcdef-shared", deadline);
  });
  // A client that skips checking the server and answers with a made-up proof.
  REQUIRE_FALSE(client.send({{"step", "hello"}, {"protocol", host::kPeerProtocol}, {"challenge", std::string(64, 'a')}},
                            {}, deadline));
  REQUIRE(client.receive(deadline).ok());
  REQUIRE_FALSE(client.send({{"step", "proof"}, {"proof", std::string(64, '0')}}, {}, deadline));
  const auto answer = client.receive(deadline);
  REQUIRE_FALSE(answer.ok());
  CHECK(answer.error().reason == "refused: wrong secret");
  const auto outcome = served.get();
  REQUIRE_FALSE(outcome.ok());
  CHECK(outcome.error().reason == "refused a peer that does not know the secret");
}

TEST_CASE("a stranger announcing a huge first message is refused before anything is read into memory", "[peer]") {
  auto [stranger, server] = connected();
  const unsigned char huge[4] = {0xff, 0xff, 0xff, 0x3f};
  REQUIRE(::send(stranger.fd(), huge, sizeof huge, MSG_NOSIGNAL) == 4);
  const auto outcome =
      host::authenticate_as_server(server, "0123456789abcdef", std::chrono::steady_clock::now() + std::chrono::seconds(2));
  REQUIRE_FALSE(outcome.ok());
  CHECK_THAT(outcome.error().reason, Catch::Contains("a message of 1073741823 bytes announced, over the bound of 4096"));
}

TEST_CASE("a stranger that says nothing costs the peer listener its step deadline, no more", "[peer]") {
  auto [stranger, server] = connected();
  const auto began = std::chrono::steady_clock::now();
  const auto outcome = host::authenticate_as_server(server, "0123456789abcdef", began + std::chrono::milliseconds(200));
  REQUIRE_FALSE(outcome.ok());
  CHECK(std::chrono::steady_clock::now() - began < std::chrono::seconds(2));
}

TEST_CASE("the secret file must be the owner's alone, and long enough", "[peer]") {
  test::TempDir dir;
  const auto ok = write_secret(dir.path() / "ok", "0123456789abcdef\n", fs::perms::owner_read | fs::perms::owner_write);
  auto read = host::read_secret_file(ok);
  REQUIRE(read.ok());
  CHECK(read.value() == "0123456789abcdef");  // without its newline

  const auto open = write_secret(dir.path() / "open", "0123456789abcdef\n", fs::perms::owner_read | fs::perms::others_read);
  auto refused = host::read_secret_file(open);
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.error().reason == open.string() + ": mode 0404: group or others may read or write it; chmod 600 it");

  const auto short_one = write_secret(dir.path() / "short", "tiny\n", fs::perms::owner_read);
  auto too_short = host::read_secret_file(short_one);
  REQUIRE_FALSE(too_short.ok());
  CHECK(too_short.error().reason == short_one.string() + ": holds 4 bytes; a secret needs at least 16");
}

TEST_CASE("the ownership record is durable, and a handoff that did not happen puts back what was there", "[peer]") {
  test::TempDir dir;
  const fs::path path = dir.path() / "ownership.json";
  {
    auto record = host::OwnershipRecord::open(path);
    REQUIRE(record.ok());
    CHECK(record.value()->epoch("kv") == 0);
    host::OwnershipEntry owned{host::Ownership::Owned, 3, "10.0.0.1:7400", 0, nullptr, {}, {}};
    REQUIRE(record.value()->set("kv", owned).ok());
    host::OwnershipEntry moving{host::Ownership::Moving, 4, "10.0.0.2:7400", 0,
                                std::make_shared<const host::OwnershipEntry>(owned), {}, {}};
    REQUIRE(record.value()->set("kv", moving).ok());
  }
  auto reopened = host::OwnershipRecord::open(path);
  REQUIRE(reopened.ok());
  auto& record = *reopened.value();
  REQUIRE(record.find("kv"));
  CHECK(record.find("kv")->describe() == "being handed to 10.0.0.2:7400 at epoch 4 (not confirmed)");
  REQUIRE(record.revert("kv").ok());
  CHECK(record.find("kv")->describe() == "received from 10.0.0.1:7400 at epoch 3");
  CHECK(host::OwnershipRecord::open(path).value()->epoch("kv") == 3);  // on disk too

  std::ofstream(path) << "{\"modules\": {\"kv\": {\"ownership\": \"mine\", \"epoch\": 1, \"peer\": \"x\"}}}";
  auto corrupt = host::OwnershipRecord::open(path);
  REQUIRE_FALSE(corrupt.ok());
  CHECK_THAT(corrupt.error().to_string(), Catch::Contains(path.string()) && Catch::Contains("unknown ownership 'mine'") &&
                                              Catch::Contains("never delete it"));
}

TEST_CASE("a module that only a handoff brings needs no version, and peers need the secret", "[peer][config]") {
  test::TempDir dir;
  const auto secret = write_secret(dir.path() / "secret", "0123456789abcdef\n", fs::perms::owner_read | fs::perms::owner_write);
  const fs::path config = dir.path() / "moltd.toml";
  std::ofstream(config) << "[host]\npeer = \"10.0.0.2:7400\"\npeer_secret_file = \"" << secret.string()
                        << "\"\nhandoff_drain_seconds = 5\nhandoff_http = \"redirect\"\n[modules.kv]\naccept_handoff = true\nlisten = \"0.0.0.0:6380\"\n";
  auto loaded = host::load_host_config(config);
  REQUIRE(loaded.ok());
  CHECK(loaded->peer->to_string() == "10.0.0.2:7400");
  CHECK(loaded->peer_secret == "0123456789abcdef");
  CHECK(loaded->handoff_drain == std::chrono::seconds(5));
  CHECK(loaded->handoff_http == "redirect");
  CHECK(loaded->handoff_new_connections == "moved");  // the default
  REQUIRE(loaded->modules.size() == 1);
  CHECK(loaded->modules[0].accept_handoff);
  CHECK(loaded->modules[0].file.empty());
}
