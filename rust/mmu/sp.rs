// SPDX-License-Identifier: GPL-2.0

//! Shadow pages: their records and side pages, the LRU list, the page and record
//! reserves, and getting, linking, zapping and reclaiming them.

use super::bits::{bits, PTE_A, PTE_D, PTE_NX, PTE_P, PTE_U, PTE_W};
use super::dlist::{adapter, Adapter, DList, Links};
use super::lists::{ListHead, SRef};
use super::mem::{GuestMemory, HostPage, PageSource};
use super::page::TablePage;
use super::pool::{Id, Pool, Record};
use super::roles::Role;
use super::stats::Counter;
use super::{Mmu, MmuError, TlbFlush};

/// Whether the CPU may have cached a translation from shadow entry `old` that replacing it
/// by `new` makes wrong: `old` was filled (`old_filled`) and `new` takes something away
/// (presence, frame, write or user access, execution, caching attributes). Adding
/// permissions or setting A/D needs no flush: the CPU caches no not-present entry, nor
/// one with reserved bits set, and a fault on a stale stricter one invalidates it (SDM
/// vol. 3A 4.10.4.1, 4.10.2.3).
pub(super) fn tlb_may_hold_stale(old: u64, old_filled: bool, new: u64) -> bool {
    let lost = old & !new;
    let gained = new & !old;
    old_filled && (lost & !PTE_NX != 0 || gained & !(PTE_W | PTE_U | PTE_A | PTE_D) != 0)
}

/// Spare pages kept instead of being given back.
const SPARE_MAX: usize = 16;
/// Unpinned shadow pages reclaim keeps before it drops cached roots: the working set of
/// one guest instruction (up to 10 linear pages, 3 shadow pages each below the root).
pub(super) const MIN_UNPINNED: usize = 32;

/// Shadow-entry bits the engine writes in a non-leaf entry.
pub(super) const SPTE_NONLEAF: u64 = PTE_P | PTE_W | PTE_U | PTE_A;
/// Address bits of a shadow entry.
pub(super) const SPTE_ADDR: u64 = bits(51, 12);

/// [`SpRec::flags`]: the page is out of sync with its guest table.
pub(super) const SP_UNSYNC: u8 = 1;
/// [`SpRec::flags`]: an emulated guest store made an entry of this leaf table present
/// with a value the engine could not fill the shadow entry from (no A bit, as a guest
/// that leaves A to the CPU writes them): emulating its stores over not-present entries
/// saves no exit, so they let the table go out of sync again.
pub(super) const SP_NEW_UNFILLABLE: u8 = 2;

/// A shadow page's record.
///
/// # Invariants
///
/// `spt`/`spt_hpa` and `side`/`side_hpa` are the addresses of two engine-owned pages
/// (the shadow table the CPU walks, and the side page holding a [`Side`] per slot) for
/// as long as the record is live.
#[repr(C)]
pub(super) struct SpRec {
    pub gfn: u64,
    pub spt: usize,
    pub spt_hpa: u64,
    pub side: usize,
    pub side_hpa: u64,
    pub role: Role,
    /// The non-leaf entries pointing to this page.
    pub parents: ListHead,
    /// Next shadow page of the same guest frame.
    pub gfn_next: Option<SpId>,
    /// Neighbours on the [`Lru`] list.
    lru: Links<SpRec>,
    /// Cached roots pinning the page.
    pub root_count: u16,
    /// Emulated writes to the guest table since it was last used for a translation.
    pub write_count: u8,
    pub flags: u8,
}
const _: () = assert!(core::mem::size_of::<SpRec>() == 64);
// SAFETY: repr(C), 64 bytes (asserted above), align 8, integers,
// `Option<Id>`s and `Links` (two `Option<Id>`s) only: any bit pattern is valid.
unsafe impl Record for SpRec {}

/// Id of a shadow page.
pub(super) type SpId = Id<SpRec>;

