// SPDX-License-Identifier: GPL-2.0

//! Shadow pages: their records, the (guest frame, role) hash, parent lists, the reverse
//! map, write protection, out-of-sync pages, zapping, reclaim, and the #PF path that
//! builds shadow entries from a guest walk.

use super::bits::*;
use super::mem::{page_get, page_set, GuestMemory, HostPage, PageSource, Record};
use super::root::{pae_slot, PAE_SPS};
use super::stats::Counter;
use super::walk::{self, Access, Format, GuestMode, PagingCtx, Walk, ACC_ALL, ACC_U, ACC_W, ACC_X};
use super::{Mmu, MmuError, PfOutcome};

/// Pages a #PF may need: up to 3 new shadow pages (table + side page each).
pub(super) const FAULT_PAGES: usize = 8;
/// Records a #PF may need: per new shadow page its record, a frame record and a parent
/// list block; plus a frame record and a reverse-map block for the leaf.
pub(super) const FAULT_RECS: u32 = 16;
/// Spare pages kept instead of being given back.
const SPARE_MAX: usize = 16;
/// Unpinned shadow pages reclaim keeps before it drops cached roots: the working set of
/// one guest instruction (up to 10 linear pages, 3 shadow pages each below the root).
pub(super) const MIN_UNPINNED: usize = 32;
/// Most guest frames out of sync at once: a guest TLB flush (CR3 write) resyncs them
/// all with interrupts off, so their number bounds its cost. Beyond it the oldest one is
/// resynced before another goes out of sync.
pub(super) const MAX_UNSYNC: usize = 64;

/// Shadow-entry bits the engine writes.
pub(super) const SPTE_NONLEAF: u64 = PTE_P | PTE_W | PTE_U | PTE_A;
/// Address bits of a shadow entry.
pub(super) const SPTE_ADDR: u64 = bits(51, 12);

/// A shadow page's role: everything besides the guest frame that changes its contents.
///
/// Bits: 0-2 level, 3-4 guest mode, 5 direct, 6-7 quadrant, 8-10 inherited access
/// (W, U, X), 11 CR0.WP, 12 CR4.SMEP && !CR0.WP, 13 EFER.NXE, 14 CR4.PSE,
/// 15 CR4.SMAP && !CR0.WP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Role(pub u32);

impl Role {
    pub(super) fn base(ctx: &PagingCtx) -> Role {
        let mut r = ctx.mode.code() << 3;
        if ctx.wp {
            r |= 1 << 11;
        }
        if ctx.smep && !ctx.wp {
            r |= 1 << 12;
        }
        if ctx.nxe {
            r |= 1 << 13;
        }
        if ctx.pse && ctx.mode == GuestMode::Bits32 {
            r |= 1 << 14;
        }
        // Shadows built under CR0.WP=0 may hold supervisor-writable copies of read-only
        // user pages; SMAP must not see those (KVM's smap_andnot_wp).
        if ctx.smap && !ctx.wp {
            r |= 1 << 15;
        }
        Role(r)
    }
    pub(super) fn level(self) -> u8 {
        (self.0 & 7) as u8
    }
    pub(super) fn mode(self) -> GuestMode {
        match (self.0 >> 3) & 3 {
            0 => GuestMode::Off,
            1 => GuestMode::Bits32,
            2 => GuestMode::Pae,
            _ => GuestMode::Long4,
        }
    }
    pub(super) fn direct(self) -> bool {
        self.0 & (1 << 5) != 0
    }
    pub(super) fn quadrant(self) -> u32 {
        (self.0 >> 6) & 3
    }
    pub(super) fn access(self) -> u8 {
        ((self.0 >> 8) & 7) as u8
    }
    pub(super) fn with(self, level: u8, direct: bool, quadrant: u32, access: u8) -> Role {
        let mut r = self.0 & !(7 | (1 << 5) | (3 << 6) | (7 << 8));
        r |= level as u32 & 7;
        if direct {
            r |= 1 << 5;
        }
        r |= (quadrant & 3) << 6;
        r |= (access as u32 & 7) << 8;
        Role(r)
    }
    /// Guest entries are 4 bytes (32-bit paging) for this indirect page.
    pub(super) fn gpte4(self) -> bool {
        !self.direct() && self.mode() == GuestMode::Bits32
    }
}

pub(super) const SP_UNSYNC: u8 = 1;

/// A shadow page's record.
///
/// # Invariants
///
/// `spt_*` and `side_*` describe two engine-owned pages; `side` holds, per slot, the
/// guest frame mapped (level 1) or the child's record index (levels above).
#[repr(C)]
pub(super) struct SpRec {
    pub gfn: u64,
    pub spt_ptr: usize,
    pub spt_hpa: u64,
    pub side_ptr: usize,
    pub side_hpa: u64,
    pub role: u32,
    pub parents: u32,
    pub gfn_next: u32,
    pub lru_prev: u32,
    pub lru_next: u32,
    pub root_count: u16,
    pub write_count: u8,
    pub flags: u8,
}
// SAFETY: repr(C), 64 bytes, align 8, integers only.
unsafe impl Record for SpRec {}

/// A guest frame's record: the shadow pages of the frame and the leaf entries mapping it.
#[repr(C)]
pub(super) struct GfnRec {
    pub gfn: u64,
    pub hash_next: u32,
    pub rmap: u32,
    pub sps: u32,
    pub n_indirect: u32,
    pub unsync_prev: u32,
    pub unsync_next: u32,
    pub unsync: u32,
    pub rmap_len: u32,
}
// SAFETY: repr(C), 40 bytes, align 8, integers only.
unsafe impl Record for GfnRec {}

/// A block of a reference list (parent lists, reverse maps): 15 references and a link.
#[repr(C)]
pub(super) struct Desc {
    pub refs: [u32; 15],
    pub next: u32,
}
// SAFETY: repr(C), 64 bytes, integers only.
unsafe impl Record for Desc {}

/// Tag of a list head that holds one reference directly.
const SINGLE: u32 = 1 << 31;

/// Side-page entry: the low bits hold the information (guest frame of a leaf entry,
/// child record of a non-leaf entry), the high bits the entry's position in its list.
pub(super) const SIDE_INFO: u64 = (1 << 40) - 1;
const SIDE_POS_SHIFT: u32 = 40;

/// List position of slot `i` of block `d` (block indices fit 20 bits: the pool holds at
/// most 2^20 records; 0 means "held in the head").
fn pos_of(d: u32, i: usize) -> u64 {
    ((d as u64) << 4) | (i as u64 & 15)
}

/// Longest reverse map: one more mapping of the frame first drops all of them (KVM's
/// RMAP_RECYCLE_THRESHOLD), so walking a frame's mappings has a bounded cost.
pub(super) const RMAP_MAX: u32 = 1000;

