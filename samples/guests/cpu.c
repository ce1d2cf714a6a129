// SPDX-License-Identifier: GPL-2.0
/*
 * CPU-level guest (cpu-<mode>.elf): the exceptions a hypervisor must intercept to stay in
 * control of the CPU (#DB, #AC), checked for what the guest sees, and variants that try to
 * keep the host CPU forever.
 *
 * TAP tests (the same results on shadowvm, KVM ept=0 and ept=1):
 *  - a data breakpoint (DR0/DR7) fires once per write, with DR6.B0;
 *  - single-step (EFLAGS.TF) traps after one instruction, with DR6.BS;
 *  - ICEBP (INT1) is a #DB trap after the instruction;
 *  - DR7.GD makes the next MOV DR a #DB fault with DR6.BD, and clears GD;
 *  - an alignment check at CPL3 (CR0.AM, EFLAGS.AC) is an #AC with error code 0;
 *  - MSR writes take effect at once and read back after the hypervisor had to stop the
 *    guest (an I/O exit to userspace): SYSENTER, and in long mode FS/GS/KERNEL_GS base;
 *  - a segment loaded without an exit (MOV FS) is the one an emulated instruction uses
 *    (a store through FS into a page directory, which every hypervisor here emulates);
 *  - a #PF whose delivery pushes its frame onto a page directory (the stack pointer in a
 *    page-table page) is delivered once, with the faulting address: the hypervisor's
 *    write-protection of the directory must not turn it into a #DF;
 *  - (long mode) INVPCID: a descriptor that crosses a page is read, a non-canonical address
 *    with type 0 and a type above 3 are #GP(0);
 *  - (long mode) a #PF at a kernel-half address reports all 64 bits in CR2.
 *
 * Variants (-DCPU_END=...) never end on their own: the launcher's --timeout ends them, and
 * the host must keep answering meanwhile (selftests/cpu measures it):
 *   exitloop  CPUID in a tight loop with IF=0: a VM exit per iteration;
 *   pfloop    a #PF its handler retries forever, IF=0;
 *   dbloop    (long mode) a data breakpoint on the IST slot the #DB frame is pushed to:
 *             each delivery raises the next #DB (CVE-2015-8104's kind of loop);
 *   acloop    (32-bit paging, PAE) #AC delivered to a ring-3 handler on a misaligned
 *             stack: each delivery raises the next #AC (CVE-2015-5307);
 *   rmaploop  one frame mapped at 4096 addresses (four times KVM's rmap chain cap), all
 *             touched, then the address space dropped by switching through more address
 *             spaces than any root cache holds: a hypervisor that tracks every mapping of
 *             a frame in one list and scans it to remove each does 4096 x 4096 steps in
 *             one CR3 write.
 * Without #DB/#AC interception both loops run inside the CPU with no VM exit at all.
 */
#include "rt.h"

#ifndef CPU_END
#define CPU_END 0
#endif
#define END_EXITLOOP	1
#define END_PFLOOP	2
#define END_DBLOOP	3
#define END_ACLOOP	4
#define END_RMAPLOOP	5

#define VA_USER		0x70000000UL
#define RFLAGS_TF	(1UL << 8)
#define CR0_AM		(1UL << 18)
#define DR6_RESET	0xffff0ff0UL
#define DR6_BD		(1UL << 13)
#define DR6_BS		(1UL << 14)
#define DR7_RESET	0x400UL
#define DR7_GD		(1UL << 13)
/* DR7 for breakpoint 0: enabled (L0), on writes (R/W0 = 01), 4 bytes (LEN0 = 11). */
#define DR7_BP0_WRITE4	(DR7_RESET | 1UL | (1UL << 16) | (3UL << 18))

/* The stack pointer in basic asm (SP) and in extended asm (SPX). */
#ifdef MODE_LM
#define SP "%rsp"
#define SPX "%%rsp"
#else
#define SP "%esp"
#define SPX "%%esp"
#endif


__noreturn void user_return(uintptr_t value);

/* What the last #DB, #AC or skipped #GP looked like. */
static volatile struct {
	unsigned count;
	uintptr_t vector, err, ip, dr6, dr7, cx, di;
} seen;

static void seen_reset(void)
{
	seen.count = 0;
	seen.vector = seen.err = seen.ip = seen.dr6 = seen.dr7 = seen.cx = seen.di = 0;
}

/* Set around an instruction that may raise #GP: the handler records it and skips this many bytes. */
static volatile unsigned gp_skip;

