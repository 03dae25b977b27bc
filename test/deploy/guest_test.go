//go:build e2e

package deploy

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/filewatcher/filewatcher/test/vm/agent/vmagent"
)

// Ports inside the guest: the agent (payload.sh's unit) and the exporter
// (filewatcher.env edited to 0.0.0.0:8080).
const (
	guestAgentPort    = 50100
	guestExporterPort = 8080
)

// repoRoot is the repository, two levels above this package.
func repoRoot(t *testing.T) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Clean(filepath.Join(wd, "..", ".."))
}

// run runs a host command in dir and fails the test with its output if it fails.
func run(t *testing.T, dir string, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\nstdout:\n%s\nstderr:\n%s", name, strings.Join(args, " "), err, out.String(), errb.String())
	}
	return strings.TrimSpace(out.String())
}

func requireTools(t *testing.T, tools ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("the systemd guest e2e needs root (debootstrap, chroot, mke2fs -d of root-owned files): run as root")
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: run make setup", tool)
		}
	}
}

// freePorts returns n distinct TCP ports free on 127.0.0.1 right now.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	ports, err := vmagent.FreePorts(n)
	if err != nil {
		t.Fatal(err)
	}
	return ports
}

// startProcess starts cmd so that it dies with this test process (Pdeathsig:
// even a test binary killed by its timeout takes it along), and registers a
// cleanup that kills it and waits. It returns a channel closed at exit.
func startProcess(t *testing.T, cmd *exec.Cmd) <-chan struct{} {
	t.Helper()
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", cmd.Path, err)
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		close(done)
	}()
	t.Cleanup(func() {
		select {
		case <-done:
			return
		default:
		}
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
	})
	return done
}

// guest is a booted systemd guest.
type guest struct {
	agent        vmagent.Client
	exporterAddr string // 127.0.0.1:PORT forwarded to the guest's exporter
	console      string // path of the serial console log
	done         <-chan struct{}
}

// bootGuest boots qemu with the cached root image and the per-run payload,
// with the agent and exporter ports forwarded to free loopback ports.
func bootGuest(t *testing.T, guestDir, payload, work string) *guest {
	t.Helper()
	for attempt := 1; ; attempt++ {
		ports := freePorts(t, 2)
		g := &guest{
			agent:        vmagent.Client{Addr: fmt.Sprintf("127.0.0.1:%d", ports[0])},
			exporterAddr: fmt.Sprintf("127.0.0.1:%d", ports[1]),
			console:      filepath.Join(work, "console.log"),
		}
		os.Remove(g.console)
		stderr := filepath.Join(work, "qemu.stderr")
		errf, err := os.Create(stderr)
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("qemu-system-x86_64",
			// TCG: KVM hangs on these machines (notes/kernel-vm-testing.md).
			// One thread for both vCPUs, as test/vm/vm.sh does and for the
			// same reason: multi-threaded TCG lets x86 guests hit stale int3s
			// of static-branch patching (a tracepoint switched on or off).
			"-accel", "tcg,thread=single", "-cpu", "max", "-smp", "2", "-m", "2048",
			"-nodefaults", "-display", "none", "-no-reboot",
			"-kernel", filepath.Join(guestDir, "vmlinuz"),
			"-initrd", filepath.Join(guestDir, "initrd.cpio.gz"),
			"-append", "console=ttyS0 rw panic=-1",
			// Both disks read-only: the initramfs stacks them with overlayfs over a tmpfs.
			"-drive", "file="+filepath.Join(guestDir, "rootfs.img")+",if=virtio,format=raw,readonly=on",
			"-drive", "file="+payload+",if=virtio,format=raw,readonly=on",
			// restrict=on: the guest reaches nothing; the host only its own loopback.
			"-netdev", fmt.Sprintf("user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:%d-:%d,hostfwd=tcp:127.0.0.1:%d-:%d",
				ports[0], guestAgentPort, ports[1], guestExporterPort),
			"-device", "virtio-net-pci,netdev=n0",
			"-serial", "file:"+g.console,
		)
		cmd.Stderr = errf
		g.done = startProcess(t, cmd)
		// A port taken between freePorts and qemu's bind makes qemu exit at once.
		select {
		case <-g.done:
			errf.Close()
			msg, _ := os.ReadFile(stderr)
			if attempt < 3 && bytes.Contains(msg, []byte("hostfwd")) {
				t.Logf("qemu could not bind a forwarded port, retrying: %s", msg)
				continue
			}
			t.Fatalf("qemu exited at start: %s", msg)
		case <-time.After(2 * time.Second):
		}
		t.Cleanup(func() { errf.Close() })
		return g
	}
}

