// SPDX-License-Identifier: GPL-2.0

//! Guest frames: a record per frame that has shadow pages, leaf mappings or is out of
//! sync, found through a direct per-gfn index sized with guest memory (a small hash holds
//! the few frames beyond it); the frame's reverse map, its write protection, and the list
//! of out-of-sync frames.

use super::bits::PTE_W;
use super::dlist::{adapter, Adapter, DList, Links};
use super::lists::{ListHead, SRef};
use super::mem::{GuestMemory, HostPage, PageSource};
use super::page::{TablePage, ENTRIES};
use super::pool::{raw_of, Id, Pool, Record};
use super::sp::{SpId, SP_UNSYNC};
use super::stats::Counter;
use super::{Mmu, MmuError};

/// Longest reverse map: one more mapping of the frame first drops all of them (KVM's
/// RMAP_RECYCLE_THRESHOLD), so walking a frame's mappings has a bounded cost.
pub(super) const RMAP_MAX: u32 = 1000;
/// Most guest frames out of sync at once: a guest TLB flush (CR3 write) resyncs them
/// all with interrupts off, so their number bounds its cost. Beyond it the oldest one is
/// resynced before another goes out of sync.
pub(super) const MAX_UNSYNC: usize = 64;

/// A guest frame's record: the shadow pages of the frame and the leaf entries mapping it.
#[repr(C)]
pub(super) struct GfnRec {
    pub gfn: u64,
    /// Next record in the same hash bucket (frames beyond the index only).
    pub hash_next: Option<GfnId>,
    /// Leaf shadow entries mapping the frame, `rmap_len` of them.
    pub rmap: ListHead,
    /// Shadow pages of the frame, chained through [`super::sp::SpRec::gfn_next`].
    pub sps: Option<SpId>,
    /// How many of them shadow a guest table (not direct).
    pub n_indirect: u32,
    /// Neighbours on the out-of-sync list.
    unsync_links: Links<GfnRec>,
    /// Nonzero when the frame is on the out-of-sync list.
    pub unsync: u32,
    pub rmap_len: u32,
}
const _: () = assert!(core::mem::size_of::<GfnRec>() == 40);
// SAFETY: repr(C), 40 bytes (asserted above), align 8, integers,
// `Option<Id>`s and `Links` (two `Option<Id>`s) only: any bit pattern is valid.
unsafe impl Record for GfnRec {}

/// Id of a frame record.
pub(super) type GfnId = Id<GfnRec>;

adapter!(
    /// The out-of-sync list's links in a [`GfnRec`].
    UnsyncLinks = GfnRec.unsync_links
);

/// Frames one index page covers: 1024 32-bit record ids (two per 64-bit entry).
const GFNS_PER_LEAF: u64 = (ENTRIES * 2) as u64;
/// Index pages one directory page lists (a kernel-virtual address and an hpa each).
const LEAVES_PER_DIR: usize = ENTRIES / 2;
/// Directory pages of the index.
const INDEX_DIRS: usize = 16;
/// Most guest frames the index covers: 2^22, 16 GiB of guest memory (the module's
/// `max_memory_mb` default); records of frames beyond live in the hash.
pub const MAX_INDEXED_FRAMES: u64 = GFNS_PER_LEAF * (LEAVES_PER_DIR * INDEX_DIRS) as u64;
const _: () = assert!(MAX_INDEXED_FRAMES == 1 << 22);

/// Reads 32-bit item `i` of a page of pairs (item `2k` low half of entry `k`).
fn half_get(t: TablePage, i: usize) -> u32 {
    let v = t.get(i / 2);
    if i & 1 == 0 {
        v as u32
    } else {
        (v >> 32) as u32
    }
}

/// Writes 32-bit item `i` of a page of pairs.
fn half_set(t: TablePage, i: usize, x: u32) {
    let v = t.get(i / 2);
    let v = if i & 1 == 0 {
        (v & !0xffff_ffff) | u64::from(x)
    } else {
        (v & 0xffff_ffff) | (u64::from(x) << 32)
    };
    t.set(i / 2, v);
}

