//go:build e2e

package e2e

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"path"
	"strconv"
	"strings"
	"testing"
	"time"

	fwv1 "github.com/filewatcher/filewatcher/proto/filewatcher/v1"
	"github.com/filewatcher/filewatcher/test/vm/agent/vmagent"
)

// Odd file names that must arrive byte for byte.
var oddNames = []string{
	"with space",
	"new\nline",
	"trailing-newline\n",
	`double"quote`,
	"single'quote",
	`back\slash`,
	"tab\tname",
	"\x01control\x7f",
	"non-utf8-\xff\xfe\x80",
	"utf8-é-ü-日本",
	"-leading-dash",
	"%s%n%x",
}

// scenario is one run of the scripted operations in a fresh directory.
type scenario struct {
	g       *guest
	dir     string // under /tmp (tmpfs)
	rootDir string // on the initramfs root
	// long4000 and long4095 are absolute paths of exactly that many bytes
	// (4095 is the longest open(2) takes); deepDir is a directory whose path
	// leaves no room under PATH_MAX for a 200-byte name.
	long4000, long4095, deepDir string
	// longMknod is a 4095-byte path for mknod(2), whose path the eBPF-only
	// probe builds itself (bpf_d_path() may not run there).
	longMknod string
	// oddComm is a symlink to fwopen whose name (so the comm of a process
	// started through it) is not UTF-8.
	oddComm string
	// ovl is an overlayfs like a container's root: ovl/lower (with the files
	// existing-1 to -5), ovl/upper and ovl/work, mounted on ovl/merged.
	ovl string
	// suid is a copy of fwopen, setuid root.
	suid string
	// setupFiles are the files setup makes (before any stream starts):
	// a test that reads every event, not only those after its sync
	// marker, expects them too.
	setupFiles []string
	want       []event
}

func newScenario(g *guest) *scenario {
	id := make([]byte, 6)
	rand.Read(id)
	tag := hex.EncodeToString(id)
	s := &scenario{g: g, dir: "/tmp/fw-e2e-" + tag, rootDir: "/srv/fw-e2e-" + tag}
	s.long4000 = longPath(s.dir+"/long-a", 4000)
	s.long4095 = longPath(s.dir+"/long-b", 4095)
	s.deepDir = longPath(s.dir+"/deep", 4000)
	s.longMknod = longPath(s.dir+"/long-m", 4095)
	s.oddComm = s.dir + "/op\xffen"
	s.ovl = s.dir + "/ovl"
	s.suid = s.rootDir + "/fwopen-suid"
	return s
}

// longPath returns a path of exactly total bytes under base: directories of
// 200 bytes, then a last name of at most 255 (NAME_MAX).
func longPath(base string, total int) string {
	p := base
	for total-len(p)-1 > 255 {
		p += "/" + strings.Repeat("d", min(200, total-len(p)-3))
	}
	return p + "/" + strings.Repeat("f", total-len(p)-1)
}

// setup makes the directories and the overlayfs (with one file in its
// lower layer): before the streams start, so none of it is expected.
func (s *scenario) setup(t *testing.T) {
	d, o := s.dir, s.ovl
	s.g.run(t, 0, argv("mkdir", "-p", d+"/sub", d+"/private", s.rootDir,
		path.Dir(s.long4000), path.Dir(s.long4095), path.Dir(s.longMknod), s.deepDir,
		o+"/lower", o+"/upper", o+"/work", o+"/merged", d+"/cores"))
	s.g.run(t, 0, argv("chmod", "1777", d))
	s.g.run(t, 0, argv("ln", "-s", "/usr/local/bin/fwopen", s.oddComm))
	s.g.run(t, 0, argv("sh", "-c", `cp /usr/local/bin/fwopen "$1" && chmod 4755 "$1"`, "sh", s.suid))
	s.g.run(t, 0, argv("sh", "-c", `for i in 1 2 3 4 5; do echo lower > "$1/existing-$i"; done`, "sh", o+"/lower"))
	s.setupFiles = append(s.setupFiles, s.suid)
	for i := 1; i <= 5; i++ {
		s.setupFiles = append(s.setupFiles, fmt.Sprintf("%s/lower/existing-%d", o, i))
	}
	s.g.run(t, 0, argv("mount", "-t", "overlay", "overlay", "-o",
		"lowerdir="+o+"/lower,upperdir="+o+"/upper,workdir="+o+"/work", o+"/merged"))
}

