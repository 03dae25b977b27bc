# filewatcher — every file created on a Linux host becomes live telemetry.
#
# `make help` lists the targets. The two commands a new user needs:
#   make demo   run the whole pipeline (natively where this host can run a probe, or in a VM where it cannot)
#   make test   run every test (installs what is missing first)

SHELL := /bin/bash
.DEFAULT_GOAL := all

# Kernel headers to build the module against (the running kernel by default).
KDIR ?= /lib/modules/$(shell uname -r)/build
# Where the loader and the exporter meet when run by make run-ebpftracer.
RUN_DIR ?= $(CURDIR)/.cache/run
# How much each fuzz target runs in make test, as an execution count (Nx), about 10 s each
# here. Not a duration: with -fuzztime 10s, Go 1.26's fuzz coordinator races its own
# deadline and now and then fails a target with a bare "context deadline exceeded" and no
# failing input (golang/go#75804, fixed in Go 1.27; seen here on FuzzSubscribeRequest).
FUZZ_GLOB_EXECS ?= 150000x
FUZZ_FILTER_EXECS ?= 100000x
FUZZ_SUBSCRIBE_EXECS ?= 20000x
# Kernels the VM end-to-end tests boot, amd64: series (test/vm/kernels.sh list)
# or Debian cloud kernel releases.
E2E_KERNELS ?= 5.10 6.1 6.12 7.2 7.3
# ... and the arm64 kernels (qemu-system-aarch64 -M virt; empty: no arm64 guests).
E2E_ARM64_KERNELS ?= 5.10 6.1 6.12 7.2 7.3
# Kernels booted with lockdown=integrity (as under Secure Boot): the module is refused and
# --probe auto runs the eBPF-only probe (on arm64 only from 6.4, hence other kernels).
E2E_LOCKDOWN_KERNELS ?= 6.1 7.3
E2E_ARM64_LOCKDOWN_KERNELS ?= 6.12 7.3
# Generic (not cloud) kernels booted with a 9p share: a file system that finishes creates in
# ->atomic_open, which the eBPF-only probe must wait for.
E2E_9P_KERNELS ?= 6.1-generic
E2E_ARM64_9P_KERNELS ?= 6.12-generic
# Kernels (amd64) the fleet tests boot: guest → exporter → OTLP → real Collectors → file, Prometheus.
E2E_FLEET_KERNELS ?= 6.12

GO ?= go
BIN := bin
LOADER := $(BIN)/filewatcher-loader
TAIL := $(BIN)/filewatcher-tail
LOADER_SRC := $(shell find loader-go proto -name '*.go' -o -name '*.o' 2>/dev/null) go.mod go.sum

.PHONY: help
help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: setup
setup: ## install every system package, Go module and npm package the project needs (idempotent)
	@scripts/setup.sh

.PHONY: all
ifeq ($(ARCH),arm64)
all: cross-arm64
else
all: loader exporter kmod-if-headers ## build everything: loader, exporter, and the module where kernel headers exist (ARCH=arm64: see cross-arm64)
endif

# make ARCH=arm64 (= make cross-arm64): the module, built against Debian's cloud-arm64 6.1 headers from
# the kernel cache (test/vm/kernels.sh) unless KDIR is given, and the static loader and tail, into bin/linux-arm64/.
.PHONY: cross-arm64
cross-arm64: ## cross-build for arm64 into bin/linux-arm64/: filewatcher.ko (KDIR=arm64 headers, default Debian's 6.1 cloud-arm64) + static loader and tail
	KDIR="$(if $(filter command line environment,$(origin KDIR)),$(KDIR))" scripts/cross-arm64.sh

.PHONY: loader
loader: $(LOADER) $(TAIL) ## build the static binaries bin/filewatcher-loader and bin/filewatcher-tail

$(BIN)/%: $(LOADER_SRC)
	CGO_ENABLED=0 $(GO) build -trimpath -o $@ ./loader-go/cmd/$*

.PHONY: exporter
exporter: ## build the TypeScript exporter into exporter/dist
	npm run --silent build

.PHONY: kmod
kmod: ## build kmod/filewatcher.ko against KDIR (default: the running kernel's headers)
	@test -e "$(KDIR)/Makefile" || { echo "kmod: no kernel headers at $(KDIR): run make setup, or pass KDIR=/path/to/headers" >&2; exit 1; }
	$(MAKE) -C kmod KDIR=$(KDIR)

