package hub

import (
	"bytes"
	"math/rand/v2"
	"testing"

	pb "github.com/filewatcher/filewatcher/proto/filewatcher/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// randomEvent sets each field of FileCreatedEvent, found by reflection so that
// a field added to the message is covered too, to zero, a small value or an
// extreme one.
func randomEvent(r *rand.Rand) *pb.FileCreatedEvent {
	ev := &pb.FileCreatedEvent{}
	m := ev.ProtoReflect()
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		var u uint64
		switch r.IntN(4) {
		case 0:
			continue // zero: omitted
		case 1:
			u = uint64(r.IntN(200))
		case 2:
			u = r.Uint64()
		case 3:
			u = ^uint64(0)
		}
		switch fd.Kind() {
		case protoreflect.Uint64Kind:
			m.Set(fd, protoreflect.ValueOfUint64(u))
		case protoreflect.Int64Kind:
			m.Set(fd, protoreflect.ValueOfInt64(int64(u)))
		case protoreflect.Uint32Kind:
			m.Set(fd, protoreflect.ValueOfUint32(uint32(u)))
		case protoreflect.EnumKind:
			m.Set(fd, protoreflect.ValueOfEnum(protoreflect.EnumNumber(int32(u))))
		case protoreflect.BytesKind:
			b := make([]byte, int(u%5000))
			for j := range b {
				b[j] = byte(r.IntN(256))
			}
			m.Set(fd, protoreflect.ValueOfBytes(b))
		default:
			panic("TestAppendEvent does not know field kind " + fd.Kind().String() + ": extend it and appendEvent")
		}
	}
	return ev
}

// TestAppendEvent checks that the hand-written encoder produces exactly
// proto.Marshal's bytes.
func TestAppendEvent(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	events := []*pb.FileCreatedEvent{{}}
	for range 10000 {
		events = append(events, randomEvent(r))
	}
	unknown := &pb.FileCreatedEvent{Sequence: 3}
	unknown.ProtoReflect().SetUnknown(protoreflect.RawFields{0xf8, 0x01, 0x07}) // field 31, varint 7
	events = append(events, unknown)
	for _, ev := range events {
		want, err := proto.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		got := appendEvent([]byte{0xaa}, ev)
		if !bytes.Equal(got[1:], want) || got[0] != 0xaa || eventSize(ev) != len(want) {
			t.Fatalf("%v: appendEvent %x (size %d), proto.Marshal %x", ev, got[1:], eventSize(ev), want)
		}
	}
}
