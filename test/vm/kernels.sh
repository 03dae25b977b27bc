#!/usr/bin/env bash
# kernels.sh — fetch Debian cloud kernels and their headers into a cache the
# project owns. Nothing is installed into the host: packages are downloaded
# with `apt-get download` through a private apt configuration (its own
# sources, lists and state, so every Debian suite and the arm64 architecture
# are used without touching /etc/apt or the host's dpkg) and unpacked with
# `dpkg -x`.
#
# Usage:
#   test/vm/kernels.sh fetch --kernel K [--arch amd64|arm64] [--refresh]
#       Fetch (once; later calls reuse the cache) and print the kernel's
#       cache directory. It holds:
#         release   the kernel release (uname -r in the guest)
#         suite     the Debian suite it came from (its toolchain: build-module.sh)
#         kbuild-depends  what the headers' build tools need to run
#         vmlinuz   the kernel image
#         build     the headers tree to build modules against (KDIR)
#         modules   /lib/modules/<release> of that kernel, with modules.dep
#         busybox   a static busybox for that architecture
#       --refresh resolves a series again against fresh package lists
#       (otherwise a series stays on the release it was first fetched as).
#   test/vm/kernels.sh path --kernel K [--arch amd64|arm64]
#       Print the directory without fetching.
#   test/vm/kernels.sh modules --kernel K [--arch amd64|arm64] [--into DIR] MODULE...
#       Print the modules that loading each MODULE takes, dependencies first,
#       each once; modules built into that kernel are left out. The kernel
#       must have been fetched. Without --into: their .ko files, as shipped
#       (.ko, .ko.xz, .ko.zst); with it: their names, each copied into DIR as
#       NAME.ko, uncompressed (busybox insmod takes no compressed modules).
#   test/vm/kernels.sh list
#       Print the named series and the suite each comes from.
#   test/vm/kernels.sh mirror
#       Print the Debian mirror the host's apt uses (the other guest and
#       chroot builders fetch from the same one).
#   test/vm/kernels.sh cache
#       Print the cache directory (test/vm/cache.sh).
#
# K is a series of the table below (the newest cloud kernel of its suite), or
# any Debian cloud kernel release the mirror serves, with or without its
# flavour: 6.18.15+deb13-cloud-amd64, 6.18.15+deb13, 6.1.0-47. A series with
# "-generic" (6.1-generic) is the suite's generic kernel instead (flavour
# amd64 or arm64: all of Debian's modules, 9p among them, which the cloud
# flavour leaves out).
#
# Environment: FILEWATCHER_CACHE (see test/vm/cache.sh).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=test/vm/cache.sh
. "$here/cache.sh"
cache=$filewatcher_cache

die() { echo "kernels.sh: $*" >&2; exit 1; }
say() { echo "kernels.sh: $*" >&2; }

# The kernel matrix: series → the Debian suite whose cloud kernel it is.
# Every suite here is in the private apt sources (one update fetches all).
series_table="5.10 bullseye
6.1 bookworm
6.12 bookworm-backports
7.2 sid
7.3 trixie-backports"
suites="bullseye bookworm bookworm-backports trixie trixie-backports sid"
# Busybox for the initramfs: a static binary, the same for every kernel.
busybox_suite=bookworm

# The Debian mirror the host already uses (read, never changed).
debian_uri() {
	local uri
	uri=$(grep -hE '^\s*URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null |
		awk '{print $2}' | grep -v -- '-security' | head -n1 || true)
	if [ -z "$uri" ]; then
		uri=$(grep -hE '^\s*deb\s' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
			sed -E 's/^\s*deb\s+(\[[^]]*\]\s+)?//' | awk '{print $1}' | grep -v -- '-security' | head -n1 || true)
	fi
	[ -n "$uri" ] || die "cannot find the host's Debian mirror in /etc/apt"
	echo "$uri"
}

series_suite() { awk -v s="$1" '$1 == s {print $2}' <<<"$series_table"; }

usage_kernels() { awk '{printf "%s%s", sep, $1; sep=", "}' <<<"$series_table"; }

cmd=${1:-}
[ -n "$cmd" ] || die "usage: kernels.sh fetch|path|list|mirror|cache --kernel K [--arch amd64|arm64]"
shift
case "$cmd" in
mirror) debian_uri; exit 0 ;;
cache) echo "$cache"; exit 0 ;;
list) echo "$series_table"; exit 0 ;;
fetch | path | modules) ;;
*) die "unknown command '$cmd' (fetch, path, modules, list, mirror, cache)" ;;
esac

