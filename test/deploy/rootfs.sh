#!/usr/bin/env bash
# rootfs.sh — build (once) and print the cached Debian bookworm guest that the
# systemd e2e boots: a debootstrap root filesystem turned into an ext4 image,
# plus a tiny initramfs that loads the virtio modules, mounts it and
# switch_roots into systemd.
#
# Usage:
#   test/deploy/rootfs.sh [--kernel 6.1]
#       Print the guest's cache directory, building it first when it does not
#       exist. It holds:
#         rootfs.img    ext4 image of the root filesystem, attached read-only
#                       (shared by every run; the guest's writes go to a tmpfs)
#         initrd.cpio.gz  the switch_root initramfs
#         vmlinuz, release  the guest kernel (from test/vm/kernels.sh)
#
# Node.js for the exporter is the host's own node binary (this host runs
# Debian bookworm, the guest's release, so its libc and libstdc++ match),
# copied to /usr/local/bin/node: it is a runtime dependency like a package,
# and at ~100 MB too big to copy in at every boot.
#
# The directory name is a hash of this file, the kernel release, the Debian
# mirror and the node binary, so editing the recipe below (packages, units, init script) builds a
# new image; old ones are removed. Building takes ~1–2 min (debootstrap).
#
# The image is deliberately generic: nothing of filewatcher is in it. Each run
# of the e2e puts the current build (units via deploy/install.sh, binaries,
# module, exporter, test agent) on a second disk, and the initramfs stacks
# that disk over the root with overlayfs before starting systemd (see init).
#
# Environment: FILEWATCHER_CACHE (see test/vm/cache.sh).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=test/vm/cache.sh
. "$repo/test/vm/cache.sh"
cache=$filewatcher_cache

die() { echo "rootfs.sh: $*" >&2; exit 1; }

series=6.1
while [ $# -gt 0 ]; do
	case "$1" in
	--kernel) series=${2:?--kernel needs a value}; shift 2 ;;
	*) die "unknown argument: $1" ;;
	esac
done

[ "$(id -u)" -eq 0 ] || die "needs root (debootstrap, chroot)"
node=$(command -v node) || die "node not found: the exporter needs Node.js 20+ (make setup)"
for tool in debootstrap mke2fs depmod cpio gzip; do
	command -v "$tool" >/dev/null || die "$tool not found: run make setup"
done

kdir=$("$repo/test/vm/kernels.sh" fetch --kernel "$series")
release=$(cat "$kdir/release")

# The Debian mirror the host already uses (read, never changed).
uri=$("$repo/test/vm/kernels.sh" mirror)

key=$( { cat "${BASH_SOURCE[0]}"; echo "$release $uri"; sha256sum <"$node"; } | sha256sum | cut -c1-16)
base=$cache/systemd-guest
dir=$base/$key
if [ -f "$dir/.complete" ]; then
	echo "$dir"
	exit 0
fi

# Only one builder at a time; a second caller waits and then reuses.
mkdir -p "$base"
exec 9>"$base/.lock"
flock 9
if [ -f "$dir/.complete" ]; then
	echo "$dir"
	exit 0
fi

# From here on stdout is the build's chatter (mke2fs prints even with -q):
# send it to stderr and keep the real stdout for the one line callers read.
exec 3>&1 1>&2

# Recipe. Packages: systemd as PID 1, udev to autoload the virtio-net module,
# kmod for modprobe/rmmod, iproute2 and procps for debugging a failed run.
packages=systemd-sysv,udev,kmod,iproute2,procps
start=$(date +%s)
rm -rf "$dir"
mkdir -p "$dir"
tree=$dir/tree
echo "rootfs.sh: debootstrap bookworm ($packages) from $uri, ~1 min" >&2
debootstrap --variant=minbase --include="$packages" bookworm "$tree" "$uri" >"$dir/debootstrap.log" 2>&1 ||
	die "debootstrap failed, see $dir/debootstrap.log"

# The guest kernel's modules, with their dependency index, so udev and
# modprobe find virtio_net and the loader can finit_module its .ko.
mkdir -p "$tree/lib/modules"
cp -a "$kdir/modules/." "$tree/lib/modules/$release/"
rm -f "$tree/lib/modules/$release/build" "$tree/lib/modules/$release/source"
depmod -b "$tree" "$release"

