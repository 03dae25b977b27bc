// Package e2e holds the kernel end-to-end tests of filewatcher: for each
// Debian kernel they boot a guest with test/vm/vm.sh (module + loader), create
// files in it and assert the exact events streamed to the host over gRPC, plus
// the seed's ftrace check. They are built only with the e2e tag:
//
//	FILEWATCHER_E2E_KERNELS="6.1 6.12" go test -tags e2e -count=1 -v ./test/e2e/
//
// FILEWATCHER_E2E_KERNELS (default "6.1 6.12") picks the kernels and
// FILEWATCHER_E2E_ARCH (default amd64) their architecture. A test that cannot
// boot its VM fails; none is ever skipped. See test/vm/README.md.
package e2e
