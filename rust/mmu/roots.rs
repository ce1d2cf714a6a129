// SPDX-License-Identifier: GPL-2.0

//! Shadow roots and the root cache: building, finding, pinning and dropping the roots of
//! recent address spaces, and where a shadow walk starts.

use super::bits::{bits, PTE_P};
use super::dlist::{adapter, Adapter, DList, Links};
use super::mem::{GuestMemory, HostPage, PageSource};
use super::page::TablePage;
use super::pool::{raw_of, Id, Pool, Record};
use super::roles::Role;
use super::sp::SpId;
use super::stats::Counter;
use super::walk::{GuestMode, ACC_ALL};
use super::{Mmu, MAX_ROOT_CACHE};

/// Pages building a root may need: 4 shadow pages (table + side each).
pub(super) const ROOT_PAGES: usize = 8;
/// Records building a root may need: the root record, 4 shadow-page and 4 frame records.
pub(super) const ROOT_RECS: u32 = 12;

/// Slot of the PAE root page where the pinned shadow pages' ids are kept.
const PAE_SPS: usize = 256;
/// Slot of the PAE root page where the guest PDPTEs the root was built from are kept.
const PAE_GUEST: usize = 260;

/// Entry of the PAE root page holding item `i` (0..4) of the 4-entry table at `base`
/// (`PAE_SPS` or `PAE_GUEST`, both multiples of 4, so `|` adds without overflow).
const fn pae_slot(base: usize, i: usize) -> usize {
    base | (i & 3)
}

/// Index of `gva` in a shadow table of `level` (same for PAE and 4-level shadows; the PAE
/// root uses bits 31:30).
#[inline]
pub(super) fn sidx(gva: u64, level: u8) -> usize {
    // level - 1 is masked to 0..=3, so the shift is at most 39.
    let shift = 12u32.saturating_add(9u32.saturating_mul(u32::from(level.saturating_sub(1)) & 3));
    ((gva >> shift) & 511) as usize
}

/// A cached shadow root.
///
/// # Invariants
///
/// For a 4-level root, `sp` is a pinned shadow page and `hpa` its table. Otherwise `pae`/
/// `pae_hpa` is an engine-owned page below 4 GiB whose first 4 entries are the PAE PDPTEs
/// the CPU loads, whose slots 256..260 hold the pinned level-2 shadow pages (0 = none)
/// and 260..264 the guest PDPTEs it was built from; `hpa == pae_hpa`. The links are the
/// [`RootCache`]'s.
#[repr(C)]
pub(super) struct RootRec {
    pub key: u64,
    pub hpa: u64,
    pub pae: usize,
    pub pae_hpa: u64,
    pub role: Role,
    pub sp: Option<SpId>,
    /// Next root in the same hash bucket.
    hash_next: Option<RootId>,
    /// Neighbours in the cache's replacement order.
    mru: Links<RootRec>,
    /// Nonzero: made current (built or found) since it was last passed over for
    /// eviction (the reference bit of the cache's second-chance replacement).
    referenced: u32,
}
const _: () = assert!(core::mem::size_of::<RootRec>() == 56);
// SAFETY: repr(C), 56 bytes (asserted above), align 8, integers,
// `Option<Id>`s and `Links` (two `Option<Id>`s) only: any bit pattern is valid.
unsafe impl Record for RootRec {}

/// Id of a cached root.
pub(super) type RootId = Id<RootRec>;

adapter!(
    /// The root cache's replacement list's links in a [`RootRec`].
    MruLinks = RootRec.mru
);

/// Shadow pages [`Mmu::reaches`] visits at most.
const REACH_BUDGET: usize = 64;

/// Hash buckets of the root cache (entries 0..256 of its table page): twice as many as
/// cached roots at most, so chains are about one root long.
const ROOT_BUCKETS: usize = 2 * MAX_ROOT_CACHE;