echo filewatcher-guest >"$tree/etc/hostname"
# The root is an overlay the initramfs mounts (see below): nothing to mount
# or check from fstab.
: >"$tree/etc/fstab"
# No password for root on the serial console: the guest is only reachable
# through qemu's stdio and a loopback-only forward.
chroot "$tree" passwd -d root >/dev/null

# Networking: qemu's user-mode network with a fixed address (no DHCP wait).
mkdir -p "$tree/etc/systemd/network"
cat >"$tree/etc/systemd/network/10-qemu.network" <<'EOF'
[Match]
Type=ether

[Network]
Address=10.0.2.15/24
Gateway=10.0.2.2
EOF
chroot "$tree" systemctl enable systemd-networkd.service >/dev/null 2>&1
# Nothing in the guest should wait for or reach the outside world, and
# nothing slow and useless in a throwaway guest should run at boot
# (e2scrub_reap alone takes ~20 s under TCG).
chroot "$tree" systemctl mask systemd-networkd-wait-online.service \
	apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service \
	fstrim.timer systemd-timesyncd.service getty-static.service >/dev/null 2>&1

# Node.js for the exporter (see the header); check it runs on this root.
install -D -m 0755 "$node" "$tree/usr/local/bin/node"
chroot "$tree" /usr/local/bin/node --version >/dev/null || die "node does not run in the bookworm root"

# Free space: the apt cache and docs are not needed in a test guest.
rm -rf "$tree"/var/cache/apt/archives/*.deb "$tree"/var/lib/apt/lists/* \
	"$tree"/usr/share/doc/* "$tree"/usr/share/man/* "$tree"/usr/share/locale/*

mke2fs -q -t ext4 -L filewatcher-root -d "$tree" "$dir/rootfs.img" 2G ||
	die "mke2fs failed"
rm -rf "$tree"

# The initramfs: busybox, the virtio modules the disks need, overlayfs, and
# an init that stacks the per-run payload disk (/dev/vdb, when present) over
# the root image (/dev/vda) with overlayfs and a tmpfs for writes. Both disks
# stay read-only: the cached image is never changed and needs no qemu
# snapshot, and nothing is copied at boot (copying the payload's thousands of
# small files took ~10 s under TCG).
ird=$dir/initrd
mkdir -p "$ird"/{bin,dev,proc,sys,newroot,lower,payload,rw,modules}
cp "$kdir/busybox" "$ird/bin/busybox"
# The disks' transport and driver and overlayfs, in load order (those this
# kernel has as modules), uncompressed for busybox's insmod.
initrd_modules=$("$repo/test/vm/kernels.sh" modules --kernel "$release" --into "$ird/modules" virtio_pci virtio_blk overlay |
	tr '\n' ' ') || die "cannot resolve the initramfs modules of $release"
cat >"$ird/init" <<EOF
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $initrd_modules; do
	insmod /modules/\$m.ko || echo "initrd: insmod \$m failed"
done
EOF
cat >>"$ird/init" <<'EOF'
fail() { echo "initrd: $*"; poweroff -f; }
i=0
while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
mount -t ext4 -o ro /dev/vda /lower || fail "cannot mount /dev/vda"
mount -t tmpfs -o size=1G,mode=0755 rw /rw || fail "cannot mount the tmpfs"
mkdir -p /rw/upper /rw/work
lower=/lower
if [ -b /dev/vdb ]; then
	mount -t ext4 -o ro /dev/vdb /payload || fail "cannot mount the payload /dev/vdb"
	lower=/payload:/lower
	echo "initrd: payload stacked over the root image"
fi
mount -t overlay -o "lowerdir=$lower,upperdir=/rw/upper,workdir=/rw/work" overlay /newroot ||
	fail "cannot mount the overlay root"
umount /proc /sys
mount --move /dev /newroot/dev
exec switch_root /newroot /sbin/init
EOF
chmod 0755 "$ird/init"
(cd "$ird" && find . | cpio -o -H newc --quiet | gzip -1) >"$dir/initrd.cpio.gz"
rm -rf "$ird"

ln -sfn "$kdir/vmlinuz" "$dir/vmlinuz"
echo "$release" >"$dir/release"
# Keep only the current image: each is ~2 GB of sparse file.
for old in "$base"/*/; do
	[ "${old%/}" = "$dir" ] || rm -rf "${old%/}"
done
touch "$dir/.complete"
echo "rootfs.sh: built $dir in $(($(date +%s) - start)) s" >&2
echo "$dir" >&3
