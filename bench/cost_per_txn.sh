#!/usr/bin/env bash
# Repeatable cost per transaction of PgBouncer and pgfleet-agent under one pgbench load:
# user-space instructions (valgrind --tool=callgrind) and system calls (strace -c), each
# divided by the transactions pgbench processed while it was counting. CPU time on this shared
# 2-core machine swings by tens of percent between runs; instruction and syscall counts do not,
# so they are what an optimisation of the data path is judged by (bench/README.md).
#
#   bench/cost_per_txn.sh                         # workloads a and b, both poolers, both tools
#   COST_TOOLS=strace COST_TARGETS=agent COST_WORKLOADS=a bench/cost_per_txn.sh
#   COST_TXNS=400 bench/cost_per_txn.sh           # transactions per client (default 200)
#
# Logins are not per-transaction cost: each figure is a run of TXNS+1 transactions per client
# less a run of 1, both counted from before pgbench starts to after it exits. Under valgrind a pooler runs ~50x slower, so more messages meet
# in one wakeup than at full speed: the absolute figures flatter both poolers alike; compare
# the two side by side, not with a run of bench/run.sh. Writes bench/results/cost-latest.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$PWD"
PGBIN=/usr/lib/postgresql/15/bin
PGBOUNCER=/usr/sbin/pgbouncer
AGENT_BIN="${BENCH_AGENT_BIN:-$REPO/build/agent/pgfleet-agent}"
TXNS="${COST_TXNS:-200}"
CLIENTS="${COST_CLIENTS:-50}"
read -ra WORKLOADS <<<"${COST_WORKLOADS:-a b}"
read -ra TARGETS <<<"${COST_TARGETS:-pgbouncer agent}"
read -ra TOOLS <<<"${COST_TOOLS:-callgrind strace}"
OUT="$REPO/bench/results/cost-latest.txt"

log() { echo "[cost $(date +%H:%M:%S)] $*" >&2; }
die() { log "ERROR: $1"; exit 1; }
for tool in "$PGBIN/initdb" "$PGBOUNCER" pgbench psql valgrind callgrind_control strace perf ss; do
  command -v "$tool" >/dev/null || die "missing $tool"
done
[[ -x "$AGENT_BIN" ]] || die "no agent binary at $AGENT_BIN"
[[ $(id -u) -eq 0 ]] || die "run as root (PostgreSQL and PgBouncer run as postgres)"

source "$REPO/bench/lib.sh"
STATE="$(mktemp -d /tmp/pgfleet-cost.XXXXXX)"
chmod 755 "$STATE"
chown postgres: "$STATE"
cp "$AGENT_BIN" "$STATE/pgfleet-agent"
POOLER_PID=""
cleanup() {
  [[ -n "$POOLER_PID" ]] && kill -TERM "$POOLER_PID" 2>/dev/null && sleep 1
  [[ -n "$POOLER_PID" ]] && kill -KILL "$POOLER_PID" 2>/dev/null
  bench_stop_postgres "$STATE"
  rm -rf "$STATE"
}
trap cleanup EXIT

port_free() { ! ss -Hltn "sport = :$1" | grep -q .; }
bench_free_port PG_PORT
bench_free_port POOLER_PORT

log "PostgreSQL on 127.0.0.1:$PG_PORT"
bench_start_postgres "$STATE" "$PG_PORT" postgres
PGPASSWORD=postgres psql -qX -h 127.0.0.1 -p "$PG_PORT" -U postgres \
  -c "SET password_encryption = 'scram-sha-256'" -c "CREATE ROLE bench LOGIN PASSWORD 'bench'" \
  -c "CREATE DATABASE benchdb OWNER bench" >/dev/null
PGPASSWORD=bench pgbench -q -i -s 1 -h 127.0.0.1 -p "$PG_PORT" -U bench benchdb >/dev/null 2>&1

