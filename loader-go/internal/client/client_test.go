package client

import (
	"strings"
	"testing"

	pb "github.com/filewatcher/filewatcher/proto/filewatcher/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestParsePosition(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want Position
		ok   bool
	}{
		{"abc:12", Position{"abc", 12}, true},
		{"a:b:0", Position{"a:b", 0}, true},
		{":12", Position{}, false},
		{"abc", Position{}, false},
		{"abc:", Position{}, false},
		{"abc:-1", Position{}, false},
	} {
		got, err := ParsePosition(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParsePosition(%q) = %v, %v", tt.in, got, err)
		}
		if tt.ok && got.String() != tt.in {
			t.Errorf("%v.String() = %q", got, got.String())
		}
	}
}

func TestAdvance(t *testing.T) {
	f := &Follower{Position: Position{"r", 10}}
	ok := &pb.SubscribeResponse{
		Events: []*pb.FileCreatedEvent{{Sequence: 11}, {Sequence: 14}},
		Gaps:   []*pb.Gap{{FirstSequence: 12, LastSequence: 13}, {FirstSequence: 15, LastSequence: 20}},
	}
	if err := f.advance(ok); err != nil || f.Position.Last != 20 {
		t.Fatalf("advance: %v, position %v", err, f.Position)
	}
	if err := f.advance(&pb.SubscribeResponse{Events: []*pb.FileCreatedEvent{{Sequence: 20}}}); err == nil {
		t.Error("a repeated sequence was accepted")
	}
}

func TestRetryable(t *testing.T) {
	for c, want := range map[codes.Code]bool{
		codes.Unavailable: true, codes.ResourceExhausted: true,
		codes.InvalidArgument: false, codes.PermissionDenied: false, codes.Unimplemented: false,
	} {
		if got := Retryable(status.Error(c, "x")); got != want {
			t.Errorf("Retryable(%v) = %v", c, got)
		}
	}
}

func TestDialRejects(t *testing.T) {
	if _, err := Dial("unix:///x.sock", TLS{Enable: true}); err == nil || !strings.Contains(err.Error(), "TCP") {
		t.Errorf("TLS on a unix socket: %v", err)
	}
	if _, err := Dial("http://x", TLS{}); err == nil {
		t.Error("a URL was accepted")
	}
	if _, err := Dial("127.0.0.1:1", TLS{Cert: "c.pem"}); err == nil || !strings.Contains(err.Error(), "--tls-key") {
		t.Errorf("a certificate without a key: %v", err)
	}
}
