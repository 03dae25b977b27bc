package main

// A minimal io_uring client: one ring of one entry, one operation submitted
// and waited for, without liburing (fwopen is a static Go binary copied into
// a busybox guest). Layouts from include/uapi/linux/io_uring.h.

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	ioringOpOpenat = 18 // IORING_OP_OPENAT, Linux 5.6
	ioringOpLinkat = 39 // IORING_OP_LINKAT, Linux 5.15

	ioringOffSqRing = 0
	ioringOffCqRing = 0x8000000
	ioringOffSqes   = 0x10000000

	ioringEnterGetevents = 1
)

type sqringOffsets struct {
	head, tail, ringMask, ringEntries, flags, dropped, array, resv1 uint32
	userAddr                                                        uint64
}

type cqringOffsets struct {
	head, tail, ringMask, ringEntries, overflow, cqes, flags, resv1 uint32
	userAddr                                                        uint64
}

type uringParams struct {
	sqEntries, cqEntries, flags, sqThreadCPU, sqThreadIdle, features, wqFd uint32
	resv                                                                   [3]uint32
	sqOff                                                                  sqringOffsets
	cqOff                                                                  cqringOffsets
}

// sqe is struct io_uring_sqe (64 bytes).
type sqe struct {
	opcode, flags uint8
	ioprio        uint16
	fd            int32
	off           uint64 // or addr2
	addr          uint64
	len           uint32
	opFlags       uint32 // open_flags, hardlink_flags
	userData      uint64
	bufIndex      uint16
	personality   uint16
	fileIndex     int32
	addr3         uint64
	pad           uint64
}

// cqe is struct io_uring_cqe (16 bytes).
type cqe struct {
	userData uint64
	res      int32
	flags    uint32
}

// uringCall submits one operation, set up by fill, and returns its result:
// a non-negative value, or the errno. The calling goroutine stays on its
// thread throughout; paths passed in fill must stay alive (uringCall keeps
// them with keep).
func uringCall(fill func(*sqe), keep ...any) (int32, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var p uringParams
	fd, _, errno := unix.Syscall(unix.SYS_IO_URING_SETUP, 1, uintptr(unsafe.Pointer(&p)), 0)
	if errno != 0 {
		return 0, fmt.Errorf("io_uring_setup: %w", errno)
	}
	defer unix.Close(int(fd))
	sq, err := unix.Mmap(int(fd), ioringOffSqRing, int(p.sqOff.array+p.sqEntries*4), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return 0, fmt.Errorf("mmap SQ ring: %w", err)
	}
	defer unix.Munmap(sq)
	cq, err := unix.Mmap(int(fd), ioringOffCqRing, int(p.cqOff.cqes+p.cqEntries*uint32(unsafe.Sizeof(cqe{}))), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return 0, fmt.Errorf("mmap CQ ring: %w", err)
	}
	defer unix.Munmap(cq)
	sqes, err := unix.Mmap(int(fd), ioringOffSqes, int(p.sqEntries*uint32(unsafe.Sizeof(sqe{}))), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return 0, fmt.Errorf("mmap SQEs: %w", err)
	}
	defer unix.Munmap(sqes)

	u32 := func(ring []byte, off uint32) *uint32 { return (*uint32)(unsafe.Pointer(&ring[off])) }
	tail := atomic.LoadUint32(u32(sq, p.sqOff.tail))
	idx := tail & atomic.LoadUint32(u32(sq, p.sqOff.ringMask))
	e := (*sqe)(unsafe.Pointer(&sqes[idx*uint32(unsafe.Sizeof(sqe{}))]))
	*e = sqe{}
	fill(e)
	*u32(sq, p.sqOff.array+idx*4) = idx
	atomic.StoreUint32(u32(sq, p.sqOff.tail), tail+1)
	// The wait for the completion can end early: a signal (the Go runtime
	// preempts with SIGURG) makes io_uring_enter return EINTR, or the count
	// it submitted, before the operation completes. Wait again, submitting
	// only what the kernel has not taken yet.
	head := atomic.LoadUint32(u32(cq, p.cqOff.head))
	for submit, try := uintptr(1), 0; head == atomic.LoadUint32(u32(cq, p.cqOff.tail)); try++ {
		if try == 1000 {
			return 0, fmt.Errorf("no io_uring completion after %d waits", try)
		}
		n, _, errno := unix.Syscall6(unix.SYS_IO_URING_ENTER, fd, submit, 1, ioringEnterGetevents, 0, 0)
		switch {
		case errno == unix.EINTR:
		case errno != 0:
			return 0, fmt.Errorf("io_uring_enter: %w", errno)
		default:
			submit -= min(submit, n)
		}
	}
	runtime.KeepAlive(keep)
	c := (*cqe)(unsafe.Pointer(&cq[p.cqOff.cqes+(head&atomic.LoadUint32(u32(cq, p.cqOff.ringMask)))*uint32(unsafe.Sizeof(cqe{}))]))
	res := c.res
	atomic.StoreUint32(u32(cq, p.cqOff.head), head+1)
	// While the ring is open: closing it ends its workers.
	uringWorkers()
	if res < 0 {
		return 0, unix.Errno(-res)
	}
	return res, nil
}

// uringOpenat is openat(AT_FDCWD, path, flags, 0644) through io_uring.
func uringOpenat(path string, flags int) (int, error) {
	b, err := unix.BytePtrFromString(path)
	if err != nil {
		return -1, err
	}
	fd, err := uringCall(func(e *sqe) {
		e.opcode = ioringOpOpenat
		e.fd = unix.AT_FDCWD
		e.addr = uint64(uintptr(unsafe.Pointer(b)))
		e.len = 0o644
		e.opFlags = uint32(flags)
	}, b)
	return int(fd), err
}

// uringLinkat is linkat(olddfd, oldpath, AT_FDCWD, newpath, flags) through
// io_uring.
func uringLinkat(olddfd int, oldpath, newpath string, flags int) error {
	o, err := unix.BytePtrFromString(oldpath)
	if err != nil {
		return err
	}
	n, err := unix.BytePtrFromString(newpath)
	if err != nil {
		return err
	}
	_, err = uringCall(func(e *sqe) {
		e.opcode = ioringOpLinkat
		e.fd = int32(olddfd)
		e.addr = uint64(uintptr(unsafe.Pointer(o)))
		e.len = uint32(unix.AT_FDCWD & 0xffffffff)
		e.off = uint64(uintptr(unsafe.Pointer(n)))
		e.opFlags = uint32(flags)
	}, o, n)
	return err
}

// uringWorkers prints the io_uring worker threads of this process
// ("iou-wrk-PID", Linux 5.12 on), one of which may have run the operation.
func uringWorkers() {
	tasks, _ := os.ReadDir("/proc/self/task")
	for _, t := range tasks {
		comm, err := os.ReadFile("/proc/self/task/" + t.Name() + "/comm")
		if err == nil && strings.HasPrefix(string(comm), "iou-wrk-") {
			fmt.Printf("worker %s\n", t.Name())
		}
	}
}
