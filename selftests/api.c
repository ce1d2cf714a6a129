// SPDX-License-Identifier: GPL-2.0
/*
 * API selftests for /dev/shadowvm: every ioctl answers, misuse gets a clear errno, small
 * guests run (I/O, HLT, triple fault), RUN can be interrupted, and a VM can be closed while
 * another thread is inside RUN.
 *
 * Built on the kernel's kselftest harness: each check is one TEST_F, run in a child of its
 * own on a fixture of the state it needs (an open fd, one with memory, one with a vCPU, a
 * whole VM from lib/vm.c), and prints the sentence it checks before its result.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "shadowvm_test.h"

#define MEM_SIZE (16u << 20)
#define CODE GUEST_CODE

/* Every check here may wait for a thread or open 128 VMs: Bochs is slow. */
#define API_TIMEOUT 120

/* ---- fixtures ---- */

/* No state: the test makes its own. */
FIXTURE(device) {
};

FIXTURE_SETUP(device)
{
}

FIXTURE_TEARDOWN(device)
{
}

/* An open /dev/shadowvm, nothing else. */
FIXTURE(fresh) {
	int fd;
};

FIXTURE_SETUP(fresh)
{
	self->fd = open(SHADOWVM_DEV, O_RDWR | O_CLOEXEC);
	ASSERT_LE(0, self->fd) TH_LOG("open " SHADOWVM_DEV ": %s", strerror(errno));
}

FIXTURE_TEARDOWN(fresh)
{
	if (self->fd >= 0)
		close(self->fd);
}

/* An open /dev/shadowvm with 16 MiB of memory (SET_MEMORY), no vCPU. */
FIXTURE(with_memory) {
	int fd;
};

FIXTURE_SETUP(with_memory)
{
	struct shadowvm_memory m = { .size = MEM_SIZE };

	self->fd = open(SHADOWVM_DEV, O_RDWR | O_CLOEXEC);
	ASSERT_LE(0, self->fd) TH_LOG("open " SHADOWVM_DEV ": %s", strerror(errno));
	ASSERT_EQ(0, ioctl(self->fd, SHADOWVM_SET_MEMORY, &m)) TH_LOG("SET_MEMORY: %s", strerror(errno));
}

FIXTURE_TEARDOWN(with_memory)
{
	if (self->fd >= 0)
		close(self->fd);
}

/* A VM from lib/vm.c: memory, mappings, one vCPU, the reset state with RIP at CODE. */
FIXTURE(vm) {
	struct vm vm;
};

FIXTURE_SETUP(vm)
{
	ASSERT_EQ(0, vm_create_reset(&self->vm, MEM_SIZE)) TH_LOG("VM setup: %s", strerror(errno));
}

FIXTURE_TEARDOWN(vm)
{
	vm_destroy(&self->vm);
}

/* ---- misuse of a fresh VM: every call answers with the documented errno ---- */

SVM_TEST(device, open_dev, API_TIMEOUT, "open /dev/shadowvm")
{
	int fd = open(SHADOWVM_DEV, O_RDWR | O_CLOEXEC);

	ASSERT_LE(0, fd) TH_LOG("open: %s", strerror(errno));
	close(fd);
}

SVM_TEST(fresh, get_api_version, API_TIMEOUT, "GET_API_VERSION answers the ABI version")
{
	ASSERT_EQ(SHADOWVM_API_VERSION, ioctl(self->fd, SHADOWVM_GET_API_VERSION, 0))
		TH_LOG("errno %s", strerror(errno));
}

SVM_TEST(fresh, unknown_ioctl, API_TIMEOUT, "an unknown ioctl fails with ENOTTY")
{
	ASSERT_ERRNO(ioctl(self->fd, _IO(SHADOWVM_IOCTL_TYPE, 0xff), 0), ENOTTY);
}

SVM_TEST(fresh, set_memory_wrong_size, API_TIMEOUT, "SET_MEMORY with a wrong argument size fails with ENOTTY")
{
	struct shadowvm_memory m = { 0 };

	ASSERT_ERRNO(ioctl(self->fd, _IOW(SHADOWVM_IOCTL_TYPE, 0x01, uint32_t), &m), ENOTTY);
}

SVM_TEST(fresh, run_before_setup, API_TIMEOUT, "RUN before setup fails with EINVAL")
{
	ASSERT_ERRNO(ioctl(self->fd, SHADOWVM_RUN, 0), EINVAL);
}

SVM_TEST(fresh, create_vcpu_before_memory, API_TIMEOUT, "CREATE_VCPU before SET_MEMORY fails with EINVAL")
{
	ASSERT_ERRNO(ioctl(self->fd, SHADOWVM_CREATE_VCPU, 0), EINVAL);
}

SVM_TEST(fresh, get_regs_without_vcpu, API_TIMEOUT, "GET_REGS without a vCPU fails with EINVAL")
{
	struct shadowvm_regs regs;

	ASSERT_ERRNO(ioctl(self->fd, SHADOWVM_GET_REGS, &regs), EINVAL);
}

SVM_TEST(fresh, set_memory_null, API_TIMEOUT, "SET_MEMORY with a NULL pointer fails with EFAULT")
{
	ASSERT_ERRNO(ioctl(self->fd, SHADOWVM_SET_MEMORY, NULL), EFAULT);
}

SVM_TEST(fresh, memory_size_zero, API_TIMEOUT, "memory size 0 fails with EINVAL")
{
	struct shadowvm_memory m = { .size = 0 };

	ASSERT_ERRNO(ioctl(self->fd, SHADOWVM_SET_MEMORY, &m), EINVAL);
}

SVM_TEST(fresh, memory_size_unaligned, API_TIMEOUT, "unaligned memory size fails with EINVAL")
{
	struct shadowvm_memory m = { .size = MEM_SIZE + 1 };

	ASSERT_ERRNO(ioctl(self->fd, SHADOWVM_SET_MEMORY, &m), EINVAL);
}

SVM_TEST(fresh, memory_flags, API_TIMEOUT, "non-zero memory flags fail with EINVAL")
{
	struct shadowvm_memory m = { .size = MEM_SIZE, .flags = 1 };

	ASSERT_ERRNO(ioctl(self->fd, SHADOWVM_SET_MEMORY, &m), EINVAL);
}

SVM_TEST(fresh, memory_too_big, API_TIMEOUT, "memory beyond the module's max_memory_mb fails with E2BIG")
{
	long max_mb = ioctl(self->fd, SHADOWVM_CHECK_CAP, SHADOWVM_CAP_MAX_MEMORY_MB);
	struct shadowvm_memory m = { .size = ((uint64_t)max_mb + 1) << 20 };

	ASSERT_LT(0, max_mb) TH_LOG("CHECK_CAP MAX_MEMORY_MB: %ld errno %s", max_mb, strerror(errno));
	ASSERT_ERRNO(ioctl(self->fd, SHADOWVM_SET_MEMORY, &m), E2BIG);
}

/* The value of "<key> <n>" (format: "key: %llu" style) in a /proc file; 0 if absent. */
static unsigned long long proc_value(const char *path, const char *format)
{
	FILE *f = fopen(path, "r");
	char line[128];
	unsigned long long v = 0;

	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, format, &v) == 1)
			break;
	if (f)
		fclose(f);
	return v;
}

SVM_TEST(fresh, memory_beyond_host, API_TIMEOUT,
	 "memory within max_memory_mb but beyond what the host has: ENOMEM, and no OOM kill")
{
	long max_mb = ioctl(self->fd, SHADOWVM_CHECK_CAP, SHADOWVM_CAP_MAX_MEMORY_MB);
	uint64_t avail = proc_value("/proc/meminfo", "MemAvailable: %llu kB") << 10;
	uint64_t size = (avail * 2 + (64u << 20)) & ~0xfffffull;
	unsigned long long kills = proc_value("/proc/vmstat", "oom_kill %llu");
	struct shadowvm_memory m = { .size = size };

	ASSERT_NE(0ull, avail) TH_LOG("no MemAvailable in /proc/meminfo");
	if ((uint64_t)max_mb << 20 < size)
		SKIP(return, "max_memory_mb (%ld) is below twice the host's available memory", max_mb);
	/* Guest RAM is in no process's RSS: the OOM killer would pick an unrelated victim. */
	ASSERT_ERRNO(ioctl(self->fd, SHADOWVM_SET_MEMORY, &m), ENOMEM);
	ASSERT_EQ(kills, proc_value("/proc/vmstat", "oom_kill %llu")) TH_LOG("the OOM killer ran");
	m.size = MEM_SIZE;
	ASSERT_EQ(0, ioctl(self->fd, SHADOWVM_SET_MEMORY, &m)) TH_LOG("errno %s", strerror(errno));
}

SVM_TEST(fresh, set_memory, API_TIMEOUT, "SET_MEMORY 16 MiB")
{
	struct shadowvm_memory m = { .size = MEM_SIZE };

	ASSERT_EQ(0, ioctl(self->fd, SHADOWVM_SET_MEMORY, &m)) TH_LOG("errno %s", strerror(errno));
}

SVM_TEST(with_memory, set_memory_twice, API_TIMEOUT, "a second SET_MEMORY fails with EEXIST")
{
	struct shadowvm_memory m = { .size = MEM_SIZE };

	ASSERT_ERRNO(ioctl(self->fd, SHADOWVM_SET_MEMORY, &m), EEXIST);
}

SVM_TEST(with_memory, private_mapping, API_TIMEOUT, "a private mapping of guest memory fails with EINVAL")
{
	void *p = mmap(NULL, MEM_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE, self->fd, 0);

	ASSERT_TRUE(p == MAP_FAILED && errno == EINVAL)
		TH_LOG("mmap returned %p errno %s", p, strerror(errno));
}

SVM_TEST(with_memory, mapping_beyond_memory, API_TIMEOUT, "a mapping beyond guest memory fails with EINVAL")
{
	void *p = mmap(NULL, 2 * MEM_SIZE, PROT_READ, MAP_SHARED, self->fd, 0);

	ASSERT_TRUE(p == MAP_FAILED && errno == EINVAL)
		TH_LOG("mmap returned %p errno %s", p, strerror(errno));
}

SVM_TEST(with_memory, create_vcpu, API_TIMEOUT, "CREATE_VCPU")
{
	ASSERT_EQ(0, ioctl(self->fd, SHADOWVM_CREATE_VCPU, 0)) TH_LOG("errno %s", strerror(errno));
}

SVM_TEST(with_memory, create_vcpu_twice, API_TIMEOUT, "a second CREATE_VCPU fails with EEXIST")
{
	ASSERT_EQ(0, ioctl(self->fd, SHADOWVM_CREATE_VCPU, 0)) TH_LOG("first CREATE_VCPU: %s", strerror(errno));
	ASSERT_ERRNO(ioctl(self->fd, SHADOWVM_CREATE_VCPU, 0), EEXIST);
}

/* ---- limits: max_vms_per_user (default 64) and max_vms (256, all users together) ---- */

/* Opens VMs until refused; returns how many, with the errno of the refusal in *err. */
static int open_all(int *fds, int max, int *err)
{
	int n = 0;

	*err = 0;
	while (n < max) {
		fds[n] = open(SHADOWVM_DEV, O_RDWR | O_CLOEXEC);
		if (fds[n] < 0) {
			*err = errno;
			break;
		}
		n++;
	}
	return n;
}

static void close_all(int *fds, int n)
{
	while (n > 0)
		close(fds[--n]);
}

SVM_TEST(device, per_user_vm_limit, API_TIMEOUT,
	 "a user's 65th VM at once fails with EMFILE (max_vms_per_user=64)")
{
	int fds[256], n, err;

	n = open_all(fds, 256, &err);
	close_all(fds, n);
	ASSERT_TRUE(n == 64 && err == EMFILE) TH_LOG("opened %d, then errno %d (%s)", n, err, strerror(err));
}

SVM_TEST(device, other_user_own_share, API_TIMEOUT,
	 "meanwhile another user opens its own 64 VMs, then gets EMFILE")
{
	int fds[256], n, err, pipefd[2], report[2] = { -1, 0 };
	struct stat st;
	pid_t pid;

	n = open_all(fds, 256, &err);	/* this user holds all of its share */
	int chmod_rc = chmod(SHADOWVM_DEV, 0666), chmod_err = errno;
	stat(SHADOWVM_DEV, &st);
	ASSERT_EQ(0, pipe(pipefd)) TH_LOG("pipe: %s", strerror(errno));
	pid = fork();
	if (pid == 0) {
		int mine[256], e, got;
		if (setgid(65534) || setuid(65534))
			_exit(1);
		got = open_all(mine, 256, &e);
		int rep[2] = { got, e };
		if (write(pipefd[1], rep, sizeof(rep)) != sizeof(rep))
			_exit(1);
		_exit(0);
	}
	if (read(pipefd[0], report, sizeof(report)) != sizeof(report))
		report[0] = -1;
	waitpid(pid, NULL, 0);
	close(pipefd[0]);
	close(pipefd[1]);
	chmod(SHADOWVM_DEV, 0600);
	close_all(fds, n);
	ASSERT_TRUE(report[0] == 64 && report[1] == EMFILE)
		TH_LOG("uid 65534 opened %d, then errno %d (%s); chmod 0666: rc %d errno %d, mode now %o",
		       report[0], report[1], strerror(report[1]), chmod_rc, chmod_err, st.st_mode & 07777);
}

SVM_TEST(device, closing_frees_slots, API_TIMEOUT, "closing them frees the slots")
{
	int fds[256], n, err, fd;

	n = open_all(fds, 256, &err);
	close_all(fds, n);
	fd = open(SHADOWVM_DEV, O_RDWR | O_CLOEXEC);
	ASSERT_LE(0, fd) TH_LOG("open: %s (after %d VMs, then errno %d)", strerror(errno), n, err);
	close(fd);
}

/* ---- register state validation ---- */

SVM_TEST(vm, rflags_reserved, API_TIMEOUT, "SET_REGS with a reserved RFLAGS bit fails with EINVAL")
{
	struct shadowvm_regs regs;

	ioctl(self->vm.fd, SHADOWVM_GET_REGS, &regs);
	regs.rflags |= 1ull << 3; /* reserved */
	ASSERT_ERRNO(ioctl(self->vm.fd, SHADOWVM_SET_REGS, &regs), EINVAL);
}

SVM_TEST(vm, sregs_round_trip, API_TIMEOUT, "GET_SREGS then SET_SREGS round-trips")
{
	struct shadowvm_sregs sregs;

	ASSERT_TRUE(ioctl(self->vm.fd, SHADOWVM_GET_SREGS, &sregs) == 0 &&
		    ioctl(self->vm.fd, SHADOWVM_SET_SREGS, &sregs) == 0) TH_LOG("errno %s", strerror(errno));
}

