// SPDX-License-Identifier: GPL-2.0
/*
 * Lifecycle and concurrency: thousands of VMs opened and closed (bare, with memory, with a
 * vCPU and mappings, after a run); close while another thread is in RUN; kill -9 of a
 * process in RUN; two VMs running at once on threads that are moved between CPUs while
 * they run; afterwards every max_vms slot is free again. Usage: lifecycle [vms] [seconds]
 *
 * Built on the kernel's kselftest harness: one TEST_F per check, each in a child of its
 * own; the VMs come from the shared library (lib/vm.c).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "shadowvm_test.h"

#define MEM_SIZE (2u << 20)

/* No per-test bound of its own (the boot's timeout is the bound): 1000 VMs in a debug
 * kernel under Bochs take minutes. */
#define LIFECYCLE_TIMEOUT 1500

static int nvms = 1000;		/* lifecycle [vms] [seconds] */
static double secs = 4;

FIXTURE(lifecycle) {
};

FIXTURE_SETUP(lifecycle)
{
}

FIXTURE_TEARDOWN(lifecycle)
{
}

SVM_TEST(lifecycle, open_close, LIFECYCLE_TIMEOUT,
	 "VMs opened and closed (a quarter with memory, vCPU and mappings, some ran)")
{
	int n = nvms, fails = 0, ran = 0;
	char err[120] = "";

	for (int i = 0; i < n; i++) {
		struct vm vm;
		if (i % 4) {
			int fd = open("/dev/shadowvm", O_RDWR | O_CLOEXEC);
			struct shadowvm_memory m = { .size = 4096ull << (i % 8) };
			if (fd < 0 || (i % 4 == 2 && ioctl(fd, SHADOWVM_SET_MEMORY, &m))) {
				fails++;
				snprintf(err, sizeof(err), "VM %d: %s", i, strerror(errno));
			}
			close(fd);
			continue;
		}
		if (vm_create(&vm, MEM_SIZE, guest_hlt, 1)) {
			fails++;
			snprintf(err, sizeof(err), "VM %d setup: %s", i, strerror(errno));
		} else if (i % 40 == 0) {
			if (ioctl(vm.fd, SHADOWVM_RUN, 0) || vm.run->exit_reason != SHADOWVM_EXIT_HLT) {
				fails++;
				snprintf(err, sizeof(err), "VM %d run: %s exit %u", i, strerror(errno), vm.run->exit_reason);
			}
			ran++;
		}
		vm_destroy(&vm);
	}
	ksft_print_msg("%d VMs opened and closed (a quarter with memory, vCPU and mappings; %d ran)\n", n, ran);
	ASSERT_EQ(0, fails) TH_LOG("%d failed; last: %s", fails, err);
}

static void *spin(void *arg)
{
	struct vm *vm = arg;
	while (ioctl(vm->fd, SHADOWVM_RUN, 0) == 0 || errno == EINTR)
		;
	return (void *)(intptr_t)errno;
}

static void on_signal(int sig)
{
	(void)sig;
}

SVM_TEST(lifecycle, close_while_run, LIFECYCLE_TIMEOUT,
	 "close while another thread is in RUN, repeatedly: RUN ends with EBADF")
{
	int rounds = 10, bad = 0;
	long last = 0;

	signal(SIGUSR1, on_signal);
	for (int i = 0; i < rounds; i++) {
		struct vm vm;
		pthread_t th;
		void *ret;

		if (vm_create(&vm, MEM_SIZE, guest_loop, 2)) {
			vm_destroy(&vm);
			bad++;
			continue;
		}
		pthread_create(&th, NULL, spin, &vm);
		usleep(20000 + 10000 * (i % 5));
		munmap(vm.mem, MEM_SIZE);
		munmap(vm.run, SHADOWVM_RUN_MMAP_SIZE);
		close(vm.fd);
		pthread_kill(th, SIGUSR1);
		pthread_join(th, &ret);
		if ((intptr_t)ret != EBADF)
			bad++, last = (intptr_t)ret;
	}
	ASSERT_EQ(0, bad) TH_LOG("%d of %d rounds wrong, last errno %ld", bad, rounds, last);
}

SVM_TEST(lifecycle, kill9_in_run, LIFECYCLE_TIMEOUT, "kill -9 of processes inside RUN")
{
	int rounds = 5, bad = 0;

	for (int i = 0; i < rounds; i++) {
		pid_t pid = fork();
		if (pid == 0) {
			struct vm vm;
			if (vm_create(&vm, MEM_SIZE, guest_loop, 2))
				_exit(2);
			for (;;)
				ioctl(vm.fd, SHADOWVM_RUN, 0);
		}
		usleep(200000);
		kill(pid, SIGKILL);
		int st;
		waitpid(pid, &st, 0);
		if (!WIFSIGNALED(st) || WTERMSIG(st) != SIGKILL)
			bad++;
	}
	ASSERT_EQ(0, bad) TH_LOG("%d of %d did not die by SIGKILL", bad, rounds);
}

