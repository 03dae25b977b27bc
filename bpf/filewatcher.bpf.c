//go:build ignore

// filewatcher.bpf.c: the two probes that report file creations to user space
// through one BPF ring buffer.
//
//  - kmod: file_created, on the kernel module's filewatcher/file_created
//    tracepoint, forwards what the module fires (file_created_raw, on the
//    same tracepoint's raw form, when the loader pins the probe).
//  - bpf (the eBPF-only probe, for hosts that cannot load the module):
//    fentry_security_file_open and fexit_open see the same creations without
//    a module, on kernels with BTF and BPF trampolines; the fexit programs
//    on security_path_mknod/link and vfs_create/link see mknod(2) and
//    linkat(2) of O_TMPFILE files, as the module's kretprobes do.
//
// The loader loads the programs of one probe only (loader-go/internal/kernel).
// Both write the same records: a struct event_hdr followed by exactly
// hdr.path_len bytes of path (no NUL, no padding), so records are sized to
// the path, not to PATH_MAX. Nothing is lost silently: an event that cannot
// be written (ring buffer full) or read is counted in the per-CPU losses map,
// which the loader polls and turns into in-band gaps. A record wakes the
// reader only once 1/8 of the ring is unread; the loader also reads on a timer.
//
// Built by bpf2go from loader-go/internal/bpfobj (go generate); the generated
// object is checked in.

#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

#define PATH_MAX 4096
#define NAME_MAX 255
#define TASK_COMM_LEN 16

// As in the kernel: include/linux/fs.h (0x100000 in every kernel 5.10 to
// 7.x), the generic fcntl.h (x86 and arm64 alike), kmod/filewatcher_trace.h.
#define FMODE_CREATED 0x100000
#define O_CREAT 00000100
#define FW_PATH_UNRESOLVED 1
// How the file was created, in bits 8 to 15 of flags (as the module sets
// them, kmod/filewatcher_trace.h); 0 is an open.
#define FW_KIND_SHIFT 8
#define FW_KIND_MKNOD 2
#define FW_KIND_TMPFILE_LINK 3
#define S_IFMT 00170000
#define S_IFREG 0100000

// Mirrors /sys/kernel/tracing/events/filewatcher/file_created/format:
//
//	field:unsigned short common_type;	offset:0;	size:2;
//	field:unsigned char common_flags;	offset:2;	size:1;
//	field:unsigned char common_preempt_count;	offset:3;	size:1;
//	field:int common_pid;	offset:4;	size:4;
//	field:__data_loc char[] filename;	offset:8;	size:4;
//	field:u32 flags;	offset:12;	size:4;
//
// __data_loc: the low 16 bits are the offset of the NUL-terminated string from
// the start of the record, the high 16 bits its length including the NUL.
//
// The loader compares this struct, from the object's BTF, with the running
// kernel's format file before it attaches (loader-go/internal/kernel,
// checkTracepointLayout): the first member covers the common fields, and a
// member named __data_loc_X is the __data_loc field X (as in vmlinux.h).
struct file_created_ctx {
	__u64 common;
	__u32 __data_loc_filename;
	__u32 flags;
};

// The kernel's own types, as far as the eBPF-only probe reads them. With
// preserve_access_index every member access is relocated (CO-RE) against the
// running kernel's BTF when the loader loads the program, so the offsets are
// the running kernel's, whatever its struct layout; a member it lacks fails
// the load, never reads the wrong memory.
struct qstr {
	unsigned int len;
	const unsigned char *name;
} __attribute__((preserve_access_index));
struct inode_operations {
	void *atomic_open;
} __attribute__((preserve_access_index));
struct inode {
	unsigned short i_mode;
	const struct inode_operations *i_op;
	unsigned int i_nlink;
} __attribute__((preserve_access_index));
struct dentry {
	struct dentry *d_parent;
	struct qstr d_name;
	struct inode *d_inode;
} __attribute__((preserve_access_index));
struct vfsmount {
	struct dentry *mnt_root;
} __attribute__((preserve_access_index));
// fs/mount.h: a struct vfsmount is the member mnt of its struct mount.
struct mount {
	struct mount *mnt_parent;
	struct dentry *mnt_mountpoint;
	struct vfsmount mnt;
} __attribute__((preserve_access_index));
struct path {
	struct vfsmount *mnt;
	struct dentry *dentry;
} __attribute__((preserve_access_index));
struct fs_struct {
	struct path root;
} __attribute__((preserve_access_index));
typedef struct {
	unsigned int val;
} kuid_t;
typedef struct {
	unsigned int val;
} kgid_t;
struct cred {
	kuid_t fsuid;
	kgid_t fsgid;
} __attribute__((preserve_access_index));
struct task_struct {
	struct fs_struct *fs;
	const struct cred *cred;
} __attribute__((preserve_access_index));
struct file {
	struct path f_path;
	unsigned int f_flags;
	unsigned int f_mode;
} __attribute__((preserve_access_index));