/* SET_SREGS of the current state changed by `change`, which must fail with EINVAL. */
#define ASSERT_SREGS_EINVAL(change)                                                      \
	do {                                                                             \
		struct shadowvm_sregs bad;                                               \
		ASSERT_EQ(0, ioctl(self->vm.fd, SHADOWVM_GET_SREGS, &bad))               \
			TH_LOG("GET_SREGS: %s", strerror(errno));                        \
		change;                                                                  \
		ASSERT_ERRNO(ioctl(self->vm.fd, SHADOWVM_SET_SREGS, &bad), EINVAL);      \
	} while (0)

SVM_TEST(vm, real_mode, API_TIMEOUT, "SET_SREGS with CR0.PE=0 (real mode) fails with EINVAL")
{
	ASSERT_SREGS_EINVAL(bad.cr0 &= ~1ull);
}

SVM_TEST(vm, cr4_vmxe, API_TIMEOUT, "SET_SREGS with CR4.VMXE fails with EINVAL")
{
	ASSERT_SREGS_EINVAL(bad.cr4 |= 1ull << 13);
}

SVM_TEST(vm, efer_lma_without_paging, API_TIMEOUT,
	 "SET_SREGS with EFER.LMA inconsistent with CR0.PG fails with EINVAL")
{
	ASSERT_SREGS_EINVAL(bad.efer |= 1ull << 10);
}

SVM_TEST(vm, cs_not_present, API_TIMEOUT, "SET_SREGS with a non-present CS fails with EINVAL")
{
	ASSERT_SREGS_EINVAL(bad.cs.present = 0);
}

/* ---- small guests ---- */

/*
 * The window keeps the guest's segment fields in the VMCS from one RUN to the next and
 * rewrites them only when the state changed: a SET_SREGS between two RUNs must still take
 * effect. The guest reads through DS before and after userspace moves DS's base.
 */
SVM_TEST(vm, sregs_between_runs, API_TIMEOUT,
	 "SET_SREGS between two RUNs (DS base moved) takes effect in the next RUN and GET_SREGS returns it")
{
	/* mov eax, [0x3000]; out 0x80, al; mov ebx, [0x3000]; hlt */
	static const uint8_t code[] = { 0xa1, 0x00, 0x30, 0x00, 0x00, 0xe6, 0x80,
					0x8b, 0x1d, 0x00, 0x30, 0x00, 0x00, 0xf4 };
	const uint32_t before = 0x11111111u, after = 0x22222222u;
	struct vm *vm = &self->vm;
	struct shadowvm_sregs sregs;
	struct shadowvm_regs regs;
	int r;

	memcpy(vm->mem + CODE, code, sizeof(code));
	memcpy(vm->mem + 0x3000, &before, sizeof(before));
	memcpy(vm->mem + 0x5000, &after, sizeof(after));
	r = vm_run(vm);
	ASSERT_TRUE(r == SHADOWVM_EXIT_IO && vm->run->exit.io.port == 0x80) TH_LOG("exit %d", r);
	ASSERT_EQ(0, ioctl(vm->fd, SHADOWVM_GET_SREGS, &sregs)) TH_LOG("GET_SREGS: %s", strerror(errno));
	ASSERT_EQ(0ULL, sregs.ds.base) TH_LOG("DS base %#llx", (unsigned long long)sregs.ds.base);
	sregs.ds.base = 0x2000;
	ASSERT_EQ(0, ioctl(vm->fd, SHADOWVM_SET_SREGS, &sregs)) TH_LOG("SET_SREGS: %s", strerror(errno));
	r = vm_run(vm);
	ASSERT_EQ(0, ioctl(vm->fd, SHADOWVM_GET_REGS, &regs)) TH_LOG("GET_REGS: %s", strerror(errno));
	ASSERT_EQ(0, ioctl(vm->fd, SHADOWVM_GET_SREGS, &sregs)) TH_LOG("GET_SREGS: %s", strerror(errno));
	ASSERT_TRUE(r == SHADOWVM_EXIT_HLT && (uint32_t)regs.rax == before && (uint32_t)regs.rbx == after &&
		    sregs.ds.base == 0x2000)
		TH_LOG("exit %d, EAX %#x (want %#x), EBX %#x (want %#x), DS base %#llx", r,
		       (uint32_t)regs.rax, before, (uint32_t)regs.rbx, after,
		       (unsigned long long)sregs.ds.base);
}


/* mov al, 'A'; out 0x80, al; in al, 0x81; hlt */
static const uint8_t io_hlt[] = { 0xb0, 0x41, 0xe6, 0x80, 0xe4, 0x81, 0xf4 };

/* Runs io_hlt to its OUT exit, checked. */
#define RUN_TO_OUT(vm)                                                                           \
	do {                                                                                     \
		int __r;                                                                         \
		memcpy((vm)->mem + CODE, io_hlt, sizeof(io_hlt));                                \
		__r = vm_run(vm);                                                                \
		ASSERT_TRUE(__r == SHADOWVM_EXIT_IO && (vm)->run->exit.io.direction == SHADOWVM_IO_OUT && \
			    (vm)->run->exit.io.port == 0x80 && (vm)->run->exit.io.size == 1 &&   \
			    (vm)->run->exit.io.data == 0x41)                                     \
			TH_LOG("exit %d dir %u port %#x size %u data %#llx", __r,                 \
			       (vm)->run->exit.io.direction, (vm)->run->exit.io.port,            \
			       (vm)->run->exit.io.size, (unsigned long long)(vm)->run->exit.io.data); \
	} while (0)

/* Runs io_hlt past its IN exit, checked. */
#define RUN_TO_IN(vm)                                                                            \
	do {                                                                                     \
		int __r;                                                                         \
		RUN_TO_OUT(vm);                                                                  \
		__r = vm_run(vm);                                                                \
		ASSERT_TRUE(__r == SHADOWVM_EXIT_IO && (vm)->run->exit.io.direction == SHADOWVM_IO_IN && \
			    (vm)->run->exit.io.port == 0x81) TH_LOG("exit %d", __r);             \
	} while (0)

/* Runs io_hlt to HLT with 0x5a as the IN data, checked. */
#define RUN_TO_HLT(vm)                                                                           \
	do {                                                                                     \
		struct shadowvm_regs __regs;                                                     \
		int __r;                                                                         \
		RUN_TO_IN(vm);                                                                   \
		(vm)->run->exit.io.data = 0x5a;                                                  \
		__r = vm_run(vm);                                                                \
		ioctl((vm)->fd, SHADOWVM_GET_REGS, &__regs);                                     \
		ASSERT_TRUE(__r == SHADOWVM_EXIT_HLT && (__regs.rax & 0xff) == 0x5a &&           \
			    __regs.rip == CODE + sizeof(io_hlt))                                 \
			TH_LOG("exit %d rax %#llx rip %#llx", __r, (unsigned long long)__regs.rax, \
			       (unsigned long long)__regs.rip);                                  \
	} while (0)

SVM_TEST(vm, io_out_exit, API_TIMEOUT, "a guest OUT exits to userspace with port, size and data")
{
	RUN_TO_OUT(&self->vm);
}

SVM_TEST(vm, io_in_exit, API_TIMEOUT, "a guest IN exits to userspace")
{
	RUN_TO_IN(&self->vm);
}

SVM_TEST(vm, io_in_data_then_hlt, API_TIMEOUT, "the IN data reaches AL; HLT exits with RIP after it")
{
	RUN_TO_HLT(&self->vm);
}

SVM_TEST(vm, immediate_exit, API_TIMEOUT, "immediate_exit makes RUN return EINTR with exit INTR")
{
	struct vm *vm = &self->vm;
	int r;

	memcpy(vm->mem + CODE, guest_hlt, sizeof(guest_hlt));
	vm->run->immediate_exit = 1;
	errno = 0;
	r = ioctl(vm->fd, SHADOWVM_RUN, 0);
	ASSERT_TRUE(r == -1 && errno == EINTR && vm->run->exit_reason == SHADOWVM_EXIT_INTR)
		TH_LOG("rc %d errno %s exit %u", r, strerror(errno), vm->run->exit_reason);
}

/*
 * Triple fault through shadowvm's own event merging: 32-bit paging maps only the first
 * 4 MiB and the IDT lies above it (the library's safe state). UD2 -> reading the #UD gate
 * faults: #PF exit with the #UD being delivered -> the #PF is the guest's -> reading its
 * gate faults -> #PF during #PF = #DF -> reading the #DF gate faults -> triple fault ->
 * SHUTDOWN. (A plain empty IDT would triple-fault inside the CPU, which Bochs 2.7 turns
 * into a machine shutdown instead of a VM exit.)
 */
SVM_TEST(vm, triple_fault, API_TIMEOUT,
	 "faults while delivering UD, PF and DF end in a triple fault (SHUTDOWN)")
{
	static const uint8_t ud2[] = { 0x0f, 0x0b };
	struct shadowvm_sregs sregs;
	int r;

	vm_load_code(&self->vm, ud2, sizeof(ud2));
	r = vm_safe_sregs(self->vm.fd, &sregs);
	if (r == 0)
		r = vm_run(&self->vm);
	ASSERT_EQ(SHADOWVM_EXIT_SHUTDOWN, r) TH_LOG("exit %d errno %s", r, strerror(errno));
}

SVM_TEST(vm, stats_no_room, API_TIMEOUT, "GET_STATS with no room fails with E2BIG and the count")
{
	struct shadowvm_stats st = { 0 };
	int r;

	errno = 0;
	r = ioctl(self->vm.fd, SHADOWVM_GET_STATS, &st);
	ASSERT_TRUE(r == -1 && errno == E2BIG && st.count > 0)
		TH_LOG("rc %d errno %s count %u", r, strerror(errno), st.count);
}

SVM_TEST(vm, stats_exits_by_reason, API_TIMEOUT, "GET_STATS lists the exits by reason (exits.hlt = 1)")
{
	struct shadowvm_stats st = { 0 };
	struct shadowvm_stat_entry *e;
	int r, found = 0;

	RUN_TO_HLT(&self->vm);
	ioctl(self->vm.fd, SHADOWVM_GET_STATS, &st);
	ASSERT_LT(0u, st.count) TH_LOG("no count: %s", strerror(errno));
	e = calloc(st.count, sizeof(*e));
	st.entries = (uintptr_t)e;
	r = ioctl(self->vm.fd, SHADOWVM_GET_STATS, &st);
	for (unsigned int i = 0; r == 0 && i < st.count; i++)
		found += !strcmp(e[i].name, "exits.hlt") && e[i].value == 1;
	free(e);
	ASSERT_TRUE(r == 0 && found == 1) TH_LOG("rc %d found %d", r, found);
}

/* ---- threads ---- */

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

/* Two VMs from lib/vm.c. */
FIXTURE(two_vms) {
	struct vm vm, vm2;
};

FIXTURE_SETUP(two_vms)
{
	self->vm = (struct vm)VM_NONE;
	self->vm2 = (struct vm)VM_NONE;
	signal(SIGUSR1, on_signal);
	ASSERT_TRUE(vm_create_reset(&self->vm, MEM_SIZE) == 0 && vm_create_reset(&self->vm2, MEM_SIZE) == 0)
		TH_LOG("setup: %s", strerror(errno));
}

FIXTURE_TEARDOWN(two_vms)
{
	vm_destroy(&self->vm);
	vm_destroy(&self->vm2);
}

SVM_TEST(two_vms, two_vms_at_once, API_TIMEOUT, "two VMs at once")
{
	/* The fixture's setup is the check. */
}

SVM_TEST(two_vms, second_vm_runs, API_TIMEOUT, "the second VM runs while the first exists")
{
	int r;

	memcpy(self->vm.mem + CODE, guest_loop, sizeof(guest_loop));
	memcpy(self->vm2.mem + CODE, guest_hlt, sizeof(guest_hlt));
	r = vm_run(&self->vm2);
	ASSERT_EQ(SHADOWVM_EXIT_HLT, r) TH_LOG("exit %d", r);
}

SVM_TEST(two_vms, close_during_run, API_TIMEOUT,
	 "close while another thread is in RUN: RUN ends, the thread sees EBADF")
{
	struct vm *vm = &self->vm;
	struct timespec t0, t1;
	pthread_t th;
	void *ret;

	memcpy(vm->mem + CODE, guest_loop, sizeof(guest_loop));
	memcpy(self->vm2.mem + CODE, guest_hlt, sizeof(guest_hlt));
	ASSERT_EQ(SHADOWVM_EXIT_HLT, vm_run(&self->vm2));
	pthread_create(&th, NULL, spin, vm);
	usleep(300 * 1000);
	pthread_kill(th, SIGUSR1);
	usleep(100 * 1000);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	/* Close every reference while the other thread is (most likely) inside RUN. */
	munmap(vm->mem, MEM_SIZE);
	munmap(vm->run, SHADOWVM_RUN_MMAP_SIZE);
	close(vm->fd);
	vm->mem = MAP_FAILED;
	vm->run = MAP_FAILED;
	pthread_join(th, &ret);
	vm->fd = -1;
	clock_gettime(CLOCK_MONOTONIC, &t1);
	ASSERT_TRUE((intptr_t)ret == EBADF && t1.tv_sec - t0.tv_sec < 10)
		TH_LOG("thread ended with errno %ld after %ld s", (long)(intptr_t)ret,
		       (long)(t1.tv_sec - t0.tv_sec));
}

/*
 * PAE paging loads the four PDPTEs with CR3 (here: with SET_SREGS). Reserved bits in one
 * refuse the state; once loaded, changing them in memory changes nothing until CR3 is
 * written again, so the guest runs on what was loaded and never without a shadow root.
 */
static void pae_setup(struct vm *vm, struct shadowvm_sregs *sregs)
{
	uint64_t *pd = (uint64_t *)(vm->mem + 0x4000);

	pd[0] = 0x83;			/* 2 MiB page at 0, present, writable */
	memcpy(vm->mem + CODE, guest_hlt, sizeof(guest_hlt));
	ioctl(vm->fd, SHADOWVM_GET_SREGS, sregs);
	sregs->cr4 |= 1 << 5;		/* PAE */
	sregs->cr0 |= 1u << 31;		/* PG */
	sregs->cr3 = 0x3000;
}

SVM_TEST(vm, pae_pdpte_reserved, API_TIMEOUT,
	 "SET_SREGS with PAE paging and a reserved bit in a PDPTE fails with EINVAL")
{
	uint64_t *pdpt = (uint64_t *)(self->vm.mem + 0x3000);
	struct shadowvm_sregs sregs;

	pae_setup(&self->vm, &sregs);
	pdpt[0] = 0x4001 | 1 << 1;	/* bit 1 is reserved in a PDPTE */
	ASSERT_ERRNO(ioctl(self->vm.fd, SHADOWVM_SET_SREGS, &sregs), EINVAL);
}

