// SPDX-License-Identifier: GPL-2.0
/*
 * Benchmark guest, one image per paging mode (bench-<mode>.elf) plus a scaled-down
 * variant for CI (bench-<mode>-quick.elf).  Every workload does a fixed amount of work,
 * timed with RDTSC, and prints one line
 *     BENCH <workload> <param>=<value> cycles=<rdtsc delta> iterations=<n> mark=<k>
 * A workload the CPU cannot run (1 GiB pages without CPUID support) prints
 *     BENCH-SKIP <workload> <param>=<value> <reason>
 * The timed part of workload k lies between two writes to the launcher's benchmark mark
 * port, of 2k and 2k+1, at which the launcher snapshots its and the backend's counters:
 * the exits of a row are those of the same instructions as its cycles (plus the OUT of
 * the closing mark).  At the end the guest prints
 *     BENCH-TOTAL cycles=<rdtsc from the start of guest_main to the end>
 * (set-up included) and exits with 0.  Iteration counts are compile-time parameters (-DNAME=n)
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
#ifndef HIDDEN_PAGES
#define HIDDEN_PAGES	2048		/* pages mapped by the guest, then read once each */
#endif
#ifndef REUSE_TABLES
#define REUSE_TABLES	64		/* page-table frames cleared for reuse as data */
#endif
#ifndef KPTI_ROUNDS
#define KPTI_ROUNDS	2000		/* user/kernel CR3 round trips per pair count */
#endif
#ifndef LARGE_TOUCHES
#define LARGE_TOUCHES	2048		/* 4 KiB pages touched inside large guest pages */
#endif

/*
 * Scale image (bench-scale-<mode>.elf, -DSCALE_ONLY=1): only the scale_fault rows, one
 * per address-space count, over whatever guest memory the launcher gave (--memory), with
 * the counts from the Multiboot command line ("spaces=1,2,4"; default SCALE_SPACES).
 */
#ifndef SCALE_ONLY
#define SCALE_ONLY	0
#endif
#ifndef SCALE_FAULTS
#define SCALE_FAULTS	4096		/* first-touch faults per scale_fault row */
#endif
#define SCALE_SPACES	"1,2,4,8,16,32,64"
#define SCALE_REGIONS	32		/* 2 MiB regions the faults fall in, spread over memory */
#define SCALE_BURST	16		/* faults in one address space before the next one's turn */

/*
 * cr3_pingpong: 2..64 address spaces; kpti_pingpong: 16 and 32 pairs (32, 64 roots).  The
 * quick images stop at 32 spaces and 16 pairs: setting up many address spaces costs the
 * same at any scale, and one row past 16 roots of each kind covers the case in CI.
 */
#define MAX_SPACES	64
#define MAX_PAIRS	32
#if BENCH_SCALE > 1
#define RUN_SPACES	32
#define RUN_PAIRS	16
#else
#define RUN_SPACES	MAX_SPACES
#define RUN_PAIRS	MAX_PAIRS
#endif
#define BENCH_MARK_PORT	0xf8		/* the launcher's benchmark mark port */

#define VA_BENCH	0x40000000UL
#define PG(n)		((uintptr_t)(n) * PAGE_SIZE)

/* Workload number k: the marks around its timed part are 2k and 2k+1. */
static unsigned row;

/* Marks the start of a timed part and reads the TSC; after the mark so its exit is outside. */
static uint64_t timed_start(void)
{
	outl(BENCH_MARK_PORT, 2 * row);
	return rdtsc();
}

/* Reads the TSC and marks the end of the timed part. */
static uint64_t timed_end(void)
{
	uint64_t t = rdtsc();
	outl(BENCH_MARK_PORT, 2 * row + 1);
	return t;
}

static void report(const char *workload, const char *param, unsigned value, uint64_t cycles,
		   unsigned iterations)
{
	printf("BENCH %s %s=%u cycles=%llu iterations=%u mark=%u\n", workload, param, value,
	       (unsigned long long)cycles, iterations, row);
	row++;
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
	uint64_t t0 = timed_start();
	for (unsigned i = 0; i < n; i++) {
		x = xorshift32(x);
		barrier();
	}
	uint64_t t1 = timed_end();
	volatile uint32_t sink = x;
	(void)sink;
	report("compute", "loops", n, t1 - t0, n);
}

