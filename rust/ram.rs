// SPDX-License-Identifier: GPL-2.0

//! Guest RAM: the pages of one VM's guest-physical memory, in up to
//! [`uapi::SHADOWVM_MEMORY_SLOTS`] slots, and the accessors the vCPU, the MMU engine and
//! mmap use. Every guest-physical address outside a slot is MMIO.
//!
//! Owned by the VM ([`crate::vm`]), lent to the vCPU for each RUN; it depends on neither.

use crate::mmu::{GuestFrame, GuestMemory};
use crate::uapi;
use core::ptr::NonNull;
use kernel::{bindings, page::BorrowedPage, prelude::*};

/// One page of guest RAM.
///
/// Its own type rather than a [`Page`](kernel::page::Page) because the allocation must fail instead of waking
/// the OOM killer (see [`crate::glue::alloc_guest_page`]), which `Page::alloc_page`'s flags
/// cannot ask for.
///
/// # Invariants
///
/// `self.0` is an order-0 page from [`crate::glue::alloc_guest_page`] whose one reference
/// `self` owns.
struct GuestPage(NonNull<bindings::page>);

// SAFETY: A page reference may be dropped on any thread.
unsafe impl Send for GuestPage {}
// SAFETY: `&GuestPage` only lends the page out; its contents are not accessed through it.
unsafe impl Sync for GuestPage {}

impl GuestPage {
    /// A zeroed page charged to the caller's memory cgroup; `ENOMEM` when memory is short.
    fn new() -> Result<Self> {
        // INVARIANT: a fresh page whose reference we own.
        Ok(Self(crate::glue::alloc_guest_page().ok_or(ENOMEM)?))
    }

    /// The page as the `kernel` crate's type, for as long as `self` lives.
    fn page(&self) -> BorrowedPage<'_> {
        // SAFETY: `self.0` is a valid page (type invariant) that stays allocated while `self`
        // is borrowed.
        unsafe { BorrowedPage::from_raw(self.0) }
    }
}

impl Drop for GuestPage {
    fn drop(&mut self) {
        // SAFETY: `self.0` came from `alloc_guest_page` and this is its owner's one release.
        unsafe { crate::glue::free_guest_page(self.0) };
    }
}

/// One memory slot: `pages.len()` pages from guest-physical `base`.
///
/// # Invariants
///
/// `frames[i]` is the kernel address and physical address of `pages[i]`; the pages live
/// (and stay mapped in the kernel) as long as `self`. `base` is page-aligned and the slot
/// ends at or below [`uapi::SHADOWVM_MEMORY_MAX`].
struct RamSlot {
    id: u32,
    base: u64,
    pages: KVVec<GuestPage>,
    frames: KVVec<GuestFrame>,
}

impl RamSlot {
    /// Allocates the zeroed pages of a checked region, charged to the caller's memory
    /// cgroup; `EINTR` on a signal, `ENOMEM` when the host cannot spare that much memory.
    fn new(region: &uapi::MemoryRegion) -> Result<Self> {
        let n = usize::try_from(region.size / uapi::SHADOWVM_PAGE_SIZE).map_err(|_| E2BIG)?;
        // A request beyond what the host could free up fails at once instead of pushing
        // every other task into reclaim first.
        if region.size > crate::glue::available_memory_bytes() {
            return Err(ENOMEM);
        }
        // Everything a VM allocates is charged to its opener's memory cgroup, as KVM does.
        let mut pages = KVVec::with_capacity(n, GFP_KERNEL_ACCOUNT)?;
        let mut frames = KVVec::with_capacity(n, GFP_KERNEL_ACCOUNT)?;
        for _ in 0..n {
            let page = GuestPage::new()?;
            let frame = GuestFrame {
                ptr: crate::glue::page_virt(&page.page()),
                hpa: crate::glue::page_phys(&page.page()),
            };
            frames.push(frame, GFP_KERNEL_ACCOUNT)?;
            pages.push(page, GFP_KERNEL_ACCOUNT)?;
            // Allocating a large guest must not hog the CPU.
            crate::glue::cond_resched();
            if kernel::current!().signal_pending() {
                return Err(EINTR);
            }
        }
        // INVARIANT: frames[i] describes pages[i]; the region was checked by the caller.
        Ok(Self {
            id: region.slot,
            base: region.guest_phys_addr,
            pages,
            frames,
        })
    }

    fn first_gfn(&self) -> u64 {
        self.base >> 12
    }

    fn size(&self) -> u64 {
        self.pages.len() as u64 * uapi::SHADOWVM_PAGE_SIZE
    }

    /// Guest-physical end (exclusive); no overflow by the type invariant.
    fn end(&self) -> u64 {
        self.base + self.size()
    }

    fn region(&self) -> uapi::MemoryRegion {
        uapi::MemoryRegion {
            slot: self.id,
            flags: 0,
            guest_phys_addr: self.base,
            size: self.size(),
        }
    }
}

