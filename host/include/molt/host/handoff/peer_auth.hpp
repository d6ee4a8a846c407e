// The peer channel's authentication: both moltd prove they know the shared
// secret (host.peer_secret_file) without sending it, before anything else
// is read (docs/handoff.md, "Security").
//
//   client -> server  hello  {protocol, challenge Cc}
//   server -> client  hello  {protocol, challenge Cs, proof HMAC(secret, "server" Cc Cs)}
//   client            checks the server's proof: no state goes to an impostor
//   client -> server  proof  {HMAC(secret, "client" Cs Cc)}
//   server            checks it: no state comes from, or goes to, an impostor
//   server -> client  welcome
// Challenges are 32 random bytes; the two proofs are labelled, so that one
// side's proof cannot be reflected as the other's. Messages before the
// welcome are bounded to kMaxPeerHelloMessage bytes and each step has a
// deadline: a stranger costs a connection slot for a few seconds at most.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

#include "molt/host/common/error.hpp"
#include "molt/host/handover/hot_restart.hpp"

namespace molt::host {

/// The peer protocol this moltd speaks; a peer must speak the same.
inline constexpr int kPeerProtocol = 1;
/// A message's bound until the peer is authenticated.
inline constexpr std::uint32_t kMaxPeerHelloMessage = 4096;

/// HMAC-SHA-256 of `message` under `key`, in hex.
[[nodiscard]] std::string hmac_sha256_hex(std::string_view key, std::string_view message);

/// Both sides of the handshake, on a connected channel; the error says why
/// (a wrong secret is "the peer does not know the secret").
[[nodiscard]] Result<void> authenticate_as_client(HandoverChannel& channel, std::string_view secret,
                                                  std::chrono::steady_clock::time_point deadline);
[[nodiscard]] Result<void> authenticate_as_server(HandoverChannel& channel, std::string_view secret,
                                                  std::chrono::steady_clock::time_point deadline);

}  // namespace molt::host