/* First touch of a large region: one demand fault (and fresh frame) per page. */
static void bench_first_touch(void)
{
	const unsigned n = SCALED(TOUCH_PAGES);
	struct demand_region r = { VA_BENCH, VA_BENCH + PG(n), 0, 0 };
	begin();
	demand_install(&r);
	uint64_t t0 = timed_start();
	for (unsigned i = 0; i < n; i++)
		wr32(VA_BENCH + PG(i), i);
	uint64_t t1 = timed_end();
	if (r.faults != n)
		panic("first_touch: %u faults for %u pages", r.faults, n);
	end();
	report("first_touch", "pages", n, t1 - t0, n);
}

/* CR3 ping-pong: round-robin over n address spaces, touching one page in each. */
static void bench_cr3_pingpong(unsigned spaces)
{
	const unsigned n = SCALED(PINGPONG_SWITCHES);
	uintptr_t cr3[MAX_SPACES];
	begin();
	for (unsigned s = 0; s < spaces; s++) {
		cr3[s] = aspace_new();
		map_page(cr3[s], VA_BENCH, frame_alloc(), PTE_P | PTE_W);
	}
	for (unsigned s = 0; s < spaces; s++) {		/* warm up: every space used once */
		write_cr3(cr3[s]);
		wr32(VA_BENCH, s);
	}
	uint64_t t0 = timed_start();
	for (unsigned i = 0; i < n; i++) {
		write_cr3(cr3[i & (spaces - 1)]);
		(void)rd32(VA_BENCH);
	}
	uint64_t t1 = timed_end();
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
	uint64_t t0 = timed_start();
	for (unsigned i = 0; i < n; i++) {
		invlpg(VA_BENCH);
		(void)rd32(VA_BENCH);
	}
	uint64_t t1 = timed_end();
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
	uint64_t t0 = timed_start();
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
	uint64_t t1 = timed_end();
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
	uint64_t t0 = timed_start();
	uintptr_t child = aspace_new();
	cow_fork(parent, child, VA_BENCH, n);
	write_cr3(child);
	for (unsigned i = 0; i < n; i++)
		wr32(VA_BENCH + PG(i), ~i);
	uint64_t t1 = timed_end();
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
	uint64_t t0 = timed_start();
	for (unsigned i = 0; i < n; i++) {
		x = xorshift32(x);
		sum += rd32(VA_BENCH + PG(x & (RANDOM_PAGES - 1)) + ((x >> 20) & 0xffc));
	}
	uint64_t t1 = timed_end();
	volatile uint32_t sink = sum;
	(void)sink;
	end();
	report("random_access", "pages", RANDOM_PAGES, t1 - t0, n);
}

/*
 * Hidden faults: pages the guest has mapped (present PTEs, frames already in use) read once
 * each in a fresh address space.  A shadow MMU fills one shadow entry per fault it takes
 * (or more, if it prefetches neighbours) without the guest seeing a fault; EPT takes none.
 */
static void bench_hidden_fault(void)
{
	const unsigned n = SCALED(HIDDEN_PAGES);
	uintptr_t cr3 = begin();
	for (unsigned i = 0; i < n; i++)
		map_page(cr3, VA_BENCH + PG(i), frame_alloc(), PTE_P | PTE_W);
	write_cr3(cr3);			/* drop what the mapping writes left in the TLB */
	uint32_t sum = 0;
	uint64_t t0 = timed_start();
	for (unsigned i = 0; i < n; i++)
		sum += rd32(VA_BENCH + PG(i));
	uint64_t t1 = timed_end();
	volatile uint32_t sink = sum;
	(void)sink;
	end();
	report("hidden_fault", "pages", n, t1 - t0, n);
}

/*
 * Page-table frame reuse: address spaces that were in use (their tables shadowed) and are no
 * longer current are dropped without telling the hypervisor, as a kernel frees a finished
 * process's tables, and the page directory of each (a non-leaf table, which a shadow MMU
 * keeps write-protected; with 32-bit paging the root itself) is cleared with REP STOSB
 * (memset) and used as data.
 */
