#!/usr/bin/env bash
# install.sh — install or uninstall filewatcher as two systemd services.
#
# Usage (from the repository, after `make` — or through `make install`):
#   deploy/install.sh install      copy everything into DESTDIR/PREFIX
#   deploy/install.sh uninstall    remove what install copied
#
# Variables (environment or VAR=value arguments, as make passes them):
#   PREFIX      installation prefix (default /usr/local)
#   DESTDIR     staging root for packaging or an image (default: none, the live system)
#   SYSCONFDIR  where filewatcher/filewatcher.env goes (default /etc)
#   UNITDIR     systemd unit directory (default PREFIX/lib/systemd/system for the
#               prefixes systemd searches, /usr and /usr/local; /etc/systemd/system otherwise)
#   SYSUSERSDIR sysusers.d directory (same rule: PREFIX/lib/sysusers.d or /etc/sysusers.d)
#   LOADER_BIN  the loader binary (default bin/filewatcher-loader: make loader)
#   KMOD_KO     the module built for the target kernel (default kmod/filewatcher.ko:
#               make kmod); skipped with a warning when absent
#   NO_SYSTEMD  1: never run systemd-sysusers/systemctl, even without DESTDIR
#
# What goes where (PREFIX=/usr/local):
#   /usr/local/bin/filewatcher-loader             static Go binary
#   /usr/local/bin/filewatcher-exporter           wrapper: node .../node/exporter/dist/main.js
#   /usr/local/lib/filewatcher/filewatcher.ko     the kernel module the loader loads
#   /usr/local/lib/filewatcher/module-cleanup     ExecStartPre/ExecStopPost helper of the loader unit
#   /usr/local/lib/filewatcher/node/              the exporter: package.json, exporter/dist,
#                                                 proto/, production node_modules
#   /usr/local/lib/systemd/system/filewatcher-{loader,exporter}.service
#   /usr/local/lib/sysusers.d/filewatcher.conf    the "filewatcher" group
#   /etc/filewatcher/filewatcher.env              options (never overwritten once edited)
#   /usr/local/share/doc/filewatcher/             this README, the Prometheus examples and
#                                                 systemd/{least-privilege,bpf-probe}.conf (opt-in drop-ins)
#
# Paths inside the installed units and env file are rewritten from /usr/local
# and /etc to PREFIX and SYSCONFDIR. On the live system (no DESTDIR) install
# also creates the group (systemd-sysusers) and reloads systemd; uninstall
# first stops and disables the units. Neither enables nor starts anything:
#   systemctl enable --now filewatcher-exporter.service   (pulls in the loader)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)

die() { echo "install.sh: $*" >&2; exit 1; }
note() { echo "install.sh: $*" >&2; }

mode=${1:-}
[ $# -gt 0 ] && shift
for arg in "$@"; do
	case "$arg" in
	PREFIX=* | DESTDIR=* | SYSCONFDIR=* | UNITDIR=* | SYSUSERSDIR=* | LOADER_BIN=* | KMOD_KO=* | NO_SYSTEMD=*)
		export "${arg?}" ;;
	*) die "unknown argument: $arg" ;;
	esac
done

PREFIX=${PREFIX:-/usr/local}
PREFIX=${PREFIX%/}
DESTDIR=${DESTDIR:-}
DESTDIR=${DESTDIR%/}
SYSCONFDIR=${SYSCONFDIR:-/etc}
case "$PREFIX" in
/usr | /usr/local)
	UNITDIR=${UNITDIR:-$PREFIX/lib/systemd/system}
	SYSUSERSDIR=${SYSUSERSDIR:-$PREFIX/lib/sysusers.d} ;;
