// SPDX-License-Identifier: GPL-2.0
/*
 * filewatcher: fire the filewatcher/file_created tracepoint for every file
 * created on this host.
 *
 * A kretprobe on the open function (do_filp_open(), do_file_open() since
 * Linux 7.0) does the work:
 *  - the entry handler arms the return probe only for opens that ask for
 *    O_CREAT, so an ordinary open costs one flag test;
 *  - the return handler fires the tracepoint only when the open succeeded
 *    and really created the file (FMODE_CREATED), with the file's absolute
 *    path, or its bare name flagged FW_PATH_UNRESOLVED when the absolute
 *    path does not fit in PATH_MAX. Nothing is ever silently truncated.
 *
 * file_open_root(), which suid-safe core dumps open through without the open
 * function, has a kretprobe with the same return handler.
 *
 * mknod(2) of a regular file and linkat(2) of an O_TMPFILE file create a file
 * without an open; four more kretprobes see them (see "Creations without an
 * open" below).
 *
 * This relies on the prototype
 *   struct file *do_filp_open(int dfd, struct filename *pathname,
 *                             const struct open_flags *op);
 * with `int open_flag` first in struct open_flags (fs/internal.h). Neither is
 * in the headers a module is built against: the loader checks the running
 * kernel's BTF for them before it inserts the module (see FW_OPEN_FUNCTIONS).
 *
 * Counters are in /sys/kernel/filewatcher/.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <asm/syscall.h>
#include <linux/compat.h>
#include <linux/cpumask.h>
#include <linux/dcache.h>
#include <linux/err.h>
#include <linux/fcntl.h>
#include <linux/fs.h>
#include <linux/kallsyms.h>
#include <linux/kobject.h>
#include <linux/kprobes.h>
#include <linux/limits.h>
#include <linux/hash.h>
#include <linux/log2.h>
#include <linux/minmax.h>
#include <linux/mount.h>
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/namei.h>
#include <linux/security.h>
#include <linux/path.h>
#include <linux/percpu.h>
#include <linux/ptrace.h>
#include <linux/sched.h>
#include <linux/spinlock.h>
#include <linux/string.h>
#include <linux/sysfs.h>
#include <linux/uaccess.h>
#include <linux/workqueue.h>
#include <linux/version.h>

#define CREATE_TRACE_POINTS
#include "filewatcher_trace.h"

/* get_kernel_nofault() is 5.8, sysfs_emit() 5.10. */
#if LINUX_VERSION_CODE < KERNEL_VERSION(5, 10, 0)
#error "filewatcher needs Linux 5.10 or later"
#endif

/*
 * The third argument (op) of do_filp_open(), by calling convention; the
 * compat (i386, arm32) number of mknodat(2).
 */
#if defined(CONFIG_X86_64)
#define fw_open_flags_arg(regs)	((regs)->dx)
#define FW_COMPAT_NR_MKNODAT	297
#elif defined(CONFIG_ARM64)
#define fw_open_flags_arg(regs)	((regs)->regs[2])
#define FW_COMPAT_NR_MKNODAT	324
#else
#error "filewatcher supports only x86_64 and arm64: add how to read do_filp_open()'s 3rd argument"
#endif

/* The first member of the kernel-private struct open_flags. */
struct open_flags_partial {
	int open_flag;
};

/*
 * maxactive is the number of do_filp_open() calls with O_CREAT that can be
 * watched at once. They can sleep (disk I/O, the parent directory's lock,
 * network filesystems), so far more calls than CPUs can be in flight; when
 * the pool is empty a creation is missed (counted in kprobe_missed). The
 * kernel's own default, max(10, 2 * CPUs), is far too small for that.
 * Automatic: 64 per possible CPU, at least 512, at most 4096 (the limit the
 * kernel's tracefs interface puts on kretprobes). An instance is about
 * 50 bytes; since 6.7 each possible CPU also holds a ring of maxactive
 * (rounded up to a power of two) pointers, 32 KiB per CPU at 4096, which is
 * why the automatic value stops growing there.
 */
#define FW_MAXACTIVE_PER_CPU	64
#define FW_MAXACTIVE_AUTO_MIN	512
#define FW_MAXACTIVE_AUTO_MAX	4096
#define FW_MAXACTIVE_MAX	65536

