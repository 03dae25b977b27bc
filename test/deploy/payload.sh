#!/usr/bin/env bash
# payload.sh — make the per-run disk the systemd guest merges over its cached
# root filesystem (see rootfs.sh): everything a user would put on a host to
# run filewatcher under systemd, installed the way a user would.
#
# Usage:
#   test/deploy/payload.sh --out IMAGE --loader BIN --module KO --agent BIN
#
#   1. deploy/install.sh install DESTDIR=<staging> PREFIX=/usr/local: units,
#      env file, sysusers entry, loader, module, exporter (Node package).
#   2. The env file edited as a user would for a remote Prometheus: the
#      exporter listens on 0.0.0.0:8080 (reached through qemu's loopback-only
#      forward).
#   3. `systemctl --root enable` of both units (what `systemctl enable` does).
#   (Node.js itself is in the cached image: rootfs.sh.)
#   4. The VM harness's guest agent (test/vm/agent) as a unit, so the host can
#      run commands in the guest, and a drop-in giving the loader a longer
#      start timeout under emulation (test only).
# Then the staging tree becomes an ext4 image with mke2fs -d (no mounting).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)

die() { echo "payload.sh: $*" >&2; exit 1; }

out='' loader='' module='' agent=''
while [ $# -gt 0 ]; do
	case "$1" in
	--out) out=${2:?}; shift 2 ;;
	--loader) loader=${2:?}; shift 2 ;;
	--module) module=${2:?}; shift 2 ;;
	--agent) agent=${2:?}; shift 2 ;;
	*) die "unknown argument: $1" ;;
	esac
done
[ -n "$out" ] && [ -x "$loader" ] && [ -f "$module" ] && [ -x "$agent" ] ||
	die "usage: payload.sh --out IMAGE --loader BIN --module KO --agent BIN"

staging=$(mktemp -d "${TMPDIR:-/tmp}/filewatcher-payload.XXXXXX")
trap 'rm -rf "$staging"' EXIT

# 1. The installation under test.
"$repo/deploy/install.sh" install DESTDIR="$staging" PREFIX=/usr/local \
	LOADER_BIN="$loader" KMOD_KO="$module" >&2

# 2. Configuration, edited as documented in the env file.
env=$staging/etc/filewatcher/filewatcher.env
grep -q '^FILEWATCHER_EXPORTER_LISTEN=127.0.0.1:8080$' "$env" || die "env file has no FILEWATCHER_EXPORTER_LISTEN=127.0.0.1:8080 line to edit"
sed -i 's|^FILEWATCHER_EXPORTER_LISTEN=.*|FILEWATCHER_EXPORTER_LISTEN=0.0.0.0:8080|' "$env"

# 3. Enabled like `systemctl enable` on the host would.
systemctl --root="$staging" enable filewatcher-loader.service filewatcher-exporter.service >&2

# 4. The test agent (not part of the product).
install -D -m 0755 "$agent" "$staging/usr/local/lib/filewatcher-test/agent"
mkdir -p "$staging/etc/systemd/system/multi-user.target.wants"
cat >"$staging/etc/systemd/system/filewatcher-test-agent.service" <<'EOF'
# Test only: the VM harness's guest agent, so the e2e on the host can run
# commands in this guest through qemu's loopback-only port forward.
[Unit]
Description=filewatcher test agent (e2e only)
After=network.target

[Service]
ExecStart=/usr/local/lib/filewatcher-test/agent serve --listen 0.0.0.0:50100
Restart=always

[Install]
WantedBy=multi-user.target
EOF
ln -sf ../filewatcher-test-agent.service "$staging/etc/systemd/system/multi-user.target.wants/"

# Test only: under TCG emulation on a busy machine the loader's start (BTF
# parsing, program load) took up to ~40 s, against well under a second on real
# hardware; keep the unit's own TimeoutStartSec for real hosts and give the
# emulated one room.
mkdir -p "$staging/etc/systemd/system/filewatcher-loader.service.d"
cat >"$staging/etc/systemd/system/filewatcher-loader.service.d/tcg-timeout.conf" <<'EOF'
[Service]
TimeoutStartSec=5min
EOF

# Let the first boot see /usr as updated (systemd-sysusers runs on it).
touch "$staging/usr"

size=$(( $(du -sm "$staging" | cut -f1) * 13 / 10 + 64 ))
rm -f "$out"
mke2fs -q -t ext4 -L fw-payload -d "$staging" "$out" "${size}M" >&2 || die "mke2fs failed"
echo "$out"
