#include "molt/host/handoff/peer_auth.hpp"


#include <sys/random.h>

#include <cerrno>
#include <cstring>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

namespace molt::host {
namespace {

using Json = nlohmann::json;
using Clock = std::chrono::steady_clock;

Error peer_error(std::string why) { return Error{"(host)", {}, {}, Phase::Handoff, std::move(why)}; }

std::string hex(const unsigned char* bytes, std::size_t size) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(size * 2);
  for (std::size_t i = 0; i < size; ++i) {
    out += kDigits[bytes[i] >> 4];
    out += kDigits[bytes[i] & 15];
  }
  return out;
}

std::string challenge() {
  unsigned char bytes[32];
  std::size_t got = 0;
  while (got < sizeof bytes) {
    const ssize_t n = ::getrandom(bytes + got, sizeof bytes - got, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw std::runtime_error(std::string("getrandom: ") + std::strerror(errno));
    got += static_cast<std::size_t>(n);
  }
  return hex(bytes, sizeof bytes);
}

std::string proof(std::string_view secret, std::string_view label, const std::string& theirs, const std::string& ours) {
  return hmac_sha256_hex(secret, std::string("molt-peer ") + std::string(label) + ' ' + theirs + ' ' + ours);
}

bool same(const std::string& a, const std::string& b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

std::string text(const Json& message, const char* key) {
  const auto it = message.find(key);
  return it != message.end() && it->is_string() ? it->get<std::string>() : std::string();
}

Result<Json> receive(HandoverChannel& channel, Clock::time_point deadline, const char* step) {
  auto message = channel.receive(deadline);
  if (!message) return peer_error(std::string(step) + ": " + message.error().reason);
  if (message.value().value("step", std::string()) != step)
    return peer_error(std::string("expected ") + step + ", got " + message.value().value("step", std::string("?")));
  return message;
}

}  // namespace

std::string hmac_sha256_hex(std::string_view key, std::string_view message) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  ::HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(message.data()),
         message.size(), digest, &size);
  return hex(digest, size);
}

Result<void> authenticate_as_client(HandoverChannel& channel, std::string_view secret, Clock::time_point deadline) {
  channel.set_max_message(kMaxPeerHelloMessage);
  const std::string ours = challenge();
  if (auto why = channel.send(Json{{"step", "hello"}, {"protocol", kPeerProtocol}, {"challenge", ours},
                                   {"version", std::string("moltd ") + MOLT_VERSION}},
                              {}, deadline))
    return peer_error("hello: " + *why);
  auto hello = receive(channel, deadline, "hello");
  if (!hello) return std::move(hello).error();
  if (hello.value().value("protocol", 0) != kPeerProtocol)
    return peer_error("the peer speaks peer protocol " + std::to_string(hello.value().value("protocol", 0)) +
                      ", this moltd " + std::to_string(kPeerProtocol));
  const std::string theirs = text(hello.value(), "challenge");
  if (theirs.size() != 64) return peer_error("hello: no challenge");
  if (!same(text(hello.value(), "proof"), proof(secret, "server", ours, theirs))) {
    (void)channel.send(Json{{"step", "refused"}, {"reason", "your proof is wrong: the secrets differ (host.peer_secret_file)"}},
                       {}, deadline);
    return peer_error("the peer does not know the secret (host.peer_secret_file differs)");
  }
  if (auto why = channel.send(Json{{"step", "proof"}, {"proof", proof(secret, "client", theirs, ours)}}, {}, deadline))
    return peer_error("proof: " + *why);
  auto welcome = receive(channel, deadline, "welcome");
  if (!welcome) return std::move(welcome).error();
  channel.set_max_message(kMaxHandoverMessage);
  return {};
}

Result<void> authenticate_as_server(HandoverChannel& channel, std::string_view secret, Clock::time_point deadline) {
  channel.set_max_message(kMaxPeerHelloMessage);
  auto hello = receive(channel, deadline, "hello");
  if (!hello) return std::move(hello).error();
  const int protocol = hello.value().value("protocol", 0);
  if (protocol != kPeerProtocol) {
    const std::string why = "peer protocol " + std::to_string(protocol) + "; this moltd speaks " +
                            std::to_string(kPeerProtocol);
    (void)channel.send(Json{{"step", "refused"}, {"reason", why}}, {}, deadline);
    return peer_error("refused a peer of " + why);
  }
  const std::string theirs = text(hello.value(), "challenge");
  if (theirs.size() != 64) return peer_error("hello: no challenge");
  const std::string ours = challenge();
  if (auto why = channel.send(Json{{"step", "hello"}, {"protocol", kPeerProtocol}, {"challenge", ours},
                                   {"proof", proof(secret, "server", theirs, ours)}},
                              {}, deadline))
    return peer_error("hello: " + *why);
  auto answer = receive(channel, deadline, "proof");
  if (!answer) return std::move(answer).error();
  if (!same(text(answer.value(), "proof"), proof(secret, "client", ours, theirs))) {
    (void)channel.send(Json{{"step", "refused"}, {"reason", "wrong secret"}}, {}, deadline);
    return peer_error("refused a peer that does not know the secret");
  }
  if (auto why = channel.send(Json{{"step", "welcome"}}, {}, deadline)) return peer_error("welcome: " + *why);
  channel.set_max_message(kMaxHandoverMessage);
  return {};
}

}  // namespace molt::host
