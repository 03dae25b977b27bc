# cache.sh — sourced by the scripts that keep guest kernels, toolchain
# chroots and guest images: the one place that says where they live.
#
# Outside the clone, so that a new clone on the same machine (CI does one for
# every run) finds them again: ${XDG_CACHE_HOME:-$HOME/.cache}/filewatcher.
# FILEWATCHER_CACHE overrides it. Nothing in it belongs to one clone: it is
# keyed by kernel release, Debian suite and recipe hash, and builds that
# write into it take a lock.
# shellcheck shell=bash
filewatcher_cache=${FILEWATCHER_CACHE:-${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/filewatcher}
