// A shared library whose static initialiser crashes, as MOLT_CRASH_AT_LOAD
// says: "segv" (a store through a null pointer) or "exit" (exit(4)); without
// it, it loads. Not a Molt module: the crash handler's tests dlopen it inside
// a ModuleCodeScope, as the loader does, so the crash happens with the
// dynamic loader's lock held.
#include <cstdint>
#include <cstdlib>
#include <cstring>

namespace {

/// A real SIGSEGV at address 0, also under the sanitizers (their null check
/// would end the process its own way first).
__attribute__((noinline, no_sanitize("address", "undefined"))) void write_through_null() {
  volatile std::uintptr_t null = 0;
  *reinterpret_cast<volatile int*>(null) = 1;
}

struct CrashAtLoad {
  CrashAtLoad() {
    const char* how = std::getenv("MOLT_CRASH_AT_LOAD");
    if (how == nullptr) return;
    if (std::strcmp(how, "segv") == 0) write_through_null();
    if (std::strcmp(how, "exit") == 0) std::exit(4);
  }
};
const CrashAtLoad crash_at_load;

}  // namespace

extern "C" __attribute__((visibility("default"))) int molt_test_crash_at_load_loaded() { return 1; }
