#!/usr/bin/env bash
# The README's run command: installs what is missing, builds, starts a throwaway
# PostgreSQL 15 and a pgfleet-agent in front of it, and prints how to connect.
# Everything lives in a temp dir and is stopped and removed on Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$PWD"

scripts/install-deps.sh
scripts/build.sh release

PGBIN=/usr/lib/postgresql/15/bin
STATE="$(mktemp -d /tmp/pgfleet-demo.XXXXXX)"
chmod 755 "$STATE"

as_postgres() {
  if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}
if [[ $(id -u) -eq 0 ]]; then chown postgres "$STATE"; fi

free_port() {
  local port
  for port in $(seq "$1" $(($1 + 500))); do
    if ! ss -Hltn "sport = :$port" | grep -q .; then echo "$port"; return; fi
  done
  echo "no free port near $1" >&2; exit 1
}
PG_PORT=$(free_port 15432)
AGENT_PORT=$(free_port $((PG_PORT + 1000)))

cleanup() {
  echo "stopping PostgreSQL and removing $STATE"
  as_postgres "$PGBIN/pg_ctl" -D "$STATE/pg" -m fast stop >/dev/null 2>&1 || true
  rm -rf "$STATE"
}
trap cleanup EXIT

echo "postgres" > "$STATE/pwfile"
[[ $(id -u) -eq 0 ]] && chown postgres "$STATE/pwfile"
as_postgres "$PGBIN/initdb" -D "$STATE/pg" -U postgres --auth=scram-sha-256 \
  --pwfile="$STATE/pwfile" >/dev/null
cat >> "$STATE/pg/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$STATE'
max_connections = 100
CONF
as_postgres "$PGBIN/pg_ctl" -D "$STATE/pg" -l "$STATE/postgres.log" -w start >/dev/null
PGPASSWORD=postgres psql -qX -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres \
  -c "CREATE ROLE app LOGIN PASSWORD 'app'" -c "CREATE DATABASE appdb OWNER app" >/dev/null
PGPASSWORD=app pgbench -q -i -s 1 -h 127.0.0.1 -p "$PG_PORT" -U app appdb >/dev/null 2>&1

CTL_PORT=$(free_port $((AGENT_PORT + 1000)))
AGENT2_PORT=$(free_port $((AGENT_PORT + 1)))
METRICS_PORT=$(free_port $((CTL_PORT + 1)))
HTTP_PORT=$(free_port 7080)
TOKEN="pgf_demo_$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"

cat > "$STATE/userlist.txt" <<USERS
"app" "app"
"admin" "admin"
"stats" "stats"
USERS

write_ini() {  # write_ini FILE PORT LOGFILE
  cat > "$1" <<INI
;; A plain pgbouncer.ini: pgfleet-agent reads PgBouncer's format unchanged.
[databases]
appdb = host=127.0.0.1 port=$PG_PORT dbname=appdb

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $2
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $STATE/userlist.txt
admin_users = admin
stats_users = stats
pool_mode = transaction
default_pool_size = 10
max_client_conn = 1000
logfile = $3
INI
}
write_ini "$STATE/dev-1.ini" "$AGENT_PORT" "$STATE/dev-1.log"
write_ini "$STATE/staging-1.ini" "$AGENT2_PORT" "$STATE/staging-1.log"

PGFLEET_BOOTSTRAP_TOKEN="$TOKEN" "$REPO/build/controller/pgfleet-controller" \
  --listen="127.0.0.1:$CTL_PORT" --db="$STATE/pgfleet.db" --http-listen="127.0.0.1:$HTTP_PORT" \
  --metrics-interval=2s --insecure-agents \
  2>>"$STATE/controller.log" &
PIDS=($!)
"$REPO/build/agent/pgfleet-agent" --controller="127.0.0.1:$CTL_PORT" --env=dev --agent-id=dev-1 \
  --metrics-listen="127.0.0.1:$METRICS_PORT" "$STATE/dev-1.ini" 2>/dev/null &
PIDS+=($!)
"$REPO/build/agent/pgfleet-agent" --controller="127.0.0.1:$CTL_PORT" --env=staging \
  --agent-id=staging-1 "$STATE/staging-1.ini" 2>/dev/null &
PIDS+=($!)
for port in "$CTL_PORT" "$HTTP_PORT" "$AGENT_PORT" "$AGENT2_PORT"; do
  for _ in $(seq 100); do
    ss -Hltn "sport = :$port" | grep -q . && break
    sleep 0.1
  done
done
stop_all() {
  kill -TERM "${PIDS[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  cleanup
}
trap stop_all EXIT

cat <<MSG

pgfleet is running.
  PostgreSQL 15        127.0.0.1:$PG_PORT  (superuser postgres / postgres)
  pgfleet-controller   127.0.0.1:$CTL_PORT  (SQLite: $STATE/pgfleet.db)
  dashboard            http://127.0.0.1:$HTTP_PORT/  (sign in with the token below)
  agent dev-1          127.0.0.1:$AGENT_PORT  (env dev, transaction pooling)
                       metrics: curl http://127.0.0.1:$METRICS_PORT/metrics
  agent staging-1      127.0.0.1:$AGENT2_PORT  (env staging)
  logs                 $STATE/*.log

Dashboard: open http://127.0.0.1:$HTTP_PORT/ and sign in with $TOKEN (admin).
  A read-only token: $REPO/build/controller/pgfleet-controller token create \\
                       --db=$STATE/pgfleet.db --name=me --role=viewer

Try, in another terminal:
  PGPASSWORD=app psql -h 127.0.0.1 -p $AGENT_PORT -U app appdb
  PGPASSWORD=app pgbench -c 50 -j 2 -T 10 -h 127.0.0.1 -p $AGENT_PORT -U app appdb
  PGPASSWORD=admin psql -h 127.0.0.1 -p $AGENT_PORT -U admin pgbouncer -c 'SHOW POOLS'

  export PGFLEET_CONTROLLER=127.0.0.1:$CTL_PORT PGFLEET_TOKEN=$TOKEN
  $REPO/build/cli/fleetctl agents list
  sed 's/default_pool_size = 10/default_pool_size = 5/' $STATE/dev-1.ini > /tmp/new.ini
  $REPO/build/cli/fleetctl config push --env dev -f /tmp/new.ini -m "smaller pool"
  $REPO/build/cli/fleetctl config apply --env dev --version v1 --wait
  $REPO/build/cli/fleetctl pause --env staging --db appdb --for 5m
  $REPO/build/cli/fleetctl resume --env staging

Ctrl-C stops everything.
MSG
trap 'stop_all; exit 0' INT TERM
wait "${PIDS[0]}" || true
