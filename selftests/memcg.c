// SPDX-License-Identifier: GPL-2.0
/*
 * Memory accounting: everything a VM allocates is charged to its opener's memory cgroup
 * (GFP_KERNEL_ACCOUNT, as KVM does), so a cgroup limit bounds what an opener can pin.
 * Needs cgroup2 with the memory controller (the debug kernel has it).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include "shadowvm_ksft.h"
#include "shadowvm_util.h"

static int write_file(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC), ok;

	if (fd < 0)
		return -1;
	ok = write(fd, text, strlen(text)) == (ssize_t)strlen(text);
	close(fd);
	return ok ? 0 : -1;
}

static long read_long(const char *path)
{
	char buf[64] = { 0 };
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof(buf) - 1);

	if (fd >= 0)
		close(fd);
	return n > 0 ? atol(buf) : -1;
}

/*
 * Guest memory and the module's bookkeeping are charged to the opener's memory cgroup:
 * a VM shows in memory.current, and a cgroup limit stops SET_MEMORY beyond it with ENOMEM:
 * guest pages are allocated so that a failed charge fails the call (__GFP_RETRY_MAYFAIL)
 * instead of running the cgroup's OOM killer.
 */
static void test_memcg(void)
{
	const char *cg = "/sys/fs/cgroup/shadowvm-api";
	char path[128];
	int pipefd[2];

	mkdir("/sys/fs/cgroup", 0755);
	mount("none", "/sys/fs/cgroup", "cgroup2", 0, NULL);
	if (write_file("/sys/fs/cgroup/cgroup.subtree_control", "+memory") || (mkdir(cg, 0755) && errno != EEXIST)) {
		svm_result(0, "VM memory is charged to the opener's memory cgroup", "cgroup2 memory controller: %s",
			   strerror(errno));
		svm_result(0, "a memory cgroup limit bounds guest memory", "no cgroup");
		return;
	}
	snprintf(path, sizeof(path), "%s/memory.max", cg);
	write_file(path, "100M");
	if (pipe(pipefd)) {
		svm_result(0, "VM memory is charged to the opener's memory cgroup", "pipe: %s", strerror(errno));
		svm_result(0, "a memory cgroup limit bounds guest memory", "no pipe");
		return;
	}
	pid_t pid = fork();
	if (pid == 0) {
		struct shadowvm_memory m = { .size = 32u << 20 }, big = { .size = 256u << 20 };
		long r[3] = { 0, 0, 0 };
		char cur[128];
		snprintf(path, sizeof(path), "%s/cgroup.procs", cg);
		snprintf(cur, sizeof(cur), "%s/memory.current", cg);
		write_file(path, "0");
		r[0] = read_long(cur);
		int fd = open("/dev/shadowvm", O_RDWR | O_CLOEXEC);
		if (fd < 0 || ioctl(fd, SHADOWVM_SET_MEMORY, &m) || ioctl(fd, SHADOWVM_CREATE_VCPU, 0))
			_exit(2);
		r[1] = read_long(cur);
		/* Reported before the big SET_MEMORY, so an OOM kill there is told apart. */
		if (write(pipefd[1], r, 2 * sizeof(long)) != 2 * sizeof(long))
			_exit(3);
		int fd2 = open("/dev/shadowvm", O_RDWR | O_CLOEXEC);
		r[2] = ioctl(fd2, SHADOWVM_SET_MEMORY, &big) ? errno : 0;
		if (write(pipefd[1], &r[2], sizeof(long)) != sizeof(long))
			_exit(3);
		_exit(0);
	}
	long r[3] = { -1, -1, -1 };
	close(pipefd[1]);	/* so a read sees the end when the child is gone */
	ssize_t got = read(pipefd[0], r, 2 * sizeof(long));
	ssize_t got2 = read(pipefd[0], &r[2], sizeof(long));
	int status = 0;
	waitpid(pid, &status, 0);
	close(pipefd[0]);
	long delta = r[1] - r[0];
	svm_result(got == 2 * sizeof(long) && delta >= (32l << 20), "VM memory is charged to the opener's memory cgroup",
		   "memory.current %ld -> %ld after a 32 MiB VM (child status %#x)", r[0], r[1], status);
	svm_result(got2 == sizeof(long) && r[2] == ENOMEM,
		   "a memory cgroup limit (100M) bounds guest memory: SET_MEMORY 256 MiB fails with ENOMEM, no OOM kill",
		   "second SET_MEMORY errno %ld, child status %#x", r[2], status);
	rmdir(cg);
}

int main(void)
{
	ksft_print_header();
	ksft_set_plan(2);
	shadowvm_ensure_loaded();
	test_memcg();
	ksft_finished();
}
