package vmagent

import (
	"fmt"
	"net"
)

// FreePorts returns n distinct TCP ports free on 127.0.0.1 right now. All
// listeners stay open until every port is chosen, so the ports differ;
// another process may still take one before qemu binds it, so callers retry
// with new ports when a bind fails.
func FreePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
