#!/usr/bin/env bash
# The packaging test (issue 23): builds the three .deb files with scripts/package.sh, checks
# their contents (dpkg-deb -c), Depends and conffiles, extracts them into a temporary root
# (dpkg-deb -x) and runs the installed binaries from there: --version of each, the controller
# serving the installed dashboard, and an agent started with the installed pgfleet-agent.service's
# ExecStart command line (paths rewritten to the temporary root) serving psql against a
# throwaway PostgreSQL 15. Everything is stopped and removed on exit.
# Usage: scripts/test-packages.sh [BUILD_DIR (default build, a release build)]
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:-build}"

WORK="$(mktemp -d /tmp/pgfleet-packages.XXXXXX)"
chmod 755 "$WORK"
ROOT="$WORK/root"
PGBIN=/usr/lib/postgresql/15/bin
PIDS=()
failures=0

as_postgres() {
  if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}
cleanup() {
  for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  if [[ -d "$WORK/pg" ]]; then
    as_postgres "$PGBIN/pg_ctl" -D "$WORK/pg" -m immediate stop >/dev/null 2>&1 || true
  fi
  if [[ "${PGFLEET_KEEP_TEST_DIRS:-0}" == 1 ]]; then echo "keeping $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

fail() {
  echo "FAIL: $*" >&2
  failures=$((failures + 1))
}
pass() { echo "ok: $*"; }
free_port() {
  local port
  for port in $(seq "$1" $(($1 + 500))); do
    if ! ss -Hltn "sport = :$port" | grep -q .; then echo "$port"; return; fi
  done
  echo "no free port near $1" >&2
  exit 1
}
# Polls a command (up to ~10 s): never a bare sleep as synchronisation.
await() {
  local what="$1"
  shift
  for _ in $(seq 100); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  fail "$what: not within 10s"
  return 1
}

# ---- build the packages ---------------------------------------------------------------------------
scripts/package.sh "$dir" "$WORK/debs" >/dev/null
version="$(sed -n 's/^project(pgfleet VERSION \([0-9.]*\).*/\1/p' CMakeLists.txt)"
arch="$(dpkg --print-architecture)"
deb() { echo "$WORK/debs/${1}_${version}-1_${arch}.deb"; }
for package in pgfleet-agent pgfleet-controller fleetctl; do
  [[ -f "$(deb "$package")" ]] || { echo "FAIL: no $(deb "$package")" >&2; exit 1; }
done
pass "package.sh built $(ls "$WORK/debs" | tr '\n' ' ')"

# ---- contents -------------------------------------------------------------------------------------
contents() { dpkg-deb -c "$(deb "$1")" | awk '{print $6}' | sed 's|^\./|/|'; }
expect_files() {  # expect_files PACKAGE PATH...
  local package="$1" listing
  shift
  listing="$(contents "$package")"
  for path in "$@"; do
    grep -qxF "$path" <<<"$listing" || fail "$package lacks $path"
  done
}
expect_no_files() {  # expect_no_files PACKAGE REGEX...
  local package="$1" listing
  shift
  listing="$(contents "$package")"
  for pattern in "$@"; do
    if grep -qE "$pattern" <<<"$listing"; then fail "$package ships $pattern"; fi
  done
}
expect_files pgfleet-agent /usr/bin/pgfleet-agent /lib/systemd/system/pgfleet-agent.service \
  /lib/systemd/system/pgfleet-agent@.service /etc/pgfleet/agent.ini /etc/pgfleet/agent.env \
  /etc/pgfleet/userlist.txt /usr/share/man/man8/pgfleet-agent.8.gz \
  /usr/share/man/man5/pgfleet.ini.5.gz /var/lib/pgfleet/
expect_no_files pgfleet-agent 'bin/(pgfleet-controller|fleetctl)$' 'controller'
expect_files pgfleet-controller /usr/bin/pgfleet-controller \
  /lib/systemd/system/pgfleet-controller.service /etc/pgfleet/controller.env \
  /usr/share/man/man8/pgfleet-controller.8.gz /usr/share/pgfleet/web/index.html /var/lib/pgfleet/
expect_no_files pgfleet-controller 'bin/(pgfleet-agent|fleetctl)$' 'pgfleet-agent@?\.service' 'man8/pgfleet-agent'
expect_files fleetctl /usr/bin/fleetctl /usr/share/man/man1/fleetctl.1.gz
expect_no_files fleetctl '^/etc/' 'systemd' 'bin/pgfleet-'
# Nothing under /usr/local, and the migrations are embedded in the controller, not shipped.
for package in pgfleet-agent pgfleet-controller fleetctl; do
  expect_no_files "$package" '^/usr/local' 'migrations'
done
pass "contents"

# ---- control fields: Version, Depends (from dpkg-shlibdeps), conffiles, maintainer scripts -------
field() { dpkg-deb -f "$(deb "$1")" "$2"; }
for package in pgfleet-agent pgfleet-controller fleetctl; do
  [[ "$(field "$package" Package)" == "$package" ]] || fail "$package: Package field"
  [[ "$(field "$package" Version)" == "$version-1" ]] || fail "$package: Version $(field "$package" Version)"
  depends="$(field "$package" Depends)"
  for lib in 'libc6 (>= ' 'libstdc++6' 'libssl3' 'libabsl20220623'; do
    grep -qF "$lib" <<<"$depends" || fail "$package: Depends lacks $lib: $depends"
  done
done
depends_agent="$(field pgfleet-agent Depends)"
depends_controller="$(field pgfleet-controller Depends)"
depends_fleetctl="$(field fleetctl Depends)"
for lib in adduser libevent-core-2.1-7 libsystemd0; do
  grep -qF "$lib" <<<"$depends_agent" || fail "pgfleet-agent: Depends lacks $lib"
done
for lib in adduser libsqlite3-0 libpq5 'libgrpc++' libsystemd0; do
  grep -qF "$lib" <<<"$depends_controller" || fail "pgfleet-controller: Depends lacks $lib"
done
grep -qF 'libgrpc++' <<<"$depends_fleetctl" || fail "fleetctl: Depends lacks libgrpc++"
# Only the daemons link libsystemd (sd_notify), and only the controller SQLite.
grep -qF libsystemd0 <<<"$depends_fleetctl" && fail "fleetctl depends on libsystemd0"
grep -qF libsqlite3 <<<"$depends_agent" && fail "pgfleet-agent depends on libsqlite3"
# libpq: the controller's PostgreSQL store only.
grep -qF libpq5 <<<"$depends_agent" && fail "pgfleet-agent depends on libpq5"
grep -qF libpq5 <<<"$depends_fleetctl" && fail "fleetctl depends on libpq5"
control() { dpkg-deb --info "$(deb "$1")" "$2" 2>/dev/null; }
[[ "$(control pgfleet-agent conffiles)" == $'/etc/pgfleet/agent.ini\n/etc/pgfleet/agent.env\n/etc/pgfleet/userlist.txt' ]] ||
  fail "pgfleet-agent conffiles: $(control pgfleet-agent conffiles)"
[[ "$(control pgfleet-controller conffiles)" == "/etc/pgfleet/controller.env" ]] ||
  fail "pgfleet-controller conffiles: $(control pgfleet-controller conffiles)"
for package in pgfleet-agent pgfleet-controller; do
  postinst="$(control "$package" postinst)"
  grep -q 'adduser --system' <<<"$postinst" || fail "$package postinst creates no system user"
  grep -q 'install -d -o pgfleet -g pgfleet' <<<"$postinst" || fail "$package postinst: state dir"
  for script in postinst prerm postrm; do
    control "$package" "$script" | sh -n || fail "$package $script: shell syntax"
  done
done
pass "Version, Depends, conffiles, maintainer scripts"

# ---- extract into a temporary root and run the installed binaries --------------------------------
mkdir -p "$ROOT"
for package in pgfleet-agent pgfleet-controller fleetctl; do dpkg-deb -x "$(deb "$package")" "$ROOT"; done
for binary in pgfleet-agent pgfleet-controller fleetctl; do
  out="$("$ROOT/usr/bin/$binary" --version 2>&1)" || fail "$binary --version exits non-zero"
  [[ "$out" == *"$binary $version"* ]] || fail "$binary --version: $out"
done
pass "--version of the installed binaries"
for page in man8/pgfleet-agent.8.gz man8/pgfleet-controller.8.gz man1/fleetctl.1.gz man5/pgfleet.ini.5.gz; do
  rendered="$(MANWIDTH=80 man -l "$ROOT/usr/share/man/$page" 2>&1)" || fail "man $page"
  grep -q '^NAME' <<<"$rendered" || fail "man $page renders no NAME section"
done
pass "man pages render"

# The controller finds the installed dashboard (<bin>/../share/pgfleet/web) by itself.
CTL_PORT=$(free_port 17070)
HTTP_PORT=$(free_port 17580)
"$ROOT/usr/bin/pgfleet-controller" --listen="127.0.0.1:$CTL_PORT" --db="$WORK/controller.db" \
  --http-listen="127.0.0.1:$HTTP_PORT" 2>"$WORK/controller.log" &
PIDS+=($!)
if await "the installed controller's dashboard" curl -fsS "http://127.0.0.1:$HTTP_PORT/"; then
  curl -fsS "http://127.0.0.1:$HTTP_PORT/" | grep -qi '<html' || fail "dashboard: no HTML"
  pass "installed controller serves the installed dashboard"
fi
kill -TERM "${PIDS[-1]}"
wait "${PIDS[-1]}" || fail "controller did not exit 0 on SIGTERM: $(tail -5 "$WORK/controller.log")"

# ---- a throwaway PostgreSQL (as scripts/run.sh) ------------------------------------------------
PG_PORT=$(free_port 16432)
mkdir -p "$WORK/pg"
[[ $(id -u) -eq 0 ]] && chown postgres "$WORK/pg"
as_postgres "$PGBIN/initdb" -D "$WORK/pg" -U postgres --auth=trust >/dev/null
cat >>"$WORK/pg/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$WORK/pg'
CONF
as_postgres "$PGBIN/pg_ctl" -D "$WORK/pg" -l "$WORK/pg/log" -w start >/dev/null
psql -qX -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres \
  -c "CREATE ROLE app LOGIN PASSWORD 'app-pw'" -c "CREATE DATABASE appdb OWNER app" >/dev/null

# ---- the agent as pgfleet-agent.service starts it ------------------------------------------------
AGENT_PORT=$(free_port $((PG_PORT + 1000)))
# The shipped agent.ini, pointed at this root, this port and this PostgreSQL.
ini="$ROOT/etc/pgfleet/agent.ini"
sed -i -e "s|/etc/pgfleet/|$ROOT/etc/pgfleet/|g" -e "s|/run/pgfleet|$ROOT/run/pgfleet|g" \
  -e "s|^listen_port = .*|listen_port = $AGENT_PORT|" \
  -e "s|^\\[databases\\]|[databases]\nappdb = host=127.0.0.1 port=$PG_PORT dbname=appdb|" "$ini"
mkdir -p "$ROOT/run/pgfleet" "$ROOT/var/lib/pgfleet"
echo '"app" "app-pw"' >>"$ROOT/etc/pgfleet/userlist.txt"
exec_start="$(sed -n 's/^ExecStart=//p' "$ROOT/lib/systemd/system/pgfleet-agent.service")"
[[ -n "$exec_start" ]] || fail "pgfleet-agent.service has no ExecStart"
# %S is systemd's state dir root (/var/lib); the absolute paths move under the root.
exec_start="${exec_start//%S/$ROOT/var/lib}"
exec_start="${exec_start//\/usr\/bin\//$ROOT/usr/bin/}"
exec_start="${exec_start//\/etc\/pgfleet\//$ROOT/etc/pgfleet/}"
echo "ExecStart (rewritten): $exec_start"
read -r -a agent_argv <<<"$exec_start"
"${agent_argv[@]}" 2>"$WORK/agent.log" &
AGENT_PID=$!
PIDS+=("$AGENT_PID")
query() {
  PGPASSWORD=app-pw psql -qtAX -h 127.0.0.1 -p "$AGENT_PORT" -U app -d appdb -c "$1"
}
if await "the installed agent serving psql" query "select 1"; then
  [[ "$(query 'select 6 * 7')" == 42 ]] || fail "psql through the installed agent"
  # systemctl reload: SIGHUP, and it keeps serving.
  kill -HUP "$AGENT_PID"
  await "a RELOAD logged" grep -q "RELOAD: configuration" "$WORK/agent.log" || true
  [[ "$(query 'select current_user')" == app ]] || fail "psql after SIGHUP"
  pass "agent from the installed unit's ExecStart serves psql (port $AGENT_PORT)"
else
  tail -20 "$WORK/agent.log" >&2
fi
kill -TERM "$AGENT_PID"
wait "$AGENT_PID" || fail "agent did not exit 0 on SIGTERM: $(tail -5 "$WORK/agent.log")"

# ---- the units, as installed, pass systemd-analyze verify (ExecStart pointed into the root) -------
mkdir -p "$WORK/units"
for unit in pgfleet-agent.service pgfleet-agent@.service pgfleet-controller.service; do
  sed "s|/usr/bin/|$ROOT/usr/bin/|" "$ROOT/lib/systemd/system/$unit" >"$WORK/units/$unit"
done
verify="$(cd "$WORK/units" && systemd-analyze verify --man=no pgfleet-agent.service \
  pgfleet-agent@east.service pgfleet-controller.service 2>&1)" || fail "systemd-analyze verify failed"
[[ -z "$verify" ]] && pass "systemd-analyze verify on the installed units" ||
  fail "systemd-analyze verify: $verify"

if ((failures > 0)); then
  echo "test-packages: $failures failure(s)" >&2
  exit 1
fi
echo "test-packages: all checks passed"
