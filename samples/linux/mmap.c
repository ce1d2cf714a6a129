// SPDX-License-Identifier: GPL-2.0
/*
 * mmap: address-space changes in a loop, each checked through its effect: data survives
 * mprotect; a write to a read-only page, any access to a PROT_NONE page and an access to an
 * unmapped page raise SIGSEGV with the faulting address and the right si_code; code runs
 * from a PROT_EXEC page and faults (NX) once the page is made non-executable; mremap moves
 * and grows with the data; MAP_FIXED over a mapping gives fresh zeroed pages.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "lt.h"

static sigjmp_buf fault_jump;
static volatile sig_atomic_t fault_armed;
static void *volatile fault_addr;
static volatile int fault_code;

static void on_segv(int sig, siginfo_t *info, void *context)
{
	(void)sig;
	(void)context;
	if (!fault_armed) {
		/* Not an expected fault: die of it. */
		signal(SIGSEGV, SIG_DFL);
		return;
	}
	fault_armed = 0;
	fault_addr = info->si_addr;
	fault_code = info->si_code;
	siglongjmp(fault_jump, 1);
}

enum access { READ, WRITE, EXEC };

static const char *access_name[] = { "read", "write", "execute" };

/*
 * Performs one access of `kind` at addr. Returns true if it faulted with SIGSEGV at
 * exactly addr with si_code `code`; false (with a diagnostic) otherwise, including when
 * `code` is 0 and the access must not fault but did.
 */
static bool access_faults(enum access kind, void *addr, int code)
{
	volatile uint64_t *word = addr;

	if (sigsetjmp(fault_jump, 1) == 0) {
		fault_armed = 1;
		switch (kind) {
		case READ:
			(void)*word;
			break;
		case WRITE:
			*word = 0x77;
			break;
		case EXEC:
			((void (*)(void))addr)();
			break;
		}
		fault_armed = 0;
		if (code)
			diag("%s at %p did not fault (expected si_code %d)", access_name[kind], addr,
			     code);
		return code == 0;
	}
	if (!code) {
		diag("%s at %p faulted (si_code %d, address %p); expected no fault",
		     access_name[kind], addr, fault_code, fault_addr);
		return false;
	}
	if (fault_addr != addr || fault_code != code) {
		diag("%s at %p: SIGSEGV at %p with si_code %d, expected %p with si_code %d",
		     access_name[kind], addr, fault_addr, fault_code, addr, code);
		return false;
	}
	return true;
}

struct results {
	bool protect, none, unmap, nx, remap, fixed;
};