SVM_TEST(vm, pae_pdptes_loaded, API_TIMEOUT,
	 "PDPTEs are loaded with the registers: changing them in memory afterwards does not matter")
{
	uint64_t *pdpt = (uint64_t *)(self->vm.mem + 0x3000);
	struct shadowvm_sregs sregs;
	struct shadowvm_regs regs;
	struct vm *vm = &self->vm;
	int r;

	pae_setup(vm, &sregs);
	pdpt[0] = 0x4001;
	r = ioctl(vm->fd, SHADOWVM_SET_SREGS, &sregs);
	pdpt[0] = 0x4001 | 1 << 1;	/* changed after loading: no effect before a CR3 write */
	ioctl(vm->fd, SHADOWVM_GET_REGS, &regs);
	regs.rip = CODE;
	if (r == 0)
		r = ioctl(vm->fd, SHADOWVM_SET_REGS, &regs);
	if (r == 0)
		r = vm_run(vm);
	ASSERT_EQ(SHADOWVM_EXIT_HLT, r)
		TH_LOG("exit %d (fail_entry reason %#llx qual %llu) errno %s", r,
		       (unsigned long long)vm->run->exit.fail_entry.hardware_entry_failure_reason,
		       (unsigned long long)vm->run->exit.fail_entry.exit_qualification, strerror(errno));
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
SVM_TEST(vm, immediate_exit_race, API_TIMEOUT,
	 "immediate_exit set by another thread during RUN stops the next RUN (not overwritten)")
{
	struct vm *vm = &self->vm;
	void *ret = (void *)-1;
	pthread_t th;
	int done = 0;

	signal(SIGUSR1, on_signal);
	memcpy(vm->mem + CODE, guest_loop, sizeof(guest_loop));
	pthread_create(&th, NULL, run_until_eintr, vm);
	usleep(250 * 1000);
	vm->run->immediate_exit = 1;
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
	ASSERT_TRUE(done && (intptr_t)ret == SHADOWVM_INTR_IMMEDIATE_EXIT && vm->run->immediate_exit == 1)
		TH_LOG("stopped by itself: %s, cause %ld, immediate_exit now %u", done ? "yes" : "no",
		       (long)(intptr_t)ret, vm->run->immediate_exit);
}

/*
 * A VM exit loads null FS/GS selectors; the task's own must be back when RUN returns
 * (a 32-bit task keeps its TLS in one).
 */
SVM_TEST(vm, host_gs_kept, API_TIMEOUT, "the task's GS selector is the same after RUN")
{
	const uint16_t user_ds = 0x2b;	/* __USER_DS: a valid GS value for any task */
	uint16_t gs = 0;
	int r;

	memcpy(self->vm.mem + CODE, guest_hlt, sizeof(guest_hlt));
	__asm__ volatile("mov %0, %%gs" :: "r"(user_ds));
	r = vm_run(&self->vm);
	__asm__ volatile("mov %%gs, %0" : "=r"(gs));
	__asm__ volatile("mov %0, %%gs" :: "r"((uint16_t)0));
	ASSERT_TRUE(r == SHADOWVM_EXIT_HLT && gs == user_ds)
		TH_LOG("exit %d, GS %#x (want %#x)", r, gs, user_ds);
}

/* ---- ABI v2 (issue 11): version, CHECK_CAP, memory slots, FPU state ---- */

SVM_TEST(fresh, api_version_2, API_TIMEOUT, "GET_API_VERSION answers 2 (ABI v2)")
{
	ASSERT_EQ(2, ioctl(self->fd, SHADOWVM_GET_API_VERSION, 0)) TH_LOG("errno %s", strerror(errno));
}

SVM_TEST(vm, run_version_2, API_TIMEOUT, "the run structure says version 2 and its size")
{
	ASSERT_TRUE(self->vm.run->version == 2 && self->vm.run->size == sizeof(struct shadowvm_run))
		TH_LOG("version %u size %u", self->vm.run->version, self->vm.run->size);
}

/*
 * The module parameter max_memory_mb: from sysfs where the kernel shows it (Rust module
 * parameters are not in sysfs in 7.2), else its default, which the suites load with.
 */
static long max_memory_mb_param(void)
{
	FILE *f = fopen("/sys/module/shadowvm/parameters/max_memory_mb", "r");
	long v = 16384;

	if (f) {
		if (fscanf(f, "%ld", &v) != 1)
			v = -1;
		fclose(f);
	}
	return v;
}

SVM_TEST(fresh, check_cap_values, API_TIMEOUT,
	 "CHECK_CAP: 8 memory slots, MAX_MEMORY_MB = the max_memory_mb parameter, FPU = 1")
{
	long slots = ioctl(self->fd, SHADOWVM_CHECK_CAP, SHADOWVM_CAP_MEMORY_SLOTS);
	long max_mb = ioctl(self->fd, SHADOWVM_CHECK_CAP, SHADOWVM_CAP_MAX_MEMORY_MB);
	long fpu = ioctl(self->fd, SHADOWVM_CHECK_CAP, SHADOWVM_CAP_FPU);
	long param = max_memory_mb_param();

	ASSERT_TRUE(slots == SHADOWVM_MEMORY_SLOTS && max_mb == param && max_mb >= 4096 && fpu == 1)
		TH_LOG("slots %ld, max_memory_mb %ld (parameter %ld), fpu %ld", slots, max_mb, param, fpu);
}

SVM_TEST(fresh, check_cap_unknown, API_TIMEOUT, "CHECK_CAP of an unknown capability fails with EINVAL")
{
	ASSERT_ERRNO(ioctl(self->fd, SHADOWVM_CHECK_CAP, 0), EINVAL);
	ASSERT_ERRNO(ioctl(self->fd, SHADOWVM_CHECK_CAP, 0x7fffffffUL), EINVAL);
	ASSERT_ERRNO(ioctl(self->fd, SHADOWVM_CHECK_CAP, (1UL << 32) | SHADOWVM_CAP_FPU), EINVAL);
}

/* SET_MEMORY_REGION of slot `slot` at `gpa`, `size` bytes; the ioctl's return value. */
static int set_region(int fd, uint32_t slot, uint64_t gpa, uint64_t size)
{
	struct shadowvm_memory_region r = { .slot = slot, .guest_phys_addr = gpa, .size = size };

	return ioctl(fd, SHADOWVM_SET_MEMORY_REGION, &r);
}

#define SLOT_SIZE (2u << 20)
#define HIGH_GPA (4ull << 30)

SVM_TEST(fresh, region_bad_slot, API_TIMEOUT, "SET_MEMORY_REGION with slot id 8 (or more) fails with EINVAL")
{
	ASSERT_ERRNO(set_region(self->fd, SHADOWVM_MEMORY_SLOTS, 0, SLOT_SIZE), EINVAL);
	ASSERT_ERRNO(set_region(self->fd, 0xffffffffu, 0, SLOT_SIZE), EINVAL);
}

SVM_TEST(fresh, region_null, API_TIMEOUT, "SET_MEMORY_REGION with a NULL pointer fails with EFAULT")
{
	ASSERT_ERRNO(ioctl(self->fd, SHADOWVM_SET_MEMORY_REGION, NULL), EFAULT);
}

SVM_TEST(fresh, region_size_zero, API_TIMEOUT, "SET_MEMORY_REGION with size 0 (no deletion in v2) fails with EINVAL")
{
	ASSERT_ERRNO(set_region(self->fd, 0, 0, 0), EINVAL);
}

SVM_TEST(fresh, region_unaligned, API_TIMEOUT, "SET_MEMORY_REGION with an unaligned address or size fails with EINVAL")
{
	ASSERT_ERRNO(set_region(self->fd, 0, 0x800, SLOT_SIZE), EINVAL);
	ASSERT_ERRNO(set_region(self->fd, 0, 0, SLOT_SIZE + 1), EINVAL);
}

SVM_TEST(fresh, region_flags, API_TIMEOUT, "SET_MEMORY_REGION with nonzero flags fails with EINVAL")
{
	struct shadowvm_memory_region r = { .slot = 0, .flags = 1, .size = SLOT_SIZE };

	ASSERT_ERRNO(ioctl(self->fd, SHADOWVM_SET_MEMORY_REGION, &r), EINVAL);
}

SVM_TEST(fresh, region_beyond_1tib, API_TIMEOUT,
	 "a slot reaching beyond 1 TiB (SHADOWVM_MEMORY_MAX, the run page's offset) or wrapping fails with EINVAL")
{
	ASSERT_ERRNO(set_region(self->fd, 0, SHADOWVM_MEMORY_MAX, 4096), EINVAL);
	ASSERT_ERRNO(set_region(self->fd, 0, SHADOWVM_MEMORY_MAX - 4096, 8192), EINVAL);
	ASSERT_ERRNO(set_region(self->fd, 0, ~0xfffull, 8192), EINVAL);
	/* The last page below the bound is fine. */
	ASSERT_EQ(0, set_region(self->fd, 1, SHADOWVM_MEMORY_MAX - 4096, 4096)) TH_LOG("errno %s", strerror(errno));
}

SVM_TEST(fresh, region_too_big, API_TIMEOUT,
	 "slots beyond max_memory_mb in total fail with E2BIG (one alone or together)")
{
	long max_mb = ioctl(self->fd, SHADOWVM_CHECK_CAP, SHADOWVM_CAP_MAX_MEMORY_MB);

	ASSERT_LT(0, max_mb) TH_LOG("CHECK_CAP: %s", strerror(errno));
	ASSERT_ERRNO(set_region(self->fd, 0, 0, ((uint64_t)max_mb + 1) << 20), E2BIG);
	ASSERT_EQ(0, set_region(self->fd, 0, 0, SLOT_SIZE)) TH_LOG("errno %s", strerror(errno));
	ASSERT_ERRNO(set_region(self->fd, 1, HIGH_GPA, (uint64_t)max_mb << 20), E2BIG);
}

SVM_TEST(fresh, region_overlap, API_TIMEOUT,
	 "an overlapping slot fails with EEXIST; an adjacent one is fine")
{
	ASSERT_EQ(0, set_region(self->fd, 0, SLOT_SIZE, SLOT_SIZE)) TH_LOG("errno %s", strerror(errno));
	ASSERT_ERRNO(set_region(self->fd, 1, SLOT_SIZE + 4096, 4096), EEXIST);
	ASSERT_ERRNO(set_region(self->fd, 1, 0, SLOT_SIZE + 4096), EEXIST);
	ASSERT_ERRNO(set_region(self->fd, 1, 0, 4 * SLOT_SIZE), EEXIST);
	ASSERT_EQ(0, set_region(self->fd, 1, 0, SLOT_SIZE)) TH_LOG("below: errno %s", strerror(errno));
	ASSERT_EQ(0, set_region(self->fd, 2, 2 * SLOT_SIZE, 4096)) TH_LOG("above: errno %s", strerror(errno));
}

SVM_TEST(fresh, region_set_twice, API_TIMEOUT,
	 "setting a slot again fails with EEXIST (also SET_MEMORY, which is slot 0)")
{
	struct shadowvm_memory m = { .size = SLOT_SIZE };

	ASSERT_EQ(0, set_region(self->fd, 0, HIGH_GPA, SLOT_SIZE)) TH_LOG("errno %s", strerror(errno));
	ASSERT_ERRNO(set_region(self->fd, 0, 0, SLOT_SIZE), EEXIST);
	ASSERT_ERRNO(ioctl(self->fd, SHADOWVM_SET_MEMORY, &m), EEXIST);
}

SVM_TEST(with_memory, set_memory_is_slot_0, API_TIMEOUT,
	 "SET_MEMORY is slot 0 at 0: that slot id is taken, other slots can follow")
{
	ASSERT_ERRNO(set_region(self->fd, 0, HIGH_GPA, SLOT_SIZE), EEXIST);
	ASSERT_ERRNO(set_region(self->fd, 1, MEM_SIZE - 4096, SLOT_SIZE), EEXIST);
	ASSERT_EQ(0, set_region(self->fd, 1, MEM_SIZE, SLOT_SIZE)) TH_LOG("errno %s", strerror(errno));
}

/* mmap of `len` bytes at file offset (= guest-physical address) `gpa`: 0 if it worked. */
static int map_errno(int fd, uint64_t gpa, size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, gpa);

	if (p == MAP_FAILED)
		return errno;
	munmap(p, len);
	return 0;
}

SVM_TEST(fresh, mmap_slots, API_TIMEOUT,
	 "mmap: inside one slot works; across two adjacent slots, in a hole or past a slot's end fails with EINVAL")
{
	ASSERT_EQ(0, set_region(self->fd, 0, 0, SLOT_SIZE));
	ASSERT_EQ(0, set_region(self->fd, 1, SLOT_SIZE, SLOT_SIZE));
	ASSERT_EQ(0, set_region(self->fd, 2, HIGH_GPA, SLOT_SIZE));
	ASSERT_EQ(0, map_errno(self->fd, 0, SLOT_SIZE));
	ASSERT_EQ(0, map_errno(self->fd, SLOT_SIZE + 4096, 4096));
	ASSERT_EQ(0, map_errno(self->fd, HIGH_GPA, SLOT_SIZE));
	ASSERT_EQ(EINVAL, map_errno(self->fd, 0, 2 * SLOT_SIZE));		/* across slots 0 and 1 */
	ASSERT_EQ(EINVAL, map_errno(self->fd, SLOT_SIZE - 4096, 8192));	/* across slots 0 and 1 */
	ASSERT_EQ(EINVAL, map_errno(self->fd, 2 * SLOT_SIZE, 4096));	/* hole */
	ASSERT_EQ(EINVAL, map_errno(self->fd, HIGH_GPA - 4096, 8192));	/* hole, then slot 2 */
	ASSERT_EQ(EINVAL, map_errno(self->fd, HIGH_GPA + 4096, SLOT_SIZE));	/* past slot 2's end */
}

SVM_TEST(fresh, create_vcpu_needs_a_slot, API_TIMEOUT,
	 "CREATE_VCPU needs a slot, any one (here only a slot above 4 GiB)")
{
	ASSERT_ERRNO(ioctl(self->fd, SHADOWVM_CREATE_VCPU, 0), EINVAL);
	ASSERT_EQ(0, set_region(self->fd, 3, HIGH_GPA, SLOT_SIZE));
	ASSERT_EQ(0, ioctl(self->fd, SHADOWVM_CREATE_VCPU, 0)) TH_LOG("errno %s", strerror(errno));
}

/*
 * A guest with 2 MiB at 0 and 2 MiB at 4 GiB, through PAE paging (PDPT at 0x3000, PD at
 * 0x4000, 2 MiB pages): linear 0 -> gpa 0, linear 2 MiB -> gpa 4 GiB (the high slot),
 * linear 4 MiB -> gpa 2 MiB (a hole between the slots).
 */
FIXTURE(two_slots) {
	int fd;
	uint8_t *low, *high;
	struct shadowvm_run *run;
};