static void bench_pt_reuse(void)
{
	const unsigned n = SCALED(REUSE_TABLES);
	uintptr_t table[REUSE_TABLES];
	begin();
	for (unsigned t = 0; t < n; t++) {
		uintptr_t cr3 = aspace_new();
		map_page(cr3, VA_BENCH, frame_alloc(), PTE_P | PTE_W);
		write_cr3(cr3);
		wr32(VA_BENCH, t);
		table[t] = (uintptr_t)pt_entry(cr3, VA_BENCH, 2, 0) & ~(PAGE_SIZE - 1);
	}
	write_cr3(kernel_cr3);
	uint64_t t0 = timed_start();
	for (unsigned t = 0; t < n; t++) {
		memset((void *)table[t], 0x5a, PAGE_SIZE);
		wr32(table[t], t);
	}
	uint64_t t1 = timed_end();
	for (unsigned t = 0; t < n; t++)
		if (rd32(table[t]) != t || rd32(table[t] + PAGE_SIZE - 4) != 0x5a5a5a5a)
			panic("pt_reuse: frame %u holds the wrong data", t);
	end();
	report("pt_reuse", "tables", n, t1 - t0, n);
}

/*
 * KPTI-style pairs: every process has a kernel and a user root that share all lower-level
 * tables (the user root is a copy of the kernel root); a round trip is user -> kernel ->
 * user, cycling over the processes, with one access on each side.
 */
static void bench_kpti_pingpong(unsigned pairs)
{
	const unsigned n = SCALED(KPTI_ROUNDS);
	uintptr_t kern[MAX_PAIRS], user[MAX_PAIRS];
	begin();
	for (unsigned p = 0; p < pairs; p++) {
		kern[p] = aspace_new();
		map_page(kern[p], VA_BENCH, frame_alloc(), PTE_P | PTE_W);
		user[p] = frame_alloc();
		memcpy((void *)user[p], (void *)kern[p], PAGE_SIZE);
	}
	for (unsigned p = 0; p < pairs; p++) {	/* warm up: every root used once */
		write_cr3(kern[p]);
		wr32(VA_BENCH, p);
		write_cr3(user[p]);
		(void)rd32(VA_BENCH);
	}
	uint64_t t0 = timed_start();
	for (unsigned i = 0; i < n; i++) {
		unsigned p = i % pairs;
		write_cr3(user[p]);
		(void)rd32(VA_BENCH);
		write_cr3(kern[p]);
		(void)rd32(VA_BENCH);
	}
	uint64_t t1 = timed_end();
	end();
	report("kpti_pingpong", "pairs", pairs, t1 - t0, n);
}

/*
 * Large guest pages (2 MiB, or 4 MiB with 32-bit paging): the large-page area mapped with
 * PD-level leaves and every 4 KiB page of it written once.  A shadow MMU backs them with
 * 4 KiB shadow entries, one fault (or prefetch) each; EPT needs none.
 */
static void bench_large_page(void)
{
	const unsigned n = SCALED(LARGE_TOUCHES);
	const unsigned area_pages = (GUEST_MEM_USED - LARGE_AREA) / PAGE_SIZE;
	uintptr_t cr3 = begin();
	for (uintptr_t off = 0; off < GUEST_MEM_USED - LARGE_AREA; off += LARGE_SIZE)
		map_large(cr3, VA_BENCH + off, LARGE_AREA + off, PTE_P | PTE_W);
	write_cr3(cr3);
	const unsigned stride = area_pages / n ? area_pages / n : 1;
	uint64_t t0 = timed_start();
	for (unsigned i = 0; i < n; i++)
		wr32(VA_BENCH + PG((i * stride) % area_pages), i);
	uint64_t t1 = timed_end();
	end();
	report("large_page", "kib", (unsigned)(LARGE_SIZE >> 10), t1 - t0, n);
}

/*
 * 1 GiB guest pages (long mode, when CPUID offers them): one PDPT-level leaf maps the
 * guest's first GiB at VA_BENCH and the guest's 32 MiB are read one word per 16 KiB.
 * Reads only: the page aliases the guest's own memory.
 */
