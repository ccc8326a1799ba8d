# PGFLEET_SANITIZER=asan-ubsan builds everything with AddressSanitizer and
# UndefinedBehaviorSanitizer; the test script runs the whole suite that way in CI.
set(PGFLEET_SANITIZER "" CACHE STRING "Sanitizer build: empty or asan-ubsan")
if(PGFLEET_SANITIZER STREQUAL "asan-ubsan")
  add_compile_options(-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
  add_link_options(-fsanitize=address,undefined)
elseif(NOT PGFLEET_SANITIZER STREQUAL "")
  message(FATAL_ERROR "Unknown PGFLEET_SANITIZER '${PGFLEET_SANITIZER}'")
endif()
