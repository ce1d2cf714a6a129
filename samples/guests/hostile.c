// SPDX-License-Identifier: GPL-2.0
/*
 * Hostile guest (hostile-<mode>.elf): does to its page tables and CPU what no sane OS does,
 * and checks that it gets what hardware gives it. Needs 64 MiB of guest memory (the
 * launcher's default): the random tables point only into a scratch area at 32..36 MiB, so
 * no access can reach memory the guest does not own or MMIO.
 *
 *  - random page-table entries (reserved bits, large pages, random flags, tables used at
 *    every level) written into live tables and touched: each access completes or raises
 *    a #PF, never anything else;
 *  - one table at every level of a walk, written through its own mapping;
 *  - the recursive (self) mapping written at scale;
 *  - a page-table write flood on a live leaf table and on a directory;
 *  - thousands of distinct CR3 values (roots sharing lower tables), each checked;
 *  - privileged and invalid instructions (VMX instructions, GETSEC, XSETBV, MONITOR,
 *    MOV DR, CR0/CR4 reserved bits, WRMSR of non-canonical bases, RDMSR of random MSRs,
 *    CPUID of random leaves...), caught by the guest's own handlers: the vector seen must
 *    be one hardware without VMX/XSAVE in CPUID can give.
 *
 * Variants (same source, -DHOSTILE_END=...) end without TAP: tf (triple fault through
 * faults shadowvm intercepts), loop (forever, IF=0), mmio (read beyond guest memory),
 * hlt (HLT with IF=0), loopif (forever, IF=1, no interrupt ever comes). The host must
 * report each with a clear exit reason.
 */
#include "rt.h"

#ifndef HOSTILE_END
#define HOSTILE_END 0
#endif
#define END_TF		1
#define END_LOOP	2
#define END_MMIO	3
#define END_HLT		4
#define END_LOOP_IF	5

#define SCRATCH_PA	0x02000000UL	/* 4 MiB the random entries may point into */
#define SCRATCH_SIZE	0x00400000UL
#define SCRATCH_VA	0x20000000UL	/* where this guest sees it (large pages) */

static uint64_t rng = 0x9e3779b97f4a7c15ULL;
static uint64_t rnd(void)
{
	rng ^= rng >> 12;
	rng ^= rng << 25;
	rng ^= rng >> 27;
	return rng * 0x2545f4914f6cdd1dULL;
}
static uintptr_t below(uintptr_t n) { return (uintptr_t)rnd() % n; }

static unsigned maxphy = 36;

/* ---------------------------------------------------------------- random entries */
/* An entry pointing into the scratch area, random flags, sometimes a reserved bit. */
static pte_t gen_entry(void)
{
#ifdef MODE_32
	/* 4 MiB pages take PA bits 32+ from bits 13..20 (PSE-36): keep those clear. */
	pte_t e = (pte_t)(SCRATCH_PA + below(2) * PAGE_SIZE);
	e |= (pte_t)(rnd() & 0xfff);
#else
	pte_t e = (pte_t)(SCRATCH_PA + below(SCRATCH_SIZE / PAGE_SIZE) * PAGE_SIZE);
	e |= (pte_t)(rnd() & 0xfff);
	switch (below(8)) {
	case 0: e |= (pte_t)1 << (maxphy + below(52 - maxphy)); break;	/* reserved address bit */
	case 1: e |= (pte_t)1 << 63; break;				/* XD (reserved without NXE) */
	case 2: e |= (pte_t)(rnd() & 0x7ff0000000000000ULL); break;	/* bits 52..62 */
	default: break;
	}
#endif
	if (below(4))
		e |= PTE_P;
	if (below(4))
		e &= ~PTE_PS;	/* large pages (and reserved PS bits) in a quarter of the entries */
	return e;
}

static void fill_scratch(void)
{
	volatile pte_t *s = (volatile pte_t *)SCRATCH_VA;
	for (unsigned long i = 0; i < SCRATCH_SIZE / sizeof(pte_t); i++)
		s[i] = below(4) ? 0 : gen_entry();
}

