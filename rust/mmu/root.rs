// SPDX-License-Identifier: GPL-2.0

//! Shadow roots and the root cache, and the events that switch or flush them: CR3 writes
//! (PCID aware), paging-mode changes (CR0/CR4/EFER), INVLPG, INVPCID, full flushes and
//! teardown.

use super::bits::*;
use super::mem::{page_get, page_set, read_gpte, GuestMemory, HostPage, PageSource, Record};
use super::shadow::{sidx, Role, SIDE_INFO, SP_UNSYNC};
use super::stats::Counter;
use super::walk::{GuestMode, PagingCtx, ACC_ALL};
use super::{CtlOutcome, InvpcidKind, Mmu, MmuError, MAX_ROOT_CACHE};

/// Pages building a root may need: 4 shadow pages (table + side each).
pub(super) const ROOT_PAGES: usize = 8;
/// Records building a root may need: the root record, 4 shadow-page and 4 frame records.
pub(super) const ROOT_RECS: u32 = 12;

/// Slot of the PAE root page where the pinned shadow pages' record indices are kept.
pub(super) const PAE_SPS: usize = 256;
/// Slot of the PAE root page where the guest PDPTEs the root was built from are kept.
const PAE_GUEST: usize = 260;

/// Entry of the PAE root page holding item `i` (0..4) of the 4-entry table at `base`
/// (`PAE_SPS` or `PAE_GUEST`, both multiples of 4, so `|` adds without overflow).
pub(super) const fn pae_slot(base: usize, i: usize) -> usize {
    base | (i & 3)
}

/// A cached shadow root.
///
/// # Invariants
///
/// For a 4-level root, `sp` is a pinned shadow page and `hpa` its table. Otherwise
/// `pae_ptr`/`pae_hpa` is an engine-owned page below 4 GiB whose first 4 entries are the
/// PAE PDPTEs the CPU loads, whose slots 256..260 hold the pinned level-2 shadow pages
/// (0 = none) and 260..264 the guest PDPTEs it was built from; `hpa == pae_hpa`.
#[repr(C)]
pub(super) struct RootRec {
    pub key: u64,
    pub hpa: u64,
    pub pae_ptr: usize,
    pub pae_hpa: u64,
    pub role: u32,
    pub sp: u32,
}
// SAFETY: repr(C), 40 bytes, align 8, integers only.
unsafe impl Record for RootRec {}

impl Mmu {
    pub(super) fn root_rec(&self, r: u32) -> &RootRec {
        self.pool.get::<RootRec>(r)
    }

    /// The cached roots, most recently used first.
    fn cached_roots_list(&self) -> &[u32] {
        self.roots.get(..self.nroots.min(MAX_ROOT_CACHE)).unwrap_or(&[])
    }

    /// Puts `r` in cache slot 0 and moves the entries of slots `0..len - 1` one slot down:
    /// inserts at the front (`len = nroots + 1`), or moves slot `len - 1`, which holds
    /// `r`, to the front. Returns what fell off slot `len - 1`. Slots past the array are
    /// left alone, so the shift cannot go out of bounds.
    fn roots_shift_in(&mut self, r: u32, len: usize) -> u32 {
        let mut carry = r;
        for slot in self.roots.iter_mut().take(len) {
            core::mem::swap(slot, &mut carry);
        }
        carry
    }

    /// Removes cache entry `i`, moving the later ones up. `None` if there is no entry `i`.
    fn roots_remove(&mut self, i: usize) -> Option<u32> {
        let n = self.nroots.min(MAX_ROOT_CACHE);
        let tail = self.roots.get_mut(i..n)?;
        if tail.is_empty() {
            return None;
        }
        let mut carry = 0;
        for slot in tail.iter_mut().rev() {
            core::mem::swap(slot, &mut carry);
        }
        // Entry i existed, so n >= 1.
        self.nroots = n.saturating_sub(1);
        Some(carry)
    }

    fn pcide(&self) -> bool {
        self.ctx.mode == GuestMode::Long4 && self.cr4 & CR4_PCIDE != 0
    }

