#!/bin/bash
# PXE boot, QEMU start to the node's callback: Lariat (DHCP + HTTP boot + the await-boot
# workflow, one `lariat server`) against the classic baseline, dnsmasq (DHCP) plus a static
# python3 HTTP server (issue 5 §6; target: Lariat within 10 %, ratio <= 1.10).
#
# Both sides boot the SAME VM the same way: qemu-system-x86_64 under TCG, SeaBIOS, the
# iPXE ROM of a virtio-net NIC (ipxe-qemu), MAC 52:54:00:77:00:21, on a tap device bridged
# (br0, 10.77.0.1/24) in a namespace of its own. iPXE DHCPs (user class iPXE), the offer
# carries option 60 "PXEClient" and an HTTP URL of an iPXE script; the script loads the
# node image (images/build-node-image.sh: Debian kernel + busybox initramfs) over HTTP, and
# the image's /init posts the machine's facts to `lariat.callback`.
#   Lariat:   the script is /boot/ipxe?mac=… of an await-boot run's await_callback step; the
#             figure ends at the server's "node reported" log line (the POST /v1/state
#             accepted and the step's item completed).
#   Baseline: dnsmasq hands out a fixed address for the MAC and a static boot.ipxe on a
#             python3 http.server subclass, which notes the time a POST /state arrives.
# The two sides alternate (which goes first swaps each round); each figure is the median.
# RA=1 (default) gives BOTH namespaces an IPv6 router advertisement (dnsmasq --enable-ra,
# ra-only, no DHCPv4 in Lariat's namespace): without one iPXE waits seconds for SLAAC.
# RA=0 gives neither one.
#
# Prints ONE JSON object on stdout (progress on stderr). Exit status 0 when all samples
# completed (whether or not the target is met; see "met").
# Needs root, iproute2, qemu-system-x86 + ipxe-qemu, dnsmasq, python3, curl, git, and what
# images/build-node-image.sh needs (apt-get, dpkg-deb, kmod, cpio).
# Env: N (rounds, default 3), RA (1|0), TMO (seconds per boot, default 240), LARIAT_BIN
# (skip the release build), NODE_IMAGE_DIR, CARGO_TARGET_DIR, KEEP=1 (keep the work dir).
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd); REPO=$(cd "$HERE/.." && pwd)
N=${N:-3}; RA=${RA:-1}; TMO=${TMO:-240}
MAC=52:54:00:77:00:21; HOST=vm-bios
say() { echo "pxe: $*" >&2; }
fail() { printf '{"error": "%s"}\n' "$(echo "$*" | sed 's/\\/\\\\/g; s/"/\\"/g')"; exit 1; }
[ "$(id -u)" = 0 ] || fail "needs root (network namespaces, tap devices)"
for b in ip qemu-system-x86_64 dnsmasq python3 curl git; do
  command -v "$b" >/dev/null || fail "missing $b"
done
[ -e /usr/lib/ipxe/qemu/efi-virtio.rom ] || fail "missing /usr/lib/ipxe/qemu/efi-virtio.rom (package ipxe-qemu)"
case "$N" in ''|*[!0-9]*|0) fail "N must be a positive integer, got '$N'";; esac
case "$RA" in 0|1) ;; *) fail "RA must be 0 or 1, got '$RA'";; esac
case "$TMO" in ''|*[!0-9]*|0) fail "TMO must be a positive integer (seconds), got '$TMO'";; esac

TARGET=${CARGO_TARGET_DIR:-$REPO/target}
BIN=${LARIAT_BIN:-}
if [ -z "$BIN" ]; then
  say "building lariat (release)..."
  (cd "$REPO" && cargo build --release -q --bin lariat) >&2 || fail "build failed"
  BIN=$TARGET/release/lariat
