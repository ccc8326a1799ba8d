#!/usr/bin/env bash
# Controller scale benchmark: one pgfleet-controller, N simulated agents (bench/agent_swarm,
# real gRPC streams) reporting metrics every second, then a config rollout to all of them.
#
#   bench/controller_scale.sh                       # 1000 agents, 3 CPU windows of 10 s
#   SCALE_AGENTS=200 SCALE_WINDOWS=1 bench/controller_scale.sh
#   SCALE_AGENTS=10000 SCALE_METRICS_INTERVAL=10 SCALE_CPU_TARGET=50 SCALE_ACK_TARGET=10 \
#     bench/controller_scale.sh                     # issue 24's fleet (bench/fleet_scale.sh)
#
# Measures, against the targets of issue #9:
#  * the controller's CPU (utime+stime of all its threads from /proc/PID/stat, as % of one
#    core) while N agents report every second; target < 25%;
#  * its RSS (VmRSS, VmHWM) and thread count;
#  * `fleetctl agents list` of every agent, as a table and as JSON: the command's wall time
#    (3 runs each);
#  * a rollout of a new config version to every agent (one 100% wave, the shortest bake the
#    CLI allows, 1 s): the time from just before `fleetctl rollout start` runs until the last
#    agent sent its ACK (the swarm's clock; target < 5 s), and until the controller showed
#    every agent on the new version (`fleetctl agents list` polled: an upper
#    bound that includes the polls' own latency). The rollout's end (after its bake) too.
# Prints a table and appends it to bench/results/controller-scale.txt. Nothing is asserted:
# exit status 0 means the report was written, 1 that something failed to start or converge.
#
# Variables: SCALE_BUILD_DIR (default build), SCALE_AGENTS (1000), SCALE_WINDOWS (3),
# SCALE_METRICS_INTERVAL (1: seconds between two reports of an agent), SCALE_CPU_TARGET (25),
# SCALE_ACK_TARGET (5), SCALE_LIST_TARGET (1: seconds for agents list),
# SCALE_CONNECT_RATE (500: the swarm's new streams per second while ramping up),
# SCALE_WINDOW_SECONDS (10), SCALE_WARMUP_SECONDS (10), SCALE_AGENTS_PER_CONNECTION (1),
# SCALE_CONTROLLER_BIN (another pgfleet-controller binary to measure, e.g. a saved baseline),
# SCALE_NOTE (a line for the report: what was measured), SCALE_RESULTS_FILE (where the report
# is appended; bench/results/controller-scale.txt),
# SCALE_PERF=1 (perf record -g the controller during the first CPU window, report in the
# state dir, kept), SCALE_KEEP=1 (keep the temp dir: controller log, swarm status, SQLite).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$PWD"
RESULTS="$REPO/bench/results"

