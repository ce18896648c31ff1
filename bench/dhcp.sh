#!/bin/bash
# DHCPv4 clean rate: Lariat's DHCP server (boot/examples/dhcp_serve.rs, release build)
# against kea-dhcp4 and dnsmasq, with perfdhcp as the load (shared/peers/30-perfdhcp.sh,
# 31-perfdhcp-sweep.sh). Same setup for all three: server in one namespace, perfdhcp in
# another over a veth pair on 10.77.0.0/16; perfdhcp acts as a relay (giaddr 10.77.0.2),
# a new random MAC per exchange, a /16 pool (10.77.1.0 - 10.77.255.250).
#
# Leases are persisted by all three: Lariat in SQLite (WAL; DURABILITY=normal by
# default: a committed lease survives a process crash, fsync at checkpoints; =full
# fsyncs every group commit), kea in its memfile CSV (persist=true), dnsmasq in its
# lease file (default mode, rewritten on change). Each server is restarted fresh for
# each rate. A rate is clean when perfdhcp reports no drop in either exchange. Every
# server climbs the same ladder until its first rate with drops, so whichever is faster
# can show it; a server still clean at the top of its ladder is reported as such
# ("clean_at_top": the true rate is higher; extend the ladder). SECS per run (default 5).
#
# Prints ONE JSON object on stdout (progress on stderr): each server's clean rate (DORA/s
# offered by perfdhcp) and ACKs/s measured at that rate, and Lariat's ratio to kea (null
# when either never dropped, since the ratio would then be a floor or a ceiling).
# Needs root, iproute2, perfdhcp (kea-admin), kea-dhcp4, dnsmasq.
# Env: LARIAT_DHCP_BIN (skip the build), SECS, DURABILITY, LARIAT_RATES, KEA_RATES,
# DNSMASQ_RATES, CARGO_TARGET_DIR.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd); REPO=$(cd "$HERE/.." && pwd)
SECS=${SECS:-5}; DURABILITY=${DURABILITY:-normal}
# One ladder for the two fast servers; past perfdhcp's own limit on these machines.
LADDER="4000 6000 7000 8000 9000 10000 11000 12000 14000 16000 20000 25000 30000 40000"
LARIAT_RATES=${LARIAT_RATES:-$LADDER}
KEA_RATES=${KEA_RATES:-$LADDER}
DNSMASQ_RATES=${DNSMASQ_RATES:-"100 200 400 800 1600 3200 6400"}
fail() { printf '{"error": "%s"}\n' "$*"; exit 1; }
[ "$(id -u)" = 0 ] || fail "needs root (network namespaces)"
for b in ip perfdhcp kea-dhcp4 dnsmasq; do command -v "$b" >/dev/null || fail "missing $b"; done

BIN=${LARIAT_DHCP_BIN:-}
if [ -z "$BIN" ]; then
  echo "building dhcp_serve (release)..." >&2
  (cd "$REPO" && cargo build --release -q -p lariat-boot --example dhcp_serve) >&2 || fail "build failed"
  BIN=${CARGO_TARGET_DIR:-$REPO/target}/release/examples/dhcp_serve
fi
[ -x "$BIN" ] || fail "no server binary at $BIN"

