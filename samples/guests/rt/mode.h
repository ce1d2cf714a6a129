/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Paging-mode parameters. Every guest source is compiled once per mode with exactly one
 * of MODE_LM (4-level long mode), MODE_PAE (3-level PAE) or MODE_32 (2-level, 4 MiB PSE
 * pages) defined; everything mode-specific is derived here so the rest of the code is
 * written once.  Included by both C and assembler.
 */
#ifndef GUEST_MODE_H
#define GUEST_MODE_H

#if defined(MODE_LM) + defined(MODE_PAE) + defined(MODE_32) != 1
#error "define exactly one of MODE_LM, MODE_PAE, MODE_32"
#endif

/* Segment selectors (GDT laid out in boot.S). */
#define SEL_KCODE32	0x08	/* flat 32-bit ring-0 code (boot; kernel code in 32/PAE) */
#define SEL_KDATA	0x10	/* flat ring-0 data */
#define SEL_KCODE64	0x18	/* 64-bit ring-0 code (long mode only) */
#define SEL_UCODE	0x23	/* ring-3 code, 64-bit in long mode, 32-bit otherwise */
#define SEL_UDATA	0x2b	/* ring-3 data */
#define SEL_TSS		0x30	/* TSS (two slots in long mode) */
#define SEL_SPARE	0x40	/* a descriptor tests may write (gdt_spare) */

#ifdef MODE_LM
#define SEL_KCODE	SEL_KCODE64
#else
#define SEL_KCODE	SEL_KCODE32
#endif

/*
 * Guest-physical memory layout (all below the 32 MiB the boot protocol guarantees):
 *   0x00100000  image (text, data, bss with stacks); must end below FRAME_POOL_START
 *   0x00400000  frame pool: 4 KiB frames for page tables and test/benchmark pages
 *   0x01800000  large-page area: 8 MiB, 4 MiB aligned, for the large-page tests
 *   0x02000000  end of what any guest uses
 */
#define FRAME_POOL_START	0x00400000
#define FRAME_POOL_END		0x01800000
#define LARGE_AREA		0x01800000
#define GUEST_MEM_USED		0x02000000

#ifdef __ASSEMBLER__
/* Word-size helpers for the few assembler routines written once for both widths. */
#ifdef MODE_LM
#define WORD		.quad
#define WSIZE		8
#else
#define WORD		.long
#define WSIZE		4
#endif
#else /* C */

#include <stdint.h>
#include <stddef.h>

#if defined(MODE_LM)
typedef uint64_t pte_t;
#define MODE_NAME	"lm"
#define PT_LEVELS	4
#define PT_INDEX_BITS	9
#define PTE_ADDR_MASK	0x000ffffffffff000ULL
#define LARGE_SHIFT	21		/* 2 MiB pages in the PD */
#define HAVE_NX		1
#elif defined(MODE_PAE)
typedef uint64_t pte_t;
#define MODE_NAME	"pae"
#define PT_LEVELS	3
#define PT_INDEX_BITS	9
#define PTE_ADDR_MASK	0x000ffffffffff000ULL
#define LARGE_SHIFT	21
#define HAVE_NX		1
#else
typedef uint32_t pte_t;
#define MODE_NAME	"32"
#define PT_LEVELS	2
#define PT_INDEX_BITS	10
#define PTE_ADDR_MASK	0xfffff000U
#define LARGE_SHIFT	22		/* 4 MiB PSE pages in the PD */
#define HAVE_NX		0		/* 2-level entries have no XD bit */
#endif

#define PAGE_SIZE	4096UL
#define LARGE_SIZE	(1UL << LARGE_SHIFT)

/* Paging-structure entry bits (same positions in all three formats). */
#define PTE_P		((pte_t)1 << 0)
#define PTE_W		((pte_t)1 << 1)
#define PTE_U		((pte_t)1 << 2)
#define PTE_PWT		((pte_t)1 << 3)
#define PTE_PCD		((pte_t)1 << 4)
#define PTE_A		((pte_t)1 << 5)
#define PTE_D		((pte_t)1 << 6)
#define PTE_PS		((pte_t)1 << 7)	/* in PDE (and PDPTE in long mode): large page */
#define PTE_G		((pte_t)1 << 8)
#define PTE_COW		((pte_t)1 << 9)	/* software (AVL) bit: copy-on-write page */
#if HAVE_NX
#define PTE_NX		((pte_t)1 << 63)
#else
#define PTE_NX		((pte_t)0)
#endif

/* #PF error code bits. */
#define PF_P		0x01
#define PF_W		0x02
#define PF_U		0x04
#define PF_RSVD		0x08
#define PF_I		0x10

/* Level n (1 = PT, 2 = PD, ...) maps va bits [shift(n), shift(n) + index bits). */
static inline unsigned pt_shift(int level)
{
	return 12 + (unsigned)(level - 1) * PT_INDEX_BITS;
}

static inline unsigned pt_index(uintptr_t va, int level)
{
	unsigned bits = PT_INDEX_BITS;
#ifdef MODE_PAE
	if (level == 3)
		bits = 2;	/* the PDPT has 4 entries */
#endif
	return (unsigned)(va >> pt_shift(level)) & ((1U << bits) - 1);
}

#endif /* __ASSEMBLER__ */
#endif
