#!/usr/bin/env bash
# build-module.sh — build kmod/ for one kernel with the compiler that kernel
# was built with, and print the path of the filewatcher.ko it made.
#
# Usage:
#   test/vm/build-module.sh --kernel-dir DIR --out OUT
#       DIR is a kernel of the cache (test/vm/kernels.sh fetch). The module is
#       built with the toolchain of the Debian release the kernel came from:
#       the host's own when that is the host's release (bookworm and
#       bookworm-backports on these machines), else a cached chroot of that
#       release (test/vm/chroot.sh): bullseye for 5.10 (gcc-10), trixie for
#       trixie and trixie-backports (gcc-14), sid for sid. The compiler is the
#       one the kernel's headers name (CONFIG_GCC_VERSION, .kernelvariables):
#       gcc-N, or its cross compiler when the kernel is for the other
#       architecture.
#   test/vm/build-module.sh --kdir HEADERS --out OUT
#       Any headers tree, built with the host's toolchain.
#
# kmod/ is copied into OUT (emptied first), so kernels never share objects and
# kmod/ keeps the host's build. The build must be free of warnings: a warning
# here usually means a compiler that does not match the kernel. The log is
# OUT/build.log.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)

die() { echo "build-module.sh: $*" >&2; exit 1; }
say() { echo "build-module.sh: $*" >&2; }

kernel_dir='' kdir='' out=''
while [ $# -gt 0 ]; do
	case "$1" in
	--kernel-dir) kernel_dir=${2:?--kernel-dir needs a directory}; shift 2 ;;
	--kdir) kdir=${2:?--kdir needs a directory}; shift 2 ;;
	--out) out=${2:?--out needs a directory}; shift 2 ;;
	*) die "unknown argument '$1' (see the header of $0)" ;;
	esac
done
[ -n "$out" ] || die "--out is required"
[ -n "$kernel_dir" ] || [ -n "$kdir" ] || die "--kernel-dir or --kdir is required"
suite=''
if [ -n "$kernel_dir" ]; then
	[ -f "$kernel_dir/.complete" ] || die "$kernel_dir is not a fetched kernel (test/vm/kernels.sh fetch)"
	kdir=$kernel_dir/build
	suite=$(cat "$kernel_dir/suite")
fi
[ -f "$kdir/Makefile" ] && [ -f "$kdir/.config" ] || die "no kernel headers tree at $kdir"
kdir=$(cd "$kdir" && pwd -P)

# The kernel's release, architecture and compiler, from its headers.
release=$(sed -n 's/^#define UTS_RELEASE "\(.*\)"$/\1/p' "$kdir/include/generated/utsrelease.h" 2>/dev/null)
[ -n "$release" ] || die "no UTS_RELEASE in $kdir/include/generated/utsrelease.h"
if grep -qx 'CONFIG_ARM64=y' "$kdir/.config"; then
	arch=arm64 triplet=aarch64-linux-gnu
elif grep -qx 'CONFIG_X86_64=y' "$kdir/.config"; then
	arch=amd64 triplet=x86_64-linux-gnu
else
	die "$kdir is neither an x86_64 nor an arm64 kernel"
fi
gcc_major=$(sed -n 's/^CONFIG_GCC_VERSION=\([0-9]*\)$/\1/p' "$kdir/.config")
[ -n "$gcc_major" ] && [ "$gcc_major" -gt 0 ] || die "$release was not built with gcc (no CONFIG_GCC_VERSION): not supported"
gcc_major=$((gcc_major / 10000))

hostarch=$(dpkg --print-architecture)
make_args=(-C "$out" "KDIR=$kdir")
cross=''
if [ "$arch" != "$hostarch" ]; then
	cross=$triplet-
	case "$arch" in
	arm64) make_args+=(ARCH=arm64) ;;
	amd64) make_args+=(ARCH=x86_64) ;;
	esac
	make_args+=("CROSS_COMPILE=$cross")
fi

# Where to build: the host, or a chroot of the kernel's own release.
host_release=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
in_chroot=0
if [ -n "$suite" ]; then
	kernel_release=$("$here/chroot.sh" release "$suite")
	[ "$kernel_release" = "$host_release" ] || in_chroot=1
fi

rm -rf "$out"
mkdir -p "$out"
out=$(cd "$out" && pwd -P)
cp -a "$repo/kmod/." "$out/"
# kmod/ may hold objects of a native build (make kmod): not this kernel's.
make -C "$out" clean >/dev/null
log=$out/build.log
if [ "$in_chroot" = 1 ]; then
	cc_pkg=gcc-$gcc_major
	[ -z "$cross" ] || cc_pkg=gcc-$gcc_major-${triplet//_/-}
	mapfile -t tools < <(grep -vE '^(libc6|gcc-[0-9]+-for-host)$' "$kernel_dir/kbuild-depends")
	"$here/chroot.sh" ensure "$suite" "$cc_pkg" "${tools[@]}" >/dev/null
	say "building filewatcher.ko for $release in a $kernel_release chroot (${cross}gcc-$gcc_major)"
	run=("$here/chroot.sh" run "$suite" --bind "$out" -- make "${make_args[@]}")
else
	command -v "${cross}gcc-$gcc_major" >/dev/null ||
		die "$release was built with gcc $gcc_major: ${cross}gcc-$gcc_major not found on this host (make setup installs the compilers of the host's release)"
	say "building filewatcher.ko for $release with the host's ${cross}gcc-$gcc_major"
	run=(make "${make_args[@]}")
fi
if ! "${run[@]}" >"$log" 2>&1; then
	tail -n 30 "$log" >&2
	die "building the module for $release failed (full log: $log)"
fi
if grep -E 'warning:|[Ww]arning: ' "$log" >&2; then
	die "building the module for $release gave warnings (above; full log: $log): is the compiler the one the kernel was built with?"
fi
[ -f "$out/filewatcher.ko" ] || die "make in $out produced no filewatcher.ko (log: $log)"
vermagic=$(modinfo -F vermagic "$out/filewatcher.ko")
[ "${vermagic%% *}" = "$release" ] || die "the module's vermagic '$vermagic' does not name $release"
echo "$out/filewatcher.ko"
