#!/bin/sh
# start-loader [ARGS...] — start filewatcher-loader in the guest's background
# as the harness does: it loads /filewatcher/filewatcher.ko, serves gRPC on
# the forwarded port (FW_LOADER_PORT, plaintext: only the host's loopback
# reaches it) with vm.sh up --loader-args and ARGS, and logs to
# /var/log/filewatcher-loader.log. init runs it unless vm.sh up --no-loader;
# tests that first do other things with the module run it through the agent
# (vm.sh exec -- start-loader). Its exit is reported on the console as
# "filewatcher-vm: loader exited with status N", which vm.sh up watches for.
. /filewatcher/vm.conf
# $FW_LOADER_ARGS is split into words on purpose (vm.sh up --loader-args).
# shellcheck disable=SC2086
(
	filewatcher-loader --module /filewatcher/filewatcher.ko --listen "0.0.0.0:$FW_LOADER_PORT" \
		--allow-insecure-tcp $FW_LOADER_ARGS "$@" >>/var/log/filewatcher-loader.log 2>&1 </dev/null
	echo "filewatcher-vm: loader exited with status $?" >/dev/console
) >/dev/null 2>&1 &