/// A copy of what a shadow walk needs of a shadow page's record ([`Mmu::sp_view`]).
#[derive(Clone, Copy)]
pub(super) struct SpView {
    /// The shadow table (`None` only for an id naming no live record).
    pub spt: Option<TablePage>,
    /// The side page.
    pub side: Option<TablePage>,
    /// The guest frame the page shadows (the first frame mapped, for a direct page).
    pub gfn: u64,
    pub role: Role,
    pub flags: u8,
}

impl SpView {
    /// Shadow entry `slot`.
    #[inline]
    pub(super) fn spte(&self, slot: usize) -> u64 {
        self.spt.map_or(0, |t| t.get(slot))
    }

    /// The child shadow page of present non-leaf entry `slot`.
    #[inline]
    pub(super) fn child(&self, slot: usize) -> Option<SpId> {
        Side(self.side.map_or(0, |t| t.get(slot))).child()
    }
}

/// A side-page entry: the low 40 bits hold the information (guest frame of a leaf
/// entry, child shadow page of a non-leaf entry), the high bits the entry's position in
/// the reference list it is on (see `lists.rs`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) struct Side(u64);

const SIDE_INFO: u64 = (1 << 40) - 1;
const SIDE_POS_SHIFT: u32 = 40;

impl Side {
    /// An unused slot.
    pub(super) const EMPTY: Side = Side(0);

    /// A leaf entry mapping guest frame `gfn`.
    pub(super) fn leaf(gfn: u64) -> Side {
        Side(gfn & SIDE_INFO)
    }

    /// An entry as the side page stores it.
    pub(super) fn from_raw(v: u64) -> Side {
        Side(v)
    }

    /// The entry as the side page stores it.
    pub(super) fn raw(self) -> u64 {
        self.0
    }

    /// The guest frame of a leaf entry.
    pub(super) fn gfn(self) -> u64 {
        self.0 & SIDE_INFO
    }

    /// The child of a non-leaf entry.
    pub(super) fn child(self) -> Option<SpId> {
        Id::from_raw((self.0 & SIDE_INFO) as u32)
    }

    /// A non-leaf entry pointing to `child`.
    pub(super) fn of_child(child: SpId) -> Side {
        Side(u64::from(child.raw()))
    }

    /// The entry's position in its reference list.
    pub(super) fn pos(self) -> u64 {
        self.0 >> SIDE_POS_SHIFT
    }

    /// This entry at list position `pos`.
    pub(super) fn with_pos(self, pos: u64) -> Side {
        Side((self.0 & SIDE_INFO) | (pos << SIDE_POS_SHIFT))
    }
}

adapter!(
    /// The [`Lru`] list's links in a [`SpRec`].
    pub(super) LruLinks = SpRec.lru
);

/// Shadow pages [`Lru::touch`] remembers as moved to the front lately.
const LRU_RECENT: usize = 4;

/// The shadow pages in least-recently-used order: the head is the most recently used.
/// It holds every live shadow page (`Mmu::sp_get` adds it, `Mmu::zap_sp` removes it).
///
/// A fault touches every shadow page on its path (3 in long mode), and moving each to the
/// front costs a record access per neighbour; the same few pages are touched fault after
/// fault, so the list remembers the last [`LRU_RECENT`] pages it moved to the front and
/// does not move them again while they are remembered. The order is then exact except
/// among the first [`LRU_RECENT`] pages, far from the back where reclaim takes its pages
/// (it keeps at least [`MIN_UNPINNED`] unpinned pages).
///
/// # Invariants
///
/// `recent[(next + LRU_RECENT - 1 - j) % LRU_RECENT]`, the page remembered `j`-th most
/// lately, is `None` or a page on the list among its first `j + 1` pages; `next <
/// LRU_RECENT`.
pub(super) struct Lru {
    list: DList<LruLinks>,
    recent: [Option<SpId>; LRU_RECENT],
    next: usize,
}

