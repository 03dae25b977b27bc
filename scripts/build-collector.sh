#!/usr/bin/env bash
# build-collector.sh — build the OpenTelemetry Collector of
# test/fleet/collector/manifest.yaml from the Go module proxy, and print the
# path of the binary.
#
# Usage:
#   scripts/build-collector.sh               build if needed; print the path
#   scripts/build-collector.sh --print-path  print where the binary is (or
#                                            would be); build nothing
#
# Callers do `bin=$(scripts/build-collector.sh)`: the last and only line on
# stdout is the path; progress and errors go to stderr, and any failure exits
# non-zero.
#
# The binary is kept outside the clone, in the cache of test/vm/cache.sh, as
#   $filewatcher_cache/tools/otelcol-<key>/otelcol-filewatcher
# where <key> is a prefix of the sha256 of the manifest: a new clone finds it
# again, and a changed manifest builds anew. When it is there this script
# prints its path at once. The builder (ocb) is installed once into
#   $filewatcher_cache/tools/builder-$builder_version/builder
# A cold build takes about 7 minutes on 2 cores (Go module and build caches
# empty), most of it compiling.
#
# How it builds: the builder's own `go mod tidy` fails for the contrib
# fileexporter (one of its test dependencies is refused by the proxy), so the
# builder only generates the sources (--skip-get-modules --skip-compilation);
# this script writes the go.mod, `go get`s each component at the manifest's
# version (and the confmap providers and otelcol the generated code names),
# checks that those versions are the ones selected, and runs
# `go build -mod=mod -trimpath`. All of that happens in a temporary directory
# in the cache; the finished directory is renamed into place, so a binary at
# the path is always complete. Builds take a lock in the cache, so concurrent
# runs wait for each other and build once.
set -euo pipefail

builder_version=v0.165.0

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
manifest=$repo/test/fleet/collector/manifest.yaml

die() { echo "build-collector.sh: error: $*" >&2; exit 1; }
say() { echo "build-collector.sh: $*" >&2; }

print_path=0
while [ $# -gt 0 ]; do
	case "$1" in
	--print-path) print_path=1; shift ;;
	-h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0" >&2; exit 0 ;;
	*) die "unknown argument '$1' (see the header of $0)" ;;
	esac
done

[ -f "$manifest" ] || die "no manifest at $manifest"
# shellcheck source=../test/vm/cache.sh
. "$repo/test/vm/cache.sh"
tools=$filewatcher_cache/tools
key=$(sha256sum "$manifest" | cut -c1-16)
out_dir=$tools/otelcol-$key
bin=$out_dir/otelcol-filewatcher

if [ "$print_path" = 1 ] || [ -x "$bin" ]; then
	echo "$bin"
	exit 0
fi

command -v go >/dev/null || die "no 'go' on PATH (the Go toolchain builds the collector)"
command -v flock >/dev/null || die "no 'flock' on PATH (util-linux)"

mkdir -p "$tools"
exec {lockfd}>"$tools/.otelcol.lock"
if ! flock -n "$lockfd"; then
	say "another build of the collector is running; waiting for it"
	flock "$lockfd"
fi
if [ -x "$bin" ]; then # built by the run we waited for
	echo "$bin"
	exit 0
fi

