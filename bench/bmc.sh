#!/bin/bash
# BMC benchmark: N ipmi_sim BMCs (default 50) on distinct loopback ports; power status, off
# and on against all of them at once, first with Lariat's native IPMI driver (release
# example bmc/examples/bmc_bench.rs), then with ipmitool processes (one per BMC, in
# parallel, each running status, off, on in turn) in the same run. Afterwards, the sessions
# left open on every simulator, counted by both clients (must be 0).
# Prints ONE JSON object on stdout; progress goes to stderr.
# Env: N (BMCs, 50), BASE_PORT (9600), CARGO_TARGET_DIR (target).
# Needs: ipmi_sim (openipmi), ipmitool, python3, cargo.
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
N=${N:-50}; BASE=${BASE_PORT:-9600}; LAST=$((BASE + N - 1))
TARGET=${CARGO_TARGET_DIR:-$HERE/target}
for p in ipmi_sim ipmitool python3 cargo; do
  command -v "$p" >/dev/null || { echo "{\"error\":\"$p not found\"}"; exit 1; }
done
WORK=$(mktemp -d /tmp/lariat-bench-bmc.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
            for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

echo "building the bench example (release)..." >&2
(cd "$HERE" && CARGO_TARGET_DIR=$TARGET cargo build -q --release -p lariat-bmc --example bmc_bench) >&2
BENCH=$TARGET/release/examples/bmc_bench

HOOK=$HERE/bench/ipmi_sim/hook.sh; EMU=$HERE/bench/ipmi_sim/bmc.emu

echo "starting $N ipmi_sim on 127.0.0.1:$BASE-$LAST..." >&2
for port in $(seq "$BASE" "$LAST"); do
  d=$WORK/bmc-$port; mkdir -p "$d/var" "$d/state"
  cat > "$d/lan.conf" <<CONF
name "bench-$port"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 $port
    priv_limit admin
    allowed_auths_admin none md2 md5 straight
    guid a123456789abcdefa123456789abcdef
  endlan
  chassis_control "$HOOK $d/var 0x20"
  user 2 true "admin" "password" admin 10 none md2 md5 straight
CONF
  ipmi_sim -n -c "$d/lan.conf" -f "$EMU" -s "$d/state" >"$d/sim.log" 2>&1 </dev/null &
  PIDS+=($!)
done
for port in $(seq "$BASE" "$LAST"); do
  hex=$(printf ':%04X ' "$port")
  for _ in $(seq 1 200); do grep -q "$hex" /proc/net/udp && break; sleep 0.05; done
  grep -q "$hex" /proc/net/udp || { echo "{\"error\":\"ipmi_sim on $port did not start\"}"; exit 1; }
done

export IPMI_PASSWORD=password
echo "native: status, off, on x $N BMCs at once..." >&2
NATIVE=$("$BENCH" --host 127.0.0.1 --ports "$BASE-$LAST")

echo "ipmitool: status, off, on x $N processes at once..." >&2
IPMI=(ipmitool -I lanplus -C 3 -H 127.0.0.1 -U admin -E -N 1 -R 3)
one_bmc() {  # status, off, on in turn; one line "ms ok" per operation
  local port=$1 op t0 t1 rc
  for op in status off on; do
    t0=$(date +%s%N)
    if "${IPMI[@]}" -p "$port" chassis power "$op" >/dev/null 2>&1; then rc=1; else rc=0; fi
    t1=$(date +%s%N)
    echo "$(( (t1 - t0) / 1000 )) $rc"
  done > "$WORK/ipmitool-$port.txt"
}
T0=$(date +%s%N)
JOBS=()
for port in $(seq "$BASE" "$LAST"); do one_bmc "$port" & JOBS+=($!); done
for j in "${JOBS[@]}"; do wait "$j"; done
T1=$(date +%s%N)
# every hook state file must say "on" after both runs
OFF=$(grep -L '^1$' "$WORK"/bmc-*/var/power | wc -l)

echo "counting open sessions..." >&2
SESS_NATIVE=$("$BENCH" --host 127.0.0.1 --ports "$BASE-$LAST" --sessions)
SESS_IPMITOOL=0
for port in $(seq "$BASE" "$LAST"); do
  a=$("${IPMI[@]}" -p "$port" session info active 2>/dev/null | awk -F: '/^active sessions/ {gsub(/ /,"",$2); print $2}')
  SESS_IPMITOOL=$(( SESS_IPMITOOL + ${a:-999} - 1 ))
done

python3 - "$NATIVE" "$SESS_NATIVE" "$SESS_IPMITOOL" "$(( (T1 - T0) / 1000 ))" "$OFF" "$N" "$WORK" <<'PY'
import glob, json, math, sys
native = json.loads(sys.argv[1]); sess = json.loads(sys.argv[2])
sess_ipmitool = int(sys.argv[3]); wall_us = int(sys.argv[4]); off = int(sys.argv[5]); n = int(sys.argv[6])
lat, errors = [], 0
for f in glob.glob(sys.argv[7] + "/ipmitool-*.txt"):
    for line in open(f):
        us, ok = line.split(); lat.append(int(us) / 1000.0); errors += ok == "0"
lat.sort()
p = lambda q: lat[max(0, math.ceil(q * len(lat)) - 1)] if lat else 0.0
ipmitool = {"ops": len(lat), "errors": errors, "wall_s": round(wall_us / 1e6, 3),
            "ops_per_s": round(len(lat) / (wall_us / 1e6), 1), "p50_ms": round(p(0.5), 1), "p99_ms": round(p(0.99), 1)}
print(json.dumps({
    "bmcs": n, "operations": "power status, off, on per BMC; all BMCs at once",
    "lariat_native": native, "ipmitool": ipmitool,
    "ops_per_s_ratio_lariat_over_ipmitool": round(native["ops_per_s"] / ipmitool["ops_per_s"], 2) if ipmitool["ops_per_s"] else None,
    "p99_ratio_lariat_over_ipmitool": round(native["p99_ms"] / ipmitool["p99_ms"], 2) if ipmitool["p99_ms"] else None,
    "open_sessions_after": {"counted_by_lariat": sess["open_sessions"], "counted_by_ipmitool": sess_ipmitool,
                            "count_errors": sess["errors"]},
    "bmcs_not_on_after": off,
}))
PY
