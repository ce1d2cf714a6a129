// SPDX-License-Identifier: GPL-2.0
/* Runtime of the Multiboot test kernels: serial, printf, TAP, IDT, exit, PIC, PIT, APIC. */
#include "mb.h"

/* ---------------------------------------------------------------- freestanding library */
void *memset(void *d, int c, size_t n)
{
	void *r = d;
	__asm__ volatile("rep stosb" : "+D"(d), "+c"(n) : "a"(c) : "memory");
	return r;
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

size_t strlen(const char *s)
{
	size_t n = 0;
	while (s[n])
		n++;
	return n;
}

int strcmp(const char *a, const char *b)
{
	for (; *a && *a == *b; a++, b++)
		;
	return (unsigned char)*a - (unsigned char)*b;
}

/* CRC-32 (IEEE 802.3, reflected), bitwise: what `gzip -l`, zlib and Python's zlib.crc32 compute. */
uint32_t crc32(const void *p, size_t n)
{
	const uint8_t *b = p;
	uint32_t c = 0xffffffff;
	while (n--) {
		c ^= *b++;
		for (int k = 0; k < 8; k++)
			c = (c >> 1) ^ (0xedb88320 & -(c & 1));
	}
	return ~c;
}

/* Shift-and-subtract: 32-bit code has no 64-bit divide instruction and there is no libgcc. */
uint64_t udiv64(uint64_t n, uint64_t d)
{
	uint64_t q = 0, r = 0;
	if (!d)
		return ~0ULL;
	for (int i = 63; i >= 0; i--) {
		r = (r << 1) | ((n >> i) & 1);
		if (r >= d) {
			r -= d;
			q |= 1ULL << i;
		}
	}
	return q;
}

/* ---------------------------------------------------------------- serial */
void serial_init(void)
{
	/* 115200 8N1, FIFOs off, no interrupts: what a loader may or may not have set up. */
	outb(COM1 + UART_IER, 0);
	outb(COM1 + UART_LCR, 0x80);	/* DLAB */
	outb(COM1 + 0, 1);		/* divisor 1: 115200 baud */
	outb(COM1 + 1, 0);
	outb(COM1 + UART_LCR, 0x03);
	outb(COM1 + UART_FCR, 0);
	outb(COM1 + UART_MCR, 0x03);	/* DTR, RTS */
}

void putc_serial(char c)
{
	/* Wait for THR empty; bounded, so a missing UART cannot hang the kernel. */
	for (int i = 0; i < 1000000 && !(inb(COM1 + UART_LSR) & UART_LSR_THRE); i++)
		;
	outb(COM1 + UART_THR, (uint8_t)c);
}

void puts_serial(const char *s)
{
	while (*s)
		putc_serial(*s++);
}

/* ---------------------------------------------------------------- printf-lite */
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

static void emit_num(struct outbuf *o, uint64_t v, unsigned base, int width, char pad, int neg)
{
	char tmp[24];
	int n = 0;
	do {
		uint64_t q = base == 16 ? v >> 4 : udiv64(v, 10);
		tmp[n++] = "0123456789abcdef"[v - q * base];
		v = q;
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
			lng += *fmt++ == 'l';
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

int snprintf_lite(char *buf, size_t size, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf_lite(buf, size, fmt, ap);
	va_end(ap);
	return n;
}

void printf(const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf_lite(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	puts_serial(buf);
}

/* ---------------------------------------------------------------- TAP */
static unsigned tap_planned, tap_count, tap_failed;

void tap_plan(unsigned n)
{
	tap_planned = n;
	printf("TAP version 13\n1..%u\n", n);
}

int tap_ok(int pass, const char *fmt, ...)
{
	char desc[200];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf_lite(desc, sizeof(desc), fmt, ap);
	va_end(ap);
	tap_count++;
	if (!pass)
		tap_failed++;
	printf("%sok %u - %s\n", pass ? "" : "not ", tap_count, desc);
	return pass;
}

void tap_skip(const char *desc, const char *why)
{
	tap_count++;
	printf("ok %u - %s # SKIP %s\n", tap_count, desc, why);
}

void diag(const char *fmt, ...)
{
	char buf[400];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf_lite(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	printf("# %s\n", buf);
}

__noreturn void tap_done(void)
{
	if (tap_count != tap_planned) {
		diag("planned %u tests, ran %u", tap_planned, tap_count);
		tap_failed++;
	}
	machine_exit(tap_failed ? EXIT_FAIL : EXIT_PASS);
}

__noreturn void bail_out(const char *fmt, ...)
{
	char buf[200];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf_lite(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	printf("Bail out! %s\n", buf);
	machine_exit(EXIT_FAIL);
}

/* ---------------------------------------------------------------- exit and reset */
#define I8042_STATUS		0x64
#define I8042_COMMAND		0x64
#define I8042_IN_FULL		0x02	/* the controller has not taken the last byte yet */
#define I8042_PULSE_RESET	0xfe

__noreturn void machine_reset(void)
{
	for (int i = 0; i < 100000 && (inb(I8042_STATUS) & I8042_IN_FULL); i++)
		;
	outb(I8042_COMMAND, I8042_PULSE_RESET);
	/* Give the reset a moment (it is asynchronous on real hardware), then triple-fault. */
	pit_wait_ms(100);
	static const struct {
		uint16_t limit;
		uintptr_t base;
	} __attribute__((packed)) empty_idt = { 0, 0 };
	__asm__ volatile("lidt %0; int3" :: "m"(empty_idt));
	for (;;)
		__asm__ volatile("cli; hlt");
}

__noreturn void machine_exit(uint32_t code)
{
	outl(PORT_DEBUG_EXIT, code);
	/* Still here: no isa-debug-exit.  A reset ends the run under -no-reboot. */
	diag("no exit device at port 0x%x; resetting", PORT_DEBUG_EXIT);
	machine_reset();
}

/* ---------------------------------------------------------------- IDT */
struct idt_gate {
	uint16_t off_lo, sel;
	uint8_t ist, type;
	uint16_t off_mid;
#ifdef MODE_LM
	uint32_t off_hi, reserved;
#endif
};

extern const uintptr_t isr_stubs[256];	/* boot.S */
static struct idt_gate idt[256];
static isr_t handlers[256];

void isr_set(unsigned vector, isr_t handler)
{
	handlers[vector & 0xff] = handler;
}

void isr_dispatch(struct regs *r);
void isr_dispatch(struct regs *r)
{
	isr_t h = handlers[r->vector & 0xff];
	if (h) {
		h(r);
		return;
	}
	uintptr_t cr2;
	__asm__ volatile("mov %%cr2, %0" : "=r"(cr2));
	diag("unexpected vector %lu, error code 0x%lx, ip 0x%lx, cr2 0x%lx", (unsigned long)r->vector,
	     (unsigned long)r->err, (unsigned long)r->ip, (unsigned long)cr2);
	bail_out("unexpected interrupt or exception, vector %lu", (unsigned long)r->vector);
}

static void idt_init(void)
{
	for (int v = 0; v < 256; v++) {
		idt[v].off_lo = (uint16_t)isr_stubs[v];
		idt[v].off_mid = (uint16_t)(isr_stubs[v] >> 16);
#ifdef MODE_LM
		idt[v].off_hi = (uint32_t)((uint64_t)isr_stubs[v] >> 32);
#endif
		idt[v].sel = SEL_CODE;
		idt[v].type = 0x8e;	/* present interrupt gate (32- or 64-bit), DPL 0: IF cleared */
	}
	struct {
		uint16_t limit;
		uintptr_t base;
	} __attribute__((packed)) idtr = { sizeof(idt) - 1, (uintptr_t)idt };
	__asm__ volatile("lidt %0" :: "m"(idtr));
}

/* ---------------------------------------------------------------- 8259 PIC */
#define PIC1_CMD	0x20
#define PIC1_DATA	0x21
#define PIC2_CMD	0xa0
#define PIC2_DATA	0xa1

void pic_program(uint8_t base)
{
	outb(PIC1_CMD, 0x11);		/* ICW1: edge, cascade, ICW4 follows */
	outb(PIC2_CMD, 0x11);
	outb(PIC1_DATA, base);		/* ICW2: vector base */
	outb(PIC2_DATA, base + 8);
	outb(PIC1_DATA, 0x04);		/* ICW3: slave on IRQ2 */
	outb(PIC2_DATA, 0x02);		/*       slave identity 2 */
	outb(PIC1_DATA, 0x01);		/* ICW4: 8086 mode, normal EOI */
	outb(PIC2_DATA, 0x01);
}

void pic_init(uint8_t base)
{
	pic_program(base);
	pic_set_mask(0xffff);
}

void pic_set_mask(uint16_t mask)
{
	outb(PIC1_DATA, (uint8_t)mask);
	outb(PIC2_DATA, (uint8_t)(mask >> 8));
}

uint16_t pic_get_mask(void)
{
	return (uint16_t)(inb(PIC2_DATA) << 8 | inb(PIC1_DATA));
}

static uint16_t pic_ocw3_read(uint8_t ocw3)
{
	outb(PIC1_CMD, ocw3);
	outb(PIC2_CMD, ocw3);
	return (uint16_t)(inb(PIC2_CMD) << 8 | inb(PIC1_CMD));
}

uint16_t pic_read_irr(void)
{
	return pic_ocw3_read(0x0a);
}

uint16_t pic_read_isr(void)
{
	return pic_ocw3_read(0x0b);
}

void pic_eoi(unsigned irq)
{
	if (irq >= 8)
		outb(PIC2_CMD, 0x20);
	outb(PIC1_CMD, 0x20);
}

/* ---------------------------------------------------------------- PIT channel 2 */
#define PIT_CH2		0x42
#define PIT_MODE	0x43
#define PORT_B		0x61		/* bit 0: channel 2 gate, bit 1: speaker, bit 5: OUT2 */

void pit_oneshot_start(uint16_t count)
{
	outb(PORT_B, (inb(PORT_B) & ~0x02) | 0x01);	/* gate on, speaker off */
	outb(PIT_MODE, 0xb0);		/* channel 2, lobyte/hibyte, mode 0, binary */
	outb(PIT_CH2, (uint8_t)count);
	outb(PIT_CH2, (uint8_t)(count >> 8));
}

int pit_oneshot_done(void)
{
	return (inb(PORT_B) & 0x20) != 0;	/* mode 0: OUT2 goes high at terminal count */
}

void pit_wait_us(uint32_t us)
{
	uint32_t count = (uint32_t)udiv64((uint64_t)us * PIT_HZ, 1000000);
	if (count > 0xffff)
		count = 0xffff;
	if (count < 2)
		count = 2;
	pit_oneshot_start((uint16_t)count);
	while (!pit_oneshot_done())
		;
}

void pit_wait_ms(uint32_t ms)
{
	for (; ms >= 50; ms -= 50)
		pit_wait_us(50000);
	if (ms)
		pit_wait_us(ms * 1000);
}

uint64_t tsc_per_ms(void)
{
	static uint64_t cached;
	if (!cached) {
		/* 50 ms against the PIT; the best of three, so one preempted window does not count. */
		for (int i = 0; i < 3; i++) {
			pit_oneshot_start(59659);	/* 50 ms */
			uint64_t t0 = rdtsc();
			while (!pit_oneshot_done())
				;
			uint64_t per_ms = udiv64(rdtsc() - t0, 50);
			if (!cached || per_ms < cached)
				cached = per_ms;
		}
		if (!cached)
			cached = 1;
	}
	return cached;
}

/* ---------------------------------------------------------------- local APIC */
void apic_enable(void)
{
	uint64_t base = rdmsr(MSR_APIC_BASE);
	wrmsr(MSR_APIC_BASE, (base & ~0xfffff000ULL) | APIC_DEFAULT_BASE | APIC_BASE_ENABLE);
	apic_write(APIC_SVR, APIC_SVR_ENABLE | 0xff);
	apic_write(APIC_TPR, 0);
}

void apic_virtual_wire(void)
{
	apic_enable();
	apic_write(APIC_LVT_LINT0, 7u << 8);	/* ExtINT, edge, unmasked */
	apic_write(APIC_LVT_LINT1, 4u << 8);	/* NMI */
}

/* ---------------------------------------------------------------- start-up */
static void spurious(struct regs *r)
{
	(void)r;	/* APIC spurious vector: no EOI (SDM 10.9) */
}

__noreturn void rt_start(void);
__noreturn void rt_start(void)
{
	serial_init();
	idt_init();
	isr_set(0xff, spurious);
	kmain();
	tap_done();
}
