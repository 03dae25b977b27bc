// Package e2e holds the kernel end-to-end tests of filewatcher. For each
// kernel, one guest boot (test/vm/vm.sh up --no-loader) runs TestKernel: the
// seed's walkthrough with the module loaded by hand (insmod, trace_pipe,
// rmmod); the loader refusing, before inserting or attaching anything, a
// module built for another kernel, a kernel without BTF, an open function of
// another prototype (in a module file and in a loaded module) and a
// tracepoint laid out otherwise; then, with the loader started, the exact
// events streamed to the host over gRPC for a scripted set of file
// operations, the seed's ftrace line, GetStatus, and the TypeScript exporter
// (exporter/dist/main.js, built by `make exporter`) on the host against the
// guest's loader: the seed's `curl .../metrics | grep file_created`
// walkthrough, the exact series and escaping of odd names (checked by
// promtool), and the exporter side by side with filtered gRPC subscribers;
// then, with each probe, the chaos suite (chaos_test.go): a subscriber that
// stops reading, a ring that overflows while the loader is stopped, an
// exporter stopped and continued, an exporter killed and its successor
// resuming from its state file, the loader killed mid-storm and while idle
// and handed over, its successor taking the pinned run over, each
// reconciled exactly as created = delivered + reported lost. They are built only with the e2e tag:
//
//	FILEWATCHER_E2E_KERNELS="5.10 7.3" go test -tags e2e -count=1 -v ./test/e2e/
//
// FILEWATCHER_E2E_KERNELS (required: the series or releases
// test/vm/kernels.sh takes; make test-e2e sets it from E2E_KERNELS) picks
// the kernels and FILEWATCHER_E2E_ARCH (amd64 or arm64; default the host's)
// their architecture. Subtests are named TestKernel/ARCH/KERNEL/.... A test
// that cannot boot its VM fails; none is ever skipped. See test/vm/README.md.
package e2e