SRV=ldsrv$$; CLI=ldcli$$
WORK=$(mktemp -d /tmp/lariat-bench-dhcp.XXXXXX)
PID=
cleanup() {
  [ -n "$PID" ] && { kill "$PID" 2>/dev/null; wait "$PID" 2>/dev/null; }
  ip netns del "$SRV" 2>/dev/null; ip netns del "$CLI" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT
ip netns add "$SRV" && ip netns add "$CLI" || fail "cannot create namespaces"
ip link add veth-s netns "$SRV" type veth peer name veth-c netns "$CLI"
ip -n "$SRV" addr add 10.77.0.1/16 dev veth-s; ip -n "$CLI" addr add 10.77.0.2/16 dev veth-c
for ns in "$SRV" "$CLI"; do ip -n "$ns" link set lo up; done
ip -n "$SRV" link set veth-s up; ip -n "$CLI" link set veth-c up

start_server() {
  rm -rf "$WORK/run"; mkdir -p "$WORK/run"; local R=$WORK/run
  case "$1" in
    lariat)
      ip netns exec "$SRV" "$BIN" --interface veth-s --server-id 10.77.0.1 --db "$R/leases.db" \
        --subnet 10.77.0.0/16 --range 10.77.1.0-10.77.255.250 --lease-time 43200 \
        --durability "$DURABILITY" > "$R/lariat.out" 2> "$R/lariat.err" &
      PID=$! ;;
    kea)
      cat > "$R/kea.json" <<EOF
{ "Dhcp4": {
  "interfaces-config": { "interfaces": [ "veth-s" ], "dhcp-socket-type": "raw" },
  "lease-database": { "type": "memfile", "persist": true, "name": "$R/kea-leases4.csv", "lfc-interval": 0 },
  "valid-lifetime": 43200,
  "subnet4": [ { "id": 1, "subnet": "10.77.0.0/16", "pools": [ { "pool": "10.77.1.0 - 10.77.255.250" } ] } ],
  "loggers": [ { "name": "kea-dhcp4", "severity": "WARN", "output_options": [ { "output": "$R/kea.log" } ] } ]
} }
EOF
      KEA_PIDFILE_DIR=$R KEA_LOCKFILE_DIR=$R ip netns exec "$SRV" kea-dhcp4 -c "$R/kea.json" > "$R/kea.out" 2>&1 &
      PID=$! ;;
    dnsmasq)
      ip netns exec "$SRV" dnsmasq --keep-in-foreground --conf-file=/dev/null --port=0 -u root \
        --interface=veth-s --bind-interfaces --no-ping --dhcp-authoritative \
        --dhcp-range=10.77.1.0,10.77.255.250,255.255.0.0,12h --dhcp-lease-max=200000 \
        --dhcp-leasefile="$R/dnsmasq.leases" --pid-file="$R/dnsmasq.pid" --log-facility="$R/dnsmasq.log" &
      PID=$! ;;
  esac
  for _ in $(seq 1 50); do ip netns exec "$SRV" ss -lun | grep -q ':67 ' && break; sleep 0.1; done
  sleep 0.3
}
stop_server() { kill "$PID" 2>/dev/null; wait "$PID" 2>/dev/null; PID=; }

# One perfdhcp run; prints "drops acks_per_s".
run_rate() {
  local out=$WORK/perf.txt
  ip netns exec "$CLI" timeout $((SECS + 30)) perfdhcp -4 -l veth-c -r "$1" -R 200000 -p "$SECS" \
    -W 1000000 10.77.0.1 > "$out" 2>&1
  local d1 d2 acks
  d1=$(awk '/Statistics for: DISCOVER-OFFER/{s=1} s&&/^drops:/{print $2; exit}' "$out")
  d2=$(awk '/Statistics for: REQUEST-ACK/{s=1} s&&/^drops:/{print $2; exit}' "$out")
  acks=$(awk '/Statistics for: REQUEST-ACK/{s=1} s&&/received packets/{print $3; exit}' "$out")
  echo "$(( ${d1:-1} + ${d2:-1} )) $(( ${acks:-0} / SECS ))"
}

declare -A CLEAN ACKS TOP
for srv in lariat kea dnsmasq; do
  case $srv in lariat) rates=$LARIAT_RATES;; kea) rates=$KEA_RATES;; dnsmasq) rates=$DNSMASQ_RATES;; esac
  CLEAN[$srv]=0; ACKS[$srv]=0; TOP[$srv]=true
  for r in $rates; do
    start_server "$srv"
    read -r drops acks < <(run_rate "$r")
    if [ "$srv" = lariat ]; then stop_server; extra=" $(tail -1 "$WORK/run/lariat.out" 2>/dev/null)"; else stop_server; extra=; fi
    echo "$srv rate=$r drops=$drops acks/s=$acks$extra" >&2
    if [ "$drops" -eq 0 ]; then CLEAN[$srv]=$r; ACKS[$srv]=$acks; else TOP[$srv]=false; break; fi
  done
done

ratio=$(awk -v a="${CLEAN[lariat]}" -v b="${CLEAN[kea]}" -v ta="${TOP[lariat]}" -v tb="${TOP[kea]}" \
  'BEGIN{ if (b > 0 && ta == "false" && tb == "false") printf "%.2f", a / b; else print "null" }')
printf '{"bench":"dhcp","secs_per_run":%s,"lariat_durability":"%s","clean_rate_dora_per_s":{"lariat":%s,"kea":%s,"dnsmasq":%s},"acks_per_s_at_clean_rate":{"lariat":%s,"kea":%s,"dnsmasq":%s},"clean_at_top":{"lariat":%s,"kea":%s,"dnsmasq":%s},"lariat_over_kea":%s,"target":"lariat >= kea"}\n' \
  "$SECS" "$DURABILITY" "${CLEAN[lariat]}" "${CLEAN[kea]}" "${CLEAN[dnsmasq]}" \
  "${ACKS[lariat]}" "${ACKS[kea]}" "${ACKS[dnsmasq]}" "${TOP[lariat]}" "${TOP[kea]}" "${TOP[dnsmasq]}" "$ratio"
