// GET /-/metrics: the host and its modules in Prometheus's text exposition
// format (version 0.0.4). docs/operations.md lists every metric; this file
// only renders them, from the table and the host's info, without sockets.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "molt/host/common/histogram.hpp"
#include "molt/host/runtime/host_info.hpp"
#include "molt/host/runtime/status.hpp"
#include "molt/host/runtime/module_table.hpp"

namespace molt::host {

/// The Content-Type of the text format.
inline constexpr std::string_view kMetricsContentType = "text/plain; version=0.0.4; charset=utf-8";

/// Every metric of the host and its modules, as the text format.
[[nodiscard]] std::string render_metrics(const ModuleTable& table, const HostInfo& host);

/// `value` as a label value between double quotes: backslash, double quote
/// and line feed escaped as \\, \" and \n; everything else as it is (UTF-8),
/// except bytes that are not valid UTF-8, written as utf8_safe() writes them
/// (0xff becomes \xff, then escaped: \\xff).
[[nodiscard]] std::string escape_label_value(std::string_view value);

/// Writes the text format, one metric family after another: family() first,
/// then that family's samples. Names and label names are the caller's
/// constants, written as they are; label values and help text are escaped.
class MetricsText {
 public:
  using Labels = std::vector<std::pair<std::string_view, std::string_view>>;

  /// "# HELP name help" and "# TYPE name type" (counter, gauge, histogram).
  void family(std::string_view name, std::string_view type, std::string_view help);
  void sample(std::string_view name, const Labels& labels, std::uint64_t value);
  void sample(std::string_view name, const Labels& labels, double value);
  /// A histogram of durations, in seconds: name_bucket{le} (cumulative, one
  /// per bound and "+Inf", which equals the count), name_sum and name_count.
  void histogram(std::string_view name, const Labels& labels, const DurationHistogram::Counts& counts);

  [[nodiscard]] const std::string& text() const noexcept { return out_; }
  [[nodiscard]] std::string take() noexcept { return std::move(out_); }

 private:
  void begin(std::string_view name, std::string_view suffix, const Labels& labels, std::string_view le = {});

  std::string out_;
};

/// A number as the text format writes it: the shortest decimal that reads
/// back as `value`, in fixed notation ("0.00025", "10") unless it is huge or
/// tiny ("1e+20").
[[nodiscard]] std::string format_metric_value(double value);

}  // namespace molt::host
