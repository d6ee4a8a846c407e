#include "molt/host/loader/elf_file.hpp"

#include <elf.h>

#include <cstring>

namespace molt::host {
namespace {

#if defined(__x86_64__)
constexpr std::uint16_t kMachine = EM_X86_64;
#elif defined(__aarch64__)
constexpr std::uint16_t kMachine = EM_AARCH64;
#else
#error "molt: add this machine's ELF e_machine value"
#endif

Error elf_error(std::string reason) { return Error{{}, {}, {}, Phase::Load, std::move(reason)}; }

/// True when [offset, offset + length) lies inside a file of `size` bytes.
bool in_file(std::uint64_t offset, std::uint64_t length, std::uint64_t size) {
  return offset <= size && length <= size - offset;
}

template <class T>
T read_at(std::string_view bytes, std::uint64_t offset) {
  T value;
  std::memcpy(&value, bytes.data() + offset, sizeof(T));  // ELF data need not be aligned in our buffer
  return value;
}

std::string truncated(std::string_view what, std::uint64_t end, std::uint64_t size) {
  return "truncated: " + std::string(what) + " ends at byte " + std::to_string(end) + " but the file has " +
         std::to_string(size) + " bytes";
}

}  // namespace

bool ElfSymbol::exported() const noexcept {
  return defined && binding != STB_LOCAL && (visibility == STV_DEFAULT || visibility == STV_PROTECTED);
}

Result<ElfFile> ElfFile::parse(std::string_view bytes) {
  const std::uint64_t size = bytes.size();
  if (size < SELFMAG || std::memcmp(bytes.data(), ELFMAG, SELFMAG) != 0)
    return elf_error("not a shared library: no ELF header");
  if (size < sizeof(Elf64_Ehdr)) return elf_error(truncated("the ELF header", sizeof(Elf64_Ehdr), size));
  const auto header = read_at<Elf64_Ehdr>(bytes, 0);
  if (header.e_ident[EI_CLASS] != ELFCLASS64) return elf_error("not a 64-bit ELF file");
  if (header.e_ident[EI_DATA] != ELFDATA2LSB) return elf_error("not a little-endian ELF file");
  if (header.e_machine != kMachine)
    return elf_error("built for another machine (ELF machine " + std::to_string(header.e_machine) + ", this host is " +
                     std::to_string(kMachine) + ")");
  if (header.e_type != ET_DYN)
    return elf_error("not a shared library (ELF type " + std::to_string(header.e_type) + ")");

  if (header.e_phnum == 0 || header.e_phentsize != sizeof(Elf64_Phdr))
    return elf_error("malformed ELF file: no usable program headers");
  const std::uint64_t ph_bytes = std::uint64_t{header.e_phnum} * sizeof(Elf64_Phdr);
  if (!in_file(header.e_phoff, ph_bytes, size)) return elf_error(truncated("the program header table", header.e_phoff + ph_bytes, size));

  ElfFile elf;
  elf.bytes_ = bytes;
  for (unsigned i = 0; i < header.e_phnum; ++i) {
    const auto ph = read_at<Elf64_Phdr>(bytes, header.e_phoff + i * sizeof(Elf64_Phdr));
    if (ph.p_type != PT_LOAD && ph.p_type != PT_DYNAMIC) continue;
    if (!in_file(ph.p_offset, ph.p_filesz, size))
      return elf_error(truncated("segment " + std::to_string(i), ph.p_offset + ph.p_filesz, size));
    if (ph.p_type == PT_LOAD) elf.segments_.push_back({ph.p_offset, ph.p_vaddr, ph.p_filesz});
  }
  if (elf.segments_.empty()) return elf_error("malformed ELF file: no loadable segment");

  if (header.e_shnum == 0) return elf_error("malformed ELF file: no section headers (stripped with sstrip?)");
  if (header.e_shentsize != sizeof(Elf64_Shdr)) return elf_error("malformed ELF file: unexpected section header size");
  const std::uint64_t sh_bytes = std::uint64_t{header.e_shnum} * sizeof(Elf64_Shdr);
  if (!in_file(header.e_shoff, sh_bytes, size)) return elf_error(truncated("the section header table", header.e_shoff + sh_bytes, size));
  auto section = [&](unsigned index) { return read_at<Elf64_Shdr>(bytes, header.e_shoff + index * sizeof(Elf64_Shdr)); };

  for (unsigned i = 0; i < header.e_shnum; ++i) {
    const auto symtab = section(i);
    if (symtab.sh_type != SHT_DYNSYM) continue;
    if (symtab.sh_entsize != sizeof(Elf64_Sym) || symtab.sh_link >= header.e_shnum)
      return elf_error("malformed ELF file: bad dynamic symbol table");
    const auto strtab = section(symtab.sh_link);
    if (!in_file(symtab.sh_offset, symtab.sh_size, size))
      return elf_error(truncated("the dynamic symbol table", symtab.sh_offset + symtab.sh_size, size));
    if (!in_file(strtab.sh_offset, strtab.sh_size, size))
      return elf_error(truncated("the dynamic string table", strtab.sh_offset + strtab.sh_size, size));
    const std::string_view strings = bytes.substr(strtab.sh_offset, strtab.sh_size);
    for (std::uint64_t off = 0; off + sizeof(Elf64_Sym) <= symtab.sh_size; off += sizeof(Elf64_Sym)) {
      const auto sym = read_at<Elf64_Sym>(bytes, symtab.sh_offset + off);
      if (sym.st_name >= strings.size()) return elf_error("malformed ELF file: symbol name out of range");
      const auto end = strings.find('\0', sym.st_name);
      if (end == std::string_view::npos) return elf_error("malformed ELF file: unterminated symbol name");
      elf.symbols_.push_back(ElfSymbol{std::string(strings.substr(sym.st_name, end - sym.st_name)),
                                       static_cast<unsigned char>(ELF64_ST_BIND(sym.st_info)),
                                       static_cast<unsigned char>(ELF64_ST_TYPE(sym.st_info)),
                                       static_cast<unsigned char>(ELF64_ST_VISIBILITY(sym.st_other)),
                                       sym.st_shndx != SHN_UNDEF, sym.st_value, sym.st_size});
    }
    return elf;
  }
  return elf_error("malformed ELF file: no dynamic symbol table");
}

const ElfSymbol* ElfFile::find_defined(std::string_view name) const noexcept {
  for (const auto& symbol : symbols_)
    if (symbol.exported() && symbol.name == name) return &symbol;
  return nullptr;
}

std::optional<std::string_view> ElfFile::bytes_at(std::uint64_t address, std::uint64_t size) const {
  for (const auto& segment : segments_) {
    if (address < segment.address) continue;
    const std::uint64_t delta = address - segment.address;
    if (!in_file(delta, size, segment.file_size)) continue;
    return bytes_.substr(segment.offset + delta, size);
  }
  return std::nullopt;
}

}  // namespace molt::host
