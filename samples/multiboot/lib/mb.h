/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Runtime of the Multiboot test kernels: 32-bit protected mode, paging off (a kernel may
 * turn it on), flat segments, an IDT with an entry stub for each of the 256 vectors.
 * Built with MODE_LM, the entry code switches to long mode first (identity map of the
 * low 4 GiB in 2 MiB pages) and everything else is 64-bit code.  Written for a PC as
 * QEMU's `pc` machine presents it; see Documentation/platform.md.
 */
#ifndef MB_H
#define MB_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#define __noreturn	__attribute__((noreturn))
#define __printf(a, b)	__attribute__((format(printf, a, b)))
#define ARRAY_SIZE(a)	(sizeof(a) / sizeof((a)[0]))

/* ---- port and memory I/O ---- */
static inline void outb(uint16_t port, uint8_t v) { __asm__ volatile("outb %0, %1" :: "a"(v), "Nd"(port)); }
static inline void outw(uint16_t port, uint16_t v) { __asm__ volatile("outw %0, %1" :: "a"(v), "Nd"(port)); }
static inline void outl(uint16_t port, uint32_t v) { __asm__ volatile("outl %0, %1" :: "a"(v), "Nd"(port)); }
static inline uint8_t inb(uint16_t port) { uint8_t v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline uint32_t mmio_read32(uintptr_t a) { return *(volatile uint32_t *)a; }
static inline void mmio_write32(uintptr_t a, uint32_t v) { *(volatile uint32_t *)a = v; }

static inline void cli(void) { __asm__ volatile("cli" ::: "memory"); }
static inline void sti(void) { __asm__ volatile("sti" ::: "memory"); }
static inline void barrier(void) { __asm__ volatile("" ::: "memory"); }

static inline uint64_t rdmsr(uint32_t msr)
{
	uint32_t lo, hi;
	__asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
	return ((uint64_t)hi << 32) | lo;
}

static inline void wrmsr(uint32_t msr, uint64_t v)
{
	__asm__ volatile("wrmsr" :: "c"(msr), "a"((uint32_t)v), "d"((uint32_t)(v >> 32)) : "memory");
}

static inline uint64_t rdtsc(void)
{
	uint32_t lo, hi;
	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi) :: "memory");
	return ((uint64_t)hi << 32) | lo;
}

static inline void cpuid(uint32_t leaf, uint32_t sub, uint32_t r[4])
{
	__asm__ volatile("cpuid" : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3]) : "a"(leaf), "c"(sub));
}

/* ---- Multiboot v1 information (what the loader passes in EBX) ---- */
#define MB_LOADER_MAGIC		0x2badb002
#define MBI_MEM			(1u << 0)
#define MBI_BOOT_DEVICE		(1u << 1)
#define MBI_CMDLINE		(1u << 2)
#define MBI_MODS		(1u << 3)
#define MBI_MMAP		(1u << 6)
#define MBI_LOADER_NAME		(1u << 9)

struct mb_info {
	uint32_t flags;
	uint32_t mem_lower, mem_upper;	/* KiB below 1 MiB, KiB from 1 MiB to the first hole */
	uint32_t boot_device;
	uint32_t cmdline;
	uint32_t mods_count, mods_addr;
	uint32_t syms[4];
	uint32_t mmap_length, mmap_addr;
	uint32_t drives_length, drives_addr;
	uint32_t config_table;
	uint32_t boot_loader_name;
};

struct mb_module {
	uint32_t mod_start, mod_end;
	uint32_t string;
	uint32_t reserved;
};

/* One memory map entry; `size` does not count itself. */
struct mb_mmap_entry {
	uint32_t size;
	uint64_t addr, len;
	uint32_t type;			/* 1: usable RAM */
} __attribute__((packed));

/* Saved by the entry code (boot.S) before anything else runs. */
extern uint32_t mb_magic, mb_info_addr;
/* Nonzero when .bss was not all zero on entry (the loader must zero it). */
extern uint32_t bss_dirty_on_entry;
extern char __image_start[], __bss_start[], __bss_end[], _start[];

/* ---- serial (COM1) ---- */
#define COM1			0x3f8
#define UART_RBR		0	/* receive buffer (read, DLAB=0) */
#define UART_THR		0	/* transmit holding (write, DLAB=0) */
#define UART_IER		1
#define UART_IIR		2
#define UART_FCR		2
#define UART_LCR		3
#define UART_MCR		4
#define UART_LSR		5
#define UART_LSR_DR		0x01	/* data ready */
#define UART_LSR_THRE		0x20	/* transmit holding register empty */

void serial_init(void);
void putc_serial(char c);
void puts_serial(const char *s);

/* ---- formatted output and TAP ---- */
/* printf-lite: %s %c %d %u %x %p with l/ll and 0-padding width; %% */
int vsnprintf_lite(char *buf, size_t size, const char *fmt, va_list ap);
int snprintf_lite(char *buf, size_t size, const char *fmt, ...) __printf(3, 4);
void printf(const char *fmt, ...) __printf(1, 2);

/*
 * TAP: tap_plan(n) once, then one tap_ok() or tap_skip() per test; tap_done() checks
 * the count against the plan and exits (code 0 when everything passed, 1 otherwise).
 * Descriptions must not hold anything platform-dependent: that goes on diag() lines.
 */
void tap_plan(unsigned n);
int tap_ok(int pass, const char *fmt, ...) __printf(2, 3);
void tap_skip(const char *desc, const char *why);
void diag(const char *fmt, ...) __printf(1, 2);
__noreturn void tap_done(void);
__noreturn void bail_out(const char *fmt, ...) __printf(1, 2);

