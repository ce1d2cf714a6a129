/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Guest entry, descriptor tables and the few routines that must be assembler: exception
 * entry stubs, fault probes and the ring-3 round trip.  Assembled once per paging mode;
 * in long mode the 32-bit boot part is .code32 inside a 64-bit object.
 */
#include "mode.h"

#ifdef MODE_LM
#define RAX %rax
#define RBX %rbx
#define RCX %rcx
#define RDX %rdx
#define RSP %rsp
#define MOVW movq
#else
#define RAX %eax
#define RBX %ebx
#define RCX %ecx
#define RDX %edx
#define RSP %esp
#define MOVW movl
#endif

	.section .note.GNU-stack, "", @progbits

/* ---------------------------------------------------------------- Multiboot v1 header */
#define MB_MAGIC	0x1badb002
#define MB_FLAGS	0		/* no requests: the loader uses the ELF program headers */
	.section .multiboot, "a"
	.align 4
	.long MB_MAGIC, MB_FLAGS, -(MB_MAGIC + MB_FLAGS)

/* ---------------------------------------------------------------- entry, 32-bit, paging off */
	.section .text.boot, "ax"
	.code32
	.globl _start
_start:
	cli
	cld
	/* What the loader passed (rt.c reads the info for the memory size and command line). */
	mov	%eax, multiboot_magic
	mov	%ebx, multiboot_info
	/* Zero .bss ourselves: a loader may copy only the file contents. */
	mov	$__bss_start, %edi
	mov	$__bss_end, %ecx
	sub	%edi, %ecx
	xor	%eax, %eax
	rep stosb
	mov	$boot_stack_top, %esp
	/* Our own GDT: nothing the loader left can be relied on. */
	lgdt	gdt_ptr
	ljmp	$SEL_KCODE32, $1f
1:	mov	$SEL_KDATA, %eax
	mov	%eax, %ds
	mov	%eax, %es
	mov	%eax, %ss
	mov	%eax, %fs
	mov	%eax, %gs
#ifdef MODE_LM
	/*
	 * Long mode needs paging, and the C code is 64-bit, so the first page tables are built
	 * here: the low 32 MiB identity-mapped with 2 MiB pages.  rt_start() switches to the
	 * tables built by mm.c right away.
	 */
	mov	$boot_pdpt + 3, %eax
	mov	%eax, boot_pml4
	mov	$boot_pd + 3, %eax
	mov	%eax, boot_pdpt
	xor	%ecx, %ecx
2:	mov	%ecx, %eax
	shl	$21, %eax
	or	$0x83, %eax			/* P | W | PS */
	mov	%eax, boot_pd(, %ecx, 8)
	inc	%ecx
	cmp	$(GUEST_MEM_USED >> 21), %ecx
	jb	2b
	mov	$0x20, %eax			/* CR4 = PAE only, whatever the loader left */
	mov	%eax, %cr4
	mov	$boot_pml4, %eax
	mov	%eax, %cr3
	mov	$0xc0000080, %ecx		/* EFER.LME */
	rdmsr
	or	$0x100, %eax
	wrmsr
	mov	%cr0, %eax
	or	$0x80010001, %eax		/* PG | WP | PE: long mode is now active */
	mov	%eax, %cr0
	ljmp	$SEL_KCODE64, $3f
	.code64
3:	mov	$boot_stack_top, %rsp
	call	rt_start
#else
	call	rt_start
#endif
4:	hlt
	jmp	4b

/* ---------------------------------------------------------------- GDT */
	.section .data
	.align 16
	.globl gdt_tss
gdt:
	.quad	0
	.quad	0x00cf9a000000ffff		/* 0x08 ring-0 code, 32-bit */
	.quad	0x00cf92000000ffff		/* 0x10 ring-0 data */
	.quad	0x00af9a000000ffff		/* 0x18 ring-0 code, 64-bit */