/// Reference to a shadow entry: (shadow page record, slot).
pub(super) fn sref(sp: u32, slot: usize) -> u32 {
    (sp << 9) | (slot as u32 & 511)
}
pub(super) fn sref_sp(r: u32) -> u32 {
    (r & !SINGLE) >> 9
}
pub(super) fn sref_slot(r: u32) -> usize {
    (r & 511) as usize
}

/// Index of `gva` in a shadow table of `level` (same for PAE and 4-level shadows; the PAE
/// root uses bits 31:30).
pub(super) fn sidx(gva: u64, level: u8) -> usize {
    // level - 1 is masked to 0..=3, so the shift is at most 39.
    let shift = 12u32.saturating_add(9u32.saturating_mul(level.saturating_sub(1) as u32 & 3));
    ((gva >> shift) & 511) as usize
}

impl Mmu {
    // ---------------------------------------------------------------- memory

    /// Makes sure `pages` spare pages, `low` spare low pages and `recs` free records are
    /// available, so that the event that follows cannot run out. Changes nothing visible.
    pub(super) fn topup<P: PageSource + ?Sized>(
        &mut self,
        src: &mut P,
        pages: usize,
        recs: u32,
        low: usize,
    ) -> Result<(), MmuError> {
        if self.buckets.is_null() {
            self.buckets = src.alloc_page(false).ok_or(MmuError::NeedMemory)?;
        }
        while self.pool.available() < recs {
            if !self.pool.can_grow() {
                // Bookkeeping at its limit: free shadow pages (and their records) instead.
                if !self.reclaim_one(src) && !self.evict_cached_root(src) {
                    return Err(MmuError::LimitReached);
                }
                continue;
            }
            if self.pool.needs_dir() {
                let p = src.alloc_page(false).ok_or(MmuError::NeedMemory)?;
                if let Err(p) = self.pool.add_dir(p) {
                    src.free_page(p);
                }
            }
            let p = src.alloc_page(false).ok_or(MmuError::NeedMemory)?;
            if let Err(p) = self.pool.add_page(p) {
                src.free_page(p);
            }
        }
        while self.spare.len() < pages {
            let p = src.alloc_page(false).ok_or(MmuError::NeedMemory)?;
            self.spare.push(p);
        }
        while self.spare_low.len() < low {
            let p = src.alloc_page(true).ok_or(MmuError::NeedMemory)?;
            self.spare_low.push(p);
        }
        Ok(())
    }

    pub(super) fn put_page<P: PageSource + ?Sized>(&mut self, src: &mut P, p: HostPage) {
        if p.is_null() {
            return;
        }
        if self.spare.len() < SPARE_MAX {
            self.spare.push(p);
        } else {
            src.free_page(p);
        }
    }

    pub(super) fn put_low_page<P: PageSource + ?Sized>(&mut self, src: &mut P, p: HostPage) {
        if p.is_null() {
            return;
        }
        if self.spare_low.len() < 2 {
            self.spare_low.push(p);
        } else {
            src.free_page(p);
        }
    }

    // ---------------------------------------------------------------- records

    pub(super) fn sp(&self, i: u32) -> &SpRec {
        self.pool.get::<SpRec>(i)
    }
    pub(super) fn sp_mut(&mut self, i: u32) -> &mut SpRec {
        self.pool.get_mut::<SpRec>(i)
    }
    fn gr(&self, i: u32) -> &GfnRec {
        self.pool.get::<GfnRec>(i)
    }
    fn gr_mut(&mut self, i: u32) -> &mut GfnRec {
        self.pool.get_mut::<GfnRec>(i)
    }
    pub(super) fn spt(&self, sp: u32) -> *mut u8 {
        self.sp(sp).spt_ptr as *mut u8
    }
    pub(super) fn side(&self, sp: u32) -> *mut u8 {
        self.sp(sp).side_ptr as *mut u8
    }
    pub(super) fn role(&self, sp: u32) -> Role {
        Role(self.sp(sp).role)
    }

    // ---------------------------------------------------------------- reference lists
    //
    // Every reference (`sp`, `slot`) is on exactly one list (the reverse map of the frame
    // a leaf entry maps, or the parent list of the child a non-leaf entry points to), and
    // the side page at (`sp`, `slot`) records where in that list it sits (`SIDE_POS`), so
    // removal is O(1) instead of a scan of the whole list.

    /// Records that reference `r` now sits at list position `pos` (0: in the head itself).
    fn set_pos(&mut self, r: u32, pos: u64) {
        let side = self.side(sref_sp(r));
        let slot = sref_slot(r);
        let v = page_get(side, slot);
        page_set(side, slot, (v & SIDE_INFO) | (pos << SIDE_POS_SHIFT));
    }

    /// Adds `r` to the list at `head`; returns the new head. The caller reserved records
    /// (top-up), so the block allocation cannot fail.
    fn list_add(&mut self, head: u32, r: u32) -> u32 {
        if head == 0 {
            self.set_pos(r, 0);
            return r | SINGLE;
        }
        if head & SINGLE != 0 {
            let d = self.pool.alloc();
            if d == 0 {
                // Unreachable after top-up: keep the list exact by not linking `r`; the
                // caller's entry is then cleared (see `list_add_or_clear`).
                return head;
            }
            let old = head & !SINGLE;
            let desc = self.pool.get_mut::<Desc>(d);
            desc.refs[0] = old;
            desc.refs[1] = r;
            self.set_pos(old, pos_of(d, 0));
            self.set_pos(r, pos_of(d, 1));
            return d;
        }
        // The head block keeps its references as a prefix; later blocks are full.
        let free = self.pool.get::<Desc>(head).refs.iter().position(|&x| x == 0);
        if let Some(i) = free {
            if let Some(x) = self.pool.get_mut::<Desc>(head).refs.get_mut(i) {
                *x = r;
            }
            self.set_pos(r, pos_of(head, i));
            return head;
        }
        let d = self.pool.alloc();
        if d == 0 {
            return head;
        }
        let desc = self.pool.get_mut::<Desc>(d);
        desc.refs[0] = r;
        desc.next = head;
        self.set_pos(r, pos_of(d, 0));
        d
    }

