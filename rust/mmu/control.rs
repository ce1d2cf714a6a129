// SPDX-License-Identifier: GPL-2.0

//! The control events: CR3 writes (PCID aware), paging-mode changes (CR0/CR4/EFER),
//! INVLPG, INVPCID, full flushes and teardown.

use super::bits::*;
use super::frames::MAX_UNSYNC;
use super::mem::{read_gpte, GuestMemory, PageSource};
use super::roles::Role;
use super::roots::{sidx, RootId, ROOT_PAGES, ROOT_RECS};
use super::sp::{SpId, SpView, SP_UNSYNC};
use super::stats::Counter;
use super::walk::{with_format, Format, GuestMode, PagingCtx};
use super::{CtlOutcome, InvpcidKind, Mmu, MmuError, MAX_ROOT_CACHE};

/// The bits of CR0, CR4 and EFER that the engine's rules read: what the shadow was last
/// built for, which [`Mmu::set_mode`] compares a change against. Not the registers: the
/// vCPU owns those (with their other bits, and possibly a value the engine has not been
/// given yet, after SET_SREGS) and passes them in at every change; the engine derives
/// this and its [`PagingCtx`] from them, as KVM's MMU keeps a `cpu_role`.
///
/// # Invariants
///
/// Only the bits of [`ModeBits::CR0`], [`ModeBits::CR4`] and [`ModeBits::EFER`] are set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct ModeBits {
    cr0: u64,
    cr4: u64,
    efer: u64,
}

impl ModeBits {
    /// CR0 bits kept: paging and write protection decide the shadow; CD, NW (and PG) make
    /// MOV to CR0 reload the PAE PDPTEs.
    const CR0: u64 = CR0_PG | CR0_WP | CR0_CD | CR0_NW;
    /// CR4 bits kept: the paging mode and permission bits, and PGE/PCIDE (TLB flushes).
    const CR4: u64 = CR4_PAE | CR4_PSE | CR4_PGE | CR4_PCIDE | CR4_SMEP | CR4_SMAP;
    /// EFER bits kept.
    const EFER: u64 = EFER_NXE | EFER_LMA;
    /// Before the first [`Mmu::set_mode`]: all clear.
    pub(super) const RESET: ModeBits = ModeBits {
        cr0: 0,
        cr4: 0,
        efer: 0,
    };

    fn new(cr0: u64, cr4: u64, efer: u64) -> ModeBits {
        ModeBits {
            cr0: cr0 & Self::CR0,
            cr4: cr4 & Self::CR4,
            efer: efer & Self::EFER,
        }
    }

    /// Whether going from `self` to `new` in PAE mode reloads the PDPTEs (SDM vol. 3A
    /// 4.4.1: MOV to CR0 or CR4 that changes CD, NW, PG, PAE, PGE, PSE or SMEP).
    fn reloads_pdptes(self, new: ModeBits) -> bool {
        (self.cr0 ^ new.cr0) & (CR0_CD | CR0_NW | CR0_PG) != 0
            || (self.cr4 ^ new.cr4) & (CR4_PAE | CR4_PGE | CR4_PSE | CR4_SMEP) != 0
    }

    /// Whether going from `self` to `new` changes paging (a new shadow, a TLB flush).
    fn changes_paging(self, new: ModeBits) -> bool {
        (self.cr0 ^ new.cr0) & (CR0_PG | CR0_WP) != 0
            || self.cr4 != new.cr4
            || self.efer != new.efer
    }

    /// CR4.PCIDE.
    pub(super) fn pcide(self) -> bool {
        self.cr4 & CR4_PCIDE != 0
    }
}

/// Where an INVLPG of the current root last found its leaf table: the indirect level-1
/// shadow page of the 2 MiB region `region` (guest-virtual address >> 21) of root
/// `root`, reached through indirect pages only. Repeated INVLPGs in one region (a
/// mprotect, a COW fault, a page-table update storm) then skip the upper levels' walk.
///
/// # Invariants
///
/// If `gen` equals [`Mmu`]'s `paths_gen`, `root` is the root the walk started from and
/// `sp` is live and is the page that walk reaches for any address of `region` (no
/// non-leaf entry, shadow page or root changed since).
#[derive(Clone, Copy)]
pub(super) struct LeafHint {
    gen: u64,
    root: Option<RootId>,
    region: u64,
    sp: Option<SpId>,
}

impl LeafHint {
    /// No hint.
    pub(super) const NONE: LeafHint = LeafHint {
        gen: u64::MAX,
        root: None,
        region: 0,
        sp: None,
    };
}

