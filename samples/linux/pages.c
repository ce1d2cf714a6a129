// SPDX-License-Identifier: GPL-2.0
/*
 * pages: PROCS processes each map PAGES pages at the same virtual address (SHARED_VA),
 * fill them with their own pattern and pass a token around a ring of pipes for ROUNDS
 * rounds. On each turn a process verifies every word of its region, then writes a new
 * generation word into every page (so every page is dirtied again between switches).
 * Every turn is a switch to another address space with the same virtual addresses.
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "lt.h"

#define PROCS 8
#define PAGES 128

/* Word 0 of each page is the generation; the rest keep the process's pattern. */
static bool check_region(volatile uint64_t *mem, uint64_t seed, uint64_t generation)
{
	for (size_t p = 0; p < PAGES; p++) {
		volatile uint64_t *page = mem + p * WORDS_PER_PAGE;

		if (page[0] != pattern(seed ^ generation, p)) {
			diag("pid %d: page %zu at %p: generation word %#llx, expected %#llx (generation %llu)",
			     (int)getpid(), p, (void *)page, (unsigned long long)page[0],
			     (unsigned long long)pattern(seed ^ generation, p),
			     (unsigned long long)generation);
			return false;
		}
		for (size_t w = 1; w < WORDS_PER_PAGE; w++) {
			if (page[w] != pattern(seed, p * WORDS_PER_PAGE + w)) {
				diag("pid %d: page %zu word %zu at %p is %#llx, expected %#llx",
				     (int)getpid(), p, w, (void *)&page[w],
				     (unsigned long long)page[w],
				     (unsigned long long)pattern(seed, p * WORDS_PER_PAGE + w));
				return false;
			}
		}
	}
	return true;
}

static void set_generation(volatile uint64_t *mem, uint64_t seed, uint64_t generation)
{
	for (size_t p = 0; p < PAGES; p++)
		mem[p * WORDS_PER_PAGE] = pattern(seed ^ generation, p);
}

/* Process `index` of the ring: reads the token from `in`, passes it to `out`. */
static int ring_member(unsigned index, int in, int out, unsigned rounds)
{
	uint64_t seed = 0x5eed0000 + index;
	volatile uint64_t *mem = mmap(SHARED_VA, PAGES * PAGE_SIZE, PROT_READ | PROT_WRITE,
				      MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);

	if (mem == MAP_FAILED)
		die_errno("mmap at the shared address");
	if ((void *)mem != SHARED_VA) {
		diag("mmap gave %p, not %p", (void *)mem, SHARED_VA);
		return 2;
	}
	fill(mem, PAGES * WORDS_PER_PAGE, seed);
	set_generation(mem, seed, 0);
	for (unsigned r = 0; r < rounds; r++) {
		uint32_t token;

		if (read(in, &token, sizeof(token)) != sizeof(token))
			die_errno("ring read");
		if (token != r * PROCS + index) {
			diag("process %u got token %u in round %u, expected %u", index, token, r,
			     r * PROCS + index);
			return 1;
		}
		if (!check_region(mem, seed, r))
			return 1;
		set_generation(mem, seed, r + 1);
		token++;
		/* The last member's token starts the next round at member 0 (after the last
		 * round member 0 is gone: no one to pass to). */
		if (r + 1 == rounds && index == PROCS - 1)
			break;
		if (write(out, &token, sizeof(token)) != sizeof(token))
			die_errno("ring write");
	}
	return check_region(mem, seed, rounds) ? 0 : 1;
}

int test_pages(int argc, char **argv)
{
	unsigned rounds = scale(40);
	int ring[PROCS][2];
	pid_t pids[PROCS];
	bool ok = true;

	(void)argc;
	(void)argv;
	tap_plan(1);
	for (unsigned i = 0; i < PROCS; i++)
		if (pipe(ring[i]) < 0)
			die_errno("pipe");
	for (unsigned i = 0; i < PROCS; i++) {
		pids[i] = xfork();
		if (pids[i] == 0) {
			/* Member i reads pipe i and writes pipe i+1 (the last writes pipe 0). */
			int in = ring[i][0], out = ring[(i + 1) % PROCS][1];

			for (unsigned j = 0; j < PROCS; j++) {
				if (ring[j][0] != in)
					close(ring[j][0]);
				if (ring[j][1] != out)
					close(ring[j][1]);
			}
			_exit(ring_member(i, in, out, rounds));
		}
	}
	/* Start the token; keep pipe 0's write end only until then. */
	uint32_t token = 0;

	if (write(ring[0][1], &token, sizeof(token)) != sizeof(token))
		die_errno("ring start");
	for (unsigned i = 0; i < PROCS; i++) {
		close(ring[i][0]);
		close(ring[i][1]);
	}
	for (unsigned i = 0; i < PROCS; i++) {
		char who[32];

		snprintf(who, sizeof(who), "ring member %u", i);
		if (wait_exit(pids[i], who) != 0)
			ok = false;
	}
	tap_ok(ok, "%d processes x %d pages at %p keep their own data over %u rounds of switches",
	       PROCS, PAGES, SHARED_VA, rounds);
	return tap_status();
}
