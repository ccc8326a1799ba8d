// fleetctl: the operator's CLI for pgfleet-controller. The commands live in cli/commands/, one
// file per noun; the command line is parsed in cli/app.cc.
#include <cstdio>
#include <cstring>

#include "cli/app.h"

int main(int argc, char** argv) {
  // Alone only: a command's --version names a config version (rollout start --version v3).
  if (argc == 2 && (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "-V") == 0)) {
    printf("fleetctl %s\n", PGFLEET_VERSION);  // The project's version (cmake/Packaging.cmake).
    return 0;
  }
  return pgfleet::cli::Main(argc, argv);
}
