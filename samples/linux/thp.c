// SPDX-License-Identifier: GPL-2.0
/*
 * thp: a region backed by transparent huge pages (2 MiB-aligned, MADV_HUGEPAGE), checked in
 * /proc/self/smaps (AnonHugePages), then taken through what splits or copies huge pages:
 * fork with writes on both sides (copy-on-write of a huge page), mprotect of one 4 KiB page
 * (a child's write to it faults at that address), MADV_DONTNEED of a huge page and munmap of a
 * 4 KiB page inside one. The data is verified after every step.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "lt.h"

#define HUGE_PAGES 2
#define LEN (HUGE_PAGES * HUGE_SIZE)
#define WORDS (LEN / sizeof(uint64_t))
#define SEED 0x7e9

static const char thp_enabled[] = "/sys/kernel/mm/transparent_hugepage/enabled";

/* The THP mode ("always", "madvise", "never"), or NULL with `why` set. */
static const char *thp_mode(char *buf, size_t len, const char **why)
{
	FILE *f = fopen(thp_enabled, "r");
	char *open, *close;

	if (!f) {
		*why = "no /sys/kernel/mm/transparent_hugepage (kernel without CONFIG_TRANSPARENT_HUGEPAGE)";
		return NULL;
	}
	if (!fgets(buf, (int)len, f)) {
		fclose(f);
		*why = "cannot read /sys/kernel/mm/transparent_hugepage/enabled";
		return NULL;
	}
	fclose(f);
	open = strchr(buf, '[');
	close = open ? strchr(open, ']') : NULL;
	if (!close) {
		*why = "no [mode] in /sys/kernel/mm/transparent_hugepage/enabled";
		return NULL;
	}
	*close = 0;
	return open + 1;
}

/* AnonHugePages of the mapping that contains addr, in KiB; -1 if not found. */
static long anon_huge_kib(const void *addr)
{
	FILE *f = fopen("/proc/self/smaps", "r");
	char line[256];
	bool inside = false;
	long kib = -1;

	if (!f)
		die_errno("/proc/self/smaps");
	while (fgets(line, sizeof(line), f)) {
		unsigned long start, end;
		long value;

		/* A mapping's header line starts "start-end "; field lines "Name: value". */
		if (sscanf(line, "%lx-%lx ", &start, &end) == 2) {
			inside = (uintptr_t)addr >= start && (uintptr_t)addr < end;
		} else if (inside && sscanf(line, "AnonHugePages: %ld kB", &value) == 1) {
			kib = value;
			break;
		}
	}
	fclose(f);
	return kib;
}

static void print_vmstat(void)
{
	FILE *f = fopen("/proc/vmstat", "r");
	char line[128];

	if (!f)
		return;
	while (fgets(line, sizeof(line), f))
		if (strncmp(line, "thp_fault", 9) == 0 || strncmp(line, "thp_split", 9) == 0) {
			line[strcspn(line, "\n")] = 0;
			diag("vmstat %s", line);
		}
	fclose(f);
}

/* Word i of the region holds pattern(SEED, i) except where `changed` says otherwise. */
static bool verify_except(const uint64_t *mem, size_t changed, uint64_t value, const char *who)
{
	for (size_t i = 0; i < WORDS; i++) {
		uint64_t want = i == changed ? value : pattern(SEED, i);

		if (mem[i] != want) {
			diag("%s: word %zu (%p) is %#llx, expected %#llx", who, i, (void *)&mem[i],
			     (unsigned long long)mem[i], (unsigned long long)want);
			return false;
		}
	}
	return true;
}

static bool huge_cow(uint64_t *mem)
{
	size_t child_word = 12345, parent_word = WORDS / 2 + 777;
	int go[2];

	if (pipe(go) < 0)
		die_errno("pipe");
	pid_t pid = xfork();

	if (pid == 0) {
		char c;

		close(go[1]);
		/* Wait until the parent wrote: its write must not show here. */
		if (read(go[0], &c, 1) != 1)
			_exit(2);
		if (!verify_except(mem, SIZE_MAX, 0, "child before its write"))
			_exit(1);
		mem[child_word] = 0xc41d;
		_exit(verify_except(mem, child_word, 0xc41d, "child after its write") ? 0 : 1);
	}
	close(go[0]);
	mem[parent_word] = 0x9a7e;
	if (write(go[1], "g", 1) != 1)
		die_errno("pipe write");
	close(go[1]);
	bool ok = wait_exit(pid, "huge-page COW child") == 0;

	ok &= verify_except(mem, parent_word, 0x9a7e, "parent after its child wrote");
	mem[parent_word] = pattern(SEED, parent_word);
	return ok;
}

/* The child's write fault: exits with FAULT_EXIT if it hit the expected page as expected. */
#define FAULT_EXIT 42
static void *volatile expected_fault;

static void on_segv(int sig, siginfo_t *info, void *context)
{
	(void)sig;
	(void)context;
	_exit(info->si_addr == expected_fault && info->si_code == SEGV_ACCERR ? FAULT_EXIT : 43);
}

