#!/usr/bin/env bash
# Makes a throwaway CA, a controller certificate and agent certificates for mutual TLS:
#   scripts/make-test-certs.sh DIR AGENT_ID[@ENV] [AGENT_ID[@ENV]...]
# DIR gets ca.pem, controller.pem/-key.pem (CN=localhost, SAN localhost + 127.0.0.1), and
# <agent>.pem/<agent>-key.pem (CN = agent id). With @ENV the agent's certificate also binds its
# environment: SAN URI:pgfleet://env/ENV/agent/AGENT_ID, which pgfleet-controller checks against
# the environment the agent asks for. For tests and demos, not for production.
set -euo pipefail
if (($# < 1)); then
  echo "usage: $0 DIR [AGENT_ID[@ENV]...]" >&2
  exit 2
fi
dir="$1"; shift
mkdir -p "$dir"
cd "$dir"
openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=pgfleet test CA" \
  -keyout ca-key.pem -out ca.pem 2>/dev/null
issue() {  # issue NAME CN [SAN]
  local name="$1" cn="$2" san="${3:-}"
  openssl req -newkey rsa:2048 -nodes -subj "/CN=$cn" -keyout "$name-key.pem" \
    -out "$name.csr" 2>/dev/null
  if [[ -n "$san" ]]; then
    printf 'subjectAltName=%s\n' "$san" > "$name.ext"
    openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 30 \
      -extfile "$name.ext" -out "$name.pem" 2>/dev/null
  else
    openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 30 \
      -out "$name.pem" 2>/dev/null
  fi
  rm -f "$name.csr" "$name.ext"
}
issue controller localhost "DNS:localhost,IP:127.0.0.1"
for spec in "$@"; do
  agent="${spec%%@*}"
  if [[ "$spec" == *@* ]]; then
    issue "$agent" "$agent" "URI:pgfleet://env/${spec#*@}/agent/$agent"
  else
    issue "$agent" "$agent"
  fi
done
echo "certificates in $dir"
