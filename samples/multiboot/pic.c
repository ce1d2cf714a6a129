// SPDX-License-Identifier: GPL-2.0
/*
 * pic: the 8259 pair programmed from scratch (ICW1-4), its mask register, the IRR and ISR
 * read through OCW3, and what a mask does to a running interrupt source: the PIT's
 * channel 0 on IRQ 0, and the RTC's periodic interrupt on IRQ 8 through the cascade.
 */
#include "mb.h"

#define PIT_CH0		0x40
#define PIT_MODE	0x43
#define RTC_INDEX	0x70
#define RTC_DATA	0x71
#define RTC_NMI_OFF	0x80	/* keep NMIs off while the index is written */

static volatile unsigned irq0_count, irq8_count;
static volatile uint16_t isr_in_irq0 = 0xffff;

static void irq0_isr(struct regs *r)
{
	(void)r;
	irq0_count++;
	if (irq0_count == 1)
		isr_in_irq0 = pic_read_isr();
	pic_eoi(0);
}

static uint8_t rtc_read(uint8_t reg)
{
	outb(RTC_INDEX, RTC_NMI_OFF | reg);
	return inb(RTC_DATA);
}

static void rtc_write(uint8_t reg, uint8_t v)
{
	outb(RTC_INDEX, RTC_NMI_OFF | reg);
	outb(RTC_DATA, v);
}

static void irq8_isr(struct regs *r)
{
	(void)r;
	irq8_count++;
	rtc_read(0x0c);		/* register C: acknowledges the RTC's interrupt */
	pic_eoi(8);
}

/* Waits, interrupts on, until *counter reached n or `ms` milliseconds passed. */
static unsigned wait_count(volatile unsigned *counter, unsigned n, unsigned ms)
{
	sti();
	for (unsigned waited = 0; *counter < n && waited < ms; waited += 10)
		pit_wait_ms(10);
	cli();
	return *counter;
}

/* Interrupts counted by *counter during `ms` milliseconds, interrupts on. */
static unsigned count_in(volatile unsigned *counter, uint32_t ms)
{
	unsigned start = *counter;
	sti();
	pit_wait_ms(ms);
	cli();
	return *counter - start;
}

static void test_mask_register(void)
{
	/* Interrupts are off: an unmasked line cannot get through yet. */
	pic_program(PIC_VECTOR_BASE);
	uint16_t after_icw = pic_get_mask();
	pic_set_mask(0xffff);
	diag("IMR after ICW1-4: 0x%04x", after_icw);
	tap_ok(after_icw == 0, "IMR: ICW1 clears it");
	pic_set_mask(0x5aa5);
	uint16_t m = pic_get_mask();
	pic_set_mask(0xa55a);
	uint16_t m2 = pic_get_mask();
	diag("IMR read back 0x%04x and 0x%04x", m, m2);
	tap_ok(m == 0x5aa5 && m2 == 0xa55a, "IMR: master and slave masks read back");
	pic_set_mask(0xffff);
	tap_ok(pic_read_isr() == 0, "ISR (OCW3): nothing in service");
}

static void test_irq0(void)
{
	/* Channel 0, square wave (mode 3) at about 1 kHz: a rising edge every millisecond. */
	outb(PIT_MODE, 0x36);
	outb(PIT_CH0, 1193 & 0xff);
	outb(PIT_CH0, 1193 >> 8);

	unsigned masked = count_in(&irq0_count, 20);
	uint16_t irr = pic_read_irr();
	diag("IRQ 0 masked: %u interrupts in 20 ms, IRR 0x%04x", masked, irr);
	tap_ok(masked == 0, "a masked line does not interrupt");
	tap_ok(irr & 1, "IRR: the masked line's edge is latched");

	pic_set_mask(0xfffe);
	/* No bound on the time: a preempted emulator merges edges in the IRR. */
	irq0_count = 0;
	unsigned open = wait_count(&irq0_count, 5, 5000);
	diag("IRQ 0 unmasked: %u interrupts", open);
	tap_ok(open >= 5, "unmasked: the PIT interrupts (5 times within 5 s)");
	tap_ok(isr_in_irq0 == 1, "ISR: IRQ 0 in service in its handler");
	tap_ok(pic_read_isr() == 0, "EOI: the ISR is clear after the handler");

	pic_set_mask(0xffff);
	count_in(&irq0_count, 2);	/* one may have been on its way */
	unsigned again = count_in(&irq0_count, 20);
	tap_ok(again == 0, "masking the line again stops the interrupts");
	outb(PIT_MODE, 0x30);		/* channel 0 back to one-shot mode, not reloaded */
	outb(PIT_CH0, 0);
	outb(PIT_CH0, 0);
}

static void test_cascade(void)
{
	/* RTC periodic interrupt at 1024 Hz (rate 6), IRQ 8 on the slave. */
	rtc_write(0x0a, (rtc_read(0x0a) & 0xf0) | 6);
	rtc_write(0x0b, rtc_read(0x0b) | 0x40);	/* PIE */
	rtc_read(0x0c);
	pic_set_mask((uint16_t)~((1u << 8) | (1u << 2)));	/* IRQ 8 and the cascade */
	unsigned n = wait_count(&irq8_count, 5, 5000);
	diag("IRQ 8 (RTC, 1024 Hz): %u interrupts", n);
	tap_ok(n >= 5, "cascade: the RTC's IRQ 8 arrives through the slave (5 times within 5 s)");
	pic_set_mask(0xffff);
	rtc_write(0x0b, rtc_read(0x0b) & ~0x40);
	rtc_read(0x0c);
	count_in(&irq8_count, 2);
	tap_ok(pic_read_isr() == 0, "cascade: EOI to both controllers leaves nothing in service");
}

void kmain(void)
{
	tap_plan(11);
	apic_virtual_wire();
	isr_set(PIC_VECTOR_BASE + 0, irq0_isr);
	isr_set(PIC_VECTOR_BASE + 8, irq8_isr);
	test_mask_register();
	test_irq0();
	test_cascade();
}
