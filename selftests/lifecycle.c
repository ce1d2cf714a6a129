// SPDX-License-Identifier: GPL-2.0
/*
 * Lifecycle and concurrency: thousands of VMs opened and closed (bare, with memory, with a
 * vCPU and mappings, after a run); close while another thread is in RUN; kill -9 of a
 * process in RUN; two VMs running at once on threads that are moved between CPUs while
 * they run; afterwards every max_vms slot is free again. Usage: lifecycle [vms] [seconds]
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
#include "shadowvm.h"
#include "tap.h"
#include "vmlib.h"

#define MEM_SIZE (2u << 20)

static void test_open_close(int n)
{
	int fails = 0, ran = 0;
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
	char desc[120];
	snprintf(desc, sizeof(desc), "%d VMs opened and closed (a quarter with memory, vCPU and mappings; %d ran)", n, ran);
	tap_result(fails == 0, desc, "%d failed; last: %s", fails, err);
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

static void test_close_while_run(int rounds)
{
	int bad = 0;
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
	tap_result(bad == 0, "close while another thread is in RUN, repeatedly: RUN ends with EBADF",
		   "%d of %d rounds wrong, last errno %ld", bad, rounds, last);
}

static void test_kill9(int rounds)
{
	int bad = 0;

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
	tap_result(bad == 0, "kill -9 of processes inside RUN", "%d of %d did not die by SIGKILL", bad, rounds);
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

static void test_concurrent_migrating(double seconds)
{
	int ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	struct runner r[2];
	unsigned long moves = 0, round = 0;
	int setup = 1;

	memset(r, 0, sizeof(r));
	for (int i = 0; i < 2; i++)
		setup &= vm_create(&r[i].vm, MEM_SIZE, guest_loop, 2) == 0;
	if (!setup) {
		tap_result(0, "two VMs run concurrently while migrating", "setup: %s", strerror(errno));
		return;
	}
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
	char desc[200];
	snprintf(desc, sizeof(desc),
		 "two VMs run concurrently on %d CPU(s), threads moved %lu times (RUNs %lu+%lu, CPU masks %#x %#x)", ncpu,
		 moves, r[0].runs, r[1].runs, r[0].cpus_seen, r[1].cpus_seen);
	tap_result(r[0].bad + r[1].bad == 0 && r[0].runs && r[1].runs && both, desc, "bad returns %lu+%lu",
		   r[0].bad, r[1].bad);
	for (int i = 0; i < 2; i++)
		vm_destroy(&r[i].vm);
}

static void test_slots_free(void)
{
	int fds[64], n = 0;
	while (n < 64 && (fds[n] = open("/dev/shadowvm", O_RDWR | O_CLOEXEC)) >= 0)
		n++;
	int e = errno;
	while (n > 0)
		close(fds[--n]);
	tap_result(n == 0 && fds[63] >= 0, "afterwards all 64 VM slots (max_vms) are free", "errno %s", strerror(e));
}

int main(int argc, char **argv)
{
	int nvms = argc > 1 ? atoi(argv[1]) : 1000;
	double secs = argc > 2 ? atof(argv[2]) : 4;

	tap_plan(5);
	if (access("/dev/shadowvm", F_OK) && system("insmod /lib/modules/shadowvm.ko"))
		printf("# insmod shadowvm.ko failed\n");
	signal(SIGUSR1, on_signal);
	test_open_close(nvms);
	test_close_while_run(10);
	test_kill9(5);
	test_concurrent_migrating(secs);
	test_slots_free();
	printf("# LIFECYCLE-TOTAL vms=%d\n", nvms + 10 + 5 + 2 + 64);
	return tap_exit();
}
