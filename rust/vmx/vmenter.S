/* SPDX-License-Identifier: GPL-2.0 */
/*
 * VM entry and exit: the one piece of shadowvm in assembly, because it must own every
 * general-purpose register. Modelled on KVM's arch/x86/kvm/vmx/vmenter.S.
 *
 * int shadowvm_vmx_run(u64 *regs, u64 launched)
 *   regs:     16 guest GPRs in encoding order (rax rcx rdx rbx rsp rbp rsi rdi r8..r15),
 *             then the guest CR2 (regs[16]), which VMX does not switch. regs[4] (rsp) is
 *             unused here: the guest RSP lives in the VMCS.
 *   launched: 0 -> VMLAUNCH, 1 -> VMRESUME.
 * Returns 0 after a VM exit (guest GPRs saved into regs), 1 if the entry failed
 * (VMfailValid/VMfailInvalid; the VMCS instruction-error field says why).
 * Called with interrupts off and the vCPU's VMCS current (HOST_RIP = shadowvm_vmx_exit).
 */
#include <linux/linkage.h>
#include <linux/objtool.h>
#include <asm/asm.h>
#include <asm/nospec-branch.h>
#include <asm/unwind_hints.h>
#include <asm/cpufeatures.h>
#include <asm/alternative.h>
#include <asm/msr-index.h>
#include <asm/percpu.h>
#include <asm/segment.h>

#define VMCS_HOST_RSP	0x6c14
#define R(n)		(n * 8)(%rdi)

.text
SYM_FUNC_START(shadowvm_vmx_run)
	push %rbp
	mov  %rsp, %rbp
	push %r15
	push %r14
	push %r13
	push %r12
	push %rbx
	push %rdi		/* regs, found again after the exit */
	push %rsi		/* launched */

	/* The exit comes back with RSP = HOST_RSP: this very stack position. */
	mov $VMCS_HOST_RSP, %eax
	vmwrite %rsp, %rax
	jbe .Lfail_early

	mov R(16), %rax
	mov %rax, %cr2
	mov R(0), %rax
	mov R(1), %rcx
	mov R(2), %rdx
	mov R(3), %rbx
	mov R(5), %rbp
	mov R(6), %rsi
	mov R(8), %r8
	mov R(9), %r9
	mov R(10), %r10
	mov R(11), %r11
	mov R(12), %r12
	mov R(13), %r13
	mov R(14), %r14
	mov R(15), %r15
	mov R(7), %rdi		/* last: this kills the regs pointer */

	/*
	 * Clear the CPU buffers the host filled (MDS, TAA, MMIO stale data, RFDS) where the
	 * kernel says this CPU needs it: KVM's VM_CLEAR_CPU_BUFFERS, with a selector of our
	 * own (x86_verw_sel is exported to KVM only). No memory access may follow it.
	 */
	ALTERNATIVE "", "verw shadowvm_verw_sel(%rip)", X86_FEATURE_CLEAR_CPU_BUF_VM

	testq $1, (%rsp)
	jz .Lvmlaunch

	UNWIND_HINT_SAVE
	vmresume
	jmp .Lvmfail
.Lvmlaunch:
	vmlaunch
	jmp .Lvmfail

SYM_INNER_LABEL_ALIGN(shadowvm_vmx_exit, SYM_L_GLOBAL)
	UNWIND_HINT_RESTORE
	ENDBR
	push %rdi		/* guest rdi */
	mov 2*8(%rsp), %rdi	/* regs */
	mov %rax, R(0)
	mov %rcx, R(1)
	mov %rdx, R(2)
	mov %rbx, R(3)
	mov %rbp, R(5)
	mov %rsi, R(6)
	mov %r8, R(8)
	mov %r9, R(9)
	mov %r10, R(10)
	mov %r11, R(11)
	mov %r12, R(12)
	mov %r13, R(13)
	mov %r14, R(14)
	mov %r15, R(15)
	pop R(7)
	mov %cr2, %rax
	mov %rax, R(16)
	xor %ebx, %ebx

.Lclear_regs:
	/* Leave no guest value in a register the host might speculate on. */
	xor %eax, %eax
	xor %ecx, %ecx
	xor %edx, %edx
	xor %ebp, %ebp
	xor %esi, %esi
	xor %edi, %edi
	xor %r8d, %r8d
	xor %r9d, %r9d
	xor %r10d, %r10d
	xor %r11d, %r11d
	xor %r12d, %r12d
	xor %r13d, %r13d
	xor %r14d, %r14d
	xor %r15d, %r15d

	/* The guest may have filled the return stack buffer with its own targets. */
	FILL_RETURN_BUFFER %rcx, RSB_CLEAR_LOOPS, X86_FEATURE_RSB_VMEXIT, X86_FEATURE_RSB_VMEXIT_LITE

	/*
	 * Legacy IBRS (not eIBRS) must be written again after running less privileged code,
	 * before the first unbalanced RET. The guest cannot change IA32_SPEC_CTRL (WRMSR
	 * exits and is refused), so the host's value is the current one.
	 */
	ALTERNATIVE "jmp .Lspec_ctrl_done", "", X86_FEATURE_KERNEL_IBRS
	mov $MSR_IA32_SPEC_CTRL, %ecx
	movl PER_CPU_VAR(x86_spec_ctrl_current), %eax
	movl PER_CPU_VAR(x86_spec_ctrl_current + 4), %edx
	wrmsr
	lfence
.Lspec_ctrl_done:

	/* The guest may have trained the branch history (BHI): KVM's CLEAR_BRANCH_HISTORY_VMEXIT. */
	ALTERNATIVE "", "call shadowvm_clear_bhb_loop", X86_FEATURE_CLEAR_BHB_VMEXIT

	mov %rbx, %rax
	pop %rbx		/* launched */
	pop %rbx		/* regs */
	pop %rbx
	pop %r12
	pop %r13
	pop %r14
	pop %r15
	pop %rbp
	RET

.Lvmfail:
	mov $1, %ebx
	jmp .Lclear_regs

.Lfail_early:
	mov $1, %ebx
	jmp .Lclear_regs
SYM_FUNC_END(shadowvm_vmx_run)

/*
 * The kernel's clear_bhb_loop (arch/x86/entry/entry_64.S), which 7.2 exports to KVM only:
 * enough taken branches, in calls whose RET sits in the upper half of a cache line, to
 * displace whatever branch history the guest left.
 */
SYM_FUNC_START(shadowvm_clear_bhb_loop)
	ANNOTATE_NOENDBR
	push	%rbp
	mov	%rsp, %rbp
	movl	$5, %ecx
	ANNOTATE_INTRA_FUNCTION_CALL
	call	1f
	jmp	5f
	.align 64, 0xcc
	.skip 32 - (.Lbhb_ret1 - 1f), 0xcc
	ANNOTATE_INTRA_FUNCTION_CALL
1:	call	2f
.Lbhb_ret1:	RET
	.align 64, 0xcc
	.skip 32 - 18, 0xcc
2:	movl	$5, %eax
3:	jmp	4f
	nop
4:	sub	$1, %eax
	jnz	3b
	sub	$1, %ecx
	jnz	1b
	RET
5:	lfence
	pop	%rbp
	RET
SYM_FUNC_END(shadowvm_clear_bhb_loop)
STACK_FRAME_NON_STANDARD(shadowvm_clear_bhb_loop)

.pushsection .data
/* Any writable data selector makes VERW clear the buffers (KVM uses x86_verw_sel). */
SYM_DATA(shadowvm_verw_sel, .word __KERNEL_DS)
.popsection
