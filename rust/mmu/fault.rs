// SPDX-License-Identifier: GPL-2.0

//! The #PF path: walk the guest's tables, build the shadow path down to the leaf, and
//! decide between fixing the fault, injecting it, MMIO and emulating the write.

use super::bits::{PFERR_P, PTE_A, PTE_D, PTE_P};
use super::mem::{read_gpte, GuestMemory, PageSource};
use super::roles::Role;
use super::roots::{sidx, ROOT_PAGES, ROOT_RECS};
use super::sp::SP_NEW_UNFILLABLE;
use super::stats::Counter;
use super::sync::make_spte;
use super::walk::{self, with_format, Access, Format, PageFault, Walk};
use super::walk::{ACC_ALL, ACC_U, ACC_W, ACC_X};
use super::{EmuSite, Mmu, MmuError, PfOutcome};

/// Pages a #PF may need: up to 3 new shadow pages (table + side page each).
pub(super) const FAULT_PAGES: usize = 8;
/// Records a #PF may need: per new shadow page its record, a frame record and a parent
/// list block; plus a frame record and a reverse-map block for the leaf.
pub(super) const FAULT_RECS: u32 = 16;

impl Mmu {
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
        if self.roots.current().is_none() {
            self.topup(src, ROOT_PAGES, ROOT_RECS, 1)?;
            self.switch_root(src, mem);
        }
        self.make_room(src, 4)?;
        let access = Access::from_error_code(error_code, cpl, ac);
        with_format!(self.ctx.mode, F => self.page_fault_fmt::<F, G>(mem, gva, access))
    }

    /// [`Mmu::page_fault`] once the memory is there, for a guest whose tables have format
    /// `F` (KVM's `FNAME(page_fault)`).
    fn page_fault_fmt<F: Format, G: GuestMemory + ?Sized>(
        &mut self,
        mem: &G,
        gva: u64,
        access: Access,
    ) -> Result<PfOutcome, MmuError> {
        let ctx = self.ctx;
        let gva = ctx.canon(gva);
        let mut w = match F::walk(&ctx, mem, gva, access, false) {
            Ok(w) => w,
            Err(pf) => {
                self.stats.inc(Counter::GuestFaultsInjected);
                if pf.error_code & PFERR_P == 0 {
                    self.stats.inc(Counter::GnpFaultsExited);
                    self.note_not_present_path(mem, gva);
                }
                return Ok(PfOutcome::Inject(pf));
            }
        };
        let gfn = w.gpa >> 12;
        let Some(frame) = mem.frame(gfn) else {
            if !F::apply_ad(mem, &mut w, access) {
                return Ok(PfOutcome::Fixed);
            }
            self.stats.inc(Counter::MmioFaults);
            return Ok(PfOutcome::Mmio { gpa: w.gpa });
        };
        let write = access.write && !access.fetch;
        let dirty_after = w.dirty || write;
        // Without paging the shadow maps guest-physical memory directly from the top.
        let glevel = if F::PAGING { w.level } else { 5 };

        // Leaf permissions.
        let mut perm = w.perm;
        let mut writable = perm & ACC_W != 0 && dirty_after;
        if write && !access.user && !ctx.wp && perm & ACC_W == 0 {
            // CR0.WP=0 lets a supervisor write through a read-only entry; the CPU runs with
            // WP=1, so map it writable and supervisor-only (KVM's trick). Under SMAP that
            // would hide later SMAP faults on the page: emulate instead.
            if perm & ACC_U != 0 && ctx.smap {
                if !F::apply_ad(mem, &mut w, access) {
                    return Ok(PfOutcome::Fixed);
                }
                self.stats.inc(Counter::PtWriteEmulations);
                self.emu_site = EmuSite {
                    gva,
                    gpa: w.gpa,
                    access,
                    page_table: false,
                };
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
                let span = 1u64 << (9u32.saturating_mul(u32::from(cl)) & 63);
                let leaf_acc = if dirty_after { w.perm } else { w.perm & !ACC_W };
                let cgfn = (w.gpa >> 12) & !span.saturating_sub(1);
                (cgfn, base.with(cl, true, 0, leaf_acc))
            } else {
                let q = F::quadrant(gva, cl);
                let acc = w.acc_above.get(cl as usize).copied().unwrap_or(ACC_ALL);
                let tg = w.table_gfn.get(cl as usize).copied().unwrap_or(0);
                (tg, base.with(cl, false, q, acc))
            };
            // One record lookup for the entry and its child, one for the child's identity.
            let view = self.sp_view(sp);
            let mut child = None;
            if self.is_filled(view.spte(slot)) {
                let c = view.child(slot);
                let matches = c.is_some_and(|c| {
                    let rec = self.sp(c);
                    rec.gfn == cgfn && rec.role == crole
                });
                if matches {
                    child = c;
                } else {
                    self.drop_spte(sp, slot);
                }
            }
            let child = match child {
                Some(c) => c,
                None => {
                    let Some(c) = self.sp_get(mem, cgfn, crole) else {
                        return Err(MmuError::NeedMemory);
                    };
                    self.link(sp, slot, c);
                    if cl >= 2 {
                        self.linked_existing_table(mem, c);
                    }
                    changed = true;
                    c
                }
            };
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
                if self.can_unsync(gfn) && !self.emulates_new_entry::<F, G>(mem, w.gpa) {
                    unsync = true;
                } else {
                    writable = false;
                    emulate = true;
                }
            } else {
                writable = false;
            }
        }
        let spte = make_spte(frame.hpa, perm, writable);
        let slot = sidx(gva, 1);
        let old = self.spt_get(sp, slot);
        let same = self.is_filled(old) && (old & !(PTE_A | PTE_D)) == (spte & !(PTE_A | PTE_D));
        if !changed && same && !emulate && !unsync {
            // The shadow already allowed this access, so the CPU faulted for a reason it
            // knows and we do not: an implicit supervisor access under SMAP (at CPL < 3
            // with EFLAGS.AC=1). Anything else is a stale fault.
            if !access.user && !access.fetch && ctx.smap && w.perm & ACC_U != 0 && F::PAGING {
                let pf = PageFault {
                    error_code: ctx.error_code(access, true, false),
                    cr2: gva,
                };
                self.stats.inc(Counter::GuestFaultsInjected);
                return Ok(PfOutcome::Inject(pf));
            }
            self.stats.inc(Counter::SpuriousFaults);
            return Ok(PfOutcome::Fixed);
        }
        if !F::apply_ad(mem, &mut w, access) {
            // An entry of the walk changed under us: the CPU must fault again for the
            // walk to be redone. The path linked above may lead to this slot filled for
            // another path, which would let the access through with A/D left unset.
            self.drop_spte(sp, slot);
            return Ok(PfOutcome::Fixed);
        }
        if unsync {
            self.mark_unsync(mem, gfn);
        }
        self.set_leaf(sp, slot, gfn, spte);
        self.prefetch_around(mem, sp, slot);
        if emulate {
            self.stats.inc(Counter::PtWriteEmulations);
            self.emu_site = EmuSite {
                gva,
                gpa: w.gpa,
                access,
                page_table: true,
            };
            return Ok(PfOutcome::EmulateWrite { gpa: w.gpa });
        }
        self.stats.inc(Counter::HiddenFaultsFixed);
        Ok(PfOutcome::Fixed)
    }

    /// Whether a guest write at `gpa` into a leaf table the engine could let go out of
    /// sync is emulated instead, so that the table stays in sync: when P=0 faults skip the
    /// exit and the entry written (format `F`) is not present now. Such a write is
    /// usually the guest mapping a page it faulted on; emulated, the new entry is filled
    /// from it ([`Mmu::guest_wrote`]) and the table's other not-present entries stay 0,
    /// so neither the access that follows nor the guest's next not-present fault in the
    /// table exits. In an out-of-sync table both would (its not-present entries cannot be
    /// 0). A write over a present entry (the guest changing or removing a mapping,
    /// usually several) still lets the table go out of sync: later writes need no exit.
    ///
    /// A table whose new entries could not be filled before ([`SP_NEW_UNFILLABLE`]) goes
    /// out of sync as without the bypass: there the emulation would only add its cost.
    fn emulates_new_entry<F: Format, G: GuestMemory + ?Sized>(&self, mem: &G, gpa: u64) -> bool {
        if !self.pfec_bypass() || read_gpte(mem, gpa, F::PTE_BYTES) & PTE_P != 0 {
            return false;
        }
        let Some(g) = self.gfn_lookup(gpa >> 12) else {
            return false;
        };
        let mut sp = self.gr(g).sps;
        while let Some(id) = sp {
            if self.sp(id).flags & SP_NEW_UNFILLABLE != 0 {
                return false;
            }
            sp = self.sp(id).gfn_next;
        }
        true
    }

    /// The guest's walk for `gva` just failed with P=0: follows the shadow path for `gva`
    /// down to its first entry that is not filled and gives that entry the value its
    /// guest entry says ([`Mmu::note_guest_entry`]): 0 if that is the not-present guest
    /// entry, so the guest's next fault there needs no exit. Needs no memory.
    fn note_not_present_path<G: GuestMemory + ?Sized>(&mut self, mem: &G, gva: u64) {
        if !self.pfec_bypass() {
            return;
        }
        let Some((mut sp, mut level)) = self.path_start(gva) else {
            return;
        };
        loop {
            let slot = sidx(gva, level);
            if !self.is_filled(self.spt_get(sp, slot)) {
                self.note_guest_entry(mem, sp, slot);
                return;
            }
            if level <= 1 {
                return;
            }
            let Some(child) = self.child(sp, slot) else {
                return;
            };
            sp = child;
            level = level.saturating_sub(1);
        }
    }

    /// The guest's translation of `gva` without side effects (tests, debugging).
    pub fn debug_walk<G: GuestMemory + ?Sized>(
        &self,
        mem: &G,
        gva: u64,
        access: Access,
    ) -> Result<Walk, PageFault> {
        walk::walk(&self.ctx, mem, gva, access, false)
    }
}
