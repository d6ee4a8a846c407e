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
//                              on a trigger; receive_part: at one part; below)
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
// timer, stop, destroy (the destructor); pre-copy's transfer_chunk,
// transfer_delta and transfer_final (the old version's side: each call),
// and receive_part (the new version's side: only at the N-th part it
// receives, N from the upgrade's extra argument fail_part, default 1, so
// that a test can fail any round of a transfer).
//
// What every build does:
//   HTTP    GET /faulty -> {"items":[...],"version":N}
//           POST /faulty/add?item=X     appends X
//           POST /faulty/trigger        fires the handle fault (else 200)
//           POST /faulty/job?name=J     starts job J: one step adds "job:J"
//           POST /faulty/timer?ms=M[&name=T]  one-shot timer T (default
//                                       "once"); firing adds "timer:T"
//           GET /faulty/transfer -> {"running":B}  whether a transfer is
//                                       running (transfer_begin to _end)
//   Stream  each '\n'-terminated line (a trailing '\r' dropped) is appended
//           as an item and answered "+OK\r\n"; "TRIGGER" fires the on_data
//           fault and is not stored
//   health  healthy (nullopt)
//   pre-copy  (molt/transfer.hpp; Feature::Transfer, so an upgrade between
//           two faulty images moves the state in rounds while the old one
//           serves, and a snapshot goes through a second instance; with
//           host.precopy = "never", stop-and-copy as before). The state only
//           grows at its end and an item never changes, so a transfer is an
//           index: the chunks send the items there at transfer_begin, a
//           round of deltas those appended since the last one sent (up to
//           where they ended when the round began), the final part the
//           rest; each call sends at least one item (if one is left) and
//           stops after the one that reaches its budget. Parts are written
//           in the schema asked (schema 1 for v1 or a downgrade to it, as
//           save_state writes), and receive_part appends them, converting
//           schema 1 to 2 per item as load_state does. One transfer at a
//           time: a second transfer_begin throws, so that a transfer the
//           host never ended shows.
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <new>
#include <optional>
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
                                              "save_state", "health", "job_step", "timer", "stop", "destroy",
                                              "transfer_chunk", "transfer_delta", "transfer_final", "receive_part"}),
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

