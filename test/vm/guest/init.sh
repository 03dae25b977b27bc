#!/bin/sh
# /init of the filewatcher test VM: busybox sh as PID 1 in an initramfs that
# test/vm/vm.sh builds. It mounts what the loader needs, brings up virtio-net
# with qemu's user-mode address, starts the guest agent and (unless vm.sh up
# --no-loader) the loader, then stays alive. Lines starting "filewatcher-vm:"
# on the console are its progress; vm.sh watches for "filewatcher-vm: FATAL"
# and "filewatcher-vm: loader exited".
/bin/busybox --install -s
export PATH=/filewatcher:/usr/local/bin:/usr/bin:/usr/sbin:/bin:/sbin HOME=/root

mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1

say() { echo "filewatcher-vm: $*"; }
# A boot that cannot work ends the VM at once, so vm.sh up fails fast.
fatal() {
	say "FATAL: $*"
	poweroff -f
	sleep 10
}

mount -t proc proc /proc || fatal "mount /proc"
mount -t sysfs sysfs /sys || fatal "mount /sys"
mount -t tracefs tracefs /sys/kernel/tracing || fatal "mount tracefs"
mount -t bpf bpf /sys/fs/bpf || fatal "mount bpffs"
mount -t cgroup2 cgroup2 /sys/fs/cgroup || fatal "mount cgroup2"
# Where a kernel shows its lockdown mode, as on a full system.
mount -t securityfs securityfs /sys/kernel/security || fatal "mount securityfs"
mount -t tmpfs -o mode=1777 tmpfs /tmp || fatal "mount /tmp"
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
# Locked memory for BPF maps on kernels that still charge it to RLIMIT_MEMLOCK.
ulimit -l unlimited

. /filewatcher/vm.conf

# virtio-net is a module in Debian's cloud kernels; vm.sh lists the modules
# this kernel needs, in dependency order (with 9p's for --share).
for m in $FW_NET_MODULES; do
	insmod "/lib/modules/filewatcher-vm/$m.ko" || fatal "insmod $m"
done
i=0
while [ ! -e /sys/class/net/eth0 ]; do
	i=$((i + 1))
	[ $i -le 100 ] || fatal "no eth0 after loading $FW_NET_MODULES"
	sleep 0.1
done
ip link set lo up
ip link set eth0 up
# qemu's user-mode network (slirp) always gives the guest 10.0.2.15/24.
ip addr add 10.0.2.15/24 dev eth0 || fatal "configure eth0"
ip route add default via 10.0.2.2
say "network up"

# vm.sh up --share HOST_DIR:TAG: the host's directory over 9p, at /mnt/TAG.
for tag in $FW_SHARES; do
	mkdir -p "/mnt/$tag"
	mount -t 9p -o trans=virtio,version=9p2000.L "$tag" "/mnt/$tag" || fatal "mount 9p share $tag"
done

agent serve --listen "0.0.0.0:$FW_AGENT_PORT" >/var/log/agent.log 2>&1 &

if [ "$FW_START_LOADER" = 1 ]; then
	start-loader
	say "loader started"
fi
say "init done"

# PID 1 must never exit. Each sleep is a child, and ash reaps every child it
# waits for, including orphans handed to PID 1.
while :; do
	sleep 3600
done
