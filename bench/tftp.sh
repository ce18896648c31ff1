#!/bin/bash
# TFTP throughput: Lariat's TFTP server (boot/examples/tftp_serve.rs, release build) against
# tftpd-hpa and atftpd, each in its own network namespace, with the clients in another one
# over a veth pair (the setup of shared/peers/40-tftp.sh and 41-tftp-parallel.sh).
#
# Settings: a 50 MiB random file fetched by atftp and curl at blksize 512, 1468 and 8192;
# atftp with windowsize 16 at blksize 512 and 1468 (tftpd-hpa has no windowsize and runs
# those lock-step); 20 parallel curl downloads (blksize 1468) of a 10 MiB file, aggregate.
# Each figure is the best of REPEAT runs (default 3); every download's sha256 is checked.
# Prints ONE JSON object on stdout (progress on stderr): MiB/s per setting and server, the
# best peer, and Lariat's ratio to it.
#
# Needs root, iproute2, python3, tftpd-hpa (in.tftpd), atftp, curl, and atftpd unpacked at
# $ATFTPD (shared/peers/00-install.sh does that). Env: LARIAT_TFTP_BIN (skip the build),
# REPEAT, MB, PAR_N, PAR_MB, CARGO_TARGET_DIR.
set -uo pipefail
STARTED=$(date +%s)
HERE=$(cd "$(dirname "$0")" && pwd); REPO=$(cd "$HERE/.." && pwd)
REPEAT=${REPEAT:-3}; MB=${MB:-50}; PAR_N=${PAR_N:-20}; PAR_MB=${PAR_MB:-10}
ATFTPD=${ATFTPD:-/tmp/lariat-peers/atftpd-root/usr/sbin/atftpd}
fail() { printf '{"error": "%s"}\n' "$*"; exit 1; }
[ "$(id -u)" = 0 ] || fail "needs root (network namespaces)"
for b in ip python3 in.tftpd atftp curl sha256sum; do command -v "$b" >/dev/null || fail "missing $b"; done
[ -x "$ATFTPD" ] || fail "atftpd not found at $ATFTPD (run shared/peers/00-install.sh)"

BIN=${LARIAT_TFTP_BIN:-}
if [ -z "$BIN" ]; then
  echo "building tftp_serve (release)..." >&2
  (cd "$REPO" && cargo build --release -q -p lariat-boot --example tftp_serve) >&2 || fail "build failed"
  BIN=${CARGO_TARGET_DIR:-$REPO/target}/release/examples/tftp_serve
fi
[ -x "$BIN" ] || fail "no server binary at $BIN"

# Unique names, so this can run beside other scripts that use srv/cli.
SRV=ltsrv$$; CLI=ltcli$$; VS=lts$$; VC=ltc$$
WORK=$(mktemp -d /tmp/lariat-bench-tftp.XXXXXX); chmod 755 "$WORK"
ROOT=$WORK/root; DL=$WORK/dl; mkdir -p "$ROOT" "$DL"; chmod 755 "$ROOT"
RESULTS=$WORK/results; : > "$RESULTS"; PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  ip netns del "$SRV" 2>/dev/null; ip netns del "$CLI" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

ip netns add "$SRV" && ip netns add "$CLI" || fail "cannot create namespaces"
ip link add "$VS" netns "$SRV" type veth peer name "$VC" netns "$CLI"
ip -n "$CLI" addr add 10.77.0.2/24 dev "$VC"
for ns in "$SRV" "$CLI"; do ip -n "$ns" link set lo up; done
ip -n "$SRV" link set "$VS" up; ip -n "$CLI" link set "$VC" up