/// The receive_part call of a transfer at which its fault fires: the
/// upgrade's extra argument fail_part (1: the first part), read only by a
/// build with that fault.
std::uint64_t fail_part(const molt::api::Values& extra) {
  const auto it = extra.find("fail_part");
  if (it == extra.end()) return 1;
  try {
    return std::stoull(it->second);
  } catch (const std::exception&) {
    throw molt::api::BadExtraArgument("fail_part", "not a number: '" + it->second + "'");
  }
}

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
    } else if (request.path == "/faulty/transfer") {
      return molt::api::Response::json(std::string(R"({"running":)") + (transfer_ ? "true" : "false") + "}");
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

  // Pre-copy: see the top of this file.

  void transfer_begin(const molt::api::SaveTarget& target) override {
    if (transfer_) throw std::logic_error("faulty: transfer_begin while a transfer is running");
    if (target.schema != StateV1::kSchema && target.schema != kSchema)  // as save_state
      throw molt::api::UnknownSchema(target.schema, kSchema);
    transfer_ = Transfer{target.schema, state_.items.size()};
  }

  molt::api::TransferStep transfer_chunk(molt::api::StateWriter& out, const molt::api::TransferBudget& budget) override {
    fault_.at("transfer_chunk");
    Transfer& transfer = running_transfer();
    const std::uint64_t entries = send(out, transfer, transfer.chunked, &budget);
    return {entries, transfer.sent >= transfer.chunked};
  }

  molt::api::TransferStep transfer_delta(molt::api::StateWriter& out, const molt::api::TransferBudget& budget) override {
    fault_.at("transfer_delta");
    Transfer& transfer = running_transfer();
    if (!transfer.round_open) {  // a round is what was appended when it began
      transfer.round_end = state_.items.size();
      transfer.round_open = true;
    }
    const std::uint64_t entries = send(out, transfer, transfer.round_end, &budget);
    transfer.round_open = transfer.sent < transfer.round_end;
    return {entries, !transfer.round_open};
  }

  molt::api::TransferStep transfer_final(molt::api::StateWriter& out) override {
    fault_.at("transfer_final");
    Transfer& transfer = running_transfer();
    return {send(out, transfer, state_.items.size(), nullptr), true};
  }

  void transfer_end() noexcept override { transfer_.reset(); }

  void receive_part(molt::api::StateReader& in, const molt::api::Migration& migration,
                    molt::api::TransferPart) override {
    ++parts_received_;
    if (kHook == "receive_part" && parts_received_ == fail_part(migration.extra)) fault_.at("receive_part");
    if (migration.from_schema == StateV1::kSchema) {
      StateV1 part;
      in.read(part);
      for (auto& text : part.items) state_.items.push_back(Item{std::move(text), migration.from_version.value});
      return;
    }
    if (migration.from_schema != kSchema) throw molt::api::UnknownSchema(migration.from_schema, kSchema);
    StateV2 part;
    in.read(part);
    for (auto& item : part.items) state_.items.push_back(std::move(item));
  }

 private:
  /// A transfer in progress, on the sending side. Items [0, sent) have been
  /// written; an item never changes once added, so nothing else is noted.
  struct Transfer {
    molt::api::SchemaVersion schema;  ///< the parts', as asked in transfer_begin
    std::size_t chunked = 0;          ///< the chunks' end: the items there at transfer_begin
    std::size_t sent = 0;
    std::size_t round_end = 0;  ///< the open round of deltas ends here
    bool round_open = false;
  };

  Transfer& running_transfer() {
    if (!transfer_) throw std::logic_error("faulty: a transfer hook called without transfer_begin");
    return *transfer_;
  }

  /// Writes items from `transfer.sent` towards `end` as one part, in the
  /// transfer's schema: at least one (when there is one), and with a budget
  /// no more after the one that reaches it. Returns how many. The cursor
  /// moves only once the part is written.
  std::uint64_t send(molt::api::StateWriter& out, Transfer& transfer, std::size_t end,
                     const molt::api::TransferBudget* budget) {
    const auto started = std::chrono::steady_clock::now();
    std::size_t next = transfer.sent;
    std::uint64_t bytes = 0;
    while (next < end) {
      // About what Boost writes: a length, the text, and in schema 2 added_by.
      bytes += 8 + state_.items[next++].text.size() + (transfer.schema == StateV1::kSchema ? 0 : 4);
      if (budget == nullptr) continue;
      const auto spent = std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - started);
      if (bytes >= budget->max_bytes || static_cast<std::uint64_t>(spent.count()) >= budget->max_nanoseconds) break;
    }
    const auto from = state_.items.begin() + static_cast<std::ptrdiff_t>(transfer.sent);
    const auto to = state_.items.begin() + static_cast<std::ptrdiff_t>(next);
    if (transfer.schema == StateV1::kSchema) {
      StateV1 part;  // as save_state's downgrade: the texts
      for (auto it = from; it != to; ++it) part.items.push_back(it->text);
      out.write(part);
    } else {
      out.write(StateV2{std::vector<Item>(from, to)});
    }
    const std::uint64_t entries = next - transfer.sent;
    transfer.sent = next;
    return entries;
  }

  void add(std::string text) { state_.items.push_back(Item{std::move(text), kVersion.value}); }

  mutable Fault fault_;  ///< mutable: save_state and health are const, and may fault too
  molt::api::Context* context_ = nullptr;
  StateV2 state_;  ///< every version keeps schema 2's form in memory; v1 saves and reads only schema 1
  std::optional<Transfer> transfer_;  ///< from transfer_begin to transfer_end
  std::uint64_t parts_received_ = 0;  ///< receive_part calls so far (an instance receives one transfer)
};

}  // namespace faulty

MOLT_MODULE(faulty::Faulty)