// creates creates files, each exactly once, and records the events they must
// give: the absolute path and the creating process's identity.
func (s *scenario) creates(t *testing.T) {
	d := s.dir
	s.create(t, d+"/plain", "touch", argv("touch", d+"/plain"))
	s.create(t, d+"/relative", "touch", vmagent.Request{Argv: vmagent.Args("touch", "relative"), Dir: []byte(d)})
	s.create(t, d+"/dotdot", "touch", vmagent.Request{Argv: vmagent.Args("touch", "sub/../dotdot"), Dir: []byte(d)})
	s.create(t, d+"/excl-new", "fwopen", argv("fwopen", "-excl", d+"/excl-new"))
	s.createOnThread(t, d+"/from-thread")
	s.create(t, d+"/redirect", "sh", argv("sh", "-c", `echo hi > "$1"`, "sh", d+"/redirect"))
	for _, name := range oddNames {
		s.create(t, d+"/"+name, "touch", argv("touch", d+"/"+name))
	}
	s.create(t, s.rootDir+"/on-rootfs", "touch", argv("touch", s.rootDir+"/on-rootfs"))
	s.create(t, s.long4000, "touch", argv("touch", s.long4000))
	s.create(t, s.long4095, "touch", argv("touch", s.long4095))
	s.create(t, d+"/owned", "touch", vmagent.Request{Argv: vmagent.Args("touch", d+"/owned"), UID: u32(1234), GID: u32(4321)})
	s.create(t, d+"/weird-comm", "op\xffen", argv(s.oddComm, "-creat", d+"/weird-comm"))
	// A setuid-root program run by a user: the real ids are the user's, the
	// file is root's (fsuid), its group the user's.
	s.create(t, d+"/by-setuid", "fwopen-suid", vmagent.Request{Argv: vmagent.Args(s.suid, "-creat", d+"/by-setuid"), UID: u32(1234), GID: u32(4321)})
	s.want[len(s.want)-1].fsuid = 0
	// Too long to resolve: the event still fires, with the bare name, flagged.
	name200 := strings.Repeat("n", 200)
	s.create(t, name200, "touch", vmagent.Request{Argv: vmagent.Args("touch", name200), Dir: []byte(s.deepDir)})
	s.want[len(s.want)-1].flags = uint32(fwv1.EventFlag_EVENT_FLAG_PATH_UNRESOLVED)
	s.createsWithoutOpen(t)
}

// createsWithoutOpen makes files no open creates: mknod(2) of a regular
// file, and O_TMPFILE files given a name by linkat(2), both ways.
func (s *scenario) createsWithoutOpen(t *testing.T) {
	d := s.dir
	mknod, tmpfile := fwv1.EventKind_EVENT_KIND_MKNOD, fwv1.EventKind_EVENT_KIND_TMPFILE_LINK
	s.createAs(t, mknod, d+"/mknod", "fwopen", argv("fwopen", "-mknod", d+"/mknod"))
	s.createAs(t, mknod, d+"/mknod-relative", "fwopen", vmagent.Request{Argv: vmagent.Args("fwopen", "-mknod", "sub/../mknod-relative"), Dir: []byte(d)})
	s.createAs(t, mknod, d+"/mknod odd\n\xff", "fwopen", argv("fwopen", "-mknod", d+"/mknod odd\n\xff"))
	s.createAs(t, mknod, s.rootDir+"/mknod-on-rootfs", "fwopen", argv("fwopen", "-mknod", s.rootDir+"/mknod-on-rootfs"))
	s.createAs(t, mknod, s.longMknod, "fwopen", argv("fwopen", "-mknod", s.longMknod))
	s.createAs(t, mknod, d+"/mknod-owned", "fwopen", vmagent.Request{Argv: vmagent.Args("fwopen", "-mknod", d+"/mknod-owned"), UID: u32(1234), GID: u32(4321)})
	s.createAs(t, tmpfile, d+"/tmpfile-empty-path", "fwopen", argv("fwopen", "-tmpfile-link", "empty", d+"/tmpfile-empty-path"))
	s.createAs(t, tmpfile, d+"/tmpfile-proc-fd", "fwopen", argv("fwopen", "-tmpfile-link", "proc", d+"/tmpfile-proc-fd"))
	s.createAs(t, tmpfile, s.rootDir+"/tmpfile-on-rootfs", "fwopen", argv("fwopen", "-tmpfile-link", "empty", s.rootDir+"/tmpfile-on-rootfs"))
	// io_uring: a creating open, and both ways of linking.
	s.createByUring(t, fwv1.EventKind_EVENT_KIND_OPEN, d+"/uring-openat", argv("fwopen", "-uring", "-creat", d+"/uring-openat"))
	for _, via := range []string{"empty", "proc"} {
		req := argv("fwopen", "-uring", "-tmpfile-link", via, d+"/uring-tmpfile-"+via)
		if releaseAtLeast(s.g.release, 5, 15) {
			s.createByUring(t, tmpfile, d+"/uring-tmpfile-"+via, req)
		} else {
			s.none(t, 22, req) // EINVAL: IORING_OP_LINKAT is 5.15's
		}
	}
	// Too long to resolve: the bare name, flagged, as for an open.
	name := "mknod-" + strings.Repeat("m", 194)
	s.createAs(t, mknod, name, "fwopen", vmagent.Request{Argv: vmagent.Args("fwopen", "-mknod", name), Dir: []byte(s.deepDir)})
	s.want[len(s.want)-1].flags = uint32(fwv1.EventFlag_EVENT_FLAG_PATH_UNRESOLVED)
	s.overlayCreates(t)
	s.coreDumps(t)
}