    /// The cache key of the current address space: (CR3 incl. PCID, base role).
    fn root_key(&self) -> (u64, u32) {
        let key = match self.ctx.mode {
            GuestMode::Off => 0,
            GuestMode::Bits32 => self.ctx.cr3 & 0xffff_f000,
            GuestMode::Pae => self.ctx.cr3 & 0xffff_ffe0,
            GuestMode::Long4 => {
                if self.pcide() {
                    self.ctx.cr3 & (bits(51, 12) | 0xfff)
                } else {
                    self.ctx.cr3 & bits(51, 12)
                }
            }
        };
        (key, Role::base(&self.ctx).0)
    }

    fn root_matches(&self, r: u32, key: u64, role: u32) -> bool {
        let rec = self.root_rec(r);
        if rec.key != key || rec.role != role {
            return false;
        }
        if self.ctx.mode == GuestMode::Pae {
            let p = rec.pae_ptr as *mut u8;
            let mut pdptes = self.ctx.pdptes.iter().enumerate();
            return pdptes.all(|(i, &e)| page_get(p, pae_slot(PAE_GUEST, i)) == e);
        }
        true
    }

    /// Makes the current address space's root current, from the cache or built anew.
    /// Needs the reserves of `topup(ROOT_PAGES, ROOT_RECS, 1)` (low page unless 4-level).
    pub(super) fn switch_root<P: PageSource + ?Sized, G: GuestMemory + ?Sized>(&mut self, src: &mut P, mem: &G) {
        let (key, role) = self.root_key();
        // (`position` on a slice iterator has no overflow check; `enumerate` has one.)
        let list = self.cached_roots_list();
        let hit = list.iter().position(|&r| self.root_matches(r, key, role));
        if let Some((pos, &r)) = hit.and_then(|pos| Some((pos, list.get(pos)?))) {
            // Slot pos holds r: move it to the front (pos < nroots <= MAX_ROOT_CACHE).
            self.roots_shift_in(r, pos.saturating_add(1));
            self.cur_root = r;
            self.root_hpa = self.root_rec(r).hpa;
            self.stats.inc(Counter::RootCacheHits);
            self.root_flood_reset(r);
            return;
        }
        self.stats.inc(Counter::RootCacheMisses);
        let r = self.build_root(mem, key, role);
        if r == 0 {
            // Unreachable after top-up; leave no root (the next #PF retries).
            self.cur_root = 0;
            self.root_hpa = 0;
            return;
        }
        if self.nroots >= self.cfg.root_cache_size.min(MAX_ROOT_CACHE) {
            // root_cache_size >= 1 (Mmu::new), so the cache is not empty here.
            if let Some(last) = self.roots_remove(self.nroots.saturating_sub(1)) {
                self.free_root(src, last);
            }
        }
        // Now nroots < root_cache_size <= MAX_ROOT_CACHE: nothing falls off the end.
        let n = self.nroots.min(MAX_ROOT_CACHE);
        self.roots_shift_in(r, n.saturating_add(1));
        self.nroots = n.saturating_add(1).min(MAX_ROOT_CACHE);
        self.cur_root = r;
        self.root_hpa = self.root_rec(r).hpa;
    }

    fn pin(&mut self, sp: u32) {
        let c = self.sp(sp).root_count;
        if c == 0 {
            self.npinned = self.npinned.saturating_add(1);
        }
        self.sp_mut(sp).root_count = c.saturating_add(1);
    }

    fn unpin(&mut self, sp: u32) {
        let c = self.sp(sp).root_count;
        if c == 1 {
            self.npinned = self.npinned.saturating_sub(1);
        }
        self.sp_mut(sp).root_count = c.saturating_sub(1);
    }

    /// Drops the least recently used cached root that is not the current one (its pages
    /// become unpinned and reclaimable). False if there is none.
    pub(super) fn evict_cached_root<P: PageSource + ?Sized>(&mut self, src: &mut P) -> bool {
        let cur = self.cur_root;
        let Some(i) = self.cached_roots_list().iter().rposition(|&r| r != cur) else {
            return false;
        };
        let Some(r) = self.roots_remove(i) else {
            return false;
        };
        self.free_root(src, r);
        self.stats.inc(Counter::RootsEvicted);
        true
    }

