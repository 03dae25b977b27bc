package vmagent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// pipeGrace is how long the agent keeps reading a command's stdout and stderr
// after it exited (what it wrote before exiting is always read).
const pipeGrace = 500 * time.Millisecond

// DefaultPath is the PATH commands run with in the guest.
const DefaultPath = "/filewatcher:/usr/local/bin:/usr/bin:/usr/sbin:/bin:/sbin"

// Serve answers requests on l until it fails. Each connection carries one
// request and is handled on its own goroutine, so a long command does not
// block others.
func Serve(l net.Listener, logger *log.Logger) error {
	for {
		conn, err := l.Accept()
		if err != nil {
			return fmt.Errorf("accept: %w", err)
		}
		go handle(conn, logger)
	}
}

func handle(conn net.Conn, logger *log.Logger) {
	defer conn.Close()
	var req Request
	if err := ReadFrame(conn, &req); err != nil {
		logger.Printf("%s: %v", conn.RemoteAddr(), err)
		return
	}
	resp := answer(req)
	if err := WriteFrame(conn, resp); err != nil {
		logger.Printf("%s: %v", conn.RemoteAddr(), err)
	}
}

func answer(req Request) Response {
	switch req.Op {
	case OpPing:
		rel, err := os.ReadFile("/proc/sys/kernel/osrelease")
		if err != nil {
			return Response{Error: fmt.Sprintf("read kernel release: %v", err)}
		}
		return Response{Release: strings.TrimSpace(string(rel))}
	case OpExec:
		return run(req)
	default:
		return Response{Error: fmt.Sprintf("unknown op %q", req.Op)}
	}
}

// run executes req.Argv and collects its output. The command gets its own
// process group so that a timeout also ends what it started in the background.
func run(req Request) Response {
	if len(req.Argv) == 0 {
		return Response{Error: "exec: empty argv"}
	}
	path, err := lookPath(string(req.Argv[0]))
	if err != nil {
		return Response{Error: err.Error()}
	}
	cmd := &exec.Cmd{
		Path:        path,
		Args:        byteStrings(req.Argv),
		Env:         append([]string{"PATH=" + DefaultPath, "HOME=/root", "TERM=dumb"}, byteStrings(req.Env)...),
		Dir:         "/",
		SysProcAttr: &syscall.SysProcAttr{Setpgid: true},
		// A background child that inherited stdout or stderr would keep the
		// pipes open, and the answer waiting, for as long as it lives.
		WaitDelay: pipeGrace,
	}
	if len(req.Dir) > 0 {
		cmd.Dir = string(req.Dir)
	}
	if req.UID != nil || req.GID != nil {
		cred := &syscall.Credential{Groups: []uint32{}}
		if req.UID != nil {
			cred.Uid = *req.UID
		}
		if req.GID != nil {
			cred.Gid = *req.GID
		}
		cmd.SysProcAttr.Credential = cred
	}
	if req.Stdin != nil {
		cmd.Stdin = bytes.NewReader(req.Stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		return Response{Error: fmt.Sprintf("start %q: %v", req.Argv[0], err)}
	}
	resp := Response{PID: cmd.Process.Pid}
	var timer *time.Timer
	timedOut := make(chan struct{})
	if req.TimeoutMS > 0 {
		timer = time.AfterFunc(time.Duration(req.TimeoutMS)*time.Millisecond, func() {
			close(timedOut)
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		})
	}
	waitErr := cmd.Wait()
	if timer != nil && !timer.Stop() {
		<-timedOut
		resp.TimedOut = true
	}
	var exitErr *exec.ExitError
	if waitErr != nil && !errors.As(waitErr, &exitErr) && !errors.Is(waitErr, exec.ErrWaitDelay) {
		return Response{Error: fmt.Sprintf("wait for %q: %v", req.Argv[0], waitErr)}
	}
	resp.ExitCode = cmd.ProcessState.ExitCode()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		resp.ExitCode = 128 + int(ws.Signal())
		resp.Signal = ws.Signal().String()
	}
	resp.Stdout, resp.Stderr = stdout.Bytes(), stderr.Bytes()
	return resp
}

// lookPath resolves name in DefaultPath (the agent's own PATH may differ).
func lookPath(name string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	for _, dir := range strings.Split(DefaultPath, ":") {
		p := dir + "/" + name
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("exec: %q not found in %s", name, DefaultPath)
}

func byteStrings(b [][]byte) []string {
	out := make([]string, len(b))
	for i, s := range b {
		out[i] = string(s)
	}
	return out
}

// ListenAndServe listens on addr and serves until the listener fails.
func ListenAndServe(ctx context.Context, addr string, logger *log.Logger) error {
	var lc net.ListenConfig
	l, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	logger.Printf("agent listening on %s", l.Addr())
	return Serve(l, logger)
}