FIXTURE_SETUP(two_slots)
{
	uint64_t *pdpt, *pd;
	struct shadowvm_regs regs = { .rip = CODE, .rflags = 2, .rsp = GUEST_STACK };
	struct shadowvm_sregs s;

	self->low = self->high = MAP_FAILED;
	self->run = MAP_FAILED;
	self->fd = open(SHADOWVM_DEV, O_RDWR | O_CLOEXEC);
	ASSERT_LE(0, self->fd) TH_LOG("open: %s", strerror(errno));
	ASSERT_EQ(0, set_region(self->fd, 0, 0, SLOT_SIZE)) TH_LOG("slot 0: %s", strerror(errno));
	ASSERT_EQ(0, set_region(self->fd, 1, HIGH_GPA, SLOT_SIZE)) TH_LOG("slot 1: %s", strerror(errno));
	ASSERT_EQ(0, ioctl(self->fd, SHADOWVM_CREATE_VCPU, 0)) TH_LOG("CREATE_VCPU: %s", strerror(errno));
	self->low = mmap(NULL, SLOT_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, self->fd, 0);
	self->high = mmap(NULL, SLOT_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, self->fd, HIGH_GPA);
	self->run = mmap(NULL, SHADOWVM_RUN_MMAP_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, self->fd,
			 SHADOWVM_RUN_MMAP_OFFSET);
	ASSERT_TRUE(self->low != MAP_FAILED && self->high != MAP_FAILED && self->run != MAP_FAILED)
		TH_LOG("mmap: %s", strerror(errno));
	pdpt = (uint64_t *)(self->low + 0x3000);
	pd = (uint64_t *)(self->low + 0x4000);
	pdpt[0] = 0x4001;
	pd[0] = 0x83;			/* 2 MiB page: gpa 0 */
	pd[1] = HIGH_GPA | 0x83;	/* gpa 4 GiB */
	pd[2] = SLOT_SIZE | 0x83;	/* gpa 2 MiB: no slot */
	ASSERT_EQ(0, ioctl(self->fd, SHADOWVM_SET_REGS, &regs)) TH_LOG("SET_REGS: %s", strerror(errno));
	ASSERT_EQ(0, ioctl(self->fd, SHADOWVM_GET_SREGS, &s));
	s.cr4 |= 1 << 5;		/* PAE */
	s.cr4 |= 1 << 9;		/* OSFXSR: SSE for the FPU test */
	s.cr0 |= 1u << 31;		/* PG */
	s.cr3 = 0x3000;
	/* Unmapped, as in the library's safe state: a guest fault ends in SHUTDOWN. */
	s.idt.base = GUEST_IDT;
	s.idt.limit = 0x7ff;
	ASSERT_EQ(0, ioctl(self->fd, SHADOWVM_SET_SREGS, &s)) TH_LOG("SET_SREGS: %s", strerror(errno));
}

FIXTURE_TEARDOWN(two_slots)
{
	if (self->low != MAP_FAILED)
		munmap(self->low, SLOT_SIZE);
	if (self->high != MAP_FAILED)
		munmap(self->high, SLOT_SIZE);
	if (self->run != MAP_FAILED)
		munmap(self->run, SHADOWVM_RUN_MMAP_SIZE);
	if (self->fd >= 0)
		close(self->fd);
}

/* RUN until an exit other than a time slice; the exit reason or -errno. */
static int run_fd(int fd, struct shadowvm_run *run)
{
	for (int i = 0; i < 1000; i++) {
		if (ioctl(fd, SHADOWVM_RUN, 0))
			return -errno;
		if (run->exit_reason != SHADOWVM_EXIT_INTR)
			return run->exit_reason;
	}
	return -ETIMEDOUT;
}

SVM_TEST(two_slots, high_slot_guest, API_TIMEOUT,
	 "a guest reads and writes a slot at 4 GiB through its page tables; the hole below is MMIO")
{
	static const uint8_t code[] = {
		0xa1, 0x00, 0x00, 0x20, 0x00,			/* mov eax, [0x200000] */
		0xe7, 0x80,					/* out 0x80, eax */
		0xc7, 0x05, 0x04, 0x00, 0x20, 0x00,		/* mov dword [0x200004], */
		0x78, 0x56, 0x34, 0x12,				/*     0x12345678 */
		0x8b, 0x0d, 0x00, 0x00, 0x40, 0x00,		/* mov ecx, [0x400000] */
		0xf4,						/* hlt */
	};
	struct shadowvm_regs regs;
	int r;

	memcpy(self->low + CODE, code, sizeof(code));
	*(uint32_t *)self->high = 0xfeedbeef;
	r = run_fd(self->fd, self->run);
	ASSERT_TRUE(r == SHADOWVM_EXIT_IO && self->run->exit.io.port == 0x80 &&
		    self->run->exit.io.size == 4 && self->run->exit.io.data == 0xfeedbeef)
		TH_LOG("exit %d port %#x data %#llx", r, self->run->exit.io.port,
		       (unsigned long long)self->run->exit.io.data);
	r = run_fd(self->fd, self->run);
	ASSERT_TRUE(r == SHADOWVM_EXIT_MMIO && self->run->exit.mmio.gpa == SLOT_SIZE &&
		    self->run->exit.mmio.len == 4 && !self->run->exit.mmio.is_write)
		TH_LOG("exit %d gpa %#llx len %u write %u", r, (unsigned long long)self->run->exit.mmio.gpa,
		       self->run->exit.mmio.len, self->run->exit.mmio.is_write);
	ASSERT_EQ(0x12345678u, *(uint32_t *)(self->high + 4));
	memcpy(self->run->exit.mmio.data, "\x11\x22\x33\x44", 4);
	r = run_fd(self->fd, self->run);
	ioctl(self->fd, SHADOWVM_GET_REGS, &regs);
	ASSERT_TRUE(r == SHADOWVM_EXIT_HLT && (uint32_t)regs.rcx == 0x44332211)
		TH_LOG("exit %d rcx %#llx", r, (unsigned long long)regs.rcx);
}

SVM_TEST(two_slots, slot_added_after_vcpu, API_TIMEOUT,
	 "a slot added after the guest ran turns MMIO there into RAM")
{
	static const uint8_t code[] = {
		0x8b, 0x0d, 0x00, 0x00, 0x40, 0x00,		/* mov ecx, [0x400000] */
		0xf4,						/* hlt */
	};
	struct shadowvm_regs regs;
	uint8_t *mid;
	int r;

	memcpy(self->low + CODE, code, sizeof(code));
	r = run_fd(self->fd, self->run);
	ASSERT_TRUE(r == SHADOWVM_EXIT_MMIO && self->run->exit.mmio.gpa == SLOT_SIZE) TH_LOG("exit %d", r);
	memset(self->run->exit.mmio.data, 0, 8);
	ASSERT_EQ(SHADOWVM_EXIT_HLT, run_fd(self->fd, self->run));
	ASSERT_EQ(0, set_region(self->fd, 2, SLOT_SIZE, SLOT_SIZE)) TH_LOG("errno %s", strerror(errno));
	mid = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, self->fd, SLOT_SIZE);
	ASSERT_NE(MAP_FAILED, mid) TH_LOG("mmap: %s", strerror(errno));
	*(uint32_t *)mid = 0xabcd0123;
	munmap(mid, 4096);
	ioctl(self->fd, SHADOWVM_GET_REGS, &regs);
	regs.rip = CODE;
	ASSERT_EQ(0, ioctl(self->fd, SHADOWVM_SET_REGS, &regs));
	r = run_fd(self->fd, self->run);
	ioctl(self->fd, SHADOWVM_GET_REGS, &regs);
	ASSERT_TRUE(r == SHADOWVM_EXIT_HLT && (uint32_t)regs.rcx == 0xabcd0123)
		TH_LOG("exit %d rcx %#llx", r, (unsigned long long)regs.rcx);
}

SVM_TEST(fresh, fpu_without_vcpu, API_TIMEOUT, "GET_FPU and SET_FPU without a vCPU fail with EINVAL")
{
	struct shadowvm_fpu f = { 0 };

	ASSERT_ERRNO(ioctl(self->fd, SHADOWVM_GET_FPU, &f), EINVAL);
	ASSERT_ERRNO(ioctl(self->fd, SHADOWVM_SET_FPU, &f), EINVAL);
}

SVM_TEST(vm, fpu_null, API_TIMEOUT, "GET_FPU and SET_FPU with a NULL pointer fail with EFAULT")
{
	ASSERT_ERRNO(ioctl(self->vm.fd, SHADOWVM_GET_FPU, NULL), EFAULT);
	ASSERT_ERRNO(ioctl(self->vm.fd, SHADOWVM_SET_FPU, NULL), EFAULT);
}

static uint32_t fpu_mxcsr(const struct shadowvm_fpu *f)
{
	uint32_t v;

	memcpy(&v, f->fxsave + SHADOWVM_FXSAVE_MXCSR, 4);
	return v;
}

SVM_TEST(vm, fpu_reset_and_round_trip, API_TIMEOUT,
	 "GET_FPU shows the reset image (FCW 0x37f, MXCSR 0x1f80); SET_FPU then GET_FPU round-trips")
{
	struct shadowvm_fpu f, g;
	uint16_t fcw;

	ASSERT_EQ(0, ioctl(self->vm.fd, SHADOWVM_GET_FPU, &f)) TH_LOG("errno %s", strerror(errno));
	memcpy(&fcw, f.fxsave, 2);
	ASSERT_TRUE(fcw == 0x37f && fpu_mxcsr(&f) == 0x1f80) TH_LOG("FCW %#x MXCSR %#x", fcw, fpu_mxcsr(&f));
	for (int i = 0; i < 16 * 16; i++)
		f.fxsave[SHADOWVM_FXSAVE_XMM + i] = (uint8_t)(i * 7 + 1);
	f.fxsave[0] = 0x7f;	/* FCW 0x27f: double precision */
	f.fxsave[1] = 0x02;
	ASSERT_EQ(0, ioctl(self->vm.fd, SHADOWVM_SET_FPU, &f)) TH_LOG("errno %s", strerror(errno));
	ASSERT_EQ(0, ioctl(self->vm.fd, SHADOWVM_GET_FPU, &g));
	ASSERT_EQ(0, memcmp(&f, &g, sizeof(f)));
}

SVM_TEST(vm, fpu_bad_mxcsr, API_TIMEOUT,
	 "SET_FPU with a reserved MXCSR bit fails with EINVAL and changes nothing")
{
	struct shadowvm_fpu f, g;
	uint32_t bad;

	ASSERT_EQ(0, ioctl(self->vm.fd, SHADOWVM_GET_FPU, &f));
	g = f;
	bad = fpu_mxcsr(&f) | 1u << 31;	/* reserved on every CPU */
	memcpy(g.fxsave + SHADOWVM_FXSAVE_MXCSR, &bad, 4);
	g.fxsave[SHADOWVM_FXSAVE_XMM] ^= 0xff;
	ASSERT_ERRNO(ioctl(self->vm.fd, SHADOWVM_SET_FPU, &g), EINVAL);
	ASSERT_EQ(0, ioctl(self->vm.fd, SHADOWVM_GET_FPU, &g));
	ASSERT_EQ(0, memcmp(&f, &g, sizeof(f)));
}

SVM_TEST(two_slots, fpu_visible_to_guest, API_TIMEOUT,
	 "XMM0 set by SET_FPU reaches the guest; XMM1 and MXCSR the guest sets come back in GET_FPU")
{
	static const uint8_t code[] = {
		0x66, 0x0f, 0x7e, 0xc0,				/* movd eax, xmm0 */
		0xe7, 0x80,					/* out 0x80, eax */
		0xb8, 0x0d, 0xf0, 0xfe, 0xca,			/* mov eax, 0xcafef00d */
		0x66, 0x0f, 0x6e, 0xc8,				/* movd xmm1, eax */
		0xc7, 0x05, 0x00, 0x60, 0x00, 0x00,		/* mov dword [0x6000], */
		0x80, 0x7f, 0x00, 0x00,				/*     0x7f80 (all masked, RC=11) */
		0x0f, 0xae, 0x15, 0x00, 0x60, 0x00, 0x00,	/* ldmxcsr [0x6000] */
		0xf4,						/* hlt */
	};
	struct shadowvm_fpu f;
	uint32_t xmm1;
	int r;

	memcpy(self->low + CODE, code, sizeof(code));
	ASSERT_EQ(0, ioctl(self->fd, SHADOWVM_GET_FPU, &f));
	memcpy(f.fxsave + SHADOWVM_FXSAVE_XMM, "\x78\x56\x34\x12", 4);
	ASSERT_EQ(0, ioctl(self->fd, SHADOWVM_SET_FPU, &f)) TH_LOG("errno %s", strerror(errno));
	r = run_fd(self->fd, self->run);
	ASSERT_TRUE(r == SHADOWVM_EXIT_IO && self->run->exit.io.data == 0x12345678)
		TH_LOG("exit %d data %#llx", r, (unsigned long long)self->run->exit.io.data);
	r = run_fd(self->fd, self->run);
	ASSERT_EQ(SHADOWVM_EXIT_HLT, r);
	ASSERT_EQ(0, ioctl(self->fd, SHADOWVM_GET_FPU, &f));
	memcpy(&xmm1, f.fxsave + SHADOWVM_FXSAVE_XMM + 16, 4);
	ASSERT_TRUE(xmm1 == 0xcafef00d && fpu_mxcsr(&f) == 0x7f80)
		TH_LOG("xmm1 %#x mxcsr %#x", xmm1, fpu_mxcsr(&f));
}

/* ---- MSRs, CPUID, TSC (ABI v2) ---- */

#define MSR_TSC 0x10u
#define MSR_MISC_ENABLE 0x1a0u
#define MSR_TSC_DEADLINE 0x6e0u
#define MSR_VMX_BASIC 0x480u
#define MSR_STAR 0xc0000081u
#define MSR_LSTAR 0xc0000082u
#define MSR_FS_BASE 0xc0000100u

/* Where the exception guest keeps its descriptor tables and handler stubs. */
#define XG_GDT 0x3000u
#define XG_IDT 0x3800u
#define XG_STUBS 0x4000u

/*
 * Gives the reset-state VM (32-bit protected mode, paging off) a GDT with the flat code
 * (0x08) and data (0x10) segments it already uses and an IDT whose gate v leads to a stub
 * "mov al, v; hlt" at XG_STUBS + 4 * v, for the 32 exception vectors: an exception ends in
 * a HLT exit with the vector in AL and, for #GP, the error code and the faulting EIP on
 * the stack at GUEST_STACK.
 */
static int exception_guest(struct vm *vm, const uint8_t *code, size_t len)
{
	struct shadowvm_sregs s;
	struct shadowvm_regs r;
	uint64_t *gdt = (uint64_t *)(vm->mem + XG_GDT);
	uint32_t *idt = (uint32_t *)(vm->mem + XG_IDT);

	gdt[0] = 0;
	gdt[1] = 0x00cf9b000000ffffull;
	gdt[2] = 0x00cf93000000ffffull;
	for (unsigned int v = 0; v < 32; v++) {
		uint32_t stub = XG_STUBS + 4 * v;
		uint8_t *p = vm->mem + stub;

		p[0] = 0xb0;	/* mov al, v */
		p[1] = v;
		p[2] = 0xf4;	/* hlt */
		p[3] = 0x90;
		idt[2 * v] = (0x08u << 16) | (stub & 0xffff);
		idt[2 * v + 1] = (stub & 0xffff0000u) | 0x8e00;	/* present 32-bit interrupt gate */
	}
	memcpy(vm->mem + CODE, code, len);
	if (ioctl(vm->fd, SHADOWVM_GET_SREGS, &s) || ioctl(vm->fd, SHADOWVM_GET_REGS, &r))
		return -1;
	s.gdt.base = XG_GDT;
	s.gdt.limit = 3 * 8 - 1;
	s.idt.base = XG_IDT;
	s.idt.limit = 32 * 8 - 1;
	r.rsp = GUEST_STACK;
	if (ioctl(vm->fd, SHADOWVM_SET_SREGS, &s) || ioctl(vm->fd, SHADOWVM_SET_REGS, &r))
		return -1;
	return 0;
}

