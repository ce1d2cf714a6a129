// SPDX-License-Identifier: GPL-2.0
/*
 * linuxtest: runs the test named by argv[0] (a link to this binary) or by the first
 * argument: linuxtest NAME [ARGS].
 */
#include <stdio.h>
#include <string.h>

#include "lt.h"

static const struct {
	const char *name;
	int (*run)(int argc, char **argv);
	const char *what;
} tests[] = {
	{ "forkexec", test_forkexec, "fork/exec/exit loop, posix_spawn (vfork) loop" },
	{ "pages", test_pages, "processes verify their pages at one address across switches" },
	{ "cow", test_cow, "copy-on-write between parent, children and grandchildren" },
	{ "mmap", test_mmap, "mmap/munmap/mprotect/mremap loops, SIGSEGV on protected pages, NX" },
	{ "pipe", test_pipe, "pipe ping-pong and a bulk stream between processes" },
	{ "thp", test_thp, "transparent huge pages: fault, COW, split, zap" },
	{ "many", test_many, "more than 32 live processes, each verifying its memory" },
	{ "lbench", test_lbench, "the benchmark rows (LINUXTEST_BENCH=all or a,b; marks at 0xf8)" },
};

static int usage(void)
{
	fprintf(stderr, "usage: linuxtest NAME [ARGS]   (or run through a link named NAME)\n");
	for (size_t i = 0; i < sizeof(tests) / sizeof(tests[0]); i++)
		fprintf(stderr, "  %-9s %s\n", tests[i].name, tests[i].what);
	fprintf(stderr, "LINUXTEST_SCALE=N multiplies the loop counts (0: a tenth).\n");
	return 2;
}

int main(int argc, char **argv)
{
	const char *name = argc > 0 ? strrchr(argv[0], '/') : NULL;

	name = name ? name + 1 : (argc > 0 ? argv[0] : "");
	if (strcmp(name, "linuxtest") == 0) {
		if (argc < 2)
			return usage();
		argc--;
		argv++;
		name = argv[0];
	}
	for (size_t i = 0; i < sizeof(tests) / sizeof(tests[0]); i++)
		if (strcmp(name, tests[i].name) == 0)
			return tests[i].run(argc, argv);
	fprintf(stderr, "linuxtest: no test named '%s'\n", name);
	return usage();
}
