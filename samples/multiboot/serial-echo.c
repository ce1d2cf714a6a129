// SPDX-License-Identifier: GPL-2.0
/*
 * serial-echo: input on COM1.  The runner writes two lines to the UART's input (the
 * `stdin` lines of kernels.list, which must match LINE_POLLED and LINE_IRQ); the kernel
 * echoes every byte it receives, so the lines appear in the output as sent.  The first
 * line is read by polling LSR bit 0; the second through the receive-data interrupt
 * (IER bit 0), IRQ 4 on the 8259 PIC (the APIC in virtual wire mode, no I/O APIC).
 */
#include "mb.h"

#define LINE_POLLED	"polled: The quick brown fox jumps over the lazy dog 0123456789"
#define LINE_IRQ	"interrupt-driven: second line, punctuation .,;:!?()[]{}<>=+-*/"
#define IRQ_COM1	4
#define TIMEOUT_MS	5000

#define UART_IER_RDA	0x01
#define UART_IIR_NONE	0x01	/* no interrupt pending */
#define UART_IIR_RDA	0x04	/* received data available */
#define UART_MCR_OUT2	0x08	/* gates the UART's interrupt line on a PC */

static char polled[128];
static volatile char irq_line[128];
static volatile unsigned irq_len, irq_count, bytes_in_irq;
static volatile int irq_line_done;
static volatile uint8_t iir_in_irq = 0xff;

/* Echoes c; stores it (not the newline) in buf. Returns 1 at the end of the line. */
static int take(char c, volatile char *buf, volatile unsigned *len, unsigned size)
{
	if (c == '\r')
		return 0;
	putc_serial(c);
	if (c == '\n')
		return 1;
	if (*len + 1 < size) {
		buf[*len] = c;
		*len += 1;
		buf[*len] = 0;
	}
	return 0;
}

/* Polls LSR.DR for a line; 0 when none came within TIMEOUT_MS. */
static int read_line_polled(void)
{
	unsigned len = 0;
	for (unsigned waited = 0; waited < TIMEOUT_MS; waited += 50) {
		pit_oneshot_start(59659);	/* 50 ms */
		while (!pit_oneshot_done())
			if (inb(COM1 + UART_LSR) & UART_LSR_DR &&
			    take((char)inb(COM1 + UART_RBR), polled, &len, sizeof(polled)))
				return 1;
	}
	return 0;
}

static void com1_isr(struct regs *r)
{
	(void)r;
	uint8_t iir = inb(COM1 + UART_IIR);
	if (!irq_count++)
		iir_in_irq = iir;
	while (inb(COM1 + UART_LSR) & UART_LSR_DR) {
		bytes_in_irq++;
		if (take((char)inb(COM1 + UART_RBR), irq_line, &irq_len, sizeof(irq_line)))
			irq_line_done = 1;
	}
	pic_eoi(IRQ_COM1);
}

void kmain(void)
{
	tap_plan(7);
	diag("waiting for a line on COM1 (polled)");
	int got = read_line_polled();
	tap_ok(got, "polled: a line arrives");
	if (!tap_ok(!strcmp(polled, LINE_POLLED), "polled: the line as sent"))
		diag("expected \"%s\"", LINE_POLLED);

	apic_virtual_wire();
	pic_init(PIC_VECTOR_BASE);
	isr_set(PIC_VECTOR_BASE + IRQ_COM1, com1_isr);
	outb(COM1 + UART_MCR, 0x03 | UART_MCR_OUT2);
	outb(COM1 + UART_IER, UART_IER_RDA);
	pic_set_mask((uint16_t)~(1u << IRQ_COM1));
	diag("waiting for a line on COM1 (receive interrupt)");
	sti();
	for (unsigned waited = 0; !irq_line_done && waited < TIMEOUT_MS; waited += 10)
		pit_wait_ms(10);
	cli();
	uint8_t iir_idle = inb(COM1 + UART_IIR);
	diag("%u interrupts for %u bytes; IIR 0x%x in the first, 0x%x after", irq_count, bytes_in_irq,
	     iir_in_irq, iir_idle);
	tap_ok(irq_line_done, "interrupt-driven: a line arrives");
	if (!tap_ok(!strcmp((const char *)irq_line, LINE_IRQ), "interrupt-driven: the line as sent"))
		diag("expected \"%s\"", LINE_IRQ);
	tap_ok(bytes_in_irq == strlen(LINE_IRQ) + 1, "interrupt-driven: every byte read by the handler");
	tap_ok((iir_in_irq & 0x0f) == UART_IIR_RDA, "IIR: received data available, in the handler");
	tap_ok((iir_idle & 0x0f) == UART_IIR_NONE, "IIR: nothing pending once the input is read");
	outb(COM1 + UART_IER, 0);
	pic_set_mask(0xffff);
}