/*)
	UNITDIR=${UNITDIR:-/etc/systemd/system}
	SYSUSERSDIR=${SYSUSERSDIR:-/etc/sysusers.d} ;;
*) die "PREFIX must be an absolute path, not '$PREFIX'" ;;
esac
case "$SYSCONFDIR" in /*) ;; *) die "SYSCONFDIR must be absolute" ;; esac
LOADER_BIN=${LOADER_BIN:-$repo/bin/filewatcher-loader}
KMOD_KO=${KMOD_KO:-$repo/kmod/filewatcher.ko}

bindir=$PREFIX/bin
libdir=$PREFIX/lib/filewatcher
docdir=$PREFIX/share/doc/filewatcher
envdir=$SYSCONFDIR/filewatcher
units=(filewatcher-loader.service filewatcher-exporter.service)

# subst rewrites the default locations in a unit or env file to this install's.
subst() {
	sed -e "s|/usr/local/|$PREFIX/|g" -e "s|/etc/filewatcher/|$envdir/|g" "$1"
}

# live: installing into the running system, which systemd manages.
live() { [ -z "$DESTDIR" ] && [ "${NO_SYSTEMD:-0}" != 1 ] && [ -d /run/systemd/system ]; }

do_install() {
	[ -x "$LOADER_BIN" ] || die "no loader binary at $LOADER_BIN: run 'make loader' (or pass LOADER_BIN=)"
	[ -f "$repo/exporter/dist/main.js" ] || die "no exporter build at exporter/dist: run 'make exporter'"
	[ -f "$repo/package-lock.json" ] || die "no package-lock.json in $repo"
	command -v node >/dev/null || die "node not found: the exporter needs Node.js 20+ (and so does this script, to read package-lock.json)"

	local d=$DESTDIR
	install -d -m 0755 "$d$bindir" "$d$libdir" "$d$UNITDIR" "$d$SYSUSERSDIR" "$d$docdir/prometheus" "$d$docdir/systemd"
	install -m 0755 "$LOADER_BIN" "$d$bindir/filewatcher-loader"
	if [ -f "$KMOD_KO" ]; then
		install -m 0644 "$KMOD_KO" "$d$libdir/filewatcher.ko"
	else
		note "warning: no module at $KMOD_KO (make kmod): the loader unit will fail until $libdir/filewatcher.ko exists"
	fi
	install -m 0755 "$here/systemd/module-cleanup" "$d$libdir/module-cleanup"

	# The exporter: the repository's npm package, production dependencies only
	# (those package-lock.json does not mark "dev"), in the same layout so
	# exporter/dist finds ../../proto and node_modules as it does in the repo.
	local app=$d$libdir/node
	rm -rf "$app"
	install -d -m 0755 "$app/exporter" "$app/proto/filewatcher/v1" "$app/node_modules"
	install -m 0644 "$repo/package.json" "$repo/package-lock.json" "$app/"
	# The compiled exporter without its tests, test helpers and benchmarks.
	(cd "$repo/exporter" && find dist -type f -name '*.js' \
		! -name '*.test.js' ! -path 'dist/testing/*' ! -path 'dist/bench/*' -print0 |
		xargs -0 -I{} install -D -m 0644 {} "$app/exporter/{}")
	install -m 0644 "$repo/proto/filewatcher/v1/filewatcher.proto" "$app/proto/filewatcher/v1/"
	local pkg
	while IFS= read -r pkg; do
		[ -d "$repo/$pkg" ] || die "$pkg is in package-lock.json but not installed: run 'make setup'"
		mkdir -p "$(dirname "$app/$pkg")"
		cp -R "$repo/$pkg" "$app/$pkg"
	done < <(node -e '
		const lock = require(process.argv[1]);
		for (const [path, meta] of Object.entries(lock.packages || {})) {
			// Nested node_modules come with their parent directory.
			if (/^node_modules\/(@[^/]+\/)?[^/]+$/.test(path) && !meta.dev) console.log(path);
		}' "$repo/package-lock.json")
	chmod -R u=rwX,go=rX "$app"
	cat >"$d$bindir/filewatcher-exporter" <<EOF
#!/bin/sh
# filewatcher-exporter — installed by deploy/install.sh: runs the exporter
# with the node found in PATH (Node.js 20+). --help lists the options.
exec node "$libdir/node/exporter/dist/main.js" "\$@"
EOF
	chmod 0755 "$d$bindir/filewatcher-exporter"

	local u
	for u in "${units[@]}"; do
		subst "$here/systemd/$u" >"$d$UNITDIR/$u"
		chmod 0644 "$d$UNITDIR/$u"
	done
	install -m 0644 "$here/systemd/filewatcher.sysusers" "$d$SYSUSERSDIR/filewatcher.conf"

	# The env file is configuration: install it once, keep an edited copy.
	install -d -m 0755 "$d$envdir"
	if [ -e "$d$envdir/filewatcher.env" ] && ! subst "$here/systemd/filewatcher.env" | cmp -s - "$d$envdir/filewatcher.env"; then
		subst "$here/systemd/filewatcher.env" >"$d$envdir/filewatcher.env.dist"
		note "kept the edited $envdir/filewatcher.env; the shipped one is filewatcher.env.dist"
	else
		subst "$here/systemd/filewatcher.env" >"$d$envdir/filewatcher.env"
		chmod 0644 "$d$envdir/filewatcher.env"
	fi

	install -m 0644 "$here/README.md" "$d$docdir/README.md"
	install -m 0644 "$here/prometheus/prometheus.yml" "$here/prometheus/rules.yml" "$d$docdir/prometheus/"
	# Opt-in drop-ins: for kernels with perf_event_paranoid <= 2, and for
	# hosts that never load the module (see each file).
	install -m 0644 "$here/systemd/least-privilege.conf" "$here/systemd/bpf-probe.conf" "$d$docdir/systemd/"

	if live; then
		systemd-sysusers "$SYSUSERSDIR/filewatcher.conf"
		systemctl daemon-reload
	fi
	note "installed into ${DESTDIR:-/}${DESTDIR:+ }(PREFIX=$PREFIX)."
	note "start with: systemctl enable --now filewatcher-exporter.service  (it pulls in filewatcher-loader)"
}

do_uninstall() {
	local d=$DESTDIR u
	if live; then
		for u in "${units[@]}"; do
			if systemctl cat "$u" >/dev/null 2>&1; then
				systemctl disable --now "$u" || note "warning: could not stop $u"
			fi
		done
	fi
	for u in "${units[@]}"; do
		rm -f "$d$UNITDIR/$u"
	done
	rm -f "$d$bindir/filewatcher-loader" "$d$bindir/filewatcher-exporter" \
		"$d$SYSUSERSDIR/filewatcher.conf"
	rm -rf "$d$libdir" "$d$docdir"
	# Configuration stays if it was edited, as a package manager would do.
	if [ -e "$d$envdir/filewatcher.env" ]; then
		if subst "$here/systemd/filewatcher.env" | cmp -s - "$d$envdir/filewatcher.env"; then
			rm -f "$d$envdir/filewatcher.env"
		else
			note "kept the edited $envdir/filewatcher.env"
		fi
	fi
	rm -f "$d$envdir/filewatcher.env.dist"
	rmdir "$d$envdir" 2>/dev/null || true
	if live; then
		systemctl daemon-reload
	fi
	note "uninstalled from ${DESTDIR:-/} (PREFIX=$PREFIX). The group 'filewatcher' is kept (systemd-sysusers never removes groups)."
}

case "$mode" in
install) do_install ;;
uninstall) do_uninstall ;;
*) die "usage: install.sh install|uninstall [PREFIX=...] [DESTDIR=...]" ;;
esac