/*
 * The open function by the names it has had, separated by spaces: Linux 7.0
 * renamed do_filp_open() to do_file_open(), prototype unchanged. The first
 * one the running kernel can probe is probed, and shown in
 * /sys/kernel/filewatcher/function. There is no parameter to name another
 * function: one with another prototype would make the handlers read the
 * wrong memory. The list is in .modinfo too (open_functions), where the
 * loader reads it to check, in the running kernel's BTF, the prototype of
 * the function this module will probe before inserting it.
 */
#define FW_OPEN_FUNCTIONS "do_filp_open do_file_open"
MODULE_INFO(open_functions, FW_OPEN_FUNCTIONS);

/* The function probed, one of FW_OPEN_FUNCTIONS. */
static char fw_function[KSYM_NAME_LEN];

static int fw_maxactive_param;
module_param_named(maxactive, fw_maxactive_param, int, 0444);
MODULE_PARM_DESC(maxactive,
		 "O_CREAT opens watched at once, 1.." __stringify(FW_MAXACTIVE_MAX)
		 " (default 0: 64 per possible CPU, clamped to 512..4096)");

/* One PATH_MAX buffer per CPU for d_path(). */
struct fw_path_buf {
	char buf[PATH_MAX];
};

static struct fw_path_buf __percpu *fw_path_bufs;

static DEFINE_PER_CPU(u64, fw_events_fired);
static DEFINE_PER_CPU(u64, fw_path_unresolved);

static struct kobject *fw_kobj;

static int fw_entry(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	const struct open_flags_partial *op;
	int open_flag;

	op = (const struct open_flags_partial *)fw_open_flags_arg(regs);
	/* A wrong prototype must cost an event, not an oops. */
	if (get_kernel_nofault(open_flag, &op->open_flag))
		return 1;
	/* Non-zero leaves the return probe unarmed: the open cannot create. */
	return !(open_flag & O_CREAT);
}
NOKPROBE_SYMBOL(fw_entry);

/*
 * The absolute path does not fit in PATH_MAX: report the name the file was
 * created under, flagged. The snapshot keeps the name stable against a
 * concurrent rename; it takes only the dentry's spinlock.
 */
static void fw_fire_unresolved(struct dentry *dentry, u32 kind)
{
	struct name_snapshot name;

	take_dentry_name_snapshot(&name, dentry);
	this_cpu_inc(fw_path_unresolved);
	trace_file_created((const char *)name.name.name,
			   FW_PATH_UNRESOLVED | kind << FW_KIND_SHIFT);
	release_dentry_name_snapshot(&name);
}
NOKPROBE_SYMBOL(fw_fire_unresolved);

/*
 * Kprobe handlers run with preemption disabled and kprobes do not nest on a
 * CPU (a nested hit is counted as missed instead), so this CPU's buffer is
 * ours until we return. d_path() only takes seqlocks and spinlocks under RCU:
 * it does not sleep.
 */
static void fw_fire(const struct path *path, u32 kind)
{
	char *buf = this_cpu_ptr(fw_path_bufs)->buf;
	char *name = d_path(path, buf, PATH_MAX);

	if (IS_ERR(name)) {
		fw_fire_unresolved(path->dentry, kind);
		return;
	}
	trace_file_created(name, kind << FW_KIND_SHIFT);
}
NOKPROBE_SYMBOL(fw_fire);

static int fw_ret(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	struct file *file = (struct file *)regs_return_value(regs);
	fmode_t f_mode;

	/* A failed open created nothing. */
	if (IS_ERR_OR_NULL(file))
		return 0;
	/*
	 * Like the entry handler's read of the flags: if the return value were
	 * not a struct file after all, cost an event, not an oops.
	 */
	if (get_kernel_nofault(f_mode, &file->f_mode))
		return 0;
	/* O_CREAT on an existing file created nothing. */
	if (!(f_mode & FMODE_CREATED))
		return 0;
	/* Building the path is the expensive part: skip it if no one listens. */
	if (trace_file_created_enabled())
		fw_fire(&file->f_path, FW_KIND_OPEN);
	/*
	 * Counted after the tracepoint's probes have run, so that whoever reads
	 * events_fired finds every event counted there already written to the
	 * BPF ring buffer or counted lost: the loader reconciles the two.
	 */
	this_cpu_inc(fw_events_fired);
	return 0;
}
NOKPROBE_SYMBOL(fw_ret);

static struct kretprobe fw_rp = {
	.entry_handler	= fw_entry,
	.handler	= fw_ret,
};

