#!/usr/bin/env bash
# helm-check.sh — offline checks of the Helm chart deploy/helm/filewatcher (no
# cluster, no network once the tools are cached; ~1 min warm):
#
#   1. helm lint --strict, with each value set below (values.schema.json
#      rejects unknown or misspelled values)
#   2. helm template --kube-version V for each value set and each Kubernetes
#      version V of KUBE_VERSIONS, validated by kubernetes-validate --strict
#      against V's schemas (unknown and misspelled fields are errors). It has no
#      schema for CRD kinds and only warns about them (exit 0): any warning
#      fails here, except the ServiceMonitor's, which is validated instead
#      against servicemonitor-v1.schema.json (a strict, hand-written subset of
#      prometheus-operator's CRD)
#   3. rendered facts per value set (helm_facts.py): the loader's capabilities
#      and mounts for each probe mode (probe=ebpf: no SYS_MODULE, no
#      /lib/modules, no tracefs; probe=module: /lib/modules read-only, ...),
#      the exporter unprivileged, OTLP to status.hostIP, the ServiceMonitor
#      selecting the Service, and API-server rules no schema expresses
#   4. self-test, on temporary copies of the chart: a misspelled field in a
#      template, a misspelled field in the ServiceMonitor, a capability leaking
#      into probe=ebpf, and bad values must each make the checks above fail
#
# Tools: Helm v4.3.2 and kubernetes-validate 1.37.0, built once into the
# project's cache by scripts/build-helm.sh (~8 min cold, instant warm). Helm's
# own directories (HELM_CACHE_HOME, HELM_CONFIG_HOME, HELM_DATA_HOME) are a
# temporary directory: no repositories, plugins or registry logins of this
# machine are used, and nothing is left behind.
#
# Usage: test/deploy/helm-check.sh
# Environment: KUBE_VERSIONS (default "1.30 1.37"; kubernetes-validate 1.37.0
# has schemas for 1.25-1.37), FILEWATCHER_CACHE (see test/vm/cache.sh).
# Ends with "N passed, M failed"; exit status 1 if anything failed.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
chart=$repo/deploy/helm/filewatcher
kube_versions=${KUBE_VERSIONS:-1.30 1.37}

tools=$("$repo/scripts/build-helm.sh") || { echo "helm-check: FAIL: scripts/build-helm.sh could not provide the tools" >&2; exit 1; }
eval "$tools"
kv_python=$(dirname "$kubernetes_validate")/bin/python

