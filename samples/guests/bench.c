// SPDX-License-Identifier: GPL-2.0
/*
 * Benchmark guest, one image per paging mode (bench-<mode>.elf) plus a scaled-down
 * variant for CI (bench-<mode>-quick.elf).  Every workload does a fixed amount of work,
 * timed with RDTSC, and prints one line
 *     BENCH <workload> <param>=<value> cycles=<rdtsc delta> iterations=<n>
 * then the guest exits with 0.  Iteration counts are compile-time parameters (-DNAME=n)
 * divided by BENCH_SCALE; the defaults keep one full run at a few hundred million
 * instructions, hypervisor included, so that Bochs gets through it in seconds.
 */
#include "rt.h"

#ifndef BENCH_SCALE
#define BENCH_SCALE	1
#endif
#ifndef BENCH_VARIANT
#define BENCH_VARIANT	"full"
#endif
#define SCALED(n)	((n) / BENCH_SCALE ? (n) / BENCH_SCALE : 1)

#ifndef COMPUTE_LOOPS
#define COMPUTE_LOOPS	2000000		/* compute-only control */
#endif
#ifndef TOUCH_PAGES
#define TOUCH_PAGES	4096		/* first-touch region: 16 MiB */
#endif
#ifndef PINGPONG_SWITCHES
#define PINGPONG_SWITCHES 2000		/* CR3 writes per address-space count */
#endif
#ifndef INVLPG_LOOPS
#define INVLPG_LOOPS	10000
#endif
#ifndef STORM_PAGES
#define STORM_PAGES	64
#endif
#ifndef STORM_FLIPS
#define STORM_FLIPS	2000		/* each: write-protect + INVLPG + read, unprotect + INVLPG + write */
#endif
#ifndef COW_PAGES
#define COW_PAGES	1024		/* forked address space: 4 MiB */
#endif
#ifndef RANDOM_PAGES
#define RANDOM_PAGES	4096		/* power of two: 16 MiB of VA over RANDOM_FRAMES frames */
#endif
#ifndef RANDOM_FRAMES
#define RANDOM_FRAMES	64
#endif
#ifndef RANDOM_READS
#define RANDOM_READS	50000
#endif

#define VA_BENCH	0x40000000UL
#define PG(n)		((uintptr_t)(n) * PAGE_SIZE)

static void report(const char *workload, const char *param, unsigned value, uint64_t cycles,
		   unsigned iterations)
{
	printf("BENCH %s %s=%u cycles=%llu iterations=%u\n", workload, param, value,
	       (unsigned long long)cycles, iterations);
}

/* Each workload runs in its own address space and gives its frames back afterwards. */
static uintptr_t mark;
static uintptr_t begin(void)
{
	mark = frames_mark();
	uintptr_t cr3 = aspace_new();
	write_cr3(cr3);
	return cr3;
}

static void end(void)
{
	pf_hook = NULL;
	write_cr3(kernel_cr3);
	frames_release(mark);
}

static uint32_t xorshift32(uint32_t x)
{
	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	return x;
}

/* Compute-only control: no memory traffic beyond the stack, no paging events. */
static void bench_compute(void)
{
	const unsigned n = SCALED(COMPUTE_LOOPS);
	uint32_t x = 1;
	uint64_t t0 = rdtsc();
	for (unsigned i = 0; i < n; i++) {
		x = xorshift32(x);
		barrier();
	}
	uint64_t t1 = rdtsc();
	volatile uint32_t sink = x;
	(void)sink;
	report("compute", "loops", n, t1 - t0, n);
}

/* First touch of a large region: one demand fault (and fresh frame) per page. */
static void bench_first_touch(void)
{
	const unsigned n = SCALED(TOUCH_PAGES);
	struct demand_region r = { VA_BENCH, VA_BENCH + PG(n), 0 };
	begin();
	demand_install(&r);
	uint64_t t0 = rdtsc();
	for (unsigned i = 0; i < n; i++)
		wr32(VA_BENCH + PG(i), i);
	uint64_t t1 = rdtsc();
	if (r.faults != n)
		panic("first_touch: %u faults for %u pages", r.faults, n);
	end();
	report("first_touch", "pages", n, t1 - t0, n);
}

/* CR3 ping-pong: round-robin over n address spaces, touching one page in each. */
static void bench_cr3_pingpong(unsigned spaces)
{
	const unsigned n = SCALED(PINGPONG_SWITCHES);
	uintptr_t cr3[16];
	begin();
	for (unsigned s = 0; s < spaces; s++) {
		cr3[s] = aspace_new();
		map_page(cr3[s], VA_BENCH, frame_alloc(), PTE_P | PTE_W);
	}
	for (unsigned s = 0; s < spaces; s++) {		/* warm up: every space used once */
		write_cr3(cr3[s]);
		wr32(VA_BENCH, s);
	}
	uint64_t t0 = rdtsc();
	for (unsigned i = 0; i < n; i++) {
		write_cr3(cr3[i & (spaces - 1)]);
		(void)rd32(VA_BENCH);
	}
	uint64_t t1 = rdtsc();
	end();
	report("cr3_pingpong", "spaces", spaces, t1 - t0, n);
}

