#include "agent/build_info.h"

#include <elf.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cstring>
#include <mutex>
#include <vector>

#include "absl/strings/str_cat.h"
#include "agent/handover.h"
#include "common/config/ini_parser.h"
#include "openssl/evp.h"

#ifndef PGFLEET_VERSION
#error "PGFLEET_VERSION is set by agent/CMakeLists.txt from the project's version"
#endif

namespace pgfleet::agent {

const char kAgentVersion[] = PGFLEET_VERSION;
const char kVersionLine[] = "PgBouncer 1.25.2 (pgfleet-agent " PGFLEET_VERSION ")";

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

constexpr char kStampTag[] = "@(#)pgfleet-agent-version ";
constexpr char kVersion[] = PGFLEET_VERSION;

// "@(#)pgfleet-agent-version 0.1.0" (the project version) in the binary's data (what(1) finds it
// too), so another process can tell which version a file on disk is without running it.
constexpr auto MakeVersionStamp() {
  std::array<char, sizeof(kStampTag) + sizeof(kVersion) - 1> stamp{};
  size_t at = 0;
  for (size_t i = 0; i + 1 < sizeof(kStampTag); ++i) stamp[at++] = kStampTag[i];
  for (size_t i = 0; i + 1 < sizeof(kVersion); ++i) stamp[at++] = kVersion[i];
  return stamp;
}
[[gnu::used]] constexpr std::array<char, sizeof(kStampTag) + sizeof(kVersion) - 1> kVersionStamp =
    MakeVersionStamp();

struct Cache {
  std::mutex mu;
  struct stat seen {};
  OnDiskBinary on_disk;
};

Cache& OnDiskCache() {
  static Cache cache;
  return cache;
}

}  // namespace

std::string EmbeddedVersionOfFile(const std::string& path) {
  // Mapped, not read: the stamp sits in .rodata near the start of a binary that may be tens of
  // megabytes with debug info, and the hello waits for this.
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "";
  struct stat st {};
  if (fstat(fd, &st) != 0 || st.st_size <= 0) {
    close(fd);
    return "";
  }
  const size_t size = static_cast<size_t>(st.st_size);
  void* mapped = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  close(fd);
  if (mapped == MAP_FAILED) return "";
  const char* const data = static_cast<const char*>(mapped);
  // The tag as the stamp spells it; the first occurrence followed by a version is the stamp
  // (the tag alone, NUL-terminated, may be in the binary too).
  const size_t tag_size = sizeof(kStampTag) - 1;
  std::string version;
  for (const char* at =
           static_cast<const char*>(memmem(data, size, kVersionStamp.data(), tag_size));
       at != nullptr && version.empty();) {
    const char* end = at + tag_size;
    while (end < data + size && end - at - tag_size < 64 &&
           (isalnum(static_cast<unsigned char>(*end)) || *end == '.' || *end == '-' ||
            *end == '+' || *end == '~')) {
      ++end;
    }
    if (end > at + tag_size) {
      version.assign(at + tag_size, end);
      break;
    }
    const size_t offset = static_cast<size_t>(at - data) + 1;
    at = static_cast<const char*>(
        memmem(data + offset, size - offset, kVersionStamp.data(), tag_size));
  }
  munmap(mapped, size);
  return version;
}

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

OnDiskBinary BinaryOnDisk() {
  absl::StatusOr<std::string> path = ExecutablePath();
  if (!path.ok()) return {};
  struct stat now {};
  if (stat(path->c_str(), &now) != 0) return {};
  Cache& cache = OnDiskCache();
  std::lock_guard<std::mutex> lock(cache.mu);
  const struct stat& seen = cache.seen;
  if (now.st_ino == seen.st_ino && now.st_dev == seen.st_dev && now.st_size == seen.st_size &&
      now.st_mtim.tv_sec == seen.st_mtim.tv_sec && now.st_mtim.tv_nsec == seen.st_mtim.tv_nsec) {
    return cache.on_disk;
  }
  absl::StatusOr<std::string> on_disk = BuildIdOfFile(*path);
  if (!on_disk.ok()) return {};
  cache.seen = now;
  cache.on_disk.build_id = *on_disk;
  cache.on_disk.version = EmbeddedVersionOfFile(*path);
  return cache.on_disk;
}

bool BinaryOutdated() {
  if (RunningBuildId().empty()) return false;
  const OnDiskBinary on_disk = BinaryOnDisk();
  // A file that cannot be read is nothing newer to restart into.
  return !on_disk.build_id.empty() && on_disk.build_id != RunningBuildId();
}

}  // namespace pgfleet::agent