.PHONY: kmod-if-headers
kmod-if-headers:
	@if [ -e "$(KDIR)/Makefile" ]; then $(MAKE) -C kmod KDIR=$(KDIR); \
	else echo "note: no kernel headers at $(KDIR): module not built here (make demo and make test build it for their VM kernels)"; fi

.PHONY: generate
generate: ## regenerate the eBPF object (bpf2go), protobuf Go code and TypeScript types (needs clang, protoc)
	$(GO) generate ./loader-go/...
	proto/generate.sh
	npm run --silent gen:types

.PHONY: insmod
insmod: kmod ## load the module into the running kernel (needs root and module support)
	insmod kmod/filewatcher.ko

.PHONY: rmmod
rmmod: ## unload the module from the running kernel
	rmmod filewatcher

.PHONY: run-ebpftracer
run-ebpftracer: loader exporter ## run the loader (loads the module and eBPF program) and the exporter on :8080, as in the seed
	@scripts/run-ebpftracer.sh "$(RUN_DIR)"

.PHONY: demo
demo: setup ## run the whole pipeline with one command (natively where a probe runs here, else in a qemu guest)
	@scripts/demo.sh

PREFIX ?= /usr/local
DESTDIR ?=

.PHONY: install
install: loader exporter kmod-if-headers ## install loader, exporter, module and systemd units (PREFIX=/usr/local, DESTDIR=)
	deploy/install.sh install PREFIX="$(PREFIX)" DESTDIR="$(DESTDIR)"

.PHONY: uninstall
uninstall: ## stop, disable and remove what make install installed
	deploy/install.sh uninstall PREFIX="$(PREFIX)" DESTDIR="$(DESTDIR)"

.PHONY: lint
lint: ## formatters and linters: gofmt, go vet, tsc, eslint, prettier, buf lint/breaking, BPF object up to date, shell syntax
	@out=$$(gofmt -l loader-go proto test bench internal); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet -tags e2e ./...
	npm run --silent lint
	proto/check.sh
	scripts/check-bpf-object.sh
	@for f in $$(git ls-files '*.sh' .ci/run); do bash -n "$$f" || exit 1; done

.PHONY: test-unit
test-unit: loader ## Go and TypeScript unit and integration tests (no VM)
	$(GO) test -count=1 ./...
	$(GO) test -count=1 -race ./loader-go/...
	$(GO) test -run '^$$' -fuzz '^FuzzGlob$$' -fuzztime $(FUZZ_GLOB_EXECS) ./loader-go/internal/filter
	$(GO) test -run '^$$' -fuzz '^FuzzFilter$$' -fuzztime $(FUZZ_FILTER_EXECS) ./loader-go/internal/filter
	$(GO) test -run '^$$' -fuzz '^FuzzSubscribeRequest$$' -fuzztime $(FUZZ_SUBSCRIBE_EXECS) ./loader-go/internal/server
	npm test

# Both architectures' guests boot side by side: a TCG guest runs on one host
# thread, so on two cores the matrix takes about as long as its slower lane.
# arm64 guests are the slower (TestKernel alone takes longer than the whole
# amd64 suite), so test-e2e runs two lanes of about equal length: lane 1 the
# amd64 suite and then arm64's lockdown and 9p guests, lane 2 arm64's
# TestKernel. test-e2e-amd64 and test-e2e-arm64 run one architecture whole.
# Each lane's output is shown whole when it ends (--output-sync) and
# followed live in .cache/e2e-*.log. The tests' own module builds (make -C
# kmod) must not see this make's jobserver, which they cannot reach: its
# warning would fail their warnings-are-errors check.
E2E_LOG_DIR ?= $(CURDIR)/.cache
E2E_TIMEOUT ?= 50m

.PHONY: test-e2e
test-e2e: loader exporter ## end-to-end tests on real Debian kernels in qemu (E2E_KERNELS amd64 and E2E_ARM64_KERNELS arm64, side by side)
	@$(MAKE) --no-print-directory -j2 --output-sync=target e2e-lane-1 e2e-lane-2

