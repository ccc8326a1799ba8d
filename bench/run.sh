#!/usr/bin/env bash
# Side-by-side benchmark: direct PostgreSQL 15 vs PgBouncer vs pgfleet-agent.
#
#   bench/run.sh                      # 3 rounds x 10 s per run (about 12 minutes)
#   BENCH_QUICK=1 bench/run.sh        # smoke test: 1 round x 3 s
#   BENCH_ROUNDS=5 BENCH_DURATION=30 bench/run.sh
#   BENCH_WORKLOADS="a f" BENCH_MEM_CLIENTS="1000" bench/run.sh   # a subset
#
# Starts a throwaway PostgreSQL 15 cluster, PgBouncer and pgfleet-agent with the same
# pgbouncer.ini settings, runs the pgbench workloads interleaved, measures each pooler's CPU
# time per transaction and its memory per idle client, and writes the report to
# bench/results/latest.txt (also printed). See bench/README.md.
#
# Exit status: 0 report written; 1 setup failed (missing tool, PostgreSQL did not start);
# 2 a pooler failed to start; 3 a pooler died during the benchmark (report still written).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$PWD"
BENCH="$REPO/bench"

if [[ "${BENCH_QUICK:-0}" == 1 ]]; then
  ROUNDS="${BENCH_ROUNDS:-1}"
  DURATION="${BENCH_DURATION:-3}"
else
  ROUNDS="${BENCH_ROUNDS:-3}"
  DURATION="${BENCH_DURATION:-10}"
fi
MEM_CLIENTS="${BENCH_MEM_CLIENTS-1000 10000}"  # empty: skip the memory test
SCALE=10
PGBIN=/usr/lib/postgresql/15/bin
PGBOUNCER=/usr/sbin/pgbouncer
AGENT_BIN="${BENCH_AGENT_BIN:-$REPO/build/agent/pgfleet-agent}"
RESULTS="$BENCH/results"
source "$BENCH/lib.sh"

log() { echo "[bench $(date +%H:%M:%S)] $*" >&2; }
die() { log "ERROR: $1"; exit "${2:-1}"; }

