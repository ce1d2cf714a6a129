/* SPDX-License-Identifier: GPL-2.0 */
/* Minimal TAP output for the in-guest C selftests (kselftest style). */
#ifndef SHADOWVM_TAP_H
#define SHADOWVM_TAP_H
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static int tap_n, tap_failed;

static inline void tap_plan(int n)
{
	printf("TAP version 13\n1..%d\n", n);
	fflush(stdout);
}

/* Reports one test; on failure prints the formatted diagnostic. */
static inline void tap_result(int pass, const char *name, const char *fmt, ...)
{
	va_list ap;

	tap_n++;
	printf("%sok %d - %s\n", pass ? "" : "not ", tap_n, name);
	if (!pass) {
		tap_failed++;
		printf("# ");
		va_start(ap, fmt);
		vprintf(fmt, ap);
		va_end(ap);
		printf("\n");
	}
	fflush(stdout);
}

/* A call that must fail with a given errno. */
#define TAP_ERRNO(name, call, want)                                                      \
	do {                                                                                 \
		errno = 0;                                                                   \
		long __rc = (long)(call);                                                    \
		int __e = errno;                                                             \
		tap_result(__rc == -1 && __e == (want), name, "%s returned %ld errno %d (%s), want errno %d (%s)", \
			   #call, __rc, __e, strerror(__e), want, strerror(want));              \
	} while (0)

static inline int tap_exit(void)
{
	return tap_failed ? 1 : 0;
}
#endif