.PHONY: test-e2e-amd64 test-e2e-arm64 e2e-lane-1 e2e-lane-2
test-e2e-amd64: loader exporter ## the amd64 guests of test-e2e
	$(call e2e,amd64,$(E2E_KERNELS),$(E2E_LOCKDOWN_KERNELS),$(E2E_9P_KERNELS),.,amd64)
test-e2e-arm64: loader exporter ## the arm64 guests of test-e2e
	$(call e2e,arm64,$(E2E_ARM64_KERNELS),$(E2E_ARM64_LOCKDOWN_KERNELS),$(E2E_ARM64_9P_KERNELS),.,arm64)
e2e-lane-1: loader exporter
	$(call e2e,amd64,$(E2E_KERNELS),$(E2E_LOCKDOWN_KERNELS),$(E2E_9P_KERNELS),.,amd64)
	$(call e2e,arm64,$(if $(strip $(E2E_ARM64_KERNELS)),$(E2E_ARM64_LOCKDOWN_KERNELS)),$(E2E_ARM64_LOCKDOWN_KERNELS),$(E2E_ARM64_9P_KERNELS),^(TestLockdown|TestAtomicOpen)$$,arm64-lockdown-9p)
e2e-lane-2: loader exporter
	$(call e2e,arm64,$(E2E_ARM64_KERNELS),,,^TestKernel$$,arm64)

# e2e ARCH,KERNELS,LOCKDOWN_KERNELS,9P_KERNELS,RUN,LOG: the tests matching RUN
# (go test -run) on one architecture's guests, logged to .cache/e2e-LOG.log
# (nothing when KERNELS is empty). TestMain needs KERNELS even when RUN
# selects only TestLockdown and TestAtomicOpen.
define e2e
$(if $(strip $(2)),@mkdir -p $(E2E_LOG_DIR) && set -o pipefail && \
	env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL FILEWATCHER_E2E_ARCH=$(1) FILEWATCHER_E2E_KERNELS="$(2)" FILEWATCHER_E2E_LOCKDOWN_KERNELS="$(3)" FILEWATCHER_E2E_9P_KERNELS="$(4)" \
	$(GO) test -tags e2e -count=1 -timeout $(E2E_TIMEOUT) -v -run '$(5)' -skip '^TestFleet$$' ./test/e2e/ 2>&1 | tee $(E2E_LOG_DIR)/e2e-$(6).log || \
	{ echo "test-e2e ($(6)) failed; what its failed tests said:"; $(GO) run ./test/e2e/failures $(E2E_LOG_DIR)/e2e-$(6).log; exit 1; },@echo "test-e2e: no $(1) kernels")
endef

.PHONY: test-fleet
test-fleet: loader exporter ## OTLP: guest events → exporter → real Collectors (built by make setup) → file and Prometheus remote write; outages and restarts
	FILEWATCHER_E2E_ARCH=amd64 FILEWATCHER_E2E_KERNELS="$(E2E_FLEET_KERNELS)" FILEWATCHER_E2E_FLEET_KERNELS="$(E2E_FLEET_KERNELS)" $(GO) test -tags e2e -count=1 -timeout 20m -v -run '^TestFleet$$' ./test/e2e/

.PHONY: test-deploy
test-deploy: loader exporter ## deployment: systemd-analyze/promtool/compose checks, Helm chart (lint, strict schemas), systemd guest + Prometheus e2e
	test/deploy/check.sh
	test/deploy/helm-check.sh
	$(GO) test -tags e2e -count=1 -timeout 20m -v ./test/deploy/

.PHONY: bench
bench: setup loader exporter ## measure throughput, overhead and cost (host + qemu guest) and write BENCHMARKS.md
	FWBENCH_LOADER=$(LOADER) bench/run.sh

.PHONY: bench-smoke
bench-smoke: loader exporter ## run every benchmark once with tiny counts: checks the machinery, never timing
	FWBENCH_LOADER=$(LOADER) bench/run.sh --smoke

.PHONY: test
test: setup lint test-unit test-e2e test-fleet test-deploy bench-smoke ## run every test (installs what is missing first)

.PHONY: clean
clean: ## remove build outputs (keeps the cache of kernels and chroots, outside the clone: test/vm/cache.sh)
	rm -rf $(BIN) exporter/dist
	-$(MAKE) -C kmod clean KDIR=$(KDIR) 2>/dev/null