// Header of every ring-buffer record; decoded by loader-go/internal/kernel.
struct event_hdr {
	__u64 ktime_ns;
	__u64 cgroup_id;
	__u32 pid;	// task id
	__u32 tgid;	// process id
	__u32 uid;
	__u32 gid;
	__u32 flags;	// bit 0: path unresolved (FW_PATH_UNRESOLVED)
	__u32 path_len;	// path bytes following the header, without NUL
	char comm[TASK_COMM_LEN];
	// The record's place in its stream: the records one program slot
	// (STREAM_*) wrote on one CPU are numbered 1, 2, 3, ... in the order
	// they entered the ring (see streams).
	__u64 stream_seq;
	__u32 cpu;
	__u32 slot;
	// The creating task's filesystem ids (its subjective credentials): the
	// ids a new file is owned by, unlike uid and gid (the real ids).
	__u32 fsuid;
	__u32 fsgid;
};

struct event {
	struct event_hdr hdr;
	char path[PATH_MAX];
};

// An event of the eBPF-only probe waiting for its open to finish (see
// fexit_open), with the struct file it is about.
struct pending {
	__u64 file;
	struct event ev;
};

// Loss counters, one slot per CPU; the loader sums them.
struct loss_counters {
	__u64 ringbuf_full;	// events bpf_ringbuf_output could not write
	__u64 read_errors;	// events whose path could not be read, or
				// that found pending_opens full
};

// The loader sets max_entries (the ring size in bytes) at load time.
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 24);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct loss_counters);
} losses SEC(".maps");

// Records written, per program slot and CPU: the last stream_seq that
// reached the ring. A slot's program never runs twice at once on one CPU
// (a tracepoint program runs with preemption off and bpf_prog_active held, a
// tracing program under its own recursion guard: a run that would nest is
// skipped and counted in the program's recursion misses), so each count
// grows by one per record and records of a stream reach the ring in order.
// The two programs of the eBPF-only probe have a slot each, since one can
// run while the other is preempted. Pinned with the ring (the loader's
// --pin-dir), these let a loader that replaces a dead one count exactly the
// records the dead one had read but not handed on: the numbers missing
// between its last checkpoint and what the ring still holds.
#define STREAM_OPEN 0	// file_created, fentry_security_file_open
#define STREAM_EXIT 1	// fexit_open
#define STREAM_ROUTE 2	// fexit_vfs_create_*, fexit_vfs_link_*
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 3);
	__type(key, __u32);
	__type(value, __u64);
} streams SEC(".maps");

// A struct event (4 KiB) does not fit on the 512-byte BPF stack. One per
// stream slot (STREAM_*), since programs of different slots may interleave
// on a CPU.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 3);
	__type(key, __u32);
	__type(value, struct pending);
} scratch SEC(".maps");

// Creations on filesystems that finish them in ->atomic_open, by task
// (pid_tgid): at most one per task, since a task is in one open at a time.
// Preallocated (tracing programs must not allocate); ~4.2 KiB an entry, so
// 256 cost ~1 MiB, and only in the eBPF-only probe. A creation that finds it
// full is counted in read_errors.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u64);
	__type(value, struct pending);
} pending_opens SEC(".maps");

