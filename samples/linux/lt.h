/* SPDX-License-Identifier: GPL-2.0 */
/*
 * linuxtest: test programs for the Linux guest (Documentation/linux-guest.md). One static
 * multi-call binary; each test is a function that prints a TAP subtest (indented four
 * spaces, as kselftest nests them) and returns its exit status.
 *
 * Every line is written with one write(2): no stdio buffers that a fork would copy and
 * print twice, and lines from several processes never interleave inside a line.
 */
#ifndef LT_H
#define LT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* TAP, indented for nesting under /init's test point. */
void tap_plan(int count);
void tap_ok(bool ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void tap_skip(const char *reason, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void diag(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Exit status of a test: 0 when every test point passed (or was skipped). */
int tap_status(void);
/* Prints a diagnostic with errno's text and exits 2 (a broken setup, not a result). */
void die_errno(const char *what) __attribute__((noreturn));

/*
 * Workload size: LINUXTEST_SCALE in the environment (the kernel passes unknown
 * NAME=value command-line words to init as environment variables), default 1. Loop
 * counts are base * scale; 0 is the smallest useful run.
 */
unsigned scale(unsigned base);

/* Memory patterns: word i of a region filled with seed s holds pattern(s, i). */
uint64_t pattern(uint64_t seed, uint64_t index);
void fill(volatile uint64_t *words, size_t count, uint64_t seed);
/*
 * Checks words[0..count) against seed; on the first mismatch prints where (what names the
 * region) and returns false.
 */
bool verify(const volatile uint64_t *words, size_t count, uint64_t seed, const char *what);

/* waitpid for pid; returns its exit code, or -1 (with a diagnostic) if it did not exit. */
int wait_exit(pid_t pid, const char *who);
/* fork that dies on failure. */
pid_t xfork(void);
/* mmap of anonymous private memory at an address of the kernel's choice; dies on failure. */
void *xmap(size_t len);

#define PAGE_SIZE 4096UL
#define HUGE_SIZE (2UL << 20)
#define WORDS_PER_PAGE (PAGE_SIZE / sizeof(uint64_t))

/*
 * Per-process regions of the tests that compare address spaces live at this address in
 * every process: the same virtual page maps a different physical page in each, so a
 * translation kept across an address-space switch shows another process's pattern.
 */
#define SHARED_VA ((void *)0x200000000UL)

int test_forkexec(int argc, char **argv);
int test_pages(int argc, char **argv);
int test_cow(int argc, char **argv);
int test_mmap(int argc, char **argv);
int test_pipe(int argc, char **argv);
int test_thp(int argc, char **argv);
int test_many(int argc, char **argv);
int test_lbench(int argc, char **argv);

#endif
