// SPDX-License-Identifier: GPL-2.0
/*
 * lbench: the Linux guest's benchmark (Documentation/benchmarks.md, "Linux guest"). Each
 * operation runs a fixed number of times between two writes to the launcher's benchmark
 * mark port (0xf8), where shadowvm-run snapshots its counters, and RDTSC inside them:
 *
 *     mark 2k, rdtsc, the operations, rdtsc, mark 2k+1
 *
 * then prints
 *
 *     BENCH <row> <param>=<value> cycles=<rdtsc delta> iterations=<operations> mark=<k>
 *
 * (the micro benchmarks' format) and a TAP test point that checks what the operations
 * did; thp_fault adds "BENCH-INFO thp_fault thp_fault_alloc=<n> thp_fault_fallback=<n>",
 * the huge pages the kernel made and the times it fell back to 4 KiB pages. Row 0 is the
 * boot: the launcher marks the kernel's entry (mark 0) and /init's first command,
 * bench-mark, writes mark 1. The rows, by k:
 *
 *   1 fork_exec_exit  fork, exec of /bin/true, exit, wait          per process
 *   2 pipe_switch     two processes ping-pong a byte over pipes    per context switch
 *   3 mmap_fault      mmap, write one word per page, munmap        per page fault
 *   4 cow_fork        fork of a process with a large touched       per fork (the child
 *                     mapping; the child writes every page         copies every page)
 *   5 many_procs      40 processes, more than the root cache       per wake-up
 *                     holds, woken in turn; each touches its pages
 *   6 thp_fault       2 MiB-aligned MADV_HUGEPAGE memory touched   per 2 MiB huge page
 *                     page by page, then unmapped
 *
 * LINUXTEST_BENCH=all or a list of rows (a,b) selects them; LINUXTEST_SCALE scales the
 * counts as for the tests. The mark port needs CAP_SYS_RAWIO (ioperm); without it (an
 * ordinary user on a host) the rows run unmarked and say so. Under QEMU, with no device
 * at 0xf8, the marks do nothing.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/io.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>
#include <x86intrin.h>

#include "lt.h"

#define BENCH_MARK_PORT 0xf8

/* Whether ioperm gave us the mark port. */
static bool marking;

static void mark(unsigned value)
{
	if (marking)
		outl(value, BENCH_MARK_PORT);
}

/* Marks the start of row k's timed part and reads the TSC; the mark's exit is outside. */
static uint64_t timed_start(unsigned k)
{
	mark(2 * k);
	return __rdtsc();
}

/* Reads the TSC and marks the end of row k's timed part. */
static uint64_t timed_end(unsigned k)
{
	uint64_t t = __rdtsc();

	mark(2 * k + 1);
	return t;
}

static void report(unsigned k, const char *row, const char *param, unsigned value,
		   uint64_t cycles, unsigned operations)
{
	char line[160];
	int n = snprintf(line, sizeof(line), "BENCH %s %s=%u cycles=%llu iterations=%u mark=%u\n",
			 row, param, value, (unsigned long long)cycles, operations, k);

	/* At column 0, outside the TAP indentation: the host greps for it. */
	if (n > 0 && write(STDOUT_FILENO, line, (size_t)n) < 0)
		diag("cannot print the BENCH line of %s", row);
}

/* ------------------------------------------------------------------ 1: fork_exec_exit */

static bool fork_exec_exit(unsigned k, unsigned loops)
{
	unsigned good = 0;
	uint64_t t0 = timed_start(k);

	for (unsigned i = 0; i < loops; i++) {
		pid_t pid = xfork();

		if (pid == 0) {
			execl("/bin/true", "true", (char *)NULL);
			_exit(127);
		}
		good += wait_exit(pid, "the exec'd /bin/true") == 0;
	}
	uint64_t t1 = timed_end(k);
	report(k, "fork_exec_exit", "loops", loops, t1 - t0, loops);
	tap_ok(good == loops, "fork_exec_exit: %u of %u children exec'd /bin/true and exited 0",
	       good, loops);
	return good == loops;
}

/* --------------------------------------------------------------------- 2: pipe_switch */