/* An address space with the scratch area mapped at SCRATCH_VA, loaded. */
static uintptr_t scratch_space(void)
{
	uintptr_t cr3 = aspace_new();
	for (uintptr_t off = 0; off < SCRATCH_SIZE; off += LARGE_SIZE)
		map_large(cr3, SCRATCH_VA + off, SCRATCH_PA + off, PTE_P | PTE_W);
	write_cr3(cr3);
	return cr3;
}

/*
 * The random region: root entries 1..255 (long mode), PDEs 256..511 (32-bit), the PD of
 * PDPTE 1 (PAE, whose PDPTEs the CPU loads at CR3 writes and which stay sane).
 */
#if defined(MODE_LM)
#define RAND_TOP_LEVEL	4
static uintptr_t rand_va(unsigned *slot) { *slot = 1 + below(255); return ((uintptr_t)*slot << 39) | (below(1UL << 39) & ~7UL); }
#elif defined(MODE_PAE)
#define RAND_TOP_LEVEL	2
static uintptr_t rand_va(unsigned *slot) { *slot = below(512); return 0x40000000UL | ((uintptr_t)*slot << 21) | (below(1UL << 21) & ~7UL); }
#else
#define RAND_TOP_LEVEL	2
static uintptr_t rand_va(unsigned *slot) { *slot = 256 + below(256); return ((uintptr_t)*slot << 22) | (below(1UL << 22) & ~3UL); }
#endif

static volatile pte_t *rand_top_table(uintptr_t cr3)
{
#ifdef MODE_PAE
	return (volatile pte_t *)pte_addr(((pte_t *)cr3)[1]);
#else
	return (volatile pte_t *)cr3;
#endif
}

static void t_random_entries(void)
{
	uintptr_t cr3 = scratch_space();
	volatile pte_t *top = rand_top_table(cr3);
	unsigned ok = 0, faults = 0;

	fill_scratch();
	for (int i = 0; i < 1500; i++) {
		unsigned slot;
		uintptr_t va = rand_va(&slot);
		switch (below(6)) {
		case 0: case 1:
			top[slot] = gen_entry();
			break;
		case 2:
			((volatile pte_t *)SCRATCH_VA)[below(SCRATCH_SIZE / sizeof(pte_t))] = gen_entry();
			break;
		case 3:
			write_cr3(cr3);
			break;
		default:
			break;
		}
		if (below(2))
			invlpg(va);
		uint32_t v;
		int f = below(2) ? probe_read(va, &v) : probe_write(va, (uint32_t)gen_entry());
		if (f) {
			faults++;
			if (last_pf.cr2 != va)
				check_fail("#PF at 0x%lx reported CR2 0x%lx", (unsigned long)va, (unsigned long)last_pf.cr2);
		} else {
			ok++;
		}
	}
	printf("# random entries: %u accesses completed, %u #PF\n", ok, faults);
	CHECK("some accesses faulted", faults > 0);
}

