package hub

import (
	"sync"

	pb "github.com/filewatcher/filewatcher/proto/filewatcher/v1"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// Field numbers of SubscribeResponse, for encoding it by hand.
const (
	fieldRunID         = 1
	fieldEvents        = 2
	fieldGaps          = 3
	fieldFilteredCount = 4
	fieldLoss          = 5
)

// wireBatch is a batch's events encoded once, each framed as a
// SubscribeResponse.events field, so that every subscriber's message can
// reuse the bytes instead of marshalling the events again.
type wireBatch struct {
	once sync.Once
	buf  []byte
	offs []int // offs[i] is where event i starts; offs[len(events)] == len(buf)
}

// wire returns the encoded events of b, encoding them on first use.
func (b *batch) wire() *wireBatch {
	w := &b.enc
	w.once.Do(func() {
		size := 0
		for _, ev := range b.events {
			n := eventSize(ev)
			size += protowire.SizeTag(fieldEvents) + protowire.SizeBytes(n)
		}
		w.buf = make([]byte, 0, size)
		w.offs = make([]int, 0, len(b.events)+1)
		for _, ev := range b.events {
			w.offs = append(w.offs, len(w.buf))
			w.buf = protowire.AppendTag(w.buf, fieldEvents, protowire.BytesType)
			w.buf = protowire.AppendVarint(w.buf, uint64(eventSize(ev)))
			w.buf = appendEvent(w.buf, ev)
		}
		w.offs = append(w.offs, len(w.buf))
	})
	return w
}

// eventSize and appendEvent encode a FileCreatedEvent by hand, producing
// exactly what proto.Marshal does (fields in number order, zero values
// omitted) several times faster than its reflection-driven encoder: this is
// the loader's hottest loop. An event with unknown fields (never made by a
// source) goes through proto. TestAppendEvent checks the equivalence, and
// must be extended with every field added to the message.
func eventSize(ev *pb.FileCreatedEvent) int {
	if len(ev.ProtoReflect().GetUnknown()) > 0 {
		return proto.Size(ev)
	}
	return sizeVarint(ev.Sequence) + sizeVarint(ev.KtimeNs) + sizeVarint(uint64(ev.TimeUnixNano)) +
		sizeVarint(uint64(ev.Pid)) + sizeVarint(uint64(ev.Tgid)) + sizeVarint(uint64(ev.Uid)) +
		sizeVarint(uint64(ev.Gid)) + sizeBytes(ev.Comm) + sizeVarint(ev.CgroupId) +
		sizeBytes(ev.Path) + sizeVarint(uint64(ev.Flags)) + sizeVarint(uint64(ev.Kind)) +
		sizeVarint(uint64(ev.Fsuid)) + sizeVarint(uint64(ev.Fsgid))
}

func appendEvent(b []byte, ev *pb.FileCreatedEvent) []byte {
	if len(ev.ProtoReflect().GetUnknown()) > 0 {
		b, _ = proto.MarshalOptions{}.MarshalAppend(b, ev) // cannot fail: no required fields
		return b
	}
	b = appendVarint(b, 1, ev.Sequence)
	b = appendVarint(b, 2, ev.KtimeNs)
	b = appendVarint(b, 3, uint64(ev.TimeUnixNano))
	b = appendVarint(b, 4, uint64(ev.Pid))
	b = appendVarint(b, 5, uint64(ev.Tgid))
	b = appendVarint(b, 6, uint64(ev.Uid))
	b = appendVarint(b, 7, uint64(ev.Gid))
	b = appendBytes(b, 8, ev.Comm)
	b = appendVarint(b, 9, ev.CgroupId)
	b = appendBytes(b, 10, ev.Path)
	b = appendVarint(b, 11, uint64(ev.Flags))
	b = appendVarint(b, 12, uint64(ev.Kind)) // an enum: int32, sign-extended as proto does
	b = appendVarint(b, 13, uint64(ev.Fsuid))
	b = appendVarint(b, 14, uint64(ev.Fsgid))
	return b
}

// Every field of FileCreatedEvent has a number below 16: its tag is one
// byte, which the size functions count.

func sizeVarint(v uint64) int {
	if v == 0 {
		return 0
	}
	return 1 + protowire.SizeVarint(v)
}

func sizeBytes(v []byte) int {
	if len(v) == 0 {
		return 0
	}
	return 1 + protowire.SizeBytes(len(v))
}

func appendVarint(b []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return b
	}
	b = append(b, byte(num)<<3|byte(protowire.VarintType))
	return protowire.AppendVarint(b, v)
}