tmp=$(mktemp -d "${TMPDIR:-/tmp}/filewatcher-helm-check.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
export HELM_CACHE_HOME=$tmp/helm/cache HELM_CONFIG_HOME=$tmp/helm/config HELM_DATA_HOME=$tmp/helm/data
mkdir -p "$HELM_CACHE_HOME" "$HELM_CONFIG_HOME" "$HELM_DATA_HOME" "$tmp/out"

passed=0 failed=0
ok() { passed=$((passed + 1)); echo "helm-check: ok: $*"; }
bad() { failed=$((failed + 1)); echo "helm-check: FAIL: $*"; }

# Value sets: name, then helm --set arguments. Names match helm_facts.py.
sets=(
	"defaults"
	"module|--set probe=module"
	"ebpf|--set probe=ebpf"
	"servicemonitor|--set serviceMonitor.enabled=true --set serviceMonitor.labels.release=prometheus --set serviceMonitor.scrapeTimeout=10s"
	"no-otlp|--set otlp.enabled=false"
	"build|--set module.source=build --set module.build.extraHostPaths={/usr/lib/linux-kbuild-6.1}"
	"least|--set perfEventParanoid=2 --set module.source=loaded --set loader.pinning.enabled=false --set otlp.protocol=grpc --set exporter.serviceLabel=true --set exporter.webConfigSecret=filewatcher-web"
)

# lint CHART NAME ARGS...: helm lint --strict; its output on failure.
lint() {
	local c=$1 name=$2
	shift 2
	if "$helm" lint --strict "$c" "$@" >"$tmp/lint.log" 2>&1; then
		return 0
	fi
	sed 's/^/    /' "$tmp/lint.log"
	return 1
}

# render CHART NAME KUBE_VERSION ARGS...: helm template into $tmp/out/NAME-V.yaml.
render() {
	local c=$1 name=$2 v=$3
	shift 3
	local out=$tmp/out/$name-$v.yaml
	if "$helm" template filewatcher "$c" --namespace filewatcher --kube-version "v$v.0" "$@" >"$out" 2>"$tmp/render.log"; then
		return 0
	fi
	sed 's/^/    /' "$tmp/render.log"
	return 1
}

# validate FILE KUBE_VERSION: kubernetes-validate --strict on a file (not
# stdin, which it reads once per -k: a second -k fails on a closed stdin); any
# ERROR, and any WARN but the ServiceMonitor's, fails; then the ServiceMonitor
# against its schema.
validate() {
	local f=$1 v=$2 rc=0
	"$kubernetes_validate" --strict --quiet -k "$v" "$f" >"$tmp/kv.log" 2>&1 || rc=$?
	if [ "$rc" -ne 0 ] || grep -v "^WARN .*Couldn't find schema for kind ServiceMonitor with api version monitoring.coreos.com/v1 " "$tmp/kv.log" | grep -q .; then
		sed 's/^/    /' "$tmp/kv.log"
		return 1
	fi
	if grep -q '^kind: ServiceMonitor$' "$f" &&
		! "$kv_python" "$here/helm_facts.py" servicemonitor "$here/servicemonitor-v1.schema.json" "$f"; then
		return 1
	fi
	return 0
}

# check_chart CHART: every check of 1-3 on CHART; counts and reports each.
check_chart() {
	local c=$1 entry name v args
	for entry in "${sets[@]}"; do
		name=${entry%%|*}
		args=()
		[ "$entry" = "$name" ] || read -r -a args <<<"${entry#*|}"
		if lint "$c" "$name" "${args[@]}"; then ok "helm lint --strict ($name)"; else bad "helm lint --strict ($name)"; fi
		for v in $kube_versions; do
			if ! render "$c" "$name" "$v" "${args[@]}"; then
				bad "helm template ($name, $v)"
				continue
			fi
			if validate "$tmp/out/$name-$v.yaml" "$v"; then
				ok "kubernetes-validate --strict ($name, $v: $(grep -c '^kind: ' "$tmp/out/$name-$v.yaml") objects)"
			else
				bad "kubernetes-validate --strict ($name, $v)"
			fi
			if "$kv_python" "$here/helm_facts.py" facts "$name" "$tmp/out/$name-$v.yaml"; then
				ok "rendered facts ($name, $v)"
			else
				bad "rendered facts ($name, $v)"
			fi
		done
	done
}

echo "helm-check: $("$helm" version --short), kubernetes-validate $("$kubernetes_validate" --version), Kubernetes $kube_versions"
check_chart "$chart"

# 4. Self-test: each broken copy must fail the check that is there to catch it
# (its output is shown indented, as it would be in a real failure).
first_v=${kube_versions%% *}
broken() { rm -rf "$tmp/broken" && cp -r "$chart" "$tmp/broken"; }

# expect_failure DESCRIPTION COMMAND...: the command must fail.
expect_failure() {
	local what=$1
	shift
	echo "helm-check: self-test: $what"
	if "$@" >"$tmp/selftest.log" 2>&1; then
		bad "self-test: $what went unnoticed"
	else
		sed 's/^/    | /' "$tmp/selftest.log" | head -5
		ok "self-test: $what is caught"
	fi
}

# A misspelled security field: the API server would ignore it (so no read-only
# root), only --strict rejects it.
broken
sed -i 's/readOnlyRootFilesystem: true/readOnlyRootFilesytem: true/' "$tmp/broken/templates/daemonset.yaml"
render "$tmp/broken" misspelled "$first_v" >/dev/null || bad "self-test: rendering the broken copy"
expect_failure "misspelled readOnlyRootFilesytem in the DaemonSet" validate "$tmp/out/misspelled-$first_v.yaml" "$first_v"
if "$kubernetes_validate" --quiet -k "$first_v" "$tmp/out/misspelled-$first_v.yaml" >/dev/null 2>&1; then
	ok "self-test: without --strict kubernetes-validate passes it (why --strict)"
else
	bad "self-test: kubernetes-validate without --strict was expected to miss the misspelling"
fi

# A misspelled ServiceMonitor field, which kubernetes-validate only warns about.
broken
sed -i 's/^    - port: metrics$/    - prot: metrics/' "$tmp/broken/templates/servicemonitor.yaml"
render "$tmp/broken" sm-misspelled "$first_v" --set serviceMonitor.enabled=true >/dev/null || bad "self-test: rendering the broken copy"
grep -q 'prot: metrics' "$tmp/out/sm-misspelled-$first_v.yaml" || bad "self-test: the ServiceMonitor edit did not apply"
expect_failure "misspelled endpoints[].prot in the ServiceMonitor" validate "$tmp/out/sm-misspelled-$first_v.yaml" "$first_v"

# CAP_SYS_MODULE leaking into the eBPF-only probe: valid Kubernetes, wrong chart.
broken
sed -i 's/{{- \$caps := list "BPF" "PERFMON" }}/{{- $caps := list "BPF" "PERFMON" "SYS_MODULE" }}/' "$tmp/broken/templates/_helpers.tpl"
render "$tmp/broken" ebpf-leak "$first_v" --set probe=ebpf >/dev/null || bad "self-test: rendering the broken copy"
expect_failure "SYS_MODULE rendered with probe=ebpf" "$kv_python" "$here/helm_facts.py" facts ebpf "$tmp/out/ebpf-leak-$first_v.yaml"

# Values the schema must refuse: a value out of its enum, a misspelled key.
expect_failure "probe=kmod (not auto|module|ebpf)" render "$chart" bad-probe "$first_v" --set probe=kmod
expect_failure "misspelled value exporter.maxSerie" render "$chart" bad-key "$first_v" --set exporter.maxSerie=5
expect_failure "misspelled value with helm lint --strict" lint "$chart" bad-key --set serviceMonitor.enable=true

echo "helm-check: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
