#!/usr/bin/env bash
# Installs every Debian 12 package pgfleet needs to build, test and run. Idempotent:
# packages already present are not touched, and apt is not called when nothing is missing.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config git
  libabsl-dev libevent-dev libssl-dev libsqlite3-dev sqlite3
  libgtest-dev libgmock-dev libcli11-dev
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc
  libpq-dev postgresql-15 postgresql-client-15 postgresql-contrib
  pgbouncer procps iproute2
  libsystemd-dev systemd dpkg-dev man-db curl
  clang libclang-rt-14-dev
  nodejs chromium
  python3-psycopg libpostgresql-jdbc-java openjdk-17-jre-headless
  prometheus  # promtool: observability_test checks /metrics and packaging/monitoring/ with it
  pgbadger    # logging_parity_test: pgbadger reads the agent's log as PgBouncer's
)
# npm ships inside some nodejs builds (NodeSource's); Debian's nodejs needs the npm package.
if ! command -v npm >/dev/null 2>&1; then PACKAGES+=(npm); fi

missing=()
for pkg in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done

if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi

SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
echo "install-deps: installing ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
