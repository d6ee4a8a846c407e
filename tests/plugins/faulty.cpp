// faulty: a corpus of test modules that each fail in one chosen way, at one
// chosen hook, built from this one source (tests/plugins/CMakeLists.txt
// lists the variants). It is what the host's defences against a faulty
// module are tested with: the rehearsal (host/upgrade/rehearsal.cpp) must
// refuse every variant whose fault it can reach, with one line naming the
// signal, exit, exception, hang or thread and the hook it happened in, and
// without the live process ever loading it.
//
// The images (build/tests/images):
//   faulty-1.so                healthy v1, schema 1
//   faulty-2.so                healthy v2, schema 2 (migrates from 1, saves back into 1)
//   faulty-2-<kind>-<hook>.so  v2 as above, built with FAULTY_FAULT=<kind>
//                              and FAULTY_HOOK=<hook>: the fault fires each
//                              time that hook runs (handle and on_data: only
//                              on a trigger, below)
// A test copies a variant into a plugin directory as faulty-2.so.
//
// Kinds (FAULTY_FAULT):
//   segv             writes through a volatile null pointer read from a
//                    volatile variable (the compiler can neither see that it
//                    is null nor drop the write: a real SIGSEGV, not a trap
//                    instruction, and not nothing)
//   abort            std::abort()
//   exit             std::exit(1)
//   throw            throws std::runtime_error("faulty: throw in <hook>, on purpose")
//   hang             never returns: sleeps 10 ms per turn, forever (little CPU)
//   bad_alloc        throws std::bad_alloc
//   thread_joinable  starts a std::thread held by the instance (or, at
//                    static_init, by the image) and never joins it: the
//                    owner's destruction calls std::terminate (SIGABRT)
//   thread_detached  starts a detached thread that calls into this image
//                    every 20 ms, forever: once the image is unloaded it
//                    runs into unmapped code
// Hooks (FAULTY_HOOK): static_init (a namespace-scope object's constructor,
// so at dlopen), construct, start, handle (POST /faulty/trigger only),
// on_data (a line "TRIGGER" only), load_state, save_state, health, job_step,
// timer, stop, destroy (the destructor).
//
// What every build does:
//   HTTP    GET /faulty -> {"items":[...],"version":N}
//           POST /faulty/add?item=X     appends X
//           POST /faulty/trigger        fires the handle fault (else 200)
//           POST /faulty/job?name=J     starts job J: one step adds "job:J"
//           POST /faulty/timer?ms=M[&name=T]  one-shot timer T (default
//                                       "once"); firing adds "timer:T"
//   Stream  each '\n'-terminated line (a trailing '\r' dropped) is appended
//           as an item and answered "+OK\r\n"; "TRIGGER" fires the on_data
//           fault and is not stored
//   health  healthy (nullopt)
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <new>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>

#include "faulty_state.hpp"
#include "molt/json_text.hpp"
#include "molt/module.hpp"

#define FAULTY_TEXT_OF(x) #x
#define FAULTY_TEXT(x) FAULTY_TEXT_OF(x)
#ifdef FAULTY_FAULT
#define FAULTY_FAULT_TEXT FAULTY_TEXT(FAULTY_FAULT)
#define FAULTY_HOOK_TEXT FAULTY_TEXT(FAULTY_HOOK)
#else
#define FAULTY_FAULT_TEXT ""  // healthy
#define FAULTY_HOOK_TEXT ""
#endif

namespace faulty {
namespace {

using namespace std::chrono_literals;

constexpr std::string_view kFault = FAULTY_FAULT_TEXT;
constexpr std::string_view kHook = FAULTY_HOOK_TEXT;

constexpr bool one_of(std::string_view word, std::initializer_list<std::string_view> words) {
  for (const auto w : words)
    if (w == word) return true;
  return false;
}
static_assert(kFault.empty() || one_of(kFault, {"segv", "abort", "exit", "throw", "hang", "bad_alloc",
                                                "thread_joinable", "thread_detached"}),
              "FAULTY_FAULT: unknown kind");
static_assert(kFault.empty() == kHook.empty(), "FAULTY_FAULT and FAULTY_HOOK go together");
static_assert(kHook.empty() || one_of(kHook, {"static_init", "construct", "start", "handle", "on_data", "load_state",
                                              "save_state", "health", "job_step", "timer", "stop", "destroy"}),
              "FAULTY_HOOK: unknown hook");

/// What the threads of thread_* faults call: code of this image.
std::atomic<std::uint64_t> ticks{0};
[[gnu::noinline]] void tick() { ticks.fetch_add(1, std::memory_order_relaxed); }

/// The segv kind. Not instrumented by the sanitizers, whose checks would
/// otherwise report the null pointer and exit(1) before the write faults.
[[gnu::no_sanitize_address, gnu::no_sanitize_undefined]] void write_through_null() {
  volatile int* volatile null = nullptr;  // both volatile: neither the load nor the store may go
  *null = 1;
}

[[noreturn]] void forever() {
  for (;;) {
    std::this_thread::sleep_for(20ms);
    tick();
  }
}

/// This build's fault, fired at its hook. Owns the thread of a
/// thread_joinable fault, so that whoever owns this object (the instance, or
/// the image for static_init) terminates the process when it is destroyed.
class Fault {
 public:
  /// Fires the fault if this build has one at `hook`.
  void at(std::string_view hook) {
    if (!kHook.empty() && hook == kHook) fire(hook);
  }

