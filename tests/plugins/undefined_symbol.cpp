// A module image that cannot be loaded: it needs a symbol nothing defines,
// which dlopen(RTLD_NOW) reports.
#include "molt/module.hpp"

extern "C" int molt_test_symbol_defined_nowhere();

namespace {
class Unloadable final : public molt::api::Module {
 public:
  static constexpr std::string_view kName = "probe";
  static constexpr molt::api::ModuleVersion kVersion{7};
  static constexpr molt::api::SchemaVersion kSchema{1};
  void start(molt::api::Context&) override { molt_test_symbol_defined_nowhere(); }
  molt::api::Response handle(const molt::api::Request&) override { return {}; }
  void save_state(molt::api::StateWriter&, const molt::api::SaveTarget&) const override {}
  void load_state(molt::api::StateReader&, const molt::api::Migration&) override {}
};
}  // namespace

MOLT_MODULE(Unloadable)
