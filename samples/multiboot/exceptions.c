// SPDX-License-Identifier: GPL-2.0
/*
 * exceptions: a real IDT (32-bit interrupt gates), and exceptions delivered with the right
 * vector, error code, return EIP and (#PF) CR2, in 32-bit protected mode: #DE, #DB
 * (single step), #BP, #OF, #UD, #NM, #GP with a selector and with 0, #PF for a missing
 * PDE, a missing PTE, a read-only page with CR0.WP; a #PF the handler fixes is retried.
 */
#include "mb.h"

#define CR0_MP		(1u << 1)
#define CR0_EM		(1u << 2)
#define CR0_TS		(1u << 3)
#define CR0_WP		(1u << 16)
#define CR0_PG		(1u << 31)
#define CR4_PSE		(1u << 4)
#define EFLAGS_TF	(1u << 8)
#define DR6_BS		(1u << 14)

#define PTE_P		0x001u
#define PTE_W		0x002u
#define PTE_PS		0x080u

/* Paging: 4 MiB identity pages for the low 128 MiB, except one 4 MiB block with 4 KiB pages. */
#define PT_BLOCK	0x00c00000u	/* the block mapped through page_table */
#define PAGE_NP		(PT_BLOCK + 0x1000)	/* not present */
#define PAGE_RO		(PT_BLOCK + 0x2000)	/* read-only */
#define UNMAPPED	0x40000000u	/* no PDE */

static uint32_t page_dir[1024] __attribute__((aligned(4096)));
static uint32_t page_table[1024] __attribute__((aligned(4096)));

static inline uint32_t read_cr0(void) { uint32_t v; __asm__ volatile("mov %%cr0, %0" : "=r"(v)); return v; }
static inline void write_cr0(uint32_t v) { __asm__ volatile("mov %0, %%cr0" :: "r"(v) : "memory"); }
static inline uint32_t read_cr2(void) { uint32_t v; __asm__ volatile("mov %%cr2, %0" : "=r"(v)); return v; }
static inline uint32_t read_cr4(void) { uint32_t v; __asm__ volatile("mov %%cr4, %0" : "=r"(v)); return v; }
static inline void write_cr4(uint32_t v) { __asm__ volatile("mov %0, %%cr4" :: "r"(v) : "memory"); }
static inline void invlpg(uint32_t va) { __asm__ volatile("invlpg (%0)" :: "r"(va) : "memory"); }

/* What the last exception looked like. */
static volatile struct {
	uint32_t vector, err, eip, cr2, eflags, dr6;
	unsigned count;
} seen;

/* Where the handler resumes, unless fixup says to retry the instruction. */
static volatile uint32_t resume_eip;
/* Returns nonzero when it fixed the cause: the faulting instruction is retried. */
static int (*volatile fixup)(struct regs *r);

static void exception_isr(struct regs *r)
{
	seen.vector = r->vector;
	seen.err = r->err;
	seen.eip = r->ip;
	seen.cr2 = read_cr2();
	seen.eflags = r->flags;
	__asm__ volatile("mov %%dr6, %0" : "=r"(seen.dr6));
	if (++seen.count > 16)
		bail_out("vector %u keeps coming back (eip 0x%x)", r->vector, r->ip);
	if (fixup && fixup(r))
		return;
	r->ip = resume_eip;
}

static void reset_seen(void)
{
	seen.vector = seen.err = seen.eip = seen.cr2 = seen.eflags = seen.dr6 = 0;
	seen.count = 0;
	fixup = 0;
}

/*
 * Runs `insn` (assembler, may fault) between labels: the locals `at` and `after` get the
 * addresses of its start and end, and the handler resumes at `after`.  The variadic
 * arguments are the asm's inputs; RUN_AT_OUT takes outputs too, in parentheses.
 */
#define UNPAREN(...)	__VA_ARGS__
#define RUN_ASM(insn)							\
	"movl $1f, %[res]\n\t"						\
	"movl $2f, %[at_]\n\t"						\
	"movl $1f, %[after_]\n\t"					\
	"2: " insn "\n"							\
	"1:"
