// Package config reads the loader's settings from flags and environment
// variables: every flag --some-name can also be set as FILEWATCHER_SOME_NAME;
// a flag given on the command line wins.
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/bits"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/filewatcher/filewatcher/loader-go/internal/access"
	"github.com/filewatcher/filewatcher/loader-go/internal/hub"
	"github.com/filewatcher/filewatcher/loader-go/internal/listen"
	"github.com/filewatcher/filewatcher/loader-go/internal/server"
	"github.com/filewatcher/filewatcher/loader-go/internal/synthetic"
)

// EnvPrefix starts the environment variable of every flag.
const EnvPrefix = "FILEWATCHER_"

// Defaults.
const (
	DefaultListen      = "unix:///run/filewatcher/loader.sock"
	DefaultRingbufSize = 16 << 20
	MaxRingbufSize     = 1 << 30
)

// Sources.
const (
	SourceKernel    = "kernel"
	SourceSynthetic = "synthetic"
)

// Probes (--probe): which kernel side sees the creations.
const (
	// ProbeAuto uses the module where it loads and passes every check, and
	// the eBPF-only probe otherwise.
	ProbeAuto = "auto"
	// ProbeKmod uses the kernel module, or fails.
	ProbeKmod = "kmod"
	// ProbeBPF uses the eBPF-only probe (no module), or fails.
	ProbeBPF = "bpf"
)

// Config is the loader's configuration.
type Config struct {
	Listen           string
	AllowInsecureTCP bool
	SocketGroup      string
	AllowUIDs        List
	AllowGIDs        List
	TLSCert          string
	TLSKey           string
	TLSClientCA      string
	TLSAllowClients  List
	// AllowTLSWithoutClientCert admits TLS clients without a certificate
	// off loopback.
	AllowTLSWithoutClientCert bool
	MaxSubscribers            int
	MaxSubscribersPerPeer     int
	StallTimeout              time.Duration
	Source                    string
	Probe                     string
	Module                    string
	ModuleParams              string
	RingbufSize               uint64
	PinDir                    string
	Rate                      int
	SyntheticDirs             int
	SyntheticNames            int
	QueueSize                 int
	QueueBytes                int
	ReplaySize                int
	ReplayBytes               int
	ShutdownTimeout           time.Duration
	LogLevel                  slog.Level
	LogFormat                 string
	Version                   bool
}