// consoleTail is the end of the serial console, for failure messages.
func (g *guest) consoleTail(n int) string {
	b, _ := os.ReadFile(g.console)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// waitAgent waits until the guest's agent answers.
func (g *guest) waitAgent(t *testing.T, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		select {
		case <-g.done:
			t.Fatalf("qemu exited before the agent answered; console:\n%s", g.consoleTail(60))
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		_, err := g.agent.Ping(ctx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("guest agent did not answer within %v: %v; console:\n%s", timeout, err, g.consoleTail(60))
		}
		time.Sleep(time.Second)
	}
}

// sh runs script with /bin/sh in the guest and returns stdout, stderr and
// the exit code.
func (g *guest) sh(t *testing.T, script string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	resp, err := g.agent.Exec(ctx, vmagent.Request{Argv: vmagent.Args("/bin/sh", "-c", script), TimeoutMS: 110_000})
	if err != nil {
		t.Fatalf("guest: %q: %v", script, err)
	}
	return string(resp.Stdout), string(resp.Stderr), resp.ExitCode
}

// must runs script in the guest and fails the test unless it exits 0.
func (g *guest) must(t *testing.T, script string) string {
	t.Helper()
	out, errOut, code := g.sh(t, script)
	if code != 0 {
		t.Fatalf("guest: %q exited %d\nstdout:\n%s\nstderr:\n%s", script, code, out, errOut)
	}
	return strings.TrimSpace(out)
}

// eventually retries check every interval until it returns nil or timeout
// passes, then fails with the last error.
func eventually(t *testing.T, timeout, interval time.Duration, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, timeout, err)
		}
		time.Sleep(interval)
	}
}

// httpGet returns the body of a 200 answer.
func httpGet(url string) (string, error) {
	client := http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return string(body), fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return string(body), nil
}

// sample is one line of the Prometheus text format.
type sample struct {
	name   string
	labels map[string]string
	value  float64
}

var (
	sampleLine = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)`)
	labelPair  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"`)
)

// parseMetrics reads the samples of the text exposition format.
func parseMetrics(text string) []sample {
	var out []sample
	for _, line := range strings.Split(text, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		m := sampleLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		v, err := strconv.ParseFloat(m[3], 64)
		if err != nil {
			continue
		}
		s := sample{name: m[1], labels: map[string]string{}, value: v}
		for _, p := range labelPair.FindAllStringSubmatch(m[2], -1) {
			uq, err := strconv.Unquote(`"` + p[2] + `"`)
			if err != nil {
				uq = p[2]
			}
			s.labels[p[1]] = uq
		}
		out = append(out, s)
	}
	return out
}

// find returns the value of the sample named name whose labels include want.
func find(samples []sample, name string, want map[string]string) (float64, bool) {
	for _, s := range samples {
		if s.name != name {
			continue
		}
		match := true
		for k, v := range want {
			if s.labels[k] != v {
				match = false
				break
			}
		}
		if match {
			return s.value, true
		}
	}
	return 0, false
}

// sum adds the values of every sample named name (all label sets).
func sum(samples []sample, name string) float64 {
	var total float64
	for _, s := range samples {
		if s.name == name {
			total += s.value
		}
	}
	return total
}