/// The hash of cache key (`key`, `role`): its top bits pick the bucket; all of it is the
/// key's fingerprint among the evicted ones.
fn root_hash(key: u64, role: Role) -> u64 {
    (key ^ (u64::from(role.0) << 52)).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// The bucket of cache key (`key`, `role`).
fn root_bucket(key: u64, role: Role) -> usize {
    // The top 8 bits: 0..256 = ROOT_BUCKETS.
    (root_hash(key, role) >> 56) as usize
}
const _: () = assert!(ROOT_BUCKETS == 256);

/// Roots the cache holds before the guest shows it uses more address spaces (fewer when
/// [`super::Config::root_cache_size`], the bound, is smaller).
pub(super) const ROOT_CACHE_START: usize = 16;

/// Keys of recently evicted roots remembered (by fingerprint, in entries
/// `ROOT_BUCKETS..ROOT_BUCKETS + EVICTED_KEYS` of the table page): a miss on one of them
/// means the guest switches among more address spaces than the cache holds.
const EVICTED_KEYS: usize = 64;
const _: () = assert!(ROOT_BUCKETS + EVICTED_KEYS <= 512);

/// The table-page entry and fingerprint of cache key (`key`, `role`) among the evicted
/// keys; the fingerprint is never 0 (an empty entry).
fn evicted_slot(key: u64, role: Role) -> (usize, u64) {
    let h = root_hash(key, role);
    // Bits 55:50 pick one of EVICTED_KEYS entries after the buckets (the product's low
    // bits are those of the key's, 0 below the page frame).
    (
        ROOT_BUCKETS | ((h >> 50) as usize & (EVICTED_KEYS - 1)),
        h | 1,
    )
}

/// The root cache: the cached roots found by their key in O(1) (a hash of (CR3, base
/// role)) and kept in replacement order (a list, second chance), both through the root
/// records. It holds up to `capacity` roots, which starts at [`ROOT_CACHE_START`] and
/// doubles, up to the configured bound, whenever the guest comes back to a root the cache
/// evicted for room (its working set of address spaces is larger than the cache).
///
/// # Invariants
///
/// `mru` holds exactly the cached roots, at most `capacity` and the configured bound
/// (the engine's [`super::Config::root_cache_size`]); a root is put at its front
/// when added and when it is passed over for eviction (its `referenced` cleared), so its
/// back is the next eviction candidate. Each cached root is also on the chain of
/// bucket `root_bucket(key, role)` (through `hash_next`) and on no other. `cur` is
/// `None` or one of them, `hpa` its table address (0 without one) and `cur_sp` its
/// record's `sp` (`None` without one; a root's `sp` is set when it is built and never
/// changes). `npinned` counts the shadow pages with `root_count > 0`. `capacity` is in
/// 1..=[`MAX_ROOT_CACHE`]. `table` is [`HostPage::NULL`] until the first top-up, then
/// an engine-owned page (given back by [`Mmu::release_roots`]) whose entries
/// 0..[`ROOT_BUCKETS`] are the buckets' first roots (raw ids, 0 for none) and the next
/// [`EVICTED_KEYS`] fingerprints ([`evicted_slot`]) of keys evicted for room (0: none).
/// The table is a page and not an array here because the engine (`Mmu`) is built on the
/// kernel stack and must stay small.
pub(super) struct RootCache {
    table: HostPage,
    mru: DList<MruLinks>,
    capacity: usize,
    cur: Option<RootId>,
    hpa: u64,
    cur_sp: Option<SpId>,
    npinned: usize,
    /// Another root (or none) was made current since [`RootCache::take_switched`].
    switched: bool,
}

impl RootCache {
    pub(super) const fn new() -> Self {
        RootCache {
            table: HostPage::NULL,
            mru: DList::new(),
            capacity: ROOT_CACHE_START,
            cur: None,
            hpa: 0,
            cur_sp: None,
            npinned: 0,
            switched: false,
        }
    }

    /// The current root.
    pub(super) fn current(&self) -> Option<RootId> {
        self.cur
    }

    /// Host-physical address of the current root's table (GUEST_CR3), 0 if none.
    pub(super) fn hpa(&self) -> u64 {
        self.hpa
    }

    /// Number of cached roots.
    pub(super) fn len(&self) -> usize {
        self.mru.len()
    }

    /// Shadow pages pinned by cached roots.
    pub(super) fn npinned(&self) -> usize {
        self.npinned
    }

    /// Makes `r` (with table `hpa` and 4-level shadow page `sp`, its record's) current, or
    /// none.
    fn set_current(&mut self, r: Option<RootId>, hpa: u64, sp: Option<SpId>) {
        self.switched |= self.cur != r || self.hpa != hpa;
        self.cur = r;
        self.hpa = hpa;
        // INVARIANT: the callers pass the record's `sp` (None without a root).
        self.cur_sp = sp;
    }

    /// The most recently used cached root.
    fn first(&self) -> Option<RootId> {
        self.mru.head()
    }

    /// Whether another root was made current since the last call.
    pub(super) fn take_switched(&mut self) -> bool {
        core::mem::take(&mut self.switched)
    }

    /// The cached root used after `r`.
    fn next(&self, pool: &Pool, r: RootId) -> Option<RootId> {
        DList::<MruLinks>::next(pool, r)
    }

    /// The first root of the hash chain of (`key`, `role`).
    fn chain(&self, key: u64, role: Role) -> Option<RootId> {
        self.bucket(root_bucket(key, role))
    }

    /// The table page, if there is one.
    fn table(&self) -> Option<TablePage> {
        // SAFETY: NULL or an engine-owned page until `Mmu::release_roots` (invariant).
        unsafe { TablePage::from_host(self.table) }
    }

    /// Whether the table page is there (the top-up provides it before a root is built).
    pub(super) fn has_table(&self) -> bool {
        !self.table.is_null()
    }

    /// Installs the table page.
    ///
    /// # Safety
    ///
    /// `p` is a zeroed page from the engine's page source that nothing else uses until
    /// [`Mmu::release_roots`] gives it back.
    pub(super) unsafe fn set_table(&mut self, p: HostPage) {
        self.table = p;
    }

    /// The first root of bucket `b`.
    fn bucket(&self, b: usize) -> Option<RootId> {
        Id::from_raw(self.table().map_or(0, |t| t.get(b)) as u32)
    }

    /// Makes `r` the first root of bucket `b`.
    fn set_bucket(&self, b: usize, r: Option<RootId>) {
        if let Some(t) = self.table() {
            t.set(b, u64::from(raw_of(r)));
        }
    }

    /// The number of roots the cache holds now, for a configured bound of `bound`.
    fn limit(&self, bound: usize) -> usize {
        self.capacity.min(bound).clamp(1, MAX_ROOT_CACHE)
    }

    /// Notes that root (`key`, `role`) is evicted for room.
    fn note_evicted(&mut self, key: u64, role: Role) {
        let (i, fp) = evicted_slot(key, role);
        if let Some(t) = self.table() {
            t.set(i, fp);
        }
    }

    /// A miss on (`key`, `role`): if the cache evicted that root for room, the guest uses
    /// more address spaces than it holds, and it doubles (up to `bound`).
    fn grow_if_evicted(&mut self, key: u64, role: Role, bound: usize) {
        let (i, fp) = evicted_slot(key, role);
        let Some(t) = self.table() else {
            return;
        };
        if t.get(i) != fp {
            return;
        }
        t.set(i, 0);
        self.capacity = self
            .capacity
            .saturating_mul(2)
            .min(bound)
            .clamp(1, MAX_ROOT_CACHE);
    }

    /// The next root to evict other than `not` (second chance: roots made current again
    /// since they were last passed over go to the front once, their mark cleared), or
    /// `None` if `not` is the only root. At most two passes over the cached roots.
    fn victim(&mut self, pool: &mut Pool, not: Option<RootId>) -> Option<RootId> {
        // Each root is passed over at most once with its mark set (the mark is cleared),
        // and `not` at most twice: 2 * len + 2 steps find one if there is one.
        let steps = self.mru.len().saturating_mul(2).saturating_add(2);
        for _ in 0..steps {
            let t = self.mru.tail()?;
            if Some(t) == not && self.mru.len() == 1 {
                return None;
            }
            let rec = pool.get_mut(t);
            if Some(t) == not || rec.referenced != 0 {
                rec.referenced = 0;
                self.mru.move_to_front(pool, t);
                continue;
            }
            return Some(t);
        }
        // Unreachable (see above); the least recently passed over root, as a fallback.
        self.last_except(pool, not)
    }

    /// Adds root `r` (its key and role set) at the front; the caller made room (`len <
    /// MAX_ROOT_CACHE`) and checked that the table page is there.
    fn insert(&mut self, pool: &mut Pool, r: RootId) {
        let b = root_bucket(pool.get(r).key, pool.get(r).role);
        let rec = pool.get_mut(r);
        rec.hash_next = self.bucket(b);
        // Just built for the current address space: used.
        rec.referenced = 1;
        self.set_bucket(b, Some(r));
        // The caller made room: at most MAX_ROOT_CACHE afterwards.
        self.mru.push_front(pool, r);
    }

    /// Takes cached root `r` out of the cache (its record stays live).
    fn remove(&mut self, pool: &mut Pool, r: RootId) {
        let b = root_bucket(pool.get(r).key, pool.get(r).role);
        let next = pool.get(r).hash_next;
        let mut prev: Option<RootId> = None;
        let mut cur = self.bucket(b);
        // A chain holds at most the cached roots.
        while let Some(c) = cur {
            if c == r {
                match prev {
                    Some(p) => pool.get_mut(p).hash_next = next,
                    None => self.set_bucket(b, next),
                }
                break;
            }
            prev = Some(c);
            cur = pool.get(c).hash_next;
        }
        pool.get_mut(r).hash_next = None;
        self.mru.remove(pool, r);
    }

    /// The cached root at the back of the replacement list other than `not`.
    fn last_except(&self, pool: &Pool, not: Option<RootId>) -> Option<RootId> {
        let t = self.mru.tail()?;
        if Some(t) != not {
            return Some(t);
        }
        DList::<MruLinks>::prev(pool, t)
    }

    /// Forgets every root (teardown frees the records with the pool) and gives the table
    /// page back.
    fn release<P: PageSource + ?Sized>(&mut self, src: &mut P) {
        if !self.table.is_null() {
            src.free_page(self.table);
        }
        *self = RootCache::new();
    }
}

impl Mmu {
    fn root_rec(&self, r: RootId) -> &RootRec {
        self.pool.get(r)
    }

    /// The PAE root page of `r`, if it has one.
    fn pae_page(&self, r: RootId) -> Option<TablePage> {
        // SAFETY: a live root's PAE page is engine-owned until `free_root` or teardown
        // (RootRec invariant); an id naming no live record reads as zeros, i.e. no page.
        unsafe { TablePage::from_addr(self.root_rec(r).pae) }
    }

    /// The level-2 shadow page pinned by PAE root `r` for quarter `i` of the address space.
    fn pae_sp(&self, r: RootId, i: usize) -> Option<SpId> {
        let v = self.pae_page(r).map_or(0, |p| p.get(pae_slot(PAE_SPS, i)));
        Id::from_raw(v as u32)
    }

    #[inline]
    pub(super) fn pcide(&self) -> bool {
        self.ctx.mode == GuestMode::Long4 && self.mode_bits.pcide()
    }

    /// The cache key of the current address space: (CR3 incl. PCID, base role).
    fn root_key(&self) -> (u64, Role) {
        self.root_key_for(self.ctx.cr3)
    }

    /// The cache key of the address space of `cr3` in the current paging mode.
    #[inline]
    fn root_key_for(&self, cr3: u64) -> (u64, Role) {
        const FRAME: u64 = bits(51, 12);
        let key = match self.ctx.mode {
            GuestMode::Off => 0,
            GuestMode::Bits32 => cr3 & 0xffff_f000,
            GuestMode::Pae => cr3 & 0xffff_ffe0,
            GuestMode::Long4 => {
                if self.pcide() {
                    cr3 & (FRAME | 0xfff)
                } else {
                    cr3 & FRAME
                }
            }
        };
        (key, self.base_role)
    }

    /// Whether PAE root `r` was built from `pdptes` (always, outside PAE mode: only PAE
    /// roots hold their tables' addresses apart from CR3).
    fn pae_root_matches(&self, r: RootId, pdptes: &[u64; 4]) -> bool {
        if self.ctx.mode != GuestMode::Pae {
            return true;
        }
        let p = self.pae_page(r);
        let mut pdptes = pdptes.iter().enumerate();
        pdptes.all(|(i, &e)| p.map_or(0, |p| p.get(pae_slot(PAE_GUEST, i))) == e)
    }

    /// The cached root of the current address space, if any (no memory, no change).
    pub(super) fn cached_root(&self) -> Option<RootId> {
        self.cached_root_for(self.ctx.cr3, &self.ctx.pdptes)
    }

    /// The cached root of the address space of `cr3` (and, in PAE mode, `pdptes`) in the
    /// current paging mode, if any (no memory, no change).
    pub(super) fn cached_root_for(&self, cr3: u64, pdptes: &[u64; 4]) -> Option<RootId> {
        let (key, role) = self.root_key_for(cr3);
        let mut hit = self.roots.chain(key, role);
        // A chain holds at most the cached roots (MAX_ROOT_CACHE), usually one.
        while let Some(r) = hit {
            let rec = self.root_rec(r);
            if rec.key == key && rec.role == role && self.pae_root_matches(r, pdptes) {
                return Some(r);
            }
            hit = rec.hash_next;
        }
        None
    }

    /// Makes cached root `r` current (a root-cache hit: builds nothing, needs no memory).
    pub(super) fn use_cached_root(&mut self, r: RootId) {
        let rec = self.pool.get_mut(r);
        rec.referenced = 1;
        let (hpa, sp, pae) = (rec.hpa, rec.sp, rec.pae);
        self.roots.set_current(Some(r), hpa, sp);
        self.stats.inc(Counter::RootCacheHits);
        self.root_flood_reset(sp, pae);
    }

    /// Makes the current address space's root current, from the cache or built anew
    /// (then true). Needs the reserves of `topup(ROOT_PAGES, ROOT_RECS, 1)` (low page
    /// unless 4-level).
    pub(super) fn switch_root<P: PageSource + ?Sized, G: GuestMemory + ?Sized>(
        &mut self,
        src: &mut P,
        mem: &G,
    ) -> bool {
        if let Some(r) = self.cached_root() {
            self.use_cached_root(r);
            return false;
        }
        let (key, role) = self.root_key();
        self.stats.inc(Counter::RootCacheMisses);
        let bound = self.cfg.root_cache_size;
        self.roots.grow_if_evicted(key, role, bound);
        let built = if self.roots.has_table() {
            self.build_root(mem, key, role)
        } else {
            None
        };
        let Some(r) = built else {
            // Unreachable after top-up; leave no root (the next #PF retries).
            self.roots.set_current(None, 0, None);
            return false;
        };
        if self.roots.len() >= self.roots.limit(bound) {
            // The limit is at least 1, so the cache is not empty here.
            if let Some(v) = self.roots.victim(&mut self.pool, None) {
                let rec = self.root_rec(v);
                let (k, ro) = (rec.key, rec.role);
                self.roots.note_evicted(k, ro);
                self.roots.remove(&mut self.pool, v);
                self.free_root(src, v);
            }
        }
        // Now len < limit <= MAX_ROOT_CACHE.
        self.roots.insert(&mut self.pool, r);
        let rec = self.root_rec(r);
        let (hpa, sp) = (rec.hpa, rec.sp);
        self.roots.set_current(Some(r), hpa, sp);
        true
    }

    fn pin(&mut self, sp: SpId) {
        let c = self.sp(sp).root_count;
        if c == 0 {
            self.roots.npinned = self.roots.npinned.saturating_add(1);
        }
        self.sp_mut(sp).root_count = c.saturating_add(1);
    }

    fn unpin(&mut self, sp: SpId) {
        let c = self.sp(sp).root_count;
        if c == 1 {
            self.roots.npinned = self.roots.npinned.saturating_sub(1);
        }
        self.sp_mut(sp).root_count = c.saturating_sub(1);
    }

    /// Drops the least recently used cached root that is not the current one (its pages
    /// become unpinned and reclaimable). False if there is none.
    pub(super) fn evict_cached_root<P: PageSource + ?Sized>(&mut self, src: &mut P) -> bool {
        let cur = self.roots.current();
        let Some(r) = self.roots.victim(&mut self.pool, cur) else {
            return false;
        };
        self.roots.remove(&mut self.pool, r);
        self.free_root(src, r);
        self.stats.inc(Counter::RootsEvicted);
        true
    }

    /// A translation went through root-level shadow page `sp`: the table is in use, so
    /// its flood count restarts (KVM clears it from the root down on every shadow walk).
    /// A 32-bit guest's page directory is the 4 quadrant pages of the current root.
    pub(super) fn root_table_used(&mut self, sp: SpId) {
        self.sp_mut(sp).write_count = 0;
        self.lru_touch(sp);
        if self.ctx.mode != GuestMode::Bits32 {
            return;
        }
        let Some(cur) = self.roots.current() else {
            return;
        };
        for i in 0..4 {
            if let Some(q) = self.pae_sp(cur, i) {
                self.sp_mut(q).write_count = 0;
            }
        }
    }

    /// A root becomes current: its root-level tables are in use (KVM clears their flood
    /// counts in `kvm_mmu_new_pgd`). `sp` and `pae` are the root record's fields.
    fn root_flood_reset(&mut self, sp: Option<SpId>, pae: usize) {
        if let Some(sp) = sp {
            self.sp_mut(sp).write_count = 0;
        }
        // SAFETY: `pae` is a live root's PAE page (0 for a 4-level root, which has none):
        // engine-owned until `free_root` or teardown (RootRec invariant).
        let Some(page) = (unsafe { TablePage::from_addr(pae) }) else {
            return;
        };
        for i in 0..4 {
            if let Some(q) = SpId::from_raw(page.get(pae_slot(PAE_SPS, i)) as u32) {
                self.sp_mut(q).write_count = 0;
            }
        }
    }

    /// Whether shadow page `sp` is pinned by the current root.
    pub(super) fn pinned_by_current(&self, sp: SpId) -> bool {
        self.roots.current().is_some_and(|r| self.root_pins(r, sp))
    }

    fn build_root<G: GuestMemory + ?Sized>(
        &mut self,
        mem: &G,
        key: u64,
        base: Role,
    ) -> Option<RootId> {
        let r = self.pool.alloc::<RootRec>()?;
        if self.ctx.mode == GuestMode::Long4 {
            let gfn = (key & bits(51, 12)) >> 12;
            let Some(sp) = self.sp_get(mem, gfn, base.with(4, false, 0, ACC_ALL)) else {
                self.pool.free(r);
                return None;
            };
            self.pin(sp);
            let hpa = self.sp(sp).spt_hpa;
            let rec = self.pool.get_mut(r);
            rec.key = key;
            rec.role = base;
            rec.sp = Some(sp);
            rec.hpa = hpa;
            return Some(r);
        }
        // Not cleared: the loop below writes every entry the CPU (the 4 PDPTEs) and the
        // engine (the PAE_SPS and PAE_GUEST slots) read.
        let Some(pae) = self.spare_low.pop_unzeroed() else {
            self.pool.free(r);
            return None;
        };
        // SAFETY: a page off the low spare list, the engine's until `free_root` gives it
        // back; the root record keeps it.
        let Some(pt) = (unsafe { TablePage::from_host(pae) }) else {
            self.pool.free(r);
            return None;
        };
        let pdptes = self.ctx.pdptes;
        // (Not `enumerate`: its counter carries an overflow check in the kernel build.)
        for (i, p) in (0..4usize).zip(pdptes) {
            pt.set(i, 0);
            pt.set(pae_slot(PAE_SPS, i), 0);
            pt.set(pae_slot(PAE_GUEST, i), 0);
            let (gfn, role_i, present) = match self.ctx.mode {
                GuestMode::Off => ((i as u64) << 18, base.with(2, true, 0, ACC_ALL), true),
                GuestMode::Bits32 => (
                    (key & 0xffff_f000) >> 12,
                    base.with(2, false, i as u32, ACC_ALL),
                    true,
                ),
                _ => {
                    pt.set(pae_slot(PAE_GUEST, i), p);
                    (
                        (p & bits(51, 12)) >> 12,
                        base.with(2, false, 0, ACC_ALL),
                        p & PTE_P != 0,
                    )
                }
            };
            if !present {
                continue;
            }
            let Some(sp) = self.sp_get(mem, gfn, role_i) else {
                continue;
            };
            self.pin(sp);
            let hpa = self.sp(sp).spt_hpa;
            pt.set(i, (hpa & bits(51, 12)) | PTE_P);
            pt.set(pae_slot(PAE_SPS, i), u64::from(raw_of(Some(sp))));
        }
        let rec = self.pool.get_mut(r);
        rec.key = key;
        rec.role = base;
        rec.pae = pt.addr();
        rec.pae_hpa = pae.hpa;
        rec.hpa = pae.hpa;
        Some(r)
    }

    fn free_root<P: PageSource + ?Sized>(&mut self, src: &mut P, r: RootId) {
        let pae = {
            let rec = self.root_rec(r);
            HostPage {
                ptr: rec.pae as *mut u8,
                hpa: rec.pae_hpa,
            }
        };
        if !pae.is_null() {
            for i in 0..4 {
                if let Some(s) = self.pae_sp(r, i) {
                    self.unpin(s);
                }
            }
            // SAFETY: the root's PAE page (RootRec invariant), below 4 GiB; the root is
            // leaving the cache and its record is freed below.
            unsafe { self.put_low_page(src, pae) };
        }
        self.free_root_record(r);
    }

    /// Frees root `r`'s record and unpins its 4-level shadow page (a PAE root's page and
    /// pins are [`Mmu::free_root`]'s). Needs no memory.
    fn free_root_record(&mut self, r: RootId) {
        // The record may come back as another root.
        self.paths_changed();
        if let Some(sp) = self.root_rec(r).sp {
            self.unpin(sp);
        }
        if self.roots.current() == Some(r) {
            self.roots.set_current(None, 0, None);
        }
        self.pool.free(r);
    }

    /// Whether root `r` pins shadow page `sp` (as its root table or one of its PAE roots).
    fn root_pins(&self, r: RootId, sp: SpId) -> bool {
        if self.root_rec(r).sp == Some(sp) {
            return true;
        }
        self.pae_page(r).is_some() && (0..4).any(|i| self.pae_sp(r, i) == Some(sp))
    }

    /// Drops from the root cache every root but the current one that pins `sp`. Called
    /// when the guest floods the frame behind `sp` with writes: it reuses the old table as
    /// data, and keeping the old address space cached would make each store to the frame
    /// an emulated exit. Needs no memory.
    pub(super) fn uncache_roots_pinning<P: PageSource + ?Sized>(&mut self, src: &mut P, sp: SpId) {
        let mut next = self.roots.first();
        // At most MAX_ROOT_CACHE roots.
        while let Some(r) = next {
            next = self.roots.next(&self.pool, r);
            if Some(r) != self.roots.current() && self.root_pins(r, sp) {
                self.roots.remove(&mut self.pool, r);
                self.free_root(src, r);
            }
        }
    }

    /// Root tables of the cached 4-level roots, other than the current one, whose CR3
    /// carries PCID `pcid` (their keys keep the PCID while CR4.PCIDE=1), into `out`;
    /// returns how many. No memory, at most [`MAX_ROOT_CACHE`] roots.
    pub(super) fn other_roots_with_pcid(
        &self,
        pcid: u64,
        out: &mut [Option<SpId>; MAX_ROOT_CACHE],
    ) -> usize {
        let mut n = 0usize;
        let mut next = self.roots.first();
        // At most MAX_ROOT_CACHE roots.
        while let Some(r) = next {
            next = self.roots.next(&self.pool, r);
            let rec = self.root_rec(r);
            if Some(r) == self.roots.current() || rec.key & 0xfff != pcid {
                continue;
            }
            let Some(sp) = rec.sp else {
                continue;
            };
            if let Some(slot) = out.get_mut(n) {
                *slot = Some(sp);
                n = n.saturating_add(1);
            }
        }
        n
    }

    /// Drops from the root cache every 4-level root other than the current one whose CR3
    /// carries PCID `pcid` (INVPCID of that PCID, as KVM frees its previous roots with
    /// it): the next MOV to CR3 to such an address space builds its root again and
    /// resyncs the out-of-sync frames ([`Mmu::set_cr3`]). Needs no memory, at most
    /// [`MAX_ROOT_CACHE`] roots.
    pub(super) fn uncache_other_roots_with_pcid(&mut self, pcid: u64) {
        let mut next = self.roots.first();
        // At most MAX_ROOT_CACHE roots.
        while let Some(r) = next {
            next = self.roots.next(&self.pool, r);
            let rec = self.root_rec(r);
            // A 4-level root has its shadow page and no PAE page (RootRec invariant).
            let four_level = rec.sp.is_some() && rec.pae == 0;
            if Some(r) == self.roots.current() || !four_level || rec.key & 0xfff != pcid {
                continue;
            }
            self.roots.remove(&mut self.pool, r);
            self.free_root_record(r);
        }
    }

    /// Whether shadow page `sp` is one of `targets` or lies below one (through its parent
    /// links, up to level `top`), for [`Mmu::resync_reaching`]. The search gives up after
    /// [`REACH_BUDGET`] pages (a table shared by many address spaces) and answers true:
    /// resyncing more than needed is always allowed. Needs no memory.
    pub(super) fn reaches(&mut self, sp: SpId, targets: &[Option<SpId>], top: u8) -> bool {
        let mut stack = [None; REACH_BUDGET];
        if let Some(first) = stack.first_mut() {
            *first = Some(sp);
        }
        let mut len = 1usize;
        let mut visited = 0usize;
        while let Some(s) = len
            .checked_sub(1)
            .and_then(|i| stack.get(i).copied().flatten())
        {
            len = len.saturating_sub(1);
            if targets.contains(&Some(s)) {
                return true;
            }
            visited = visited.saturating_add(1);
            if visited > REACH_BUDGET || self.role(s).level() >= top {
                if visited > REACH_BUDGET {
                    return true;
                }
                continue;
            }
            let mut full = false;
            let head = self.sp(s).parents;
            self.list_for_each(head, |_, r| {
                let Some(p) = r.sp() else {
                    return;
                };
                match stack.get_mut(len) {
                    Some(slot) => {
                        *slot = Some(p);
                        len = len.saturating_add(1);
                    }
                    None => full = true,
                }
            });
            if full {
                return true;
            }
        }
        false
    }

    /// The shadow page and level where a walk for `gva` starts (below the PAE root).
    pub(super) fn path_start(&self, gva: u64) -> Option<(SpId, u8)> {
        if self.ctx.mode == GuestMode::Long4 {
            // The current root's shadow page without a record lookup (every INVLPG, #PF).
            Some((self.roots.cur_sp?, 4))
        } else {
            let r = self.roots.current()?;
            let i = ((gva >> 30) & 3) as usize;
            Some((self.pae_sp(r, i)?, 2))
        }
    }

    /// Gives the cached roots' PAE pages back and forgets the roots (teardown: the
    /// shadow pages and records go separately).
    pub(super) fn release_roots<P: PageSource + ?Sized>(&mut self, src: &mut P) {
        let mut next = self.roots.first();
        // At most MAX_ROOT_CACHE roots.
        while let Some(r) = next {
            next = self.roots.next(&self.pool, r);
            let rec = self.root_rec(r);
            let pae = HostPage {
                ptr: rec.pae as *mut u8,
                hpa: rec.pae_hpa,
            };
            if !pae.is_null() {
                src.free_page(pae);
            }
        }
        self.roots.release(src);
    }
}
