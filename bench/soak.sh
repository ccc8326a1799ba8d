#!/usr/bin/env bash
# Time-bounded, loopback-only soak: a throwaway PostgreSQL 15, a pgfleet-controller and two
# pgfleet-agents (transaction pooling), mixed pgbench load through both agents while faults
# are injected on a schedule, then a summary of transactions ok / failed / lost.
#
#   bench/soak.sh [--seconds N] [--build DIR] [--keep]
#
# Load, per agent, each in a loop of short pgbench runs (a run whose clients abort, e.g. when
# PostgreSQL restarts, is followed by the next one):
#   select-only   pgbench -S -c 4
#   ledger        a TPC-B-like transaction that also inserts one row into soak_ledger, -c 3
#   ledger -C     the same with a new connection per transaction, -c 2
# Every ledger run has its own tag; "lost" = transactions pgbench counted as processed (the
# COMMIT was acknowledged) minus soak_ledger rows carrying that run's tag. Rows beyond the
# count (a commit whose acknowledgement the client never saw) are shown as "unacked".
#
# Faults (as fractions of the duration): 15% SIGHUP both agents; 30% controller kill -9 and
# restart on the same port and SQLite file; 45% `fleetctl pause --wait` of appdb, 2 s, resume;
# 60% PostgreSQL `pg_ctl restart -m fast`; 80% SIGHUP both agents again.
set -euo pipefail

SECONDS_TOTAL=60
BUILD=""
KEEP=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --seconds) SECONDS_TOTAL="$2"; shift 2 ;;
    --seconds=*) SECONDS_TOTAL="${1#*=}"; shift ;;
    --build) BUILD="$2"; shift 2 ;;
    --build=*) BUILD="${1#*=}"; shift ;;
    --keep) KEEP=1; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
REPO="$(cd "$(dirname "$0")/.." && pwd)"
if [[ -z "$BUILD" ]]; then
  for candidate in build build-faults; do
    if [[ -x "$REPO/$candidate/agent/pgfleet-agent" ]]; then BUILD="$REPO/$candidate"; break; fi
  done
fi
AGENT_BIN="$BUILD/agent/pgfleet-agent"
CONTROLLER_BIN="$BUILD/controller/pgfleet-controller"
FLEETCTL_BIN="$BUILD/cli/fleetctl"
for bin in "$AGENT_BIN" "$CONTROLLER_BIN" "$FLEETCTL_BIN"; do
  [[ -x "$bin" ]] || { echo "missing $bin (build first, or --build DIR)" >&2; exit 2; }
done
PGBIN=/usr/lib/postgresql/15/bin
STATE="$(mktemp -d /tmp/pgfleet-soak.XXXXXX)"
chmod 755 "$STATE"
LOGS="$STATE/logs"
mkdir -p "$LOGS"

source "$REPO/bench/lib.sh"
as_postgres() { "${BENCH_AS_PG[@]}" "$@"; }
die() { log "ERROR: $1"; exit 1; }
log() { printf '%s [soak] %s\n' "$(date +%H:%M:%S)" "$*" | tee -a "$STATE/events.log" >&2; }

