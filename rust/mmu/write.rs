// SPDX-License-Identifier: GPL-2.0

//! Guest writes to shadowed page tables: the writes the caller emulated after
//! [`super::PfOutcome::EmulateWrite`], flood detection, and the unprotect fallback for an
//! instruction that cannot be emulated.

use super::mem::{GuestMemory, PageSource};
use super::sp::{SpId, SP_NEW_UNFILLABLE};
use super::stats::Counter;
use super::walk::{self, with_format, Format};
use super::Mmu;

impl Mmu {
    /// Tells the engine that the guest stored `len` bytes at `gpa` (the caller emulated the
    /// write after [`super::PfOutcome::EmulateWrite`]); `mem` holds the bytes written.
    /// Shadow entries derived from the bytes written are dropped (and, with the
    /// guest-not-present bypass, made guest-not-present when the new guest entry is not
    /// present); frames written too often without being used as page tables are
    /// unshadowed. Writes must not cross a 4 KiB boundary (split them). Needs no memory.
    pub fn guest_wrote<P: PageSource + ?Sized, G: GuestMemory + ?Sized>(
        &mut self,
        src: &mut P,
        mem: &G,
        gpa: u64,
        len: usize,
    ) {
        // An instruction was emulated: the next unprotect starts a new history.
        self.retried = [(0, u64::MAX); 2];
        let gfn = gpa >> 12;
        let Some(g) = self.gfn_lookup(gfn) else {
            return;
        };
        if self.gr(g).n_indirect == 0 || len == 0 {
            return;
        }
        self.stats.inc(Counter::PtWritesHandled);
        let off = gpa & 0xfff;
        let end = off.saturating_add(len as u64).min(4096);
        let mut flooded = false;
        let mut sp = self.gr(g).sps;
        while let Some(id) = sp {
            let next = self.sp(id).gfn_next;
            let role = self.role(id);
            if role.direct() {
                sp = next;
                continue;
            }
            let wc = self.sp(id).write_count.saturating_add(1);
            self.sp_mut(id).write_count = wc;
            if wc >= self.cfg.flood_threshold && self.sp(id).root_count > 0 {
                // A table of a cached (not current) address space being overwritten:
                // forget that address space so the table can go.
                self.uncache_roots_pinning(src, id);
            }
            if wc >= self.cfg.flood_threshold && self.sp(id).root_count == 0 {
                self.zap_sp(src, id);
                flooded = true;
                sp = next;
                continue;
            }
            let filled =
                with_format!(role.mode(), F => self.drop_written::<F, G>(mem, id, off, end));
            if filled {
                // The guest mapped a page in a table it uses (the write KVM's flood
                // detection skips for leaf tables, which it lets go out of sync): not a
                // sign the frame stopped being a page table.
                self.sp_mut(id).write_count = 0;
            }
            sp = next;
        }
        if flooded && !self.is_shadowed(gfn) {
            self.stats.inc(Counter::FloodUnshadows);
        }
    }

    /// Drops the entries of indirect shadow page `sp` derived from bytes `off..end` of
    /// the guest table it shadows, whose entries have format `F`. While the
    /// guest-not-present bypass is in force, a leaf entry is then filled from the new guest entry
    /// when that is usable without an A/D update (as KVM's `mmu_pte_write_new_pte` did),
    /// and otherwise made 0 or not filled from it; returns whether one was filled.
    fn drop_written<F: Format, G: GuestMemory + ?Sized>(
        &mut self,
        mem: &G,
        sp: SpId,
        off: u64,
        end: u64,
    ) -> bool {
        let role = self.role(sp);
        // end > off (the caller writes at least one byte); entries are 4 or 8 bytes.
        let (Some(first), Some(last)) = (
            off.checked_div(F::PTE_BYTES),
            end.saturating_sub(1).checked_div(F::PTE_BYTES),
        ) else {
            return false;
        };
        // Only while the bypass is in force: then a noted entry left not filled is one
        // whose new guest entry is present but unusable (a not-present one becomes 0).
        let fill = role.level() == 1 && self.pfec_bypass();
        let mut filled = false;
        for gi in first..=last {
            for slot in F::shadow_slots(role.level(), role.quadrant(), gi) {
                self.drop_spte(sp, slot);
                // prefetch_entry notes a guest entry it cannot use.
                if fill && self.prefetch_entry(mem, sp, slot) {
                    filled = true;
                    continue;
                }
                self.note_guest_entry(mem, sp, slot);
                // Not filled (0 would mean guest-not-present): present but unusable.
                if fill && self.spt_get(sp, slot) == self.not_filled() {
                    self.sp_mut(sp).flags |= SP_NEW_UNFILLABLE;
                }
            }
        }
        filled
    }

    /// The fallback for a [`super::PfOutcome::EmulateWrite`] whose instruction (at `rip`) cannot
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
        let Some(g) = self.gfn_lookup(gfn) else {
            return false;
        };
        if self.gr(g).n_indirect == 0 {
            return false;
        }
        // Pinned by the current root?
        let mut sp = self.gr(g).sps;
        while let Some(id) = sp {
            self.work = self.work.wrapping_add(1);
            if !self.role(id).direct() && self.pinned_by_current(id) {
                return false;
            }
            sp = self.sp(id).gfn_next;
        }
        // On the store's own translation path?
        if site.gpa >> 12 == gfn {
            if let Ok(w) = walk::walk(&self.ctx, mem, site.gva, site.access, false) {
                let top = with_format!(self.ctx.mode, F => F::TOP);
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
        while let Some(id) = sp {
            let next = self.sp(id).gfn_next;
            if !self.role(id).direct() {
                if self.sp(id).root_count > 0 {
                    self.uncache_roots_pinning(src, id);
                }
                self.zap_sp(src, id);
            }
            sp = next;
        }
        self.stats.inc(Counter::Unprotects);
        !self.is_shadowed(gfn)
    }
}