static int hook(struct frame *f)
{
	if (f->vector == 13 && gp_skip) {
		seen.count++;
		seen.vector = 13;
		seen.err = f->err;
		seen.cx = f->cx;
		seen.di = f->di;
		f->ip += gp_skip;
		return 1;
	}
	if (f->vector != 1 && f->vector != 17)
		return 0;
	seen.count++;
	seen.vector = f->vector;
	seen.err = f->err;
	seen.ip = f->ip;
	if (f->vector == 1) {
		seen.dr6 = read_dr6();
		seen.dr7 = read_dr7();
		write_dr6(DR6_RESET);	/* the CPU never clears DR6 itself */
		f->flags &= ~RFLAGS_TF;
		return 1;
	}
	if ((f->cs & 3) == 3)
		user_return(0xac);
	return 0;
}

/* Ring-3 code (its own page, mapped at VA_USER with the U bit). */
void cpu_ac_user(void);
void cpu_ac_handler(void);
__asm__(".section .usertext, \"ax\"\n"
	"cpu_ac_user:\n"			/* EFLAGS.AC = 1, then a misaligned load */
	"	pushf\n"
	"	orl $0x40000, (" SP ")\n"
	"	popf\n"
	"	mov 1(" SP "), %eax\n"
	"	int $0x80\n"
	"cpu_ac_handler:\n"			/* reached only if #AC delivery succeeds */
	"	mov $0xacac, %eax\n"
	"	int $0x80\n"
	".text\n");

static uintptr_t user_va(void (*fn)(void))
{
	return VA_USER + ((uintptr_t)fn - (uintptr_t)__user_start);
}

/* An address space with the ring-3 code page and a stack page; returns the stack top. */
static uintptr_t user_space(void)
{
	uintptr_t cr3 = aspace_new();
	map_page(cr3, VA_USER, (uintptr_t)__user_start, PTE_P | PTE_U);
	map_page(cr3, VA_USER + PAGE_SIZE, frame_alloc(), PTE_P | PTE_W | PTE_U);
	write_cr3(cr3);
	return VA_USER + 2 * PAGE_SIZE;
}

static volatile uint32_t watched;

static void t_data_breakpoint(void)
{
	seen_reset();
	write_dr0((uintptr_t)&watched);
	write_dr7(DR7_BP0_WRITE4);
	watched = 0x1234;
	unsigned after_first = seen.count;
	watched = 0x5678;
	write_dr7(DR7_RESET);
	watched = 1;
	CHECK_EQ("#DB after the first write", 1, after_first);
	CHECK_EQ("#DB after two writes and one with DR7 off", 2, seen.count);
	CHECK_EQ("vector", 1, seen.vector);
	CHECK_EQ("DR6 trap bits", 1, seen.dr6 & 0xf);
	CHECK("DR6.BS clear", !(seen.dr6 & DR6_BS));
}

extern char cpu_ss_target[], cpu_icebp_after[];

static __attribute__((noinline)) void t_single_step(void)
{
	seen_reset();
	/* TF set by POPF traps after the instruction that follows it. */
	__asm__ volatile("pushf\n"
			 "	orl $0x100, (" SPX ")\n"
			 "	popf\n"
			 "	nop\n"
			 "cpu_ss_target:\n"
			 "	nop\n" ::: "memory", "cc");
	CHECK_EQ("#DB count", 1, seen.count);
	CHECK_EQ("trap address", (uintptr_t)cpu_ss_target, seen.ip);
	CHECK("DR6.BS set", seen.dr6 & DR6_BS);
}

static __attribute__((noinline)) void t_icebp(void)
{
	seen_reset();
	__asm__ volatile(".byte 0xf1\n"
			 "cpu_icebp_after:\n" ::: "memory");
	CHECK_EQ("#DB count", 1, seen.count);
	CHECK_EQ("trap address (after ICEBP)", (uintptr_t)cpu_icebp_after, seen.ip);
	CHECK_EQ("DR6 trap, BD and BS bits", 0, seen.dr6 & (0xf | DR6_BD | DR6_BS));
}

static void t_general_detect(void)
{
	seen_reset();
	write_dr0(0x1000);
	write_dr7(DR7_RESET | DR7_GD);
	uintptr_t dr0 = read_dr0();	/* #DB fault; retried once the CPU cleared GD */
	CHECK_EQ("#DB count", 1, seen.count);
	CHECK("DR6.BD set", seen.dr6 & DR6_BD);
	CHECK("DR7.GD clear in the handler", !(seen.dr7 & DR7_GD));
	CHECK_EQ("DR0 read after the fault", 0x1000, dr0);
	write_dr7(DR7_RESET);
}