/* GET_MSRS/SET_MSRS of `n` entries; the ioctl's result. */
static int msrs(int fd, unsigned long cmd, struct shadowvm_msr_entry *e, uint32_t n)
{
	struct shadowvm_msrs m = { .nmsrs = n, .entries = (uintptr_t)e };

	return ioctl(fd, cmd, &m);
}

static uint64_t get_msr(int fd, uint32_t index)
{
	struct shadowvm_msr_entry e = { .index = index };

	return msrs(fd, SHADOWVM_GET_MSRS, &e, 1) == 1 ? e.data : 0xdeadbeefdeadbeefull;
}

/* mov ecx, imm32 (5 bytes) */
#define MOV_ECX(v) 0xb9, (v) & 0xff, ((v) >> 8) & 0xff, ((v) >> 16) & 0xff, ((v) >> 24) & 0xff
#define MOV_EAX(v) 0xb8, (v) & 0xff, ((v) >> 8) & 0xff, ((v) >> 16) & 0xff, ((v) >> 24) & 0xff
#define MOV_EDX(v) 0xba, (v) & 0xff, ((v) >> 8) & 0xff, ((v) >> 16) & 0xff, ((v) >> 24) & 0xff
#define RDMSR 0x0f, 0x32
#define WRMSR 0x0f, 0x30
#define RDTSC 0x0f, 0x31
#define CPUID 0x0f, 0xa2
#define HLT 0xf4

SVM_TEST(fresh, check_cap_msr_cpuid_tsc, API_TIMEOUT,
	 "CHECK_CAP reports USER_MSR, CPUID and TSC as 1, an unknown cap fails with EINVAL")
{
	ASSERT_EQ(1, ioctl(self->fd, SHADOWVM_CHECK_CAP, SHADOWVM_CAP_USER_MSR));
	ASSERT_EQ(1, ioctl(self->fd, SHADOWVM_CHECK_CAP, SHADOWVM_CAP_CPUID));
	ASSERT_EQ(1, ioctl(self->fd, SHADOWVM_CHECK_CAP, SHADOWVM_CAP_TSC));
	ASSERT_ERRNO(ioctl(self->fd, SHADOWVM_CHECK_CAP, 0x7fff), EINVAL);
}

SVM_TEST(fresh, tsc_khz, API_TIMEOUT, "GET_TSC_KHZ returns the host TSC frequency (> 0)")
{
	int khz = ioctl(self->fd, SHADOWVM_GET_TSC_KHZ, 0);

	ASSERT_LT(0, khz) TH_LOG("GET_TSC_KHZ: %d, %s", khz, strerror(errno));
	ASSERT_ERRNO(ioctl(self->fd, SHADOWVM_GET_TSC_KHZ, 1), EINVAL);
}

SVM_TEST(fresh, msrs_before_vcpu, API_TIMEOUT, "GET_MSRS before CREATE_VCPU fails with EINVAL")
{
	struct shadowvm_msr_entry e = { .index = MSR_STAR };

	ASSERT_ERRNO(msrs(self->fd, SHADOWVM_GET_MSRS, &e, 1), EINVAL);
}

SVM_TEST(vm, msrs_misuse, API_TIMEOUT,
	 "GET/SET_MSRS: flags, reserved fields, too many entries fail with EINVAL, a bad pointer with EFAULT")
{
	struct shadowvm_msr_entry e = { .index = MSR_STAR, .reserved = 1 };
	struct shadowvm_msrs m = { .nmsrs = 1, .flags = 1, .entries = (uintptr_t)&e };

	ASSERT_ERRNO(ioctl(self->vm.fd, SHADOWVM_GET_MSRS, &m), EINVAL);
	m.flags = 0;
	ASSERT_ERRNO(ioctl(self->vm.fd, SHADOWVM_SET_MSRS, &m), EINVAL);
	e.reserved = 0;
	m.nmsrs = SHADOWVM_MSRS_MAX + 1;
	ASSERT_ERRNO(ioctl(self->vm.fd, SHADOWVM_GET_MSRS, &m), EINVAL);
	m.nmsrs = 1;
	m.entries = 8;
	ASSERT_ERRNO(ioctl(self->vm.fd, SHADOWVM_SET_MSRS, &m), EFAULT);
	ASSERT_ERRNO(ioctl(self->vm.fd, SHADOWVM_GET_MSRS, &m), EFAULT);
	m.nmsrs = 0;
	ASSERT_EQ(0, ioctl(self->vm.fd, SHADOWVM_GET_MSRS, &m));
}

SVM_TEST(vm, set_msrs_stops_at_bad_value, API_TIMEOUT,
	 "SET_MSRS with a non-canonical FS_BASE returns the count before it and changes nothing after")
{
	struct shadowvm_msr_entry e[3] = {
		{ .index = MSR_STAR, .data = 0x0023001000000000ull },
		{ .index = MSR_FS_BASE, .data = 0x0000800000000000ull },
		{ .index = MSR_LSTAR, .data = 0xffffffff81000000ull },
	};

	ASSERT_EQ(1, msrs(self->vm.fd, SHADOWVM_SET_MSRS, e, 3));
	ASSERT_EQ(0x0023001000000000ull, get_msr(self->vm.fd, MSR_STAR));
	ASSERT_EQ(0ull, get_msr(self->vm.fd, MSR_FS_BASE));
	ASSERT_EQ(0ull, get_msr(self->vm.fd, MSR_LSTAR));
	/* A reserved PAT memory type (2) stops it too. */
	e[0].index = 0x277;
	e[0].data = 0x0202020202020202ull;
	ASSERT_EQ(0, msrs(self->vm.fd, SHADOWVM_SET_MSRS, e, 1));
	/* EFER.LMA without paging is what SET_SREGS refuses as well. */
	e[0].index = 0xc0000080;
	e[0].data = 0x500;
	ASSERT_EQ(0, msrs(self->vm.fd, SHADOWVM_SET_MSRS, e, 1));
}

SVM_TEST(vm, msrs_stop_at_unknown_index, API_TIMEOUT,
	 "GET/SET_MSRS stop at the first MSR the module does not own")
{
	struct shadowvm_msr_entry e[3] = {
		{ .index = MSR_LSTAR, .data = 0xffffffff81000000ull },
		{ .index = MSR_MISC_ENABLE, .data = 1 },
		{ .index = MSR_STAR, .data = 5 },
	};

	ASSERT_EQ(1, msrs(self->vm.fd, SHADOWVM_SET_MSRS, e, 3));
	ASSERT_EQ(0ull, get_msr(self->vm.fd, MSR_STAR));
	e[0].data = 0;
	e[1].data = 0x77;
	ASSERT_EQ(1, msrs(self->vm.fd, SHADOWVM_GET_MSRS, e, 3));
	ASSERT_EQ(0xffffffff81000000ull, e[0].data);
	ASSERT_EQ(0x77ull, e[1].data) TH_LOG("GET_MSRS wrote an entry it did not read");
}

SVM_TEST(vm, fresh_tsc_near_zero, API_TIMEOUT, "a new vCPU's TSC starts near 0")
{
	uint64_t khz = ioctl(self->vm.fd, SHADOWVM_GET_TSC_KHZ, 0);
	uint64_t tsc = get_msr(self->vm.fd, MSR_TSC);

	/* Within a minute of TSC ticks since CREATE_VCPU (Bochs is slow). */
	ASSERT_LT(tsc, khz * 1000 * 60) TH_LOG("TSC %#llx, %llu kHz", (unsigned long long)tsc,
					       (unsigned long long)khz);
}

SVM_TEST(vm, set_tsc_then_rdtsc, API_TIMEOUT,
	 "after SET_MSRS(IA32_TSC = X) the guest's RDTSC reads X or a little more")
{
	const uint8_t code[] = { RDTSC, HLT };
	const uint64_t x = 0x0000123400000000ull;
	uint64_t khz = ioctl(self->vm.fd, SHADOWVM_GET_TSC_KHZ, 0);
	struct shadowvm_msr_entry e = { .index = MSR_TSC, .data = x };
	struct shadowvm_regs regs;
	uint64_t tsc;
	int r;

	memcpy(self->vm.mem + CODE, code, sizeof(code));
	ASSERT_EQ(1, msrs(self->vm.fd, SHADOWVM_SET_MSRS, &e, 1));
	r = vm_run(&self->vm);
	ASSERT_EQ(SHADOWVM_EXIT_HLT, r);
	ASSERT_EQ(0, ioctl(self->vm.fd, SHADOWVM_GET_REGS, &regs));
	tsc = (regs.rdx << 32) | (regs.rax & 0xffffffffu);
	ASSERT_TRUE(tsc >= x && tsc - x < khz * 1000 * 60)
		TH_LOG("RDTSC %#llx after setting %#llx", (unsigned long long)tsc, (unsigned long long)x);
	ASSERT_LE(tsc, get_msr(self->vm.fd, MSR_TSC));
}

SVM_TEST(vm, rdmsr_exit_to_user, API_TIMEOUT,
	 "RDMSR of an MSR the module does not own exits with its index; the data lands in EDX:EAX")
{
	const uint8_t code[] = { MOV_ECX(MSR_MISC_ENABLE), RDMSR, HLT };
	struct shadowvm_regs regs;
	int r;

	memcpy(self->vm.mem + CODE, code, sizeof(code));
	r = vm_run(&self->vm);
	ASSERT_TRUE(r == SHADOWVM_EXIT_X86_RDMSR && self->vm.run->exit.msr.index == MSR_MISC_ENABLE &&
		    self->vm.run->exit.msr.error == 0)
		TH_LOG("exit %d index %#x", r, self->vm.run->exit.msr.index);
	ioctl(self->vm.fd, SHADOWVM_GET_REGS, &regs);
	ASSERT_EQ(CODE + 5, regs.rip) TH_LOG("RIP moved before userspace answered");
	self->vm.run->exit.msr.data = 0x1122334455667788ull;
	r = vm_run(&self->vm);
	ioctl(self->vm.fd, SHADOWVM_GET_REGS, &regs);
	ASSERT_TRUE(r == SHADOWVM_EXIT_HLT && regs.rax == 0x55667788 && regs.rdx == 0x11223344 &&
		    regs.rip == CODE + sizeof(code))
		TH_LOG("exit %d rax %#llx rdx %#llx rip %#llx", r, (unsigned long long)regs.rax,
		       (unsigned long long)regs.rdx, (unsigned long long)regs.rip);
}

SVM_TEST(vm, wrmsr_exit_to_user, API_TIMEOUT,
	 "WRMSR of an MSR the module does not own exits with its index and EDX:EAX")
{
	const uint8_t code[] = { MOV_ECX(MSR_TSC_DEADLINE), MOV_EAX(0xaabbccddu), MOV_EDX(0x11223344u),
				 WRMSR, HLT };
	struct shadowvm_regs regs;
	int r;

	memcpy(self->vm.mem + CODE, code, sizeof(code));
	r = vm_run(&self->vm);
	ASSERT_TRUE(r == SHADOWVM_EXIT_X86_WRMSR && self->vm.run->exit.msr.index == MSR_TSC_DEADLINE &&
		    self->vm.run->exit.msr.data == 0x11223344aabbccddull)
		TH_LOG("exit %d index %#x data %#llx", r, self->vm.run->exit.msr.index,
		       (unsigned long long)self->vm.run->exit.msr.data);
	r = vm_run(&self->vm);
	ioctl(self->vm.fd, SHADOWVM_GET_REGS, &regs);
	ASSERT_TRUE(r == SHADOWVM_EXIT_HLT && regs.rip == CODE + sizeof(code))
		TH_LOG("exit %d rip %#llx", r, (unsigned long long)regs.rip);
}

/* Runs `code` (an MSR access at CODE + 15 after three MOVs) to its exit, answers error=1. */
static int msr_error_gp(struct vm *vm, const uint8_t *code, size_t len, int want_exit,
			uint32_t *vector, uint32_t *error_code, uint32_t *eip)
{
	uint32_t *stack;
	struct shadowvm_regs regs;
	int r;

	if (exception_guest(vm, code, len))
		return -1;
	r = vm_run(vm);
	if (r != want_exit)
		return -2;
	vm->run->exit.msr.error = 1;
	r = vm_run(vm);
	if (r != SHADOWVM_EXIT_HLT || ioctl(vm->fd, SHADOWVM_GET_REGS, &regs))
		return -3;
	stack = (uint32_t *)(vm->mem + (regs.rsp & 0xffffffffu));
	*vector = regs.rax & 0xff;
	*error_code = stack[0];
	*eip = stack[1];
	return 0;
}

SVM_TEST(vm, msr_error_injects_gp, API_TIMEOUT,
	 "error=1 after an RDMSR or WRMSR exit makes the guest take #GP(0) at the instruction")
{
	const uint8_t rd[] = { MOV_ECX(MSR_MISC_ENABLE), MOV_EAX(0), MOV_EDX(0), RDMSR, HLT };
	const uint8_t wr[] = { MOV_ECX(MSR_MISC_ENABLE), MOV_EAX(1), MOV_EDX(0), WRMSR, HLT };
	uint32_t vector = 0, error_code = 1, eip = 0;

	ASSERT_EQ(0, msr_error_gp(&self->vm, rd, sizeof(rd), SHADOWVM_EXIT_X86_RDMSR, &vector,
				  &error_code, &eip));
	ASSERT_TRUE(vector == 13 && error_code == 0 && eip == CODE + 15)
		TH_LOG("RDMSR: vector %u error code %u EIP %#x", vector, error_code, eip);
	vm_destroy(&self->vm);
	ASSERT_EQ(0, vm_create_reset(&self->vm, MEM_SIZE));
	ASSERT_EQ(0, msr_error_gp(&self->vm, wr, sizeof(wr), SHADOWVM_EXIT_X86_WRMSR, &vector,
				  &error_code, &eip));
	ASSERT_TRUE(vector == 13 && error_code == 0 && eip == CODE + 15)
		TH_LOG("WRMSR: vector %u error code %u EIP %#x", vector, error_code, eip);
}

