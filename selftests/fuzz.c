// SPDX-License-Identifier: GPL-2.0
/*
 * ioctl/mmap fuzzer for /dev/shadowvm. Thousands of random and structured-invalid calls
 * against fresh VMs, VMs with memory, VMs with a vCPU and VMs that have run a guest: every
 * command number in every direction and many sizes, random command numbers in and near
 * the 0xB7 space, NULL/unmapped/unaligned/kernel/read-only pointers, huge GET_STATS counts,
 * wrong order, repeated creation, mmap with odd offsets/lengths/flags, and RUN with
 * randomized register and segment state that passed the module's validation.
 *
 * Every call must succeed or fail with an errno of the documented set
 * (Documentation/uapi.md "Errors"). One TAP result per phase; the first offending calls
 * are printed. Reproducible: usage fuzz [seed [seconds]], the seed is printed; the time
 * budget bounds every phase (default 40 s in total).
 *
 * Guests only ever run with an IDT the CPU cannot read without a #PF that shadowvm
 * intercepts (Bochs turns a triple fault taken inside the CPU into a machine shutdown).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
#include "shadowvm.h"
#include "tap.h"

#define MEM_SIZE (4u << 20)
#define NBAD_SHOWN 12
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

static uint64_t rng;
static uint64_t rnd(void)
{
	rng ^= rng >> 12;
	rng ^= rng << 25;
	rng ^= rng >> 27;
	return rng * 0x2545f4914f6cdd1dull;
}
static uint64_t below(uint64_t n) { return n ? rnd() % n : 0; }

static double deadline;
static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

/* Counters of one phase and of the whole run. */
static unsigned long calls, total_calls, runs, total_runs, nbad;
static char bad_log[NBAD_SHOWN][160];

static const int ioctl_ok[] = { ENOTTY, EINVAL, EFAULT, EEXIST, EBUSY, ENOMEM, E2BIG, EINTR, 0 };
static const int open_ok[] = { EMFILE, ENOMEM, 0 };
static const int mmap_ok[] = { EINVAL, ENOMEM, EOVERFLOW, 0 };
static const int mmap_exec_ok[] = { EINVAL, ENOMEM, EOVERFLOW, EPERM, 0 };

static void verdict(const char *what, unsigned long cmd, long rc, int e, const int *allowed)
{
	calls++;
	if (rc >= 0 || (rc == -1 && e == 0 && allowed == NULL))
		return;
	for (const int *a = allowed; *a; a++)
		if (e == *a)
			return;
	if (nbad < NBAD_SHOWN)
		snprintf(bad_log[nbad], sizeof(bad_log[0]), "%s cmd %#lx: rc %ld errno %d (%s)", what, cmd, rc, e,
			 strerror(e));
	nbad++;
}

static void phase_begin(void)
{
	calls = runs = nbad = 0;
}

static void phase_end(const char *name)
{
	char desc[200];

	total_calls += calls;
	total_runs += runs;
	snprintf(desc, sizeof(desc), "%s: %lu calls (%lu guest runs), each succeeded or gave a documented errno", name,
		 calls, runs);
	tap_result(nbad == 0 && calls > 0, desc, "%lu calls out of the documented set; first ones:", nbad);
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
};

/* ---- VMs ---- */
struct vm {
	int fd;
	int has_mem, has_vcpu;
	uint8_t *mem;
	struct shadowvm_run *run;
};

static int vm_open(struct vm *vm)
{
	memset(vm, 0, sizeof(*vm));
	vm->fd = open("/dev/shadowvm", O_RDWR | O_CLOEXEC);
	return vm->fd < 0 ? -1 : 0;
}

static int vm_setup(struct vm *vm)
{
	struct shadowvm_memory m = { .size = MEM_SIZE };

	if (vm_open(vm) || ioctl(vm->fd, SHADOWVM_SET_MEMORY, &m) || ioctl(vm->fd, SHADOWVM_CREATE_VCPU, 0))
		return -1;
	vm->has_mem = vm->has_vcpu = 1;
	vm->mem = mmap(NULL, MEM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, vm->fd, 0);
	vm->run = mmap(NULL, SHADOWVM_RUN_MMAP_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, vm->fd,
		       SHADOWVM_RUN_MMAP_OFFSET);
	return vm->mem == MAP_FAILED || vm->run == MAP_FAILED ? -1 : 0;
}

