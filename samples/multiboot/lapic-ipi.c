// SPDX-License-Identifier: GPL-2.0
/*
 * lapic-ipi: self-IPIs through the ICR (physical destination and the self shorthand), and
 * what decides when a pending vector is taken: EOI and the ISR, IRR, TPR and PPR, the
 * priority classes (vector >> 4), and the interrupt window (IF, STI's one-instruction
 * shadow).
 */
#include "mb.h"

#define V_LOW		0x42	/* class 4 */
#define V_LOW2		0x46	/* class 4 */
#define V_MID		0x55	/* class 5 */
#define V_PASS		0x62	/* class 6 */
#define V_HIGH		0x72	/* class 7 */

static volatile unsigned delivered[8], ndelivered;
static volatile int isr_bit_in_handler;	/* ISR bit of the vector seen by its handler */
static volatile int low_pending_in_high;	/* V_LOW's IRR bit seen by V_HIGH's handler */
static volatile int marker, marker_at_irq;
static volatile int skip_eoi;
static uint32_t apic_id;

static void ipi_isr(struct regs *r)
{
	unsigned v = r->vector;
	if (ndelivered < ARRAY_SIZE(delivered))
		delivered[ndelivered] = v;
	ndelivered++;
	marker_at_irq = marker;
	isr_bit_in_handler = apic_vector_bit(APIC_ISR, v);
	if (v == V_HIGH)
		low_pending_in_high = apic_vector_bit(APIC_IRR, V_LOW);
	if (!skip_eoi)
		apic_eoi();
}

static void reset_log(void)
{
	ndelivered = 0;
	for (unsigned i = 0; i < ARRAY_SIZE(delivered); i++)
		delivered[i] = 0;
}

/* Fixed delivery, physical destination: this APIC's ID. */
static void ipi_to_self_by_id(uint8_t v)
{
	apic_write(APIC_ICR_HI, apic_id << 24);
	apic_write(APIC_ICR_LO, APIC_ICR_ASSERT | v);
}

static void ipi_self_shorthand(uint8_t v)
{
	apic_write(APIC_ICR_LO, APIC_ICR_SELF | APIC_ICR_ASSERT | v);
}

/* With interrupts on: waits (up to 20 ms) until n interrupts were taken. */
static int wait_delivered(unsigned n)
{
	pit_oneshot_start(23864);	/* 20 ms */
	while (ndelivered < n && !pit_oneshot_done())
		;
	return ndelivered >= n;
}

static int icr_idle(void)
{
	for (int i = 0; i < 100000; i++)
		if (!(apic_read(APIC_ICR_LO) & APIC_ICR_PENDING))
			return 1;
	return 0;
}

static void test_send(void)
{
	reset_log();
	sti();
	ipi_to_self_by_id(V_LOW);
	int got = wait_delivered(1);
	tap_ok(got && ndelivered == 1 && delivered[0] == V_LOW, "ICR: fixed IPI to the own APIC ID is taken");
	tap_ok(icr_idle(), "ICR: delivery status returns to idle");
	tap_ok(isr_bit_in_handler, "ISR: the vector's bit is set while its handler runs");
	tap_ok(!apic_vector_bit(APIC_ISR, V_LOW) && !apic_vector_bit(APIC_IRR, V_LOW),
	       "EOI: the ISR bit is clear after the handler's EOI");

	reset_log();
	ipi_self_shorthand(V_MID);
	got = wait_delivered(1);
	tap_ok(got && ndelivered == 1 && delivered[0] == V_MID, "ICR: the self shorthand is taken");
	cli();
}

static void test_window(void)
{
	reset_log();
	ipi_self_shorthand(V_LOW);
	pit_wait_ms(2);
	tap_ok(ndelivered == 0 && apic_vector_bit(APIC_IRR, V_LOW) && !apic_vector_bit(APIC_ISR, V_LOW),
	       "IF=0: the IPI waits in the IRR");
	marker = 0;
	marker_at_irq = -1;
	/* The first increment runs in STI's shadow; the interrupt comes before the second. */
	__asm__ volatile("sti; incl %0; incl %0; cli" : "+m"(marker) :: "memory");
	diag("interrupt taken after %d of the 2 instructions after STI", marker_at_irq);
	tap_ok(ndelivered == 1 && marker_at_irq == 1, "STI: the pending IPI is taken right after STI's shadow");
}