/* ---------------------------------------------------------------- one table, every level */
static void t_same_table_every_level(void)
{
	uintptr_t cr3 = scratch_space();
	uintptr_t t = frame_alloc(), d1 = frame_alloc(), d2 = frame_alloc();
	const unsigned J = 5, K = 6;
	pte_t fl = PTE_P | PTE_W | PTE_U;

	for (unsigned i = 0; i < PAGE_SIZE / 4; i++) {
		((uint32_t *)d1)[i] = 0x11110000 + i;
		((uint32_t *)d2)[i] = 0x22220000 + i;
	}
	/* top entry -> T; T[J] -> T (so T is the table of every lower level); T[K] -> data */
	volatile pte_t *top = rand_top_table(cr3);
	unsigned slot = 7;
#if defined(MODE_LM)
	uintptr_t base = (uintptr_t)slot << 39;
	for (int l = 3; l >= 2; l--)
		base |= (uintptr_t)J << pt_shift(l);
#elif defined(MODE_PAE)
	uintptr_t base = 0x40000000UL | ((uintptr_t)slot << 21);
#else
	slot = 300;
	uintptr_t base = (uintptr_t)slot << 22;
#endif
	top[slot] = (pte_t)t | fl;
	((volatile pte_t *)t)[J] = (pte_t)t | fl;
	uintptr_t va_self = base | ((uintptr_t)J << 12), va_data = base | ((uintptr_t)K << 12);
	for (int i = 0; i < 400; i++) {
		uintptr_t d = (i & 1) ? d2 : d1;
		uint32_t want = (i & 1) ? 0x22220000 : 0x11110000, v = 0;
		/* write T[K] through T's mapping of itself */
		if (probe_write(va_self + K * sizeof(pte_t), (uint32_t)(d | fl))) {
			check_fail("write through the self-mapped table faulted (err 0x%lx)", (unsigned long)last_pf.err);
			return;
		}
		invlpg(va_data);
		if (probe_read(va_data + 8, &v) || v != want + 2) {
			check_fail("round %d: data page reads 0x%x, want 0x%x", i, v, want + 2);
			return;
		}
		if (probe_read(va_self + K * sizeof(pte_t), &v) || (v & ~0xfffU) != (uint32_t)d) {
			check_fail("round %d: T[K] reads 0x%x through the self-map, want frame 0x%lx", i, v, (unsigned long)d);
			return;
		}
	}
}

/* ---------------------------------------------------------------- recursive mapping at scale */
static void t_selfmap_writes(void)
{
	uintptr_t cr3 = aspace_new();
	const uintptr_t va0 = 0x40000000UL;
	uintptr_t f[4];

	for (int k = 0; k < 4; k++) {
		f[k] = frame_alloc();
		*(volatile uint32_t *)f[k] = 0xa0a0a000 + k;
	}
	for (int p = 0; p < 64; p++)
		map_page(cr3, va0 + p * PAGE_SIZE, f[0], PTE_P | PTE_W);
	selfmap_install(cr3);
	write_cr3(cr3);
	for (int i = 0; i < 1500; i++) {
		uintptr_t va = va0 + below(64) * PAGE_SIZE;
		unsigned k = below(4);
		*(volatile pte_t *)selfmap_pte_va(va) = (pte_t)f[k] | PTE_P | PTE_W;
		invlpg(va);
		uint32_t v = 0;
		if (probe_read(va, &v) || v != 0xa0a0a000 + k) {
			check_fail("round %d: 0x%lx reads 0x%x, want 0x%x", i, (unsigned long)va, v, 0xa0a0a000 + k);
			return;
		}
	}
}

/* ---------------------------------------------------------------- write floods */
static void t_pt_write_flood(void)
{
	uintptr_t cr3 = aspace_new();
	const uintptr_t va = 0x40000000UL;
	uintptr_t a = frame_alloc(), b = frame_alloc();

	*(volatile uint32_t *)a = 0xaaaa;
	*(volatile uint32_t *)b = 0xbbbb;
	map_page(cr3, va, a, PTE_P | PTE_W);
	write_cr3(cr3);
	volatile pte_t *pte = pte_of(cr3, va);
	/* Leaf: thousands of writes, each made visible with INVLPG and checked. */
	for (int i = 0; i < 3000; i++) {
		*pte = (pte_t)((i & 1) ? b : a) | PTE_P | PTE_W;
		invlpg(va);
		if (rd32(va) != ((i & 1) ? 0xbbbbU : 0xaaaaU)) {
			check_fail("leaf flood: round %d reads 0x%x", i, rd32(va));
			return;
		}
	}
	/* Writes without any access in between (a pure flood), then one access. */
	for (int i = 0; i < 5000; i++)
		pte[1 + (i % 500)] = (pte_t)((i & 1) ? b : a) | PTE_P;
	invlpg(va);
	CHECK_EQ("leaf after the pure flood", 0xbbbb, rd32(va));	/* the leaf loop ended on b */
	/* Directory: switch the PDE between two page tables. */
	volatile pte_t *pde = pt_entry(cr3, va, 2, 0);
	uintptr_t pt2 = frame_alloc();
	((pte_t *)pt2)[0] = (pte_t)b | PTE_P | PTE_W;
	pte_t pde1 = *pde, pde2 = (pte_t)pt2 | PTE_P | PTE_W | PTE_U;
	for (int i = 0; i < 1000; i++) {
		*pde = (i & 1) ? pde2 : pde1;
		write_cr3(cr3);
		uint32_t want = (i & 1) ? 0xbbbb : ((*pte & PTE_ADDR_MASK) == a ? 0xaaaa : 0xbbbb);
		if (rd32(va) != want) {
			check_fail("directory flood: round %d reads 0x%x, want 0x%x", i, rd32(va), want);
			return;
		}
	}
}

