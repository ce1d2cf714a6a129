// SPDX-License-Identifier: GPL-2.0

//! Guest frames: a record per frame that has shadow pages, leaf mappings or is out of
//! sync, found through a hash; the frame's reverse map, its write protection, and the
//! list of out-of-sync frames.

use super::bits::PTE_W;
use super::lists::{ListHead, SRef};
use super::mem::{GuestMemory, HostPage};
use super::page::TablePage;
use super::pool::{raw_of, Id, Pool, Record};
use super::sp::{SpId, SP_UNSYNC};
use super::stats::Counter;
use super::Mmu;

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
    /// Next record in the same hash bucket.
    pub hash_next: Option<GfnId>,
    /// Leaf shadow entries mapping the frame, `rmap_len` of them.
    pub rmap: ListHead,
    /// Shadow pages of the frame, chained through [`super::sp::SpRec::gfn_next`].
    pub sps: Option<SpId>,
    /// How many of them shadow a guest table (not direct).
    pub n_indirect: u32,
    pub unsync_prev: Option<GfnId>,
    pub unsync_next: Option<GfnId>,
    /// Nonzero when the frame is on the out-of-sync list.
    pub unsync: u32,
    pub rmap_len: u32,
}
const _: () = assert!(core::mem::size_of::<GfnRec>() == 40);
// SAFETY: repr(C), 40 bytes (asserted above), align 8, integers and `Option<Id>`s only:
// any bit pattern is valid.
unsafe impl Record for GfnRec {}

/// Id of a frame record.
pub(super) type GfnId = Id<GfnRec>;

/// The frame hash and the out-of-sync list.
///
/// # Invariants
///
/// `buckets` is NULL or an engine-owned page of 1024 32-bit bucket heads (record ids, 0
/// for none). The out-of-sync list runs from `unsync_head` (newest) to `unsync_tail`
/// through the records' `unsync_prev`/`unsync_next`, holds exactly the records with
/// `unsync != 0`, and has `nunsync` entries.
pub(super) struct Frames {
    buckets: HostPage,
    unsync_head: Option<GfnId>,
    unsync_tail: Option<GfnId>,
    nunsync: usize,
}

impl Frames {
    pub(super) const fn new() -> Self {
        Frames {
            buckets: HostPage::NULL,
            unsync_head: None,
            unsync_tail: None,
            nunsync: 0,
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
    /// [`Frames::take_table`] gives it back.
    pub(super) unsafe fn set_table(&mut self, p: HostPage) {
        self.buckets = p;
    }

    /// Takes the hash page back (teardown); the frames are empty afterwards.
    pub(super) fn take_table(&mut self) -> HostPage {
        let p = self.buckets;
        *self = Frames::new();
        p
    }

    fn table(&self) -> Option<TablePage> {
        // SAFETY: the hash page is engine-owned until `take_table` (type invariant).
        unsafe { TablePage::from_host(self.buckets) }
    }

    fn bucket_of(gfn: u64) -> usize {
        (gfn.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 54) as usize // 1024 buckets
    }

    fn bucket_get(&self, b: usize) -> Option<GfnId> {
        let v = self.table().map_or(0, |t| t.get(b / 2));
        Id::from_raw(if b & 1 == 0 {
            v as u32
        } else {
            (v >> 32) as u32
        })
    }

    fn bucket_set(&mut self, b: usize, x: Option<GfnId>) {
        let Some(t) = self.table() else {
            return;
        };
        let x = raw_of(x) as u64;
        let v = t.get(b / 2);
        let v = if b & 1 == 0 {
            (v & !0xffff_ffff) | x
        } else {
            (v & 0xffff_ffff) | (x << 32)
        };
        t.set(b / 2, v);
    }

    /// The record of `gfn`, if it has one.
    pub(super) fn lookup(&self, pool: &Pool, gfn: u64) -> Option<GfnId> {
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

    /// The record of `gfn`, created if needed (`None` only when the pool is empty).
    pub(super) fn get(&mut self, pool: &mut Pool, gfn: u64) -> Option<GfnId> {
        if let Some(g) = self.lookup(pool, gfn) {
            return Some(g);
        }
        let g = pool.alloc::<GfnRec>()?;
        let b = Self::bucket_of(gfn);
        let head = self.bucket_get(b);
        let r = pool.get_mut(g);
        r.gfn = gfn;
        r.hash_next = head;
        self.bucket_set(b, Some(g));
        Some(g)
    }

    /// Unhashes and frees record `g` (of `gfn`).
    fn remove(&mut self, pool: &mut Pool, gfn: u64, g: GfnId) {
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
        self.nunsync
    }

    /// The newest out-of-sync frame.
    pub(super) fn unsync_head(&self) -> Option<GfnId> {
        self.unsync_head
    }

    /// The oldest out-of-sync frame.
    pub(super) fn unsync_tail(&self) -> Option<GfnId> {
        self.unsync_tail
    }

    /// Puts `g` on the out-of-sync list (newest).
    pub(super) fn unsync_link(&mut self, pool: &mut Pool, g: GfnId) {
        let h = self.unsync_head;
        let r = pool.get_mut(g);
        r.unsync = 1;
        r.unsync_prev = None;
        r.unsync_next = h;
        match h {
            Some(h) => pool.get_mut(h).unsync_prev = Some(g),
            None => self.unsync_tail = Some(g),
        }
        self.unsync_head = Some(g);
        self.nunsync = self.nunsync.saturating_add(1);
    }

    /// Takes `g` off the out-of-sync list.
    pub(super) fn unsync_unlink(&mut self, pool: &mut Pool, g: GfnId) {
        let (p, n) = (pool.get(g).unsync_prev, pool.get(g).unsync_next);
        match p {
            Some(p) => pool.get_mut(p).unsync_next = n,
            None if self.unsync_head == Some(g) => self.unsync_head = n,
            None => {}
        }
        match n {
            Some(n) => pool.get_mut(n).unsync_prev = p,
            None if self.unsync_tail == Some(g) => self.unsync_tail = p,
            None => {}
        }
        if pool.get(g).unsync != 0 {
            self.nunsync = self.nunsync.saturating_sub(1);
        }
        let r = pool.get_mut(g);
        r.unsync = 0;
        r.unsync_prev = None;
        r.unsync_next = None;
    }

    /// Forgets the out-of-sync list (teardown frees the records with the pool).
    pub(super) fn clear_unsync(&mut self) {
        self.unsync_head = None;
        self.unsync_tail = None;
        self.nunsync = 0;
    }
}

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
            g = self.gr(id).unsync_next;
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
            if v & PTE_W != 0 {
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
            }
            sp = self.sp(id).gfn_next;
        }
        self.frames.unsync_link(&mut self.pool, g);
        self.stats.inc(Counter::Unsync);
    }
}
