// SHA-256 of a byte range, as lowercase hex (the form sha256sum prints).
#pragma once

#include <filesystem>
#include <string>
#include <string_view>

namespace molt::host {

[[nodiscard]] std::string sha256_hex(std::string_view bytes);
/// SHA-256 of a file's bytes, read a piece at a time; empty if it cannot be read.
[[nodiscard]] std::string sha256_file_hex(const std::filesystem::path& path);

/// SHA-256 of bytes given a piece at a time (a file written as it is made).
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(Sha256&& other) noexcept;
  Sha256& operator=(Sha256&&) = delete;
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void update(std::string_view bytes);
  /// The digest of everything given, as lowercase hex. Once.
  [[nodiscard]] std::string hex();

 private:
  void* context_;  ///< EVP_MD_CTX
};

}  // namespace molt::host
