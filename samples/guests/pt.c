// SPDX-License-Identifier: GPL-2.0
/*
 * Functional paging tests, one image per paging mode (pt-lm.elf, pt-pae.elf, pt-32.elf).
 * Each test builds its own address spaces, does what an OS does with them, and checks the
 * architecturally defined outcome exactly: values seen, #PF error codes and CR2, A/D bits.
 * Where x86 allows a stale TLB entry (a permission reduction without INVLPG) nothing is
 * tested.  The runtime restores CR3 = kernel_cr3, CR0.WP = 1 and frees the frames after
 * each test.
 */
#include "rt.h"

/* Test virtual addresses: outside the identity-mapped low 32 MiB and the self-map window. */
#define VA_TEST		0x40000000UL	/* 4 KiB test pages */
#define VA_USER		0x70000000UL	/* ring-3 code, stack and data */
#define VA_LARGE	0x80000000UL	/* large-page tests (4 MiB aligned) */
#define VA_HUGE		0xc0000000UL	/* 1 GiB page (long mode) */

#define PG(n)		((uintptr_t)(n) * PAGE_SIZE)

/* A fresh address space, loaded. */
static uintptr_t space(void)
{
	uintptr_t cr3 = aspace_new();
	write_cr3(cr3);
	return cr3;
}

/* A zeroed-then-filled frame: word i holds v + i, so every offset has a known value. */
static uintptr_t frame_with(uint32_t v)
{
	uintptr_t pa = frame_alloc();
	for (unsigned i = 0; i < PAGE_SIZE / 4; i++)
		((uint32_t *)pa)[i] = v + i;
	return pa;
}

/* Expect that the access faulted with exactly this error code and CR2. */
static void expect_fault(const char *what, int faulted, uintptr_t err, uintptr_t cr2)
{
	if (!faulted)
		check_fail("%s: expected #PF error code 0x%lx at 0x%lx, seen no fault", what,
			   (unsigned long)err, (unsigned long)cr2);
	else if (last_pf.err != err || last_pf.cr2 != cr2)
		check_fail("%s: expected #PF error code 0x%lx at 0x%lx, seen error code 0x%lx at 0x%lx",
			   what, (unsigned long)err, (unsigned long)cr2,
			   (unsigned long)last_pf.err, (unsigned long)last_pf.cr2);
}

static void expect_no_fault(const char *what, int faulted)
{
	if (faulted)
		check_fail("%s: expected no fault, seen #PF error code 0x%lx at 0x%lx", what,
			   (unsigned long)last_pf.err, (unsigned long)last_pf.cr2);
}

/* Read that must succeed and see `expected`. */
static void expect_read(const char *what, uintptr_t va, uint32_t expected)
{
	uint32_t v = 0;
	int f = probe_read(va, &v);
	expect_no_fault(what, f);
	if (!f)
		CHECK_EQ(what, expected, v);
}

