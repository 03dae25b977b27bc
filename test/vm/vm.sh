#!/usr/bin/env bash
# vm.sh — boot Debian cloud kernels under qemu with the filewatcher module and
# loader, and run commands in them. The host that builds filewatcher cannot
# load kernel modules; a guest kernel can. See test/vm/README.md.
#
#   vm.sh up --kernel K [--arch amd64|arm64 (default: the host's)] [--name NAME]
#            [--add HOST_PATH[:GUEST_PATH]]... [--no-loader] [--no-module]
#            [--loader-args "ARGS"] [--kernel-args "ARGS"] [--timeout SECONDS]
#            [--ttl SECONDS] [--share HOST_DIR:TAG]...
#   vm.sh exec [--name NAME] [--uid N] [--gid N] [--stdin] [--cwd DIR]
#              [--env KEY=VALUE]... [--timeout DURATION] [--show-pid] -- CMD...
#   vm.sh addr [--name NAME] [--agent]
#   vm.sh logs [--name NAME]
#   vm.sh down [--name NAME] [--clean]
#   vm.sh help
#
# K: a series (5.10, 6.1, 6.12, 7.2, 7.3: test/vm/kernels.sh list), a series'
# generic kernel (6.1-generic) or any Debian cloud kernel release
# (6.18.15+deb13-cloud-amd64).
# --share: HOST_DIR as a 9p file system (virtio), mounted at /mnt/TAG in the
# guest; needs a kernel with 9p, such as a -generic one.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=test/vm/cache.sh
. "$here/cache.sh"
vmroot=$filewatcher_cache/vm

# Ports inside the guest; the host side of each is a free loopback port.
guest_grpc_port=50051
guest_agent_port=50100
# The guest's network: the virtio PCI transport and virtio-net. What each
# kernel needs of them as modules, in load order, comes from its
# modules.dep (kernels.sh modules): 5.10 has no virtio_pci_modern_dev,
# 6.12 and 7.x build the virtio core in.
net_modules=(virtio_pci virtio_net)

die() {
	echo "vm.sh: $*" >&2
	exit 1
}
say() { echo "vm.sh: $*" >&2; }

usage() {
	sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
	cat <<'EOF'

Commands:
  up     fetch the kernel, build module + loader + agent, boot, wait until the
         loader answers gRPC (or only the agent with --no-loader), print the
         host gRPC address 127.0.0.1:PORT on stdout
  exec   run CMD in the guest; its stdout, stderr and exit code become ours
         (125: the agent could not run it)
  addr   print the host address of the loader's gRPC port (--agent: the agent's)
  logs   print the loader's log and the console log
  down   power the guest off (then kill qemu); safe to repeat; --clean also
         removes the VM's state folder (logs, initramfs)
Environment: FILEWATCHER_CACHE (see test/vm/cache.sh); state in <cache>/vm/NAME.
EOF
}

# state_dir NAME: where a VM's pid, ports and logs live.
state_dir() {
	case "$1" in
	'' | *[!A-Za-z0-9._-]*) die "bad --name '$1' (letters, digits, . _ - only)" ;;
	esac
	echo "$vmroot/$1"
}

# qemu_pid STATE: the pid of the VM's qemu if it runs, else nothing. The
# command line must name this state dir, so a reused pid is never taken for it.
qemu_pid() {
	local pid
	pid=$(cat "$1/qemu.pid" 2>/dev/null) || return 0
	[ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 0
	tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$1/qemu.pid" && echo "$pid"
	return 0
}

host_arch() {
	case "$(uname -m)" in
	x86_64) echo amd64 ;;
	aarch64) echo arm64 ;;
	*) uname -m ;;
	esac
}

# agent_host: path of the agent built for this host (built when missing).
agent_host() {
	local bin=$vmroot/bin/agent-host fd
	if [ ! -x "$bin" ]; then
		mkdir -p "$vmroot"
		exec {fd}>"$vmroot/.build.lock"
		flock "$fd"
		[ -x "$bin" ] || build_go "$(host_arch)" "$bin" ./test/vm/agent >&2
		exec {fd}>&-
	fi
	echo "$bin"
}

# build_go GOARCH OUT PKG: a static binary.
build_go() {
	mkdir -p "$(dirname "$2")"
	(cd "$repo" && CGO_ENABLED=0 GOARCH=$1 go build -trimpath -ldflags='-s -w' -o "$2" "$3") ||
		die "go build $3 (GOARCH=$1) failed"
}