// fill_hdr sets everything in e->hdr but path_len from the current task.
static __always_inline void fill_hdr(struct event *e, __u32 flags)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u64 uid_gid = bpf_get_current_uid_gid();

	e->hdr.ktime_ns = bpf_ktime_get_ns();
	e->hdr.cgroup_id = bpf_get_current_cgroup_id();
	e->hdr.pid = (__u32)pid_tgid;
	e->hdr.tgid = pid_tgid >> 32;
	e->hdr.uid = (__u32)uid_gid;
	e->hdr.gid = uid_gid >> 32;
	e->hdr.flags = flags;
	bpf_get_current_comm(e->hdr.comm, sizeof(e->hdr.comm));
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	e->hdr.fsuid = BPF_CORE_READ(task, cred, fsuid.val);
	e->hdr.fsgid = BPF_CORE_READ(task, cred, fsgid.val);
}

// submit writes e, whose path_len is set, to the ring buffer as the next
// record of stream slot on this CPU.
static __always_inline void submit(struct event *e, struct loss_counters *c, __u32 slot)
{
	__u64 *written = bpf_map_lookup_elem(&streams, &slot);
	if (!written) {
		c->read_errors++;
		return;
	}
	e->hdr.stream_seq = *written + 1;
	e->hdr.cpu = bpf_get_smp_processor_id();
	e->hdr.slot = slot;

	// path_len is below PATH_MAX (it excludes the NUL); the mask lets the
	// verifier see that the record stays inside *e.
	__u32 path_len = e->hdr.path_len & (PATH_MAX - 1);

	// Flags 0 wake the reader for every record written into an empty ring,
	// i.e. for nearly every file created at ordinary rates, and those
	// wakeups were most of what watching added to a create (issue 6).
	// Write without one: the loader drains the ring on a short timer
	// (drainInterval in loader-go/internal/kernel). Wake it when this
	// record makes the unread data cross a multiple of 1/8 of the ring, so
	// that a burst is read well before the ring fills: once per crossing,
	// not for every record while the reader is behind (it reads until the
	// ring is empty once woken). Records written at once on other CPUs can
	// make each writer miss a crossing; the next one, or the reader's
	// timer (at most pollInterval), makes up for it.
	__u32 size = sizeof(e->hdr) + path_len;
	__u64 step = bpf_ringbuf_query(&events, BPF_RB_RING_SIZE) / 8;
	__u64 before = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);
	// What the record takes in the ring: an 8-byte header, 8-byte aligned.
	__u64 after = before + BPF_RINGBUF_HDR_SZ + ((size + 7) & ~7U);
	__u64 wakeup = BPF_RB_NO_WAKEUP;
	if (step && after / step > before / step)
		wakeup = BPF_RB_FORCE_WAKEUP;
	if (bpf_ringbuf_output(&events, e, size, wakeup))
		c->ringbuf_full++;
	else
		*written = e->hdr.stream_seq;
}

// forward sends what the module's tracepoint carries, the created file's
// path (a NUL-terminated string in kernel memory) and flags, to user space.
static __always_inline int forward(const void *path, __u32 flags)
{
	__u32 zero = 0;
	struct pending *p = bpf_map_lookup_elem(&scratch, &zero);
	struct loss_counters *c = bpf_map_lookup_elem(&losses, &zero);
	if (!p || !c)
		return 0;
	struct event *e = &p->ev;

	long n = bpf_probe_read_kernel_str(e->path, sizeof(e->path), path);
	if (n <= 0) {
		c->read_errors++;
		return 0;
	}
	fill_hdr(e, flags);
	// n counts the NUL and is at most PATH_MAX.
	e->hdr.path_len = (__u32)(n - 1) & (PATH_MAX - 1);
	submit(e, c, STREAM_OPEN);
	return 0;
}

// The kmod probe: the module fired its tracepoint for a file it saw created.
SEC("tracepoint/filewatcher/file_created")
int file_created(struct file_created_ctx *ctx)
{
	__u32 loc = ctx->__data_loc_filename;
	return forward((void *)ctx + (loc & 0xffff), ctx->flags);
}

// The same on the tracepoint's raw form, whose arguments are the module's
// TP_PROTO(const char *path, u32 flags) (kmod/filewatcher_trace.h): the
// loader attaches this one when it pins the probe (--pin-dir), because a raw
// tracepoint's attachment is a BPF link that can be pinned on every kernel
// we run on (Linux 5.7+), where the tracepoint's perf event became one only
// in 5.15.
SEC("raw_tracepoint/file_created")
int file_created_raw(struct bpf_raw_tracepoint_args *ctx)
{
	return forward((const void *)ctx->args[0], (__u32)ctx->args[1]);
}

