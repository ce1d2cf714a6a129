// SPDX-License-Identifier: GPL-2.0
/*
 * Guest memory management, written once for the three paging modes (mode.h supplies the
 * entry format): a bump frame allocator, page-table builders, paging enable, the
 * recursive mapping, and the demand-paging and copy-on-write fault handlers that tests and
 * benchmarks install.  All page tables are reached through the identity map of the low
 * 32 MiB, which every address space carries (supervisor-only, large pages).
 */
#include "rt.h"

uintptr_t kernel_cr3;
static uintptr_t pool_next = FRAME_POOL_START;
static uint16_t refcount[GUEST_MEM_USED >> 12];	/* sharers of a CoW frame; 0 means 1 */

/* ---------------------------------------------------------------- frames */
static uintptr_t frame_alloc_raw(void)
{
	if (pool_next >= FRAME_POOL_END)
		panic("out of guest frames");
	uintptr_t pa = pool_next;
	pool_next += PAGE_SIZE;
	refcount[pa >> 12] = 0;
	return pa;
}

uintptr_t frame_alloc(void)
{
	uintptr_t pa = frame_alloc_raw();
	memset((void *)pa, 0, PAGE_SIZE);
	return pa;
}

uintptr_t frames_mark(void) { return pool_next; }
void frames_release(uintptr_t mark) { pool_next = mark; }
unsigned frames_free(void) { return (unsigned)((FRAME_POOL_END - pool_next) >> 12); }

/* ---------------------------------------------------------------- page tables */
uintptr_t pte_addr(pte_t e) { return (uintptr_t)(e & PTE_ADDR_MASK); }

/* Non-leaf entries are fully permissive so the leaf decides, except where a test says. */
static pte_t table_flags(int level)
{
#ifdef MODE_PAE
	if (level == 3)
		return PTE_P;	/* PAE PDPTEs have no R/W, U/S or A bits (reserved) */
#endif
	(void)level;
	return PTE_P | PTE_W | PTE_U;
}

volatile pte_t *pt_entry(uintptr_t cr3, uintptr_t va, int level, int alloc)
{
	volatile pte_t *table = (volatile pte_t *)(cr3 & (uintptr_t)PTE_ADDR_MASK);
	for (int l = PT_LEVELS; l > level; l--) {
		volatile pte_t *e = &table[pt_index(va, l)];
		if (!(*e & PTE_P)) {
			if (!alloc)
				return NULL;
			*e = frame_alloc() | table_flags(l);
		} else if (l <= 3 && (*e & PTE_PS)) {
			return NULL;	/* a large page is in the way */
		}
		table = (volatile pte_t *)pte_addr(*e);
	}
	return &table[pt_index(va, level)];
}

void map_page(uintptr_t cr3, uintptr_t va, uintptr_t pa, pte_t flags)
{
	*pt_entry(cr3, va, 1, 1) = (pte_t)pa | flags;
}

void map_large(uintptr_t cr3, uintptr_t va, uintptr_t pa, pte_t flags)
{
	*pt_entry(cr3, va, 2, 1) = (pte_t)pa | flags | PTE_PS;
}

volatile pte_t *pte_of(uintptr_t cr3, uintptr_t va)
{
	return pt_entry(cr3, va, 1, 0);
}

uintptr_t aspace_new(void)
{
	uintptr_t root = frame_alloc();
#ifdef MODE_PAE
	/*
	 * The CPU loads the four PDPTEs at CR3 write time, so all four page directories exist
	 * from the start and PDPTEs never change in a loaded address space.
	 */
	for (int i = 0; i < 4; i++)
		((pte_t *)root)[i] = frame_alloc() | PTE_P;
#endif
	for (uintptr_t pa = 0; pa < GUEST_MEM_USED; pa += LARGE_SIZE)
		map_large(root, pa, pa, PTE_P | PTE_W);
	return root;
}

void mm_init(void)
{
	kernel_cr3 = aspace_new();
#ifdef MODE_LM
	write_cr3(kernel_cr3);	/* leave the boot tables; paging is already on */
#else
	/* The guest turns paging on itself, from the paging-off start state. */
	write_cr4(PT_LEVELS == 2 ? CR4_PSE : CR4_PAE);	/* nothing else: no PGE, PCIDE... */
	write_cr3(kernel_cr3);
	write_cr0(read_cr0() | CR0_PG | CR0_WP);
#endif
}

