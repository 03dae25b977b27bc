package main

import (
	"fmt"
	"net"
	"strconv"
)

// cmdPorts prints n distinct TCP ports that are free on 127.0.0.1 right now.
// All listeners stay open until every port is chosen, so the ports differ;
// another process may still take one before qemu binds it, which vm.sh
// handles by retrying with new ports.
func cmdPorts(args []string) error {
	n := 1
	if len(args) > 0 {
		v, err := strconv.Atoi(args[0])
		if err != nil || v < 1 {
			return fmt.Errorf("want a positive count, got %q", args[0])
		}
		n = v
	}
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return fmt.Errorf("find a free port: %w", err)
		}
		ls = append(ls, l)
		fmt.Println(l.Addr().(*net.TCPAddr).Port)
	}
	return nil
}
