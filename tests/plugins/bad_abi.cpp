// An image that claims a plugin ABI this host does not speak. Written by
// hand (not with MOLT_MODULE) to produce exactly that.
#include "molt/module.hpp"

extern "C" MOLT_API_EXPORT const MoltModuleInfo molt_module_info = {
    /*abi_version=*/999, sizeof(MoltModuleInfo), 1, 1, 0, _GLIBCXX_USE_CXX11_ABI, 0, "probe"};
extern "C" MOLT_API_EXPORT molt::api::Module* molt_module_create() { return nullptr; }
extern "C" MOLT_API_EXPORT void molt_module_destroy(molt::api::Module*) noexcept {}
