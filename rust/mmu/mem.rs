// SPDX-License-Identifier: GPL-2.0

//! Memory the engine works with: host pages from a [`PageSource`], guest memory through
//! [`GuestMemory`], an internal reserve of pages and a pool of fixed-size bookkeeping
//! records carved out of pages.
//!
//! Nothing here allocates by itself: every page comes from the caller's [`PageSource`],
//! and only in [`super::Mmu`]'s top-up step that runs before an event touches any state.

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
    pub const NULL: HostPage = HostPage { ptr: ptr::null_mut(), hpa: 0 };

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
        unsafe { AtomicU32::from_ptr(f.ptr.add(off).cast::<u32>()) }.load(Ordering::Relaxed) as u64
    } else {
        let off = off & !7;
        // SAFETY: as above, `off` is 8-aligned and at most 4088.
        unsafe { AtomicU64::from_ptr(f.ptr.add(off).cast::<u64>()) }.load(Ordering::Relaxed)
    }
}

/// Locked compare-exchange of a guest paging entry, as the CPU's A/D update does.
/// Returns false when the entry changed (or the memory is unbacked).
pub fn cmpxchg_gpte<G: GuestMemory + ?Sized>(mem: &G, gpa: u64, size: u64, old: u64, new: u64) -> bool {
    let Some(f) = mem.frame(gpa >> 12) else {
        return false;
    };
    let off = (gpa & 0xfff) as usize;
    if size == 4 {
        let off = off & !3;
        // SAFETY: see `read_gpte`.
        let a = unsafe { AtomicU32::from_ptr(f.ptr.add(off).cast::<u32>()) };
        a.compare_exchange(old as u32, new as u32, Ordering::SeqCst, Ordering::Relaxed).is_ok()
    } else {
        let off = off & !7;
        // SAFETY: see `read_gpte`.
        let a = unsafe { AtomicU64::from_ptr(f.ptr.add(off).cast::<u64>()) };
        a.compare_exchange(old, new, Ordering::SeqCst, Ordering::Relaxed).is_ok()
    }
}

/// Reads entry `i & 511` of a page of 64-bit entries (a shadow table or a side page).
pub(super) fn page_get(page: *mut u8, i: usize) -> u64 {
    if page.is_null() {
        return 0;
    }
    // SAFETY: engine pages are 4096-byte, 8-aligned allocations owned by the engine
    // (HostPage invariant); `i & 511` keeps the access inside the page. Atomic because the
    // CPU may set A/D bits in shadow entries concurrently.
    unsafe { AtomicU64::from_ptr(page.cast::<u64>().add(i & 511)) }.load(Ordering::Relaxed)
}

/// Writes entry `i & 511` of a page of 64-bit entries.
pub(super) fn page_set(page: *mut u8, i: usize, v: u64) {
    if page.is_null() {
        return;
    }
    // SAFETY: see `page_get`.
    unsafe { AtomicU64::from_ptr(page.cast::<u64>().add(i & 511)) }.store(v, Ordering::Relaxed)
}

/// Zero-fills a page.
pub(super) fn page_zero(page: *mut u8) {
    if page.is_null() {
        return;
    }
    // SAFETY: the page is 4096 writable bytes owned by the engine (HostPage invariant).
    unsafe { ptr::write_bytes(page, 0, PAGE_SIZE) }
}

/// A stack of spare pages, linked through the pages themselves (first 16 bytes: next
/// pointer and next hpa).
///
/// # Invariants
///
/// Every page on the list is an engine-owned [`HostPage`] not used for anything else;
/// `count` is the number of pages on the list.
pub struct PageList {
    head: HostPage,
    count: usize,
}

impl PageList {
    /// An empty list.
    pub const fn new() -> Self {
        PageList { head: HostPage::NULL, count: 0 }
    }

    /// Number of pages held.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Adds a page.
    pub fn push(&mut self, p: HostPage) {
        if p.is_null() {
            return;
        }
        page_set(p.ptr, 0, self.head.ptr as usize as u64);
        page_set(p.ptr, 1, self.head.hpa);
        self.head = p;
        // Bounded by the pages in existence, far below usize::MAX.
        self.count = self.count.saturating_add(1);
    }

