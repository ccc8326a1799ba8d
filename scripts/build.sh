#!/usr/bin/env bash
# Configures and builds one flavour of the tree: scripts/build.sh [release|asan]
set -euo pipefail
cd "$(dirname "$0")/.."
flavour="${1:-release}"
case "$flavour" in
  release) dir=build; extra=() ;;
  asan) dir=build-asan; extra=(-DPGFLEET_SANITIZER=asan-ubsan -DCMAKE_BUILD_TYPE=Debug) ;;
  *) echo "usage: scripts/build.sh [release|asan]" >&2; exit 2 ;;
esac
jobs="${PGFLEET_JOBS:-2}"
cmake -S . -B "$dir" -G Ninja "${extra[@]}" >/dev/null
cmake --build "$dir" -j "$jobs"
