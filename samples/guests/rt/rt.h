/* SPDX-License-Identifier: GPL-2.0 */
/* Guest runtime: the API shared by all test and benchmark guests, in every paging mode. */
#ifndef GUEST_RT_H
#define GUEST_RT_H

#include "mode.h"
#include <stdarg.h>

#define __noreturn	__attribute__((noreturn))
#define __printf(a, b)	__attribute__((format(printf, a, b)))
#define ARRAY_SIZE(a)	(sizeof(a) / sizeof((a)[0]))

/* ---- exit codes written to port 0xf4 (see Documentation/guest-boot-protocol.md) ---- */
#define EXIT_PASS		0x00
/* 0x01..0x3f: number of failed tests (capped at 0x3f) */
#define EXIT_EXCEPTION		0x40	/* + vector: unexpected exception */
#define EXIT_PANIC		0x7f	/* runtime error (out of frames, bad layout...) */

#define PORT_SERIAL		0x3f8
#define PORT_EXIT		0xf4

/* ---- CPU helpers ---- */
static inline void outb(uint16_t port, uint8_t v) { __asm__ volatile("outb %0, %1" :: "a"(v), "Nd"(port)); }
static inline void outl(uint16_t port, uint32_t v) { __asm__ volatile("outl %0, %1" :: "a"(v), "Nd"(port)); }
static inline uint8_t inb(uint16_t port) { uint8_t v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port)); return v; }

