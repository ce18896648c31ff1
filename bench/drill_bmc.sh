#!/bin/bash
# Fault drill: Lariat's IPMI driver against ipmi_sim BMCs across a veth pair between two
# network namespaces, under faults, with ipmitool beside it as the peer:
#   baseline      N BMCs for Lariat and N others for ipmitool, OPS power status reads
#                 each, a clean link;
#   loss          the same with 30 % of the datagrams dropped at random each way (nftables'
#                 `numgen random`: this kernel has no sch_netem for `tc netem loss`);
#   dead          one BMC stopped (SIGSTOP): the time to a clear error;
#   wrong_password  one BMC asked with a wrong password: a clear error, and the datagrams
#                 the BMC received per attempt (one RAKP exchange: no retries, so no
#                 account lockout on a real BMC);
#   sessions left open on each client's BMCs after the loss (target: 0), counted by
#   Lariat's driver and by ipmitool.
# Prints ONE JSON object on stdout; progress goes to stderr. Needs root (network
# namespaces, nft), ipmi_sim (openipmi), ipmitool, python3, cargo. Env: N (10), OPS (20).
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
N=${N:-10}; OPS=${OPS:-20}; BASE=9700; LAST=$((BASE + N - 1))
# ipmitool's BMCs, so that the sessions each client leaves are counted apart.
PBASE=$((BASE + N)); PLAST=$((PBASE + N - 1))
TARGET=${CARGO_TARGET_DIR:-$HERE/target}
[ "$(id -u)" = 0 ] || { echo '{"error":"needs root (network namespaces, nftables)"}'; exit 1; }
for p in ipmi_sim ipmitool python3 cargo nft; do
  command -v "$p" >/dev/null || { echo "{\"error\":\"$p not found\"}"; exit 1; }
done
echo "building the bench example (release)..." >&2
(cd "$HERE" && CARGO_TARGET_DIR=$TARGET cargo build -q --release -p lariat-bmc --example bmc_bench) >&2
BENCH=$TARGET/release/examples/bmc_bench

WORK=$(mktemp -d /tmp/lariat-drill-bmc.XXXXXX)
NS_B=lbdb$$; NS_M=lbdm$$
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -CONT "$p" 2>/dev/null || true; kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  ip netns del "$NS_B" 2>/dev/null || true; ip netns del "$NS_M" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
ip netns add "$NS_B"; ip netns add "$NS_M"
ip link add vb$$ netns "$NS_B" type veth peer name vm$$ netns "$NS_M"
ip -n "$NS_B" addr add 10.88.0.2/24 dev vb$$; ip -n "$NS_M" addr add 10.88.0.1/24 dev vm$$
for ns in "$NS_B" "$NS_M"; do ip -n "$ns" link set lo up; done
ip -n "$NS_B" link set vb$$ up; ip -n "$NS_M" link set vm$$ up
inb() { ip netns exec "$NS_B" "$@"; }
inm() { ip netns exec "$NS_M" "$@"; }

HOOK=$HERE/bench/ipmi_sim/hook.sh; EMU=$HERE/bench/ipmi_sim/bmc.emu
declare -A SIM
echo "starting $((2 * N)) ipmi_sim in $NS_B at 10.88.0.2:$BASE-$PLAST..." >&2
for port in $(seq "$BASE" "$PLAST"); do
  d=$WORK/bmc-$port; mkdir -p "$d/var" "$d/state"
  cat > "$d/lan.conf" <<CONF
name "drill-$port"
set_working_mc 0x20
  startlan 1
    addr 10.88.0.2 $port
    priv_limit admin
    allowed_auths_admin none md2 md5 straight
    guid a123456789abcdefa123456789abcdef
  endlan
  chassis_control "$HOOK $d/var 0x20"
  user 2 true "admin" "password" admin 10 none md2 md5 straight
CONF
  # `ip netns exec` execs ipmi_sim, so $! is the simulator itself (SIGSTOP reaches it).
  ip netns exec "$NS_B" ipmi_sim -n -c "$d/lan.conf" -f "$EMU" -s "$d/state" \
    >"$d/sim.log" 2>&1 </dev/null &
  PIDS+=($!); SIM[$port]=$!
done
for port in $(seq "$BASE" "$PLAST"); do
  hex=$(printf ':%04X ' "$port")
  for _ in $(seq 1 200); do inb grep -q "$hex" /proc/net/udp && break; sleep 0.05; done
done

export IPMI_PASSWORD=password
native() { inm "$BENCH" --host 10.88.0.2 --ports "$1" --repeat "$2"; }
IPMI=(ipmitool -I lanplus -C 3 -H 10.88.0.2 -U admin -E -N 1 -R 3)
# ipmitool: OPS power status per BMC in turn, BMCs at once; "ms ok" per operation.
peer() {
  local first=$1 last=$2 ops=$3
  local out=$WORK/peer.$first
  rm -f "$out".*
  for port in $(seq "$first" "$last"); do
    ( for _ in $(seq 1 "$ops"); do
        t0=$(date +%s%N)
        if inm "${IPMI[@]}" -p "$port" chassis power status >/dev/null 2>&1; then ok=1; else ok=0; fi
        echo "$(( ($(date +%s%N) - t0) / 1000 )) $ok"
      done > "$out.$port" ) &
  done
  wait
  cat "$out".*
}
udp_in() { inb awk '/^Udp: [0-9]/ {print $2}' /proc/net/snmp; }
# Sessions open on the BMCs $1-$2 (the counting session itself left out), as each client
# counts them.
sessions_lariat() { inm "$BENCH" --host 10.88.0.2 --ports "$1-$2" --sessions; }
sessions_ipmitool() {
  local total=0 a
  for port in $(seq "$1" "$2"); do
    a=$(inm "${IPMI[@]}" -p "$port" session info active 2>/dev/null | awk -F: '/^active sessions/ {gsub(/ /,"",$2); print $2}')
    total=$(( total + ${a:-999} - 1 ))
  done
  echo "$total"
}

