// Command fwopen opens one file with exactly the open(2) flags it is told,
// for the kernel e2e tests: busybox has no way to ask for O_EXCL, and a test
// that checks pid and tid needs to know which thread made the call.
//
//	fwopen [-creat] [-excl] [-trunc] [-thread] PATH
//
// It prints "tid N" (the thread that called open) on stdout and exits 0 on
// success, or with the errno as its exit status (EEXIST is 17).
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime"
	"syscall"
)

// The main goroutine stays on the main thread, so without -thread the opening
// thread's id is the process id.
func init() { runtime.LockOSThread() }

func main() {
	creat := flag.Bool("creat", false, "O_CREAT")
	excl := flag.Bool("excl", false, "O_EXCL (with O_CREAT)")
	trunc := flag.Bool("trunc", false, "O_TRUNC")
	thread := flag.Bool("thread", false, "open from a thread other than the main thread")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: fwopen [-creat] [-excl] [-trunc] [-thread] PATH")
		os.Exit(2)
	}
	flags := syscall.O_WRONLY | syscall.O_CLOEXEC
	if *creat || *excl {
		flags |= syscall.O_CREAT
	}
	if *excl {
		flags |= syscall.O_EXCL
	}
	if *trunc {
		flags |= syscall.O_TRUNC
	}
	open := func() (int, error) { return openOnce(flag.Arg(0), flags) }
	var tid int
	var err error
	if *thread {
		tid, err = onOtherThread(open)
	} else {
		tid, err = open()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "fwopen: %v\n", err)
		var errno syscall.Errno
		if errors.As(err, &errno) {
			os.Exit(int(errno))
		}
		os.Exit(1)
	}
	fmt.Printf("tid %d\n", tid)
}

// openOnce opens and closes path, returning the calling thread's id.
func openOnce(path string, flags int) (int, error) {
	fd, err := syscall.Open(path, flags, 0o644)
	if err != nil {
		return 0, fmt.Errorf("open %q: %w", path, err)
	}
	tid := syscall.Gettid()
	return tid, syscall.Close(fd)
}

// onOtherThread runs f on a goroutine locked to its own thread; the main
// thread is locked to main, so this cannot be it.
func onOtherThread(f func() (int, error)) (int, error) {
	type result struct {
		tid int
		err error
	}
	done := make(chan result)
	go func() {
		runtime.LockOSThread()
		tid, err := f()
		done <- result{tid, err}
	}()
	r := <-done
	if r.err == nil && r.tid == os.Getpid() {
		return 0, fmt.Errorf("opened on the main thread (tid %d) despite -thread", r.tid)
	}
	return r.tid, r.err
}