static void bench_huge_page(void)
{
#ifdef MODE_LM
	const unsigned n = SCALED(LARGE_TOUCHES);
	const unsigned kib = 1U << 20;
	if (!cpu.page1g) {
		printf("BENCH-SKIP large_page kib=%u no 1 GiB pages (CPUID 0x80000001 EDX[26] clear)\n",
		       kib);
		row++;
		return;
	}
	uintptr_t cr3 = begin();
	*pt_entry(cr3, VA_BENCH, 3, 1) = (pte_t)0 | PTE_P | PTE_W | PTE_PS;
	write_cr3(cr3);
	const unsigned area_pages = GUEST_MEM_USED / PAGE_SIZE;
	const unsigned stride = area_pages / n ? area_pages / n : 1;
	uint32_t sum = 0;
	uint64_t t0 = timed_start();
	for (unsigned i = 0; i < n; i++)
		sum += rd32(VA_BENCH + PG((i * stride) % area_pages));
	uint64_t t1 = timed_end();
	volatile uint32_t sink = sum;
	(void)sink;
	end();
	report("large_page", "kib", kib, t1 - t0, n);
#endif
}

/*
 * Scale: first-touch faults over all guest memory, in 1..64 address spaces.  The faults
 * fall in SCALE_REGIONS 2 MiB regions spaced evenly over guest memory, the same number of
 * pages (evenly spaced) in each, so every memory size and address-space count does the
 * same work on the same number of guest page tables: only the spread of the frames over
 * memory and the number of address spaces change.  Space s takes the s-th share of the
 * faults (a run of whole regions, or part of one); the timed loop visits the spaces in
 * turn, SCALE_BURST faults each visit (with a CR3 write, also with one space), like a
 * scheduler's time slices.  Each fault maps, read-only, the guest-physical frame under a
 * window onto all of guest memory (demand paging with .window set); the page tables down
 * to the last level are built before the timed part, so a fault writes one PTE.  A
 * BENCH-SCALE line gives the memory and the page-table frames the row's address spaces use.
 * Every row touches the same frames, in page tables of its own, after scale_resident
 * has mapped all of guest memory; page-table frames are not reused between rows, so that
 * no row pays for the shadow pages another left on them.
 */
static void bench_scale(unsigned spaces, uint64_t mem)
{
	const unsigned n = SCALED(SCALE_FAULTS);
	const unsigned per_region = n / SCALE_REGIONS ? n / SCALE_REGIONS : 1;
	const unsigned per_space = n / spaces;
	const uintptr_t region = (uintptr_t)2 << 20;
	const uintptr_t regions_in_mem = (uintptr_t)(mem / region);
	const uintptr_t page_stride = (region / per_region) & ~(PAGE_SIZE - 1);
	uintptr_t cr3[MAX_SPACES];
	struct demand_region r = { VA_BENCH, VA_BENCH + (uintptr_t)mem, 0, 1 };
	/* Fault k: in region k / per_region of the SCALE_REGIONS spread evenly over memory. */
#define SCALE_VA(k)	(VA_BENCH + ((k) / per_region) * regions_in_mem / SCALE_REGIONS * region + \
			 ((k) % per_region) * page_stride)
	if (regions_in_mem < SCALE_REGIONS || !page_stride)
		panic("scale: %u MiB of guest memory is too small for %u regions of 2 MiB",
		      (unsigned)(mem >> 20), SCALE_REGIONS);
	uintptr_t frames0 = frames_mark();
	for (unsigned s = 0; s < spaces; s++) {
		cr3[s] = aspace_new();
		for (unsigned j = 0; j < per_space; j++)
			(void)pt_entry(cr3[s], SCALE_VA(s * per_space + j), 1, 1);
	}
	const unsigned tables = (unsigned)((frames_mark() - frames0) / PAGE_SIZE);
	demand_install(&r);
	uint64_t t0 = timed_start();
	for (unsigned done = 0; done < per_space; done += SCALE_BURST) {
		for (unsigned s = 0; s < spaces; s++) {
			write_cr3(cr3[s]);
			for (unsigned j = done; j < per_space && j < done + SCALE_BURST; j++)
				(void)rd32(SCALE_VA(s * per_space + j));
		}
	}
	uint64_t t1 = timed_end();
#undef SCALE_VA
	if (r.faults != n)
		panic("scale: %u faults for %u pages", r.faults, n);
	pf_hook = NULL;
	write_cr3(kernel_cr3);
	printf("BENCH-SCALE spaces=%u memory_mib=%u faults=%u tables=%u mark=%u\n", spaces,
	       (unsigned)(mem >> 20), n, tables, row);
	report("scale_fault", "spaces", spaces, t1 - t0, n);
}

