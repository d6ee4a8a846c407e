// ControlHandler without sockets: whatever a command throws, and whatever
// bytes a path holds, the answer is one reply that json_text can write.
#include <catch2/catch.hpp>

#include <filesystem>
#include <stdexcept>

#include "control_host.hpp"
#include "molt/host/common/json_text.hpp"

using namespace molt;
using namespace std::string_literals;
using Json = nlohmann::json;

namespace {

/// A host with a counter v1 running, its handler, and no sockets.
struct Host : test::ControlHost {
  Host() { REQUIRE(table.start(host::ModuleConfig{"counter", test::plugin_path("counter", 1), {}, {}})); }

  /// The reply to `request`, as the control server writes it and a client reads it.
  Json ask(const Json& request) {
    const host::ControlReply reply = handler.handle(host::json_text(request));
    return Json::parse(host::json_text(reply.body));
  }
};

}  // namespace

TEST_CASE("a command that throws is an error reply naming the command and the reason, and is marked for the log",
          "[control]") {
  Host h;
  h.info.listeners = []() -> std::vector<host::ListenerInfo> { throw std::runtime_error("listeners gone"); };
  const host::ControlReply reply = h.handler.handle(R"({"command":"status"})");
  CHECK(reply.body == Json{{"ok", false}, {"error", "status: failed: listeners gone"}});
  CHECK(reply.exception == "listeners gone");
  // The handler still answers afterwards.
  h.info.listeners = nullptr;
  const host::ControlReply status = h.handler.handle(R"({"command":"status"})");
  CHECK(status.body["ok"] == true);
  CHECK(status.exception.empty());
}

TEST_CASE("members of the wrong type are error replies, not exceptions", "[control]") {
  Host h;
  CHECK(h.ask({{"command", "jobs"}, {"action", 5}}) ==
        Json{{"ok", false}, {"error", "jobs: \"action\" must be a string"}});
  CHECK(h.ask({{"command", "upgrade"}, {"script", ""}, {"down", "yes"}}) ==
        Json{{"ok", false}, {"error", "upgrade: \"down\" must be true or false"}});
  CHECK(h.ask({{"command", "upgrade"}, {"script", ""}, {"source", 1}}) ==
        Json{{"ok", false}, {"error", "upgrade: \"source\" must be a string"}});
  CHECK(h.ask({{"command", "reload"}, {"module", "counter"}, {"file_hex", "xyz"}}) ==
        Json{{"ok", false}, {"error", "reload: file_hex must be a path's bytes in hex, two digits a byte"}});
  CHECK(h.ask({{"command", "restore"}, {"module", "counter"}}) ==
        Json{{"ok", false}, {"error", "restore: needs \"file\""}});
  // "progress" of the wrong type is ignored, as when the handler has no listener.
  int lines = 0;
  const auto reply = h.handler.handle(R"({"command":"status","progress":"yes"})", [&](const Json&) { ++lines; });
  CHECK(reply.body["ok"] == true);
  CHECK(lines == 0);
}

TEST_CASE("a reload to a path that is not UTF-8 arrives byte for byte and is refused in a reply json_text writes",
          "[control]") {
  Host h;
  const std::filesystem::path bad = h.dir.path() / "molt-\xff" / "counter-2.so";
  Json request{{"command", "reload"}, {"module", "counter"}};
  host::put_file(request, bad);
  REQUIRE(request.contains("file_hex"));
  const host::ControlReply reply = h.handler.handle(host::json_text(request));
  CHECK(reply.exception.empty());
  CHECK(reply.body["report"]["to_file"].get<std::string>() == bad.native());  // the bytes moltctl had
  CHECK_THROWS_AS(reply.body.dump(), Json::type_error);                        // what aborted moltd
  const Json sent = Json::parse(host::json_text(reply.body));
  CHECK(sent["ok"] == false);
  CHECK(sent["report"]["outcome"] == "refused");
  CHECK(sent["report"]["to_file"] == host::utf8_safe(bad.native()));
  CHECK_THAT(sent["error"].get<std::string>(), Catch::Contains("molt-\\xff/counter-2.so"));
  // The refusal is in the history, which status and history write as well.
  const Json history = h.ask({{"command", "history"}});
  REQUIRE(history["reports"].size() == 1);
  CHECK_THAT(history["reports"][0]["error"].get<std::string>(), Catch::Contains("molt-\\xff"));
  CHECK(h.ask({{"command", "status"}})["modules"][0]["version"] == 1);
}