// Parse reads args (without the program name) and then, for every flag not
// given in args, the environment variable named for it.
func Parse(args []string, getenv func(string) string, usage io.Writer) (Config, error) {
	var c Config
	fs := flag.NewFlagSet("filewatcher-loader", flag.ContinueOnError)
	fs.SetOutput(usage)
	fs.StringVar(&c.Listen, "listen", DefaultListen, "gRPC listen address: host:port or unix:///abs/path")
	fs.BoolVar(&c.AllowInsecureTCP, "allow-insecure-tcp", false, "allow plaintext TCP on a non-loopback address (logged as a warning)")
	fs.StringVar(&c.SocketGroup, "socket-group", "", "group (name or gid) that owns the unix socket; its members may connect (default: the loader's group)")
	fs.Var(&c.AllowUIDs, "allow-uids", "users (names or uids, comma-separated) allowed on the unix socket, besides root")
	fs.Var(&c.AllowGIDs, "allow-gids", "groups (names or gids, comma-separated) allowed on the unix socket (default: the socket's group)")
	fs.StringVar(&c.TLSCert, "tls-cert", "", "PEM certificate (chain) for TLS on a TCP listener")
	fs.StringVar(&c.TLSKey, "tls-key", "", "PEM private key of --tls-cert")
	fs.StringVar(&c.TLSClientCA, "tls-client-ca", "", "PEM CA certificates: require client certificates signed by them (mutual TLS)")
	fs.Var(&c.TLSAllowClients, "tls-allow-clients", "identities (comma-separated) admitted under mutual TLS: a client certificate's DNS, IP, email or URI subject alternative name, or its subject CN (default: any certificate --tls-client-ca signed)")
	fs.BoolVar(&c.AllowTLSWithoutClientCert, "allow-tls-without-client-cert", false, "allow TLS without --tls-client-ca on a non-loopback address: anyone who reaches it reads every path (logged as INSECURE)")
	fs.IntVar(&c.MaxSubscribers, "max-subscribers", server.DefaultMaxSubscribers, "concurrent Subscribe streams allowed; more get RESOURCE_EXHAUSTED")
	fs.IntVar(&c.MaxSubscribersPerPeer, "max-subscribers-per-peer", server.DefaultMaxSubscribersPerPeer, "concurrent Subscribe streams allowed per peer (a unix socket user, a client certificate, else an IP address); more get RESOURCE_EXHAUSTED")
	fs.DurationVar(&c.StallTimeout, "stall-timeout", server.DefaultStallTimeout, "end a stream (RESOURCE_EXHAUSTED) whose client has left a message unread this long, freeing its queue; 0: never")
	fs.StringVar(&c.Source, "source", SourceKernel, "event source: kernel or synthetic")
	fs.StringVar(&c.Probe, "probe", ProbeAuto, "what sees the creations: kmod (the kernel module), bpf (the eBPF-only probe, no module) or auto (the module where it loads and fits the kernel, else bpf)")
	fs.StringVar(&c.Module, "module", "", "kernel module (.ko) to load; empty: use the loaded module")
	fs.StringVar(&c.ModuleParams, "module-params", "", `module parameters, e.g. "maxactive=4096"`)
	fs.BoolFunc("force", "removed: a module that does not fit the running kernel is never loaded", func(string) error {
		return errors.New("--force was removed: the loader no longer loads a module built for another kernel, or one whose probed function differs from what the module reads; build the module for this kernel (make) instead")
	})
	fs.Uint64Var(&c.RingbufSize, "ringbuf-size", DefaultRingbufSize, "BPF ring buffer size in bytes (power of two, multiple of the page size)")
	fs.StringVar(&c.PinDir, "pin-dir", "", "directory in a bpf filesystem (e.g. /sys/fs/bpf/filewatcher) where the probe, its ring buffer and the run's checkpoint stay when the loader dies, so that the next loader with the same --pin-dir continues the run and loses nothing the ring kept; SIGTERM unpins, SIGUSR2 stops and keeps them for the next loader. Empty: nothing is pinned")
	fs.IntVar(&c.Rate, "rate", 1000, "synthetic events per second (0: as fast as possible)")
	fs.IntVar(&c.SyntheticDirs, "synthetic-dirs", synthetic.DefaultDirs, "directories in the synthetic path mix")
	fs.IntVar(&c.SyntheticNames, "synthetic-names", synthetic.DefaultNames, "file names in the synthetic path mix")
	fs.IntVar(&c.QueueSize, "subscriber-queue-size", hub.DefaultQueueSize, "events queued per subscriber before its overflow policy applies")
	fs.IntVar(&c.QueueBytes, "subscriber-queue-bytes", hub.DefaultQueueBytes, "memory the events queued per subscriber may pin, in bytes (each event counts 2 x (path + comm) + 256) before its overflow policy applies")
	fs.IntVar(&c.ReplaySize, "replay-buffer-size", hub.DefaultReplaySize, "recent events kept for resuming subscribers (0: no replay)")
	fs.IntVar(&c.ReplayBytes, "replay-buffer-bytes", hub.DefaultReplayBytes, "memory the replay buffer's events may pin, in bytes (counted as for --subscriber-queue-bytes)")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", 5*time.Second, "how long a graceful shutdown may take before streams are cut")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	fs.StringVar(&c.LogFormat, "log-format", "text", "text or json")
	fs.BoolVar(&c.Version, "version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if err := applyEnv(fs, getenv); err != nil {
		return Config{}, err
	}
	if err := c.LogLevel.UnmarshalText([]byte(*logLevel)); err != nil {
		return Config{}, fmt.Errorf("--log-level %q: want debug, info, warn or error", *logLevel)
	}
	return c, c.validate()
}

// EnvName returns the environment variable for a flag name.
func EnvName(flagName string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

func applyEnv(fs *flag.FlagSet, getenv func(string) string) error {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		v := getenv(EnvName(f.Name))
		if set[f.Name] || v == "" {
			return
		}
		if err := f.Value.Set(v); err != nil {
			errs = append(errs, fmt.Errorf("%s=%q: %w", EnvName(f.Name), v, err))
		}
	})
	return errors.Join(errs...)
}