/// The direct per-gfn index: record ids of frames `0..covered()`, in index pages of
/// [`GFNS_PER_LEAF`] listed by directory pages.
///
/// # Invariants
///
/// `dirs[d]` for `d < ndirs` are engine-owned pages; entries `2i`/`2i + 1` of directory
/// `d` hold the address and hpa of index page `d * LEAVES_PER_DIR + i`, an engine-owned
/// page, for every such page below `npages`. Index pages `0..nleaves` are in use
/// (`nleaves <= npages`); pages `nleaves..npages` are zero, installed ahead of a
/// [`Frames::grow`] that has not completed.
struct GfnIndex {
    dirs: [HostPage; INDEX_DIRS],
    ndirs: usize,
    npages: usize,
    nleaves: usize,
}

impl GfnIndex {
    const fn new() -> Self {
        GfnIndex {
            dirs: [HostPage::NULL; INDEX_DIRS],
            ndirs: 0,
            npages: 0,
            nleaves: 0,
        }
    }

    /// Frames the index covers.
    fn covered(&self) -> u64 {
        // nleaves <= LEAVES_PER_DIR * INDEX_DIRS: the product is at most 2^22.
        (self.nleaves as u64).saturating_mul(GFNS_PER_LEAF)
    }

    fn dir(&self, d: usize) -> Option<TablePage> {
        let p = self.dirs.get(d)?;
        // SAFETY: directory pages are engine-owned until `release` (type invariant).
        unsafe { TablePage::from_host(*p) }
    }

    /// Index page `n` (installed or not).
    fn page(&self, n: usize) -> Option<TablePage> {
        if n >= self.npages {
            return None;
        }
        let dir = self.dir(n / LEAVES_PER_DIR)?;
        // n % LEAVES_PER_DIR < 256: the entry numbers are below 512.
        let addr = dir.get((n % LEAVES_PER_DIR).saturating_mul(2)) as usize;
        // SAFETY: an installed index page is engine-owned until `release` (invariant).
        unsafe { TablePage::from_addr(addr) }
    }

    /// The index page and item for `gfn`, if the index covers it.
    fn slot(&self, gfn: u64) -> Option<(TablePage, usize)> {
        if gfn >= self.covered() {
            return None;
        }
        // gfn < 2^22 here.
        let page = self.page((gfn / GFNS_PER_LEAF) as usize)?;
        Some((page, (gfn % GFNS_PER_LEAF) as usize))
    }

    /// Installs the next directory page if the next index page needs one. Returns the
    /// page back if not needed.
    ///
    /// # Safety
    ///
    /// `p` is a zeroed page from the engine's page source that nothing else uses until
    /// [`GfnIndex::release`] gives it back.
    unsafe fn add_dir(&mut self, p: HostPage) -> Result<(), HostPage> {
        // ndirs <= INDEX_DIRS: the product is at most 4096.
        if self.npages < self.ndirs.saturating_mul(LEAVES_PER_DIR) {
            return Err(p);
        }
        let Some(slot) = self.dirs.get_mut(self.ndirs) else {
            return Err(p);
        };
        *slot = p;
        self.ndirs = self.ndirs.saturating_add(1);
        Ok(())
    }

    /// Whether the next index page needs a directory page first.
    fn needs_dir(&self) -> bool {
        self.npages >= self.ndirs.saturating_mul(LEAVES_PER_DIR)
    }

    /// Installs the next index page (not yet in use). Returns it back without room.
    ///
    /// # Safety
    ///
    /// As for [`GfnIndex::add_dir`].
    unsafe fn add_page(&mut self, p: HostPage) -> Result<(), HostPage> {
        if self.needs_dir() {
            return Err(p);
        }
        let Some(dir) = self.dir(self.npages / LEAVES_PER_DIR) else {
            return Err(p);
        };
        // npages % LEAVES_PER_DIR < 256: entries below 512.
        let e = (self.npages % LEAVES_PER_DIR).saturating_mul(2);
        dir.set(e, p.ptr as usize as u64);
        dir.set(e | 1, p.hpa);
        // !needs_dir(): npages < ndirs * LEAVES_PER_DIR <= 4096.
        self.npages = self.npages.saturating_add(1);
        Ok(())
    }

