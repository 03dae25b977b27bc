package main

import (
	"fmt"
	"strconv"

	"github.com/filewatcher/filewatcher/test/vm/agent/vmagent"
)

// cmdPorts prints n distinct TCP ports that are free on 127.0.0.1 right now
// (vm.sh retries with new ports if qemu cannot bind one).
func cmdPorts(args []string) error {
	n := 1
	if len(args) > 0 {
		v, err := strconv.Atoi(args[0])
		if err != nil || v < 1 {
			return fmt.Errorf("want a positive count, got %q", args[0])
		}
		n = v
	}
	ports, err := vmagent.FreePorts(n)
	if err != nil {
		return err
	}
	for _, p := range ports {
		fmt.Println(p)
	}
	return nil
}