/*
 * file_open_root() opens relative to a root it is given, without the open
 * function: the kernel's suid-safe core dumps (fs.suid_dumpable=2) are
 * written through it. It returns the struct file as the open function does,
 * so fw_ret serves it too. It is exported, with its prototype in
 * linux/fs.h, checked at build time (filewatcher_init); its calls are rare,
 * so every call is watched, without an entry handler.
 */
static struct kretprobe fw_root_rp = {
	.kp.symbol_name	= "file_open_root",
	.handler	= fw_ret,
};
#define fw_proto_is(fn, ret, ...) __builtin_types_compatible_p(typeof(fn), ret(__VA_ARGS__))

/*
 * Creations without an open.
 *
 * mknod(2) of a regular file makes it in vfs_create(); linkat(2) giving an
 * O_TMPFILE file its first name (from a syscall or io_uring) makes it appear
 * in vfs_link(). Neither is an open, and neither function is given the
 * vfsmount that d_path() needs. The calls that precede them in the syscall
 * are: security_path_mknod(dir, dentry, mode, dev) and
 * security_path_link(old_dentry, new_dir, new_dentry), out of line in every
 * kernel with CONFIG_SECURITY_PATH (Debian's), with the directory's struct
 * path. (done_path_create(), which has both, is inlined into do_mknodat()
 * and do_linkat() and cannot be probed.) So:
 *  - a kretprobe on each security_path_*() marks the task, when the hook
 *    allowed the call, with the new dentry, the directory's vfsmount and the
 *    kind: MKNOD for a regular file's mknod (mode type S_IFREG or 0),
 *    TMPFILE_LINK for a link whose source has no links yet (only an
 *    O_TMPFILE file can: vfs_link() refuses any other). A hard link of an
 *    existing file, a directory, device, FIFO or socket is not marked;
 *  - a kretprobe on vfs_create() and on vfs_link() takes the task's mark when
 *    it returns for the marked dentry, and fires the tracepoint if the call
 *    succeeded. The nested vfs_create() and vfs_link() calls of overlayfs
 *    and ecryptfs on their backing files have other dentries: they neither
 *    take the mark nor fire. Callers that never pass a security_path_*()
 *    hook (nfsd, ksmbd, cachefiles) are not reported here.
 *
 * A task has at most one mark: its mknod or link runs to its end before the
 * task can start another. Marks live in a small table of FW_MARK_SLOTS slots,
 * found by hashing the task, FW_MARK_PROBES slots tried. A mark holds a
 * reference on the vfsmount (mntget()), so that d_path() never reads a
 * freed one: if the vfs_create()/vfs_link() return probe missed (counted in
 * kprobe_missed), the mark would otherwise outlive the syscall. Such a stale
 * mark is dropped, and its reference put, when the task marks again, when
 * its slot is needed (counted in route_marks_evicted, with the event lost if
 * the mark was live), or by fw_sweep once it is FW_MARK_TTL old (counted in
 * route_marks_expired): a mount is never held busy for longer.
 */
#define FW_MARK_SLOTS	256
#define FW_MARK_PROBES	8
#define FW_MARK_TTL	(10 * HZ)

struct fw_mark {
	const struct task_struct *task;	/* NULL: a free slot */
	u64 task_start;			/* with task: a reused task_struct is another task */
	const struct dentry *dentry;
	struct vfsmount *mnt;		/* a reference, put when the mark goes */
	unsigned long stamp;		/* jiffies when made */
	u32 kind;
};

static struct fw_mark fw_marks[FW_MARK_SLOTS];
static DEFINE_RAW_SPINLOCK(fw_marks_lock);
static DEFINE_PER_CPU(u64, fw_marks_evicted);
static DEFINE_PER_CPU(u64, fw_marks_expired);
/* The route probes are registered (fw_register_routes). */
static bool fw_routes;

static bool fw_mark_is_current(const struct fw_mark *m)
{
	return m->task == current && m->task_start == current->start_time;
}
NOKPROBE_SYMBOL(fw_mark_is_current);

