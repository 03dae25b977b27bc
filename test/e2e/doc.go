// Package e2e holds the kernel end-to-end tests of filewatcher: for each
// Debian kernel they boot a guest with test/vm/vm.sh (module + loader), create
// files in it and assert the exact events streamed to the host over gRPC, plus
// the seed's ftrace check. Then they run the TypeScript exporter
// (exporter/dist/main.js, built by `npm run build` or `make exporter`) on the
// host against the guest's loader: the seed's `curl .../metrics | grep
// file_created` walkthrough, the exact series and escaping of odd names
// (checked by promtool), and the exporter side by side with filtered gRPC
// subscribers. They are built only with the e2e tag:
//
//	FILEWATCHER_E2E_KERNELS="6.1 6.12" go test -tags e2e -count=1 -v ./test/e2e/
//
// FILEWATCHER_E2E_KERNELS (default "6.1 6.12") picks the kernels and
// FILEWATCHER_E2E_ARCH (amd64 or arm64; default the host's) their
// architecture. A test that cannot boot its VM fails; none is ever skipped.
// See test/vm/README.md.
package e2e