static void test_priority(void)
{
	/* Two classes pending at once: the higher first, the lower waits for its EOI. */
	reset_log();
	ipi_self_shorthand(V_LOW);
	ipi_self_shorthand(V_HIGH);
	int both = apic_vector_bit(APIC_IRR, V_LOW) && apic_vector_bit(APIC_IRR, V_HIGH);
	sti();
	wait_delivered(2);
	cli();
	diag("delivered 0x%x then 0x%x (%u in all)", delivered[0], delivered[1], ndelivered);
	tap_ok(both && ndelivered == 2 && delivered[0] == V_HIGH && delivered[1] == V_LOW,
	       "two pending classes: the higher vector is taken first");
	tap_ok(low_pending_in_high, "the lower vector stays in the IRR while the higher is in service");

	/* TPR 0x50 holds classes 4 and 5, lets 6 through; lowering it releases 5, then 4. */
	reset_log();
	apic_write(APIC_TPR, 0x50);
	sti();
	ipi_self_shorthand(V_LOW);
	pit_wait_ms(2);
	tap_ok(ndelivered == 0 && apic_vector_bit(APIC_IRR, V_LOW), "TPR 0x50 holds a class-4 vector");
	ipi_self_shorthand(V_MID);
	pit_wait_ms(2);
	tap_ok(ndelivered == 0 && apic_vector_bit(APIC_IRR, V_MID), "TPR 0x50 holds a class-5 vector");
	uint32_t ppr = apic_read(APIC_PPR);
	diag("PPR 0x%x with TPR 0x50 and nothing in service", ppr);
	tap_ok((ppr & 0xf0) == 0x50, "PPR follows the TPR while nothing is in service");
	ipi_self_shorthand(V_PASS);
	wait_delivered(1);
	tap_ok(ndelivered == 1 && delivered[0] == V_PASS, "TPR 0x50 lets a class-6 vector through");
	apic_write(APIC_TPR, 0);
	wait_delivered(3);
	cli();
	diag("after TPR 0: 0x%x then 0x%x (%u in all)", delivered[1], delivered[2], ndelivered);
	tap_ok(ndelivered == 3 && delivered[1] == V_MID && delivered[2] == V_LOW,
	       "lowering the TPR releases the held vectors, highest first");

	/* A vector left in service (no EOI) holds its class until the EOI. */
	reset_log();
	skip_eoi = 1;
	sti();
	ipi_self_shorthand(V_LOW);
	wait_delivered(1);
	skip_eoi = 0;
	ipi_self_shorthand(V_LOW2);
	pit_wait_ms(2);
	int held = ndelivered == 1 && apic_vector_bit(APIC_ISR, V_LOW) && apic_vector_bit(APIC_IRR, V_LOW2);
	apic_eoi();	/* ends V_LOW's service: V_LOW2 may come */
	wait_delivered(2);
	cli();
	tap_ok(held && ndelivered == 2 && delivered[1] == V_LOW2,
	       "without EOI the in-service vector holds its class; the EOI releases it");
}

void kmain(void)
{
	tap_plan(15);
	pic_init(PIC_VECTOR_BASE);	/* every legacy line masked */
	apic_enable();
	apic_id = apic_read(APIC_ID) >> 24;
	diag("APIC ID %u, version 0x%x", apic_id, apic_read(APIC_VERSION));
	const uint8_t vectors[] = { V_LOW, V_LOW2, V_MID, V_PASS, V_HIGH };
	for (unsigned i = 0; i < ARRAY_SIZE(vectors); i++)
		isr_set(vectors[i], ipi_isr);
	test_send();
	test_window();
	test_priority();
}
