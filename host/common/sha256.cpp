// OpenSSL's libcrypto rather than a hand-written digest: it is the standard
// implementation on Debian, uses the CPU's SHA extensions, and operators can
// check our figures with `sha256sum`.
#include "molt/host/common/sha256.hpp"

#include <openssl/evp.h>

#include <array>
#include <stdexcept>

namespace molt::host {

std::string sha256_hex(std::string_view bytes) {
  std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
  unsigned int length = 0;
  if (EVP_Digest(bytes.data(), bytes.size(), digest.data(), &length, EVP_sha256(), nullptr) != 1)
    throw std::runtime_error("EVP_Digest(sha256) failed");  // broken libcrypto: an invariant, not input
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(length * 2);
  for (unsigned int i = 0; i < length; ++i) {
    out += kHex[digest[i] >> 4];
    out += kHex[digest[i] & 0xf];
  }
  return out;
}

}  // namespace molt::host
