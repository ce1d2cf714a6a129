// SPDX-License-Identifier: GPL-2.0

//! Engine-owned pages seen as tables of 512 64-bit entries ([`TablePage`]: shadow tables,
//! side pages, PAE root pages, the frame hash, pool directories), and the stack of spare
//! pages ([`PageList`]).
//!
//! The only unsafe step is turning a raw address into a [`TablePage`]; reading and
//! writing entries through the handle is safe.

use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicU64, Ordering};

use super::mem::{HostPage, PAGE_SIZE};

/// Entries in a table page.
pub(crate) const ENTRIES: usize = PAGE_SIZE / 8;

/// A handle to an engine-owned page of [`ENTRIES`] 64-bit entries.
///
/// # Invariants
///
/// `ptr` points to 4096 bytes, 8-aligned, that the engine owns (they came from its
/// [`super::PageSource`] and have not gone back) for as long as the handle is used.
/// Entries are accessed atomically: the CPU may set A/D bits in shadow entries while the
/// engine reads them.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct TablePage {
    ptr: NonNull<u64>,
}

impl TablePage {
    /// The page at kernel-virtual address `addr`, `None` for 0.
    ///
    /// # Safety
    ///
    /// `addr` is 0 or the address of a 4096-byte, 8-aligned page the engine owns, and
    /// the page stays owned by the engine while the returned handle (or a copy) is used.
    pub(crate) unsafe fn from_addr(addr: usize) -> Option<TablePage> {
        NonNull::new(addr as *mut u64).map(|ptr| TablePage { ptr })
    }

    /// The table view of `page`, `None` for [`HostPage::NULL`].
    ///
    /// # Safety
    ///
    /// As for [`TablePage::from_addr`] with `page.ptr`: `page` came from the engine's
    /// page source and stays the engine's while the handle is used.
    pub(crate) unsafe fn from_host(page: HostPage) -> Option<TablePage> {
        // SAFETY: the caller's contract is the same.
        unsafe { Self::from_addr(page.ptr as usize) }
    }

    /// The page's kernel-virtual address (kept in records and pages as a number).
    pub(crate) fn addr(self) -> usize {
        self.ptr.as_ptr() as usize
    }

    /// Where entry `i & 511` is (inside the page).
    fn slot(self, i: usize) -> *mut u64 {
        self.ptr.as_ptr().wrapping_add(i & (ENTRIES - 1))
    }

    /// Entry `i & 511`.
    pub(crate) fn get(self, i: usize) -> u64 {
        // SAFETY: the slot is an 8-aligned u64 inside a page the engine owns (type
        // invariant); every access to engine pages is atomic.
        unsafe { AtomicU64::from_ptr(self.slot(i)) }.load(Ordering::Relaxed)
    }

    /// Writes entry `i & 511`.
    pub(crate) fn set(self, i: usize, v: u64) {
        // SAFETY: as in `get`.
        unsafe { AtomicU64::from_ptr(self.slot(i)) }.store(v, Ordering::Relaxed)
    }

    /// Sets every entry to `v`, with one `memset` when `v` repeats one byte. Only for a
    /// page the CPU is not using (linked into no shadow table yet).
    pub(crate) fn fill(self, v: u64) {
        let byte = v as u8;
        if v == u64::from(byte).wrapping_mul(0x0101_0101_0101_0101) {
            // SAFETY: 4096 writable bytes owned by the engine (type invariant), which the
            // CPU does not access (the caller's condition), so plain stores are enough.
            unsafe { ptr::write_bytes(self.ptr.as_ptr().cast::<u8>(), byte, PAGE_SIZE) }
            return;
        }
        for i in 0..ENTRIES {
            self.set(i, v);
        }
    }

    /// Zero-fills the page.
    pub(crate) fn zero(self) {
        // SAFETY: 4096 writable bytes owned by the engine (type invariant).
        unsafe { ptr::write_bytes(self.ptr.as_ptr().cast::<u8>(), 0, PAGE_SIZE) }
    }
}

/// Entry 2 of a spare page that may hold data (not only zeros).
const PAGE_DIRTY: u64 = 1;

/// A stack of spare pages, linked through the pages themselves (entry 0: next page's
/// address, entry 1: its hpa, entry 2: [`PAGE_DIRTY`] or 0).
///
/// Pages from the page source come zeroed and need no second zero-fill; pages the engine
/// used may hold anything. A page remembers which it is, so that taking a zeroed page
/// clears 4 KiB only when it has to.
///
/// # Invariants
///
/// Every page on the list is an engine-owned [`HostPage`] not used for anything else;
/// `count` is the number of pages on the list. A page whose entry 2 is 0 holds zeros in
/// every entry from 2 on.
pub(crate) struct PageList {
    head: HostPage,
    count: usize,
}

impl PageList {
    /// An empty list.
    pub(crate) const fn new() -> Self {
        PageList {
            head: HostPage::NULL,
            count: 0,
        }
    }

