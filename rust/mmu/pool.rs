// SPDX-License-Identifier: GPL-2.0

//! The record pool: fixed-size bookkeeping records carved out of engine pages, addressed
//! by typed ids ([`Id`]) instead of bare indices, so that a shadow page's id cannot be
//! used as a frame record's and "none" is `Option::None` instead of 0.

use core::marker::PhantomData;
use core::num::NonZeroU32;
use core::ptr;

use super::mem::{HostPage, PageSource, PAGE_SIZE};
use super::page::TablePage;

/// Bytes per bookkeeping record.
pub(crate) const REC_SIZE: usize = 64;
const RECS_PER_PAGE: u32 = (PAGE_SIZE / REC_SIZE) as u32; // 64
const PAGES_PER_DIR: u32 = (PAGE_SIZE / 16) as u32; // 256 HostPages per directory page
const RECS_PER_DIR: u32 = RECS_PER_PAGE * PAGES_PER_DIR; // 16384
/// Directory pages the pool can have (bounds the bookkeeping memory to 64 MiB).
pub(crate) const MAX_DIRS: usize = 64;
/// Most records the pool can hold: ids fit in 20 bits (list positions rely on it).
pub(crate) const MAX_RECS: u32 = RECS_PER_DIR * MAX_DIRS as u32;
const _: () = assert!(MAX_RECS == 1 << 20);

/// A record type stored in the pool.
///
/// # Safety
///
/// Implementors are `#[repr(C)]`, at most [`REC_SIZE`] bytes, alignment at most 8, and
/// valid for any bit pattern (all zero in particular). Each implementor states its size
/// with a `const` assertion beside it, so the compiler checks the first two rules.
pub(crate) unsafe trait Record: Sized {}

/// Id of a record of type `T` in the [`Pool`].
///
/// `Option<Id<T>>` is 4 bytes with `None` all zero (a `repr(transparent)` wrapper of
/// `NonZeroU32`), and every bit pattern is a valid `Option<Id<T>>`: records may hold
/// links as `Option<Id<_>>` and still accept any bit pattern ([`Record`]).
#[repr(transparent)]
pub(crate) struct Id<T>(NonZeroU32, PhantomData<fn() -> T>);

const _: () = assert!(core::mem::size_of::<Option<Id<u8>>>() == 4);

impl<T> Id<T> {
    /// The id with number `raw`, `None` for 0. Ids kept in pages (side pages, bucket and
    /// root pages) come back through here; a number that names no live record of type
    /// `T` reads as a zeroed record (see [`Pool::get`]), never out of bounds.
    pub(crate) fn from_raw(raw: u32) -> Option<Self> {
        NonZeroU32::new(raw).map(|n| Id(n, PhantomData))
    }

    /// The id's number (never 0).
    pub(crate) fn raw(self) -> u32 {
        self.0.get()
    }
}

/// The number of an optional id, 0 for `None` (for ids kept in pages).
pub(crate) fn raw_of<T>(id: Option<Id<T>>) -> u32 {
    id.map_or(0, Id::raw)
}

impl<T> Clone for Id<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Id<T> {}
impl<T> PartialEq for Id<T> {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}
impl<T> Eq for Id<T> {}

/// A free record: the link of the free list.
#[repr(C)]
struct FreeRec {
    next: Option<Id<FreeRec>>,
}
const _: () = assert!(core::mem::size_of::<FreeRec>() == 4);
// SAFETY: repr(C), 4 bytes (asserted above), align 4, any bit pattern valid (`Id`).
unsafe impl Record for FreeRec {}

/// A pool of 64-byte records addressed by [`Id`].
///
/// # Invariants
///
/// `dirs[d]` for `d < ndirs` are engine-owned pages holding `HostPage`s; in directory `d`,
/// the first `pages_in_dir(d)` entries are engine-owned record pages. Ids below `next`
/// belong to allocated pages; free ids form a list through the records' first 4 bytes,
/// headed by `free_head` with `nfree` entries. `null` absorbs accesses to ids that do not
/// exist (never produced by correct code).
pub(crate) struct Pool {
    dirs: [HostPage; MAX_DIRS],
    ndirs: usize,
    /// Number of record pages allocated.
    npages: u32,
    /// Next never-used id.
    next: u32,
    free_head: Option<Id<FreeRec>>,
    nfree: u32,
    null: [u64; REC_SIZE / 8],
}

impl Pool {
    /// An empty pool.
    pub(crate) const fn new() -> Self {
        Pool {
            dirs: [HostPage::NULL; MAX_DIRS],
            ndirs: 0,
            npages: 0,
            next: 1,
            free_head: None,
            nfree: 0,
            null: [0; REC_SIZE / 8],
        }
    }

    /// Records that can be allocated without new pages.
    pub(crate) fn available(&self) -> u32 {
        // npages <= MAX_DIRS * PAGES_PER_DIR, so none of this comes near u32::MAX.
        let cap = self.npages.saturating_mul(RECS_PER_PAGE);
        self.nfree.saturating_add(cap.saturating_sub(self.next))
    }

    /// Whether the next page added needs a new directory page first.
    pub(crate) fn needs_dir(&self) -> bool {
        // ndirs <= MAX_DIRS: the product is at most 16384.
        self.npages >= (self.ndirs as u32).saturating_mul(PAGES_PER_DIR)
    }