/* ---------------------------------------------------------------- thousands of CR3 values */
#define CR3_TREES	16
#define CR3_ROOTS	1000
#if defined(MODE_LM)
#define VA_CR3		0x8000000000UL	/* root entry 1 */
#else
#define VA_CR3		0x40000000UL	/* PDE 256 (32-bit) / PDPTE 1 (PAE) */
#endif
static uintptr_t roots[CR3_ROOTS];

static void t_many_cr3(void)
{
	pte_t tree[CR3_TREES];
	unsigned idx = pt_index(VA_CR3, PT_LEVELS);

	for (int j = 0; j < CR3_TREES; j++) {
		uintptr_t t = aspace_new(), d = frame_alloc();
		*(volatile uint32_t *)d = 0xc3c30000 + j;
		map_page(t, VA_CR3, d, PTE_P | PTE_W);
		tree[j] = ((pte_t *)t)[idx];
	}
#ifdef MODE_PAE
	/* PDPTs are 32 bytes: 128 roots per frame. */
	uintptr_t fr = 0;
	for (int i = 0; i < CR3_ROOTS; i++) {
		if (i % 128 == 0)
			fr = frame_alloc();
		roots[i] = fr + (i % 128) * 32;
		memcpy((void *)roots[i], (void *)kernel_cr3, 32);
		((pte_t *)roots[i])[idx] = tree[i % CR3_TREES];
	}
#else
	for (int i = 0; i < CR3_ROOTS; i++) {
		roots[i] = frame_alloc();
		memcpy((void *)roots[i], (void *)kernel_cr3, PAGE_SIZE);
		((pte_t *)roots[i])[idx] = tree[i % CR3_TREES];
	}
#endif
	/* Distinct values: every root, with each PWT/PCD combination. */
	for (int i = 0; i < 4000; i++) {
		unsigned r = (i < CR3_ROOTS) ? (unsigned)i : (unsigned)below(CR3_ROOTS);
		write_cr3(roots[r] | ((uintptr_t)(i & 3) << 3));
		uint32_t v = rd32(VA_CR3);
		if (v != 0xc3c30000 + r % CR3_TREES) {
			check_fail("switch %d to root %u: reads 0x%x, want 0x%x", i, r, v, 0xc3c30000 + r % CR3_TREES);
			break;
		}
	}
	write_cr3(kernel_cr3);
}

/* ---------------------------------------------------------------- privileged instructions */
/*
 * hx_try(fn) calls fn with the guest's own handlers for vectors 0..31 except #PF
 * installed; returns 0 when fn returned, vector + 1 when it raised an exception.
 */
#ifdef MODE_LM
#define AW ".quad"
__asm__(
	".text\n"
	"hx_try:\n"
	"	push %rbx; push %rbp; push %r12; push %r13; push %r14; push %r15\n"
	"	mov %rsp, hx_sp\n"
	"	call *%rdi\n"
	"	xor %eax, %eax\n"
	"	jmp 1f\n"
	"hx_recover:\n"
	"	mov hx_sp, %rsp\n"
	"	mov hx_vec, %eax\n"
	"	inc %eax\n"
	"1:	pop %r15; pop %r14; pop %r13; pop %r12; pop %rbp; pop %rbx\n"
	"	ret\n");