static void vm_close(struct vm *vm)
{
	if (vm->mem && vm->mem != MAP_FAILED)
		munmap(vm->mem, MEM_SIZE);
	if (vm->run && vm->run != MAP_FAILED)
		munmap(vm->run, SHADOWVM_RUN_MMAP_SIZE);
	close(vm->fd);
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

static int safe_state(struct vm *vm, int prog)
{
	struct shadowvm_sregs s;
	struct shadowvm_regs r = { .rip = 0x1000, .rflags = 2, .rsp = 0x80000 };

	memset(vm->mem, 0, 0x3000);
	memcpy(vm->mem + 0x1000, progs[prog].code, progs[prog].len);
	*(uint32_t *)(vm->mem + 0x2000) = 0x83;	/* PDE 0: 4 MiB page, present, writable */
	if (ioctl(vm->fd, SHADOWVM_GET_SREGS, &s))
		return -1;
	s.cr4 |= 1 << 4;
	s.cr0 |= 1u << 31;
	s.cr3 = 0x2000;
	s.idt.base = 0x00800000;
	s.idt.limit = 0x7ff;
	r.rax = below(2) ? rnd() : below(MEM_SIZE);
	r.rcx = below(2) ? (uint32_t)rnd() : 0xc0000000u + below(0x200);
	r.rdx = rnd();
	r.rbx = rnd();
	return ioctl(vm->fd, SHADOWVM_SET_SREGS, &s) || ioctl(vm->fd, SHADOWVM_SET_REGS, &r) ? -1 : 0;
}

/* RUN a few times (answering I/O and MMIO with random data); every errno checked. */
static void run_some(struct vm *vm, int rounds)
{
	for (int i = 0; i < rounds; i++) {
		errno = 0;
		long rc = ioctl(vm->fd, SHADOWVM_RUN, 0);
		verdict("RUN", SHADOWVM_RUN, rc, errno, ioctl_ok);
		runs++;
		if (rc)
			return;
		switch (vm->run->exit_reason) {
		case SHADOWVM_EXIT_IO:
			vm->run->exit.io.data = rnd();
			break;
		case SHADOWVM_EXIT_MMIO:
			*(uint64_t *)vm->run->exit.mmio.data = rnd();
			break;
		case SHADOWVM_EXIT_HYPERCALL:
			vm->run->exit.hypercall.ret = rnd();
			break;
		case SHADOWVM_EXIT_INTR:
			break;
		default:
			return;	/* HLT, SHUTDOWN, FAIL_ENTRY, INTERNAL_ERROR: state is final */
		}
	}
}

/* One random ioctl against vm; RUN only from a safe state. */
static void random_ioctl(struct vm *vm, unsigned long cmd, unsigned long arg)
{
	if (cmd == SHADOWVM_RUN && arg == 0) {
		if (vm->has_vcpu && vm->run && vm->run != MAP_FAILED && vm->mem && vm->mem != MAP_FAILED &&
		    safe_state(vm, below(ARRAY_SIZE(progs))) == 0)
			run_some(vm, 2);
		return;
	}
	/* SET_SREGS with random bytes: accepted states are made safe again before any RUN. */
	errno = 0;
	long rc = ioctl(vm->fd, cmd, arg);
	verdict("ioctl", cmd, rc, errno, ioctl_ok);
	if (cmd == SHADOWVM_SET_MEMORY && rc == 0)
		vm->has_mem = 1;
	if (cmd == SHADOWVM_CREATE_VCPU && rc == 0)
		vm->has_vcpu = 1;
}

/* Phase 1: every nr 0..0x1f in every direction with many sizes, random arguments. */
static void phase_enumerate(struct vm *vm)
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
static void phase_random_cmds(struct vm *vm, int n)
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
		struct vm vm;
		if (vm_open(&vm)) {
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
		close(vm.fd);
	}
}

/* Phase 4: GET_STATS with huge and odd counts, flags and entry pointers. */
static void phase_stats(struct vm *vm, int n)
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
		long rc = ioctl(vm->fd, SHADOWVM_GET_STATS, &st);
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

static void phase_mmap(struct vm *vm, int n)
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
		uint8_t *p = mmap(NULL, len, prot, flags, vm->fd, off);
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