// The task's mark of part 3 (below); see there.
struct route_mark {
	__u64 dentry;
	__u64 mnt;
	__u32 kind;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64); // pid_tgid
	__type(value, struct route_mark);
} route_marks SEC(".maps");

// The eBPF-only probe, part 1: every open reaches security_file_open() once
// its struct file has a path, and bpf_d_path() may run here (the kernel
// allows it only on a list of functions this is on). The filesystem has set
// FMODE_CREATED by now if the open created the file, except on filesystems
// that finish the create inside ->atomic_open and set it only afterwards
// (9p, vboxsf): for an O_CREAT open on those, the event is built here and
// kept in pending_opens until fexit_open sees whether the open created it.
SEC("fentry/security_file_open")
int fentry_security_file_open(__u64 *ctx)
{
	struct file *file = (struct file *)ctx[0];
	int wait = 0;

	if (!(file->f_mode & FMODE_CREATED)) {
		if (!(file->f_flags & O_CREAT))
			return 0;
		if (!file->f_path.dentry->d_parent->d_inode->i_op->atomic_open)
			return 0;
		wait = 1;
	}
	// An open that creates passes security_path_mknod() too (may_o_create()),
	// and fexit_path_mknod cannot tell it from mknod(2): drop that mark, so
	// that it can never match a later vfs_create() (part 3).
	__u64 task = bpf_get_current_pid_tgid();
	bpf_map_delete_elem(&route_marks, &task);

	__u32 zero = 0;
	struct pending *p = bpf_map_lookup_elem(&scratch, &zero);
	struct loss_counters *c = bpf_map_lookup_elem(&losses, &zero);
	if (!p || !c)
		return 0;
	struct event *e = &p->ev;

	// The absolute path as the creating task sees it, like the module's
	// d_path(); one that does not fit in PATH_MAX gives the bare name,
	// flagged, as the module does.
	__u32 flags = 0;
	long n = bpf_d_path(&file->f_path, e->path, sizeof(e->path));
	if (n <= 0) {
		flags = FW_PATH_UNRESOLVED;
		n = bpf_probe_read_kernel_str(e->path, NAME_MAX + 1,
					      file->f_path.dentry->d_name.name);
		if (n <= 0) {
			c->read_errors++;
			return 0;
		}
	}
	fill_hdr(e, flags);
	e->hdr.path_len = (__u32)(n - 1) & (PATH_MAX - 1);
	if (!wait) {
		submit(e, c, STREAM_OPEN);
		return 0;
	}
	__u64 key = bpf_get_current_pid_tgid();
	p->file = (__u64)file;
	if (bpf_map_update_elem(&pending_opens, &key, p, BPF_ANY))
		c->read_errors++;
	return 0;
}

// The eBPF-only probe, part 2: the return of the open function
// (do_filp_open, or do_file_open since Linux 7.0: the loader sets the
// attach point) sends the event part 1 kept, if this open created the file.
SEC("fexit/do_filp_open")
int fexit_open(__u64 *ctx)
{
	__u64 key = bpf_get_current_pid_tgid();
	struct pending *p = bpf_map_lookup_elem(&pending_opens, &key);
	if (!p)
		return 0;
	// do_filp_open(dfd, pathname, op) returns struct file * (or an error).
	struct file *file = (struct file *)ctx[3];
	__u32 zero = 0;
	struct loss_counters *c = bpf_map_lookup_elem(&losses, &zero);
	if (c && p->file == (__u64)file && (file->f_mode & FMODE_CREATED))
		submit(&p->ev, c, STREAM_EXIT);
	bpf_map_delete_elem(&pending_opens, &key);
	return 0;
}

