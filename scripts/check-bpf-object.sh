#!/usr/bin/env bash
# check-bpf-object.sh — `make lint`: the committed BPF object and its Go
# bindings (loader-go/internal/bpfobj) must be what bpf/filewatcher.bpf.c
# compiles to. It regenerates them (go generate: bpf2go with this machine's
# clang, the Debian one make setup installs) and compares; the committed
# files are put back either way.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
dir=loader-go/internal/bpfobj
files=(filewatcher_bpfel.go filewatcher_bpfel.o)
tmp=$(mktemp -d)
trap 'for f in "${files[@]}"; do cp "$tmp/$f" "$dir/$f"; done; rm -rf "$tmp"' EXIT
for f in "${files[@]}"; do cp "$dir/$f" "$tmp/$f"; done
go generate "./$dir"
stale=()
for f in "${files[@]}"; do
	cmp -s "$tmp/$f" "$dir/$f" || stale+=("$dir/$f")
done
if [ ${#stale[@]} -gt 0 ]; then
	echo "check-bpf-object: ${stale[*]} do not match bpf/filewatcher.bpf.c: run go generate ./$dir and commit the result" >&2
	exit 1
fi
echo "bpf: committed object matches bpf/filewatcher.bpf.c"