    /// Gives every page back; the index is empty afterwards.
    fn release<P: PageSource + ?Sized>(&mut self, src: &mut P) {
        for n in 0..self.npages {
            let Some(dir) = self.dir(n / LEAVES_PER_DIR) else {
                continue;
            };
            let e = (n % LEAVES_PER_DIR).saturating_mul(2);
            let page = HostPage {
                ptr: dir.get(e) as usize as *mut u8,
                hpa: dir.get(e | 1),
            };
            if !page.is_null() {
                src.free_page(page);
            }
        }
        for d in self.dirs.iter().take(self.ndirs) {
            src.free_page(*d);
        }
        *self = GfnIndex::new();
    }
}

/// The frame index, the hash for frames beyond it, and the out-of-sync list.
///
/// # Invariants
///
/// A frame record of `gfn` is found through exactly one place: the index slot of `gfn`
/// when `gfn < index.covered()`, otherwise the hash chain of `gfn`'s bucket. `buckets` is
/// NULL or an engine-owned page of 1024 32-bit bucket heads (record ids, 0 for none);
/// with it NULL no frame beyond the index has a record. The out-of-sync list `unsync`
/// (newest first) holds exactly the records with `unsync != 0`.
pub(super) struct Frames {
    index: GfnIndex,
    buckets: HostPage,
    unsync: DList<UnsyncLinks>,
}

impl Frames {
    pub(super) const fn new() -> Self {
        Frames {
            index: GfnIndex::new(),
            buckets: HostPage::NULL,
            unsync: DList::new(),
        }
    }

    /// Whether the hash page is there.
    pub(super) fn has_table(&self) -> bool {
        !self.buckets.is_null()
    }

    /// Installs the hash page.
    ///
    /// # Safety
    ///
    /// `p` is a zeroed page from the engine's page source that nothing else uses until
    /// [`Frames::release`] gives it back.
    pub(super) unsafe fn set_table(&mut self, p: HostPage) {
        self.buckets = p;
    }

    /// Gives the index and hash pages back (teardown); the frames are empty afterwards.
    pub(super) fn release<P: PageSource + ?Sized>(&mut self, src: &mut P) {
        self.index.release(src);
        if !self.buckets.is_null() {
            src.free_page(self.buckets);
        }
        *self = Frames::new();
    }

    /// Frames the index covers (records of frames beyond it are in the hash).
    pub(super) fn indexed(&self) -> u64 {
        self.index.covered()
    }

    /// Grows the index to cover frames `0..frames` (at most [`MAX_INDEXED_FRAMES`]),
    /// allocating from `src`. On [`MmuError::NeedMemory`] the pages installed so far stay
    /// (unused) and the next call goes on from there; lookups see the larger index only
    /// once every page is there.
    pub(super) fn grow<P: PageSource + ?Sized>(
        &mut self,
        pool: &mut Pool,
        src: &mut P,
        frames: u64,
    ) -> Result<(), MmuError> {
        let want = frames.min(MAX_INDEXED_FRAMES).div_ceil(GFNS_PER_LEAF) as usize;
        if want <= self.index.nleaves {
            return Ok(());
        }
        while self.index.npages < want {
            if self.index.needs_dir() {
                let p = src.alloc_page(false).ok_or(MmuError::NeedMemory)?;
                // SAFETY: a zeroed page from the page source, now the engine's.
                if let Err(p) = unsafe { self.index.add_dir(p) } {
                    src.free_page(p);
                }
            }
            let p = src.alloc_page(false).ok_or(MmuError::NeedMemory)?;
            // SAFETY: as above.
            if let Err(p) = unsafe { self.index.add_page(p) } {
                src.free_page(p);
                return Err(MmuError::LimitReached);
            }
        }
        self.index.nleaves = want;
        self.migrate_from_hash(pool);
        Ok(())
    }

