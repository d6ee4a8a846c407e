#include "molt/host/common/crash_record.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <map>
#include <system_error>
#include <tuple>

#include "molt/host/common/atomic_file.hpp"

namespace molt::host {
namespace fs = std::filesystem;
namespace {

Error record_error(const fs::path& path, std::string reason) {
  return Error{{}, {}, path.string(), Phase::Start, "crash record: " + std::move(reason)};
}

/// The field as it was before escape_record_field; an escape it does not
/// write is kept as it is.
std::string unescape(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '\\' || i + 1 == text.size()) {
      out += text[i];
      continue;
    }
    const char next = text[i + 1];
    if (next == '\\' || next == 'n' || next == 'r') {
      out += next == '\\' ? '\\' : next == 'n' ? '\n' : '\r';
      ++i;
    } else if (next == 'x' && i + 3 < text.size() && std::isxdigit(static_cast<unsigned char>(text[i + 2])) &&
               std::isxdigit(static_cast<unsigned char>(text[i + 3]))) {
      out += static_cast<char>(std::stoi(std::string(text.substr(i + 2, 2)), nullptr, 16));
      i += 3;
    } else {
      out += text[i];
    }
  }
  return out;
}

template <class Int>
std::optional<Int> parse_int(std::string_view text, int base = 10) {
  Int value{};
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value, base);
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

std::string_view base_name(std::string_view path) {
  const auto slash = path.rfind('/');
  return slash == std::string_view::npos ? path : path.substr(slash + 1);
}

std::string hex_address(std::uint64_t address) {
  char text[24];
  std::snprintf(text, sizeof text, "0x%llx", static_cast<unsigned long long>(address));
  return text;
}

/// The record's header, key to value (still escaped), and its backtrace.
struct Lines {
  std::map<std::string, std::string, std::less<>> fields;
  std::vector<std::string> backtrace;
};

Lines split(std::string_view contents) {
  Lines lines;
  bool in_backtrace = false;
  while (!contents.empty()) {
    const auto end = contents.find('\n');
    std::string_view line = contents.substr(0, end);
    contents.remove_prefix(end == std::string_view::npos ? contents.size() : end + 1);
    if (in_backtrace) {
      if (!line.empty()) lines.backtrace.emplace_back(line);
      continue;
    }
    if (line == "backtrace") {
      in_backtrace = true;
      continue;
    }
    const auto space = line.find(' ');
    if (space == std::string_view::npos) continue;  // a line cut short
    lines.fields.emplace(std::string(line.substr(0, space)), std::string(line.substr(space + 1)));
  }
  return lines;
}

}  // namespace

std::string CrashRecord::cause_text() const {
  if (cause == CrashCause::Exit) return "exit(" + std::to_string(exit_status) + ")";
  return signal_name.empty() ? "signal " + std::to_string(signal) : signal_name;
}

Result<std::optional<CrashRecord>> read_crash_record(const fs::path& path) {
  std::error_code ec;
  // A dangling link is not "no record": read_file refuses it, like a FIFO.
  if (!fs::exists(fs::symlink_status(path, ec))) return std::optional<CrashRecord>();
  std::string contents;
  if (auto why = read_file(path, kMaxCrashRecordBytes, contents, Symlinks::Refuse)) return record_error(path, *why);
  const auto first_line = std::string_view(contents).substr(0, contents.find('\n'));
  if (first_line != kCrashRecordFormat)
    return record_error(path, "format '" + std::string(first_line.substr(0, 40)) + "' unknown, this moltd reads '" +
                                  std::string(kCrashRecordFormat) + "'");
  const Lines lines = split(std::string_view(contents).substr(first_line.size()));

  std::string missing;
  auto field = [&](std::string_view key) -> std::optional<std::string_view> {
    const auto found = lines.fields.find(key);
    if (found != lines.fields.end()) return std::string_view(found->second);
    if (missing.empty()) missing = std::string(key);
    return std::nullopt;
  };
  auto number = [&](std::string_view key) -> std::optional<std::int64_t> {
    const auto text = field(key);
    if (!text) return std::nullopt;
    const auto value = parse_int<std::int64_t>(*text);
    if (!value && missing.empty()) missing = std::string(key);
    return value;
  };
  auto malformed = [&] { return record_error(path, "no valid '" + missing + "' line (cut short by a second crash?)"); };

  CrashRecord record;
  const auto time_ms = number("time_ms");
  const auto pid = number("pid");
  const auto tid = number("tid");
  const auto cause = field("cause");
  const auto in = field("in");
  if (!time_ms || !pid || !tid || !cause || !in) return malformed();
  record.time_ms = *time_ms;
  record.pid = *pid;
  record.tid = *tid;
  if (*cause == "signal") {
    record.cause = CrashCause::Signal;
    const auto signal = field("signal");
    const auto code = number("code");
    if (!signal || !code) return malformed();
    const auto space = signal->find(' ');
    const auto signal_number = parse_int<int>(signal->substr(0, space));
    if (!signal_number) return record_error(path, "no valid 'signal' line");
    record.signal = *signal_number;
    if (space != std::string_view::npos) record.signal_name = unescape(signal->substr(space + 1));
    record.code = static_cast<int>(*code);
    if (const auto address = lines.fields.find("address"); address != lines.fields.end()) {
      const std::string_view text = address->second;
      const auto value = text.starts_with("0x") ? parse_int<std::uint64_t>(text.substr(2), 16) : std::nullopt;
      if (!value) return record_error(path, "no valid 'address' line");
      record.address = *value;
    }
    if (lines.fields.contains("sender")) {
      const auto sender = number("sender");
      if (!sender) return malformed();
      record.sender = *sender;
    }
  } else if (*cause == "exit") {
    record.cause = CrashCause::Exit;
    const auto status = number("status");
    if (!status) return malformed();
    record.exit_status = static_cast<int>(*status);
  } else {
    return record_error(path, "cause '" + unescape(cause->substr(0, 40)) + "' unknown");
  }

  if (*in == "module") {
    const auto module = field("module");
    const auto version = number("version");
    const auto file = field("file");
    const auto sha256 = field("sha256");
    const auto hook = field("hook");
    if (!module || !version || !file || !sha256 || !hook) return malformed();
    record.module = CrashedModule{unescape(*module), api::ModuleVersion{static_cast<std::uint32_t>(*version)},
                                  unescape(*file), unescape(*sha256), unescape(*hook)};
  } else if (*in != "host") {
    return record_error(path, "'in " + unescape(in->substr(0, 40)) + "' unknown (module or host)");
  }
  record.backtrace = lines.backtrace;
  return std::optional<CrashRecord>(std::move(record));
}