/* ---------------------------------------------------------------- recursive mapping */
/*
 * Long mode and 32-bit paging point one root entry back at the root; PAE, whose root (the
 * PDPT) is not a page table, instead maps the four page directories as the page tables of
 * the top 8 MiB (PDEs 508..511 of the last directory).  Either way the PTE of va appears
 * at a fixed window address, and writes there are ordinary page-table writes.
 */
#if defined(MODE_LM)
#define SELF_SLOT	510UL
#define SELF_BASE	(0xffff000000000000UL | (SELF_SLOT << 39))
#elif defined(MODE_PAE)
#define SELF_BASE	0xff800000UL
#else
#define SELF_SLOT	1023UL
#define SELF_BASE	(SELF_SLOT << 22)
#endif

void selfmap_install(uintptr_t cr3)
{
	volatile pte_t *root = (volatile pte_t *)cr3;
#ifdef MODE_PAE
	volatile pte_t *pd3 = (volatile pte_t *)pte_addr(root[3]);
	for (int i = 0; i < 4; i++)
		pd3[508 + i] = (pte_t)pte_addr(root[i]) | PTE_P | PTE_W;
#else
	root[SELF_SLOT] = (pte_t)cr3 | PTE_P | PTE_W;
#endif
}

uintptr_t selfmap_pte_va(uintptr_t va)
{
#ifdef MODE_LM
	va &= 0x0000ffffffffffffUL;	/* drop the sign extension */
#endif
	return SELF_BASE + (va >> 12) * sizeof(pte_t);
}

/* ---------------------------------------------------------------- demand paging */
static struct demand_region *demand;

static int demand_fault(struct frame *f, uintptr_t cr2, uintptr_t err)
{
	(void)f;
	if ((err & PF_P) || cr2 < demand->start || cr2 >= demand->end)
		return 0;
	/* Not-present -> present needs no INVLPG: the CPU caches no not-present entries. */
	uintptr_t va = cr2 & ~(PAGE_SIZE - 1);
	if (demand->window)
		map_page(read_cr3(), va, va - demand->start, PTE_P);
	else
		map_page(read_cr3(), va, frame_alloc(), PTE_P | PTE_W);
	demand->faults++;
	return 1;
}

void demand_install(struct demand_region *r)
{
	demand = r;
	pf_hook = demand_fault;
}

/* ---------------------------------------------------------------- copy-on-write */
struct cow_stats cow_stats;

void cow_fork(uintptr_t parent, uintptr_t child, uintptr_t va, unsigned npages)
{
	for (unsigned i = 0; i < npages; i++, va += PAGE_SIZE) {
		volatile pte_t *pe = pte_of(parent, va);
		if (!pe || !(*pe & PTE_P))
			continue;
		pte_t e = *pe;
		if (e & PTE_W)	/* writable pages become CoW; read-only ones are just shared */
			e = (e & ~PTE_W) | PTE_COW;
		*pe = e;
		*pt_entry(child, va, 1, 1) = e;
		uint16_t *rc = &refcount[pte_addr(e) >> 12];
		*rc = (uint16_t)((*rc ? *rc : 1) + 1);
	}
	if ((read_cr3() & PTE_ADDR_MASK) == parent)
		write_cr3(parent);	/* the parent lost write access: flush its TLB */
}

static int cow_fault(struct frame *f, uintptr_t cr2, uintptr_t err)
{
	(void)f;
	if ((err & (PF_P | PF_W)) != (PF_P | PF_W))
		return 0;
	uintptr_t va = cr2 & ~(PAGE_SIZE - 1);
	volatile pte_t *pe = pte_of(read_cr3(), va);
	if (!pe || !(*pe & PTE_COW))
		return 0;
	uintptr_t pa = pte_addr(*pe);
	uint16_t *rc = &refcount[pa >> 12];
	cow_stats.faults++;
	if (*rc > 1) {
		uintptr_t copy = frame_alloc_raw();
		memcpy((void *)copy, (void *)pa, PAGE_SIZE);
		(*rc)--;
		*pe = (*pe & ~(PTE_ADDR_MASK | PTE_COW)) | (pte_t)copy | PTE_W;
		cow_stats.copies++;
	} else {
		*pe = (*pe & ~PTE_COW) | PTE_W;	/* last sharer: take the frame over */
		cow_stats.reuses++;
	}
	invlpg(va);	/* present -> more permissive: flush so the retry sees it */
	return 1;
}

void cow_install(void)
{
	cow_stats = (struct cow_stats){ 0, 0, 0 };
	pf_hook = cow_fault;
}