// coreDumps makes the kernel write core files, in the crashing process's
// context: through filp_open() (the open function) for an ordinary
// process, through file_open_root() (no open function) for one that changed
// its credentials, when fs.suid_dumpable is 2.
func (s *scenario) coreDumps(t *testing.T) {
	cores := s.dir + "/cores"
	s.g.sh(t, "echo '"+cores+"/core.%p' > /proc/sys/kernel/core_pattern && echo 2 > /proc/sys/fs/suid_dumpable")
	defer s.g.sh(t, "echo core > /proc/sys/kernel/core_pattern && echo 0 > /proc/sys/fs/suid_dumpable")
	for _, uid := range []int{-1, 1234} {
		resp := s.g.run(t, 134, argv("fwopen", "-crash", "-crash-uid", fmt.Sprint(uid), cores)) // SIGABRT
		e := event{path: []byte(fmt.Sprintf("%s/core.%d", cores, resp.PID)), pid: uint32(resp.PID), tgid: uint32(resp.PID), comm: []byte("fwopen")}
		if uid >= 0 {
			e.uid = uint32(uid) // and fsuid 0: a suid-safe dump is written as root
		}
		s.want = append(s.want, e)
	}
}

// overlayCreates creates on the overlayfs: each creation is reported once,
// by its merged path, never again for the file overlayfs makes in the upper
// layer underneath (its nested vfs_create(), vfs_link(), O_TMPFILE).
func (s *scenario) overlayCreates(t *testing.T) {
	m := s.ovl + "/merged"
	s.create(t, m+"/opened", "touch", argv("touch", m+"/opened"))
	s.createAs(t, fwv1.EventKind_EVENT_KIND_MKNOD, m+"/mknod", "fwopen", argv("fwopen", "-mknod", m+"/mknod"))
	req := argv("fwopen", "-tmpfile-link", "empty", m+"/tmpfile")
	if releaseAtLeast(s.g.release, 6, 6) {
		s.createAs(t, fwv1.EventKind_EVENT_KIND_TMPFILE_LINK, m+"/tmpfile", "fwopen", req)
	} else {
		s.none(t, 95, req) // EOPNOTSUPP: overlayfs has O_TMPFILE since 6.6
	}
}