static void t_alignment_check(void)
{
	uintptr_t top = user_space();
	int faulted;

	seen_reset();
	write_cr0(read_cr0() | CR0_AM);
	uint32_t r = user_call(user_va(cpu_ac_user), top - 16, 0, 0, 0, &faulted);
	write_cr0(read_cr0() & ~CR0_AM);
	write_cr3(kernel_cr3);
	CHECK_EQ("ring-3 call ended by #AC", 0xac, r);
	CHECK_EQ("vector", 17, seen.vector);
	CHECK_EQ("error code", 0, seen.err);
	CHECK_EQ("exceptions", 1, seen.count);
}

/* An OUT to an unused port: every hypervisor hands it to its userspace. */
static void exit_to_userspace(void)
{
	outb(0x80, 0);
}

static void t_msr_write_read_back(void)
{
	const uint64_t eip = 0x12345678, esp = 0x23456780, cs = 0x60;

	wrmsr(0x174, cs);
	wrmsr(0x175, esp);
	wrmsr(0x176, eip);
	exit_to_userspace();
	CHECK_EQ("SYSENTER_CS", cs, rdmsr(0x174));
	CHECK_EQ("SYSENTER_ESP", esp, rdmsr(0x175));
	CHECK_EQ("SYSENTER_EIP", eip, rdmsr(0x176));
	wrmsr(0x174, 0);
	wrmsr(0x175, 0);
	wrmsr(0x176, 0);
#ifdef MODE_LM
	static volatile uint32_t fs_area[4] = { 0xf5f5f5f5, 0, 0, 0 };
	const uint64_t kgs = 0xffff800012345000ULL;
	uint32_t via_fs;

	wrmsr(0xc0000100, (uintptr_t)fs_area);
	__asm__ volatile("movl %%fs:0, %0" : "=r"(via_fs) :: "memory");
	CHECK_EQ("a load through FS right after WRMSR FS_BASE", 0xf5f5f5f5, via_fs);
	exit_to_userspace();
	CHECK_EQ("FS_BASE after an exit to userspace", (uintptr_t)fs_area, rdmsr(0xc0000100));
	wrmsr(0xc0000100, 0);
	wrmsr(0xc0000102, kgs);
	exit_to_userspace();
	CHECK_EQ("KERNEL_GS_BASE after an exit to userspace", kgs, rdmsr(0xc0000102));
	__asm__ volatile("swapgs" ::: "memory");
	uint64_t gs = rdmsr(0xc0000101), kgs_after = rdmsr(0xc0000102);
	__asm__ volatile("swapgs" ::: "memory");
	CHECK_EQ("GS_BASE after SWAPGS", kgs, gs);
	CHECK_EQ("KERNEL_GS_BASE after SWAPGS", 0, kgs_after);
	wrmsr(0xc0000102, 0);
#endif
}

extern uint64_t gdt_spare;

static void t_segment_without_exit(void)
{
	const uintptr_t va = 0x50000000UL;
	uintptr_t cr3 = aspace_new();
	const unsigned idx = PAGE_SIZE / sizeof(pte_t) - 1;
	const pte_t value = (pte_t)0x12345000;	/* not present: harmless in the table */
	volatile uint8_t *low = (volatile uint8_t *)0x1000;
	static uint8_t low_before[PAGE_SIZE];

	map_page(cr3, va, frame_alloc(), PTE_P | PTE_W);
	write_cr3(cr3);
	(void)rd32(va);		/* the shadow of this walk write-protects the directory */
	uintptr_t dir = (uintptr_t)pt_entry(cr3, va, 2, 0) & ~(uintptr_t)(PAGE_SIZE - 1);
	for (unsigned i = 0; i < sizeof(low_before); i++)
		low_before[i] = low[i];
	/* FS: a flat data segment whose base is the directory page minus 0x1000. */
	uint32_t base = (uint32_t)(dir - 0x1000);
	gdt_spare = 0x00cf92000000ffffULL | ((uint64_t)(base & 0xffffff) << 16) |
		    ((uint64_t)(base >> 24) << 56);
	uint32_t off = 0x1000 + idx * sizeof(pte_t);
	__asm__ volatile("mov %w0, %%fs" :: "r"(SEL_SPARE) : "memory");
#ifdef MODE_32
	__asm__ volatile("movl %0, %%fs:(%1)" :: "r"((uint32_t)value), "r"(off) : "memory");
#else
	__asm__ volatile("movl %0, %%fs:(%1)\n\tmovl $0, %%fs:4(%1)" :: "r"((uint32_t)value), "r"(off) : "memory");
#endif
	__asm__ volatile("mov %w0, %%fs" :: "r"(SEL_KDATA) : "memory");
	pte_t seen_entry = ((volatile pte_t *)dir)[idx];
	((volatile pte_t *)dir)[idx] = 0;
	write_cr3(kernel_cr3);
	CHECK_EQ("directory entry written through FS", value, seen_entry);
	unsigned changed = 0;
	for (unsigned i = 0; i < sizeof(low_before); i++)
		changed += low[i] != low_before[i];
	CHECK_EQ("bytes changed where a stale FS base (0) would have put the store", 0, changed);
}

