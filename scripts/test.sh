#!/usr/bin/env bash
# The one command that installs what is missing, builds, and runs every test:
# the release build, then the same suite under AddressSanitizer + UndefinedBehaviorSanitizer,
# then a short run of each libFuzzer target.
# Set PGFLEET_SKIP_ASAN=1 for a quicker local loop, PGFLEET_SKIP_FUZZ=1 to skip the fuzz runs
# (PGFLEET_FUZZ_SECONDS per target, default 20), PGFLEET_TEST_JOBS for ctest's -j (default 4,
# 3 for the sanitized pass).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
# node-postgres for the prepared-statement driver tests, from the committed lock file.
npm ci --prefix tests/integration/clients --no-audit --no-fund --loglevel=error

run_suite() {
  local flavour="$1" dir="$2" jobs="$3"
  echo "=== build ($flavour) ==="
  scripts/build.sh "$flavour"
  echo "=== tests ($flavour) ==="
  (cd "$dir" && ctest --output-on-failure -j "$jobs" --timeout 600)
}

export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
# More tests than cores: most of them wait on PostgreSQL, agents and timers rather than compute
# (a release run's children use under half a core each). The sanitized agent computes several
# times more per message, so that pass runs three at a time.
run_suite release build "${PGFLEET_TEST_JOBS:-4}"
# The Debian packages, built from the release build, checked and run from a temporary root.
echo "=== packages ==="
scripts/test-packages.sh build
if [[ "${PGFLEET_SKIP_ASAN:-0}" != 1 ]]; then
  run_suite asan build-asan "${PGFLEET_TEST_JOBS:-3}"
fi
# libFuzzer targets (tests/fuzz/), a bounded run each over a temporary copy of the corpus.
if [[ "${PGFLEET_SKIP_FUZZ:-0}" != 1 ]]; then
  scripts/fuzz.sh "${PGFLEET_FUZZ_SECONDS:-20}"
fi