/* Marks the current task; dir_mnt gets a reference held by the mark. */
static void fw_mark(const struct dentry *dentry, struct vfsmount *dir_mnt, u32 kind)
{
	unsigned int h = hash_ptr(current, ilog2(FW_MARK_SLOTS)), i;
	struct vfsmount *put = NULL;
	struct fw_mark *slot = NULL;
	unsigned long flags;

	mntget(dir_mnt);
	raw_spin_lock_irqsave(&fw_marks_lock, flags);
	for (i = 0; i < FW_MARK_PROBES; i++) {
		struct fw_mark *m = &fw_marks[(h + i) % FW_MARK_SLOTS];

		if (m->task && fw_mark_is_current(m)) {
			slot = m;
			break;
		}
		if (!slot || (slot->task && (!m->task ||
					     time_before(m->stamp, slot->stamp))))
			slot = m;
	}
	if (slot->task) {
		put = slot->mnt;
		if (!fw_mark_is_current(slot))
			this_cpu_inc(fw_marks_evicted);
	}
	*slot = (struct fw_mark){
		.task = current, .task_start = current->start_time,
		.dentry = dentry, .mnt = dir_mnt, .stamp = jiffies, .kind = kind,
	};
	raw_spin_unlock_irqrestore(&fw_marks_lock, flags);
	/*
	 * The syscall that made a mark still holds the vfsmount, so this put
	 * is not the last one, except for a stale mark's; mntput() is safe in
	 * atomic context either way (the last put defers the work).
	 */
	if (put)
		mntput(put);
}
NOKPROBE_SYMBOL(fw_mark);

/*
 * Takes the current task's mark if it is for dentry: returns its vfsmount
 * (the caller puts it) and sets *kind; NULL if there is none.
 */
static struct vfsmount *fw_take_mark(const struct dentry *dentry, u32 *kind)
{
	unsigned int h = hash_ptr(current, ilog2(FW_MARK_SLOTS)), i;
	struct vfsmount *mnt = NULL;
	unsigned long flags;

	raw_spin_lock_irqsave(&fw_marks_lock, flags);
	for (i = 0; i < FW_MARK_PROBES; i++) {
		struct fw_mark *m = &fw_marks[(h + i) % FW_MARK_SLOTS];

		if (m->task && fw_mark_is_current(m)) {
			if (m->dentry == dentry) {
				mnt = m->mnt;
				*kind = m->kind;
				m->task = NULL;
			}
			break;
		}
	}
	raw_spin_unlock_irqrestore(&fw_marks_lock, flags);
	return mnt;
}
NOKPROBE_SYMBOL(fw_take_mark);

/* Drops marks older than FW_MARK_TTL, and all of them when all is set. */
static void fw_drop_marks(bool all)
{
	unsigned int i;

	for (i = 0; i < FW_MARK_SLOTS; i++) {
		struct fw_mark *m = &fw_marks[i];
		struct vfsmount *put = NULL;
		unsigned long flags;

		raw_spin_lock_irqsave(&fw_marks_lock, flags);
		if (m->task && (all || time_after(jiffies, m->stamp + FW_MARK_TTL))) {
			put = m->mnt;
			m->task = NULL;
			if (!all)
				this_cpu_inc(fw_marks_expired);
		}
		raw_spin_unlock_irqrestore(&fw_marks_lock, flags);
		if (put)
			mntput(put);
	}
}

static void fw_sweep(struct work_struct *work);
static DECLARE_DELAYED_WORK(fw_sweep_work, fw_sweep);

static void fw_sweep(struct work_struct *work)
{
	fw_drop_marks(false);
	schedule_delayed_work(&fw_sweep_work, FW_MARK_TTL);
}

/*
 * Which argument is the new dentry, from the prototypes in the headers this
 * module is built against; one not listed fails the build rather than
 * reading the wrong argument.
 *   vfs_create([mnt_userns or idmap,] [dir,] dentry, mode, ...)
 *   vfs_link(old_dentry, [mnt_userns or idmap,] dir, new_dentry, ...)
 */
struct delegated_inode;
struct mnt_idmap;
struct user_namespace;
#define fw_is(fn, ...)	fw_proto_is(fn, int, __VA_ARGS__)
#define FW_VFS_CREATE_DENTRY_ARG \
	(fw_is(vfs_create, struct inode *, struct dentry *, umode_t, bool) ? 1 : \
	 fw_is(vfs_create, struct user_namespace *, struct inode *, struct dentry *, umode_t, bool) ? 2 : \
	 fw_is(vfs_create, struct mnt_idmap *, struct inode *, struct dentry *, umode_t, bool) ? 2 : \
	 fw_is(vfs_create, struct mnt_idmap *, struct dentry *, umode_t, struct delegated_inode *) ? 1 : \
	 -1)