// nonCreates opens with O_CREAT without creating, fails to create, or
// creates something that is not a file: none of it may give an event.
func (s *scenario) nonCreates(t *testing.T) {
	d := s.dir
	s.none(t, 0, argv("touch", d+"/plain"))
	s.none(t, 0, argv("sh", "-c", `: >> "$1"`, "sh", d+"/plain"))
	s.none(t, 0, argv("fwopen", "-creat", d+"/plain"))
	s.none(t, 0, argv("fwopen", "-creat", "-trunc", d+"/plain"))
	// EEXIST, ENOENT, EACCES:
	s.none(t, 17, argv("fwopen", "-excl", d+"/plain"))
	s.none(t, 2, argv("fwopen", "-creat", d+"/missing/file"))
	s.none(t, 13, vmagent.Request{Argv: vmagent.Args("fwopen", "-creat", d+"/private/denied"), UID: u32(1234), GID: u32(4321)})
	s.none(t, 0, argv("mkdir", d+"/a-directory"))
	// Not creations of a file: an O_TMPFILE file never linked (nothing
	// appears), a hard link and a rename of an existing file (a new name,
	// not a new file), mknod(2) of what is not a regular file, a symlink.
	s.none(t, 0, argv("fwopen", "-tmpfile", d+"/never-linked"))
	s.none(t, 17, argv("fwopen", "-mknod", d+"/plain"))
	s.none(t, 0, argv("ln", d+"/plain", d+"/hard-link"))
	s.none(t, 0, argv("ln", d+"/mknod", d+"/hard-link-of-mknod"))
	s.none(t, 0, argv("mv", d+"/hard-link", d+"/renamed"))
	s.none(t, 0, argv("mkfifo", d+"/fifo"))
	s.none(t, 0, argv("mknod", d+"/null", "c", "1", "3"))
	s.none(t, 0, argv("ln", "-s", "plain", d+"/symlink"))
	// On the overlayfs, copy-up makes a file in the upper layer, but no new
	// file appears in the merged tree: a lower file opened for writing,
	// without and with O_CREAT, given a hard link, renamed.
	m := s.ovl + "/merged"
	s.none(t, 0, argv("fwopen", m+"/existing-1"))
	s.none(t, 0, argv("fwopen", "-creat", m+"/existing-2"))
	s.none(t, 0, argv("ln", m+"/existing-3", m+"/hard-link"))
	s.none(t, 0, argv("mv", m+"/existing-4", m+"/renamed"))
	s.none(t, 17, argv("fwopen", "-mknod", m+"/existing-5"))
	// Nothing the probes did holds the mount: it unmounts at once.
	s.g.run(t, 0, argv("umount", m))
}

// releaseAtLeast says whether a kernel release ("6.12.95+deb12-cloud-amd64")
// is major.minor or later.
func releaseAtLeast(release string, major, minor int) bool {
	var maj, min int
	if _, err := fmt.Sscanf(release, "%d.%d", &maj, &min); err != nil {
		panic(fmt.Sprintf("kernel release %q: %v", release, err))
	}
	return maj > major || maj == major && min >= minor
}

// create runs req, which must succeed, and expects one event for file from
// the process it started (uid and gid from req, comm as given).
func (s *scenario) create(t *testing.T, file, comm string, req vmagent.Request) {
	t.Helper()
	s.createAs(t, fwv1.EventKind_EVENT_KIND_OPEN, file, comm, req)
}

// createAs is create for a creation of the given kind.
func (s *scenario) createAs(t *testing.T, kind fwv1.EventKind, file, comm string, req vmagent.Request) {
	t.Helper()
	resp := s.g.run(t, 0, req)
	e := event{path: []byte(file), pid: uint32(resp.PID), tgid: uint32(resp.PID), comm: []byte(comm), kind: kind}
	if req.UID != nil {
		e.uid = *req.UID
	}
	if req.GID != nil {
		e.gid = *req.GID
	}
	e.fsuid, e.fsgid = e.uid, e.gid // the agent sets every id
	s.want = append(s.want, e)
}

// createByUring is createAs for a creation through io_uring, which runs it
// in the calling thread or in a worker thread of the process: fwopen -uring
// prints the calling thread ("tid N") and the process's workers after the
// call ("worker N"), and the event may come from any of them.
func (s *scenario) createByUring(t *testing.T, kind fwv1.EventKind, file string, req vmagent.Request) {
	t.Helper()
	resp := s.g.run(t, 0, req)
	e := event{path: []byte(file), kind: kind}
	for _, line := range strings.Split(string(resp.Stdout), "\n") {
		var tid uint32
		alt := event{path: e.path, kind: kind, tgid: uint32(resp.PID)}
		if _, err := fmt.Sscanf(line, "tid %d", &tid); err == nil {
			alt.pid, alt.comm = tid, []byte("fwopen")
		} else if _, err := fmt.Sscanf(line, "worker %d", &tid); err == nil {
			alt.pid, alt.comm = tid, []byte(fmt.Sprintf("iou-wrk-%d", resp.PID))
		} else {
			continue
		}
		e.alts = append(e.alts, alt)
	}
	if len(e.alts) == 0 {
		t.Fatalf("%q printed no tid (stdout %q)", req.Argv, resp.Stdout)
	}
	s.want = append(s.want, e)
}

