// SPDX-License-Identifier: GPL-2.0
/*
 * many: PROCS processes alive at once, more address spaces than a hypervisor's cache of
 * page-table roots holds (KVM keeps 4 per vCPU in long mode; shadowvm's cache grows up to
 * its module parameter root_cache, which the linux suite's reclaim run sets to 32; with
 * page-table isolation every process has two page-table roots, a kernel and a user one).
 *
 * Each process maps PAGES pages at SHARED_VA and fills them with its own pattern. When all
 * have (every one is alive), the parent runs ROUNDS rounds: it wakes every process in turn
 * through the process's own pipe; the process verifies its memory, rewrites it with the
 * next round's pattern, reports and blocks again. No process exits before the last round,
 * so each round switches through all PROCS address spaces in the same order: a cache of
 * fewer roots than that, kept least recently used, has dropped a process's roots by the
 * time it runs again and must build them anew, and the process must still see only its
 * own memory.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

#include "lt.h"

#define PROCS 40
#define PAGES 16
/* Rounds at the smallest scale: enough that every process is switched back to repeatedly. */
#define MIN_ROUNDS 4
/* How long the parent waits for one round's reports before it gives up (ms). */
#define ROUND_TIMEOUT_MS (600 * 1000)

static uint64_t round_seed(unsigned index, unsigned round)
{
	return 0x3a10000 + index + ((uint64_t)round << 32);
}

/*
 * One process: fill, report ready ('r'), then per round wait for a byte on `go`, verify,
 * refill and report 'o' (verified) or 'x' (not). Exit status 0 when every round verified.
 */
static int member(unsigned index, int ready, int go, unsigned rounds)
{
	size_t words = PAGES * WORDS_PER_PAGE;
	uint64_t *mem = mmap(SHARED_VA, PAGES * PAGE_SIZE, PROT_READ | PROT_WRITE,
			     MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	bool all_ok = true;
	char c;

	if (mem != SHARED_VA)
		die_errno("mmap at the shared address");
	fill(mem, words, round_seed(index, 0));
	if (write(ready, "r", 1) != 1)
		die_errno("ready");
	for (unsigned r = 0; r < rounds; r++) {
		bool ok;

		/* EOF: the parent gave up. */
		if (read(go, &c, 1) != 1)
			return 2;
		ok = verify(mem, words, round_seed(index, r), "own memory");
		fill(mem, words, round_seed(index, r + 1));
		all_ok &= ok;
		if (write(ready, ok ? "o" : "x", 1) != 1)
			die_errno("report");
	}
	all_ok &= verify(mem, words, round_seed(index, rounds), "own memory at the end");
	return all_ok ? 0 : 1;
}

/* Reads `count` bytes from fd, counting those equal to `good`; false on EOF or timeout. */
static bool collect(int fd, unsigned count, char good, unsigned *goods)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	char buf[PROCS];

	*goods = 0;
	while (count > 0) {
		ssize_t n;
		int ready = poll(&p, 1, ROUND_TIMEOUT_MS);

		if (ready < 0 && errno == EINTR)
			continue;
		if (ready <= 0) {
			diag("no report from %u processes in %d s", count, ROUND_TIMEOUT_MS / 1000);
			return false;
		}
		n = read(fd, buf, count < sizeof(buf) ? count : sizeof(buf));
		if (n <= 0) {
			diag("reports ended with %u missing", count);
			return false;
		}
		for (ssize_t i = 0; i < n; i++)
			*goods += buf[i] == good;
		count -= n;
	}
	return true;
}

int test_many(int argc, char **argv)
{
	unsigned rounds = scale(10) < MIN_ROUNDS ? MIN_ROUNDS : scale(10);
	int ready[2], go[PROCS];
	pid_t pids[PROCS];
	unsigned started = 0, alive = 0, round_ok = 0, passed = 0;
	bool reporting;

	(void)argc;
	(void)argv;
	tap_plan(3);
	if (pipe(ready) < 0)
		die_errno("pipe");
	for (unsigned i = 0; i < PROCS; i++) {
		int p[2];

		if (pipe(p) < 0) {
			diag("pipe for process %u: failed", i);
			break;
		}
		pids[i] = fork();
		if (pids[i] < 0) {
			diag("fork %u: failed", i);
			close(p[0]);
			close(p[1]);
			break;
		}
		if (pids[i] == 0) {
			/* Only the parent may hold a go pipe's write end: then EOF means it gave up. */
			for (unsigned j = 0; j < i; j++)
				close(go[j]);
			close(p[1]);
			close(ready[0]);
			_exit(member(i, ready[1], p[0], rounds));
		}
		close(p[0]);
		go[i] = p[1];
		started++;
	}
	close(ready[1]);
	/* Every process has filled its memory and waits on its pipe: all are alive. */
	reporting = collect(ready[0], started, 'r', &alive);
	for (unsigned r = 0; reporting && r < rounds; r++) {
		unsigned verified;

		for (unsigned i = 0; i < started; i++) {
			if (write(go[i], "g", 1) != 1)
				die_errno("go");
		}
		reporting = collect(ready[0], started, 'o', &verified);
		if (verified == started)
			round_ok++;
		else
			diag("round %u: %u of %u processes verified their memory", r, verified,
			     started);
	}
	for (unsigned i = 0; i < started; i++) {
		char who[32];

		if (!reporting)
			kill(pids[i], SIGKILL);
		close(go[i]);
		snprintf(who, sizeof(who), "process %u", i);
		if (wait_exit(pids[i], who) == 0)
			passed++;
	}
	close(ready[0]);
	tap_ok(alive == PROCS, "%u of %d processes alive at once with their own memory", alive,
	       PROCS);
	tap_ok(round_ok == rounds,
	       "%u of %u rounds through all %d address spaces: every process saw its own memory",
	       round_ok, rounds, PROCS);
	tap_ok(passed == PROCS, "%u of %d processes verified their memory at the end", passed,
	       PROCS);
	return tap_status();
}