func appendBytes(b []byte, num protowire.Number, v []byte) []byte {
	if len(v) == 0 {
		return b
	}
	b = append(b, byte(num)<<3|byte(protowire.BytesType))
	return protowire.AppendBytes(b, v)
}

// span is the events b.events[lo:hi], all in one message.
type span struct {
	b      *batch
	lo, hi int
}

// Message is one message for a subscriber: Response as a protobuf message,
// and the same content ready for the wire (Wire), which reuses the batches'
// shared encoding of the events.
type Message struct {
	Response pb.SubscribeResponse
	spans    []span
	kept     []span // scratch for filter
}

// addEvent appends event i of b to the message.
func (m *Message) addEvent(b *batch, i int) {
	m.Response.Events = append(m.Response.Events, b.events[i])
	if n := len(m.spans); n > 0 && m.spans[n-1].b == b && m.spans[n-1].hi == i {
		m.spans[n-1].hi++
		return
	}
	m.spans = append(m.spans, span{b: b, lo: i, hi: i + 1})
}

// filter keeps the events that match and returns how many it dropped.
func (m *Message) filter(match func(*pb.FileCreatedEvent) bool) (dropped uint64) {
	events := m.Response.Events[:0]
	m.kept = m.kept[:0]
	for _, s := range m.spans {
		for i := s.lo; i < s.hi; i++ {
			ev := s.b.events[i]
			if !match(ev) {
				dropped++
				continue
			}
			events = append(events, ev)
			if n := len(m.kept); n > 0 && m.kept[n-1].b == s.b && m.kept[n-1].hi == i {
				m.kept[n-1].hi++
			} else {
				m.kept = append(m.kept, span{b: s.b, lo: i, hi: i + 1})
			}
		}
	}
	clear(m.Response.Events[len(events):])
	m.Response.Events = events
	m.spans, m.kept = m.kept, m.spans
	clear(m.kept)
	return dropped
}

func (m *Message) reset() {
	m.Response.Events = m.Response.Events[:0]
	m.Response.Gaps = m.Response.Gaps[:0]
	clear(m.spans)
	m.spans = m.spans[:0]
}

// Wire returns the message's encoding: the same bytes, up to field order, as
// marshalling Response. The buffers must not be modified; they stay valid
// after the next call to Next.
func (m *Message) Wire() mem.BufferSlice {
	r := &m.Response
	// head is handed to gRPC, which may still hold it after Next returns:
	// never reuse it.
	head := make([]byte, 0, 64+16*len(r.Gaps))
	head = protowire.AppendTag(head, fieldRunID, protowire.BytesType)
	head = protowire.AppendString(head, r.RunId)
	for _, g := range r.Gaps {
		head = protowire.AppendTag(head, fieldGaps, protowire.BytesType)
		head = protowire.AppendVarint(head, uint64(proto.Size(g)))
		head, _ = proto.MarshalOptions{UseCachedSize: true}.MarshalAppend(head, g)
	}
	if r.FilteredCount != 0 {
		head = protowire.AppendTag(head, fieldFilteredCount, protowire.VarintType)
		head = protowire.AppendVarint(head, r.FilteredCount)
	}
	if r.Loss != nil {
		head = protowire.AppendTag(head, fieldLoss, protowire.BytesType)
		head = protowire.AppendVarint(head, uint64(proto.Size(r.Loss)))
		head, _ = proto.MarshalOptions{UseCachedSize: true}.MarshalAppend(head, r.Loss)
	}
	out := make(mem.BufferSlice, 0, 1+len(m.spans))
	out = append(out, mem.SliceBuffer(head))
	for _, s := range m.spans {
		w := s.b.wire()
		out = append(out, mem.SliceBuffer(w.buf[w.offs[s.lo]:w.offs[s.hi]]))
	}
	return out
}
