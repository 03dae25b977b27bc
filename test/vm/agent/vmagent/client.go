package vmagent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"
)

// Client talks to one guest agent.
type Client struct {
	// Addr is the agent's host-side address, 127.0.0.1:PORT.
	Addr string
}

// Do sends req and returns the agent's answer. A Response whose Error is set
// is returned as an error too.
func (c Client) Do(ctx context.Context, req Request) (Response, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", c.Addr)
	if err != nil {
		return Response{}, fmt.Errorf("dial agent %s: %w", c.Addr, err)
	}
	defer conn.Close()
	// The connection follows ctx: cancelling it unblocks the read.
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if err := WriteFrame(conn, req); err != nil {
		return Response{}, fmt.Errorf("agent %s: %w", c.Addr, err)
	}
	var resp Response
	if err := ReadFrame(conn, &resp); err != nil {
		if ctx.Err() != nil {
			return Response{}, fmt.Errorf("agent %s: %w", c.Addr, ctx.Err())
		}
		return Response{}, fmt.Errorf("agent %s: %w", c.Addr, err)
	}
	if resp.Error != "" {
		return resp, errors.New(resp.Error)
	}
	return resp, nil
}

// Ping proves the agent is alive and returns the guest's kernel release.
func (c Client) Ping(ctx context.Context) (string, error) {
	resp, err := c.Do(ctx, Request{Op: OpPing})
	return resp.Release, err
}

// Exec runs req (its Op is set to OpExec) in the guest.
func (c Client) Exec(ctx context.Context, req Request) (Response, error) {
	req.Op = OpExec
	return c.Do(ctx, req)
}

// Command is a shorthand for Exec with argv given as strings (which may hold
// any bytes but NUL).
func (c Client) Command(ctx context.Context, argv ...string) (Response, error) {
	return c.Exec(ctx, Request{Argv: Args(argv...)})
}

// Args converts strings to the protocol's byte slices.
func Args(s ...string) [][]byte {
	out := make([][]byte, len(s))
	for i, a := range s {
		out[i] = []byte(a)
	}
	return out
}