cmd_up() {
	local series='' arch=$(host_arch) name=default loader=1 module=1 loader_args='' kernel_args='' timeout=300 ttl=0
	local adds=() shares=() # shares: HOST_DIR:TAG, read by make_initramfs and boot
	while [ $# -gt 0 ]; do
		case "$1" in
		--kernel) series=${2:?--kernel needs a value}; shift 2 ;;
		--arch) arch=${2:?--arch needs a value}; shift 2 ;;
		--name) name=${2:?--name needs a value}; shift 2 ;;
		--add) adds+=("${2:?--add needs HOST_PATH[:GUEST_PATH]}"); shift 2 ;;
		--no-loader) loader=0; shift ;;
		--no-module) module=0; loader=0; shift ;;
		--loader-args) loader_args=${2?--loader-args needs a value}; shift 2 ;;
		--kernel-args) kernel_args=${2?--kernel-args needs a value}; shift 2 ;;
		--timeout) timeout=${2:?--timeout needs seconds}; shift 2 ;;
		--ttl) ttl=${2:?--ttl needs seconds}; shift 2 ;;
		--share)
			[[ "${2:-}" =~ ^/[^:]*:[A-Za-z0-9_]+$ ]] || die "up: --share wants /HOST_DIR:TAG (TAG: letters, digits, _)"
			[ -d "${2%:*}" ] || die "up: --share $2: ${2%:*} is not a directory"
			shares+=("$2")
			shift 2
			;;
		*) die "up: unknown argument '$1' (see vm.sh help)" ;;
		esac
	done
	[ -n "$series" ] || die "up: --kernel is required: a series (test/vm/kernels.sh list) or a Debian cloud kernel release"
	case "$arch" in amd64 | arm64) ;; *) die "up: unsupported --arch '$arch' (amd64, arm64)" ;; esac
	[[ "$timeout" =~ ^[0-9]+$ ]] || die "up: --timeout wants whole seconds, got '$timeout'"
	[[ "$ttl" =~ ^[0-9]+$ ]] || die "up: --ttl wants whole seconds, got '$ttl'"

	local state
	state=$(state_dir "$name")
	mkdir -p "$state"
	# One up per name at a time; the lock is held until this script exits.
	exec {lockfd}>"$state/.lock"
	flock -n "$lockfd" || die "up: another 'vm.sh up --name $name' is running"
	[ -z "$(qemu_pid "$state")" ] || die "up: VM '$name' is already up (vm.sh down --name $name first)"
	rm -f "$state/qemu.pid" "$state/ports" "$state/console.log" "$state/build.log"

	local kdir release
	kdir=$("$here/kernels.sh" fetch --kernel "$series" --arch "$arch") || die "up: cannot fetch kernel $series ($arch)"
	release=$(cat "$kdir/release")
	say "kernel $release ($arch)"

	local out=$vmroot/build/$arch
	local kmod_dir=$vmroot/build/$arch/$release/kmod
	# Builds share outputs between VMs: one at a time.
	exec {buildfd}>"$vmroot/.build.lock"
	flock "$buildfd"
	if [ "$module" = 1 ]; then
		build_module "$kdir" "$kmod_dir" "$state/build.log"
	fi
	# The loader is in every guest with the module: --no-loader only does not
	# start it (start-loader does, later).
	if [ "$module" = 1 ]; then
		[ -d "$repo/loader-go/cmd/filewatcher-loader" ] ||
			die "up: no loader-go/cmd/filewatcher-loader to build (use --no-module to boot without it)"
		say "building filewatcher-loader ($arch)"
		build_go "$arch" "$out/filewatcher-loader" ./loader-go/cmd/filewatcher-loader
	fi
	say "building guest agent ($arch)"
	build_go "$arch" "$out/agent" ./test/vm/agent
	build_go "$(host_arch)" "$vmroot/bin/agent-host" ./test/vm/agent

	# Still under the build lock: another up of the same kernel would rebuild
	# (rm -rf) the module and rewrite the binaries while they are copied.
	local initrd=$state/initramfs.cpio
	make_initramfs "$kdir" "$arch" "$state" "$initrd" "$module" "$loader" "$loader_args" "$kmod_dir" "$out" "${adds[@]}"
	flock -u "$buildfd"

	boot "$kdir" "$arch" "$state" "$initrd" "$ttl" "$kernel_args"
	local grpc_port agent_port
	read -r grpc_port agent_port <"$state/ports"
	local pid
	pid=$(qemu_pid "$state")
	# From here on a failure must not leave qemu behind.
	trap 'stop_qemu "$state" >/dev/null 2>&1 || true' EXIT
	trap 'exit 130' INT TERM
	local wait_args=(--agent "127.0.0.1:$agent_port" --pid "$pid" --console "$state/console.log" --timeout "${timeout}s")
	if [ "$loader" = 1 ]; then wait_args+=(--grpc "127.0.0.1:$grpc_port"); fi
	if ! "$vmroot/bin/agent-host" wait "${wait_args[@]}"; then
		boot_failed "$state" "$agent_port" "$loader"
	fi
	trap - EXIT INT TERM
	echo "127.0.0.1:$grpc_port"
}