/// Guest-physical memory: the memory slots, sorted by address, none overlapping.
///
/// # Invariants
///
/// At most [`uapi::SHADOWVM_MEMORY_SLOTS`] slots with distinct ids, sorted by `base`,
/// pairwise disjoint.
pub(crate) struct GuestRam {
    slots: KVec<RamSlot>,
}

// SAFETY: The raw pointers in the slots' frames point into their pages, which are owned
// and `Send`.
unsafe impl Send for GuestRam {}
// SAFETY: Shared access only reads the tables; guest memory itself is accessed with
// atomic or byte copies that tolerate concurrent writers (userspace has it mapped too).
unsafe impl Sync for GuestRam {}

impl GuestRam {
    /// No memory yet.
    pub(crate) const fn new() -> Self {
        // INVARIANT: no slots.
        Self { slots: KVec::new() }
    }

    /// Whether no slot is set.
    pub(crate) fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// One past the highest guest frame number backed by a slot (0 without slots): what
    /// the MMU engine's per-gfn index must cover.
    pub(crate) fn frame_limit(&self) -> u64 {
        self.slots
            .iter()
            .map(|s| s.first_gfn().saturating_add(s.frames.len() as u64))
            .max()
            .unwrap_or(0)
    }

    /// Total size of all slots, in bytes.
    pub(crate) fn total_size(&self) -> u64 {
        self.slots.iter().map(RamSlot::size).sum()
    }

    /// SET_MEMORY_REGION: adds a slot, its pages zeroed. `EINVAL` for an argument
    /// [`uapi::MemoryRegion::is_valid`] refuses, `EEXIST` for a slot id in use or a range
    /// that overlaps another slot, `E2BIG` when the total would exceed `limit` bytes,
    /// `ENOMEM`/`EINTR` from the allocation. Nothing changes on failure.
    pub(crate) fn add_slot(&mut self, region: &uapi::MemoryRegion, limit: u64) -> Result {
        if !region.is_valid() {
            return Err(EINVAL);
        }
        if self
            .slots
            .iter()
            .any(|s| s.id == region.slot || s.region().overlaps(region))
        {
            return Err(EEXIST);
        }
        match self.total_size().checked_add(region.size) {
            Some(total) if total <= limit => {}
            _ => return Err(E2BIG),
        }
        // Room in the table first, so that a failure after the (possibly large)
        // allocation below cannot happen. Distinct ids below SHADOWVM_MEMORY_SLOTS
        // (checked above) bound the count.
        self.slots.reserve(1, GFP_KERNEL_ACCOUNT)?;
        let slot = RamSlot::new(region)?;
        let at = self.slots.iter().take_while(|s| s.base < slot.base).count();
        // INVARIANT: disjoint from every slot and with a new id (checked above), inserted
        // in address order.
        self.slots
            .insert_within_capacity(at, slot)
            .map_err(|_| ENOMEM)
    }

    /// The slot that holds all of `gpa..gpa + len`, if one does.
    fn slot_of(&self, gpa: u64, len: u64) -> Option<&RamSlot> {
        let end = gpa.checked_add(len)?;
        self.slots.iter().find(|s| s.base <= gpa && end <= s.end())
    }

    /// The pages of `gpa..gpa + len` (page-aligned), for mmap; `None` unless one slot holds
    /// the whole range.
    pub(crate) fn pages(
        &self,
        gpa: u64,
        len: u64,
    ) -> Option<impl Iterator<Item = BorrowedPage<'_>>> {
        let slot = self.slot_of(gpa, len)?;
        let first = usize::try_from((gpa - slot.base) / uapi::SHADOWVM_PAGE_SIZE).ok()?;
        let count = usize::try_from(len / uapi::SHADOWVM_PAGE_SIZE).ok()?;
        Some(
            slot.pages
                .iter()
                .skip(first)
                .take(count)
                .map(GuestPage::page),
        )
    }

    /// Copies guest-physical memory out; false if any byte is not RAM.
    pub(crate) fn read(&self, gpa: u64, dst: &mut [u8]) -> bool {
        let off = (gpa & 0xfff) as usize;
        if off + dst.len() > 4096 {
            return false;
        }
        let Some(f) = self.frame(gpa >> 12) else {
            return false;
        };
        // SAFETY: `f.ptr` is a 4 KiB frame of guest RAM (GuestMemory contract); the range
        // is inside it. Guest memory may change concurrently (userspace mapping): bytes.
        unsafe { core::ptr::copy_nonoverlapping(f.ptr.add(off), dst.as_mut_ptr(), dst.len()) };
        true
    }
}

// SAFETY: Every slot's `frames` entries point to 4 KiB kernel pages owned by `self` (type
// invariant of `RamSlot`), mapped for as long as the engine call that got them (the VM
// lock is held across it, and slots are never removed while the VM lives).
unsafe impl GuestMemory for GuestRam {
    fn frame(&self, gfn: u64) -> Option<GuestFrame> {
        // At most SHADOWVM_MEMORY_SLOTS slots: a linear search is as fast as any.
        self.slots.iter().find_map(|s| {
            let index = usize::try_from(gfn.checked_sub(s.first_gfn())?).ok()?;
            s.frames.get(index).copied()
        })
    }
}
