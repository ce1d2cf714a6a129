// SPDX-License-Identifier: GPL-2.0
/*
 * bench-mark VALUE: reads the TSC, writes VALUE to the launcher's benchmark mark port
 * (0xf8, where shadowvm-run snapshots its counters; no device there on a PC, so QEMU
 * ignores it) and prints
 *     BENCH-INIT tsc=<the TSC before the mark> mark=<VALUE>
 * /init runs it first thing when LINUXTEST_BENCH is set: with the launcher's mark 0 at the
 * kernel's entry, marks 0 and 1 enclose the boot (Documentation/benchmarks.md). Needs
 * CAP_SYS_RAWIO for ioperm (init has it).
 *
 * No C library: a static binary of a few kilobytes, so that starting it adds little to the
 * boot it measures.
 */
#include "nolibc.h"

#define BENCH_MARK_PORT 0xf8

static void start_c(long *stack)
{
	long argc = stack[0];
	char **argv = (char **)(stack + 1);
	long long value = argc == 2 ? parse(argv[1]) : -1;
	unsigned int lo, hi;
	char num[21];

	if (value < 0) {
		put(2, "usage: bench-mark VALUE   (0 <= VALUE < 2^32; written to port 0xf8)\n");
		quit(2);
	}
	if (syscall3(SYS_ioperm, BENCH_MARK_PORT, 4, 1) != 0) {
		put(2, "bench-mark: ioperm(0xf8) failed (needs CAP_SYS_RAWIO)\n");
		quit(1);
	}
	asm volatile("rdtsc" : "=a"(lo), "=d"(hi));
	asm volatile("outl %0, %1" : : "a"((unsigned int)value), "Nd"((unsigned short)BENCH_MARK_PORT));
	put(1, "BENCH-INIT tsc=");
	put(1, decimal((unsigned long long)hi << 32 | lo, num));
	put(1, " mark=");
	put(1, decimal((unsigned long long)value, num));
	put(1, "\n");
	quit(0);
}
