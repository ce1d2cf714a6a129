// SPDX-License-Identifier: GPL-2.0
/*
 * API selftests for /dev/shadowvm: every ioctl answers, misuse gets a clear errno, small
 * guests run (I/O, HLT, triple fault), RUN can be interrupted, and a VM can be closed while
 * another thread is inside RUN.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "shadowvm.h"
#include "tap.h"

#define MEM_SIZE (16u << 20)
#define CODE 0x1000

struct vm {
	int fd;
	uint8_t *mem;
	struct shadowvm_run *run;
};

/* A VM with memory, its mappings, one vCPU and the reset register state; RIP at CODE. */
static int vm_create(struct vm *vm)
{
	struct shadowvm_memory m = { .size = MEM_SIZE };
	struct shadowvm_regs regs = { .rip = CODE, .rflags = 2 };

	vm->fd = open("/dev/shadowvm", O_RDWR | O_CLOEXEC);
	if (vm->fd < 0 || ioctl(vm->fd, SHADOWVM_SET_MEMORY, &m) || ioctl(vm->fd, SHADOWVM_CREATE_VCPU, 0))
		return -1;
	vm->mem = mmap(NULL, MEM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, vm->fd, 0);
	vm->run = mmap(NULL, SHADOWVM_RUN_MMAP_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, vm->fd,
		       SHADOWVM_RUN_MMAP_OFFSET);
	if (vm->mem == MAP_FAILED || vm->run == MAP_FAILED)
		return -1;
	return ioctl(vm->fd, SHADOWVM_SET_REGS, &regs);
}

static void vm_destroy(struct vm *vm)
{
	munmap(vm->mem, MEM_SIZE);
	munmap(vm->run, SHADOWVM_RUN_MMAP_SIZE);
	close(vm->fd);
}

/* Runs until an exit other than INTR (time slice); returns the exit reason or -errno. */
static int vm_run(struct vm *vm)
{
	for (int i = 0; i < 1000; i++) {
		if (ioctl(vm->fd, SHADOWVM_RUN, 0))
			return -errno;
		if (vm->run->exit_reason != SHADOWVM_EXIT_INTR)
			return vm->run->exit_reason;
	}
	return -ETIMEDOUT;
}

/* Opens VMs until refused; returns how many, with the errno of the refusal in *err. */
static int open_all(int *fds, int max, int *err)
{
	int n = 0;

	*err = 0;
	while (n < max) {
		fds[n] = open("/dev/shadowvm", O_RDWR | O_CLOEXEC);
		if (fds[n] < 0) {
			*err = errno;
			break;
		}
		n++;
	}
	return n;
}

/*
 * max_vms_per_user (default 64) refuses a user's 65th VM with EMFILE; another user can
 * still open its own while the first holds all of its share (max_vms, 256, is for all
 * users together).
 */
static void test_vm_limit(void)
{
	int fds[256], n, err, pipefd[2];

	n = open_all(fds, 256, &err);
	tap_result(n == 64 && err == EMFILE, "a user's 65th VM at once fails with EMFILE (max_vms_per_user=64)",
		   "opened %d, then errno %d (%s)", n, err, strerror(err));
	struct stat st;
	int chmod_rc = chmod("/dev/shadowvm", 0666), chmod_err = errno;
	stat("/dev/shadowvm", &st);
	if (pipe(pipefd) == 0) {
		pid_t pid = fork();
		if (pid == 0) {
			int mine[256], e, got;
			if (setgid(65534) || setuid(65534))
				_exit(1);
			got = open_all(mine, 256, &e);
			int report[2] = { got, e };
			if (write(pipefd[1], report, sizeof(report)) != sizeof(report))
				_exit(1);
			_exit(0);
		}
		int report[2] = { -1, 0 };
		if (read(pipefd[0], report, sizeof(report)) != sizeof(report))
			report[0] = -1;
		waitpid(pid, NULL, 0);
		close(pipefd[0]);
		close(pipefd[1]);
		tap_result(report[0] == 64 && report[1] == EMFILE,
			   "meanwhile another user opens its own 64 VMs, then gets EMFILE",
			   "uid 65534 opened %d, then errno %d (%s); chmod 0666: rc %d errno %d, mode now %o",
			   report[0], report[1], strerror(report[1]), chmod_rc, chmod_err, st.st_mode & 07777);
	} else {
		tap_result(0, "meanwhile another user opens its own 64 VMs, then gets EMFILE", "pipe: %s",
			   strerror(errno));
	}
	chmod("/dev/shadowvm", 0600);
	while (n > 0)
		close(fds[--n]);
	n = open("/dev/shadowvm", O_RDWR | O_CLOEXEC);
	tap_result(n >= 0, "closing them frees the slots", "open: %s", strerror(errno));
	close(n);
}

