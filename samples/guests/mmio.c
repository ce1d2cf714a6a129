// SPDX-License-Identifier: GPL-2.0
/*
 * MMIO emulation guest (mmio-<mode>.elf): instructions whose memory operand lies in the
 * test device's window (guest-physical 0xff000000, 64 KiB: QEMU's pc-testdev iomem, which
 * the launcher provides too; see Documentation/guest-boot-protocol.md). The window behaves
 * like RAM but every access to it is an MMIO exit, so the hypervisor's instruction
 * emulator runs each of these instructions, one device access per exit to userspace.
 *
 * Every test checks the memory contents and the registers afterwards (values, flags,
 * RCX/RSI/RDI of string instructions). Read-modify-write instructions run twice more: on
 * RAM, where the CPU itself is the reference for the flags, and with all arithmetic flags
 * set or clear beforehand (flags an instruction leaves alone must stay).
 *  - MOV loads and stores of 1, 2, 4 (and 8) bytes, immediates, partial registers,
 *    misaligned; MOVZX/MOVSX; a load and a store across the two device pages;
 *  - ADD/OR/AND/XOR/SUB (register and immediate), INC/DEC/NOT/NEG, BTS/BTR/BTC;
 *  - LOCK ADD/OR/XADD/DEC/BTS, XCHG (locked without the prefix), LOCK CMPXCHG (succeeding
 *    and failing), LOCK CMPXCHG8B;
 *  - REP STOS (each element size) and REP MOVSB/MOVSD (RAM to MMIO, MMIO to MMIO, MMIO to
 *    RAM) with counts 1, 2, 7 and 64, DF=0 and DF=1; MOVS without REP, MMIO to MMIO;
 *  - iterations a string instruction committed before an exception keep their register
 *    updates: at the #PF of a REP MOVS from MMIO into RAM, of a REP STOSD to MMIO, and of
 *    a REP STOSD whose first stores hit one of the guest's own page tables (which a shadow
 *    MMU write-protects, so they are emulated), RCX/RSI/RDI count exactly the elements
 *    written; the handler maps the page and the instruction completes.
 * The device window starts zeroed and each test takes fresh parts of it, so bytes around
 * what an instruction should write are known to be 0.
 *
 * Tests that end the guest when a hypervisor gets them wrong (an internal error, a
 * livelock) come after those it survives: page-crossing accesses and string instructions
 * on MMIO last. make MMIO_FLAGS=-DMMIO_ONLY=n builds images that run test n alone, to see
 * each one's outcome; -DMMIO_VERBOSE prints each case as it starts, to see where a guest
 * that never finished stopped.
 */
#include "rt.h"

#define IOMEM_PA	0xff000000UL	/* pc-testdev iomem */
#define IOMEM_SIZE	0x10000UL
#define VA_IOMEM	0x60000000UL	/* the whole window, mapped in every test's space */
#define VA_RAM		0x50000000UL	/* RAM pages of the fault tests */
#define VA_ALIAS	0x88000000UL	/* a page table, as data; another directory than VA_RAM */
#define VA_MMIO_EDGE	0x68000000UL	/* one device page followed by a hole */
/* Page 0 and 1 of the window: the page-crossing test; pages 14, 15: the fault test. */
#define POOL_START	(VA_IOMEM + 2 * PAGE_SIZE)
#define POOL_END	(VA_IOMEM + 14 * PAGE_SIZE)
#define GUARD		16		/* checked bytes on each side of what is written */

#define FL_FIXED	0x002UL		/* EFLAGS bit 1 */
#define FL_CF		0x001UL
#define FL_PF		0x004UL
#define FL_AF		0x010UL
#define FL_ZF		0x040UL
#define FL_SF		0x080UL
#define FL_OF		0x800UL
#define FL_ARITH	(FL_CF | FL_PF | FL_AF | FL_ZF | FL_SF | FL_OF)
#define FL_LOGIC	(FL_ARITH & ~FL_AF)	/* AND/OR/XOR leave AF undefined */
#define FL_BT		(FL_CF | FL_ZF)		/* BT*: OF, SF, AF, PF undefined */

#define HI		(0xa5a5a5a5ULL << 32)	/* bytes above a 32-bit operand: must stay */

#ifdef MODE_LM
#define SIZES_MAX	8
#else
#define SIZES_MAX	4
#endif

#ifdef MMIO_VERBOSE
#define TRACE(fmt, ...)	printf("# " fmt "\n", ##__VA_ARGS__)
#else
#define TRACE(fmt, ...)	do { } while (0)
#endif