    /// A translation went through root-level shadow page `sp`: the table is in use, so
    /// its flood count restarts (KVM clears it from the root down on every shadow walk).
    /// A 32-bit guest's page directory is the 4 quadrant pages of the current root.
    pub(super) fn root_table_used(&mut self, sp: u32) {
        self.sp_mut(sp).write_count = 0;
        self.lru_touch(sp);
        if self.ctx.mode != GuestMode::Bits32 || self.cur_root == 0 {
            return;
        }
        let p = self.root_rec(self.cur_root).pae_ptr as *mut u8;
        for i in 0..4 {
            let q = page_get(p, pae_slot(PAE_SPS, i)) as u32;
            if q != 0 {
                self.sp_mut(q).write_count = 0;
            }
        }
    }

    /// Root `r` becomes current: its root-level tables are in use (KVM clears their flood
    /// counts in `kvm_mmu_new_pgd`).
    fn root_flood_reset(&mut self, r: u32) {
        let (sp, p) = {
            let rec = self.root_rec(r);
            (rec.sp, rec.pae_ptr as *mut u8)
        };
        if sp != 0 {
            self.sp_mut(sp).write_count = 0;
        }
        for i in 0..4 {
            let q = page_get(p, pae_slot(PAE_SPS, i)) as u32;
            if q != 0 {
                self.sp_mut(q).write_count = 0;
            }
        }
    }

    /// Whether shadow page `sp` is pinned by the current root.
    pub(super) fn pinned_by_current(&self, sp: u32) -> bool {
        self.cur_root != 0 && self.root_pins(self.cur_root, sp)
    }

    fn build_root<G: GuestMemory + ?Sized>(&mut self, mem: &G, key: u64, role: u32) -> u32 {
        let base = Role(role);
        let r = self.pool.alloc();
        if r == 0 {
            return 0;
        }
        if self.ctx.mode == GuestMode::Long4 {
            let gfn = (key & bits(51, 12)) >> 12;
            let sp = self.sp_get(mem, gfn, base.with(4, false, 0, ACC_ALL));
            if sp == 0 {
                self.pool.free(r);
                return 0;
            }
            self.pin(sp);
            let hpa = self.sp(sp).spt_hpa;
            let rec = self.pool.get_mut::<RootRec>(r);
            rec.key = key;
            rec.role = role;
            rec.sp = sp;
            rec.hpa = hpa;
            return r;
        }
        let Some(pae) = self.spare_low.pop() else {
            self.pool.free(r);
            return 0;
        };
        let pdptes = self.ctx.pdptes;
        // (Not `enumerate`: its counter carries an overflow check in the kernel build.)
        for (i, p) in (0..4usize).zip(pdptes) {
            let (gfn, role_i, present) = match self.ctx.mode {
                GuestMode::Off => ((i as u64) << 18, base.with(2, true, 0, ACC_ALL), true),
                GuestMode::Bits32 => ((key & 0xffff_f000) >> 12, base.with(2, false, i as u32, ACC_ALL), true),
                _ => {
                    page_set(pae.ptr, pae_slot(PAE_GUEST, i), p);
                    ((p & bits(51, 12)) >> 12, base.with(2, false, 0, ACC_ALL), p & PTE_P != 0)
                }
            };
            if !present {
                continue;
            }
            let sp = self.sp_get(mem, gfn, role_i);
            if sp == 0 {
                continue;
            }
            self.pin(sp);
            let hpa = self.sp(sp).spt_hpa;
            page_set(pae.ptr, i, (hpa & bits(51, 12)) | PTE_P);
            page_set(pae.ptr, pae_slot(PAE_SPS, i), sp as u64);
        }
        let rec = self.pool.get_mut::<RootRec>(r);
        rec.key = key;
        rec.role = role;
        rec.pae_ptr = pae.ptr as usize;
        rec.pae_hpa = pae.hpa;
        rec.hpa = pae.hpa;
        r
    }

    fn free_root<P: PageSource + ?Sized>(&mut self, src: &mut P, r: u32) {
        let (sp, pae) = {
            let rec = self.root_rec(r);
            (rec.sp, HostPage { ptr: rec.pae_ptr as *mut u8, hpa: rec.pae_hpa })
        };
        if sp != 0 {
            self.unpin(sp);
        }
        if !pae.is_null() {
            for i in 0..4 {
                let s = page_get(pae.ptr, pae_slot(PAE_SPS, i)) as u32;
                if s != 0 {
                    self.unpin(s);
                }
            }
            self.put_low_page(src, pae);
        }
        if self.cur_root == r {
            self.cur_root = 0;
            self.root_hpa = 0;
        }
        self.pool.free(r);
    }