static bool split_by_mprotect(uint64_t *mem)
{
	uint8_t *page = (uint8_t *)mem + HUGE_SIZE / 2;

	if (mprotect(page, PAGE_SIZE, PROT_READ) < 0)
		die_errno("mprotect inside a huge page");
	bool ok = verify_except(mem, SIZE_MAX, 0, "after a 4 KiB mprotect");
	pid_t pid = xfork();

	if (pid == 0) {
		struct sigaction sa = { .sa_sigaction = on_segv, .sa_flags = SA_SIGINFO };

		expected_fault = page + 8;
		if (sigaction(SIGSEGV, &sa, NULL) < 0)
			_exit(44);
		*(volatile uint64_t *)(page + 8) = 1;
		_exit(0);
	}
	int code = wait_exit(pid, "child writing a read-only page");

	if (code != FAULT_EXIT) {
		diag("writing the read-only 4 KiB page in a huge page: child exit %d, expected %d (0: no fault, 43: fault at the wrong address or with the wrong si_code)",
		     code, FAULT_EXIT);
		ok = false;
	}
	/* Its neighbours in the same 2 MiB stay writable. */
	mem[(HUGE_SIZE / 2 + PAGE_SIZE) / 8] = pattern(SEED, (HUGE_SIZE / 2 + PAGE_SIZE) / 8);
	mem[(HUGE_SIZE / 2 - PAGE_SIZE) / 8] = pattern(SEED, (HUGE_SIZE / 2 - PAGE_SIZE) / 8);
	if (mprotect(page, PAGE_SIZE, PROT_READ | PROT_WRITE) < 0)
		die_errno("mprotect back");
	return ok && verify_except(mem, SIZE_MAX, 0, "after the mprotect was undone");
}

static bool zap(uint64_t *mem)
{
	const uint64_t *second = mem + HUGE_SIZE / 8;
	bool ok;

	if (madvise((uint8_t *)mem + HUGE_SIZE, HUGE_SIZE, MADV_DONTNEED) < 0)
		die_errno("madvise(MADV_DONTNEED)");
	ok = verify(mem, HUGE_SIZE / 8, SEED, "first huge page after the second was dropped");
	for (size_t i = 0; ok && i < HUGE_SIZE / 8; i++)
		if (second[i]) {
			diag("dropped huge page not zero at word %zu", i);
			ok = false;
		}
	/* A hole in the first huge page: the rest of it keeps its data. */
	if (munmap((uint8_t *)mem + PAGE_SIZE, PAGE_SIZE) < 0)
		die_errno("munmap inside a huge page");
	ok = ok && verify(mem, WORDS_PER_PAGE, SEED, "page before the hole");
	for (size_t i = 2 * WORDS_PER_PAGE; ok && i < HUGE_SIZE / 8; i++)
		if (mem[i] != pattern(SEED, i)) {
			diag("word %zu after the hole in a huge page changed", i);
			ok = false;
		}
	return ok;
}

int test_thp(int argc, char **argv)
{
	char buf[128], skip[300];
	const char *why = NULL, *mode = thp_mode(buf, sizeof(buf), &why);
	const char *names[] = {
		"a 2 MiB-aligned MADV_HUGEPAGE region is backed by huge pages (AnonHugePages)",
		"copy-on-write of huge pages: parent and child each see only their own write",
		"mprotect of one 4 KiB page splits a huge page: it is read-only, the rest is not",
		"MADV_DONTNEED of a huge page gives zeros, munmap of a 4 KiB page leaves the rest",
	};
	unsigned rounds = scale(2);

	(void)argc;
	(void)argv;
	tap_plan(4);
	if (!mode || strcmp(mode, "never") == 0) {
		snprintf(skip, sizeof(skip), "%s", mode ? "transparent huge pages are off ([never])" : why);
		for (unsigned i = 0; i < 4; i++)
			tap_skip(skip, "%s", names[i]);
		return 0;
	}
	diag("transparent_hugepage/enabled: %s", mode);
	bool backed = true, cow = true, split = true, zapped = true;

	for (unsigned r = 0; r < rounds; r++) {
		uint8_t *raw = xmap(LEN + HUGE_SIZE);
		uint64_t *mem = (uint64_t *)(((uintptr_t)raw + HUGE_SIZE - 1) & ~(HUGE_SIZE - 1));
		long kib;

		if (madvise(mem, LEN, MADV_HUGEPAGE) < 0)
			die_errno("madvise(MADV_HUGEPAGE)");
		fill(mem, WORDS, SEED);
		kib = anon_huge_kib(mem);
		if (r == 0)
			diag("AnonHugePages of the region: %ld kB of %lu kB", kib, LEN / 1024);
		if (kib < (long)(HUGE_SIZE / 1024)) {
			diag("round %u: only %ld kB of huge pages", r, kib);
			print_vmstat();
			backed = false;
		}
		backed &= verify(mem, WORDS, SEED, "huge-page region");
		cow &= huge_cow(mem);
		split &= split_by_mprotect(mem);
		zapped &= zap(mem);
		munmap(raw, LEN + HUGE_SIZE);
	}
	tap_ok(backed, "%s", names[0]);
	tap_ok(cow, "%s", names[1]);
	tap_ok(split, "%s", names[2]);
	tap_ok(zapped, "%s", names[3]);
	return tap_status();
}
