// Loading module images: checked, copied, then dlopen'ed.
//
// Every image is loaded from a private copy (`<image dir>/<module>-<version>-
// <sha256 prefix>.<n>.so`), never from the operator's file:
//  - dlopen of a path that is already loaded returns the old handle even if
//    the file changed, so two versions need two paths;
//  - an operator who overwrites the original in place (cp) rewrites pages the
//    host has mapped, which crashes it; the copy is never touched;
//  - the bytes checked are the bytes loaded (no window to swap the file).
#pragma once

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>

#include <boost/dll/shared_library.hpp>

#include "molt/host/common/error.hpp"
#include "molt/host/common/module_site.hpp"
#include "molt/host/loader/abi.hpp"
#include "molt/module.hpp"

namespace molt::host {

/// What an image declares about itself (its MoltModuleInfo, checked).
struct ImageInfo {
  std::string name;
  api::ModuleVersion version;
  api::SchemaVersion schema;
  api::CallMode call_mode = api::CallMode::Serial;
  std::uint64_t state_fingerprint = 0;
  /// The plugin ABI it was built for, kAbiOldest..kAbiVersion: which hooks
  /// its vtable has (loader/abi.hpp).
  std::uint32_t abi = api::kAbiVersion;
  /// What it implements: declared by the image from ABI 6, implied by its
  /// ABI before (features_implied_by); only bits this host knows.
  api::Features features = kKnownFeatures;
};

/// Whether `image` has `hook` in its vtable and implements it (loader/abi.hpp).
[[nodiscard]] constexpr bool has_hook(const ImageInfo& image, Hook hook) {
  return has_hook(image.abi, image.features, hook);
}

class Image;

/// Destroys an instance through its own image, and keeps that image loaded
/// for as long as the instance exists, not longer: unique_ptr::reset() keeps
/// its deleter, so the deleter lets go of the image once it has run.
struct InstanceDeleter {
  mutable std::shared_ptr<const Image> image;
  void operator()(api::Module* module) const noexcept;
};
using Instance = std::unique_ptr<api::Module, InstanceDeleter>;

/// One loaded copy of a module's .so. Unloaded (dlclose) and its copy removed
/// when the last reference goes, which includes every Instance made from it;
/// except while a thread its code started still runs (ModuleSite::threads):
/// then it stays mapped until the process ends.
class Image : public std::enable_shared_from_this<Image> {
 public:
  Image(const Image&) = delete;
  Image& operator=(const Image&) = delete;
  ~Image();

  [[nodiscard]] const ImageInfo& info() const noexcept { return info_; }
  [[nodiscard]] const std::filesystem::path& source() const noexcept { return source_; }  ///< operator's file
  [[nodiscard]] const std::filesystem::path& mapped_path() const noexcept { return copy_; }
  [[nodiscard]] const std::string& sha256() const noexcept { return sha256_; }
  /// The image as a crash record names it (ModuleCodeScope): set from the
  /// moment it is loaded.
  [[nodiscard]] const ModuleSite& site() const noexcept { return *site_; }

  /// A new instance of the module (runs its constructor). Fails with
  /// Phase::Start when the constructor throws.
  [[nodiscard]] Result<Instance> instantiate() const;

 private:
  friend class Loader;
  Image() = default;

  ImageInfo info_;
  std::filesystem::path source_;
  std::filesystem::path copy_;
  std::string sha256_;
  /// Scopes point at it; left allocated when threads the module started
  /// outlive the image (~Image).
  std::unique_ptr<ModuleSite> site_;
  /// The loader's count of loaded images, which this one is part of from the
  /// moment it is loaded (null until then).
  std::shared_ptr<std::atomic<std::size_t>> loaded_count_;
  // Declared last so it is destroyed first: dlclose happens before the copy
  // is removed, and after nothing here refers into the image.
  boost::dll::shared_library library_;
  api::Module* (*create_)() = nullptr;
  void (*destroy_)(api::Module*) = nullptr;

  friend struct InstanceDeleter;
};

struct LoaderOptions {
  std::filesystem::path image_dir;                ///< where copies go; created with mode 0700
  std::uintmax_t max_image_bytes = 512ull << 20;  ///< larger files are refused
  /// Why an image with this SHA-256 must not be loaded (quarantined after
  /// it crashed moltd), or nothing. Asked by check(), before parsing.
  std::function<std::optional<std::string>(const std::string& sha256)> refuse_sha256 = {};
};

/// An image file that passed every check, read into memory.
struct CheckedImage {
  std::filesystem::path file;
  ImageInfo info;
  std::string sha256;
  std::string bytes;
};

class Loader {
 public:
  explicit Loader(LoaderOptions options);

  /// Reads `file` and checks it without loading it: its path (valid UTF-8,
  /// since it is recorded as JSON text), its type (a regular file, opened
  /// without blocking: a FIFO or a device is refused at once), permissions
  /// (not writable by other users, in a directory not writable by them),
  /// size, ELF structure (complete, a shared library for this machine),
  /// entry points, ABI (kAbiOldest to kAbiVersion) and the size of the
  /// metadata it declares, and module name (when `expected_module` is not
  /// empty); with `pinned_sha256`, that the file has that SHA-256 (lowercase
  /// hex), before anything else is read from it.
  [[nodiscard]] Result<CheckedImage> check(const std::filesystem::path& file, std::string_view expected_module,
                                           const std::optional<std::string>& pinned_sha256 = std::nullopt) const;

  /// check(), then copies the file to a fresh path in the image directory and
  /// loads the copy (RTLD_LOCAL | RTLD_NOW). Runs the image's static
  /// constructors, but no module code. `pinned_sha256` as for check().
  [[nodiscard]] Result<std::shared_ptr<Image>> load(const std::filesystem::path& file, std::string_view expected_module,
                                                    const std::optional<std::string>& pinned_sha256 = std::nullopt);

  /// Removes image copies left in the image directory by a host that did not
  /// exit cleanly (or handed over: hot restart), but those in `keep` (the
  /// copies this process has loaded). Call only while no other image from
  /// that directory is loaded.
  void remove_stale_copies(const std::set<std::filesystem::path>& keep = {}) const;

  /// Images this loader loaded that are still loaded: every module's running
  /// image; during an upgrade also the new one, and after it the old one
  /// until its last instance is gone.
  [[nodiscard]] std::size_t loaded_images() const noexcept { return loaded_->load(std::memory_order_relaxed); }

  [[nodiscard]] const LoaderOptions& options() const noexcept { return options_; }

 private:
  LoaderOptions options_;
  /// Shared with the images, which may outlive the loader.
  std::shared_ptr<std::atomic<std::size_t>> loaded_ = std::make_shared<std::atomic<std::size_t>>(0);
};

/// The names of the symbols every module image exports (see MOLT_MODULE).
inline constexpr std::string_view kInfoSymbol = "molt_module_info";
inline constexpr std::string_view kCreateSymbol = "molt_module_create";
inline constexpr std::string_view kDestroySymbol = "molt_module_destroy";

}  // namespace molt::host