PIDS=()
CONTROLLER_PID=""
cleanup() {
  set +e
  for pid in "${LOAD_PIDS[@]:-}"; do [[ -n "$pid" ]] && kill "$pid" 2>/dev/null; done
  for pid in "${PIDS[@]:-}" "$CONTROLLER_PID"; do [[ -n "$pid" ]] && kill -TERM "$pid" 2>/dev/null; done
  for pid in "${PIDS[@]:-}" "$CONTROLLER_PID"; do [[ -n "$pid" ]] && wait "$pid" 2>/dev/null; done
  bench_stop_postgres "$STATE"
  if [[ $KEEP -eq 1 ]]; then echo "kept $STATE" >&2; else rm -rf "$STATE"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- PostgreSQL ------------------------------------------------------------------------------
[[ $(id -u) -eq 0 ]] && chown postgres "$STATE"
bench_free_port PG_PORT
bench_start_postgres "$STATE" "$PG_PORT" postgres "max_connections = 100" "shared_buffers = 32MB"
export PGSSLMODE=disable
PGPASSWORD=postgres psql -qX -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres \
  -c "CREATE ROLE app LOGIN PASSWORD 'app'" -c "CREATE DATABASE appdb OWNER app" >/dev/null
export PGPASSWORD=app
pgbench -q -i -s 1 -h 127.0.0.1 -p "$PG_PORT" -U app appdb >/dev/null 2>&1
psql -qX -h 127.0.0.1 -p "$PG_PORT" -U app appdb \
  -c "create table soak_ledger (id bigserial primary key, run text not null, client int not null)" \
  >/dev/null

# --- controller and agents -------------------------------------------------------------------
bench_free_port CTL_PORT
TOKEN="pgf_soak_$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export PGFLEET_CONTROLLER="127.0.0.1:$CTL_PORT" PGFLEET_TOKEN="$TOKEN"
start_controller() {
  PGFLEET_BOOTSTRAP_TOKEN="$TOKEN" "$CONTROLLER_BIN" --listen="127.0.0.1:$CTL_PORT" \
    --db="$STATE/fleet.db" --http-listen= --metrics-interval=1s --insecure-agents 2>>"$STATE/controller.log" &
  CONTROLLER_PID=$!
  for _ in $(seq 200); do
    "$FLEETCTL_BIN" agents list >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "controller did not come up" >&2; return 1
}
start_controller

printf '"app" "app"\n"admin" "admin"\n' > "$STATE/userlist.txt"
AGENT_PORTS=()
for i in 1 2; do
  bench_free_port port
  AGENT_PORTS+=("$port")
  cat > "$STATE/agent-$i.ini" <<INI
[databases]
appdb = host=127.0.0.1 port=$PG_PORT dbname=appdb

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $STATE/userlist.txt
admin_users = admin
pool_mode = transaction
default_pool_size = 8
max_client_conn = 500
server_login_retry = 1
logfile = $STATE/agent-$i.log
INI
  "$AGENT_BIN" --controller="127.0.0.1:$CTL_PORT" --env=soak --agent-id="soak-$i" \
    --state-dir="$STATE/state-$i" "$STATE/agent-$i.ini" 2>>"$STATE/agent-$i.stderr" &
  PIDS+=($!)
done
for port in "${AGENT_PORTS[@]}"; do
  for _ in $(seq 100); do
    ss -Hltn "sport = :$port" | grep -q . && break
    sleep 0.1
  done
done
for _ in $(seq 100); do
  up=$("$FLEETCTL_BIN" agents list --env soak --output json 2>/dev/null | grep -c '"connected": *true' || true)
  [[ "$up" -ge 2 ]] && break
  sleep 0.2
done

# --- load ------------------------------------------------------------------------------------
cat > "$STATE/ledger.sql" <<'SQL'
\set aid random(1, 100000)
\set bid random(1, 1)
\set tid random(1, 10)
\set delta random(-5000, 5000)
BEGIN;
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
UPDATE pgbench_tellers SET tbalance = tbalance + :delta WHERE tid = :tid;
UPDATE pgbench_branches SET bbalance = bbalance + :delta WHERE bid = :bid;
INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (:tid, :bid, :aid, :delta, CURRENT_TIMESTAMP);
INSERT INTO soak_ledger (run, client) VALUES (:run, :client_id);
END;
SQL

DEADLINE=$(( $(date +%s) + SECONDS_TOTAL ))
RUN_SECONDS=5
# load_loop NAME PORT pgbench-args...: short runs until the deadline, outputs kept per run.
load_loop() {
  local name="$1" port="$2"; shift 2
  local n=0
  while (( $(date +%s) < DEADLINE )); do
    local left=$(( DEADLINE - $(date +%s) ))
    (( left < 1 )) && break
    local t=$(( left < RUN_SECONDS ? left : RUN_SECONDS ))
    n=$((n + 1))
    local tag="$name-$n"
    echo "$tag" > "$LOGS/$tag.tag"
    pgbench -n -h 127.0.0.1 -p "$port" -U app -T "$t" -D run="'$tag'" "$@" appdb \
      >"$LOGS/$tag.out" 2>"$LOGS/$tag.err" && echo 0 >"$LOGS/$tag.rc" || echo $? >"$LOGS/$tag.rc"
  done
}
LOAD_PIDS=()
for i in 1 2; do
  port="${AGENT_PORTS[$((i - 1))]}"
  load_loop "a$i-select" "$port" -S -c 4 -j 1 & LOAD_PIDS+=($!)
  load_loop "a$i-ledger" "$port" -f "$STATE/ledger.sql" -c 3 -j 1 & LOAD_PIDS+=($!)
  load_loop "a$i-ledgerC" "$port" -f "$STATE/ledger.sql" -C -c 2 -j 1 & LOAD_PIDS+=($!)
done
log "load started: ${SECONDS_TOTAL}s through agents on ports ${AGENT_PORTS[*]}, PostgreSQL $PG_PORT"

# --- faults ----------------------------------------------------------------------------------
START=$(date +%s)
at() {  # at FRACTION_PERCENT: sleep until that point of the run
  local target=$(( START + SECONDS_TOTAL * $1 / 100 ))
  local now; now=$(date +%s)
  (( target > now )) && sleep $(( target - now ))
  return 0
}
FAULTS=()
fault() { FAULTS+=("$(printf '%-44s %s' "$1" "$2")"); log "$1: $2"; }

at 15
kill -HUP "${PIDS[@]}" && fault "SIGHUP both agents" "sent"

at 30
kill -9 "$CONTROLLER_PID"; wait "$CONTROLLER_PID" 2>/dev/null || true
t0=$(date +%s.%N)
if start_controller; then
  fault "controller kill -9 + restart" "back in $(printf '%.1f' "$(echo "$(date +%s.%N) - $t0" | bc)")s"
else
  fault "controller kill -9 + restart" "FAILED to restart"
fi
for _ in $(seq 100); do
  up=$("$FLEETCTL_BIN" agents list --env soak --output json 2>/dev/null | grep -c '"connected": *true' || true)
  [[ "$up" -ge 2 ]] && break
  sleep 0.2
done
fault "agents re-registered after restart" "$up of 2"

at 45
t0=$(date +%s.%N)
if "$FLEETCTL_BIN" pause --env soak --db appdb --for 30s --wait --reason soak \
    >>"$STATE/fleetctl.log" 2>&1; then
  paused="paused (drained) in $(printf '%.1f' "$(echo "$(date +%s.%N) - $t0" | bc)")s"
  sleep 2
  if "$FLEETCTL_BIN" resume --env soak --db appdb >>"$STATE/fleetctl.log" 2>&1; then
    fault "fleet pause --wait / resume" "$paused, resumed"
  else
    fault "fleet pause --wait / resume" "$paused, RESUME FAILED (exit $?)"
  fi
else
  rc=$?
  fault "fleet pause --wait / resume" "PAUSE FAILED (exit $rc): $(tail -1 "$STATE/fleetctl.log")"
  "$FLEETCTL_BIN" resume --env soak --db appdb >>"$STATE/fleetctl.log" 2>&1 || true
fi

at 60
t0=$(date +%s.%N)
if as_postgres "$PGBIN/pg_ctl" -D "$STATE/pg" -l "$STATE/postgres.log" -m fast -w restart \
    >>"$STATE/pg_ctl.log" 2>&1; then
  fault "PostgreSQL pg_ctl restart -m fast" "back in $(printf '%.1f' "$(echo "$(date +%s.%N) - $t0" | bc)")s"
else
  fault "PostgreSQL pg_ctl restart -m fast" "FAILED"
fi

at 80
kill -HUP "${PIDS[@]}" && fault "SIGHUP both agents" "sent"

for pid in "${LOAD_PIDS[@]}"; do wait "$pid" || true; done
LOAD_PIDS=()
log "load finished"

# Are the agents still up and serving?
AGENTS_OK=0
for i in 1 2; do
  pid="${PIDS[$((i - 1))]}"
  if kill -0 "$pid" 2>/dev/null &&
     psql -qXAt -h 127.0.0.1 -p "${AGENT_PORTS[$((i - 1))]}" -U app appdb -c 'select 1' \
       >/dev/null 2>&1; then
    AGENTS_OK=$((AGENTS_OK + 1))
  fi
done

# --- summary ---------------------------------------------------------------------------------
psql -qXAt -F ' ' -h 127.0.0.1 -p "$PG_PORT" -U app appdb \
  -c "select run, count(*) from soak_ledger group by run" > "$STATE/ledger-counts.txt"
python3 - "$LOGS" "$STATE/ledger-counts.txt" "$SECONDS_TOTAL" "$AGENTS_OK" <<'PY'
import glob, os, re, sys
logs, counts_path, seconds, agents_ok = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rows = {}
for line in open(counts_path):
    parts = line.split()
    if len(parts) == 2:
        rows[parts[0]] = int(parts[1])
kinds = {}
for out in sorted(glob.glob(os.path.join(logs, "*.out"))):
    tag = os.path.basename(out)[:-4]
    kind = tag.rsplit("-", 1)[0]
    text = open(out).read()
    err = open(out[:-4] + ".err").read()
    m = re.search(r"number of transactions actually processed: (\d+)", text)
    processed = int(m.group(1)) if m else 0
    m = re.search(r"number of failed transactions: (\d+)", text)
    failed = int(m.group(1)) if m else 0
    aborted = len(re.findall(r"client \d+ (?:script \d+ )?aborted", err))
    try:
        conn_fail = 1 if int(open(out[:-4] + ".rc").read().strip() or "0") != 0 else 0
    except OSError:
        conn_fail = 0
    k = kinds.setdefault(kind, dict(runs=0, ok=0, failed=0, aborted=0, nostart=0, lost=0, unacked=0, ledger=False))
    k["runs"] += 1
    k["ok"] += processed
    k["failed"] += failed
    k["aborted"] += aborted
    k["nostart"] += conn_fail
    if "ledger" in kind:
        k["ledger"] = True
        have = rows.get(tag, 0)
        if have < processed:
            k["lost"] += processed - have
        else:
            k["unacked"] += have - processed
print()
print(f"pgfleet soak: {seconds} s, 2 agents, 1 controller, PostgreSQL 15 (loopback)")
print(f"{'load':<18}{'runs':>6}{'tx ok':>10}{'failed':>8}{'aborted clients':>17}{'runs exit!=0':>16}{'lost':>6}{'unacked':>9}")
tot = dict(runs=0, ok=0, failed=0, aborted=0, nostart=0, lost=0, unacked=0)
for kind in sorted(kinds):
    k = kinds[kind]
    lost = str(k["lost"]) if k["ledger"] else "-"
    unacked = str(k["unacked"]) if k["ledger"] else "-"
    print(f"{kind:<18}{k['runs']:>6}{k['ok']:>10}{k['failed']:>8}{k['aborted']:>17}{k['nostart']:>16}{lost:>6}{unacked:>9}")
    for key in tot:
        tot[key] += k[key]
print(f"{'total':<18}{tot['runs']:>6}{tot['ok']:>10}{tot['failed']:>8}{tot['aborted']:>17}{tot['nostart']:>16}{tot['lost']:>6}{tot['unacked']:>9}")
print(f"agents alive and serving at the end: {agents_ok} of 2")
print(f"LOST ACKNOWLEDGED COMMITS: {tot['lost']}")
PY
echo
echo "faults injected:"
for f in "${FAULTS[@]}"; do echo "  $f"; done
grep -h -i -E 'AddressSanitizer|runtime error|CHECK failed|Segmentation' "$STATE"/agent-*.stderr \
  "$STATE/controller.log" 2>/dev/null | head -5 || true
