// Images whose metadata this host refuses, one per BAD_ABI_* definition.
// Written by hand (not with MOLT_MODULE) to produce exactly that:
//   (none)            plugin ABI 999
//   BAD_ABI_OLDER     the ABI before kAbiOldest (rebuild it)
//   BAD_ABI_NEWER     the ABI after kAbiVersion (upgrade the host)
//   BAD_ABI_SHORT     today's ABI, but an info_size smaller than its MoltModuleInfo
#include "molt/module.hpp"

#if defined(BAD_ABI_OLDER)
constexpr std::uint32_t kAbi = molt::api::kAbiOldest - 1;
#elif defined(BAD_ABI_NEWER)
constexpr std::uint32_t kAbi = molt::api::kAbiVersion + 1;
#elif defined(BAD_ABI_SHORT)
constexpr std::uint32_t kAbi = molt::api::kAbiVersion;
#else
constexpr std::uint32_t kAbi = 999;
#endif
#ifdef BAD_ABI_SHORT
constexpr std::uint32_t kInfoSize = sizeof(MoltModuleInfo) - 8;
#else
constexpr std::uint32_t kInfoSize = sizeof(MoltModuleInfo);
#endif

extern "C" MOLT_API_EXPORT const MoltModuleInfo molt_module_info = {
    kAbi, kInfoSize, 1, 1, 0, _GLIBCXX_USE_CXX11_ABI, 0, "probe", 0};
extern "C" MOLT_API_EXPORT molt::api::Module* molt_module_create() { return nullptr; }
extern "C" MOLT_API_EXPORT void molt_module_destroy(molt::api::Module*) noexcept {}