#define RUN_OUTS	[res] "=m"(resume_eip), [at_] "=m"(at), [after_] "=m"(after)
#define RUN_AT(insn, ...)						\
	__asm__ volatile(RUN_ASM(insn) : RUN_OUTS : __VA_ARGS__ : "memory", "cc")
#define RUN_AT_OUT(insn, outs, ...)					\
	__asm__ volatile(RUN_ASM(insn) : RUN_OUTS, UNPAREN outs : __VA_ARGS__ : "memory", "cc")

/* One TAP line: vector, error code, EIP (and CR2 where cr2 is nonzero) as expected. */
static void expect(const char *what, uint32_t vector, uint32_t err, uint32_t eip, uint32_t cr2)
{
	int pass = seen.count == 1 && seen.vector == vector && seen.err == err && seen.eip == eip &&
		   (!cr2 || seen.cr2 == cr2);
	if (!tap_ok(pass, "%s", what))
		diag("expected vector %u error 0x%x eip 0x%x cr2 0x%x; seen %u exception(s), last vector %u error 0x%x eip 0x%x cr2 0x%x",
		     vector, err, eip, cr2, seen.count, seen.vector, seen.err, seen.eip, seen.cr2);
}

static void test_simple(void)
{
	uint32_t at, after;

	reset_seen();
	uint32_t a = 1, d = 0, zero = 0;
	RUN_AT_OUT("divl %[z]", ("+a"(a), "+d"(d)), [z] "r"(zero));
	expect("#DE: divide by zero, EIP at the DIV", 0, 0, at, 0);

	reset_seen();
	RUN_AT("ud2");
	expect("#UD: UD2, EIP at the UD2", 6, 0, at, 0);

	reset_seen();
	RUN_AT("int3");
	expect("#BP: INT3 traps with EIP after it", 3, 0, after, 0);

	reset_seen();
	uint32_t big = 0x7fffffff;
	RUN_AT_OUT("addl $1, %[v]; into", ([v] "+r"(big)));
	/* `at` is the ADD: INTO is 1 byte, so the return EIP is `after`. */
	expect("#OF: INTO with OF set traps with EIP after it", 4, 0, after, 0);

	reset_seen();
	RUN_AT("int $0x80");
	expect("INT 0x80: software interrupt with EIP after it", 0x80, 0, after, 0);

	reset_seen();
	uint16_t sel = 0x1230;	/* GDT index 0x246: far beyond the 3-entry GDT's limit */
	RUN_AT("movw %[s], %%fs", [s] "r"(sel));
	expect("#GP: a selector beyond the GDT limit, error code the selector", 13, sel, at, 0);

	reset_seen();
	RUN_AT("ljmp $0, $3f\n3:");	/* the null selector */
	expect("#GP(0): a far jump to the null selector", 13, 0, at, 0);
}

static int clear_tf(struct regs *r)
{
	r->flags &= ~EFLAGS_TF;
	r->ip = resume_eip;
	return 1;
}

static void test_single_step(void)
{
	uint32_t at, after;
	reset_seen();
	fixup = clear_tf;
	__asm__ volatile("mov %0, %%dr6" :: "r"(0xffff0ff0u));	/* DR6 with no status bit */
	/*
	 * POPF sets TF: the trap comes after the instruction that follows it (the NOP), with
	 * EIP after the NOP; `at` is the PUSHF, `after` the end.
	 */
	RUN_AT("pushfl; orl $0x100, (%%esp); popfl; nop");
	(void)at;
	diag("#DB: dr6 0x%x, eflags 0x%x", seen.dr6, seen.eflags);
	int pass = seen.count == 1 && seen.vector == 1 && seen.eip == after && (seen.dr6 & DR6_BS);
	if (!tap_ok(pass, "#DB: single step traps after the instruction that follows POPF, DR6.BS"))
		diag("seen %u exception(s), vector %u eip 0x%x (expected 0x%x)", seen.count, seen.vector,
		     seen.eip, after);
}

static int clear_ts(struct regs *r)
{
	(void)r;
	__asm__ volatile("clts");
	return 1;	/* retry the x87 instruction */
}

