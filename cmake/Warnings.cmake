# Warnings for our own targets; generated code (protobuf) does not use this.
add_library(pgfleet_warnings INTERFACE)
target_compile_options(pgfleet_warnings INTERFACE
  -Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor -Werror)
