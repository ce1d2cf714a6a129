// SPDX-License-Identifier: GPL-2.0
/*
 * Static-inline kernel helpers that Rust cannot call directly. Kept tiny on purpose:
 * each function is a one-line wrapper; the logic lives in Rust.
 */
#include <linux/irqflags.h>
#include <linux/preempt.h>
#include <linux/smp.h>
#include <linux/mm.h>
#include <linux/sched/signal.h>
#include <asm/msr.h>
#include "glue.h"

unsigned long shadowvm_irq_save(void)
{
	unsigned long flags;

	local_irq_save(flags);
	return flags;
}

void shadowvm_irq_restore(unsigned long flags)
{
	local_irq_restore(flags);
}

/* Returns 0 on success, -EIO if the MSR does not exist (the #GP is caught). */
int shadowvm_rdmsr_safe(u32 msr, u64 *val)
{
	return rdmsrq_safe(msr, val);
}

u64 shadowvm_page_to_phys(struct page *page)
{
	return page_to_phys(page);
}

/* Runs func(info) on every online CPU with interrupts disabled, and waits. */
void shadowvm_on_each_cpu(smp_call_func_t func, void *info)
{
	on_each_cpu(func, info, 1);
}
