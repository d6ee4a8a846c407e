// A read-only view of an ELF shared object held in memory.
//
// The loader checks a module image with this before handing it to dlopen:
// dlopen maps segments straight from the file, and a segment that extends
// past the end of a truncated file faults (SIGBUS) when the dynamic linker
// touches it, killing the host. Checking the structure first turns that into
// a refusal. It also reads the module's metadata without running its code.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "molt/host/common/error.hpp"

namespace molt::host {

struct ElfSymbol {
  std::string name;
  unsigned char binding = 0;     ///< STB_LOCAL, STB_GLOBAL, STB_WEAK, STB_GNU_UNIQUE
  unsigned char type = 0;        ///< STT_FUNC, STT_OBJECT, ...
  unsigned char visibility = 0;  ///< STV_DEFAULT, STV_HIDDEN, ...
  bool defined = false;          ///< false for symbols the image imports
  std::uint64_t address = 0;
  std::uint64_t size = 0;

  /// Defined here and visible to other images (what dlsym can find).
  [[nodiscard]] bool exported() const noexcept;
};

class ElfFile {
 public:
  /// Checks that `bytes` is a complete 64-bit shared object for this machine
  /// and reads its dynamic symbol table. On failure the Error holds only the
  /// phase and the reason; the caller adds the file and module.
  /// `bytes` must outlive the returned object.
  static Result<ElfFile> parse(std::string_view bytes);

  [[nodiscard]] const std::vector<ElfSymbol>& dynamic_symbols() const noexcept { return symbols_; }
  [[nodiscard]] const ElfSymbol* find_defined(std::string_view name) const noexcept;

  /// The file's bytes for [address, address + size), when that range lies in
  /// a loadable segment and is stored in the file (not zero-filled memory).
  [[nodiscard]] std::optional<std::string_view> bytes_at(std::uint64_t address, std::uint64_t size) const;

 private:
  struct Segment {
    std::uint64_t offset, address, file_size;
  };
  std::string_view bytes_;
  std::vector<Segment> segments_;
  std::vector<ElfSymbol> symbols_;
};

}  // namespace molt::host