/* INVLPG loop: invalidate one page and touch it again. */
static void bench_invlpg(void)
{
	const unsigned n = SCALED(INVLPG_LOOPS);
	uintptr_t cr3 = begin();
	map_page(cr3, VA_BENCH, frame_alloc(), PTE_P | PTE_W);
	(void)rd32(VA_BENCH);
	uint64_t t0 = rdtsc();
	for (unsigned i = 0; i < n; i++) {
		invlpg(VA_BENCH);
		(void)rd32(VA_BENCH);
	}
	uint64_t t1 = rdtsc();
	end();
	report("invlpg", "pages", 1, t1 - t0, n);
}

/* Page-table update storm: mprotect-like flips of R/W, each followed by INVLPG and use. */
static void bench_pt_storm(void)
{
	const unsigned n = SCALED(STORM_FLIPS);
	volatile pte_t *pte[STORM_PAGES];
	uintptr_t cr3 = begin();
	for (unsigned p = 0; p < STORM_PAGES; p++) {
		map_page(cr3, VA_BENCH + PG(p), frame_alloc(), PTE_P | PTE_W);
		pte[p] = pte_of(cr3, VA_BENCH + PG(p));
		wr32(VA_BENCH + PG(p), p);
	}
	uint64_t t0 = rdtsc();
	for (unsigned i = 0; i < n; i++) {
		unsigned p = i % STORM_PAGES;
		uintptr_t va = VA_BENCH + PG(p);
		*pte[p] &= ~PTE_W;
		invlpg(va);
		(void)rd32(va);
		*pte[p] |= PTE_W;
		invlpg(va);
		wr32(va, i);
	}
	uint64_t t1 = rdtsc();
	end();
	report("pt_storm", "pages", STORM_PAGES, t1 - t0, n);
}

/* Fork a populated address space copy-on-write, then write every page in the child. */
static void bench_cow_fork(void)
{
	const unsigned n = SCALED(COW_PAGES);
	uintptr_t parent = begin();
	for (unsigned i = 0; i < n; i++) {
		map_page(parent, VA_BENCH + PG(i), frame_alloc(), PTE_P | PTE_W);
		wr32(VA_BENCH + PG(i), i);
	}
	cow_install();
	uint64_t t0 = rdtsc();
	uintptr_t child = aspace_new();
	cow_fork(parent, child, VA_BENCH, n);
	write_cr3(child);
	for (unsigned i = 0; i < n; i++)
		wr32(VA_BENCH + PG(i), ~i);
	uint64_t t1 = rdtsc();
	if (cow_stats.copies != n)
		panic("cow_fork: %u copies for %u pages", cow_stats.copies, n);
	end();
	report("cow_fork", "pages", n, t1 - t0, n);
}

/* TLB-miss-heavy: random reads over many 4 KiB pages (aliasing a few frames). */
static void bench_random_access(void)
{
	const unsigned n = SCALED(RANDOM_READS);
	uintptr_t cr3 = begin();
	uintptr_t frames[RANDOM_FRAMES];
	for (unsigned f = 0; f < RANDOM_FRAMES; f++)
		frames[f] = frame_alloc();
	for (unsigned p = 0; p < RANDOM_PAGES; p++)
		map_page(cr3, VA_BENCH + PG(p), frames[p % RANDOM_FRAMES], PTE_P | PTE_W);
	for (unsigned p = 0; p < RANDOM_PAGES; p++)	/* warm up: every page used once */
		(void)rd32(VA_BENCH + PG(p));
	uint32_t x = 0x12345678, sum = 0;
	uint64_t t0 = rdtsc();
	for (unsigned i = 0; i < n; i++) {
		x = xorshift32(x);
		sum += rd32(VA_BENCH + PG(x & (RANDOM_PAGES - 1)) + ((x >> 20) & 0xffc));
	}
	uint64_t t1 = rdtsc();
	volatile uint32_t sink = sum;
	(void)sink;
	end();
	report("random_access", "pages", RANDOM_PAGES, t1 - t0, n);
}

void guest_main(void)
{
	printf("# shadowvm benchmark guest: mode=%s variant=%s\n", MODE_NAME, BENCH_VARIANT);
	bench_compute();
	bench_first_touch();
	for (unsigned spaces = 2; spaces <= 16; spaces *= 2)
		bench_cr3_pingpong(spaces);
	bench_invlpg();
	bench_pt_storm();
	bench_cow_fork();
	bench_random_access();
	printf("# done\n");
	guest_exit(EXIT_PASS);
}