    /// Number of pages held.
    pub(crate) fn len(&self) -> usize {
        self.count
    }

    /// Adds a page that may hold anything.
    ///
    /// # Safety
    ///
    /// `p` is [`HostPage::NULL`] (ignored) or a page from the engine's page source that
    /// nothing else uses while it is on the list.
    pub(crate) unsafe fn push(&mut self, p: HostPage) {
        // SAFETY: the caller's contract.
        unsafe { self.push_marked(p, PAGE_DIRTY) }
    }

    /// Adds a page that holds only zeros (fresh from the page source).
    ///
    /// # Safety
    ///
    /// As for [`PageList::push`], and every byte of `p` is 0.
    pub(crate) unsafe fn push_zeroed(&mut self, p: HostPage) {
        // SAFETY: the caller's contract.
        unsafe { self.push_marked(p, 0) }
    }

    /// Adds `p` with `mark` in entry 2 (0 only for a zeroed page).
    ///
    /// # Safety
    ///
    /// As for [`PageList::push`]; `mark` is 0 only if every byte of `p` is 0.
    unsafe fn push_marked(&mut self, p: HostPage, mark: u64) {
        // SAFETY: the caller's contract.
        let Some(t) = (unsafe { TablePage::from_host(p) }) else {
            return;
        };
        t.set(0, self.head.ptr as usize as u64);
        t.set(1, self.head.hpa);
        t.set(2, mark);
        self.head = p;
        // Bounded by the pages in existence, far below usize::MAX.
        self.count = self.count.saturating_add(1);
    }

    /// Takes a page, zero-filled.
    pub(crate) fn pop(&mut self) -> Option<HostPage> {
        let (p, t) = self.take()?;
        if t.get(2) == 0 {
            // Zero from entry 2 on (type invariant): only the links need clearing.
            t.set(0, 0);
            t.set(1, 0);
        } else {
            t.zero();
        }
        Some(p)
    }

    /// Takes a page as it is, for a caller that writes every entry it reads later (clearing
    /// a whole page costs hundreds of instructions; a PAE root page uses 12 entries of it).
    pub(crate) fn pop_unzeroed(&mut self) -> Option<HostPage> {
        self.take().map(|(p, _)| p)
    }

    /// Unlinks the head page.
    fn take(&mut self) -> Option<(HostPage, TablePage)> {
        let p = self.head;
        // SAFETY: the head is a page on the list (type invariant) or NULL.
        let t = unsafe { TablePage::from_host(p) }?;
        let next_ptr = t.get(0) as usize as *mut u8;
        let next_hpa = t.get(1);
        self.head = HostPage {
            ptr: next_ptr,
            hpa: next_hpa,
        };
        // A non-null head means count >= 1 (invariant).
        self.count = self.count.saturating_sub(1);
        Some((p, t))
    }
}

impl Default for PageList {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::alloc::{alloc_zeroed, dealloc, Layout};

    fn layout() -> Layout {
        Layout::from_size_align(PAGE_SIZE, PAGE_SIZE).unwrap()
    }

    fn page() -> (HostPage, TablePage) {
        // SAFETY: a non-zero-sized layout.
        let ptr = unsafe { alloc_zeroed(layout()) };
        assert!(!ptr.is_null());
        let p = HostPage {
            ptr,
            hpa: ptr as u64,
        };
        // SAFETY: the page was just allocated and is freed only at the end of the test.
        (p, unsafe { TablePage::from_host(p) }.unwrap())
    }

    fn free(p: HostPage) {
        // SAFETY: allocated by `page` with the same layout.
        unsafe { dealloc(p.ptr, layout()) };
    }

    #[test]
    fn pop_gives_zeroed_pages_whatever_was_pushed() {
        let mut l = PageList::new();
        let (used, ut) = page();
        let (fresh, _) = page();
        ut.fill(0x5a);
        // SAFETY: both pages are this test's and on no other list; `fresh` is all zero.
        unsafe {
            l.push(used);
            l.push_zeroed(fresh);
        }
        // The fresh page comes back first (a stack), then the used one: both all zero.
        for want in [fresh, used] {
            let p = l.pop().unwrap();
            assert_eq!(p, want);
            // SAFETY: the page is this test's.
            let t = unsafe { TablePage::from_host(p) }.unwrap();
            assert!((0..ENTRIES).all(|i| t.get(i) == 0), "page not zeroed");
        }
        assert!(l.pop().is_none());
        assert_eq!(l.len(), 0);
        free(used);
        free(fresh);
    }

    #[test]
    fn an_unzeroed_pop_keeps_the_contents_but_not_the_list() {
        let mut l = PageList::new();
        let (used, ut) = page();
        ut.fill(7);
        // SAFETY: the page is this test's and on no other list.
        unsafe { l.push(used) };
        let p = l.pop_unzeroed().unwrap();
        assert_eq!(p, used);
        assert_eq!(ut.get(3), 7);
        assert!(l.pop_unzeroed().is_none());
        free(used);
    }
}