step='starting'
tmp=''
cleanup() {
	local rc=$?
	[ -n "$tmp" ] && rm -rf "$tmp"
	if [ "$rc" != 0 ]; then
		echo "build-collector.sh: error: FAILED while $step (exit $rc); nothing was installed at $out_dir" >&2
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Build only what the manifest names, the same way wherever this runs.
export GOWORK=off CGO_ENABLED=0 GOFLAGS=-buildvcs=false
start=$(date +%s)

builder=$tools/builder-$builder_version/builder
if [ ! -x "$builder" ]; then
	step="installing the collector builder $builder_version"
	say "$step into $(dirname "$builder") (about a minute)"
	GOBIN=$(dirname "$builder") go install "go.opentelemetry.io/collector/cmd/builder@$builder_version" >&2
	[ -x "$builder" ] || die "go install put no builder at $builder"
fi

say "building $(basename "$bin") for manifest key $key (cold: about 7 minutes, warm Go caches: 20 s)"
tmp=$(mktemp -d "$tools/.otelcol-$key.XXXXXX")
src=$tmp/src
mkdir "$src"

step='generating the sources with the builder'
grep -q '^dist:' "$manifest" || die "$manifest has no 'dist:' section"
! grep -q 'output_path:' "$manifest" || die "$manifest sets output_path: leave it out, this script chooses it"
sed "/^dist:/a\\  output_path: $src" "$manifest" >"$tmp/manifest.yaml"
"$builder" --config "$tmp/manifest.yaml" --skip-get-modules --skip-compilation >&2
[ -f "$src/main.go" ] && [ -f "$src/components.go" ] || die "the builder generated no main.go/components.go in $src"

# The modules to require: each component of the manifest, the confmap
# providers the generated main.go names (with their versions), and otelcol of
# the builder's release.
step='listing the modules to require'
component_mods=$(sed -n 's/^[[:space:]]*-[[:space:]]*gomod:[[:space:]]*"\{0,1\}\([^ "]*\) \(v[^ "]*\)"\{0,1\}[[:space:]]*$/\1 \2/p' "$manifest" | sort -u)
mods=$({
	echo "$component_mods"
	grep -ohE '"go\.opentelemetry\.io/collector/confmap/provider/[a-z]+ v[^"]+"' "$src/main.go" | tr -d '"'
	echo "go.opentelemetry.io/collector/otelcol $builder_version"
} | sort -u)
n_components=$(grep -cE '^[[:space:]]*-[[:space:]]*gomod:' "$manifest")
n_parsed=$(grep -c . <<<"$component_mods" || true)
[ "$n_components" = "$n_parsed" ] || die "could read only $n_parsed of the $n_components 'gomod:' lines of $manifest (want '- gomod: MODULE vVERSION')"
grep -q 'confmap/provider/' <<<"$mods" || die "found no confmap providers in the generated main.go"

step='writing go.mod and getting the modules (go get)'
(cd "$src" && go mod init otelcol-filewatcher >/dev/null 2>&1) || die "go mod init failed in $src"
get_args=()
while read -r mod ver; do get_args+=("$mod@$ver"); done <<<"$mods"
say "go get ${#get_args[@]} modules"
(cd "$src" && go get "${get_args[@]}" >&2)

# What Go selected must be what the manifest asked for: a component that pulls
# in a newer version of another one would make the binary differ from its
# manifest without a word.
step='checking the selected module versions'
bad=''
while read -r mod ver; do
	got=$(cd "$src" && go list -m -f '{{.Version}}' "$mod")
	[ "$got" = "$ver" ] || bad+=" $mod (asked $ver, selected $got)"
done <<<"$mods"
[ -z "$bad" ] || die "module versions differ from the manifest:$bad"

step='compiling the collector (go build)'
say "go build (the long part)"
mkdir "$tmp/out"
(cd "$src" && go build -mod=mod -trimpath -ldflags='-s -w' -o "$tmp/out/otelcol-filewatcher" . >&2)

step='checking the built binary'
components=$("$tmp/out/otelcol-filewatcher" components 2>&1) || die "'otelcol-filewatcher components' failed: $components"
# Every module of the manifest must be there, at its version (the component
# names are the collector's business: v0.165 calls them otlp_http,
# prometheus_remote_write, file_storage, ...).
while read -r mod ver; do
	grep -qxE "[[:space:]]*module: $mod $ver" <<<"$components" ||
		die "the built collector has no component from $mod $ver; its 'components' output: $components"
done <<<"$component_mods"

step="installing into $out_dir"
cp "$manifest" "$tmp/out/manifest.yaml"
cp "$src/go.mod" "$src/go.sum" "$tmp/out/"
chmod 0755 "$tmp/out/otelcol-filewatcher"
mv -T "$tmp/out" "$out_dir"
say "built in $(($(date +%s) - start)) s: $bin ($(du -h "$bin" | cut -f1))"
echo "$bin"
