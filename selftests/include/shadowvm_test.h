/* SPDX-License-Identifier: GPL-2.0 */
/*
 * What every harness-based selftest includes: the kernel's kselftest harness (copied into
 * kselftest/, see the README there), its diagnostics on stdout so they stay in order with
 * the TAP lines on the serial console, and the shared VM library.
 */
#ifndef SHADOWVM_TEST_H
#define SHADOWVM_TEST_H
#define TH_LOG_STREAM stdout
#include "kselftest_harness.h"
#include "shadowvm_util.h"

/*
 * A TEST_F_TIMEOUT that first prints the sentence it checks ("# <sentence>"), so the log
 * says what each "ok N fixture.name" means.
 */
#define SVM_TEST(fixture, name, timeout, sentence)                                              \
	static void fixture##_##name##_body(struct __test_metadata *_metadata,                   \
					    FIXTURE_DATA(fixture) *self);                        \
	TEST_F_TIMEOUT(fixture, name, timeout)                                                   \
	{                                                                                        \
		ksft_print_msg("%s\n", sentence);                                                \
		fflush(stdout);                                                                  \
		fixture##_##name##_body(_metadata, self);                                        \
	}                                                                                        \
	static void fixture##_##name##_body(                                                     \
		struct __test_metadata __attribute__((unused)) *_metadata,                       \
		FIXTURE_DATA(fixture) __attribute__((unused)) *self)

/* A call that must fail with errno `want`. */
#define ASSERT_ERRNO(call, want)                                                                 \
	do {                                                                                     \
		errno = 0;                                                                       \
		long __rc = (long)(call);                                                        \
		int __e = errno;                                                                 \
		ASSERT_TRUE(__rc == -1 && __e == (want))                                         \
			TH_LOG("%s returned %ld errno %d (%s), want errno %d (%s)", #call, __rc,  \
			       __e, strerror(__e), want, strerror(want));                        \
	} while (0)
#endif
