#!/usr/bin/env bash
# chroot.sh — cached Debian build chroots, for kernels whose own toolchain the
# host does not have (5.10 wants bullseye's gcc-10; 7.x wants gcc 14 or 16
# and kbuild tools linked against glibc 2.38+). Made with debootstrap from the
# host's own Debian mirror into the project's cache, never by hand, and
# entered in a private mount namespace, so nothing is left mounted.
#
# Usage:
#   test/vm/chroot.sh path SUITE
#       Print the chroot's directory (it may not exist yet).
#   test/vm/chroot.sh release SUITE
#       Print the Debian release whose chroot SUITE uses.
#   test/vm/chroot.sh ensure SUITE [PACKAGE...]
#       Make the chroot once (debootstrap --variant=minbase, ~1 min), install
#       the packages it lacks, and print its directory.
#   test/vm/chroot.sh run SUITE [--bind DIR]... -- COMMAND...
#       Run COMMAND in the chroot with /proc, /dev and the cache mounted, and
#       each --bind DIR at the same path as outside. The exit status is
#       COMMAND's.
#
# SUITE is a Debian suite; -backports, -updates and -security use the chroot
# of their release (trixie-backports → trixie). Needs root (debootstrap,
# chroot, mount namespaces).
#
# Environment: FILEWATCHER_CACHE (see test/vm/cache.sh).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=test/vm/cache.sh
. "$here/cache.sh"
cache=$filewatcher_cache

die() { echo "chroot.sh: $*" >&2; exit 1; }
say() { echo "chroot.sh: $*" >&2; }

# Packages every build chroot has: make and the C library headers.
base_packages=make,libc6-dev

cmd=${1:-}
suite=${2:-}
[ -n "$cmd" ] && [ -n "$suite" ] || die "usage: chroot.sh path|ensure|run SUITE ..."
shift 2
case "$suite" in
*[!a-z-]* | -*) die "bad suite '$suite'" ;;
esac
release=${suite%-backports}
release=${release%-updates}
release=${release%-security}
dir=$cache/chroots/$release-$(dpkg --print-architecture)

# missing PACKAGE...: those not installed in the chroot.
missing() {
	local p
	for p in "$@"; do
		chroot "$dir" dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
	done
}

cmd_ensure() {
	[ "$(id -u)" -eq 0 ] || die "needs root (debootstrap and chroot)"
	mkdir -p "$cache/chroots"
	exec {lockfd}>"$cache/chroots/.lock"
	flock "$lockfd"
	if [ ! -f "$dir/.complete" ]; then
		command -v debootstrap >/dev/null || die "debootstrap not found (run make setup)"
		local uri start=$SECONDS
		uri=$("$here/kernels.sh" mirror)
		say "debootstrap $release into $dir (~1 min, once)"
		rm -rf "$dir"
		mkdir -p "$dir"
		debootstrap --variant=minbase --include="$base_packages" "$release" "$dir" "$uri" >"$dir.log" 2>&1 ||
			die "debootstrap $release failed (log: $dir.log)"
		# Only what builds need: no docs, no apt archives.
		rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/usr/share/doc/* "$dir"/usr/share/man/*
		touch "$dir/.complete"
		say "made the $release chroot in $((SECONDS - start)) s"
	fi
	local want
	mapfile -t want < <(missing "$@")
	if [ ${#want[@]} -gt 0 ]; then
		# The host's apt settings (proxies, a snapshot mirror's
		# Check-Valid-Until) are the chroot's too: it uses the same mirror.
		cp -a /etc/apt/apt.conf.d/. "$dir/etc/apt/apt.conf.d/"
		say "installing ${want[*]} into the $release chroot"
		run_in "" -- apt-get -qq update >&2 || die "apt-get update in the $release chroot failed"
		run_in "" -- env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${want[@]}" >"$dir.apt.log" 2>&1 ||
			die "installing ${want[*]} into the $release chroot failed (log: $dir.apt.log)"
		run_in "" -- apt-get -qq clean
	fi
	echo "$dir"
}

# run_in "BIND..." -- COMMAND...: COMMAND in the chroot, in a mount namespace
# of its own (the mounts go away with it).
run_in() {
	local binds=$1
	shift 2
	unshare --mount --propagation private -- bash -euc '
		root=$1 binds=$2
		shift 2
		mount -t proc proc "$root/proc"
		mount --bind /dev "$root/dev"
		for b in $binds; do
			mkdir -p "$root$b"
			mount --bind "$b" "$root$b"
		done
		# The host resolver, for apt inside the chroot.
		[ ! -f /etc/resolv.conf ] || cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
		exec chroot "$root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 "$@"
	' bash "$dir" "$binds" "$@"
}

cmd_run() {
	[ "$(id -u)" -eq 0 ] || die "needs root (chroot and mount namespaces)"
	[ -f "$dir/.complete" ] || die "no $release chroot yet (chroot.sh ensure $suite)"
	case "$cache" in *[[:space:]]*) die "the cache path '$cache' has spaces: set FILEWATCHER_CACHE" ;; esac
	local binds=$cache
	while [ $# -gt 0 ]; do
		case "$1" in
		--bind)
			local b=${2:?--bind needs a directory}
			[ -d "$b" ] || die "--bind $b: not a directory"
			case "$b" in /*) ;; *) die "--bind $b: not an absolute path" ;; esac
			case "$b" in *[[:space:]]*) die "--bind $b: spaces are not supported" ;; esac
			binds="$binds $b"
			shift 2
			;;
		--) shift; break ;;
		*) die "run: unknown argument '$1' (chroot.sh run SUITE [--bind DIR]... -- COMMAND...)" ;;
		esac
	done
	[ $# -gt 0 ] || die "run: no command"
	run_in "$binds" -- "$@"
}

case "$cmd" in
path) echo "$dir" ;;
release) echo "$release" ;;
ensure) cmd_ensure "$@" ;;
run) cmd_run "$@" ;;
*) die "unknown command '$cmd' (path, release, ensure, run)" ;;
esac
