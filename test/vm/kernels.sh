#!/usr/bin/env bash
# kernels.sh — fetch Debian cloud kernels and their headers into a cache the
# project owns. Nothing is installed into the host: packages are downloaded
# with `apt-get download` through a private apt configuration (so the
# bookworm-backports suite and the arm64 architecture are used without
# touching /etc/apt) and unpacked with `dpkg -x`.
#
# Usage:
#   test/vm/kernels.sh fetch --kernel 6.1|6.12 [--arch amd64|arm64]
#       Fetch (once; later calls reuse the cache) and print the kernel's
#       cache directory. It holds:
#         release   the kernel release (uname -r in the guest)
#         vmlinuz   the kernel image
#         build     the headers tree to build modules against (KDIR)
#         modules   /lib/modules/<release> of that kernel
#         busybox   a static busybox for that architecture
#   test/vm/kernels.sh path --kernel 6.1|6.12 [--arch amd64|arm64]
#       Print the directory without fetching.
#   test/vm/kernels.sh mirror
#       Print the Debian mirror the host's apt uses (other guest builders,
#       such as test/deploy/rootfs.sh, fetch from the same one).
#
# Environment: FILEWATCHER_CACHE (default: <repo>/.cache).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${FILEWATCHER_CACHE:-$repo/.cache}

die() { echo "kernels.sh: $*" >&2; exit 1; }

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

cmd=${1:-}
[ -n "$cmd" ] || die "usage: kernels.sh fetch|path|mirror --kernel 6.1|6.12 [--arch amd64|arm64]"
shift
if [ "$cmd" = mirror ]; then
	debian_uri
	exit 0
fi
series=6.1
arch=amd64
while [ $# -gt 0 ]; do
	case "$1" in
	--kernel) series=${2:?--kernel needs a value}; shift 2 ;;
	--arch) arch=${2:?--arch needs a value}; shift 2 ;;
	*) die "unknown argument: $1" ;;
	esac
done
case "$series" in
6.1) suite=bookworm ;;
6.12) suite=bookworm-backports ;;
*) die "unsupported kernel '$series' (supported: 6.1, 6.12)" ;;
esac
case "$arch" in amd64 | arm64) ;; *) die "unsupported arch '$arch' (supported: amd64, arm64)" ;; esac

dir=$cache/kernels/$arch/$series
if [ "$cmd" = path ]; then
	echo "$dir"
	exit 0
fi
[ "$cmd" = fetch ] || die "unknown command '$cmd'"
# The headers' top Makefile includes its -common tree by an absolute
# /usr/src path, which is the host's, not ours: point it into the cache.
# Idempotent, and run on every fetch so caches made before this fix heal.
fix_headers() {
	local mk=$dir/build/Makefile common
	common=$(sed -nE 's|^include /usr/src/(linux-headers-[^/]*-common)/Makefile$|\1|p' "$mk")
	[ -n "$common" ] || return 0
	[ -f "$dir/root/usr/src/$common/Makefile" ] || die "headers need $common, which is not in $dir/root/usr/src"
	sed -i -E "s|^include /usr/src/linux-headers-[^/]*-common/Makefile\$|include $(cd "$dir/root/usr/src/$common" && pwd)/Makefile|" "$mk"
}

if [ -f "$dir/.complete" ]; then
	fix_headers
	echo "$dir"
	exit 0
fi

command -v apt-get >/dev/null || die "apt-get not found: the kernel cache needs Debian's apt (run make setup)"
command -v dpkg >/dev/null || die "dpkg not found"

