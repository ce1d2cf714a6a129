// SPDX-License-Identifier: GPL-2.0
/*
 * ioctl/mmap fuzzer for /dev/shadowvm. Random and structured-invalid calls against fresh
 * VMs, VMs with memory, VMs with a vCPU and VMs that have run a guest: every command number
 * in every direction and many sizes, random command numbers in and near the 0xB7 space,
 * NULL/unmapped/unaligned/kernel/read-only pointers, huge GET_STATS counts, wrong order,
 * repeated creation, mmap with odd offsets/lengths/flags, RUN with randomized register and
 * segment state that passed the module's validation, two threads hammering one VM (RUN,
 * SET_REGS, GET/SET_SREGS, GET_STATS, mmap/munmap of RAM and run page, and close of the fd
 * while the other thread is inside a call), and allocation failures injected into every
 * allocation the module's calls make (fail-nth, then failslab/fail_page_alloc at random,
 * only in this process and only during shadowvm calls) where the kernel has them.
 *
 * Every call must succeed or fail with an errno of the documented set
 * (Documentation/uapi.md "Errors"), and no phase may leave a kernel splat in /dev/kmsg.
 * One TAP result per phase; the first offending calls are printed. Reproducible (but for
 * the thread interleaving): usage fuzz [seed [seconds]], the seed is printed; the time
 * budget bounds every phase (default 50 s in total).
 *
 * Guests only ever run with an IDT the CPU cannot read without a #PF that shadowvm
 * intercepts (see include/shadowvm_util.h).
 *
 * Reports through the kernel's kselftest.h (one phase, one result); the VMs are the shared
 * library's (lib/vm.c) with what this fuzzer tracks of them on top.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <regex.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
#include "shadowvm.h"
#include "shadowvm_ksft.h"
#include "shadowvm_util.h"

#define MEM_SIZE (4u << 20)
#define NBAD_SHOWN 12
#ifndef ARRAY_SIZE
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#endif

static __thread uint64_t rng;	/* per thread: the two-thread phase draws from both */
static uint64_t rnd(void)
{
	rng ^= rng >> 12;
	rng ^= rng << 25;
	rng ^= rng >> 27;
	return rng * 0x2545f4914f6cdd1dull;
}
static uint64_t below(uint64_t n) { return n ? rnd() % n : 0; }

static double deadline;

/* Counters of one phase (per thread, summed by the phase) and of the whole run. */
static __thread unsigned long calls, runs;
static unsigned long total_calls, total_runs, nbad;
static char bad_log[NBAD_SHOWN][160];

/*
 * EOPNOTSUPP: SHADOWVM_NMI on a CPU without virtual NMIs. EIO: SHADOWVM_GET_TSC_KHZ on a
 * kernel without a calibrated TSC.
 */
static const int ioctl_ok[] = { ENOTTY, EINVAL, EFAULT, EEXIST, EBUSY, ENOMEM, E2BIG, EINTR, EOPNOTSUPP, EIO, 0 };
static const int open_ok[] = { EMFILE, ENOMEM, 0 };
static const int mmap_ok[] = { EINVAL, ENOMEM, EOVERFLOW, 0 };
static const int mmap_exec_ok[] = { EINVAL, ENOMEM, EOVERFLOW, EPERM, 0 };
/* Calls that cannot fail (a state the module accepted before, a read of the state). */
static const int must_work[] = { 0 };
/* An allocation that fails can only make a call fail with ENOMEM. */
static const int nomem_ok[] = { ENOMEM, 0 };

