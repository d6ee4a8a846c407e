// Counts the threads module code starts, so that moltd never unmaps an image
// one of them still runs in (docs/operations.md, "Threads a module leaves").
//
// moltd defines pthread_create, and exports it (moltd's link options:
// --export-dynamic-symbol): the executable comes first in the dynamic
// linker's lookup order, so every pthread_create call in the process, the
// modules' std::thread included (libstdc++ makes it), arrives here; the real
// one is the next definition (RTLD_NEXT: glibc's, or the sanitizer's
// interceptor, which then calls glibc's).
//
// A thread created while the creating thread is inside module code (a
// ModuleCodeScope: a call into the module, its static initialisers at
// dlopen) is the module's: it is counted on that image's ModuleSite until it
// ends, and it runs inside a scope of that site ("a thread it started"), so
// a crash in it names the module, and a thread it starts is counted too.
// Host code the module calls back into (HostCodeScope) is not the module's.
// Any other thread goes straight to the real pthread_create: one
// thread-local load more per thread created.
#include <dlfcn.h>
#include <pthread.h>

#include <cerrno>
#include <new>

#include "molt/host/common/module_site.hpp"

namespace {

using molt::host::ModuleCodeScope;
using molt::host::ModuleSite;

using PthreadCreate = int (*)(pthread_t*, const pthread_attr_t*, void* (*)(void*), void*);

/// glibc's pthread_create (or the next interposer's), found once.
PthreadCreate real_pthread_create() {
  static const auto real = reinterpret_cast<PthreadCreate>(::dlsym(RTLD_NEXT, "pthread_create"));
  return real;
}

/// What a module's new thread needs before it runs the module's routine.
struct Launch {
  const ModuleSite* site;
  void* (*routine)(void*);
  void* argument;
};

/// A module's thread: counted on its image's site from before it was
/// created until its routine returns, pthread_exit unwinds it, or it is
/// cancelled (each runs the destructor of `ended`).
void* run_module_thread(void* launch_pointer) {
  const Launch launch = *static_cast<Launch*>(launch_pointer);
  delete static_cast<Launch*>(launch_pointer);
  struct Ended {
    const ModuleSite& site;
    ~Ended() { site.thread_ended(); }
  } ended{*launch.site};
  const ModuleCodeScope scope(*launch.site, molt::host::module_hook::kThread);
  return launch.routine(launch.argument);
}

}  // namespace

extern "C" int pthread_create(pthread_t* thread, const pthread_attr_t* attributes, void* (*routine)(void*),
                              void* argument) {
  const PthreadCreate real = real_pthread_create();
  if (real == nullptr) return EAGAIN;
  const molt::host::ModuleCode code = molt::host::module_code_on_this_thread();
  if (code.site == nullptr) return real(thread, attributes, routine, argument);
  auto* launch = new (std::nothrow) Launch{code.site, routine, argument};
  if (launch == nullptr) return EAGAIN;
  // Counted before it exists: nothing can unload the image between its
  // creation and its first instruction unseen.
  code.site->thread_started();
  const int created = real(thread, attributes, &run_module_thread, launch);
  if (created != 0) {
    code.site->thread_ended();
    delete launch;
  }
  return created;
}