# Private apt state: its own sources, lists, cache and an empty dpkg status,
# so nothing the host's apt knows changes.
apt_root=$cache/apt
apt_opts=(
	-o "Dir::Etc::SourceList=$apt_root/sources.list"
	-o "Dir::Etc::SourceParts=/dev/null"
	-o "Dir::Etc::Preferences=/dev/null"
	-o "Dir::Etc::PreferencesParts=/dev/null"
	-o "Dir::State::Lists=$apt_root/lists"
	-o "Dir::State::status=$apt_root/status"
	-o "Dir::Cache=$apt_root/cache"
	-o "APT::Architecture=$(dpkg --print-architecture)"
	-o "APT::Architectures::=amd64"
	-o "APT::Architectures::=arm64"
	-o "Debug::NoLocking=1"
	-o "APT::Sandbox::User=root"
)
apt_update() {
	local stamp=$apt_root/.updated
	# Refresh the private lists at most once a day.
	if [ -f "$stamp" ] && [ -z "$(find "$stamp" -mmin +1440)" ]; then
		return
	fi
	mkdir -p "$apt_root/lists/partial" "$apt_root/cache/archives/partial"
	: >"$apt_root/status"
	local uri
	uri=$(debian_uri)
	cat >"$apt_root/sources.list" <<EOF
deb [arch=amd64,arm64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $uri bookworm main
deb [arch=amd64,arm64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $uri bookworm-backports main
EOF
	echo "kernels.sh: updating private apt lists ($uri bookworm, bookworm-backports)" >&2
	apt-get "${apt_opts[@]}" -qq update >&2 || die "apt-get update failed (private lists under $apt_root)"
	touch "$stamp"
}

# Version of package $1 (":arch" allowed) from suite $suite.
pkg_version() {
	apt-cache "${apt_opts[@]}" madison "$1" 2>/dev/null |
		awk -F'|' -v s="$suite" '$3 ~ (" " s "/") {gsub(/ /,"",$2); print $2; exit}'
}

# Depends of package $1 at version $2, one name per line.
pkg_depends() {
	apt-cache "${apt_opts[@]}" show "$1=$2" 2>/dev/null |
		awk '/^Depends:/{sub(/^Depends: /,""); print; exit}' |
		tr ',' '\n' | sed -E 's/^\s+//; s/\s.*$//; s/\|.*$//'
}

download() { # download pkg[:arch]=version into $dl
	(cd "$dl" && apt-get "${apt_opts[@]}" -qq download "$1" >&2) || die "apt-get download $1 failed"
}

apt_update
rm -rf "$dir"
mkdir -p "$dir"
dl=$dir/debs
root=$dir/root
mkdir -p "$dl" "$root"

meta=linux-image-cloud-$arch
mver=$(pkg_version "$meta:$arch")
[ -n "$mver" ] || die "no $meta in $suite"
image=$(pkg_depends "$meta:$arch" "$mver" | grep -E '^linux-image-' | head -n1)
[ -n "$image" ] || die "cannot resolve the image package of $meta $mver"
release=${image#linux-image-}
release=${release%-unsigned}
# Prefer the unsigned image on arm64 (the signed one is a wrapper there).
if [ "$arch" = arm64 ] && [ "$image" = "linux-image-$release" ]; then
	uv=$(pkg_version "linux-image-$release-unsigned:$arch")
	[ -n "$uv" ] && image=linux-image-$release-unsigned
fi
headers=linux-headers-$release
iver=$(pkg_version "$image:$arch")
hver=$(pkg_version "$headers:$arch")
[ -n "$iver" ] && [ -n "$hver" ] || die "cannot find $image / $headers in $suite"
echo "kernels.sh: fetching $image $iver and headers ($arch, $suite)" >&2
download "$image:$arch=$iver"
download "$headers:$arch=$hver"
# The headers need their -common package and the kbuild tools; the tools run
# on the build host, so take them for the host's architecture.
hostarch=$(dpkg --print-architecture)
while read -r dep; do
	case "$dep" in
	linux-headers-*-common*) download "$dep=$(pkg_version "$dep")" ;;
	linux-kbuild-*) download "$dep:$hostarch=$(pkg_version "$dep:$hostarch")" ;;
	esac
done < <(pkg_depends "$headers:$arch" "$hver")
bbver=$(pkg_version "busybox-static:$arch")
[ -n "$bbver" ] || { suite=bookworm; bbver=$(pkg_version "busybox-static:$arch"); }
download "busybox-static:$arch=$bbver"

for deb in "$dl"/*.deb; do
	dpkg -x "$deb" "$root"
done

ln -sfn "root/boot/vmlinuz-$release" "$dir/vmlinuz"
ln -sfn "root/usr/src/linux-headers-$release" "$dir/build"
ln -sfn "root/lib/modules/$release" "$dir/modules"
ln -sfn "root/bin/busybox" "$dir/busybox"
echo "$release" >"$dir/release"
[ -f "$dir/vmlinuz" ] || die "no kernel image in $image"
[ -f "$dir/build/Makefile" ] || die "no headers tree in $headers"
[ -x "$dir/busybox" ] || die "no busybox in busybox-static:$arch"
fix_headers
rm -rf "$dl"
touch "$dir/.complete"
echo "$dir"