// The eBPF-only probe, part 3: creations without an open, as the module sees
// them (kmod/filewatcher.c, "Creations without an open"). mknod(2) of a
// regular file makes it in vfs_create(); linkat(2) (a syscall or io_uring)
// giving an O_TMPFILE file its first name makes it appear in vfs_link().
// Neither gets the vfsmount a path needs: the security_path_mknod() and
// security_path_link() hooks that precede them in the syscall do.
// fexit_path_mknod and fexit_path_link mark the task when the hook allowed
// the call: the new dentry, the directory's vfsmount, the kind (MKNOD for a
// regular file, TMPFILE_LINK for a source with no links yet, which only an
// O_TMPFILE file can be; a hard link of an existing file is not marked).
// fexit_vfs_create_* and fexit_vfs_link_* take the mark when they return for
// the marked dentry, and send the event if the call succeeded. The nested
// calls of overlayfs and ecryptfs on their backing files have other
// dentries; nfsd, ksmbd and cachefiles pass no security_path_*() hook. A
// task has one mark at most; a stale one (its return was never seen) is
// replaced by the task's next, or leaves the LRU map.
static __always_inline void mark_route(struct dentry *dentry, const struct path *dir, __u32 kind)
{
	__u64 key = bpf_get_current_pid_tgid();
	struct route_mark m = {
		.dentry = (__u64)dentry,
		.mnt = (__u64)BPF_CORE_READ(dir, mnt),
		.kind = kind,
	};
	bpf_map_update_elem(&route_marks, &key, &m, BPF_ANY);
}

SEC("fexit/security_path_mknod")
int fexit_path_mknod(__u64 *ctx) // (const struct path *dir, struct dentry *dentry, umode_t mode, unsigned int dev) = int
{
	const struct path *dir = (const struct path *)ctx[0];
	struct dentry *dentry = (struct dentry *)ctx[1];
	__u32 mode = (__u16)ctx[2];
	int ret = (int)ctx[4];

	if (ret == 0 && ((mode & S_IFMT) == 0 || (mode & S_IFMT) == S_IFREG))
		mark_route(dentry, dir, FW_KIND_MKNOD);
	return 0;
}

SEC("fexit/security_path_link")
int fexit_path_link(__u64 *ctx) // (struct dentry *old_dentry, const struct path *new_dir, struct dentry *new_dentry) = int
{
	struct dentry *old_dentry = (struct dentry *)ctx[0];
	const struct path *new_dir = (const struct path *)ctx[1];
	struct dentry *new_dentry = (struct dentry *)ctx[2];
	int ret = (int)ctx[3];

	struct inode *inode = BPF_CORE_READ(old_dentry, d_inode);
	if (ret == 0 && inode && (BPF_CORE_READ(inode, i_mode) & S_IFMT) == S_IFREG &&
	    BPF_CORE_READ(inode, i_nlink) == 0)
		mark_route(new_dentry, new_dir, FW_KIND_TMPFILE_LINK);
	return 0;
}

// Components a path may have for walk_path: a deeper one is reported by its
// bare name, flagged, as one longer than PATH_MAX is.
#define MAX_COMPONENTS 96

// What walk_path keeps in memory rather than in registers: read back from a
// map, each iteration's position is unknown to the verifier, so it verifies
// the loop in time linear in MAX_COMPONENTS (a register's exact range would
// differ along each branch taken, and no two iterations could be pruned).
struct walk {
	__u32 pos;		// where the path built so far starts in buf
	char buf[PATH_MAX + NAME_MAX + 1];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct walk);
} walks SEC(".maps");

