// SPDX-License-Identifier: GPL-2.0
/*
 * cow: copy-on-write. The parent fills a REGION (several 2 MiB-aligned huge-page-sized
 * stretches, so with THP on some of it is huge pages), forks CHILDREN children and then
 * rewrites stripe 0 while they run. Child k checks it sees the parent's data as of the
 * fork, rewrites stripe k, forks a grandchild that sees that and rewrites stripe k+1, and
 * checks that neither the parent's nor the grandchild's writes reach it. Also: a zero-page
 * region (never written before the fork) and a shared anonymous mapping (the opposite
 * semantics: writes are seen by everyone).
 */
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

#include "lt.h"

#define CHILDREN 4
#define REGION (8UL << 20)
#define WORDS (REGION / sizeof(uint64_t))
#define STRIPE_WORDS (WORDS / CHILDREN)

#define SEED_PARENT 0xa000
#define SEED_PARENT_AFTER 0xa001
#define SEED_CHILD(k) (0xc000 + (k))
#define SEED_GRANDCHILD(k) (0x9000 + (k))

static uint64_t *stripe(uint64_t *mem, unsigned k)
{
	return mem + (size_t)(k % CHILDREN) * STRIPE_WORDS;
}

/* Stripe j must hold seed_of[j] (each stripe's words are numbered from 0). */
static bool verify_view(uint64_t *mem, const uint64_t seed_of[CHILDREN], const char *who)
{
	for (unsigned j = 0; j < CHILDREN; j++) {
		char what[64];

		snprintf(what, sizeof(what), "%s, stripe %u", who, j);
		if (!verify(stripe(mem, j), STRIPE_WORDS, seed_of[j], what))
			return false;
	}
	return true;
}

static int grandchild(uint64_t *mem, unsigned k)
{
	uint64_t view[CHILDREN];

	for (unsigned j = 0; j < CHILDREN; j++)
		view[j] = j == k ? SEED_CHILD(k) : SEED_PARENT;
	if (!verify_view(mem, view, "grandchild at fork"))
		return 1;
	fill(stripe(mem, k + 1), STRIPE_WORDS, SEED_GRANDCHILD(k));
	view[(k + 1) % CHILDREN] = SEED_GRANDCHILD(k);
	return verify_view(mem, view, "grandchild after its write") ? 0 : 1;
}

static int child(uint64_t *mem, unsigned k)
{
	uint64_t view[CHILDREN];

	for (unsigned j = 0; j < CHILDREN; j++)
		view[j] = SEED_PARENT;
	/* The parent is rewriting stripe 0 meanwhile: it must not show here. */
	if (!verify_view(mem, view, "child at fork"))
		return 1;
	fill(stripe(mem, k), STRIPE_WORDS, SEED_CHILD(k));
	view[k] = SEED_CHILD(k);
	if (!verify_view(mem, view, "child after its write"))
		return 1;
	pid_t pid = xfork();

	if (pid == 0)
		_exit(grandchild(mem, k));
	/* Write again while the grandchild runs: a page the child wrote before the fork is
	 * shared copy-on-write again and needs a second copy. */
	fill(stripe(mem, k), STRIPE_WORDS / 2, SEED_CHILD(k));
	if (wait_exit(pid, "grandchild") != 0)
		return 1;
	return verify_view(mem, view, "child after its grandchild wrote") ? 0 : 3;
}

static bool zero_page_cow(void)
{
	enum { LEN = 64 * PAGE_SIZE };
	volatile uint64_t *mem = xmap(LEN);
	uint64_t sum = 0;

	/* Read faults map the shared zero page; nothing is written before the fork. */
	for (size_t i = 0; i < LEN / sizeof(uint64_t); i += WORDS_PER_PAGE)
		sum |= mem[i];
	pid_t pid = xfork();

	if (pid == 0) {
		fill(mem, LEN / sizeof(uint64_t), 0x2e80);
		_exit(verify(mem, LEN / sizeof(uint64_t), 0x2e80, "child of the zero page") ? 0 : 1);
	}
	bool child_ok = wait_exit(pid, "zero-page child") == 0;

	for (size_t i = 0; i < LEN / sizeof(uint64_t); i++)
		sum |= mem[i];
	if (sum)
		diag("the parent's never-written pages are not zero after its child wrote");
	munmap((void *)mem, LEN);
	return child_ok && !sum;
}

static bool shared_anonymous(void)
{
	enum { LEN = 16 * PAGE_SIZE, WORDS_SHARED = LEN / sizeof(uint64_t) };
	uint64_t *mem = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	bool ok;

	if (mem == MAP_FAILED)
		die_errno("mmap shared");
	fill(mem, WORDS_SHARED, 0x5a);
	pid_t pid = xfork();

	if (pid == 0) {
		if (!verify(mem, WORDS_SHARED, 0x5a, "child of a shared mapping"))
			_exit(1);
		fill(mem, WORDS_SHARED, 0x5b);
		_exit(0);
	}
	ok = wait_exit(pid, "shared-mapping child") == 0;
	ok = ok && verify(mem, WORDS_SHARED, 0x5b, "parent reading its child's shared writes");
	munmap(mem, LEN);
	return ok;
}

int test_cow(int argc, char **argv)
{
	unsigned rounds = scale(2);
	bool children_ok = true, parent_ok = true;

	(void)argc;
	(void)argv;
	tap_plan(4);
	for (unsigned r = 0; r < rounds; r++) {
		/* 2 MiB-aligned so the kernel can back the region with huge pages. */
		uint8_t *raw = xmap(REGION + HUGE_SIZE);
		uint64_t *mem = (uint64_t *)(((uintptr_t)raw + HUGE_SIZE - 1) & ~(HUGE_SIZE - 1));
		pid_t pids[CHILDREN];
		uint64_t view[CHILDREN];

		for (unsigned j = 0; j < CHILDREN; j++)
			fill(stripe(mem, j), STRIPE_WORDS, SEED_PARENT);
		for (unsigned k = 0; k < CHILDREN; k++) {
			pids[k] = xfork();
			if (pids[k] == 0)
				_exit(child(mem, k));
		}
		fill(stripe(mem, 0), STRIPE_WORDS, SEED_PARENT_AFTER);
		for (unsigned k = 0; k < CHILDREN; k++) {
			char who[32];
			int code;

			snprintf(who, sizeof(who), "child %u", k);
			code = wait_exit(pids[k], who);
			if (code != 0) {
				diag("round %u: child %u failed (%d; 3: its view changed after its grandchild ran)",
				     r, k, code);
				children_ok = false;
			}
		}
		for (unsigned j = 0; j < CHILDREN; j++)
			view[j] = j == 0 ? SEED_PARENT_AFTER : SEED_PARENT;
		if (!verify_view(mem, view, "parent after its children"))
			parent_ok = false;
		munmap(raw, REGION + HUGE_SIZE);
	}
	tap_ok(children_ok,
	       "%u rounds: %d children and their children each see the data as of their fork plus their own writes",
	       rounds, CHILDREN);
	tap_ok(parent_ok, "the parent sees its own writes and none of its descendants'");
	tap_ok(zero_page_cow(), "writes to zero-page mappings after a fork stay in the writer");
	tap_ok(shared_anonymous(), "a shared anonymous mapping is shared across fork");
	return tap_status();
}
