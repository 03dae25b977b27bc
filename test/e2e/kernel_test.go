//go:build e2e

package e2e

import "testing"

// TestKernel runs the whole kernel suite on each kernel in one boot (booting
// is most of a guest's cost under TCG): the guest comes up without the
// loader; the seed's walkthrough loads and unloads the module by hand; the
// loader is made to refuse every module, kernel and tracepoint that does not
// fit, each before anything is inserted or attached; then the loader runs
// with each probe in turn (testProbes), and the host checks the exact events
// of a scripted set of file operations, GetStatus and, with the module, the
// seed's ftrace line and the TypeScript exporter against it.
func TestKernel(t *testing.T) {
	forEachKernel(t, func(t *testing.T, kernel string) {
		g := bootGuest(t, kernel, "--no-loader")
		t.Run("vm.sh exec", func(t *testing.T) { testVMExec(t, g) })
		t.Run("walkthrough", func(t *testing.T) { testWalkthrough(t, g) })
		t.Run("refusals", func(t *testing.T) { testRefusals(t, g) })
		testProbes(t, g)
	})
}