SVM_TEST(vm, vmx_msr_gp_without_exit, API_TIMEOUT,
	 "RDMSR of a VMX capability MSR is #GP in the guest, without an exit to userspace")
{
	const uint8_t code[] = { MOV_ECX(MSR_VMX_BASIC), RDMSR, HLT };
	struct shadowvm_regs regs;
	int r;

	ASSERT_EQ(0, exception_guest(&self->vm, code, sizeof(code)));
	r = vm_run(&self->vm);
	ioctl(self->vm.fd, SHADOWVM_GET_REGS, &regs);
	ASSERT_TRUE(r == SHADOWVM_EXIT_HLT && (regs.rax & 0xff) == 13)
		TH_LOG("exit %d AL %llu", r, (unsigned long long)(regs.rax & 0xff));
}

SVM_TEST(vm, guest_wrmsr_fs_base, API_TIMEOUT, "a guest WRMSR to FS_BASE reads back through GET_MSRS")
{
	const uint8_t code[] = { MOV_ECX(MSR_FS_BASE), MOV_EAX(0x12345000u), MOV_EDX(0), WRMSR, HLT };
	struct shadowvm_sregs sregs;

	memcpy(self->vm.mem + CODE, code, sizeof(code));
	ASSERT_EQ(SHADOWVM_EXIT_HLT, vm_run(&self->vm));
	ASSERT_EQ(0x12345000ull, get_msr(self->vm.fd, MSR_FS_BASE));
	ASSERT_EQ(0, ioctl(self->vm.fd, SHADOWVM_GET_SREGS, &sregs));
	ASSERT_EQ(0x12345000ull, sregs.fs.base);
}

SVM_TEST(vm, apic_base_kept, API_TIMEOUT, "SET_SREGS keeps apic_base for userspace and GET_SREGS returns it")
{
	struct shadowvm_sregs s;

	ASSERT_EQ(0, ioctl(self->vm.fd, SHADOWVM_GET_SREGS, &s));
	ASSERT_EQ(0ull, s.apic_base);
	s.apic_base = 0xfee00900;
	ASSERT_EQ(0, ioctl(self->vm.fd, SHADOWVM_SET_SREGS, &s));
	memset(&s, 0, sizeof(s));
	ASSERT_EQ(0, ioctl(self->vm.fd, SHADOWVM_GET_SREGS, &s));
	ASSERT_EQ(0xfee00900ull, s.apic_base);
}

/* The supported table (calloc'd, *n entries), or NULL. */
static struct shadowvm_cpuid_entry *supported_cpuid(int fd, uint32_t *n)
{
	struct shadowvm_cpuid c = { 0 };
	struct shadowvm_cpuid_entry *e;

	if (ioctl(fd, SHADOWVM_GET_SUPPORTED_CPUID, &c) != -1 || errno != E2BIG || c.nent == 0)
		return NULL;
	e = calloc(c.nent, sizeof(*e));
	c.entries = (uintptr_t)e;
	if (ioctl(fd, SHADOWVM_GET_SUPPORTED_CPUID, &c)) {
		free(e);
		return NULL;
	}
	*n = c.nent;
	return e;
}

static const struct shadowvm_cpuid_entry *find_leaf(const struct shadowvm_cpuid_entry *e, uint32_t n,
						      uint32_t function)
{
	for (uint32_t i = 0; i < n; i++)
		if (e[i].function == function)
			return &e[i];
	return NULL;
}

SVM_TEST(fresh, supported_cpuid, API_TIMEOUT,
	 "GET_SUPPORTED_CPUID: E2BIG with the count when short, then leaves without VMX or XSAVE")
{
	uint32_t n = 0;
	struct shadowvm_cpuid_entry *e = supported_cpuid(self->fd, &n);
	const struct shadowvm_cpuid_entry *l1, *hv;

	ASSERT_NE(NULL, e) TH_LOG("GET_SUPPORTED_CPUID: %s", strerror(errno));
	ASSERT_LE(n, (uint32_t)SHADOWVM_CPUID_MAX_ENTRIES);
	l1 = find_leaf(e, n, 1);
	hv = find_leaf(e, n, 0x40000000);
	ASSERT_TRUE(l1 && hv && find_leaf(e, n, 0));
	ASSERT_EQ(0u, l1->ecx & ((1u << 5) | (1u << 26) | (1u << 27))) TH_LOG("VMX or XSAVE offered");
	ASSERT_NE(0u, l1->ecx & (1u << 31)) TH_LOG("no hypervisor bit");
	ASSERT_EQ(0, memcmp(&hv->ebx, "shadowvm", 8));
	free(e);
}

SVM_TEST(vm, set_cpuid_misuse, API_TIMEOUT,
	 "SET_CPUID: too many entries, bad flags, padding or duplicates fail with EINVAL, a bad pointer with EFAULT")
{
	struct shadowvm_cpuid_entry e[SHADOWVM_CPUID_MAX_ENTRIES + 1];
	struct shadowvm_cpuid c = { .nent = SHADOWVM_CPUID_MAX_ENTRIES + 1, .entries = (uintptr_t)e };

	memset(e, 0, sizeof(e));
	for (unsigned int i = 0; i < SHADOWVM_CPUID_MAX_ENTRIES + 1; i++)
		e[i].function = 0x40000000 + i;
	ASSERT_ERRNO(ioctl(self->vm.fd, SHADOWVM_SET_CPUID, &c), EINVAL);
	c.nent = SHADOWVM_CPUID_MAX_ENTRIES;
	ASSERT_EQ(0, ioctl(self->vm.fd, SHADOWVM_SET_CPUID, &c)) TH_LOG("%s", strerror(errno));
	c.nent = 2;
	e[1].function = e[0].function;
	ASSERT_ERRNO(ioctl(self->vm.fd, SHADOWVM_SET_CPUID, &c), EINVAL);
	e[1].function = 7;
	e[1].flags = 2;
	ASSERT_ERRNO(ioctl(self->vm.fd, SHADOWVM_SET_CPUID, &c), EINVAL);
	e[1].flags = 0;
	e[1].padding = 1;
	ASSERT_ERRNO(ioctl(self->vm.fd, SHADOWVM_SET_CPUID, &c), EINVAL);
	c.flags = 1;
	e[1].padding = 0;
	ASSERT_ERRNO(ioctl(self->vm.fd, SHADOWVM_SET_CPUID, &c), EINVAL);
	c.flags = 0;
	c.entries = 8;
	ASSERT_ERRNO(ioctl(self->vm.fd, SHADOWVM_SET_CPUID, &c), EFAULT);
}

/* Runs CPUID(leaf, 0) in the guest; the four registers in r[]. */
static int guest_cpuid(struct vm *vm, uint32_t leaf, uint32_t r[4])
{
	const uint8_t code[] = { MOV_EAX(leaf), MOV_ECX(0), CPUID, HLT };
	struct shadowvm_regs regs;

	memcpy(vm->mem + CODE, code, sizeof(code));
	if (ioctl(vm->fd, SHADOWVM_GET_REGS, &regs))
		return -1;
	regs.rip = CODE;
	if (ioctl(vm->fd, SHADOWVM_SET_REGS, &regs) || vm_run(vm) != SHADOWVM_EXIT_HLT ||
	    ioctl(vm->fd, SHADOWVM_GET_REGS, &regs))
		return -1;
	r[0] = regs.rax;
	r[1] = regs.rbx;
	r[2] = regs.rcx;
	r[3] = regs.rdx;
	return 0;
}

SVM_TEST(vm, set_cpuid_seen_by_guest, API_TIMEOUT,
	 "SET_CPUID values reach the guest's CPUID, unsupported feature bits filtered, high leaves read the top one")
{
	uint32_t n = 0, r[4];
	struct shadowvm_cpuid_entry *sup = supported_cpuid(self->vm.fd, &n);
	const struct shadowvm_cpuid_entry *l1;
	struct shadowvm_cpuid_entry e[3] = {
		{ .function = 0, .eax = 1, .ebx = 0x756e6547, .ecx = 0x6c65746e, .edx = 0x49656e69 },
		/* Every feature bit asked for, VMX (ECX bit 5) among them. */
		{ .function = 1, .eax = 0x000906ea, .ebx = 0x05000800, .ecx = 0xffffffff, .edx = 0xffffffff },
		{ .function = 0x40000000, .eax = 0x40000000, .ebx = 0x61626364 },
	};
	struct shadowvm_cpuid c = { .nent = 3, .entries = (uintptr_t)e };

	ASSERT_NE(NULL, sup);
	l1 = find_leaf(sup, n, 1);
	ASSERT_NE(NULL, l1);
	ASSERT_EQ(0, ioctl(self->vm.fd, SHADOWVM_SET_CPUID, &c)) TH_LOG("%s", strerror(errno));
	ASSERT_EQ(0, guest_cpuid(&self->vm, 1, r));
	ASSERT_TRUE(r[0] == 0x000906ea && r[1] == 0x05000800 && r[2] == l1->ecx && r[3] == l1->edx)
		TH_LOG("leaf 1: %#x %#x %#x %#x, supported ECX %#x EDX %#x", r[0], r[1], r[2], r[3],
		       l1->ecx, l1->edx);
	ASSERT_EQ(0u, r[2] & (1u << 5)) TH_LOG("VMX bit not filtered");
	ASSERT_EQ(0, guest_cpuid(&self->vm, 0x40000000, r));
	ASSERT_EQ(0x61626364u, r[1]);
	/* Above the maximum basic leaf (1): the values of leaf 1, as on Intel CPUs. */
	ASSERT_EQ(0, guest_cpuid(&self->vm, 0x20, r));
	ASSERT_TRUE(r[0] == 0x000906ea && r[1] == 0x05000800) TH_LOG("leaf 0x20: %#x %#x", r[0], r[1]);
	free(sup);
}

SVM_TEST(vm, cpuid_hides_nx, API_TIMEOUT,
	 "a guest whose CPUID table hides NX gets #GP for WRMSR EFER.NXE; with NX shown it works")
{
	/* rdmsr EFER; or eax, EFER.NXE; wrmsr; hlt */
	const uint8_t code[] = { MOV_ECX(0xc0000080u), RDMSR, 0x0d, 0x00, 0x08, 0x00, 0x00, WRMSR, HLT };
	struct shadowvm_cpuid c = { 0 };
	struct shadowvm_regs regs;
	uint32_t n = 0;
	struct shadowvm_cpuid_entry *sup = supported_cpuid(self->vm.fd, &n);
	struct shadowvm_cpuid_entry *x1;
	int r;

	ASSERT_NE(NULL, sup);
	x1 = (struct shadowvm_cpuid_entry *)find_leaf(sup, n, 0x80000001);
	if (!x1 || !(x1->edx & (1u << 20))) {
		free(sup);
		SKIP(return, "the host has no NX");
	}
	/* The default table shows NX. */
	ASSERT_EQ(0, exception_guest(&self->vm, code, sizeof(code)));
	r = vm_run(&self->vm);
	ioctl(self->vm.fd, SHADOWVM_GET_REGS, &regs);
	ASSERT_TRUE(r == SHADOWVM_EXIT_HLT && regs.rip == CODE + sizeof(code))
		TH_LOG("exit %d rip %#llx", r, (unsigned long long)regs.rip);
	ASSERT_NE(0ull, get_msr(self->vm.fd, 0xc0000080) & (1ull << 11));
	/* The supported table without NX: the same WRMSR faults. */
	vm_destroy(&self->vm);
	ASSERT_EQ(0, vm_create_reset(&self->vm, MEM_SIZE));
	x1->edx &= ~(1u << 20);
	c.nent = n;
	c.entries = (uintptr_t)sup;
	ASSERT_EQ(0, ioctl(self->vm.fd, SHADOWVM_SET_CPUID, &c)) TH_LOG("%s", strerror(errno));
	ASSERT_EQ(0, exception_guest(&self->vm, code, sizeof(code)));
	r = vm_run(&self->vm);
	ioctl(self->vm.fd, SHADOWVM_GET_REGS, &regs);
	ASSERT_TRUE(r == SHADOWVM_EXIT_HLT && (regs.rax & 0xff) == 13)
		TH_LOG("exit %d AL %llu", r, (unsigned long long)(regs.rax & 0xff));
	ASSERT_EQ(0ull, get_msr(self->vm.fd, 0xc0000080) & (1ull << 11));
	free(sup);
}

/*
 * ---- interrupts and NMIs from userspace (SHADOWVM_INTERRUPT, SHADOWVM_NMI, the interrupt
 * window, the vCPU events) ----
 *
 * The guests run in the reset state (32-bit protected mode, paging off) with a real GDT and
 * IDT: every vector but 2 enters a stub that pushes its number and jumps to a common
 * handler, which logs (vector, return EIP) and the guest's EBX, then IRETs; the NMI handler
 * counts and reports to userspace through OUT 0x84 and OUT 0x85 before its IRET.
 */
#define IRQ_GDT 0x3000u
#define IRQ_IDT 0x4000u
#define IRQ_STUBS 0x5000u	/* 10 bytes per vector */
#define IRQ_COMMON 0x5c00u
#define IRQ_NMI 0x5d00u
#define IRQ_EBX 0x6008u		/* EBX at the last interrupt */
#define IRQ_COUNT 0x600cu	/* interrupts logged */
#define NMI_COUNT 0x6010u	/* NMIs taken */
#define IRQ_LOG 0x6100u		/* IRQ_COUNT entries of struct irq_log_entry */
#define U32(x) ((x) & 0xff), (((x) >> 8) & 0xff), (((x) >> 16) & 0xff), (((x) >> 24) & 0xff)
#define RFLAGS_IF 0x200ull

struct irq_log_entry {
	uint32_t vector, eip;
};

static const uint8_t irq_common[] = {
	0x50,					/* push eax */
	0x52,					/* push edx */
	0x8b, 0x15, U32(IRQ_COUNT),		/* mov edx, [IRQ_COUNT] */
	0x8b, 0x44, 0x24, 0x08,			/* mov eax, [esp+8]: the vector */
	0x89, 0x04, 0xd5, U32(IRQ_LOG),		/* mov [IRQ_LOG+edx*8], eax */
	0x8b, 0x44, 0x24, 0x0c,			/* mov eax, [esp+12]: the return EIP */
	0x89, 0x04, 0xd5, U32(IRQ_LOG + 4),	/* mov [IRQ_LOG+4+edx*8], eax */
	0x89, 0x1d, U32(IRQ_EBX),		/* mov [IRQ_EBX], ebx */
	0xff, 0x05, U32(IRQ_COUNT),		/* inc dword [IRQ_COUNT] */
	0x5a, 0x58,				/* pop edx; pop eax */
	0x83, 0xc4, 0x04,			/* add esp, 4 */
	0xcf,					/* iret */
};

static const uint8_t nmi_handler[] = {
	0xff, 0x05, U32(NMI_COUNT),		/* inc dword [NMI_COUNT] */
	0xa1, U32(NMI_COUNT),			/* mov eax, [NMI_COUNT] */
	0xe6, 0x84,				/* out 0x84, al */
	0xe6, 0x85,				/* out 0x85, al */
	0xcf,					/* iret */
};

static uint32_t guest32(struct vm *vm, uint32_t gpa)
{
	uint32_t v;

	memcpy(&v, vm->mem + gpa, sizeof(v));
	return v;
}