echo '"bench" "bench"' >"$STATE/userlist.txt"
cat >"$STATE/pooler.ini" <<INI
[databases]
benchdb = host=127.0.0.1 port=$PG_PORT dbname=benchdb
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $POOLER_PORT
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $STATE/userlist.txt
pool_mode = transaction
default_pool_size = 20
max_client_conn = 1000
logfile = $STATE/pooler.log
log_connections = 0
log_disconnections = 0
INI
chmod 644 "$STATE"/*.ini "$STATE/userlist.txt"
export PGPASSWORD=bench

start_pooler() {  # start_pooler TARGET TOOL: sets POOLER_PID
  local wrap=()
  rm -f "$STATE"/cg.out*  # the last pooler's, written as it exited
  rm -f "$STATE/pooler.log"  # the agent's (root's) would keep PgBouncer (postgres) from logging
  if [[ "$2" == callgrind ]]; then
    wrap=(valgrind --tool=callgrind --compress-strings=no --compress-pos=no
      "--callgrind-out-file=$STATE/cg.out")
  fi
  if [[ "$1" == pgbouncer ]]; then
    runuser -u postgres -- "${wrap[@]}" "$PGBOUNCER" "$STATE/pooler.ini" >"$STATE/stderr.log" 2>&1 &
  else
    "${wrap[@]}" "$STATE/pgfleet-agent" "$STATE/pooler.ini" >"$STATE/stderr.log" 2>&1 &
  fi
  local job=$!
  for _ in $(seq 300); do
    port_free "$POOLER_PORT" || break
    sleep 0.1
  done
  POOLER_PID=$job
  # runuser forks: PgBouncer is its child.
  [[ "$1" == pgbouncer ]] && POOLER_PID=$(pgrep -P "$job" | head -1 || true)
  psql -qXAt -h 127.0.0.1 -p "$POOLER_PORT" -U bench -d benchdb -c 'SELECT 1' >/dev/null ||
    die "$1 did not answer; $(tail -5 "$STATE/stderr.log")"
}

stop_pooler() {
  kill -TERM "$POOLER_PID" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$POOLER_PID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$POOLER_PID" 2>/dev/null || true
  POOLER_PID=""
  sleep 0.5
}

declare -A MODE=([a]=simple [b]=extended)
ticks() {  # utime and stime of PID, in clock ticks
  local stat f
  stat=$(cat "/proc/$1/stat")
  read -ra f <<<"${stat##*) }"
  echo "${f[11]} ${f[12]}"
}

# count TARGET TOOL WORKLOAD TXNS: instructions or system calls of the pooler over one pgbench
# run of TXNS transactions per client, logins included. The counting window is set while the
# pooler is idle (before pgbench starts, after it exits), so it holds exactly that run.
count() {
  local t="$1" tool="$2" w="$3" n="$4" control=(callgrind_control) tracer
  # As the pooler's user: vgdb finds the process through files that user owns.
  [[ "$t" == pgbouncer ]] && control=(runuser -u postgres -- callgrind_control)
  if [[ "$tool" == callgrind ]]; then
    rm -f "$STATE"/cg.out.*
    "${control[@]}" -z "$POOLER_PID" >/dev/null
  elif [[ "$tool" == strace ]]; then
    strace -c -f -p "$POOLER_PID" -o "$STATE/strace.out" 2>/dev/null &
    tracer=$!
    sleep 1  # attached
  else
    # perf: system calls at full speed (kernel tracepoints; no slowdown, so the batching of
    # messages per wakeup is the real one), and CPU time, which is as noisy as the machine.
    local calls=sendto,sendmsg,recvfrom,epoll_wait,epoll_ctl
    perf stat -x, -e "raw_syscalls:sys_enter,syscalls:sys_enter_${calls//,/,syscalls:sys_enter_}" \
      -p "$POOLER_PID" -o "$STATE/perf.out" &
    tracer=$!
    sleep 0.5
    ticks "$POOLER_PID" >"$STATE/ticks.before"
  fi
  pgbench -n -S -M "${MODE[$w]}" -c "$CLIENTS" -j 2 -t "$n" -h 127.0.0.1 -p "$POOLER_PORT" \
    -U bench benchdb >"$STATE/pgbench.out" 2>&1 || die "pgbench failed: $(tail -3 "$STATE/pgbench.out")"
  if [[ "$tool" == callgrind ]]; then
    "${control[@]}" -d "$POOLER_PID" >/dev/null
    for _ in $(seq 50); do compgen -G "$STATE/cg.out.*" >/dev/null && break; sleep 0.1; done
    sleep 0.5
    awk '/^totals:/ {s += $2} END {printf "%.0f\n", s}' "$STATE"/cg.out.*
    cp "$STATE"/cg.out.* "$REPO/bench/results/callgrind-$w-$t.out" 2>/dev/null || true
  elif [[ "$tool" == strace ]]; then
    kill -INT "$tracer"
    wait "$tracer" || true
    cp "$STATE/strace.out" "$STATE/strace-$w-$t.txt"
    awk '$NF == "total" {print $4}' "$STATE/strace.out"
  else
    ticks "$POOLER_PID" >"$STATE/ticks.after"
    kill -INT "$tracer"
    wait "$tracer" || true
    # User and system CPU ticks of this run, for the report's split.
    paste "$STATE/ticks.before" "$STATE/ticks.after" |
      awk -v n="$n" '{printf "utime %d stime %d ticks over %d txns per client;", $3 - $1, $4 - $2, n}' \
        >>"$STATE/split-$w-$t.txt"
    awk -F, '$3 ~ /sys_enter_/ {sub(/.*sys_enter_/, "", $3); printf " %s %s", $3, $1} END {print ""}' \
      "$STATE/perf.out" >>"$STATE/split-$w-$t.txt"
    awk -F, '$3 == "raw_syscalls:sys_enter" {print $1}' "$STATE/perf.out"
  fi
}

: >"$STATE/report.txt"
for w in "${WORKLOADS[@]}"; do
  for tool in "${TOOLS[@]}"; do
    for t in "${TARGETS[@]}"; do
      start_pooler "$t" "$tool"
      # Per transaction: a run of TXNS+1 transactions per client less a run of 1, so the 50
      # logins (and the first transaction's warm-up) cancel out.
      short=$(count "$t" "$tool" "$w" 1)
      long=$(count "$t" "$tool" "$w" $((TXNS + 1)))
      stop_pooler
      txns=$((TXNS * CLIENTS))
      per=$(awk -v a="$long" -v b="$short" -v n="$txns" 'BEGIN {printf "%.1f", (a - b) / n}')
      unit=$([[ "$tool" == callgrind ]] && echo "instructions" || echo "syscalls")
      [[ "$tool" == perf ]] && unit="syscalls at full speed"
      line=$(printf '(%s) %-9s %-9s %12s %s per txn  (%s - %s over %s txns)' "$w" "$t" "$tool" \
        "$per" "$unit" "$long" "$short" "$txns")
      log "$line"
      echo "$line" >>"$STATE/report.txt"
    done
  done
done
{
  echo "cost per transaction: pgbench -S, $CLIENTS clients x $TXNS txns, transaction pooling"
  echo "git $(git rev-parse --short HEAD 2>/dev/null), $(date -u '+%Y-%m-%d %H:%M UTC')"
  cat "$STATE/report.txt"
  for f in "$STATE"/split-*.txt; do
    [[ -e "$f" ]] || continue
    echo "--- CPU $(basename "$f" .txt | sed 's/^split-//'): $(tail -1 "$f")"
  done
  for f in "$STATE"/strace-*.txt; do
    [[ -e "$f" ]] || continue
    echo "--- $(basename "$f" .txt)"
    head -20 "$f"
  done
} | tee "$OUT"