#define FW_VFS_LINK_NEW_DENTRY_ARG \
	(fw_is(vfs_link, struct dentry *, struct inode *, struct dentry *, struct inode **) ? 2 : \
	 fw_is(vfs_link, struct dentry *, struct user_namespace *, struct inode *, struct dentry *, struct inode **) ? 3 : \
	 fw_is(vfs_link, struct dentry *, struct mnt_idmap *, struct inode *, struct dentry *, struct inode **) ? 3 : \
	 fw_is(vfs_link, struct dentry *, struct mnt_idmap *, struct inode *, struct dentry *, struct delegated_inode *) ? 3 : \
	 -1)

/* What an entry handler keeps for its return handler. */
struct fw_route_call {
	struct dentry *dentry;
	struct vfsmount *mnt;
	u32 kind;
};

/*
 * Whether the current task is in mknod(2) or mknodat(2). An open that creates
 * a file passes security_path_mknod() too (may_o_create()), and must not be
 * marked: its file is made by the filesystem's ->create() directly, so no
 * vfs_create() would take the mark. mknod has no io_uring operation, so the
 * syscall number says it. Compat numbers: i386 and arm32 (EABI).
 */
static bool fw_in_mknod(void)
{
	long nr = syscall_get_nr(current, task_pt_regs(current));

#if defined(CONFIG_X86_64)
	if (in_ia32_syscall())
		return nr == 14 || nr == FW_COMPAT_NR_MKNODAT;
	nr &= ~__X32_SYSCALL_BIT;	/* x32 uses the native numbers */
#else
	if (in_compat_syscall())
		return nr == 14 || nr == FW_COMPAT_NR_MKNODAT;
#endif
#ifdef __NR_mknod
	if (nr == __NR_mknod)
		return true;
#endif
	return nr == __NR_mknodat;
}
NOKPROBE_SYMBOL(fw_in_mknod);

/* security_path_mknod(const struct path *dir, struct dentry *dentry, umode_t mode, unsigned int dev) */
static int fw_mknod_entry(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	const struct path *dir = (const struct path *)regs_get_kernel_argument(regs, 0);
	struct fw_route_call *call = (struct fw_route_call *)ri->data;
	umode_t mode = (umode_t)regs_get_kernel_argument(regs, 2);

	if ((mode & S_IFMT) && !S_ISREG(mode))
		return 1; /* a device, FIFO or socket: not a file */
	if (!fw_in_mknod())
		return 1; /* an open: its own probe reports it */
	call->dentry = (struct dentry *)regs_get_kernel_argument(regs, 1);
	call->mnt = dir->mnt;
	call->kind = FW_KIND_MKNOD;
	return 0;
}
NOKPROBE_SYMBOL(fw_mknod_entry);

/* security_path_link(struct dentry *old_dentry, const struct path *new_dir, struct dentry *new_dentry) */
static int fw_link_entry(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	const struct dentry *old = (const struct dentry *)regs_get_kernel_argument(regs, 0);
	const struct path *dir = (const struct path *)regs_get_kernel_argument(regs, 1);
	struct fw_route_call *call = (struct fw_route_call *)ri->data;
	const struct inode *inode = d_inode(old);

	if (!inode || !S_ISREG(inode->i_mode) || READ_ONCE(inode->i_nlink) != 0)
		return 1; /* another name for an existing file: not a creation */
	call->dentry = (struct dentry *)regs_get_kernel_argument(regs, 2);
	call->mnt = dir->mnt;
	call->kind = FW_KIND_TMPFILE_LINK;
	return 0;
}
NOKPROBE_SYMBOL(fw_link_entry);

/* The hook allowed the call: mark the task. */
static int fw_hook_ret(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	struct fw_route_call *call = (struct fw_route_call *)ri->data;

	if (regs_return_value(regs) == 0)
		fw_mark(call->dentry, call->mnt, call->kind);
	return 0;
}
NOKPROBE_SYMBOL(fw_hook_ret);

static int fw_create_entry(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	struct fw_route_call *call = (struct fw_route_call *)ri->data;

	call->dentry = (struct dentry *)regs_get_kernel_argument(regs, FW_VFS_CREATE_DENTRY_ARG);
	return 0;
}
NOKPROBE_SYMBOL(fw_create_entry);

static int fw_vfs_link_entry(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	struct fw_route_call *call = (struct fw_route_call *)ri->data;

	call->dentry = (struct dentry *)regs_get_kernel_argument(regs, FW_VFS_LINK_NEW_DENTRY_ARG);
	return 0;
}
NOKPROBE_SYMBOL(fw_vfs_link_entry);

