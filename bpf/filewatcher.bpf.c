//go:build ignore

// filewatcher.bpf.c: forwards the kernel module's filewatcher/file_created
// tracepoint to user space through a BPF ring buffer.
//
// Each record is a struct event_hdr followed by exactly hdr.path_len bytes of
// path (no NUL, no padding): records are sized to the path, not to PATH_MAX.
// Nothing is lost silently: an event that cannot be written (ring buffer full)
// or read (bad tracepoint record) is counted in the per-CPU counters map,
// which the loader polls and turns into in-band gaps. A record wakes the
// reader only once 1/8 of the ring is unread; the loader also reads on a timer.
//
// Built by bpf2go from loader-go/internal/bpfobj (go generate); the generated
// object is checked in.

#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define PATH_MAX 4096
#define TASK_COMM_LEN 16

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

// Header of every ring-buffer record; decoded by loader-go/internal/kernel.
struct event_hdr {
	__u64 ktime_ns;
	__u64 cgroup_id;
	__u32 pid;	// task id
	__u32 tgid;	// process id
	__u32 uid;
	__u32 gid;
	__u32 flags;	// the tracepoint's flags (bit 0: path unresolved)
	__u32 path_len;	// path bytes following the header, without NUL
	char comm[TASK_COMM_LEN];
};

struct event {
	struct event_hdr hdr;
	char path[PATH_MAX];
};

// Loss counters, one slot per CPU; the loader sums them.
struct loss_counters {
	__u64 ringbuf_full;	// events bpf_ringbuf_output could not write
	__u64 read_errors;	// events whose path could not be read
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

// A struct event (4 KiB) does not fit on the 512-byte BPF stack.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct event);
} scratch SEC(".maps");

SEC("tracepoint/filewatcher/file_created")
int file_created(struct file_created_ctx *ctx)
{
	__u32 zero = 0;
	struct event *e = bpf_map_lookup_elem(&scratch, &zero);
	struct loss_counters *c = bpf_map_lookup_elem(&losses, &zero);
	if (!e || !c)
		return 0;

	__u32 loc = ctx->__data_loc_filename;
	long n = bpf_probe_read_kernel_str(e->path, sizeof(e->path),
					   (void *)ctx + (loc & 0xffff));
	if (n <= 0) {
		c->read_errors++;
		return 0;
	}
	// n counts the NUL and is at most PATH_MAX, so n - 1 fits in 12 bits;
	// the mask lets the verifier see that the record stays inside *e.
	__u32 path_len = (__u32)(n - 1) & (PATH_MAX - 1);

	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u64 uid_gid = bpf_get_current_uid_gid();
	e->hdr.ktime_ns = bpf_ktime_get_ns();
	e->hdr.cgroup_id = bpf_get_current_cgroup_id();
	e->hdr.pid = (__u32)pid_tgid;
	e->hdr.tgid = pid_tgid >> 32;
	e->hdr.uid = (__u32)uid_gid;
	e->hdr.gid = uid_gid >> 32;
	e->hdr.flags = ctx->flags;
	e->hdr.path_len = path_len;
	bpf_get_current_comm(e->hdr.comm, sizeof(e->hdr.comm));

	// Flags 0 wake the reader for every record written into an empty ring,
	// i.e. for nearly every file created at ordinary rates, and those
	// wakeups were most of what watching added to a create (issue 6).
	// Write without one: the loader drains the ring on a short timer
	// (drainInterval in loader-go/internal/kernel). Force one once 1/8 of
	// the ring is unread, so that a burst is read well before it fills.
	__u64 wakeup = BPF_RB_NO_WAKEUP;
	if (bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >=
	    bpf_ringbuf_query(&events, BPF_RB_RING_SIZE) / 8)
		wakeup = BPF_RB_FORCE_WAKEUP;
	if (bpf_ringbuf_output(&events, e, sizeof(e->hdr) + path_len, wakeup))
		c->ringbuf_full++;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