impl Lru {
    /// An empty list.
    pub(super) const fn new() -> Self {
        Lru {
            list: DList::new(),
            recent: [None; LRU_RECENT],
            next: 0,
        }
    }

    /// Number of shadow pages.
    pub(super) fn len(&self) -> usize {
        self.list.len()
    }

    /// The most recently used page.
    pub(super) fn head(&self) -> Option<SpId> {
        self.list.head()
    }

    /// The least recently used page.
    pub(super) fn tail(&self) -> Option<SpId> {
        self.list.tail()
    }

    /// The page after `id` (less recently used).
    pub(super) fn next(pool: &Pool, id: SpId) -> Option<SpId> {
        DList::<LruLinks>::next(pool, id)
    }

    /// The page before `id` (more recently used).
    pub(super) fn prev(pool: &Pool, id: SpId) -> Option<SpId> {
        DList::<LruLinks>::prev(pool, id)
    }

    /// Adds new page `id` at the front. The remembered pages may no longer be among the
    /// first ones: forget them.
    pub(super) fn push_front(&mut self, pool: &mut Pool, id: SpId) {
        self.list.push_front(pool, id);
        self.recent = [None; LRU_RECENT];
    }

    /// Takes `id` off the list (the pages behind it move up: the others stay remembered).
    pub(super) fn remove(&mut self, pool: &mut Pool, id: SpId) {
        self.list.remove(pool, id);
        for r in self.recent.iter_mut() {
            if *r == Some(id) {
                *r = None;
            }
        }
    }

    /// Forgets every page (teardown).
    pub(super) fn clear(&mut self) {
        *self = Lru::new();
    }

    /// Page `id`, on the list, was used: to the front, unless it is remembered as moved
    /// there lately (then it is among the first [`LRU_RECENT`] already).
    pub(super) fn touch(&mut self, pool: &mut Pool, id: SpId) {
        if self.recent.contains(&Some(id)) {
            return;
        }
        self.list.move_to_front(pool, id);
        // The page remembered longest is forgotten; every other one moved back by at
        // most one place, as its age among the remembered ones grew by one.
        if let Some(r) = self.recent.get_mut(self.next) {
            *r = Some(id);
        }
        self.next = self.next.wrapping_add(1) % LRU_RECENT;
    }
}

impl Mmu {
    // ---------------------------------------------------------------- reserves

