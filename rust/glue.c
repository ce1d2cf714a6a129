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
#include <linux/gfp.h>
#include <linux/jiffies.h>
#include <asm/desc.h>
#include <asm/fpu/api.h>
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

/* Engine pages: zeroed, accounted to the VM owner's memory cgroup, below 4 GiB on request. */
void *shadowvm_alloc_table_page(bool low)
{
	return (void *)get_zeroed_page(GFP_KERNEL_ACCOUNT | __GFP_NOWARN | (low ? GFP_DMA32 : 0));
}

void shadowvm_free_table_page(void *virt)
{
	free_page((unsigned long)virt);
}

u64 shadowvm_virt_to_phys(void *virt)
{
	return __pa(virt);
}

void *shadowvm_page_address(struct page *page)
{
	return page_address(page);
}

/* The guest's x87/SSE state lives in the registers while a window is open. */
void shadowvm_fpu_begin(void)
{
	kernel_fpu_begin();
}

void shadowvm_fpu_end(void)
{
	kernel_fpu_end();
}

/*
 * A VM exit leaves the GDT limit at 0xffff and the TSS limit at 0x67. Reload the GDT, and
 * mark the TSS limit stale: the kernel reloads TR on the way to a task that uses an I/O
 * bitmap (what invalidate_tss_limit() would do, without its KVM-only TR reload path).
 */
void shadowvm_restore_host_descriptors(void)
{
	this_cpu_write(__tss_limit_invalid, true);
	load_fixmap_gdt(raw_smp_processor_id());
}

bool shadowvm_need_resched(void)
{
	return need_resched();
}

void shadowvm_cond_resched(void)
{
	cond_resched();
}

unsigned long shadowvm_jiffies(void)
{
	return jiffies;
}