echo "baseline..." >&2
BASELINE=$(native "$BASE-$LAST" "$OPS")
PEER_BASELINE=$(peer "$PBASE" "$PLAST" "$OPS")

echo "30% loss each way..." >&2
lossy() {  # drop 30 % of the UDP datagrams arriving in namespace $1
  ip netns exec "$1" nft -f - <<NFT
table inet drill {
  chain input { type filter hook input priority 0; meta l4proto udp numgen random mod 100 < 30 drop; }
}
NFT
}
unlossy() { inm nft delete table inet drill; inb nft delete table inet drill; }
# Each client's sessions are counted on a clean link right after its own lossy phase,
# before the BMC's inactivity timeout could close what it left.
lossy "$NS_B"; lossy "$NS_M"
LOSS=$(native "$BASE-$LAST" "$OPS")
unlossy; sleep 1
echo "sessions Lariat left open..." >&2
SESS=$(sessions_lariat "$BASE" "$LAST")
SESS_BY_IPMITOOL=$(sessions_ipmitool "$BASE" "$LAST")
lossy "$NS_B"; lossy "$NS_M"
PEER_LOSS=$(peer "$PBASE" "$PLAST" "$OPS")
unlossy; sleep 1
echo "sessions ipmitool left open..." >&2
PSESS=$(sessions_lariat "$PBASE" "$PLAST")
PSESS_BY_IPMITOOL=$(sessions_ipmitool "$PBASE" "$PLAST")

echo "a BMC that stops answering..." >&2
kill -STOP "${SIM[$BASE]}"
DEAD=$(native "$BASE-$BASE" 3)
PEER_DEAD=$(peer "$BASE" "$BASE" 3)   # the same stopped BMC
kill -CONT "${SIM[$BASE]}"

echo "a wrong password..." >&2
W=$((BASE + 1))
u0=$(udp_in)
WRONG=$(IPMI_PASSWORD=wrong-password native "$W-$W" 5)
u1=$(udp_in)
PEER_WRONG=$(IPMI_PASSWORD=wrong-password peer "$W" "$W" 5)
u2=$(udp_in)


python3 - "$BASELINE" "$LOSS" "$DEAD" "$WRONG" "$SESS" "$SESS_BY_IPMITOOL" "$((u1 - u0))" "$((u2 - u1))" "$N" "$OPS" \
  "$PEER_BASELINE" "$PEER_LOSS" "$PEER_DEAD" "$PEER_WRONG" "$PSESS" "$PSESS_BY_IPMITOOL" <<'PY'
import json, math, sys
a = sys.argv
base, loss, dead, wrong, sess = (json.loads(x) for x in a[1:6])
sess_peer, dgrams_native, dgrams_peer, n, ops = int(a[6]), int(a[7]), int(a[8]), int(a[9]), int(a[10])
psess, psess_peer = json.loads(a[15]), int(a[16])
def peer(text):
    rows = [l.split() for l in text.splitlines() if l.strip()]
    ok = sorted(int(us) / 1000 for us, k in rows if k == "1")
    bad = sorted(int(us) / 1000 for us, k in rows if k == "0")
    p = lambda v, q: round(v[max(0, math.ceil(q * len(v)) - 1)], 1) if v else 0.0
    return {"ops": len(rows), "ok": len(ok), "failed": len(bad), "ok_p50_ms": p(ok, .5),
            "ok_p99_ms": p(ok, .99), "time_to_error_p50_ms": p(bad, .5), "time_to_error_max_ms": p(bad, 1)}
pb, pl, pd, pw = (peer(x) for x in a[11:15])
rate = lambda r: round(r["ok"] / r["ops"], 3) if r["ops"] else None
print(json.dumps({
    "drill": "bmc_faults", "bmcs": n, "ops_per_bmc": ops,
    "baseline": {"lariat": base, "ipmitool": pb},
    "loss_30pct_each_way": {"lariat": loss, "ipmitool": pl,
        "success_rate_lariat": rate(loss), "success_rate_ipmitool": rate(pl),
        "ok_p99_ratio_lariat_over_ipmitool": round(loss["ok_p99_ms"] / pl["ok_p99_ms"], 2) if pl["ok_p99_ms"] else None},
    "dead_bmc": {"lariat": dead, "ipmitool": pd},
    "wrong_password": {"lariat": wrong, "ipmitool": pw,
        "datagrams_to_bmc_per_attempt_lariat": round(dgrams_native / wrong["ops"], 1) if wrong["ops"] else None,
        "datagrams_to_bmc_per_attempt_ipmitool": round(dgrams_peer / pw["ops"], 1) if pw["ops"] else None},
    "open_sessions_after_loss": {
        "on_lariats_bmcs": {"counted_by_lariat": sess["open_sessions"], "counted_by_ipmitool": sess_peer},
        "on_ipmitools_bmcs": {"counted_by_lariat": psess["open_sessions"], "counted_by_ipmitool": psess_peer},
        "count_errors": sess["errors"] + psess["errors"]},
}))
PY