# build_module KDIR DIR LOG: build kmod/ for this kernel in a folder of its
# own, with the kernel's own toolchain (build-module.sh).
build_module() {
	local kdir=$1 dir=$2 log=$3
	[ -f "$repo/kmod/Makefile" ] || die "up: no kmod/Makefile to build the module from (use --no-module to boot without it)"
	if ! "$here/build-module.sh" --kernel-dir "$kdir" --out "$dir" >"$log" 2>&1; then
		tail -n 30 "$log" >&2
		die "up: building the module for $(cat "$kdir/release") failed (log: $log)"
	fi
	say "$(grep '^build-module.sh: building' "$log" | sed 's/^build-module.sh: //')"
}

# make_initramfs KDIR ARCH STATE OUT MODULE LOADER LOADER_ARGS KMOD_DIR BIN_DIR [ADD...]
make_initramfs() {
	local kdir=$1 arch=$2 state=$3 out=$4 module=$5 loader=$6 loader_args=$7 kmod_dir=$8 bin=$9
	shift 9
	local root=$state/initramfs
	rm -rf "$root"
	mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,usr/local/bin,dev,proc,sys,tmp,root,etc,var/log,filewatcher,lib/modules/filewatcher-vm}
	cp "$kdir/busybox" "$root/bin/busybox"
	ln -s busybox "$root/bin/sh"
	cp "$here/guest/init.sh" "$root/init"
	chmod 0755 "$root/init"
	# The kernel opens /dev/console for init before devtmpfs is mounted.
	if [ "$(id -u)" = 0 ]; then mknod -m 600 "$root/dev/console" c 5 1; fi
	printf 'root:x:0:0:root:/root:/bin/sh\n' >"$root/etc/passwd"
	printf 'root:x:0:\n' >"$root/etc/group"

	local mods want=("${net_modules[@]}" overlay) tags='' share
	if [ ${#shares[@]} -gt 0 ]; then want+=(9p 9pnet_virtio); fi
	for share in "${shares[@]}"; do tags+="${share##*:} "; done
	mods=$("$here/kernels.sh" modules --kernel "$(cat "$kdir/release")" --arch "$arch" \
		--into "$root/lib/modules/filewatcher-vm" "${want[@]}" | tr '\n' ' ') ||
		die "up: cannot resolve ${want[*]} in $(cat "$kdir/release")"

	if [ "$module" = 1 ]; then
		cp "$kmod_dir/filewatcher.ko" "$root/filewatcher/filewatcher.ko"
		cp "$bin/filewatcher-loader" "$root/filewatcher/filewatcher-loader"
		cp "$here/guest/start-loader.sh" "$root/filewatcher/start-loader"
		chmod 0755 "$root/filewatcher/start-loader"
	fi
	cp "$bin/agent" "$root/filewatcher/agent"

	local add host guest
	for add in "$@"; do
		host=${add%%:*}
		guest=/usr/local/bin/$(basename "$host")
		if [ "$host" != "$add" ]; then guest=${add#*:}; fi
		[ -e "$host" ] || die "up: --add $add: $host does not exist"
		case "$guest" in /*) ;; *) die "up: --add $add: the guest path must be absolute" ;; esac
		mkdir -p "$root$(dirname "$guest")"
		cp -a "$host" "$root$guest"
	done

	# Single quotes survive anything but a single quote, which is spelled '\''.
	local quoted=${loader_args//\'/\'\\\'\'}
	cat >"$root/filewatcher/vm.conf" <<EOF
FW_NET_MODULES='${mods% }'
FW_SHARES='${tags% }'
FW_AGENT_PORT=$guest_agent_port
FW_LOADER_PORT=$guest_grpc_port
FW_START_LOADER=$loader
FW_LOADER_ARGS='$quoted'
EOF
	# Uncompressed: under TCG the kernel unpacks it faster than it inflates gzip.
	(cd "$root" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc -R 0:0 --quiet) >"$out" ||
		die "up: cpio failed"
}

# boot KDIR ARCH STATE INITRD TTL KERNEL_ARGS: start qemu in the background
# with fresh loopback ports; retry when a port was taken meanwhile.
boot() {
	local kdir=$1 arch=$2 state=$3 initrd=$4 ttl=$5 kernel_args=$6
	local qemu console machine=() cpu=max accel=tcg
	case "$arch" in
	amd64)
		qemu=qemu-system-x86_64 console=ttyS0
		# qemu 7.2's TCG gets CMPXCHG16B wrong often enough that 6.12's SLUB
		# (this_cpu_try_cmpxchg128) corrupts its lists and panics in most boots;
		# without cx16 the kernel takes its locked fallback and boots every time.
		cpu=max,cx16=off
		# With one host thread per vCPU (MTTCG), qemu 7.2 lets a vCPU run
		# code another vCPU has just patched in its old form: x86 Linux
		# patches static branches (every tracepoint switched on or off) with
		# a temporary int3, and a stale int3 hit after the patch is done is
		# an "Oops: int3". Seen on 6.12 without our module within seconds of
		# switching sched_process_exec on and off under a create loop, and
		# on 6.12, 7.2 and 7.3 with it (in __schedule, ttwu_do_activate,
		# fw_ret). One thread for both vCPUs keeps the guest SMP and
		# coherent: 600 switches, no oops. arm64 patches single branch
		# instructions, which is safe either way, and keeps MTTCG.
		accel=tcg,thread=single
		;;
	arm64) qemu=qemu-system-aarch64 console=ttyAMA0 machine=(-M virt) ;;
	esac
	command -v "$qemu" >/dev/null || die "up: $qemu not found (run make setup)"
	local try grpc_port agent_port
	for try in 1 2 3 4 5; do
		{ read -r grpc_port; read -r agent_port; } < <("$vmroot/bin/agent-host" ports 2)
		local cmd=("$qemu" "${machine[@]}" -accel "$accel" -cpu "$cpu" -m 1024 -smp 2 -nographic -no-reboot
			-kernel "$kdir/vmlinuz" -initrd "$initrd"
			-append "console=$console quiet panic=-1${kernel_args:+ $kernel_args}"
			-netdev "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:$grpc_port-:$guest_grpc_port,hostfwd=tcp:127.0.0.1:$agent_port-:$guest_agent_port"
			-device virtio-net-pci,netdev=n0
			-pidfile "$state/qemu.pid")
		local share
		for share in "${shares[@]}"; do
			cmd+=(-virtfs "local,path=${share%:*},mount_tag=${share##*:},security_model=none,id=${share##*:}")
		done
		if [ "$ttl" -gt 0 ]; then cmd=(timeout --kill-after=10 "$ttl" "${cmd[@]}"); fi
		rm -f "$state/qemu.pid"
		say "booting: ${cmd[*]}"
		# Its own session: a Ctrl-C meant for a test runner does not reach it.
		# qemu must not inherit (and so hold) vm.sh's lock files.
		setsid "${cmd[@]}" </dev/null >"$state/console.log" 2>&1 {lockfd}>&- {buildfd}>&- &
		local launcher=$! i
		for i in $(seq 1 100); do
			[ -s "$state/qemu.pid" ] && break
			kill -0 "$launcher" 2>/dev/null || break
			sleep 0.05
		done
		if [ -s "$state/qemu.pid" ] && [ -n "$(qemu_pid "$state")" ]; then
			echo "$grpc_port $agent_port" >"$state/ports"
			return 0
		fi
		wait "$launcher" 2>/dev/null || true
		if grep -q 'Could not set up host forwarding rule' "$state/console.log"; then
			say "a chosen port was taken meanwhile; retrying with new ports"
			continue
		fi
		tail -n 20 "$state/console.log" >&2
		die "up: qemu did not start (log: $state/console.log)"
	done
	die "up: could not bind free loopback ports for qemu after 5 tries"
}

# boot_failed STATE AGENT_PORT LOADER: explain a failed boot, then stop qemu.
boot_failed() {
	local state=$1 agent_port=$2 loader=$3
	echo "---- console log tail ($state/console.log) ----" >&2
	tail -n 40 "$state/console.log" >&2 || true
	if [ "$loader" = 1 ]; then
		echo "---- loader log (guest /var/log/filewatcher-loader.log) ----" >&2
		"$vmroot/bin/agent-host" exec --addr "127.0.0.1:$agent_port" --timeout 5s -- \
			tail -n 40 /var/log/filewatcher-loader.log >&2 2>&1 || echo "(agent unreachable)" >&2
	fi
	stop_qemu "$state" >&2 || true
	die "up: the VM did not come up (see above)"
}

# stop_qemu STATE: power the guest off cleanly, then make sure qemu is gone.
stop_qemu() {
	local state=$1 pid agent_port
	pid=$(qemu_pid "$state")
	if [ -z "$pid" ]; then
		rm -f "$state/qemu.pid"
		return 0
	fi
	if [ -f "$state/ports" ]; then
		read -r _ agent_port <"$state/ports"
		"$(agent_host)" exec --addr "127.0.0.1:$agent_port" --timeout 5s -- poweroff -f >/dev/null 2>&1 || true
	fi
	local i
	for i in $(seq 1 50); do
		[ -n "$(qemu_pid "$state")" ] || break
		sleep 0.1
	done
	if [ -n "$(qemu_pid "$state")" ]; then
		say "qemu $pid still running after poweroff; killing it"
		kill -TERM "$pid" 2>/dev/null || true
		for i in $(seq 1 30); do
			[ -n "$(qemu_pid "$state")" ] || break
			sleep 0.1
		done
		[ -z "$(qemu_pid "$state")" ] || kill -KILL "$pid" 2>/dev/null || true
	fi
	rm -f "$state/qemu.pid"
}

# common_name ARGS: parse --name, leave the rest in $rest.
parse_name() {
	name=default
	rest=()
	while [ $# -gt 0 ]; do
		case "$1" in
		--name) name=${2:?--name needs a value}; shift 2 ;;
		--) rest+=("$@"); break ;;
		*) rest+=("$1"); shift ;;
		esac
	done
}

# running_state: the state dir of a running VM $name, or die.
running_state() {
	local state
	state=$(state_dir "$name")
	[ -n "$(qemu_pid "$state")" ] || die "VM '$name' is not running (vm.sh up --name $name first)"
	echo "$state"
}

cmd_exec() {
	local name rest
	parse_name "$@"
	local state agent_port
	state=$(running_state)
	read -r _ agent_port <"$state/ports"
	exec "$(agent_host)" exec --addr "127.0.0.1:$agent_port" "${rest[@]}"
}

cmd_addr() {
	local name rest
	parse_name "$@"
	local state grpc_port agent_port
	state=$(running_state)
	read -r grpc_port agent_port <"$state/ports"
	case "${rest[*]-}" in
	'') echo "127.0.0.1:$grpc_port" ;;
	--agent) echo "127.0.0.1:$agent_port" ;;
	*) die "addr: unknown argument '${rest[*]}'" ;;
	esac
}

cmd_logs() {
	local name rest
	parse_name "$@"
	[ ${#rest[@]} -eq 0 ] || die "logs: unknown argument '${rest[*]}'"
	local state agent_port
	state=$(state_dir "$name")
	if [ -n "$(qemu_pid "$state")" ]; then
		read -r _ agent_port <"$state/ports"
		echo "==== loader log (guest /var/log/filewatcher-loader.log) ===="
		"$(agent_host)" exec --addr "127.0.0.1:$agent_port" --timeout 10s -- \
			cat /var/log/filewatcher-loader.log 2>&1 || echo "(no loader log)"
	else
		echo "==== VM '$name' is not running: no loader log ===="
	fi
	echo "==== console ($state/console.log) ===="
	cat "$state/console.log" 2>/dev/null || echo "(no console log)"
}

cmd_down() {
	local name rest clean=0 a
	parse_name "$@"
	for a in "${rest[@]}"; do
		case "$a" in
		--clean) clean=1 ;;
		*) die "down: unknown argument '$a'" ;;
		esac
	done
	local state
	state=$(state_dir "$name")
	[ -d "$state" ] || return 0
	stop_qemu "$state"
	if [ "$clean" = 1 ]; then rm -rf "$state"; fi
}

cmd=${1:-help}
[ $# -gt 0 ] && shift
case "$cmd" in
up) cmd_up "$@" ;;
exec) cmd_exec "$@" ;;
addr) cmd_addr "$@" ;;
logs) cmd_logs "$@" ;;
down) cmd_down "$@" ;;
help | -h | --help) usage ;;
*)
	usage >&2
	die "unknown command '$cmd'"
	;;
esac