static void phase_run_states(struct vm *vm)
{
	unsigned long accepted = 0;

	while (now() < deadline) {
		struct shadowvm_sregs s;
		struct shadowvm_regs r;
		int prog = below(ARRAY_SIZE(progs));

		if (safe_state(vm, prog) || ioctl(vm->fd, SHADOWVM_GET_SREGS, &s) || ioctl(vm->fd, SHADOWVM_GET_REGS, &r))
			break;
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
				r.rflags = (r.rflags | 2) ^ ((1ull << below(22)) & ~((1ull << 3) | (1ull << 5) | (1ull << 15) | (1ull << 17)));
				break;
			}
			}
		}
		/* The IDT stays where only a #PF can reach it (see the top of this file). */
		s.idt.base = 0x00800000;
		s.idt.limit = 0x7ff;
		errno = 0;
		long rc = ioctl(vm->fd, SHADOWVM_SET_SREGS, &s);
		verdict("SET_SREGS", SHADOWVM_SET_SREGS, rc, errno, ioctl_ok);
		if (rc)
			continue;
		errno = 0;
		rc = ioctl(vm->fd, SHADOWVM_SET_REGS, &r);
		verdict("SET_REGS", SHADOWVM_SET_REGS, rc, errno, ioctl_ok);
		accepted++;
		run_some(vm, 3);
		/* Back to a safe paging setup for the next round (SET_SREGS may have moved it). */
	}
	printf("# %lu randomized states accepted and run\n", accepted);
}

int main(int argc, char **argv)
{
	uint64_t seed = argc > 1 ? strtoull(argv[1], NULL, 0) : (uint64_t)time(NULL) ^ (uint64_t)getpid() << 32;
	double budget = argc > 2 ? atof(argv[2]) : 40, start = now();
	struct vm fresh, ran;

	rng = seed ? seed : 1;
	tap_plan(9);
	printf("# seed %llu, budget %.0f s (reproduce: fuzz %llu %.0f)\n", (unsigned long long)seed, budget,
	       (unsigned long long)seed, budget);
	if (access("/dev/shadowvm", F_OK) && system("insmod /lib/modules/shadowvm.ko"))
		printf("# insmod shadowvm.ko failed\n");
	pointers_init();

	/* Phases get slices of the budget so each one runs even on a slow machine. */
	deadline = start + budget * 0.15;
	phase_begin();
	if (vm_open(&fresh) == 0) {
		phase_enumerate(&fresh);
		close(fresh.fd);
	}
	phase_end("every command number x direction x size, random pointers, fresh VM");

	deadline = start + budget * 0.30;
	phase_begin();
	if (vm_setup(&ran) == 0 && safe_state(&ran, 1) == 0) {
		run_some(&ran, 3);		/* a VM that has run a guest */
		phase_enumerate(&ran);
	}
	phase_end("every command number x direction x size, random pointers, VM that ran a guest");

	deadline = start + budget * 0.40;
	phase_begin();
	phase_random_cmds(&ran, 20000);
	if (vm_open(&fresh) == 0) {
		phase_random_cmds(&fresh, 5000);
		close(fresh.fd);
	}
	phase_end("random command numbers in and near the 0xB7 space");

	deadline = start + budget * 0.50;
	phase_begin();
	phase_setup_order(400);
	phase_end("SET_MEMORY/CREATE_VCPU in every order, sizes and flags, repeated creation");

	deadline = start + budget * 0.55;
	phase_begin();
	phase_stats(&ran, 3000);
	phase_end("GET_STATS with huge counts, flags and odd entry pointers");

	deadline = start + budget * 0.65;
	phase_begin();
	phase_mmap(&ran, 1500);
	if (vm_open(&fresh) == 0) {
		phase_mmap(&fresh, 300);
		close(fresh.fd);
	}
	phase_end("mmap with odd offsets, lengths, flags and protections");

	deadline = start + budget * 0.95;
	phase_begin();
	phase_run_states(&ran);
	phase_end("RUN from random register/segment states that passed validation");
	vm_close(&ran);

	/* Whatever the fuzzing did, a clean VM still runs a guest. */
	{
		struct vm vm;
		int ok = vm_setup(&vm) == 0 && safe_state(&vm, 0) == 0 && ioctl(vm.fd, SHADOWVM_RUN, 0) == 0 &&
			 vm.run->exit_reason == SHADOWVM_EXIT_HLT;
		tap_result(ok, "a fresh VM still runs a guest to HLT afterwards", "errno %s exit %u", strerror(errno),
			   vm.run && vm.run != MAP_FAILED ? vm.run->exit_reason : 0);
		vm_close(&vm);
	}
	tap_result(1, "fuzz totals", "");
	printf("# FUZZ-TOTAL calls=%lu runs=%lu seed=%llu seconds=%.0f\n", total_calls, total_runs,
	       (unsigned long long)seed, now() - start);
	return tap_exit();
}
