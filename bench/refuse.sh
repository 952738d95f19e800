#!/usr/bin/env bash
# bench/refuse.sh - how fast mxguard refuses a blocked source at connect
# (DESIGN.md target: >= 20,000 connections/s), and what one refusal costs
# mxguard in CPU. Loopback only; needs no root.
#
# Starts "mxguard serve" on free ports, blocks 127.0.0.77 through the API,
# runs bench/refuseload (workers bound to 127.0.0.77: connect, read the
# 421, close) for DURATION, and reads mxguard's own CPU time from
# /proc/PID/stat before and after. The load tool shares the machine, so the
# refusal rate is a lower bound; CPU per refusal gives the capacity of
# mxguard alone (1 s / cpu_us_per_refusal per core).
#
# Environment: DURATION=5s WORKERS=16 PPROF=FILE (write a CPU profile)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-5s}
WORKERS=${WORKERS:-16}
W=$(mktemp -d)
PID=
cleanup() { [[ -n $PID ]] && kill "$PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$W"; }
trap cleanup EXIT
freeport() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
SMTP=127.0.0.1:$(freeport) ADMIN=127.0.0.1:$(freeport)
TOKEN=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')   # serve refuses short or sample tokens
go build -o "$W/mxguard" ./cmd/mxguard
go build -o "$W/refuseload" ./bench/refuseload
cat >"$W/mxguard.yaml" <<CFG
domains: [example.test]
listen: {smtp: $SMTP, admin: $ADMIN}
admin: {token: $TOKEN}
data_dir: $W/var
trusted_networks: [127.0.0.1/32]
limits: {max_connections: 10000}
delivery:
  servers: [{address: 127.0.0.1:9}]
CFG
"$W/mxguard" serve -c "$W/mxguard.yaml" 2>"$W/mxguard.log" &
PID=$!
for _ in $(seq 100); do curl -sf "http://$ADMIN/healthz" >/dev/null && break; sleep 0.05; done
curl -sf -X POST -H "Authorization: Bearer $TOKEN" -d '{"source":"127.0.0.77","for":"1h","reason":"bench"}' "http://$ADMIN/api/v1/blocks" >/dev/null
cpu() { awk '{print $14 + $15}' "/proc/$PID/stat"; }
c0=$(cpu)
if [[ -n ${PPROF:-} ]]; then   # PPROF=FILE: CPU profile of mxguard during the load
    curl -sf -H "Authorization: Bearer $TOKEN" -o "$PPROF" "http://$ADMIN/debug/pprof/profile?seconds=3" &
fi
out=$("$W/refuseload" -addr "$SMTP" -src 127.0.0.77 -duration "$DURATION" -workers "$WORKERS")
c1=$(cpu)
hz=$(getconf CLK_TCK)
refused=$(sed -E 's/.*refused=([0-9]+).*/\1/' <<<"$out")
echo "$out"
awk -v c=$((c1 - c0)) -v hz="$hz" -v n="$refused" 'BEGIN {
  us = c / hz * 1e6 / n
  printf "mxguard_cpu_us_per_refusal=%.1f capacity_per_core=%.0f/s ncpu_shared_with_load_tool=1\n", us, 1e6 / us
}'