[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "BENCH_ROUNDS must be a positive integer"
[[ "$DURATION" =~ ^[1-9][0-9]*$ ]] || die "BENCH_DURATION must be a positive integer (seconds)"
for tool in "$PGBIN/initdb" "$PGBIN/pg_ctl" "$PGBOUNCER" pgbench psql ss python3 timeout getconf; do
  command -v "$tool" >/dev/null || die "missing $tool"
done
[[ -x "$AGENT_BIN" ]] || die "no agent binary at $AGENT_BIN; run scripts/build.sh first"

IS_ROOT=0
[[ $(id -u) -eq 0 ]] && IS_ROOT=1
AS_PG=()  # PostgreSQL and PgBouncer refuse to run as root
((IS_ROOT)) && AS_PG=(runuser -u postgres --)

STATE="$(mktemp -d /tmp/pgfleet-bench.XXXXXX)"
chmod 755 "$STATE"
((IS_ROOT)) && chown postgres: "$STATE"
mkdir -p "$RESULTS"
# Run a private copy: others may rebuild build/agent while the benchmark runs, and every
# start of the agent (the memory test restarts it) must use the same binary.
cp "$AGENT_BIN" "$STATE/pgfleet-agent"
AGENT_SRC="$AGENT_BIN"
AGENT_BIN="$STATE/pgfleet-agent"
rm -rf "$RESULTS/latest-crashes.log" "$RESULTS/latest-pgbench"
mkdir -p "$RESULTS/latest-pgbench"

# --------------------------------------------------------------------------------------------
# Cleanup: stop whatever we started (by pid), stop PostgreSQL, remove the temp dir.
declare -A POOLER_PID=() POOLER_JOB=()
PGBENCH_JOB=""
stop_pooler() {  # stop_pooler NAME
  local name="$1" pid="${POOLER_PID[$1]:-}" job="${POOLER_JOB[$1]:-}"
  if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
  fi
  if [[ -n "$job" ]]; then
    # The job is the subshell/runuser wrapping the pooler; it exits with it.
    for _ in $(seq 50); do kill -0 "$job" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$job" 2>/dev/null; then kill -TERM "$job" 2>/dev/null || true; fi
    wait "$job" 2>/dev/null || true
  fi
  POOLER_PID[$name]=""
  POOLER_JOB[$name]=""
}
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [[ -n "$PGBENCH_JOB" ]]; then kill -TERM "$PGBENCH_JOB" 2>/dev/null || true; fi
  stop_pooler pgbouncer
  stop_pooler agent
  bench_stop_postgres "$STATE"
  rm -rf "$STATE"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --------------------------------------------------------------------------------------------
# Ports: probe with ss, stay below the ephemeral range and away from 5432/6432.
bench_free_port PG_PORT
bench_free_port PGB_PORT
bench_free_port AGENT_PORT

# --------------------------------------------------------------------------------------------
# PostgreSQL 15
PASSWORD="bench-$(head -c 9 /dev/urandom | od -An -tx1 | tr -d ' \n')"
SUPERPW="super-$(head -c 9 /dev/urandom | od -An -tx1 | tr -d ' \n')"
log "initdb in $STATE/pg (PostgreSQL on 127.0.0.1:$PG_PORT)"
bench_start_postgres "$STATE" "$PG_PORT" "$SUPERPW" "max_connections = 200" "shared_buffers = 256MB"

export PGCONNECT_TIMEOUT=10
PGPASSWORD="$SUPERPW" timeout 60 psql -qX -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" \
  -U postgres -d postgres \
  -c "SET password_encryption = 'scram-sha-256'" \
  -c "CREATE ROLE bench LOGIN PASSWORD '$PASSWORD'" \
  -c "CREATE DATABASE benchdb OWNER bench" >/dev/null || die "could not create role/database"
export PGPASSWORD="$PASSWORD"
log "pgbench -i -s $SCALE"
timeout 600 pgbench -q -i -s "$SCALE" -h 127.0.0.1 -p "$PG_PORT" -U bench benchdb \
  >"$STATE/pgbench-init.log" 2>&1 || { tail -20 "$STATE/pgbench-init.log" >&2; die "pgbench -i failed"; }

# --------------------------------------------------------------------------------------------
# Poolers: one pgbouncer.ini format, identical settings, own port/logfile/pidfile.
printf '"bench" "%s"\n' "$PASSWORD" >"$STATE/userlist.txt"
chmod 644 "$STATE/userlist.txt"
write_ini() {  # write_ini DIR PORT
  cat >"$1/pooler.ini" <<INI
[databases]
benchdb = host=127.0.0.1 port=$PG_PORT dbname=benchdb

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $2
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $STATE/userlist.txt
pool_mode = transaction
default_pool_size = 20
max_client_conn = 11000
logfile = $1/pooler.log
pidfile = $1/pooler.pid
log_connections = 0
log_disconnections = 0
INI
}
mkdir -p "$STATE/pgbouncer" "$STATE/agent"
((IS_ROOT)) && chown postgres: "$STATE/pgbouncer"
write_ini "$STATE/pgbouncer" "$PGB_PORT"
write_ini "$STATE/agent" "$AGENT_PORT"
chmod 644 "$STATE"/*/pooler.ini
declare -A PORT=([direct]=$PG_PORT [pgbouncer]=$PGB_PORT [agent]=$AGENT_PORT)

start_pooler() {  # start_pooler NAME; sets POOLER_PID[NAME]; returns non-zero on failure
  local name="$1" dir="$STATE/$1" port="${PORT[$1]}" pid="" i
  rm -f "$dir/pooler.pid"
  if [[ "$name" == pgbouncer ]]; then
    (
      # PgBouncer does not raise its own fd limit: give it the hard limit (at least 12000).
      hard=$(ulimit -Hn)
      if [[ "$hard" != unlimited && "$hard" -lt 12000 ]]; then ulimit -n 12000 2>/dev/null || true; fi
      ulimit -Sn "$(ulimit -Hn)" 2>/dev/null || true
      # runuser's pam_limits resets the soft limit to 1024: raise it again as postgres.
      # shellcheck disable=SC2016  # expanded by the inner shell
      exec "${AS_PG[@]}" /bin/sh -c 'ulimit -n "$(ulimit -Hn)" 2>/dev/null; exec "$0" "$@"' \
        "$PGBOUNCER" "$dir/pooler.ini"
    ) >>"$dir/stderr.log" 2>&1 &
  else
    # The agent raises its own fd limit to the hard limit; no ulimit here.
    "$AGENT_BIN" --shutdown-timeout=5s "$dir/pooler.ini" >>"$dir/stderr.log" 2>&1 &
  fi
  POOLER_JOB[$name]=$!
  for ((i = 0; i < 150; i++)); do
    if [[ "$name" == agent ]]; then
      pid=${POOLER_JOB[$name]}
    elif [[ -s "$dir/pooler.pid" ]]; then
      pid=$(tr -dc 0-9 <"$dir/pooler.pid")
    fi
    if [[ -n "$pid" ]] && ss -Hltn "sport = :$port" | grep -q .; then break; fi
    kill -0 "${POOLER_JOB[$name]}" 2>/dev/null || break
    sleep 0.1
  done
  if [[ -z "$pid" ]] || ! kill -0 "$pid" 2>/dev/null || ! ss -Hltn "sport = :$port" | grep -q .; then
    log "$name did not start; last log lines:"
    tail -n 20 "$dir/stderr.log" "$dir/pooler.log" 2>/dev/null >&2 || true
    return 1
  fi
  POOLER_PID[$name]=$pid
  # A real login through it (SCRAM to the pooler, then the pooler to PostgreSQL).
  if ! timeout 30 psql -qXAt -h 127.0.0.1 -p "$port" -U bench -d benchdb -c 'SELECT 1' \
    >/dev/null 2>>"$dir/stderr.log"; then
    log "$name is listening but a login through it failed; last log lines:"
    tail -n 20 "$dir/stderr.log" "$dir/pooler.log" 2>/dev/null >&2 || true
    return 1
  fi
}

cpu_ticks() {  # utime+stime of PID in clock ticks (all threads), or -1
  local stat rest f
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || { echo -1; return; }
  rest=${stat##*) }
  read -ra f <<<"$rest"
  echo $((f[11] + f[12]))
}

# --------------------------------------------------------------------------------------------
# Header
CLK_TCK=$(getconf CLK_TCK)
CPU_MODEL=$(grep -m1 -E '^(model name|Model|cpu model)' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//')
[[ -n "$CPU_MODEL" ]] || CPU_MODEL=$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1)
AGENT_REV=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
{
  echo "pgfleet benchmark: direct PostgreSQL vs PgBouncer vs pgfleet-agent"
  echo "date:       $(date '+%Y-%m-%d %H:%M:%S %Z')"
  echo "machine:    nproc=$(nproc), CPU: ${CPU_MODEL:-unknown}, kernel: $(uname -srm)"
  echo "memory:     $(awk '/^MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
  echo "loadavg:    $(cut -d' ' -f1-3 /proc/loadavg) (at start)"
  if awk -v n="$(nproc)" '{ exit !($1 > n / 2) }' /proc/loadavg; then
    echo "WARNING:    the machine was already busy before the benchmark started (1-minute load"
    echo "            average above nproc/2): other work shares these cores, expect noisy numbers."
  fi
  echo "versions:   $("$PGBIN/postgres" --version), $("$PGBOUNCER" --version 2>&1 | head -1)," \
    "$("$AGENT_BIN" --version 2>&1 | head -1) [git $AGENT_REV," \
    "binary built $(date -r "$AGENT_SRC" '+%Y-%m-%d %H:%M')]"
  echo "settings:   rounds=$ROUNDS duration=${DURATION}s scale=$SCALE; poolers: pool_mode=transaction" \
    "default_pool_size=20 auth_type=scram-sha-256 (plaintext auth_file) max_client_conn=11000;" \
    "PostgreSQL: fsync=off max_connections=200 shared_buffers=256MB"
} >"$STATE/meta.txt"

# --------------------------------------------------------------------------------------------
# Workloads
declare -A WL_ARGS=(
  [a]="-S -M simple -c 50 -j 2"
  [b]="-S -M extended -c 50 -j 2"
  [c]="-S -C -c 20 -j 2"
  [d]="-c 20 -j 2"
  [e]="-S -c 1000 -j 2"
  [f]="-S -c 1 -j 1"
)
read -ra WORKLOADS <<<"${BENCH_WORKLOADS-a b c d e f}"  # empty: memory test only
for w in "${WORKLOADS[@]}"; do [[ -n "${WL_ARGS[$w]:-}" ]] || die "unknown workload '$w' in BENCH_WORKLOADS"; done
TARGETS=(direct pgbouncer agent)
RAW="$STATE/raw.tsv"
printf 'workload\tround\ttarget\trc\ttps\tlat_ms\tfailed\ttxns\tcpu_ticks\tlogin_cpu_ticks\tclk_tck\targs\tnote\n' \
  >"$RAW"
: >"$STATE/memory.tsv"
DIED=0
E_TXNS=20

for name in pgbouncer agent; do
  log "starting $name on 127.0.0.1:${PORT[$name]}"
  start_pooler "$name" || die "$name failed to start" 2
done

crash_log() {  # crash_log NAME WHEN: keep the dead pooler's exit status and log tails
  local name="$1" job="${POOLER_JOB[$1]}" status=0 file="$RESULTS/latest-crashes.log"
  wait "$job" 2>/dev/null || status=$?
  {
    echo "=== $name died during $2 at $(date '+%H:%M:%S'); exit status $status" \
      "$( ((status > 128)) && echo "(signal $((status - 128)))")"
    echo "--- stderr:"; tail -n 30 "$STATE/$name/stderr.log" 2>/dev/null || true
    echo "--- logfile:"; tail -n 30 "$STATE/$name/pooler.log" 2>/dev/null || true
  } >>"$file"
  log "$name died (exit status $status); log tails appended to $file"
  POOLER_PID[$name]=""
  POOLER_JOB[$name]=""
}

run_one() {  # run_one WORKLOAD ROUND TARGET
  local w="$1" r="$2" t="$3" pid="" start=-1 before=-1 after=-1 rc=0 note="" out cpu login=-1
  local dur="$DURATION" args clients job est deadline
  args="-T $dur ${WL_ARGS[$w]}"
  if [[ "$w" == e ]]; then
    # pgbench's -T clock also runs while it logs in its clients, and 1000 SCRAM logins can
    # take longer than the whole run on a busy machine. So (e) runs a fixed number of
    # transactions per client (-t, chosen in the round loop for about DURATION seconds).
    args="-t $E_TXNS ${WL_ARGS[$w]}"
    dur=$((DURATION * 4))
  fi
  out="$RESULTS/latest-pgbench/$w-round$r-$t.out"
  if [[ "$t" != direct ]]; then
    pid="${POOLER_PID[$t]}"
    if [[ -z "$pid" ]] || ! kill -0 "$pid" 2>/dev/null; then
      DIED=1
      printf '%s\t%s\t%s\t-1\tnan\tnan\t-1\t-1\t-1\t-1\t%s\t%s\t%s\n' "$w" "$r" "$t" "$CLK_TCK" \
        "$args" "pooler not running" >>"$RAW"
      log "($w) round $r $t: SKIPPED, pooler not running"
      return
    fi
    start=$(cpu_ticks "$pid")
    before=$start
  fi
  # shellcheck disable=SC2086  # the workload's flags are meant to split
  timeout $((dur + 300)) pgbench -h 127.0.0.1 -p "${PORT[$t]}" -U bench $args benchdb \
    >"$out" 2>&1 &
  job=$!
  PGBENCH_JOB=$job
  if [[ -n "$pid" && "$args" != *" -C "* ]]; then
    # Start the CPU clock once every client is connected (pgbench logs all of them in
    # before any transaction), so CPU/txn is not the cost of 1000 SCRAM logins. In (c)
    # every transaction logs in: there the whole run counts.
    clients=$(sed -E 's/.*-c ([0-9]+).*/\1/' <<<"$args")
    deadline=$((SECONDS + dur + 300))
    while kill -0 "$job" 2>/dev/null && ((SECONDS < deadline)); do
      est=$(ss -Htn state established "dport = :${PORT[$t]}" | wc -l)
      if ((est >= clients)); then
        before=$(cpu_ticks "$pid")
        login=$((before - start))
        break
      fi
      sleep 0.02
    done
    ((login >= 0)) || note="clients never all connected; CPU counted from the start"
  fi
  wait "$job" || rc=$?
  PGBENCH_JOB=""
  if [[ -n "$pid" ]]; then
    after=$(cpu_ticks "$pid")
    if ! kill -0 "$pid" 2>/dev/null; then
      DIED=1
      note="pooler died during the run"
      crash_log "$t" "($w) round $r"
      if start_pooler "$t"; then note+=" (restarted for the next run)"; fi
    fi
  fi
  ((rc == 124)) && note="timed out"
  if ((rc != 0)) && [[ -z "$note" ]]; then
    note=$(grep -m1 -iE 'error|fatal|abort' "$out" | tr '\t' ' ' | cut -c1-120 || true)
  fi
  local parsed tps lat failed txns
  parsed=$(python3 "$BENCH/bench.py" parse "$out")
  IFS=$'\t' read -r tps lat failed txns <<<"$parsed"
  cpu=-1
  ((before >= 0 && after >= 0)) && cpu=$((after - before))
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$w" "$r" "$t" "$rc" "$tps" "$lat" \
    "$failed" "$txns" "$cpu" "$login" "$CLK_TCK" "$args" "$note" >>"$RAW"
  local cpu_us="-"
  if ((cpu >= 0 && txns > 0)); then
    cpu_us=$(awk -v c="$cpu" -v h="$CLK_TCK" -v n="$txns" 'BEGIN {printf "%.1fus", c / h / n * 1e6}')
  fi
  log "($w) round $r/$ROUNDS $(printf '%-9s' "$t") tps=$tps lat=${lat}ms cpu/txn=$cpu_us" \
    "txns=$txns rc=$rc ${note}"
}