static void test_nm(void)
{
	uint32_t at, after;
	reset_seen();
	fixup = clear_ts;
	write_cr0((read_cr0() & ~CR0_EM) | CR0_MP | CR0_TS);
	RUN_AT("fnop");
	(void)after;
	int pass = seen.count == 1 && seen.vector == 7 && seen.eip == at && !(read_cr0() & CR0_TS);
	if (!tap_ok(pass, "#NM: x87 with CR0.TS, EIP at it; retried after CLTS"))
		diag("seen %u exception(s), vector %u eip 0x%x (expected 0x%x)", seen.count, seen.vector,
		     seen.eip, at);
}

static void paging_init(void)
{
	for (uint32_t i = 0; i < 32; i++)	/* 128 MiB */
		page_dir[i] = (i << 22) | PTE_PS | PTE_W | PTE_P;
	for (uint32_t i = 0; i < 1024; i++)
		page_table[i] = (PT_BLOCK + (i << 12)) | PTE_W | PTE_P;
	page_dir[PT_BLOCK >> 22] = (uint32_t)(uintptr_t)page_table | PTE_W | PTE_P;
	page_table[(PAGE_RO >> 12) & 1023] &= ~PTE_W;
	/* The APIC page is not used here: nothing above 128 MiB is mapped. */
	write_cr4(read_cr4() | CR4_PSE);
	__asm__ volatile("mov %0, %%cr3" :: "r"(page_dir) : "memory");
	write_cr0(read_cr0() | CR0_PG | CR0_WP);
}

static int map_np_page(struct regs *r)
{
	(void)r;
	page_table[(PAGE_NP >> 12) & 1023] |= PTE_P;
	invlpg(PAGE_NP);
	return 1;	/* retry the access */
}

static void test_page_faults(void)
{
	uint32_t at, after, v = 0;

	/* PAGE_NP holds a known value, written while it was still mapped. */
	*(volatile uint32_t *)(PAGE_NP + 0x10) = 0x5eed1234;
	barrier();	/* the page tables are plain memory: keep the store before the unmap */
	page_table[(PAGE_NP >> 12) & 1023] &= ~PTE_P;
	invlpg(PAGE_NP);

	reset_seen();
	RUN_AT_OUT("movl (%[p]), %[v]", ([v] "+r"(v)), [p] "r"(PAGE_NP + 0x10));
	expect("#PF: read of a not-present PTE, error 0, CR2 the address", 14, 0, at, PAGE_NP + 0x10);

	reset_seen();
	RUN_AT("movl $1, (%[p])", [p] "r"(UNMAPPED + 0x123));
	expect("#PF: write under a not-present PDE, error 2 (W)", 14, 2, at, UNMAPPED + 0x123);

	reset_seen();
	RUN_AT("movl $1, (%[p])", [p] "r"(PAGE_RO + 0x8));
	expect("#PF: write to a read-only page with CR0.WP, error 3 (P, W)", 14, 3, at, PAGE_RO + 0x8);

	reset_seen();
	write_cr0(read_cr0() & ~CR0_WP);
	RUN_AT("movl $7, (%[p])", [p] "r"(PAGE_RO + 0x8));
	write_cr0(read_cr0() | CR0_WP);
	tap_ok(seen.count == 0 && *(volatile uint32_t *)(PAGE_RO + 0x8) == 7,
	       "CR0.WP=0: ring 0 writes a read-only page without a fault");

	reset_seen();
	fixup = map_np_page;
	v = 0;
	RUN_AT_OUT("movl (%[p]), %[v]", ([v] "+r"(v)), [p] "r"(PAGE_NP + 0x10));
	int pass = seen.count == 1 && seen.vector == 14 && seen.eip == at && v == 0x5eed1234;
	if (!tap_ok(pass, "#PF: fixed by the handler, the read is retried and completes"))
		diag("seen %u exception(s), vector %u, value read 0x%x", seen.count, seen.vector, v);
}

void kmain(void)
{
	tap_plan(14);
	const uint8_t vectors[] = { 0, 1, 3, 4, 6, 7, 13, 14, 0x80 };
	for (unsigned i = 0; i < ARRAY_SIZE(vectors); i++)
		isr_set(vectors[i], exception_isr);
	test_simple();
	test_single_step();
	test_nm();
	paging_init();
	test_page_faults();
}
