#!/usr/bin/env bash
# build-helm.sh — the tools test/deploy/helm-check.sh validates the Helm chart
# (deploy/helm/filewatcher) with, built once into the project's cache
# (test/vm/cache.sh: outside the clone, so a new clone finds them again):
#
#   <cache>/tools/helm-v4.3.2/helm
#       Helm built from source through the Go module proxy
#       (go install helm.sh/helm/v4/cmd/helm@v4.3.2: ~8 min cold on 2 cores)
#   <cache>/tools/kubernetes-validate-1.37.0/
#       a Python venv with PyPI kubernetes-validate 1.37.0, which ships the
#       OpenAPI schemas of Kubernetes 1.25-1.37 (~110 MB) and runs offline;
#       run it as <dir>/kubernetes-validate (a wrapper around the venv's python)
#
# Prints, on stdout, the two paths as shell assignments for eval:
#   helm=/…/helm-v4.3.2/helm
#   kubernetes_validate=/…/kubernetes-validate-1.37.0/kubernetes-validate
# Messages go to stderr. Warm (both present) it only checks two files.
#
# Idempotent and safe to run concurrently: each tool is built under a flock of
# its own, in a temporary directory next to its final one, which is renamed
# into place only once complete, so a reader never sees half a tool and an
# interrupted build leaves only a temporary directory (removed by the next run).
#
# Needs: go (≥ 1.26.0, the go directive of helm v4.3.2; GOTOOLCHAIN=auto fetches a
# newer one through the proxy if needed), python3 with venv and ensurepip
# (Debian: python3-venv), the Go module proxy and PyPI reachable when cold.
# Environment: FILEWATCHER_CACHE (see test/vm/cache.sh); PYTHON (default
# /usr/bin/python3 where it exists, else python3 from PATH).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=test/vm/cache.sh
. "$repo/test/vm/cache.sh"

helm_version=v4.3.2
kv_version=1.37.0

tools=$filewatcher_cache/tools
helm_dir=$tools/helm-$helm_version
kv_dir=$tools/kubernetes-validate-$kv_version

say() { echo "build-helm: $*" >&2; }
die() { echo "build-helm: $*" >&2; exit 1; }

# Removes temporary directories of builds that were interrupted (under the
# tool's lock, so never one that a concurrent build is filling).
clean_stale() { rm -rf "$tools/.$1".tmp.*; }

ensure_helm() {
	[ -x "$helm_dir/helm" ] && return 0
	command -v go >/dev/null || die "go not found (Helm v4.3.2 needs Go ≥ 1.26.0: its go.mod)"
	mkdir -p "$tools"
	local lockfd tmp start=$SECONDS
	exec {lockfd}>"$tools/.helm.lock"
	flock "$lockfd"
	if [ ! -x "$helm_dir/helm" ]; then
		clean_stale "helm-$helm_version"
		tmp=$(mktemp -d "$tools/.helm-$helm_version.tmp.XXXXXX")
		say "building Helm $helm_version from the Go module proxy into $helm_dir (~8 min, once)"
		# Outside any module (the clone's go.mod must not matter), static, no
		# VCS stamping (there is no checkout).
		(cd "$tmp" && GOBIN="$tmp" GOWORK=off GOFLAGS=-buildvcs=false CGO_ENABLED=0 \
			go install -trimpath "helm.sh/helm/v4/cmd/helm@$helm_version") >"$tmp/build.log" 2>&1 ||
			{ cat "$tmp/build.log" >&2; rm -rf "$tmp"; die "go install helm.sh/helm/v4/cmd/helm@$helm_version failed"; }
		"$tmp/helm" version >/dev/null 2>&1 || { rm -rf "$tmp"; die "the built helm does not run"; }
		rm -f "$tmp/build.log"
		chmod 0755 "$tmp"
		mv -T "$tmp" "$helm_dir"
		say "built $helm_dir/helm in $((SECONDS - start)) s"
	fi
	exec {lockfd}>&-
}

ensure_kv() {
	[ -x "$kv_dir/kubernetes-validate" ] && return 0
	local python=${PYTHON:-}
	if [ -z "$python" ]; then
		if [ -x /usr/bin/python3 ]; then python=/usr/bin/python3; else python=python3; fi
	fi
	command -v "$python" >/dev/null || die "$python not found (Debian: apt-get install python3 python3-venv)"
	"$python" -c 'import venv, ensurepip' 2>/dev/null ||
		die "$python has no venv/ensurepip module (Debian: apt-get install python3-venv)"
	mkdir -p "$tools"
	local lockfd tmp start=$SECONDS
	exec {lockfd}>"$tools/.kubernetes-validate.lock"
	flock "$lockfd"
	if [ ! -x "$kv_dir/kubernetes-validate" ]; then
		clean_stale "kubernetes-validate-$kv_version"
		tmp=$(mktemp -d "$tools/.kubernetes-validate-$kv_version.tmp.XXXXXX")
		say "installing PyPI kubernetes-validate==$kv_version into a venv at $kv_dir (~1 min, once)"
		{
			"$python" -m venv "$tmp" &&
				"$tmp/bin/python" -m pip install -q --disable-pip-version-check --no-input \
					"kubernetes-validate==$kv_version"
		} >"$tmp/install.log" 2>&1 ||
			{ cat "$tmp/install.log" >&2; rm -rf "$tmp"; die "pip install kubernetes-validate==$kv_version failed"; }
		rm -f "$tmp/install.log"
		# The venv's console scripts have the temporary path in their #! line,
		# but its python finds its site-packages from pyvenv.cfg next to it, so
		# a wrapper that runs the module through bin/python survives the rename.
		cat >"$tmp/kubernetes-validate" <<-'EOF'
			#!/bin/sh
			# kubernetes-validate through this venv's python (relocatable).
			exec "$(dirname "$0")/bin/python" -m kubernetes_validate "$@"
		EOF
		chmod 0755 "$tmp/kubernetes-validate" "$tmp"
		"$tmp/kubernetes-validate" --version >/dev/null 2>&1 ||
			{ rm -rf "$tmp"; die "the installed kubernetes-validate does not run"; }
		mv -T "$tmp" "$kv_dir"
		"$kv_dir/kubernetes-validate" --version >/dev/null 2>&1 ||
			die "kubernetes-validate does not run after moving the venv into place"
		say "installed $kv_dir in $((SECONDS - start)) s"
	fi
	exec {lockfd}>&-
}

ensure_kv
ensure_helm
printf 'helm=%q\nkubernetes_validate=%q\n' "$helm_dir/helm" "$kv_dir/kubernetes-validate"
