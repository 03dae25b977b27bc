#!/usr/bin/env bash
# check.sh — the deployment files' static checks, no VM needed (~5 s):
#
#   1. deploy/install.sh install into a temporary PREFIX, then
#      `systemd-analyze verify` of the installed units (their ExecStart=
#      paths exist there), then uninstall leaves nothing behind;
#      the same with DESTDIR (a staging root), as packagers and the VM test use it
#   2. promtool check config / check rules / test rules on deploy/prometheus
#      and on the compose variant
#   3. docker-compose -f docker-compose.yml config -q (no engine needed)
#
# Needs: systemd (systemd-analyze), prometheus (promtool), docker-compose, node;
# bin/filewatcher-loader is not needed (a stand-in binary is installed).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cd "$repo"

fail() { echo "check.sh: FAIL: $*" >&2; exit 1; }
ok() { echo "check.sh: ok: $*" >&2; }
for tool in systemd-analyze promtool docker-compose node; do
	command -v "$tool" >/dev/null || fail "$tool not found (make setup)"
done
[ -f exporter/dist/main.js ] || fail "exporter/dist is not built (make exporter)"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/filewatcher-check.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# A stand-in loader and module: verify checks that ExecStart= is executable.
printf '#!/bin/sh\nexit 0\n' >"$tmp/loader"
chmod +x "$tmp/loader"
: >"$tmp/filewatcher.ko"
common=(LOADER_BIN="$tmp/loader" KMOD_KO="$tmp/filewatcher.ko" NO_SYSTEMD=1)

# 1a. A prefix that is not /usr/local: paths in the units must follow it.
p=$tmp/prefix
deploy/install.sh install PREFIX="$p/usr" SYSCONFDIR="$p/etc" UNITDIR="$p/units" \
	SYSUSERSDIR="$p/sysusers.d" "${common[@]}" 2>"$tmp/install.log" ||
	{ cat "$tmp/install.log" >&2; fail "install with PREFIX"; }
for u in filewatcher-loader.service filewatcher-exporter.service; do
	grep -q "$p/usr/bin/" "$p/units/$u" || fail "$u: ExecStart= not rewritten to PREFIX"
	grep -q "EnvironmentFile=-$p/etc/filewatcher/filewatcher.env" "$p/units/$u" || fail "$u: EnvironmentFile= not rewritten to SYSCONFDIR"
	! grep -q '/usr/local/' "$p/units/$u" || fail "$u: still mentions /usr/local/"
done
grep -q "^FILEWATCHER_MODULE=$p/usr/lib/filewatcher/filewatcher.ko$" "$p/etc/filewatcher/filewatcher.env" ||
	fail "env file: FILEWATCHER_MODULE not rewritten to PREFIX"
# The exporter wrapper runs the installed package: --help must work from it.
"$p/usr/bin/filewatcher-exporter" --help >/dev/null || fail "installed filewatcher-exporter --help"
# With the opt-in drop-ins in place too, as an administrator would add them.
mkdir -p "$p/units/filewatcher-loader.service.d"
cp "$p/usr/share/doc/filewatcher/systemd/least-privilege.conf" "$p/usr/share/doc/filewatcher/systemd/bpf-probe.conf" \
	"$p/units/filewatcher-loader.service.d/"
if ! SYSTEMD_UNIT_PATH="$p/units:" systemd-analyze verify --man=no \
	"$p/units/filewatcher-loader.service" "$p/units/filewatcher-exporter.service" >"$tmp/verify.log" 2>&1 ||
	[ -s "$tmp/verify.log" ]; then
	cat "$tmp/verify.log" >&2
	fail "systemd-analyze verify"
fi
ok "systemd-analyze verify: installed units clean"
rm -r "$p/units/filewatcher-loader.service.d"
# An edited env file survives uninstall; everything else goes.
echo 'FILEWATCHER_LOG_LEVEL=debug' >>"$p/etc/filewatcher/filewatcher.env"
deploy/install.sh uninstall PREFIX="$p/usr" SYSCONFDIR="$p/etc" UNITDIR="$p/units" \
	SYSUSERSDIR="$p/sysusers.d" "${common[@]}" 2>>"$tmp/install.log" || fail "uninstall with PREFIX"
left=$(cd "$p" && find . -type f | sort)
[ "$left" = "./etc/filewatcher/filewatcher.env" ] || fail "uninstall left: $left"
ok "install/uninstall with PREFIX (edited env file kept)"

# 1b. DESTDIR staging with the default prefix.
d=$tmp/dest
deploy/install.sh install DESTDIR="$d" "${common[@]}" 2>>"$tmp/install.log" || fail "install with DESTDIR"
for f in usr/local/bin/filewatcher-loader usr/local/bin/filewatcher-exporter \
	usr/local/lib/filewatcher/filewatcher.ko usr/local/lib/filewatcher/module-cleanup \
	usr/local/lib/filewatcher/node/exporter/dist/main.js \
	usr/local/lib/filewatcher/node/proto/filewatcher/v1/filewatcher.proto \
	usr/local/lib/filewatcher/node/node_modules/@grpc/grpc-js/package.json \
	usr/local/lib/systemd/system/filewatcher-loader.service \
	usr/local/lib/systemd/system/filewatcher-exporter.service \
	usr/local/lib/sysusers.d/filewatcher.conf etc/filewatcher/filewatcher.env; do
	[ -e "$d/$f" ] || fail "install with DESTDIR: missing /$f"
done
[ ! -e "$d/usr/local/lib/filewatcher/node/node_modules/typescript" ] || fail "dev dependencies installed"
deploy/install.sh uninstall DESTDIR="$d" "${common[@]}" 2>>"$tmp/install.log" || fail "uninstall with DESTDIR"
left=$(cd "$d" && find . -type f)
[ -z "$left" ] || fail "uninstall with DESTDIR left: $left"
ok "install/uninstall with DESTDIR"

# 2. Prometheus configuration and rules.
promtool check config deploy/prometheus/prometheus.yml >"$tmp/promtool.log" 2>&1 ||
	{ cat "$tmp/promtool.log" >&2; fail "promtool check config"; }
promtool check rules deploy/prometheus/rules.yml >"$tmp/promtool.log" 2>&1 ||
	{ cat "$tmp/promtool.log" >&2; fail "promtool check rules"; }
(cd deploy/prometheus && promtool test rules rules_test.yml) >"$tmp/promtool.log" 2>&1 ||
	{ cat "$tmp/promtool.log" >&2; fail "promtool test rules"; }
# The compose variant expects rules.yml beside it, as its volume mounts do.
mkdir -p "$tmp/compose"
cp deploy/compose/prometheus.yml deploy/prometheus/rules.yml "$tmp/compose/"
promtool check config "$tmp/compose/prometheus.yml" >"$tmp/promtool.log" 2>&1 ||
	{ cat "$tmp/promtool.log" >&2; fail "promtool check config (compose)"; }
ok "promtool: config, rules, rule unit tests"

# 3. Compose.
docker-compose -f docker-compose.yml config -q || fail "docker-compose config"
ok "docker-compose config -q"
