#!/usr/bin/env bash
# demo.sh — `make demo`: the whole pipeline with one command.
#
# As root it first runs the loader natively with --probe auto: the module
# where it loads (built here when the running kernel's headers are
# installed), else the eBPF-only probe, which needs no module. Only where
# neither probe can run here (not root, no BTF or BPF trampolines, a kernel
# that refuses tracing programs) it boots a Debian 6.1 cloud kernel in qemu
# with the module and the loader, and runs the exporter and Prometheus here on
# 127.0.0.1, fed through a port forward. It says which it chose and why.
# Either way it creates riptides-demo, shows the seed's
#   curl localhost:8080/metrics | grep file_created
# and keeps running until Ctrl-C.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

metrics_port=${DEMO_METRICS_PORT:-8080}
prom_port=${DEMO_PROMETHEUS_PORT:-9090}
kernel=${DEMO_KERNEL:-6.1}
run_dir=$repo/.cache/demo
mkdir -p "$run_dir"

say() { printf '\n== %s\n' "$*" >&2; }
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

for p in "$metrics_port" "$prom_port"; do
	if port_busy "$p"; then
		echo "demo: port $p on 127.0.0.1 is already in use; set DEMO_METRICS_PORT / DEMO_PROMETHEUS_PORT" >&2
		exit 1
	fi
done

pids=()
vm_up=no
cleanup() {
	trap - INT TERM EXIT
	say "stopping"
	for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	[ "$vm_up" = yes ] && test/vm/vm.sh down --name demo >/dev/null 2>&1 || true
}
trap cleanup INT TERM EXIT

wait_http() { # url what
	for _ in $(seq 1 100); do
		curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
		sleep 0.2
	done
	echo "demo: $2 did not come up at $1" >&2
	return 1
}

# try_native starts the loader here and waits until it serves (0) or exits
# (1, with why set to what it said).
why=
try_native() {
	if [ "$(id -u)" -ne 0 ]; then
		why="not root: loading a probe needs root"
		return 1
	fi
	local module_args=()
	if grep -qs '^filewatcher ' /proc/modules; then
		: # loaded already: --probe auto checks and uses it
	elif [ -e /proc/modules ] && [ -e "/lib/modules/$(uname -r)/build/Makefile" ]; then
		make --no-print-directory kmod >&2 && module_args=(--module "$repo/kmod/filewatcher.ko")
	fi
	bin/filewatcher-loader --listen "$loader_addr" "${module_args[@]}" >"$run_dir/loader.log" 2>&1 &
	local pid=$!
	for _ in $(seq 1 150); do
		if grep -q 'msg=ready' "$run_dir/loader.log"; then
			pids+=("$pid")
			return 0
		fi
		if ! kill -0 "$pid" 2>/dev/null; then
			why=$(sed -n 's/.*msg=exiting error=//p' "$run_dir/loader.log" | tail -n 1)
			why=${why#\"}
			why=${why%\"}
			return 1
		fi
		sleep 0.2
	done
	kill "$pid" 2>/dev/null || true
	why="the loader did not get ready in 30 s (log: $run_dir/loader.log)"
	return 1
}

make --no-print-directory loader exporter >&2
loader_addr=unix://$run_dir/loader.sock
if try_native; then
	probe=$(sed -n 's/.*msg="probe chosen" //p' "$run_dir/loader.log" | tail -n 1)
	say "running natively: $probe"
	grep 'not using the kernel module' "$run_dir/loader.log" >&2 || true
	create() { (cd /tmp && touch "$@"); }
	where="the loader runs here ($probe; log: $run_dir/loader.log)"
	dir=/tmp
else
	say "neither probe can run on this host ($why): booting Debian $kernel in qemu (TCG) with the module and the loader"
	loader_addr=$(test/vm/vm.sh up --name demo --kernel "$kernel")
	vm_up=yes
	create() { test/vm/vm.sh exec --name demo -- sh -c 'cd /tmp && touch "$@"' sh "$@"; }
	where="the module and loader run in a qemu guest (kernel $kernel), gRPC forwarded to $loader_addr; 'test/vm/vm.sh exec --name demo -- CMD' runs CMD there"
	dir=/tmp
fi

node exporter/dist/main.js --loader "$loader_addr" --listen "127.0.0.1:$metrics_port" >"$run_dir/exporter.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$metrics_port/readyz" "the exporter"

sed "s/localhost:8080/127.0.0.1:$metrics_port/" deploy/prometheus/prometheus.yml >"$run_dir/prometheus.yml"
cp deploy/prometheus/rules.yml "$run_dir/rules.yml"
prometheus --config.file="$run_dir/prometheus.yml" --storage.tsdb.path="$run_dir/prometheus-data" \
	--web.listen-address="127.0.0.1:$prom_port" >"$run_dir/prometheus.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$prom_port/-/ready" "Prometheus"

say "creating files in $dir: riptides-demo, riptides-1, riptides-2"
create riptides-demo riptides-1 riptides-2
sleep 1

say "curl localhost:$metrics_port/metrics | grep file_created"
curl -fsS "http://127.0.0.1:$metrics_port/metrics" | grep file_created

cat >&2 <<EOF

== filewatcher demo is running (Ctrl-C stops everything)
   $where
   metrics:     http://127.0.0.1:$metrics_port/metrics   (exporter log: $run_dir/exporter.log)
   Prometheus:  http://127.0.0.1:$prom_port/graph?g0.expr=file_created_total
EOF
wait -n "${pids[@]}"
echo "demo: a component exited; see the logs in $run_dir" >&2
exit 1