static void test_misuse(void)
{
	struct shadowvm_memory m = { 0 };
	struct shadowvm_regs regs;
	int fd = open("/dev/shadowvm", O_RDWR | O_CLOEXEC);
	void *p;

	tap_result(fd >= 0, "open /dev/shadowvm", "open: %s", strerror(errno));
	tap_result(ioctl(fd, SHADOWVM_GET_API_VERSION, 0) == SHADOWVM_API_VERSION,
		   "GET_API_VERSION answers the ABI version", "errno %s", strerror(errno));
	TAP_ERRNO("an unknown ioctl fails with ENOTTY", ioctl(fd, _IO(SHADOWVM_IOCTL_TYPE, 0xff), 0), ENOTTY);
	TAP_ERRNO("SET_MEMORY with a wrong argument size fails with ENOTTY",
		  ioctl(fd, _IOW(SHADOWVM_IOCTL_TYPE, 0x01, uint32_t), &m), ENOTTY);
	TAP_ERRNO("RUN before setup fails with EINVAL", ioctl(fd, SHADOWVM_RUN, 0), EINVAL);
	TAP_ERRNO("CREATE_VCPU before SET_MEMORY fails with EINVAL", ioctl(fd, SHADOWVM_CREATE_VCPU, 0), EINVAL);
	TAP_ERRNO("GET_REGS without a vCPU fails with EINVAL", ioctl(fd, SHADOWVM_GET_REGS, &regs), EINVAL);
	TAP_ERRNO("SET_MEMORY with a NULL pointer fails with EFAULT", ioctl(fd, SHADOWVM_SET_MEMORY, NULL), EFAULT);
	m.size = 0;
	TAP_ERRNO("memory size 0 fails with EINVAL", ioctl(fd, SHADOWVM_SET_MEMORY, &m), EINVAL);
	m.size = MEM_SIZE + 1;
	TAP_ERRNO("unaligned memory size fails with EINVAL", ioctl(fd, SHADOWVM_SET_MEMORY, &m), EINVAL);
	m.size = MEM_SIZE;
	m.flags = 1;
	TAP_ERRNO("non-zero memory flags fail with EINVAL", ioctl(fd, SHADOWVM_SET_MEMORY, &m), EINVAL);
	m.flags = 0;
	m.size = 3ull << 30;
	TAP_ERRNO("memory beyond the module's max_memory_mb fails with E2BIG", ioctl(fd, SHADOWVM_SET_MEMORY, &m), E2BIG);
	m.size = MEM_SIZE;
	tap_result(ioctl(fd, SHADOWVM_SET_MEMORY, &m) == 0, "SET_MEMORY 16 MiB", "errno %s", strerror(errno));
	TAP_ERRNO("a second SET_MEMORY fails with EEXIST", ioctl(fd, SHADOWVM_SET_MEMORY, &m), EEXIST);
	p = mmap(NULL, MEM_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
	tap_result(p == MAP_FAILED && errno == EINVAL, "a private mapping of guest memory fails with EINVAL",
		   "mmap returned %p errno %s", p, strerror(errno));
	p = mmap(NULL, 2 * MEM_SIZE, PROT_READ, MAP_SHARED, fd, 0);
	tap_result(p == MAP_FAILED && errno == EINVAL, "a mapping beyond guest memory fails with EINVAL",
		   "mmap returned %p errno %s", p, strerror(errno));
	tap_result(ioctl(fd, SHADOWVM_CREATE_VCPU, 0) == 0, "CREATE_VCPU", "errno %s", strerror(errno));
	TAP_ERRNO("a second CREATE_VCPU fails with EEXIST", ioctl(fd, SHADOWVM_CREATE_VCPU, 0), EEXIST);
	close(fd);
	test_vm_limit();
}

static void test_bad_state(void)
{
	struct vm vm;
	struct shadowvm_regs regs;
	struct shadowvm_sregs sregs, bad;

	if (vm_create(&vm)) {
		tap_result(0, "VM for the register checks", "setup: %s", strerror(errno));
		return;
	}
	ioctl(vm.fd, SHADOWVM_GET_REGS, &regs);
	regs.rflags |= 1ull << 3; /* reserved */
	TAP_ERRNO("SET_REGS with a reserved RFLAGS bit fails with EINVAL", ioctl(vm.fd, SHADOWVM_SET_REGS, &regs), EINVAL);
	tap_result(ioctl(vm.fd, SHADOWVM_GET_SREGS, &sregs) == 0 && ioctl(vm.fd, SHADOWVM_SET_SREGS, &sregs) == 0,
		   "GET_SREGS then SET_SREGS round-trips", "errno %s", strerror(errno));
	bad = sregs;
	bad.cr0 &= ~1ull; /* real mode */
	TAP_ERRNO("SET_SREGS with CR0.PE=0 (real mode) fails with EINVAL", ioctl(vm.fd, SHADOWVM_SET_SREGS, &bad), EINVAL);
	bad = sregs;
	bad.cr4 |= 1ull << 13; /* VMXE */
	TAP_ERRNO("SET_SREGS with CR4.VMXE fails with EINVAL", ioctl(vm.fd, SHADOWVM_SET_SREGS, &bad), EINVAL);
	bad = sregs;
	bad.efer |= 1ull << 10; /* LMA without paging */
	TAP_ERRNO("SET_SREGS with EFER.LMA inconsistent with CR0.PG fails with EINVAL",
		  ioctl(vm.fd, SHADOWVM_SET_SREGS, &bad), EINVAL);
	bad = sregs;
	bad.cs.present = 0;
	TAP_ERRNO("SET_SREGS with a non-present CS fails with EINVAL", ioctl(vm.fd, SHADOWVM_SET_SREGS, &bad), EINVAL);
	vm_destroy(&vm);
}

static void test_guests(void)
{
	/* mov al, 'A'; out 0x80, al; in al, 0x81; hlt */
	static const uint8_t io_hlt[] = { 0xb0, 0x41, 0xe6, 0x80, 0xe4, 0x81, 0xf4 };
	static const uint8_t ud2[] = { 0x0f, 0x0b };
	struct shadowvm_sregs sregs;
	struct shadowvm_regs regs;
	struct shadowvm_stats st = { 0 };
	struct shadowvm_stat_entry *e;
	struct vm vm;
	int r, found = 0;

	if (vm_create(&vm)) {
		tap_result(0, "VM for the guest tests", "setup: %s", strerror(errno));
		return;
	}
	memcpy(vm.mem + CODE, io_hlt, sizeof(io_hlt));
	r = vm_run(&vm);
	tap_result(r == SHADOWVM_EXIT_IO && vm.run->exit.io.direction == SHADOWVM_IO_OUT && vm.run->exit.io.port == 0x80 &&
		   vm.run->exit.io.size == 1 && vm.run->exit.io.data == 0x41,
		   "a guest OUT exits to userspace with port, size and data",
		   "exit %d dir %u port %#x size %u data %#llx", r, vm.run->exit.io.direction, vm.run->exit.io.port,
		   vm.run->exit.io.size, (unsigned long long)vm.run->exit.io.data);
	r = vm_run(&vm);
	tap_result(r == SHADOWVM_EXIT_IO && vm.run->exit.io.direction == SHADOWVM_IO_IN && vm.run->exit.io.port == 0x81,
		   "a guest IN exits to userspace", "exit %d", r);
	vm.run->exit.io.data = 0x5a;
	r = vm_run(&vm);
	ioctl(vm.fd, SHADOWVM_GET_REGS, &regs);
	tap_result(r == SHADOWVM_EXIT_HLT && (regs.rax & 0xff) == 0x5a && regs.rip == CODE + sizeof(io_hlt),
		   "the IN data reaches AL; HLT exits with RIP after it",
		   "exit %d rax %#llx rip %#llx", r, (unsigned long long)regs.rax, (unsigned long long)regs.rip);

	vm.run->immediate_exit = 1;
	errno = 0;
	r = ioctl(vm.fd, SHADOWVM_RUN, 0);
	tap_result(r == -1 && errno == EINTR && vm.run->exit_reason == SHADOWVM_EXIT_INTR,
		   "immediate_exit makes RUN return EINTR with exit INTR", "rc %d errno %s exit %u", r,
		   strerror(errno), vm.run->exit_reason);
	vm.run->immediate_exit = 0;

	/*
	 * Triple fault through shadowvm's own event merging: 32-bit paging maps only the
	 * first 4 MiB and the IDT lies above it. UD2 -> reading the #UD gate faults: #PF exit
	 * with the #UD being delivered -> the #PF is the guest's -> reading its gate faults ->
	 * #PF during #PF = #DF -> reading the #DF gate faults -> triple fault -> SHUTDOWN.
	 * (A plain empty IDT would triple-fault inside the CPU, which Bochs 2.7 turns into
	 * a machine shutdown instead of a VM exit.)
	 */
	memcpy(vm.mem + CODE, ud2, sizeof(ud2));
	*(uint32_t *)(vm.mem + 0x2000) = 0x83; /* PDE 0: 4 MiB page at 0, present, writable */
	ioctl(vm.fd, SHADOWVM_GET_SREGS, &sregs);
	sregs.cr4 |= 1 << 4;		/* PSE */
	sregs.cr0 |= 1u << 31;		/* PG */
	sregs.cr3 = 0x2000;
	sregs.idt.base = 0x00800000;
	sregs.idt.limit = 0x7ff;
	regs.rip = CODE;
	r = ioctl(vm.fd, SHADOWVM_SET_SREGS, &sregs) || ioctl(vm.fd, SHADOWVM_SET_REGS, &regs);
	if (r == 0)
		r = vm_run(&vm);
	tap_result(r == SHADOWVM_EXIT_SHUTDOWN, "faults while delivering UD, PF and DF end in a triple fault (SHUTDOWN)",
		   "exit %d errno %s", r, strerror(errno));

	errno = 0;
	r = ioctl(vm.fd, SHADOWVM_GET_STATS, &st);
	tap_result(r == -1 && errno == E2BIG && st.count > 0, "GET_STATS with no room fails with E2BIG and the count",
		   "rc %d errno %s count %u", r, strerror(errno), st.count);
	e = calloc(st.count, sizeof(*e));
	st.entries = (uintptr_t)e;
	r = ioctl(vm.fd, SHADOWVM_GET_STATS, &st);
	for (unsigned int i = 0; r == 0 && i < st.count; i++)
		found += !strcmp(e[i].name, "exits.hlt") && e[i].value == 1;
	tap_result(r == 0 && found == 1, "GET_STATS lists the exits by reason (exits.hlt = 1)", "rc %d found %d", r, found);
	free(e);
	vm_destroy(&vm);
}

static void *spin(void *arg)
{
	struct vm *vm = arg;

	/* RUN until the fd goes away; each RUN returns at least every time slice. */
	while (ioctl(vm->fd, SHADOWVM_RUN, 0) == 0 || errno == EINTR)
		;
	return (void *)(intptr_t)errno;
}

static void on_signal(int sig)
{
	(void)sig;
}

static void test_concurrency(void)
{
	static const uint8_t loop[] = { 0xeb, 0xfe }; /* jmp . */
	struct timespec t0, t1;
	struct vm vm, vm2;
	pthread_t th;
	void *ret;
	int r;

	signal(SIGUSR1, on_signal);
	if (vm_create(&vm) || vm_create(&vm2)) {
		tap_result(0, "two VMs at once", "setup: %s", strerror(errno));
		return;
	}
	tap_result(1, "two VMs at once", "");
	memcpy(vm.mem + CODE, loop, sizeof(loop));
	memcpy(vm2.mem + CODE, "\xf4", 1);
	r = vm_run(&vm2);
	tap_result(r == SHADOWVM_EXIT_HLT, "the second VM runs while the first exists", "exit %d", r);

	pthread_create(&th, NULL, spin, &vm);
	usleep(300 * 1000);
	pthread_kill(th, SIGUSR1);
	usleep(100 * 1000);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	/* Close every reference while the other thread is (most likely) inside RUN. */
	munmap(vm.mem, MEM_SIZE);
	munmap(vm.run, SHADOWVM_RUN_MMAP_SIZE);
	close(vm.fd);
	pthread_join(th, &ret);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	tap_result((intptr_t)ret == EBADF && t1.tv_sec - t0.tv_sec < 10,
		   "close while another thread is in RUN: RUN ends, the thread sees EBADF",
		   "thread ended with errno %ld after %ld s", (long)(intptr_t)ret, (long)(t1.tv_sec - t0.tv_sec));
	vm_destroy(&vm2);
}

/*
 * PAE paging loads the four PDPTEs with CR3 (here: with SET_SREGS). Reserved bits in one
 * refuse the state; once loaded, changing them in memory changes nothing until CR3 is
 * written again, so the guest runs on what was loaded and never without a shadow root.
 */
static void test_pae_pdptes(void)
{
	static const uint8_t hlt[] = { 0xf4 };
	struct shadowvm_sregs sregs;
	struct shadowvm_regs regs;
	struct vm vm;
	uint64_t *pdpt, *pd;
	int r;

	if (vm_create(&vm)) {
		tap_result(0, "VM for the PDPTE tests", "setup: %s", strerror(errno));
		tap_result(0, "PDPTEs are loaded with the registers", "no VM");
		return;
	}
	pdpt = (uint64_t *)(vm.mem + 0x3000);
	pd = (uint64_t *)(vm.mem + 0x4000);
	pd[0] = 0x83;			/* 2 MiB page at 0, present, writable */
	memcpy(vm.mem + CODE, hlt, sizeof(hlt));
	ioctl(vm.fd, SHADOWVM_GET_SREGS, &sregs);
	sregs.cr4 |= 1 << 5;		/* PAE */
	sregs.cr0 |= 1u << 31;		/* PG */
	sregs.cr3 = 0x3000;
	pdpt[0] = 0x4001 | 1 << 1;	/* bit 1 is reserved in a PDPTE */
	TAP_ERRNO("SET_SREGS with PAE paging and a reserved bit in a PDPTE fails with EINVAL",
		  ioctl(vm.fd, SHADOWVM_SET_SREGS, &sregs), EINVAL);
	pdpt[0] = 0x4001;
	r = ioctl(vm.fd, SHADOWVM_SET_SREGS, &sregs);
	pdpt[0] = 0x4001 | 1 << 1;	/* changed after loading: no effect before a CR3 write */
	ioctl(vm.fd, SHADOWVM_GET_REGS, &regs);
	regs.rip = CODE;
	if (r == 0)
		r = ioctl(vm.fd, SHADOWVM_SET_REGS, &regs);
	if (r == 0)
		r = vm_run(&vm);
	tap_result(r == SHADOWVM_EXIT_HLT, "PDPTEs are loaded with the registers: changing them in memory afterwards does not matter",
		   "exit %d (fail_entry reason %#llx qual %llu) errno %s", r,
		   (unsigned long long)vm.run->exit.fail_entry.hardware_entry_failure_reason,
		   (unsigned long long)vm.run->exit.fail_entry.exit_qualification, strerror(errno));
	vm_destroy(&vm);
}

static void *run_until_eintr(void *arg)
{
	struct vm *vm = arg;

	while (ioctl(vm->fd, SHADOWVM_RUN, 0) == 0)
		;
	return (void *)(intptr_t)(errno == EINTR ? (int)vm->run->exit.intr.cause : -1);
}

/*
 * immediate_exit is userspace's: a thread sets it while another is in RUN (a guest that
 * never exits on its own), and the RUN that follows must see it, not a stale copy that
 * the module wrote back.
 */
static void test_immediate_exit_race(void)
{
	static const uint8_t loop[] = { 0xeb, 0xfe }; /* jmp . */
	struct vm vm;
	pthread_t th;
	void *ret = (void *)-1;
	int done = 0;

	if (vm_create(&vm)) {
		tap_result(0, "immediate_exit set during RUN", "setup: %s", strerror(errno));
		return;
	}
	signal(SIGUSR1, on_signal);
	memcpy(vm.mem + CODE, loop, sizeof(loop));
	pthread_create(&th, NULL, run_until_eintr, &vm);
	usleep(250 * 1000);
	vm.run->immediate_exit = 1;
	for (int i = 0; i < 30 && !done; i++) {
		usleep(100 * 1000);
		done = pthread_tryjoin_np(th, &ret) == 0;
	}
	if (!done) {
		/* The flag was lost: end the thread with signals. */
		while (pthread_tryjoin_np(th, &ret)) {
			pthread_kill(th, SIGUSR1);
			usleep(50 * 1000);
		}
	}
	tap_result(done && (intptr_t)ret == SHADOWVM_INTR_IMMEDIATE_EXIT && vm.run->immediate_exit == 1,
		   "immediate_exit set by another thread during RUN stops the next RUN (not overwritten)",
		   "stopped by itself: %s, cause %ld, immediate_exit now %u", done ? "yes" : "no",
		   (long)(intptr_t)ret, vm.run->immediate_exit);
	vm_destroy(&vm);
}

/*
 * A VM exit loads null FS/GS selectors; the task's own must be back when RUN returns
 * (a 32-bit task keeps its TLS in one).
 */
static void test_host_selectors(void)
{
	static const uint8_t hlt[] = { 0xf4 };
	const uint16_t user_ds = 0x2b;	/* __USER_DS: a valid GS value for any task */
	uint16_t gs = 0;
	struct vm vm;
	int r;

	if (vm_create(&vm)) {
		tap_result(0, "GS selector kept across RUN", "setup: %s", strerror(errno));
		return;
	}
	memcpy(vm.mem + CODE, hlt, sizeof(hlt));
	__asm__ volatile("mov %0, %%gs" :: "r"(user_ds));
	r = vm_run(&vm);
	__asm__ volatile("mov %%gs, %0" : "=r"(gs));
	__asm__ volatile("mov %0, %%gs" :: "r"((uint16_t)0));
	tap_result(r == SHADOWVM_EXIT_HLT && gs == user_ds, "the task's GS selector is the same after RUN",
		   "exit %d, GS %#x (want %#x)", r, gs, user_ds);
	vm_destroy(&vm);
}

int main(void)
{
	tap_plan(41);
	/* Runs after suites that unload the module. */
	if (access("/dev/shadowvm", F_OK) && system("insmod /lib/modules/shadowvm.ko"))
		printf("# insmod shadowvm.ko failed\n");
	test_misuse();
	test_bad_state();
	test_guests();
	test_concurrency();
	test_pae_pdptes();
	test_immediate_exit_race();
	test_host_selectors();
	return tap_exit();
}
