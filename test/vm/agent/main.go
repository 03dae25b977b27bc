// Command agent is the filewatcher VM harness's guest agent and its host-side
// client. One static binary serves both sides:
//
//	agent serve --listen 0.0.0.0:PORT         in the guest: run commands for the host
//	agent exec --addr ADDR [flags] -- CMD...  on the host: run CMD in the guest
//	agent wait --agent ADDR [--grpc ADDR]     on the host: wait until the guest is ready
//	agent ports N                             on the host: print N free loopback TCP ports
//
// test/vm/vm.sh builds it and is the interface people use; see
// test/vm/README.md.
package main

import (
	"fmt"
	"os"
)

// exitAgentError is the exit status of `agent exec` when the command could not
// be run at all (agent unreachable, command not found), as env(1) and
// docker use 125 for their own failures.
const exitAgentError = 125

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	args := os.Args[2:]
	var err error
	switch os.Args[1] {
	case "serve":
		err = cmdServe(args)
	case "exec":
		os.Exit(cmdExec(args))
	case "wait":
		err = cmdWait(args)
	case "ports":
		err = cmdPorts(args)
	case "help", "-h", "--help":
		usage()
		return
	default:
		fmt.Fprintf(os.Stderr, "agent: unknown command %q\n", os.Args[1])
		usage()
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "agent %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprint(os.Stderr, `usage:
  agent serve --listen ADDR
  agent exec --addr ADDR [--uid N] [--gid N] [--stdin] [--cwd DIR] [--env K=V]... [--timeout D] [--show-pid] -- CMD...
  agent wait --agent ADDR [--grpc ADDR] [--pid QEMU_PID] [--console FILE] [--timeout D]
  agent ports N
`)
}
