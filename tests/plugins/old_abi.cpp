// oldabi: one module built against two plugin ABIs, to prove the promise in
// docs/plugin-api.md ("ABI versions and the compatibility promise").
//
// Version 1 is compiled against the frozen ABI-5 headers (tests/plugins/abi5),
// version 2 against today's; the host must load, serve and upgrade between
// them, both ways, keeping the state. Each reports the ABI it was compiled
// against, so a test sees which headers won.
//
//   GET  /oldabi                -> {"version":N,"abi":A,"items":[...],"ticks":T}
//   POST /oldabi/add?item=X     adds an item
//   stream, one command a line: "ADD x" -> "OK <items>", "LIST" -> "v<N> abi<A> x,y,...",
//                               "QUIT" -> "BYE", then closes
//   config tick_ms=M            a host timer "tick" every M ms, counted in the state
//
// Its state has one schema, saved and read with save_one_schema and
// load_one_schema (which ABI 5's headers already had, as header-only helpers).
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include <boost/serialization/string.hpp>
#include <boost/serialization/vector.hpp>

#include "molt/module.hpp"

#ifdef OLDABI_EXPECT_ABI
// The frozen include directory must come before today's: otherwise v1 would
// silently be one more ABI-6 image and prove nothing.
static_assert(molt::api::kAbiVersion == OLDABI_EXPECT_ABI, "oldabi: built against the wrong plugin API headers");
#endif

namespace oldabi {

struct State {
  std::vector<std::string> items;
  std::uint64_t ticks = 0;
  template <class Archive>
  void serialize(Archive& ar, unsigned) {
    ar & items;
    ar & ticks;
  }
};

class OldAbi final : public molt::api::Module {
 public:
  static constexpr std::string_view kName = "oldabi";
  static constexpr molt::api::ModuleVersion kVersion{MOLT_BUILD_MODULE_VERSION};
  static constexpr molt::api::SchemaVersion kSchema{1};

  void start(molt::api::Context& context) override {
    const auto it = context.config().find("tick_ms");
    if (it != context.config().end()) context.set_timer("tick", std::chrono::milliseconds(std::stoi(it->second)));
  }

  molt::api::Response handle(const molt::api::Request& request) override {
    if (request.path == "/oldabi/add" && request.method == "POST") {
      state_.items.push_back(request.query_param("item").value_or(""));
    } else if (request.path != "/oldabi") {
      return molt::api::Response::json(R"({"error":"not found"})", 404);
    }
    std::string items;
    for (const auto& item : state_.items) items += (items.empty() ? "\"" : ",\"") + item + '"';
    return molt::api::Response::json(R"({"version":)" + std::to_string(kVersion.value) + R"(,"abi":)" +
                                     std::to_string(molt::api::kAbiVersion) + R"(,"items":[)" + items +
                                     R"(],"ticks":)" + std::to_string(state_.ticks) + "}");
  }

  std::size_t on_data(molt::api::ConnectionId, std::string_view input, molt::api::StreamOutput& out) override {
    std::size_t consumed = 0;
    for (auto end = input.find('\n', consumed); end != std::string_view::npos && out.has_room();
         end = input.find('\n', consumed)) {
      const std::string_view line = input.substr(consumed, end - consumed);
      consumed = end + 1;
      if (line.starts_with("ADD ")) {
        state_.items.emplace_back(line.substr(4));
        out.write("OK " + std::to_string(state_.items.size()) + "\n");
      } else if (line == "LIST") {
        std::string list;
        for (const auto& item : state_.items) list += (list.empty() ? "" : ",") + item;
        out.write("v" + std::to_string(kVersion.value) + " abi" + std::to_string(molt::api::kAbiVersion) + " " +
                  list + "\n");
      } else if (line == "QUIT") {
        out.write("BYE\n");
        out.close_after_write();
        break;
      } else {
        out.write("ERR unknown command\n");
      }
    }
    return consumed;
  }

  void on_timer(std::string_view name) override {
    if (name == "tick") ++state_.ticks;
  }

  void save_state(molt::api::StateWriter& out, const molt::api::SaveTarget& target) const override {
    molt::api::save_one_schema(out, target, kSchema, state_);
  }

  void load_state(molt::api::StateReader& in, const molt::api::Migration& migration) override {
    molt::api::load_one_schema(in, migration, kSchema, state_);
  }

 private:
  State state_;
};

}  // namespace oldabi

MOLT_MODULE(oldabi::OldAbi)