/* read_crN/write_crN and read_drN/write_drN: control and debug registers. */
#define DEFINE_REG(kind, n)							\
static inline uintptr_t read_##kind##n(void)					\
{ uintptr_t v; __asm__ volatile("mov %%" #kind #n ", %0" : "=r"(v)); return v; }	\
static inline void write_##kind##n(uintptr_t v)				\
{ __asm__ volatile("mov %0, %%" #kind #n :: "r"(v) : "memory"); }
DEFINE_REG(cr, 0)
DEFINE_REG(cr, 2)
DEFINE_REG(cr, 3)
DEFINE_REG(cr, 4)
DEFINE_REG(dr, 0)
DEFINE_REG(dr, 6)
DEFINE_REG(dr, 7)
#undef DEFINE_REG

#define CR0_PE		(1UL << 0)
#define CR0_WP		(1UL << 16)
#define CR0_PG		(1UL << 31)
#define CR4_PSE		(1UL << 4)
#define CR4_PAE		(1UL << 5)
#define MSR_EFER	0xc0000080
#define EFER_LME	(1ULL << 8)
#define EFER_LMA	(1ULL << 10)
#define EFER_NXE	(1ULL << 11)

static inline void invlpg(uintptr_t va) { __asm__ volatile("invlpg (%0)" :: "r"(va) : "memory"); }

static inline uint64_t rdmsr(uint32_t msr)
{
	uint32_t lo, hi;
	__asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
	return ((uint64_t)hi << 32) | lo;
}

static inline void wrmsr(uint32_t msr, uint64_t v)
{
	__asm__ volatile("wrmsr" :: "c"(msr), "a"((uint32_t)v), "d"((uint32_t)(v >> 32)));
}

static inline uint64_t rdtsc(void)
{
	uint32_t lo, hi;
	/* lfence keeps the measured work from leaking across the read */
	__asm__ volatile("lfence; rdtsc" : "=a"(lo), "=d"(hi) :: "memory");
	return ((uint64_t)hi << 32) | lo;
}

static inline void cpuid(uint32_t leaf, uint32_t sub, uint32_t r[4])
{
	__asm__ volatile("cpuid" : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3]) : "a"(leaf), "c"(sub));
}

static inline void barrier(void) { __asm__ volatile("" ::: "memory"); }

/* Volatile accessors for test memory: every access really happens, in program order. */
static inline uint32_t rd32(uintptr_t va) { return *(volatile uint32_t *)va; }
static inline void wr32(uintptr_t va, uint32_t v) { *(volatile uint32_t *)va = v; }

/* CPU features found at start-up. */
struct cpu_features {
	int nx;		/* CPUID 0x80000001 EDX[20]; EFER.NXE set when present (PAE, LM) */
	int page1g;	/* CPUID 0x80000001 EDX[26] */
};
extern struct cpu_features cpu;

/*
 * From the Multiboot information the loader passed (0 or "" when there is none or it
 * lacks the field): the guest's RAM from 0 to the end of the memory contiguous from 1 MiB
 * (mem_upper), and the kernel command line (what follows the image name).
 */
uint64_t multiboot_mem_bytes(void);
const char *multiboot_cmdline(void);

/* ---- library ---- */
void *memset(void *d, int c, size_t n);
void *memcpy(void *d, const void *s, size_t n);
int memcmp(const void *a, const void *b, size_t n);

/* ---- serial output ---- */
void putc_serial(char c);
void puts_serial(const char *s);
/* printf-lite: %s %c %d %u %x %p with l/ll and 0-padding width; %% */
int vsnprintf_lite(char *buf, size_t size, const char *fmt, va_list ap);
void printf(const char *fmt, ...) __printf(1, 2);

__noreturn void guest_exit(uint32_t code);
__noreturn void panic(const char *fmt, ...) __printf(1, 2);

/* ---- exceptions ---- */
/* Register frame built by the exception entry stubs (boot.S); field order matches. */
struct frame {
#ifdef MODE_LM
	uint64_t r15, r14, r13, r12, r11, r10, r9, r8;
	uint64_t di, si, bp, bx, dx, cx, ax;
#else
	uint32_t di, si, bp, sp_unused, bx, dx, cx, ax;	/* pushal order */
#endif
	uintptr_t vector, err;
	uintptr_t ip, cs, flags;
	uintptr_t sp, ss;	/* only valid for a fault from ring 3 (or always in long mode) */
};

/* A #PF hook returns nonzero when it fixed the fault and the instruction is to be retried. */
typedef int (*pf_hook_t)(struct frame *f, uintptr_t cr2, uintptr_t err);
extern pf_hook_t pf_hook;

/*
 * Any other exception (not #PF, not the ring-3 return through int $0x80): a hook that
 * returns nonzero handled it, and the (possibly changed) frame is returned to.
 */
typedef int (*exc_hook_t)(struct frame *f);
extern exc_hook_t exc_hook;

/* IDT entries: a present interrupt gate to handler through selector sel. */
void idt_set_gate(int vec, uintptr_t handler, uint16_t sel, int dpl, int ist);
void idt_restore_gate(int vec);		/* back to the runtime's own entry */
uintptr_t idt_gate_addr(int vec);
#ifdef MODE_LM
void tss_set_ist(int n, uintptr_t top);	/* interrupt stack table entry n (1..7) */
#endif

/* Every #PF (handled or not) is recorded here before anything else looks at it. */
struct pf_record {
	uintptr_t cr2, err, ip;
	unsigned count;		/* #PFs since the last pf_reset() */
};
extern volatile struct pf_record last_pf;
void pf_reset(void);

/*
 * Probes: one access that may fault.  They return 0 on success and 1 when the access
 * raised a #PF that no hook fixed (last_pf then says which); the fault is not fatal.
 * probe_exec calls va (which must hold a `ret`).
 */
int probe_read(uintptr_t va, uint32_t *val);
int probe_write(uintptr_t va, uint32_t val);
int probe_exec(uintptr_t va);

/*
 * Ring 3.  user_call() enters the ring-3 code page mapped at `entry` (the .usertext
 * section, see user_blob in boot.S) with the stack at `stack`, performs one access
 * (op USER_READ/USER_WRITE on addr, value val) and comes back.  Returns the value read
 * (or 0); *faulted says whether the access raised a #PF that no hook fixed.
 */
#define USER_READ	0
#define USER_WRITE	1
uint32_t user_call(uintptr_t entry, uintptr_t stack, uintptr_t addr, uintptr_t op,
		   uint32_t val, int *faulted);
extern char __user_start[], __user_end[];

/* ---- memory management (mm.c) ---- */
extern uintptr_t kernel_cr3;		/* identity map of the low 32 MiB, supervisor, large pages */

uintptr_t frame_alloc(void);		/* zeroed 4 KiB frame; panics when the pool is empty */
uintptr_t frames_mark(void);		/* allocator position ... */
void frames_release(uintptr_t mark);	/* ... to go back to (frees everything since) */
unsigned frames_free(void);

uintptr_t aspace_new(void);		/* new root with the kernel identity map; returns CR3 */
/* Entry for va at `level` (1 = PT ... PT_LEVELS), creating missing tables when alloc. */
volatile pte_t *pt_entry(uintptr_t cr3, uintptr_t va, int level, int alloc);
void map_page(uintptr_t cr3, uintptr_t va, uintptr_t pa, pte_t flags);	/* 4 KiB leaf */
void map_large(uintptr_t cr3, uintptr_t va, uintptr_t pa, pte_t flags);	/* PD-level leaf */
volatile pte_t *pte_of(uintptr_t cr3, uintptr_t va);	/* 4 KiB leaf entry or NULL */
uintptr_t pte_addr(pte_t e);

/* Recursive (self) mapping: installs it in cr3 and returns the window VA of va's PTE. */
void selfmap_install(uintptr_t cr3);
uintptr_t selfmap_pte_va(uintptr_t va);

/* Demand paging: faults in [start, end) get a fresh zeroed frame mapped P|W. */
struct demand_region {
	uintptr_t start, end;
	unsigned faults;
	/*
	 * 0: each fault maps a fresh zeroed frame, writable.  1: the fault at va maps the
	 * guest-physical frame va - start read-only (a window onto all guest memory, which
	 * may alias the guest's own frames, hence read-only; no frame is allocated).
	 */
	int window;
};
void demand_install(struct demand_region *r);	/* sets pf_hook */

/* Copy-on-write fork of [va, va + n pages) from parent into child (frames shared). */
void cow_fork(uintptr_t parent, uintptr_t child, uintptr_t va, unsigned npages);
struct cow_stats {
	unsigned faults, copies, reuses;
};
extern struct cow_stats cow_stats;
void cow_install(void);				/* sets pf_hook */

/* ---- TAP (tap.c) ---- */
struct test {
	const char *name;
	void (*fn)(void);
};
void tap_run(const struct test *tests, unsigned n);	/* runs all, then exits */
/* Inside a test: */
void check_fail(const char *fmt, ...) __printf(1, 2);
#define CHECK_EQ(what, expected, seen) do {					\
	uint64_t e_ = (uint64_t)(expected), s_ = (uint64_t)(seen);		\
	if (e_ != s_)								\
		check_fail("%s: expected 0x%llx, seen 0x%llx", what,		\
			   (unsigned long long)e_, (unsigned long long)s_);	\
} while (0)
#define CHECK(what, cond) do {							\
	if (!(cond))								\
		check_fail("%s: expected true (%s), seen false", what, #cond);	\
} while (0)
void test_skip(const char *why);

/* Entry point of each guest program, called with paging on in kernel_cr3. */
void guest_main(void);

#endif
