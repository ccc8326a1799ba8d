// fleetctl: the operator's CLI for pgfleet-controller. The commands live in cli/commands/, one
// file per noun; the command line is parsed in cli/app.cc.
#include "cli/app.h"

int main(int argc, char** argv) { return pgfleet::cli::Main(argc, argv); }
