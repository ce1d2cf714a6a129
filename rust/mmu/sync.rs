// SPDX-License-Identifier: GPL-2.0

//! Keeping leaf shadow entries in step with the guest's tables: building a leaf entry,
//! re-deriving one from its guest entry, prefetching entries the guest did not fault on
//! yet, and bringing out-of-sync frames back in sync.

use super::bits::{PTE_A, PTE_D, PTE_NX, PTE_P, PTE_U, PTE_W};
use super::frames::RMAP_MAX;
use super::lists::SRef;
use super::mem::{read_gpte, GuestMemory};
use super::roles::Role;
use super::sp::{Side, SpId, SpView, SPTE_ADDR, SP_UNSYNC};
use super::stats::Counter;
use super::walk::{with_format, Format, GuestMode, PagingCtx, ACC_U, ACC_W, ACC_X};
use super::Mmu;

/// What a level-1 guest entry maps, as a shadow page of some role sees it.
struct GuestLeaf {
    gfn: u64,
    /// Permissions: the role's inherited access AND the entry's own.
    perm: u8,
    /// The entry's D bit.
    dirty: bool,
}

/// Decodes level-1 guest entry `gpte` of format `F` for a shadow page of `role`, in
/// `ctx` (the role's context). `None` unless it is present, accessed and free of
/// reserved bits (KVM's `prefetch_invalid_gpte`): a shadow entry built from it then
/// holds a translation the guest's tables allow, and the CPU would not set its A bit.
#[inline]
fn guest_leaf<F: Format>(role: Role, ctx: &PagingCtx, gpte: u64) -> Option<GuestLeaf> {
    if gpte & PTE_P == 0 || gpte & PTE_A == 0 {
        return None;
    }
    if F::rsvd(ctx, gpte, 1) {
        return None;
    }
    Some(GuestLeaf {
        gfn: F::leaf_gfn(gpte),
        perm: role.access() & F::perm(ctx, gpte),
        dirty: gpte & PTE_D != 0,
    })
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

/// The guest entry (format `F`) behind leaf slot `slot` of the indirect level-1 page whose
/// view is `view`.
#[inline]
fn read_gpte_in<F: Format, G: GuestMemory + ?Sized>(mem: &G, view: &SpView, slot: usize) -> u64 {
    let base = view.gfn << 12;
    // gfn < 2^40 and the offsets are below 8 KiB: nothing wraps; wrapping keeps the
    // guest-physical arithmetic total.
    let off = F::gpte_index(1, view.role.quadrant(), slot).wrapping_mul(F::PTE_BYTES);
    read_gpte(mem, base.wrapping_add(off), F::PTE_BYTES)
}

impl Mmu {
    /// The guest entry (format `F`) behind leaf slot `slot` of indirect level-1 page `sp`.
    fn read_gpte_fmt<F: Format, G: GuestMemory + ?Sized>(
        &self,
        mem: &G,
        sp: SpId,
        slot: usize,
    ) -> u64 {
        read_gpte_in::<F, G>(mem, &self.sp_view(sp), slot)
    }

    /// Guest-physical address and size of the guest entry behind slot `slot` of indirect
    /// page `sp` (any level). A 32-bit guest's 4 KiB table is two level-1 shadow pages
    /// (quadrants of 512 entries); its page directory is four level-2 shadow pages of 256
    /// guest entries each, guest entry i being shadow entries 2i and 2i+1.
    fn gpte_gpa(&self, sp: SpId, slot: usize) -> (u64, u64) {
        let role = self.role(sp);
        let base = self.sp(sp).gfn << 12;
        if !role.direct() && role.mode() == GuestMode::Bits32 {
            // gfn < 2^40 and the offsets are below 8 KiB: nothing wraps; wrapping keeps
            // the guest-physical arithmetic total.
            let (per_quadrant, index) = if role.level() == 1 {
                (512, slot as u64)
            } else {
                (256, (slot as u64) >> 1)
            };
            let gi = u64::from(role.quadrant())
                .wrapping_mul(per_quadrant)
                .wrapping_add(index);
            (base.wrapping_add(gi.wrapping_mul(4)), 4)
        } else {
            (base.wrapping_add((slot as u64).wrapping_mul(8)), 8)
        }
    }

    /// Not-filled entry (`sp`, `slot`) takes the value its guest entry says now: 0 (a
    /// fault through it is the guest's, P=0, and needs no exit) when P=0 faults skip the
    /// exit, the page shadows a guest table, is in sync (the guest cannot change the
    /// entry without an exit) and the guest entry is not present; the not-filled value
    /// otherwise. Out-of-sync pages never hold 0: the guest may make a not-present entry
    /// present there without an exit or an INVLPG (the CPU caches no not-present entry),
    /// and a 0 would give it a #PF the hardware would not. A filled entry is left alone.
    pub(super) fn note_guest_entry<G: GuestMemory + ?Sized>(
        &mut self,
        mem: &G,
        sp: SpId,
        slot: usize,
    ) {
        if !self.pfec_bypass() || self.is_filled(self.spt_get(sp, slot)) {
            return;
        }
        let (gpa, size) = self.gpte_gpa(sp, slot);
        self.note_gpte(sp, slot, read_gpte(mem, gpa, size));
    }

    /// What a not-filled entry of an indirect leaf page with flags `flags` holds when its
    /// guest entry is `gpte`: 0 (guest-not-present: the CPU's #PF through it skips the
    /// exit) only while the bypass is in force, in an in-sync page, for a guest entry with
    /// P=0; the not-filled value otherwise.
    fn unfilled_value(&self, flags: u8, gpte: u64) -> u64 {
        if self.pfec_bypass() && flags & SP_UNSYNC == 0 && gpte & PTE_P == 0 {
            0
        } else {
            self.not_filled()
        }
    }

    /// [`Mmu::note_guest_entry`] with the guest entry `gpte` already read.
    fn note_gpte(&mut self, sp: SpId, slot: usize, gpte: u64) {
        if !self.pfec_bypass() {
            return;
        }
        let old = self.spt_get(sp, slot);
        if self.is_filled(old) {
            return;
        }
        // The guest entry first: most entries noted are present (prefetch stops at them),
        // and it needs no record lookup.
        let v = if gpte & PTE_P != 0 || self.role(sp).direct() {
            self.not_filled()
        } else {
            self.unfilled_value(self.sp(sp).flags, gpte)
        };
        if v != old {
            self.spt_set(sp, slot, v);
            if v == 0 {
                self.stats.inc(Counter::GnpEntriesSet);
            }
        }
    }

    /// The entries of a new shadow page: all not filled (a fresh page is zero, which
    /// with the bypass on would send the guest's faults through it straight to the
    /// guest). One pass over the page, as KVM's old `nonpaging_prefetch_page` (a `memset`
    /// with [`super::NOT_FILLED_BYTES`]); which entries are guest-not-present is learnt
    /// later, where the engine reads those guest entries anyway (prefetch, faults, resync
    /// of dropped entries), not by reading the whole guest table here.
    pub(super) fn init_entries(&mut self, sp: SpId) {
        // Every entry, 0s too: the table comes from the spare list unzeroed.
        let nf = self.not_filled();
        if let Some(t) = self.spt(sp) {
            t.fill(nf);
        }
    }

    /// Out-of-sync page `sp` (just marked) gets the not-filled value wherever it held 0
    /// for a not-present guest entry (KVM's old `mmu_convert_notrap`).
    pub(super) fn forget_guest_not_present(&mut self, sp: SpId) {
        let nf = self.not_filled();
        let Some(t) = self.spt(sp) else {
            return;
        };
        if nf == 0 {
            return;
        }
        // 0 to not filled: nothing the TLB may hold changes (neither is cached).
        for slot in 0..512 {
            if t.get(slot) == 0 {
                t.set(slot, nf);
            }
        }
    }

    /// Re-derives leaf entry (`sp`, `slot`) of an indirect level-1 page from the guest
    /// entry: same frame -> new permissions, anything else -> dropped (refaults later).
    /// `view` is `sp`'s ([`Mmu::sp_view`]).
    pub(super) fn sync_entry<G: GuestMemory + ?Sized>(
        &mut self,
        mem: &G,
        sp: SpId,
        view: &SpView,
        slot: usize,
    ) {
        with_format!(view.role.mode(), F => self.sync_entry_fmt::<F, G>(mem, sp, view, slot))
    }

    /// [`Mmu::sync_entry`] for guest entries of format `F` (KVM's `FNAME(sync_spte)`);
    /// `view` is that of `sp`, an indirect level-1 page, read once by the caller (its
    /// tables, role, flags and frame do not change while entries are synced).
    fn sync_entry_fmt<F: Format, G: GuestMemory + ?Sized>(
        &mut self,
        mem: &G,
        sp: SpId,
        view: &SpView,
        slot: usize,
    ) {
        self.work = self.work.wrapping_add(1);
        let (Some(spt), Some(side)) = (view.spt, view.side) else {
            return;
        };
        if !self.is_filled(spt.get(slot)) {
            return;
        }
        let role = view.role;
        let ctx = role.ctx(&self.ctx);
        let gpte = read_gpte_in::<F, G>(mem, view, slot);
        let Some(leaf) = guest_leaf::<F>(role, &ctx, gpte) else {
            self.drop_leaf_in(sp, spt, side, slot);
            // As `note_gpte`, with the guest entry just read: the entry is not filled now.
            let v = self.unfilled_value(view.flags, gpte);
            if v != self.not_filled() {
                spt.set(slot, v);
                self.stats.inc(Counter::GnpEntriesSet);
            }
            return;
        };
        if Side::from_raw(side.get(slot)).gfn() != leaf.gfn {
            self.drop_leaf_in(sp, spt, side, slot);
            return;
        }
        let Some(frame) = mem.frame(leaf.gfn) else {
            self.drop_leaf_in(sp, spt, side, slot);
            return;
        };
        let writable = leaf.perm & ACC_W != 0 && leaf.dirty && !self.gfn_tracked(leaf.gfn);
        self.leaf_set_in(spt, slot, make_spte(frame.hpa, leaf.perm, writable));
    }

    /// Prefetch after a fault on leaf entry (`sp`, `slot`) of level-1 shadow page `sp`:
    /// fills the not-present entries of the aligned group of [`super::Config::prefetch`]
    /// entries around it, in order, stopping at the first one that cannot be filled (as
    /// KVM's `pte_prefetch`).
    pub(super) fn prefetch_around<G: GuestMemory + ?Sized>(
        &mut self,
        mem: &G,
        sp: SpId,
        slot: usize,
    ) {
        let n = usize::from(self.cfg.prefetch);
        if n <= 1 || self.role(sp).level() != 1 {
            return;
        }
        with_format!(self.role(sp).mode(), F => self.prefetch_group::<F, G>(mem, sp, slot, n))
    }

    /// [`Mmu::prefetch_around`] for guest entries of format `F`, in groups of `n`.
    fn prefetch_group<F: Format, G: GuestMemory + ?Sized>(
        &mut self,
        mem: &G,
        sp: SpId,
        slot: usize,
        n: usize,
    ) {
        // What every entry of the group needs of the page, with one record lookup (the
        // group's entries are leaf entries: filling them changes no record of `sp`).
        let view = self.sp_view(sp);
        let Some(spt) = view.spt else {
            return;
        };
        // n is a power of two at most 512 (Mmu::new): the group is inside the table.
        let first = slot & !(n.saturating_sub(1));
        for s in first..first.saturating_add(n).min(512) {
            if s == slot || self.is_filled(spt.get(s)) {
                continue;
            }
            if !self.prefetch_unfilled::<F, G>(mem, sp, &view, s) {
                break;
            }
        }
    }

    /// [`Mmu::prefetch_entry_fmt`] for entry `slot` of level-1 page `sp`, known not
    /// filled, with `view` the page's [`Mmu::sp_view`]: the same entries, reverse map,
    /// counters and work steps, with the page's record read once per group instead of
    /// several times per entry.
    fn prefetch_unfilled<F: Format, G: GuestMemory + ?Sized>(
        &mut self,
        mem: &G,
        sp: SpId,
        view: &SpView,
        slot: usize,
    ) -> bool {
        let (Some(spt), Some(side)) = (view.spt, view.side) else {
            return false;
        };
        // A reverse-map entry may take a frame record and a list block.
        if self.pool.available() < 2 || view.role.level() != 1 {
            return false;
        }
        let role = view.role;
        let leaf = if role.direct() {
            GuestLeaf {
                gfn: view.gfn.wrapping_add(slot as u64 & 511),
                perm: role.access(),
                dirty: true,
            }
        } else {
            let ctx = role.ctx(&self.ctx);
            // As `read_gpte_fmt`: gfn < 2^40 and the offset is below 8 KiB.
            let off = F::gpte_index(1, role.quadrant(), slot).wrapping_mul(F::PTE_BYTES);
            let gpte = read_gpte(mem, (view.gfn << 12).wrapping_add(off), F::PTE_BYTES);
            match guest_leaf::<F>(role, &ctx, gpte) {
                Some(l) => l,
                None => {
                    // As `note_gpte` on this entry, with the guest entry just read.
                    let value = self.unfilled_value(view.flags, gpte);
                    if value != spt.get(slot) {
                        // Not filled before and after: nothing for the TLB to forget.
                        spt.set(slot, value);
                        if value == 0 {
                            self.stats.inc(Counter::GnpEntriesSet);
                        }
                    }
                    return false;
                }
            }
        };
        let Some(frame) = mem.frame(leaf.gfn) else {
            return false;
        };
        // One lookup of the frame's record for both questions below.
        let (rmap_full, tracked) = match self.gfn_lookup(leaf.gfn) {
            Some(g) => {
                let r = self.gr(g);
                (r.rmap_len >= RMAP_MAX, r.n_indirect > 0 && r.unsync == 0)
            }
            None => (false, false),
        };
        // One more mapping of a frame whose reverse map is full would drop all of them,
        // the faulting entry's too.
        if rmap_full {
            return false;
        }
        let writable = leaf.perm & ACC_W != 0 && leaf.dirty && !tracked;
        // `set_leaf` on an entry that is not filled: nothing to drop (its `drop_spte`
        // counts a step), nothing the TLB may hold (the CPU caches no entry that is not
        // filled).
        self.work = self.work.wrapping_add(1);
        side.set(slot, Side::leaf(leaf.gfn).raw());
        spt.set(slot, make_spte(frame.hpa, leaf.perm, writable));
        self.rmap_add(leaf.gfn, SRef::new(sp, slot));
        self.stats.inc(Counter::Prefetches);
        self.work = self.work.wrapping_add(1);
        true
    }

    /// Fills the not-present leaf entry (`sp`, `slot`) of level-1 shadow page `sp` from
    /// what the guest maps there, if the guest lets a TLB cache that translation without
    /// any A/D update: for a guest table, the entry is present, accessed and has no
    /// reserved bit, and the page is writable only if the entry is dirty (and the frame
    /// is not a shadowed page table); for a guest large page split into 4 KiB entries
    /// (or paging off), the frame at that offset, with the access the split page's role
    /// carries (writable only if the large page was dirty). The frame must be backed.
    /// Needs no memory: false (nothing done) when the records a reverse-map entry may
    /// need are not there, or when the frame's reverse map is full.
    pub(super) fn prefetch_entry<G: GuestMemory + ?Sized>(
        &mut self,
        mem: &G,
        sp: SpId,
        slot: usize,
    ) -> bool {
        with_format!(self.role(sp).mode(), F => self.prefetch_entry_fmt::<F, G>(mem, sp, slot))
    }

    /// [`Mmu::prefetch_entry`] for guest entries of format `F` (KVM's `FNAME(prefetch_gpte)`).
    fn prefetch_entry_fmt<F: Format, G: GuestMemory + ?Sized>(
        &mut self,
        mem: &G,
        sp: SpId,
        slot: usize,
    ) -> bool {
        // A reverse-map entry may take a frame record and a list block.
        if self.pool.available() < 2 || self.is_filled(self.spt_get(sp, slot)) {
            return false;
        }
        let role = self.role(sp);
        if role.level() != 1 {
            return false;
        }
        let leaf = if role.direct() {
            GuestLeaf {
                gfn: self.sp(sp).gfn.wrapping_add(slot as u64 & 511),
                perm: role.access(),
                dirty: true,
            }
        } else {
            let ctx = role.ctx(&self.ctx);
            let gpte = self.read_gpte_fmt::<F, G>(mem, sp, slot);
            match guest_leaf::<F>(role, &ctx, gpte) {
                Some(l) => l,
                None => {
                    self.note_gpte(sp, slot, gpte);
                    return false;
                }
            }
        };
        let Some(frame) = mem.frame(leaf.gfn) else {
            return false;
        };
        // One more mapping of a frame whose reverse map is full would drop all of them,
        // the faulting entry's too.
        if self
            .gfn_lookup(leaf.gfn)
            .is_some_and(|g| self.gr(g).rmap_len >= RMAP_MAX)
        {
            return false;
        }
        let writable = leaf.perm & ACC_W != 0 && leaf.dirty && !self.gfn_tracked(leaf.gfn);
        self.set_leaf(
            sp,
            slot,
            leaf.gfn,
            make_spte(frame.hpa, leaf.perm, writable),
        );
        self.stats.inc(Counter::Prefetches);
        self.work = self.work.wrapping_add(1);
        true
    }

    /// Re-derives every filled entry of an out-of-sync page (without changing its state),
    /// or of a page just back in sync.
    pub(super) fn sync_sp_entries<G: GuestMemory + ?Sized>(&mut self, mem: &G, sp: SpId) {
        let view = self.sp_view(sp);
        if view.role.level() != 1 || view.role.direct() {
            return;
        }
        with_format!(view.role.mode(), F => self.sync_leaf_page::<F, G>(mem, sp))
    }

    /// [`Mmu::sync_sp_entries`] for level-1 page `sp` of format `F`: every entry, with the
    /// page's record read once (syncing entries frees no page and changes no field of it).
    fn sync_leaf_page<F: Format, G: GuestMemory + ?Sized>(&mut self, mem: &G, sp: SpId) {
        let view = self.sp_view(sp);
        for slot in 0..512 {
            self.sync_entry_fmt::<F, G>(mem, sp, &view, slot);
        }
    }

    /// Brings an out-of-sync frame back in sync and write-protects it again.
    pub(super) fn resync_gfn<G: GuestMemory + ?Sized>(&mut self, mem: &G, gfn: u64) {
        let Some(g) = self.gfn_lookup(gfn) else {
            return;
        };
        if self.gr(g).unsync == 0 {
            return;
        }
        // Back in sync first, so that entries mapping the frame itself come out read-only.
        self.frames.unsync_unlink(&mut self.pool, g);
        let mut sp = self.gr(g).sps;
        while let Some(id) = sp {
            let next = self.sp(id).gfn_next;
            if self.sp(id).flags & SP_UNSYNC != 0 {
                self.sp_mut(id).flags &= !SP_UNSYNC;
                self.sync_sp_entries(mem, id);
            }
            sp = next;
        }
        self.write_protect_gfn(gfn);
        self.stats.inc(Counter::Resync);
    }

    /// Resyncs every out-of-sync frame (a guest TLB flush): at most
    /// [`super::frames::MAX_UNSYNC`].
    pub(super) fn resync_all<G: GuestMemory + ?Sized>(&mut self, mem: &G) {
        while let Some(g) = self.frames.unsync_head() {
            let gfn = self.gr(g).gfn;
            self.resync_gfn(mem, gfn);
            if self.frames.unsync_head() == Some(g) {
                // Defensive: never loop forever.
                self.frames.unsync_unlink(&mut self.pool, g);
            }
        }
    }
}
