/* SPDX-License-Identifier: GPL-2.0 */
/* Prototypes of glue.c; the Rust side declares the same functions in glue.rs. */
#ifndef SHADOWVM_GLUE_H
#define SHADOWVM_GLUE_H
#include <linux/types.h>
#include <linux/smp.h>

struct page;
struct miscdevice;
struct file;
unsigned long shadowvm_irq_save(void);
void shadowvm_irq_restore(unsigned long flags);
int shadowvm_rdmsr_safe(u32 msr, u64 *val);
u64 shadowvm_page_to_phys(struct page *page);
void shadowvm_on_each_cpu(smp_call_func_t func, void *info);
void *shadowvm_alloc_table_page(bool low);
struct page *shadowvm_alloc_guest_page(void);
void shadowvm_free_guest_page(struct page *page);
u64 shadowvm_available_memory_bytes(void);
void shadowvm_free_table_page(void *virt);
u64 shadowvm_virt_to_phys(void *virt);
void *shadowvm_page_address(struct page *page);
void shadowvm_fpu_begin(void);
void shadowvm_fpu_end(void);
void shadowvm_restore_host_descriptors(void);
bool shadowvm_need_resched(void);
void shadowvm_cond_resched(void);
unsigned long shadowvm_jiffies(void);
bool shadowvm_fred_enabled(void);
void shadowvm_barrier_on_vm_switch(u64 vm);
void shadowvm_raise_nmi(void);
void shadowvm_machine_check(void);
void shadowvm_load_user_segments(u16 fs, u16 gs, u64 fs_base);
void shadowvm_misc_set_owner(struct miscdevice *misc);
bool shadowvm_file_pins_module(struct file *file);
#endif
