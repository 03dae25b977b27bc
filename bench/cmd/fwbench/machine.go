package main

import (
	"context"
	"os"
	"runtime"
	"strings"
	"time"
)

// Machine describes where the numbers were measured.
type Machine struct {
	CPU          string
	Cores        int
	MemoryGB     float64
	OS           string
	Kernel       string
	Go           string
	Node         string
	Qemu         string
	Bpftrace     string
	Fsnotifywait string
	Commit       string
	Date         string
	LoadAvg      []string // the machine is shared: how busy it was around the run
}

func (b *Bench) machine(ctx context.Context) Machine {
	m := Machine{Cores: runtime.NumCPU(), Date: time.Now().UTC().Format("2006-01-02 15:04 UTC")}
	if s, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(s), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if s, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb float64
		for _, line := range strings.Split(string(s), "\n") {
			if strings.HasPrefix(line, "MemTotal:") {
				f := strings.Fields(line)
				if len(f) >= 2 {
					kb = parseFloat(f[1])
				}
			}
		}
		m.MemoryGB = kb / (1 << 20)
	}
	if s, err := os.ReadFile("/etc/os-release"); err == nil {
		for _, line := range strings.Split(string(s), "\n") {
			if v, ok := strings.CutPrefix(line, "PRETTY_NAME="); ok {
				m.OS = strings.Trim(v, `"`)
			}
		}
	}
	first := func(argv ...string) string {
		out, err := run(ctx, 30*time.Second, argv...)
		if err != nil {
			return "not available"
		}
		return strings.TrimSpace(strings.Split(out, "\n")[0])
	}
	m.Kernel = first("uname", "-r")
	m.Go = first("go", "version")
	m.Node = first("node", "--version")
	m.Qemu = first("qemu-system-x86_64", "--version")
	m.Bpftrace = first("bpftrace", "--version")
	m.Fsnotifywait = first("dpkg-query", "-W", "-f=inotify-tools ${Version}", "inotify-tools")
	m.Commit = first("git", "-C", b.repo, "describe", "--always", "--dirty")
	m.LoadAvg = []string{"at start: " + loadAvg()}
	return m
}

func loadAvg() string {
	s, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(s))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func parseFloat(s string) float64 {
	var v float64
	for _, c := range s {
		if c < '0' || c > '9' {
			break
		}
		v = v*10 + float64(c-'0')
	}
	return v
}