    /// Removes `r`, which sits at position `pos`, from the list at `head`; returns the new
    /// head and whether `r` was found. O(1): the last reference of the head block fills
    /// the hole.
    fn list_remove(&mut self, head: u32, r: u32, pos: u64) -> (u32, bool) {
        if head == 0 {
            return (0, false);
        }
        if head & SINGLE != 0 {
            return if head & !SINGLE == r { (0, true) } else { (head, false) };
        }
        let (fd, fi) = ((pos >> 4) as u32, (pos & 15) as usize);
        if fd == 0 || self.pool.get::<Desc>(fd).refs.get(fi).copied() != Some(r) {
            // Not expected (positions are exact); leave the list alone.
            return (head, false);
        }
        self.work = self.work.wrapping_add(1);
        let (li, lv) = {
            let desc = self.pool.get::<Desc>(head);
            let n = desc.refs.iter().position(|&x| x == 0).unwrap_or(15);
            let li = n.saturating_sub(1);
            (li, desc.refs.get(li).copied().unwrap_or(0))
        };
        if let Some(x) = self.pool.get_mut::<Desc>(fd).refs.get_mut(fi) {
            *x = lv;
        }
        if lv != r {
            self.set_pos(lv, pos_of(fd, fi));
        }
        if let Some(x) = self.pool.get_mut::<Desc>(head).refs.get_mut(li) {
            *x = 0;
        }
        let (n, next, first) = {
            let desc = self.pool.get::<Desc>(head);
            (li, desc.next, desc.refs[0])
        };
        if n == 0 {
            self.pool.free(head);
            return (next, true);
        }
        if n == 1 && next == 0 {
            self.pool.free(head);
            self.set_pos(first, 0);
            return (first | SINGLE, true);
        }
        (head, true)
    }

    /// First reference of a list (0 if empty).
    fn list_first(&self, head: u32) -> u32 {
        if head == 0 {
            return 0;
        }
        if head & SINGLE != 0 {
            return head & !SINGLE;
        }
        let desc = self.pool.get::<Desc>(head);
        desc.refs.iter().copied().find(|&x| x != 0).unwrap_or(0)
    }

    /// Calls `f` on every reference of a list; `f` must not change the list.
    fn list_for_each(&mut self, head: u32, mut f: impl FnMut(&mut Mmu, u32)) {
        if head == 0 {
            return;
        }
        if head & SINGLE != 0 {
            f(self, head & !SINGLE);
            return;
        }
        let mut d = head;
        while d != 0 {
            self.work = self.work.wrapping_add(15);
            for i in 0..15 {
                // Read afresh each time: `f` may change the descriptor.
                let r = self.pool.get::<Desc>(d).refs.get(i).copied().unwrap_or(0);
                if r != 0 {
                    f(self, r);
                }
            }
            d = self.pool.get::<Desc>(d).next;
        }
    }

    // ---------------------------------------------------------------- frame records

    fn bucket_of(&self, gfn: u64) -> usize {
        (gfn.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 54) as usize // 1024 buckets
    }

    fn bucket_get(&self, b: usize) -> u32 {
        let v = page_get(self.buckets.ptr, b / 2);
        if b & 1 == 0 {
            v as u32
        } else {
            (v >> 32) as u32
        }
    }

    fn bucket_set(&mut self, b: usize, x: u32) {
        let v = page_get(self.buckets.ptr, b / 2);
        let v = if b & 1 == 0 {
            (v & !0xffff_ffff) | x as u64
        } else {
            (v & 0xffff_ffff) | ((x as u64) << 32)
        };
        page_set(self.buckets.ptr, b / 2, v);
    }

    pub(super) fn gfn_lookup(&self, gfn: u64) -> u32 {
        let mut g = self.bucket_get(self.bucket_of(gfn));
        while g != 0 {
            let r = self.gr(g);
            if r.gfn == gfn {
                return g;
            }
            g = r.hash_next;
        }
        0
    }

    fn gfn_get(&mut self, gfn: u64) -> u32 {
        let g = self.gfn_lookup(gfn);
        if g != 0 {
            return g;
        }
        let g = self.pool.alloc();
        if g == 0 {
            return 0;
        }
        let b = self.bucket_of(gfn);
        let head = self.bucket_get(b);
        {
            let r = self.gr_mut(g);
            r.gfn = gfn;
            r.hash_next = head;
        }
        self.bucket_set(b, g);
        g
    }

    fn gfn_maybe_free(&mut self, gfn: u64) {
        let g = self.gfn_lookup(gfn);
        if g == 0 {
            return;
        }
        let (rmap, sps, unsync) = {
            let r = self.gr(g);
            (r.rmap, r.sps, r.unsync)
        };
        if rmap != 0 || sps != 0 || unsync != 0 {
            return;
        }
        let b = self.bucket_of(gfn);
        let mut prev = 0u32;
        let mut cur = self.bucket_get(b);
        while cur != 0 && cur != g {
            prev = cur;
            cur = self.gr(cur).hash_next;
        }
        if cur != g {
            return;
        }
        let next = self.gr(g).hash_next;
        if prev == 0 {
            self.bucket_set(b, next);
        } else {
            self.gr_mut(prev).hash_next = next;
        }
        self.pool.free(g);
    }

    /// Whether writes to `gfn` must fault: it has in-sync shadow pages.
    pub(super) fn gfn_tracked(&self, gfn: u64) -> bool {
        let g = self.gfn_lookup(gfn);
        g != 0 && self.gr(g).n_indirect > 0 && self.gr(g).unsync == 0
    }

    /// Number of leaf shadow entries mapping `gfn` (test and debugging aid).
    pub fn rmap_len(&mut self, gfn: u64) -> usize {
        let g = self.gfn_lookup(gfn);
        if g == 0 {
            return 0;
        }
        let mut n = 0usize;
        let head = self.gr(g).rmap;
        // At most one entry per shadow entry in existence: far below usize::MAX.
        self.list_for_each(head, |_, _| n = n.saturating_add(1));
        n
    }

    /// Number of out-of-sync guest frames (test and debugging aid).
    pub fn unsync_frames(&self) -> usize {
        let mut n = 0usize;
        let mut g = self.unsync_head;
        while g != 0 && n < 1 << 20 {
            n = n.saturating_add(1);
            g = self.gr(g).unsync_next;
        }
        n
    }

    /// Whether `gfn` has any indirect shadow page (test and debugging aid).
    pub fn is_shadowed(&self, gfn: u64) -> bool {
        let g = self.gfn_lookup(gfn);
        g != 0 && self.gr(g).n_indirect > 0
    }

    // ---------------------------------------------------------------- reverse map