// walk_path writes into e->path the absolute path of (mnt, dentry) as the
// current task sees it, what d_path() gives (bpf_d_path() may not run
// here): names from the dentry up, crossing mounts to the one each is
// mounted on, to the task's root. Returns the length, or -1 when the path
// does not fit in PATH_MAX - 1 bytes or MAX_COMPONENTS.
static __always_inline long walk_path(struct event *e, struct vfsmount *mnt, struct dentry *dentry)
{
	__u32 zero = 0;
	struct walk *w = bpf_map_lookup_elem(&walks, &zero);
	if (!w)
		return -1;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct dentry *root = BPF_CORE_READ(task, fs, root.dentry);
	struct vfsmount *root_mnt = BPF_CORE_READ(task, fs, root.mnt);
	__u64 mnt_off = bpf_core_field_offset(struct mount, mnt);

	w->pos = PATH_MAX;
	int reached = 0;
	for (int i = 0; i < MAX_COMPONENTS; i++) {
		if (dentry == root && mnt == root_mnt) {
			reached = 1;
			break;
		}
		struct mount *m = (struct mount *)((void *)mnt - mnt_off);
		if (dentry == BPF_CORE_READ(mnt, mnt_root) || dentry == BPF_CORE_READ(dentry, d_parent)) {
			struct mount *parent = BPF_CORE_READ(m, mnt_parent);
			if (parent == m) { // the root of the mount tree
				reached = 1;
				break;
			}
			dentry = BPF_CORE_READ(m, mnt_mountpoint);
			mnt = (struct vfsmount *)((void *)parent + mnt_off);
			continue;
		}
		__u32 len = BPF_CORE_READ(dentry, d_name.len);
		__u32 pos = w->pos;
		// The path is at most PATH_MAX - 1 bytes: pos stays above 0.
		if (len > NAME_MAX || len + 1 >= pos)
			return -1;
		pos -= len + 1;
		pos &= PATH_MAX - 1;
		w->buf[pos] = '/';
		if (bpf_probe_read_kernel(&w->buf[pos + 1], len & NAME_MAX, BPF_CORE_READ(dentry, d_name.name)))
			return -1;
		w->pos = pos;
		dentry = BPF_CORE_READ(dentry, d_parent);
	}
	if (!reached)
		return -1;
	__u32 pos = w->pos;
	if (pos >= PATH_MAX) { // the root itself
		e->path[0] = '/';
		return 1;
	}
	__u32 n = (PATH_MAX - pos) & (PATH_MAX - 1);
	if (n == 0 || bpf_probe_read_kernel(e->path, n, &w->buf[pos & (PATH_MAX - 1)]))
		return -1;
	return n;
}

// vfs_create() or vfs_link() returned: send the event if it made the
// dentry this task marked.
static __always_inline int route_made(struct dentry *dentry, int ret)
{
	__u64 key = bpf_get_current_pid_tgid();
	struct route_mark *m = bpf_map_lookup_elem(&route_marks, &key);
	if (!m || m->dentry != (__u64)dentry)
		return 0; // a nested or unhooked caller's, or not marked
	struct vfsmount *mnt = (struct vfsmount *)m->mnt;
	__u32 kind = m->kind;
	bpf_map_delete_elem(&route_marks, &key);
	if (ret != 0)
		return 0;

	__u32 zero = 0, slot = STREAM_ROUTE;
	struct pending *p = bpf_map_lookup_elem(&scratch, &slot);
	struct loss_counters *c = bpf_map_lookup_elem(&losses, &zero);
	if (!p || !c)
		return 0;
	struct event *e = &p->ev;
	__u32 flags = kind << FW_KIND_SHIFT;
	long n = walk_path(e, mnt, dentry);
	if (n <= 0) {
		flags |= FW_PATH_UNRESOLVED;
		n = bpf_probe_read_kernel_str(e->path, NAME_MAX + 1, BPF_CORE_READ(dentry, d_name.name));
		if (n <= 0) {
			c->read_errors++;
			return 0;
		}
		n--; // without the NUL
	}
	fill_hdr(e, flags);
	e->hdr.path_len = (__u32)n & (PATH_MAX - 1);
	submit(e, c, STREAM_ROUTE);
	return 0;
}

// One program per prototype (the loader loads the one the kernel's BTF
// matches): where the dentry is, and the return value after the arguments.
// vfs_create(dir, dentry, mode, excl) in 5.10; (idmap, dentry, mode,
// delegated_inode) since 7.0.
SEC("fexit/vfs_create")
int fexit_vfs_create_4(__u64 *ctx)
{
	return route_made((struct dentry *)ctx[1], (int)ctx[4]);
}

// vfs_create(mnt_userns or idmap, dir, dentry, mode, excl): 5.12 to 6.x.
SEC("fexit/vfs_create")
int fexit_vfs_create_5(__u64 *ctx)
{
	return route_made((struct dentry *)ctx[2], (int)ctx[5]);
}

// vfs_link(old_dentry, dir, new_dentry, delegated_inode): 5.10.
SEC("fexit/vfs_link")
int fexit_vfs_link_4(__u64 *ctx)
{
	return route_made((struct dentry *)ctx[2], (int)ctx[4]);
}

// vfs_link(old_dentry, mnt_userns or idmap, dir, new_dentry, delegated_inode): 5.12 on.
SEC("fexit/vfs_link")
int fexit_vfs_link_5(__u64 *ctx)
{
	return route_made((struct dentry *)ctx[3], (int)ctx[5]);
}

char LICENSE[] SEC("license") = "GPL";
