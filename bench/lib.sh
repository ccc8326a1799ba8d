# Shared set-up of the bench scripts (run.sh, cost_per_txn.sh, soak.sh): free ports and a
# throwaway PostgreSQL 15 cluster. Sourced, not run; the caller defines log() and die().
BENCH_PGBIN=/usr/lib/postgresql/15/bin

# "${BENCH_AS_PG[@]}" CMD...: as postgres when run as root (PostgreSQL and PgBouncer refuse
# to run as root); an array, so that `timeout` can run it.
BENCH_AS_PG=()
[[ $(id -u) -eq 0 ]] && BENCH_AS_PG=(runuser -u postgres --)

# bench_free_port VAR: sets VAR to a TCP port nobody listens on, below the ephemeral range,
# away from 5432/6432 and from the ports picked before in this run.
BENCH_PICKED=" "
bench_free_port() {
  # Locals prefixed: printf -v would set a local of the caller's VAR name instead.
  local _bfp_start=$((20000 + RANDOM % 9000)) _bfp_port _bfp_i
  for ((_bfp_i = 0; _bfp_i < 2000; _bfp_i++)); do
    _bfp_port=$((20000 + (_bfp_start - 20000 + _bfp_i) % 12000))
    [[ $_bfp_port == 5432 || $_bfp_port == 6432 || "$BENCH_PICKED" == *" $_bfp_port "* ]] &&
      continue
    if ! ss -Hltn "sport = :$_bfp_port" | grep -q .; then
      BENCH_PICKED+="$_bfp_port "
      printf -v "$1" '%s' "$_bfp_port"
      return
    fi
  done
  die "no free TCP port found"
}

# bench_start_postgres DIR PORT SUPERUSER_PASSWORD [CONF_LINE...]: initdb DIR/pg (scram, the
# superuser postgres with that password), listening on 127.0.0.1:PORT with its socket in DIR,
# fsync off, plus the given postgresql.conf lines; started, its log in DIR/postgres.log. DIR
# must be writable by postgres.
bench_start_postgres() {
  local dir="$1" port="$2" password="$3"
  shift 3
  echo "$password" >"$dir/pwfile"
  [[ $(id -u) -eq 0 ]] && chown postgres "$dir/pwfile"
  timeout 300 "${BENCH_AS_PG[@]}" "$BENCH_PGBIN/initdb" -D "$dir/pg" -U postgres \
    --auth=scram-sha-256 --pwfile="$dir/pwfile" --no-sync -E UTF8 --locale=C \
    >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; die "initdb failed"; }
  {
    echo "listen_addresses = '127.0.0.1'"
    echo "port = $port"
    echo "unix_socket_directories = '$dir'"
    echo "fsync = off"
    local line
    for line in "$@"; do echo "$line"; done
  } >>"$dir/pg/postgresql.conf"
  timeout 120 "${BENCH_AS_PG[@]}" "$BENCH_PGBIN/pg_ctl" -D "$dir/pg" -l "$dir/postgres.log" -w \
    -t 60 start >/dev/null || { tail -20 "$dir/postgres.log" >&2; die "PostgreSQL did not start"; }
}

# bench_stop_postgres DIR: fast, else immediate; never fails (cleanup paths call it).
bench_stop_postgres() {
  [[ -f "$1/pg/postmaster.pid" ]] || return 0
  timeout 60 "${BENCH_AS_PG[@]}" "$BENCH_PGBIN/pg_ctl" -D "$1/pg" -m fast -w stop >/dev/null 2>&1 ||
    timeout 60 "${BENCH_AS_PG[@]}" "$BENCH_PGBIN/pg_ctl" -D "$1/pg" -m immediate stop \
      >/dev/null 2>&1 || true
}
