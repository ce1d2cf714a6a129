// SPDX-License-Identifier: GPL-2.0
/*
 * exceptions-lm: exceptions in 64-bit long mode (the entry code switched there; 2 MiB
 * identity pages for the low 4 GiB): vector, error code, return RIP and (#PF) CR2 of #DE,
 * #DB (single step), #BP, #UD, #NM, #GP for a non-canonical address and for a selector,
 * #PF above the mapped 4 GiB, on a read-only page, and an instruction fetch from an NX
 * page; and the frame's 16-byte alignment with the interrupted RSP saved as it was.
 */
#include "mb.h"

#define CR0_MP		(1ul << 1)
#define CR0_EM		(1ul << 2)
#define CR0_TS		(1ul << 3)
#define MSR_EFER	0xc0000080
#define EFER_NXE	(1ull << 11)
#define EFER_LMA	(1ull << 10)
#define EFLAGS_TF	(1ul << 8)
#define DR6_BS		(1ul << 14)

#define PTE_W		(1ull << 1)
#define PTE_NX		(1ull << 63)
#define LARGE_PAGE	0x200000ul
#define PAGE_RO		0x00e00000ul	/* a 2 MiB page made read-only */
#define PAGE_NX		0x01000000ul	/* a 2 MiB page made no-execute */
#define UNMAPPED	0x100000000ul	/* 4 GiB: beyond the boot page tables */
#define NONCANONICAL	0x8000000000000000ul

extern uint64_t boot_pd[4 * 512];	/* boot.S: the page directories of the low 4 GiB */

static inline uintptr_t read_cr0(void) { uintptr_t v; __asm__ volatile("mov %%cr0, %0" : "=r"(v)); return v; }
static inline void write_cr0(uintptr_t v) { __asm__ volatile("mov %0, %%cr0" :: "r"(v) : "memory"); }
static inline uintptr_t read_cr2(void) { uintptr_t v; __asm__ volatile("mov %%cr2, %0" : "=r"(v)); return v; }
static inline void invlpg(uintptr_t va) { __asm__ volatile("invlpg (%0)" :: "r"(va) : "memory"); }

static volatile struct {
	uintptr_t vector, err, ip, cr2, flags, dr6, sp, frame_top;
	unsigned count;
} seen;
static volatile uintptr_t resume_ip;
static int (*volatile fixup)(struct regs *r);

static void exception_isr(struct regs *r)
{
	seen.vector = r->vector;
	seen.err = r->err;
	seen.ip = r->ip;
	seen.cr2 = read_cr2();
	seen.flags = r->flags;
	seen.sp = r->sp;
	seen.frame_top = (uintptr_t)(&r->ss + 1);	/* where the CPU began pushing */
	__asm__ volatile("mov %%dr6, %0" : "=r"(seen.dr6));
	if (++seen.count > 16)
		bail_out("vector %lu keeps coming back (rip 0x%lx)", (unsigned long)r->vector,
			 (unsigned long)r->ip);
	if (fixup && fixup(r))
		return;
	r->ip = resume_ip;
}

static void reset_seen(void)
{
	seen.vector = seen.err = seen.ip = seen.cr2 = seen.flags = seen.dr6 = 0;
	seen.sp = seen.frame_top = 0;
	seen.count = 0;
	fixup = 0;
}

/* As in exceptions.c: `insn` between labels, `at`/`after` its start and end. */
#define UNPAREN(...)	__VA_ARGS__
#define RUN_ASM(insn)							\
	"movq $1f, %[res]\n\t"						\
	"movq $2f, %[at_]\n\t"						\
	"movq $1f, %[after_]\n\t"					\
	"2: " insn "\n"							\
	"1:"
#define RUN_OUTS	[res] "=m"(resume_ip), [at_] "=m"(at), [after_] "=m"(after)
#define RUN_AT(insn, ...)						\
	__asm__ volatile(RUN_ASM(insn) : RUN_OUTS : __VA_ARGS__ : "memory", "cc")
#define RUN_AT_OUT(insn, outs, ...)					\
	__asm__ volatile(RUN_ASM(insn) : RUN_OUTS, UNPAREN outs : __VA_ARGS__ : "memory", "cc")

static void expect(const char *what, uintptr_t vector, uintptr_t err, uintptr_t ip, uintptr_t cr2)
{
	int pass = seen.count == 1 && seen.vector == vector && seen.err == err && seen.ip == ip &&
		   (!cr2 || seen.cr2 == cr2);
	if (!tap_ok(pass, "%s", what))
		diag("expected vector %lu error 0x%lx rip 0x%lx cr2 0x%lx; seen %u exception(s), last vector %lu error 0x%lx rip 0x%lx cr2 0x%lx",
		     (unsigned long)vector, (unsigned long)err, (unsigned long)ip, (unsigned long)cr2,
		     seen.count, (unsigned long)seen.vector, (unsigned long)seen.err,
		     (unsigned long)seen.ip, (unsigned long)seen.cr2);
}

static int clear_tf(struct regs *r)
{
	r->flags &= ~EFLAGS_TF;
	r->ip = resume_ip;
	return 1;
}

static int clear_ts(struct regs *r)
{
	(void)r;
	__asm__ volatile("clts");
	return 1;
}