head -c $((MB * 1048576)) /dev/urandom > "$ROOT/big.bin"
head -c $((PAR_MB * 1048576)) /dev/urandom > "$ROOT/p.bin"
chmod 644 "$ROOT"/*.bin
SUM=$(sha256sum < "$ROOT/big.bin" | cut -d' ' -f1)
PSUM=$(sha256sum < "$ROOT/p.bin" | cut -d' ' -f1)

# All three servers run at once, each on its own address in the server namespace, and the
# runs interleave (each round: every setting against every server), so load from anything
# else on the machine falls on all of them alike.
declare -A ADDR=([lariat]=10.77.0.11 [tftpd_hpa]=10.77.0.12 [atftpd]=10.77.0.13)
start_servers() {
  local a
  for a in "${ADDR[@]}"; do ip -n "$SRV" addr add "$a/24" dev "$VS"; done
  ip netns exec "$SRV" env TFTP_THREADS="${TFTP_THREADS:-0}" "$BIN" --root "$ROOT" --bind "${ADDR[lariat]}:69" > "$WORK/lariat.log" 2>&1 & PIDS+=($!)
  ip netns exec "$SRV" in.tftpd -L -4 -a "${ADDR[tftpd_hpa]}:69" -s -u nobody -B 65464 "$ROOT" > "$WORK/hpa.log" 2>&1 & PIDS+=($!)
  ip netns exec "$SRV" "$ATFTPD" --daemon --no-fork --bind-address "${ADDR[atftpd]}" --port 69 \
    --user nobody --group nogroup --maxthread 200 --logfile /dev/null "$ROOT" > "$WORK/atftpd.log" 2>&1 & PIDS+=($!)
  for _ in $(seq 1 50); do
    [ "$(ip netns exec "$SRV" ss -lun | grep -cE '10\.77\.0\.1[123]:69 ')" = 3 ] && return 0; sleep 0.1
  done
  fail "servers did not start: $(cat "$WORK"/*.log | tr '"' "'" | head -5)"
}

now() { date +%s.%N; }
# One timed download; prints MiB/s, or nothing when it failed or the bytes differ.
fetch() {  # setting server-address
  local out=$DL/f t0 t1 S=$2
  rm -f "$out"; t0=$(now)
  case "$1" in
    atftp_*_ws16) local bs=${1#atftp_}; bs=${bs%_ws16}
                  ip netns exec "$CLI" timeout 120 atftp -g -r big.bin -l "$out" --option "blksize $bs" --option "windowsize 16" $S >/dev/null 2>&1 ;;
    atftp_*)      ip netns exec "$CLI" timeout 120 atftp -g -r big.bin -l "$out" --option "blksize ${1#atftp_}" $S >/dev/null 2>&1 ;;
    curl_*)       ip netns exec "$CLI" timeout 120 curl -sS --tftp-blksize "${1#curl_}" -o "$out" tftp://$S/big.bin 2>/dev/null ;;
  esac
  t1=$(now)
  [ -f "$out" ] && [ "$(sha256sum < "$out" | cut -d' ' -f1)" = "$SUM" ] || { echo "  $1: download failed or differs" >&2; return; }
  python3 -c "print(round($MB / ($t1 - $t0), 2))"
}
parallel() {  # server-address
  local t0 t1 pids=() i ok=0 S=$1
  rm -f "$DL"/p.*; t0=$(now)
  for i in $(seq 1 "$PAR_N"); do
    ip netns exec "$CLI" timeout 120 curl -sS --tftp-blksize 1468 -o "$DL/p.$i" tftp://$S/p.bin 2>/dev/null & pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p"; done
  t1=$(now)
  for i in $(seq 1 "$PAR_N"); do [ "$(sha256sum < "$DL/p.$i" 2>/dev/null | cut -d' ' -f1)" = "$PSUM" ] && ok=$((ok + 1)); done
  [ "$ok" = "$PAR_N" ] || { echo "  parallel: only $ok/$PAR_N intact" >&2; return; }
  python3 -c "print(round($PAR_N * $PAR_MB / ($t1 - $t0), 2))"
}

SETTINGS="atftp_512 atftp_1468 atftp_8192 curl_512 curl_1468 curl_8192 atftp_512_ws16 atftp_1468_ws16 parallel${PAR_N}_curl_1468"
start_servers
declare -A BEST
for round in $(seq 1 "$REPEAT"); do
  echo "round $round/$REPEAT" >&2
  for setting in $SETTINGS; do
    for server in lariat tftpd_hpa atftpd; do
      if [[ $setting == parallel* ]]; then v=$(parallel "${ADDR[$server]}"); else v=$(fetch "$setting" "${ADDR[$server]}"); fi
      echo "  $server $setting ${v:-FAILED}" >&2
      b=${BEST[$setting.$server]:-}
      [ -n "$v" ] && { [ -z "$b" ] || python3 -c "import sys; sys.exit(0 if $v > $b else 1)"; } && BEST[$setting.$server]=$v
    done
  done
done
for setting in $SETTINGS; do
  for server in lariat tftpd_hpa atftpd; do echo "$setting $server ${BEST[$setting.$server]:-null}" >> "$RESULTS"; done
done

python3 - "$RESULTS" "$MB" "$REPEAT" "$PAR_N" "$PAR_MB" "$(( $(date +%s) - STARTED ))" "$(cut -d" " -f1 /proc/loadavg)" <<'EOF'
import json, sys
path, mb, repeat, par_n, par_mb, elapsed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
loadavg = float(sys.argv[7])
settings = {}
for line in open(path):
    parts = line.split()
    if len(parts) != 3:
        continue
    setting, server, value = parts
    settings.setdefault(setting, {})[server] = None if value == "null" else float(value)
out = {"bench": "tftp", "unit": "MiB/s", "file_mib": mb, "repeat_best_of": repeat,
       "parallel": f"{par_n} x {par_mb} MiB, curl blksize 1468, aggregate",
       "elapsed_s": elapsed, "loadavg_1m_at_end": loadavg, "settings": {}}
for setting, figures in settings.items():
    peers = {k: v for k, v in figures.items() if k != "lariat" and v is not None}
    best = max(peers, key=peers.get) if peers else None
    lariat = figures.get("lariat")
    entry = dict(figures)
    entry["best_peer"] = best
    entry["ratio_to_best_peer"] = round(lariat / peers[best], 3) if best and lariat else None
    if setting.startswith("parallel"):
        hpa = figures.get("tftpd_hpa")
        entry["ratio_to_tftpd_hpa"] = round(lariat / hpa, 3) if lariat and hpa else None
    out["settings"][setting] = entry
ratios = [e["ratio_to_best_peer"] for e in out["settings"].values()]
out["target_met"] = all(r is not None and r >= 1.0 for r in ratios)
print(json.dumps(out))
EOF
