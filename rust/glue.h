/* SPDX-License-Identifier: GPL-2.0 */
/* Prototypes of glue.c; the Rust side declares the same functions in glue.rs. */
#ifndef SHADOWVM_GLUE_H
#define SHADOWVM_GLUE_H
#include <linux/types.h>
#include <linux/smp.h>

struct page;
unsigned long shadowvm_irq_save(void);
void shadowvm_irq_restore(unsigned long flags);
int shadowvm_rdmsr_safe(u32 msr, u64 *val);
u64 shadowvm_page_to_phys(struct page *page);
void shadowvm_on_each_cpu(smp_call_func_t func, void *info);
#endif