/*
 * Untimed, before the scale rows: all of guest memory mapped read-only at VA_BENCH in an
 * address space of its own, its entries already accessed (so shadow MMUs may prefetch
 * them), and one word of every page read.  Afterwards a hypervisor knows every guest
 * frame (a shadow MMU holds a mapping of each, an EPT an entry), as after an OS has used
 * all of its memory: lookups by frame then search as many frames as the guest has, and
 * no row pays a one-time cost per frame (EPT maps a frame at its first use).
 */
static void scale_resident(uint64_t mem)
{
	uintptr_t cr3 = aspace_new();
	for (uintptr_t pa = 0; pa < (uintptr_t)mem; pa += LARGE_SIZE) {
		volatile pte_t *pte = pt_entry(cr3, VA_BENCH + pa, 1, 1);
		for (unsigned i = 0; i < LARGE_SIZE / PAGE_SIZE; i++)
			pte[i] = (pte_t)(pa + PG(i)) | PTE_P | PTE_A;
	}
	write_cr3(cr3);
	uint32_t sum = 0;
	for (uintptr_t pa = 0; pa < (uintptr_t)mem; pa += PAGE_SIZE)
		sum += rd32(VA_BENCH + pa);
	volatile uint32_t sink = sum;
	(void)sink;
	write_cr3(kernel_cr3);
}

/* The scale rows: address-space counts from the command line's spaces=a,b,..., else all. */
static void bench_scale_all(void)
{
	/* Rounded up to 2 MiB: the loader reserves the top 128 KiB of RAM, as QEMU's BIOS. */
	const uint64_t mem = (multiboot_mem_bytes() + (2 << 20) - 1) & ~(uint64_t)((2 << 20) - 1);
	const unsigned n = SCALED(SCALE_FAULTS);
	const char *p = multiboot_cmdline();
	const char *arg = NULL;
	for (; *p; p++)
		if ((p == multiboot_cmdline() || p[-1] == ' ') && !memcmp(p, "spaces=", 7))
			arg = p + 7;
	if (!arg)
		arg = SCALE_SPACES;
	if (!mem)
		panic("scale: the loader gave no memory size (Multiboot mem_upper)");
	scale_resident(mem);
	printf("# scale: %u MiB of guest memory, %u faults per row, address spaces %s\n",
	       (unsigned)(mem >> 20), n, arg);
	while (*arg && *arg != ' ') {
		unsigned v = 0;
		while (*arg >= '0' && *arg <= '9')
			v = v * 10 + (unsigned)(*arg++ - '0');
		const int separated = !*arg || *arg == ',' || *arg == ' ';
		if (!v || v > MAX_SPACES || (v & (v - 1)) || n % v || !separated)
			panic("scale: spaces= wants powers of two up to %u separated by commas",
			      MAX_SPACES);
		bench_scale(v, mem);
		if (*arg == ',')
			arg++;
	}
}

void guest_main(void)
{
	uint64_t start = rdtsc();
	printf("# shadowvm benchmark guest: mode=%s variant=%s\n", MODE_NAME, BENCH_VARIANT);
	if (SCALE_ONLY) {
		bench_scale_all();
		printf("BENCH-TOTAL cycles=%llu\n", (unsigned long long)(rdtsc() - start));
		printf("# done\n");
		guest_exit(EXIT_PASS);
	}
	bench_compute();
	bench_first_touch();
	bench_hidden_fault();
	for (unsigned spaces = 2; spaces <= 16; spaces *= 2)
		bench_cr3_pingpong(spaces);
	bench_invlpg();
	bench_pt_storm();
	bench_cow_fork();
	bench_random_access();
	bench_large_page();
	bench_huge_page();
	/*
	 * Last: these leave many address spaces (or shadowed page tables) behind whose frames
	 * the next workloads would reuse, which would charge a shadow MMU's clean-up to them.
	 */
	bench_pt_reuse();
	for (unsigned spaces = 32; spaces <= RUN_SPACES; spaces *= 2)
		bench_cr3_pingpong(spaces);
	for (unsigned pairs = 16; pairs <= RUN_PAIRS; pairs *= 2)
		bench_kpti_pingpong(pairs);
	printf("BENCH-TOTAL cycles=%llu\n", (unsigned long long)(rdtsc() - start));
	printf("# done\n");
	guest_exit(EXIT_PASS);
}