    /// Moves the records of frames the index now covers from the hash into the index.
    fn migrate_from_hash(&mut self, pool: &mut Pool) {
        let Some(t) = self.table() else {
            return;
        };
        let covered = self.index.covered();
        for b in 0..BUCKETS {
            let mut prev: Option<GfnId> = None;
            let mut cur: Option<GfnId> = Id::from_raw(half_get(t, b));
            while let Some(g) = cur {
                let (gfn, next) = (pool.get(g).gfn, pool.get(g).hash_next);
                if gfn < covered {
                    match prev {
                        None => half_set(t, b, raw_of(next)),
                        Some(p) => pool.get_mut(p).hash_next = next,
                    }
                    pool.get_mut(g).hash_next = None;
                    if let Some((page, i)) = self.index.slot(gfn) {
                        half_set(page, i, g.raw());
                    }
                } else {
                    prev = Some(g);
                }
                cur = next;
            }
        }
    }

    fn table(&self) -> Option<TablePage> {
        // SAFETY: the hash page is engine-owned until `release` (type invariant).
        unsafe { TablePage::from_host(self.buckets) }
    }

    fn bucket_of(gfn: u64) -> usize {
        (gfn.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 54) as usize // BUCKETS buckets
    }

    fn bucket_get(&self, b: usize) -> Option<GfnId> {
        Id::from_raw(self.table().map_or(0, |t| half_get(t, b)))
    }

    fn bucket_set(&mut self, b: usize, x: Option<GfnId>) {
        if let Some(t) = self.table() {
            half_set(t, b, raw_of(x));
        }
    }

    /// The record of `gfn`, if it has one.
    pub(super) fn lookup(&self, pool: &Pool, gfn: u64) -> Option<GfnId> {
        if let Some((page, i)) = self.index.slot(gfn) {
            return Id::from_raw(half_get(page, i));
        }
        let mut g = self.bucket_get(Self::bucket_of(gfn));
        while let Some(id) = g {
            let r = pool.get(id);
            if r.gfn == gfn {
                return Some(id);
            }
            g = r.hash_next;
        }
        None
    }

    /// The record of `gfn`, created if needed (`None` when the pool is empty, or when
    /// the frame is beyond the index and there is no hash page).
    pub(super) fn get(&mut self, pool: &mut Pool, gfn: u64) -> Option<GfnId> {
        if let Some(g) = self.lookup(pool, gfn) {
            return Some(g);
        }
        let slot = self.index.slot(gfn);
        if slot.is_none() && !self.has_table() {
            return None;
        }
        let g = pool.alloc::<GfnRec>()?;
        pool.get_mut(g).gfn = gfn;
        if let Some((page, i)) = slot {
            half_set(page, i, g.raw());
            return Some(g);
        }
        let b = Self::bucket_of(gfn);
        pool.get_mut(g).hash_next = self.bucket_get(b);
        self.bucket_set(b, Some(g));
        Some(g)
    }

    /// Forgets and frees record `g` (of `gfn`).
    fn remove(&mut self, pool: &mut Pool, gfn: u64, g: GfnId) {
        if let Some((page, i)) = self.index.slot(gfn) {
            if half_get(page, i) == g.raw() {
                half_set(page, i, 0);
                pool.free(g);
            }
            return;
        }
        let b = Self::bucket_of(gfn);
        let mut prev = None;
        let mut cur = self.bucket_get(b);
        while let Some(c) = cur {
            if c == g {
                break;
            }
            prev = Some(c);
            cur = pool.get(c).hash_next;
        }
        if cur != Some(g) {
            return;
        }
        let next = pool.get(g).hash_next;
        match prev {
            None => self.bucket_set(b, next),
            Some(p) => pool.get_mut(p).hash_next = next,
        }
        pool.free(g);
    }

    /// Number of out-of-sync frames.
    pub(super) fn nunsync(&self) -> usize {
        self.unsync.len()
    }

    /// The newest out-of-sync frame.
    pub(super) fn unsync_head(&self) -> Option<GfnId> {
        self.unsync.head()
    }

    /// The oldest out-of-sync frame.
    pub(super) fn unsync_tail(&self) -> Option<GfnId> {
        self.unsync.tail()
    }