/* Names a check that involves loop variables. */
static const char *what(const char *fmt, ...) __printf(1, 2);
static const char *what(const char *fmt, ...)
{
	static char buf[96];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf_lite(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	return buf;
}

/* ------------------------------------------------------------------------------------ */
/* The guest turned paging on itself (boot.S / mm_init) and runs in the mode it claims. */
static void t_paging_enabled(void)
{
	static volatile uint32_t marker = 0x1badcafe;
	uintptr_t cr0 = read_cr0(), cr4 = read_cr4();

	CHECK("CR0.PE", cr0 & CR0_PE);
	CHECK("CR0.PG", cr0 & CR0_PG);
	CHECK("CR0.WP", cr0 & CR0_WP);
	CHECK_EQ("CR3", kernel_cr3, read_cr3());
#if defined(MODE_LM)
	CHECK("CR4.PAE", cr4 & CR4_PAE);
	CHECK("EFER.LMA", rdmsr(MSR_EFER) & EFER_LMA);
#elif defined(MODE_PAE)
	CHECK("CR4.PAE", cr4 & CR4_PAE);
#else
	CHECK_EQ("CR4.PAE", 0, cr4 & CR4_PAE);
	CHECK("CR4.PSE", cr4 & CR4_PSE);
#endif
#if HAVE_NX
	CHECK_EQ("EFER.NXE (= CPUID NX)", cpu.nx, !!(rdmsr(MSR_EFER) & EFER_NXE));
#endif
	expect_read("identity map", (uintptr_t)&marker, 0x1badcafe);
}

/* Several address spaces, switched round-robin by CR3 writes: same VA, own data each. */
#define RR_SPACES	4
#define RR_PAGES	3
#define RR_ROUNDS	8
static uint32_t rr_val(unsigned s, unsigned p, unsigned r)
{
	return 0xa0000000 | (r << 16) | (s << 8) | p;
}

static void t_cr3_round_robin(void)
{
	uintptr_t cr3[RR_SPACES], fr[RR_SPACES][RR_PAGES];

	for (unsigned s = 0; s < RR_SPACES; s++) {
		cr3[s] = aspace_new();
		for (unsigned p = 0; p < RR_PAGES; p++) {
			fr[s][p] = frame_alloc();
			*(uint32_t *)fr[s][p] = rr_val(s, p, 0);
			map_page(cr3[s], VA_TEST + PG(p), fr[s][p], PTE_P | PTE_W);
		}
	}
	for (unsigned r = 0; r < RR_ROUNDS; r++)
		for (unsigned s = 0; s < RR_SPACES; s++) {
			write_cr3(cr3[s]);
			for (unsigned p = 0; p < RR_PAGES; p++) {
				const char *w = what("round %u space %u page %u", r, s, p);
				expect_read(w, VA_TEST + PG(p), rr_val(s, p, r));
				wr32(VA_TEST + PG(p), rr_val(s, p, r + 1));
			}
		}
	for (unsigned s = 0; s < RR_SPACES; s++)
		for (unsigned p = 0; p < RR_PAGES; p++)
			CHECK_EQ(what("frame of space %u page %u", s, p), rr_val(s, p, RR_ROUNDS),
				 *(uint32_t *)fr[s][p]);
}

/* Demand paging from the guest's own #PF handler: the faulting access is retried. */
#define DEMAND_PAGES	16
static void t_demand_paging(void)
{
	struct demand_region r = { VA_TEST, VA_TEST + PG(DEMAND_PAGES), 0, 0 };
	uintptr_t cr3 = space();

	demand_install(&r);
	for (unsigned i = 0; i < DEMAND_PAGES; i++) {
		uintptr_t va = VA_TEST + PG(i) + 8 * i;
		unsigned before = last_pf.count;
		uintptr_t err = 0;
		if (i & 1) {
			wr32(va, 0xd0000000 | i);
			err = PF_W;
		} else {
			CHECK_EQ(what("fresh page %u reads", i), 0, rd32(va));
		}
		CHECK_EQ(what("#PFs for first touch of page %u", i), before + 1, last_pf.count);
		CHECK_EQ(what("CR2 for page %u", i), va, last_pf.cr2);
		CHECK_EQ(what("error code for page %u (%s)", i, (i & 1) ? "write" : "read"), err,
			 last_pf.err);
	}
	CHECK_EQ("pages mapped by the handler", DEMAND_PAGES, r.faults);
	unsigned before = last_pf.count;
	for (unsigned i = 0; i < DEMAND_PAGES; i++) {
		uintptr_t va = VA_TEST + PG(i) + 8 * i;
		CHECK_EQ(what("page %u reread", i), (i & 1) ? (0xd0000000 | i) : 0, rd32(va));
		volatile pte_t *pte = pte_of(cr3, va);
		CHECK(what("page %u PTE present and writable", i),
		      pte && (*pte & (PTE_P | PTE_W)) == (PTE_P | PTE_W));
	}
	CHECK_EQ("#PFs on the second pass", before, last_pf.count);
}

/* Unmap + INVLPG: the next access faults (not present); neighbours are unaffected. */
static void t_unmap_invlpg(void)
{
	uintptr_t cr3 = space();
	uintptr_t a = frame_with(0x11110000), b = frame_with(0x22220000);
	uint32_t v;

	map_page(cr3, VA_TEST, a, PTE_P | PTE_W);
	map_page(cr3, VA_TEST + PG(1), b, PTE_P | PTE_W);
	expect_read("mapped page", VA_TEST + 8, 0x11110002);	/* now in the TLB */
	expect_read("neighbour", VA_TEST + PG(1), 0x22220000);

	*pte_of(cr3, VA_TEST) = 0;
	invlpg(VA_TEST);
	expect_fault("read after unmap", probe_read(VA_TEST + 8, &v), 0, VA_TEST + 8);
	expect_fault("write after unmap", probe_write(VA_TEST + 12, 1), PF_W, VA_TEST + 12);
	expect_read("neighbour after unmap", VA_TEST + PG(1) + 4, 0x22220001);

	map_page(cr3, VA_TEST, b, PTE_P | PTE_W);	/* not present -> present: no INVLPG */
	expect_read("remapped page", VA_TEST + 8, 0x22220002);

	/* Unmap a whole page table: INVLPG also drops cached upper-level entries. */
	*pt_entry(cr3, VA_TEST, 2, 0) = 0;
	invlpg(VA_TEST + PG(1));
	expect_fault("read after PDE unmap", probe_read(VA_TEST + PG(1), &v), 0, VA_TEST + PG(1));
}

/* Write-protect + INVLPG: writes fault with P|W; CR0.WP=0 lets ring 0 write anyway. */
static void t_write_protect(void)
{
	uintptr_t cr3 = space();
	uintptr_t a = frame_with(0x33330000);
	uint32_t *word1 = (uint32_t *)a + 1;

	map_page(cr3, VA_TEST, a, PTE_P | PTE_W);
	wr32(VA_TEST, 0x12345678);
	volatile pte_t *pte = pte_of(cr3, VA_TEST);
	*pte &= ~PTE_W;
	invlpg(VA_TEST);
	expect_read("read of write-protected page", VA_TEST, 0x12345678);
	expect_fault("write to write-protected page", probe_write(VA_TEST + 4, 0xdead),
		     PF_P | PF_W, VA_TEST + 4);
	CHECK_EQ("memory after the faulting write", 0x33330001, *word1);

	write_cr0(read_cr0() & ~CR0_WP);
	invlpg(VA_TEST);
	expect_no_fault("ring-0 write to read-only page with CR0.WP=0", probe_write(VA_TEST + 4, 0xbeef));
	CHECK_EQ("memory after the CR0.WP=0 write", 0xbeef, *word1);
	write_cr0(read_cr0() | CR0_WP);
	invlpg(VA_TEST);
	expect_fault("write with CR0.WP=1 again", probe_write(VA_TEST + 4, 0xdead), PF_P | PF_W,
		     VA_TEST + 4);

	/* R/W=0 in the PDE write-protects everything below it. */
	*pte |= PTE_W;
	volatile pte_t *pde = pt_entry(cr3, VA_TEST, 2, 0);
	*pde &= ~PTE_W;
	invlpg(VA_TEST);
	expect_fault("write under a read-only PDE", probe_write(VA_TEST + 4, 0xdead), PF_P | PF_W,
		     VA_TEST + 4);
	expect_read("read under a read-only PDE", VA_TEST, 0x12345678);
	*pde |= PTE_W;
	invlpg(VA_TEST);
	expect_no_fault("write after PDE made writable", probe_write(VA_TEST + 4, 0x4444));
	CHECK_EQ("memory after the last write", 0x4444, *word1);
}

/* Ring 3: user pages work; supervisor, read-only and absent pages fault with U set. */
static void t_user_supervisor(void)
{
	uintptr_t cr3 = space();
	uintptr_t code = VA_USER, stack = VA_USER + PG(1), udata = VA_USER + PG(2);
	uintptr_t uro = VA_USER + PG(3), sup = VA_USER + PG(4), absent = VA_USER + PG(5);
	uintptr_t far = VA_USER + 0x400000;	/* under another PDE in every mode */
	uintptr_t top = stack + PAGE_SIZE;
	uintptr_t udata_pa = frame_with(0x55550000), uro_pa = frame_with(0x66660000);
	uint32_t v;
	int f;

	map_page(cr3, code, (uintptr_t)__user_start, PTE_P | PTE_U);
	map_page(cr3, stack, frame_alloc(), PTE_P | PTE_W | PTE_U);
	map_page(cr3, udata, udata_pa, PTE_P | PTE_W | PTE_U);
	map_page(cr3, uro, uro_pa, PTE_P | PTE_U);
	map_page(cr3, sup, frame_with(0x77770000), PTE_P | PTE_W);
	map_page(cr3, far, frame_with(0x88880000), PTE_P | PTE_W | PTE_U);

	v = user_call(code, top, udata + 4, USER_READ, 0, &f);
	expect_no_fault("user read of user page", f);
	CHECK_EQ("user read of user page", 0x55550001, v);
	user_call(code, top, udata + 8, USER_WRITE, 0xabc, &f);
	expect_no_fault("user write to user page", f);
	CHECK_EQ("memory after user write", 0xabc, ((uint32_t *)udata_pa)[2]);
	v = user_call(code, top, uro + 4, USER_READ, 0, &f);
	expect_no_fault("user read of read-only user page", f);
	CHECK_EQ("user read of read-only user page", 0x66660001, v);

	user_call(code, top, sup + 4, USER_READ, 0, &f);
	expect_fault("user read of supervisor page", f, PF_P | PF_U, sup + 4);
	user_call(code, top, sup + 8, USER_WRITE, 1, &f);
	expect_fault("user write to supervisor page", f, PF_P | PF_W | PF_U, sup + 8);
	user_call(code, top, uro + 8, USER_WRITE, 1, &f);
	expect_fault("user write to read-only user page", f, PF_P | PF_W | PF_U, uro + 8);
	CHECK_EQ("memory after faulting user write", 0x66660002, ((uint32_t *)uro_pa)[2]);
	user_call(code, top, absent, USER_READ, 0, &f);
	expect_fault("user read of absent page", f, PF_U, absent);

	/* CR0.WP only concerns ring 0: a user write to a read-only page still faults. */
	write_cr0(read_cr0() & ~CR0_WP);
	invlpg(uro);
	user_call(code, top, uro + 8, USER_WRITE, 1, &f);
	expect_fault("user write to read-only page, CR0.WP=0", f, PF_P | PF_W | PF_U, uro + 8);
	write_cr0(read_cr0() | CR0_WP);
	invlpg(uro);

	/* Ring 0 may read user pages (no SMAP). */
	expect_read("ring-0 read of user page", udata + 4, 0x55550001);

	/* U/S=0 in a PDE makes everything below it supervisor-only. */
	v = user_call(code, top, far, USER_READ, 0, &f);
	expect_no_fault("user read under user PDE", f);
	CHECK_EQ("user read under user PDE", 0x88880000, v);
	*pt_entry(cr3, far, 2, 0) &= ~PTE_U;
	invlpg(far);
	user_call(code, top, far + 4, USER_READ, 0, &f);
	expect_fault("user read under supervisor PDE", f, PF_P | PF_U, far + 4);
}

/* NX (PAE and long mode): fetches from NX pages fault with I/D; reads still work. */
static void t_nx(void)
{
#if !HAVE_NX
	test_skip("32-bit paging has no NX bit");
#else
	if (!cpu.nx) {
		test_skip("CPUID reports no NX");
		return;
	}
	uintptr_t cr3 = space();
	uintptr_t a = frame_alloc();
	*(uint8_t *)a = 0xc3;	/* ret */
	map_page(cr3, VA_TEST, a, PTE_P | PTE_W);

	expect_no_fault("fetch from executable page", probe_exec(VA_TEST));
	volatile pte_t *pte = pte_of(cr3, VA_TEST), *pde = pt_entry(cr3, VA_TEST, 2, 0);
	*pte |= PTE_NX;
	invlpg(VA_TEST);
	expect_fault("fetch from NX page", probe_exec(VA_TEST), PF_P | PF_I, VA_TEST);
	CHECK_EQ("faulting IP of NX fetch", VA_TEST, last_pf.ip);
	expect_read("data read of NX page", VA_TEST, 0xc3);

	*pte &= ~PTE_NX;
	*pde |= PTE_NX;
	invlpg(VA_TEST);
	expect_fault("fetch under NX PDE", probe_exec(VA_TEST), PF_P | PF_I, VA_TEST);
	*pde &= ~PTE_NX;
	invlpg(VA_TEST);
	expect_no_fault("fetch after NX cleared", probe_exec(VA_TEST));

	expect_fault("fetch from absent page", probe_exec(VA_TEST + PG(1)), PF_I, VA_TEST + PG(1));
#endif
}

/* Fork-style copy-on-write: shared read-only frames, write faults copy, data diverges. */
#define COW_PAGES	4
static uint32_t cow_val(unsigned i) { return 0xc0000000 | (i << 16); }

static void t_cow_fork(void)
{
	uintptr_t parent = space();
	for (unsigned i = 0; i < COW_PAGES; i++)
		map_page(parent, VA_TEST + PG(i), frame_with(cow_val(i)), PTE_P | PTE_W);
	uintptr_t child = aspace_new();
	cow_fork(parent, child, VA_TEST, COW_PAGES);
	cow_install();
	pf_reset();

	for (unsigned i = 0; i < COW_PAGES; i++)
		expect_read(what("parent page %u after fork", i), VA_TEST + PG(i), cow_val(i));
	write_cr3(child);
	for (unsigned i = 0; i < COW_PAGES; i++)
		expect_read(what("child page %u after fork", i), VA_TEST + PG(i), cow_val(i));
	CHECK_EQ("#PFs from reads of shared pages", 0, last_pf.count);

	expect_no_fault("child write to page 0", probe_write(VA_TEST, 0xc41d0000));
	CHECK_EQ("#PFs after the child's write", 1, last_pf.count);
	CHECK_EQ("error code of the CoW fault", PF_P | PF_W, last_pf.err);
	CHECK_EQ("CR2 of the CoW fault", VA_TEST, last_pf.cr2);
	expect_read("child page 0 after its write", VA_TEST, 0xc41d0000);
	expect_read("rest of the copied page", VA_TEST + 4, cow_val(0) + 1);

	write_cr3(parent);
	expect_read("parent page 0 after the child's write", VA_TEST, cow_val(0));
	expect_no_fault("parent write to page 1", probe_write(VA_TEST + PG(1), 0xfa700001));
	expect_no_fault("parent write to page 0 (last sharer)", probe_write(VA_TEST, 0xfa700000));
	expect_read("parent page 0", VA_TEST, 0xfa700000);
	expect_read("parent page 1", VA_TEST + PG(1), 0xfa700001);
	CHECK_EQ("CoW faults", 3, cow_stats.faults);
	CHECK_EQ("CoW copies", 2, cow_stats.copies);
	CHECK_EQ("CoW reuses of the last sharer's frame", 1, cow_stats.reuses);

	write_cr3(child);
	expect_read("child page 0", VA_TEST, 0xc41d0000);
	expect_read("child page 1", VA_TEST + PG(1), cow_val(1));
	for (unsigned i = 0; i < COW_PAGES; i++) {
		pte_t pp = *pte_of(parent, VA_TEST + PG(i)), pc = *pte_of(child, VA_TEST + PG(i));
		if (i < 2)
			CHECK(what("page %u has its own frame in each space", i),
			      pte_addr(pp) != pte_addr(pc));
		else
			CHECK(what("untouched page %u still shared read-only", i),
			      pte_addr(pp) == pte_addr(pc) && !(pp & PTE_W) && !(pc & PTE_W));
	}
}

/* Accessed and dirty bits in 4 KiB PTEs (and A in the tables above), read back. */
static void t_accessed_dirty(void)
{
	uintptr_t cr3 = space();
	map_page(cr3, VA_TEST, frame_with(0), PTE_P | PTE_W);
	volatile pte_t *pte = pte_of(cr3, VA_TEST);
	volatile pte_t *upper[PT_LEVELS + 1] = { 0 };
	for (int l = 2; l <= PT_LEVELS; l++) {
#ifdef MODE_PAE
		if (l == 3)
			continue;	/* PDPTEs have no A bit */
#endif
		upper[l] = pt_entry(cr3, VA_TEST, l, 0);
		*upper[l] &= ~PTE_A;
	}
	*pte &= ~(PTE_A | PTE_D);
	invlpg(VA_TEST);

	(void)rd32(VA_TEST);
	CHECK_EQ("PTE A|D after a read", PTE_A, *pte & (PTE_A | PTE_D));
	for (int l = 2; l <= PT_LEVELS; l++)
		if (upper[l])
			CHECK_EQ(what("level-%d entry A after a read", l), PTE_A, *upper[l] & PTE_A);
	wr32(VA_TEST, 1);
	CHECK_EQ("PTE A|D after a write", PTE_A | PTE_D, *pte & (PTE_A | PTE_D));

	*pte &= ~(PTE_A | PTE_D);
	invlpg(VA_TEST);
	wr32(VA_TEST, 2);
	CHECK_EQ("PTE A|D after a first access that writes", PTE_A | PTE_D, *pte & (PTE_A | PTE_D));

	/* A write that faults writes nothing, so it must not set D. */
	*pte &= ~(PTE_A | PTE_D | PTE_W);
	invlpg(VA_TEST);
	expect_fault("write to read-only page", probe_write(VA_TEST, 3), PF_P | PF_W, VA_TEST);
	CHECK_EQ("PTE D after a faulting write", 0, *pte & PTE_D);
}

/* Accessed and dirty bits of a large page, in its PDE. */
static void t_accessed_dirty_large(void)
{
	uintptr_t cr3 = space();
	map_large(cr3, VA_LARGE, LARGE_AREA, PTE_P | PTE_W);
	volatile pte_t *pde = pt_entry(cr3, VA_LARGE, 2, 0);

	*pde &= ~(PTE_A | PTE_D);
	invlpg(VA_LARGE);
	(void)rd32(VA_LARGE + 0x1230);
	CHECK_EQ("large PDE A|D after a read", PTE_A, *pde & (PTE_A | PTE_D));
	wr32(VA_LARGE + LARGE_SIZE - 8, 1);
	CHECK_EQ("large PDE A|D after a write", PTE_A | PTE_D, *pde & (PTE_A | PTE_D));

	/* INVLPG of any address inside a large page invalidates all of it. */
	*pde &= ~(PTE_A | PTE_D);
	invlpg(VA_LARGE + PG(7));
	wr32(VA_LARGE + PG(3), 2);
	CHECK_EQ("large PDE A|D after a first access that writes", PTE_A | PTE_D,
		 *pde & (PTE_A | PTE_D));
}

/* Large pages (4 MiB with PSE, 2 MiB with PAE/long mode): contents, remap, protection. */
static void t_large_pages(void)
{
	const unsigned n = LARGE_SIZE / PAGE_SIZE;
	const uintptr_t area2 = LARGE_AREA + LARGE_SIZE;
	uintptr_t cr3 = space();

	for (unsigned k = 0; k < n; k++) {
		wr32(LARGE_AREA + PG(k) + 4 * (k % 16), 0x5a000000 | k);	/* identity map */
		wr32(area2 + PG(k) + 4 * (k % 16), 0x6b000000 | k);
	}
	map_large(cr3, VA_LARGE, LARGE_AREA, PTE_P | PTE_W);
	for (unsigned k = 0; k < n; k++)
		if (rd32(VA_LARGE + PG(k) + 4 * (k % 16)) != (0x5a000000 | k)) {
			CHECK_EQ(what("large page, 4 KiB page %u", k), 0x5a000000 | k,
				 rd32(VA_LARGE + PG(k) + 4 * (k % 16)));
			break;
		}
	wr32(VA_LARGE + LARGE_SIZE - 4, 0x77);
	CHECK_EQ("write through the large page, read physically", 0x77,
		 rd32(LARGE_AREA + LARGE_SIZE - 4));

	/* Point the PDE at another large frame; one INVLPG inside the page covers it all. */
	volatile pte_t *pde = pt_entry(cr3, VA_LARGE, 2, 0);
	*pde = (pte_t)area2 | PTE_P | PTE_W | PTE_PS;
	invlpg(VA_LARGE + PG(5));
	const unsigned sample[] = { 0, 1, 5, n / 2, n - 1 };
	for (unsigned i = 0; i < ARRAY_SIZE(sample); i++) {
		unsigned k = sample[i];
		expect_read(what("remapped large page, 4 KiB page %u", k),
			    VA_LARGE + PG(k) + 4 * (k % 16), 0x6b000000 | k);
	}

	*pde &= ~PTE_W;
	invlpg(VA_LARGE);
	expect_fault("write to read-only large page", probe_write(VA_LARGE + PG(3) + 8, 1),
		     PF_P | PF_W, VA_LARGE + PG(3) + 8);
	expect_read("read of read-only large page", VA_LARGE + PG(3) + 12, 0x6b000003);
}

/* 1 GiB pages: long mode only, and only when CPUID says so. */
static void t_1g_pages(void)
{
#ifndef MODE_LM
	test_skip("1 GiB pages need long mode");
#else
	static volatile uint32_t marker = 0x600df00d;
	if (!cpu.page1g) {
		test_skip("CPUID reports no 1 GiB pages");
		return;
	}
	uintptr_t cr3 = space();
	volatile pte_t *pdpte = pt_entry(cr3, VA_HUGE, 3, 1);
	*pdpte = PTE_P | PTE_W | PTE_PS;	/* guest-physical 0..1 GiB; we touch only the image */
	uintptr_t alias = VA_HUGE + (uintptr_t)&marker;

	expect_read("kernel variable through the 1 GiB page", alias, 0x600df00d);
	wr32(alias, 0x1234);
	CHECK_EQ("write through the 1 GiB page", 0x1234, marker);

	*pdpte &= ~(PTE_A | PTE_D);
	invlpg(alias);
	(void)rd32(alias);
	CHECK_EQ("1 GiB PDPTE A|D after a read", PTE_A, *pdpte & (PTE_A | PTE_D));
	wr32(alias, 0x5678);
	CHECK_EQ("1 GiB PDPTE A|D after a write", PTE_A | PTE_D, *pdpte & (PTE_A | PTE_D));
#endif
}

/* A page table that maps itself; PTEs are read and written through that window. */
static void t_recursive_mapping(void)
{
	uintptr_t cr3 = aspace_new();
	uintptr_t a = frame_with(0xaaaa0000), b = frame_with(0xbbbb0000);
	uint32_t v;

	selfmap_install(cr3);
	map_page(cr3, VA_TEST, a, PTE_P | PTE_W);
	write_cr3(cr3);
	volatile pte_t *w0 = (volatile pte_t *)selfmap_pte_va(VA_TEST);
	volatile pte_t *w1 = (volatile pte_t *)selfmap_pte_va(VA_TEST + PG(1));

	CHECK_EQ("PTE read through the self-map", *pte_of(cr3, VA_TEST), *w0);
	expect_read("page mapped by the PTE", VA_TEST, 0xaaaa0000);
	CHECK("A bit seen through the self-map", *w0 & PTE_A);

	*w1 = (pte_t)b | PTE_P | PTE_W;		/* new mapping: no INVLPG needed */
	expect_read("page mapped through the self-map", VA_TEST + PG(1) + 4, 0xbbbb0001);
	CHECK_EQ("self-map write seen in the page table", (pte_t)b | PTE_P | PTE_W,
		 *pte_of(cr3, VA_TEST + PG(1)) & ~(PTE_A | PTE_D));

	*w0 = (pte_t)b | PTE_P;			/* changed mapping: INVLPG */
	invlpg(VA_TEST);
	expect_read("remapped through the self-map", VA_TEST + 8, 0xbbbb0002);
	expect_fault("write to page write-protected through the self-map",
		     probe_write(VA_TEST, 1), PF_P | PF_W, VA_TEST);

	*w1 = 0;
	invlpg(VA_TEST + PG(1));
	expect_fault("read after unmap through the self-map", probe_read(VA_TEST + PG(1), &v), 0,
		     VA_TEST + PG(1));
}

/* Not-present -> present without INVLPG: x86 never caches not-present entries. */
static void t_not_present_to_present(void)
{
	uintptr_t cr3 = space();
	uintptr_t a = frame_with(0x12120000);
	uintptr_t far = VA_TEST + 0x800000;	/* no page table there yet */
	uint32_t v;

	map_page(cr3, VA_TEST + PG(1), frame_with(0), PTE_P | PTE_W);	/* creates the PT */
	expect_fault("read of absent page", probe_read(VA_TEST, &v), 0, VA_TEST);
	*pte_of(cr3, VA_TEST) = (pte_t)a | PTE_P | PTE_W;
	expect_read("read after PTE made present, no INVLPG", VA_TEST, 0x12120000);

	expect_fault("read under absent PDE", probe_read(far, &v), 0, far);
	map_page(cr3, far, a, PTE_P | PTE_W);
	expect_read("read after PDE and PTE made present, no INVLPG", far + 4, 0x12120001);
}

/* ------------------------------------------------------------------------------------ */
/*
 * A page table freed and reused as data, filled with REP STOS as an OS clears a page:
 * shadow paging write-protects the frame, emulates the first stores and, once it stops
 * shadowing it, lets the guest do the rest natively. Whatever the split, every element
 * is written, RCX/RDI end as the SDM says (DF=0 and DF=1, STOSD and in long mode STOSQ),
 * and a live table cleared the same way maps nothing afterwards.
 */
#define REP_GAP		0x800000UL	/* 8 MiB: another directory entry in every mode */

/* A fresh table mapping va (read once, so a shadow MMU shadows it); returns the frame. */
static uintptr_t used_table(uintptr_t cr3, uintptr_t va)
{
	map_page(cr3, va, frame_with(0x44440000), PTE_P | PTE_W);
	expect_read(what("page mapped by the table at 0x%lx", (unsigned long)va), va, 0x44440000);
	return (uintptr_t)pte_of(cr3, va) & ~(uintptr_t)(PAGE_SIZE - 1);
}

/* The table stops being one: directory entry cleared and flushed. */
static void free_table(uintptr_t cr3, uintptr_t va)
{
	*pt_entry(cr3, va, 2, 0) = 0;
	invlpg(va);
}

/* Dwords [from, to) of frame pa all hold v; reports the first that does not. */
static void expect_dwords(const char *what_, uintptr_t pa, unsigned from, unsigned to, uint32_t v)
{
	for (unsigned i = from; i < to; i++)
		if (((volatile uint32_t *)pa)[i] != v) {
			check_fail("%s: dword %u is 0x%x, expected 0x%x", what_, i,
				   ((volatile uint32_t *)pa)[i], v);
			return;
		}
}

static void t_rep_clear_page_table(void)
{
	uintptr_t cr3 = space();
	uintptr_t di, cx, n = PAGE_SIZE / 4;

	/* REP STOSD upwards over the whole former table. */
	uintptr_t t0 = used_table(cr3, VA_TEST);
	free_table(cr3, VA_TEST);
	di = t0, cx = n;
	__asm__ volatile("cld; rep stosl" : "+D"(di), "+c"(cx) : "a"(0xa5a5a5a5) : "memory");
	CHECK_EQ("REP STOSD up: RCX at the end", 0, cx);
	CHECK_EQ("REP STOSD up: RDI at the end", t0 + PAGE_SIZE, di);
	expect_dwords("REP STOSD up", t0, 0, n, 0xa5a5a5a5);

	/* REP STOSD downwards (DF=1) over the upper 3/4 of another, from its last dword. */
	uintptr_t t1 = used_table(cr3, VA_TEST + REP_GAP);
	free_table(cr3, VA_TEST + REP_GAP);
	memset((void *)t1, 0x11, PAGE_SIZE / 4);
	di = t1 + PAGE_SIZE - 4, cx = 3 * n / 4;
	__asm__ volatile("std; rep stosl; cld" : "+D"(di), "+c"(cx) : "a"(0x5a5a5a5a)
			 : "memory", "cc");
	CHECK_EQ("REP STOSD down: RCX at the end", 0, cx);
	CHECK_EQ("REP STOSD down: RDI at the end", t1 + PAGE_SIZE / 4 - 4, di);
	expect_dwords("REP STOSD down, below the count", t1, 0, n / 4, 0x11111111);
	expect_dwords("REP STOSD down", t1, n / 4, n, 0x5a5a5a5a);

#ifdef MODE_LM
	/* REP STOSQ, clear_page's instruction. */
	uintptr_t t2 = used_table(cr3, VA_TEST + 2 * REP_GAP);
	free_table(cr3, VA_TEST + 2 * REP_GAP);
	memset((void *)t2, 0x77, PAGE_SIZE);
	di = t2, cx = PAGE_SIZE / 8;
	__asm__ volatile("cld; rep stosq" : "+D"(di), "+c"(cx) : "a"(0UL) : "memory");
	CHECK_EQ("REP STOSQ: RCX at the end", 0, cx);
	CHECK_EQ("REP STOSQ: RDI at the end", t2 + PAGE_SIZE, di);
	expect_dwords("REP STOSQ", t2, 0, n, 0);
#endif

	/* A live table cleared with REP STOSD: after a CR3 reload, nothing it mapped is left. */
	uintptr_t t3 = used_table(cr3, VA_TEST + 3 * REP_GAP);
	map_page(cr3, VA_TEST + 3 * REP_GAP + PG(7), frame_with(0x55550000), PTE_P | PTE_W);
	expect_read("second page of the live table", VA_TEST + 3 * REP_GAP + PG(7) + 4, 0x55550001);
	di = t3, cx = n;
	__asm__ volatile("cld; rep stosl" : "+D"(di), "+c"(cx) : "a"(0) : "memory");
	write_cr3(cr3);
	uint32_t v;
	expect_fault("read through the cleared live table", probe_read(VA_TEST + 3 * REP_GAP, &v),
		     0, VA_TEST + 3 * REP_GAP);
	expect_fault("second page of the cleared table",
		     probe_read(VA_TEST + 3 * REP_GAP + PG(7) + 4, &v), 0,
		     VA_TEST + 3 * REP_GAP + PG(7) + 4);
	expect_dwords("live table cleared", t3, 0, n, 0);
}

/*
 * What the guest's own TLB invalidations must drop, each checked right after the old
 * translation was used (a hypervisor that keeps TLB entries across VM entries, tagged
 * with a VPID, must invalidate them where the shadow changed or the guest asks):
 *  - a PTE pointed at another frame then INVLPG, many times over (after the first
 *    changes a shadow MMU may let the table go out of sync: INVLPG alone updates it);
 *  - one page table linked under two directory entries (two linear aliases of each
 *    page): INVLPG of one alias, then of the other, each then sees the new frame;
 *  - a PTE changed, then CR3 written with the same value: both aliases see the change;
 *  - CR3 switched back and forth between two spaces mapping an address differently.
 */
static void t_tlb_invalidation(void)
{
	uintptr_t cr3 = space();
	uintptr_t f[2] = { frame_with(0x1a1a0000), frame_with(0x2b2b0000) };
	const uint32_t base[2] = { 0x1a1a0000, 0x2b2b0000 };
	const uintptr_t alias = VA_TEST + REP_GAP;

	map_page(cr3, VA_TEST, f[0], PTE_P | PTE_W);
	volatile pte_t *pte = pte_of(cr3, VA_TEST);
	for (unsigned i = 0; i < 24; i++) {
		unsigned cur = i & 1, next = cur ^ 1;
		expect_read(what("round %u, before the change", i), VA_TEST + 4 * i, base[cur] + i);
		*pte = (pte_t)f[next] | PTE_P | PTE_W;
		invlpg(VA_TEST);
		expect_read(what("round %u, after the change and INVLPG", i), VA_TEST + 4 * i,
			    base[next] + i);
		*pte = (pte_t)f[cur] | PTE_P | PTE_W;	/* back, for the next round's "before" */
		invlpg(VA_TEST);
		*pte = (pte_t)f[next] | PTE_P | PTE_W;
		invlpg(VA_TEST);
	}
	/* Now f[0] is mapped (24 rounds). Link the same table at alias too. */
	*pt_entry(cr3, alias, 2, 1) = *pt_entry(cr3, VA_TEST, 2, 0);
	for (unsigned i = 0; i < 8; i++) {
		unsigned cur = i & 1, next = cur ^ 1;
		expect_read(what("alias round %u, first alias before", i), VA_TEST + 8, base[cur] + 2);
		expect_read(what("alias round %u, second alias before", i), alias + 12, base[cur] + 3);
		*pte = (pte_t)f[next] | PTE_P | PTE_W;
		invlpg(VA_TEST);
		expect_read(what("alias round %u, first alias after its INVLPG", i), VA_TEST + 8,
			    base[next] + 2);
		invlpg(alias);
		expect_read(what("alias round %u, second alias after its INVLPG", i), alias + 12,
			    base[next] + 3);
	}
	/* f[0] mapped again (8 rounds). A change, then a CR3 reload of the same value. */
	*pte = (pte_t)f[1] | PTE_P | PTE_W;
	write_cr3(cr3);
	expect_read("first alias after the CR3 reload", VA_TEST + 16, base[1] + 4);
	expect_read("second alias after the CR3 reload", alias + 20, base[1] + 5);

	/* Two spaces, the same address, different frames. */
	uintptr_t other = aspace_new();
	map_page(other, VA_TEST + PG(1), f[0], PTE_P | PTE_W);
	map_page(cr3, VA_TEST + PG(1), f[1], PTE_P | PTE_W);
	write_cr3(cr3);
	for (unsigned i = 0; i < 16; i++) {
		uintptr_t s = (i & 1) ? other : cr3;
		unsigned frame = (i & 1) ? 0 : 1;
		write_cr3(s);
		expect_read(what("switch %u to %s", i, (i & 1) ? "the other space" : "the first"),
			    VA_TEST + PG(1) + 4 * i, base[frame] + i);
	}
}

/*
 * Many not-present faults, each checked for its exact error code and CR2: reads, writes
 * and fetches on absent pages of a present table and under an absent directory entry, in
 * two passes (a hypervisor may deliver the second pass's faults without an exit), then
 * half the pages mapped without INVLPG (not present -> present: nothing to invalidate)
 * and the other half still absent. A fetch's I/D bit is set only with EFER.NXE (PAE and
 * long mode) or CR4.SMEP; this runtime never sets SMEP.
 */
#define NP_PAGES	32
static void t_not_present_faults(void)
{
	uintptr_t cr3 = space();
	uintptr_t f = frame_with(0x5e000000);
	uintptr_t ret = frame_alloc();
	*(uint8_t *)ret = 0xc3;	/* ret */
	/* Page 0 present: the table exists; pages 1..NP_PAGES-1 absent. */
	map_page(cr3, VA_TEST, f, PTE_P | PTE_W);
	uintptr_t fetch_id = (HAVE_NX && cpu.nx) ? PF_I : 0;
	/* A 2 MiB (4 MiB with 32-bit paging) region away whose directory entry is absent. */
	uintptr_t far = VA_TEST + (16UL << 22);
	uint32_t v;
	for (unsigned pass = 0; pass < 2; pass++) {
		for (unsigned i = 1; i < NP_PAGES; i++) {
			uintptr_t va = VA_TEST + PG(i) + 4 * i;
			expect_fault(what("pass %u read of absent page %u", pass, i),
				     probe_read(va, &v), 0, va);
			expect_fault(what("pass %u write of absent page %u", pass, i),
				     probe_write(va + 4, i), PF_W, va + 4);
			expect_fault(what("pass %u fetch from absent page %u", pass, i),
				     probe_exec(VA_TEST + PG(i)), fetch_id, VA_TEST + PG(i));
			expect_fault(what("pass %u read under absent PDE %u", pass, i),
				     probe_read(far + PG(i) + 8, &v), 0, far + PG(i) + 8);
		}
		expect_read(what("pass %u present page", pass), VA_TEST + 12, 0x5e000003);
	}
	/* Not present -> present without INVLPG on the odd pages. */
	for (unsigned i = 1; i < NP_PAGES; i += 2)
		map_page(cr3, VA_TEST + PG(i), i == 1 ? ret : f, PTE_P | PTE_W);
	for (unsigned i = 1; i < NP_PAGES; i++) {
		uintptr_t va = VA_TEST + PG(i) + 16;
		if (i & 1) {
			if (i == 1)
				expect_no_fault("fetch from page mapped without INVLPG",
						probe_exec(VA_TEST + PG(1)));
			else
				expect_read(what("page %u mapped without INVLPG", i), va, 0x5e000004);
		} else {
			expect_fault(what("page %u still absent", i), probe_read(va, &v), 0, va);
		}
	}
}

static const struct test tests[] = {
	{ "paging enabled from the paging-off start state", t_paging_enabled },
	{ "address spaces switched round-robin by CR3", t_cr3_round_robin },
	{ "demand paging from the #PF handler", t_demand_paging },
	{ "unmap with INVLPG", t_unmap_invlpg },
	{ "write-protect with INVLPG, CR0.WP", t_write_protect },
	{ "user/supervisor from ring 3", t_user_supervisor },
	{ "NX", t_nx },
	{ "fork-style copy-on-write", t_cow_fork },
	{ "accessed and dirty bits, 4 KiB pages", t_accessed_dirty },
	{ "accessed and dirty bits, large pages", t_accessed_dirty_large },
	{ "large pages", t_large_pages },
	{ "1 GiB pages", t_1g_pages },
	{ "recursive page-table mapping", t_recursive_mapping },
	{ "not-present to present without INVLPG", t_not_present_to_present },
	{ "many not-present faults: error codes and CR2", t_not_present_faults },
	{ "a freed page table cleared with REP STOS", t_rep_clear_page_table },
	{ "TLB invalidations: INVLPG, aliases, CR3 reload and switches", t_tlb_invalidation },
};

void guest_main(void)
{
	tap_run(tests, ARRAY_SIZE(tests));
}
