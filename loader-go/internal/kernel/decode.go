package kernel

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	pb "github.com/filewatcher/filewatcher/proto/filewatcher/v1"
)

// Layout of struct event_hdr in bpf/filewatcher.bpf.c, little-endian (the
// object is built for bpfel); bpfobj's tests pin it against the generated Go
// type.
const (
	offKtime    = 0
	offCgroupID = 8
	offPid      = 16
	offTgid     = 20
	offUID      = 24
	offGID      = 28
	offFlags    = 32
	offPathLen  = 36
	offComm     = 40
	commLen     = 16
	offStream   = 56 // stream_seq, then cpu and slot (see streamOf)
	offCPU      = 64
	offSlot     = 68
	offFsuid    = 72
	offFsgid    = 76
	headerSize  = 80
)

// Bits 8 to 15 of a record's flags say how the file was created
// (FW_KIND_* in kmod/filewatcher_trace.h and bpf/filewatcher.bpf.c): the
// EventKind's number, except 0 for an open.
const (
	kindShift = 8
	kindMask  = 0xff << kindShift
)

var errRecord = errors.New("malformed ring buffer record")

// streamOf returns a record's stream (program slot, CPU) and its number in
// that stream; raw holds at least a header.
func streamOf(raw []byte) (slot, cpu uint32, seq uint64) {
	le := binary.LittleEndian
	return le.Uint32(raw[offSlot:]), le.Uint32(raw[offCPU:]), le.Uint64(raw[offStream:])
}

// decoder turns ring-buffer records into events. Paths and comms are copied
// into shared chunks so that a batch of events costs a few allocations, not
// several per event.
type decoder struct {
	chunk  []byte
	slab   []pb.FileCreatedEvent
	offset int64 // CLOCK_REALTIME - CLOCK_MONOTONIC, in ns
}

const (
	chunkSize = 64 << 10
	slabSize  = 256
)

// decode fills a new event from raw. The record's bytes are copied: raw may
// be reused after decode returns.
func (d *decoder) decode(raw []byte) (*pb.FileCreatedEvent, error) {
	if len(raw) < headerSize {
		return nil, fmt.Errorf("%w: %d bytes, header is %d", errRecord, len(raw), headerSize)
	}
	le := binary.LittleEndian
	pathLen := le.Uint32(raw[offPathLen:])
	if uint64(pathLen) > uint64(len(raw)-headerSize) {
		return nil, fmt.Errorf("%w: path of %d bytes in a record of %d", errRecord, pathLen, len(raw))
	}
	if len(d.slab) == 0 {
		d.slab = make([]pb.FileCreatedEvent, slabSize)
	}
	ev := &d.slab[0]
	d.slab = d.slab[1:]
	ev.KtimeNs = le.Uint64(raw[offKtime:])
	ev.TimeUnixNano = int64(ev.KtimeNs) + d.offset
	ev.CgroupId = le.Uint64(raw[offCgroupID:])
	ev.Pid = le.Uint32(raw[offPid:])
	ev.Tgid = le.Uint32(raw[offTgid:])
	ev.Uid = le.Uint32(raw[offUID:])
	ev.Gid = le.Uint32(raw[offGID:])
	ev.Fsuid = le.Uint32(raw[offFsuid:])
	ev.Fsgid = le.Uint32(raw[offFsgid:])
	flags := le.Uint32(raw[offFlags:])
	ev.Flags = flags &^ kindMask
	ev.Kind = pb.EventKind((flags & kindMask) >> kindShift)
	if ev.Kind == pb.EventKind_EVENT_KIND_UNSPECIFIED {
		ev.Kind = pb.EventKind_EVENT_KIND_OPEN
	}
	comm := raw[offComm : offComm+commLen]
	if i := bytes.IndexByte(comm, 0); i >= 0 {
		comm = comm[:i]
	}
	ev.Comm = d.copy(comm)
	ev.Path = d.copy(raw[headerSize : headerSize+int(pathLen)])
	return ev, nil
}

// copy returns a copy of b that the decoder never writes again.
func (d *decoder) copy(b []byte) []byte {
	if len(b) > cap(d.chunk)-len(d.chunk) {
		d.chunk = make([]byte, 0, max(chunkSize, len(b)))
	}
	start := len(d.chunk)
	d.chunk = append(d.chunk, b...)
	return d.chunk[start:len(d.chunk):len(d.chunk)]
}
