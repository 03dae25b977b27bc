#!/usr/bin/env bash
# setup.sh — install everything filewatcher needs to build, run and test on
# Debian 12 (bookworm). Idempotent: it installs only what is missing, so
# `make test` and `make demo` can call it every time.
#
#   apt   system packages (compilers, qemu, busybox, prometheus, ...)
#   go    Go modules of go.mod (go mod download)
#   npm   the exporter's packages (npm ci, from package-lock.json)
#   tools the OpenTelemetry Collector, Helm and kubernetes-validate, built
#         from the Go module proxy and PyPI into the cache (below)
#
# Guest kernels for the VM tests are NOT installed here: test/vm/kernels.sh
# fetches them into the project's own cache (~/.cache/filewatcher, see
# test/vm/cache.sh), never into /boot; modules for kernels of other Debian
# releases are built in chroots there (test/vm/chroot.sh, debootstrap below).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

# Packages, one per reason:
apt_packages=(
	make gcc libc6-dev          # build the module and tools
	dwarves                     # pahole: module BTF for 6.12 headers (they ship vmlinux)
	kmod                        # modinfo/insmod for make insmod
	xz-utils cpio               # unpack guest kernel modules, build initramfs
	busybox-static              # (host copy; guests use the cached one per arch)
	qemu-system-x86             # boot Debian kernels for the kernel e2e tests
	qemu-system-arm             # arm64 guests
	clang llvm libbpf-dev       # regenerate the eBPF object (make generate)
	protobuf-compiler           # regenerate protobuf code (make generate)
	prometheus                  # real Prometheus + promtool for e2e tests
	python3-grpcio              # a second real gRPC client (C core) in the access tests
	debootstrap e2fsprogs       # systemd guest root filesystem; build chroots (test/vm/chroot.sh)
	systemd                     # systemd-analyze verify of the units
	docker-compose              # validate docker-compose.yml (no engine needed)
	bpftrace linux-perf         # make bench: the peer on the same tracepoint, the loader's profile
	inotify-tools               # make bench: fsnotifywait, the fanotify peer (what a user would try first)
	python3-venv                # kubernetes-validate's venv (scripts/build-helm.sh)
	curl ca-certificates git
)

# The cross-compiler for the other architecture the VM tests boot (on an
# arm64 host gcc-aarch64-linux-gnu is only a virtual package of gcc).
case "$(dpkg --print-architecture)" in
amd64) apt_packages+=(gcc-aarch64-linux-gnu) ;;
arm64) apt_packages+=(gcc-x86-64-linux-gnu qemu-system-x86) ;;
esac

missing=()
for p in "${apt_packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

sudo=
if [ "$(id -u)" -ne 0 ]; then
	command -v sudo >/dev/null || { echo "setup: not root and no sudo: install ${missing[*]} by hand" >&2; exit 1; }
	sudo=sudo
fi

if [ ${#missing[@]} -gt 0 ]; then
	echo "setup: installing ${missing[*]}" >&2
	$sudo apt-get update -qq
	# --no-install-recommends keeps qemu from pulling a desktop's worth of packages.
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Headers of the running kernel, for building the module natively (make,
# make insmod). Only where Debian ships them; elsewhere the VM harness builds
# the module against cached guest kernels.
kver=$(uname -r)
if [ ! -e "/lib/modules/$kver/build" ] && apt-cache show "linux-headers-$kver" >/dev/null 2>&1; then
	echo "setup: installing linux-headers-$kver" >&2
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "linux-headers-$kver" >/dev/null
fi

command -v go >/dev/null || { echo "setup: Go is required (https://go.dev/dl), not found in PATH" >&2; exit 1; }
command -v npm >/dev/null || { echo "setup: Node.js 20+ with npm is required, not found in PATH" >&2; exit 1; }

go mod download

if [ -f package-lock.json ]; then
	# npm ci only when the lock file changed since the last install.
	stamp=node_modules/.filewatcher-lock
	if [ ! -f "$stamp" ] || ! cmp -s package-lock.json "$stamp"; then
		npm ci --no-audit --no-fund --loglevel=error
		cp package-lock.json "$stamp"
	fi
fi
# Tools built from the Go module proxy and PyPI, once, into the cache outside
# the clone (test/vm/cache.sh); warm, each is a check of one path:
#   the OpenTelemetry Collector the fleet tests run (~7 min cold)
#   Helm and kubernetes-validate, which check the Helm chart (~10 min cold)
# Cold, the two build side by side (~10.5 min together on 2 cores, against
# ~15 one after the other); either failing fails setup.
scripts/build-collector.sh >/dev/null &
collector=$!
scripts/build-helm.sh >/dev/null &
helm=$!
tools_ok=true
wait "$collector" || { echo "setup: building the OpenTelemetry Collector failed (scripts/build-collector.sh)" >&2; tools_ok=false; }
wait "$helm" || { echo "setup: building Helm and kubernetes-validate failed (scripts/build-helm.sh)" >&2; tools_ok=false; }
$tools_ok || exit 1
echo "setup: ok" >&2