/*
 * fw_fire() for a file made by vfs_create() or vfs_link(): the directory's
 * path, then the name. d_path() of the new dentry itself would say
 * "(deleted)" when the filesystem left it unhashed, as overlayfs does with
 * the dentry of a link (ovl_instantiate() drops it to force a lookup). The
 * directory is locked by the caller: d_parent cannot change meanwhile.
 */
static void fw_fire_made(struct vfsmount *mnt, struct dentry *dentry, u32 kind)
{
	struct path dir = { .mnt = mnt, .dentry = dentry->d_parent };
	char *buf = this_cpu_ptr(fw_path_bufs)->buf;
	struct name_snapshot name;
	unsigned int len;
	char *p, *end;

	take_dentry_name_snapshot(&name, dentry);
	len = name.name.len;
	/* Room after the directory's path for "/" and the name: PATH_MAX in all. */
	p = len + 2 < PATH_MAX ? d_path(&dir, buf, PATH_MAX - len - 1) : ERR_PTR(-ENAMETOOLONG);
	if (IS_ERR(p)) {
		this_cpu_inc(fw_path_unresolved);
		trace_file_created((const char *)name.name.name,
				   FW_PATH_UNRESOLVED | kind << FW_KIND_SHIFT);
	} else {
		end = p + strlen(p);
		if (end - p > 1)	/* not the root: a separator */
			*end++ = '/';
		memcpy(end, name.name.name, len);
		end[len] = '\0';
		trace_file_created(p, kind << FW_KIND_SHIFT);
	}
	release_dentry_name_snapshot(&name);
}
NOKPROBE_SYMBOL(fw_fire_made);

/* vfs_create() or vfs_link() returned: fire if it made the marked dentry. */
static int fw_made_ret(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	struct fw_route_call *call = (struct fw_route_call *)ri->data;
	struct vfsmount *mnt;
	u32 kind;

	mnt = fw_take_mark(call->dentry, &kind);
	if (!mnt)
		return 0; /* a nested or unhooked caller's, or not marked */
	if (regs_return_value(regs) == 0) {
		if (trace_file_created_enabled())
			fw_fire_made(mnt, call->dentry, kind);
		this_cpu_inc(fw_events_fired);
	}
	mntput(mnt);
	return 0;
}
NOKPROBE_SYMBOL(fw_made_ret);

static struct kretprobe fw_mknod_rp = {
	.kp.symbol_name	= "security_path_mknod",
	.entry_handler	= fw_mknod_entry,
	.handler	= fw_hook_ret,
	.data_size	= sizeof(struct fw_route_call),
};

static struct kretprobe fw_link_rp = {
	.kp.symbol_name	= "security_path_link",
	.entry_handler	= fw_link_entry,
	.handler	= fw_hook_ret,
	.data_size	= sizeof(struct fw_route_call),
};

static struct kretprobe fw_create_rp = {
	.kp.symbol_name	= "vfs_create",
	.entry_handler	= fw_create_entry,
	.handler	= fw_made_ret,
	.data_size	= sizeof(struct fw_route_call),
};

static struct kretprobe fw_vfs_link_rp = {
	.kp.symbol_name	= "vfs_link",
	.entry_handler	= fw_vfs_link_entry,
	.handler	= fw_made_ret,
	.data_size	= sizeof(struct fw_route_call),
};

/* The route probes, in the order they are registered. */
static struct kretprobe *fw_route_rps[] = {
	&fw_create_rp, &fw_vfs_link_rp, &fw_mknod_rp, &fw_link_rp,
};

static u64 fw_sum(u64 __percpu *counter)
{
	u64 sum = 0;
	int cpu;

	for_each_possible_cpu(cpu)
		sum += READ_ONCE(*per_cpu_ptr(counter, cpu));
	return sum;
}

static ssize_t events_fired_show(struct kobject *kobj,
				 struct kobj_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "%llu\n", fw_sum(&fw_events_fired));
}

static ssize_t path_unresolved_show(struct kobject *kobj,
				    struct kobj_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "%llu\n", fw_sum(&fw_path_unresolved));
}

/*
 * Misses for want of a free instance, plus hits while another kprobe ran,
 * plus route marks lost: an upper bound on creations missed.
 */
static ssize_t kprobe_missed_show(struct kobject *kobj,
				  struct kobj_attribute *attr, char *buf)
{
	u64 missed = (u64)(unsigned int)READ_ONCE(fw_rp.nmissed) +
		     READ_ONCE(fw_rp.kp.nmissed) +
		     (u64)(unsigned int)READ_ONCE(fw_root_rp.nmissed) +
		     READ_ONCE(fw_root_rp.kp.nmissed);
	unsigned int i;

