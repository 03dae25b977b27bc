//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	fwv1 "github.com/filewatcher/filewatcher/proto/filewatcher/v1"
	"github.com/filewatcher/filewatcher/test/vm/agent/vmagent"
)

// vmTTL bounds a VM's life even if the test binary dies without cleaning up
// (a go test -timeout panic or SIGKILL skips t.Cleanup). A kernel's tests
// take a minute or two.
const vmTTL = 20 * time.Minute

// vmName matches what vm.sh does not take in a VM's name.
var vmName = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// guest is a VM booted by test/vm/vm.sh for one test.
type guest struct {
	name    string
	kernel  string
	release string
	agent   vmagent.Client
	// addr is the loader's gRPC address on the host, 127.0.0.1:PORT, and
	// client a gRPC client of it.
	addr   string
	client fwv1.EventServiceClient
}

// bootGuest boots a VM with vm.sh up and stops it when t ends. fwopen is in
// the guest's PATH. extra goes to vm.sh up (for example --no-loader).
func bootGuest(t *testing.T, kernel string, extra ...string) *guest {
	t.Helper()
	name := fmt.Sprintf("e2e-%s-%s-%d", guestArch(), strings.ReplaceAll(kernel, ".", "_"), os.Getpid())
	if len(extra) > 0 {
		name += "-" + vmName.ReplaceAllString(strings.Trim(strings.Join(extra, "_"), "-"), "_")
	}
	args := append([]string{"up", "--kernel", kernel, "--arch", guestArch(), "--name", name,
		"--ttl", fmt.Sprint(int(vmTTL.Seconds())), "--add", fwopenBin + ":/usr/local/bin/fwopen"}, extra...)
	start := time.Now()
	var stdout, stderr bytes.Buffer
	up := vmsh(args...)
	up.Stdout, up.Stderr = &stdout, &stderr
	// Registered before starting: a half-started VM is stopped too.
	running.Store(name, true)
	t.Cleanup(func() {
		stopGuest(t, name)
		running.Delete(name)
	})
	if err := up.Run(); err != nil {
		t.Fatalf("vm.sh %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	t.Logf("kernel %s up in %.1fs\n%s", kernel, time.Since(start).Seconds(), stderr.String())
	g := &guest{name: name, kernel: kernel, agent: vmagent.Client{Addr: vmshOutput(t, "addr", "--name", name, "--agent")}}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rel, err := g.agent.Ping(ctx)
	if err != nil {
		t.Fatalf("ping the guest agent: %v", err)
	}
	g.release = rel
	// The loader's forwarded port answers once a loader listens in the
	// guest: with --no-loader, after g.startLoader.
	addr := strings.TrimSpace(stdout.String())
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("grpc client for %s: %v", addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	g.addr, g.client = addr, fwv1.NewEventServiceClient(conn)
	return g
}

// startLoader starts the loader in a guest booted with --no-loader, as init
// would have (the guest's start-loader, which loads the module the harness
// built), with args added, and waits until it answers GetStatus from the
// host.
func (g *guest) startLoader(t *testing.T, args ...string) {
	t.Helper()
	g.run(t, 0, argv(append([]string{"start-loader"}, args...)...))
	started := time.Now()
	deadline := started.Add(2 * time.Minute)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := g.client.GetStatus(ctx, &fwv1.GetStatusRequest{})
		cancel()
		if err == nil {
			return
		}
		// start-loader starts it in the background: give it a moment to
		// appear before taking its absence for an exit.
		gone := time.Since(started) > 3*time.Second &&
			strings.TrimSpace(string(g.sh(t, "pidof filewatcher-loader >/dev/null || echo gone"))) == "gone"
		if gone || time.Now().After(deadline) {
			t.Fatalf("the loader does not answer GetStatus (%v); its log:\n%s", err, g.sh(t, "tail -n 40 /var/log/filewatcher-loader.log"))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// stopGuest shows the guest's logs when the test failed, then stops it.
func stopGuest(t *testing.T, name string) {
	if t.Failed() {
		logs, _ := vmsh("logs", "--name", name).CombinedOutput()
		t.Logf("vm.sh logs --name %s:\n%s", name, tail(logs, 120))
	}
	// A failed test keeps the VM's state folder (console log, initramfs).
	args := []string{"down", "--name", name}
	if !t.Failed() {
		args = append(args, "--clean")
	}
	if out, err := vmsh(args...).CombinedOutput(); err != nil {
		t.Errorf("vm.sh %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// run executes argv in the guest and fails the test if it cannot be run or
// exits with another status than want.
func (g *guest) run(t *testing.T, want int, req vmagent.Request) vmagent.Response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	resp, err := g.agent.Exec(ctx, req)
	if err != nil {
		t.Fatalf("guest exec %q: %v", req.Argv, err)
	}
	if resp.ExitCode != want {
		t.Fatalf("guest exec %q: exit %d, want %d\nstdout: %s\nstderr: %s", req.Argv, resp.ExitCode, want, resp.Stdout, resp.Stderr)
	}
	return resp
}

// sh runs a busybox shell script in the guest and returns its stdout; it must
// exit 0.
func (g *guest) sh(t *testing.T, script string) []byte {
	t.Helper()
	return g.run(t, 0, vmagent.Request{Argv: vmagent.Args("sh", "-c", script)}).Stdout
}

// vmsh is a vm.sh command, in the same cache as the test's VMs.
func vmsh(args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(repoRoot, "test/vm/vm.sh"), args...)
	cmd.Dir = repoRoot
	return cmd
}

func vmshOutput(t *testing.T, args ...string) string {
	t.Helper()
	out, err := vmsh(args...).Output()
	if err != nil {
		t.Fatalf("vm.sh %s: %v", strings.Join(args, " "), err)
	}
	return strings.TrimSpace(string(out))
}

// tail keeps the last n lines of b.
func tail(b []byte, n int) []byte {
	lines := bytes.SplitAfter(b, []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return bytes.Join(lines, nil)
}
