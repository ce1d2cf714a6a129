// SPDX-License-Identifier: GPL-2.0

//! Memory the engine works with: host pages from a [`PageSource`] and guest memory
//! through [`GuestMemory`]. The engine's own views of its pages are in `page.rs` (table
//! pages, spare pages) and `pool.rs` (bookkeeping records).
//!
//! Nothing allocates by itself: every page comes from the caller's [`PageSource`], and
//! only in [`super::Mmu`]'s top-up step that runs before an event touches any state.

use core::ptr;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Size of every page the engine deals with.
pub const PAGE_SIZE: usize = 4096;

/// One 4 KiB host page owned by the engine.
///
/// # Invariants
///
/// When produced by a [`PageSource`], `ptr` is a kernel-virtual (host-test: process)
/// address of 4096 writable bytes, 4096-aligned and zero-filled, that nothing else uses
/// until the page goes back through [`PageSource::free_page`]; `hpa` is its host-physical
/// address (4096-aligned, below 4 GiB when allocated with `low == true`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostPage {
    /// Kernel-virtual address of the page.
    pub ptr: *mut u8,
    /// Host-physical address of the page.
    pub hpa: u64,
}

impl HostPage {
    /// The "no page" value used in tables of pages.
    pub const NULL: HostPage = HostPage {
        ptr: ptr::null_mut(),
        hpa: 0,
    };

    /// Whether this is [`HostPage::NULL`].
    pub fn is_null(&self) -> bool {
        self.ptr.is_null()
    }
}

/// Where the engine gets every page it uses, tables and bookkeeping alike.
///
/// The engine is called with interrupts off: implementations must not sleep. Returning
/// `None` makes the current event fail with [`super::MmuError::NeedMemory`]; the caller
/// refills its cache and retries the same event.
pub trait PageSource {
    /// A zeroed 4 KiB page; `low` asks for one below 4 GiB physical (PAE shadow roots).
    fn alloc_page(&mut self, low: bool) -> Option<HostPage>;
    /// Give a page back.
    fn free_page(&mut self, page: HostPage);
}

/// A guest frame as the host sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestFrame {
    /// Host (kernel-virtual) pointer to the 4 KiB frame.
    pub ptr: *mut u8,
    /// Host-physical address of the frame.
    pub hpa: u64,
}

/// Guest-physical memory.
///
/// # Safety
///
/// Implementations promise that a returned [`GuestFrame::ptr`] points to 4096 bytes,
/// 4096-aligned, that stay mapped while the engine call that obtained it runs, and that
/// may be read and written concurrently (the engine uses atomic accesses only).
pub unsafe trait GuestMemory {
    /// The frame backing `gfn`, or `None` when nothing backs it (MMIO or out of range).
    fn frame(&self, gfn: u64) -> Option<GuestFrame>;
}

/// Reads a guest paging entry of `size` (4 or 8) bytes at `gpa`. Unbacked memory reads
/// as zero (a not-present entry); the engine and its reference model agree on that.
pub fn read_gpte<G: GuestMemory + ?Sized>(mem: &G, gpa: u64, size: u64) -> u64 {
    let Some(f) = mem.frame(gpa >> 12) else {
        return 0;
    };
    let off = (gpa & 0xfff) as usize;
    if size == 4 {
        let off = off & !3;
        // SAFETY: `f.ptr` points to 4096 bytes valid for atomic access (GuestMemory's
        // contract); `off` is 4-aligned and at most 4092, so the u32 is inside the frame.
        let gpte = unsafe { AtomicU32::from_ptr(f.ptr.add(off).cast::<u32>()) };
        u64::from(gpte.load(Ordering::Relaxed))
    } else {
        let off = off & !7;
        // SAFETY: as above, `off` is 8-aligned and at most 4088.
        unsafe { AtomicU64::from_ptr(f.ptr.add(off).cast::<u64>()) }.load(Ordering::Relaxed)
    }
}

/// Locked compare-exchange of a guest paging entry, as the CPU's A/D update does.
/// Returns false when the entry changed (or the memory is unbacked).
pub fn cmpxchg_gpte<G: GuestMemory + ?Sized>(
    mem: &G,
    gpa: u64,
    size: u64,
    old: u64,
    new: u64,
) -> bool {
    let Some(f) = mem.frame(gpa >> 12) else {
        return false;
    };
    let off = (gpa & 0xfff) as usize;
    if size == 4 {
        let off = off & !3;
        // SAFETY: see `read_gpte`.
        let a = unsafe { AtomicU32::from_ptr(f.ptr.add(off).cast::<u32>()) };
        a.compare_exchange(old as u32, new as u32, Ordering::SeqCst, Ordering::Relaxed)
            .is_ok()
    } else {
        let off = off & !7;
        // SAFETY: see `read_gpte`.
        let a = unsafe { AtomicU64::from_ptr(f.ptr.add(off).cast::<u64>()) };
        a.compare_exchange(old, new, Ordering::SeqCst, Ordering::Relaxed)
            .is_ok()
    }
}

/// Pages from the test process's heap, for the engine's unit tests.
#[cfg(test)]
pub(crate) mod test_heap {
    use super::{HostPage, PageSource, PAGE_SIZE};
    use std::alloc::{alloc_zeroed, dealloc, Layout};

    fn layout() -> Layout {
        Layout::from_size_align(PAGE_SIZE, PAGE_SIZE).unwrap()
    }

    /// Zeroed, page-aligned heap pages whose "host-physical" address is their pointer.
    pub(crate) struct Heap;

    impl PageSource for Heap {
        fn alloc_page(&mut self, _low: bool) -> Option<HostPage> {
            // SAFETY: a non-zero-sized layout.
            let ptr = unsafe { alloc_zeroed(layout()) };
            (!ptr.is_null()).then_some(HostPage {
                ptr,
                hpa: ptr as u64,
            })
        }
        fn free_page(&mut self, page: HostPage) {
            // SAFETY: allocated by `alloc_page` with the same layout.
            unsafe { dealloc(page.ptr, layout()) };
        }
    }
}