    /// Makes sure `pages` spare pages, `low` spare low pages and `recs` free records are
    /// available, so that the event that follows cannot run out. Changes nothing visible.
    pub(super) fn topup<P: PageSource + ?Sized>(
        &mut self,
        src: &mut P,
        pages: usize,
        recs: u32,
        low: usize,
    ) -> Result<(), MmuError> {
        if !self.frames.has_table() {
            let p = src.alloc_page(false).ok_or(MmuError::NeedMemory)?;
            // SAFETY: a zeroed page from the page source, now the engine's.
            unsafe { self.frames.set_table(p) };
        }
        if !self.roots.has_table() {
            let p = src.alloc_page(false).ok_or(MmuError::NeedMemory)?;
            // SAFETY: a zeroed page from the page source, now the engine's.
            unsafe { self.roots.set_table(p) };
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
                // SAFETY: a page from the page source, now the engine's.
                if let Err(p) = unsafe { self.pool.add_dir(p) } {
                    src.free_page(p);
                }
            }
            let p = src.alloc_page(false).ok_or(MmuError::NeedMemory)?;
            // SAFETY: as above.
            if let Err(p) = unsafe { self.pool.add_page(p) } {
                src.free_page(p);
            }
        }
        while self.spare.len() < pages {
            let p = src.alloc_page(false).ok_or(MmuError::NeedMemory)?;
            // SAFETY: as above; the page source gives zeroed pages.
            unsafe { self.spare.push_zeroed(p) };
        }
        while self.spare_low.len() < low {
            let p = src.alloc_page(true).ok_or(MmuError::NeedMemory)?;
            // SAFETY: as above.
            unsafe { self.spare_low.push_zeroed(p) };
        }
        Ok(())
    }

    /// Gives back a page the engine no longer uses (kept as a spare if there is room).
    ///
    /// # Safety
    ///
    /// `p` is NULL or an engine-owned page that nothing refers to any more.
    pub(super) unsafe fn put_page<P: PageSource + ?Sized>(&mut self, src: &mut P, p: HostPage) {
        if p.is_null() {
            return;
        }
        if self.spare.len() < SPARE_MAX {
            // SAFETY: the caller's contract.
            unsafe { self.spare.push(p) };
        } else {
            src.free_page(p);
        }
    }

    /// As [`Mmu::put_page`] for a page below 4 GiB.
    ///
    /// # Safety
    ///
    /// As for [`Mmu::put_page`], and `p` is below 4 GiB.
    pub(super) unsafe fn put_low_page<P: PageSource + ?Sized>(&mut self, src: &mut P, p: HostPage) {
        if p.is_null() {
            return;
        }
        if self.spare_low.len() < 2 {
            // SAFETY: the caller's contract.
            unsafe { self.spare_low.push(p) };
        } else {
            src.free_page(p);
        }
    }

    // ---------------------------------------------------------------- records and pages

    pub(super) fn sp(&self, sp: SpId) -> &SpRec {
        self.pool.get(sp)
    }

    pub(super) fn sp_mut(&mut self, sp: SpId) -> &mut SpRec {
        self.pool.get_mut(sp)
    }

    pub(super) fn role(&self, sp: SpId) -> Role {
        self.sp(sp).role
    }

    /// The shadow table of `sp`.
    pub(super) fn spt(&self, sp: SpId) -> Option<TablePage> {
        // SAFETY: a live record's table is engine-owned (SpRec invariant); an id naming
        // no live record reads as zeros, i.e. no page.
        unsafe { TablePage::from_addr(self.sp(sp).spt) }
    }

    /// The side page of `sp`.
    fn side(&self, sp: SpId) -> Option<TablePage> {
        // SAFETY: as in `spt`.
        unsafe { TablePage::from_addr(self.sp(sp).side) }
    }

    /// Shadow entry `slot` of `sp` (0 if there is no such page).
    pub(super) fn spt_get(&self, sp: SpId, slot: usize) -> u64 {
        self.spt(sp).map_or(0, |t| t.get(slot))
    }

    /// Whether shadow entry value `v` is filled (KVM's `is_shadow_present_pte`): P=1 and
    /// not the not-filled value. A not-filled entry (P=1 with reserved bits, or 0 without
    /// the guest-not-present bypass) and a guest-not-present one (0) are not.
    pub(super) fn is_filled(&self, v: u64) -> bool {
        v & PTE_P != 0 && v != self.not_filled
    }

    /// The value of a shadow entry that is not filled and says nothing about its guest
    /// entry: a fault through it exits (P=1, RSVD=1 with the bypass on).
    pub(super) fn not_filled(&self) -> u64 {
        self.not_filled
    }

    /// Writes shadow entry `slot` of `sp`, noting what the CPU's TLB may still hold of
    /// the old value (see [`TlbFlush`]).
    pub(super) fn spt_set(&mut self, sp: SpId, slot: usize, v: u64) {
        let Some(t) = self.spt(sp) else {
            return;
        };
        let old = t.get(slot);
        if tlb_may_hold_stale(old, self.is_filled(old), v) {
            let one_leaf = self.role(sp).level() == 1;
            self.tlb_flush = self.tlb_flush.and(if one_leaf {
                TlbFlush::OneLeaf
            } else {
                TlbFlush::All
            });
        }
        t.set(slot, v);
    }

    /// [`Mmu::spt_set`] on entry `slot` of level-1 table `t` (read through
    /// [`Mmu::sp_view`]: no record lookup).
    pub(super) fn leaf_set_in(&mut self, t: TablePage, slot: usize, v: u64) {
        let old = t.get(slot);
        if tlb_may_hold_stale(old, self.is_filled(old), v) {
            self.tlb_flush = self.tlb_flush.and(TlbFlush::OneLeaf);
        }
        t.set(slot, v);
    }

    /// [`Mmu::drop_spte`] on filled entry `slot` of level-1 shadow page `sp`, whose table
    /// and side page are `t` and `side`.
    pub(super) fn drop_leaf_in(&mut self, sp: SpId, t: TablePage, side: TablePage, slot: usize) {
        self.work = self.work.wrapping_add(1);
        let nf = self.not_filled;
        self.leaf_set_in(t, slot, nf);
        let v = Side(side.get(slot));
        self.rmap_remove(v.gfn(), SRef::new(sp, slot), v.pos());
        side.set(slot, Side::EMPTY.0);
    }

    /// Side entry `slot` of `sp`.
    pub(super) fn side_get(&self, sp: SpId, slot: usize) -> Side {
        Side(self.side(sp).map_or(0, |t| t.get(slot)))
    }

    /// Writes side entry `slot` of `sp`.
    pub(super) fn side_set(&self, sp: SpId, slot: usize, v: Side) {
        if let Some(t) = self.side(sp) {
            t.set(slot, v.0);
        }
    }

    /// The child shadow page of present non-leaf entry (`sp`, `slot`).
    pub(super) fn child(&self, sp: SpId, slot: usize) -> Option<SpId> {
        self.side_get(sp, slot).child()
    }

    /// What a walk down the shadow reads of `sp`, with one record lookup (a walk that
    /// asked [`Mmu::spt_get`], [`Mmu::child`] and [`Mmu::role`] one by one would look the
    /// record up for each).
    #[inline]
    pub(super) fn sp_view(&self, sp: SpId) -> SpView {
        let s = self.sp(sp);
        // SAFETY: a live record's pages are engine-owned (SpRec invariant); an id naming
        // no live record reads as zeros, i.e. no pages.
        let (spt, side) = unsafe { (TablePage::from_addr(s.spt), TablePage::from_addr(s.side)) };
        SpView {
            spt,
            side,
            gfn: s.gfn,
            role: s.role,
            flags: s.flags,
        }
    }

    /// The two pages of `sp`, to give back.
    fn sp_pages(&self, sp: SpId) -> (HostPage, HostPage) {
        let s = self.sp(sp);
        (
            HostPage {
                ptr: s.spt as *mut u8,
                hpa: s.spt_hpa,
            },
            HostPage {
                ptr: s.side as *mut u8,
                hpa: s.side_hpa,
            },
        )
    }

    // ---------------------------------------------------------------- get, link, drop

    /// Finds the shadow page for (gfn, role).
    fn sp_find(&self, gfn: u64, role: Role) -> Option<SpId> {
        let g = self.gfn_lookup(gfn)?;
        let mut sp = self.gr(g).sps;
        while let Some(id) = sp {
            if self.sp(id).role == role {
                return Some(id);
            }
            sp = self.sp(id).gfn_next;
        }
        None
    }

    /// Finds or creates the shadow page for (gfn, role). Needs the reserves of a top-up
    /// (2 pages, 3 records). An out-of-sync page that is found is refreshed from the
    /// guest table (its stale entries must not leak into a new place it is linked from).
    pub(super) fn sp_get<G: GuestMemory + ?Sized>(
        &mut self,
        mem: &G,
        gfn: u64,
        role: Role,
    ) -> Option<SpId> {
        if let Some(sp) = self.sp_find(gfn, role) {
            if self.sp(sp).flags & SP_UNSYNC != 0 {
                self.sync_sp_entries(mem, sp);
            }
            return Some(sp);
        }
        if !role.direct() {
            if let Some(g) = self.gfn_lookup(gfn) {
                if self.gr(g).unsync != 0 {
                    self.resync_gfn(mem, gfn);
                }
            }
        }
        let g = self.gfn_get(gfn)?;
        // The table needs no zero-fill: `init_entries` writes every entry of it.
        let (Some(spt), Some(side)) = (self.spare.pop_unzeroed(), self.spare.pop()) else {
            return None;
        };
        let Some(sp) = self.pool.alloc::<SpRec>() else {
            // SAFETY: both came off the spare list and are still the engine's.
            unsafe {
                self.spare.push(spt);
                self.spare.push(side);
            }
            return None;
        };
        let chain = self.gr(g).sps;
        let s = self.sp_mut(sp);
        s.gfn = gfn;
        s.role = role;
        s.spt = spt.ptr as usize;
        s.spt_hpa = spt.hpa;
        s.side = side.ptr as usize;
        s.side_hpa = side.hpa;
        s.gfn_next = chain;
        self.gr_mut(g).sps = Some(sp);
        self.lru.push_front(&mut self.pool, sp);
        self.stats.inc(Counter::ShadowPagesCreated);
        self.init_entries(sp);
        if !role.direct() {
            let n = self.gr(g).n_indirect;
            self.gr_mut(g).n_indirect = n.saturating_add(1);
            if n == 0 {
                self.write_protect_gfn(gfn);
                self.stats.inc(Counter::FramesWriteProtected);
            }
        }
        Some(sp)
    }

    /// Points non-leaf entry (`parent`, `slot`) at `child`.
    pub(super) fn link(&mut self, parent: SpId, slot: usize, child: SpId) {
        self.paths_changed();
        let hpa = self.sp(child).spt_hpa;
        self.side_set(parent, slot, Side::of_child(child));
        self.spt_set(parent, slot, (hpa & SPTE_ADDR) | SPTE_NONLEAF);
        let head = self.sp(child).parents;
        let nh = self.list_add(head, SRef::new(parent, slot));
        self.sp_mut(child).parents = nh;
    }

    /// Makes shadow entry (`sp`, `slot`) not filled (a guest-not-present entry too: the
    /// caller learns nothing of the guest entry), keeping the reverse map and parent lists
    /// right.
    pub(super) fn drop_spte(&mut self, sp: SpId, slot: usize) {
        self.work = self.work.wrapping_add(1);
        let old = self.spt_get(sp, slot);
        let nf = self.not_filled;
        if !self.is_filled(old) {
            if old != nf {
                self.spt_set(sp, slot, nf);
            }
            return;
        }
        self.spt_set(sp, slot, nf);
        let v = self.side_get(sp, slot);
        if self.role(sp).level() == 1 {
            self.rmap_remove(v.gfn(), SRef::new(sp, slot), v.pos());
        } else if let Some(child) = v.child() {
            self.paths_changed();
            let head = self.sp(child).parents;
            let (nh, _) = self.list_remove(head, SRef::new(sp, slot), v.pos());
            self.sp_mut(child).parents = nh;
        }
        self.side_set(sp, slot, Side::EMPTY);
    }

    /// Installs leaf entry (`sp`, `slot`) mapping guest frame `gfn` as `spte`.
    pub(super) fn set_leaf(&mut self, sp: SpId, slot: usize, gfn: u64, spte: u64) {
        let old = self.spt_get(sp, slot);
        if self.is_filled(old) && self.side_get(sp, slot).gfn() == gfn {
            self.spt_set(sp, slot, spte);
            return;
        }
        self.drop_spte(sp, slot);
        self.side_set(sp, slot, Side::leaf(gfn));
        self.spt_set(sp, slot, spte);
        self.rmap_add(gfn, SRef::new(sp, slot));
    }

    // ---------------------------------------------------------------- zap and reclaim

    /// Zaps a shadow page: clears its entries, unlinks it from its parents and frees it.
    /// A page pinned by a root is only emptied.
    pub(super) fn zap_sp<P: PageSource + ?Sized>(&mut self, src: &mut P, sp: SpId) {
        self.paths_changed();
        // Only filled entries have anything to undo. The others stay: a page pinned by a
        // root is kept (in sync and write-protected, so its guest-not-present entries
        // stay true), any other is freed.
        // The table is read through one handle (a record lookup per entry made a zap
        // cost thousands of steps): dropping entries frees no page, so it stays valid.
        let view = self.sp_view(sp);
        if let (Some(t), Some(side)) = (view.spt, view.side) {
            let leaf = view.role.level() == 1;
            for slot in 0..512 {
                if !self.is_filled(t.get(slot)) {
                    self.work = self.work.wrapping_add(1);
                } else if leaf {
                    self.drop_leaf_in(sp, t, side, slot);
                } else {
                    self.drop_spte(sp, slot);
                }
            }
        }
        self.sp_mut(sp).write_count = 0;
        if self.sp(sp).root_count > 0 {
            return;
        }
        loop {
            let head = self.sp(sp).parents;
            let Some(r) = self.list_first(head) else {
                break;
            };
            let (p, slot) = (r.sp(), r.slot());
            let v = p.map_or(Side::EMPTY, |p| self.side_get(p, slot));
            let linked = p.is_some_and(|p| self.is_filled(self.spt_get(p, slot)));
            match p {
                Some(p) if v.child() == Some(sp) && linked => self.drop_spte(p, slot),
                _ => {
                    // Not expected (lists are exact); drop the stale reference anyway.
                    let (nh, found) = self.list_remove(head, r, v.pos());
                    self.sp_mut(sp).parents = if found { nh } else { ListHead::EMPTY };
                    if !found {
                        break;
                    }
                }
            }
        }
        let gfn = self.sp(sp).gfn;
        let role = self.role(sp);
        if let Some(g) = self.gfn_lookup(gfn) {
            // Unchain.
            let mut prev = None;
            let mut cur = self.gr(g).sps;
            while let Some(c) = cur {
                if c == sp {
                    break;
                }
                prev = Some(c);
                cur = self.sp(c).gfn_next;
            }
            if cur == Some(sp) {
                let next = self.sp(sp).gfn_next;
                match prev {
                    None => self.gr_mut(g).sps = next,
                    Some(p) => self.sp_mut(p).gfn_next = next,
                }
            }
            if !role.direct() {
                let n = self.gr(g).n_indirect.saturating_sub(1);
                self.gr_mut(g).n_indirect = n;
                if n == 0 && self.gr(g).unsync != 0 {
                    self.frames.unsync_unlink(&mut self.pool, g);
                }
            }
        }
        self.gfn_maybe_free(gfn);
        self.lru.remove(&mut self.pool, sp);
        let (spt, side) = self.sp_pages(sp);
        // SAFETY: the pages were the shadow page's, and nothing refers to it any more
        // (its entries and its parents' entries are cleared, it is off every list).
        unsafe {
            self.put_page(src, spt);
            self.put_page(src, side);
        }
        self.pool.free(sp);
        self.stats.inc(Counter::ShadowPagesZapped);
    }

    /// Zaps the least recently used unpinned shadow page. False if there is none.
    pub(super) fn reclaim_one<P: PageSource + ?Sized>(&mut self, src: &mut P) -> bool {
        let mut sp = self.lru.tail();
        // Pinned pages are few (at most 4 per cached root): the scan is bounded.
        while let Some(id) = sp {
            if self.sp(id).root_count == 0 {
                break;
            }
            self.work = self.work.wrapping_add(1);
            sp = Lru::prev(&self.pool, id);
        }
        let Some(sp) = sp else {
            return false;
        };
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
        while self.lru.len().saturating_add(need) > self.shadow_limit {
            let unpinned = self.lru.len().saturating_sub(self.roots.npinned());
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
        let mut sp = self.lru.head();
        while let Some(id) = sp {
            let next = Lru::next(&self.pool, id);
            let (spt, side) = self.sp_pages(id);
            src.free_page(spt);
            src.free_page(side);
            sp = next;
        }
        self.lru.clear();
        self.frames.clear_unsync();
    }

    /// `sp` was used for a translation.
    pub(super) fn lru_touch(&mut self, sp: SpId) {
        self.lru.touch(&mut self.pool, sp);
    }
}

