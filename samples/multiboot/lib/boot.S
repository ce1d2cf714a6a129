/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Multiboot v1 entry of the test kernels.  Assembled twice: as is for the ELF kernels (the
 * loader reads the program headers), and with MB_AOUT_KLUDGE for flat binaries whose
 * header carries the load addresses (flag bit 16, the "a.out kludge").  With MODE_LM it
 * switches to long mode before calling into C, and the interrupt entry is 64-bit.
 */
	.section .note.GNU-stack, "", @progbits

#define MB_HEADER_MAGIC		0x1badb002
#define MB_PAGE_ALIGN		(1 << 0)	/* modules on page boundaries */
#define MB_MEMORY_INFO		(1 << 1)	/* mem_* and the memory map */
#define MB_AOUT_KLUDGE_FLAG	(1 << 16)	/* the address fields below are valid */
#ifdef MB_AOUT_KLUDGE
#define MB_FLAGS		(MB_PAGE_ALIGN | MB_MEMORY_INFO | MB_AOUT_KLUDGE_FLAG)
#else
#define MB_FLAGS		(MB_PAGE_ALIGN | MB_MEMORY_INFO)
#endif

	.section .multiboot, "a"
	.align 4
mb_header:
	.long	MB_HEADER_MAGIC
	.long	MB_FLAGS
	.long	-(MB_HEADER_MAGIC + MB_FLAGS)
#ifdef MB_AOUT_KLUDGE
	.long	mb_header		/* header_addr */
	.long	__image_start		/* load_addr: the first byte of the file */
	.long	__load_end		/* load_end_addr: end of the file's contents */
	.long	__bss_end		/* bss_end_addr: the loader zeroes up to here */
	.long	_start			/* entry_addr: not the load address */
#endif

	.section .text.boot, "ax"
	.code32
	.globl _start
_start:
	cli
	cld
	/* The loader's EAX and EBX, before any register is reused. */
	mov	%eax, mb_magic
	mov	%ebx, mb_info_addr
	/*
	 * Was .bss zero on entry?  The loader must zero it (ELF: memsz beyond filesz; kludge:
	 * load_end_addr to bss_end_addr); nothing of ours, not even the stack, is there yet.
	 */
	mov	$__bss_start, %edi
	mov	$__bss_end, %ecx
	sub	%edi, %ecx
	shr	$2, %ecx
	xor	%eax, %eax
	repe scasl
	setne	%al
	mov	%eax, bss_dirty_on_entry
	/* Zero it ourselves anyway: what runs next may rely on it. */
	mov	$__bss_start, %edi
	mov	$__bss_end, %ecx
	sub	%edi, %ecx
	xor	%eax, %eax
	rep stosb
	mov	$stack_top, %esp
	/* Our own GDT: the Multiboot spec says the loader's may be gone. */
	lgdt	gdt_ptr
	ljmp	$0x08, $1f
1:	mov	$0x10, %eax
	mov	%eax, %ds
	mov	%eax, %es
	mov	%eax, %ss
	mov	%eax, %fs
	mov	%eax, %gs
#ifdef MODE_LM
	/*
	 * Identity map of the low 4 GiB (RAM and the APIC page) with 2 MiB pages: PML4[0] ->
	 * PDPT, PDPT[0..3] -> boot_pd (four page directories in a row).
	 */
	mov	$boot_pdpt + 3, %eax			/* P | W */
	mov	%eax, boot_pml4
	xor	%ecx, %ecx
3:	mov	%ecx, %eax
	shl	$12, %eax
	add	$boot_pd + 3, %eax
	mov	%eax, boot_pdpt(, %ecx, 8)
	inc	%ecx
	cmp	$4, %ecx
	jb	3b
	xor	%ecx, %ecx
4:	mov	%ecx, %eax
	shl	$21, %eax
	or	$0x83, %eax				/* P | W | PS */
	cmp	$(0xc0000000 >> 21), %ecx
	jb	5f
	or	$0x18, %eax				/* PWT | PCD above 3 GiB: devices */
5:	mov	%eax, boot_pd(, %ecx, 8)		/* the high half stays 0 (.bss) */
	inc	%ecx
	cmp	$2048, %ecx
	jb	4b
	mov	$0x20, %eax				/* CR4.PAE */
	mov	%eax, %cr4
	mov	$boot_pml4, %eax
	mov	%eax, %cr3
	mov	$0xc0000080, %ecx			/* EFER.LME */
	rdmsr
	or	$0x100, %eax
	wrmsr
	mov	%cr0, %eax
	or	$0x80010000, %eax			/* PG | WP: long mode is active */
	mov	%eax, %cr0
	ljmp	$0x18, $6f
	.code64
6:	mov	$stack_top, %rsp
	call	rt_start
7:	cli
	hlt
	jmp	7b
	.code32
#else
	call	rt_start
2:	cli
	hlt
	jmp	2b
#endif

	.section .data
	.align 8
gdt:
	.quad	0
	.quad	0x00cf9a000000ffff		/* 0x08 flat 32-bit code, ring 0 */
	.quad	0x00cf92000000ffff		/* 0x10 flat data, ring 0 */
	.quad	0x00af9a000000ffff		/* 0x18 64-bit code, ring 0 */
gdt_end:
gdt_ptr:
	.word	gdt_end - gdt - 1
	.long	gdt

	.align 4
	.globl mb_magic, mb_info_addr, bss_dirty_on_entry
mb_magic:		.long 0
mb_info_addr:		.long 0
bss_dirty_on_entry:	.long 0

	.section .bss
#ifdef MODE_LM
	.align 4096
boot_pml4:	.skip 4096
boot_pdpt:	.skip 4096
	.globl boot_pd
boot_pd:	.skip 4 * 4096
#endif
	.align 16
	.skip 16384
stack_top:

/* ---------------------------------------------------------------- interrupt entry */
/*
 * One stub per vector.  The CPU pushes an error code for 8, 10-14, 17, 21, 29 and 30
 * (exceptions only: the kernels use those vectors for nothing else); the other stubs push
 * a 0 so the frame (struct regs) is the same for all.
 */
	.text
#ifdef MODE_LM
	.code64
#endif
	.altmacro
.macro STUB n
stub_\n:
	.if (\n == 8) || ((\n >= 10) && (\n <= 14)) || (\n == 17) || (\n == 21) || (\n == 29) || (\n == 30)
	.else
	push	$0
	.endif
	push	$\n
	jmp	isr_common
.endm
.macro STUB_ADDR n
#ifdef MODE_LM
	.quad	stub_\n
#else
	.long	stub_\n
#endif
.endm

	.set	vec, 0
	.rept	256
	STUB	%vec
	.set	vec, vec + 1
	.endr

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
	call	isr_dispatch		/* 16-byte aligned: the CPU aligned the frame, 17 pushes since */
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
	add	$16, %rsp		/* vector and error code */
	iretq
#else
	pushal
	mov	%esp, %eax
	push	%eax
	cld
	call	isr_dispatch
	add	$4, %esp
	popal
	add	$8, %esp		/* vector and error code */
	iret
#endif

	.section .rodata
	.align 8
	.globl isr_stubs
isr_stubs:
	.set	vec, 0
	.rept	256
	STUB_ADDR %vec
	.set	vec, vec + 1
	.endr