static bool pipe_switch(unsigned k, unsigned roundtrips)
{
	int ping[2], pong[2];
	unsigned good = 0;

	if (pipe(ping) || pipe(pong))
		die_errno("pipe");
	pid_t pid = xfork();
	if (pid == 0) {
		unsigned char c;

		close(ping[1]);
		close(pong[0]);
		/* Echo each byte plus one until the parent closes its end. */
		while (read(ping[0], &c, 1) == 1) {
			c++;
			if (write(pong[1], &c, 1) != 1)
				_exit(2);
		}
		_exit(0);
	}
	close(ping[0]);
	close(pong[1]);
	uint64_t t0 = timed_start(k);
	for (unsigned i = 0; i < roundtrips; i++) {
		unsigned char c = (unsigned char)i, back;

		if (write(ping[1], &c, 1) != 1 || read(pong[0], &back, 1) != 1)
			break;
		good += back == (unsigned char)(c + 1);
	}
	uint64_t t1 = timed_end(k);
	close(ping[1]);
	close(pong[0]);
	int status = wait_exit(pid, "the echoing child");
	/* Each round trip is two switches: to the child and back. */
	report(k, "pipe_switch", "roundtrips", roundtrips, t1 - t0, 2 * roundtrips);
	tap_ok(good == roundtrips && status == 0,
	       "pipe_switch: %u of %u round trips echoed, the child exited %d", good, roundtrips,
	       status);
	return good == roundtrips && status == 0;
}

/* ---------------------------------------------------------------------- 3: mmap_fault */