/* Two VMs running at once; the main thread moves their threads between CPUs. */
struct runner {
	struct vm vm;
	pthread_t th;
	volatile int stop;
	unsigned long runs, bad;
	unsigned cpus_seen;
	pid_t tid;
};

static void *runner(void *arg)
{
	struct runner *r = arg;

	r->tid = syscall(SYS_gettid);
	while (!r->stop) {
		int rc = ioctl(r->vm.fd, SHADOWVM_RUN, 0);
		r->runs++;
		if (rc == 0 && r->vm.run->exit_reason == SHADOWVM_EXIT_INTR)
			;
		else if (!(rc == -1 && errno == EINTR))
			r->bad++;
		unsigned c = 99;
		syscall(SYS_getcpu, &c, NULL, NULL);	/* not the vDSO: exact on every CPU model */
		if (c < 32)
			r->cpus_seen |= 1u << c;
	}
	return NULL;
}

SVM_TEST(lifecycle, concurrent_migrating, LIFECYCLE_TIMEOUT,
	 "two VMs run concurrently while their threads are moved between CPUs")
{
	double seconds = secs;
	int ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	struct runner r[2];
	unsigned long moves = 0, round = 0;
	int setup = 1;

	memset(r, 0, sizeof(r));
	signal(SIGUSR1, on_signal);
	for (int i = 0; i < 2; i++)
		setup &= vm_create(&r[i].vm, MEM_SIZE, guest_loop, 2) == 0;
	ASSERT_TRUE(setup) TH_LOG("two VMs run concurrently while migrating: setup: %s", strerror(errno));
	for (int i = 0; i < 2; i++)
		pthread_create(&r[i].th, NULL, runner, &r[i]);
	double end = now() + seconds;
	while (now() < end) {
		usleep(30000);
		round++;
		for (int i = 0; i < 2; i++) {
			cpu_set_t set;
			CPU_ZERO(&set);
			CPU_SET((round + i) % ncpu, &set);	/* each thread alternates between CPUs */
			if (r[i].tid && sched_setaffinity(r[i].tid, sizeof(set), &set) == 0)
				moves++;
		}
	}
	for (int i = 0; i < 2; i++) {
		r[i].stop = 1;
		r[i].vm.run->immediate_exit = 1;
		pthread_kill(r[i].th, SIGUSR1);
		pthread_join(r[i].th, NULL);
	}
	int both = ncpu < 2 || (__builtin_popcount(r[0].cpus_seen) >= 2 && __builtin_popcount(r[1].cpus_seen) >= 2);
	ksft_print_msg("two VMs run concurrently on %d CPU(s), threads moved %lu times (RUNs %lu+%lu, CPU masks %#x %#x)\n",
		       ncpu, moves, r[0].runs, r[1].runs, r[0].cpus_seen, r[1].cpus_seen);
	for (int i = 0; i < 2; i++)
		vm_destroy(&r[i].vm);
	ASSERT_TRUE(r[0].bad + r[1].bad == 0 && r[0].runs && r[1].runs && both)
		TH_LOG("bad returns %lu+%lu", r[0].bad, r[1].bad);
}

SVM_TEST(lifecycle, slots_free, LIFECYCLE_TIMEOUT, "afterwards all 64 VM slots (max_vms) are free")
{
	int fds[64], n = 0;
	while (n < 64 && (fds[n] = open("/dev/shadowvm", O_RDWR | O_CLOEXEC)) >= 0)
		n++;
	int e = errno;
	while (n > 0)
		close(fds[--n]);
	ASSERT_TRUE(n == 0 && fds[63] >= 0) TH_LOG("errno %s", strerror(e));
}

/* After the harness's totals, as before its results: scripts/check.sh greps it. */
static void print_total(void)
{
	printf("# LIFECYCLE-TOTAL vms=%d\n", nvms + 10 + 5 + 2 + 64);
	fflush(stdout);
}

int main(int argc, char **argv)
{
	nvms = argc > 1 ? atoi(argv[1]) : 1000;
	secs = argc > 2 ? atof(argv[2]) : 4;
	shadowvm_ensure_loaded();
	signal(SIGUSR1, on_signal);
	atexit(print_total);	/* the harness ends with exit(); its test children with _exit() */
	return test_harness_run(1, argv);	/* the arguments are ours, not the harness's */
}
