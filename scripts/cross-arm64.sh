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
# Usage: scripts/cross-arm64.sh [--kernel K]
# Environment:
#   KDIR           arm64 headers tree to build the module against, with the host's
#                  aarch64-linux-gnu-gcc-N (apt-get install gcc-aarch64-linux-gnu).
#                  Default: Debian's cloud-arm64 kernel --kernel K (default 6.1, or
#                  $KERNEL; any series or release test/vm/kernels.sh takes), fetched
#                  into the project's cache (never installed) and built with that
#                  kernel's own toolchain (test/vm/build-module.sh: the host's, or a
#                  cached chroot of the kernel's Debian release).
#   OUT            default <repo>/bin/linux-arm64
#   FILEWATCHER_CACHE  the cache (see test/vm/cache.sh)
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=test/vm/cache.sh
. "$repo/test/vm/cache.sh"
cache=$filewatcher_cache
out=${OUT:-$repo/bin/linux-arm64}
kernel=${KERNEL:-6.1}

die() { echo "cross-arm64: $*" >&2; exit 1; }
say() { echo "cross-arm64: $*" >&2; }

while [ $# -gt 0 ]; do
	case "$1" in
	--kernel) kernel=${2:?--kernel needs a series or a release}; shift 2 ;;
	-h | --help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) die "unknown argument '$1' (see --help)" ;;
	esac
done

mkdir -p "$out"

# The module, in a folder of its own: kmod/ keeps the host's objects.
if [ -n "${KDIR:-}" ]; then
	grep -qx 'CONFIG_ARM64=y' "$KDIR/.config" 2>/dev/null || die "KDIR=$KDIR is not an arm64 headers tree (no CONFIG_ARM64=y in its .config)"
	from=(--kdir "$KDIR")
	build=$cache/cross/arm64/kdir-$(printf %s "$(cd "$KDIR" && pwd -P)" | sha256sum | cut -c1-12)/kmod
else
	kernel_dir=$("$repo/test/vm/kernels.sh" fetch --kernel "$kernel" --arch arm64) ||
		die "cannot fetch Debian's arm64 kernel $kernel (test/vm/kernels.sh)"
	from=(--kernel-dir "$kernel_dir")
	build=$cache/cross/arm64/$(cat "$kernel_dir/release")/kmod
fi
ko=$("$repo/test/vm/build-module.sh" "${from[@]}" --out "$build") || die "module build failed"
cp "$ko" "$out/filewatcher.ko"

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