#ifdef MODE_LM
	.quad	0x00affa000000ffff		/* 0x20 ring-3 code, 64-bit */
#else
	.quad	0x00cffa000000ffff		/* 0x20 ring-3 code, 32-bit */
#endif
	.quad	0x00cff2000000ffff		/* 0x28 ring-3 data */
gdt_tss:
	.quad	0, 0				/* 0x30 TSS, filled in by rt.c */
	.globl gdt_spare
gdt_spare:
	.quad	0				/* 0x40 free for tests (SEL_SPARE) */
gdt_end:
	.align 4
gdt_ptr:
	.word	gdt_end - gdt - 1
	.long	gdt
	/* In .data, not .bss: stored before .bss is zeroed. */
	.globl multiboot_magic, multiboot_info
multiboot_magic:
	.long	0
multiboot_info:
	.long	0

/* ---------------------------------------------------------------- boot stack and tables */
	.section .bss
	.align 4096
#ifdef MODE_LM
boot_pml4:	.skip 4096
boot_pdpt:	.skip 4096
boot_pd:	.skip 4096
#endif
	.skip 16384
boot_stack_top:

/* ---------------------------------------------------------------- exception entry */
	.text
#ifdef MODE_LM
	.code64
#endif
/* Vectors with a CPU-pushed error code; the others push a 0 so the frame is uniform. */
.macro ISR vec
isr\vec:
	.if (\vec == 8) || (\vec == 10) || (\vec == 11) || (\vec == 12) || (\vec == 13) || (\vec == 14) || (\vec == 17) || (\vec == 21) || (\vec == 29) || (\vec == 30)
	.else
	push	$0
	.endif
	push	$\vec
	jmp	isr_common
.endm
	.irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,128
	ISR	\v
	.endr

/* Saves the registers as a struct frame (rt.h), calls exc_dispatch(frame), and returns. */
isr_common:
#ifdef MODE_LM
	push	%rax
	push	%rcx
	push	%rdx
	push	%rbx
	push	%rbp
	push	%rsi
	push	%rdi
	push	%r8
	push	%r9
	push	%r10
	push	%r11
	push	%r12
	push	%r13
	push	%r14
	push	%r15
	mov	%rsp, %rdi
	cld
	call	exc_dispatch
	pop	%r15
	pop	%r14
	pop	%r13
	pop	%r12
	pop	%r11
	pop	%r10
	pop	%r9
	pop	%r8
	pop	%rdi
	pop	%rsi
	pop	%rbp
	pop	%rbx
	pop	%rdx
	pop	%rcx
	pop	%rax
	add	$16, %rsp
	iretq
#else
	pushal
	mov	%esp, %eax
	push	%eax
	cld
	call	exc_dispatch
	add	$4, %esp
	popal
	add	$8, %esp
	iret
#endif

	.section .rodata
	.globl isr_table
	.align 8
isr_table:
	.irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,128
	WORD	isr\v
	.endr

/* ---------------------------------------------------------------- fault probes */
/*
 * Each probe does one access.  Before it, probe_recover is set to probe_fail and the stack
 * pointer saved; a #PF that no hook fixes makes exc_dispatch resume at probe_fail, which
 * restores the stack (a faulting probe_exec has pushed a return address) and returns 1.
 */
	.section .bss
	.align 8
	.globl probe_recover
probe_recover:	.skip WSIZE
probe_sp:	.skip WSIZE
user_ksp:	.skip WSIZE

	.text
#ifdef MODE_LM
/* Load argument n of a C call into reg (SysV x86-64 / i386 cdecl, before any push). */
.macro ARG n, reg
	.if \n == 0
	mov	%rdi, \reg
	.elseif \n == 1
	mov	%rsi, \reg
	.endif
.endm
#else
.macro ARG n, reg
	mov	(4 + 4 * \n)(%esp), \reg
.endm
#endif

.macro PROBE_BEGIN
	mov	RSP, probe_sp
	MOVW	$probe_fail, probe_recover
