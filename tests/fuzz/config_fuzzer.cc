// The config parsers: pgbouncer.ini (ini_parser + config building, %include included),
// auth_file, and SET's per-key parser. Config files come from operators and, through the
// controller, from anyone with the operator role, so a bad file must be an error, never a crash.
//
// Input: a mode byte, then text.
//   mode % 3 == 0: ParseConfig. A loaded config's SHOW CONFIG values must be accepted back by
//                  SET (ApplySetting) and leave SHOW CONFIG unchanged.
//   mode % 3 == 1: ParseAuthFile.
//   mode % 3 == 2: ApplySetting("key = value") on the default config.
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "common/config/auth_file.h"
#include "common/config/config.h"
#include "common/config/ini_parser.h"
#include "tests/fuzz/fuzz_util.h"

namespace config = pgfleet::config;

namespace {

// mkdtemp's result; a plain array, so the atexit cleanup does not outlive a std::string.
char include_dir_path[] = "/tmp/pgfleet-config-fuzz.XXXXXX";

// A directory holding files the fuzzed config may %include by bare name: a valid fragment,
// one that includes itself, two that include each other, and a broken one.
const std::string& IncludeDir() {
  static const std::string dir = [] {
    PGF_FUZZ_CHECK(mkdtemp(include_dir_path) != nullptr);
    const std::string path = include_dir_path;
    auto write = [&](const char* name, const char* text) {
      std::ofstream(path + "/" + name) << text;
    };
    write("databases.ini", "[databases]\nappdb = host=127.0.0.1 port=5432 dbname=app\n");
    write("pgbouncer.ini", "[pgbouncer]\nlisten_port = 6433\n%include databases.ini\n");
    write("self.ini", "%include self.ini\n");
    write("a.ini", "%include b.ini\n");
    write("b.ini", "%include a.ini\n");
    write("broken.ini", "[databases\n");
    // Removed at exit; a crash leaves a few bytes in /tmp.
    std::atexit([] {
      for (const char* name :
           {"databases.ini", "pgbouncer.ini", "self.ini", "a.ini", "b.ini", "broken.ini"}) {
        unlink((std::string(include_dir_path) + "/" + name).c_str());
      }
      rmdir(include_dir_path);
    });
    return path;
  }();
  return dir;
}

// Includes name files on disk. The fuzzer may only reach the files above: a path with '/'
// could name /dev/zero or a FIFO and turn the run into a hang, which is not a parser bug.
bool IncludesStayInDir(std::string_view text) {
  for (size_t at = text.find("%include"); at != std::string_view::npos;
       at = text.find("%include", at + 1)) {
    const size_t end = text.find('\n', at);
    if (text.substr(at, end == std::string_view::npos ? end : end - at).find('/') !=
        std::string_view::npos) {
      return false;
    }
  }
  return true;
}

void CheckLoadedConfig(const config::Config& loaded) {
  const std::vector<config::ConfigEntry> described = config::DescribeConfig(loaded);
  config::Config copy = loaded;
  for (const config::ConfigEntry& entry : described) {
    PGF_FUZZ_CHECK(!entry.key.empty());
    if (!entry.changeable) continue;
    // Durations of 1e6 s and more print in "%g"'s exponent form ("1.23457e+06"), like
    // PgBouncer's; the duration parser refuses exponents on purpose (config_test's
    // BadDuration), so those cannot round-trip.
    if (entry.value.find("e+") != std::string::npos) continue;
    // What SHOW CONFIG prints, SET must take back.
    absl::Status status = config::ApplySetting(copy, entry.key, entry.value);
    if (!status.ok()) {
      std::fprintf(stderr, "SET %s = '%s': %s\n", entry.key.c_str(), entry.value.c_str(),
                   std::string(status.message()).c_str());
    }
    PGF_FUZZ_CHECK(status.ok());
  }
  const std::vector<config::ConfigEntry> again = config::DescribeConfig(copy);
  PGF_FUZZ_CHECK(again.size() == described.size());
  for (size_t i = 0; i < again.size(); ++i) {
    if (again[i].value != described[i].value) {
      std::fprintf(stderr, "%s: '%s' became '%s'\n", again[i].key.c_str(),
                   described[i].value.c_str(), again[i].value.c_str());
    }
    PGF_FUZZ_CHECK(again[i].value == described[i].value);
  }
  for (const auto& [name, db] : loaded.databases) {
    std::optional<config::DatabaseConfig> found = loaded.FindDatabase(name);
    PGF_FUZZ_CHECK(found.has_value() && found->name == name);
    PGF_FUZZ_CHECK(db.port >= 1 && db.port <= 65535);
  }
  (void)loaded.FindDatabase("no-such-database-name");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  pgfleet::fuzz::RecordReader input(data, size);
  const uint8_t mode = input.Byte() % 3;
  const std::string text(input.Rest());
  switch (mode) {
    case 0: {
      if (!IncludesStayInDir(text)) return 0;
      const std::string path = IncludeDir() + "/fuzz.ini";
      absl::StatusOr<std::vector<config::IniEntry>> entries = config::ParseIni(text, path);
      absl::StatusOr<config::Config> loaded = config::ParseConfig(text, path);
      if (!entries.ok()) PGF_FUZZ_CHECK(!loaded.ok());
      if (!loaded.ok()) {
        PGF_FUZZ_CHECK(!loaded.status().message().empty());
        return 0;
      }
      CheckLoadedConfig(*loaded);
      break;
    }
    case 1: {
      absl::StatusOr<config::AuthFile> users = config::ParseAuthFile(text, "userlist.txt");
      if (!users.ok()) {
        PGF_FUZZ_CHECK(absl::StrContains(users.status().message(), "userlist.txt:"));
        return 0;
      }
      for (const auto& [name, secret] : *users) {
        PGF_FUZZ_CHECK(!name.empty() && name == secret.user);
      }
      break;
    }
    case 2: {
      const size_t eq = text.find('=');
      if (eq == std::string::npos) return 0;
      config::Config settings;
      const config::Config before = settings;
      absl::Status status = config::ApplySetting(settings, text.substr(0, eq), text.substr(eq + 1));
      if (!status.ok()) {
        // A refused SET leaves the config untouched.
        const std::vector<config::ConfigEntry> a = config::DescribeConfig(before);
        const std::vector<config::ConfigEntry> b = config::DescribeConfig(settings);
        for (size_t i = 0; i < a.size(); ++i) PGF_FUZZ_CHECK(a[i].value == b[i].value);
        return 0;
      }
      CheckLoadedConfig(settings);
      break;
    }
  }
  return 0;
}
