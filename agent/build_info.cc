#include "agent/build_info.h"

#include <elf.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <mutex>
#include <vector>

#include "absl/strings/str_cat.h"
#include "agent/handover.h"
#include "common/config/ini_parser.h"
#include "openssl/evp.h"

namespace pgfleet::agent {
namespace {

std::string Hex(const unsigned char* data, size_t size) {
  static const char kHex[] = "0123456789abcdef";
  std::string hex;
  for (size_t i = 0; i < size; ++i) {
    hex.push_back(kHex[data[i] >> 4]);
    hex.push_back(kHex[data[i] & 15]);
  }
  return hex;
}

bool ReadAt(int fd, void* buffer, size_t size, off_t offset) {
  return pread(fd, buffer, size, offset) == static_cast<ssize_t>(size);
}

// NT_GNU_BUILD_ID from a 64-bit little-endian ELF's PT_NOTE segments; empty if none.
std::string GnuBuildId(int fd) {
  Elf64_Ehdr header;
  if (!ReadAt(fd, &header, sizeof(header), 0) || memcmp(header.e_ident, ELFMAG, SELFMAG) != 0 ||
      header.e_ident[EI_CLASS] != ELFCLASS64 || header.e_phentsize != sizeof(Elf64_Phdr)) {
    return "";
  }
  for (int i = 0; i < header.e_phnum && i < 256; ++i) {
    Elf64_Phdr segment;
    if (!ReadAt(fd, &segment, sizeof(segment),
                static_cast<off_t>(header.e_phoff + i * sizeof(Elf64_Phdr)))) {
      return "";
    }
    if (segment.p_type != PT_NOTE || segment.p_filesz > 64 * 1024) continue;
    std::vector<unsigned char> notes(segment.p_filesz);
    if (!ReadAt(fd, notes.data(), notes.size(), static_cast<off_t>(segment.p_offset))) return "";
    size_t at = 0;
    while (at + sizeof(Elf64_Nhdr) <= notes.size()) {
      Elf64_Nhdr note;
      memcpy(&note, notes.data() + at, sizeof(note));
      at += sizeof(note);
      const size_t name_size = (note.n_namesz + 3) & ~size_t{3};
      const size_t desc_size = (note.n_descsz + 3) & ~size_t{3};
      if (at + name_size + note.n_descsz > notes.size()) break;
      if (note.n_type == NT_GNU_BUILD_ID && note.n_namesz == 4 &&
          memcmp(notes.data() + at, "GNU", 4) == 0) {
        return Hex(notes.data() + at + name_size, note.n_descsz);
      }
      at += name_size + desc_size;
    }
  }
  return "";
}

}  // namespace

absl::StatusOr<std::string> BuildIdOfFile(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::ErrnoToStatus(errno, absl::StrCat("cannot open ", path));
  std::string id = GnuBuildId(fd);
  close(fd);
  if (!id.empty()) return id;
  absl::StatusOr<std::string> contents = config::ReadTextFile(path);
  if (!contents.ok()) return contents.status();
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_Digest(contents->data(), contents->size(), digest, &length, EVP_sha256(), nullptr);
  return absl::StrCat("sha256:", Hex(digest, length));
}

const std::string& RunningBuildId() {
  static const std::string id = [] {
    absl::StatusOr<std::string> read = BuildIdOfFile("/proc/self/exe");
    return read.ok() ? *read : std::string();
  }();
  return id;
}

bool BinaryOutdated() {
  static std::mutex mu;
  static struct stat seen {};
  static bool outdated = false;
  absl::StatusOr<std::string> path = ExecutablePath();
  if (!path.ok() || RunningBuildId().empty()) return false;
  struct stat now {};
  if (stat(path->c_str(), &now) != 0) return false;
  std::lock_guard<std::mutex> lock(mu);
  if (now.st_ino == seen.st_ino && now.st_dev == seen.st_dev && now.st_size == seen.st_size &&
      now.st_mtim.tv_sec == seen.st_mtim.tv_sec && now.st_mtim.tv_nsec == seen.st_mtim.tv_nsec) {
    return outdated;
  }
  absl::StatusOr<std::string> on_disk = BuildIdOfFile(*path);
  if (!on_disk.ok()) return false;
  seen = now;
  outdated = *on_disk != RunningBuildId();
  return outdated;
}

}  // namespace pgfleet::agent
