// SPDX-License-Identifier: GPL-2.0
/*
 * many: PROCS processes (more than the 32 address spaces a shadow-root cache might keep)
 * alive at once. Each maps PAGES pages at SHARED_VA, fills them with its own pattern and
 * reports ready; only when all are ready does the parent let them go (closing a pipe they
 * all wait on), and each then verifies its memory ROUNDS times, yielding and rewriting
 * one word per page in between.
 */
#include <sched.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

#include "lt.h"

#define PROCS 40
#define PAGES 16

static int member(unsigned index, int ready, int go, unsigned rounds)
{
	uint64_t seed = 0x3a10000 + index;
	size_t words = PAGES * WORDS_PER_PAGE;
	uint64_t *mem = mmap(SHARED_VA, PAGES * PAGE_SIZE, PROT_READ | PROT_WRITE,
			     MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	char c;

	if (mem != SHARED_VA)
		die_errno("mmap at the shared address");
	fill(mem, words, seed);
	if (write(ready, "r", 1) != 1)
		die_errno("ready");
	/* EOF: everyone is alive. */
	if (read(go, &c, 1) != 0)
		return 2;
	for (unsigned r = 0; r < rounds; r++) {
		uint64_t round_seed = seed + ((uint64_t)r << 32);

		if (!verify(mem, words, round_seed, "own memory"))
			return 1;
		sched_yield();
		fill(mem, words, round_seed + (1ULL << 32));
	}
	return verify(mem, words, seed + ((uint64_t)rounds << 32), "own memory at the end") ? 0 : 1;
}

int test_many(int argc, char **argv)
{
	unsigned rounds = scale(10);
	int ready[2], go[2];
	pid_t pids[PROCS];
	unsigned started = 0, alive = 0, passed = 0;

	(void)argc;
	(void)argv;
	tap_plan(2);
	if (pipe(ready) < 0 || pipe(go) < 0)
		die_errno("pipe");
	for (unsigned i = 0; i < PROCS; i++) {
		pids[i] = fork();
		if (pids[i] < 0) {
			diag("fork %u: failed", i);
			break;
		}
		if (pids[i] == 0) {
			close(ready[0]);
			close(go[1]);
			_exit(member(i, ready[1], go[0], rounds));
		}
		started++;
	}
	close(ready[1]);
	close(go[0]);
	for (char c; alive < started && read(ready[0], &c, 1) == 1;)
		alive++;
	/* All of them have filled their memory and wait: release them. */
	close(go[1]);
	close(ready[0]);
	for (unsigned i = 0; i < started; i++) {
		char who[32];

		snprintf(who, sizeof(who), "process %u", i);
		if (wait_exit(pids[i], who) == 0)
			passed++;
	}
	tap_ok(alive == PROCS, "%u of %d processes alive at once with their own memory", alive,
	       PROCS);
	tap_ok(passed == PROCS, "%u of %d processes verified their memory over %u rounds", passed,
	       PROCS, rounds);
	return tap_status();
}
