#!/usr/bin/env bash
# Checks the filewatcher API: buf lint (proto/buf.yaml), buf breaking against
# the committed v1 baseline (proto/v1-baseline.json), and, when protoc is
# installed, that the checked-in Go code is what ./proto/generate.sh makes.
#
#   ./proto/check.sh                    # the checks (make test runs them)
#   ./proto/check.sh --update-baseline  # after an additive change: record it
#
# buf is run from the Go module proxy at a pinned version: the first run
# downloads and builds it (a few minutes), later runs use Go's cache.
set -euo pipefail

BUF_VERSION=v1.75.0

cd "$(dirname "$0")/.."
buf() { go run "github.com/bufbuild/buf/cmd/buf@${BUF_VERSION}" "$@"; }

if [[ "${1:-}" == --update-baseline ]]; then
	buf build proto --exclude-source-info -o proto/v1-baseline.json
	echo "proto/v1-baseline.json updated: commit it with the .proto change"
	exit 0
fi

buf lint proto
echo "proto: buf lint ok"
buf breaking proto --against proto/v1-baseline.json
echo "proto: buf breaking against proto/v1-baseline.json ok"

if command -v protoc >/dev/null; then
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	cp -r proto "$tmp/"
	"$tmp/proto/generate.sh" >/dev/null
	for f in filewatcher/v1/filewatcher.pb.go filewatcher/v1/filewatcher_grpc.pb.go; do
		if ! cmp -s "proto/$f" "$tmp/proto/$f"; then
			echo "proto/$f is stale: run ./proto/generate.sh" >&2
			exit 1
		fi
	done
	echo "proto: generated Go code up to date"
else
	echo "proto: protoc not installed, generated code not checked"
fi
