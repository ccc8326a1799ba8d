#!/usr/bin/env bash
# Builds the libFuzzer targets of tests/fuzz/ with clang in build-fuzz and runs each for a
# bounded time: scripts/fuzz.sh [seconds-per-target, default 30] [target...]
# Each target starts from its corpus in tests/fuzz/corpus/<target>/, copied to a temporary
# directory so the repo is never modified. Fails if a target crashes, naming the reproducer.
# Installs nothing: scripts/install-deps.sh provides clang and libclang-rt-14-dev.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-30}"
shift || true
targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
  targets=(protocol auth config console)
fi
jobs="${PGFLEET_JOBS:-2}"
# Debug info names the build directory, so ccache keys on it by default: every worktree or
# clone would then rebuild from scratch. Paths are made relative with CCACHE_BASEDIR instead.
export CCACHE_NOHASHDIR="${CCACHE_NOHASHDIR:-1}"
export CCACHE_BASEDIR="${CCACHE_BASEDIR:-$PWD}"
dir=build-fuzz
sanitize="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"

echo "=== build (fuzz) ==="
CC=clang CXX=clang++ cmake -S . -B "$dir" -G Ninja -DPGFLEET_FUZZ=ON \
  -DPGFLEET_BUILD_TESTS=OFF -DPGFLEET_BUILD_BENCH=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  "-DCMAKE_C_FLAGS=$sanitize" "-DCMAKE_CXX_FLAGS=$sanitize" >/dev/null
cmake --build "$dir" -j "$jobs" --target fuzzers

work="$(mktemp -d "${TMPDIR:-/tmp}/pgfleet-fuzz.XXXXXX")"
failed=()
for target in "${targets[@]}"; do
  echo "=== fuzz $target (${seconds}s) ==="
  mkdir -p "$work/$target/corpus" "$work/$target/artifacts"
  cp tests/fuzz/corpus/"$target"/* "$work/$target/corpus/"
  dict=()
  if [[ -f tests/fuzz/$target.dict ]]; then dict=("-dict=tests/fuzz/$target.dict"); fi
  log="$work/$target/fuzz.log"
  # -timeout: one input taking 10 s is a bug (a hang), not a slow machine. -rss_limit_mb
  # catches runaway allocations. Leak detection is on: a leak is reported as a crash.
  if ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:symbolize=1" \
     UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
     "$dir/tests/fuzz/${target}_fuzzer" "${dict[@]}" -max_total_time="$seconds" -timeout=10 \
       -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$work/$target/artifacts/" \
       "$work/$target/corpus" >"$log" 2>&1; then
    grep -E '^(Done|stat::number_of_executed_units|stat::new_units_added)' "$log" || true
  else
    tail -n 60 "$log"
    reproducer="$(ls "$work/$target/artifacts/"* 2>/dev/null | head -n 1 || true)"
    echo "FAILED: $target crashed; reproducer: ${reproducer:-(none written)}; log: $log" >&2
    echo "  rerun: $dir/tests/fuzz/${target}_fuzzer ${reproducer:-}" >&2
    failed+=("$target")
  fi
done

if [[ ${#failed[@]} -gt 0 ]]; then
  echo "fuzzing found crashes in: ${failed[*]} (kept in $work)" >&2
  exit 1
fi
rm -rf "$work"
echo "fuzzing: no crashes in ${targets[*]}"