func (c *Config) validate() error {
	if c.Source != SourceKernel && c.Source != SourceSynthetic {
		return fmt.Errorf("--source %q: want kernel or synthetic", c.Source)
	}
	if c.Probe != ProbeAuto && c.Probe != ProbeKmod && c.Probe != ProbeBPF {
		return fmt.Errorf("--probe %q: want auto, kmod or bpf", c.Probe)
	}
	if c.PinDir != "" && c.Source != SourceKernel {
		return fmt.Errorf("--pin-dir %q: only the kernel source pins anything (--source %s)", c.PinDir, c.Source)
	}
	if c.PinDir != "" && !filepath.IsAbs(c.PinDir) {
		return fmt.Errorf("--pin-dir %q: want an absolute path in a bpf filesystem, e.g. /sys/fs/bpf/filewatcher", c.PinDir)
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		return fmt.Errorf("--log-format %q: want text or json", c.LogFormat)
	}
	if err := ValidateRingbufSize(c.RingbufSize, os.Getpagesize()); err != nil {
		return err
	}
	switch {
	case c.Rate < 0:
		return fmt.Errorf("--rate %d: must not be negative", c.Rate)
	case c.SyntheticDirs < 1 || c.SyntheticNames < 1:
		return fmt.Errorf("--synthetic-dirs and --synthetic-names must be at least 1")
	case c.QueueSize < 1:
		return fmt.Errorf("--subscriber-queue-size %d: must be at least 1", c.QueueSize)
	case c.ReplaySize < 0:
		return fmt.Errorf("--replay-buffer-size %d: must not be negative", c.ReplaySize)
	case c.ShutdownTimeout <= 0:
		return fmt.Errorf("--shutdown-timeout %v: must be positive", c.ShutdownTimeout)
	case c.MaxSubscribers < 1:
		return fmt.Errorf("--max-subscribers %d: must be at least 1", c.MaxSubscribers)
	case c.MaxSubscribersPerPeer < 1:
		return fmt.Errorf("--max-subscribers-per-peer %d: must be at least 1", c.MaxSubscribersPerPeer)
	case c.StallTimeout < 0:
		return fmt.Errorf("--stall-timeout %v: must not be negative (0 disables it)", c.StallTimeout)
	case c.QueueBytes < hub.MinBudgetBytes:
		return fmt.Errorf("--subscriber-queue-bytes %d: must be at least %d (a few events of PATH_MAX paths)", c.QueueBytes, hub.MinBudgetBytes)
	case c.ReplayBytes < hub.MinBudgetBytes:
		return fmt.Errorf("--replay-buffer-bytes %d: must be at least %d (--replay-buffer-size 0 disables replay)", c.ReplayBytes, hub.MinBudgetBytes)
	}
	return c.validateAccess()
}

// validateAccess applies access.Decide, the rules of who may connect, to
// the flags, so that a listener nobody guards is refused at start.
func (c *Config) validateAccess() error {
	if _, err := c.Access(); err != nil {
		return err
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return errors.New("TLS needs both --tls-cert and --tls-key")
	}
	return nil
}

// Access is the verdict of access.Decide on the listen address and the
// access flags.
func (c *Config) Access() (access.Verdict, error) {
	addr, err := listen.Parse(c.Listen)
	if err != nil {
		return access.Verdict{}, err
	}
	return access.Decide(access.Listener{
		Unix:                      addr.Network == "unix",
		Loopback:                  addr.Loopback(),
		TLS:                       c.TLSCert != "" || c.TLSKey != "",
		ClientCA:                  c.TLSClientCA != "",
		ClientNames:               len(c.TLSAllowClients) > 0,
		UnixAllowlist:             c.SocketGroup != "" || len(c.AllowUIDs) > 0 || len(c.AllowGIDs) > 0,
		AllowInsecureTCP:          c.AllowInsecureTCP,
		AllowTLSWithoutClientCert: c.AllowTLSWithoutClientCert,
	})
}

// List is a flag that takes comma-separated values and may be repeated.
type List []string

// String implements flag.Value.
func (l *List) String() string { return strings.Join(*l, ",") }

// Set implements flag.Value.
func (l *List) Set(s string) error {
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			*l = append(*l, v)
		}
	}
	return nil
}

// ValidateRingbufSize checks what the kernel requires of a BPF ring buffer:
// a power of two and a multiple of the page size.
func ValidateRingbufSize(size uint64, pageSize int) error {
	if size == 0 || bits.OnesCount64(size) != 1 || size%uint64(pageSize) != 0 || size > MaxRingbufSize {
		return fmt.Errorf("--ringbuf-size %d: want a power of two, a multiple of the page size (%d) and at most %d", size, pageSize, MaxRingbufSize)
	}
	return nil
}

// NewLogger returns the logger the configuration asks for, writing to w.
func (c *Config) NewLogger(w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: c.LogLevel}
	if c.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