    /// Whether root `r` pins shadow page `sp` (as its root table or one of its PAE roots).
    fn root_pins(&self, r: u32, sp: u32) -> bool {
        let rec = self.root_rec(r);
        if rec.sp == sp {
            return true;
        }
        let p = rec.pae_ptr as *mut u8;
        !p.is_null() && (0..4).any(|i| page_get(p, pae_slot(PAE_SPS, i)) as u32 == sp)
    }

    /// Drops from the root cache every root but the current one that pins `sp`. Called
    /// when the guest floods the frame behind `sp` with writes: it reuses the old table as
    /// data, and keeping the old address space cached would make each store to the frame
    /// an emulated exit. Needs no memory.
    pub(super) fn uncache_roots_pinning<P: PageSource + ?Sized>(&mut self, src: &mut P, sp: u32) {
        let mut i = 0;
        while let Some(&r) = self.cached_roots_list().get(i) {
            if r != self.cur_root && self.root_pins(r, sp) {
                if let Some(r) = self.roots_remove(i) {
                    self.free_root(src, r);
                }
            } else {
                // i < nroots <= MAX_ROOT_CACHE.
                i = i.saturating_add(1);
            }
        }
    }

    /// Loads the 4 PAE PDPTEs at `cr3`; `None` if one has reserved bits set (#GP).
    fn load_pdptes<G: GuestMemory + ?Sized>(&self, mem: &G, cr3: u64) -> Option<[u64; 4]> {
        let base = cr3 & 0xffff_ffe0;
        let mut p = [0u64; 4];
        let ctx = self.ctx;
        for (i, e) in p.iter_mut().enumerate() {
            // base is 32-byte aligned and i < 4: PDPTE i is at base | 8i.
            let v = read_gpte(mem, base | (i as u64) << 3, 8);
            if v & PTE_P != 0 && v & ctx.pdpte_rsvd() != 0 {
                return None;
            }
            *e = v;
        }
        Some(p)
    }

    fn low_needed(&self, mode: GuestMode) -> usize {
        if mode == GuestMode::Long4 {
            0
        } else {
            1
        }
    }

    /// A guest TLB flush: everything out of sync is resynchronised.
    fn tlb_flush<G: GuestMemory + ?Sized>(&mut self, mem: &G) {
        self.resync_all(mem);
        self.stats.inc(Counter::TlbFlushes);
    }

    /// The guest wrote CR3 (MOV to CR3, or a task switch). With CR4.PCIDE=1, bit 63 is the
    /// no-flush bit and bits 11:0 the PCID. In PAE mode the PDPTEs are loaded here, as the
    /// CPU does; a bad one gives [`CtlOutcome::Gp`]. Switching back to a cached address
    /// space builds nothing.
    pub fn set_cr3<P: PageSource + ?Sized, G: GuestMemory + ?Sized>(
        &mut self,
        src: &mut P,
        mem: &G,
        cr3: u64,
    ) -> Result<CtlOutcome, MmuError> {
        let pcide = self.pcide();
        let noflush = pcide && cr3 & (1 << 63) != 0;
        let val = if pcide { cr3 & !(1u64 << 63) } else { cr3 };
        let mut pdptes = self.ctx.pdptes;
        match self.ctx.mode {
            GuestMode::Long4 if val & bits(63, self.cfg.maxphyaddr as u32) != 0 => {
                return Ok(CtlOutcome::Gp);
            }
            GuestMode::Pae => match self.load_pdptes(mem, val) {
                Some(p) => pdptes = p,
                None => return Ok(CtlOutcome::Gp),
            },
            _ => {}
        }
        let val = if self.ctx.mode == GuestMode::Long4 { val } else { val & 0xffff_ffff };
        self.topup(src, ROOT_PAGES, ROOT_RECS, self.low_needed(self.ctx.mode))?;
        self.stats.inc(Counter::Cr3Writes);
        self.ctx.cr3 = val;
        self.ctx.pdptes = pdptes;
        if self.ctx.mode == GuestMode::Off {
            return Ok(CtlOutcome::Ok);
        }
        if !noflush {
            self.tlb_flush(mem);
        }
        self.switch_root(src, mem);
        self.make_room(src, 0)?;
        Ok(CtlOutcome::Ok)
    }

