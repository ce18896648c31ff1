#!/usr/bin/env bash
# Can Debian's iPXE post a state itself before the kernel boots? Boots QEMU (TCG) through
# the NIC's iPXE ROM with slirp's TFTP/BOOTP serving a probe script, and reports which
# requests reach a local HTTP server: the script signals each outcome by fetching a URL.
#
#   images/ipxe-probe.sh [bios|uefi|lkrn] [virtio-net-pci|e1000]
#
# Prints one JSON object. Needs qemu-system-x86, ipxe-qemu, ipxe (lkrn), ovmf (uefi), python3.
set -euo pipefail

mode=${1:-bios}
model=${2:-virtio-net-pci}
work=$(mktemp -d)
port=$((20000 + $$ % 20000))
http_pid=""
cleanup() {
	[ -n "$http_pid" ] && kill "$http_pid" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/tftp"
cat >"$work/tftp/probe.ipxe" <<EOF
#!ipxe
dhcp || echo already configured
imgfetch http://10.0.2.2:$port/step/script-started || goto end
params && goto have_params || imgfetch http://10.0.2.2:$port/step/params-command-missing
goto try_post
:have_params
imgfetch http://10.0.2.2:$port/step/params-command-ok
param state booting
:try_post
imgfetch http://10.0.2.2:$port/v1/state##params || imgfetch http://10.0.2.2:$port/step/fetch-failed
imgfetch http://10.0.2.2:$port/step/script-end
:end
poweroff || imgfetch http://10.0.2.2:$port/step/poweroff-command-missing
EOF

# SimpleHTTPRequestHandler logs every request line; it answers a POST with 501, which is
# enough to see that a POST was sent. Every probed path exists so each GET gets 200
# (imgfetch fails on 404 and the script would stop early).
mkdir -p "$work/step" "$work/v1"
for f in script-started params-command-missing params-command-ok fetch-failed script-end poweroff-command-missing; do
	echo ok >"$work/step/$f"
done
echo ok >"$work/v1/state"
(cd "$work" && exec python3 -m http.server --bind 127.0.0.1 "$port" 2>"$work/http.log" >/dev/null) &
http_pid=$!
sleep 0.5

qemu=(qemu-system-x86_64 -accel tcg -m 512 -display none -vga std -serial null -no-reboot)
case "$mode" in
bios)
	qemu+=(-boot n -nic "user,model=$model,tftp=$work/tftp,bootfile=probe.ipxe")
	;;
uefi)
	cp /usr/share/OVMF/OVMF_VARS.fd "$work/vars.fd"
	qemu+=(-machine q35 -boot n
		-drive "if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE.fd"
		-drive "if=pflash,format=raw,file=$work/vars.fd"
		-nic "user,model=$model,tftp=$work/tftp,bootfile=probe.ipxe")
	;;
lkrn)
	qemu+=(-kernel /usr/lib/ipxe/ipxe.lkrn -initrd "$work/tftp/probe.ipxe" -nic "user,model=$model")
	;;
*)
	echo "usage: $0 [bios|uefi|lkrn] [virtio-net-pci|e1000]" >&2
	exit 2
	;;
esac

"${qemu[@]}" 2>"$work/qemu.log" &
qemu_pid=$!
# The script ends with a fetch of script-end; poweroff is absent in Debian's build.
for _ in $(seq 1 120); do
	grep -q 'script-end' "$work/http.log" 2>/dev/null && break
	kill -0 "$qemu_pid" 2>/dev/null || break
	sleep 1
done
sleep 2
kill "$qemu_pid" 2>/dev/null || true
wait "$qemu_pid" 2>/dev/null || true

req() { grep -ao '"[A-Z]* /[^ ]*' "$work/http.log" | tr -d '"' | sed 's/^/"/;s/$/"/' | paste -sd, -; }
has() { grep -aq "$1" "$work/http.log" && echo true || echo false; }
printf '{"mode":"%s","nic":"%s","script_ran":%s,"params_command":%s,"state_request":"%s","poweroff_command":%s,"requests":[%s]}\n' \
	"$mode" "$model" "$(has script-started)" \
	"$(grep -aq params-command-ok "$work/http.log" && echo true || echo false)" \
	"$(grep -aoE '"(GET|POST) /v1/state' "$work/http.log" | head -n 1 | cut -d' ' -f1 | tr -d '"')" \
	"$(grep -aq poweroff-command-missing "$work/http.log" && echo false || echo unknown)" \
	"$(req)"
