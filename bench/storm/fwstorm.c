// SPDX-License-Identifier: Apache-2.0
/*
 * fwstorm: the load generator of filewatcher's kernel benchmarks (bench/).
 * Built static so that it runs in the busybox guest of test/vm.
 *
 *   fwstorm create [-w WORKERS] [-k] DIR N   create N new files under DIR
 *   fwstorm open   [-w WORKERS] FILE N       open(O_RDONLY) + close an existing file N times
 *   fwstorm creat-existing [-w WORKERS] FILE N
 *                                            open(O_WRONLY|O_CREAT) an existing file N times
 *
 * create: each worker makes DIR/w<worker>/<i> with open(O_CREAT|O_EXCL) +
 * close, so every successful call really creates a file (one
 * filewatcher/file_created event each). One directory per worker: workers
 * sharing a directory would measure its lock, not the open path. Then the
 * files are unlinked, untimed, unless -k. The timed part is from the moment every worker is ready to the
 * moment the last one finishes.
 *
 * It prints one line of key=value pairs, for bench/ to parse:
 *   mode=create n=100000 ok=100000 failed=0 workers=2 ns=... per_sec=... utime_us=... stime_us=...
 * utime/stime are the workers' CPU (RUSAGE_CHILDREN) during the timed part.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_WORKERS 64

enum mode { MODE_CREATE, MODE_OPEN, MODE_CREAT_EXISTING };

/* Shared with the workers: a start flag and each worker's result. */
struct shared {
	volatile int go;
	volatile int ready;
	uint64_t ok[MAX_WORKERS];
	uint64_t failed[MAX_WORKERS];
	int first_errno[MAX_WORKERS];
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void usage(void)
{
	fprintf(stderr,
		"usage: fwstorm create [-w WORKERS] [-k] DIR N\n"
		"       fwstorm open [-w WORKERS] FILE N\n"
		"       fwstorm creat-existing [-w WORKERS] FILE N\n");
	exit(2);
}

/* share gives worker w of n its part of total. */
static uint64_t share(uint64_t total, int w, int n)
{
	return total / n + ((uint64_t)w < total % n ? 1 : 0);
}

static void note(struct shared *sh, int w, int ok)
{
	if (ok) {
		sh->ok[w]++;
		return;
	}
	if (!sh->failed[w]++)
		sh->first_errno[w] = errno;
}

static void run_worker(struct shared *sh, enum mode mode, const char *target,
		       int w, uint64_t count)
{
	char path[4096];
	uint64_t i;
	int fd;

	__atomic_add_fetch(&sh->ready, 1, __ATOMIC_SEQ_CST);
	while (!sh->go)
		;
	for (i = 0; i < count; i++) {
		switch (mode) {
		case MODE_CREATE:
			snprintf(path, sizeof(path), "%s/w%d/%llu", target, w,
				 (unsigned long long)i);
			fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
			break;
		case MODE_OPEN:
			fd = open(target, O_RDONLY | O_CLOEXEC);
			break;
		default:
			fd = open(target, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
			break;
		}
		note(sh, w, fd >= 0);
		if (fd >= 0)
			close(fd);
	}
}

static void unlink_all(const char *dir, int workers, uint64_t n)
{
	char path[4096];
	uint64_t i;
	int w;

	for (w = 0; w < workers; w++) {
		uint64_t count = share(n, w, workers);

		for (i = 0; i < count; i++) {
			snprintf(path, sizeof(path), "%s/w%d/%llu", dir, w,
				 (unsigned long long)i);
			unlink(path);
		}
		snprintf(path, sizeof(path), "%s/w%d", dir, w);
		rmdir(path);
	}
}

static int make_dir(const char *path)
{
	if (mkdir(path, 0755) && errno != EEXIST) {
		fprintf(stderr, "fwstorm: mkdir %s: %s\n", path, strerror(errno));
		return -1;
	}
	return 0;
}

static int make_dirs(const char *dir, int workers)
{
	char path[4096];
	int w;

	if (make_dir(dir))
		return -1;
	for (w = 0; w < workers; w++) {
		snprintf(path, sizeof(path), "%s/w%d", dir, w);
		if (make_dir(path))
			return -1;
	}
	return 0;
}

static int64_t tv_us(struct timeval tv)
{
	return (int64_t)tv.tv_sec * 1000000 + tv.tv_usec;
}

int main(int argc, char **argv)
{
	const char *names[] = { "create", "open", "creat-existing" };
	struct rusage before, after;
	struct shared *sh;
	uint64_t n, ok = 0, failed = 0, start, elapsed;
	int workers = 1, keep = 0, opt, w, first_errno = 0;
	enum mode mode;
	const char *target;
	pid_t pids[MAX_WORKERS];

	if (argc < 2)
		usage();
	if (!strcmp(argv[1], "create"))
		mode = MODE_CREATE;
	else if (!strcmp(argv[1], "open"))
		mode = MODE_OPEN;
	else if (!strcmp(argv[1], "creat-existing"))
		mode = MODE_CREAT_EXISTING;
	else
		usage();
	optind = 2;
	while ((opt = getopt(argc, argv, "w:k")) != -1) {
		switch (opt) {
		case 'w':
			workers = atoi(optarg);
			break;
		case 'k':
			keep = 1;
			break;
		default:
			usage();
		}
	}
	if (argc - optind != 2 || workers < 1 || workers > MAX_WORKERS)
		usage();
	target = argv[optind];
	n = strtoull(argv[optind + 1], NULL, 10);

	if (mode == MODE_CREATE) {
		if (make_dirs(target, workers))
			return 1;
	} else {
		int fd = open(target, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);

		if (fd < 0) {
			fprintf(stderr, "fwstorm: %s: %s\n", target, strerror(errno));
			return 1;
		}
		close(fd);
	}

	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE,
		  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED) {
		perror("fwstorm: mmap");
		return 1;
	}
	memset(sh, 0, sizeof(*sh));
	for (w = 0; w < workers; w++) {
		pids[w] = fork();
		if (pids[w] < 0) {
			perror("fwstorm: fork");
			return 1;
		}
		if (pids[w] == 0) {
			run_worker(sh, mode, target, w, share(n, w, workers));
			_exit(0);
		}
	}
	while (__atomic_load_n(&sh->ready, __ATOMIC_SEQ_CST) < workers)
		usleep(1000);
	getrusage(RUSAGE_CHILDREN, &before);
	start = now_ns();
	sh->go = 1;
	for (w = 0; w < workers; w++)
		waitpid(pids[w], NULL, 0);
	elapsed = now_ns() - start;
	getrusage(RUSAGE_CHILDREN, &after);

	for (w = 0; w < workers; w++) {
		ok += sh->ok[w];
		failed += sh->failed[w];
		if (!first_errno)
			first_errno = sh->first_errno[w];
	}
	if (mode == MODE_CREATE && !keep)
		unlink_all(target, workers, n);

	printf("mode=%s n=%llu ok=%llu failed=%llu workers=%d ns=%llu per_sec=%.1f "
	       "utime_us=%lld stime_us=%lld first_errno=%d\n",
	       names[mode], (unsigned long long)n, (unsigned long long)ok,
	       (unsigned long long)failed, workers, (unsigned long long)elapsed,
	       elapsed ? (double)ok * 1e9 / (double)elapsed : 0.0,
	       (long long)(tv_us(after.ru_utime) - tv_us(before.ru_utime)),
	       (long long)(tv_us(after.ru_stime) - tv_us(before.ru_stime)),
	       first_errno);
	return failed ? 1 : 0;
}