static void one_round(unsigned round, struct results *res)
{
	size_t pages = 1 + round % 16, words = pages * WORDS_PER_PAGE;
	size_t len = pages * PAGE_SIZE;
	uint8_t *mem = xmap(len);
	uint64_t *w = (uint64_t *)mem;
	uint64_t seed = 0x3300 + round;

	fill(w, words, seed);

	/* Read-only: reads work and see the data; a write faults with SEGV_ACCERR. */
	if (mprotect(mem, len, PROT_READ) < 0)
		die_errno("mprotect read-only");
	res->protect &= verify(w, words, seed, "read-only mapping") &&
			access_faults(READ, mem + len - 8, 0) &&
			access_faults(WRITE, mem + (pages - 1) * PAGE_SIZE + 64, SEGV_ACCERR);

	/* PROT_NONE: reads and writes fault; back to read-write, the data is still there. */
	if (mprotect(mem, len, PROT_NONE) < 0)
		die_errno("mprotect none");
	res->none &= access_faults(READ, mem, SEGV_ACCERR) &&
		     access_faults(WRITE, mem + len - PAGE_SIZE, SEGV_ACCERR);
	if (mprotect(mem, len, PROT_READ | PROT_WRITE) < 0)
		die_errno("mprotect read-write");
	res->none &= verify(w, words, seed, "mapping after PROT_NONE") &&
		     access_faults(WRITE, mem, 0);
	w[0] = pattern(seed, 0);

	/* Unmapping one page: it faults with SEGV_MAPERR, the others keep their data. */
	if (pages >= 3) {
		size_t hole = pages / 2;

		if (munmap(mem + hole * PAGE_SIZE, PAGE_SIZE) < 0)
			die_errno("munmap one page");
		res->unmap &= access_faults(READ, mem + hole * PAGE_SIZE + 8, SEGV_MAPERR) &&
			      verify(w, hole * WORDS_PER_PAGE, seed, "pages before the hole");
		/* Word i holds pattern(seed, i): verify() counts from its start, so by hand. */
		for (size_t i = (hole + 1) * WORDS_PER_PAGE; i < words; i++)
			if (w[i] != pattern(seed, i)) {
				diag("word %zu after the hole changed", i);
				res->unmap = false;
				break;
			}
		/* MAP_FIXED fills the hole with a zeroed page. */
		void *again = mmap(mem + hole * PAGE_SIZE, PAGE_SIZE, PROT_READ | PROT_WRITE,
				   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
		if (again == MAP_FAILED)
			die_errno("mmap into the hole");
		for (size_t i = 0; i < WORDS_PER_PAGE; i++)
			if (w[hole * WORDS_PER_PAGE + i]) {
				diag("a new page in the hole is not zero at word %zu", i);
				res->fixed = false;
				break;
			}
		fill(w + hole * WORDS_PER_PAGE, WORDS_PER_PAGE, seed + 1);
	}

	/* MAP_FIXED over the first page replaces its data with zeros. */
	if (mmap(mem, PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
		 -1, 0) == MAP_FAILED)
		die_errno("mmap fixed");
	for (size_t i = 0; i < WORDS_PER_PAGE; i++)
		if (w[i]) {
			diag("MAP_FIXED page not zero at word %zu", i);
			res->fixed = false;
			break;
		}

	/* mremap: grow in place or move; the first pages keep their contents. */
	fill(w, words, seed + 2);
	uint8_t *moved = mremap(mem, len, 2 * len, MREMAP_MAYMOVE);

	if (moved == MAP_FAILED)
		die_errno("mremap");
	res->remap &= verify((uint64_t *)moved, words, seed + 2, "mremap'd mapping");
	/* The grown part is new zeroed memory. */
	for (size_t i = words; i < 2 * words; i++)
		if (((uint64_t *)moved)[i]) {
			diag("grown part of a mremap'd mapping not zero at word %zu", i);
			res->remap = false;
			break;
		}
	if (moved != mem)
		res->remap &= access_faults(READ, mem, SEGV_MAPERR);
	if (munmap(moved, 2 * len) < 0)
		die_errno("munmap");
	if (moved == mem)
		res->remap &= access_faults(READ, mem, SEGV_MAPERR);
}

/* x86-64 code: mov $imm32, %eax; ret. */
static void put_code(uint8_t *page, uint32_t value)
{
	page[0] = 0xb8;
	memcpy(page + 1, &value, 4);
	page[5] = 0xc3;
}

static bool nx_round(unsigned round)
{
	uint8_t *page = xmap(PAGE_SIZE);
	bool ok;

	put_code(page, 0xc0de0000 + round);
	if (mprotect(page, PAGE_SIZE, PROT_READ | PROT_EXEC) < 0)
		die_errno("mprotect exec");
	ok = ((uint32_t (*)(void))page)() == 0xc0de0000 + round;
	if (!ok)
		diag("code in an executable page returned the wrong value");
	ok &= access_faults(WRITE, page, SEGV_ACCERR);
	if (mprotect(page, PAGE_SIZE, PROT_READ | PROT_WRITE) < 0)
		die_errno("mprotect no-exec");
	/* Executing a present, readable, no-execute page: an instruction fetch fault. */
	ok &= access_faults(EXEC, page, SEGV_ACCERR);
	/* And again executable, with new code: the new code runs, not a stale copy. */
	put_code(page, 0x5eed0000 + round);
	if (mprotect(page, PAGE_SIZE, PROT_READ | PROT_EXEC) < 0)
		die_errno("mprotect exec again");
	if (((uint32_t (*)(void))page)() != 0x5eed0000 + round) {
		diag("rewritten code returned the old value");
		ok = false;
	}
	munmap(page, PAGE_SIZE);
	return ok;
}

int test_mmap(int argc, char **argv)
{
	unsigned rounds = scale(100);
	struct results res = { true, true, true, true, true, true };
	struct sigaction sa = { .sa_sigaction = on_segv, .sa_flags = SA_SIGINFO | SA_NODEFER };
	stack_t ss = { .ss_sp = xmap(64 * 1024), .ss_size = 64 * 1024 };

	(void)argc;
	(void)argv;
	if (sigaltstack(&ss, NULL) < 0)
		die_errno("sigaltstack");
	sa.sa_flags |= SA_ONSTACK;
	if (sigaction(SIGSEGV, &sa, NULL) < 0)
		die_errno("sigaction");
	tap_plan(6);
	for (unsigned r = 0; r < rounds; r++) {
		one_round(r, &res);
		res.nx &= nx_round(r);
	}
	tap_ok(res.protect, "%u rounds: read-only pages read their data and fault on write", rounds);
	tap_ok(res.none, "PROT_NONE pages fault on read and write and keep their data");
	tap_ok(res.unmap, "an unmapped page faults with SEGV_MAPERR; its neighbours keep their data");
	tap_ok(res.nx, "code runs from PROT_EXEC pages and faults on a no-execute page (NX)");
	tap_ok(res.remap, "mremap keeps the data, zeroes the growth and unmaps the old place");
	tap_ok(res.fixed, "MAP_FIXED over a mapping and into a hole gives zeroed pages");
	return tap_status();
}
