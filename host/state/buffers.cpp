#include "molt/host/state/buffers.hpp"

#include <algorithm>
#include <climits>
#include <cstring>

namespace molt::host {

StringSink::StringSink(std::uint64_t limit) : limit_(limit) { reserve(std::min<std::uint64_t>(limit, 4096)); }

std::uint64_t StringSink::size() const noexcept { return static_cast<std::uint64_t>(pptr() - pbase()); }

void StringSink::advance(std::uint64_t count) {
  while (count > 0) {  // pbump takes an int; state may exceed 2 GiB
    const int step = static_cast<int>(std::min<std::uint64_t>(count, INT_MAX));
    pbump(step);
    count -= static_cast<std::uint64_t>(step);
  }
}

bool StringSink::reserve(std::uint64_t needed) {
  if (needed > limit_) {
    over_limit_ = true;
    return false;
  }
  const std::uint64_t used = size();
  if (needed <= buffer_.size()) return true;
  const std::uint64_t capacity = std::min(limit_, std::max<std::uint64_t>(needed, buffer_.size() * 2));
  buffer_.resize(capacity);
  setp(buffer_.data(), buffer_.data() + buffer_.size());
  advance(used);
  return true;
}

StringSink::int_type StringSink::overflow(int_type ch) {
  if (traits_type::eq_int_type(ch, traits_type::eof())) return traits_type::not_eof(ch);
  if (!reserve(size() + 1)) return traits_type::eof();
  *pptr() = traits_type::to_char_type(ch);
  pbump(1);
  return ch;
}

std::streamsize StringSink::xsputn(const char* data, std::streamsize count) {
  if (count <= 0) return 0;
  const auto n = static_cast<std::uint64_t>(count);
  if (static_cast<std::uint64_t>(epptr() - pptr()) < n && !reserve(size() + n)) return 0;
  std::memcpy(pptr(), data, n);
  advance(n);
  return count;
}

std::string StringSink::take() {
  buffer_.resize(size());
  std::string out = std::move(buffer_);
  buffer_.clear();
  setp(nullptr, nullptr);
  return out;
}

ViewSource::ViewSource(std::string_view bytes) {
  char* begin = const_cast<char*>(bytes.data());  // the get area is only ever read
  setg(begin, begin, begin + bytes.size());
}

std::uint64_t ViewSource::remaining() const noexcept { return static_cast<std::uint64_t>(egptr() - gptr()); }

ViewSource::pos_type ViewSource::seekoff(off_type offset, std::ios_base::seekdir from, std::ios_base::openmode which) {
  if (offset != 0 || from != std::ios_base::cur || (which & std::ios_base::in) == 0) return pos_type(off_type(-1));
  return pos_type(off_type(gptr() - eback()));
}

}  // namespace molt::host
