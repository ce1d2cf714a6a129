// SPDX-License-Identifier: GPL-2.0

//! Keeping leaf shadow entries in step with the guest's tables: building a leaf entry,
//! re-deriving one from its guest entry, and bringing out-of-sync frames back in sync.

use super::bits::{bits, PTE_A, PTE_D, PTE_NX, PTE_P, PTE_U, PTE_W};
use super::mem::{read_gpte, GuestMemory};
use super::sp::{SpId, SPTE_ADDR, SP_UNSYNC};
use super::stats::Counter;
use super::walk::{self, Format, GuestMode, ACC_U, ACC_W, ACC_X};
use super::Mmu;

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

impl Mmu {
    /// Guest-physical address and size of the guest entry behind leaf slot `slot` of
    /// indirect level-1 page `sp`.
    fn gpte_gpa(&self, sp: SpId, slot: usize) -> (u64, u64) {
        let role = self.role(sp);
        let base = self.sp(sp).gfn << 12;
        if role.gpte4() {
            // gfn < 2^40 and the offsets are below 8 KiB: nothing wraps; wrapping keeps
            // the guest-physical arithmetic total.
            let gi = (role.quadrant() as u64)
                .wrapping_mul(512)
                .wrapping_add(slot as u64);
            (base.wrapping_add(gi.wrapping_mul(4)), 4)
        } else {
            (base.wrapping_add((slot as u64).wrapping_mul(8)), 8)
        }
    }

    /// Re-derives leaf entry (`sp`, `slot`) of an indirect level-1 page from the guest
    /// entry: same frame -> new permissions, anything else -> dropped (refaults later).
    pub(super) fn sync_entry<G: GuestMemory + ?Sized>(&mut self, mem: &G, sp: SpId, slot: usize) {
        self.work = self.work.wrapping_add(1);
        let old = self.spt_get(sp, slot);
        if old & PTE_P == 0 {
            return;
        }
        let role = self.role(sp);
        let ctx = role.ctx(&self.ctx);
        let (gpa, size) = self.gpte_gpa(sp, slot);
        let gpte = read_gpte(mem, gpa, size);
        let ok_present = gpte & PTE_P != 0 && gpte & PTE_A != 0;
        let rsvd = match role.mode() {
            GuestMode::Bits32 => walk::Bits32::rsvd(&ctx, gpte, 1),
            GuestMode::Pae => walk::Pae::rsvd(&ctx, gpte, 1),
            _ => walk::Long4::rsvd(&ctx, gpte, 1),
        };
        let gfn = if size == 4 {
            (gpte & 0xffff_f000) >> 12
        } else {
            (gpte & bits(51, 12)) >> 12
        };
        if !ok_present || rsvd || self.side_get(sp, slot).gfn() != gfn {
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
        self.spt_set(sp, slot, make_spte(frame.hpa, perm, writable));
    }

    /// Re-derives every entry of an out-of-sync page (without changing its state).
    pub(super) fn sync_sp_entries<G: GuestMemory + ?Sized>(&mut self, mem: &G, sp: SpId) {
        if self.role(sp).level() != 1 || self.role(sp).direct() {
            return;
        }
        for slot in 0..512 {
            self.sync_entry(mem, sp, slot);
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