for ((round = 1; round <= ROUNDS; round++)); do
  for w in "${WORKLOADS[@]}"; do
    targets=("${TARGETS[@]}")
    if [[ "$w" == e ]]; then
      targets=(pgbouncer agent)  # 1000 clients > max_connections: poolers only
      # Transactions per client for about DURATION seconds, from the poolers' median TPS in
      # (a) so far (same number for both poolers in a round); 2000 TPS if (a) did not run.
      E_TXNS=$(awk -F'\t' '$1 == "a" && $3 != "direct" && $4 == 0 && $5 + 0 > 0 { print $5 }' "$RAW" |
        sort -g | awk -v d="$DURATION" '
          { v[NR] = $1 }
          END {
            tps = 2000
            if (NR > 0) tps = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
            t = int(tps * d / 1000 + 0.5); if (t < 5) t = 5; if (t > 1000) t = 1000; print t
          }')
    fi
    n=${#targets[@]}
    for ((i = 0; i < n; i++)); do
      t=${targets[$(((i + round - 1) % n))]}  # rotate the order each round
      run_one "$w" "$round" "$t"
      sleep 1
    done
  done
done

# --------------------------------------------------------------------------------------------
# Memory: a fresh pooler per measurement; idle RSS after one warm-up login, then N clients.
for name in pgbouncer agent; do
  stop_pooler "$name"
done
for n in $MEM_CLIENTS; do
  for name in pgbouncer agent; do
    log "memory: $name with $n idle clients"
    if ! start_pooler "$name"; then
      DIED=1
      printf '%s\t{"n": %s, "opened": 0, "error": "pooler failed to restart"}\n' "$name" "$n" \
        >>"$STATE/memory.tsv"
      continue
    fi
    result=$(timeout 960 python3 "$BENCH/bench.py" memory --pid "${POOLER_PID[$name]}" \
      --port "${PORT[$name]}" --user bench --password "$PASSWORD" --db benchdb --n "$n" \
      --timeout 900 2>"$STATE/memory-$name-$n.err") || true
    if [[ -z "$result" ]]; then
      err=$(head -c 200 "$STATE/memory-$name-$n.err" | tr -c 'A-Za-z0-9 .:,_()-' ' ')
      result="{\"n\": $n, \"opened\": 0, \"error\": \"helper failed: $err\"}"
    fi
    printf '%s\t%s\n' "$name" "$result" >>"$STATE/memory.tsv"
    log "memory: $name: $result"
    kill -0 "${POOLER_PID[$name]}" 2>/dev/null || DIED=1
    stop_pooler "$name"
    sleep 1
  done
done

echo "loadavg:    $(cut -d' ' -f1-3 /proc/loadavg) (at end)" >>"$STATE/meta.txt"
python3 "$BENCH/bench.py" report --meta "$STATE/meta.txt" --raw "$RAW" \
  --memory "$STATE/memory.tsv" --out "$RESULTS/latest.txt"
cp "$RAW" "$RESULTS/latest-runs.tsv"
cp "$STATE/memory.tsv" "$RESULTS/latest-memory.tsv"
log "report written to $RESULTS/latest.txt (raw data: $RESULTS/latest-*)"
if ((DIED)); then
  log "a pooler was not running for part of the benchmark (see the report)"
  exit 3
fi
