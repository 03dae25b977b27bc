package vmagent

import (
	"bytes"
	"context"
	"io"
	"log"
	"net"
	"strings"
	"testing"
	"time"
)

// startAgent serves on a loopback port for the test's lifetime.
func startAgent(t *testing.T) Client {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go Serve(l, log.New(io.Discard, "", 0))
	return Client{Addr: l.Addr().String()}
}

func TestExec(t *testing.T) {
	c := startAgent(t)
	odd := "a b\nc\"d'e\\f\xff\xfe\x01-é"
	cases := []struct {
		name     string
		req      Request
		stdout   string
		stderr   string
		exit     int
		signal   string
		timedOut bool
	}{
		{name: "argv bytes", req: Request{Argv: Args("printf", "%s", odd)}, stdout: odd},
		{name: "streams and status", req: Request{Argv: Args("sh", "-c", "printf out; printf err >&2; exit 3")}, stdout: "out", stderr: "err", exit: 3},
		{name: "stdin", req: Request{Argv: Args("cat"), Stdin: []byte("x\x00y\xff")}, stdout: "x\x00y\xff"},
		{name: "no stdin", req: Request{Argv: Args("wc", "-c")}, stdout: "0\n"},
		{name: "env and dir", req: Request{Argv: Args("sh", "-c", `printf '%s %s' "$V" "$(pwd)"`), Env: Args("V=v\xff"), Dir: []byte("/tmp")}, stdout: "v\xff /tmp"},
		{name: "signal", req: Request{Argv: Args("sh", "-c", "kill -TERM $$")}, exit: 143, signal: "terminated"},
		{name: "timeout", req: Request{Argv: Args("sleep", "10"), TimeoutMS: 100}, exit: 137, signal: "killed", timedOut: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := c.Exec(context.Background(), tc.req)
			if err != nil {
				t.Fatal(err)
			}
			if string(resp.Stdout) != tc.stdout || string(resp.Stderr) != tc.stderr || resp.ExitCode != tc.exit ||
				resp.Signal != tc.signal || resp.TimedOut != tc.timedOut || resp.PID <= 0 {
				t.Errorf("got %+v", resp)
			}
		})
	}
}

// A background child holding stdout must not hold the answer.
func TestExecBackgroundChild(t *testing.T) {
	c := startAgent(t)
	start := time.Now()
	resp, err := c.Exec(context.Background(), Request{Argv: Args("sh", "-c", "sleep 5 & echo started")})
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("answer took %v", d)
	}
	if string(resp.Stdout) != "started\n" || resp.ExitCode != 0 {
		t.Errorf("got %+v", resp)
	}
}

func TestErrors(t *testing.T) {
	c := startAgent(t)
	if _, err := c.Exec(context.Background(), Request{Argv: Args("no-such-command-here")}); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("missing command: err = %v", err)
	}
	if _, err := c.Exec(context.Background(), Request{}); err == nil {
		t.Error("empty argv: no error")
	}
	if _, err := c.Do(context.Background(), Request{Op: "bogus"}); err == nil {
		t.Error("unknown op: no error")
	}
	rel, err := c.Ping(context.Background())
	if err != nil || rel == "" {
		t.Errorf("ping: %q, %v", rel, err)
	}
}

func TestFrameLimit(t *testing.T) {
	var buf bytes.Buffer
	buf.Write([]byte{0xff, 0xff, 0xff, 0xff})
	var r Request
	if err := ReadFrame(&buf, &r); err == nil || !strings.Contains(err.Error(), "limit") {
		t.Errorf("oversized frame: err = %v", err)
	}
}
