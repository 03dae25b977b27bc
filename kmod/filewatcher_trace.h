/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The filewatcher/file_created tracepoint.
 *
 * Consumers depend on this layout (see the event's format file): after the
 * 8-byte common header come `__data_loc char[] filename` at offset 8 and
 * `u32 flags` at offset 12. Keep the field order.
 */
#undef TRACE_SYSTEM
#define TRACE_SYSTEM filewatcher

#if !defined(_FILEWATCHER_TRACE_H) || defined(TRACE_HEADER_MULTI_READ)
#define _FILEWATCHER_TRACE_H

#include <linux/tracepoint.h>
#include <linux/version.h>

#ifndef _FILEWATCHER_TRACE_HELPERS
#define _FILEWATCHER_TRACE_HELPERS
/*
 * Bit 0 of `flags`: the absolute path could not be built (it is longer than
 * PATH_MAX - 1), so `filename` is only the created file's own name.
 */
#define FW_PATH_UNRESOLVED	0x1

/*
 * Bits 8 to 15 of `flags`: how the file was created. 0 is an open, so that an
 * open's flags are what they have always been; the values match the loader's
 * EventKind (proto/filewatcher/v1), where an open is 1.
 */
#define FW_KIND_SHIFT		8
#define FW_KIND_MASK		0xff00
#define FW_KIND_OPEN		0
#define FW_KIND_MKNOD		2
#define FW_KIND_TMPFILE_LINK	3

/* __assign_str() lost its source argument in 6.10; it comes from __string(). */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 10, 0)
#define fw_assign_str(dst, src)	__assign_str(dst)
#else
#define fw_assign_str(dst, src)	__assign_str(dst, src)
#endif
#endif /* _FILEWATCHER_TRACE_HELPERS */

TRACE_EVENT(file_created,

	TP_PROTO(const char *path, u32 flags),

	TP_ARGS(path, flags),

	TP_STRUCT__entry(
		__string(filename, path)
		__field(u32, flags)
	),

	TP_fast_assign(
		fw_assign_str(filename, path);
		__entry->flags = flags;
	),

	TP_printk("%s%s%s", __get_str(filename),
		  (__entry->flags & FW_PATH_UNRESOLVED) ? " (unresolved)" : "",
		  /* Not __print_symbolic(): it prints 0x0 for an empty name. */
		  (__entry->flags & FW_KIND_MASK) == FW_KIND_MKNOD << FW_KIND_SHIFT ? " (mknod)" :
		  (__entry->flags & FW_KIND_MASK) == FW_KIND_TMPFILE_LINK << FW_KIND_SHIFT ? " (tmpfile link)" : "")
);

#endif /* _FILEWATCHER_TRACE_H */

/* define_trace.h re-reads this file from the module's own folder. */
#undef TRACE_INCLUDE_PATH
#define TRACE_INCLUDE_PATH .
#undef TRACE_INCLUDE_FILE
#define TRACE_INCLUDE_FILE filewatcher_trace
#include <trace/define_trace.h>