// none runs req, which must exit with wantExit and create nothing.
func (s *scenario) none(t *testing.T, wantExit int, req vmagent.Request) {
	t.Helper()
	s.g.run(t, wantExit, req)
}

func argv(a ...string) vmagent.Request { return vmagent.Request{Argv: vmagent.Args(a...)} }

func u32(v uint32) *uint32 { return &v }

// testEvents runs the scenario under two subscriptions, one unfiltered and
// one filtered by path prefix, and returns the loader's run id.
func testEvents(t *testing.T, g *guest) string {
	s := newScenario(g)
	s.setup(t)
	all := subscribe(t, g.client, &fwv1.SubscribeRequest{})
	filtered := subscribe(t, g.client, &fwv1.SubscribeRequest{
		Filter: &fwv1.Filter{PathPrefixes: [][]byte{[]byte(s.dir + "/"), []byte(s.rootDir + "/")}},
	})
	syncPath := s.sync(t, all, filtered)
	s.creates(t)
	s.nonCreates(t)
	endPath := s.dir + "/end"
	s.create(t, endPath, "touch", argv("touch", endPath))
	for _, sub := range []*subscription{all, filtered} {
		if sub.waitPath([]byte(endPath), time.Minute) < 0 {
			_, _, err := sub.snapshot()
			t.Fatalf("no event for %s within a minute (stream error: %v)", endPath, err)
		}
	}

	t.Run("unfiltered stream is exact", func(t *testing.T) {
		got := after(t, all, syncPath)
		assertEvents(t, summarize(got), s.want)
		assertDense(t, all)
		assertEventTimes(t, got)
	})
	t.Run("prefix filter", func(t *testing.T) {
		var want []event
		for _, e := range s.want {
			if e.flags == 0 {
				want = append(want, e)
			}
		}
		assertEvents(t, summarize(after(t, filtered, syncPath)), want)
		if filtered.filteredCount() == 0 {
			t.Errorf("filtered_count is 0, but the unresolved event is outside the prefixes")
		}
	})
	ids := all.runIDList()
	if len(ids) != 1 {
		t.Fatalf("run ids on one stream: %q, want exactly one", ids)
	}
	return ids[0]
}

// createOnThread makes fwopen create path from a second thread: pid is that
// thread's id, tgid the process's.
func (s *scenario) createOnThread(t *testing.T, file string) {
	t.Helper()
	resp := s.g.run(t, 0, argv("fwopen", "-creat", "-thread", file))
	tid, err := strconv.Atoi(strings.TrimPrefix(strings.TrimSpace(string(resp.Stdout)), "tid "))
	if err != nil || tid == resp.PID {
		t.Fatalf("fwopen -thread printed %q (process %d): want another thread's id", resp.Stdout, resp.PID)
	}
	s.want = append(s.want, event{path: []byte(file), pid: uint32(tid), tgid: uint32(resp.PID), comm: []byte("fwopen")})
}

// sync creates marker files until every subscription has seen one, so that
// everything created afterwards is known to reach all of them. It returns the
// marker's path.
func (s *scenario) sync(t *testing.T, subs ...*subscription) string {
	t.Helper()
	for i := 1; i <= 20; i++ {
		p := fmt.Sprintf("%s/sync-%d", s.dir, i)
		s.g.run(t, 0, argv("touch", p))
		ok := true
		for _, sub := range subs {
			ok = ok && sub.waitPath([]byte(p), 3*time.Second) >= 0
		}
		if ok {
			return p
		}
	}
	for _, sub := range subs {
		events, gaps, err := sub.snapshot()
		t.Logf("subscription: %d events, %d gaps, error %v", len(events), len(gaps), err)
	}
	t.Fatalf("subscriptions never saw a marker file in %s", s.dir)
	return ""
}
