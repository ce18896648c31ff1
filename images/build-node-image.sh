#!/usr/bin/env bash
# Build Lariat's node ramdisk from Debian packages: the distribution kernel and
# busybox-static, plus the NIC and disk modules the node needs, and /init from node-init/.
#
#   images/build-node-image.sh OUTDIR [CACHEDIR]
#
# Writes OUTDIR/vmlinuz, OUTDIR/initrd.img (newc cpio, gzip), OUTDIR/SHA256SUMS and
# OUTDIR/BUILDINFO. Downloads go to CACHEDIR (default OUTDIR/cache) with `apt-get download`;
# nothing is installed into the system. A second run with the same inputs does nothing.
#
# Environment:
#   NODE_IMAGE_KERNEL_PKG  kernel package or metapackage (default linux-image-amd64)
#   NODE_IMAGE_MODULES     modules to load at boot, their dependencies are added
#                          (default: virtio and common NIC/disk drivers, see below)
#   NODE_IMAGE_FORCE=1     rebuild even when the outputs are up to date
#
# Needs: apt-get, apt-cache, dpkg-deb, tar, depmod and modprobe (kmod), cpio, gzip, sha256sum.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
init_dir=$here/node-init

die() {
	echo "build-node-image: error: $*" >&2
	exit 1
}
say() {
	echo "build-node-image: $*"
}

[ $# -ge 1 ] && [ $# -le 2 ] || die "usage: $0 OUTDIR [CACHEDIR]"
out=$1
mkdir -p "$out"
out=$(cd "$out" && pwd)
cache=${2:-$out/cache}
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)

kernel_meta=${NODE_IMAGE_KERNEL_PKG:-linux-image-amd64}
# virtio_pci is a module in Debian's kernel: without it virtio_net never sees a device.
modules=${NODE_IMAGE_MODULES:-virtio_pci virtio_net virtio_blk virtio_scsi e1000 e1000e ahci ata_piix sd_mod nvme}

for tool in apt-get apt-cache dpkg-deb tar depmod modprobe cpio gzip sha256sum; do
	command -v "$tool" >/dev/null 2>&1 || die "'$tool' not found (Debian packages: apt, dpkg, tar, kmod, cpio, gzip, coreutils)"
done
[ -f "$init_dir/init" ] && [ -f "$init_dir/udhcpc.script" ] || die "$init_dir/init or udhcpc.script missing"

# Candidate version of a package, or empty when apt does not know it. apt-cache takes
# most of a second per call, so a no-op run makes as few calls as it can.
candidate() {
	apt-cache show --no-all-versions "$1" 2>/dev/null | sed -n 's/^Version: //p' | head -n 1
}

