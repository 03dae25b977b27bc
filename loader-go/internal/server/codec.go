package server

import (
	"github.com/filewatcher/filewatcher/loader-go/internal/hub"
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
)

// codec is gRPC's protobuf codec, except that it sends a *hub.Message in its
// wire form: the events of a batch are marshalled once and the bytes shared
// by every subscriber, instead of marshalled again for each.
type codec struct {
	proto encoding.CodecV2
}

func (c codec) Marshal(v any) (mem.BufferSlice, error) {
	if m, ok := v.(*hub.Message); ok {
		return m.Wire(), nil
	}
	return c.proto.Marshal(v)
}

func (c codec) Unmarshal(data mem.BufferSlice, v any) error { return c.proto.Unmarshal(data, v) }

func (c codec) Name() string { return proto.Name }

// ServerOption returns the option a grpc.Server that serves Server must be
// created with: it installs the codec that sends subscription messages.
// Other services on the server (health, reflection) are unaffected.
func ServerOption() grpc.ServerOption {
	return grpc.ForceServerCodecV2(codec{proto: encoding.GetCodecV2(proto.Name)})
}
