// SPDX-License-Identifier: GPL-2.0
/* Guest runtime core: start-up, serial output, printf-lite, descriptor tables, exceptions. */
#include "rt.h"

struct cpu_features cpu;
pf_hook_t pf_hook;
volatile struct pf_record last_pf;

extern uintptr_t isr_table[33];		/* boot.S: vectors 0..31, then 0x80 */
extern uint64_t gdt_tss[2];
extern volatile uintptr_t probe_recover;
extern char __image_end[];
__noreturn void user_return(uintptr_t value);
uint32_t user_enter(uintptr_t entry, uintptr_t stack, uintptr_t addr, uintptr_t op, uint32_t val);
void mm_init(void);

/* ---------------------------------------------------------------- freestanding library */
void *memset(void *d, int c, size_t n)
{
	__asm__ volatile("rep stosb" : "+D"(d), "+c"(n) : "a"(c) : "memory");
	return d;
}

void *memcpy(void *d, const void *s, size_t n)
{
	void *r = d;
	__asm__ volatile("rep movsb" : "+D"(d), "+S"(s), "+c"(n) :: "memory");
	return r;
}

int memcmp(const void *a, const void *b, size_t n)
{
	const unsigned char *x = a, *y = b;
	for (; n; n--, x++, y++)
		if (*x != *y)
			return *x - *y;
	return 0;
}

/* ---------------------------------------------------------------- serial and printf */
void putc_serial(char c)
{
	/* Wait for THR empty (LSR bit 5), bounded so a missing UART cannot hang us. */
	for (int i = 0; i < 100000 && !(inb(PORT_SERIAL + 5) & 0x20); i++)
		;
	outb(PORT_SERIAL, (uint8_t)c);
}

void puts_serial(const char *s)
{
	while (*s)
		putc_serial(*s++);
}

struct outbuf {
	char *buf;
	size_t size, len;
};

static void emit(struct outbuf *o, char c)
{
	if (o->len + 1 < o->size)
		o->buf[o->len] = c;
	o->len++;
}

/* 64-bit division by 10 without libgcc (the 32-bit modes have no __udivdi3). */
static uint64_t divmod10(uint64_t n, unsigned *rem)
{
	uint64_t q = 0;
	uint32_t r = 0;
	for (int i = 63; i >= 0; i--) {
		r = (r << 1) | (uint32_t)((n >> i) & 1);
		if (r >= 10) {
			r -= 10;
			q |= 1ULL << i;
		}
	}
	*rem = r;
	return q;
}

static void emit_num(struct outbuf *o, uint64_t v, int base, int width, char pad, int neg)
{
	char tmp[24];
	int n = 0;
	do {
		unsigned d;
		if (base == 16) {
			d = v & 15;
			v >>= 4;
		} else {
			v = divmod10(v, &d);
		}
		tmp[n++] = "0123456789abcdef"[d];
	} while (v);
	if (neg)
		tmp[n++] = '-';
	for (; width > n; width--)
		emit(o, pad);
	while (n)
		emit(o, tmp[--n]);
}

int vsnprintf_lite(char *buf, size_t size, const char *fmt, va_list ap)
{
	struct outbuf o = { buf, size, 0 };
	for (; *fmt; fmt++) {
		if (*fmt != '%') {
			emit(&o, *fmt);
			continue;
		}
		char pad = ' ';
		int width = 0, lng = 0;
		if (*++fmt == '0')
			pad = '0', fmt++;
		while (*fmt >= '0' && *fmt <= '9')
			width = width * 10 + (*fmt++ - '0');
		while (*fmt == 'l' || *fmt == 'z')
			lng += (*fmt++ == 'l') ? 1 : (sizeof(size_t) == 8 ? 2 : 1);
		uint64_t v;
		switch (*fmt) {
		case 'd': {
			int64_t s = lng >= 2 ? va_arg(ap, long long) : lng ? va_arg(ap, long) : va_arg(ap, int);
			emit_num(&o, s < 0 ? -(uint64_t)s : (uint64_t)s, 10, width, pad, s < 0);
			break;
		}
		case 'u':
		case 'x':
			v = lng >= 2 ? va_arg(ap, unsigned long long) : lng ? va_arg(ap, unsigned long) : va_arg(ap, unsigned);
			emit_num(&o, v, *fmt == 'x' ? 16 : 10, width, pad, 0);
			break;
		case 'p':
			emit(&o, '0');
			emit(&o, 'x');
			emit_num(&o, (uintptr_t)va_arg(ap, void *), 16, width, pad, 0);
			break;
		case 's':
			for (const char *s = va_arg(ap, const char *); *s; s++)
				emit(&o, *s);
			break;
		case 'c':
			emit(&o, (char)va_arg(ap, int));
			break;
		case '%':
			emit(&o, '%');
			break;
		default:	/* unknown: print it verbatim */
			emit(&o, '%');
			if (!*fmt)
				goto out;
			emit(&o, *fmt);
		}
	}
out:
	if (size)
		buf[o.len < size ? o.len : size - 1] = 0;
	return (int)o.len;
}

