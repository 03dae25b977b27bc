// Package vmagent is the wire protocol of the filewatcher VM guest agent: a
// host sends one Request over a TCP connection and reads one Response.
//
// Each message is a frame: a 4-byte big-endian length followed by that many
// bytes of JSON. Every field that can hold arbitrary bytes (argv, environment,
// stdin, stdout, stderr) is a []byte, which encoding/json carries as base64,
// so file names that are not valid UTF-8 survive unchanged (a JSON string
// would turn them into U+FFFD).
package vmagent

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
)

// MaxFrame bounds one frame, so a corrupt length cannot make a peer allocate
// without limit.
const MaxFrame = 256 << 20

// Op names what a Request asks for.
type Op string

const (
	// OpPing asks the agent to prove it is alive; it answers with the guest's
	// kernel release.
	OpPing Op = "ping"
	// OpExec runs a command and returns its output and exit status.
	OpExec Op = "exec"
)

// Request is what the host sends.
type Request struct {
	Op Op `json:"op"`
	// Argv is the command; Argv[0] is looked up in the guest's PATH when it
	// has no slash.
	Argv [][]byte `json:"argv,omitempty"`
	// Env entries ("KEY=VALUE") added to the guest's default environment.
	Env [][]byte `json:"env,omitempty"`
	// Dir is the working directory (default /).
	Dir []byte `json:"dir,omitempty"`
	// UID and GID, when set, are the credentials the command runs with.
	UID *uint32 `json:"uid,omitempty"`
	GID *uint32 `json:"gid,omitempty"`
	// Stdin is fed to the command; nil means /dev/null.
	Stdin []byte `json:"stdin,omitempty"`
	// TimeoutMS, when positive, kills the command's process group after
	// that many milliseconds.
	TimeoutMS int64 `json:"timeout_ms,omitempty"`
}

// Response is what the agent answers.
type Response struct {
	// Error is set when the request could not be carried out at all (for
	// example the command was not found); the other fields are then empty.
	Error string `json:"error,omitempty"`
	// Release is the guest's kernel release (ping).
	Release string `json:"release,omitempty"`
	// PID is the process id of the command the agent started (exec).
	PID int `json:"pid,omitempty"`
	// ExitCode is the command's exit status, or 128+signal when a signal
	// ended it (as a shell reports it).
	ExitCode int `json:"exit_code"`
	// Signal names the signal that ended the command, if any.
	Signal string `json:"signal,omitempty"`
	// TimedOut says the agent killed the command at TimeoutMS.
	TimedOut bool   `json:"timed_out,omitempty"`
	Stdout   []byte `json:"stdout,omitempty"`
	Stderr   []byte `json:"stderr,omitempty"`
}

// WriteFrame encodes v as JSON and writes it as one frame.
func WriteFrame(w io.Writer, v any) error {
	body, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode frame: %w", err)
	}
	if len(body) > MaxFrame {
		return fmt.Errorf("frame of %d bytes exceeds the %d byte limit", len(body), MaxFrame)
	}
	var hdr [4]byte
	binary.BigEndian.PutUint32(hdr[:], uint32(len(body)))
	if _, err := w.Write(append(hdr[:], body...)); err != nil {
		return fmt.Errorf("write frame: %w", err)
	}
	return nil
}

// ReadFrame reads one frame and decodes its JSON into v.
func ReadFrame(r io.Reader, v any) error {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return fmt.Errorf("read frame header: %w", err)
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n > MaxFrame {
		return fmt.Errorf("frame of %d bytes exceeds the %d byte limit", n, MaxFrame)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return fmt.Errorf("read frame body: %w", err)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("decode frame: %w", err)
	}
	return nil
}
