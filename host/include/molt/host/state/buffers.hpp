// Stream buffers the host hands to StateWriter and StateReader.
#pragma once

#include <cstdint>
#include <ios>
#include <streambuf>
#include <string>
#include <string_view>

namespace molt::host {

/// Collects written bytes in a std::string, refusing to grow past `limit`
/// (the write then fails, and over_limit() tells why).
class StringSink final : public std::streambuf {
 public:
  explicit StringSink(std::uint64_t limit);

  [[nodiscard]] std::uint64_t size() const noexcept;
  [[nodiscard]] bool over_limit() const noexcept { return over_limit_; }
  /// The bytes written so far; the sink is empty afterwards.
  [[nodiscard]] std::string take();

 protected:
  int_type overflow(int_type ch) override;
  std::streamsize xsputn(const char* data, std::streamsize count) override;

 private:
  bool reserve(std::uint64_t needed);
  void advance(std::uint64_t count);

  std::string buffer_;
  std::uint64_t limit_;
  bool over_limit_ = false;
};

/// Reads from bytes owned elsewhere, without copying them.
class ViewSource final : public std::streambuf {
 public:
  explicit ViewSource(std::string_view bytes);
  /// Bytes not read yet.
  [[nodiscard]] std::uint64_t remaining() const noexcept;

 protected:
  /// Tells the read position (offset 0 from the current one), so that a
  /// StateReader knows how much is left; other seeks fail.
  pos_type seekoff(off_type offset, std::ios_base::seekdir from, std::ios_base::openmode which) override;
};

}  // namespace molt::host
