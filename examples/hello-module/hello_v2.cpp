// hello v2: greets like v1, and also remembers when it last greeted each
// name (GET /hello/greeted). Its state has a new layout, schema 2. Being the
// newer version, it owns both directions: it reads v1's schema 1 on an
// upgrade and writes it on a downgrade (state_v1.hpp). hello.cpp (v1) stays
// as released.
#include <chrono>
#include <cstdint>
#include <map>
#include <string>

#include <boost/serialization/map.hpp>
#include <boost/serialization/string.hpp>

#include <molt/json_text.hpp>
#include <molt/module.hpp>

#include "state_v1.hpp"

namespace hello {

/// Schema 2: per name, how often and when it was last greeted.
struct Greeted {
  std::uint64_t count = 0;
  std::int64_t last_unix_s = 0;  ///< seconds since 1970; 0: not known (greeted by v1 only)
  template <class Archive>
  void serialize(Archive& ar, unsigned /*version*/) {
    ar & count & last_unix_s;
  }
};

struct StateV2 {
  std::map<std::string, Greeted> greeted;  // name -> greetings
  template <class Archive>
  void serialize(Archive& ar, unsigned /*version*/) {
    ar & greeted;
  }
};

class Hello final : public molt::api::Module {
 public:
  static constexpr std::string_view kName = "hello";
  static constexpr molt::api::ModuleVersion kVersion{2};
  static constexpr molt::api::SchemaVersion kSchema{2};
  static constexpr molt::api::SchemaVersion kSchemaV1{1};

  void start(molt::api::Context& context) override { log_ = &context.log(); }

  molt::api::Response handle(const molt::api::Request& request) override {
    if (request.path == "/hello/greeted") return greeted();
    if (request.path != "/hello") return molt::api::Response::text("not found\n", 404);
    const std::string name = request.query_param("name").value_or("world");
    if (name.size() > 64) return molt::api::Response::text("name too long\n", 400);
    Greeted& entry = state_.greeted[name];
    ++entry.count;
    entry.last_unix_s =
        std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
    log_->debug("greeted {} ({} times)", name, entry.count);
    return molt::api::Response::text("Hello, " + name + "! (" + std::to_string(entry.count) + ")\n");
  }

  void save_state(molt::api::StateWriter& out, const molt::api::SaveTarget& target) const override {
    if (target.schema == kSchema) return out.write(state_);
    if (target.schema != kSchemaV1) throw molt::api::UnknownSchema(target.schema, kSchema);
    // Downgrade to v1: the counts; v1 has nowhere to keep the times.
    StateV1 down;
    for (const auto& [name, entry] : state_.greeted) down.greeted[name] = entry.count;
    out.write(down);
  }

  void load_state(molt::api::StateReader& in, const molt::api::Migration& migration) override {
    if (migration.from_schema == kSchema) return in.read(state_);
    if (migration.from_schema != kSchemaV1) throw molt::api::UnknownSchema(migration.from_schema, kSchema);
    // Upgrade from v1: the counts; v1 did not record when, so no time yet.
    StateV1 up;
    in.read(up);
    state_.greeted.clear();
    for (const auto& [name, count] : up.greeted) state_.greeted[name] = Greeted{count, 0};
  }

 private:
  /// {"module":"hello","version":2,"names":{"Ada":{"count":2,"last_greeted":1767225600}}};
  /// last_greeted is null for a name only v1 greeted.
  molt::api::Response greeted() const {
    std::string body = R"({"module":"hello","version":2,"names":{)";
    const char* separator = "";
    for (const auto& [name, entry] : state_.greeted) {
      body += separator;
      body += molt::api::json_string(name);
      body += R"(:{"count":)" + std::to_string(entry.count) + R"(,"last_greeted":)";
      body += entry.last_unix_s == 0 ? std::string("null") : std::to_string(entry.last_unix_s);
      body += '}';
      separator = ",";
    }
    body += "}}\n";
    return molt::api::Response::json(std::move(body));
  }

  spdlog::logger* log_ = nullptr;
  StateV2 state_;
};

}  // namespace hello

MOLT_MODULE(hello::Hello)