/* Names a check that involves loop variables. */
static const char *what(const char *fmt, ...) __printf(1, 2);
static const char *what(const char *fmt, ...)
{
	static char buf[120];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf_lite(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	return buf;
}

/* ------------------------------------------------------------------------------------ */
/* A fresh address space with the device window at VA_IOMEM, loaded. */
static uintptr_t mmio_space(void)
{
	uintptr_t cr3 = aspace_new();
	for (uintptr_t off = 0; off < IOMEM_SIZE; off += PAGE_SIZE)
		map_page(cr3, VA_IOMEM + off, IOMEM_PA + off, PTE_P | PTE_W);
	write_cr3(cr3);
	return cr3;
}

/* Never-written parts of the window (so zero), 16-byte aligned, GUARD bytes apart. */
static uintptr_t pool_next = POOL_START;

static uintptr_t dev_alloc(size_t n)
{
	uintptr_t p = ((pool_next + 15) & ~(uintptr_t)15) + GUARD;
	pool_next = p + ((n + 15) & ~(size_t)15) + GUARD;
	if (pool_next > POOL_END)
		panic("the device window is used up");
	return p;
}

/* Writes n bytes at va (MMIO or RAM) with 4-byte stores, zero-padded to a multiple of 4. */
static void fill(uintptr_t va, const uint8_t *bytes, size_t n)
{
	for (size_t off = 0; off < n; off += 4) {
		uint32_t v = 0;
		for (size_t b = 0; b < 4 && off + b < n; b++)
			v |= (uint32_t)bytes[off + b] << (8 * b);
		wr32(va + off, v);
	}
}

/*
 * Checks [va - GUARD, va + n rounded up to 16 + GUARD) with 4-byte loads: the n bytes at
 * va must be want[], everything else 0. Reports the first difference.
 */
static void check_area(const char *name, uintptr_t va, const uint8_t *want, size_t n)
{
	size_t span = GUARD + ((n + 15) & ~(size_t)15) + GUARD;
	for (size_t off = 0; off < span; off += 4) {
		uint32_t expected = 0, seen = rd32(va - GUARD + off);
		for (size_t b = 0; b < 4; b++) {
			size_t i = off + b - GUARD;	/* wraps for the guard below: out of range */
			if (off + b >= GUARD && i < n)
				expected |= (uint32_t)want[i] << (8 * b);
		}
		if (seen != expected) {
			check_fail("%s: 4 bytes at offset %d: expected 0x%08x, seen 0x%08x", name,
				   (int)off - GUARD, expected, seen);
			return;
		}
	}
}

/* Distinct non-zero bytes. */
static void pattern(uint8_t *buf, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		buf[i] = (uint8_t)((i * 29 + seed) | 1);
}

/* ------------------------------------------------------------------------------------ */
static void t_mov(void)
{
	mmio_space();
	uintptr_t p = dev_alloc(32);
	uintptr_t r;

	*(volatile uint8_t *)p = 0x81;
	*(volatile uint16_t *)(p + 2) = 0x8233;
	wr32(p + 4, 0x84556677);
	__asm__ volatile("movb $0x9c, 8(%0)\n\tmovw $0x9d9e, 10(%0)\n\tmovl $0x9f000001, 12(%0)"
			 :: "r"(p) : "memory");
	CHECK_EQ("1-byte load", 0x81, *(volatile uint8_t *)p);
	CHECK_EQ("2-byte load", 0x8233, *(volatile uint16_t *)(p + 2));
	CHECK_EQ("4-byte load", 0x84556677, rd32(p + 4));
	CHECK_EQ("4-byte load over a 1- and a 2-byte store", 0x82330081, rd32(p));
	CHECK_EQ("2-byte load inside a 4-byte store", 0x8455, *(volatile uint16_t *)(p + 6));
	CHECK_EQ("1-byte immediate store", 0x9c, *(volatile uint8_t *)(p + 8));
	CHECK_EQ("2-byte immediate store", 0x9d9e, *(volatile uint16_t *)(p + 10));
	CHECK_EQ("4-byte immediate store", 0x9f000001, rd32(p + 12));
	/* A store from AH (ModRM register 4 without REX) and one from a 16-bit register. */
	__asm__ volatile("movb %%ah, 16(%1)\n\tmovw %%ax, 18(%1)" :: "a"(0x1234), "S"(p) : "memory");
	CHECK_EQ("store of AH and AX", 0x12340012, rd32(p + 16));
	/* Loads into part of a register keep the rest; a 32-bit load clears bits 63:32. */
	r = (uintptr_t)0xfedcba9876543210ULL;
	__asm__ volatile("movb (%1), %b0" : "+q"(r) : "r"(p) : "memory");
	CHECK_EQ("register after a 1-byte load", (uintptr_t)0xfedcba9876543281ULL, r);
	r = (uintptr_t)0xfedcba9876543210ULL;
	__asm__ volatile("movw 2(%1), %w0" : "+r"(r) : "r"(p) : "memory");
	CHECK_EQ("register after a 2-byte load", (uintptr_t)0xfedcba9876548233ULL, r);
	r = (uintptr_t)0xfedcba9876543210ULL;
	__asm__ volatile("movl 4(%1), %k0" : "+r"(r) : "r"(p) : "memory");
	CHECK_EQ("register after a 4-byte load", 0x84556677, r);
	/* Misaligned inside the page. */
	uintptr_t q = dev_alloc(16);
	wr32(q + 5, 0x11223344);
	*(volatile uint16_t *)(q + 11) = 0x5566;
	CHECK_EQ("misaligned 4-byte load", 0x11223344, rd32(q + 5));
	CHECK_EQ("aligned loads around misaligned stores", 0x22334400, rd32(q + 4));
	CHECK_EQ("aligned loads around misaligned stores", 0x66000011, rd32(q + 8));
	CHECK_EQ("aligned loads around misaligned stores", 0x55, rd32(q + 12));
#ifdef MODE_LM
	*(volatile uint64_t *)(p + 24) = 0x8899aabbccddeeffULL;
	CHECK_EQ("8-byte load", 0x8899aabbccddeeffULL, *(volatile uint64_t *)(p + 24));
	CHECK_EQ("4-byte loads of an 8-byte store", 0xccddeeff8899aabbULL,
		 ((uint64_t)rd32(p + 24) << 32) | rd32(p + 28));
	__asm__ volatile("movq $-2, 24(%0)" :: "r"(p) : "memory");
	CHECK_EQ("8-byte store of a sign-extended immediate", 0xfffffffffffffffeULL,
		 *(volatile uint64_t *)(p + 24));
#else
	wr32(p + 24, 0xccddeeff);
	wr32(p + 28, 0x8899aabb);
	uint32_t lo, hi;
	__asm__ volatile("movl 24(%2), %0\n\tmovl 28(%2), %1" : "=&r"(lo), "=r"(hi) : "r"(p) : "memory");
	CHECK_EQ("two 4-byte loads", 0x8899aabbccddeeffULL, ((uint64_t)hi << 32) | lo);
#endif
}

static void t_movzx_movsx(void)
{
	mmio_space();
	uintptr_t p = dev_alloc(16);
	uintptr_t r;

	wr32(p, 0x8180f281);	/* bytes 81 f2 80 81: the high bit set everywhere */
	wr32(p + 4, 0x7f017ffe);
	/* The register starts with all bits in use: the load must write all of it. */
#define LOAD(insn, off, reg) ({ r = (uintptr_t)0xfedcba9876543210ULL;		\
	__asm__ volatile(insn " " #off "(%1), " reg : "+r"(r) : "r"(p) : "memory"); r; })
	CHECK_EQ("MOVZX r32, m8", 0x81, LOAD("movzbl", 0, "%k0"));
	CHECK_EQ("MOVSX r32, m8", 0xffffff81, LOAD("movsbl", 0, "%k0"));
	CHECK_EQ("MOVZX r32, m16", 0xf281, LOAD("movzwl", 0, "%k0"));
	CHECK_EQ("MOVSX r32, m16", 0xfffff281, LOAD("movswl", 0, "%k0"));
	CHECK_EQ("MOVSX r32, m8 (positive)", 0x7f, LOAD("movsbl", 7, "%k0"));
	CHECK_EQ("MOVSX r32, m16 (positive)", 0x7ffe, LOAD("movswl", 4, "%k0"));
#ifdef MODE_LM
	CHECK_EQ("MOVSX r64, m8", 0xffffffffffffff80ULL, LOAD("movsbq", 2, "%q0"));
	CHECK_EQ("MOVSX r64, m16", 0xffffffffffff8180ULL, LOAD("movswq", 2, "%q0"));
	CHECK_EQ("MOVSXD r64, m32", 0xffffffff8180f281ULL, LOAD("movslq", 0, "%q0"));
	CHECK_EQ("MOVZX r64, m16", 0x7f01, LOAD("movzwq", 6, "%q0"));
#endif
#undef LOAD
	/* A 16-bit destination keeps the rest of the register. */
	r = (uintptr_t)0xfedcba9876543210ULL;
	__asm__ volatile("movsbw (%1), %w0" : "+r"(r) : "r"(p) : "memory");
	CHECK_EQ("MOVSX r16, m8", (uintptr_t)0xfedcba987654ff81ULL, r);
}

static void t_page_crossing(void)
{
	mmio_space();
	const uintptr_t edge = VA_IOMEM + PAGE_SIZE;	/* device pages 0 and 1 meet here */

	__asm__ volatile("movl %0, (%1)" :: "r"(0x44332211), "r"(edge - 2) : "memory");
	CHECK_EQ("2 bytes before the page end", 0x2211, *(volatile uint16_t *)(edge - 2));
	CHECK_EQ("2 bytes after it", 0x4433, *(volatile uint16_t *)edge);
	CHECK_EQ("4-byte load across the pages", 0x44332211, rd32(edge - 2));
	CHECK_EQ("bytes before untouched", 0, *(volatile uint16_t *)(edge - 4));
	CHECK_EQ("bytes after untouched", 0, *(volatile uint16_t *)(edge + 2));
#ifdef MODE_LM
	*(volatile uint64_t *)(edge - 4) = 0x0807060504030201ULL;
	CHECK_EQ("8-byte load across the pages", 0x0807060504030201ULL,
		 *(volatile uint64_t *)(edge - 4));
	CHECK_EQ("second page's half", 0x08070605, rd32(edge));
#endif
}

/* ------------------------------------------------------------------------------------ */
/*
 * Read-modify-write instructions. Each op runs one instruction on the 8 bytes at p with
 * the registers and flags of *r (the register operand is EBX/RBX, CMPXCHG8B uses all four)
 * and returns them in *r.
 */
struct regs {
	uintptr_t a, b, c, d, fl;
};

#define OP(fn, insn)								\
static void fn(uintptr_t p, struct regs *r)					\
{										\
	__asm__ volatile("push %[fl]\n\tpopf\n\t" insn "\n\tpushf\n\tpop %[fl]"	\
			 : "+a"(r->a), "+b"(r->b), "+c"(r->c), "+d"(r->d),		\
			   [fl] "+r"(r->fl)						\
			 : [p] "r"(p) : "memory", "cc");				\
}
OP(op_add_r, "addl %%ebx, (%[p])")
OP(op_add_i, "addl $1, (%[p])")
OP(op_sub_r, "subl %%ebx, (%[p])")
OP(op_sub_i, "subl $6, (%[p])")
OP(op_or_r, "orl %%ebx, (%[p])")
OP(op_or_i, "orl $0x80000000, (%[p])")
OP(op_and_r, "andl %%ebx, (%[p])")
OP(op_and_i, "andl $0xff00, (%[p])")
OP(op_xor_r, "xorl %%ebx, (%[p])")
OP(op_xor_i, "xorl $-1, (%[p])")
OP(op_inc, "incl (%[p])")
OP(op_dec, "decl (%[p])")
OP(op_not, "notl (%[p])")
OP(op_neg, "negl (%[p])")
OP(op_bts_r, "btsl %%ebx, (%[p])")
OP(op_btr_i, "btrl $4, (%[p])")
OP(op_btc_r, "btcl %%ebx, (%[p])")
OP(op_xchg, "xchgl %%ebx, (%[p])")
OP(op_addb, "addb %%bl, (%[p])")
OP(op_incw, "incw (%[p])")
OP(op_lock_add, "lock addl %%ebx, (%[p])")
OP(op_lock_or, "lock orl $0x100, (%[p])")
OP(op_lock_xadd, "lock xaddl %%ebx, (%[p])")
OP(op_lock_dec, "lock decl (%[p])")
OP(op_lock_bts, "lock btsl $31, (%[p])")
OP(op_lock_cmpxchg, "lock cmpxchgl %%ebx, (%[p])")
OP(op_lock_cmpxchg8b, "lock cmpxchg8b (%[p])")
#ifdef MODE_LM
OP(op_addq, "addq %%rbx, (%[p])")
OP(op_negq, "negq (%[p])")
OP(op_lock_cmpxchgq, "lock cmpxchgq %%rbx, (%[p])")
#endif
#undef OP

struct rmw_case {
	const char *name;
	void (*op)(uintptr_t p, struct regs *r);
	uint64_t mem, want_mem;		/* the 8 bytes at the operand, before and after */
	struct regs in, want;		/* EAX..EDX before and after (fl unused) */
	uintptr_t set, clear;		/* flags that must be 1 / 0 afterwards */
	uintptr_t defined;		/* flags compared with the same instruction on RAM */
};
#define R(a_, b_, c_, d_)	{ .a = (a_), .b = (b_), .c = (c_), .d = (d_), .fl = 0 }
#define RB(b_)			R(0, b_, 0, 0)

static const struct rmw_case rmw_cases[] = {
	{ "ADD m32, r32 (carry)", op_add_r, HI | 0xfffffff0, HI | 0x10, RB(0x20), RB(0x20), FL_CF, FL_ZF, FL_ARITH },
	{ "ADD m32, imm (zero, carry)", op_add_i, HI | 0xffffffff, HI, RB(0), RB(0), FL_CF | FL_ZF, 0, FL_ARITH },
	{ "SUB m32, r32 (zero)", op_sub_r, HI | 5, HI, RB(5), RB(5), FL_ZF, FL_CF, FL_ARITH },
	{ "SUB m32, imm (borrow)", op_sub_i, HI | 5, HI | 0xffffffff, RB(0), RB(0), FL_CF | FL_SF, FL_ZF, FL_ARITH },
	{ "OR m32, r32", op_or_r, HI | 0x0f0f0000, HI | 0x0f0f00f0, RB(0xf0), RB(0xf0), 0, FL_ZF | FL_CF | FL_OF, FL_LOGIC },
	{ "OR m32, imm", op_or_i, HI | 1, HI | 0x80000001, RB(0), RB(0), FL_SF, FL_ZF | FL_CF, FL_LOGIC },
	{ "AND m32, r32 (zero)", op_and_r, HI | 0xf0f0f0f0, HI, RB(0x0f0f0f0f), RB(0x0f0f0f0f), FL_ZF, FL_CF | FL_OF, FL_LOGIC },
	{ "AND m32, imm", op_and_i, HI | 0x1234, HI | 0x1200, RB(0), RB(0), 0, FL_ZF | FL_CF, FL_LOGIC },
	{ "XOR m32, r32 (zero)", op_xor_r, HI | 0x12345678, HI, RB(0x12345678), RB(0x12345678), FL_ZF, FL_CF, FL_LOGIC },
	{ "XOR m32, imm", op_xor_i, HI | 0x0f0f0f0f, HI | 0xf0f0f0f0, RB(0), RB(0), FL_SF, FL_ZF | FL_CF, FL_LOGIC },
	{ "INC m32 (zero; CF kept)", op_inc, HI | 0xffffffff, HI, RB(0), RB(0), FL_ZF, 0, FL_ARITH },
	{ "DEC m32", op_dec, HI, HI | 0xffffffff, RB(0), RB(0), FL_SF, FL_ZF, FL_ARITH },
	{ "NOT m32 (flags kept)", op_not, HI | 0x0000ffff, HI | 0xffff0000, RB(0), RB(0), 0, 0, FL_ARITH },
	{ "NEG m32", op_neg, HI | 1, HI | 0xffffffff, RB(0), RB(0), FL_CF | FL_SF, FL_ZF, FL_ARITH },
	{ "NEG m32 (zero)", op_neg, HI, HI, RB(0), RB(0), FL_ZF, FL_CF, FL_ARITH },
	{ "BTS m32, r32 (bit 35: the next dword)", op_bts_r, 1, 0x0000000800000001ULL, RB(35), RB(35), 0, FL_CF, FL_BT },
	{ "BTR m32, imm", op_btr_i, HI | 0x30, HI | 0x20, RB(0), RB(0), FL_CF, 0, FL_BT },
	{ "BTC m32, r32", op_btc_r, HI | 1, HI, RB(0), RB(0), FL_CF, 0, FL_BT },
	{ "ADD m8, r8 (zero, carry)", op_addb, HI | 0xa5a5a5ff, HI | 0xa5a5a500, RB(1), RB(1), FL_ZF | FL_CF, 0, FL_ARITH },
	{ "INC m16 (zero)", op_incw, HI | 0xa5a5ffff, HI | 0xa5a50000, RB(0), RB(0), FL_ZF, 0, FL_ARITH },
#ifdef MODE_LM
	{ "ADD m64, r64 (carry)", op_addq, 0xffffffffffffffffULL, 1, RB(2), RB(2), FL_CF, FL_ZF, FL_ARITH },
	{ "NEG m64", op_negq, 0x0000000100000000ULL, 0xffffffff00000000ULL, RB(0), RB(0), FL_CF | FL_SF, FL_ZF, FL_ARITH },
#endif
};

static const struct rmw_case lock_cases[] = {
	{ "LOCK ADD m32, r32 (overflow)", op_lock_add, HI | 0x7fffffff, HI | 0x80000000, RB(1), RB(1), FL_OF | FL_SF, FL_CF | FL_ZF, FL_ARITH },
	{ "LOCK OR m32, imm", op_lock_or, HI | 1, HI | 0x101, RB(0), RB(0), 0, FL_ZF | FL_CF, FL_LOGIC },
	{ "LOCK XADD m32, r32", op_lock_xadd, HI | 0x7fffffff, HI | 0x80000000, RB(1), RB(0x7fffffff), FL_OF | FL_SF, FL_CF | FL_ZF, FL_ARITH },
	{ "LOCK DEC m32 (zero)", op_lock_dec, HI | 1, HI, RB(0), RB(0), FL_ZF, 0, FL_ARITH },
	{ "LOCK BTS m32, imm", op_lock_bts, HI, HI | 0x80000000, RB(0), RB(0), 0, FL_CF, FL_BT },
	{ "XCHG m32, r32 (locked without LOCK; flags kept)", op_xchg, HI | 0x11111111, HI | 0xcafef00d, RB(0xcafef00d), RB(0x11111111), 0, 0, FL_ARITH },
	{ "LOCK CMPXCHG m32, r32 (equal: stores)", op_lock_cmpxchg, HI | 0x1234, HI | 0x5678,
	  R(0x1234, 0x5678, 0, 0), R(0x1234, 0x5678, 0, 0), FL_ZF, FL_CF, FL_ARITH },
	{ "LOCK CMPXCHG m32, r32 (different: loads EAX)", op_lock_cmpxchg, HI | 0x2222, HI | 0x2222,
	  R(0x1111, 0x5678, 0, 0), R(0x2222, 0x5678, 0, 0), FL_CF, FL_ZF, FL_ARITH },
	{ "LOCK CMPXCHG8B m64 (equal: stores ECX:EBX)", op_lock_cmpxchg8b, 0x1111111122222222ULL, 0x3333333344444444ULL,
	  R(0x22222222, 0x44444444, 0x33333333, 0x11111111), R(0x22222222, 0x44444444, 0x33333333, 0x11111111),
	  FL_ZF, 0, FL_ARITH },
	{ "LOCK CMPXCHG8B m64 (different: loads EDX:EAX)", op_lock_cmpxchg8b, 0x1111111122222222ULL, 0x1111111122222222ULL,
	  R(0x22222223, 0x44444444, 0x33333333, 0x11111111), R(0x22222222, 0x44444444, 0x33333333, 0x11111111),
	  0, FL_ZF, FL_ARITH },
#ifdef MODE_LM
	{ "LOCK CMPXCHG m64, r64 (equal: stores)", op_lock_cmpxchgq, 0x123456789abcdef0ULL, 0x0fedcba987654321ULL,
	  R(0x123456789abcdef0ULL, 0x0fedcba987654321ULL, 0, 0), R(0x123456789abcdef0ULL, 0x0fedcba987654321ULL, 0, 0),
	  FL_ZF, FL_CF, FL_ARITH },
#endif
};

static void run_rmw(const struct rmw_case *cases, unsigned n)
{
	static uint8_t ram[16] __attribute__((aligned(16)));

	mmio_space();
	for (unsigned i = 0; i < n; i++) {
		const struct rmw_case *c = &cases[i];
		for (int all = 0; all < 2; all++) {
			uintptr_t fl0 = FL_FIXED | (all ? FL_ARITH : 0);
			const char *flags_in = all ? "arithmetic flags set before" : "flags clear before";
			TRACE("%s, %s", c->name, flags_in);
			/* The CPU itself, on RAM. */
			memset(ram, 0, sizeof(ram));
			memcpy(ram, &c->mem, sizeof(c->mem));
			struct regs cpu_r = c->in;
			cpu_r.fl = fl0;
			c->op((uintptr_t)ram, &cpu_r);
			uint64_t cpu_mem;
			memcpy(&cpu_mem, ram, sizeof(cpu_mem));
			/* The same on the device. */
			uintptr_t p = dev_alloc(16);
			wr32(p, (uint32_t)c->mem);
			wr32(p + 4, (uint32_t)(c->mem >> 32));
			struct regs r = c->in;
			r.fl = fl0;
			c->op(p, &r);
			uint64_t mem = ((uint64_t)rd32(p + 4) << 32) | rd32(p);
			uint32_t beyond = rd32(p + 8) | rd32(p + 12);

			CHECK_EQ(what("%s, %s: memory", c->name, flags_in), c->want_mem, mem);
			CHECK_EQ(what("%s, %s: the 8 bytes after", c->name, flags_in), 0, beyond);
			CHECK_EQ(what("%s, %s: EAX", c->name, flags_in), c->want.a, r.a);
			CHECK_EQ(what("%s, %s: EBX", c->name, flags_in), c->want.b, r.b);
			CHECK_EQ(what("%s, %s: ECX", c->name, flags_in), c->want.c, r.c);
			CHECK_EQ(what("%s, %s: EDX", c->name, flags_in), c->want.d, r.d);
			CHECK_EQ(what("%s, %s: flags that must be set", c->name, flags_in), c->set,
				 r.fl & c->set);
			CHECK_EQ(what("%s, %s: flags that must be clear", c->name, flags_in), 0,
				 r.fl & c->clear);
			CHECK_EQ(what("%s, %s: flags as on RAM (mask 0x%lx)", c->name, flags_in,
				      (unsigned long)c->defined),
				 cpu_r.fl & c->defined, r.fl & c->defined);
			CHECK_EQ(what("%s, %s: non-arithmetic flags", c->name, flags_in), FL_FIXED,
				 r.fl & ~FL_ARITH);
			/* A wrong expectation above, not the hypervisor. */
			CHECK_EQ(what("%s, %s: on RAM (test table)", c->name, flags_in), c->want_mem,
				 cpu_mem);
		}
	}
}

static void t_rmw(void)
{
	run_rmw(rmw_cases, ARRAY_SIZE(rmw_cases));
}

static void t_locked(void)
{
	run_rmw(lock_cases, ARRAY_SIZE(lock_cases));
}

/* ------------------------------------------------------------------------------------ */
/* String instructions: registers in and out (RAX also checked where it is not used). */
struct sregs {
	uintptr_t a, c, si, di;
};

/* One string instruction with DF as given; "rep" in insn or not. */
#define STRING(insn, df, s)							\
	__asm__ volatile("test %[d], %[d]\n\tjz 1f\n\tstd\n1:\t" insn "\n\tcld"	\
			 : "+a"((s)->a), "+c"((s)->c), "+S"((s)->si), "+D"((s)->di)	\
			 : [d] "r"((uintptr_t)(df)) : "memory", "cc")

static void rep_stos(unsigned size, int df, struct sregs *s)
{
	switch (size) {
	case 1: STRING("rep stosb", df, s); break;
	case 2: STRING("rep stosw", df, s); break;
	case 4: STRING("rep stosl", df, s); break;
#ifdef MODE_LM
	case 8: STRING("rep stosq", df, s); break;
#endif
	}
}

static void rep_movs(unsigned size, int df, struct sregs *s)
{
	if (size == 1)
		STRING("rep movsb", df, s);
	else
		STRING("rep movsl", df, s);
}

static const unsigned counts[] = { 1, 2, 7, 64 };
#define COUNT_MAX	64

static void stos_test(unsigned size)
{
	static uint8_t want[COUNT_MAX * 8];
	static char name[64];	/* what() is rebuilt for each check */
	const uint64_t value = 0x8877665544332211ULL;

	mmio_space();
	for (int df = 0; df < 2; df++) {
		for (unsigned k = 0; k < ARRAY_SIZE(counts); k++) {
			unsigned n = counts[k];
			TRACE("REP STOS size %u, count %u, DF=%d", size, n, df);
			uintptr_t area = dev_alloc(n * size);
			for (unsigned i = 0; i < n * size; i++)
				want[i] = (uint8_t)(value >> (8 * (i % size)));
			struct sregs s = {
				.a = (uintptr_t)value, .c = n, .si = 0x5151,
				.di = df ? area + (n - 1) * size : area,
			};
			rep_stos(size, df, &s);
			memcpy(name, what("count %u, DF=%d", n, df), sizeof(name));
			check_area(name, area, want, n * size);
			CHECK_EQ(what("%s: RCX", name), 0, s.c);
			CHECK_EQ(what("%s: RDI", name), df ? area - size : area + n * size, s.di);
			CHECK_EQ(what("%s: RSI (not used)", name), 0x5151, s.si);
			CHECK_EQ(what("%s: RAX", name), (uintptr_t)value, s.a);
		}
	}
}

static void t_stosb(void) { stos_test(1); }
static void t_stosw(void) { stos_test(2); }
static void t_stosd(void) { stos_test(4); }
#ifdef MODE_LM
static void t_stosq(void) { stos_test(8); }
#endif

enum place { RAM, MMIO };

/* RAM buffers for string sources and destinations (zeroed for each use). */
static uint8_t ram_src[GUARD + COUNT_MAX * 4 + GUARD] __attribute__((aligned(16)));
static uint8_t ram_dst[GUARD + COUNT_MAX * 4 + GUARD] __attribute__((aligned(16)));

static void movs_test(unsigned size, enum place from, enum place to)
{
	static uint8_t want[COUNT_MAX * 4];
	static char name[64];

	mmio_space();
	for (int df = 0; df < 2; df++) {
		for (unsigned k = 0; k < ARRAY_SIZE(counts); k++) {
			unsigned n = counts[k], bytes = n * size;
			TRACE("REP MOVS size %u, count %u, DF=%d", size, n, df);
			pattern(want, bytes, 3 * k + df + size);
			uintptr_t src, dst;
			if (from == MMIO) {
				src = dev_alloc(bytes);
			} else {
				memset(ram_src, 0, sizeof(ram_src));
				src = (uintptr_t)ram_src + GUARD;
			}
			fill(src, want, bytes);
			if (to == MMIO) {
				dst = dev_alloc(bytes);
			} else {
				memset(ram_dst, 0, sizeof(ram_dst));
				dst = (uintptr_t)ram_dst + GUARD;
			}
			uintptr_t last = (n - 1) * size;
			struct sregs s = {
				.a = 0xa0a0, .c = n,
				.si = df ? src + last : src, .di = df ? dst + last : dst,
			};
			rep_movs(size, df, &s);
			memcpy(name, what("count %u, DF=%d", n, df), sizeof(name));
			check_area(what("%s: destination", name), dst, want, bytes);
			CHECK_EQ(what("%s: RCX", name), 0, s.c);
			CHECK_EQ(what("%s: RSI", name), df ? src - size : src + bytes, s.si);
			CHECK_EQ(what("%s: RDI", name), df ? dst - size : dst + bytes, s.di);
			CHECK_EQ(what("%s: RAX (not used)", name), 0xa0a0, s.a);
		}
	}
}

static void t_movsb_ram_mmio(void) { movs_test(1, RAM, MMIO); }
static void t_movsd_ram_mmio(void) { movs_test(4, RAM, MMIO); }
static void t_movsb_mmio_mmio(void) { movs_test(1, MMIO, MMIO); }
static void t_movsd_mmio_mmio(void) { movs_test(4, MMIO, MMIO); }
static void t_movsb_mmio_ram(void) { movs_test(1, MMIO, RAM); }
static void t_movsd_mmio_ram(void) { movs_test(4, MMIO, RAM); }

/* MOVS without REP, MMIO to MMIO: one element, RCX untouched. */
static void t_movs_single(void)
{
	static const unsigned sizes[] = { 1, 2, 4, 8 };
	static char name[64];
	uint8_t want[8];

	mmio_space();
	for (unsigned k = 0; k < ARRAY_SIZE(sizes) && sizes[k] <= SIZES_MAX; k++) {
		unsigned size = sizes[k];
		for (int df = 0; df < 2; df++) {
			pattern(want, size, 11 * k + df);
			TRACE("MOVS size %u, DF=%d", size, df);
			uintptr_t src = dev_alloc(size), dst = dev_alloc(size);
			fill(src, want, size);
			struct sregs s = { .a = 0xa0a0, .c = 0x1234, .si = src, .di = dst };
			switch (size) {
			case 1: STRING("movsb", df, &s); break;
			case 2: STRING("movsw", df, &s); break;
			case 4: STRING("movsl", df, &s); break;
#ifdef MODE_LM
			case 8: STRING("movsq", df, &s); break;
#endif
			}
			memcpy(name, what("%u bytes, DF=%d", size, df), sizeof(name));
			check_area(what("%s: destination", name), dst, want, size);
			check_area(what("%s: source", name), src, want, size);
			CHECK_EQ(what("%s: RSI", name), df ? src - size : src + size, s.si);
			CHECK_EQ(what("%s: RDI", name), df ? dst - size : dst + size, s.di);
			CHECK_EQ(what("%s: RCX (not used)", name), 0x1234, s.c);
		}
	}
}

/* ------------------------------------------------------------------------------------ */
/*
 * Faults in the middle of a string instruction. The handler records the registers the
 * #PF frame holds, maps the missing page (fresh_pa() gives its frame) and lets the
 * instruction go on.
 */
static volatile struct {
	unsigned count;
	uintptr_t cr2, err, cx, si, di;
	uint8_t done[64];		/* the bytes before the hole when the #PF came */
	uintptr_t hole;			/* the page to map */
	uintptr_t hole_pa;
	uintptr_t done_va;
	unsigned done_len;
} mid;

static int mid_fault(struct frame *f, uintptr_t cr2, uintptr_t err)
{
	if (++mid.count > 1)
		return 0;	/* the page is mapped: a second #PF is a bug; report it */
	mid.cr2 = cr2;
	mid.err = err;
	mid.cx = f->cx;
	mid.si = f->si;
	mid.di = f->di;
	for (unsigned i = 0; i < mid.done_len; i++)
		mid.done[i] = *(volatile uint8_t *)(mid.done_va + i);
	map_page(read_cr3(), mid.hole, mid.hole_pa, PTE_P | PTE_W);
	return 1;
}

static void mid_prepare(uintptr_t hole, uintptr_t hole_pa, uintptr_t done_va, unsigned done_len)
{
	mid.count = 0;
	mid.cr2 = mid.err = mid.cx = mid.si = mid.di = 0;
	mid.hole = hole;
	mid.hole_pa = hole_pa;
	mid.done_va = done_va;
	mid.done_len = done_len;
	pf_hook = mid_fault;
}

/* Checks what the handler saw: a #PF at hole with RCX/RSI/RDI after done elements. */
static void mid_check(uintptr_t err, unsigned n, unsigned done, uintptr_t si0, uintptr_t di0,
		      unsigned size, const uint8_t *want_done)
{
	CHECK_EQ("#PF count", 1, mid.count);
	CHECK_EQ("#PF address (CR2): the first byte of the missing page", mid.hole, mid.cr2);
	CHECK_EQ("#PF error code", err, mid.err);
	CHECK_EQ("RCX at the #PF: count minus the elements done", n - done, mid.cx);
	if (si0)
		CHECK_EQ("RSI at the #PF", si0 + done * size, mid.si);
	CHECK_EQ("RDI at the #PF", di0 + done * size, mid.di);
	for (unsigned i = 0; i < done * size; i++) {
		if (mid.done[i] != want_done[i]) {
			check_fail("byte %u written before the #PF: expected 0x%02x, seen 0x%02x", i,
				   want_done[i], mid.done[i]);
			break;
		}
	}
}

/*
 * REP STOSD whose first stores go to one of the guest's own page tables, through a
 * writable alias (a shadow MMU write-protects the table, so they are emulated), and whose
 * next store hits a missing page. The stores write zeros into the table's last entries,
 * which are zero already: no mapping changes.
 */
static void t_stos_page_table(void)
{
	const unsigned n = 10, done = 6;	/* 24 bytes into the table, 16 after the hole */
	uintptr_t cr3 = aspace_new();
	static uint8_t zeros[64];

	map_page(cr3, VA_RAM, frame_alloc(), PTE_P | PTE_W);
	write_cr3(cr3);
	wr32(VA_RAM, 0x600d);	/* the walk is shadowed: the tables on it are write-protected */
	/*
	 * As in cpu.c: a directory in long mode; a leaf table where the directories are held
	 * by the root (PAE) or are the root (32-bit), which a hypervisor may let go out of
	 * sync instead of emulating the stores (shadowvm does: only long mode emulates here).
	 */
	const int level = PT_LEVELS > 3 ? 2 : 1;
	uintptr_t table = (uintptr_t)pt_entry(cr3, VA_RAM, level, 0) & ~(uintptr_t)(PAGE_SIZE - 1);
	map_page(cr3, VA_ALIAS, table, PTE_P | PTE_W);
	uintptr_t hole_pa = frame_alloc();
	memset((void *)hole_pa, 0xee, PAGE_SIZE);
	uintptr_t di0 = VA_ALIAS + PAGE_SIZE - done * 4;
	mid_prepare(VA_ALIAS + PAGE_SIZE, hole_pa, di0, done * 4);
	struct sregs s = { .a = 0, .c = n, .si = 0x5151, .di = di0 };
	rep_stos(4, 0, &s);
	pf_hook = NULL;
	mid_check(PF_W, n, done, 0, di0, 4, zeros);
	CHECK_EQ("RCX at the end", 0, s.c);
	CHECK_EQ("RDI at the end", di0 + n * 4, s.di);
	CHECK_EQ("RSI (not used)", 0x5151, s.si);
	for (unsigned i = 0; i < (n - done) * 4; i += 4)
		CHECK_EQ(what("bytes %u..%u of the page the handler mapped", i, i + 3), 0,
			 rd32(VA_ALIAS + PAGE_SIZE + i));
	CHECK_EQ("the bytes after them", 0xeeeeeeee, rd32(VA_ALIAS + PAGE_SIZE + (n - done) * 4));
	for (unsigned i = 0; i < done * 4; i += 4)
		CHECK_EQ(what("table bytes %u..%u", i, i + 3), 0, rd32(di0 + i));
	CHECK_EQ("the page mapped through the table", 0x600d, rd32(VA_RAM));
}

/* REP STOSD to MMIO that runs into a missing page after 3 elements: 3 MMIO stores done. */
static void t_stos_mmio_hole(void)
{
	const unsigned n = 8, done = 3;
	const uint32_t value = 0xc3c3c3c3;
	uint8_t want[8 * 4];

	uintptr_t cr3 = mmio_space();
	map_page(cr3, VA_MMIO_EDGE, IOMEM_PA + 14 * PAGE_SIZE, PTE_P | PTE_W);
	for (unsigned i = 0; i < sizeof(want); i++)
		want[i] = (uint8_t)value;
	uintptr_t di0 = VA_MMIO_EDGE + PAGE_SIZE - done * 4;
	mid_prepare(VA_MMIO_EDGE + PAGE_SIZE, IOMEM_PA + 15 * PAGE_SIZE, di0, done * 4);
	struct sregs s = { .a = value, .c = n, .si = 0x5151, .di = di0 };
	rep_stos(4, 0, &s);
	pf_hook = NULL;
	mid_check(PF_W, n, done, 0, di0, 4, want);
	CHECK_EQ("RCX at the end", 0, s.c);
	CHECK_EQ("RDI at the end", di0 + n * 4, s.di);
	/* Through the whole-window mapping: device pages 14 and 15 are contiguous there. */
	check_area("device bytes", VA_IOMEM + 15 * PAGE_SIZE - done * 4, want, n * 4);
}

/* REP MOVS from MMIO into RAM whose destination runs into a missing page after `done`. */
static void movs_hole_test(unsigned size)
{
	const unsigned n = 12, done = 5;
	uint8_t want[12 * 4];

	uintptr_t cr3 = mmio_space();
	map_page(cr3, VA_RAM, frame_alloc(), PTE_P | PTE_W);
	pattern(want, n * size, 7 + size);
	uintptr_t src = dev_alloc(n * size);
	fill(src, want, n * size);
	uintptr_t di0 = VA_RAM + PAGE_SIZE - done * size;
	mid_prepare(VA_RAM + PAGE_SIZE, frame_alloc(), di0, done * size);
	struct sregs s = { .a = 0xa0a0, .c = n, .si = src, .di = di0 };
	rep_movs(size, 0, &s);
	pf_hook = NULL;
	mid_check(PF_W, n, done, src, di0, size, want);
	CHECK_EQ("RCX at the end", 0, s.c);
	CHECK_EQ("RSI at the end", src + n * size, s.si);
	CHECK_EQ("RDI at the end", di0 + n * size, s.di);
	for (unsigned i = 0; i < n * size; i++) {
		uint8_t seen = *(volatile uint8_t *)(di0 + i);
		if (seen != want[i]) {
			check_fail("destination byte %u: expected 0x%02x, seen 0x%02x", i, want[i], seen);
			break;
		}
	}
}

static void t_movsb_hole(void) { movs_hole_test(1); }
static void t_movsd_hole(void) { movs_hole_test(4); }

/* ------------------------------------------------------------------------------------ */
static const struct test tests[] = {
	{ "MOV loads and stores of 1/2/4/8 bytes, immediates, partial registers, misaligned", t_mov },
	{ "MOVS (no REP) MMIO to MMIO, 1/2/4/8 bytes, DF=0/1", t_movs_single },
	{ "REP STOSD over a page-table page into a missing page: RCX/RDI at the #PF", t_stos_page_table },
	{ "MOVZX/MOVSX from MMIO", t_movzx_movsx },
	{ "read-modify-write on MMIO: ALU ops, INC/DEC/NOT/NEG, BT*; flags", t_rmw },
	{ "locked ops on MMIO: LOCK ADD/OR/XADD/DEC/BTS, XCHG, LOCK CMPXCHG/CMPXCHG8B", t_locked },
	{ "MOV across the two device pages", t_page_crossing },
	{ "REP STOSB to MMIO, counts 1/2/7/64, DF=0/1", t_stosb },
	{ "REP STOSW to MMIO, counts 1/2/7/64, DF=0/1", t_stosw },
	{ "REP STOSD to MMIO, counts 1/2/7/64, DF=0/1", t_stosd },
#ifdef MODE_LM
	{ "REP STOSQ to MMIO, counts 1/2/7/64, DF=0/1", t_stosq },
#endif
	{ "REP STOSD to MMIO into a missing page: RCX/RDI at the #PF", t_stos_mmio_hole },
	{ "REP MOVSB RAM to MMIO, counts 1/2/7/64, DF=0/1", t_movsb_ram_mmio },
	{ "REP MOVSD RAM to MMIO, counts 1/2/7/64, DF=0/1", t_movsd_ram_mmio },
	{ "REP MOVSB MMIO to MMIO, counts 1/2/7/64, DF=0/1", t_movsb_mmio_mmio },
	{ "REP MOVSD MMIO to MMIO, counts 1/2/7/64, DF=0/1", t_movsd_mmio_mmio },
	{ "REP MOVSB MMIO to RAM, counts 1/2/7/64, DF=0/1", t_movsb_mmio_ram },
	{ "REP MOVSD MMIO to RAM, counts 1/2/7/64, DF=0/1", t_movsd_mmio_ram },
	{ "REP MOVSB MMIO to RAM into a missing page: RCX/RSI/RDI at the #PF", t_movsb_hole },
	{ "REP MOVSD MMIO to RAM into a missing page: RCX/RSI/RDI at the #PF", t_movsd_hole },
};

void guest_main(void)
{
#ifdef MMIO_ONLY
	_Static_assert(MMIO_ONLY >= 1 && MMIO_ONLY <= ARRAY_SIZE(tests), "MMIO_ONLY: no such test");
	tap_run(&tests[MMIO_ONLY - 1], 1);
#else
	tap_run(tests, ARRAY_SIZE(tests));
#endif
}
