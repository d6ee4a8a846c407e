// counter v2: a count per key. Reads v1's state on upgrade (the old total goes
// under one key) and writes it on downgrade (the keys are summed).
#include <limits>

#include "molt/module.hpp"

#include "../common/http.hpp"
#include "../common/state.hpp"

namespace counter {

class CounterV2 final : public molt::api::Module {
 public:
  static constexpr std::string_view kName = "counter";
  static constexpr molt::api::ModuleVersion kVersion{2};
  static constexpr molt::api::SchemaVersion kSchema = StateV2::kSchema;
  static constexpr std::size_t kMaxKeyBytes = 200;

  void start(molt::api::Context& context) override {
    context_ = &context;
    if (auto it = context.config().find("default_key"); it != context.config().end()) default_key_ = it->second;
  }

  molt::api::Response handle(const molt::api::Request& request) override {
    const Route r = route(request);
    if (r != Route::Show && r != Route::Increment) return route_error(r, request);
    const std::string key = request.query_param("key").value_or(default_key_);
    if (key.empty() || key.size() > kMaxKeyBytes)
      return molt::api::Response::json(R"({"error":"key must be 1 to 200 bytes"})", 400);
    if (r == Route::Increment) ++state_.counts[key];

    std::string body = begin_answer(kVersion.value, total());
    body += R"(,"counts":{)";
    const char* separator = "";
    for (const auto& [name, count] : state_.counts) {
      body += separator;
      body += json_string(name);
      body += ':';
      body += std::to_string(count);
      separator = ",";
    }
    body += '}';
    if (request.query_param("key")) {
      const auto it = state_.counts.find(key);
      body += ",\"key\":";
      body += json_string(key);
      body += ",\"count\":";
      body += std::to_string(it == state_.counts.end() ? 0 : it->second);
    }
    body += "}\n";
    return molt::api::Response::json(std::move(body));
  }

  void save_state(molt::api::StateWriter& out, const molt::api::SaveTarget& target) const override {
    if (target.schema == kSchema) return out.write(state_);
    if (target.schema != StateV1::kSchema) throw molt::api::UnknownSchema(target.schema, kSchema);
    // Downgrade to v1: one total, the sum of every key.
    StateV1 down;
    for (const auto& [key, count] : state_.counts) {
      if (count > std::numeric_limits<std::uint64_t>::max() - down.total)
        throw molt::api::MigrationRefused("the sum of all counts does not fit v1's 64-bit total");
      down.total += count;
    }
    out.write(down);
  }

  void load_state(molt::api::StateReader& in, const molt::api::Migration& migration) override {
    if (migration.from_schema == kSchema) return in.read(state_);
    if (migration.from_schema != StateV1::kSchema) throw molt::api::UnknownSchema(migration.from_schema, kSchema);
    // Upgrade from v1: the old total goes under `default_key` (an extra
    // argument of the upgrade, else the configured default key).
    std::string key = default_key_;
    if (auto it = migration.extra.find("default_key"); it != migration.extra.end()) key = it->second;
    if (key.empty() || key.size() > kMaxKeyBytes)
      throw molt::api::BadExtraArgument("default_key", "must be 1 to 200 bytes");
    StateV1 up;
    in.read(up);
    state_.counts = {{key, up.total}};
    context_->log().info("migrated v{} total {} to key '{}'", migration.from_version.value, up.total, key);
  }

 private:
  std::uint64_t total() const {
    std::uint64_t sum = 0;
    for (const auto& entry : state_.counts) sum += entry.second;
    return sum;
  }

  molt::api::Context* context_ = nullptr;
  std::string default_key_ = "default";
  StateV2 state_;
};

}  // namespace counter

MOLT_MODULE(counter::CounterV2)