    /// Takes a page, zero-filled.
    pub fn pop(&mut self) -> Option<HostPage> {
        if self.head.is_null() {
            return None;
        }
        let p = self.head;
        let next_ptr = page_get(p.ptr, 0) as usize as *mut u8;
        let next_hpa = page_get(p.ptr, 1);
        self.head = HostPage { ptr: next_ptr, hpa: next_hpa };
        // A non-null head means count >= 1 (invariant).
        self.count = self.count.saturating_sub(1);
        page_zero(p.ptr);
        Some(p)
    }
}

impl Default for PageList {
    fn default() -> Self {
        Self::new()
    }
}

/// Bytes per bookkeeping record.
pub const REC_SIZE: usize = 64;
const RECS_PER_PAGE: u32 = (PAGE_SIZE / REC_SIZE) as u32; // 64
const PAGES_PER_DIR: u32 = (PAGE_SIZE / 16) as u32; // 256 HostPages per directory page
const RECS_PER_DIR: u32 = RECS_PER_PAGE * PAGES_PER_DIR; // 16384
/// Directory pages the pool can have (bounds the bookkeeping memory to 64 MiB).
pub const MAX_DIRS: usize = 64;

/// A record type stored in the pool.
///
/// # Safety
///
/// Implementors are `#[repr(C)]`, at most [`REC_SIZE`] bytes, alignment at most 8, and
/// valid for any bit pattern (all zero in particular).
pub unsafe trait Record: Sized {}

// SAFETY: 4 bytes, any bit pattern valid (free-list links).
unsafe impl Record for u32 {}

/// A pool of 64-byte records addressed by `u32` index (0 means "none").
///
/// # Invariants
///
/// `dirs[d]` for `d < ndirs` are engine-owned pages holding `HostPage`s; in directory `d`,
/// the first `pages_in_dir(d)` entries are engine-owned record pages. Indices below
/// `next` belong to allocated pages; free indices form a list through the records'
/// first u32, headed by `free_head` with `nfree` entries. `null` absorbs accesses to
/// index 0 or to indices that do not exist (never produced by correct code).
pub struct Pool {
    dirs: [HostPage; MAX_DIRS],
    ndirs: usize,
    /// Number of record pages allocated.
    npages: u32,
    /// Next never-used index.
    next: u32,
    free_head: u32,
    nfree: u32,
    null: [u64; REC_SIZE / 8],
}

impl Pool {
    /// An empty pool.
    pub const fn new() -> Self {
        Pool {
            dirs: [HostPage::NULL; MAX_DIRS],
            ndirs: 0,
            npages: 0,
            next: 1,
            free_head: 0,
            nfree: 0,
            null: [0; REC_SIZE / 8],
        }
    }

    /// Records that can be allocated without new pages.
    pub fn available(&self) -> u32 {
        // npages <= MAX_DIRS * PAGES_PER_DIR, so none of this comes near u32::MAX.
        let cap = self.npages.saturating_mul(RECS_PER_PAGE);
        self.nfree.saturating_add(cap.saturating_sub(self.next))
    }

    /// Whether the next page added needs a new directory page first.
    pub fn needs_dir(&self) -> bool {
        // ndirs <= MAX_DIRS: the product is at most 16384.
        self.npages >= (self.ndirs as u32).saturating_mul(PAGES_PER_DIR)
    }

    /// Whether the pool can grow at all.
    pub fn can_grow(&self) -> bool {
        !(self.needs_dir() && self.ndirs >= MAX_DIRS)
    }

    /// Adds a directory page. Returns the page back if none is needed or there is no room.
    pub fn add_dir(&mut self, p: HostPage) -> Result<(), HostPage> {
        if !self.needs_dir() {
            return Err(p);
        }
        let Some(slot) = self.dirs.get_mut(self.ndirs) else {
            return Err(p);
        };
        *slot = p;
        // ndirs < MAX_DIRS here (the slot exists).
        self.ndirs = self.ndirs.saturating_add(1);
        Ok(())
    }

    /// Adds a record page. Returns it back if a directory page is needed first.
    pub fn add_page(&mut self, p: HostPage) -> Result<(), HostPage> {
        if self.needs_dir() {
            return Err(p);
        }
        let d = (self.npages / PAGES_PER_DIR) as usize;
        let i = (self.npages % PAGES_PER_DIR) as usize;
        let Some(dir) = self.dirs.get(d) else {
            return Err(p);
        };
        // i < PAGES_PER_DIR (256): entries 2i and 2i+1 are inside the directory page.
        let e = i.saturating_mul(2);
        page_set(dir.ptr, e, p.ptr as usize as u64);
        page_set(dir.ptr, e | 1, p.hpa);
        // needs_dir() was false: npages < ndirs * PAGES_PER_DIR <= 16384.
        self.npages = self.npages.saturating_add(1);
        Ok(())
    }