#else
#define AW ".long"
__asm__(
	".text\n"
	"hx_try:\n"
	"	push %ebx; push %ebp; push %esi; push %edi\n"
	"	mov 20(%esp), %eax\n"
	"	mov %esp, hx_sp\n"
	"	call *%eax\n"
	"	xor %eax, %eax\n"
	"	jmp 1f\n"
	"hx_recover:\n"
	"	mov hx_sp, %esp\n"
	"	mov hx_vec, %eax\n"
	"	inc %eax\n"
	"1:	pop %edi; pop %esi; pop %ebp; pop %ebx\n"
	"	ret\n");
#endif
__asm__(
	".data\n"
	".globl hx_isrs\n"
	"hx_isrs:\n"
	".irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31\n"
	"	" AW " hx_isr\\v\n"
	".endr\n"
	".text\n"
	".irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31\n"
	"hx_isr\\v: movl $\\v, hx_vec; jmp hx_recover\n"
	".endr\n");

uintptr_t hx_sp;
uint32_t hx_vec, hx_msr, hx_leaf;
uint64_t hx_mem[64] __attribute__((aligned(4096)));
extern uintptr_t hx_isrs[32];
int hx_try(void (*fn)(void));

/* Snippets: raw bytes, identical in 32-bit and 64-bit code; (%eax)/(%rax) = hx_mem. */
#define SNIPPET(name, bytes)						\
	void name(void);						\
	__asm__(".text\n" #name ":\n	" bytes "\n	ret\n")
#ifdef MODE_LM
#define AX "%rax"
#else
#define AX "%eax"
#endif
#define MEMARG "mov $hx_mem, %eax\n	"
SNIPPET(s_vmxon, MEMARG ".byte 0xf3,0x0f,0xc7,0x30");
SNIPPET(s_vmxoff, ".byte 0x0f,0x01,0xc4");
SNIPPET(s_vmlaunch, ".byte 0x0f,0x01,0xc2");
SNIPPET(s_vmresume, ".byte 0x0f,0x01,0xc3");
SNIPPET(s_vmptrld, MEMARG ".byte 0x0f,0xc7,0x30");
SNIPPET(s_vmptrst, MEMARG ".byte 0x0f,0xc7,0x38");
SNIPPET(s_vmclear, MEMARG ".byte 0x66,0x0f,0xc7,0x30");
SNIPPET(s_vmread, ".byte 0x0f,0x78,0xc1");
SNIPPET(s_vmwrite, ".byte 0x0f,0x79,0xc8");
SNIPPET(s_invept, MEMARG "xor %ecx, %ecx\n	.byte 0x66,0x0f,0x38,0x80,0x08");
SNIPPET(s_invvpid, MEMARG "xor %ecx, %ecx\n	.byte 0x66,0x0f,0x38,0x81,0x08");
SNIPPET(s_vmfunc, "xor %eax, %eax\n	.byte 0x0f,0x01,0xd4");
SNIPPET(s_getsec, "xor %eax, %eax\n	.byte 0x0f,0x37");
SNIPPET(s_xsetbv, "xor %ecx, %ecx\n	mov $1, %eax\n	xor %edx, %edx\n	.byte 0x0f,0x01,0xd1");
SNIPPET(s_xgetbv, "xor %ecx, %ecx\n	.byte 0x0f,0x01,0xd0");
SNIPPET(s_xsave, MEMARG ".byte 0x0f,0xae,0x20");
SNIPPET(s_monitor, MEMARG "xor %ecx, %ecx\n	xor %edx, %edx\n	.byte 0x0f,0x01,0xc8");
SNIPPET(s_mwait, "xor %eax, %eax\n	xor %ecx, %ecx\n	.byte 0x0f,0x01,0xc9");
SNIPPET(s_ud2, ".byte 0x0f,0x0b");
SNIPPET(s_int3, "int3");
SNIPPET(s_rdpmc, "xor %ecx, %ecx\n	.byte 0x0f,0x33");
SNIPPET(s_cr4_vmxe, "mov %cr4, " AX "\n	or $0x2000, " AX "\n	mov " AX ", %cr4");
SNIPPET(s_cr4_rsvd, "mov %cr4, " AX "\n	bts $31, " AX "\n	mov " AX ", %cr4");
SNIPPET(s_cr0_nw, "mov %cr0, " AX "\n	btr $30, " AX "\n	bts $29, " AX "\n	mov " AX ", %cr0");
SNIPPET(s_lstar_nc, "mov $0xc0000082, %ecx\n	xor %eax, %eax\n	mov $0x80000000, %edx\n	wrmsr");
SNIPPET(s_kgs_nc, "mov $0xc0000102, %ecx\n	xor %eax, %eax\n	mov $0x00800000, %edx\n	wrmsr");
SNIPPET(s_fs_nc, "mov $0xc0000100, %ecx\n	xor %eax, %eax\n	mov $0xff000000, %edx\n	wrmsr");
SNIPPET(s_cstar_nc, "mov $0xc0000083, %ecx\n	xor %eax, %eax\n	mov $0x00008000, %edx\n	wrmsr");
SNIPPET(s_sysenter_eip_nc, "mov $0x176, %ecx\n	xor %eax, %eax\n	mov $0x80000000, %edx\n	wrmsr");
SNIPPET(s_efer_rsvd, "mov $0xc0000080, %ecx\n	rdmsr\n	or $0x2, %eax\n	wrmsr");
SNIPPET(s_efer_svme, "mov $0xc0000080, %ecx\n	rdmsr\n	or $0x1000, %eax\n	wrmsr");
SNIPPET(s_pat_bad, "mov $0x277, %ecx\n	mov $0x02020202, %eax\n	mov %eax, %edx\n	wrmsr");
SNIPPET(s_dr7_rt, "mov $0x401, %eax\n	.byte 0x0f,0x23,0xf8\n	.byte 0x0f,0x21,0xf8\n	mov %eax, hx_vec\n	mov $0x400, %eax\n	.byte 0x0f,0x23,0xf8");
SNIPPET(s_dr0_rt, "mov $0x12345678, %eax\n	.byte 0x0f,0x23,0xc0\n	xor %eax, %eax\n	.byte 0x0f,0x21,0xc0\n	mov %eax, hx_vec");
SNIPPET(s_wbinvd, ".byte 0x0f,0x09");
SNIPPET(s_invd, ".byte 0x0f,0x08");
SNIPPET(s_clts, ".byte 0x0f,0x06");
SNIPPET(s_rdmsr, "mov hx_msr, %ecx\n	rdmsr");
SNIPPET(s_cpuid, "mov hx_leaf, %eax\n	mov hx_msr, %ecx\n	cpuid");	/* hx_try restores EBX */
#ifdef MODE_LM
SNIPPET(s_dr7_hi, "mov $1, %eax\n	shl $40, %rax\n	or $0x400, %rax\n	.byte 0x0f,0x23,0xf8");
#endif

#define OK	(1U << 0)		/* no exception */
#define V(n)	(1U << ((n) + 1))	/* exception n */
static const struct {
	const char *name;
	void (*fn)(void);
	unsigned allowed;
} insns[] = {
	{ "vmxon", s_vmxon, V(6) },	{ "vmxoff", s_vmxoff, V(6) },	{ "vmlaunch", s_vmlaunch, V(6) },
	{ "vmresume", s_vmresume, V(6) }, { "vmptrld", s_vmptrld, V(6) }, { "vmptrst", s_vmptrst, V(6) },
	{ "vmclear", s_vmclear, V(6) },	{ "vmread", s_vmread, V(6) },	{ "vmwrite", s_vmwrite, V(6) },
	{ "invept", s_invept, V(6) },	{ "invvpid", s_invvpid, V(6) },	{ "vmfunc", s_vmfunc, V(6) },
	{ "getsec", s_getsec, V(6) },	{ "xsetbv", s_xsetbv, V(6) },	{ "xgetbv", s_xgetbv, V(6) },
	{ "xsave", s_xsave, V(6) },	{ "monitor", s_monitor, V(6) },	{ "mwait", s_mwait, V(6) },
	{ "ud2", s_ud2, V(6) },		{ "int3", s_int3, V(3) },	{ "rdpmc", s_rdpmc, OK | V(13) },
	{ "mov cr4 |= VMXE", s_cr4_vmxe, V(13) },	{ "mov cr4 |= bit 31", s_cr4_rsvd, V(13) },
	{ "mov cr0 NW without CD", s_cr0_nw, V(13) },
	{ "wrmsr LSTAR non-canonical", s_lstar_nc, V(13) },
	{ "wrmsr KERNEL_GS_BASE non-canonical", s_kgs_nc, V(13) },
	{ "wrmsr FS_BASE non-canonical", s_fs_nc, V(13) },
	{ "wrmsr CSTAR non-canonical", s_cstar_nc, V(13) },
	{ "wrmsr SYSENTER_EIP non-canonical", s_sysenter_eip_nc, V(13) },
	{ "wrmsr EFER reserved bit 1", s_efer_rsvd, V(13) },
	{ "wrmsr EFER.SVME", s_efer_svme, V(13) },
	{ "wrmsr PAT with reserved type 2", s_pat_bad, V(13) },
	{ "mov dr7 round trip", s_dr7_rt, OK },	{ "mov dr0 round trip", s_dr0_rt, OK },
	{ "wbinvd", s_wbinvd, OK },	{ "invd", s_invd, OK },		{ "clts", s_clts, OK },
#ifdef MODE_LM
	{ "mov dr7 with bit 40", s_dr7_hi, V(13) },
#endif
};

struct gate_save {
	uint64_t g[2];
};

static void *idt_base(void)
{
	struct {
		uint16_t limit;
		uintptr_t base;
	} __attribute__((packed)) idtr;
	__asm__ volatile("sidt %0" : "=m"(idtr));
	return (void *)idtr.base;
}

/* Points gate v at handler, keeping selector and attributes. */
static void gate_set(void *idt, int v, uintptr_t h)
{
#ifdef MODE_LM
	volatile uint16_t *g = (volatile uint16_t *)((char *)idt + 16 * v);
	g[0] = (uint16_t)h;
	g[3] = (uint16_t)(h >> 16);
	*(volatile uint32_t *)&g[4] = (uint32_t)(h >> 32);
#else
	volatile uint16_t *g = (volatile uint16_t *)((char *)idt + 8 * v);
	g[0] = (uint16_t)h;
	g[3] = (uint16_t)(h >> 16);
#endif
}

static void t_privileged(void)
{
	void *idt = idt_base();
	const int gsz = PT_LEVELS == 4 ? 16 : 8;
	static uint8_t saved[32 * 16];

	memcpy(saved, idt, 32 * gsz);
	for (int v = 0; v < 32; v++)
		if (v != 14)
			gate_set(idt, v, hx_isrs[v]);

	uint32_t c[4];
	cpuid(1, 0, c);
	int has_monitor = (c[2] >> 3) & 1;	/* then MWAIT may really wait: skip both */
	for (unsigned i = 0; i < ARRAY_SIZE(insns); i++) {
		if (has_monitor && (insns[i].fn == s_monitor || insns[i].fn == s_mwait))
			continue;
		hx_vec = 0;
#ifdef HX_DEBUG
		printf("# %s\n", insns[i].name);
#endif
		int r = hx_try(insns[i].fn);
		unsigned got = r ? V(r - 1) : OK;
		if (!(got & insns[i].allowed))
			check_fail("%s: %s (vector + 1 = %d)", insns[i].name, r ? "unexpected exception" : "no exception", r);
		else if (insns[i].fn == s_dr7_rt && (hx_vec & 0xffff) != 0x401)
			check_fail("DR7 read back 0x%x, want 0x401", hx_vec);
		else if (insns[i].fn == s_dr0_rt && hx_vec != 0x12345678)
			check_fail("DR0 read back 0x%x, want 0x12345678", hx_vec);
	}
	/* RDMSR of random MSRs: a value or #GP. */
	unsigned gp = 0, val = 0;
	for (int i = 0; i < 400; i++) {
		static const uint32_t bases[] = { 0, 0x400, 0x480, 0x40000000, 0xc0000000, 0xc0010000 };
		hx_msr = below(3) ? bases[below(ARRAY_SIZE(bases))] + (uint32_t)below(0x200) : (uint32_t)rnd();
		int r = hx_try(s_rdmsr);
		if (r == 0)
			val++;
		else if (r == 14)
			gp++;
		else {
			check_fail("rdmsr 0x%x: exception %d", hx_msr, r - 1);
			break;
		}
	}
	/* CPUID of random leaves and subleaves: never an exception. */
	for (int i = 0; i < 400; i++) {
		static const uint32_t bases[] = { 0, 0x40000000, 0x80000000, 0x8fffff00, 0xc0000000 };
		hx_leaf = below(3) ? bases[below(ARRAY_SIZE(bases))] + (uint32_t)below(0x100) : (uint32_t)rnd();
		hx_msr = below(2) ? (uint32_t)below(8) : (uint32_t)rnd();
		int r = hx_try(s_cpuid);
		if (r) {
			check_fail("cpuid 0x%x.%x: exception %d", hx_leaf, hx_msr, r - 1);
			break;
		}
	}
	memcpy(idt, saved, 32 * gsz);
	printf("# rdmsr of 400 random MSRs: %u values, %u #GP; %u instructions checked\n", val, gp,
	       (unsigned)ARRAY_SIZE(insns));
}

static const struct test tests[] = {
	{ "random page-table entries (reserved bits, large pages, flags) touched", t_random_entries },
	{ "one table at every level, written through its own mapping", t_same_table_every_level },
	{ "recursive mapping written at scale", t_selfmap_writes },
	{ "page-table write flood (leaf and directory)", t_pt_write_flood },
	{ "thousands of distinct CR3 values", t_many_cr3 },
	{ "privileged and invalid instructions", t_privileged },
};

void guest_main(void)
{
	uint32_t r[4];

	cpuid(0x80000000, 0, r);
	if (r[0] >= 0x80000008) {
		cpuid(0x80000008, 0, r);
		maxphy = r[0] & 0xff;
	}
	if (maxphy < 32 || maxphy > 52)
		maxphy = 36;
	if (HOSTILE_END == END_TF) {
		struct {
			uint16_t limit;
			uintptr_t base;
		} __attribute__((packed)) idtr = { 0xfff, 0x7fff0000UL };	/* not mapped */
		printf("# hostile: triple fault through an unmapped IDT\n");
		__asm__ volatile("lidt %0; ud2" :: "m"(idtr));
	} else if (HOSTILE_END == END_LOOP) {
		printf("# hostile: looping forever with IF=0\n");
		for (;;)
			barrier();
	} else if (HOSTILE_END == END_MMIO) {
		uintptr_t cr3 = aspace_new();
		map_page(cr3, 0x40000000UL, 0xf0000000UL, PTE_P | PTE_W);
		write_cr3(cr3);
		printf("# hostile: reading beyond guest memory\n");
		(void)rd32(0x40000000UL);
		printf("# hostile: the read beyond memory returned\n");
	} else if (HOSTILE_END == END_LOOP_IF) {
		printf("# hostile: looping forever with IF=1\n");
		__asm__ volatile("sti");
		for (;;)
			barrier();
	} else if (HOSTILE_END == END_HLT) {
		printf("# hostile: HLT with IF=0\n");
		__asm__ volatile("cli; hlt");
	}
	if (HOSTILE_END)
		guest_exit(EXIT_PANIC);
	tap_run(tests, ARRAY_SIZE(tests));
}