 private:
  void fire([[maybe_unused]] std::string_view hook) {
    if constexpr (kFault == "segv") {
      write_through_null();
    } else if constexpr (kFault == "abort") {
      std::abort();
    } else if constexpr (kFault == "exit") {
      std::exit(1);
    } else if constexpr (kFault == "throw") {
      throw std::runtime_error("faulty: throw in " + std::string(hook) + ", on purpose");
    } else if constexpr (kFault == "hang") {
      for (;;) std::this_thread::sleep_for(10ms);
    } else if constexpr (kFault == "bad_alloc") {
      throw std::bad_alloc();
    } else if constexpr (kFault == "thread_joinable") {
      if (!joinable_.joinable()) joinable_ = std::thread(forever);
    } else if constexpr (kFault == "thread_detached") {
      std::thread(forever).detach();
    }
  }

  std::thread joinable_;  ///< never joined: its destructor calls std::terminate
};

/// static_init: the image's own fault, fired while it is being loaded.
Fault image_fault;
struct StaticInit {
  StaticInit() { image_fault.at("static_init"); }
} static_init;

}  // namespace

class Faulty final : public molt::api::Module {
 public:
  static constexpr std::string_view kName = "faulty";
  static constexpr molt::api::ModuleVersion kVersion{MOLT_BUILD_MODULE_VERSION};
  static constexpr molt::api::SchemaVersion kSchema = kVersion.value == 1 ? StateV1::kSchema : StateV2::kSchema;

  Faulty() { fault_.at("construct"); }
  ~Faulty() override { fault_.at("destroy"); }

  void start(molt::api::Context& context) override {
    context_ = &context;
    fault_.at("start");
  }

  molt::api::Response handle(const molt::api::Request& request) override {
    if (request.path == "/faulty/add") {
      add(request.query_param("item").value_or(""));
    } else if (request.path == "/faulty/trigger") {
      fault_.at("handle");
      return molt::api::Response::json(R"({"triggered":false})");
    } else if (request.path == "/faulty/job") {
      if (!context_->start_job(request.query_param("name").value_or("")))
        return molt::api::Response::json(R"({"error":"running"})", 409);
    } else if (request.path == "/faulty/timer") {
      context_->set_timer_once(request.query_param("name").value_or("once"),
                               std::chrono::milliseconds(std::stoi(request.query_param("ms").value_or("0"))));
    } else if (request.path != "/faulty") {
      return molt::api::Response::json(R"({"error":"not found"})", 404);
    }
    std::string body = R"({"items":[)";
    for (std::size_t i = 0; i < state_.items.size(); ++i)
      body += (i ? "," : "") + molt::api::json_string(state_.items[i].text);
    return molt::api::Response::json(body + R"(],"version":)" + std::to_string(kVersion.value) + "}");
  }

  std::size_t on_data(molt::api::ConnectionId, std::string_view input, molt::api::StreamOutput& out) override {
    std::size_t consumed = 0;
    for (auto end = input.find('\n'); end != std::string_view::npos; end = input.find('\n', consumed)) {
      std::string_view line = input.substr(consumed, end - consumed);
      consumed = end + 1;
      if (line.ends_with('\r')) line.remove_suffix(1);
      if (line == "TRIGGER")
        fault_.at("on_data");
      else
        add(std::string(line));
      out.write("+OK\r\n");
    }
    return consumed;
  }

  void on_timer(std::string_view name) override {
    fault_.at("timer");
    add("timer:" + std::string(name));
  }

  void run_job_step(std::string_view job, molt::api::JobStep& step) override {
    fault_.at("job_step");
    add("job:" + std::string(job));
    step.done = step.total = 1;
    step.finished = true;
  }

  std::optional<std::string> health() const override {
    fault_.at("health");
    return std::nullopt;
  }

  void save_state(molt::api::StateWriter& out, const molt::api::SaveTarget& target) const override {
    fault_.at("save_state");
    if (target.schema == StateV1::kSchema) {
      StateV1 down;  // a downgrade to v1 keeps the texts, loses who added them
      for (const auto& item : state_.items) down.items.push_back(item.text);
      return out.write(down);
    }
    if (target.schema != kSchema) throw molt::api::UnknownSchema(target.schema, kSchema);
    out.write(state_);
  }

  void load_state(molt::api::StateReader& in, const molt::api::Migration& migration) override {
    fault_.at("load_state");
    if (migration.from_schema == StateV1::kSchema) {
      StateV1 old;
      in.read(old);
      StateV2 converted;  // schema 1's items were added by the version that wrote them
      for (auto& text : old.items) converted.items.push_back(Item{std::move(text), migration.from_version.value});
      state_ = std::move(converted);
      return;
    }
    if (migration.from_schema != kSchema) throw molt::api::UnknownSchema(migration.from_schema, kSchema);
    in.read(state_);
  }

  void stop() noexcept override { fault_.at("stop"); }

 private:
  void add(std::string text) { state_.items.push_back(Item{std::move(text), kVersion.value}); }

  mutable Fault fault_;  ///< mutable: save_state and health are const, and may fault too
  molt::api::Context* context_ = nullptr;
  StateV2 state_;  ///< every version keeps schema 2's form in memory; v1 saves and reads only schema 1
};

}  // namespace faulty

MOLT_MODULE(faulty::Faulty)
