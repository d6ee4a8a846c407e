#include "netns.hpp"

#include <fcntl.h>
#include <sched.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

#include "process.hpp"

namespace molt::test {

std::optional<NetnsTopology> NetnsTopology::create(std::string& why) {
  if (::geteuid() != 0) {
    why = "not root";
    return std::nullopt;
  }
  NetnsTopology t(20 + ::getpid() % 200);
  const auto run = [&](std::vector<std::string> argv) {
    const auto result = run_process(argv);
    if (result.exit_code == 0) return true;
    std::string line;
    for (const auto& a : argv) line += a + ' ';
    why = line + "failed: " + result.err;
    return false;
  };
  const std::string prefix = "molt-" + std::to_string(::getpid()) + "-";
  for (const char which : {'a', 'b', 'c'}) {
    if (!run({"ip", "netns", "add", prefix + which})) return std::nullopt;
    t.names_.push_back(prefix + which);
    if (!run({"ip", "-n", prefix + which, "link", "set", "lo", "up"})) return std::nullopt;
  }
  const std::string c = prefix + 'c';
  if (!run({"ip", "-n", c, "link", "add", "br0", "type", "bridge"}) ||
      !run({"ip", "-n", c, "addr", "add", t.ip('c') + "/24", "dev", "br0"}) ||
      !run({"ip", "-n", c, "link", "set", "br0", "up"}))
    return std::nullopt;
  for (const char which : {'a', 'b'}) {
    const std::string ns = prefix + which, peer = std::string("v") + which;
    if (!run({"ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", peer, "netns", c}) ||
        !run({"ip", "-n", ns, "addr", "add", t.ip(which) + "/24", "dev", "eth0"}) ||
        !run({"ip", "-n", ns, "link", "set", "eth0", "up"}) ||
        !run({"ip", "-n", c, "link", "set", peer, "master", "br0"}) || !run({"ip", "-n", c, "link", "set", peer, "up"}))
      return std::nullopt;
  }
  return t;
}

NetnsTopology::~NetnsTopology() {
  for (const auto& name : names_) (void)run_process({"ip", "netns", "del", name});  // its links go with it
}

std::string NetnsTopology::name(char which) const { return "molt-" + std::to_string(::getpid()) + "-" + which; }

std::string NetnsTopology::ip(char which) const {
  return "10.77." + std::to_string(subnet_) + "." + (which == 'a' ? "1" : which == 'b' ? "2" : "3");
}

std::vector<std::string> NetnsTopology::exec(char which) const { return {"ip", "netns", "exec", name(which)}; }

void NetnsTopology::enter(char which) const {
  const std::string path = "/run/netns/" + name(which);
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw std::runtime_error(path + ": " + std::strerror(errno));
  const int rc = ::setns(fd, CLONE_NEWNET);
  ::close(fd);
  if (rc != 0) throw std::runtime_error("setns " + path + ": " + std::strerror(errno));
}

}  // namespace molt::test
