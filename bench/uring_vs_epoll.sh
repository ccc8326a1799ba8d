#!/usr/bin/env bash
# Issue 20: io_uring against epoll for the agent's data-path shape, measured on loopback by a
# standalone program (bench/uring_vs_epoll.cc; not part of the agent or of CMake's build).
# Installs liburing-dev if missing, compiles into a temp dir, runs each client count given.
#
#   bench/uring_vs_epoll.sh                 # 50, 5 and 1 clients, 3 s per trial, 5 rounds
#   UVE_CLIENTS="50" UVE_SECONDS=2 UVE_ROUNDS=3 bench/uring_vs_epoll.sh
#
# Prints to stdout; bench/results/uring-vs-epoll.txt is a kept copy (see bench/README.md).
set -euo pipefail
cd "$(dirname "$0")"
read -ra CLIENT_COUNTS <<<"${UVE_CLIENTS:-50 5 1}"
SECONDS_PER_TRIAL="${UVE_SECONDS:-3}"
ROUNDS="${UVE_ROUNDS:-5}"

if [[ ! -f /usr/include/liburing.h ]]; then
  # apt-get update only when the package is not known yet: it is slow and needs the network.
  if ! apt-cache show liburing-dev >/dev/null 2>&1; then apt-get update; fi
  apt-get install -y liburing-dev
fi

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
g++ -O2 -std=c++20 -Wall -Wextra -Werror -pthread -o "$TMP/uring_vs_epoll" uring_vs_epoll.cc -luring

echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), kernel $(uname -r), $(nproc) cores," \
  "liburing $(dpkg-query -W -f='${Version}' liburing-dev 2>/dev/null || echo '?')," \
  "loadavg before: $(cut -d' ' -f1-3 /proc/loadavg)"
for clients in "${CLIENT_COUNTS[@]}"; do
  echo
  "$TMP/uring_vs_epoll" "$clients" "$SECONDS_PER_TRIAL" "$ROUNDS"
done
echo
echo "# loadavg after: $(cut -d' ' -f1-3 /proc/loadavg)"
