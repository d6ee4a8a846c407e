// stash: a test module whose state is one object (StatefulModule), so that
// versions built from the same state definition hand it over in memory.
// Versions 1 and 2 share the definition; v3 lists one more header in
// STATE_HEADERS, so its fingerprint differs and its state is serialized.
//
// HTTP:   GET /stash -> {"version","items","ticks","state_at"}; POST /stash/put?k=&v=; POST /stash/fill?n=
// Stream: lines "SET k v", "GET k", "NAME n", "WHO", "QUIT"; each answered with one line.
// Timer:  config tick_ms=N sets timer "tick", which counts into the state.
// Start:  config start_ms=N makes start() take N ms; start_fails makes it throw then.
#include <charconv>
#include <cstdio>
#include <stdexcept>
#include <thread>

#include "molt/module.hpp"
#include "stash_state.hpp"

namespace stash {

class Stash final : public molt::api::StatefulModule<State> {
 public:
  static constexpr std::string_view kName = "stash";
  static constexpr molt::api::ModuleVersion kVersion{MOLT_BUILD_MODULE_VERSION};
  static constexpr molt::api::SchemaVersion kSchema{1};

  void start(molt::api::Context& context) override {
    if (auto it = context.config().find("tick_ms"); it != context.config().end())
      context.set_timer("tick", std::chrono::milliseconds(std::stoi(it->second)));
    // A timer due while start() still runs (tests of the slot's start).
    if (auto it = context.config().find("start_ms"); it != context.config().end())
      std::this_thread::sleep_for(std::chrono::milliseconds(std::stoi(it->second)));
    if (context.config().count("start_fails") != 0) throw std::runtime_error("start_fails is set");
  }

  molt::api::Response handle(const molt::api::Request& request) override {
    if (request.path == "/stash/put") {
      state().items[request.query_param("k").value_or("")] = request.query_param("v").value_or("");
    } else if (request.path == "/stash/fill") {
      const auto n = std::stoul(request.query_param("n").value_or("0"));
      for (unsigned long i = 0; i < n; ++i) state().items["fill:" + std::to_string(i)] = "value";
    } else if (request.path != "/stash") {
      return molt::api::Response::json(R"({"error":"not found"})", 404);
    }
    char address[32];
    std::snprintf(address, sizeof address, "%p", static_cast<const void*>(&state()));
    return molt::api::Response::json(R"({"version":)" + std::to_string(kVersion.value) + R"(,"items":)" +
                                     std::to_string(state().items.size()) + R"(,"ticks":)" +
                                     std::to_string(state().ticks) + R"(,"state_at":")" + address + "\"}");
  }

  std::size_t on_data(molt::api::ConnectionId connection, std::string_view input, molt::api::StreamOutput& out) override {
    std::size_t consumed = 0;
    while (true) {
      const auto end = input.find('\n', consumed);
      if (end == std::string_view::npos) return consumed;  // the rest waits for more bytes
      const std::string_view line = input.substr(consumed, end - consumed);
      consumed = end + 1;
      const auto space = line.find(' ');
      const std::string_view verb = line.substr(0, space);
      const std::string_view args = space == std::string_view::npos ? std::string_view{} : line.substr(space + 1);
      if (verb == "SET") {
        const auto split = args.find(' ');
        state().items[std::string(args.substr(0, split))] = std::string(args.substr(split + 1));
        out.write("OK\n");
      } else if (verb == "GET") {
        const auto it = state().items.find(std::string(args));
        out.write(it == state().items.end() ? std::string_view("(nil)") : std::string_view(it->second));
        out.write(" v" + std::to_string(kVersion.value) + "\n");
      } else if (verb == "NAME") {
        state().names[connection] = std::string(args);
        out.write("OK\n");
      } else if (verb == "WHO") {
        out.write(state().names[connection] + "\n");
      } else if (verb == "QUIT") {
        out.write("BYE\n");
        out.close_after_write();
        return consumed;
      } else {
        out.write("ERR unknown\n");
      }
    }
  }

  void on_disconnect(molt::api::ConnectionId connection) override { state().names.erase(connection); }

  void on_timer(std::string_view name) override {
    if (name == "tick") ++state().ticks;
  }

  void save_state(molt::api::StateWriter& out, const molt::api::SaveTarget& target) const override {
    molt::api::save_one_schema(out, target, kSchema, state());
  }

  void load_state(molt::api::StateReader& in, const molt::api::Migration& migration) override {
    molt::api::load_one_schema(in, migration, kSchema, state());
  }
};

}  // namespace stash

MOLT_MODULE(stash::Stash)
