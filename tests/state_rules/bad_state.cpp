// Compiled by ctest with one of BAD_FUNCTION, BAD_POINTER, BAD_VIRTUAL,
// BAD_UNKNOWN defined: each must fail to compile with the state rules'
// message (tests/CMakeLists.txt checks the compiler's output).
#include <functional>
#include <map>
#include <string>

#include "molt/module.hpp"

struct Inner {
#ifdef BAD_VIRTUAL
  virtual ~Inner() = default;
#endif
  int value = 0;
  template <class Archive>
  void serialize(Archive& ar, unsigned) {
    ar & value;
  }
};

struct Opaque {};  // no serialize(): the checker cannot see inside

struct State {
  std::map<std::string, Inner> items;
#ifdef BAD_FUNCTION
  std::function<void()> callback;
#endif
#ifdef BAD_POINTER
  const char* label = "points into the image";
#endif
#ifdef BAD_UNKNOWN
  Opaque opaque;
#endif
  template <class Archive>
  void serialize(Archive& ar, unsigned) {
    ar & items;
#ifdef BAD_FUNCTION
    ar & callback;
#endif
#ifdef BAD_POINTER
    ar & label;
#endif
#ifdef BAD_UNKNOWN
    ar & opaque;
#endif
  }
};

class Bad final : public molt::api::StatefulModule<State> {
 public:
  static constexpr std::string_view kName = "bad";
  static constexpr molt::api::ModuleVersion kVersion{1};
  static constexpr molt::api::SchemaVersion kSchema{1};
  void start(molt::api::Context&) override {}
  molt::api::Response handle(const molt::api::Request&) override { return {}; }
  void save_state(molt::api::StateWriter&, const molt::api::SaveTarget&) const override {}
  void load_state(molt::api::StateReader&, const molt::api::Migration&) override {}
};

MOLT_MODULE(Bad)
