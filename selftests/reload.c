// SPDX-License-Identifier: GPL-2.0
/*
 * Module load/unload cycles with VMs open and closed between them. Each cycle loads
 * shadowvm.ko, creates a VM with memory and a vCPU and runs a guest to HLT, then holds the
 * module in one of four ways: an open VM; only the VM's mappings (fd closed); two VMs, one
 * of them closed again; a thread inside RUN whose fd is closed meanwhile. While held, the
 * module's reference count must count the open files and rmmod must be refused
 * (delete_module: EWOULDBLOCK, "Resource temporarily unavailable"); once the last
 * reference is gone rmmod must succeed at once and /dev/shadowvm and /sys/module/shadowvm
 * must be gone. If the count is 0 while a VM is open, rmmod is not tried: it would succeed
 * and free code the open files still run (reported as a failure). The module is left loaded
 * for the next suite. Usage: reload [cycles]
 *
 * Reports through kselftest.h (the checks are counted over all cycles); the VMs come from
 * the shared library (lib/vm.c).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "shadowvm_ksft.h"
#include "shadowvm_util.h"

#define KO SHADOWVM_KO
#define MEM_SIZE (1u << 20)
/* Free memory that may stay missing after one VM is closed: slab pages kept partly used. */
#define BACK_SLACK_KB 128

static int ko_fd = -1;

/* Free memory in kB: MemFree plus the pages parked on the per-CPU free lists. */
static long free_kb(void)
{
	char line[256];
	long mem = -1, pcp = 0, v;
	FILE *f;

	sync();
	if ((f = fopen("/proc/sys/vm/drop_caches", "w")))
		fputs("3", f), fclose(f);
	if ((f = fopen("/proc/meminfo", "r"))) {
		while (fgets(line, sizeof(line), f))
			if (sscanf(line, "MemFree: %ld", &v) == 1)
				mem = v;
		fclose(f);
	}
	if ((f = fopen("/proc/zoneinfo", "r"))) {
		while (fgets(line, sizeof(line), f))
			if (sscanf(line, " count: %ld", &v) == 1)
				pcp += v * 4;
		fclose(f);
	}
	return mem < 0 ? -1 : mem + pcp;
}

static int load(void)
{
	return syscall(SYS_finit_module, ko_fd, "", 0);
}

static int unload(void)
{
	return syscall(SYS_delete_module, "shadowvm", O_NONBLOCK);
}

static int loaded(void)
{
	return access("/sys/module/shadowvm", F_OK) == 0;
}

/* The module's reference count, -1 if it cannot be read. */
static int refcnt(void)
{
	FILE *f = fopen("/sys/module/shadowvm/refcnt", "r");
	int n = -1;

	if (f) {
		if (fscanf(f, "%d", &n) != 1)
			n = -1;
		fclose(f);
	}
	return n;
}

/* Failure counters with the last message of each. */
struct check {
	const char *what;
	int bad;
	char last[200];
};

static struct check c_load = { .what = "insmod succeeds and /dev/shadowvm appears" },
		    c_run = { .what = "a VM with memory and a vCPU runs a guest to HLT" },
		    c_ref = { .what = "/sys/module/shadowvm/refcnt counts the open VM files" },
		    c_busy = { .what = "rmmod is refused with EWOULDBLOCK while a VM file is "
				       "open" },
		    c_unload = { .what = "rmmod succeeds at once after the last VM file is "
					 "released; node and sysfs gone" };

static void __attribute__((format(printf, 3, 4)))
fail(struct check *c, int cycle, const char *fmt, ...)
{
	va_list ap;
	int n = snprintf(c->last, sizeof(c->last), "cycle %d: ", cycle);

	va_start(ap, fmt);
	vsnprintf(c->last + n, sizeof(c->last) - n, fmt, ap);
	va_end(ap);
	c->bad++;
}

static unsigned long busy_tries;