fi
[ -x "$BIN" ] || fail "no lariat binary at $BIN"
IMAGE=${NODE_IMAGE_DIR:-$TARGET/tmp/node-image}
say "node image in $IMAGE"
"$REPO/images/build-node-image.sh" "$IMAGE" >&2 || fail "node image build failed"
for f in vmlinuz initrd.img SHA256SUMS; do [ -s "$IMAGE/$f" ] || fail "node image has no $f"; done

WORK=$(mktemp -d /tmp/lariat-bench-pxe.XXXXXX)
chmod 755 "$WORK"
LNS=lpxbl$$; BNS=lpxbb$$
PIDS=(); QEMU=
cleanup() {
  [ -n "$QEMU" ] && { kill "$QEMU" 2>/dev/null; wait "$QEMU" 2>/dev/null; }
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
  ip netns del "$LNS" 2>/dev/null; ip netns del "$BNS" 2>/dev/null
  if [ "${KEEP:-0}" = 1 ]; then say "work dir kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A namespace with bridge br0 (10.77.0.1/24, fd77::1/64 with RA=1) and tap0 for the VM.
mknet() {
  local ns=$1
  ip netns add "$ns" || return 1
  ip -n "$ns" link set lo up
  ip -n "$ns" link add br0 type bridge forward_delay 0 stp_state 0
  ip -n "$ns" addr add 10.77.0.1/24 dev br0
  [ "$RA" = 1 ] && ip -n "$ns" addr add fd77::1/64 dev br0 nodad
  ip -n "$ns" link set br0 up
  ip -n "$ns" tuntap add dev tap0 mode tap
  ip -n "$ns" link set tap0 master br0
  ip -n "$ns" link set tap0 up
}
mknet "$LNS" && mknet "$BNS" || fail "cannot create the namespaces"
RA_ARGS=(); [ "$RA" = 1 ] && RA_ARGS=(--enable-ra --dhcp-range=::,constructor:br0,ra-only)

# --- Lariat -------------------------------------------------------------------------------
L=$WORK/lariat; mkdir -p "$L/design" "$L/assets/node"
cp "$IMAGE/vmlinuz" "$IMAGE/initrd.img" "$L/assets/node/"
sum_of() { awk -v f="$1" '$2 ~ ("(^|[*/])" f "$") {print $1}' "$IMAGE/SHA256SUMS"; }
SK=$(sum_of vmlinuz); SI=$(sum_of initrd.img)
[ -n "$SK" ] && [ -n "$SI" ] || fail "vmlinuz or initrd.img not in $IMAGE/SHA256SUMS"
sed "s/SHA_KERNEL/$SK/; s/SHA_INITRD/$SI/" "$REPO/tests/pxe_qemu.design.yaml" > "$L/design/design.yaml"
( cd "$L/design" && git init -q -b main && git -c user.email=b@example.com -c user.name=bench add -A \
  && git -c user.email=b@example.com -c user.name=bench commit -q -m lab ) >&2 || fail "cannot make the design repo"
ip netns exec "$LNS" env LARIAT_LOG=info NO_COLOR=1 "$BIN" server --listen 0.0.0.0:7300 \
  --durability normal --insecure-no-auth --db "$L/lariat.db" --design-repo "$L/design" \
  --http-boot --boot-url http://10.77.0.1:7300 --boot-assets "$L/assets" \
  --dhcp --tftp --boot-interface br0 --boot-address 10.77.0.1 \
  </dev/null >"$L/server.out" 2>"$L/server.log" & PIDS+=($!)
if [ "$RA" = 1 ]; then
  # Router advertisements only: no IPv4 range, so this dnsmasq answers no DHCPv4.
  ip netns exec "$LNS" dnsmasq --keep-in-foreground --conf-file=/dev/null --port=0 -u root \
    --interface=br0 --bind-interfaces "${RA_ARGS[@]}" --dhcp-leasefile="$L/ra.leases" \
    --pid-file="$L/ra.pid" --log-facility="$L/ra.log" & PIDS+=($!)
fi
api() { ip netns exec "$LNS" curl -sS --max-time 10 "$@"; }
# The design's await-boot workflow is registered once the design is active.
for _ in $(seq 1 300); do
  api -f -o /dev/null http://127.0.0.1:7300/v1/workflows/await-boot 2>/dev/null && break; sleep 0.2
done

# --- baseline: dnsmasq + static HTTP ------------------------------------------------------
B=$WORK/base; mkdir -p "$B/http" "$B/tftp"
cp "$IMAGE/vmlinuz" "$IMAGE/initrd.img" "$B/http/"
cat > "$B/http/boot.ipxe" <<EOF
#!ipxe
kernel http://10.77.0.1:8080/vmlinuz console=ttyS0 quiet lariat.after=poweroff lariat.callback=http://10.77.0.1:8080/state lariat.token=x lariat.host=vm initrd=initrd.img
initrd http://10.77.0.1:8080/initrd.img
boot
EOF
cat > "$B/httpd.py" <<'EOF'
# Static files; notes in the file argv[2] "<time> script" when boot.ipxe is fetched and
# "<time> state <body>" when a POST /state arrives.
import http.server, sys, time, functools
def note(line):
    with open(sys.argv[2], "a") as f:
        f.write(line + "\n")
class Handler(http.server.SimpleHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/boot.ipxe":
            note("%.6f script" % time.time())
        super().do_GET()
    def do_POST(self):
        t = time.time()
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path != "/state":
            self.send_error(404)
            return
        note("%.6f state %s" % (t, body.decode("ascii", "replace").replace("\n", " ")))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
handler = functools.partial(Handler, directory=sys.argv[1])
http.server.ThreadingHTTPServer(("10.77.0.1", 8080), handler).serve_forever()
EOF
ip netns exec "$BNS" python3 -u "$B/httpd.py" "$B/http" "$B/events" >"$B/http.log" 2>&1 & PIDS+=($!)
ip netns exec "$BNS" dnsmasq --keep-in-foreground --conf-file=/dev/null --port=0 -u root \
  --interface=br0 --bind-interfaces --no-ping --dhcp-authoritative \
  --dhcp-range=10.77.0.10,static,255.255.255.0,1h --dhcp-host="$MAC,10.77.0.21,vm" \
  --dhcp-leasefile="$B/leases" --pid-file="$B/dnsmasq.pid" --log-dhcp --log-facility="$B/dnsmasq.log" \
  "${RA_ARGS[@]}" --dhcp-userclass=set:ipxe,iPXE --dhcp-option-force=tag:ipxe,60,PXEClient \
  --dhcp-boot=tag:ipxe,http://10.77.0.1:8080/boot.ipxe \
  --enable-tftp --tftp-root="$B/tftp" & PIDS+=($!)

# --- wait for both ------------------------------------------------------------------------
ready=
for _ in $(seq 1 600); do
  api -f -o /dev/null http://127.0.0.1:7300/healthz 2>/dev/null \
    && ip netns exec "$BNS" ss -ltn | grep -q '10.77.0.1:8080 ' \
    && ip netns exec "$BNS" ss -lun | grep -q ':67 ' && { ready=1; break; }
  sleep 0.1
done
[ -n "$ready" ] || { tail -20 "$L/server.log" >&2; fail "the servers did not come up in 60 s"; }
if [ "$RA" = 1 ] && ip netns exec "$LNS" ss -lunp | grep ':67 ' | grep -q dnsmasq; then
  fail "the RA-only dnsmasq listens on DHCPv4 in Lariat's namespace"
fi

boot_vm() { # ns name: start the VM (same flags both sides) and set QEMU
  ip netns exec "$1" qemu-system-x86_64 -machine pc -accel tcg -m 512 -nodefaults \
    -vga std -display none -serial file:"$WORK/$2.serial" -boot n \
    -netdev tap,id=n0,ifname=tap0,script=no,downscript=no \
    -device virtio-net-pci,netdev=n0,mac="$MAC" </dev/null >"$WORK/$2.qemu.log" 2>&1 &
  QEMU=$!
}
stop_vm() { [ -n "$QEMU" ] && { kill "$QEMU" 2>/dev/null; wait "$QEMU" 2>/dev/null; }; QEMU=; }
now() { date +%s.%N; }
diff_s() { python3 -c 'import sys; print("%.3f" % (float(sys.argv[1]) - float(sys.argv[2])))' "$1" "$2"; }

# The await_callback item's status for HOST in run $1.
item_status() {
  api "http://127.0.0.1:7300/v1/runs/$1" | python3 -c '
import json, sys
try:
    r = json.load(sys.stdin)
except ValueError:
    print("?"); sys.exit()
for s in r.get("steps") or []:
    if s.get("name") == "await_callback":
        for i in s.get("items") or []:
            if i.get("item_value") == sys.argv[1]:
                print(i.get("status")); sys.exit()
print("-")' "$HOST"
}

# Epoch seconds of a server log line: it starts with tracing's RFC 3339 UTC timestamp (µs).
stamp() {
  local ts; ts=$(echo "$1" | sed 's/\x1b\[[0-9;]*m//g' | awk '{print $1}')
  case "$ts" in 20*T*Z) date -d "$ts" +%s.%N ;; *) return 1 ;; esac
}