static void bad(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void bad(const char *fmt, ...)
{
	unsigned long n = __atomic_fetch_add(&nbad, 1, __ATOMIC_RELAXED);
	va_list ap;

	if (n < NBAD_SHOWN) {
		va_start(ap, fmt);
		vsnprintf(bad_log[n], sizeof(bad_log[0]), fmt, ap);
		va_end(ap);
	}
}

static int allowed_errno(int e, const int *allowed)
{
	for (const int *a = allowed; *a; a++)
		if (e == *a)
			return 1;
	return 0;
}

static void verdict(const char *what, unsigned long cmd, long rc, int e, const int *allowed)
{
	calls++;
	if (rc >= 0 || allowed_errno(e, allowed))
		return;
	bad("%s cmd %#lx: rc %ld errno %d (%s)", what, cmd, rc, e, strerror(e));
}

/*
 * Kernel log lines that are splats (the same classes scripts/tap-summary.py fails a boot
 * on), read from /dev/kmsg so each phase answers for what happened during it.
 */
static int kmsg_fd = -1;
static char kmsg_first[200];
static unsigned long kmsg_splats;

static void kmsg_skip(void)
{
	if (kmsg_fd < 0)
		kmsg_fd = open("/dev/kmsg", O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	if (kmsg_fd >= 0)
		lseek(kmsg_fd, 0, SEEK_END);
	kmsg_splats = 0;
	kmsg_first[0] = 0;
}

static void kmsg_scan(void)
{
	/* POSIX ERE of the SPLAT pattern in scripts/tap-summary.py (\\b spelled out). */
	static const char ere[] =
		"(^|[^A-Za-z0-9_])(BUG:|WARNING:|Oops|general protection fault|Kernel panic|"
		"kernel BUG|Call Trace:|UBSAN:|KASAN:|refcount_t:|INFO: task .* blocked|"
		"watchdog: BUG|hard LOCKUP|unreferenced object|list_(add|del) corruption|"
		"INFO: rcu_[A-Za-z0-9_]+ (self-)?detected (expedited )?stall|"
		"unchecked MSR access error|csd: .*CSD lock \\(#|BUG [A-Za-z0-9_.-]+ \\(|"
		"kmemleak: .*(disabled|[Cc]annot))";
	static regex_t re;
	static int compiled;
	char rec[1024];
	ssize_t n;

	if (!compiled && regcomp(&re, ere, REG_EXTENDED | REG_NOSUB) == 0)
		compiled = 1;
	while (kmsg_fd >= 0) {
		n = read(kmsg_fd, rec, sizeof(rec) - 1);
		if (n < 0 && errno == EPIPE)
			continue;	/* records overwritten: read on */
		if (n <= 0)
			break;
		rec[n] = 0;
		char *msg = strchr(rec, ';');
		msg = msg ? msg + 1 : rec;
		msg[strcspn(msg, "\n")] = 0;
		if (compiled && regexec(&re, msg, 0, NULL, 0) == 0 && kmsg_splats++ == 0)
			snprintf(kmsg_first, sizeof(kmsg_first), "%.190s", msg);
	}
}

static double phase_start;

static void phase_begin(void)
{
	calls = runs = nbad = 0;
	kmsg_skip();
	phase_start = now();
}

static void phase_end(const char *name)
{
	char desc[240];

	kmsg_scan();
	total_calls += calls;
	total_runs += runs;
	snprintf(desc, sizeof(desc),
		 "%s: %lu calls (%lu guest runs) in %.1f s, each succeeded or gave a documented "
		 "errno",
		 name, calls, runs, now() - phase_start);
	if (kmsg_splats) {
		svm_result(0, desc, "%lu kernel log line(s) of a splat in this phase; first: %s",
			   kmsg_splats, kmsg_first);
		return;
	}
	svm_result(nbad == 0 && calls > 0, desc, "%lu calls out of the documented set; first ones:", nbad);
	for (unsigned long i = 0; i < nbad && i < NBAD_SHOWN; i++)
		printf("#   %s\n", bad_log[i]);
}

/* ---- pointers of every kind ---- */
static uint8_t *rw_page, *ro_page, *gap_page;	/* gap_page: unmapped; rw_page is followed by a guard page */

static void pointers_init(void)
{
	uint8_t *p = mmap(NULL, 3 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	rw_page = p;
	mprotect(p + 4096, 4096, PROT_NONE);
	gap_page = p + 2 * 4096;
	munmap(gap_page, 4096);
	ro_page = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
}

/* A pointer argument of a random class; fills the valid buffer with random or zero bytes. */
static unsigned long rand_arg(void)
{
	switch (below(13)) {
	case 0: return 0;
	case 1: return (unsigned long)gap_page;
	case 2: return (unsigned long)rw_page + 1 + below(7);	/* unaligned */
	case 3: return 0xffffffff81000000ul;			/* kernel text */
	case 4: return 0xffff888000000000ul + below(1ul << 30);	/* direct map */
	case 5:
		for (int i = 0; i < 4096; i += 8)
			*(uint64_t *)(rw_page + i) = rnd();
		return (unsigned long)rw_page;
	case 6:
		memset(rw_page, 0, 4096);
		return (unsigned long)rw_page;
	case 7: return (unsigned long)rw_page + 4096 - 8 * below(40);	/* runs into the guard page */
	case 8: return below(4096);
	case 9: return ~0ul - below(4096);
	case 10: return (unsigned long)ro_page;
	case 11: return 0x00007ffffffff000ul + below(4096);	/* top of user space */
	default: return rnd();
	}
}

static const unsigned long known_cmds[] = {
	SHADOWVM_GET_API_VERSION, SHADOWVM_SET_MEMORY, SHADOWVM_CREATE_VCPU, SHADOWVM_GET_REGS,
	SHADOWVM_SET_REGS, SHADOWVM_GET_SREGS, SHADOWVM_SET_SREGS, SHADOWVM_RUN, SHADOWVM_GET_STATS,
	/* ABI v2: capabilities, memory slots, FPU, interrupts, MSRs, CPUID, TSC */
	SHADOWVM_CHECK_CAP, SHADOWVM_SET_MEMORY_REGION, SHADOWVM_GET_FPU, SHADOWVM_SET_FPU,
	SHADOWVM_INTERRUPT, SHADOWVM_NMI, SHADOWVM_GET_VCPU_EVENTS, SHADOWVM_SET_VCPU_EVENTS,
	SHADOWVM_GET_MSRS, SHADOWVM_SET_MSRS, SHADOWVM_GET_SUPPORTED_CPUID, SHADOWVM_SET_CPUID,
	SHADOWVM_GET_TSC_KHZ,
};

/* ---- VMs ---- */
/* A library VM whose mappings are NULL when absent, and what the module holds of it. */
struct fvm {
	struct vm vm;		/* vm.vm.mem_size: of the mapping at vm.vm.mem */
	int has_mem, has_vcpu;
};

static int fvm_open(struct fvm *f)
{
	memset(f, 0, sizeof(*f));
	if (vm_open(&f->vm))
		return -1;
	f->vm.mem = NULL;
	f->vm.run = NULL;
	return 0;
}

static int fvm_setup(struct fvm *f)
{
	memset(f, 0, sizeof(*f));
	if (vm_create_bare(&f->vm, MEM_SIZE))
		return -1;
	f->has_mem = f->has_vcpu = 1;
	return 0;
}

static void fvm_close(struct fvm *f)
{
	vm_destroy(&f->vm);
	memset(f, 0, sizeof(*f));
	f->vm.fd = -1;
}

/*
 * Guest programs at 0x1000 (all with paging on through a 4 MiB page at 0 and the IDT at
 * 8 MiB, unmapped: any exception ends in a #PF that shadowvm sees, then a triple fault it
 * reports as SHUTDOWN).
 */
static const struct {
	const char *name;
	uint8_t code[16];
	int len;
} progs[] = {
	{ "hlt", { 0xf4 }, 1 },
	{ "out", { 0xb0, 0x41, 0xe6, 0x80, 0xf4 }, 5 },
	{ "in", { 0xe4, 0x81, 0xf4 }, 3 },
	{ "ud2", { 0x0f, 0x0b }, 2 },
	{ "loop", { 0xeb, 0xfe }, 2 },
	{ "mmio", { 0xa1, 0x00, 0x00, 0x00, 0xf0, 0xf4 }, 6 },			/* mov 0xf0000000, %eax */
	{ "mmio-write", { 0xa3, 0x00, 0x10, 0x00, 0xf0, 0xf4 }, 6 },		/* mov %eax, 0xf0001000 */
	{ "unmapped", { 0xa1, 0x00, 0x00, 0x00, 0x01, 0xf4 }, 6 },		/* read at 16 MiB: #PF */
	{ "vmcall", { 0x0f, 0x01, 0xc1, 0xf4 }, 4 },
	{ "cpuid", { 0x0f, 0xa2, 0xf4 }, 3 },
	{ "rdmsr", { 0x0f, 0x32, 0xf4 }, 3 },					/* MSR in ECX (random) */
	{ "mov-cr3", { 0x0f, 0x22, 0xd8, 0xf4 }, 4 },				/* mov %eax, %cr3 (random) */
	{ "mov-cr0", { 0x0f, 0x22, 0xc0, 0xf4 }, 4 },				/* mov %eax, %cr0 */
	{ "mov-cr4", { 0x0f, 0x22, 0xe0, 0xf4 }, 4 },				/* mov %eax, %cr4 */
	{ "wrmsr", { 0x0f, 0x30, 0xf4 }, 3 },
	{ "vmxon", { 0xf3, 0x0f, 0xc7, 0x30, 0xf4 }, 5 },			/* vmxon (%eax) */
	{ "int3", { 0xcc, 0xf4 }, 2 },
	{ "pt-write", { 0xa3, 0x00, 0x20, 0x00, 0x00, 0xf4 }, 6 },		/* mov %eax, 0x2000 (the PD) */
	{ "rep-ins", { 0xf3, 0x6c, 0xf4 }, 3 },
	{ "invlpg", { 0x0f, 0x01, 0x38, 0xf4 }, 4 },				/* invlpg (%eax) */
	{ "mov-dr7", { 0x0f, 0x23, 0xf8, 0xf4 }, 4 },				/* mov %eax, %dr7 */
};

/*
 * The vCPU reset state with the paging and IDT of vm_safe_sregs() (lib/vm.c), taken from a pristine VM at the
 * start. Every run starts from it, whatever an earlier SET_SREGS or guest left behind.
 */
static struct shadowvm_sregs safe_sregs;

static void load_prog(uint8_t *mem, int prog)
{
	memset(mem, 0, 0x3000);
	/* HLTs after the program: a RUN after the HLT exit stops at once again. */
	memset(mem + GUEST_CODE, 0xf4, 0x1000);
	memcpy(mem + GUEST_CODE, progs[prog].code, progs[prog].len);
	*(uint32_t *)(mem + GUEST_PD) = 0x83;	/* PDE 0: 4 MiB page, present, writable */
}

static void random_regs(struct shadowvm_regs *r, uint64_t mem_size)
{
	memset(r, 0, sizeof(*r));
	r->rip = GUEST_CODE;
	r->rflags = 2;
	r->rsp = GUEST_STACK;
	r->rax = below(2) ? rnd() : below(mem_size);
	r->rcx = below(2) ? (uint32_t)rnd() : 0xc0000000u + below(0x200);
	r->rdx = rnd();
	r->rbx = rnd();
}

static int safe_state(struct fvm *vm, int prog)
{
	struct shadowvm_regs r;

	load_prog(vm->vm.mem, prog);
	random_regs(&r, MEM_SIZE);
	/* A state SET_SREGS accepted once must be accepted again, from any state. */
	errno = 0;
	long rc = ioctl(vm->vm.fd, SHADOWVM_SET_SREGS, &safe_sregs);
	verdict("SET_SREGS of the saved safe state", SHADOWVM_SET_SREGS, rc, errno, must_work);
	if (rc)
		return -1;
	errno = 0;
	rc = ioctl(vm->vm.fd, SHADOWVM_SET_REGS, &r);
	verdict("SET_REGS of a safe state", SHADOWVM_SET_REGS, rc, errno, must_work);
	return rc ? -1 : 0;
}

/* Exit reasons of the RUNs of run_some() (the last slot: anything else). */
static unsigned long exits[SHADOWVM_EXIT_INTR + 2];

/* RUN a few times (answering I/O and MMIO with random data); every errno checked. */
static void run_some(struct fvm *vm, int rounds)
{
	for (int i = 0; i < rounds; i++) {
		errno = 0;
		long rc = ioctl(vm->vm.fd, SHADOWVM_RUN, 0);
		verdict("RUN", SHADOWVM_RUN, rc, errno, ioctl_ok);
		runs++;
		if (rc)
			return;
		exits[vm->vm.run->exit_reason <= SHADOWVM_EXIT_INTR ? vm->vm.run->exit_reason
								  : SHADOWVM_EXIT_INTR + 1]++;
		switch (vm->vm.run->exit_reason) {
		case SHADOWVM_EXIT_IO:
			vm->vm.run->exit.io.data = rnd();
			break;
		case SHADOWVM_EXIT_MMIO:
			*(uint64_t *)vm->vm.run->exit.mmio.data = rnd();
			break;
		case SHADOWVM_EXIT_HYPERCALL:
			vm->vm.run->exit.hypercall.ret = rnd();
			break;
		case SHADOWVM_EXIT_INTR:
			break;
		default:
			return;	/* HLT, SHUTDOWN, FAIL_ENTRY, INTERNAL_ERROR: state is final */
		}
	}
}

/* One random ioctl against vm; RUN only from a safe state. */
static void random_ioctl(struct fvm *vm, unsigned long cmd, unsigned long arg)
{
	if (cmd == SHADOWVM_RUN && arg == 0) {
		if (vm->has_vcpu && vm->vm.run && vm->vm.run != MAP_FAILED && vm->vm.mem && vm->vm.mem != MAP_FAILED &&
		    safe_state(vm, below(ARRAY_SIZE(progs))) == 0)
			run_some(vm, 2);
		return;
	}
	/* SET_SREGS with random bytes: accepted states are made safe again before any RUN. */
	errno = 0;
	long rc = ioctl(vm->vm.fd, cmd, arg);
	verdict("ioctl", cmd, rc, errno, ioctl_ok);
	if (cmd == SHADOWVM_SET_MEMORY && rc == 0)
		vm->has_mem = 1;
	if (cmd == SHADOWVM_CREATE_VCPU && rc == 0)
		vm->has_vcpu = 1;
}

/* Phase 1: every nr 0..0x1f in every direction with many sizes, random arguments. */
static void phase_enumerate(struct fvm *vm)
{
	static const unsigned sizes[] = { 0, 1, 4, 8, 15, 16, 17, 56, 143, 144, 145, 271, 272, 273, 4096, 0x3fff };

	for (unsigned nr = 0; nr < 0x20; nr++)
		for (unsigned dir = 0; dir < 4; dir++)
			for (unsigned s = 0; s < ARRAY_SIZE(sizes); s++)
				for (int k = 0; k < 3; k++)
					random_ioctl(vm, (unsigned long)dir << 30 | sizes[s] << 16 | 0xB7 << 8 | nr,
						     rand_arg());
	/* The real numbers, many argument kinds each. */
	for (int k = 0; k < 40; k++)
		for (unsigned c = 0; c < ARRAY_SIZE(known_cmds); c++)
			random_ioctl(vm, known_cmds[c], rand_arg());
}

/* Phase 2: random command numbers: fully random, other types near 0xB7, random nr. */
static void phase_random_cmds(struct fvm *vm, int n)
{
	for (int i = 0; i < n && now() < deadline; i++) {
		unsigned long cmd;

		switch (below(4)) {
		case 0: cmd = (uint32_t)rnd(); break;
		case 1: cmd = ((uint32_t)rnd() & 0xffff00ff) | (0xB5 + below(5)) << 8; break;
		case 2: cmd = known_cmds[below(ARRAY_SIZE(known_cmds))] ^ (1ul << below(32)); break;
		default: cmd = known_cmds[below(ARRAY_SIZE(known_cmds))] | rnd() << 32; break; /* high bits */
		}
		random_ioctl(vm, cmd, rand_arg());
	}
}

/* Phase 3: SET_MEMORY sizes/flags, order, repeated creation, on fresh VMs. */
static void phase_setup_order(int n)
{
	for (int i = 0; i < n && now() < deadline; i++) {
		struct fvm vm;
		if (fvm_open(&vm)) {
			verdict("open", 0, -1, errno, open_ok);
			continue;
		}
		for (int k = 0; k < 12; k++) {
			struct shadowvm_memory m;
			switch (below(6)) {
			case 0:
				m.size = (1 + below(16)) << 12;
				m.flags = below(4) ? 0 : rnd();
				random_ioctl(&vm, SHADOWVM_SET_MEMORY, (unsigned long)&m);
				break;
			case 1:
				m.size = below(2) ? rnd() : (rnd() & ~0xfffull) >> below(64);
				m.flags = 0;
				random_ioctl(&vm, SHADOWVM_SET_MEMORY, (unsigned long)&m);
				break;
			case 2:
				random_ioctl(&vm, SHADOWVM_CREATE_VCPU, below(3) ? 0 : rnd());
				break;
			default:
				random_ioctl(&vm, known_cmds[below(ARRAY_SIZE(known_cmds))], rand_arg());
				break;
			}
		}
		close(vm.vm.fd);
	}
}

/* Phase 4: GET_STATS with huge and odd counts, flags and entry pointers. */
static void phase_stats(struct fvm *vm, int n)
{
	for (int i = 0; i < n && now() < deadline; i++) {
		struct shadowvm_stats st;
		static const uint32_t counts[] = { 0, 1, 2, 511, 512, 513, 0x7fffffff, 0xffffffff };

		st.count = below(2) ? counts[below(ARRAY_SIZE(counts))] : (uint32_t)rnd();
		st.flags = below(5) ? 0 : (uint32_t)rnd();
		/* A pointer whose buffer ends at the guard page after a few entries. */
		st.entries = below(2) ? rand_arg()
				      : (unsigned long)rw_page + 4096 - sizeof(struct shadowvm_stat_entry) * below(73);
		errno = 0;
		long rc = ioctl(vm->vm.fd, SHADOWVM_GET_STATS, &st);
		verdict("GET_STATS", SHADOWVM_GET_STATS, rc, errno, ioctl_ok);
	}
}

/* Phase 5: mmap with odd offsets, lengths, flags and protections; touches what maps. */
static sigjmp_buf touch_jmp;
static void on_fault(int sig)
{
	siglongjmp(touch_jmp, sig);
}

/* Touch the first and last page; a SIGBUS/SIGSEGV on a mapping we chose oddly is fine. */
static __attribute__((noinline)) void touch(uint8_t *p, unsigned long len, int prot, int may_write)
{
	if (sigsetjmp(touch_jmp, 1) == 0) {
		volatile uint8_t *v = p;
		if (prot & PROT_READ)
			(void)v[0], (void)v[(len - 1) & ~0xffful];
		if ((prot & PROT_WRITE) && may_write)	/* never the run page's header */
			v[0] = (uint8_t)rnd();
	}
}

static void phase_mmap(struct fvm *vm, int n)
{
	static const unsigned long offs[] = { 0, 4096, MEM_SIZE - 4096, MEM_SIZE, SHADOWVM_RUN_MMAP_OFFSET,
					      SHADOWVM_RUN_MMAP_OFFSET + 4096, SHADOWVM_RUN_MMAP_OFFSET - 4096,
					      1ul << 52, ~0ul << 12 };
	static const unsigned long lens[] = { 1, 4095, 4096, 8192, MEM_SIZE, MEM_SIZE + 4096, 1ul << 40, ~0ul >> 1 };
	static const int flagset[] = { MAP_SHARED, MAP_PRIVATE, MAP_SHARED | MAP_POPULATE, MAP_SHARED | MAP_NORESERVE,
				       MAP_SHARED_VALIDATE, MAP_PRIVATE | MAP_POPULATE, MAP_SHARED | MAP_LOCKED };
	static const int prots[] = { PROT_READ, PROT_READ | PROT_WRITE, PROT_NONE, PROT_WRITE, PROT_READ | PROT_EXEC };

	signal(SIGBUS, on_fault);
	signal(SIGSEGV, on_fault);
	for (int i = 0; i < n && now() < deadline; i++) {
		unsigned long off = below(3) ? offs[below(ARRAY_SIZE(offs))] : (rnd() & ~0xffful) >> below(64);
		unsigned long len = below(3) ? lens[below(ARRAY_SIZE(lens))] : 1 + below(2 * MEM_SIZE);
		int flags = flagset[below(ARRAY_SIZE(flagset))], prot = prots[below(ARRAY_SIZE(prots))];

		errno = 0;
		uint8_t *p = mmap(NULL, len, prot, flags, vm->vm.fd, off);
		if (p == MAP_FAILED) {
			verdict("mmap", off, -1, errno, prot & PROT_EXEC ? mmap_exec_ok : mmap_ok);
			continue;
		}
		verdict("mmap", off, 0, 0, mmap_ok);
		touch(p, len, prot, off < MEM_SIZE);
		if (below(4) == 0) {
			errno = 0;
			void *q = mremap(p, len, len + 4096, MREMAP_MAYMOVE);
			if (q != MAP_FAILED)
				p = q, len += 4096;
		}
		munmap(p, len);
	}
	signal(SIGBUS, SIG_DFL);
	signal(SIGSEGV, SIG_DFL);
}

/* Phase 6: RUN from randomized register and segment state that SET_SREGS accepted. */
static void mutate_seg(struct shadowvm_segment *s)
{
	switch (below(8)) {
	case 0: s->base = below(2) ? rnd() : below(MEM_SIZE); break;
	case 1: s->limit = (uint32_t)rnd(); break;
	case 2: s->selector = (uint16_t)rnd(); break;
	case 3: s->type = below(16); break;
	case 4: s->dpl = below(4); break;
	case 5: s->db = below(2); s->l = below(2); break;
	case 6: s->g = below(2); s->avl = below(2); break;
	default: s->unusable = below(2); break;
	}
}

/* GET_SREGS and GET_REGS of a VM with a vCPU: both must work. */
static int get_state(struct fvm *vm, struct shadowvm_sregs *s, struct shadowvm_regs *r)
{
	errno = 0;
	long rc = ioctl(vm->vm.fd, SHADOWVM_GET_SREGS, s);
	verdict("GET_SREGS", SHADOWVM_GET_SREGS, rc, errno, must_work);
	if (rc)
		return -1;
	rc = ioctl(vm->vm.fd, SHADOWVM_GET_REGS, r);
	verdict("GET_REGS", SHADOWVM_GET_REGS, rc, errno, must_work);
	return rc ? -1 : 0;
}

static void phase_run_states(struct fvm *vm)
{
	static const char *const names[] = { "none", "io", "mmio", "hlt", "hypercall", "shutdown",
					     "fail_entry", "internal_error", "intr" };
	unsigned long accepted = 0, fresh = 0;

	memset(exits, 0, sizeof(exits));
	while (now() < deadline) {
		struct shadowvm_sregs s;
		struct shadowvm_regs r;
		int prog = below(ARRAY_SIZE(progs));

		/* Back to the saved safe state; a VM that cannot take it any more is replaced. */
		if (safe_state(vm, prog) || get_state(vm, &s, &r)) {
			fvm_close(vm);
			fresh++;
			if (fvm_setup(vm) || safe_state(vm, prog) || get_state(vm, &s, &r)) {
				bad("RUN phase: a fresh VM does not take the safe state: %s",
				    strerror(errno));
				break;
			}
		}
		for (int k = 1 + below(3); k > 0; k--) {
			switch (below(10)) {
			case 0: s.cr0 ^= 1ull << below(32); break;
			case 1: s.cr4 ^= 1ull << below(24); break;
			case 2: s.efer ^= 1ull << below(16); break;
			case 3: s.cr3 = below(2) ? rnd() & 0xfffff000u : 0x2000 + 8 * below(512); break;
			case 4: s.cr2 = rnd(); break;
			case 5: s.gdt.base = rnd(); s.gdt.limit = (uint16_t)rnd(); break;
			case 6: mutate_seg(&(&s.cs)[below(8)]); break;
			default: {
				/* registers: anything SET_REGS takes */
				uint64_t *g = (uint64_t *)&r;
				g[below(16)] = rnd();
				uint64_t fixed = 1ull << 3 | 1ull << 5 | 1ull << 15 | 1ull << 17;
				r.rflags = (r.rflags | 2) ^ ((1ull << below(22)) & ~fixed);
				break;
			}
			}
		}
		/* The IDT stays where only a #PF can reach it (see include/shadowvm_util.h). */
		s.idt.base = GUEST_IDT;
		s.idt.limit = 0x7ff;
		errno = 0;
		long rc = ioctl(vm->vm.fd, SHADOWVM_SET_SREGS, &s);
		verdict("SET_SREGS", SHADOWVM_SET_SREGS, rc, errno, ioctl_ok);
		if (rc)
			continue;
		errno = 0;
		rc = ioctl(vm->vm.fd, SHADOWVM_SET_REGS, &r);
		verdict("SET_REGS", SHADOWVM_SET_REGS, rc, errno, ioctl_ok);
		accepted++;
		run_some(vm, 3);
	}
	printf("# %lu randomized states accepted and run (%lu fresh VMs); exits:", accepted, fresh);
	for (unsigned i = 0; i < ARRAY_SIZE(exits); i++)
		if (exits[i])
			printf(" %s %lu", i < ARRAY_SIZE(names) ? names[i] : "other", exits[i]);
	printf("\n");
}

/* ---- Phase 8: two threads on one VM ---- */

/*
 * Thread 0 owns the VM: its mappings, the guest code, and now and then it closes the fd
 * (while thread 1 is likely inside a call) and publishes a fresh VM. hm_gen is odd while it
 * does; a call of thread 1 that overlapped a replacement may also fail with EBADF.
 */
static struct fvm hm_vm;
static int hm_fd = -1;
static unsigned hm_gen;
static volatile int hm_in_call;		/* thread 1: 0 outside a call, 1 in one, 2 in RUN */
static unsigned long hm_closes, hm_closes_mid, hm_closes_mid_run, hm_setup_fail;

struct hammer {
	pthread_t th;
	int id;
	uint64_t seed;
	unsigned long calls, runs;
};

static int short_prog(void)
{
	for (;;) {
		int p = below(ARRAY_SIZE(progs));
		/* Not the loop: a RUN that spins holds the VM for a whole time slice. */
		if (strcmp(progs[p].name, "loop"))
			return p;
	}
}

static void hm_replace(void)
{
	struct shadowvm_regs r;
	int mid = hm_in_call;

	__atomic_add_fetch(&hm_gen, 1, __ATOMIC_SEQ_CST);
	hm_closes++;
	hm_closes_mid += mid != 0;
	hm_closes_mid_run += mid == 2;
	fvm_close(&hm_vm);
	random_regs(&r, MEM_SIZE);
	if (fvm_setup(&hm_vm) || (load_prog(hm_vm.vm.mem, short_prog()), 0) ||
	    ioctl(hm_vm.vm.fd, SHADOWVM_SET_SREGS, &safe_sregs) ||
	    ioctl(hm_vm.vm.fd, SHADOWVM_SET_REGS, &r))
		hm_setup_fail++;
	__atomic_store_n(&hm_fd, hm_vm.vm.fd, __ATOMIC_SEQ_CST);
	__atomic_add_fetch(&hm_gen, 1, __ATOMIC_SEQ_CST);
}

static void *hammer(void *arg)
{
	struct hammer *h = arg;
	struct shadowvm_stat_entry *st_buf = calloc(SHADOWVM_STATS_MAX, sizeof(*st_buf));

	rng = h->seed;
	calls = runs = 0;
	while (now() < deadline) {
		if (h->id == 0 && below(48) == 0) {
			hm_replace();
			continue;
		}
		if (h->id == 0 && below(16) == 0 && hm_vm.vm.mem && hm_vm.vm.mem != MAP_FAILED)
			load_prog(hm_vm.vm.mem, short_prog());	/* new code under a running guest */

		unsigned g0 = __atomic_load_n(&hm_gen, __ATOMIC_SEQ_CST), op = below(100);
		int fd = __atomic_load_n(&hm_fd, __ATOMIC_SEQ_CST);
		const int *allowed = ioctl_ok;
		const char *what;
		unsigned long cmd = 0;
		long rc;
		struct shadowvm_regs r;
		struct shadowvm_sregs sr;

		if (h->id)
			hm_in_call = op < 35 ? 2 : 1;
		errno = 0;
		if (op < 35) {
			what = "RUN", cmd = SHADOWVM_RUN;
			rc = ioctl(fd, SHADOWVM_RUN, 0);
			runs++;
		} else if (op < 50) {
			what = "SET_REGS", cmd = SHADOWVM_SET_REGS;
			random_regs(&r, MEM_SIZE);
			rc = ioctl(fd, SHADOWVM_SET_REGS, &r);
		} else if (op < 55) {
			what = "GET_REGS", cmd = SHADOWVM_GET_REGS;
			rc = ioctl(fd, SHADOWVM_GET_REGS, &r);
		} else if (op < 65) {
			/* The saved safe state, or a round trip of whatever the VM has now. */
			what = "GET_SREGS/SET_SREGS", cmd = SHADOWVM_SET_SREGS;
			rc = ioctl(fd, SHADOWVM_GET_SREGS, &sr);
			if (rc == 0)
				rc = ioctl(fd, SHADOWVM_SET_SREGS, below(3) ? &safe_sregs : &sr);
		} else if (op < 75) {
			struct shadowvm_stats st = { .count = SHADOWVM_STATS_MAX,
						     .entries = (uintptr_t)st_buf };
			what = "GET_STATS", cmd = SHADOWVM_GET_STATS;
			rc = st_buf ? ioctl(fd, SHADOWVM_GET_STATS, &st) : 0;
		} else {
			/* A part of RAM, or the run page: mapped, read, unmapped. */
			int ram = op < 90;
			size_t len = ram ? (1 + below(16)) << 12 : SHADOWVM_RUN_MMAP_SIZE;
			off_t off = ram ? below(MEM_SIZE / 4096 - 16) << 12
					: (off_t)SHADOWVM_RUN_MMAP_OFFSET;
			what = ram ? "mmap RAM" : "mmap run page", allowed = mmap_ok;
			volatile uint8_t *p = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, off);
			rc = p == MAP_FAILED ? -1 : 0;
			if (rc == 0) {
				(void)p[0];
				munmap((void *)p, len);
			}
		}
		int e = errno;
		if (h->id)
			hm_in_call = 0;
		unsigned g1 = __atomic_load_n(&hm_gen, __ATOMIC_SEQ_CST);
		if (rc < 0 && e == EBADF && (g0 != g1 || (g0 & 1)))
			calls++;	/* the fd was closed under this call */
		else
			verdict(what, cmd, rc, e, allowed);
	}
	free(st_buf);
	h->calls = calls;
	h->runs = runs;
	return NULL;
}

static void phase_two_threads(void)
{
	struct hammer h[2];

	hm_closes = hm_closes_mid = hm_closes_mid_run = hm_setup_fail = 0;
	hm_vm.vm.fd = -1;
	hm_replace();
	for (int i = 0; i < 2; i++) {
		h[i] = (struct hammer){ .id = i, .seed = rnd() | 1 };
		pthread_create(&h[i].th, NULL, hammer, &h[i]);
	}
	for (int i = 0; i < 2; i++) {
		pthread_join(h[i].th, NULL);
		calls += h[i].calls;
		runs += h[i].runs;
	}
	fvm_close(&hm_vm);
	printf("# two threads: %lu+%lu calls; %lu closes of the VM's fd, %lu of them while the "
	       "other thread was inside a call (%lu inside RUN)\n", h[0].calls, h[1].calls,
	       hm_closes, hm_closes_mid, hm_closes_mid_run);
	if (hm_setup_fail)
		bad("two threads: %lu fresh VMs could not be set up", hm_setup_fail);
	if (hm_closes_mid == 0)
		bad("two threads: no close happened while the other thread was inside a call");
}

/* ---- Phases 9 and 10: allocation failures ---- */

#define FI_DIR "/sys/kernel/debug/"
#define FI_MEM (64u << 10)
static int nth_fd = -1, mif_fd = -1, prob_fd[2] = { -1, -1 };

static int put(const char *path, const char *val)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	int ok = fd >= 0 && write(fd, val, strlen(val)) == (ssize_t)strlen(val);

	if (fd >= 0)
		close(fd);
	return ok ? 0 : -1;
}

static void fi_probability(unsigned p)
{
	char b[16];
	int n = snprintf(b, sizeof(b), "%u", p);

	/* write(), not pwrite(): debugfs attribute files are not seekable (ESPIPE). */
	for (int i = 0; i < 2; i++)
		if (write(prob_fd[i], b, n) != n)
			bad("fault injection: cannot set the probability: %s", strerror(errno));
}

static void make_it_fail(int on)
{
	if (pwrite(mif_fd, on ? "1" : "0", 1, 0) != 1)
		bad("fault injection: cannot write make-it-fail");
}

/*
 * Both failure points set so that, while nothing is asked for, nothing fails: probability 0;
 * when asked, only tasks with make-it-fail (this one, around a shadowvm call), GFP_KERNEL
 * allocations too (ignore-gfp-wait off), single pages too (min-order 0), silently (a dump of
 * every injected failure would be a splat in the log).
 */
static int fi_setup(void)
{
	static const char *const attrs[] = { "failslab", "fail_page_alloc" };
	static const char *const kv[][2] = {
		{ "probability", "0" }, { "interval", "1" }, { "times", "-1" }, { "space", "0" },
		{ "verbose", "0" }, { "task-filter", "Y" }, { "ignore-gfp-wait", "N" },
	};
	char path[128];
	int err = 0;

	for (int i = 0; i < 2; i++) {
		for (unsigned k = 0; k < ARRAY_SIZE(kv); k++) {
			snprintf(path, sizeof(path), FI_DIR "%s/%s", attrs[i], kv[k][0]);
			err |= put(path, kv[k][1]);
		}
		snprintf(path, sizeof(path), FI_DIR "%s/probability", attrs[i]);
		prob_fd[i] = open(path, O_WRONLY | O_CLOEXEC);
	}
	err |= put(FI_DIR "fail_page_alloc/min-order", "0");
	nth_fd = open("/proc/thread-self/fail-nth", O_RDWR | O_CLOEXEC);
	mif_fd = open("/proc/thread-self/make-it-fail", O_RDWR | O_CLOEXEC);
	return err || nth_fd < 0 || mif_fd < 0 || prob_fd[0] < 0 || prob_fd[1] < 0 ? -1 : 0;
}

enum { S_OPEN, S_MEMORY, S_VCPU, S_MAP_RAM, S_MAP_RUN, S_RUN, S_STATS, S_N };
static const char *const step_names[] = { "open", "SET_MEMORY", "CREATE_VCPU", "mmap RAM",
					  "mmap run page", "RUN", "GET_STATS" };
static struct shadowvm_stat_entry stat_buf[SHADOWVM_STATS_MAX];

/* One step of a VM's life on FI_MEM of memory; -1 with errno on failure. */
static long fi_step(struct fvm *vm, int step)
{
	struct shadowvm_memory m = { .size = FI_MEM };
	struct shadowvm_stats st = { .count = SHADOWVM_STATS_MAX, .entries = (uintptr_t)stat_buf };
	void *p;

	calls++;
	switch (step) {
	case S_OPEN:
		vm->vm.fd = open("/dev/shadowvm", O_RDWR | O_CLOEXEC);
		return vm->vm.fd < 0 ? -1 : 0;
	case S_MEMORY:
		return ioctl(vm->vm.fd, SHADOWVM_SET_MEMORY, &m);
	case S_VCPU:
		return ioctl(vm->vm.fd, SHADOWVM_CREATE_VCPU, 0);
	case S_MAP_RAM:
	case S_MAP_RUN:
		p = mmap(NULL, step == S_MAP_RAM ? FI_MEM : SHADOWVM_RUN_MMAP_SIZE,
			 PROT_READ | PROT_WRITE, MAP_SHARED, vm->vm.fd,
			 step == S_MAP_RAM ? 0 : SHADOWVM_RUN_MMAP_OFFSET);
		if (p == MAP_FAILED)
			return -1;
		if (step == S_MAP_RAM)
			vm->vm.mem = p, vm->vm.mem_size = FI_MEM;
		else
			vm->vm.run = p;
		return 0;
	case S_RUN:
		runs++;
		return ioctl(vm->vm.fd, SHADOWVM_RUN, 0);
	default:
		return ioctl(vm->vm.fd, SHADOWVM_GET_STATS, &st);
	}
}

/* What follows a step that succeeded: a safe guest state once the run page is mapped; HLT. */
static int fi_after(struct fvm *vm, int step)
{
	struct shadowvm_regs r = { .rip = GUEST_CODE, .rflags = 2, .rsp = GUEST_STACK };

	if (step == S_MAP_RUN) {
		load_prog(vm->vm.mem, 0);	/* hlt */
		if (ioctl(vm->vm.fd, SHADOWVM_SET_SREGS, &safe_sregs) ||
		    ioctl(vm->vm.fd, SHADOWVM_SET_REGS, &r))
			return -1;
	}
	if (step == S_RUN && vm->vm.run->exit_reason != SHADOWVM_EXIT_HLT) {
		errno = EPROTO;	/* stands for "ran, but not to HLT" */
		return -1;
	}
	return 0;
}

/* A step without injection. */
static int fi_step_plain(struct fvm *vm, int step)
{
	return fi_step(vm, step) || fi_after(vm, step) ? -1 : 0;
}

static unsigned long fi_sites, fi_failed, fi_random_calls, fi_random_enomem;
static int fi_steps_done;

/*
 * Phase 9: the n-th allocation check of one step of a VM's life fails (fail-nth), for
 * n = 1, 2, ... until the step makes fewer than n: every allocation of every step fails
 * once. The step must fail with ENOMEM or succeed (kmemleak's own allocations fall back to
 * a pool), and the VM must recover: the step again, the rest of its life, RUN to HLT.
 */
static void phase_fail_nth(void)
{
	for (int step = 0; step < S_N && now() < deadline; step++) {
		for (unsigned n = 1; n < 2000 && now() < deadline; n++) {
			struct fvm vm = { .vm.fd = -1 };
			int k, ok = 1;
			char b[16], left[16] = "";

			for (k = 0; k < step && ok; k++)
				ok = fi_step_plain(&vm, k) == 0;
			if (!ok) {
				bad("fail-nth: %s without injection: %s", step_names[k - 1],
				    strerror(errno));
				fvm_close(&vm);
				return;
			}
			int len = snprintf(b, sizeof(b), "%u", n);
			if (pwrite(nth_fd, b, len, 0) != len) {
				bad("fail-nth: cannot write /proc/thread-self/fail-nth");
				return;
			}
			errno = 0;
			long rc = fi_step(&vm, step);
			int e = errno;
			if (pread(nth_fd, left, sizeof(left) - 1, 0) <= 0 ||
			    pwrite(nth_fd, "0", 1, 0) != 1)
				bad("fail-nth: cannot read /proc/thread-self/fail-nth");
			if (atoi(left) != 0) {
				/* Fewer than n checks: each allocation of the step failed once. */
				if (rc)
					bad("fail-nth: %s failed without an injected failure: %s",
					    step_names[step], strerror(e));
				fvm_close(&vm);
				break;
			}
			fi_sites++;
			if (rc) {
				fi_failed++;
				if (!allowed_errno(e, nomem_ok))
					bad("fail-nth %u in %s: errno %d (%s)", n, step_names[step],
					    e, strerror(e));
			}
			if (rc == 0 && fi_after(&vm, step))
				ok = 0;	/* reported below as a failure of this step */
			for (k = rc ? step : step + 1; k < S_N && ok; k++)
				ok = fi_step_plain(&vm, k) == 0;
			if (!ok)
				bad("after failure %u in %s (%s) the VM does not recover: %s: %s",
				    n, step_names[step], rc ? strerror(e) : "call succeeded",
				    step_names[k - 1], strerror(errno));
			fvm_close(&vm);
		}
		if (now() < deadline)
			fi_steps_done++;
	}
}

/*
 * Phase 10: random calls on a few VMs while failslab and fail_page_alloc fail allocations
 * at random (0-50 %) during each shadowvm call; afterwards probability 0, and each VM
 * completes its setup and runs a guest to HLT.
 */
static void phase_fail_random(void)
{
	static const unsigned probs[] = { 0, 2, 10, 50 };
	struct fvm pool[4];
	unsigned cur = ~0u;

	for (int i = 0; i < 4; i++)
		memset(&pool[i], 0, sizeof(pool[i])), pool[i].vm.fd = -1;
	while (now() < deadline) {
		struct fvm *vm = &pool[below(4)];
		unsigned op = vm->vm.fd < 0 ? 0 : below(12), p = probs[below(ARRAY_SIZE(probs))];
		const int *allowed = ioctl_ok;
		const char *what = "ioctl";
		unsigned long cmd = 0;
		long rc = 0;

		if (op == 6 || op == 7) {
			/* RUN needs mapped memory, a vCPU and a safe state set without failures. */
			struct shadowvm_regs r;
			if (!vm->has_vcpu || !vm->vm.mem || !vm->vm.run)
				continue;
			load_prog(vm->vm.mem, short_prog());
			random_regs(&r, vm->vm.mem_size);
			errno = 0;
			rc = ioctl(vm->vm.fd, SHADOWVM_SET_SREGS, &safe_sregs);
			verdict("SET_SREGS of the safe state", SHADOWVM_SET_SREGS, rc, errno,
				must_work);
			errno = 0;
			rc = ioctl(vm->vm.fd, SHADOWVM_SET_REGS, &r);
			verdict("SET_REGS of a safe state", SHADOWVM_SET_REGS, rc, errno,
				must_work);
		}
		if (op == 0 && vm->vm.fd >= 0) {
			fvm_close(vm);
			continue;
		}
		if (p != cur)
			fi_probability(cur = p);
		make_it_fail(1);
		errno = 0;
		switch (op) {
		case 0:
			what = "open", allowed = open_ok;
			rc = fvm_open(vm);
			break;
		case 1: case 2: {
			struct shadowvm_memory m = { .size = (9 + below(248)) << 12 };
			what = "SET_MEMORY", cmd = SHADOWVM_SET_MEMORY;
			rc = ioctl(vm->vm.fd, SHADOWVM_SET_MEMORY, &m);
			if (rc == 0)
				vm->has_mem = 1, vm->vm.mem_size = m.size;
			break;
		}
		case 3:
			what = "CREATE_VCPU", cmd = SHADOWVM_CREATE_VCPU;
			rc = ioctl(vm->vm.fd, SHADOWVM_CREATE_VCPU, 0);
			vm->has_vcpu |= rc == 0;
			break;
		case 4:
			if (vm->vm.mem)
				break;
			what = "mmap RAM", allowed = mmap_ok;
			vm->vm.mem = mmap(NULL, vm->vm.mem_size ? vm->vm.mem_size : 4096,
				       PROT_READ | PROT_WRITE, MAP_SHARED, vm->vm.fd, 0);
			rc = vm->vm.mem == MAP_FAILED ? -1 : 0;
			if (rc)
				vm->vm.mem = NULL;
			break;
		case 5:
			if (vm->vm.run)
				break;
			what = "mmap run page", allowed = mmap_ok;
			vm->vm.run = mmap(NULL, SHADOWVM_RUN_MMAP_SIZE, PROT_READ | PROT_WRITE,
				       MAP_SHARED, vm->vm.fd, SHADOWVM_RUN_MMAP_OFFSET);
			rc = vm->vm.run == MAP_FAILED ? -1 : 0;
			if (rc)
				vm->vm.run = NULL;
			break;
		case 6: case 7:
			what = "RUN", cmd = SHADOWVM_RUN;
			rc = ioctl(vm->vm.fd, SHADOWVM_RUN, 0);
			runs++;
			break;
		case 8: case 9: {
			struct shadowvm_stats st = { .count = SHADOWVM_STATS_MAX,
						     .entries = (uintptr_t)stat_buf };
			what = "GET_STATS", cmd = SHADOWVM_GET_STATS;
			rc = ioctl(vm->vm.fd, SHADOWVM_GET_STATS, &st);
			break;
		}
		default: {
			struct shadowvm_sregs sr;
			what = "GET_SREGS", cmd = SHADOWVM_GET_SREGS;
			rc = ioctl(vm->vm.fd, SHADOWVM_GET_SREGS, &sr);
			break;
		}
		}
		int e = errno;
		make_it_fail(0);
		verdict(what, cmd, rc, e, allowed);
		fi_random_calls++;
		fi_random_enomem += rc < 0 && e == ENOMEM;
	}
	fi_probability(0);
	/* Every VM left completes its life without failures: no call left it half-done. */
	for (int i = 0; i < 4; i++) {
		struct fvm *vm = &pool[i];
		struct shadowvm_memory m = { .size = FI_MEM };
		struct shadowvm_regs r = { .rip = GUEST_CODE, .rflags = 2, .rsp = GUEST_STACK };

		if (vm->vm.fd < 0)
			continue;
		errno = 0;
		int ok = 1;
		if (!vm->has_mem) {
			ok = ioctl(vm->vm.fd, SHADOWVM_SET_MEMORY, &m) == 0;
			vm->vm.mem_size = FI_MEM;
		}
		if (ok && !vm->has_vcpu)
			ok = ioctl(vm->vm.fd, SHADOWVM_CREATE_VCPU, 0) == 0;
		if (ok && !vm->vm.mem) {
			vm->vm.mem = mmap(NULL, vm->vm.mem_size, PROT_READ | PROT_WRITE, MAP_SHARED,
				       vm->vm.fd, 0);
			ok = vm->vm.mem != MAP_FAILED;
		}
		if (ok && !vm->vm.run) {
			vm->vm.run = mmap(NULL, SHADOWVM_RUN_MMAP_SIZE, PROT_READ | PROT_WRITE,
				       MAP_SHARED, vm->vm.fd, SHADOWVM_RUN_MMAP_OFFSET);
			ok = vm->vm.run != MAP_FAILED;
		}
		if (ok) {
			load_prog(vm->vm.mem, 0);
			ok = ioctl(vm->vm.fd, SHADOWVM_SET_SREGS, &safe_sregs) == 0 &&
			     ioctl(vm->vm.fd, SHADOWVM_SET_REGS, &r) == 0 &&
			     ioctl(vm->vm.fd, SHADOWVM_RUN, 0) == 0 &&
			     vm->vm.run->exit_reason == SHADOWVM_EXIT_HLT;
		}
		if (!ok)
			bad("fail-random: VM %d does not complete its setup and a run to HLT: %s",
			    i, strerror(errno));
		if (vm->vm.mem == MAP_FAILED)
			vm->vm.mem = NULL;
		if (vm->vm.run == MAP_FAILED)
			vm->vm.run = NULL;
		fvm_close(vm);
	}
}

/*
 * The rate the debug Bochs machine must reach (calls per second of the budget): with the
 * default 50 s budget, 100,000 calls a run. (Seen: about 2350 per second in the 1-CPU
 * debug boot, each RUN window also saving and restoring the host's debug state.)
 */
#define MIN_CALLS_PER_S 2000

int main(int argc, char **argv)
{
	uint64_t seed = argc > 1 ? strtoull(argv[1], NULL, 0) : (uint64_t)time(NULL) ^ (uint64_t)getpid() << 32;
	double budget = argc > 2 ? atof(argv[2]) : 50, start = now();
	struct fvm fresh, ran, pristine;

	rng = seed ? seed : 1;
	ksft_print_header();
	ksft_set_plan(12);
	printf("# seed %llu, budget %.0f s (reproduce: fuzz %llu %.0f)\n", (unsigned long long)seed, budget,
	       (unsigned long long)seed, budget);
	if (access("/dev/shadowvm", F_OK) && system("insmod /lib/modules/shadowvm.ko"))
		printf("# insmod shadowvm.ko failed\n");
	pointers_init();
	if (fvm_setup(&pristine) || vm_safe_sregs(pristine.vm.fd, &safe_sregs))
		printf("# cannot set up a VM: %s\n", strerror(errno));
	fvm_close(&pristine);

	/* Phases get slices of the budget so each one runs even on a slow machine. */
	deadline = start + budget * 0.08;
	phase_begin();
	if (fvm_open(&fresh) == 0) {
		phase_enumerate(&fresh);
		close(fresh.vm.fd);
	}
	phase_end("every command number x direction x size, random pointers, fresh VM");

	deadline = start + budget * 0.16;
	phase_begin();
	if (fvm_setup(&ran) == 0 && safe_state(&ran, 1) == 0) {
		run_some(&ran, 3);		/* a VM that has run a guest */
		phase_enumerate(&ran);
	}
	phase_end("every command number x direction x size, random pointers, VM that ran a guest");

	deadline = start + budget * 0.24;
	phase_begin();
	phase_random_cmds(&ran, 80000);
	if (fvm_open(&fresh) == 0) {
		phase_random_cmds(&fresh, 20000);
		close(fresh.vm.fd);
	}
	phase_end("random command numbers in and near the 0xB7 space");

	deadline = start + budget * 0.30;
	phase_begin();
	phase_setup_order(400);
	phase_end("SET_MEMORY/CREATE_VCPU in every order, sizes and flags, repeated creation");

	deadline = start + budget * 0.34;
	phase_begin();
	phase_stats(&ran, 6000);
	phase_end("GET_STATS with huge counts, flags and odd entry pointers");

	deadline = start + budget * 0.42;
	phase_begin();
	phase_mmap(&ran, 3000);
	if (fvm_open(&fresh) == 0) {
		phase_mmap(&fresh, 600);
		close(fresh.vm.fd);
	}
	phase_end("mmap with odd offsets, lengths, flags and protections");

	deadline = start + budget * 0.60;
	phase_begin();
	phase_run_states(&ran);
	phase_end("RUN from random register/segment states that passed validation");
	fvm_close(&ran);

	deadline = start + budget * 0.76;
	phase_begin();
	phase_two_threads();
	phase_end("two threads on one VM: RUN, SET_REGS, GET/SET_SREGS, GET_STATS, mmap/munmap, "
		  "close mid-call");

	int fi = access(FI_DIR "failslab", F_OK) == 0 &&
		 access(FI_DIR "fail_page_alloc", F_OK) == 0 &&
		 access("/proc/self/fail-nth", F_OK) == 0;
	if (fi && fi_setup()) {
		svm_result(0, "allocation failures in turn",
			   "fault injection is there but cannot be set up: %s", strerror(errno));
		svm_result(0, "random allocation failures", "not run");
	} else if (fi) {
		deadline = start + budget * 0.88;
		phase_begin();
		phase_fail_nth();
		printf("# fail-nth: %lu allocations failed in turn over %d of %d steps of a VM's "
		       "life, %lu calls failed (ENOMEM)\n", fi_sites, fi_steps_done, S_N,
		       fi_failed);
		phase_end("every allocation of open/SET_MEMORY/CREATE_VCPU/mmap/RUN/GET_STATS "
			  "fails once in turn: ENOMEM or success, and the VM recovers");

		deadline = start + budget * 0.97;
		phase_begin();
		phase_fail_random();
		printf("# random failures: %lu calls, %lu failed with ENOMEM\n", fi_random_calls,
		       fi_random_enomem);
		phase_end("failslab/fail_page_alloc at 0-50 % during random calls on 4 VMs, which "
			  "recover afterwards");
		fi_probability(0);
	} else {
		ksft_test_result_code(KSFT_SKIP, "allocation failures in turn",
				      "no fault injection (debugfs failslab, fail_page_alloc, "
				      "/proc/thread-self/fail-nth) in this kernel");
		ksft_test_result_code(KSFT_SKIP, "random allocation failures",
				      "no fault injection in this kernel");
	}

	/* Whatever the fuzzing did, a clean VM still runs a guest. */
	{
		struct fvm vm;
		int ok = fvm_setup(&vm) == 0 && safe_state(&vm, 0) == 0 && ioctl(vm.vm.fd, SHADOWVM_RUN, 0) == 0 &&
			 vm.vm.run->exit_reason == SHADOWVM_EXIT_HLT;
		svm_result(ok, "a fresh VM still runs a guest to HLT afterwards", "errno %s exit %u", strerror(errno),
			   vm.vm.run && vm.vm.run != MAP_FAILED ? vm.vm.run->exit_reason : 0);
		fvm_close(&vm);
	}
	double secs = now() - start;
	char desc[160];
	snprintf(desc, sizeof(desc),
		 "fuzz totals: %lu calls in %.0f s (at least %d per second of the budget)",
		 total_calls, secs, MIN_CALLS_PER_S);
	svm_result(total_calls >= MIN_CALLS_PER_S * budget, desc, "only %lu calls", total_calls);
	printf("# FUZZ-TOTAL calls=%lu runs=%lu seed=%llu seconds=%.0f\n", total_calls, total_runs,
	       (unsigned long long)seed, secs);
	ksft_finished();	/* "# Totals", then exit 0 if every test passed or was skipped */
}