    /// The out-of-sync frame after `g` (older).
    pub(super) fn unsync_next(pool: &Pool, g: GfnId) -> Option<GfnId> {
        DList::<UnsyncLinks>::next(pool, g)
    }

    /// Puts `g`, in sync, on the out-of-sync list (newest).
    pub(super) fn unsync_link(&mut self, pool: &mut Pool, g: GfnId) {
        pool.get_mut(g).unsync = 1;
        self.unsync.push_front(pool, g);
    }

    /// Takes `g` off the out-of-sync list (if it is on it).
    pub(super) fn unsync_unlink(&mut self, pool: &mut Pool, g: GfnId) {
        self.unsync.remove(pool, g);
        pool.get_mut(g).unsync = 0;
    }

    /// Forgets the out-of-sync list (teardown frees the records with the pool).
    pub(super) fn clear_unsync(&mut self) {
        self.unsync.clear();
    }
}

/// Buckets of the hash for frames beyond the index.
const BUCKETS: usize = 1024;

impl Mmu {
    pub(super) fn gr(&self, g: GfnId) -> &GfnRec {
        self.pool.get(g)
    }

    pub(super) fn gr_mut(&mut self, g: GfnId) -> &mut GfnRec {
        self.pool.get_mut(g)
    }

    pub(super) fn gfn_lookup(&self, gfn: u64) -> Option<GfnId> {
        self.frames.lookup(&self.pool, gfn)
    }

    pub(super) fn gfn_get(&mut self, gfn: u64) -> Option<GfnId> {
        self.frames.get(&mut self.pool, gfn)
    }

    /// Frees the record of `gfn` once nothing refers to the frame any more.
    pub(super) fn gfn_maybe_free(&mut self, gfn: u64) {
        let Some(g) = self.gfn_lookup(gfn) else {
            return;
        };
        let r = self.gr(g);
        if !r.rmap.is_empty() || r.sps.is_some() || r.unsync != 0 {
            return;
        }
        self.frames.remove(&mut self.pool, gfn, g);
    }

    /// Whether writes to `gfn` must fault: it has in-sync shadow pages.
    pub(super) fn gfn_tracked(&self, gfn: u64) -> bool {
        self.gfn_lookup(gfn)
            .is_some_and(|g| self.gr(g).n_indirect > 0 && self.gr(g).unsync == 0)
    }

    /// Number of leaf shadow entries mapping `gfn` (test and debugging aid).
    pub fn rmap_len(&mut self, gfn: u64) -> usize {
        let Some(g) = self.gfn_lookup(gfn) else {
            return 0;
        };
        let mut n = 0usize;
        let head = self.gr(g).rmap;
        // At most one entry per shadow entry in existence: far below usize::MAX.
        self.list_for_each(head, |_, _| n = n.saturating_add(1));
        n
    }

    /// Number of out-of-sync guest frames (test and debugging aid).
    pub fn unsync_frames(&self) -> usize {
        let mut n = 0usize;
        let mut g = self.frames.unsync_head();
        while let Some(id) = g {
            if n >= 1 << 20 {
                break;
            }
            n = n.saturating_add(1);
            g = Frames::unsync_next(&self.pool, id);
        }
        n
    }

    /// Whether `gfn` has any indirect shadow page (test and debugging aid).
    pub fn is_shadowed(&self, gfn: u64) -> bool {
        self.gfn_lookup(gfn)
            .is_some_and(|g| self.gr(g).n_indirect > 0)
    }

    // ---------------------------------------------------------------- reverse map

    /// Adds leaf entry `r` to the reverse map of `gfn`.
    pub(super) fn rmap_add(&mut self, gfn: u64, r: SRef) {
        let Some(g) = self.gfn_get(gfn) else {
            return;
        };
        let g = if self.gr(g).rmap_len >= RMAP_MAX {
            self.rmap_drop_all(gfn);
            // Dropping the last mapping may have freed the record: get it again (the
            // record freed is reused, so this cannot fail after top-up).
            self.gfn_get(gfn)
        } else {
            Some(g)
        };
        let Some(g) = g else {
            return;
        };
        let head = self.gr(g).rmap;
        let nh = self.list_add(head, r);
        let gr = self.gr_mut(g);
        gr.rmap = nh;
        gr.rmap_len = gr.rmap_len.saturating_add(1);
    }

