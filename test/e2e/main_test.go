//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// Set up by TestMain.
var (
	// repoRoot is the repository's top directory.
	repoRoot string
	// fwopenBin is test/e2e/fwopen built for the guest.
	fwopenBin string
	// workDir holds what the tests build on the host; removed at the end.
	workDir string
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	root, err := filepath.Abs("../..")
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: find the repository: %v\n", err)
		return 1
	}
	repoRoot = root
	tmp, err := os.MkdirTemp("", "filewatcher-e2e-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		return 1
	}
	defer os.RemoveAll(tmp)
	workDir = tmp
	if len(kernels()) == 0 {
		fmt.Fprintln(os.Stderr, "e2e: set FILEWATCHER_E2E_KERNELS to the kernels to boot, e.g. \"6.1 7.3\" (make test-e2e sets it from E2E_KERNELS)")
		return 1
	}
	fwopenBin = filepath.Join(tmp, "fwopen")
	build := exec.Command("go", "build", "-trimpath", "-o", fwopenBin, "./test/e2e/fwopen")
	build.Dir = repoRoot
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOARCH="+guestArch())
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: build fwopen: %v\n%s", err, out)
		return 1
	}
	stop := downOnSignal()
	defer stop()
	return m.Run()
}

// running holds the names of the VMs this process has up, so that an
// interrupted run still stops them (t.Cleanup does not run then).
var running sync.Map

// downOnSignal stops every running VM when SIGINT or SIGTERM arrives, then
// exits. The returned function stops listening.
func downOnSignal() func() {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		sig, ok := <-sigs
		if !ok {
			return
		}
		fmt.Fprintf(os.Stderr, "e2e: %v: stopping the VMs\n", sig)
		running.Range(func(name, _ any) bool {
			vmsh("down", "--name", name.(string)).Run()
			return true
		})
		os.Exit(1)
	}()
	return func() { signal.Stop(sigs); close(sigs) }
}

// kernels are the guest kernels to test, from FILEWATCHER_E2E_KERNELS: the
// series or releases test/vm/kernels.sh takes. The Makefile's E2E_KERNELS
// and E2E_ARM64_KERNELS are the matrix make test runs.
func kernels() []string {
	return strings.Fields(os.Getenv("FILEWATCHER_E2E_KERNELS"))
}

// kernelList returns the kernels the environment variable env lists, for a
// test that boots kernels of its own; it fails the test when env is empty
// (make test-e2e sets it from the Makefile variable makeVar).
func kernelList(t *testing.T, env, makeVar string) []string {
	t.Helper()
	ks := strings.Fields(os.Getenv(env))
	if len(ks) == 0 {
		t.Fatalf("set %s to the kernels this test boots (make test-e2e sets it from %s)", env, makeVar)
	}
	return ks
}

// guestArch is the guests' architecture, from FILEWATCHER_E2E_ARCH (default:
// the host's, so an arm64 host boots arm64 guests and needs no x86 toolchain).
func guestArch() string {
	if v := os.Getenv("FILEWATCHER_E2E_ARCH"); v != "" {
		return v
	}
	return runtime.GOARCH
}

// forEachKernel runs f as a subtest per kernel, each with its own VM.
func forEachKernel(t *testing.T, f func(t *testing.T, kernel string)) {
	for _, k := range kernels() {
		t.Run(guestArch()+"/"+k, func(t *testing.T) { f(t, k) })
	}
}
