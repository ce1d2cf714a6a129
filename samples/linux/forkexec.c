// SPDX-License-Identifier: GPL-2.0
/*
 * forkexec: creates and ends many address spaces. fork + exec of this binary (the child
 * checks that exec gave it a fresh image: initialised data, zeroed BSS, its arguments),
 * posix_spawn (clone with CLONE_VM | CLONE_VFORK: the child runs in the parent's address
 * space until it execs), and fork + _exit after the child checked and wrote the parent's
 * memory (a copy it owns).
 */
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lt.h"

#define CHILD_ARG "--exec-child"

extern char **environ;

static uint64_t data_word = 0x1234567890abcdefULL;
static uint64_t bss_words[512];

/* Exit code the exec'd child n returns: it depends on n so a mix-up shows. */
static int child_code(unsigned n)
{
	return (int)((n * 7 + 3) % 200);
}

/* The exec'd image: checks it is fresh, then exits with child_code(n). */
static int exec_child(const char *arg)
{
	unsigned n = (unsigned)strtoul(arg, NULL, 10);

	if (data_word != 0x1234567890abcdefULL)
		return 250;
	for (size_t i = 0; i < sizeof(bss_words) / sizeof(bss_words[0]); i++)
		if (bss_words[i])
			return 251;
	return child_code(n);
}

static bool run_exec_loop(unsigned count, bool spawn)
{
	/* Parent state an exec must not carry over. */
	data_word = 0xdeadbeef;
	for (size_t i = 0; i < sizeof(bss_words) / sizeof(bss_words[0]); i++)
		bss_words[i] = i + 1;

	for (unsigned i = 0; i < count; i++) {
		char num[16];
		char *args[] = { "forkexec", CHILD_ARG, num, NULL };
		pid_t pid;
		int code;

		snprintf(num, sizeof(num), "%u", i);
		if (spawn) {
			int err = posix_spawn(&pid, "/proc/self/exe", NULL, NULL, args, environ);

			if (err) {
				diag("posix_spawn %u: %s", i, strerror(err));
				return false;
			}
		} else {
			pid = xfork();
			if (pid == 0) {
				execve("/proc/self/exe", args, environ);
				_exit(252);
			}
		}
		code = wait_exit(pid, "exec'd child");
		if (code != child_code(i)) {
			diag("%s child %u exited with %d, expected %d (250: stale data, 251: stale BSS, 252: exec failed)",
			     spawn ? "spawned" : "forked", i, code, child_code(i));
			return false;
		}
	}
	return true;
}

static bool run_fork_exit_loop(unsigned count)
{
	enum { WORDS = 4 * WORDS_PER_PAGE };
	uint64_t *mem = xmap(WORDS * sizeof(uint64_t));

	for (unsigned i = 0; i < count; i++) {
		fill(mem, WORDS, i);
		pid_t pid = xfork();

		if (pid == 0) {
			if (!verify(mem, WORDS, i, "forked child's copy"))
				_exit(1);
			fill(mem, WORDS, i + 1000000);
			_exit(verify(mem, WORDS, i + 1000000, "forked child's own write") ? 0 : 1);
		}
		if (wait_exit(pid, "forked child") != 0)
			return false;
		if (!verify(mem, WORDS, i, "parent after its child wrote"))
			return false;
	}
	return true;
}

int test_forkexec(int argc, char **argv)
{
	unsigned count = scale(100);

	if (argc == 3 && strcmp(argv[1], CHILD_ARG) == 0)
		return exec_child(argv[2]);
	tap_plan(3);
	tap_ok(run_exec_loop(count, false), "fork + exec + exit, %u times", count);
	tap_ok(run_exec_loop(count, true), "posix_spawn (vfork) + exec + exit, %u times", count);
	tap_ok(run_fork_exit_loop(count),
	       "fork + write + _exit, %u times: the child's writes stay in its copy", count);
	return tap_status();
}