/* ---- exit ---- */
#define PORT_DEBUG_EXIT		0xf4	/* isa-debug-exit: QEMU exits with status code * 2 + 1 */
#define EXIT_PASS		0
#define EXIT_FAIL		1
/* Exits through isa-debug-exit; without one, resets the machine (-no-reboot: QEMU exits). */
__noreturn void machine_exit(uint32_t code);
/* Pulses the CPU reset line through the i8042 (and triple-faults if that did nothing). */
__noreturn void machine_reset(void);

/* ---- library ---- */
void *memset(void *d, int c, size_t n);
void *memcpy(void *d, const void *s, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
int strcmp(const char *a, const char *b);
uint32_t crc32(const void *p, size_t n);
uint64_t udiv64(uint64_t n, uint64_t d);	/* no libgcc in a 32-bit freestanding link */

/* ---- interrupts and exceptions ---- */
/* What the entry stubs push (boot.S), lowest address first. */
struct regs {
#ifdef MODE_LM
	uint64_t r15, r14, r13, r12, r11, r10, r9, r8;
	uint64_t di, si, bp, bx, dx, cx, ax;
#else
	uint32_t di, si, bp, sp_unused, bx, dx, cx, ax;	/* pushal */
#endif
	uintptr_t vector, err;	/* err is 0 for vectors without an error code */
	uintptr_t ip, cs, flags;
#ifdef MODE_LM
	uint64_t sp, ss;	/* long mode always pushes them */
#endif
};
/* A handler may change the frame (ip to resume elsewhere); it returns through iret. */
typedef void (*isr_t)(struct regs *r);
void isr_set(unsigned vector, isr_t handler);	/* NULL: unexpected again (bails out) */

#define SEL_CODE32		0x08
#define SEL_DATA		0x10
#define SEL_CODE64		0x18
#ifdef MODE_LM
#define SEL_CODE		SEL_CODE64
#else
#define SEL_CODE		SEL_CODE32
#endif

/* ---- legacy PC devices ---- */
/* 8259 pair remapped to vectors base..base+15, every line masked. */
void pic_init(uint8_t base);
void pic_program(uint8_t base);		/* ICW1-4 only: the IMR is left cleared */
void pic_set_mask(uint16_t mask);		/* bit n: IRQ n masked */
uint16_t pic_get_mask(void);
uint16_t pic_read_irr(void);			/* OCW3 reads, slave in the high byte */
uint16_t pic_read_isr(void);
void pic_eoi(unsigned irq);			/* non-specific EOI (to both for a slave IRQ) */
#define PIC_VECTOR_BASE		0x20

/* PIT channel 2 one-shot (gate through port 0x61), polled: the time reference. */
#define PIT_HZ			1193182u
void pit_oneshot_start(uint16_t count);
int pit_oneshot_done(void);
void pit_wait_us(uint32_t us);	/* up to 54000 us per call; longer waits loop */
void pit_wait_ms(uint32_t ms);

/* TSC ticks per millisecond measured against the PIT (once, cached). */
uint64_t tsc_per_ms(void);

/* ---- local APIC (xAPIC, MMIO) ---- */
#define MSR_APIC_BASE		0x1b
#define APIC_BASE_BSP		(1u << 8)
#define APIC_BASE_ENABLE	(1u << 11)
#define APIC_DEFAULT_BASE	0xfee00000u
#define APIC_ID			0x020
#define APIC_VERSION		0x030
#define APIC_TPR		0x080
#define APIC_PPR		0x0a0
#define APIC_EOI		0x0b0
#define APIC_SVR		0x0f0
#define APIC_SVR_ENABLE		(1u << 8)
#define APIC_ISR		0x100
#define APIC_TMR		0x180
#define APIC_IRR		0x200
#define APIC_ESR		0x280
#define APIC_ICR_LO		0x300
#define APIC_ICR_HI		0x310
#define APIC_ICR_PENDING	(1u << 12)
#define APIC_ICR_ASSERT		(1u << 14)
#define APIC_ICR_SELF		(1u << 18)
#define APIC_LVT_TIMER		0x320
#define APIC_LVT_LINT0		0x350
#define APIC_LVT_LINT1		0x360
#define APIC_LVT_ERROR		0x370
#define APIC_LVT_MASKED		(1u << 16)
#define APIC_TIMER_ONESHOT	(0u << 17)
#define APIC_TIMER_PERIODIC	(1u << 17)
#define APIC_TIMER_TSC_DEADLINE	(2u << 17)
#define APIC_TIMER_INIT		0x380
#define APIC_TIMER_CUR		0x390
#define APIC_TIMER_DIV		0x3e0
#define MSR_TSC_DEADLINE	0x6e0

static inline uint32_t apic_read(uint32_t reg) { return mmio_read32(APIC_DEFAULT_BASE + reg); }
static inline void apic_write(uint32_t reg, uint32_t v) { mmio_write32(APIC_DEFAULT_BASE + reg, v); }
static inline void apic_eoi(void) { apic_write(APIC_EOI, 0); }
/* Bit `vector` of the 256-bit ISR/TMR/IRR register at `reg`. */
static inline int apic_vector_bit(uint32_t reg, unsigned vector)
{
	return (apic_read(reg + 0x10 * (vector / 32)) >> (vector % 32)) & 1;
}
/* Enables the APIC at its default base (MSR and SVR, spurious vector 0xff), TPR 0. */
void apic_enable(void);
/*
 * Virtual wire mode: the APIC enabled, LINT0 ExtINT (the 8259's INTR), LINT1 NMI.  A BIOS
 * leaves it so; a kernel that wants 8259 interrupts sets it rather than rely on that.
 */
void apic_virtual_wire(void);

/* Entry point of each kernel (called with interrupts off, serial ready). */
void kmain(void);

#endif
