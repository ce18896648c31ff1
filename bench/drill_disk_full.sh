#!/bin/bash
# Fault drill: the disk under `lariat server` fills up while REST clients keep INFLIGHT
# runs (default 200) going. On a loop-mounted ext4 of FS_MB (default 64) MB: the first
# refusal and its words, whether the server stopped taking work, a restart on the full
# disk, SQLite's integrity check once space is freed, then every run answered before is
# checked as in the kill drill (runs lost, duplicated, gaps, unfinished: target all 0).
# Prints ONE JSON object on stdout (lariat-bench disk-drill); progress goes to stderr.
# Needs root (losetup, mount) and e2fsprogs. Env: FS_MB, INFLIGHT, CARGO_TARGET_DIR.
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$HERE/target}
[ "$(id -u)" = 0 ] || { echo '{"error":"needs root (a loop-mounted filesystem)"}'; exit 1; }
command -v mkfs.ext4 >/dev/null || { echo '{"error":"mkfs.ext4 not found (e2fsprogs)"}'; exit 1; }
echo "building lariat and lariat-bench (release)..." >&2
(cd "$HERE" && CARGO_TARGET_DIR=$TARGET cargo build -q --release -p lariat -p lariat-bench) >&2
WORK=$(mktemp -d /tmp/lariat-drill-disk.XXXXXX)
cleanup() { umount "$WORK/mnt" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
truncate -s "${FS_MB:-64}M" "$WORK/fs.img"
mkfs.ext4 -q -F -m 0 "$WORK/fs.img"
mkdir "$WORK/mnt"
mount -o loop "$WORK/fs.img" "$WORK/mnt"
"$TARGET/release/lariat-bench" disk-drill --lariat "$TARGET/release/lariat" \
  --dir "$WORK/mnt" --inflight "${INFLIGHT:-200}"
