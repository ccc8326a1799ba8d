#!/usr/bin/env bash
# Issue 24's controller figures, measured with bench/controller_scale.sh in two runs:
#  1. 10,000 simulated agents (bench/agent_swarm, one TCP connection each) reporting every
#     10 s: controller CPU share and RSS, `agents list` of all 10,000, and a rollout of a new
#     config to all 10,000 in one wave until every agent ACKed;
#     targets: < 50% of one core, list < 1 s, all ACKed < 10 s.
#  2. 1,000 agents reporting every second, the figures measured before (issue 24's text:
#     21.7% of a core, last ACK 1.56 s after rollout start, ~1,016 threads), for comparison.
# Both reports are appended to bench/results/fleet-scale.txt, then a summary of the two is
# printed (and appended). The machine's load average is printed with each run: other work
# on the machine inflates the wall-clock times and the CPU share alike, so run it on an idle
# machine (`uptime`).
#
#   bench/fleet_scale.sh
#   FLEET_SCALE_ONLY=10000 bench/fleet_scale.sh    # just one of the two runs
#
# Needs the hard open-file limit (ulimit -Hn) at 10,200 or more: the controller and the swarm
# each hold one socket per agent.
set -euo pipefail
cd "$(dirname "$0")/.."
RESULTS_FILE="$PWD/bench/results/fleet-scale.txt"
ONLY="${FLEET_SCALE_ONLY:-}"
OUT="$(mktemp -d /tmp/pgfleet-fleet-scale.XXXXXX)"
trap 'rm -rf "$OUT"' EXIT

run() {  # run NAME VAR=VALUE...: one controller_scale.sh run, its report kept in $OUT/NAME
  local name="$1"
  shift
  echo "[fleet-scale] $name: $*; load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
  env "$@" SCALE_RESULTS_FILE="$RESULTS_FILE" bench/controller_scale.sh >"$OUT/$name"
}
pick() {  # pick NAME PATTERN: the value column of the report line that starts with PATTERN
  grep -m1 -- "^$2" "$OUT/$1" 2>/dev/null | cut -c54-75 | sed 's/ *$//' || true
}

if [[ -z "$ONLY" || "$ONLY" == 10000 ]]; then
  run 10000 SCALE_AGENTS=10000 SCALE_METRICS_INTERVAL=10 SCALE_CPU_TARGET=50 SCALE_ACK_TARGET=10 \
    SCALE_LIST_TARGET=1 SCALE_WINDOWS=3 SCALE_WINDOW_SECONDS=20 SCALE_WARMUP_SECONDS=20 \
    SCALE_CONNECT_RATE="${FLEET_SCALE_CONNECT_RATE:-1000}" \
    SCALE_NOTE="${SCALE_NOTE:-issue 24: 10,000 agents, one report every 10 s}"
fi
if [[ -z "$ONLY" || "$ONLY" == 1000 ]]; then
  run 1000 SCALE_AGENTS=1000 SCALE_METRICS_INTERVAL=1 \
    SCALE_NOTE="${SCALE_NOTE:-issue 24: 1,000 agents, one report a second, as measured before}"
fi

{
  echo "== fleet-scale summary, $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  printf '%-44s %-22s %-22s %s\n' "" "10,000 agents / 10 s" "1,000 agents / 1 s" "1,000 / 1 s before"
  printf '%-44s %-22s %-22s %s\n' "controller CPU (% of one core)" \
    "$(pick 10000 'controller CPU')" "$(pick 1000 'controller CPU')" "21.7% of a core"
  printf '%-44s %-22s %-22s %s\n' "controller RSS (VmRSS / VmHWM)" \
    "$(pick 10000 'controller RSS (VmRSS')" "$(pick 1000 'controller RSS (VmRSS')" "220 / 220 MB"
  printf '%-44s %-22s %-22s %s\n' "controller threads" \
    "$(pick 10000 'controller threads')" "$(pick 1000 'controller threads')" "1016"
  printf '%-44s %-22s %-22s %s\n' "rollout, one wave: last ACK sent" \
    "$(pick 10000 'rollout v')" "$(pick 1000 'rollout v')" "1.56 s"
  printf '%-44s %-22s %-22s %s\n' "  all ACKed as polled (agents list)" \
    "$(pick 10000 '  all ACKed as polled')" "$(pick 1000 '  all ACKed as polled')" "4.14 s"
  printf '%-44s %-22s %-22s %s\n' "  'rollout start' returned" \
    "$(pick 10000 "  'rollout start'")" "$(pick 1000 "  'rollout start'")" "2.23 s"
  printf '%-44s %-22s %-22s %s\n' "agents list (table), median of 3" \
    "$(pick 10000 'agents list')" "$(pick 1000 'agents list')" "-"
  printf '%-44s %-22s %-22s %s\n' "  --output json, median of 3" \
    "$(pick 10000 '  --output json')" "$(pick 1000 '  --output json')" "-"
  printf '%-44s %-22s %-22s %s\n' "ramp-up: all agents connected" \
    "$(pick 10000 'ramp-up')" "$(pick 1000 'ramp-up')" "6.2 s"
  echo
} | tee -a "$RESULTS_FILE"