# One Lariat boot: a run of the design's await-boot workflow (provision's boot half: the
# bench powers QEMU on itself, as the baseline does) for HOST, QEMU once its await_callback item waits. Sets
# SECS (QEMU start to "node reported") and SCRIPT (to the iPXE script fetch).
lariat_sample() {
  local tag=$1 id st t0 line t1 seen
  id=$(api -X POST -H 'content-type: application/json' \
    -d "{\"workflow\": \"await-boot\", \"targets\": [\"$HOST\"]}" http://127.0.0.1:7300/v1/runs \
    | python3 -c 'import json,sys; print(json.load(sys.stdin).get("id") or "")' 2>/dev/null)
  [ -n "$id" ] || { tail -20 "$L/server.log" >&2; say "lariat: no run id"; return 1; }
  for _ in $(seq 1 600); do
    st=$(item_status "$id"); [ "$st" = waiting ] && break; sleep 0.1
  done
  [ "$st" = waiting ] || { say "lariat: run $id never waited for $HOST (status $st)"; return 1; }
  seen=$(grep -c 'node reported' "$L/server.log")
  t0=$(now); boot_vm "$LNS" "lariat-$tag"
  line=
  for _ in $(seq 1 $((TMO * 10))); do
    line=$(grep 'node reported' "$L/server.log" | sed -n "$((seen + 1))p")
    [ -n "$line" ] && break
    kill -0 "$QEMU" 2>/dev/null || break
    sleep 0.1
  done
  [ -n "$line" ] || { stop_vm; tail -20 "$L/server.log" >&2; say "lariat: no callback within ${TMO} s"; return 1; }
  t1=$(stamp "$line") || { stop_vm; say "lariat: cannot read the time in: $line"; return 1; }
  echo "$line" | grep -q "host=$HOST" || { stop_vm; say "lariat: callback from another host: $line"; return 1; }
  for _ in $(seq 1 100); do st=$(item_status "$id"); [ "$st" = succeeded ] && break; sleep 0.1; done
  stop_vm
  [ "$st" = succeeded ] || { say "lariat: item $st after the callback"; return 1; }
  SECS=$(diff_s "$t1" "$t0")
  line=$(grep "provisioning script.*run=$id" "$L/server.log" | head -1)
  [ -n "$line" ] || { say "lariat: no script fetch logged for run $id"; return 1; }
  SCRIPT=$(diff_s "$(stamp "$line")" "$t0")
}