kernel=''
arch=amd64
refresh=0
into=''
names=()
while [ $# -gt 0 ]; do
	case "$1" in
	--kernel) kernel=${2:?--kernel needs a value}; shift 2 ;;
	--arch) arch=${2:?--arch needs a value}; shift 2 ;;
	--refresh) refresh=1; shift ;;
	--into) into=${2:?--into needs a directory}; shift 2 ;;
	-*) die "unknown argument: $1" ;;
	*)
		[ "$cmd" = modules ] || die "unexpected argument: $1"
		names+=("$1")
		shift
		;;
	esac
done
[ -n "$kernel" ] || die "$cmd: --kernel is required: a series ($(usage_kernels)) or a Debian cloud kernel release"
case "$arch" in amd64 | arm64) ;; *) die "unsupported arch '$arch' (supported: amd64, arm64)" ;; esac
case "$kernel" in
*/* | .* | *[!A-Za-z0-9.+~_-]*) die "bad --kernel '$kernel'" ;;
esac

base=$cache/kernels/$arch
# The flavour of a series' kernel: cloud, or generic with "-generic".
flavour=cloud-$arch
suite=$(series_suite "$kernel")
if [ -z "$suite" ] && [ "${kernel%-generic}" != "$kernel" ]; then
	suite=$(series_suite "${kernel%-generic}")
	[ -z "$suite" ] || flavour=$arch
fi
if [ -n "$suite" ]; then
	# A series: an alias (symlink) to the release it resolved to.
	alias_dir=$base/$kernel
else
	alias_dir=''
	case "$kernel" in
	*-cloud-amd64 | *-cloud-arm64)
		[ "${kernel##*-cloud-}" = "$arch" ] || die "--kernel $kernel is not an $arch kernel (pass --arch ${kernel##*-cloud-})"
		;;
	*-amd64 | *-arm64) # a generic kernel's release
		[ "${kernel##*-}" = "$arch" ] || die "--kernel $kernel is not an $arch kernel (pass --arch ${kernel##*-})"
		;;
	[0-9]*) kernel=$kernel-cloud-$arch ;;
	*) die "unknown kernel '$kernel': want a series ($(usage_kernels)) or a release such as 6.18.15+deb13-cloud-$arch" ;;
	esac
fi

complete() { [ -f "$1/.complete" ]; }

if [ "$cmd" = path ]; then
	if [ -n "$alias_dir" ]; then echo "$alias_dir"; else echo "$base/$kernel"; fi
	exit 0
fi
if [ "$cmd" = modules ]; then
	dir=${alias_dir:-$base/$kernel}
	complete "$dir" || die "modules: kernel $kernel ($arch) is not fetched (kernels.sh fetch)"
	dir=$(cd "$dir" && pwd -P)
	[ ${#names[@]} -gt 0 ] || die "modules: name at least one module"
	# modprobe reads the modules.dep that fetch made; -a: every name is a module.
	out=$(modprobe -d "$dir/root" -S "$(cat "$dir/release")" --show-depends -a "${names[@]}") ||
		die "modules: modprobe cannot resolve ${names[*]} in $(cat "$dir/release")"
	for ko in $(awk '$1 == "insmod" && !seen[$2]++ {print $2}' <<<"$out"); do
		if [ -z "$into" ]; then
			echo "$ko"
			continue
		fi
		m=$(basename "$ko")
		m=${m%%.ko*}
		case "$ko" in
		*.xz) xz -dc "$ko" >"$into/$m.ko" ;;
		*.zst) zstd -qdc "$ko" >"$into/$m.ko" ;;
		*) cp "$ko" "$into/$m.ko" ;;
		esac || die "modules: cannot copy $ko into $into"
		echo "$m"
	done
	exit 0
fi

# The headers' top Makefile names its -common tree (and, since 7.x, its own
# KBUILD_OUTPUT) by absolute /usr/src paths, which are the host's, not ours:
# point them into the cache. Idempotent.
fix_headers() {
	local dir=$1 mk=$1/build/Makefile src
	src=$(cd "$dir/root/usr/src" && pwd)
	sed -i -E \
		-e "s|^include /usr/src/(linux-headers-[^/]*-common)/Makefile\$|include $src/\\1/Makefile|" \
		-e "s|^KBUILD_OUTPUT=/usr/src/|KBUILD_OUTPUT=$src/|" "$mk"
	local common
	common=$(sed -nE 's|^include (.*)/Makefile$|\1|p' "$mk")
	[ -z "$common" ] || [ -f "$common/Makefile" ] || die "headers need $common, which is not in the cache"
}

# Fast path: already fetched, nothing to resolve.
if [ "$refresh" = 0 ]; then
	if [ -n "$alias_dir" ] && complete "$alias_dir"; then
		echo "$(cd "$alias_dir" && pwd -P)"
		exit 0
	elif [ -z "$alias_dir" ] && complete "$base/$kernel"; then
		echo "$base/$kernel"
		exit 0
	fi
fi

command -v apt-get >/dev/null || die "apt-get not found: the kernel cache needs Debian's apt (run make setup)"
command -v dpkg >/dev/null || die "dpkg not found"
command -v depmod >/dev/null || die "depmod not found (package kmod: run make setup)"

mkdir -p "$base"
# One fetch at a time: they share the apt state and may want the same kernel.
exec {lockfd}>"$cache/kernels/.lock"
flock "$lockfd"

# Private apt state: its own sources, lists, cache and an empty dpkg status,
# so nothing the host's apt knows changes. The host's apt.conf.d still
# applies (proxies, Check-Valid-Until); its Docker-style "no package cache"
# setting would make every apt-cache call below parse all the lists again
# (~12 s each with six suites and two architectures), so the binary cache
# is turned back on for the private state.
apt_root=$cache/apt
apt_opts=(
	-o "Dir::Etc::SourceList=$apt_root/sources.list"
	-o "Dir::Etc::SourceParts=/dev/null"
	-o "Dir::Etc::Preferences=/dev/null"
	-o "Dir::Etc::PreferencesParts=/dev/null"
	-o "Dir::State::Lists=$apt_root/lists"
	-o "Dir::State::status=$apt_root/status"
	-o "Dir::Cache=$apt_root/cache"
	-o "Dir::Cache::pkgcache=$apt_root/cache/pkgcache.bin"
	-o "Dir::Cache::srcpkgcache="
	-o "Acquire::Languages=none"
	-o "APT::Architecture=$(dpkg --print-architecture)"
	-o "APT::Architectures::=amd64"
	-o "APT::Architectures::=arm64"
	-o "Debug::NoLocking=1"
	-o "APT::Sandbox::User=root"
)
apt_update() {
	local stamp=$apt_root/.updated uri s
	uri=$(debian_uri)
	local want
	want=$(for s in $suites; do
		echo "deb [arch=amd64,arm64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $uri $s main"
	done)
	# Refresh the private lists at most once a day, and when the sources changed.
	if [ -f "$stamp" ] && [ -z "$(find "$stamp" -mmin +1440)" ] &&
		[ "$want" = "$(cat "$apt_root/sources.list" 2>/dev/null)" ]; then
		return
	fi
	mkdir -p "$apt_root/lists/partial" "$apt_root/cache/archives/partial"
	: >"$apt_root/status"
	echo "$want" >"$apt_root/sources.list"
	say "updating private apt lists ($uri: $suites; amd64, arm64)"
	apt-get "${apt_opts[@]}" -qq update >&2 || die "apt-get update failed (private lists under $apt_root)"
	touch "$stamp"
}

# Version of package $1 (":arch" allowed) in suite $2, or nothing.
pkg_version() {
	apt-cache "${apt_opts[@]}" madison "$1" 2>/dev/null |
		awk -F'|' -v s="$2" '$3 ~ (" " s "/") {gsub(/ /,"",$2); print $2; exit}'
}

# The first suite (in $suites order) that has package $1.
pkg_suite() {
	local s
	for s in $suites; do
		if [ -n "$(pkg_version "$1" "$s")" ]; then echo "$s"; return; fi
	done
}

# Depends of package $1 at version $2, one name per line.
pkg_depends() {
	apt-cache "${apt_opts[@]}" show "$1=$2" 2>/dev/null |
		awk '/^Depends:/{sub(/^Depends: /,""); print; exit}' |
		tr ',' '\n' | sed -E 's/^\s+//; s/\s.*$//; s/\|.*$//'
}

# download PKG[:ARCH] SUITE: into $dl.
download() {
	local ver
	ver=$(pkg_version "$1" "$2")
	[ -n "$ver" ] || die "no package $1 in $2"
	(cd "$dl" && apt-get "${apt_opts[@]}" -qq download "$1=$ver" >&2) || die "apt-get download $1=$ver failed"
}

# exists PKG SUITE
exists() { [ -n "$(pkg_version "$1" "$2")" ]; }

apt_update

if [ -n "$alias_dir" ]; then
	meta=linux-image-$flavour
	mver=$(pkg_version "$meta:$arch" "$suite")
	[ -n "$mver" ] || die "no $meta in $suite"
	image=$(pkg_depends "$meta:$arch" "$mver" | grep -E '^linux-image-[0-9]' | head -n1)
	[ -n "$image" ] || die "cannot resolve the image package of $meta $mver ($suite)"
	release=${image#linux-image-}
	release=${release%-unsigned}
else
	release=$kernel
	suite=$(pkg_suite "linux-headers-$release:$arch")
	[ -n "$suite" ] || die "no Debian suite ($suites) serves linux-headers-$release for $arch"
fi
dir=$base/$release

if ! complete "$dir"; then
	say "fetching $release ($arch) from $suite"
	rm -rf "$dir"
	mkdir -p "$dir"
	dl=$dir/debs
	root=$dir/root
	mkdir -p "$dl" "$root"

	# The image. arm64: the unsigned one where the signed package is a wrapper.
	image=linux-image-$release
	if [ "$arch" = arm64 ] && exists "$image-unsigned:$arch" "$suite"; then image=$image-unsigned; fi
	exists "$image:$arch" "$suite" || die "no $image for $arch in $suite"
	download "$image:$arch" "$suite"
	# Since 7.x the image package is split: the kernel (linux-binary-), its
	# modules (linux-modules-) and its config and module lists (linux-base-).
	while read -r dep; do
		case "$dep" in
		linux-binary-"$release")
			if [ "$arch" = arm64 ] && exists "linux-binary-unsigned-$release:$arch" "$suite"; then
				dep=linux-binary-unsigned-$release
			fi
			download "$dep:$arch" "$suite"
			;;
		linux-modules-"$release" | linux-base-"$release") download "$dep:$arch" "$suite" ;;
		esac
	done < <(pkg_depends "$image:$arch" "$(pkg_version "$image:$arch" "$suite")")

	# The headers, their -common tree and the kbuild tools. The tools run on
	# the build host, so they come for the host's architecture.
	headers=linux-headers-$release
	download "$headers:$arch" "$suite"
	hostarch=$(dpkg --print-architecture)
	while read -r dep; do
		case "$dep" in
		linux-headers-*-common*) download "$dep" "$suite" ;;
		linux-kbuild-*)
			download "$dep:$hostarch" "$suite"
			# What the tools need to run (libelf, pahole, ...), for a
			# build chroot to install (build-module.sh).
			pkg_depends "$dep:$hostarch" "$(pkg_version "$dep:$hostarch" "$suite")" >"$dir/kbuild-depends"
			;;
		esac
	done < <(pkg_depends "$headers:$arch" "$(pkg_version "$headers:$arch" "$suite")")
	[ -s "$dir/kbuild-depends" ] || die "$headers names no linux-kbuild package"
	download "busybox-static:$arch" "$busybox_suite"

	for deb in "$dl"/*.deb; do
		dpkg -x "$deb" "$root"
	done

	# Kernels up to 6.x put the image in /boot and modules in /lib/modules;
	# 7.x puts both under /usr/lib/modules/<release> (the unsigned arm64
	# image as vmlinuz.unsigned).
	vmlinuz=''
	for f in "root/boot/vmlinuz-$release" "root/usr/lib/modules/$release/vmlinuz" "root/usr/lib/modules/$release/vmlinuz.unsigned"; do
		if [ -f "$dir/$f" ]; then vmlinuz=$f; break; fi
	done
	[ -n "$vmlinuz" ] || die "no kernel image in $image"
	mods=root/lib/modules/$release
	[ -d "$dir/$mods/kernel" ] || mods=root/usr/lib/modules/$release
	[ -d "$dir/$mods/kernel" ] || die "no modules of $release in the packages"
	# Debian makes modules.dep at install time (depmod in postinst); make it
	# here, so the harness can ask for a module's dependencies in order.
	if [ "$mods" != "root/lib/modules/$release" ]; then
		mkdir -p "$root/lib/modules"
		ln -sfn "../../usr/lib/modules/$release" "$root/lib/modules/$release"
	fi
	depmod -b "$root" "$release" || die "depmod for $release failed"

	ln -sfn "$vmlinuz" "$dir/vmlinuz"
	ln -sfn "root/usr/src/linux-headers-$release" "$dir/build"
	ln -sfn "root/lib/modules/$release" "$dir/modules"
	ln -sfn "root/bin/busybox" "$dir/busybox"
	echo "$release" >"$dir/release"
	echo "$suite" >"$dir/suite"
	[ -f "$dir/build/Makefile" ] || die "no headers tree in $headers"
	[ -x "$dir/busybox" ] || die "no busybox in busybox-static:$arch"
	fix_headers "$dir"
	rm -rf "$dl"
	touch "$dir/.complete"
fi
if [ -n "$alias_dir" ]; then
	# A cache of the older layout kept each series in a folder of its own.
	if [ -d "$alias_dir" ] && [ ! -L "$alias_dir" ]; then rm -rf "$alias_dir"; fi
	ln -sfn "$release" "$alias_dir.tmp" && mv -Tf "$alias_dir.tmp" "$alias_dir"
fi
echo "$dir"