	/*
	 * A route mark evicted or expired may have been a creation's: counted
	 * here too, as the upper bound on creations missed that this is.
	 */
	if (fw_routes)
		for (i = 0; i < ARRAY_SIZE(fw_route_rps); i++)
			missed += (u64)(unsigned int)READ_ONCE(fw_route_rps[i]->nmissed) +
				  READ_ONCE(fw_route_rps[i]->kp.nmissed);
	missed += fw_sum(&fw_marks_evicted) + fw_sum(&fw_marks_expired);
	return sysfs_emit(buf, "%llu\n", missed);
}

static ssize_t route_marks_evicted_show(struct kobject *kobj,
					struct kobj_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "%llu\n", fw_sum(&fw_marks_evicted));
}

static ssize_t route_marks_expired_show(struct kobject *kobj,
					struct kobj_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "%llu\n", fw_sum(&fw_marks_expired));
}

/* The creation routes watched: "open", then "mknod tmpfile_link" if their probes are in. */
static ssize_t routes_show(struct kobject *kobj,
			   struct kobj_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "%s\n", fw_routes ? "open mknod tmpfile_link" : "open");
}

static ssize_t maxactive_show(struct kobject *kobj,
			      struct kobj_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "%d\n", fw_rp.maxactive);
}

static ssize_t function_show(struct kobject *kobj,
			     struct kobj_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "%s\n", fw_function);
}

static struct kobj_attribute events_fired_attr = __ATTR_RO(events_fired);
static struct kobj_attribute path_unresolved_attr = __ATTR_RO(path_unresolved);
static struct kobj_attribute kprobe_missed_attr = __ATTR_RO(kprobe_missed);
static struct kobj_attribute maxactive_attr = __ATTR_RO(maxactive);
static struct kobj_attribute function_attr = __ATTR_RO(function);
static struct kobj_attribute route_marks_evicted_attr = __ATTR_RO(route_marks_evicted);
static struct kobj_attribute route_marks_expired_attr = __ATTR_RO(route_marks_expired);
static struct kobj_attribute routes_attr = __ATTR_RO(routes);

static struct attribute *fw_attrs[] = {
	&events_fired_attr.attr,
	&path_unresolved_attr.attr,
	&kprobe_missed_attr.attr,
	&maxactive_attr.attr,
	&function_attr.attr,
	&route_marks_evicted_attr.attr,
	&route_marks_expired_attr.attr,
	&routes_attr.attr,
	NULL,
};

static const struct attribute_group fw_attr_group = {
	.attrs = fw_attrs,
};

static int fw_effective_maxactive(void)
{
	if (fw_maxactive_param)
		return fw_maxactive_param;
	return clamp_t(unsigned int, FW_MAXACTIVE_PER_CPU * num_possible_cpus(),
		       FW_MAXACTIVE_AUTO_MIN, FW_MAXACTIVE_AUTO_MAX);
}

static int fw_sysfs_create(void)
{
	int ret;

	fw_kobj = kobject_create_and_add("filewatcher", kernel_kobj);
	if (!fw_kobj)
		return -ENOMEM;
	ret = sysfs_create_group(fw_kobj, &fw_attr_group);
	if (ret) {
		kobject_put(fw_kobj);
		fw_kobj = NULL;
	}
	return ret;
}

/*
 * Registers kp (a kretprobe's when rp is set) on the first function of names
 * (separated by spaces) that this kernel has, and copies its name to chosen.
 * A name the kernel lacks fails with -ENOENT (-EINVAL before 5.12, which also
 * means "not probeable"): try the next. Any other error is final.
 */
static int fw_register_first(struct kprobe *kp, struct kretprobe *rp,
			     const char *names, char *chosen)
{
	const char *name = names;
	int ret = -ENOENT;

	while (*name) {
		size_t len = strcspn(name, " ");

		if (len && len < KSYM_NAME_LEN) {
			memcpy(chosen, name, len);
			chosen[len] = '\0';
			kp->symbol_name = chosen;
			kp->addr = NULL;
			ret = rp ? register_kretprobe(rp) : register_kprobe(kp);
			if (ret != -ENOENT && ret != -EINVAL)
				break;
		}
		name += len;
		name += strspn(name, " ");
	}
	if (ret) {
		pr_err("cannot probe any of %s: %d\n", names, ret);
		chosen[0] = '\0';
	}
	return ret;
}

