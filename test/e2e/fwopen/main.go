// Command fwopen opens one file with exactly the open(2) flags it is told,
// for the kernel e2e tests: busybox has no way to ask for O_EXCL, and a test
// that checks pid and tid needs to know which thread made the call.
//
//	fwopen [-creat] [-excl] [-trunc] [-thread] PATH
//	fwopen -mknod PATH                 mknod(2) a regular file
//	fwopen -tmpfile PATH               an O_TMPFILE file in PATH's directory, never linked
//	fwopen -tmpfile-link empty|proc PATH
//	                                   an O_TMPFILE file in PATH's directory, linked
//	                                   as PATH by linkat(2) with AT_EMPTY_PATH, or
//	                                   through /proc/self/fd/N
//
// It prints "tid N" (the thread that called open) on stdout and exits 0 on
// success, or with the errno as its exit status (EEXIST is 17).
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"
)

// The main goroutine stays on the main thread, so without -thread the opening
// thread's id is the process id.
func init() { runtime.LockOSThread() }

func main() {
	creat := flag.Bool("creat", false, "O_CREAT")
	excl := flag.Bool("excl", false, "O_EXCL (with O_CREAT)")
	trunc := flag.Bool("trunc", false, "O_TRUNC")
	thread := flag.Bool("thread", false, "open from a thread other than the main thread")
	mknod := flag.Bool("mknod", false, "mknod(2) PATH as a regular file instead of opening it")
	tmpfile := flag.Bool("tmpfile", false, "make an O_TMPFILE file in PATH's directory and never link it")
	tmpfileLink := flag.String("tmpfile-link", "", "make an O_TMPFILE file and link it as PATH: through AT_EMPTY_PATH (empty) or /proc/self/fd/N (proc)")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: fwopen [-creat] [-excl] [-trunc] [-thread] [-mknod | -tmpfile | -tmpfile-link empty|proc] PATH")
		os.Exit(2)
	}
	switch {
	case *mknod:
		exit(syscall.Mknod(flag.Arg(0), syscall.S_IFREG|0o644, 0))
	case *tmpfile:
		exit(makeTmpfile(flag.Arg(0), ""))
	case *tmpfileLink != "":
		exit(makeTmpfile(flag.Arg(0), *tmpfileLink))
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

// exit ends fwopen after a call that printed nothing: status 0, or the errno.
func exit(err error) {
	if err == nil {
		os.Exit(0)
	}
	fmt.Fprintf(os.Stderr, "fwopen: %v\n", err)
	var errno syscall.Errno
	if errors.As(err, &errno) {
		os.Exit(int(errno))
	}
	os.Exit(1)
}

// makeTmpfile makes an O_TMPFILE file in path's directory and writes to it;
// then, by via (empty: AT_EMPTY_PATH, proc: /proc/self/fd/N; "": not at
// all), links it as path.
func makeTmpfile(path, via string) error {
	fd, err := unix.Open(filepath.Dir(path), unix.O_TMPFILE|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return fmt.Errorf("open O_TMPFILE in %q: %w", filepath.Dir(path), err)
	}
	defer unix.Close(fd)
	if _, err := unix.Write(fd, []byte("made with O_TMPFILE\n")); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	switch via {
	case "":
		return nil
	case "empty":
		err = unix.Linkat(fd, "", unix.AT_FDCWD, path, unix.AT_EMPTY_PATH)
	case "proc":
		err = unix.Linkat(unix.AT_FDCWD, fmt.Sprintf("/proc/self/fd/%d", fd), unix.AT_FDCWD, path, unix.AT_SYMLINK_FOLLOW)
	default:
		return fmt.Errorf("-tmpfile-link %q: want empty or proc", via)
	}
	if err != nil {
		return fmt.Errorf("linkat %q (%s): %w", path, via, err)
	}
	return nil
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
