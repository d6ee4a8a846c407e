// Descriptors passed to another process over a Unix socket (SCM_RIGHTS):
// what a hot restart hands to its successor (docs/hot-restart.md), and the
// same kernel sockets the clients hold, not copies.
//
// Descriptors go in batches of at most kMaxFdsPerBatch, each riding on a
// small frame (the batch's count), so that neither side's control buffer
// is ever truncated. The receiver takes them with MSG_CMSG_CLOEXEC (no
// descriptor leaks into a child before it is claimed), closes whatever
// arrives that it did not expect, and refuses a batch whose control data
// the kernel truncated (MSG_CTRUNC: descriptors lost on the way). Every
// step has a deadline: a peer that stops answering is an error, not a hang.
#pragma once

#include <chrono>
#include <cstddef>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "molt/host/common/file_checks.hpp"

namespace molt::host {

/// Descriptors per sendmsg, at most: below the kernel's SCM_MAX_FD (253),
/// as HAProxy does.
inline constexpr std::size_t kMaxFdsPerBatch = 252;

/// Waits until `socket` is ready for `events` (poll); why not by `deadline`
/// ("timed out <what>").
[[nodiscard]] std::optional<std::string> wait_for_socket(int socket, short events,
                                                         std::chrono::steady_clock::time_point deadline,
                                                         const char* what);

/// Sends `fds` over the connected Unix stream socket `socket` (which may be
/// non-blocking), in batches; the descriptors stay open here. Why not, by
/// `deadline`.
[[nodiscard]] std::optional<std::string> send_descriptors(int socket, std::span<const int> fds,
                                                          std::chrono::steady_clock::time_point deadline);

/// Receives exactly `count` descriptors sent by send_descriptors, into
/// `fds` (closed with it). Why not, by `deadline`: then every descriptor
/// received so far is closed and `fds` is empty.
[[nodiscard]] std::optional<std::string> receive_descriptors(int socket, std::size_t count,
                                                             std::vector<FileDescriptor>& fds,
                                                             std::chrono::steady_clock::time_point deadline);

}  // namespace molt::host