# One baseline boot. Sets SECS (QEMU start to POST /state) and SCRIPT (to boot.ipxe fetched).
base_sample() {
  local tag=$1 t0 line script
  : > "$B/events"
  t0=$(now); boot_vm "$BNS" "base-$tag"
  line=
  for _ in $(seq 1 $((TMO * 10))); do
    line=$(grep -m1 '^[0-9.]* state ' "$B/events"); [ -n "$line" ] && break
    kill -0 "$QEMU" 2>/dev/null || break
    sleep 0.1
  done
  stop_vm
  [ -n "$line" ] || { tail -20 "$B/dnsmasq.log" "$B/http.log" >&2; say "baseline: no callback within ${TMO} s"; return 1; }
  echo "$line" | grep -qi "$MAC" || { say "baseline: the callback does not name $MAC: $line"; return 1; }
  SECS=$(diff_s "${line%% *}" "$t0")
  script=$(grep -m1 '^[0-9.]* script' "$B/events")
  [ -n "$script" ] || { say "baseline: boot.ipxe was never fetched"; return 1; }
  SCRIPT=$(diff_s "${script%% *}" "$t0")
}

LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
LS=(); BS=(); LSC=(); BSC=(); SECS=; SCRIPT=
for r in $(seq 1 "$N"); do
  order="lariat base"; [ $((r % 2)) = 0 ] && order="base lariat"
  for side in $order; do
    if [ "$side" = lariat ]; then
      lariat_sample "$r" || fail "Lariat sample $r failed (KEEP=1 keeps the logs)"
      LS+=("$SECS"); LSC+=("$SCRIPT"); say "round $r lariat:   ${SECS} s (script fetched at ${SCRIPT} s)"
    else
      base_sample "$r" || fail "baseline sample $r failed (KEEP=1 keeps the logs)"
      BS+=("$SECS"); BSC+=("$SCRIPT"); say "round $r baseline: ${SECS} s (script fetched at ${SCRIPT} s)"
    fi
  done
