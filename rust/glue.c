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
#include <asm/mce.h>
#include <asm/segment.h>
#include <asm/gsseg.h>
#include <asm/cpufeature.h>
#include <linux/miscdevice.h>
#include <linux/fs.h>
#include <linux/module.h>
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

/*
 * Guest RAM: sized by the opener, so it must fail with ENOMEM rather than wake the OOM
 * killer, which picks its victim by RSS, and kernel pages are in no process's RSS. A
 * memory cgroup limit likewise fails the charge instead of killing (try_charge_memcg gives
 * up on __GFP_RETRY_MAYFAIL).
 */
struct page *shadowvm_alloc_guest_page(void)
{
	return alloc_page(GFP_KERNEL_ACCOUNT | __GFP_ZERO | __GFP_RETRY_MAYFAIL | __GFP_NOWARN);
}

void shadowvm_free_guest_page(struct page *page)
{
	__free_page(page);
}

u64 shadowvm_available_memory_bytes(void)
{
	return (u64)si_mem_available() << PAGE_SHIFT;
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

/* FRED hosts take NMIs through a different entry than an INT 2 can reach. */
bool shadowvm_fred_enabled(void)
{
	return cpu_feature_enabled(X86_FEATURE_FRED);
}

/* The VM whose guest last ran on this CPU (a number, never reused), for the IBPB below. */
static DEFINE_PER_CPU(u64, shadowvm_last_vm);

/*
 * Before a guest of another VM runs here: an indirect branch prediction barrier, so one
 * guest cannot steer the next one's predictions (KVM does it when it switches VMCS).
 */
void shadowvm_barrier_on_vm_switch(u64 vm)
{
	if (this_cpu_read(shadowvm_last_vm) == vm)
		return;
	this_cpu_write(shadowvm_last_vm, vm);
	if (cpu_feature_enabled(X86_FEATURE_IBPB))
		wrmsrq(MSR_IA32_PRED_CMD, PRED_CMD_IBPB);
}

/* An NMI that caused a VM exit, taken by the host's handler (non-FRED hosts only). */
void shadowvm_raise_nmi(void)
{
	asm volatile("int $2");
}

/* A machine check that caused a VM exit, handed to the host as KVM does. */
void shadowvm_machine_check(void)
{
#ifdef CONFIG_X86_MCE
	struct pt_regs regs = {
		.cs = 3, /* fake ring 3: the guest, whatever its CPL, is not the kernel */
		.flags = X86_EFLAGS_IF,
	};

	do_machine_check(&regs);
#endif
}

/*
 * The FS and GS selectors of the task, which a VM exit replaced with null ones. GS goes
 * through load_gs_index(), which keeps the kernel's GS base; reloading FS changes the FS
 * base, so the saved one is written back.
 */
void shadowvm_load_user_segments(u16 fs, u16 gs, u64 fs_base)
{
	if (gs)
		load_gs_index(gs);
	if (fs) {
		loadsegment(fs, fs);
		wrmsrq(MSR_FS_BASE, fs_base);
	}
}

/*
 * The kernel crate's miscdevice leaves file_operations.owner NULL, so an open file would
 * not pin the module and rmmod could free code the file still runs. The device gets a copy
 * of its operations with the owner set (misc_open() takes a module reference through it).
 */
static struct file_operations shadowvm_fops;

void shadowvm_misc_set_owner(struct miscdevice *misc)
{
	shadowvm_fops = *misc->fops;
	shadowvm_fops.owner = THIS_MODULE;
	WRITE_ONCE(misc->fops, &shadowvm_fops);
}

/* Whether the open file holds a reference on this module (see above). */
bool shadowvm_file_pins_module(struct file *file)
{
	return file->f_op && file->f_op->owner == THIS_MODULE;
}