void printf(const char *fmt, ...)
{
	char buf[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf_lite(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	puts_serial(buf);
}

__noreturn void guest_exit(uint32_t code)
{
	outl(PORT_EXIT, code);
	/* Only reached without an exit device: stop here. */
	for (;;)
		__asm__ volatile("cli; hlt");
}

__noreturn void panic(const char *fmt, ...)
{
	char buf[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf_lite(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	printf("# panic: %s\nBail out! %s\n", buf, buf);
	guest_exit(EXIT_PANIC);
}

/* ---------------------------------------------------------------- descriptor tables */
#ifdef MODE_LM
struct tss {
	uint32_t reserved0;
	uint64_t rsp[3];
	uint64_t reserved1;
	uint64_t ist[7];
	uint64_t reserved2;
	uint16_t reserved3, iomap_base;
} __attribute__((packed));

struct idt_gate {
	uint16_t off_lo, sel;
	uint8_t ist, type;
	uint16_t off_mid;
	uint32_t off_hi, reserved;
};
#else
struct tss {
	uint32_t link, esp0, ss0, esp1, ss1, esp2, ss2;
	uint32_t cr3, eip, eflags, eax, ecx, edx, ebx, esp, ebp, esi, edi;
	uint32_t es, cs, ss, ds, fs, gs, ldt;
	uint16_t trap, iomap_base;
} __attribute__((packed));

struct idt_gate {
	uint16_t off_lo, sel;
	uint8_t zero, type;
	uint16_t off_hi;
};
#endif

static struct tss tss;
static struct idt_gate idt[256];
/* Ring 0 stack for traps from ring 3 (the TSS points here). */
static uint8_t trap_stack[8192] __attribute__((aligned(16)));

void idt_set_gate(int vec, uintptr_t handler, uint16_t sel, int dpl, int ist)
{
	struct idt_gate *g = &idt[vec & 0xff];
	g->off_lo = (uint16_t)handler;
	g->sel = sel;
	g->type = (uint8_t)(0x8e | (dpl << 5));	/* present interrupt gate: IF stays 0 */
#ifdef MODE_LM
	g->ist = (uint8_t)(ist & 7);
	g->off_mid = (uint16_t)(handler >> 16);
	g->off_hi = (uint32_t)(handler >> 32);
#else
	(void)ist;
	g->off_hi = (uint16_t)(handler >> 16);
#endif
}

uintptr_t idt_gate_addr(int vec)
{
	return (uintptr_t)&idt[vec & 0xff];
}

void idt_restore_gate(int vec)
{
	idt_set_gate(vec, isr_table[vec & 31], SEL_KCODE, 0, 0);
}

#ifdef MODE_LM
void tss_set_ist(int n, uintptr_t top)
{
	if (n >= 1 && n <= 7)
		tss.ist[n - 1] = top;
}
#endif

static void set_gate(int vec, uintptr_t handler, int dpl)
{
	idt_set_gate(vec, handler, SEL_KCODE, dpl, 0);
}

static void tables_init(void)
{
	uintptr_t top = (uintptr_t)trap_stack + sizeof(trap_stack);
#ifdef MODE_LM
	tss.rsp[0] = top;
#else
	tss.esp0 = top;
	tss.ss0 = SEL_KDATA;
#endif
	tss.iomap_base = sizeof(tss);	/* no I/O bitmap: ring 3 has no port access */

	uint64_t base = (uintptr_t)&tss, limit = sizeof(tss) - 1;
	gdt_tss[0] = (limit & 0xffff) | ((base & 0xffffff) << 16) | (0x89ULL << 40) |
		     ((limit >> 16) << 48) | (((base >> 24) & 0xff) << 56);
	gdt_tss[1] = base >> 32;	/* upper half of a 64-bit TSS descriptor */
	__asm__ volatile("ltr %w0" :: "r"(SEL_TSS));

	for (int v = 0; v < 32; v++)
		set_gate(v, isr_table[v], 0);
	set_gate(0x80, isr_table[32], 3);	/* ring 3 returns through int $0x80 */
	struct {
		uint16_t limit;
		uintptr_t base;
	} __attribute__((packed)) idtr = { sizeof(idt) - 1, (uintptr_t)idt };
	__asm__ volatile("lidt %0" :: "m"(idtr));
}

/* ---------------------------------------------------------------- exceptions */
static volatile int user_faulted;
exc_hook_t exc_hook;

void pf_reset(void)
{
	last_pf.cr2 = last_pf.err = last_pf.ip = 0;
	last_pf.count = 0;
}

void exc_dispatch(struct frame *f)
{
	int from_user = (f->cs & 3) == 3;

	if (f->vector != 14 && f->vector != 0x80 && exc_hook && exc_hook(f))
		return;
	if (f->vector == 14) {
		uintptr_t cr2 = read_cr2();
		last_pf.cr2 = cr2;
		last_pf.err = f->err;
		last_pf.ip = f->ip;
		last_pf.count++;
		if (pf_hook && pf_hook(f, cr2, f->err))
			return;				/* fixed: retry the instruction */
		if (!from_user && probe_recover) {
			f->ip = probe_recover;		/* an expected fault in a probe */
			return;
		}
		if (from_user) {
			user_faulted = 1;
			user_return(0);
		}
	} else if (f->vector == 0x80 && from_user) {
		user_return((uint32_t)f->ax);
	}
	printf("# unexpected exception %lu, error code 0x%lx, ip 0x%lx, cs 0x%lx, cr2 0x%lx\n",
	       (unsigned long)f->vector, (unsigned long)f->err, (unsigned long)f->ip,
	       (unsigned long)f->cs, (unsigned long)read_cr2());
	printf("Bail out! unexpected exception %lu\n", (unsigned long)f->vector);
	guest_exit(EXIT_EXCEPTION + (uint32_t)(f->vector & 0x3f));
}

uint32_t user_call(uintptr_t entry, uintptr_t stack, uintptr_t addr, uintptr_t op,
		   uint32_t val, int *faulted)
{
	user_faulted = 0;
	uint32_t r = user_enter(entry, stack, addr, op, val);
	*faulted = user_faulted;
	return r;
}

/* ---------------------------------------------------------------- Multiboot information */
#define MULTIBOOT_LOADER_MAGIC	0x2badb002
#define MBI_MEM			(1U << 0)	/* mem_lower, mem_upper valid */
#define MBI_CMDLINE		(1U << 2)	/* cmdline valid */
extern uint32_t multiboot_magic, multiboot_info;	/* boot.S */

/* The info structure's leading fields (Multiboot v1 spec, 3.3). */
struct multiboot_info_head {
	uint32_t flags, mem_lower, mem_upper, boot_device, cmdline;
};

/* The info structure, if the loader passed one where the identity map reaches it. */
static const volatile struct multiboot_info_head *mbi(void)
{
	if (multiboot_magic != MULTIBOOT_LOADER_MAGIC || !multiboot_info ||
	    multiboot_info > GUEST_MEM_USED - sizeof(struct multiboot_info_head))
		return NULL;
	return (const volatile struct multiboot_info_head *)(uintptr_t)multiboot_info;
}

uint64_t multiboot_mem_bytes(void)
{
	const volatile struct multiboot_info_head *m = mbi();
	if (!m || !(m->flags & MBI_MEM))
		return 0;
	return 0x100000 + (uint64_t)m->mem_upper * 1024;
}

const char *multiboot_cmdline(void)
{
	const volatile struct multiboot_info_head *m = mbi();
	if (!m || !(m->flags & MBI_CMDLINE) || !m->cmdline || m->cmdline >= GUEST_MEM_USED)
		return "";
	return (const char *)(uintptr_t)m->cmdline;
}

/* ---------------------------------------------------------------- start-up */
static void features_init(void)
{
	uint32_t r[4];
	cpuid(0x80000000, 0, r);
	if (r[0] >= 0x80000001) {
		cpuid(0x80000001, 0, r);
		cpu.nx = (r[3] >> 20) & 1;
		cpu.page1g = (r[3] >> 26) & 1;
	}
#if HAVE_NX
	if (cpu.nx)	/* NX bits are reserved (a #PF with RSVD) unless EFER.NXE is set */
		wrmsr(MSR_EFER, rdmsr(MSR_EFER) | EFER_NXE);
#endif
}

/* Called by boot.S: 32-bit protected mode with paging off, or long mode on boot tables. */
__noreturn void rt_start(void)
{
	if ((uintptr_t)__image_end > FRAME_POOL_START)
		panic("image ends at %p, above the frame pool at 0x%x", (void *)__image_end,
		      FRAME_POOL_START);
	tables_init();
	features_init();
	mm_init();		/* builds kernel_cr3 and turns paging on in this mode */
	guest_main();
	guest_exit(EXIT_PASS);
}
