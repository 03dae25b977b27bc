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
//	fwopen -crash [-crash-uid N] DIR   dump core (DIR: where core_pattern points, for
//	                                   the reader), after setuid(N) if given: the
//	                                   kernel then writes it suid-safe
//	                                   (file_open_root) when fs.suid_dumpable is 2
//	fwopen -uring [-creat] ... PATH    the open through io_uring (IORING_OP_OPENAT)
//	fwopen -uring -tmpfile-link ...    the link through io_uring (IORING_OP_LINKAT)
//
// With -uring it prints each io_uring worker thread of the process once the
// operation completed ("worker N") and the calling thread ("tid N"):
// io_uring runs an operation in either, as the kernel decides.
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
	"runtime/debug"
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
	flag.BoolVar(&useUring, "uring", false, "open or link through io_uring")
	crash := flag.Bool("crash", false, "dump core (SIGABRT)")
	crashUID := flag.Int("crash-uid", -1, "with -crash: setuid to this uid first")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: fwopen [-creat] [-excl] [-trunc] [-thread] [-mknod | -tmpfile | -tmpfile-link empty|proc] PATH")
		os.Exit(2)
	}
	switch {
	case *crash:
		dumpCore(*crashUID)
	case *mknod && useUring:
		fmt.Fprintln(os.Stderr, "fwopen: io_uring has no mknod")
		os.Exit(2)
	case *mknod:
		exit(syscall.Mknod(flag.Arg(0), syscall.S_IFREG|0o644, 0))
	case *tmpfile:
		exit(makeTmpfile(flag.Arg(0), ""))
	case *tmpfileLink != "":
		err := makeTmpfile(flag.Arg(0), *tmpfileLink)
		if err == nil && useUring {
			fmt.Printf("tid %d\n", syscall.Gettid())
		}
		exit(err)
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
	switch {
	case *thread:
		tid, err = onOtherThread(open)
	case useUring:
		var fd int
		if fd, err = uringOpenat(flag.Arg(0), flags); err == nil {
			tid, err = syscall.Gettid(), syscall.Close(fd)
		}
	default:
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

// dumpCore ends the process with a core dump, after setuid(uid) if uid is
// not negative: the credential change makes the process's dumpable flag
// fs.suid_dumpable, as a setuid program's.
func dumpCore(uid int) {
	limit := unix.Rlimit{Cur: unix.RLIM_INFINITY, Max: unix.RLIM_INFINITY}
	if err := unix.Setrlimit(unix.RLIMIT_CORE, &limit); err != nil {
		exit(fmt.Errorf("setrlimit RLIMIT_CORE: %w", err))
	}
	if uid >= 0 {
		if err := syscall.Setuid(uid); err != nil {
			exit(fmt.Errorf("setuid %d: %w", uid, err))
		}
	}
	// "crash": the runtime raises SIGABRT, with the default action, on the
	// panicking thread (the main one: see init).
	debug.SetTraceback("crash")
	panic("fwopen -crash: dumping core")
}

// useUring: -uring.
var useUring bool

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
		if useUring {
			err = uringLinkat(fd, "", path, unix.AT_EMPTY_PATH)
		} else {
			err = unix.Linkat(fd, "", unix.AT_FDCWD, path, unix.AT_EMPTY_PATH)
		}
	case "proc":
		if useUring {
			err = uringLinkat(unix.AT_FDCWD, fmt.Sprintf("/proc/self/fd/%d", fd), path, unix.AT_SYMLINK_FOLLOW)
		} else {
			err = unix.Linkat(unix.AT_FDCWD, fmt.Sprintf("/proc/self/fd/%d", fd), unix.AT_FDCWD, path, unix.AT_SYMLINK_FOLLOW)
		}
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