# A .deb for PKG in the cache: VERSION or the candidate, downloaded if missing. When apt
# cannot resolve PKG (no lists, offline), an already cached .deb of PKG is used.
fetch_deb() {
	local pkg=$1 ver=${2-} file
	[ -n "$ver" ] || ver=$(candidate "$pkg")
	if [ -z "$ver" ]; then
		file=$(ls -1 "$cache/${pkg}_"*.deb 2>/dev/null | sort -V | tail -n 1 || true)
		[ -n "$file" ] || die "package '$pkg' is not available from apt (no candidate; run 'apt-get update' or check sources.list)"
		say "apt has no candidate for $pkg; using cached $(basename "$file")" >&2
		echo "$file"
		return
	fi
	file=$cache/${pkg}_${ver//:/%3a}_amd64.deb
	if [ -f "$file" ] && dpkg-deb -f "$file" Version >/dev/null 2>&1; then
		say "cached $pkg $ver" >&2
	else
		say "downloading $pkg $ver" >&2
		rm -f "$file"
		# apt-get download writes into the current directory; its _apt sandbox warning is noise.
		(cd "$cache" && apt-get download -q "$pkg=$ver" 2>&1 | grep -v 'unsandboxed' >&2) || true
		[ -f "$file" ] || die "could not download '$pkg' version $ver with apt-get download"
	fi
	echo "$file"
}

# The metapackage only depends on the versioned image package that holds the files.
kernel_pkg=$kernel_meta
kernel_ver=""
meta_info=$(apt-cache show --no-all-versions "$kernel_meta" 2>/dev/null || true)
meta_deps=$(echo "$meta_info" | sed -n 's/^Depends: //p' | head -n 1)
if [ -z "$meta_info" ]; then
	cached=$(ls -1 "$cache"/linux-image-*.deb 2>/dev/null | sort -V | tail -n 1 || true)
	[ -n "$cached" ] || die "package '$kernel_meta' is not available from apt (run 'apt-get update' or check sources.list)"
	kernel_pkg=$(dpkg-deb -f "$cached" Package)
elif [ -n "$meta_deps" ]; then
	dep=$(echo "$meta_deps" | tr ',' '\n' | sed -n 's/^ *\(linux-image-[0-9][^ ]*\).*/\1/p' | head -n 1)
	if [ -n "$dep" ]; then
		kernel_pkg=$dep
		# The metapackage pins its image package to its own version.
		kernel_ver=$(echo "$meta_deps" | tr ',' '\n' | sed -n "s/^ *$kernel_pkg (= \([^)]*\)).*/\1/p" | head -n 1)
	fi
else
	kernel_ver=$(echo "$meta_info" | sed -n 's/^Version: //p' | head -n 1)
fi
kernel_deb=$(fetch_deb "$kernel_pkg" "$kernel_ver")
busybox_deb=$(fetch_deb busybox-static)

# Up to date when the same inputs built the outputs that are there now.
stamp=$(
	{
		basename "$kernel_deb"
		basename "$busybox_deb"
		echo "$modules"
		cat "$init_dir/init" "$init_dir/udhcpc.script" "${BASH_SOURCE[0]}"
	} | sha256sum | cut -d' ' -f1
)
if [ "${NODE_IMAGE_FORCE:-0}" != 1 ] && [ -f "$out/BUILDINFO" ] && [ -f "$out/SHA256SUMS" ] &&
	grep -qx "stamp=$stamp" "$out/BUILDINFO" && (cd "$out" && sha256sum --quiet -c SHA256SUMS >/dev/null 2>&1); then
	say "up to date: $out (kernel $(sed -n 's/^kernel_release=//p' "$out/BUILDINFO"))"
	exit 0
fi

work=$(mktemp -d "$cache/build.XXXXXX")
trap 'rm -rf "$work"' EXIT

say "unpacking $(basename "$kernel_deb")"
mkdir -p "$work/kernel"
dpkg-deb --fsys-tarfile "$kernel_deb" | tar -x -C "$work/kernel" ./boot ./lib/modules
vmlinuz=$(ls -1 "$work/kernel/boot"/vmlinuz-* 2>/dev/null | head -n 1)
[ -n "$vmlinuz" ] || die "no /boot/vmlinuz-* in $(basename "$kernel_deb")"
kver=${vmlinuz##*/vmlinuz-}
[ -d "$work/kernel/lib/modules/$kver" ] || die "no /lib/modules/$kver in $(basename "$kernel_deb")"
# Debian's package runs depmod in postinst, so the .deb ships no modules.dep.
depmod -b "$work/kernel" "$kver"

root=$work/root
mkdir -p "$root"/{bin,sbin,dev,proc,sys,tmp,run,etc,root,lib/modules/"$kver"}

# Dependency order from modprobe itself; builtins need nothing, unknown names are an error.
: >"$root/lib/modules/$kver/load-order"
moddir=$work/kernel/lib/modules/$kver
for m in $modules; do
	deps=$(modprobe -d "$work/kernel" -S "$kver" --show-depends "$m" 2>&1) ||
		die "module '$m' not found in kernel $kver: $deps"
	while read -r kind path _; do
		[ "$kind" = insmod ] || continue
		rel=${path#"$moddir"/}
		grep -qxF "$rel" "$root/lib/modules/$kver/load-order" && continue
		mkdir -p "$root/lib/modules/$kver/$(dirname "$rel")"
		cp "$path" "$root/lib/modules/$kver/$rel"
		echo "$rel" >>"$root/lib/modules/$kver/load-order"
	done <<<"$deps"
done
cp "$moddir"/modules.{order,builtin,builtin.modinfo} "$root/lib/modules/$kver/" 2>/dev/null || true
# modules.dep lets busybox modprobe work from the debug shell too.
depmod -b "$root" "$kver"
nmods=$(wc -l <"$root/lib/modules/$kver/load-order")

say "unpacking $(basename "$busybox_deb")"
mkdir -p "$work/busybox"
dpkg-deb -x "$busybox_deb" "$work/busybox"
cp "$work/busybox/bin/busybox" "$root/bin/busybox"
for applet in $("$root/bin/busybox" --list); do
	[ "$applet" = busybox ] && continue
	ln -sf busybox "$root/bin/$applet"
done
for applet in $("$root/bin/busybox" --list); do
	[ -e "$root/sbin/$applet" ] || ln -sf ../bin/busybox "$root/sbin/$applet"
done
bbver=$(dpkg-deb -f "$busybox_deb" Version)

install -m 0755 "$init_dir/init" "$root/init"
install -m 0755 "$init_dir/udhcpc.script" "$root/etc/udhcpc.script"
echo "lariat-node" >"$root/etc/hostname"

# Fixed timestamps, owners and order make the archive byte-identical for the same inputs.
find "$root" -exec touch -h -d @0 {} +
(cd "$root" && find . -mindepth 1 | LC_ALL=C sort |
	cpio --quiet -o -H newc -R 0:0 --reproducible) | gzip -n -9 >"$work/initrd.img"

cp "$vmlinuz" "$work/vmlinuz"
(cd "$work" && sha256sum vmlinuz initrd.img >SHA256SUMS)
mv -f "$work/vmlinuz" "$out/vmlinuz"
mv -f "$work/initrd.img" "$out/initrd.img"
mv -f "$work/SHA256SUMS" "$out/SHA256SUMS"
cat >"$out/BUILDINFO" <<EOF
stamp=$stamp
kernel_package=$kernel_pkg
kernel_version=$(dpkg-deb -f "$kernel_deb" Version)
kernel_release=$kver
busybox_version=$bbver
modules=$modules
EOF

say "kernel $kernel_pkg ($kver) -> $out/vmlinuz ($(stat -c %s "$out/vmlinuz") bytes)"
say "busybox-static $bbver + $nmods modules ($modules and dependencies) -> $out/initrd.img ($(stat -c %s "$out/initrd.img") bytes)"
sed 's/^/build-node-image:   /' "$out/SHA256SUMS"
