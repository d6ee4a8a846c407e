#include "molt/host/loader/loader.hpp"

#include <dlfcn.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <fstream>
#include <system_error>

#include "molt/host/common/file_checks.hpp"
#include "molt/host/common/json_text.hpp"
#include "molt/host/common/sha256.hpp"
#include "molt/host/loader/elf_file.hpp"
#include "molt/host/slot/module_call.hpp"

namespace molt::host {
namespace fs = std::filesystem;
namespace {

std::string errno_text(int err) { return std::error_code(err, std::generic_category()).message(); }

struct FdCloser {
  int fd;
  ~FdCloser() {
    if (fd >= 0) ::close(fd);
  }
};

Result<std::string> read_all(int fd, std::uintmax_t size) {
  std::string bytes(size, '\0');
  std::size_t done = 0;
  while (done < size) {
    const ssize_t n = ::read(fd, bytes.data() + done, size - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Error{{}, {}, {}, Phase::Load, "cannot read: " + errno_text(errno)};
    if (n == 0) return Error{{}, {}, {}, Phase::Load, "file shrank while being read"};
    done += static_cast<std::size_t>(n);
  }
  return bytes;
}

Result<ImageInfo> read_info(const ElfFile& elf, std::string_view expected_module) {
  auto refuse = [](std::string reason) { return Error{{}, {}, {}, Phase::Load, std::move(reason)}; };
  for (auto symbol : {kInfoSymbol, kCreateSymbol, kDestroySymbol})
    if (elf.find_defined(symbol) == nullptr)
      return refuse("missing entry point " + std::string(symbol) + " (not a Molt module? export it with MOLT_MODULE)");

  // Every ABI's MoltModuleInfo starts with abi_version, then info_size; what
  // follows depends on both, so nothing else is read before they pass.
  const ElfSymbol& symbol = *elf.find_defined(kInfoSymbol);
  auto read_u32 = [&](std::size_t offset) -> std::optional<std::uint32_t> {
    const auto bytes = elf.bytes_at(symbol.address + offset, sizeof(std::uint32_t));
    if (!bytes) return std::nullopt;
    std::uint32_t value = 0;
    std::memcpy(&value, bytes->data(), sizeof value);
    return value;
  };
  const auto abi = read_u32(offsetof(MoltModuleInfo, abi_version));
  if (!abi) return refuse("molt_module_info is not stored in the file");
  const std::string newest = std::to_string(api::kAbiVersion);
  if (*abi < api::kAbiOldest)
    return refuse("built for plugin ABI " + std::to_string(*abi) + ", this host loads ABI " +
                  std::to_string(api::kAbiOldest) + " to " + newest + " (rebuild it against molt ABI " + newest + ")");
  if (*abi > api::kAbiVersion)
    return refuse("built for plugin ABI " + std::to_string(*abi) + ", newer than this host's ABI " + newest +
                  " (upgrade moltd)");

  const auto size = read_u32(offsetof(MoltModuleInfo, info_size));
  if (!size) return refuse("molt_module_info is not stored in the file");
  if (*size < info_size_of(*abi))
    return refuse("malformed molt_module_info: it declares " + std::to_string(*size) + " bytes, ABI " +
                  std::to_string(*abi) + "'s is " + std::to_string(info_size_of(*abi)));
  const auto raw = elf.bytes_at(symbol.address, *size);
  if (symbol.size < *size || !raw)
    return refuse("malformed molt_module_info (" + std::to_string(symbol.size) + " bytes, declares " +
                  std::to_string(*size) + ")");
  // Fields the image's ABI does not have stay zero; fields after the ones
  // this host knows are not read.
  MoltModuleInfo info{};
  std::memcpy(&info, raw->data(), std::min<std::size_t>(*size, sizeof info));
  const bool declares_features = *size >= offsetof(MoltModuleInfo, features) + sizeof info.features;
  const api::Features features = declares_features ? api::Features{info.features & kKnownFeatures.bits}
                                                   : features_implied_by(*abi);
  if (info.cxx_abi != _GLIBCXX_USE_CXX11_ABI)
    return refuse("built with _GLIBCXX_USE_CXX11_ABI=" + std::to_string(info.cxx_abi) + ", the host uses " +
                  std::to_string(_GLIBCXX_USE_CXX11_ABI));
  const std::string_view name(info.name, strnlen(info.name, sizeof info.name));
  if (name.size() == sizeof info.name || !api::detail::valid_module_name(name))
    return refuse("invalid module name in molt_module_info");
  if (!expected_module.empty() && name != expected_module)
    return refuse("module is '" + std::string(name) + "', expected '" + std::string(expected_module) + "'");
  if (info.module_version == 0 || info.state_schema == 0)
    return refuse("module version and state schema must be positive");
  if (info.call_mode > static_cast<std::uint32_t>(api::CallMode::Concurrent))
    return refuse("unknown call mode " + std::to_string(info.call_mode));
  return ImageInfo{std::string(name),
                   api::ModuleVersion{info.module_version},
                   api::SchemaVersion{info.state_schema},
                   static_cast<api::CallMode>(info.call_mode),
                   info.state_fingerprint,
                   *abi,
                   features};
}

/// Boost.DLL 1.74 clears dlerror() before reporting a failed dlopen, so the
/// reason (a missing library, an undefined symbol) is lost. Asking dlopen
/// again is the only way to get it; it fails the same way.
std::string dlopen_reason(const fs::path& path) {
  void* handle = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle != nullptr) {
    ::dlclose(handle);
    return "dlopen failed";
  }
  std::string reason = ::dlerror();
  const std::string prefix = path.string() + ": ";
  if (reason.starts_with(prefix)) reason.erase(0, prefix.size());
  return reason;
}

}  // namespace

void InstanceDeleter::operator()(api::Module* module) const noexcept {
  if (module != nullptr) {
    const ModuleCodeScope scope(*image->site_, module_hook::kDestructor);
    image->destroy_(module);
  }
  image.reset();  // may unload the image: nothing of it is used after this
}

Image::~Image() {
  if (site_ && site_->threads() > 0) {
    // A thread its code started still runs (moltd counts them:
    // moltd/module_threads.cpp): unmapping the image would make it jump
    // into unmapped memory, a crash of moltd. The image stays mapped until
    // the process ends, with its site, which that thread's scope points at.
    // One more reference that is never given back outweighs the unload below.
    (void)::dlopen(copy_.c_str(), RTLD_NOW | RTLD_NOLOAD);
    (void)site_.release();
    library_.unload();  // no longer the last reference: runs nothing, unmaps nothing
    return;             // still loaded: counted as such
  }
  if (site_) {
    const ModuleCodeScope scope(*site_, module_hook::kUnload);  // dlclose runs its static destructors
    library_.unload();
  }
  if (loaded_count_) loaded_count_->fetch_sub(1, std::memory_order_relaxed);
  std::error_code ignored;
  fs::remove(copy_, ignored);
}

Result<Instance> Image::instantiate() const {
  auto fail = [this](std::string reason) {
    return Error{info_.name, info_.version, source_.string(), Phase::Start, std::move(reason)};
  };
  api::Module* module = nullptr;
  const ModuleCodeScope scope(*site_, module_hook::kConstructor);
  if (auto failure = guard_module_call("constructor", [&] { module = create_(); })) return fail(std::move(*failure));
  if (module == nullptr) return fail("molt_module_create returned null");
  return Instance(module, InstanceDeleter{shared_from_this()});
}

Loader::Loader(LoaderOptions options) : options_(std::move(options)) {}

Result<CheckedImage> Loader::check(const fs::path& file, std::string_view expected_module,
                                   const std::optional<std::string>& pinned_sha256) const {
  // The path goes into the release record, the history and the status as
  // JSON text, and must read back as the same bytes: a path that is not
  // UTF-8 cannot. Refused before anything opens it, and shown escaped.
  if (!is_valid_utf8(file.native()))
    return Error{std::string(expected_module), {}, utf8_safe(file.native()), Phase::Load,
                 "the path is not valid UTF-8 (the bytes shown as \\xNN); rename the file or its directory"};
  auto refuse = [&](std::string reason) {
    return Error{std::string(expected_module), {}, file.string(), Phase::Load, std::move(reason)};
  };
  // An operator names this file, so links are followed; a FIFO or a device
  // is refused at once instead of blocking the open (with the release lock held).
  RegularFile opened;
  if (auto why = open_regular_file(file, Symlinks::Follow, opened)) return refuse(*why);
  const struct stat& st = opened.st;
  if (auto why = unsafe_permissions(st, "the file")) return refuse(*why);
  std::error_code ec;
  const fs::path dir = fs::canonical(file, ec).parent_path();
  struct stat dir_st {};
  if (ec || ::stat(dir.c_str(), &dir_st) != 0) return refuse("cannot stat its directory");
  if (auto why = unsafe_permissions(dir_st, "its directory " + dir.string())) return refuse(*why);
  if (st.st_size == 0) return refuse("empty file");
  if (static_cast<std::uintmax_t>(st.st_size) > options_.max_image_bytes)
    return refuse("file is " + std::to_string(st.st_size) + " bytes, more than the limit of " +
                  std::to_string(options_.max_image_bytes));

  auto bytes = read_all(opened.fd.get(), static_cast<std::uintmax_t>(st.st_size));
  if (!bytes) return refuse(bytes.error().reason);
  std::string sha256 = sha256_hex(bytes.value());
  // A pinned file is compared before it is parsed: a file that is not the
  // one the operator pinned is not looked into at all.
  if (pinned_sha256 && *pinned_sha256 != sha256)
    return refuse("differs from the pinned sha256 (expected " + pinned_sha256->substr(0, 12) + "..., found " +
                  sha256.substr(0, 12) + "...)");
  if (options_.refuse_sha256)
    if (auto why = options_.refuse_sha256(sha256)) return refuse(*why);
  auto elf = ElfFile::parse(bytes.value());
  if (!elf) return refuse(elf.error().reason);
  auto info = read_info(elf.value(), expected_module);
  if (!info) return refuse(info.error().reason);

  CheckedImage checked{file, std::move(info.value()), std::move(sha256), std::move(bytes.value())};
  return checked;
}

Result<std::shared_ptr<Image>> Loader::load(const fs::path& file, std::string_view expected_module,
                                            const std::optional<std::string>& pinned_sha256) {
  auto checked = check(file, expected_module, pinned_sha256);
  if (!checked) return std::move(checked).error();
  const ImageInfo& info = checked->info;
  auto refuse = [&](std::string reason) {
    return Error{info.name, info.version, file.string(), Phase::Load, std::move(reason)};
  };

  std::error_code ec;
  fs::create_directories(options_.image_dir, ec);
  if (ec) return refuse("cannot create image directory " + options_.image_dir.string() + ": " + ec.message());
  fs::permissions(options_.image_dir, fs::perms::owner_all, ec);

  // A fresh name for every load, so dlopen never hands back an image that is
  // still loaded, even when the same file is loaded twice.
  static std::atomic<std::uint64_t> sequence{0};
  const std::string stem = info.name + '-' + std::to_string(info.version.value) + '-' + checked->sha256.substr(0, 12);
  fs::path copy;
  int fd = -1;
  for (int attempt = 0; attempt < 100 && fd < 0; ++attempt) {
    copy = options_.image_dir / (stem + '.' + std::to_string(++sequence) + ".so");
    fd = ::open(copy.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0500);
    if (fd < 0 && errno != EEXIST) return refuse("cannot create " + copy.string() + ": " + errno_text(errno));
  }
  if (fd < 0) return refuse("cannot find a free name for the image copy in " + options_.image_dir.string());
  {
    FdCloser closer{fd};
    std::string_view rest = checked->bytes;
    while (!rest.empty()) {
      const ssize_t n = ::write(fd, rest.data(), rest.size());
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        const int err = errno;
        fs::remove(copy, ec);
        return refuse("cannot write " + copy.string() + ": " + errno_text(err));
      }
      rest.remove_prefix(static_cast<std::size_t>(n));
    }
  }