#[cfg(test)]
mod tests {
    use super::super::mem::test_heap::Heap;
    use super::super::mem::PageSource;
    use super::*;
    use std::vec::Vec;

    /// A pool with `n` shadow-page records (no pages behind them: the list needs none).
    fn pool_with(n: usize) -> (Pool, Vec<SpId>) {
        let mut pool = Pool::new();
        let mut heap = Heap;
        // SAFETY: fresh pages that only the pool uses until `release`.
        unsafe {
            pool.add_dir(heap.alloc_page(false).unwrap()).unwrap();
            pool.add_page(heap.alloc_page(false).unwrap()).unwrap();
        }
        let ids = (0..n).map(|_| pool.alloc::<SpRec>().unwrap()).collect();
        (pool, ids)
    }

    /// The pages front to back.
    fn order(l: &Lru, pool: &Pool) -> Vec<SpId> {
        let mut v = Vec::new();
        let mut cur = l.head();
        while let Some(id) = cur {
            v.push(id);
            cur = Lru::next(pool, id);
            assert!(v.len() <= 64, "cycle");
        }
        assert_eq!(v.len(), l.len());
        v
    }

    #[test]
    fn a_page_touched_after_new_pages_goes_back_to_the_front() {
        let (mut pool, ids) = pool_with(8);
        let mut l = Lru::new();
        l.push_front(&mut pool, ids[0]);
        l.touch(&mut pool, ids[0]);
        // New pages go in front of the remembered one: it is no longer among the first.
        for &id in &ids[1..8] {
            l.push_front(&mut pool, id);
        }
        l.touch(&mut pool, ids[0]);
        assert_eq!(l.head().map(Id::raw), Some(ids[0].raw()));
        pool.release(&mut Heap);
    }