done
LOAD1=$(cut -d' ' -f1-3 /proc/loadavg)

python3 - "$RA" "$LOAD0" "$LOAD1" "${LS[*]}" "${BS[*]}" "${LSC[*]}" "${BSC[*]}" \
  "$(dnsmasq --version | head -1 | awk '{print $3}')" \
  "$(qemu-system-x86_64 --version | head -1 | awk '{print $4}')" <<'EOF'
import json, statistics, sys
ra, load0, load1, ls, bs, lsc, bsc, dnsmasq_v, qemu_v = sys.argv[1:10]
ls, bs, lsc, bsc = ([float(x) for x in v.split()] for v in (ls, bs, lsc, bsc))
lm, bm = round(statistics.median(ls), 3), round(statistics.median(bs), 3)
ratio = round(lm / bm, 3)
print(json.dumps({
    "bench": "pxe",
    "measure": "seconds from QEMU start to the node's callback arriving (median of alternating runs)",
    "client": "qemu %s TCG, SeaBIOS, iPXE ROM (ipxe-qemu) on virtio-net-pci, 512 MiB, node image over HTTP" % qemu_v,
    "ipv6_ra": ra == "1",
    "runs": len(ls),
    "lariat_s": {"median": lm, "samples": ls},
    "lariat_script_fetched_s": {"median": round(statistics.median(lsc), 3), "samples": lsc},
    "baseline": "dnsmasq %s (DHCP, option 60 PXEClient, static boot.ipxe URL) + python3 http.server" % dnsmasq_v,
    "baseline_s": {"median": bm, "samples": bs},
    "baseline_script_fetched_s": {"median": round(statistics.median(bsc), 3), "samples": bsc},
    "ratio": ratio,
    "target_ratio": 1.10,
    "met": ratio <= 1.10,
    "loadavg": {"start": load0, "end": load1},
}))
EOF
