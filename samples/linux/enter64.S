/* SPDX-License-Identifier: GPL-2.0 */
/*
 * enter64: a Multiboot v1 kernel that lets QEMU run what the launcher's Linux loader
 * (samples/launcher/src/linux.rs) built, before the launcher can run it itself.
 *
 * Its modules are the regions of guest memory the loader wrote, each with its
 * guest-physical address as the module's command line ("0x1000000"): the low region
 * (GDT, TSS, page tables, zero page, command line) last. It copies each to its address,
 * then enters the loaded kernel with the loader's own GDT and page tables: CR3 = the
 * loader's PML4, long mode, CS = 0x10 and DS/ES/SS = 0x18 from the loader's GDT, RSI =
 * the zero page, RIP = the first module's address + 0x200 (the 64-bit entry), interrupts
 * off. The values are those of linux::load's entry state
 * (the state a backend's set_state gets) (its unit tests check them); what
 * this adds is that Linux boots from what the loader put in memory.
 */
	.section .note.GNU-stack, "", @progbits

#define MB_MAGIC	0x1badb002
#define MB_FLAGS	(1 << 0)	/* modules on page boundaries */
#define PML4		0x2000		/* boot::PML4_ADDR */
#define GDT		0x1000		/* boot::GDT_ADDR */
#define GDT_LIMIT	47		/* six descriptors */
#define ZERO_PAGE	0x10000		/* linux::ZERO_PAGE_ADDR */
#define BOOT_CS		0x10
#define BOOT_DS		0x18
#define MSR_EFER	0xc0000080
#define EFER_LME	(1 << 8)
#define CR4_PAE		(1 << 5)
#define CR0_PG_PE	0x80000001

	.text
	.code32
	/* The header first: the loader looks for it in the file's first 8 KiB. */
	.align 4
	.long	MB_MAGIC
	.long	MB_FLAGS
	.long	-(MB_MAGIC + MB_FLAGS)

	.globl _start
_start:
	cli
	cld
	mov	$stack_top, %esp
	testl	$(1 << 3), (%ebx)	/* flags: mods_* valid */
	jz	fail
	mov	20(%ebx), %ebp		/* mods_count */
	test	%ebp, %ebp
	jz	fail
	mov	24(%ebx), %ebx		/* mods_addr: {mod_start, mod_end, string, reserved} */
	/* The entry point: the first module (the kernel) at its address + 0x200. */
	push	8(%ebx)
	call	parse_hex
	add	$4, %esp
	add	$0x200, %eax
	mov	%eax, entry
next_module:
	push	8(%ebx)
	call	parse_hex		/* destination */
	add	$4, %esp
	mov	%eax, %edi
	mov	(%ebx), %esi		/* source */
	mov	4(%ebx), %ecx
	sub	%esi, %ecx		/* length */
	/* The low region may cover the Multiboot info: it is the last module, and nothing
	 * is read from the info after its copy. Sources are above 1 MiB, destinations below
	 * them or far above (16 MiB, the initrd at the top of RAM): a forward copy is safe. */
	rep movsb
	add	$16, %ebx
	dec	%ebp
	jnz	next_module

	mov	entry, %edi
	mov	$PML4, %eax
	mov	%eax, %cr3
	mov	%cr4, %eax
	or	$CR4_PAE, %eax
	mov	%eax, %cr4
	mov	$MSR_EFER, %ecx
	rdmsr
	or	$EFER_LME, %eax
	wrmsr
	mov	%cr0, %eax
	or	$CR0_PG_PE, %eax
	mov	%eax, %cr0
	lgdt	gdtr
	ljmp	$BOOT_CS, $long_mode

	.code64
long_mode:
	mov	$BOOT_DS, %eax
	mov	%eax, %ds
	mov	%eax, %es
	mov	%eax, %ss
	mov	%eax, %fs
	mov	%eax, %gs
	mov	$ZERO_PAGE, %esi
	xor	%ebp, %ebp
	xor	%ebx, %ebx
	mov	%edi, %eax
	xor	%edi, %edi
	jmp	*%rax

	.code32
/*
 * parse_hex(const char *s): the last word of s ("file 0x1000000": QEMU passes the file
 * name too), "0x" and lowercase hex digits, to EAX; a bad string ends the run.
 */
parse_hex:
	push	%esi
	mov	8(%esp), %esi
	mov	%esi, %edx
0:	movzbl	(%edx), %eax
	inc	%edx
	test	%eax, %eax
	jz	4f
	cmp	$' ', %eax
	jne	0b
	mov	%edx, %esi		/* after the last space so far */
	jmp	0b
4:	cmpw	$0x7830, (%esi)		/* "0x" */
	jne	fail
	add	$2, %esi
	xor	%eax, %eax
1:	movzbl	(%esi), %edx
	test	%edx, %edx
	jz	3f
	sub	$'0', %edx
	cmp	$9, %edx
	jbe	2f
	sub	$('a' - '0' - 10), %edx
	cmp	$10, %edx
	jb	fail
	cmp	$15, %edx
	ja	fail
2:	shl	$4, %eax
	or	%edx, %eax
	inc	%esi
	jmp	1b
3:	pop	%esi
	ret

/* No usable module list: the exit device with 0x7f (QEMU status 255). */
fail:
	mov	$0x7f, %eax
	mov	$0xf4, %dx
	outl	%eax, %dx
	hlt
	jmp	fail

	.data
	.align 8
gdtr:
	.word	GDT_LIMIT
	.long	GDT
entry:
	.long	0

	.bss
	.align 16
	.space	4096
stack_top:
