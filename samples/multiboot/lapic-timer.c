// SPDX-License-Identifier: GPL-2.0
/*
 * lapic-timer: the local APIC's registers and its timer in one-shot, periodic and
 * TSC-deadline mode.  The checks hold on a slow or preempted emulator too: windows timed
 * by polling the PIT (channel 2) only get longer, so "no interrupt in the window" holds;
 * interrupt counts have no upper time bound (a starved emulator merges expiries and runs
 * its timers late); "not before" is judged by the timer's own state and "not faster" by
 * the TSC read next to the timer.
 */
#include "mb.h"

#define TIMER_VECTOR	0x30
#define DIV_1		0xb
#define DIV_16		0x3
#define PERIODIC_IRQS	4

static volatile unsigned timer_irqs;

static void timer_isr(struct regs *r)
{
	(void)r;
	timer_irqs++;
	apic_eoi();
}

/* Interrupts taken during `ms` milliseconds (interrupts on), at least. */
static unsigned irqs_in(uint32_t ms)
{
	unsigned start = timer_irqs;
	pit_wait_ms(ms);
	return timer_irqs - start;
}

/*
 * APIC timer ticks in 10 ms at divide configuration `div`, the timer masked.  The least of
 * five: a preempted vCPU notices the PIT's end late, which only ever adds ticks.
 */
static uint32_t ticks_per_10ms(uint32_t div)
{
	uint32_t best = 0xffffffff;
	apic_write(APIC_LVT_TIMER, APIC_LVT_MASKED | APIC_TIMER_ONESHOT | TIMER_VECTOR);
	apic_write(APIC_TIMER_DIV, div);
	for (int i = 0; i < 5; i++) {
		apic_write(APIC_TIMER_INIT, 0xffffffff);
		uint32_t start = apic_read(APIC_TIMER_CUR);
		pit_wait_ms(10);
		uint32_t ticks = start - apic_read(APIC_TIMER_CUR);
		if (ticks < best)
			best = ticks;
	}
	apic_write(APIC_TIMER_INIT, 0);
	return best;
}

/* Waits until `n` timer interrupts were taken, or `ms` milliseconds; returns the count. */
static unsigned wait_irqs(unsigned n, unsigned ms)
{
	for (unsigned waited = 0; timer_irqs < n && waited < ms; waited += 10)
		pit_wait_ms(10);
	return timer_irqs;
}

/*
 * Timer ticks at divide configuration `div` against TSC ticks over about 10 ms, both read
 * back to back at each end: time the vCPU loses in between counts in both alike.
 */
static void ticks_against_tsc(uint32_t div, uint64_t *ticks, uint64_t *tsc)
{
	apic_write(APIC_LVT_TIMER, APIC_LVT_MASKED | APIC_TIMER_ONESHOT | TIMER_VECTOR);
	apic_write(APIC_TIMER_DIV, div);
	apic_write(APIC_TIMER_INIT, 0xffffffff);
	uint32_t c0 = apic_read(APIC_TIMER_CUR);
	uint64_t t0 = rdtsc();
	pit_wait_ms(10);
	uint32_t c1 = apic_read(APIC_TIMER_CUR);
	uint64_t t1 = rdtsc();
	apic_write(APIC_TIMER_INIT, 0);
	*ticks = c0 - c1;
	*tsc = t1 - t0;
}

/*
 * Waits (at most 5 s) until `expired` says the timer ran out; returns nonzero if an
 * interrupt was taken before that.  The interrupt count is read before the timer state:
 * an interrupt seen while the timer had not yet run out came early.
 */
static int taken_before_expiry(int (*expired)(void))
{
	for (unsigned waited = 0; waited < 5000; waited += 50) {
		pit_oneshot_start(59659);	/* 50 ms */
		while (!pit_oneshot_done()) {
			unsigned n = timer_irqs;
			barrier();
			if (expired())
				return 0;
			if (n)
				return 1;
		}
	}
	return 0;
}

static int count_ran_out(void)
{
	return apic_read(APIC_TIMER_CUR) == 0;
}

static uint64_t tsc_deadline;

static int deadline_passed(void)
{
	return rdtsc() >= tsc_deadline;
}

static void test_registers(void)
{
	uint32_t r[4];
	cpuid(1, 0, r);
	if (!(r[3] & (1u << 9)))
		bail_out("CPUID.1:EDX.APIC is 0: no local APIC");
	uint64_t base = rdmsr(MSR_APIC_BASE);
	diag("IA32_APIC_BASE 0x%llx", (unsigned long long)base);
	tap_ok(base & APIC_BASE_ENABLE, "IA32_APIC_BASE: globally enabled");
	tap_ok((base & 0xfffff000ULL) == APIC_DEFAULT_BASE && (base & APIC_BASE_BSP),
	       "IA32_APIC_BASE: base 0xfee00000, BSP");

	apic_enable();
	uint32_t id = apic_read(APIC_ID), ver = apic_read(APIC_VERSION);
	diag("ID 0x%x, version 0x%x, CPUID.1:EBX 0x%x", id, ver, r[1]);
	tap_ok(id >> 24 == r[1] >> 24, "ID register: the initial APIC ID of CPUID.1:EBX");
	tap_ok((ver & 0xff) >= 0x10 && (ver & 0xff) <= 0x15 && ((ver >> 16) & 0xff) >= 3,
	       "version register: an integrated APIC with at least 4 LVT entries");
	uint32_t svr = apic_read(APIC_SVR);
	diag("SVR 0x%x", svr);
	tap_ok((svr & 0x1ff) == (APIC_SVR_ENABLE | 0xff), "SVR: software-enabled, spurious vector 0xff");
}

void kmain(void)
{
	tap_plan(16);
	pic_init(PIC_VECTOR_BASE);	/* every legacy line masked */
	isr_set(TIMER_VECTOR, timer_isr);
	test_registers();

	uint32_t t16 = ticks_per_10ms(DIV_16);
	diag("timer: %u ticks per 10 ms divided by 16", t16);
	tap_ok(t16 > 100 && t16 < 0xfffffff0, "timer counts down (divide by 16)");
	uint64_t a16, tsc16, a1, tsc1;
	ticks_against_tsc(DIV_16, &a16, &tsc16);
	ticks_against_tsc(DIV_1, &a1, &tsc1);
	diag("divided by 16: %llu ticks in %llu TSC ticks; by 1: %llu in %llu", (unsigned long long)a16,
	     (unsigned long long)tsc16, (unsigned long long)a1, (unsigned long long)tsc1);
	/* (a1 / tsc1) / (a16 / tsc16) within 12..20, compared as products (no division). */
	tap_ok(a1 * tsc16 >= 12 * a16 * tsc1 && a1 * tsc16 <= 20 * a16 * tsc1 && a16,
	       "divide configuration: 1 counts 16 times as fast as 16");
	uint32_t per_ms = t16 / 10 ? t16 / 10 : 1;
	apic_write(APIC_TIMER_DIV, DIV_16);

	sti();
	/* One-shot, 20 ms. */
	apic_write(APIC_LVT_TIMER, APIC_TIMER_ONESHOT | TIMER_VECTOR);
	timer_irqs = 0;
	apic_write(APIC_TIMER_INIT, 20 * per_ms);
	int early = taken_before_expiry(count_ran_out);
	/* The interrupt may trail the count (an emulator's timer thread runs late); then 50 ms
	 * more for a second one that must not come. */
	wait_irqs(1, 5000);
	irqs_in(50);
	diag("one-shot 20 ms: %u interrupts", timer_irqs);
	tap_ok(!early, "one-shot: no interrupt before the count runs out");
	tap_ok(timer_irqs == 1, "one-shot: exactly one interrupt");
	tap_ok(apic_read(APIC_TIMER_CUR) == 0, "one-shot: current count reads 0 after it fired");

	/*
	 * Periodic, 5 ms: PERIODIC_IRQS interrupts without re-arming it, and not sooner than
	 * that many periods (timer ticks reckoned from the TSC, at the rate measured above).
	 * No upper bound on the time: a preempted emulator merges expiries.
	 */
	uint32_t period = 5 * per_ms;
	uint64_t ticks_per_mtsc = tsc16 ? udiv64(a16 << 20, tsc16) : 0;
	apic_write(APIC_LVT_TIMER, APIC_TIMER_PERIODIC | TIMER_VECTOR);
	timer_irqs = 0;
	uint64_t start = rdtsc();
	apic_write(APIC_TIMER_INIT, period);
	unsigned periodic = wait_irqs(PERIODIC_IRQS, 5000);
	uint64_t elapsed = ((rdtsc() - start) * ticks_per_mtsc) >> 20;
	diag("periodic 5 ms: %u interrupts in %llu ticks (period %u ticks)", periodic,
	     (unsigned long long)elapsed, period);
	tap_ok(periodic >= PERIODIC_IRQS, "periodic: %u interrupts without re-arming", PERIODIC_IRQS);
	/* 7/8: the TSC and the timer are read a few instructions apart. */
	tap_ok(elapsed * 8 >= (uint64_t)periodic * period * 7, "periodic: not faster than its period");
	apic_write(APIC_TIMER_INIT, 0);
	irqs_in(10);	/* one may have been on its way */
	unsigned stopped = irqs_in(30);
	tap_ok(stopped == 0, "periodic: initial count 0 stops it");

	/* Masked: counts down, never interrupts. */
	apic_write(APIC_LVT_TIMER, APIC_LVT_MASKED | APIC_TIMER_ONESHOT | TIMER_VECTOR);
	apic_write(APIC_TIMER_INIT, 2 * per_ms);
	unsigned masked = irqs_in(20);
	tap_ok(masked == 0 && apic_read(APIC_TIMER_CUR) == 0 && !apic_vector_bit(APIC_IRR, TIMER_VECTOR),
	       "masked LVT: the count runs out without an interrupt");

	uint32_t r[4];
	cpuid(1, 0, r);
	if (!(r[2] & (1u << 24))) {
		diag("CPUID.1:ECX 0x%x: no TSC-deadline timer", r[2]);
		tap_skip("TSC-deadline: one interrupt, not before the deadline", "CPUID.1:ECX.TSC_DEADLINE is 0");
		tap_skip("TSC-deadline: the MSR reads 0 after it fired", "CPUID.1:ECX.TSC_DEADLINE is 0");
		return;
	}
	uint64_t tsc_ms = tsc_per_ms();
	diag("TSC: %llu ticks per ms", (unsigned long long)tsc_ms);
	apic_write(APIC_LVT_TIMER, APIC_TIMER_TSC_DEADLINE | TIMER_VECTOR);
	timer_irqs = 0;
	tsc_deadline = rdtsc() + 20 * tsc_ms;
	wrmsr(MSR_TSC_DEADLINE, tsc_deadline);
	early = taken_before_expiry(deadline_passed);
	wait_irqs(1, 5000);
	irqs_in(50);
	diag("TSC-deadline 20 ms: %u interrupts", timer_irqs);
	tap_ok(!early && timer_irqs == 1, "TSC-deadline: one interrupt, not before the deadline");
	tap_ok(rdmsr(MSR_TSC_DEADLINE) == 0, "TSC-deadline: the MSR reads 0 after it fired");
}