std::string crash_line(const CrashRecord& record) {
  std::string line = "the previous run crashed in ";
  if (record.module) {
    const CrashedModule& m = *record.module;
    constexpr std::size_t kShownDigits = 12;
    line += m.module + " v" + std::to_string(m.version.value) + " (" + std::string(base_name(m.file)) + ", sha256 " +
            (m.sha256.size() > kShownDigits ? m.sha256.substr(0, kShownDigits) + "…" : m.sha256) + ") in " + m.hook;
  } else {
    line += "the host (no module code on the crashing thread)";
  }
  line += ": " + record.cause_text();
  if (record.cause == CrashCause::Signal && record.address && !record.module) line += " at " + hex_address(*record.address);
  if (record.cause == CrashCause::Signal && record.sent_by_another_process())
    line += " (sent by pid " + std::to_string(*record.sender) + ")";
  return line;
}

Result<fs::path> move_crash_record_aside(const fs::path& run_dir, std::int64_t time_ms) {
  const fs::path from = crash_record_path(run_dir);
  const fs::path dir = crash_archive_dir(run_dir);
  auto fail = [&](std::string reason) { return record_error(from, std::move(reason)); };
  std::error_code ec;
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST)
    return fail("cannot create " + dir.string() + ": " + std::error_code(errno, std::generic_category()).message());
  if (!fs::is_directory(fs::symlink_status(dir, ec)))
    return fail(dir.string() + " is not a directory (links are not followed here)");

  // crash-<time_ms>.record, or crash-<time_ms>-<n>.record: (time, n) orders them.
  const std::string stem = "crash-" + std::to_string(time_ms);
  fs::path to = dir / (stem + ".record");
  for (int n = 2; fs::exists(fs::symlink_status(to, ec)); ++n) to = dir / (stem + "-" + std::to_string(n) + ".record");
  if (::rename(from.c_str(), to.c_str()) != 0)
    return fail("cannot move it to " + to.string() + ": " + std::error_code(errno, std::generic_category()).message());
  for (const fs::path& synced : {dir, run_dir}) {  // both directories changed
    if (const int fd = ::open(synced.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); fd >= 0) {
      ::fsync(fd);
      ::close(fd);
    }
  }

  struct Kept {
    std::int64_t time;
    int n;
    fs::path path;
  };
  std::vector<Kept> kept;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (!name.starts_with("crash-") || !name.ends_with(".record")) continue;
    const std::string_view middle = std::string_view(name).substr(6, name.size() - 6 - 7);
    const auto dash = middle.find('-');
    const auto time = parse_int<std::int64_t>(middle.substr(0, dash));
    const auto n = dash == std::string_view::npos ? std::optional<int>(1) : parse_int<int>(middle.substr(dash + 1));
    if (time && n) kept.push_back({*time, *n, it->path()});
  }
  if (kept.size() > kKeptCrashRecords) {
    std::sort(kept.begin(), kept.end(), [](const Kept& a, const Kept& b) { return std::tie(a.time, a.n) < std::tie(b.time, b.n); });
    for (std::size_t i = 0; i + kKeptCrashRecords < kept.size(); ++i) fs::remove(kept[i].path, ec);
  }
  return to;
}

}  // namespace molt::host