static bool mmap_fault(unsigned k, unsigned pages, unsigned rounds)
{
	size_t len = pages * PAGE_SIZE;
	unsigned good = 0;
	uint64_t t0 = timed_start(k);

	for (unsigned r = 0; r < rounds; r++) {
		volatile uint64_t *mem = mmap(NULL, len, PROT_READ | PROT_WRITE,
					      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

		if (mem == MAP_FAILED)
			die_errno("mmap");
		/* A new mapping reads as zero; the write faults the page in. */
		for (unsigned p = 0; p < pages; p++) {
			good += mem[p * WORDS_PER_PAGE] == 0;
			mem[p * WORDS_PER_PAGE] = p + 1;
		}
		for (unsigned p = 0; p < pages; p++)
			good -= mem[p * WORDS_PER_PAGE] != p + 1;
		if (munmap((void *)mem, len))
			die_errno("munmap");
	}
	uint64_t t1 = timed_end(k);
	report(k, "mmap_fault", "pages", pages, t1 - t0, pages * rounds);
	tap_ok(good == pages * rounds, "mmap_fault: %u of %u fresh pages read zero and kept "
	       "their word", good, pages * rounds);
	return good == pages * rounds;
}

/* ------------------------------------------------------------------------ 4: cow_fork */

static bool cow_fork(unsigned k, unsigned pages, unsigned forks)
{
	size_t words = pages * WORDS_PER_PAGE;
	uint64_t *mem = xmap(pages * PAGE_SIZE);
	unsigned good = 0;

	/* 4 KiB copy-on-write: the THP row is separate. */
	if (madvise(mem, pages * PAGE_SIZE, MADV_NOHUGEPAGE))
		die_errno("madvise(MADV_NOHUGEPAGE)");
	fill(mem, words, 0xc0f0);
	uint64_t t0 = timed_start(k);
	for (unsigned f = 0; f < forks; f++) {
		pid_t pid = xfork();

		if (pid == 0) {
			/* The child sees the parent's data and writes its own copy of every page. */
			int bad = 0;

			for (unsigned p = 0; p < pages; p++) {
				size_t w = p * WORDS_PER_PAGE;

				bad |= mem[w] != pattern(0xc0f0, w);
				mem[w] = ~mem[w];
			}
			_exit(bad);
		}
		good += wait_exit(pid, "the copy-on-write child") == 0;
	}
	uint64_t t1 = timed_end(k);
	report(k, "cow_fork", "pages", pages, t1 - t0, forks);
	bool mine = verify(mem, words, 0xc0f0, "the parent's memory after the children wrote");
	tap_ok(good == forks && mine, "cow_fork: %u of %u children saw the parent's %u pages and "
	       "wrote their own copies; the parent's memory %s", good, forks, pages,
	       mine ? "unchanged" : "CHANGED");
	munmap(mem, pages * PAGE_SIZE);
	return good == forks && mine;
}

/* ---------------------------------------------------------------------- 5: many_procs */

#define MANY_PROCS 40
#define MANY_PAGES 16

/*
 * One of the processes: maps MANY_PAGES at SHARED_VA (the same address in every one),
 * writes its number into every page and says ready; then, each time it is woken, checks
 * every page holds its number plus the wake-ups so far, counts one more, and answers.
 */
static int many_member(unsigned index, int go, int answer)
{
	uint64_t *mem = mmap(SHARED_VA, MANY_PAGES * PAGE_SIZE, PROT_READ | PROT_WRITE,
			     MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	uint64_t expect = (uint64_t)index << 32;
	char c;

	if (mem != SHARED_VA)
		die_errno("mmap at the shared address");
	for (unsigned p = 0; p < MANY_PAGES; p++)
		mem[p * WORDS_PER_PAGE] = expect;
	if (write(answer, "r", 1) != 1)
		return 2;
	while (read(go, &c, 1) == 1) {
		bool ok = true;

		for (unsigned p = 0; p < MANY_PAGES; p++) {
			ok &= mem[p * WORDS_PER_PAGE] == expect;
			mem[p * WORDS_PER_PAGE] = expect + 1;
		}
		expect++;
		if (write(answer, ok ? "o" : "x", 1) != 1)
			return 2;
	}
	return 0;
}

static bool many_procs(unsigned k, unsigned rounds)
{
	int go[MANY_PROCS], answer[2];
	pid_t pids[MANY_PROCS];
	unsigned ready = 0, good = 0, exited = 0;
	char c;

	if (pipe(answer))
		die_errno("pipe");
	for (unsigned i = 0; i < MANY_PROCS; i++) {
		int p[2];

		if (pipe(p))
			die_errno("pipe");
		pids[i] = xfork();
		if (pids[i] == 0) {
			close(p[1]);
			close(answer[0]);
			/* Only its own wake-up pipe: the others' write ends stay with the parent. */
			for (unsigned j = 0; j < i; j++)
				close(go[j]);
			_exit(many_member(i, p[0], answer[1]));
		}
		close(p[0]);
		go[i] = p[1];
	}
	close(answer[1]);
	for (unsigned i = 0; i < MANY_PROCS; i++)
		ready += read(answer[0], &c, 1) == 1 && c == 'r';
	/* Every process is alive and has its pages: wake each in turn, one at a time. */
	uint64_t t0 = timed_start(k);
	for (unsigned r = 0; r < rounds; r++)
		for (unsigned i = 0; i < MANY_PROCS; i++)
			if (write(go[i], "g", 1) == 1 && read(answer[0], &c, 1) == 1)
				good += c == 'o';
	uint64_t t1 = timed_end(k);
	for (unsigned i = 0; i < MANY_PROCS; i++)
		close(go[i]);
	for (unsigned i = 0; i < MANY_PROCS; i++)
		exited += wait_exit(pids[i], "a many_procs member") == 0;
	close(answer[0]);
	report(k, "many_procs", "procs", MANY_PROCS, t1 - t0, MANY_PROCS * rounds);
	bool ok = ready == MANY_PROCS && good == MANY_PROCS * rounds && exited == MANY_PROCS;
	tap_ok(ok, "many_procs: %u of %u processes alive at once, %u of %u wake-ups saw their own "
	       "pages, %u exited 0", ready, MANY_PROCS, good, MANY_PROCS * rounds, exited);
	return ok;
}

/* ----------------------------------------------------------------------- 6: thp_fault */

/* A counter of /proc/vmstat, or -1 when it is not there (no THP in the kernel). */
static long vmstat(const char *name)
{
	FILE *f = fopen("/proc/vmstat", "r");
	char key[64];
	long value, found = -1;

	if (!f)
		return -1;
	while (fscanf(f, "%63s %ld", key, &value) == 2)
		if (strcmp(key, name) == 0)
			found = value;
	fclose(f);
	return found;
}

static bool thp_fault(unsigned k, unsigned huge_pages, unsigned rounds)
{
	size_t len = huge_pages * HUGE_SIZE;
	unsigned good = 0;
	long alloc0 = vmstat("thp_fault_alloc"), fallback0 = vmstat("thp_fault_fallback");
	uint64_t t0 = timed_start(k);

	for (unsigned r = 0; r < rounds; r++) {
		/* Map one huge page more and trim it to 2 MiB alignment. */
		char *raw = mmap(NULL, len + HUGE_SIZE, PROT_READ | PROT_WRITE,
				 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

		if (raw == MAP_FAILED)
			die_errno("mmap");
		char *mem = (char *)(((uintptr_t)raw + HUGE_SIZE - 1) & ~(HUGE_SIZE - 1));
		size_t head = mem - raw;

		if (head)
			munmap(raw, head);
		munmap(mem + len, HUGE_SIZE - head);
		/* Without THP in the kernel madvise fails; the row then faults 4 KiB pages. */
		madvise(mem, len, MADV_HUGEPAGE);
		for (size_t off = 0; off < len; off += PAGE_SIZE) {
			good += mem[off] == 0;
			mem[off] = 1;
		}
		munmap(mem, len);
	}
	uint64_t t1 = timed_end(k);
	long alloc = vmstat("thp_fault_alloc"), fallback = vmstat("thp_fault_fallback");
	unsigned touched = (unsigned)(len / PAGE_SIZE) * rounds;

	report(k, "thp_fault", "mib", (unsigned)(len >> 20), t1 - t0, huge_pages * rounds);
	if (alloc >= 0) {
		/* What the kernel did with the memory, for the report. */
		char line[128];
		int n = snprintf(line, sizeof(line), "BENCH-INFO thp_fault thp_fault_alloc=%ld "
				 "thp_fault_fallback=%ld\n", alloc - alloc0, fallback - fallback0);

		if (n > 0 && write(STDOUT_FILENO, line, (size_t)n) < 0)
			diag("cannot print the BENCH-INFO line");
	}
	tap_ok(good == touched, "thp_fault: %u of %u pages of fresh 2 MiB-aligned memory read "
	       "zero", good, touched);
	if (alloc < 0)
		tap_skip("the kernel has no transparent huge pages (no thp_fault_alloc in "
			 "/proc/vmstat)", "thp_fault: huge pages faulted in");
	else
		tap_ok(alloc > alloc0, "thp_fault: huge pages faulted in (thp_fault_alloc +%ld, "
		       "thp_fault_fallback +%ld; %u wanted)", alloc - alloc0, fallback - fallback0,
		       huge_pages * rounds);
	return good == touched;
}

/* -------------------------------------------------------------------------- the rows */

static const char *const ROWS[] = {
	"boot", "fork_exec_exit", "pipe_switch", "mmap_fault", "cow_fork", "many_procs",
	"thp_fault",
};
#define NROWS (sizeof(ROWS) / sizeof(ROWS[0]))

/* Whether LINUXTEST_BENCH (all, or rows a,b) selects row name. */
static bool selected(const char *name)
{
	const char *list = getenv("LINUXTEST_BENCH");
	size_t n = strlen(name);

	if (!list || !*list || strcmp(list, "all") == 0)
		return true;
	for (const char *p = list; *p;) {
		size_t len = strcspn(p, ",");

		if (len == n && strncmp(p, name, n) == 0)
			return true;
		p += len + (p[len] == ',');
	}
	return false;
}

int test_lbench(int argc, char **argv)
{
	unsigned tests = 0;
	bool ok = true;

	(void)argc;
	(void)argv;
	/* Unknown names in the list would silently run nothing. */
	const char *list = getenv("LINUXTEST_BENCH");
	for (const char *p = list ? list : ""; *p && strcmp(list, "all");) {
		size_t len = strcspn(p, ",");
		bool known = false;

		for (size_t i = 0; i < NROWS; i++)
			known |= strlen(ROWS[i]) == len && strncmp(p, ROWS[i], len) == 0;
		if (!known) {
			diag("LINUXTEST_BENCH: unknown row '%.*s' (rows: all, or some of "
			     "fork_exec_exit,pipe_switch,mmap_fault,cow_fork,many_procs,thp_fault)",
			     (int)len, p);
			return 2;
		}
		p += len + (p[len] == ',');
	}
	for (size_t i = 1; i < NROWS; i++) {
		if (selected(ROWS[i]))
			tests += strcmp(ROWS[i], "thp_fault") == 0 ? 2 : 1;
	}
	marking = ioperm(BENCH_MARK_PORT, 4, 1) == 0;
	if (!marking)
		diag("ioperm(0xf8): %s: the rows run without benchmark marks", strerror(errno));
	tap_plan((int)tests);
	/*
	 * The row numbers are fixed, so a row's marks do not depend on the selection. The
	 * counts are sized for Bochs (a Linux guest in a hypervisor in an emulator); the
	 * smallest scale, 0, runs each row at least once.
	 */
	if (selected("fork_exec_exit"))
		ok &= fork_exec_exit(1, scale(20));
	if (selected("pipe_switch"))
		ok &= pipe_switch(2, scale(200));
	if (selected("mmap_fault"))
		ok &= mmap_fault(3, 128, scale(4));
	if (selected("cow_fork"))
		ok &= cow_fork(4, 1024, scale(2));
	if (selected("many_procs"))
		ok &= many_procs(5, scale(2));
	if (selected("thp_fault"))
		ok &= thp_fault(6, 2, scale(2));
	return ok && tap_status() == 0 ? 0 : 1;
}
