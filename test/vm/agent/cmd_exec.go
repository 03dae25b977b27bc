package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"

	"github.com/filewatcher/filewatcher/test/vm/agent/vmagent"
)

// cmdExec runs a command in the guest, copies its stdout and stderr to ours
// byte for byte and returns its exit status (exitAgentError when it could not
// be run at all).
func cmdExec(args []string) int {
	fs := flag.NewFlagSet("exec", flag.ExitOnError)
	addr := fs.String("addr", "", "agent address (host side), 127.0.0.1:PORT")
	uid := optUint32(fs, "uid", "run as this uid")
	gid := optUint32(fs, "gid", "run as this gid")
	stdin := fs.Bool("stdin", false, "send our stdin to the command (otherwise it reads /dev/null)")
	cwd := fs.String("cwd", "", "working directory in the guest (default /)")
	timeout := fs.Duration("timeout", 0, "kill the command after this long (0: never)")
	showPID := fs.Bool("show-pid", false, "print the command's guest pid on stderr first, as 'pid N'")
	var env multiFlag
	fs.Var(&env, "env", "KEY=VALUE added to the command's environment (repeatable)")
	fs.Parse(args)
	if *addr == "" || fs.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "agent exec: need --addr and a command after --")
		return 2
	}
	req := vmagent.Request{
		Argv:      vmagent.Args(fs.Args()...),
		Env:       vmagent.Args(env...),
		Dir:       []byte(*cwd),
		UID:       uid.value(),
		GID:       gid.value(),
		TimeoutMS: timeout.Milliseconds(),
	}
	if *stdin {
		in, err := io.ReadAll(os.Stdin)
		if err != nil {
			fmt.Fprintf(os.Stderr, "agent exec: read stdin: %v\n", err)
			return exitAgentError
		}
		req.Stdin = in
	}
	resp, err := vmagent.Client{Addr: *addr}.Exec(context.Background(), req)
	if err != nil {
		fmt.Fprintf(os.Stderr, "agent exec: %v\n", err)
		return exitAgentError
	}
	if *showPID {
		fmt.Fprintf(os.Stderr, "pid %d\n", resp.PID)
	}
	os.Stdout.Write(resp.Stdout)
	os.Stderr.Write(resp.Stderr)
	if resp.TimedOut {
		fmt.Fprintf(os.Stderr, "agent exec: killed after %v\n", *timeout)
	}
	return resp.ExitCode
}

// optionalUint32 is a flag that remembers whether it was given.
type optionalUint32 struct {
	set bool
	v   uint32
}

func optUint32(fs *flag.FlagSet, name, usage string) *optionalUint32 {
	o := &optionalUint32{}
	fs.Var(o, name, usage)
	return o
}

func (o *optionalUint32) String() string {
	if o == nil || !o.set {
		return ""
	}
	return strconv.FormatUint(uint64(o.v), 10)
}

func (o *optionalUint32) Set(s string) error {
	v, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return fmt.Errorf("not a 32-bit unsigned number: %q", s)
	}
	o.set, o.v = true, uint32(v)
	return nil
}

func (o *optionalUint32) value() *uint32 {
	if !o.set {
		return nil
	}
	v := o.v
	return &v
}

// multiFlag collects a repeatable string flag.
type multiFlag []string

func (m *multiFlag) String() string     { return fmt.Sprint(*m) }
func (m *multiFlag) Set(s string) error { *m = append(*m, s); return nil }