    /// The guest's CR0, CR4 or EFER changed (pass all three; EFER.LMA decides IA-32e
    /// mode, so update it first as the CPU does when CR0.PG is set with EFER.LME). Loads
    /// the PAE PDPTEs when the SDM says MOV to CR0/CR4 does ([`CtlOutcome::Gp`] if bad).
    /// Also call it once at vCPU reset to build the first root.
    pub fn set_mode<P: PageSource + ?Sized, G: GuestMemory + ?Sized>(
        &mut self,
        src: &mut P,
        mem: &G,
        cr0: u64,
        cr4: u64,
        efer: u64,
    ) -> Result<CtlOutcome, MmuError> {
        let mode = if cr0 & CR0_PG == 0 {
            GuestMode::Off
        } else if efer & EFER_LMA != 0 {
            GuestMode::Long4
        } else if cr4 & CR4_PAE != 0 {
            GuestMode::Pae
        } else {
            GuestMode::Bits32
        };
        let mut ctx: PagingCtx = self.ctx;
        ctx.mode = mode;
        ctx.wp = cr0 & CR0_WP != 0;
        ctx.nxe = efer & EFER_NXE != 0;
        ctx.smep = cr4 & CR4_SMEP != 0;
        ctx.smap = cr4 & CR4_SMAP != 0;
        ctx.pse = cr4 & CR4_PSE != 0;
        if mode == GuestMode::Pae {
            let reload = self.ctx.mode != GuestMode::Pae
                || (self.cr0 ^ cr0) & (CR0_CD | CR0_NW | CR0_PG) != 0
                || (self.cr4 ^ cr4) & (CR4_PAE | CR4_PGE | CR4_PSE | CR4_SMEP) != 0;
            if reload {
                let save = self.ctx;
                self.ctx = ctx;
                let p = self.load_pdptes(mem, ctx.cr3);
                self.ctx = save;
                match p {
                    Some(p) => ctx.pdptes = p,
                    None => return Ok(CtlOutcome::Gp),
                }
            }
        }
        if mode != GuestMode::Long4 {
            ctx.cr3 &= 0xffff_ffff;
        }
        self.topup(src, ROOT_PAGES, ROOT_RECS, self.low_needed(mode))?;
        const CR0_BITS: u64 = CR0_PG | CR0_WP;
        const CR4_BITS: u64 = CR4_PAE | CR4_PSE | CR4_PGE | CR4_PCIDE | CR4_SMEP | CR4_SMAP;
        let changed = self.ctx.mode != mode
            || (self.cr0 ^ cr0) & CR0_BITS != 0
            || (self.cr4 ^ cr4) & CR4_BITS != 0
            || (self.efer ^ efer) & (EFER_NXE | EFER_LMA) != 0;
        self.cr0 = cr0;
        self.cr4 = cr4;
        self.efer = efer;
        self.ctx = ctx;
        if changed {
            self.stats.inc(Counter::ModeChanges);
            self.tlb_flush(mem);
        }
        if changed || self.cur_root == 0 {
            self.switch_root(src, mem);
            self.make_room(src, 0)?;
        }
        Ok(CtlOutcome::Ok)
    }

    /// Builds the current address space's root if there is none (KVM's
    /// `kvm_mmu_reload`): every VM entry needs one, and zapping or reclaim may have
    /// dropped it. Afterwards [`Mmu::hw_state`] names a root the engine owns.
    pub fn ensure_root<P: PageSource + ?Sized, G: GuestMemory + ?Sized>(
        &mut self,
        src: &mut P,
        mem: &G,
    ) -> Result<(), MmuError> {
        if self.cur_root != 0 {
            return Ok(());
        }
        self.topup(src, ROOT_PAGES, ROOT_RECS, self.low_needed(self.ctx.mode))?;
        self.switch_root(src, mem);
        Ok(())
    }

    /// Whether the four PAE PDPTEs at `cr3` can be loaded (no reserved bit set in a
    /// present one): what MOV to CR3 checks in PAE mode, for callers that set CR3
    /// from outside the guest.
    pub fn pae_pdptes_valid<G: GuestMemory + ?Sized>(&self, mem: &G, cr3: u64) -> bool {
        self.load_pdptes(mem, cr3).is_some()
    }