    #[test]
    fn remembered_pages_stay_among_the_first() {
        let (mut pool, ids) = pool_with(40);
        let mut l = Lru::new();
        let mut on: Vec<SpId> = Vec::new();
        let mut x = 0x1234_5678u32;
        for step in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let id = ids[x as usize % ids.len()];
            let listed = on.contains(&id);
            match (x >> 8) % 8 {
                0 if !listed => {
                    l.push_front(&mut pool, id);
                    on.push(id);
                }
                1 if listed => {
                    l.remove(&mut pool, id);
                    on.retain(|&i| i != id);
                }
                _ if listed => {
                    l.touch(&mut pool, id);
                    let pos = order(&l, &pool).iter().position(|&i| i == id);
                    assert!(
                        pos.unwrap() < LRU_RECENT,
                        "step {step}: touched page at {pos:?}"
                    );
                }
                _ => {}
            }
            // Invariant: the j-th most lately remembered page is among the first j + 1.
            let now = order(&l, &pool);
            for j in 0..LRU_RECENT {
                let r = l.recent[(l.next + LRU_RECENT - 1 - j) % LRU_RECENT];
                if let Some(r) = r {
                    let pos = now
                        .iter()
                        .position(|&i| i == r)
                        .expect("remembered page listed");
                    assert!(pos <= j, "step {step}: remembered {j}-th lately at {pos}");
                }
            }
        }
        pool.release(&mut Heap);
    }
}