    /// Drops every leaf shadow entry mapping `gfn` (they refault one by one). Bounded by
    /// [`RMAP_MAX`].
    fn rmap_drop_all(&mut self, gfn: u64) {
        self.stats.inc(Counter::RmapRecycles);
        for _ in 0..=RMAP_MAX {
            let Some(g) = self.gfn_lookup(gfn) else {
                return;
            };
            let Some(r) = self.list_first(self.gr(g).rmap) else {
                return;
            };
            let Some(sp) = r.sp() else {
                return;
            };
            self.drop_spte(sp, r.slot());
        }
    }

    /// Takes leaf entry `r`, at list position `pos`, off the reverse map of `gfn`.
    pub(super) fn rmap_remove(&mut self, gfn: u64, r: SRef, pos: u64) {
        let Some(g) = self.gfn_lookup(gfn) else {
            return;
        };
        let head = self.gr(g).rmap;
        let (nh, found) = self.list_remove(head, r, pos);
        let gr = self.gr_mut(g);
        if found {
            gr.rmap_len = gr.rmap_len.saturating_sub(1);
        }
        gr.rmap = nh;
        self.gfn_maybe_free(gfn);
    }

    // ---------------------------------------------------------------- write protection

    /// Clears the writable bit of every leaf shadow entry mapping `gfn`.
    pub(super) fn write_protect_gfn(&mut self, gfn: u64) {
        let Some(g) = self.gfn_lookup(gfn) else {
            return;
        };
        let head = self.gr(g).rmap;
        self.list_for_each(head, |m, r| {
            let Some(sp) = r.sp() else {
                return;
            };
            let v = m.spt_get(sp, r.slot());
            if m.is_filled(v) && v & PTE_W != 0 {
                m.spt_set(sp, r.slot(), v & !(PTE_W | super::bits::PTE_D));
            }
        });
    }

    // ---------------------------------------------------------------- out of sync

    /// Whether the write-protected frame `gfn` may go out of sync: only leaf tables.
    pub(super) fn can_unsync(&self, gfn: u64) -> bool {
        if !self.cfg.unsync {
            return false;
        }
        let Some(g) = self.gfn_lookup(gfn) else {
            return false;
        };
        let mut sp = self.gr(g).sps;
        while let Some(id) = sp {
            let s = self.sp(id);
            if !s.role.direct() && (s.role.level() != 1 || s.root_count > 0) {
                return false;
            }
            sp = s.gfn_next;
        }
        true
    }

    /// Lets the shadow pages of `gfn` go out of sync (the guest may write the table).
    pub(super) fn mark_unsync<G: GuestMemory + ?Sized>(&mut self, mem: &G, gfn: u64) {
        // Keep the number of out-of-sync frames bounded (see MAX_UNSYNC): resync the
        // oldest. A resync is what a TLB refill does, so it is allowed at any time.
        while self.frames.nunsync() >= MAX_UNSYNC {
            let Some(t) = self.frames.unsync_tail() else {
                break;
            };
            let tgfn = self.gr(t).gfn;
            if tgfn == gfn {
                break;
            }
            self.resync_gfn(mem, tgfn);
            if self.frames.unsync_tail() == Some(t) {
                self.frames.unsync_unlink(&mut self.pool, t);
            }
            self.stats.inc(Counter::UnsyncEvictions);
        }
        let Some(g) = self.gfn_lookup(gfn) else {
            return;
        };
        if self.gr(g).unsync != 0 {
            return;
        }
        let mut sp = self.gr(g).sps;
        while let Some(id) = sp {
            if !self.role(id).direct() {
                self.sp_mut(id).flags |= SP_UNSYNC;
                self.forget_guest_not_present(id);
            }
            sp = self.sp(id).gfn_next;
        }
        self.frames.unsync_link(&mut self.pool, g);
        self.stats.inc(Counter::Unsync);
    }
}