/* The module is held by `holders` open files: the count must say so and rmmod must fail. */
static void expect_held(int cycle, int holders, const char *how)
{
	int n = refcnt();

	if (n != holders)
		fail(&c_ref, cycle, "%s: refcnt %d, want %d", how, n, holders);
	if (n <= 0) {
		fail(&c_busy, cycle, "%s: not tried, refcnt %d would let rmmod free code in use",
		     how, n);
		return;
	}
	busy_tries++;
	errno = 0;
	if (unload() == 0) {
		/* Too late to stop the harm; say it and reload so the cycles can go on. */
		fail(&c_busy, cycle, "%s: rmmod succeeded", how);
		load();
	} else if (errno != EWOULDBLOCK) {
		fail(&c_busy, cycle, "%s: errno %d (%s)", how, errno, strerror(errno));
	}
}

/* Unloads; the first try must succeed, later tries (up to 2 s) only keep the cycles going. */
static void expect_unload(int cycle)
{
	if (unload() != 0) {
		int e = errno, tries = 1;
		while (unload() != 0 && tries < 200)
			tries++, usleep(10000);
		fail(&c_unload, cycle, "rmmod: %s (refcnt %d); %d more tries", strerror(e),
		     refcnt(), tries);
	}
	if (access("/dev/shadowvm", F_OK) == 0 || loaded())
		fail(&c_unload, cycle, "after rmmod: /dev/shadowvm %s, /sys/module/shadowvm %s",
		     access("/dev/shadowvm", F_OK) ? "gone" : "still there",
		     loaded() ? "still there" : "gone");
}

static void on_signal(int sig)
{
	(void)sig;
}

static void *spin(void *arg)
{
	struct vm *vm = arg;

	while (ioctl(vm->fd, SHADOWVM_RUN, 0) == 0 || errno == EINTR)
		;
	return (void *)(intptr_t)errno;
}

static unsigned long vms, runs;

static int one_cycle(int i)
{
	struct vm a = VM_NONE, b = a;

	errno = 0;
	if (load() || access("/dev/shadowvm", F_OK)) {
		fail(&c_load, i, "%s", strerror(errno));
		return loaded() ? 0 : -1;
	}
	vms++;
	if (vm_create(&a, MEM_SIZE, guest_hlt, sizeof(guest_hlt))) {
		fail(&c_run, i, "setup: %s", strerror(errno));
	} else {
		int r = vm_run(&a);
		runs++;
		if (r != SHADOWVM_EXIT_HLT)
			fail(&c_run, i, "RUN: %s %d", r < 0 ? strerror(-r) : "exit", r);
	}
	switch (i % 4) {
	case 0:
		expect_held(i, 1, "VM open");
		vm_destroy(&a);
		break;
	case 1:
		/* A mapping holds the file after close(); the file holds the module. */
		close(a.fd);
		a.fd = -1;
		expect_held(i, 1, "fd closed, RAM and run page still mapped");
		munmap(a.mem, a.mem_size);
		a.mem = MAP_FAILED;
		expect_held(i, 1, "fd closed, run page still mapped");
		vm_destroy(&a);
		break;
	case 2:
		b.fd = open("/dev/shadowvm", O_RDWR | O_CLOEXEC);
		vms++;
		expect_held(i, 2, "two VMs open");
		vm_destroy(&a);
		expect_held(i, 1, "one of two VMs closed");
		vm_destroy(&b);
		break;
	default: {
		pthread_t th;
		void *ret;
		struct shadowvm_regs regs = { .rip = GUEST_CODE, .rflags = 2, .rsp = GUEST_STACK };

		if (a.mem == MAP_FAILED || ioctl(a.fd, SHADOWVM_SET_REGS, &regs)) {
			vm_destroy(&a);
			break;
		}
		vm_load_code(&a, guest_loop, sizeof(guest_loop));
		pthread_create(&th, NULL, spin, &a);
		usleep(20000);
		expect_held(i, 1, "a thread in RUN");
		munmap(a.mem, a.mem_size);
		munmap(a.run, SHADOWVM_RUN_MMAP_SIZE);
		close(a.fd);
		/* The RUN in progress still holds the file. */
		expect_held(i, 1, "fd closed while a thread is in RUN");
		pthread_kill(th, SIGUSR1);
		pthread_join(th, &ret);
		runs++;
		if ((intptr_t)ret != EBADF)
			fail(&c_run, i, "RUN after close ended with errno %ld, want EBADF",
			     (long)(intptr_t)ret);
		break;
	}
	}
	expect_unload(i);
	return 0;
}