    fn rec_ptr(&self, idx: u32) -> Option<*mut u8> {
        if idx == 0 || idx >= self.next {
            return None;
        }
        let d = (idx / RECS_PER_DIR) as usize;
        let pg = ((idx % RECS_PER_DIR) / RECS_PER_PAGE) as usize;
        let r = (idx % RECS_PER_PAGE) as usize;
        let dir = self.dirs.get(d)?;
        // pg < PAGES_PER_DIR (256), so 2 * pg < 512.
        let page = page_get(dir.ptr, pg.saturating_mul(2)) as usize as *mut u8;
        if page.is_null() {
            return None;
        }
        // SAFETY: `r < 64`, so the record lies inside the 4096-byte record page (and the
        // product cannot saturate).
        Some(unsafe { page.add(r.saturating_mul(REC_SIZE)) })
    }

    /// Allocates a zeroed record, or returns 0 when the pool is empty.
    pub fn alloc(&mut self) -> u32 {
        let idx = if self.free_head != 0 {
            let idx = self.free_head;
            self.free_head = *self.get::<u32>(idx);
            // A non-zero free_head means nfree >= 1 (invariant).
            self.nfree = self.nfree.saturating_sub(1);
            idx
        } else if self.next < self.npages.saturating_mul(RECS_PER_PAGE) {
            let idx = self.next;
            // next < npages * RECS_PER_PAGE <= 2^20.
            self.next = self.next.saturating_add(1);
            idx
        } else {
            return 0;
        };
        if let Some(p) = self.rec_ptr(idx) {
            // SAFETY: `p` is a 64-byte record inside an engine-owned page (idx < next).
            unsafe { ptr::write_bytes(p, 0, REC_SIZE) };
        }
        idx
    }

    /// Frees a record.
    pub fn free(&mut self, idx: u32) {
        if idx == 0 || idx >= self.next {
            return;
        }
        let head = self.free_head;
        *self.get_mut::<u32>(idx) = head;
        self.free_head = idx;
        // nfree < next <= 2^20.
        self.nfree = self.nfree.saturating_add(1);
    }

    /// Shared view of a record.
    pub fn get<T: Record>(&self, idx: u32) -> &T {
        let p = self.rec_ptr(idx).unwrap_or(self.null.as_ptr() as *mut u8);
        // SAFETY: `p` is 8-aligned, points to REC_SIZE bytes owned by the pool (a record
        // page or `null`), and T fits and accepts any bit pattern (Record contract). The
        // returned borrow is tied to `&self`, so no `&mut` to the pool exists meanwhile.
        unsafe { &*p.cast::<T>() }
    }

    /// Mutable view of a record.
    pub fn get_mut<T: Record>(&mut self, idx: u32) -> &mut T {
        let p = match self.rec_ptr(idx) {
            Some(p) => p,
            None => {
                self.null = [0; REC_SIZE / 8];
                self.null.as_mut_ptr().cast::<u8>()
            }
        };
        // SAFETY: as in `get`; `&mut self` makes the borrow exclusive.
        unsafe { &mut *p.cast::<T>() }
    }

    /// Gives every page back; the pool is empty afterwards.
    pub fn release<P: PageSource + ?Sized>(&mut self, src: &mut P) {
        for n in 0..self.npages {
            let d = (n / PAGES_PER_DIR) as usize;
            let i = (n % PAGES_PER_DIR) as usize;
            if let Some(dir) = self.dirs.get(d) {
                // i < PAGES_PER_DIR (256), as in `add_page`.
                let e = i.saturating_mul(2);
                let ptr = page_get(dir.ptr, e) as usize as *mut u8;
                let hpa = page_get(dir.ptr, e | 1);
                if !ptr.is_null() {
                    src.free_page(HostPage { ptr, hpa });
                }
            }
        }
        for d in 0..self.ndirs {
            if let Some(dir) = self.dirs.get(d) {
                src.free_page(*dir);
            }
        }
        *self = Pool::new();
    }
}

impl Default for Pool {
    fn default() -> Self {
        Self::new()
    }
}
