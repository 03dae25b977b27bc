//go:build e2e

package e2e

import (
	"bytes"
	"errors"
	"os/exec"
	"testing"
)

// testVMExec checks vm.sh exec's contract: argv, stdin, stdout, stderr and the
// exit code pass through byte for byte, --uid/--gid/--cwd apply, and 125 means
// the command could not be run.
func testVMExec(t *testing.T, g *guest) {
	odd := "a b\nc\"d'e\\f\tg\xff\xfe\x01-é"
	cases := []struct {
		name       string
		args       []string
		stdin      []byte
		wantOut    string
		wantErr    string
		wantStatus int
	}{
		{"argv bytes", []string{"--", "printf", "%s", odd}, nil, odd, "", 0},
		{"streams and status", []string{"--", "sh", "-c", "printf out; printf err >&2; exit 42"}, nil, "out", "err", 42},
		{"stdin", []string{"--stdin", "--", "cat"}, []byte("in\x00put\xff\n"), "in\x00put\xff\n", "", 0},
		{"no stdin without --stdin", []string{"--", "wc", "-c"}, []byte("ignored"), "0\n", "", 0},
		{"uid", []string{"--uid", "1234", "--gid", "4321", "--", "id", "-u"}, nil, "1234\n", "", 0},
		{"gid", []string{"--uid", "1234", "--gid", "4321", "--", "id", "-g"}, nil, "4321\n", "", 0},
		{"cwd", []string{"--cwd", "/sys/kernel/tracing", "--", "pwd"}, nil, "/sys/kernel/tracing\n", "", 0},
		{"signal", []string{"--", "sh", "-c", "kill -9 $$"}, nil, "", "", 137},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cmd := vmsh(append([]string{"exec", "--name", g.name}, c.args...)...)
			var stdout, stderr bytes.Buffer
			cmd.Stdin, cmd.Stdout, cmd.Stderr = bytes.NewReader(c.stdin), &stdout, &stderr
			status := exitStatus(t, cmd.Run())
			if status != c.wantStatus || stdout.String() != c.wantOut || stderr.String() != c.wantErr {
				t.Errorf("vm.sh exec %q:\n got status %d stdout %q stderr %q\nwant status %d stdout %q stderr %q",
					c.args, status, stdout.Bytes(), stderr.Bytes(), c.wantStatus, c.wantOut, c.wantErr)
			}
		})
	}
	t.Run("not found", func(t *testing.T) {
		out, err := vmsh("exec", "--name", g.name, "--", "/no/such/command").CombinedOutput()
		if status := exitStatus(t, err); status != 125 || !bytes.Contains(out, []byte("/no/such/command")) {
			t.Errorf("got status %d, output %q; want 125 and a message naming the command", status, out)
		}
	})
}

// exitStatus turns cmd.Run's error into an exit status.
func exitStatus(t *testing.T, err error) int {
	t.Helper()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.ExitCode()
	default:
		t.Fatalf("run vm.sh: %v", err)
		return -1
	}
}