/*
 * The route probes (mknod, O_TMPFILE links): all or none. A kernel without
 * CONFIG_SECURITY_PATH has no security_path_*() to probe; the module then
 * watches opens only, says so in the log, and shows it in
 * /sys/kernel/filewatcher/routes.
 */
static void fw_register_routes(void)
{
	unsigned int i;
	int ret;

	for (i = 0; i < ARRAY_SIZE(fw_route_rps); i++)
		fw_route_rps[i]->maxactive = fw_rp.maxactive;
	ret = register_kretprobes(fw_route_rps, ARRAY_SIZE(fw_route_rps));
	if (ret) {
		pr_warn("cannot probe vfs_create, vfs_link, security_path_mknod and security_path_link (%d): mknod(2) and O_TMPFILE links are not reported\n",
			ret);
		return;
	}
	fw_routes = true;
	schedule_delayed_work(&fw_sweep_work, FW_MARK_TTL);
}

static void fw_unregister(void)
{
	/* Each waits for its handlers; then no mark can be made or taken. */
	if (fw_routes) {
		unregister_kretprobes(fw_route_rps, ARRAY_SIZE(fw_route_rps));
		cancel_delayed_work_sync(&fw_sweep_work);
		fw_drop_marks(true);
	}
	unregister_kretprobe(&fw_root_rp);
	unregister_kretprobe(&fw_rp);
}

static int __init filewatcher_init(void)
{
	int ret;

	BUILD_BUG_ON_MSG(!fw_proto_is(file_open_root, struct file *, const struct path *, const char *, int, umode_t) &&
			 !fw_proto_is(file_open_root, struct file *, struct dentry *, struct vfsmount *, const char *, int, umode_t),
			 "file_open_root() does not return the struct file fw_ret reads");
	BUILD_BUG_ON_MSG(FW_VFS_CREATE_DENTRY_ARG < 0,
			 "vfs_create() has a prototype this module does not know: add it to FW_VFS_CREATE_DENTRY_ARG");
	BUILD_BUG_ON_MSG(FW_VFS_LINK_NEW_DENTRY_ARG < 0,
			 "vfs_link() has a prototype this module does not know: add it to FW_VFS_LINK_NEW_DENTRY_ARG");
	if (fw_maxactive_param < 0 || fw_maxactive_param > FW_MAXACTIVE_MAX) {
		pr_err("maxactive=%d out of range 0..%d\n",
		       fw_maxactive_param, FW_MAXACTIVE_MAX);
		return -EINVAL;
	}
	fw_rp.maxactive = fw_effective_maxactive();

	/* First: the handlers may run as soon as a probe is registered. */
	fw_path_bufs = alloc_percpu(struct fw_path_buf);
	if (!fw_path_bufs)
		return -ENOMEM;

	ret = fw_register_first(&fw_rp.kp, &fw_rp, FW_OPEN_FUNCTIONS, fw_function);
	if (ret)
		goto free_path_bufs;
	fw_root_rp.maxactive = fw_rp.maxactive;
	ret = register_kretprobe(&fw_root_rp);
	if (ret) {
		pr_err("cannot probe file_open_root: %d\n", ret);
		unregister_kretprobe(&fw_rp);
		goto free_path_bufs;
	}
	fw_register_routes();

	/* After: sysfs shows fw_function, which fw_register_first() sets. */
	ret = fw_sysfs_create();
	if (ret) {
		pr_err("creating /sys/kernel/filewatcher failed: %d\n", ret);
		goto unregister;
	}
	pr_info("watching file creation through %s, maxactive %d%s\n",
		fw_function, fw_rp.maxactive,
		fw_routes ? ", and mknod and O_TMPFILE links" : "");
	return 0;

unregister:
	fw_unregister();
free_path_bufs:
	free_percpu(fw_path_bufs);
	return ret;
}

static void __exit filewatcher_exit(void)
{
	/* Waits until no handler runs, so the buffers can go after it. */
	fw_unregister();
	pr_info("unregistered from %s: missed %d opens for want of an instance, %lu while another kprobe ran\n",
		fw_function, fw_rp.nmissed, fw_rp.kp.nmissed);
	kobject_put(fw_kobj);
	free_percpu(fw_path_bufs);
}

module_init(filewatcher_init);
module_exit(filewatcher_exit);
MODULE_DESCRIPTION("Fires the filewatcher/file_created tracepoint for every file created");
MODULE_LICENSE("GPL");
MODULE_VERSION("0.2.0");
