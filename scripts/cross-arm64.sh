#!/usr/bin/env bash
# cross-arm64.sh — `make ARCH=arm64`: build filewatcher for linux/arm64 on any
# host (an x86_64 build machine, or an arm64 one), into bin/linux-arm64/:
#
#   filewatcher.ko       the module, built against an arm64 kernel headers tree
#   filewatcher-loader   the static loader (CGO_ENABLED=0 GOARCH=arm64); the eBPF
#                        object it embeds is bpf2go's little-endian one, which
#                        serves amd64 and arm64 alike
#   filewatcher-tail     the static second gRPC client
#
# The exporter (exporter/dist, `make exporter`) is JavaScript and runs on any
# Node.js, so it has no arm64 build of its own.
#
# Usage: scripts/cross-arm64.sh [--kernel 6.1|6.12]
# Environment:
#   KDIR           arm64 headers tree to build the module against. Default: Debian's
#                  cloud-arm64 headers of --kernel (default 6.1, or $KERNEL), fetched
#                  into the project's cache by test/vm/kernels.sh (never installed).
#   CROSS_COMPILE  default aarch64-linux-gnu- (apt-get install gcc-aarch64-linux-gnu);
#                  empty on an arm64 host.
#   OUT            default <repo>/bin/linux-arm64
#   FILEWATCHER_CACHE  the cache (default <repo>/.cache)
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${FILEWATCHER_CACHE:-$repo/.cache}
out=${OUT:-$repo/bin/linux-arm64}
kernel=${KERNEL:-6.1}

die() { echo "cross-arm64: $*" >&2; exit 1; }
say() { echo "cross-arm64: $*" >&2; }

while [ $# -gt 0 ]; do
	case "$1" in
	--kernel) kernel=${2:?--kernel needs 6.1 or 6.12}; shift 2 ;;
	-h | --help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) die "unknown argument '$1' (see --help)" ;;
	esac
done

case "$(uname -m)" in
aarch64 | arm64) cross=${CROSS_COMPILE-} ;;
*) cross=${CROSS_COMPILE-aarch64-linux-gnu-} ;;
esac
command -v "${cross}gcc" >/dev/null ||
	die "${cross}gcc not found: apt-get install gcc-aarch64-linux-gnu (make setup installs it)"

kdir=${KDIR:-}
if [ -z "$kdir" ]; then
	kdir=$("$repo/test/vm/kernels.sh" fetch --kernel "$kernel" --arch arm64)/build ||
		die "cannot fetch Debian's arm64 $kernel headers (test/vm/kernels.sh)"
fi
[ -f "$kdir/Makefile" ] || die "no kernel headers tree at KDIR=$kdir"
kdir=$(cd "$kdir" && pwd -P)
grep -qx 'CONFIG_ARM64=y' "$kdir/.config" 2>/dev/null || die "KDIR=$kdir is not an arm64 headers tree (no CONFIG_ARM64=y in its .config)"
# Debian's include/config/kernel.release holds the upstream version; uname -r
# (and the module's vermagic) is UTS_RELEASE.
release=$(sed -n 's/^#define UTS_RELEASE "\(.*\)"$/\1/p' "$kdir/include/generated/utsrelease.h" 2>/dev/null)
[ -n "$release" ] || die "no UTS_RELEASE in $kdir/include/generated/utsrelease.h"

mkdir -p "$out"

# The module, in a copy of kmod/ of its own: kmod/ keeps the host's objects.
build=$cache/cross/arm64/$release/kmod
say "building filewatcher.ko against $release ($kdir)"
rm -rf "$build"
mkdir -p "$build"
cp -a "$repo/kmod/." "$build/"
make -C "$build" clean >/dev/null
if ! make -C "$build" KDIR="$kdir" ARCH=arm64 CROSS_COMPILE="$cross" >"$build/build.log" 2>&1; then
	tail -n 30 "$build/build.log" >&2
	die "module build failed (full log: $build/build.log)"
fi
cp "$build/filewatcher.ko" "$out/filewatcher.ko"

# The Go programs: static, pure Go.
for cmd in filewatcher-loader filewatcher-tail; do
	[ -d "$repo/loader-go/cmd/$cmd" ] || continue
	say "building $cmd (GOARCH=arm64)"
	(cd "$repo" && CGO_ENABLED=0 GOOS=linux GOARCH=arm64 go build -trimpath -o "$out/$cmd" "./loader-go/cmd/$cmd") ||
		die "go build $cmd failed"
done

vermagic=$(modinfo -F vermagic "$out/filewatcher.ko" 2>/dev/null || true)
say "done: $out (module vermagic: ${vermagic:-?})"
ls -l "$out" >&2
