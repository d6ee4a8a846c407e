#include "molt/host/common/fd_passing.hpp"

#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <system_error>

namespace molt::host {
namespace {

using Clock = std::chrono::steady_clock;

/// The frame a batch rides on: its count, little-endian.
constexpr std::size_t kFrameBytes = 4;

std::string errno_text(int err) { return std::error_code(err, std::generic_category()).message(); }

/// One batch: its frame's bytes, the first carrying the descriptors.
std::optional<std::string> send_batch(int socket, std::span<const int> fds, Clock::time_point deadline) {
  unsigned char frame[kFrameBytes];
  const auto count = static_cast<std::uint32_t>(fds.size());
  for (std::size_t i = 0; i < kFrameBytes; ++i) frame[i] = static_cast<unsigned char>(count >> (8 * i));
  std::vector<char> control(CMSG_SPACE(sizeof(int) * fds.size()));
  std::size_t sent = 0;
  while (sent < kFrameBytes) {
    iovec iov{frame + sent, kFrameBytes - sent};
    msghdr message{};
    message.msg_iov = &iov;
    message.msg_iovlen = 1;
    if (sent == 0) {  // the descriptors go with the first byte, once
      message.msg_control = control.data();
      message.msg_controllen = control.size();
      cmsghdr* header = CMSG_FIRSTHDR(&message);
      header->cmsg_level = SOL_SOCKET;
      header->cmsg_type = SCM_RIGHTS;
      header->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
      std::memcpy(CMSG_DATA(header), fds.data(), sizeof(int) * fds.size());
    }
    const ssize_t n = ::sendmsg(socket, &message, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (auto why = wait_for_socket(socket, POLLOUT, deadline, "sending descriptors")) return why;
      continue;
    }
    if (n < 0) return "cannot send descriptors: " + errno_text(errno);
    sent += static_cast<std::size_t>(n);
  }
  return std::nullopt;
}

}  // namespace

std::optional<std::string> wait_for_socket(int socket, short events, Clock::time_point deadline, const char* what) {
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return std::string("timed out ") + what;
    pollfd p{socket, events, 0};
    const int n = ::poll(&p, 1, static_cast<int>(std::min<long long>(left, 1 << 30)));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return std::string("poll failed ") + what + ": " + errno_text(errno);
    if (n == 1) return std::nullopt;
  }
}


std::optional<std::string> send_descriptors(int socket, std::span<const int> fds, Clock::time_point deadline) {
  while (!fds.empty()) {
    const std::size_t batch = std::min(fds.size(), kMaxFdsPerBatch);
    if (auto why = send_batch(socket, fds.first(batch), deadline)) return why;
    fds = fds.subspan(batch);
  }
  return std::nullopt;
}

std::optional<std::string> receive_descriptors(int socket, std::size_t count, std::vector<FileDescriptor>& fds,
                                               Clock::time_point deadline) {
  fds.clear();
  const auto fail = [&](std::string why) {
    fds.clear();  // closes what came
    return std::optional<std::string>(std::move(why));
  };
  while (fds.size() < count) {
    const std::size_t expected = std::min(count - fds.size(), kMaxFdsPerBatch);
    unsigned char frame[kFrameBytes];
    std::size_t got = 0;
    bool first = true;
    std::vector<char> control(CMSG_SPACE(sizeof(int) * kMaxFdsPerBatch));
    std::size_t in_batch = 0;
    while (got < kFrameBytes) {
      iovec iov{frame + got, kFrameBytes - got};
      msghdr message{};
      message.msg_iov = &iov;
      message.msg_iovlen = 1;
      message.msg_control = control.data();
      message.msg_controllen = control.size();
      const ssize_t n = ::recvmsg(socket, &message, MSG_CMSG_CLOEXEC);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        if (auto why = wait_for_socket(socket, POLLIN, deadline, "receiving descriptors")) return fail(*why);
        continue;
      }
      if (n < 0) return fail("cannot receive descriptors: " + errno_text(errno));
      if (n == 0) return fail("the peer closed the socket after " + std::to_string(fds.size()) + " of " +
                              std::to_string(count) + " descriptors");
      // Whatever descriptors came are ours to close, expected or not.
      for (cmsghdr* header = CMSG_FIRSTHDR(&message); header != nullptr; header = CMSG_NXTHDR(&message, header)) {
        if (header->cmsg_level != SOL_SOCKET || header->cmsg_type != SCM_RIGHTS) continue;
        const std::size_t k = (header->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (std::size_t i = 0; i < k; ++i) {
          int fd = -1;
          std::memcpy(&fd, CMSG_DATA(header) + i * sizeof(int), sizeof(int));
          fds.emplace_back(fd);
          if (first) ++in_batch;
        }
      }
      if ((message.msg_flags & MSG_CTRUNC) != 0)
        return fail("descriptors were lost on the way (control data truncated): out of descriptors here?");
      if (!first && message.msg_controllen != 0) return fail("descriptors arrived in the middle of a batch's frame");
      first = false;
      got += static_cast<std::size_t>(n);
    }
    std::uint32_t announced = 0;
    for (std::size_t i = 0; i < kFrameBytes; ++i) announced |= std::uint32_t{frame[i]} << (8 * i);
    if (announced != in_batch || in_batch != expected)
      return fail("a batch announced " + std::to_string(announced) + " descriptors, carried " +
                  std::to_string(in_batch) + ", and " + std::to_string(expected) + " were expected");
  }
  return std::nullopt;
}

}  // namespace molt::host
