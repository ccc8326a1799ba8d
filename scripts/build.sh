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
# Debug info names the build directory, so ccache keys on it by default: every worktree or
# clone would then rebuild from scratch. Paths are made relative with CCACHE_BASEDIR instead.
export CCACHE_NOHASHDIR="${CCACHE_NOHASHDIR:-1}"
export CCACHE_BASEDIR="${CCACHE_BASEDIR:-$PWD}"
cmake -S . -B "$dir" -G Ninja "${extra[@]}" >/dev/null
cmake --build "$dir" -j "$jobs"
