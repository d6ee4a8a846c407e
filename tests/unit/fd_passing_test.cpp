// Descriptors passed over a Unix socket pair (common/fd_passing.hpp): the
// same kernel objects arrive, close-on-exec, in batches; whatever the
// receiver did not expect, or could not take whole, is closed and refused.
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <thread>

#include <catch2/catch.hpp>

#include "molt/host/common/fd_passing.hpp"

using namespace molt;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

std::size_t open_descriptors() {
  return static_cast<std::size_t>(std::distance(std::filesystem::directory_iterator("/proc/self/fd"),
                                                std::filesystem::directory_iterator()));
}

struct Pair {
  host::FileDescriptor a, b;
  Pair() {
    int fds[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0);
    a = host::FileDescriptor(fds[0]);
    b = host::FileDescriptor(fds[1]);
  }
};

/// `n` pipes' read ends (and their write ends, to keep them alive).
std::vector<host::FileDescriptor> pipes(std::size_t n) {
  std::vector<host::FileDescriptor> out;
  for (std::size_t i = 0; i < n; ++i) {
    int p[2];
    REQUIRE(::pipe2(p, O_CLOEXEC) == 0);
    out.emplace_back(p[0]);
    out.emplace_back(p[1]);
  }
  return out;
}

std::vector<int> raw(const std::vector<host::FileDescriptor>& fds) {
  std::vector<int> out;
  for (const auto& fd : fds) out.push_back(fd.get());
  return out;
}

ino_t inode(int fd) {
  struct stat st {};
  REQUIRE(::fstat(fd, &st) == 0);
  return st.st_ino;
}

}  // namespace

TEST_CASE("600 descriptors cross a socket pair in batches: the same kernel objects, close-on-exec", "[fd_passing]") {
  Pair pair;
  const auto sent = pipes(300);  // 600 descriptors: three batches
  std::vector<host::FileDescriptor> received;
  std::optional<std::string> receive_failure;
  std::thread receiver([&] { receive_failure = host::receive_descriptors(pair.b.get(), sent.size(), received, Clock::now() + 5s); });
  const auto send_failure = host::send_descriptors(pair.a.get(), raw(sent), Clock::now() + 5s);
  receiver.join();
  REQUIRE_FALSE(send_failure);
  REQUIRE_FALSE(receive_failure);
  REQUIRE(received.size() == sent.size());
  for (std::size_t i = 0; i < sent.size(); ++i) {
    INFO(i);
    CHECK(received[i].get() != sent[i].get());
    CHECK(inode(received[i].get()) == inode(sent[i].get()));
    CHECK((::fcntl(received[i].get(), F_GETFD) & FD_CLOEXEC) != 0);
  }
  // The same pipe: written on one side, read through the received copy.
  REQUIRE(::write(sent[1].get(), "x", 1) == 1);
  char c = 0;
  CHECK(::read(received[0].get(), &c, 1) == 1);
  CHECK(c == 'x');
}

TEST_CASE("a receiver that expected fewer descriptors refuses the batch and keeps none", "[fd_passing]") {
  Pair pair;
  const auto sent = pipes(5);
  REQUIRE_FALSE(host::send_descriptors(pair.a.get(), raw(sent), Clock::now() + 5s));
  const std::size_t before = open_descriptors();
  std::vector<host::FileDescriptor> received;
  const auto failure = host::receive_descriptors(pair.b.get(), 4, received, Clock::now() + 5s);
  REQUIRE(failure);
  CHECK(*failure == "a batch announced 10 descriptors, carried 10, and 4 were expected");
  CHECK(received.empty());
  CHECK(open_descriptors() == before);
}

TEST_CASE("a peer that closes or stays silent is an error by the deadline, not a hang", "[fd_passing]") {
  SECTION("closed") {
    Pair pair;
    pair.a = host::FileDescriptor();
    std::vector<host::FileDescriptor> received;
    CHECK(host::receive_descriptors(pair.b.get(), 5, received, Clock::now() + 5s) ==
          "the peer closed the socket after 0 of 5 descriptors");
  }
  SECTION("silent") {
    Pair pair;
    REQUIRE(::fcntl(pair.b.get(), F_SETFL, O_NONBLOCK) == 0);
    std::vector<host::FileDescriptor> received;
    const auto started = Clock::now();
    CHECK(host::receive_descriptors(pair.b.get(), 5, received, started + 100ms) == "timed out receiving descriptors");
    CHECK(Clock::now() - started < 2s);
  }
}

TEST_CASE("descriptors the receiver has no room for are refused as lost, and none is kept", "[fd_passing][hostile]") {
  Pair pair;
  const auto sent = pipes(50);  // 100 descriptors, one batch
  REQUIRE_FALSE(host::send_descriptors(pair.a.get(), raw(sent), Clock::now() + 5s));
  rlimit limit{};
  REQUIRE(::getrlimit(RLIMIT_NOFILE, &limit) == 0);
  const std::size_t before = open_descriptors();
  rlimit tight = limit;
  tight.rlim_cur = before + 20;  // room for 20 of the 100
  REQUIRE(::setrlimit(RLIMIT_NOFILE, &tight) == 0);
  std::vector<host::FileDescriptor> received;
  const auto failure = host::receive_descriptors(pair.b.get(), 100, received, Clock::now() + 5s);
  REQUIRE(::setrlimit(RLIMIT_NOFILE, &limit) == 0);
  REQUIRE(failure);
  CHECK(*failure == "descriptors were lost on the way (control data truncated): out of descriptors here?");
  CHECK(received.empty());
  CHECK(open_descriptors() == before);
}