#ifndef MODE_LM
/*
 * A REP STOSD whose first store hits a page directory (shadow paging write-protects it, so
 * the hypervisor emulates the stores) runs into the ES limit: #GP(0) at the limit, with
 * the iterations before it done (ECX, EDI), exactly as the CPU does it natively. Zeros go
 * into entries that are zero, within the page, so a missing limit check changes nothing
 * but the registers.
 */
static void t_segment_limit_emulated(void)
{
	const uintptr_t va = 0x50000000UL;
	uintptr_t cr3 = aspace_new();
	unsigned zero = 1;

	map_page(cr3, va, frame_alloc(), PTE_P | PTE_W);
	write_cr3(cr3);
	(void)rd32(va);		/* the shadow of this walk write-protects the directory */
	uintptr_t dir = (uintptr_t)pt_entry(cr3, va, 2, 0) & ~(uintptr_t)(PAGE_SIZE - 1);
	for (unsigned off = 0xfc0; off < PAGE_SIZE; off += 4)
		zero &= *(volatile uint32_t *)(dir + off) == 0;
	/* ES: base = the directory, byte-granular limit 0xfdf, 32-bit, writable. */
	gdt_spare = 0x0040920000000fdfULL | ((uint64_t)(dir & 0xffffff) << 16) |
		    ((uint64_t)(dir >> 24) << 56);
	uint32_t cx = 16, di = 0xfc0;
	seen_reset();
	gp_skip = 2;
	__asm__ volatile("mov %w2, %%es\n"
			 "	rep stosl"
			 : "+c"(cx), "+D"(di)
			 : "r"(SEL_SPARE), "a"(0)
			 : "memory");
	__asm__ volatile("mov %w0, %%es" :: "r"(SEL_KDATA) : "memory");
	gp_skip = 0;
	write_cr3(kernel_cr3);
	CHECK("the entries stored to were zero", zero);
	CHECK_EQ("#GP count", 1, seen.count);
	CHECK_EQ("#GP error code", 0, seen.err);
	CHECK_EQ("ECX at the #GP: 8 of 16 iterations done", 8, seen.cx);
	CHECK_EQ("EDI at the #GP: the limit + 1", 0xfe0, seen.di);
}
#endif

/*
 * cpu_fault_on_stack(top, addr): switches to the stack at top and loads from addr, with
 * no push before the load. A #PF handler resumes at cpu_fault_resume.
 */
void cpu_fault_on_stack(uintptr_t top, uintptr_t addr);
extern char cpu_fault_resume[];
#ifdef MODE_LM
__asm__(".text\n"
	"cpu_fault_on_stack:\n"
	"	mov %rsp, cpu_saved_sp\n"
	"	mov %rdi, %rsp\n"
	"	mov (%rsi), %eax\n"
	"cpu_fault_resume:\n"
	"	mov cpu_saved_sp, %rsp\n"
	"	ret\n");
#else
__asm__(".text\n"
	"cpu_fault_on_stack:\n"
	"	mov 8(%esp), %edx\n"
	"	mov 4(%esp), %eax\n"
	"	mov %esp, cpu_saved_sp\n"
	"	mov %eax, %esp\n"
	"	mov (%edx), %eax\n"
	"cpu_fault_resume:\n"
	"	mov cpu_saved_sp, %esp\n"
	"	ret\n");
#endif
uintptr_t cpu_saved_sp;

