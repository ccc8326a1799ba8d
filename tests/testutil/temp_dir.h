// A test's scratch directory. Header-only, so the unit tests (which link no test library) use
// the same one as the integration fixtures.
#pragma once

#include <stdio.h>
#include <stdlib.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace pgfleet::testutil {

// PGFLEET_KEEP_TEST_DIRS=1: leave the tests' temp dirs behind for a look.
inline bool KeepTestDirs() {
  const char* keep = std::getenv("PGFLEET_KEEP_TEST_DIRS");
  return keep != nullptr && std::string(keep) == "1";
}

// A fresh directory under $TEST_TMPDIR or /tmp named after `prefix`, removed at destruction
// unless KeepTestDirs().
class TempDir {
 public:
  TempDir() = default;
  ~TempDir() {
    if (path_.empty()) return;
    if (KeepTestDirs()) {
      fprintf(stderr, "keeping %s\n", path_.c_str());
      return;
    }
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  absl::Status Create(const std::string& prefix) {
    const char* tmp = std::getenv("TEST_TMPDIR");
    std::string tmpl = absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/", prefix, "-XXXXXX");
    if (mkdtemp(tmpl.data()) == nullptr) {
      return absl::InternalError(absl::StrCat("mkdtemp ", tmpl, ": ", std::strerror(errno)));
    }
    path_ = tmpl;
    return absl::OkStatus();
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace pgfleet::testutil
