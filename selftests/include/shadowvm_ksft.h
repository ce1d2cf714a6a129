/* SPDX-License-Identifier: GPL-2.0 */
/*
 * For the selftests whose checks share state (fuzz phases, reload cycles, the memcg child)
 * and so report through the low-level kselftest.h instead of the harness, as KVM's
 * non-harness tests do: ksft_print_header(), ksft_set_plan(n), one svm_result() per check,
 * ksft_finished().
 */
#ifndef SHADOWVM_KSFT_H
#define SHADOWVM_KSFT_H
#include <stdarg.h>
#include <stdio.h>
#include "kselftest.h"

/* One result, "ok N name"; a failure is followed by its diagnostic as a TAP comment. */
static inline __attribute__((format(printf, 3, 4)))
void svm_result(int pass, const char *name, const char *fmt, ...)
{
	va_list ap;

	if (pass) {
		ksft_test_result_pass("%s\n", name);
	} else {
		ksft_test_result_fail("%s\n", name);
		printf("# ");
		va_start(ap, fmt);
		vprintf(fmt, ap);
		va_end(ap);
		printf("\n");
	}
	fflush(stdout);
}
#endif