static int resume_after_fault(struct frame *f, uintptr_t cr2, uintptr_t err)
{
	(void)cr2, (void)err;
	f->ip = (uintptr_t)cpu_fault_resume;
	return 1;
}

static void t_fault_delivery_on_pt_stack(void)
{
	/*
	 * The alias lies under another directory: a directory on the translation path of the
	 * very store that writes it can only be emulated, never let through (KVM with ept=0
	 * stops with an internal error there too; with EPT the CPU simply writes it).
	 */
	const uintptr_t va = 0x50000000UL, alias = 0x88000000UL, absent = 0x60000000UL;
	uintptr_t cr3 = aspace_new();

	map_page(cr3, va, frame_alloc(), PTE_P | PTE_W);
	write_cr3(cr3);
	(void)rd32(va);		/* the shadow of this walk write-protects the directory */
	/*
	 * A directory in long mode. Not a table the root holds: a root stays write-protected
	 * while it is current, so a frame pushed onto it could only be emulated (KVM with
	 * ept=0 then stops with an internal error, seen in Bochs, and so does shadowvm). With
	 * 32-bit paging the directory is the root, and with PAE the four directories the
	 * PDPTEs name are held by the root: there the leaf table is used (which a hypervisor
	 * may let go out of sync).
	 */
	const int level = PT_LEVELS > 3 ? 2 : 1;
	uintptr_t dir = (uintptr_t)pt_entry(cr3, va, level, 0) & ~(uintptr_t)(PAGE_SIZE - 1);
	map_page(cr3, alias, dir, PTE_P | PTE_W);	/* the table, also as data */
	pf_reset();
	pf_hook = resume_after_fault;
	/* The frame lands in the directory's last entries (VAs this test never uses). */
	cpu_fault_on_stack(alias + PAGE_SIZE - 64, absent);
	pf_hook = 0;
	for (uintptr_t p = dir + PAGE_SIZE - 128; p < dir + PAGE_SIZE; p += sizeof(pte_t))
		*(volatile pte_t *)p = 0;
	write_cr3(kernel_cr3);
	CHECK_EQ("#PF count", 1, last_pf.count);
	CHECK_EQ("#PF address", absent, last_pf.cr2);
	CHECK_EQ("#PF error code (read of a non-present page)", 0, last_pf.err);
}

#ifdef MODE_LM
static void t_cr2_kernel_half(void)
{
	const uintptr_t addrs[] = { 0xffff888000001000UL, 0xffffffff81000ff8UL, 0x00007ffffffff000UL };
	uint32_t v;

	for (unsigned i = 0; i < ARRAY_SIZE(addrs); i++) {
		pf_reset();
		CHECK("the read faults", probe_read(addrs[i], &v));
		CHECK_EQ("CR2", addrs[i], last_pf.cr2);
	}
}

/* INVPCID type, [desc]: returns the vector raised (0 for none). Encoding: 66 0f 38 82 08. */
static unsigned invpcid_try(uint64_t type, const void *desc)
{
	seen_reset();
	gp_skip = 5;
	__asm__ volatile(".byte 0x66, 0x0f, 0x38, 0x82, 0x08" :: "a"(desc), "c"(type) : "memory");
	gp_skip = 0;
	return seen.count ? (unsigned)seen.vector : 0;
}

static void t_invpcid(void)
{
	static uint8_t buf[2 * PAGE_SIZE] __attribute__((aligned(PAGE_SIZE)));
	uint32_t r[4];

	cpuid(7, 0, r);
	if (!((r[1] >> 10) & 1)) {
		test_skip("no INVPCID in CPUID");
		return;
	}
	uint64_t *crossing = (uint64_t *)(buf + PAGE_SIZE - 8);	/* PCID here, address on the next page */
	crossing[0] = 0;
	crossing[1] = 0x400000;
	CHECK_EQ("type 0, descriptor crossing a page: no exception", 0, invpcid_try(0, crossing));
	uint64_t noncanonical[2] = { 0, 0x0000800000000000ULL };
	CHECK_EQ("type 0, non-canonical address: #GP", 13, invpcid_try(0, noncanonical));
	CHECK_EQ("error code", 0, seen.err);
	uint64_t ok[2] = { 0, 0x400000 };
	CHECK_EQ("type 4: #GP", 13, invpcid_try(4, ok));
	CHECK_EQ("type 2: no exception", 0, invpcid_try(2, ok));
}
#endif

