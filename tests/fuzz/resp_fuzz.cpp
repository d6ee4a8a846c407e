// libFuzzer target for kv's RESP parser (plugins/kv/common/resp.cpp), built
// and run by scripts/fuzz with ASan and UBSan. For every input it checks:
//
//  - no crash, no undefined behaviour, no leak, no read outside the input
//    (each call gets exactly the bytes the host would have, in a buffer of
//    that size);
//  - reading the input in arbitrary slices -- byte by byte, and in random
//    slices -- gives exactly the commands and the error that reading it
//    whole gives: the parser resumes, it never restarts or forgets;
//  - a command never takes more bytes than the input holds;
//  - an error line built from the input holds no CR or LF but its end.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "../../plugins/kv/common/resp.hpp"

namespace {

/// What reading one command gave.
struct Outcome {
  kv::Parse status = kv::Parse::Incomplete;
  std::size_t size = 0;
  std::vector<std::string> args;
  kv::ProtocolError error = kv::ProtocolError::None;
  char error_byte = 0;
  bool operator==(const Outcome&) const = default;
};

[[noreturn]] void broken(const char* property) {
  std::fprintf(stderr, "property broken: %s\n", property);
  std::abort();
}

/// Reads commands off `input` as kv::Server does, the host handing over
/// `available` bytes more each time a command is incomplete: returns every
/// command, then the error or the final Incomplete.
template <class NextSlice>
std::vector<Outcome> read_all(std::string_view input, const kv::ParseLimits& limits, NextSlice next_slice) {
  std::vector<Outcome> outcomes;
  kv::CommandParser parser;
  std::string arena;
  std::size_t consumed = 0;
  std::size_t available = std::min(input.size(), next_slice());
  while (true) {
    if (parser.idle()) arena.clear();
    // Exactly the unconsumed bytes, in a buffer of their size: ASan sees any read past them.
    const std::string pending(input.substr(consumed, available - consumed));
    const kv::Parse status = parser.parse(pending, limits, arena);
    if (status == kv::Parse::Incomplete && available < input.size()) {
      available = std::min(input.size(), available + next_slice());
      continue;
    }
    Outcome outcome;
    outcome.status = status;
    outcome.error = parser.error();
    outcome.error_byte = parser.error_byte();
    if (status == kv::Parse::Complete) {
      if (parser.size() == 0 || parser.size() > pending.size()) broken("a command takes 1 to input.size() bytes");
      outcome.size = parser.size();
      const kv::ArgList args = parser.args(pending, arena);
      for (std::size_t i = 0; i < args.size(); ++i) outcome.args.emplace_back(args[i]);
      consumed += parser.size();
      parser.reset();
    } else if (status == kv::Parse::Error && parser.error() == kv::ProtocolError::None) {
      broken("an error names its reason");
    }
    outcomes.push_back(std::move(outcome));
    if (status != kv::Parse::Complete || consumed == input.size()) break;
  }
  return outcomes;
}

/// The error line kv::Reply writes for `parts`.
struct LineOutput final : molt::api::StreamOutput {
  std::string bytes;
  void write(std::string_view data) override { bytes.append(data); }
  void close_after_write() override {}
  bool has_room() const override { return true; }
};

void check_error_line(std::string_view input) {
  LineOutput out;
  kv::Reply reply(out);
  const std::size_t half = input.size() / 2;
  reply.error({"ERR x '", kv::c_string(input.substr(0, half), 128), "' ", input.substr(half)});
  const std::string& line = out.bytes;
  if (line.size() < 3 || line.front() != '-' || line.compare(line.size() - 2, 2, "\r\n") != 0)
    broken("an error line is '-' ... \"\\r\\n\"");
  if (line.find_first_of(std::string_view("\r\n\0", 3)) != line.size() - 2) broken("no CR, LF or NUL inside an error line");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  // A seed from the input picks the bulk limit and the random slicing, so a
  // crash reproduces from its input alone.
  std::uint64_t seed = 1469598103934665603ull;
  for (const char c : input) seed = (seed ^ static_cast<unsigned char>(c)) * 1099511628211ull;
  kv::ParseLimits limits;
  static constexpr std::size_t kBulkLimits[] = {0, 3, 100, 512u << 20};
  limits.max_bulk_bytes = kBulkLimits[seed % 4];
  // Lines of 64 KiB would need inputs too long to fuzz fast; the same rule
  // is reached with shorter lines.
  static constexpr std::size_t kLineLimits[] = {1, 8, 64, kv::kMaxLineBytes};
  limits.max_line_bytes = kLineLimits[(seed >> 8) % 4];

  const auto whole = read_all(input, limits, [&] { return input.size(); });
  if (input.size() <= 1024) {  // each call copies what is pending: quadratic, so short inputs only
    const auto bytewise = read_all(input, limits, [] { return std::size_t{1}; });
    if (bytewise != whole) broken("byte-by-byte reading gives what whole reading gives");
  }
  std::uint64_t state = seed | 1;
  const auto random = read_all(input, limits, [&] {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return static_cast<std::size_t>(state % 64) + 1;
  });
  if (random != whole) broken("reading in random slices gives what whole reading gives");
  check_error_line(input);
  return 0;
}
