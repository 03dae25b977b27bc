// Package deploy holds the end-to-end tests of filewatcher's deployment files
// (deploy/, docker-compose.yml): a Debian bookworm guest booted under systemd
// in qemu with the units installed by deploy/install.sh, and a real Prometheus
// scraping its exporter. They are built only with the e2e tag:
//
//	go test -tags e2e -count=1 -v ./test/deploy/
//
// check.sh next to this file runs the static checks (systemd-analyze verify,
// promtool, docker-compose config) that need no VM. See deploy/README.md.
package deploy