static void put32(struct vm *vm, uint32_t gpa, uint32_t v)
{
	memcpy(vm->mem + gpa, &v, sizeof(v));
}

static struct irq_log_entry irq_log(struct vm *vm, unsigned int i)
{
	struct irq_log_entry e;

	memcpy(&e, vm->mem + IRQ_LOG + 8 * i, sizeof(e));
	return e;
}

/* The GDT, an IDT at `idt` and the handlers above, `code` at CODE, RIP = CODE, RFLAGS = rflags. */
static int irq_guest_idt(struct vm *vm, const uint8_t *code, size_t len, uint64_t rflags, uint32_t idt)
{
	const uint64_t gdt[] = { 0, 0x00cf9b000000ffffull, 0x00cf93000000ffffull };
	struct shadowvm_sregs sregs;
	struct shadowvm_regs regs;

	memcpy(vm->mem + IRQ_GDT, gdt, sizeof(gdt));
	for (uint32_t v = 0; v < 256; v++) {
		uint32_t stub = IRQ_STUBS + 10 * v;
		uint32_t handler = v == 2 ? IRQ_NMI : stub;

		vm->mem[stub] = 0x68;				/* push imm32 */
		put32(vm, stub + 1, v);
		vm->mem[stub + 5] = 0xe9;			/* jmp rel32 */
		put32(vm, stub + 6, IRQ_COMMON - (stub + 10));
		/* 32-bit interrupt gate, DPL 0, selector 0x08 */
		put32(vm, idt + 8 * v, 0x08u << 16 | (handler & 0xffff));
		put32(vm, idt + 8 * v + 4, (handler & 0xffff0000u) | 0x8e00);
	}
	memcpy(vm->mem + IRQ_COMMON, irq_common, sizeof(irq_common));
	memcpy(vm->mem + IRQ_NMI, nmi_handler, sizeof(nmi_handler));
	memcpy(vm->mem + CODE, code, len);
	if (ioctl(vm->fd, SHADOWVM_GET_SREGS, &sregs))
		return -1;
	sregs.gdt.base = IRQ_GDT;
	sregs.gdt.limit = sizeof(gdt) - 1;
	sregs.idt.base = idt;
	sregs.idt.limit = 256 * 8 - 1;
	if (ioctl(vm->fd, SHADOWVM_SET_SREGS, &sregs) || ioctl(vm->fd, SHADOWVM_GET_REGS, &regs))
		return -1;
	regs.rip = CODE;
	regs.rflags = rflags;
	return ioctl(vm->fd, SHADOWVM_SET_REGS, &regs);
}

static int irq_guest(struct vm *vm, const uint8_t *code, size_t len, uint64_t rflags)
{
	return irq_guest_idt(vm, code, len, rflags, IRQ_IDT);
}

/* The value of statistic `name`, or 0 if there is none. */
static uint64_t stat_value(int fd, const char *name)
{
	struct shadowvm_stats st = { 0 };
	struct shadowvm_stat_entry *e;
	uint64_t v = 0;

	ioctl(fd, SHADOWVM_GET_STATS, &st);
	e = calloc(st.count, sizeof(*e));
	st.entries = (uintptr_t)e;
	if (e && ioctl(fd, SHADOWVM_GET_STATS, &st) == 0)
		for (unsigned int i = 0; i < st.count; i++)
			if (!strcmp(e[i].name, name))
				v = e[i].value;
	free(e);
	return v;
}

static int inject(struct vm *vm, uint32_t irq)
{
	struct shadowvm_interrupt i = { .irq = irq };

	return ioctl(vm->fd, SHADOWVM_INTERRUPT, &i);
}

static uint64_t guest_rip(struct vm *vm)
{
	struct shadowvm_regs regs = { 0 };

	ioctl(vm->fd, SHADOWVM_GET_REGS, &regs);
	return regs.rip;
}

/* Runs to an OUT to `port`; returns its data byte, or -1 (logged) for anything else. */
static int run_to_out(struct __test_metadata *_metadata, struct vm *vm, uint16_t port)
{
	int r = vm_run(vm);

	if (r == SHADOWVM_EXIT_IO && vm->run->exit.io.direction == SHADOWVM_IO_OUT && vm->run->exit.io.port == port)
		return vm->run->exit.io.data & 0xff;
	TH_LOG("wanted OUT %#x: exit %d port %#x", port, r, vm->run->exit.io.port);
	return -1;
}

SVM_TEST(fresh, check_cap_irq, API_TIMEOUT, "CHECK_CAP(SHADOWVM_CAP_IRQ) is 1; an unknown capability fails with EINVAL")
{
	ASSERT_EQ(1, ioctl(self->fd, SHADOWVM_CHECK_CAP, SHADOWVM_CAP_IRQ)) TH_LOG("errno %s", strerror(errno));
	ASSERT_ERRNO(ioctl(self->fd, SHADOWVM_CHECK_CAP, 0xffff), EINVAL);
}

SVM_TEST(fresh, irq_without_vcpu, API_TIMEOUT,
	 "INTERRUPT, NMI and GET/SET_VCPU_EVENTS without a vCPU fail with EINVAL")
{
	struct shadowvm_interrupt irq = { .irq = 0x20 };
	struct shadowvm_vcpu_events ev = { 0 };

	ASSERT_ERRNO(ioctl(self->fd, SHADOWVM_INTERRUPT, &irq), EINVAL);
	ASSERT_ERRNO(ioctl(self->fd, SHADOWVM_NMI, 0), EINVAL);
	ASSERT_ERRNO(ioctl(self->fd, SHADOWVM_GET_VCPU_EVENTS, &ev), EINVAL);
	ASSERT_ERRNO(ioctl(self->fd, SHADOWVM_SET_VCPU_EVENTS, &ev), EINVAL);
}

SVM_TEST(vm, interrupt_bad_args, API_TIMEOUT,
	 "INTERRUPT with irq >= 256 or non-zero padding, NMI with an argument, fail with EINVAL; nothing is queued")
{
	struct shadowvm_interrupt big = { .irq = 256 }, pad = { .irq = 0x20, .padding = 1 };
	struct shadowvm_vcpu_events ev;

	ASSERT_ERRNO(ioctl(self->vm.fd, SHADOWVM_INTERRUPT, &big), EINVAL);
	ASSERT_ERRNO(ioctl(self->vm.fd, SHADOWVM_INTERRUPT, &pad), EINVAL);
	ASSERT_ERRNO(ioctl(self->vm.fd, SHADOWVM_NMI, 1), EINVAL);
	ASSERT_EQ(0, ioctl(self->vm.fd, SHADOWVM_GET_VCPU_EVENTS, &ev)) TH_LOG("%s", strerror(errno));
	ASSERT_TRUE(ev.interrupt_injected == 0 && ev.nmi_pending == 0)
		TH_LOG("interrupt_injected %u nmi_pending %u", ev.interrupt_injected, ev.nmi_pending);
}

SVM_TEST(vm, events_invalid, API_TIMEOUT,
	 "SET_VCPU_EVENTS with nonsense (vector >= 32, 2 or 21, wrong error-code bit, error code above 16 bits, flags, reserved, padding, both shadows, 3 NMIs, non-boolean) fails with EINVAL and changes nothing")
{
	struct shadowvm_vcpu_events good = { .interrupt_injected = 1, .interrupt_nr = 0x30 };
	struct shadowvm_vcpu_events bad[16], after;
	int n = 0;

	ASSERT_EQ(0, ioctl(self->vm.fd, SHADOWVM_SET_VCPU_EVENTS, &good)) TH_LOG("%s", strerror(errno));
	for (int i = 0; i < 16; i++)
		bad[i] = (struct shadowvm_vcpu_events){ .exception_injected = 1, .exception_nr = 6 };
	bad[n++].exception_nr = 32;
	bad[n++].exception_nr = 2;
	bad[n++].exception_nr = 21;
	bad[n++].exception_has_error_code = 1;			/* #UD has none */
	bad[n].exception_nr = 13, bad[n++].exception_has_error_code = 0;	/* #GP has one */
	bad[n].exception_nr = 13, bad[n].exception_has_error_code = 1,
		bad[n++].exception_error_code = 0x10000;			/* bits 31:16 */
	bad[n++].flags = 1;
	bad[n++].reserved[10] = 1;
	bad[n++].exception_padding = 1;
	bad[n++].interrupt_shadow = SHADOWVM_INTERRUPT_SHADOW_STI | SHADOWVM_INTERRUPT_SHADOW_MOV_SS;
	bad[n++].nmi_pending = 3;
	bad[n++].nmi_masked = 2;
	bad[n++].exception_injected = 2;
	bad[n].exception_injected = 0, bad[n++].exception_nr = 6;	/* fields of an absent exception */
	for (int i = 0; i < n; i++) {
		errno = 0;
		int r = ioctl(self->vm.fd, SHADOWVM_SET_VCPU_EVENTS, &bad[i]);
		ASSERT_TRUE(r == -1 && errno == EINVAL) TH_LOG("case %d: rc %d errno %s", i, r, strerror(errno));
	}
	ASSERT_EQ(0, ioctl(self->vm.fd, SHADOWVM_GET_VCPU_EVENTS, &after)) TH_LOG("%s", strerror(errno));
	ASSERT_EQ(0, memcmp(&good, &after, sizeof(good))) TH_LOG("a refused SET changed the events");
}

SVM_TEST(vm, events_round_trip, API_TIMEOUT,
	 "SET_VCPU_EVENTS then GET_VCPU_EVENTS gives the same events (exception, interrupt, shadow, NMI)")
{
	struct shadowvm_vcpu_events set = {
		.exception_injected = 1, .exception_nr = 13, .exception_has_error_code = 1,
		.exception_error_code = 0x18, .interrupt_injected = 1, .interrupt_nr = 0x45,
		.interrupt_shadow = SHADOWVM_INTERRUPT_SHADOW_MOV_SS,
	}, got, zero = { 0 };
	int vnmi = ioctl(self->vm.fd, SHADOWVM_NMI, 0) == 0;

	if (vnmi) {
		set.nmi_pending = 1;
		set.nmi_masked = 1;
	}
	ASSERT_EQ(0, ioctl(self->vm.fd, SHADOWVM_SET_VCPU_EVENTS, &set)) TH_LOG("%s", strerror(errno));
	ASSERT_EQ(0, ioctl(self->vm.fd, SHADOWVM_GET_VCPU_EVENTS, &got)) TH_LOG("%s", strerror(errno));
	ASSERT_EQ(0, memcmp(&set, &got, sizeof(set)))
		TH_LOG("exception %u/%u/%u/%#x interrupt %u/%#x shadow %u nmi %u/%u", got.exception_injected,
		       got.exception_nr, got.exception_has_error_code, got.exception_error_code,
		       got.interrupt_injected, got.interrupt_nr, got.interrupt_shadow, got.nmi_pending,
		       got.nmi_masked);
	ASSERT_EQ(0, ioctl(self->vm.fd, SHADOWVM_SET_VCPU_EVENTS, &zero)) TH_LOG("%s", strerror(errno));
	ASSERT_EQ(0, ioctl(self->vm.fd, SHADOWVM_GET_VCPU_EVENTS, &got)) TH_LOG("%s", strerror(errno));
	ASSERT_EQ(0, memcmp(&zero, &got, sizeof(zero))) TH_LOG("events not cleared");
}

SVM_TEST(vm, interrupt_through_idt, API_TIMEOUT,
	 "an injected interrupt runs the guest's IDT handler for its vector with the return EIP after the last instruction")
{
	/* mov ebx, 7; out 0x80, al; hlt */
	static const uint8_t code[] = { 0xbb, 0x07, 0x00, 0x00, 0x00, 0xe6, 0x80, 0xf4 };
	struct vm *vm = &self->vm;
	struct irq_log_entry e;
	int r;

	ASSERT_EQ(0, irq_guest(vm, code, sizeof(code), 2 | RFLAGS_IF)) TH_LOG("setup: %s", strerror(errno));
	r = vm_run(vm);
	ASSERT_TRUE(r == SHADOWVM_EXIT_IO && vm->run->if_flag == 1 && vm->run->ready_for_interrupt_injection == 1)
		TH_LOG("exit %d if_flag %u ready %u", r, vm->run->if_flag, vm->run->ready_for_interrupt_injection);
	ASSERT_EQ(0, inject(vm, 0x41)) TH_LOG("INTERRUPT: %s", strerror(errno));
	r = vm_run(vm);
	e = irq_log(vm, 0);
	ASSERT_TRUE(r == SHADOWVM_EXIT_HLT && guest32(vm, IRQ_COUNT) == 1 && e.vector == 0x41 &&
		    e.eip == CODE + 7 && guest32(vm, IRQ_EBX) == 7 && guest_rip(vm) == CODE + 8)
		TH_LOG("exit %d, %u interrupts, first vector %#x EIP %#x (want %#x), EBX %u, RIP %#llx", r,
		       guest32(vm, IRQ_COUNT), e.vector, e.eip, CODE + 7, guest32(vm, IRQ_EBX),
		       (unsigned long long)guest_rip(vm));
}

/*
 * The IDT alone in the 2 MiB at 4 MiB, which the guest touches first when it delivers the
 * event: the shadow has no entry for it yet, so the delivery itself exits with a #PF (IDT
 * vectoring information valid) and the event must be delivered again, once.
 */
#define FAR_IDT 0x400000u

SVM_TEST(vm, interrupt_redelivered, API_TIMEOUT,
	 "an interrupt whose delivery exits (shadow #PF on the IDT) is delivered again, exactly once")
{
	static const uint8_t code[] = { 0xe6, 0x80, 0xf4 };	/* out 0x80, al; hlt */
	struct vm *vm = &self->vm;
	uint64_t pf_before, pf_after;
	struct irq_log_entry e;
	int r;

	ASSERT_EQ(0, irq_guest_idt(vm, code, sizeof(code), 2 | RFLAGS_IF, FAR_IDT)) TH_LOG("setup: %s", strerror(errno));
	ASSERT_EQ(SHADOWVM_EXIT_IO, vm_run(vm));
	pf_before = stat_value(vm->fd, "exits.exception_nmi");
	ASSERT_EQ(0, inject(vm, 0x46)) TH_LOG("INTERRUPT: %s", strerror(errno));
	r = vm_run(vm);
	pf_after = stat_value(vm->fd, "exits.exception_nmi");
	e = irq_log(vm, 0);
	ASSERT_TRUE(r == SHADOWVM_EXIT_HLT && pf_after > pf_before && guest32(vm, IRQ_COUNT) == 1 &&
		    e.vector == 0x46 && e.eip == CODE + 2)
		TH_LOG("exit %d, #PF exits %llu -> %llu, %u interrupts, vector %#x EIP %#x", r,
		       (unsigned long long)pf_before, (unsigned long long)pf_after, guest32(vm, IRQ_COUNT),
		       e.vector, e.eip);
}