static const struct test tests[] = {
	{ "data breakpoint: #DB once per write, DR6.B0", t_data_breakpoint },
	{ "single step: #DB after one instruction, DR6.BS", t_single_step },
	{ "ICEBP: #DB trap after the instruction", t_icebp },
	{ "DR7.GD: MOV DR faults with DR6.BD and clears GD", t_general_detect },
	{ "CR0.AM + EFLAGS.AC at CPL3: #AC(0)", t_alignment_check },
	{ "MSR writes take effect at once and survive an exit to userspace", t_msr_write_read_back },
	{ "MOV FS without an exit, then an emulated store through FS", t_segment_without_exit },
	{ "#PF delivered onto a stack inside a page directory", t_fault_delivery_on_pt_stack },
#ifndef MODE_LM
	{ "emulated REP STOSD stops at the ES limit with #GP(0)", t_segment_limit_emulated },
#endif
#ifdef MODE_LM
	{ "INVPCID: page-crossing descriptor, non-canonical address, bad type", t_invpcid },
	{ "#PF at kernel-half addresses: CR2 holds all 64 bits", t_cr2_kernel_half },
#endif
};

static int retry_forever(struct frame *f, uintptr_t cr2, uintptr_t err)
{
	(void)f, (void)cr2, (void)err;
	return 1;
}

#ifdef MODE_LM
static uint8_t db_ist[4096] __attribute__((aligned(16)));
void cpu_db_iret(void);
__asm__(".text\ncpu_db_iret: iretq\n");
#endif

static void end_variant(void)
{
	if (CPU_END == END_EXITLOOP) {
		printf("# cpu: CPUID in a loop with IF=0\n");
		__asm__ volatile("cli");
		for (;;) {
			uint32_t r[4];
			cpuid(0, 0, r);
		}
	} else if (CPU_END == END_PFLOOP) {
		printf("# cpu: a #PF retried forever with IF=0\n");
		__asm__ volatile("cli");
		pf_hook = retry_forever;
		(void)rd32(0x7ff00000UL);	/* not mapped */
	} else if (CPU_END == END_DBLOOP) {
#ifdef MODE_LM
		uintptr_t top = (uintptr_t)db_ist + sizeof(db_ist);
		printf("# cpu: #DB whose delivery hits a data breakpoint, forever\n");
		tss_set_ist(1, top);
		idt_set_gate(1, (uintptr_t)cpu_db_iret, SEL_KCODE, 0, 1);
		write_dr0(top - 8);	/* where the CPU pushes SS of the #DB frame */
		write_dr7(DR7_BP0_WRITE4);
		__asm__ volatile(".byte 0xf1" ::: "memory");
#endif
	} else if (CPU_END == END_ACLOOP) {
		uintptr_t top = user_space();
		int faulted;
		printf("# cpu: #AC delivered to ring 3 on a misaligned stack, forever\n");
		idt_set_gate(17, user_va(cpu_ac_handler), SEL_UCODE, 3, 0);
		write_cr0(read_cr0() | CR0_AM);
		user_call(user_va(cpu_ac_user), top - 2, 0, 0, 0, &faulted);
	} else if (CPU_END == END_RMAPLOOP) {
		enum { ALIASES = 4096, SPACES = 40 };
		const uintptr_t base = 0x40000000UL;
		uintptr_t frame = frame_alloc(), big = aspace_new(), others[SPACES];
		printf("# cpu: one frame mapped %u times, dropped and rebuilt forever\n", ALIASES);
		for (unsigned i = 0; i < ALIASES; i++)
			map_page(big, base + i * PAGE_SIZE, frame, PTE_P | PTE_W);
		for (unsigned i = 0; i < SPACES; i++)
			others[i] = aspace_new();
		__asm__ volatile("cli");
		for (unsigned round = 1;; round++) {
			write_cr3(big);
			for (unsigned i = 0; i < ALIASES; i++)
				(void)rd32(base + i * PAGE_SIZE);
			for (unsigned i = 0; i < SPACES; i++)
				write_cr3(others[i]);
			/* The test counts these: the drop happened, more than once. */
			printf("# cpu: rmap round %u dropped\n", round);
		}
	}
	printf("# cpu: the endless variant ended\n");
	guest_exit(EXIT_PANIC);
}

void guest_main(void)
{
	exc_hook = hook;
	if (CPU_END)
		end_variant();
	tap_run(tests, ARRAY_SIZE(tests));
}
