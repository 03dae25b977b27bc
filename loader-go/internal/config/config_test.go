package config

import (
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/filewatcher/filewatcher/loader-go/internal/hub"
	"github.com/filewatcher/filewatcher/loader-go/internal/server"
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestDefaults(t *testing.T) {
	c, err := Parse(nil, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != DefaultListen || c.Source != SourceKernel || c.Probe != ProbeAuto || c.RingbufSize != 16<<20 ||
		c.LogLevel != slog.LevelInfo || c.LogFormat != "text" || c.ShutdownTimeout != 5*time.Second ||
		c.MaxSubscribers != server.DefaultMaxSubscribers || len(c.AllowUIDs) != 0 || c.SocketGroup != "" ||
		c.MaxSubscribersPerPeer != server.DefaultMaxSubscribersPerPeer || c.StallTimeout != time.Minute ||
		c.QueueBytes != hub.DefaultQueueBytes || c.ReplayBytes != hub.DefaultReplayBytes {
		t.Errorf("defaults = %+v", c)
	}
}

func TestFlagsAndEnv(t *testing.T) {
	tests := []struct {
		name  string
		args  []string
		env   map[string]string
		check func(Config) bool
	}{
		{"env sets", nil, map[string]string{"FILEWATCHER_LISTEN": "127.0.0.1:1", "FILEWATCHER_ALLOW_INSECURE_TCP": "true"},
			func(c Config) bool { return c.Listen == "127.0.0.1:1" && c.AllowInsecureTCP }},
		{"flag wins", []string{"--listen", "127.0.0.1:2"}, map[string]string{"FILEWATCHER_LISTEN": "127.0.0.1:1"},
			func(c Config) bool { return c.Listen == "127.0.0.1:2" }},
		{"snake case", nil, map[string]string{"FILEWATCHER_MODULE_PARAMS": "maxactive=4096", "FILEWATCHER_RINGBUF_SIZE": "65536"},
			func(c Config) bool { return c.ModuleParams == "maxactive=4096" && c.RingbufSize == 65536 }},
		{"log level", []string{"--log-level=debug", "--log-format=json"}, nil,
			func(c Config) bool { return c.LogLevel == slog.LevelDebug && c.LogFormat == "json" }},
		{"log level env", nil, map[string]string{"FILEWATCHER_LOG_LEVEL": "warn"},
			func(c Config) bool { return c.LogLevel == slog.LevelWarn }},
		{"probe", []string{"--probe", "bpf"}, nil, func(c Config) bool { return c.Probe == ProbeBPF }},
		{"bounds", []string{"--stall-timeout=0", "--subscriber-queue-bytes=1048576", "--max-subscribers-per-peer=2"},
			map[string]string{"FILEWATCHER_REPLAY_BUFFER_BYTES": "65536"},
			func(c Config) bool {
				return c.StallTimeout == 0 && c.QueueBytes == 1<<20 && c.MaxSubscribersPerPeer == 2 && c.ReplayBytes == 65536
			}},
		{"probe env", nil, map[string]string{"FILEWATCHER_PROBE": "kmod"}, func(c Config) bool { return c.Probe == ProbeKmod }},
		{"synthetic", []string{"--source", "synthetic", "--rate", "0", "--synthetic-dirs", "3"}, nil,
			func(c Config) bool { return c.Source == SourceSynthetic && c.Rate == 0 && c.SyntheticDirs == 3 }},
		{"allowlists", []string{"--allow-uids", "1000, alice", "--allow-uids=7", "--socket-group", "filewatcher"},
			map[string]string{"FILEWATCHER_ALLOW_GIDS": "adm,4"},
			func(c Config) bool {
				return strings.Join(c.AllowUIDs, " ") == "1000 alice 7" && strings.Join(c.AllowGIDs, " ") == "adm 4" &&
					c.SocketGroup == "filewatcher"
			}},
		{"tls", []string{"--listen", "0.0.0.0:50051", "--tls-cert", "c", "--tls-key", "k", "--tls-client-ca", "ca", "--tls-allow-clients", "fw-exporter,spiffe://x/y", "--max-subscribers", "3"}, nil,
			func(c Config) bool {
				return c.TLSCert == "c" && c.TLSKey == "k" && c.TLSClientCA == "ca" && c.MaxSubscribers == 3 && strings.Join(c.TLSAllowClients, " ") == "fw-exporter spiffe://x/y"
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse(tt.args, env(tt.env), io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if !tt.check(c) {
				t.Errorf("config = %+v", c)
			}
		})
	}
}

func TestInvalid(t *testing.T) {
	tests := []struct {
		args    []string
		env     map[string]string
		wantErr string
	}{
		{[]string{"--source", "magic"}, nil, "--source"},
		{[]string{"--probe", "ebpf"}, nil, `--probe "ebpf": want auto, kmod or bpf`},
		{[]string{"--ringbuf-size", "12345"}, nil, "power of two"},
		{[]string{"--ringbuf-size", "1024"}, nil, "page size"},
		{[]string{"--ringbuf-size", "0"}, nil, "power of two"},
		{[]string{"--log-level", "loud"}, nil, "--log-level"},
		{[]string{"--log-format", "xml"}, nil, "--log-format"},
		{[]string{"--rate", "-1"}, nil, "--rate"},
		{[]string{"stray"}, nil, "unexpected argument"},
		{nil, map[string]string{"FILEWATCHER_RATE": "fast"}, "FILEWATCHER_RATE"},
		{nil, map[string]string{"FILEWATCHER_FORCE": "true"}, "FILEWATCHER_FORCE=\"true\": --force was removed"},
		{[]string{"--force"}, nil, "--force was removed: the loader no longer loads a module built for another kernel"},
		{[]string{"--max-subscribers", "0"}, nil, "--max-subscribers"},
		{[]string{"--max-subscribers-per-peer", "0"}, nil, "--max-subscribers-per-peer 0: must be at least 1"},
		{[]string{"--stall-timeout", "-1s"}, nil, "--stall-timeout -1s: must not be negative"},
		{[]string{"--subscriber-queue-bytes", "1000"}, nil, "--subscriber-queue-bytes 1000: must be at least 65536"},
		{nil, map[string]string{"FILEWATCHER_REPLAY_BUFFER_BYTES": "10"}, "--replay-buffer-bytes 10: must be at least 65536"},
		{[]string{"--tls-cert", "c.pem", "--tls-key", "k.pem"}, nil, "apply to TCP listeners"},
		{[]string{"--listen", "127.0.0.1:1", "--tls-cert", "c.pem"}, nil, "both --tls-cert and --tls-key"},
		{[]string{"--listen", "127.0.0.1:1", "--tls-client-ca", "ca.pem"}, nil, "--tls-client-ca needs --tls-cert and --tls-key"},
		{[]string{"--listen", "0.0.0.0:1", "--tls-cert", "c.pem", "--tls-key", "k.pem"}, nil, "refusing TLS without client certificates on a non-loopback address"},
		{[]string{"--listen", "0.0.0.0:1", "--tls-cert", "c.pem", "--tls-key", "k.pem", "--tls-allow-clients", "a"}, nil, "--tls-allow-clients needs --tls-client-ca"},
		{nil, map[string]string{"FILEWATCHER_LISTEN": "[::]:1"}, "refusing plaintext gRPC on a non-loopback address"},
		{[]string{"--listen", "127.0.0.1:1", "--allow-uids", "1000"}, nil, "apply to the unix socket"},
		{[]string{"--listen", "127.0.0.1:1", "--socket-group", "adm"}, nil, "apply to the unix socket"},
		{[]string{"--listen", "unix://rel.sock"}, nil, "absolute"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			_, err := Parse(tt.args, env(tt.env), io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func TestValidateRingbufSize(t *testing.T) {
	for _, tt := range []struct {
		size uint64
		ok   bool
	}{{4096, true}, {16 << 20, true}, {1 << 30, true}, {1 << 31, false}, {8192 + 4096, false}, {2048, false}} {
		if err := ValidateRingbufSize(tt.size, 4096); (err == nil) != tt.ok {
			t.Errorf("size %d: %v", tt.size, err)
		}
	}
}
