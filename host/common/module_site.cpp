#include "molt/host/common/module_site.hpp"

#include <cstdint>

namespace molt::host {

namespace detail {
constinit thread_local const ModuleCodeScope* innermost_module_code __attribute__((tls_model("initial-exec"))) = nullptr;
}  // namespace detail

namespace {

static_assert(__atomic_always_lock_free(sizeof(const ModuleCodeScope*), nullptr),
              "a signal handler reads the innermost scope: it must be a plain load");

constexpr std::string_view kEllipsis = "…";

bool continuation_byte(char c) { return (static_cast<unsigned char>(c) & 0xc0) == 0x80; }

/// A fixed buffer that silently stops at its end: the site's text is bounded
/// by its capacity, computed from the field limits, so nothing is cut here
/// unless those limits change.
struct Buffer {
  char* data;
  std::size_t capacity;
  std::size_t size = 0;

  void text(std::string_view s) {
    for (char c : s) {
      if (size == capacity) return;
      data[size++] = c;
    }
  }
  void field(std::string_view s) { size += escape_record_field(s, data + size, capacity - size); }
  void number(std::uint32_t n) {
    char digits[10];
    std::size_t count = 0;
    do {
      digits[count++] = static_cast<char>('0' + n % 10);
      n /= 10;
    } while (n != 0);
    while (count > 0) text(std::string_view(&digits[--count], 1));
  }
};

/// At most `limit` bytes of `s` from its start, cut at a character boundary.
/// `cut` says whether anything was left out.
std::string_view head(std::string_view s, std::size_t limit, bool& cut) {
  cut = s.size() > limit;
  if (!cut) return s;
  std::size_t end = limit;
  while (end > 0 && continuation_byte(s[end])) --end;
  return s.substr(0, end);
}

/// At most `limit` bytes of `s` from its end, cut at a character boundary.
std::string_view tail(std::string_view s, std::size_t limit, bool& cut) {
  cut = s.size() > limit;
  if (!cut) return s;
  std::size_t start = s.size() - limit;
  while (start < s.size() && continuation_byte(s[start])) ++start;
  return s.substr(start);
}

void head_field(Buffer& out, std::string_view s, std::size_t limit) {
  bool cut = false;
  out.field(head(s, limit, cut));
  if (cut) out.text(kEllipsis);
}

void tail_field(Buffer& out, std::string_view s, std::size_t limit) {
  bool cut = false;
  const std::string_view kept = tail(s, limit, cut);
  if (cut) out.text(kEllipsis);
  out.field(kept);
}

std::string_view base_name(std::string_view path) {
  const auto slash = path.rfind('/');
  return slash == std::string_view::npos ? path : path.substr(slash + 1);
}

}  // namespace

std::size_t escape_record_field(std::string_view field, char* out, std::size_t capacity) noexcept {
  static constexpr char kHex[] = "0123456789abcdef";
  std::size_t size = 0;
  for (char c : field) {
    const auto byte = static_cast<unsigned char>(c);
    char escaped[4];
    std::size_t n = 0;
    if (c == '\\') {
      escaped[n++] = '\\';
      escaped[n++] = '\\';
    } else if (c == '\n') {
      escaped[n++] = '\\';
      escaped[n++] = 'n';
    } else if (c == '\r') {
      escaped[n++] = '\\';
      escaped[n++] = 'r';
    } else if (byte < 0x20 || byte == 0x7f) {
      escaped[n++] = '\\';
      escaped[n++] = 'x';
      escaped[n++] = kHex[byte >> 4];
      escaped[n++] = kHex[byte & 0xf];
    } else {
      escaped[n++] = c;
    }
    if (capacity - size < n) break;
    for (std::size_t i = 0; i < n; ++i) out[size++] = escaped[i];
  }
  return size;
}

ModuleSite::ModuleSite(std::string_view module, api::ModuleVersion version, std::string_view file,
                       std::string_view sha256) noexcept
    : version_(version) {
  // The keys, three ellipses and the separators fit in the 64 (32) bytes
  // the capacities add to the escaped fields.
  static_assert(sizeof "module \nversion 4294967295\nfile \nsha256 \n" + 3 * kEllipsis.size() <= 64);
  static_assert(sizeof " v4294967295 ()" + 2 * kEllipsis.size() <= 32);
  Buffer record{record_, kRecordCapacity};
  record.text("module ");
  head_field(record, module, kMaxModule);
  record.text("\nversion ");
  record.number(version.value);
  record.text("\nfile ");
  tail_field(record, file, kMaxFile);
  record.text("\nsha256 ");
  head_field(record, sha256, kMaxSha256);
  record.text("\n");
  record_size_ = record.size;

  Buffer label{label_, kLabelCapacity};
  head_field(label, module, kMaxModule);
  label.text(" v");
  label.number(version.value);
  label.text(" (");
  tail_field(label, base_name(file), kMaxFile);
  label.text(")");
  label_size_ = label.size;
}

}  // namespace molt::host
