// counter v1: one running total.
#include "molt/module.hpp"

#include "../common/http.hpp"
#include "../common/state.hpp"

namespace counter {

class CounterV1 final : public molt::api::Module {
 public:
  static constexpr std::string_view kName = "counter";
  static constexpr molt::api::ModuleVersion kVersion{1};
  static constexpr molt::api::SchemaVersion kSchema = StateV1::kSchema;

  void start(molt::api::Context& context) override { context.log().debug("v1 ready"); }

  molt::api::Response handle(const molt::api::Request& request) override {
    const Route r = route(request);
    if (r == Route::Increment) ++state_.total;
    if (r != Route::Show && r != Route::Increment) return route_error(r, request);
    return molt::api::Response::json(begin_answer(kVersion.value, state_.total) + "}\n");
  }

  void save_state(molt::api::StateWriter& out, const molt::api::SaveTarget& target) const override {
    molt::api::save_one_schema(out, target, kSchema, state_);
  }

  void load_state(molt::api::StateReader& in, const molt::api::Migration& migration) override {
    molt::api::load_one_schema(in, migration, kSchema, state_);
  }

 private:
  StateV1 state_;
};

}  // namespace counter

MOLT_MODULE(counter::CounterV1)