int main(int argc, char **argv)
{
	int cycles = argc > 1 ? atoi(argv[1]) : 100, done = 0;
	double start = now();
	struct check *all[] = { &c_load, &c_run, &c_ref, &c_busy, &c_unload };

	ksft_print_header();
	ksft_set_plan(8);
	signal(SIGUSR1, on_signal);
	ko_fd = open(KO, O_RDONLY | O_CLOEXEC);
	/* An earlier suite may have left the module loaded, with no VM open. */
	int pre = loaded() ? unload() : 0;
	svm_result(ko_fd >= 0 && pre == 0 && !loaded(), "start with the module unloaded",
		   "open %s: %s; rmmod: %d %s", KO, ko_fd < 0 ? "failed" : "ok", pre,
		   strerror(errno));
	for (; done < cycles && ko_fd >= 0; done++)
		if (one_cycle(done))
			break;
	double secs = now() - start;
	for (unsigned k = 0; k < sizeof(all) / sizeof(all[0]); k++) {
		char desc[200];
		snprintf(desc, sizeof(desc), "%d cycles: %s", done, all[k]->what);
		svm_result(done == cycles && all[k]->bad == 0, desc, "%d failures; last: %s",
			   all[k]->bad, all[k]->last);
	}
	errno = 0;
	svm_result(load() == 0 && access("/dev/shadowvm", F_OK) == 0,
		   "the module is loaded again for the next suite", "%s", strerror(errno));

	/*
	 * One VM's bookkeeping: what a VM of lifecycle's kind (2 MiB of RAM, a vCPU, a guest
	 * run to HLT) takes besides its RAM (run page, VMXON/VMCS regions, the MMU's page cache,
	 * shadow pages and records, RAM page vectors, slab objects). leakcheck bounds the loss
	 * of a whole second round by it (/tmp/vm-bookkeeping.kb); closing the VM must give it
	 * all back.
	 */
	struct vm v = VM_NONE;
	/* A first VM warms up what stays allocated for good (slab caches, stack depot). */
	if (vm_create(&v, 2u << 20, guest_hlt, sizeof(guest_hlt)) == 0)
		vm_run(&v);
	vm_destroy(&v);
	long f0 = free_kb(), f1 = -1, f2;
	int ok = vm_create(&v, 2u << 20, guest_hlt, sizeof(guest_hlt)) == 0 &&
		 vm_run(&v) == SHADOWVM_EXIT_HLT;
	if (ok)
		f1 = free_kb();
	vm_destroy(&v);
	f2 = free_kb();
	long book = f0 - f1 - 2048, back = f0 - f2;
	FILE *bk = fopen("/tmp/vm-bookkeeping.kb", "w");
	if (bk && ok && f0 > 0)
		fprintf(bk, "%ld\n", book), fclose(bk);
	else if (bk)
		fclose(bk);
	char desc[200];
	snprintf(desc, sizeof(desc), "one VM's bookkeeping (2 MiB RAM, vCPU, ran to HLT): %ld kB "
		 "besides its RAM; after close %ld kB of it not back (at most %d)", book, back,
		 BACK_SLACK_KB);
	svm_result(ok && f0 > 0 && book > 0 && back <= BACK_SLACK_KB, desc,
		   "free %ld -> %ld -> %ld kB, VM %s", f0, f1, f2, ok ? "ran" : strerror(errno));
	printf("# RELOAD-TOTAL cycles=%d vms=%lu runs=%lu busy_rmmods=%lu seconds=%.1f "
	       "(%.0f ms per cycle)\n", done, vms, runs, busy_tries, secs,
	       done ? 1000 * secs / done : 0);
	ksft_finished();
}