    fn rmap_add(&mut self, gfn: u64, r: u32) {
        let g = self.gfn_get(gfn);
        if g == 0 {
            return;
        }
        let g = if self.gr(g).rmap_len >= RMAP_MAX {
            self.rmap_drop_all(gfn);
            // Dropping the last mapping may have freed the record: get it again (the
            // record freed is reused, so this cannot fail after top-up).
            self.gfn_get(gfn)
        } else {
            g
        };
        if g == 0 {
            return;
        }
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
            let g = self.gfn_lookup(gfn);
            if g == 0 {
                return;
            }
            let r = self.list_first(self.gr(g).rmap);
            if r == 0 {
                return;
            }
            self.drop_spte(sref_sp(r), sref_slot(r));
        }
    }

    fn rmap_remove(&mut self, gfn: u64, r: u32, pos: u64) {
        let g = self.gfn_lookup(gfn);
        if g == 0 {
            return;
        }
        let head = self.gr(g).rmap;
        let (nh, found) = self.list_remove(head, r, pos);
        let gr = self.gr_mut(g);
        if found {
            gr.rmap_len = gr.rmap_len.saturating_sub(1);
        }
        gr.rmap = nh;
        self.gfn_maybe_free(gfn);
    }

    /// Clears the writable bit of every leaf shadow entry mapping `gfn`.
    fn write_protect_gfn(&mut self, gfn: u64) {
        let g = self.gfn_lookup(gfn);
        if g == 0 {
            return;
        }
        let head = self.gr(g).rmap;
        self.list_for_each(head, |m, r| {
            let spt = m.spt(sref_sp(r));
            let slot = sref_slot(r);
            let v = page_get(spt, slot);
            if v & PTE_W != 0 {
                page_set(spt, slot, v & !(PTE_W | PTE_D));
            }
        });
    }

    // ---------------------------------------------------------------- LRU

    fn lru_remove(&mut self, sp: u32) {
        let (p, n) = (self.sp(sp).lru_prev, self.sp(sp).lru_next);
        if p != 0 {
            self.sp_mut(p).lru_next = n;
        } else if self.lru_head == sp {
            self.lru_head = n;
        }
        if n != 0 {
            self.sp_mut(n).lru_prev = p;
        } else if self.lru_tail == sp {
            self.lru_tail = p;
        }
        let s = self.sp_mut(sp);
        s.lru_prev = 0;
        s.lru_next = 0;
    }

    fn lru_push_front(&mut self, sp: u32) {
        let h = self.lru_head;
        {
            let s = self.sp_mut(sp);
            s.lru_prev = 0;
            s.lru_next = h;
        }
        if h != 0 {
            self.sp_mut(h).lru_prev = sp;
        }
        self.lru_head = sp;
        if self.lru_tail == 0 {
            self.lru_tail = sp;
        }
    }

    pub(super) fn lru_touch(&mut self, sp: u32) {
        if self.lru_head != sp {
            self.lru_remove(sp);
            self.lru_push_front(sp);
        }
    }

    // ---------------------------------------------------------------- unsync list

    fn unsync_link(&mut self, g: u32) {
        let h = self.unsync_head;
        {
            let r = self.gr_mut(g);
            r.unsync = 1;
            r.unsync_prev = 0;
            r.unsync_next = h;
        }
        if h != 0 {
            self.gr_mut(h).unsync_prev = g;
        } else {
            self.unsync_tail = g;
        }
        self.unsync_head = g;
        self.nunsync = self.nunsync.saturating_add(1);
    }

    fn unsync_unlink(&mut self, g: u32) {
        let (p, n) = (self.gr(g).unsync_prev, self.gr(g).unsync_next);
        if p != 0 {
            self.gr_mut(p).unsync_next = n;
        } else if self.unsync_head == g {
            self.unsync_head = n;
        }
        if n != 0 {
            self.gr_mut(n).unsync_prev = p;
        } else if self.unsync_tail == g {
            self.unsync_tail = p;
        }
        if self.gr(g).unsync != 0 {
            self.nunsync = self.nunsync.saturating_sub(1);
        }
        let r = self.gr_mut(g);
        r.unsync = 0;
        r.unsync_prev = 0;
        r.unsync_next = 0;
    }

    // ---------------------------------------------------------------- shadow pages

    /// Finds the shadow page for (gfn, role).
    fn sp_find(&self, gfn: u64, role: Role) -> u32 {
        let g = self.gfn_lookup(gfn);
        if g == 0 {
            return 0;
        }
        let mut sp = self.gr(g).sps;
        while sp != 0 {
            if self.sp(sp).role == role.0 {
                return sp;
            }
            sp = self.sp(sp).gfn_next;
        }
        0
    }

    /// Finds or creates the shadow page for (gfn, role). Needs the reserves of a top-up
    /// (2 pages, 3 records). An out-of-sync page that is found is refreshed from the
    /// guest table (its stale entries must not leak into a new place it is linked from).
    pub(super) fn sp_get<G: GuestMemory + ?Sized>(&mut self, mem: &G, gfn: u64, role: Role) -> u32 {
        let sp = self.sp_find(gfn, role);
        if sp != 0 {
            if self.sp(sp).flags & SP_UNSYNC != 0 {
                self.sync_sp_entries(mem, sp);
            }
            return sp;
        }
        if !role.direct() {
            let g = self.gfn_lookup(gfn);
            if g != 0 && self.gr(g).unsync != 0 {
                self.resync_gfn(mem, gfn);
            }
        }
        let g = self.gfn_get(gfn);
        if g == 0 {
            return 0;
        }
        let (Some(spt), Some(side)) = (self.spare.pop(), self.spare.pop()) else {
            return 0;
        };
        let sp = self.pool.alloc();
        if sp == 0 {
            self.spare.push(spt);
            self.spare.push(side);
            return 0;
        }
        let chain = self.gr(g).sps;
        {
            let s = self.sp_mut(sp);
            s.gfn = gfn;
            s.role = role.0;
            s.spt_ptr = spt.ptr as usize;
            s.spt_hpa = spt.hpa;
            s.side_ptr = side.ptr as usize;
            s.side_hpa = side.hpa;
            s.gfn_next = chain;
        }
        self.gr_mut(g).sps = sp;
        self.lru_push_front(sp);
        // Both counts are bounded by the shadow pages in existence (<= max_shadow_pages
        // plus a root's worth, and by the pool's 2^20 records).
        self.nsp = self.nsp.saturating_add(1);
        self.stats.inc(Counter::ShadowPagesCreated);
        if !role.direct() {
            let n = self.gr(g).n_indirect;
            self.gr_mut(g).n_indirect = n.saturating_add(1);
            if n == 0 {
                self.write_protect_gfn(gfn);
                self.stats.inc(Counter::FramesWriteProtected);
            }
        }
        sp
    }

    /// Points non-leaf entry (`parent`, `slot`) at `child`.
    pub(super) fn link(&mut self, parent: u32, slot: usize, child: u32) {
        let hpa = self.sp(child).spt_hpa;
        page_set(self.side(parent), slot, child as u64);
        page_set(self.spt(parent), slot, (hpa & SPTE_ADDR) | SPTE_NONLEAF);
        let head = self.sp(child).parents;
        let nh = self.list_add(head, sref(parent, slot));
        self.sp_mut(child).parents = nh;
    }

    /// Clears shadow entry (`sp`, `slot`), keeping the reverse map and parent lists right.
    pub(super) fn drop_spte(&mut self, sp: u32, slot: usize) {
        self.work = self.work.wrapping_add(1);
        let spt = self.spt(sp);
        let v = page_get(spt, slot);
        if v & PTE_P == 0 {
            return;
        }
        page_set(spt, slot, 0);
        let side = self.side(sp);
        let v = page_get(side, slot);
        let (info, pos) = (v & SIDE_INFO, v >> SIDE_POS_SHIFT);
        if self.role(sp).level() == 1 {
            self.rmap_remove(info, sref(sp, slot), pos);
        } else {
            let child = info as u32;
            let head = self.sp(child).parents;
            let (nh, _) = self.list_remove(head, sref(sp, slot), pos);
            self.sp_mut(child).parents = nh;
        }
        page_set(side, slot, 0);
    }

    /// Installs leaf entry (`sp`, `slot`) mapping guest frame `gfn` as `spte`.
    pub(super) fn set_leaf(&mut self, sp: u32, slot: usize, gfn: u64, spte: u64) {
        let spt = self.spt(sp);
        let side = self.side(sp);
        let old = page_get(spt, slot);
        if old & PTE_P != 0 && page_get(side, slot) & SIDE_INFO == gfn {
            page_set(spt, slot, spte);
            return;
        }
        self.drop_spte(sp, slot);
        page_set(side, slot, gfn);
        page_set(spt, slot, spte);
        self.rmap_add(gfn, sref(sp, slot));
    }

    /// Zaps a shadow page: clears its entries, unlinks it from its parents and frees it.
    /// A page pinned by a root is only emptied.
    pub(super) fn zap_sp<P: PageSource + ?Sized>(&mut self, src: &mut P, sp: u32) {
        for slot in 0..512 {
            self.drop_spte(sp, slot);
        }
        self.sp_mut(sp).write_count = 0;
        if self.sp(sp).root_count > 0 {
            return;
        }
        loop {
            let head = self.sp(sp).parents;
            let r = self.list_first(head);
            if r == 0 {
                break;
            }
            let (p, slot) = (sref_sp(r), sref_slot(r));
            let v = page_get(self.side(p), slot);
            if (v & SIDE_INFO) as u32 == sp && page_get(self.spt(p), slot) & PTE_P != 0 {
                self.drop_spte(p, slot);
            } else {
                // Not expected (lists are exact); drop the stale reference anyway.
                let (nh, found) = self.list_remove(head, r, v >> SIDE_POS_SHIFT);
                self.sp_mut(sp).parents = if found { nh } else { 0 };
                if !found {
                    break;
                }
            }
        }
        let gfn = self.sp(sp).gfn;
        let role = self.role(sp);
        let g = self.gfn_lookup(gfn);
        if g != 0 {
            // Unchain.
            let mut prev = 0u32;
            let mut cur = self.gr(g).sps;
            while cur != 0 && cur != sp {
                prev = cur;
                cur = self.sp(cur).gfn_next;
            }
            if cur == sp {
                let next = self.sp(sp).gfn_next;
                if prev == 0 {
                    self.gr_mut(g).sps = next;
                } else {
                    self.sp_mut(prev).gfn_next = next;
                }
            }
            if !role.direct() {
                let n = self.gr(g).n_indirect.saturating_sub(1);
                self.gr_mut(g).n_indirect = n;
                if n == 0 && self.gr(g).unsync != 0 {
                    self.unsync_unlink(g);
                }
            }
        }
        self.gfn_maybe_free(gfn);
        self.lru_remove(sp);
        let (spt, side) = {
            let s = self.sp(sp);
            (
                HostPage { ptr: s.spt_ptr as *mut u8, hpa: s.spt_hpa },
                HostPage { ptr: s.side_ptr as *mut u8, hpa: s.side_hpa },
            )
        };
        self.put_page(src, spt);
        self.put_page(src, side);
        self.pool.free(sp);
        self.nsp = self.nsp.saturating_sub(1);
        self.stats.inc(Counter::ShadowPagesZapped);
    }

    /// Zaps the least recently used unpinned shadow page. False if there is none.
    pub(super) fn reclaim_one<P: PageSource + ?Sized>(&mut self, src: &mut P) -> bool {
        let mut sp = self.lru_tail;
        // Pinned pages are few (at most 4 per cached root): the scan is bounded.
        while sp != 0 && self.sp(sp).root_count > 0 {
            self.work = self.work.wrapping_add(1);
            sp = self.sp(sp).lru_prev;
        }
        if sp == 0 {
            return false;
        }
        self.zap_sp(src, sp);
        self.stats.inc(Counter::ShadowPagesReclaimed);
        true
    }

    /// Keeps room for `need` new shadow pages under `max_shadow_pages` while guaranteeing
    /// forward progress: the least recently used unpinned pages go first, but never below
    /// [`MIN_UNPINNED`] of them; below that, cached roots other than the current one are
    /// dropped first (their pages become unpinned and reclaimable), so cached address
    /// spaces can never squeeze out the working set of the one that runs. Only when
    /// neither frees anything is the limit reported ([`MmuError::LimitReached`]); with the
    /// limit at least 64 and at most 4 pages pinned by the current root that cannot happen.
    pub(super) fn make_room<P: PageSource + ?Sized>(
        &mut self,
        src: &mut P,
        need: usize,
    ) -> Result<(), MmuError> {
        // `need` is a handful of pages: the sum does not come near usize::MAX.
        while self.nsp.saturating_add(need) > self.cfg.max_shadow_pages {
            let unpinned = self.nsp.saturating_sub(self.npinned);
            if unpinned > MIN_UNPINNED && self.reclaim_one(src) {
                continue;
            }
            if self.evict_cached_root(src) {
                continue;
            }
            if !self.reclaim_one(src) {
                return Err(MmuError::LimitReached);
            }
        }
        Ok(())
    }

    /// Frees every shadow page (teardown).
    pub(super) fn free_all_sps<P: PageSource + ?Sized>(&mut self, src: &mut P) {
        let mut sp = self.lru_head;
        while sp != 0 {
            let next = self.sp(sp).lru_next;
            let s = self.sp(sp);
            let spt = HostPage { ptr: s.spt_ptr as *mut u8, hpa: s.spt_hpa };
            let side = HostPage { ptr: s.side_ptr as *mut u8, hpa: s.side_hpa };
            src.free_page(spt);
            src.free_page(side);
            sp = next;
        }
        self.lru_head = 0;
        self.lru_tail = 0;
        self.nsp = 0;
        self.unsync_head = 0;
        self.unsync_tail = 0;
        self.nunsync = 0;
    }

    // ---------------------------------------------------------------- sync

    /// A paging context that interprets guest entries as a shadow page of `role` does.
    pub(super) fn role_ctx(&self, role: Role) -> PagingCtx {
        let mut c = self.ctx;
        c.mode = role.mode();
        c.nxe = role.0 & (1 << 13) != 0;
        c.pse = role.0 & (1 << 14) != 0;
        c.wp = role.0 & (1 << 11) != 0;
        c
    }

    /// Guest-physical address of the guest entry behind leaf slot `slot` of indirect
    /// level-1 page `sp`.
    fn gpte_gpa(&self, sp: u32, slot: usize) -> (u64, u64) {
        let role = self.role(sp);
        let base = self.sp(sp).gfn << 12;
        if role.gpte4() {
            // gfn < 2^40 and the offsets are below 8 KiB: nothing wraps; wrapping keeps
            // the guest-physical arithmetic total.
            let gi = (role.quadrant() as u64).wrapping_mul(512).wrapping_add(slot as u64);
            (base.wrapping_add(gi.wrapping_mul(4)), 4)
        } else {
            (base.wrapping_add((slot as u64).wrapping_mul(8)), 8)
        }
    }

    /// Builds a leaf shadow entry.
    pub(super) fn make_spte(hpa: u64, perm: u8, writable: bool) -> u64 {
        let mut s = (hpa & SPTE_ADDR) | PTE_P | PTE_A;
        if writable {
            s |= PTE_W | PTE_D;
        }
        if perm & ACC_U != 0 {
            s |= PTE_U;
        }
        if perm & ACC_X == 0 {
            s |= PTE_NX;
        }
        s
    }

    /// Re-derives leaf entry (`sp`, `slot`) of an indirect level-1 page from the guest
    /// entry: same frame -> new permissions, anything else -> dropped (refaults later).
    pub(super) fn sync_entry<G: GuestMemory + ?Sized>(&mut self, mem: &G, sp: u32, slot: usize) {
        self.work = self.work.wrapping_add(1);
        let spt = self.spt(sp);
        let old = page_get(spt, slot);
        if old & PTE_P == 0 {
            return;
        }
        let role = self.role(sp);
        let ctx = self.role_ctx(role);
        let (gpa, size) = self.gpte_gpa(sp, slot);
        let gpte = super::mem::read_gpte(mem, gpa, size);
        let ok_present = gpte & PTE_P != 0 && gpte & PTE_A != 0;
        let rsvd = match role.mode() {
            GuestMode::Bits32 => walk::Bits32::rsvd(&ctx, gpte, 1),
            GuestMode::Pae => walk::Pae::rsvd(&ctx, gpte, 1),
            _ => walk::Long4::rsvd(&ctx, gpte, 1),
        };
        let gfn = if size == 4 { (gpte & 0xffff_f000) >> 12 } else { (gpte & bits(51, 12)) >> 12 };
        if !ok_present || rsvd || page_get(self.side(sp), slot) & SIDE_INFO != gfn {
            self.drop_spte(sp, slot);
            return;
        }
        let Some(frame) = mem.frame(gfn) else {
            self.drop_spte(sp, slot);
            return;
        };
        let gperm = match role.mode() {
            GuestMode::Bits32 => walk::Bits32::perm(&ctx, gpte),
            _ => walk::Long4::perm(&ctx, gpte),
        };
        let perm = role.access() & gperm;
        let writable = perm & ACC_W != 0 && gpte & PTE_D != 0 && !self.gfn_tracked(gfn);
        let spte = Self::make_spte(frame.hpa, perm, writable);
        page_set(spt, slot, spte);
    }

    /// Re-derives every entry of an out-of-sync page (without changing its state).
    fn sync_sp_entries<G: GuestMemory + ?Sized>(&mut self, mem: &G, sp: u32) {
        if self.role(sp).level() != 1 || self.role(sp).direct() {
            return;
        }
        for slot in 0..512 {
            self.sync_entry(mem, sp, slot);
        }
    }

    /// Brings an out-of-sync frame back in sync and write-protects it again.
    pub(super) fn resync_gfn<G: GuestMemory + ?Sized>(&mut self, mem: &G, gfn: u64) {
        let g = self.gfn_lookup(gfn);
        if g == 0 || self.gr(g).unsync == 0 {
            return;
        }
        // Back in sync first, so that entries mapping the frame itself come out read-only.
        self.unsync_unlink(g);
        let mut sp = self.gr(g).sps;
        while sp != 0 {
            let next = self.sp(sp).gfn_next;
            if self.sp(sp).flags & SP_UNSYNC != 0 {
                self.sp_mut(sp).flags &= !SP_UNSYNC;
                self.sync_sp_entries(mem, sp);
            }
            sp = next;
        }
        self.write_protect_gfn(gfn);
        self.stats.inc(Counter::Resync);
    }

    /// Resyncs every out-of-sync frame (a guest TLB flush): at most [`MAX_UNSYNC`].
    pub(super) fn resync_all<G: GuestMemory + ?Sized>(&mut self, mem: &G) {
        while self.unsync_head != 0 {
            let g = self.unsync_head;
            let gfn = self.gr(g).gfn;
            self.resync_gfn(mem, gfn);
            if self.unsync_head == g {
                // Defensive: never loop forever.
                self.unsync_unlink(g);
            }
        }
    }

    /// Whether the write-protected frame `gfn` may go out of sync: only leaf tables.
    fn can_unsync(&self, gfn: u64) -> bool {
        if !self.cfg.unsync {
            return false;
        }
        let g = self.gfn_lookup(gfn);
        if g == 0 {
            return false;
        }
        let mut sp = self.gr(g).sps;
        while sp != 0 {
            let s = self.sp(sp);
            let role = Role(s.role);
            if !role.direct() && (role.level() != 1 || s.root_count > 0) {
                return false;
            }
            sp = s.gfn_next;
        }
        true
    }

    fn mark_unsync<G: GuestMemory + ?Sized>(&mut self, mem: &G, gfn: u64) {
        // Keep the number of out-of-sync frames bounded (see MAX_UNSYNC): resync the
        // oldest. A resync is what a TLB refill does, so it is allowed at any time.
        while self.nunsync >= MAX_UNSYNC && self.unsync_tail != 0 {
            let t = self.unsync_tail;
            let tgfn = self.gr(t).gfn;
            if tgfn == gfn {
                break;
            }
            self.resync_gfn(mem, tgfn);
            if self.unsync_tail == t {
                self.unsync_unlink(t);
            }
            self.stats.inc(Counter::UnsyncEvictions);
        }
        let g = self.gfn_lookup(gfn);
        if g == 0 || self.gr(g).unsync != 0 {
            return;
        }
        let mut sp = self.gr(g).sps;
        while sp != 0 {
            if !self.role(sp).direct() {
                self.sp_mut(sp).flags |= SP_UNSYNC;
            }
            sp = self.sp(sp).gfn_next;
        }
        self.unsync_link(g);
        self.stats.inc(Counter::Unsync);
    }

    // ---------------------------------------------------------------- emulated writes

    /// Tells the engine that the guest stored `len` bytes at `gpa` (the caller emulated the
    /// write after [`PfOutcome::EmulateWrite`]). Shadow entries derived from the bytes
    /// written are dropped; frames written too often without being used as page tables
    /// are unshadowed. Writes must not cross a 4 KiB boundary (split them). Needs no
    /// memory.
    pub fn guest_wrote<P: PageSource + ?Sized>(&mut self, src: &mut P, gpa: u64, len: usize) {
        // An instruction was emulated: the next unprotect starts a new history.
        self.retried = [(0, u64::MAX); 2];
        let gfn = gpa >> 12;
        let g = self.gfn_lookup(gfn);
        if g == 0 || self.gr(g).n_indirect == 0 || len == 0 {
            return;
        }
        self.stats.inc(Counter::PtWritesHandled);
        let off = gpa & 0xfff;
        let end = off.saturating_add(len as u64).min(4096);
        let mut flooded = false;
        let mut sp = self.gr(g).sps;
        while sp != 0 {
            let next = self.sp(sp).gfn_next;
            let role = self.role(sp);
            if role.direct() {
                sp = next;
                continue;
            }
            let wc = self.sp(sp).write_count.saturating_add(1);
            self.sp_mut(sp).write_count = wc;
            if wc >= self.cfg.flood_threshold && self.sp(sp).root_count > 0 {
                // A table of a cached (not current) address space being overwritten:
                // forget that address space so the table can go.
                self.uncache_roots_pinning(src, sp);
            }
            if wc >= self.cfg.flood_threshold && self.sp(sp).root_count == 0 {
                self.zap_sp(src, sp);
                flooded = true;
                sp = next;
                continue;
            }
            // Entries are 4 or 8 bytes; end > off since len > 0.
            let size_log2 = if role.gpte4() { 2 } else { 3 };
            let first = off >> size_log2;
            let last = end.saturating_sub(1) >> size_log2;
            for gi in first..=last {
                if role.gpte4() {
                    let q = role.quadrant() as u64;
                    if role.level() == 1 {
                        if gi / 512 == q {
                            self.drop_spte(sp, (gi % 512) as usize);
                        }
                    } else if gi / 256 == q {
                        // A 4 MiB guest entry is the two shadow entries 2i and 2i+1.
                        let s = ((gi % 256) << 1) as usize;
                        self.drop_spte(sp, s);
                        self.drop_spte(sp, s | 1);
                    }
                } else {
                    self.drop_spte(sp, gi as usize);
                }
            }
            sp = next;
        }
        if flooded && !self.is_shadowed(gfn) {
            self.stats.inc(Counter::FloodUnshadows);
        }
    }

    /// The fallback for a [`PfOutcome::EmulateWrite`] whose instruction (at `rip`) cannot
    /// be emulated: stops shadowing the page table at `gpa` so that re-entering the guest
    /// lets the write through. Returns true when it did and re-entering makes progress;
    /// false when re-entering would only fault the same way again, and the vCPU must end
    /// the run with an internal error (with the instruction bytes) instead:
    ///
    /// * the write was not to a page table (CR0.WP=0 with SMAP: the engine must see every
    ///   such write) or the frame is not shadowed;
    /// * the frame is a root-level table of the current root (it stays pinned);
    /// * the frame is a table on the store's own translation path (the retry would
    ///   shadow it again);
    /// * the same (`rip`, `gpa`) was let through by one of the last two calls without an
    ///   emulated write in between: the retry did not help (another access of the same
    ///   instruction shadows the frame again), as KVM's `last_retry_eip/addr`.
    ///
    /// Cached roots other than the current one that pin the frame are dropped. Needs no
    /// memory.
    pub fn unprotect<P: PageSource + ?Sized, G: GuestMemory + ?Sized>(
        &mut self,
        src: &mut P,
        mem: &G,
        rip: u64,
        gpa: u64,
    ) -> bool {
        let ok = self.unprotect_inner(src, mem, rip, gpa);
        if !ok {
            self.retried = [(0, u64::MAX); 2];
            self.stats.inc(Counter::UnprotectRefused);
        }
        ok
    }

    fn unprotect_inner<P: PageSource + ?Sized, G: GuestMemory + ?Sized>(
        &mut self,
        src: &mut P,
        mem: &G,
        rip: u64,
        gpa: u64,
    ) -> bool {
        let gfn = gpa >> 12;
        if self.retried.contains(&(rip, gpa)) {
            return false;
        }
        let site = self.emu_site;
        if site.gpa >> 12 == gfn && !site.page_table {
            return false;
        }
        let g = self.gfn_lookup(gfn);
        if g == 0 || self.gr(g).n_indirect == 0 {
            return false;
        }
        // Pinned by the current root?
        let mut sp = self.gr(g).sps;
        while sp != 0 {
            self.work = self.work.wrapping_add(1);
            if !self.role(sp).direct() && self.pinned_by_current(sp) {
                return false;
            }
            sp = self.sp(sp).gfn_next;
        }
        // On the store's own translation path?
        if site.gpa >> 12 == gfn {
            if let Ok(w) = walk::walk(&self.ctx, mem, site.gva, site.access, false) {
                let top = match self.ctx.mode {
                    GuestMode::Long4 => 4,
                    GuestMode::Off => 0,
                    _ => 2,
                };
                let mut l = top;
                while l >= w.level.max(1) && l > 0 {
                    if w.table_gfn.get(l as usize).copied() == Some(gfn) {
                        return false;
                    }
                    // l > 0 (loop condition).
                    l = l.saturating_sub(1);
                }
            }
        }
        self.retried = [(rip, gpa), self.retried[0]];
        let mut sp = self.gr(g).sps;
        while sp != 0 {
            let next = self.sp(sp).gfn_next;
            if !self.role(sp).direct() {
                if self.sp(sp).root_count > 0 {
                    self.uncache_roots_pinning(src, sp);
                }
                self.zap_sp(src, sp);
            }
            sp = next;
        }
        self.stats.inc(Counter::Unprotects);
        !self.is_shadowed(gfn)
    }

    // ---------------------------------------------------------------- #PF

    /// Handles a #PF VM exit: `gva` (exit qualification), the hardware error code, the
    /// guest's CPL and EFLAGS.AC at the fault.
    pub fn page_fault<P: PageSource + ?Sized, G: GuestMemory + ?Sized>(
        &mut self,
        src: &mut P,
        mem: &G,
        gva: u64,
        error_code: u32,
        cpl: u8,
        ac: bool,
    ) -> Result<PfOutcome, MmuError> {
        self.topup(src, FAULT_PAGES, FAULT_RECS, 0)?;
        if self.cur_root == 0 {
            self.topup(src, super::root::ROOT_PAGES, super::root::ROOT_RECS, 1)?;
            self.switch_root(src, mem);
        }
        self.make_room(src, 4)?;
        let ctx = self.ctx;
        let gva = ctx.canon(gva);
        let access = Access::from_error_code(error_code, cpl, ac);
        let mut w = match walk::walk(&ctx, mem, gva, access, false) {
            Ok(w) => w,
            Err(pf) => {
                self.stats.inc(Counter::GuestFaultsInjected);
                return Ok(PfOutcome::Inject(pf));
            }
        };
        let gfn = w.gpa >> 12;
        let Some(frame) = mem.frame(gfn) else {
            if !walk::apply_ad(&ctx, mem, &mut w, access) {
                return Ok(PfOutcome::Fixed);
            }
            self.stats.inc(Counter::MmioFaults);
            return Ok(PfOutcome::Mmio { gpa: w.gpa });
        };
        let write = access.write && !access.fetch;
        let dirty_after = w.dirty || write;
        let glevel = if ctx.mode == GuestMode::Off { 5 } else { w.level };

        // Leaf permissions.
        let mut perm = w.perm;
        let mut writable = perm & ACC_W != 0 && dirty_after;
        if write && !access.user && !ctx.wp && perm & ACC_W == 0 {
            // CR0.WP=0 lets a supervisor write through a read-only entry; the CPU runs with
            // WP=1, so map it writable and supervisor-only (KVM's trick). Under SMAP that
            // would hide later SMAP faults on the page: emulate instead.
            if perm & ACC_U != 0 && ctx.smap {
                if !walk::apply_ad(&ctx, mem, &mut w, access) {
                    return Ok(PfOutcome::Fixed);
                }
                self.stats.inc(Counter::PtWriteEmulations);
                self.emu_site = super::EmuSite { gva, gpa: w.gpa, access, page_table: false };
                return Ok(PfOutcome::EmulateWrite { gpa: w.gpa });
            }
            writable = true;
            perm &= !ACC_U;
            if ctx.smep {
                perm &= !ACC_X;
            }
        }

        // Walk/build the shadow path down to the level-1 shadow page.
        let (mut sp, mut level) = match self.path_start(gva) {
            Some(x) => x,
            None => return Ok(PfOutcome::Fixed),
        };
        self.root_table_used(sp);
        let base = Role::base(&ctx);
        let mut changed = false;
        while level > 1 {
            let slot = sidx(gva, level);
            // level is 2..=4 here: cl is 1..=3 and span at most 2^27.
            let cl = level.saturating_sub(1);
            let (cgfn, crole) = if glevel >= level {
                let span = 1u64 << (9u32.saturating_mul(cl as u32) & 63);
                let leaf_acc = if dirty_after { w.perm } else { w.perm & !ACC_W };
                let cgfn = (w.gpa >> 12) & !span.saturating_sub(1);
                (cgfn, base.with(cl, true, 0, leaf_acc))
            } else {
                let q = if ctx.mode == GuestMode::Bits32 && cl == 1 { ((gva >> 21) & 1) as u32 } else { 0 };
                let acc = w.acc_above.get(cl as usize).copied().unwrap_or(ACC_ALL);
                let tg = w.table_gfn.get(cl as usize).copied().unwrap_or(0);
                (tg, base.with(cl, false, q, acc))
            };
            let spt = self.spt(sp);
            let cur = page_get(spt, slot);
            let mut child = 0;
            if cur & PTE_P != 0 {
                let c = (page_get(self.side(sp), slot) & SIDE_INFO) as u32;
                if self.sp(c).gfn == cgfn && self.sp(c).role == crole.0 {
                    child = c;
                } else {
                    self.drop_spte(sp, slot);
                }
            }
            if child == 0 {
                child = self.sp_get(mem, cgfn, crole);
                if child == 0 {
                    return Err(MmuError::NeedMemory);
                }
                self.link(sp, slot, child);
                changed = true;
            }
            self.sp_mut(child).write_count = 0;
            self.lru_touch(child);
            sp = child;
            level = cl;
        }

        // The leaf.
        let tracked = self.gfn_tracked(gfn);
        let mut emulate = false;
        let mut unsync = false;
        if writable && tracked {
            if write {
                if self.can_unsync(gfn) {
                    unsync = true;
                } else {
                    writable = false;
                    emulate = true;
                }
            } else {
                writable = false;
            }
        }
        let spte = Self::make_spte(frame.hpa, perm, writable);
        let slot = sidx(gva, 1);
        let old = page_get(self.spt(sp), slot);
        let same = old & PTE_P != 0 && (old & !(PTE_A | PTE_D)) == (spte & !(PTE_A | PTE_D));
        if !changed && same && !emulate && !unsync {
            // The shadow already allowed this access, so the CPU faulted for a reason it
            // knows and we do not: an implicit supervisor access under SMAP (at CPL < 3
            // with EFLAGS.AC=1). Anything else is a stale fault.
            if !access.user && !access.fetch && ctx.smap && w.perm & ACC_U != 0 && ctx.mode != GuestMode::Off {
                let pf = walk::PageFault { error_code: ctx.error_code(access, true, false), cr2: gva };
                self.stats.inc(Counter::GuestFaultsInjected);
                return Ok(PfOutcome::Inject(pf));
            }
            self.stats.inc(Counter::SpuriousFaults);
            return Ok(PfOutcome::Fixed);
        }
        if !walk::apply_ad(&ctx, mem, &mut w, access) {
            return Ok(PfOutcome::Fixed);
        }
        if unsync {
            self.mark_unsync(mem, gfn);
        }
        self.set_leaf(sp, slot, gfn, spte);
        if emulate {
            self.stats.inc(Counter::PtWriteEmulations);
            self.emu_site = super::EmuSite { gva, gpa: w.gpa, access, page_table: true };
            return Ok(PfOutcome::EmulateWrite { gpa: w.gpa });
        }
        self.stats.inc(Counter::HiddenFaultsFixed);
        Ok(PfOutcome::Fixed)
    }

    /// The shadow page and level where a walk for `gva` starts (below the PAE root).
    pub(super) fn path_start(&self, gva: u64) -> Option<(u32, u8)> {
        let r = self.cur_root;
        if r == 0 {
            return None;
        }
        let rec = self.root_rec(r);
        if self.ctx.mode == GuestMode::Long4 {
            let sp = rec.sp;
            if sp == 0 {
                return None;
            }
            Some((sp, 4))
        } else {
            let i = ((gva >> 30) & 3) as usize;
            let sp = page_get(rec.pae_ptr as *mut u8, pae_slot(PAE_SPS, i)) as u32;
            if sp == 0 {
                return None;
            }
            Some((sp, 2))
        }
    }

    /// The guest's translation of `gva` without side effects (tests, debugging).
    pub fn debug_walk<G: GuestMemory + ?Sized>(&self, mem: &G, gva: u64, access: Access) -> Result<Walk, walk::PageFault> {
        walk::walk(&self.ctx, mem, gva, access, false)
    }
}
