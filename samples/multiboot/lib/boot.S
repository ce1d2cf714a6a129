/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Multiboot v1 entry of the test kernels.  Assembled twice: as is for the ELF kernels (the
 * loader reads the program headers), and with MB_AOUT_KLUDGE for flat binaries whose
 * header carries the load addresses (flag bit 16, the "a.out kludge").
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
	call	rt_start
2:	cli
	hlt
	jmp	2b

	.section .data
	.align 8
gdt:
	.quad	0
	.quad	0x00cf9a000000ffff		/* 0x08 flat 32-bit code, ring 0 */
	.quad	0x00cf92000000ffff		/* 0x10 flat data, ring 0 */
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
	.altmacro
.macro STUB n
stub_\n:
	.if (\n == 8) || ((\n >= 10) && (\n <= 14)) || (\n == 17) || (\n == 21) || (\n == 29) || (\n == 30)
	.else
	pushl	$0
	.endif
	pushl	$\n
	jmp	isr_common
.endm
.macro STUB_ADDR n
	.long	stub_\n
.endm

	.set	vec, 0
	.rept	256
	STUB	%vec
	.set	vec, vec + 1
	.endr

isr_common:
	pushal
	mov	%esp, %eax
	push	%eax
	cld
	call	isr_dispatch
	add	$4, %esp
	popal
	add	$8, %esp		/* vector and error code */
	iret

	.section .rodata
	.align 4
	.globl isr_stubs
isr_stubs:
	.set	vec, 0
	.rept	256
	STUB_ADDR %vec
	.set	vec, vec + 1
	.endr
