// hello: the smallest useful Molt module. It greets, and remembers how many
// greetings it gave, across upgrades.
#include <molt/module.hpp>

#include "state_v1.hpp"

namespace hello {

using State = StateV1;  // the state: see state_v1.hpp

class Hello final : public molt::api::Module {
 public:
  static constexpr std::string_view kName = "hello";
  static constexpr molt::api::ModuleVersion kVersion{1};
  static constexpr molt::api::SchemaVersion kSchema{1};

  void start(molt::api::Context& context) override { log_ = &context.log(); }

  molt::api::Response handle(const molt::api::Request& request) override {
    if (request.path != "/hello") return molt::api::Response::text("not found\n", 404);
    const std::string name = request.query_param("name").value_or("world");
    if (name.size() > 64) return molt::api::Response::text("name too long\n", 400);
    const auto count = ++state_.greeted[name];
    log_->debug("greeted {} ({} times)", name, count);
    return molt::api::Response::text("Hello, " + name + "! (" + std::to_string(count) + ")\n");
  }

  void save_state(molt::api::StateWriter& out, const molt::api::SaveTarget& target) const override {
    molt::api::save_one_schema(out, target, kSchema, state_);
  }

  void load_state(molt::api::StateReader& in, const molt::api::Migration& migration) override {
    molt::api::load_one_schema(in, migration, kSchema, state_);
  }

 private:
  spdlog::logger* log_ = nullptr;
  State state_;
};

}  // namespace hello

MOLT_MODULE(hello::Hello)
