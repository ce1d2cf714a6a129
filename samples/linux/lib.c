// SPDX-License-Identifier: GPL-2.0
/* TAP output, patterns and process helpers shared by the linuxtest programs. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lt.h"

static int tap_number;
static int tap_failed;

static void emit(const char *prefix, const char *fmt, va_list ap, const char *suffix)
{
	char line[512];
	int n = snprintf(line, sizeof(line), "%s", prefix);

	if (n < 0 || (size_t)n >= sizeof(line))
		n = 0;
	int m = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
	if (m < 0)
		m = 0;
	n = (size_t)(n + m) >= sizeof(line) - 2 ? (int)sizeof(line) - 2 : n + m;
	int s = snprintf(line + n, sizeof(line) - n, "%s\n", suffix);
	if (s < 0 || (size_t)(n + s) >= sizeof(line)) {
		line[sizeof(line) - 2] = '\n';
		n = sizeof(line) - 1;
	} else {
		n += s;
	}
	/* Best effort: a lost line shows as a missing test point. */
	if (write(STDOUT_FILENO, line, n) < 0)
		return;
}

static void emitf(const char *prefix, const char *suffix, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	emit(prefix, fmt, ap, suffix);
	va_end(ap);
}

void tap_plan(int count)
{
	emitf("    ", "", "1..%d", count);
}

void tap_ok(bool ok, const char *fmt, ...)
{
	char prefix[48];
	va_list ap;

	tap_number++;
	if (!ok)
		tap_failed++;
	snprintf(prefix, sizeof(prefix), "    %sok %d - ", ok ? "" : "not ", tap_number);
	va_start(ap, fmt);
	emit(prefix, fmt, ap, "");
	va_end(ap);
}

void tap_skip(const char *reason, const char *fmt, ...)
{
	char prefix[48], suffix[300];
	va_list ap;

	tap_number++;
	snprintf(prefix, sizeof(prefix), "    ok %d - ", tap_number);
	snprintf(suffix, sizeof(suffix), " # SKIP %s", reason);
	va_start(ap, fmt);
	emit(prefix, fmt, ap, suffix);
	va_end(ap);
}

void diag(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	emit("    # ", fmt, ap, "");
	va_end(ap);
}

int tap_status(void)
{
	return tap_failed ? 1 : 0;
}

void die_errno(const char *what)
{
	diag("%s: %s", what, strerror(errno));
	exit(2);
}

unsigned scale(unsigned base)
{
	const char *s = getenv("LINUXTEST_SCALE");
	char *end;
	unsigned long v;

	if (!s || !*s)
		return base;
	v = strtoul(s, &end, 10);
	if (*end || v > 1000)
		return base;
	return v == 0 ? (base / 10 ? base / 10 : 1) : base * v;
}

/* splitmix64 of the seed and index: every word differs, and so does every seed. */
uint64_t pattern(uint64_t seed, uint64_t index)
{
	uint64_t z = seed * 0x9e3779b97f4a7c15ULL + index + 1;

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

void fill(volatile uint64_t *words, size_t count, uint64_t seed)
{
	for (size_t i = 0; i < count; i++)
		words[i] = pattern(seed, i);
}

bool verify(const volatile uint64_t *words, size_t count, uint64_t seed, const char *what)
{
	for (size_t i = 0; i < count; i++) {
		uint64_t want = pattern(seed, i), got = words[i];

		if (got != want) {
			diag("pid %d: %s: word %zu (address %p, page %zu) is %#llx, expected %#llx (seed %#llx)",
			     (int)getpid(), what, i, (void *)&words[i], i / WORDS_PER_PAGE,
			     (unsigned long long)got, (unsigned long long)want,
			     (unsigned long long)seed);
			return false;
		}
	}
	return true;
}

int wait_exit(pid_t pid, const char *who)
{
	int status;

	while (waitpid(pid, &status, 0) < 0) {
		if (errno != EINTR) {
			diag("waitpid(%s, pid %d): %s", who, (int)pid, strerror(errno));
			return -1;
		}
	}
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	if (WIFSIGNALED(status))
		diag("%s (pid %d) was killed by signal %d (%s)", who, (int)pid, WTERMSIG(status),
		     strsignal(WTERMSIG(status)));
	else
		diag("%s (pid %d) ended with wait status %#x", who, (int)pid, status);
	return -1;
}

pid_t xfork(void)
{
	pid_t pid = fork();

	if (pid < 0)
		die_errno("fork");
	return pid;
}

void *xmap(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		die_errno("mmap");
	return p;
}
