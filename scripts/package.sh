#!/usr/bin/env bash
# Builds the Debian packages pgfleet-agent, pgfleet-controller and fleetctl from a release build
# dir: scripts/package.sh [BUILD_DIR (default build)] [OUT_DIR (default BUILD_DIR/packages)].
# The build dir is configured with the /usr prefix (install paths only: nothing recompiles), the
# installed targets are built, and CPack (cmake/Packaging.cmake) writes one .deb per component,
# its Depends computed by dpkg-shlibdeps.
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:-build}"
out="${2:-$dir/packages}"
jobs="${PGFLEET_JOBS:-2}"
export CCACHE_NOHASHDIR="${CCACHE_NOHASHDIR:-1}"
export CCACHE_BASEDIR="${CCACHE_BASEDIR:-$PWD}"

if [[ -f "$dir/CMakeCache.txt" ]] && grep -q '^PGFLEET_SANITIZER:.*=.\+' "$dir/CMakeCache.txt"; then
  echo "package.sh: $dir is a sanitizer build; package a release build (scripts/build.sh release)" >&2
  exit 2
fi
cmake -S . -B "$dir" -G Ninja -DCMAKE_INSTALL_PREFIX=/usr >/dev/null
targets=(pgfleet-agent pgfleet-controller fleetctl pgfleet_man_pages)
# The dashboard, when node/npm are there (the controller package ships it).
build_targets="$(cmake --build "$dir" --target help)"
if grep -q '^pgfleet_web:' <<<"$build_targets"; then targets+=(pgfleet_web); fi
cmake --build "$dir" -j "$jobs" --target "${targets[@]}"

mkdir -p "$out"
out="$(cd "$out" && pwd)"
rm -f "$out"/*.deb
if ! (cd "$dir" && cpack -G DEB -B "$out" >"$out/cpack.log" 2>&1); then
  cat "$out/cpack.log" >&2
  exit 1
fi
rm -f "$out/cpack.log"
rm -rf "$out/_CPack_Packages"
ls -1 "$out"/*.deb
