#!/usr/bin/env bash
# run.sh — build what the benchmarks need and run them (issue 6).
#
#   bench/run.sh                 every measurement, ~15-20 min; writes BENCHMARKS.md
#   bench/run.sh --smoke         each piece once with tiny counts, < ~1.5 min; checks the
#                                machinery (numbers sane, reconciliation exact), never timing
#   bench/run.sh --only userspace,exporter,otlp,kernel   a subset (the report has only those)
#   bench/run.sh --kernel 6.12   guest kernel of the kernel path (default 6.1)
#
# Needs: go, node + npm (the exporter built from exporter/src), gcc with a
# static libc (libc6-dev), qemu-system-x86 and what test/vm/vm.sh needs, the
# OpenTelemetry Collector of scripts/build-collector.sh (make setup builds it);
# optional: perf (linux-perf) for the loader profile, bpftrace and
# fsnotifywait (inotify-tools) for the peers.
# Logs, profiles and results.json go to .cache/bench/ (.cache/bench-smoke/).
# FWBENCH_LOADER=/path/to/filewatcher-loader uses that (static) binary instead
# of building one.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

work=.cache/bench
for a in "$@"; do
	if [ "$a" = --smoke ]; then work=.cache/bench-smoke; fi
done
mkdir -p "$work"

say() { echo "bench: $*" >&2; }

say "building the loader, the storm program, fwopen and the driver"
loader=$work/filewatcher-loader
if [ -n "${FWBENCH_LOADER:-}" ]; then
	loader=$FWBENCH_LOADER # a loader built elsewhere (static: it also runs in the guest)
else
	CGO_ENABLED=0 go build -trimpath -o "$loader" ./loader-go/cmd/filewatcher-loader
fi
gcc -static -O2 -Wall -Wextra -Werror -o "$work/fwstorm" bench/storm/fwstorm.c
CGO_ENABLED=0 go build -trimpath -o "$work/fwopen" ./test/e2e/fwopen
go build -o "$work/fwbench" ./bench/cmd/fwbench

# The exporter as the repository has it: rebuild when a source is newer.
if [ ! -f exporter/dist/main.js ] || [ -n "$(find exporter/src -newer exporter/dist/main.js -print -quit)" ]; then
	say "building the exporter"
	npm run --silent build
fi

exec "$work/fwbench" --repo . --work "$work" --loader "$loader" --storm "$work/fwstorm" --fwopen "$work/fwopen" "$@"