  std::shared_ptr<Image> image(new Image());
  image->info_ = info;
  image->source_ = file;
  image->copy_ = copy;
  image->sha256_ = checked->sha256;
  // Named before its first code runs: a crash in a static initialiser is
  // recorded as this image's.
  image->site_ = std::make_unique<ModuleSite>(info.name, info.version, file.string(), checked->sha256);
  {
    const ModuleCodeScope scope(*image->site_, module_hook::kStaticInit);
    image->library_.load(copy, boost::dll::load_mode::rtld_now | boost::dll::load_mode::rtld_local, ec);
  }
  if (ec) return refuse("not loadable: " + dlopen_reason(copy));  // ~Image removes the copy
  image->loaded_count_ = loaded_;
  loaded_->fetch_add(1, std::memory_order_relaxed);

  // The file said it exports these (checked above); dlsym must agree.
  for (auto symbol : {kInfoSymbol, kCreateSymbol, kDestroySymbol})
    if (!image->library_.has(std::string(symbol))) return refuse("dlsym cannot find " + std::string(symbol));
  // Copied, not read in place: an older image's molt_module_info is shorter
  // than this host's MoltModuleInfo (the file said how long, checked above).
  MoltModuleInfo loaded_info{};
  std::memcpy(&loaded_info, &image->library_.get<const char>(std::string(kInfoSymbol)), info_size_of(info.abi));
  if (loaded_info.module_version != info.version.value || loaded_info.state_schema != info.schema.value ||
      std::string_view(loaded_info.name, strnlen(loaded_info.name, sizeof loaded_info.name)) != info.name)
    return refuse("molt_module_info in memory differs from the file");
  image->create_ = &image->library_.get<api::Module*()>(std::string(kCreateSymbol));
  image->destroy_ = &image->library_.get<void(api::Module*)>(std::string(kDestroySymbol));
  return image;
}

void Loader::remove_stale_copies(const std::set<fs::path>& keep) const {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(options_.image_dir, ec))
    if (entry.path().extension() == ".so" && !keep.contains(entry.path())) fs::remove(entry.path(), ec);
}

}  // namespace molt::host