BUILD="${SCALE_BUILD_DIR:-build}"
[[ "$BUILD" = /* ]] || BUILD="$REPO/$BUILD"
AGENTS="${SCALE_AGENTS:-1000}"
WINDOWS="${SCALE_WINDOWS:-3}"
WINDOW_SECONDS="${SCALE_WINDOW_SECONDS:-10}"
WARMUP="${SCALE_WARMUP_SECONDS:-10}"
PER_CONNECTION="${SCALE_AGENTS_PER_CONNECTION:-1}"
INTERVAL="${SCALE_METRICS_INTERVAL:-1}"
CONNECT_RATE="${SCALE_CONNECT_RATE:-500}"
ENV_NAME=scale
CPU_TARGET="${SCALE_CPU_TARGET:-25}"     # % of one core
ACK_TARGET="${SCALE_ACK_TARGET:-5}"      # seconds
LIST_TARGET="${SCALE_LIST_TARGET:-1}"    # seconds

log() { echo "[scale $(date +%H:%M:%S)] $*" >&2; }
die() { log "ERROR: $1"; exit 1; }

for var in AGENTS WINDOWS WINDOW_SECONDS WARMUP PER_CONNECTION INTERVAL CONNECT_RATE; do
  [[ "${!var}" =~ ^[1-9][0-9]*$ ]] || die "$var must be a positive integer"
done
for tool in python3 getconf; do command -v "$tool" >/dev/null || die "missing $tool"; done
for bin in controller/pgfleet-controller cli/fleetctl bench/agent_swarm; do
  [[ -x "$BUILD/$bin" ]] || die "no $BUILD/$bin; build first (cmake --build $BUILD)"
done
CONTROLLER_SRC="${SCALE_CONTROLLER_BIN:-$BUILD/controller/pgfleet-controller}"
[[ -x "$CONTROLLER_SRC" ]] || die "no controller binary at $CONTROLLER_SRC"

STATE="$(mktemp -d /tmp/pgfleet-scale.XXXXXX)"
# Private copies: others may rebuild the build dir while this runs.
cp "$BUILD/cli/fleetctl" "$BUILD/bench/agent_swarm" "$STATE/"
cp "$CONTROLLER_SRC" "$STATE/pgfleet-controller"
CONTROLLER_PID=""
SWARM_PID=""
stop_pid() {  # stop_pid PID: TERM, wait up to 10 s, then KILL
  local pid="$1"
  [[ -n "$pid" ]] || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  stop_pid "$SWARM_PID"
  stop_pid "$CONTROLLER_PID"
  if [[ "${SCALE_KEEP:-0}" == 1 || "${SCALE_PERF:-0}" == 1 ]]; then
    log "kept $STATE"
  else
    rm -rf "$STATE"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The controller does not raise its own descriptor limit and needs one per agent connection
# (the swarm raises its own, to the same hard limit).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE="$(ulimit -n)"
if [[ "$NOFILE" != unlimited ]] && ((NOFILE < AGENTS / PER_CONNECTION + 200)); then
  die "open-file limit $NOFILE is too low for $AGENTS agents (raise the hard limit: ulimit -Hn)"
fi
HZ="$(getconf CLK_TCK)"

TOKEN="scale-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
CONTROLLER_ARGS=(--listen=127.0.0.1:0 --db="$STATE/fleet.db" --port-file="$STATE/port"
  --metrics-interval="${INTERVAL}s")
# The help read once into a variable: piped straight into `grep -q`, a long help dies of
# SIGPIPE when grep stops reading, and pipefail then reads that as "no such flag".
CONTROLLER_HELP="$("$STATE/pgfleet-controller" --help 2>/dev/null || true)"
# The dashboard (and its in-memory metrics history) on a free port, where the controller has
# one: it is part of what a controller does with every report.
if grep -q -- --http-listen <<<"$CONTROLLER_HELP"; then
  CONTROLLER_ARGS+=(--http-listen=127.0.0.1:0)
fi
# The swarm's simulated agents carry no join tokens (a baseline binary has no such flag).
if grep -q -- --insecure-agents <<<"$CONTROLLER_HELP"; then
  CONTROLLER_ARGS+=(--insecure-agents)
fi
log "starting pgfleet-controller (state in $STATE)"
PGFLEET_BOOTSTRAP_TOKEN="$TOKEN" "$STATE/pgfleet-controller" "${CONTROLLER_ARGS[@]}" \
  >"$STATE/controller.log" 2>&1 &
CONTROLLER_PID=$!
for _ in $(seq 300); do [[ -s "$STATE/port" ]] && break; sleep 0.1; done
[[ -s "$STATE/port" ]] || { tail -20 "$STATE/controller.log" >&2; die "controller did not start"; }
PORT="$(cat "$STATE/port")"
export PGFLEET_CONTROLLER="127.0.0.1:$PORT" PGFLEET_TOKEN="$TOKEN"
FLEETCTL="$STATE/fleetctl"

# --------------------------------------------------------------------------------------------
# Helpers. cpu_ticks PID: utime+stime of all threads (fields 14 and 15 of /proc/PID/stat; the
# command name in field 2 may contain spaces, so count from the closing parenthesis).
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; }
status_kb() { awk -v key="$2:" '$1 == key { print $2 }' "/proc/$1/status"; }
now_ms() { date +%s%3N; }
swarm_field() {  # swarm_field EXPR: a Python expression over the swarm's status JSON `s`
  python3 -c "import json,sys; s=json.load(open(sys.argv[1])); print($1)" "$STATE/swarm.json"
}

# --------------------------------------------------------------------------------------------
log "starting agent_swarm: $AGENTS agents, $PER_CONNECTION per connection"
RAMP_START=$(now_ms)
"$STATE/agent_swarm" --controller="127.0.0.1:$PORT" --agents="$AGENTS" --env="$ENV_NAME" \
  --agents-per-connection="$PER_CONNECTION" --status-file="$STATE/swarm.json" \
  --connect-rate="$CONNECT_RATE" \
  >"$STATE/swarm.log" 2>&1 &
SWARM_PID=$!
CONNECTED=0
for _ in $(seq 1200); do
  kill -0 "$SWARM_PID" 2>/dev/null || { tail -20 "$STATE/swarm.log" >&2; die "agent_swarm died"; }
  kill -0 "$CONTROLLER_PID" 2>/dev/null || { tail -20 "$STATE/controller.log" >&2; die "controller died"; }
  if [[ -s "$STATE/swarm.json" ]]; then
    CONNECTED=$(swarm_field 's["connected"]')
    [[ "$CONNECTED" -ge "$AGENTS" ]] && break
  fi
  sleep 0.25
done
[[ "$CONNECTED" -ge "$AGENTS" ]] || die "only $CONNECTED of $AGENTS agents connected after 5 minutes"
RAMP_S=$(awk -v a="$RAMP_START" -v b="$(now_ms)" 'BEGIN { printf "%.1f", (b - a) / 1000 }')
log "all $AGENTS agents connected after ${RAMP_S} s; warming up ${WARMUP} s"
sleep "$WARMUP"

# --------------------------------------------------------------------------------------------
# Steady state: CPU per window, RSS, report rate.
CPU_PCTS=()
REPORT_RATES=()
SWARM_CPU_PCTS=()
PERF_PID=""
for ((w = 1; w <= WINDOWS; w++)); do
  if [[ "${SCALE_PERF:-0}" == 1 && $w == 1 ]]; then
    perf record -e cpu-clock -F 499 -g -p "$CONTROLLER_PID" -o "$STATE/perf.data" \
      -- sleep "$WINDOW_SECONDS" >"$STATE/perf-record.log" 2>&1 &
    PERF_PID=$!
  fi
  t0=$(now_ms); c0=$(cpu_ticks "$CONTROLLER_PID"); s0=$(cpu_ticks "$SWARM_PID")
  r0=$(swarm_field 's["reports_sent"]')
  sleep "$WINDOW_SECONDS"
  t1=$(now_ms); c1=$(cpu_ticks "$CONTROLLER_PID"); s1=$(cpu_ticks "$SWARM_PID")
  r1=$(swarm_field 's["reports_sent"]')
  pct=$(awk -v c="$((c1 - c0))" -v hz="$HZ" -v ms="$((t1 - t0))" \
    'BEGIN { printf "%.1f", c / hz / (ms / 1000) * 100 }')
  spct=$(awk -v c="$((s1 - s0))" -v hz="$HZ" -v ms="$((t1 - t0))" \
    'BEGIN { printf "%.1f", c / hz / (ms / 1000) * 100 }')
  # The swarm's counter is rewritten once a second, so the rate is over whole seconds.
  rate=$(awk -v r="$((r1 - r0))" -v ms="$((t1 - t0))" 'BEGIN { printf "%.0f", r / (ms / 1000) }')
  CPU_PCTS+=("$pct")
  SWARM_CPU_PCTS+=("$spct")
  REPORT_RATES+=("$rate")
  log "window $w/$WINDOWS: controller CPU ${pct}% of one core, swarm ${spct}%, ~${rate} reports/s"
done
[[ -n "$PERF_PID" ]] && wait "$PERF_PID" 2>/dev/null || true
RSS_KB=$(status_kb "$CONTROLLER_PID" VmRSS)
HWM_KB=$(status_kb "$CONTROLLER_PID" VmHWM)
THREADS=$(status_kb "$CONTROLLER_PID" Threads)
LOAD_STEADY="$(cut -d' ' -f1-3 /proc/loadavg)"
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
CPU_MEDIAN=$(median "${CPU_PCTS[@]}")

# agents list of the whole fleet, as an operator runs it: the table (the target), and the JSON
# a script reads, which has every agent's newest metrics report (~3.5 KB an agent): the wall
# time of the fleetctl process, 3 runs each.
LIST_TIMES=()
JSON_LIST_TIMES=()
LISTED=0
for _ in 1 2 3; do
  t0=$(now_ms)
  "$FLEETCTL" agents list --env "$ENV_NAME" >"$STATE/agents.txt" || die "agents list failed"
  LIST_TIMES+=("$(awk -v a="$t0" -v b="$(now_ms)" 'BEGIN { printf "%.2f", (b - a) / 1000 }')")
  t0=$(now_ms)
  "$FLEETCTL" --output json agents list --env "$ENV_NAME" >"$STATE/agents.json" ||
    die "agents list --output json failed"
  JSON_LIST_TIMES+=("$(awk -v a="$t0" -v b="$(now_ms)" 'BEGIN { printf "%.2f", (b - a) / 1000 }')")
  LISTED=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1])).get("agents", [])))' \
    "$STATE/agents.json")
done
LIST_MEDIAN=$(median "${LIST_TIMES[@]}")
JSON_LIST_MEDIAN=$(median "${JSON_LIST_TIMES[@]}")
rm -f "$STATE/agents.json"
log "agents list: $LISTED agents in ${LIST_TIMES[*]} s (table), ${JSON_LIST_TIMES[*]} s (JSON)"

# --------------------------------------------------------------------------------------------
# Config: a realistic pgbouncer.ini. v1 is applied to everyone (an environment's first version
# cannot be rolled out: there would be nothing to roll back to), then v2 is rolled out.
write_ini() {  # write_ini FILE POOL_SIZE
  {
    echo "[databases]"
    for db in 0 1 2; do
      echo "appdb_$db = host=10.0.0.$((10 + db)) port=5432 dbname=appdb_$db pool_size=$2"
    done
    echo "* = host=10.0.0.10 port=5432"
    echo
    echo "[pgbouncer]"
    echo "listen_addr = 0.0.0.0"
    echo "listen_port = 6432"
    echo "auth_type = scram-sha-256"
    echo "auth_file = /etc/pgbouncer/userlist.txt"
    echo "admin_users = admin"
    echo "stats_users = stats"
    echo "pool_mode = transaction"
    echo "max_client_conn = 5000"
    echo "default_pool_size = $2"
    echo "reserve_pool_size = 5"
    echo "server_idle_timeout = 600"
    echo "query_wait_timeout = 120"
    echo "log_connections = 0"
    echo "log_disconnections = 0"
  } >"$1"
}
push() {  # push FILE MESSAGE: prints the new version number
  "$FLEETCTL" --output json config push --env "$ENV_NAME" -f "$1" -m "$2" |
    python3 -c 'import json,sys; print(int(json.load(sys.stdin)["version"]))'
}
# wait_acked VERSION START_MS: polls the controller until every agent reports VERSION
# applied; prints "seconds polls mean_poll_seconds" (seconds since START_MS when the poll that
# saw it began; each poll is a fleetctl process listing every agent as a table).
wait_acked() {
  python3 - "$FLEETCTL" "$ENV_NAME" "$1" "$2" "$AGENTS" <<'PY'
import json, subprocess, sys, time
fleetctl, env, version, start_ms, agents = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
polls, polling_ms = 0, 0.0
while time.time() * 1000 - start_ms < 120000:
    began = time.time() * 1000
    # The table, not --output json: at 10,000 agents the JSON (every agent's metrics) takes
    # seconds to print, which would be measured here as rollout time.
    out = subprocess.run([fleetctl, "agents", "list", "--env", env],
                         capture_output=True, text=True)
    polls += 1
    polling_ms += time.time() * 1000 - began
    if out.returncode == 0:
        # AGENT ENV LINK APPLIED ...: the applied version is the 4th column ("v2").
        rows = [line.split() for line in out.stdout.splitlines()[1:]]
        acked = sum(1 for row in rows if len(row) > 3 and row[3] == "v%d" % version)
        if acked >= agents:
            print("%.2f %d %.2f" % ((began - start_ms) / 1000, polls, polling_ms / polls / 1000))
            sys.exit(0)
    time.sleep(0.1)
print("timeout %d 0" % polls)
sys.exit(1)
PY
}
write_ini "$STATE/v1.ini" 20
write_ini "$STATE/v2.ini" 25
V1=$(push "$STATE/v1.ini" "scale benchmark base") || die "config push failed"
log "pushed v$V1; applying it to all $AGENTS agents"
APPLY_START=$(now_ms)
"$FLEETCTL" config apply --env "$ENV_NAME" --version "v$V1" >/dev/null
read -r APPLY_S APPLY_POLLS APPLY_POLL_S < <(wait_acked "$V1" "$APPLY_START") || die "v$V1 did not converge"
log "v$V1 on every agent after ${APPLY_S} s"
sleep 3  # Let the apply's traffic settle before the rollout.

V2=$(push "$STATE/v2.ini" "scale benchmark: pool size 25") || die "config push failed"
log "pushed v$V2; rollout to 100% with a 1 s bake"
c0=$(cpu_ticks "$CONTROLLER_PID")
ROLLOUT_START=$(now_ms)
ROLLOUT_ID=$("$FLEETCTL" --output json rollout start --env "$ENV_NAME" --version "v$V2" \
  --waves 100% --bake 1s | python3 -c 'import json,sys; print(int(json.load(sys.stdin)["id"]))') ||
  die "rollout start failed"
START_CMD_S=$(awk -v a="$ROLLOUT_START" -v b="$(now_ms)" 'BEGIN { printf "%.2f", (b - a) / 1000 }')
read -r ACK_S ACK_POLLS ACK_POLL_S < <(wait_acked "$V2" "$ROLLOUT_START") || die "v$V2 did not converge"
c1=$(cpu_ticks "$CONTROLLER_PID")
ACK_CPU_S=$(awk -v c="$((c1 - c0))" -v hz="$HZ" 'BEGIN { printf "%.2f", c / hz }')
log "every agent ACKed v$V2 ${ACK_S} s after rollout start (controller's view)"
ROLLOUT_STATE=""
for _ in $(seq 600); do
  ROLLOUT_STATE=$("$FLEETCTL" --output json rollout status "$ROLLOUT_ID" 2>/dev/null |
    python3 -c 'import json,sys; print(json.load(sys.stdin).get("state", ""))' || true)
  [[ "$ROLLOUT_STATE" == running || -z "$ROLLOUT_STATE" ]] || break
  sleep 0.2
done
DONE_S=$(awk -v a="$ROLLOUT_START" -v b="$(now_ms)" 'BEGIN { printf "%.1f", (b - a) / 1000 }')
sleep 1.5  # One more status write of the swarm.
SWARM_ACK_S=$(swarm_field "'%.2f' % ((s['versions']['$V2']['last_acked_ms'] - $ROLLOUT_START) / 1000)")
SWARM_FIRST_S=$(swarm_field "'%.2f' % ((s['versions']['$V2']['first_received_ms'] - $ROLLOUT_START) / 1000)")
SWARM_ACKS=$(swarm_field "s['versions']['$V2']['acked']")
RECONNECTS=$(swarm_field "s['streams_started'] - s['agents']")
RSS_END_KB=$(status_kb "$CONTROLLER_PID" VmRSS)
DB_KB=$(du -sk "$STATE"/fleet.db* | awk '{ s += $1 } END { print s }')

# --------------------------------------------------------------------------------------------
describe_commit() {
  if git -C "$REPO" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    local rev
    rev=$(git -C "$REPO" rev-parse --short HEAD)
    git -C "$REPO" diff --quiet HEAD -- controller || rev+=" (controller/ has uncommitted changes)"
    echo "$rev"
  else
    echo "unknown (not a git checkout)"
  fi
}
verdict() { awk -v v="$1" -v t="$2" 'BEGIN { print (v < t) ? "met" : "NOT met" }'; }
CPU_MODEL=$(grep -m1 -E '^(model name|Model|cpu model)' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//')
REPORT="$STATE/report.txt"
{
  echo "== pgfleet controller scale benchmark, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "machine:    nproc=$(nproc), CPU: ${CPU_MODEL:-unknown}, kernel: $(uname -srm)"
  [[ -z "${SCALE_NOTE:-}" ]] || echo "note:       $SCALE_NOTE"
  echo "commit:     $(describe_commit)"
  echo "controller: $CONTROLLER_SRC ${CONTROLLER_ARGS[*]//$STATE\//}"
  echo "setup:      $AGENTS agents ($PER_CONNECTION per TCP connection), metrics every $INTERVAL s," \
    "$WINDOWS x ${WINDOW_SECONDS} s CPU windows after ${WARMUP} s warm-up; nofile $NOFILE"
  echo "loadavg:    $LOAD_STEADY (end of the CPU windows; other work on the machine inflates nothing"
  echo "            below but the wall-clock times)"
  echo
  printf '%-52s %-22s %-8s %s\n' "measure" "value" "target" "verdict"
  printf '%-52s %-22s %-8s %s\n' "controller CPU, $AGENTS agents reporting every $INTERVAL s" \
    "${CPU_MEDIAN}% of a core" "< ${CPU_TARGET}%" "$(verdict "$CPU_MEDIAN" "$CPU_TARGET")"
  printf '%-52s %-22s\n' "  per window" "$(IFS=' '; echo "${CPU_PCTS[*]}")"
  printf '%-52s %-22s\n' "  reports/s received (sent by the swarm)" "$(IFS=' '; echo "${REPORT_RATES[*]}")"
  printf '%-52s %-22s\n' "controller RSS (VmRSS / VmHWM)" \
    "$((RSS_KB / 1024)) / $((HWM_KB / 1024)) MB"
  printf '%-52s %-22s\n' "controller threads" "$THREADS"
  printf '%-52s %-22s %-8s %s\n' "agents list ($LISTED agents, table), median of 3" \
    "${LIST_MEDIAN} s" "< ${LIST_TARGET} s" "$(verdict "$LIST_MEDIAN" "$LIST_TARGET")"
  printf '%-52s %-22s\n' "  runs" "$(IFS=' '; echo "${LIST_TIMES[*]}")"
  printf '%-52s %-22s\n' "  --output json (every agent's metrics), median" "${JSON_LIST_MEDIAN} s"
  printf '%-52s %-22s\n' "  runs" "$(IFS=' '; echo "${JSON_LIST_TIMES[*]}")"
  printf '%-52s %-22s %-8s %s\n' "rollout v$V1->v$V2 to $AGENTS agents: last ACK sent" \
    "${SWARM_ACK_S} s" "< ${ACK_TARGET} s" "$(verdict "$SWARM_ACK_S" "$ACK_TARGET")"
  printf '%-52s %-22s\n' "  first agent got the config" "${SWARM_FIRST_S} s"
  printf '%-52s %-22s %-8s %s\n' "  all ACKed as polled from the controller" \
    "${ACK_S} s" "< ${ACK_TARGET} s" "$(verdict "$ACK_S" "$ACK_TARGET")"
  printf '%-52s %-22s\n' "  (polls: count, mean duration of one)" "$ACK_POLLS, ${ACK_POLL_S} s"
  printf '%-52s %-22s\n' "  'rollout start' command returned" "${START_CMD_S} s"
  printf '%-52s %-22s\n' "  controller CPU from start to all ACKed" "${ACK_CPU_S} s"
  printf '%-52s %-22s\n' "  rollout finished ($ROLLOUT_STATE, after its 1 s bake)" "${DONE_S} s"
  printf '%-52s %-22s\n' "first version (config apply) on all agents" "${APPLY_S} s"
  printf '%-52s %-22s\n' "ramp-up: all agents connected" "${RAMP_S} s"
  printf '%-52s %-22s\n' "controller RSS after the rollout" "$((RSS_END_KB / 1024)) MB"
  printf '%-52s %-22s\n' "SQLite files (db + wal)" "$((DB_KB / 1024)) MB"
  printf '%-52s %-22s\n' "swarm: ACKs of v$V2, reconnects" "$SWARM_ACKS, $RECONNECTS"
  printf '%-52s %-22s\n' "swarm's own CPU (per window)" "$(IFS=' '; echo "${SWARM_CPU_PCTS[*]}")"
  echo
} >"$REPORT"
cat "$REPORT"
mkdir -p "$RESULTS"
RESULTS_FILE="${SCALE_RESULTS_FILE:-$RESULTS/controller-scale.txt}"
cat "$REPORT" >>"$RESULTS_FILE"
log "appended to $RESULTS_FILE"
if [[ "${SCALE_PERF:-0}" == 1 && -s "$STATE/perf.data" ]]; then
  perf report -i "$STATE/perf.data" --no-children --stdio --percent-limit 1 \
    >"$STATE/perf-report.txt" 2>/dev/null || true
  log "perf profile: $STATE/perf-report.txt (perf.data next to it)"
fi
