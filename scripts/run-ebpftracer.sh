#!/usr/bin/env bash
# run-ebpftracer.sh RUN_DIR — the seed's `make run-ebpftracer`: load the module
# and the eBPF program (filewatcher-loader) and serve Prometheus metrics on
# :8080 (filewatcher-exporter), until Ctrl-C. Needs a host that can load
# modules (root, module support, headers for `make kmod`).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
run_dir=${1:?usage: run-ebpftracer.sh RUN_DIR}

if [ "$(id -u)" -ne 0 ]; then
	echo "run-ebpftracer: the loader needs root (it loads a kernel module and an eBPF program): run with sudo" >&2
	exit 1
fi
if [ ! -e /proc/modules ]; then
	echo "run-ebpftracer: this kernel cannot load modules (no /proc/modules); try 'make demo', which uses a VM" >&2
	exit 1
fi
if ! grep -q '^filewatcher ' /proc/modules && [ ! -f "$repo/kmod/filewatcher.ko" ]; then
	make -C "$repo" kmod
fi

mkdir -p "$run_dir"
sock=unix://$run_dir/loader.sock
module_args=()
grep -q '^filewatcher ' /proc/modules || module_args=(--module "$repo/kmod/filewatcher.ko")

"$repo/bin/filewatcher-loader" --listen "$sock" "${module_args[@]}" &
loader=$!
node "$repo/exporter/dist/main.js" --loader "$sock" &
exporter=$!
trap 'kill -TERM $exporter $loader 2>/dev/null; wait' INT TERM EXIT
echo "run-ebpftracer: loader on $sock, metrics on http://localhost:8080/metrics (Ctrl-C to stop)" >&2
wait -n $loader $exporter