SVM_TEST(vm, nmi_redelivered, API_TIMEOUT,
	 "an NMI whose delivery exits (shadow #PF on the IDT) is delivered again, exactly once, and then blocks NMIs")
{
	static const uint8_t code[] = { 0xe6, 0x80, 0xf4 };	/* out 0x80, al; hlt */
	struct shadowvm_vcpu_events ev;
	struct vm *vm = &self->vm;
	uint64_t pf_before;

	ASSERT_EQ(0, irq_guest_idt(vm, code, sizeof(code), 2, FAR_IDT)) TH_LOG("setup: %s", strerror(errno));
	ASSERT_EQ(SHADOWVM_EXIT_IO, vm_run(vm));
	pf_before = stat_value(vm->fd, "exits.exception_nmi");
	errno = 0;
	if (ioctl(vm->fd, SHADOWVM_NMI, 0)) {
		if (errno == EOPNOTSUPP)
			SKIP(return, "the CPU has no virtual NMIs: SHADOWVM_NMI answers EOPNOTSUPP");
		ASSERT_EQ(0, errno) TH_LOG("NMI: %s", strerror(errno));
	}
	ASSERT_EQ(1, run_to_out(_metadata, vm, 0x84));
	ASSERT_EQ(0, ioctl(vm->fd, SHADOWVM_GET_VCPU_EVENTS, &ev));
	ASSERT_TRUE(stat_value(vm->fd, "exits.exception_nmi") > pf_before && ev.nmi_masked == 1 &&
		    ev.nmi_pending == 0)
		TH_LOG("#PF exits %llu -> %llu, masked %u pending %u", (unsigned long long)pf_before,
		       (unsigned long long)stat_value(vm->fd, "exits.exception_nmi"), ev.nmi_masked,
		       ev.nmi_pending);
	ASSERT_EQ(1, run_to_out(_metadata, vm, 0x85));
	ASSERT_EQ(SHADOWVM_EXIT_HLT, vm_run(vm));
	ASSERT_EQ(1u, guest32(vm, NMI_COUNT));
}

/* out 0x80, al; sti; inc ebx (in the STI shadow); inc ebx; hlt -- with IF = 0 at first */
static const uint8_t sti_code[] = { 0xe6, 0x80, 0xfb, 0x43, 0x43, 0xf4 };

SVM_TEST(vm, interrupt_waits_for_sti, API_TIMEOUT,
	 "an interrupt queued while IF=0 waits, and lands after STI and the instruction in its shadow")
{
	struct vm *vm = &self->vm;
	struct irq_log_entry e;
	int r;

	ASSERT_EQ(0, irq_guest(vm, sti_code, sizeof(sti_code), 2)) TH_LOG("setup: %s", strerror(errno));
	r = vm_run(vm);
	ASSERT_TRUE(r == SHADOWVM_EXIT_IO && vm->run->if_flag == 0 && vm->run->ready_for_interrupt_injection == 0)
		TH_LOG("exit %d if_flag %u ready %u", r, vm->run->if_flag, vm->run->ready_for_interrupt_injection);
	ASSERT_EQ(0, inject(vm, 0x40)) TH_LOG("INTERRUPT: %s", strerror(errno));
	r = vm_run(vm);
	e = irq_log(vm, 0);
	ASSERT_TRUE(r == SHADOWVM_EXIT_HLT && guest32(vm, IRQ_COUNT) == 1 && e.vector == 0x40 &&
		    e.eip == CODE + 4 && guest32(vm, IRQ_EBX) == 1)
		TH_LOG("exit %d, %u interrupts, vector %#x EIP %#x (want %#x), EBX then %u (want 1)", r,
		       guest32(vm, IRQ_COUNT), e.vector, e.eip, CODE + 4, guest32(vm, IRQ_EBX));
}

SVM_TEST(vm, irq_window_open, API_TIMEOUT,
	 "request_interrupt_window with IF=0: exactly one IRQ_WINDOW_OPEN exit after STI and its shadow; the interrupt injected then lands there")
{
	struct vm *vm = &self->vm;
	struct irq_log_entry e;
	int r, windows = 0;
	uint64_t window_rip = 0;

	ASSERT_EQ(0, irq_guest(vm, sti_code, sizeof(sti_code), 2)) TH_LOG("setup: %s", strerror(errno));
	ASSERT_EQ(SHADOWVM_EXIT_IO, vm_run(vm));
	vm->run->request_interrupt_window = 1;
	for (int i = 0; i < 10; i++) {
		r = vm_run(vm);
		if (r != SHADOWVM_EXIT_IRQ_WINDOW_OPEN)
			break;
		windows++;
		window_rip = guest_rip(vm);
		ASSERT_TRUE(vm->run->ready_for_interrupt_injection == 1 && vm->run->if_flag == 1 &&
			    vm->run->request_interrupt_window == 1)
			TH_LOG("at the window: ready %u if_flag %u request %u", vm->run->ready_for_interrupt_injection,
			       vm->run->if_flag, vm->run->request_interrupt_window);
		ASSERT_EQ(0, inject(vm, 0x40)) TH_LOG("INTERRUPT: %s", strerror(errno));
		vm->run->request_interrupt_window = 0;
	}
	e = irq_log(vm, 0);
	ASSERT_TRUE(r == SHADOWVM_EXIT_HLT && windows == 1 && window_rip == CODE + 4 &&
		    guest32(vm, IRQ_COUNT) == 1 && e.vector == 0x40 && e.eip == CODE + 4 &&
		    guest32(vm, IRQ_EBX) == 1)
		TH_LOG("exit %d after %d window exits (RIP %#llx, want %#x); %u interrupts, vector %#x EIP %#x, EBX %u",
		       r, windows, (unsigned long long)window_rip, CODE + 4, guest32(vm, IRQ_COUNT), e.vector,
		       e.eip, guest32(vm, IRQ_EBX));
}

SVM_TEST(vm, hlt_then_interrupt, API_TIMEOUT,
	 "HLT exits; an interrupt injected then runs the handler with the return EIP after the HLT")
{
	/* sti; hlt (in the STI shadow); hlt */
	static const uint8_t code[] = { 0xfb, 0xf4, 0xf4 };
	struct vm *vm = &self->vm;
	struct irq_log_entry e;
	int r;

	ASSERT_EQ(0, irq_guest(vm, code, sizeof(code), 2)) TH_LOG("setup: %s", strerror(errno));
	r = vm_run(vm);
	ASSERT_TRUE(r == SHADOWVM_EXIT_HLT && guest_rip(vm) == CODE + 2 && vm->run->if_flag == 1 &&
		    vm->run->ready_for_interrupt_injection == 1)
		TH_LOG("exit %d RIP %#llx if_flag %u ready %u", r, (unsigned long long)guest_rip(vm),
		       vm->run->if_flag, vm->run->ready_for_interrupt_injection);
	ASSERT_EQ(0, inject(vm, 0x42)) TH_LOG("INTERRUPT: %s", strerror(errno));
	r = vm_run(vm);
	e = irq_log(vm, 0);
	ASSERT_TRUE(r == SHADOWVM_EXIT_HLT && guest32(vm, IRQ_COUNT) == 1 && e.vector == 0x42 &&
		    e.eip == CODE + 2 && guest_rip(vm) == CODE + 3)
		TH_LOG("exit %d, %u interrupts, vector %#x EIP %#x (want %#x), RIP %#llx", r,
		       guest32(vm, IRQ_COUNT), e.vector, e.eip, CODE + 2, (unsigned long long)guest_rip(vm));
}

SVM_TEST(vm, hlt_wakes_on_queued_interrupt, API_TIMEOUT,
	 "sti; hlt with an interrupt queued while IF=0: the HLT does not reach userspace, the handler returns after it")
{
	/* sti; hlt (in the STI shadow); hlt */
	static const uint8_t code[] = { 0xfb, 0xf4, 0xf4 };
	struct vm *vm = &self->vm;
	struct irq_log_entry e;
	int r;

	ASSERT_EQ(0, irq_guest(vm, code, sizeof(code), 2)) TH_LOG("setup: %s", strerror(errno));
	ASSERT_EQ(0, inject(vm, 0x44)) TH_LOG("INTERRUPT: %s", strerror(errno));
	r = vm_run(vm);
	e = irq_log(vm, 0);
	ASSERT_TRUE(r == SHADOWVM_EXIT_HLT && guest_rip(vm) == CODE + 3 && guest32(vm, IRQ_COUNT) == 1 &&
		    e.vector == 0x44 && e.eip == CODE + 2)
		TH_LOG("exit %d RIP %#llx (want %#x), %u interrupts, vector %#x EIP %#x (want %#x)", r,
		       (unsigned long long)guest_rip(vm), CODE + 3, guest32(vm, IRQ_COUNT), e.vector, e.eip,
		       CODE + 2);
}

SVM_TEST(vm, exception_before_interrupt, API_TIMEOUT,
	 "an injected exception (SET_VCPU_EVENTS) is delivered before a queued interrupt, which follows after its IRET")
{
	static const uint8_t code[] = { 0xf4 };	/* hlt */
	struct shadowvm_vcpu_events ev = {
		.exception_injected = 1, .exception_nr = 6,	/* #UD */
		.interrupt_injected = 1, .interrupt_nr = 0x43,
	};
	struct vm *vm = &self->vm;
	struct irq_log_entry a, b;
	int r;

	ASSERT_EQ(0, irq_guest(vm, code, sizeof(code), 2 | RFLAGS_IF)) TH_LOG("setup: %s", strerror(errno));
	ASSERT_EQ(0, ioctl(vm->fd, SHADOWVM_SET_VCPU_EVENTS, &ev)) TH_LOG("%s", strerror(errno));
	r = vm_run(vm);
	a = irq_log(vm, 0);
	b = irq_log(vm, 1);
	ASSERT_TRUE(r == SHADOWVM_EXIT_HLT && guest32(vm, IRQ_COUNT) == 2 && a.vector == 6 && a.eip == CODE &&
		    b.vector == 0x43 && b.eip == CODE)
		TH_LOG("exit %d, %u entries: (%#x, %#x) (%#x, %#x)", r, guest32(vm, IRQ_COUNT), a.vector, a.eip,
		       b.vector, b.eip);
}

/*
 * The instruction in the shadow is the guest's first: fetching it exits on a shadow #PF,
 * after which the shadow must still hold (an exception ends it on the CPU).
 */
SVM_TEST(vm, nmi_after_sti_shadow, API_TIMEOUT,
	 "an NMI queued in an STI shadow (SET_VCPU_EVENTS) is taken after the instruction in the shadow, even when that instruction's fetch exits on a shadow #PF")
{
	static const uint8_t code[] = { 0x43, 0xf4 };	/* inc ebx (in the shadow); hlt */
	struct shadowvm_vcpu_events ev = { .interrupt_shadow = SHADOWVM_INTERRUPT_SHADOW_STI, .nmi_pending = 1 };
	struct shadowvm_regs regs = { 0 };
	struct vm *vm = &self->vm;
	uint32_t eip;

	ASSERT_EQ(0, irq_guest(vm, code, sizeof(code), 2 | RFLAGS_IF)) TH_LOG("setup: %s", strerror(errno));
	errno = 0;
	if (ioctl(vm->fd, SHADOWVM_SET_VCPU_EVENTS, &ev)) {
		if (errno == EOPNOTSUPP)
			SKIP(return, "the CPU has no virtual NMIs: NMI state answers EOPNOTSUPP");
		ASSERT_EQ(0, errno) TH_LOG("SET_VCPU_EVENTS: %s", strerror(errno));
	}
	ASSERT_EQ(1, run_to_out(_metadata, vm, 0x84));
	/* In the handler: the NMI frame's EIP is at the top of the stack. */
	ASSERT_EQ(0, ioctl(vm->fd, SHADOWVM_GET_REGS, &regs));
	eip = guest32(vm, (uint32_t)regs.rsp);
	ASSERT_TRUE(eip == CODE + 1 && regs.rbx == 1)
		TH_LOG("NMI return EIP %#x (want %#x), EBX %llu", eip, CODE + 1, (unsigned long long)regs.rbx);
	ASSERT_EQ(1, run_to_out(_metadata, vm, 0x85));
	ASSERT_EQ(SHADOWVM_EXIT_HLT, vm_run(vm));
}

SVM_TEST(vm, nmi_blocked_until_iret, API_TIMEOUT,
	 "an NMI runs the guest's NMI handler; NMIs sent inside it (two, kept as one) wait for its IRET")
{
	static const uint8_t code[] = { 0xf4 };	/* hlt */
	struct shadowvm_vcpu_events ev;
	struct vm *vm = &self->vm;
	int r;

	ASSERT_EQ(0, irq_guest(vm, code, sizeof(code), 2)) TH_LOG("setup: %s", strerror(errno));
	errno = 0;
	if (ioctl(vm->fd, SHADOWVM_NMI, 0)) {
		if (errno == EOPNOTSUPP)
			SKIP(return, "the CPU has no virtual NMIs: SHADOWVM_NMI answers EOPNOTSUPP");
		ASSERT_EQ(0, errno) TH_LOG("NMI: %s", strerror(errno));
	}
	ASSERT_EQ(1, run_to_out(_metadata, vm, 0x84));
	ASSERT_EQ(0, ioctl(vm->fd, SHADOWVM_GET_VCPU_EVENTS, &ev));
	ASSERT_TRUE(ev.nmi_masked == 1 && ev.nmi_pending == 0)
		TH_LOG("in the handler: masked %u pending %u", ev.nmi_masked, ev.nmi_pending);
	ASSERT_EQ(0, ioctl(vm->fd, SHADOWVM_NMI, 0));
	ASSERT_EQ(0, ioctl(vm->fd, SHADOWVM_NMI, 0));
	ASSERT_EQ(0, ioctl(vm->fd, SHADOWVM_GET_VCPU_EVENTS, &ev));
	ASSERT_EQ(1, ev.nmi_pending) TH_LOG("two NMIs while masked: %u pending", ev.nmi_pending);
	/* Still the first NMI: not nested. */
	ASSERT_EQ(1, run_to_out(_metadata, vm, 0x85));
	/* Its IRET opens the NMI window: the second one. */
	ASSERT_EQ(2, run_to_out(_metadata, vm, 0x84));
	ASSERT_EQ(2, run_to_out(_metadata, vm, 0x85));
	r = vm_run(vm);
	ASSERT_EQ(0, ioctl(vm->fd, SHADOWVM_GET_VCPU_EVENTS, &ev));
	ASSERT_TRUE(r == SHADOWVM_EXIT_HLT && guest32(vm, NMI_COUNT) == 2 && ev.nmi_masked == 0 &&
		    ev.nmi_pending == 0 && guest32(vm, IRQ_COUNT) == 0)
		TH_LOG("exit %d, %u NMIs, masked %u pending %u, %u other interrupts", r, guest32(vm, NMI_COUNT),
		       ev.nmi_masked, ev.nmi_pending, guest32(vm, IRQ_COUNT));
}

int main(int argc, char **argv)
{
	/* Runs after suites that unload the module. */
	shadowvm_ensure_loaded();
	return test_harness_run(argc, argv);
}