.endm
.macro PROBE_END
	MOVW	$0, probe_recover
.endm

	.globl probe_read, probe_write, probe_exec
/* int probe_read(uintptr_t va, uint32_t *val) */
probe_read:
	ARG	0, RCX
	PROBE_BEGIN
	mov	(RCX), %eax
	PROBE_END
	ARG	1, RCX
	mov	%eax, (RCX)
	xor	%eax, %eax
	ret

/* int probe_write(uintptr_t va, uint32_t val) */
probe_write:
	ARG	0, RCX
	ARG	1, RDX
	PROBE_BEGIN
	mov	%edx, (RCX)
	PROBE_END
	xor	%eax, %eax
	ret

/* int probe_exec(uintptr_t va): calls va, which must return. */
probe_exec:
	ARG	0, RCX
	PROBE_BEGIN
	call	*RCX
	PROBE_END
	xor	%eax, %eax
	ret

probe_fail:
	mov	probe_sp, RSP
	PROBE_END
	mov	$1, %eax
	ret

/* ---------------------------------------------------------------- ring 3 round trip */
/*
 * uint32_t user_enter(entry, stack, addr, op, val): saves the callee-saved registers and
 * the stack pointer, then IRETs to ring 3 at entry with RBX = addr, RCX = op, RDX = val.
 * The ring-3 code ends with int $0x80 (or faults); exc_dispatch then calls
 * user_return(value), which resumes here on the saved stack and returns value.
 */
	.globl user_enter, user_return
user_enter:
#ifdef MODE_LM
	push	%rbx
	push	%rbp
	push	%r12
	push	%r13
	push	%r14
	push	%r15
	mov	%rsp, user_ksp
	mov	%rdx, %rbx
	mov	%r8, %rdx
	push	$SEL_UDATA		/* SS */
	push	%rsi			/* RSP */
	push	$2			/* RFLAGS: IF=0, IOPL=0 */
	push	$SEL_UCODE		/* CS */
	push	%rdi			/* RIP */
	iretq
#else
	push	%ebx
	push	%ebp
	push	%esi
	push	%edi
	mov	%esp, user_ksp
	mov	20(%esp), %eax		/* entry */
	mov	24(%esp), %esi		/* stack */
	mov	28(%esp), %ebx		/* addr */
	mov	32(%esp), %ecx		/* op */
	mov	36(%esp), %edx		/* val */
	mov	$SEL_UDATA, %edi
	mov	%edi, %ds
	mov	%edi, %es
	push	$SEL_UDATA		/* SS */
	push	%esi			/* ESP */
	push	$2			/* EFLAGS: IF=0, IOPL=0 */
	push	$SEL_UCODE		/* CS */
	push	%eax			/* EIP */
	iret
#endif

/* noreturn void user_return(uintptr_t value) */
user_return:
#ifdef MODE_LM
	mov	%rdi, %rax
	mov	user_ksp, %rsp
	pop	%r15
	pop	%r14
	pop	%r13
	pop	%r12
	pop	%rbp
	pop	%rbx
	ret
#else
	mov	4(%esp), %eax
	mov	user_ksp, %esp
	mov	$SEL_KDATA, %ecx
	mov	%ecx, %ds
	mov	%ecx, %es
	pop	%edi
	pop	%esi
	pop	%ebp
	pop	%ebx
	ret
#endif

/*
 * The ring-3 code.  It gets its own page (linker script) that tests map with the U bit;
 * position-independent, so it runs at whatever address it is mapped.
 */
	.section .usertext, "ax"
	.globl user_blob
user_blob:
	test	%ecx, %ecx
	jnz	1f
	mov	(RBX), %eax		/* USER_READ */
	int	$0x80
1:	mov	%edx, (RBX)		/* USER_WRITE */
	xor	%eax, %eax
	int	$0x80
2:	jmp	2b