static void test_faults(void)
{
	uintptr_t at, after;

	reset_seen();
	uint32_t a = 1, d = 0, zero = 0;
	RUN_AT_OUT("divl %[z]", ("+a"(a), "+d"(d)), [z] "r"(zero));
	expect("#DE: divide by zero, RIP at the DIV", 0, 0, at, 0);

	/*
	 * #UD with RSP 8 bytes off 16: the CPU aligns RSP before it pushes the frame, and
	 * saves RSP as it was.  The handler resumes at 3:, which undoes the SUB.
	 */
	reset_seen();
	uintptr_t sp_before;
	__asm__ volatile("movq $3f, %[res]\n\t"
			 "movq $2f, %[at_]\n\t"
			 "subq $8, %%rsp\n\t"
			 "movq %%rsp, %[sp]\n"
			 "2: ud2\n"
			 "3: addq $8, %%rsp"
			 : [res] "=m"(resume_ip), [at_] "=m"(at), [sp] "=&r"(sp_before) :: "memory", "cc");
	diag("#UD: saved rsp 0x%lx, rsp before 0x%lx, frame top 0x%lx", (unsigned long)seen.sp,
	     (unsigned long)sp_before, (unsigned long)seen.frame_top);
	expect("#UD: UD2, RIP at the UD2", 6, 0, at, 0);
	tap_ok(seen.sp == sp_before && seen.frame_top % 16 == 0 && seen.frame_top <= sp_before &&
	       sp_before - seen.frame_top < 16,
	       "64-bit frame: pushed from a 16-byte aligned RSP, the interrupted RSP saved");

	reset_seen();
	RUN_AT("int3");
	expect("#BP: INT3 traps with RIP after it", 3, 0, after, 0);

	reset_seen();
	uint16_t sel = 0x1230;
	RUN_AT("movw %[s], %%fs", [s] "r"(sel));
	expect("#GP: a selector beyond the GDT limit, error code the selector", 13, sel, at, 0);

	reset_seen();
	uint64_t v = 0;
	RUN_AT_OUT("movq (%[p]), %[v]", ([v] "+r"(v)), [p] "r"(NONCANONICAL));
	expect("#GP(0): a non-canonical address", 13, 0, at, 0);

	reset_seen();
	fixup = clear_tf;
	__asm__ volatile("mov %0, %%dr6" :: "r"(0xffff0ff0ul));
	RUN_AT("pushfq; orq $0x100, (%%rsp); popfq; nop");
	int db_ok = seen.count == 1 && seen.vector == 1 && seen.ip == after && (seen.dr6 & DR6_BS);
	diag("#DB: dr6 0x%lx, rflags 0x%lx", (unsigned long)seen.dr6, (unsigned long)seen.flags);
	tap_ok(db_ok, "#DB: single step traps after the instruction that follows POPF, DR6.BS");

	reset_seen();
	fixup = clear_ts;
	write_cr0((read_cr0() & ~CR0_EM) | CR0_MP | CR0_TS);
	RUN_AT("fnop");
	tap_ok(seen.count == 1 && seen.vector == 7 && seen.ip == at && !(read_cr0() & CR0_TS),
	       "#NM: x87 with CR0.TS, RIP at it; retried after CLTS");
}

static void test_page_faults(void)
{
	uintptr_t at, after;
	(void)after;

	reset_seen();
	uint64_t v = 0;
	RUN_AT_OUT("movq (%[p]), %[v]", ([v] "+r"(v)), [p] "r"(UNMAPPED + 0x40));
	expect("#PF: read above the mapped 4 GiB, error 0, CR2 the address", 14, 0, at, UNMAPPED + 0x40);

	boot_pd[PAGE_RO / LARGE_PAGE] &= ~PTE_W;
	invlpg(PAGE_RO);
	reset_seen();
	RUN_AT("movl $1, (%[p])", [p] "r"(PAGE_RO + 0x18));
	expect("#PF: write to a read-only 2 MiB page with CR0.WP, error 3 (P, W)", 14, 3, at,
	       PAGE_RO + 0x18);
	boot_pd[PAGE_RO / LARGE_PAGE] |= PTE_W;
	invlpg(PAGE_RO);

	uint32_t r[4];
	cpuid(0x80000000, 0, r);
	int nx = 0;
	if (r[0] >= 0x80000001) {
		cpuid(0x80000001, 0, r);
		nx = (r[3] >> 20) & 1;
	}
	if (!nx) {
		tap_skip("#PF: fetch from an NX page, error 0x11 (P, I/D)", "CPUID.80000001h:EDX.NX is 0");
		return;
	}
	wrmsr(MSR_EFER, rdmsr(MSR_EFER) | EFER_NXE);
	*(volatile uint8_t *)PAGE_NX = 0xc3;	/* ret: never reached */
	barrier();
	boot_pd[PAGE_NX / LARGE_PAGE] |= PTE_NX;
	invlpg(PAGE_NX);
	reset_seen();
	RUN_AT("jmp *%[p]", [p] "r"(PAGE_NX));
	expect("#PF: fetch from an NX page, error 0x11 (P, I/D)", 14, 0x11, PAGE_NX, PAGE_NX);
	boot_pd[PAGE_NX / LARGE_PAGE] &= ~PTE_NX;
	invlpg(PAGE_NX);
}

void kmain(void)
{
	tap_plan(12);
	tap_ok(rdmsr(MSR_EFER) & EFER_LMA, "running in long mode (EFER.LMA)");
	const uint8_t vectors[] = { 0, 1, 3, 6, 7, 13, 14 };
	for (unsigned i = 0; i < ARRAY_SIZE(vectors); i++)
		isr_set(vectors[i], exception_isr);
	test_faults();
	test_page_faults();
}
