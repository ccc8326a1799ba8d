#!/usr/bin/env bash
# Issue 24's high-availability figures: three pgfleet-controllers on one PostgreSQL store and
# 100 real pgfleet-agents (real processes, a real PostgreSQL 15), the leader kill -9'd in the
# middle of a waves rollout and in the middle of a maintenance window.
#
#   bench/controller_ha.sh                 # 100 agents
#   HA_AGENTS=30 bench/controller_ha.sh
#
# It runs the integration test tests/integration/controller_ha_test.cc with PGFLEET_HA_AGENTS
# set: the test asserts what must hold (a new leader, the rollout finished from its stored
# state with every agent applying each version once and in order, the window ended on time,
# fleetctl meanwhile succeeding or failing as retryable) and prints its timings on
# "[ha-figures]" lines, which this script collects. Exit status: the test's.
# The report is appended to bench/results/controller-ha.txt (HA_RESULTS_FILE to change it).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD="${HA_BUILD_DIR:-build}"
AGENTS="${HA_AGENTS:-100}"
RESULTS_FILE="${HA_RESULTS_FILE:-$PWD/bench/results/controller-ha.txt}"
TEST="$BUILD/tests/controller_ha_test"
[[ "$AGENTS" =~ ^[1-9][0-9]*$ ]] || { echo "HA_AGENTS must be a positive integer" >&2; exit 2; }
[[ -x "$TEST" ]] || { echo "no $TEST; build first (cmake --build $BUILD)" >&2; exit 1; }
# Each agent holds a few descriptors, the controllers one stream each.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

LOG="$(mktemp /tmp/pgfleet-ha.XXXXXX)"
trap 'rm -f "$LOG"' EXIT
echo "[ha] $AGENTS agents, 3 controllers; load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
started=$(date +%s)
set +e
PGFLEET_HA_AGENTS="$AGENTS" "$TEST" >"$LOG" 2>&1
status=$?
set -e
{
  echo "== pgfleet controller HA benchmark, $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "setup:    3 controllers on PostgreSQL 15 (--leader-lease=4s --leader-renew=1s), $AGENTS pgfleet-agents, kill -9 of the leader"
  echo "machine:  nproc=$(nproc), load average $(cut -d' ' -f1-3 /proc/loadavg) at the end; $(($(date +%s) - started)) s in all"
  grep -o '\[ha-figures\].*' "$LOG" | sed 's/^\[ha-figures\] /  /' || true
  grep -E '^\[  (PASSED|FAILED) ' "$LOG" | sed 's/^/  test: /' || true
  echo
} | tee -a "$RESULTS_FILE"
if ((status != 0)); then
  grep -B2 -A12 'Failure' "$LOG" | head -60 >&2 || true
fi
exit "$status"
