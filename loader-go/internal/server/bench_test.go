package server

import (
	"testing"

	"github.com/filewatcher/filewatcher/loader-go/internal/synthetic"
	pb "github.com/filewatcher/filewatcher/proto/filewatcher/v1"
	"google.golang.org/protobuf/proto"
)

// BenchmarkMarshal measures encoding a message of 256 synthetic events (the
// default batch) as gRPC does before sending; ns/op is per event.
func BenchmarkMarshal(b *testing.B) {
	const batch = 256
	events := synthetic.New(synthetic.Options{}).Batch(0, batch)
	resp := &pb.SubscribeResponse{RunId: "0123456789abcdef0123456789abcdef", Events: events, Loss: &pb.LossCounters{}}
	var buf []byte
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += batch {
		var err error
		buf, err = proto.MarshalOptions{}.MarshalAppend(buf[:0], resp)
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(buf))/batch, "bytes/event")
}