    /// Whether the pool can grow at all.
    pub(crate) fn can_grow(&self) -> bool {
        !(self.needs_dir() && self.ndirs >= MAX_DIRS)
    }

    /// Directory page `d` as a table page.
    fn dir(&self, d: usize) -> Option<TablePage> {
        let p = self.dirs.get(d)?;
        // SAFETY: directory pages are engine-owned until `release` (type invariant).
        unsafe { TablePage::from_host(*p) }
    }

    /// Adds a directory page. Returns the page back if none is needed or there is no room.
    ///
    /// # Safety
    ///
    /// `p` is a page from the engine's [`PageSource`] that nothing else uses until the
    /// pool gives it back in [`Pool::release`].
    pub(crate) unsafe fn add_dir(&mut self, p: HostPage) -> Result<(), HostPage> {
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
    ///
    /// # Safety
    ///
    /// As for [`Pool::add_dir`].
    pub(crate) unsafe fn add_page(&mut self, p: HostPage) -> Result<(), HostPage> {
        if self.needs_dir() {
            return Err(p);
        }
        let d = (self.npages / PAGES_PER_DIR) as usize;
        let i = (self.npages % PAGES_PER_DIR) as usize;
        let Some(dir) = self.dir(d) else {
            return Err(p);
        };
        // i < PAGES_PER_DIR (256): entries 2i and 2i+1 are inside the directory page.
        let e = i.saturating_mul(2);
        dir.set(e, p.ptr as usize as u64);
        dir.set(e | 1, p.hpa);
        // needs_dir() was false: npages < ndirs * PAGES_PER_DIR <= 16384.
        self.npages = self.npages.saturating_add(1);
        Ok(())
    }

    #[inline]
    fn rec_ptr(&self, idx: u32) -> Option<*mut u8> {
        if idx == 0 || idx >= self.next {
            return None;
        }
        let d = (idx / RECS_PER_DIR) as usize;
        let pg = ((idx % RECS_PER_DIR) / RECS_PER_PAGE) as usize;
        let r = (idx % RECS_PER_PAGE) as usize;
        // pg < PAGES_PER_DIR (256), so 2 * pg < 512.
        let page = self.dir(d)?.get(pg.saturating_mul(2)) as usize as *mut u8;
        if page.is_null() {
            return None;
        }
        // SAFETY: `r < 64`, so the record lies inside the 4096-byte record page (and the
        // product cannot saturate).
        Some(unsafe { page.add(r.saturating_mul(REC_SIZE)) })
    }

    /// Allocates a zeroed record, or `None` when the pool is empty.
    pub(crate) fn alloc<T: Record>(&mut self) -> Option<Id<T>> {
        let idx = if let Some(f) = self.free_head {
            self.free_head = self.get(f).next;
            // A free head means nfree >= 1 (invariant).
            self.nfree = self.nfree.saturating_sub(1);
            f.raw()
        } else if self.next < self.npages.saturating_mul(RECS_PER_PAGE) {
            let idx = self.next;
            // next < npages * RECS_PER_PAGE <= 2^20.
            self.next = self.next.saturating_add(1);
            idx
        } else {
            return None;
        };
        if let Some(p) = self.rec_ptr(idx) {
            // SAFETY: `p` is a 64-byte record inside an engine-owned page (idx < next).
            unsafe { ptr::write_bytes(p, 0, REC_SIZE) };
        }
        Id::from_raw(idx)
    }

    /// Frees a record.
    pub(crate) fn free<T: Record>(&mut self, id: Id<T>) {
        let idx = id.raw();
        if idx >= self.next {
            return;
        }
        let head = self.free_head;
        let Some(f) = Id::<FreeRec>::from_raw(idx) else {
            return;
        };
        self.get_mut(f).next = head;
        self.free_head = Some(f);
        // nfree < next <= 2^20.
        self.nfree = self.nfree.saturating_add(1);
    }

    /// Shared view of a record.
    #[inline]
    pub(crate) fn get<T: Record>(&self, id: Id<T>) -> &T {
        let p = self
            .rec_ptr(id.raw())
            // Only read through: `get` hands out a shared borrow.
            .unwrap_or(self.null.as_ptr().cast::<u8>().cast_mut());
        // SAFETY: `p` is 8-aligned, points to REC_SIZE bytes owned by the pool (a record
        // page or `null`), and T fits and accepts any bit pattern (Record contract). The
        // returned borrow is tied to `&self`, so no `&mut` to the pool exists meanwhile.
        unsafe { &*p.cast::<T>() }
    }

    /// Mutable view of a record.
    #[inline]
    pub(crate) fn get_mut<T: Record>(&mut self, id: Id<T>) -> &mut T {
        let p = match self.rec_ptr(id.raw()) {
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
    pub(crate) fn release<P: PageSource + ?Sized>(&mut self, src: &mut P) {
        for n in 0..self.npages {
            let d = (n / PAGES_PER_DIR) as usize;
            let i = (n % PAGES_PER_DIR) as usize;
            if let Some(dir) = self.dir(d) {
                // i < PAGES_PER_DIR (256), as in `add_page`.
                let e = i.saturating_mul(2);
                let ptr = dir.get(e) as usize as *mut u8;
                let hpa = dir.get(e | 1);
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
