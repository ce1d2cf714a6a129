// SPDX-License-Identifier: GPL-2.0
/* TAP output for the functional guests: one result line per test, diagnostics after it. */
#include "rt.h"

static char diag[2048];
static size_t diag_len;
static unsigned cur_failures;
static const char *skip_reason;

void check_fail(const char *fmt, ...)
{
	char line[200];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf_lite(line, sizeof(line), fmt, ap);
	va_end(ap);
	cur_failures++;
	/* Buffered so the diagnostics follow the "not ok" line, as TAP readers expect. */
	const char *parts[] = { "# ", line, "\n" };
	for (unsigned p = 0; p < 3; p++)
		for (const char *c = parts[p]; *c && diag_len < sizeof(diag) - 1; c++)
			diag[diag_len++] = *c;
	diag[diag_len] = 0;
}

void test_skip(const char *why)
{
	skip_reason = why;
}

void tap_run(const struct test *tests, unsigned n)
{
	unsigned failed = 0;

	printf("TAP version 13\n1..%u\n", n);
	for (unsigned i = 0; i < n; i++) {
		uintptr_t mark = frames_mark();
		diag_len = 0;
		diag[0] = 0;
		cur_failures = 0;
		skip_reason = NULL;
		pf_hook = NULL;
		pf_reset();

		tests[i].fn();

		/* Undo whatever global state the test changed, then reclaim its frames. */
		pf_hook = NULL;
		write_cr0(read_cr0() | CR0_WP);
		write_cr3(kernel_cr3);
		frames_release(mark);

		if (cur_failures) {
			failed++;
			printf("not ok %u - %s: %s\n", i + 1, MODE_NAME, tests[i].name);
			puts_serial(diag);
			if (diag_len >= sizeof(diag) - 1)
				printf("# (more diagnostics cut)\n");
		} else if (skip_reason) {
			printf("ok %u - %s: %s # SKIP %s\n", i + 1, MODE_NAME, tests[i].name, skip_reason);
		} else {
			printf("ok %u - %s: %s\n", i + 1, MODE_NAME, tests[i].name);
		}
	}
	printf("# %s: %u of %u tests failed\n", MODE_NAME, failed, n);
	guest_exit(failed ? (failed < 0x3f ? failed : 0x3f) : EXIT_PASS);
}
