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

#include <linux/cpumask.h>
#include <linux/dcache.h>
#include <linux/err.h>
#include <linux/fcntl.h>
#include <linux/fs.h>
#include <linux/kallsyms.h>
#include <linux/kobject.h>
#include <linux/kprobes.h>
#include <linux/limits.h>
#include <linux/minmax.h>
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/percpu.h>
#include <linux/ptrace.h>
#include <linux/string.h>
#include <linux/sysfs.h>
#include <linux/uaccess.h>
#include <linux/version.h>

#define CREATE_TRACE_POINTS
#include "filewatcher_trace.h"

/* get_kernel_nofault() is 5.8, sysfs_emit() 5.10. */
#if LINUX_VERSION_CODE < KERNEL_VERSION(5, 10, 0)
#error "filewatcher needs Linux 5.10 or later"
#endif

/* The third argument (op) of do_filp_open(), by calling convention. */
#if defined(CONFIG_X86_64)
#define fw_open_flags_arg(regs)	((regs)->dx)
#elif defined(CONFIG_ARM64)
#define fw_open_flags_arg(regs)	((regs)->regs[2])
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
static void fw_fire_unresolved(struct file *file)
{
	struct name_snapshot name;

	take_dentry_name_snapshot(&name, file->f_path.dentry);
	this_cpu_inc(fw_path_unresolved);
	trace_file_created((const char *)name.name.name, FW_PATH_UNRESOLVED);
	release_dentry_name_snapshot(&name);
}
NOKPROBE_SYMBOL(fw_fire_unresolved);

/*
 * Kretprobe handlers run with preemption disabled and kprobes do not nest on
 * a CPU (a nested hit is counted as missed instead), so this CPU's buffer is
 * ours until we return. d_path() only takes seqlocks and spinlocks under RCU:
 * it does not sleep.
 */
static void fw_fire(struct file *file)
{
	char *buf = this_cpu_ptr(fw_path_bufs)->buf;
	char *path = d_path(&file->f_path, buf, PATH_MAX);

	if (IS_ERR(path)) {
		fw_fire_unresolved(file);
		return;
	}
	trace_file_created(path, 0);
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
		fw_fire(file);
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

/* Misses for want of a free instance, plus hits while another kprobe ran. */
static ssize_t kprobe_missed_show(struct kobject *kobj,
				  struct kobj_attribute *attr, char *buf)
{
	u64 missed = (u64)(unsigned int)READ_ONCE(fw_rp.nmissed) +
		     READ_ONCE(fw_rp.kp.nmissed);

	return sysfs_emit(buf, "%llu\n", missed);
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

static struct attribute *fw_attrs[] = {
	&events_fired_attr.attr,
	&path_unresolved_attr.attr,
	&kprobe_missed_attr.attr,
	&maxactive_attr.attr,
	&function_attr.attr,
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
 * Registers the kretprobe on the first of FW_OPEN_FUNCTIONS this kernel has.
 * A name the kernel lacks fails with -ENOENT (-EINVAL before 5.12, which
 * also means "not probeable"): try the next. Any other error is final.
 */
static int fw_register(void)
{
	const char *name = FW_OPEN_FUNCTIONS;
	int ret = -ENOENT;

	while (*name) {
		size_t len = strcspn(name, " ");

		if (len && len < sizeof(fw_function)) {
			memcpy(fw_function, name, len);
			fw_function[len] = '\0';
			fw_rp.kp.symbol_name = fw_function;
			fw_rp.kp.addr = NULL;
			ret = register_kretprobe(&fw_rp);
			if (ret != -ENOENT && ret != -EINVAL)
				break;
		}
		name += len;
		name += strspn(name, " ");
	}
	if (ret) {
		pr_err("cannot probe any of %s: %d\n", FW_OPEN_FUNCTIONS, ret);
		fw_function[0] = '\0';
	}
	return ret;
}

static int __init filewatcher_init(void)
{
	int ret;

	if (fw_maxactive_param < 0 || fw_maxactive_param > FW_MAXACTIVE_MAX) {
		pr_err("maxactive=%d out of range 0..%d\n",
		       fw_maxactive_param, FW_MAXACTIVE_MAX);
		return -EINVAL;
	}
	fw_rp.maxactive = fw_effective_maxactive();

	/* First: the handlers may run as soon as fw_register() returns. */
	fw_path_bufs = alloc_percpu(struct fw_path_buf);
	if (!fw_path_bufs)
		return -ENOMEM;

	ret = fw_register();
	if (ret)
		goto free_path_bufs;

	/* After: sysfs shows fw_function, which fw_register() sets. */
	ret = fw_sysfs_create();
	if (ret) {
		pr_err("creating /sys/kernel/filewatcher failed: %d\n", ret);
		goto unregister;
	}
	pr_info("watching file creation through %s, maxactive %d\n",
		fw_function, fw_rp.maxactive);
	return 0;

unregister:
	unregister_kretprobe(&fw_rp);
free_path_bufs:
	free_percpu(fw_path_bufs);
	return ret;
}

static void __exit filewatcher_exit(void)
{
	/* Waits until no handler runs, so the buffers can go after it. */
	unregister_kretprobe(&fw_rp);
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