/// The 2 MiB region of `gva`: one level-1 shadow table covers it in every paging mode.
fn leaf_region(gva: u64) -> u64 {
    gva >> 21
}

impl Mmu {
    /// The shadow's non-leaf structure changed: every [`LeafHint`] is stale.
    pub(super) fn paths_changed(&mut self) {
        self.paths_gen = self.paths_gen.wrapping_add(1);
    }

    /// The leaf table of `gva` in the current root from the last INVLPG's walk, if it is
    /// still valid.
    #[inline]
    fn hinted_leaf(&self, gva: u64) -> Option<SpId> {
        let h = &self.leaf_hint;
        let valid = h.gen == self.paths_gen
            && h.region == leaf_region(gva)
            && h.root.is_some()
            && h.root == self.roots.current();
        if valid {
            h.sp
        } else {
            None
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
    #[inline]
    fn tlb_flush<G: GuestMemory + ?Sized>(&mut self, mem: &G) {
        if self.frames.unsync_head().is_some() {
            self.resync_all(mem);
        }
        self.stats.inc(Counter::TlbFlushes);
    }

    /// Upper-level shadow page `table` was just linked under the current root. If it
    /// existed already, out-of-sync tables below it may hold entries that an INVLPG or
    /// INVPCID of one address did not reach (it walks the roots of the PCID, which did
    /// not reach them then): they are resynced now, before the guest can use them. (A leaf table that
    /// is linked is resynced by `sp_get` itself.)
    pub(super) fn linked_existing_table<G: GuestMemory + ?Sized>(&mut self, mem: &G, table: SpId) {
        if self.frames.nunsync() > 0 {
            self.resync_reaching(mem, &[Some(table)]);
        }
    }

    /// Resyncs every out-of-sync frame with a shadow page below one of `targets` (through
    /// parent links, [`Mmu::reaches`]); at most [`MAX_UNSYNC`] frames.
    pub(super) fn resync_reaching<G: GuestMemory + ?Sized>(
        &mut self,
        mem: &G,
        targets: &[Option<SpId>],
    ) {
        let top = targets
            .iter()
            .flatten()
            .map(|&t| self.role(t).level())
            .max()
            .unwrap_or(0);
        let mut gfns = [None; MAX_UNSYNC];
        let mut n = 0usize;
        let mut g = self.frames.unsync_head();
        while let Some(id) = g {
            if let Some(slot) = gfns.get_mut(n) {
                *slot = Some(self.gr(id).gfn);
                n = n.saturating_add(1);
            } else {
                break;
            }
            g = super::frames::Frames::unsync_next(&self.pool, id);
        }
        for gfn in gfns.into_iter().take(n).flatten() {
            let Some(g) = self.gfn_lookup(gfn) else {
                continue;
            };
            if self.gr(g).unsync == 0 {
                continue;
            }
            let mut sp = self.gr(g).sps;
            let mut below = false;
            while let Some(id) = sp {
                if !self.role(id).direct() && self.reaches(id, targets, top) {
                    below = true;
                    break;
                }
                sp = self.sp(id).gfn_next;
            }
            if below {
                self.resync_gfn(mem, gfn);
            }
        }
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
            GuestMode::Long4 if val & bits(63, u32::from(self.cfg.maxphyaddr)) != 0 => {
                return Ok(CtlOutcome::Gp);
            }
            GuestMode::Pae => match self.load_pdptes(mem, val) {
                Some(p) => pdptes = p,
                None => return Ok(CtlOutcome::Gp),
            },
            _ => {}
        }
        let val = if self.ctx.mode == GuestMode::Long4 {
            val
        } else {
            val & 0xffff_ffff
        };
        if self.ctx.mode != GuestMode::Off {
            // A root-cache hit needs no memory and adds no shadow page: no top-up, no
            // reclaim (the common case, which an exit path wants short); the flush
            // changes no root. A miss changes nothing before the top-up below succeeds.
            // The flush resyncs every out-of-sync frame, not only those this PCID's roots
            // reach: finding those meant a walk up from every out-of-sync frame, which
            // in the benchmarks cost 4,000 cycles per MOV to CR3 with frames of old
            // address spaces left out of sync, more than resyncing them once.
            if let Some(r) = self.cached_root_for(val, &pdptes) {
                self.stats.inc(Counter::Cr3Writes);
                self.ctx.cr3 = val;
                self.ctx.pdptes = pdptes;
                self.use_cached_root(r);
                if !noflush {
                    self.tlb_flush(mem);
                }
                return Ok(CtlOutcome::Ok);
            }
        }
        self.topup(src, ROOT_PAGES, ROOT_RECS, self.low_needed(self.ctx.mode))?;
        self.stats.inc(Counter::Cr3Writes);
        self.ctx.cr3 = val;
        self.ctx.pdptes = pdptes;
        if self.ctx.mode == GuestMode::Off {
            return Ok(CtlOutcome::Ok);
        }
        let built = self.switch_root(src, mem);
        if !noflush {
            self.tlb_flush(mem);
        } else if built {
            // A root built now may reuse shadow pages (its top table's, kept after an
            // earlier root of this CR3 left the cache) whose out-of-sync entries were
            // invalidated for this PCID while no cached root reached them (INVLPG,
            // INVPCID of one address, INVPCID of this PCID, which uncaches its roots):
            // they are resynced before the guest uses them, as KVM syncs a root it loads.
            self.resync_all(mem);
        }
        self.make_room(src, 0)?;
        Ok(CtlOutcome::Ok)
    }

    /// The guest's CR0, CR4 or EFER changed (pass all three; EFER.LMA decides IA-32e
    /// mode, so update it first as the CPU does when CR0.PG is set with EFER.LME). Loads
    /// the PAE PDPTEs when the SDM says MOV to CR0/CR4 does ([`CtlOutcome::Gp`] if bad).
    /// Also call it once at vCPU reset to build the first root. The caller owns the
    /// registers: the engine keeps only what it derives from them (its paging context
    /// and the `ModeBits` a later change is compared against).
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
        let bits = ModeBits::new(cr0, cr4, efer);
        if mode == GuestMode::Pae {
            let reload = self.ctx.mode != GuestMode::Pae || self.mode_bits.reloads_pdptes(bits);
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
        let changed = self.ctx.mode != mode || self.mode_bits.changes_paging(bits);
        self.mode_bits = bits;
        self.ctx = ctx;
        self.base_role = Role::base(&ctx);
        if changed {
            self.stats.inc(Counter::ModeChanges);
            self.tlb_flush(mem);
        }
        if changed || self.roots.current().is_none() {
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
        if self.roots.current().is_some() {
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
    /// out-of-sync leaf table, drops a split large page entirely), in the current root
    /// and, with CR4.PCIDE=1, in every cached root with the current PCID. Needs no memory.
    pub fn invlpg<G: GuestMemory + ?Sized>(&mut self, mem: &G, gva: u64) {
        self.stats.inc(Counter::Invlpg);
        self.invlpg_inner(mem, gva);
    }

    fn invlpg_inner<G: GuestMemory + ?Sized>(&mut self, mem: &G, gva: u64) {
        let pcid = self.pcide().then_some(self.ctx.cr3 & 0xfff);
        with_format!(self.ctx.mode, F => self.invalidate_gva::<F, G>(mem, gva, true, pcid))
    }

    /// Drops the shadow's cached translations of `gva` in the current root (if `current`)
    /// and, with CR4.PCIDE=1 (`pcid` is `Some`), in every other cached root whose CR3
    /// carries PCID `pcid`. For a guest whose tables have format `F`.
    fn invalidate_gva<F: Format, G: GuestMemory + ?Sized>(
        &mut self,
        mem: &G,
        gva: u64,
        current: bool,
        pcid: Option<u64>,
    ) {
        if !F::PAGING {
            return;
        }
        let gva = self.ctx.canon(gva);
        if current {
            if let Some(leaf) = self.hinted_leaf(gva) {
                let view = self.sp_view(leaf);
                self.invlpg_leaf(mem, leaf, &view, sidx(gva, 1));
            } else if let Some((sp, level)) = self.path_start(gva) {
                self.invlpg_path::<F, G>(mem, gva, sp, level, true);
            }
        }
        if let Some(pcid) = pcid {
            // The CPU tags translations with the PCID, not with CR3: INVLPG drops the
            // page's translations for the current PCID whatever CR3 they were cached
            // under (SDM vol. 3A 4.10.4.1), so after a no-flush MOV to CR3 back to
            // another table with this PCID the guest must not find the old translation.
            // Every cached root with this PCID gets the same treatment.
            let mut others = [None; MAX_ROOT_CACHE];
            let n = self.other_roots_with_pcid(pcid, &mut others);
            for sp in others.into_iter().take(n).flatten() {
                self.invlpg_path::<F, G>(mem, gva, sp, 4, false);
            }
        }
    }

    /// INVLPG of the entry `slot` of leaf table `sp` (whose view is `view`).
    fn invlpg_leaf<G: GuestMemory + ?Sized>(
        &mut self,
        mem: &G,
        sp: SpId,
        view: &SpView,
        slot: usize,
    ) {
        let mut present = self.is_filled(view.spte(slot));
        if present && view.flags & SP_UNSYNC != 0 {
            self.sync_entry(mem, sp, view, slot);
            self.stats.inc(Counter::InvlpgResync);
            present = self.is_filled(view.spte(slot));
        }
        // The guest is likely to use the page it just invalidated (KVM's old
        // FNAME(invlpg) updated the entry from the guest's): fill the entry now if the
        // guest entry allows it, instead of taking a fault for it.
        if !present && self.cfg.prefetch > 1 {
            self.prefetch_entry(mem, sp, slot);
        }
    }

    /// INVLPG in one shadow: walks it from table `sp` at `level` down to `gva`'s entry
    /// (one record lookup per level: the next level's view is read once, for its role).
    /// With `current` (the walk starts at the current root's top), the leaf table found
    /// becomes the [`LeafHint`] of `gva`'s region.
    fn invlpg_path<F: Format, G: GuestMemory + ?Sized>(
        &mut self,
        mem: &G,
        gva: u64,
        mut sp: SpId,
        mut level: u8,
        current: bool,
    ) {
        let mut view = self.sp_view(sp);
        loop {
            let slot = sidx(gva, level);
            if level == 1 {
                if current {
                    // INVARIANT: reached from the current root through indirect pages
                    // (a direct child returns below), nothing changed since.
                    self.leaf_hint = LeafHint {
                        gen: self.paths_gen,
                        root: self.roots.current(),
                        region: leaf_region(gva),
                        sp: Some(sp),
                    };
                }
                self.invlpg_leaf(mem, sp, &view, slot);
                return;
            }
            if !self.is_filled(view.spte(slot)) {
                return;
            }
            let Some(child) = view.child(slot) else {
                return;
            };
            let child_view = self.sp_view(child);
            if child_view.role.direct() {
                self.drop_spte(sp, slot);
                // The guest's large page may be more than one shadow entry (a 4 MiB page
                // of 32-bit paging is two): the split pages of the others go too.
                let q = self.role(sp).quadrant();
                for s in F::shadow_slots(level, q, F::gpte_index(level, q, slot)) {
                    if s != slot
                        && self.is_filled(self.spt_get(sp, s))
                        && self.child(sp, s).is_some_and(|b| self.role(b).direct())
                    {
                        self.drop_spte(sp, s);
                    }
                }
                return;
            }
            sp = child;
            view = child_view;
            // level > 1 here (level 1 returned above).
            level = level.saturating_sub(1);
        }
    }

    /// INVPCID of `kind` for `pcid` (and `gva` for [`InvpcidKind::Address`]). Gives
    /// [`CtlOutcome::Gp`] for a PCID above 4095, or a nonzero PCID with CR4.PCIDE=0 for
    /// types 0 and 1. Only what the SDM (vol. 3A 4.10.4.1) invalidates goes, in the
    /// roots that can hold it (as KVM's `kvm_handle_invpcid`):
    /// - type 0 (one address): that address in the cached roots with that PCID; for the
    ///   current PCID this is INVLPG;
    /// - type 1 (one PCID): for the current PCID a TLB flush (every out-of-sync frame is
    ///   resynced: the engine does not know which ones the current root reaches); for
    ///   another, its cached roots leave the cache, and the one built when the guest
    ///   loads such a CR3 again is resynced then ([`Mmu::set_cr3`]);
    /// - types 2 and 3 (every PCID; the shadow holds no global translation, so both
    ///   are the same): a TLB flush.
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
            // Another PCID is only ever current with CR4.PCIDE=1, in IA-32e mode.
            InvpcidKind::Address => {
                with_format!(self.ctx.mode, F => self.invalidate_gva::<F, G>(
                    mem, gva, false, Some(pcid)
                ))
            }
            InvpcidKind::Single if pcid == cur => self.tlb_flush(mem),
            InvpcidKind::Single => self.uncache_other_roots_with_pcid(pcid),
            InvpcidKind::AllIncludingGlobal | InvpcidKind::AllExceptGlobal => self.tlb_flush(mem),
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
        self.release_roots(src);
        self.free_all_sps(src);
        self.pool.release(src);
        while let Some(p) = self.spare.pop() {
            src.free_page(p);
        }
        while let Some(p) = self.spare_low.pop() {
            src.free_page(p);
        }
        self.frames.release(src);
        let (stats, limit) = (self.stats, self.shadow_limit);
        *self = Mmu::new(self.cfg);
        self.stats = stats;
        self.shadow_limit = limit;
    }
}