    /// INVLPG: drops the shadow's cached translation of `gva` (resyncs the entry of an
    /// out-of-sync leaf table, drops a split large page entirely). Needs no memory.
    pub fn invlpg<G: GuestMemory + ?Sized>(&mut self, mem: &G, gva: u64) {
        self.stats.inc(Counter::Invlpg);
        self.invlpg_inner(mem, gva);
    }

    fn invlpg_inner<G: GuestMemory + ?Sized>(&mut self, mem: &G, gva: u64) {
        if self.ctx.mode == GuestMode::Off {
            return;
        }
        let gva = self.ctx.canon(gva);
        let Some((mut sp, mut level)) = self.path_start(gva) else {
            return;
        };
        loop {
            let slot = sidx(gva, level);
            if page_get(self.spt(sp), slot) & PTE_P == 0 {
                return;
            }
            if level == 1 {
                if self.sp(sp).flags & SP_UNSYNC != 0 {
                    self.sync_entry(mem, sp, slot);
                    self.stats.inc(Counter::InvlpgResync);
                }
                return;
            }
            let child = (page_get(self.side(sp), slot) & SIDE_INFO) as u32;
            if self.role(child).direct() {
                self.drop_spte(sp, slot);
                if self.ctx.mode == GuestMode::Bits32 && level == 2 {
                    let buddy = slot ^ 1;
                    if page_get(self.spt(sp), buddy) & PTE_P != 0 {
                        let b = (page_get(self.side(sp), buddy) & SIDE_INFO) as u32;
                        if self.role(b).direct() {
                            self.drop_spte(sp, buddy);
                        }
                    }
                }
                return;
            }
            sp = child;
            // level > 1 here (level 1 returned above).
            level = level.saturating_sub(1);
        }
    }

    /// INVPCID of `kind` for `pcid` (and `gva` for [`InvpcidKind::Address`]). Gives
    /// [`CtlOutcome::Gp`] for a PCID above 4095, or a nonzero PCID with CR4.PCIDE=0 for
    /// types 0 and 1. Invalidations of other PCIDs flush more than asked (allowed).
    pub fn invpcid<G: GuestMemory + ?Sized>(
        &mut self,
        mem: &G,
        kind: InvpcidKind,
        pcid: u64,
        gva: u64,
    ) -> CtlOutcome {
        if pcid > 0xfff {
            return CtlOutcome::Gp;
        }
        let pcide = self.pcide();
        if matches!(kind, InvpcidKind::Address | InvpcidKind::Single) && !pcide && pcid != 0 {
            return CtlOutcome::Gp;
        }
        self.stats.inc(Counter::Invpcid);
        let cur = if pcide { self.ctx.cr3 & 0xfff } else { 0 };
        match kind {
            InvpcidKind::Address if pcid == cur => self.invlpg_inner(mem, gva),
            _ => self.tlb_flush(mem),
        }
        CtlOutcome::Ok
    }

    /// A full guest TLB flush (e.g. the vCPU lost track of what the guest did).
    pub fn flush<G: GuestMemory + ?Sized>(&mut self, mem: &G) {
        self.tlb_flush(mem);
    }

    /// Gives every page back to `src`. The engine is empty afterwards (paging off, no
    /// root) and can be reused after [`Mmu::set_mode`].
    pub fn teardown<P: PageSource + ?Sized>(&mut self, src: &mut P) {
        for &r in self.cached_roots_list() {
            let rec = self.root_rec(r);
            let pae = HostPage { ptr: rec.pae_ptr as *mut u8, hpa: rec.pae_hpa };
            if !pae.is_null() {
                src.free_page(pae);
            }
        }
        self.nroots = 0;
        self.cur_root = 0;
        self.root_hpa = 0;
        self.npinned = 0;
        self.free_all_sps(src);
        self.pool.release(src);
        while let Some(p) = self.spare.pop() {
            src.free_page(p);
        }
        while let Some(p) = self.spare_low.pop() {
            src.free_page(p);
        }
        if !self.buckets.is_null() {
            src.free_page(self.buckets);
            self.buckets = HostPage::NULL;
        }
        let stats = self.stats;
        *self = Mmu::new(self.cfg);
        self.stats = stats;
    }
}
