// SPDX-License-Identifier: GPL-2.0

//! The guest page-table walker: one generic walk over the guest paging formats
//! (32-bit, PAE, 4-level), like KVM's `paging_tmpl.h`, with the x86 rules of SDM vol. 3A
//! chapter 4: present, reserved bits (incl. PSE-36 and MAXPHYADDR), R/W with CR0.WP, U/S,
//! NX with EFER.NXE, SMEP, SMAP with EFLAGS.AC and implicit supervisor accesses, the #PF
//! error code, and accessed/dirty updates with locked compare-exchange.
//!
//! A/D rule (same as KVM's walker): the A bits of every entry used and, for a write, the
//! D bit of the leaf are set only when the access is allowed; a faulting access leaves
//! the guest tables unchanged.

use super::bits::*;
use super::mem::{cmpxchg_gpte, read_gpte, GuestMemory};
use core::ops::Range;

/// The guest's paging mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestMode {
    /// CR0.PG=0: linear = physical.
    Off,
    /// 32-bit 2-level paging (4-byte entries, 4 MiB pages with CR4.PSE).
    Bits32,
    /// PAE paging (PDPTE registers, 8-byte entries, 2 MiB pages).
    Pae,
    /// 4-level paging (IA-32e mode).
    Long4,
}

impl GuestMode {
    /// Numeric code used in shadow-page roles.
    pub const fn code(self) -> u32 {
        match self {
            GuestMode::Off => 0,
            GuestMode::Bits32 => 1,
            GuestMode::Pae => 2,
            GuestMode::Long4 => 3,
        }
    }
}

/// One guest memory access, as the permission rules see it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Access {
    /// A write (for a locked read-modify-write, pass a write).
    pub write: bool,
    /// An instruction fetch.
    pub fetch: bool,
    /// A user-mode access: an explicit access at CPL 3.
    pub user: bool,
    /// An implicit supervisor-mode access (descriptor tables, TSS, ...), at any CPL.
    pub implicit: bool,
    /// EFLAGS.AC (matters for explicit supervisor data accesses under SMAP).
    pub ac: bool,
}

impl Access {
    /// A supervisor read (no flags).
    pub const NONE: Access = Access {
        write: false,
        fetch: false,
        user: false,
        implicit: false,
        ac: false,
    };

    /// The access a hardware #PF error code describes (U set means CPL 3, explicit).
    /// A fault with U clear at CPL 3 was an implicit supervisor access.
    pub fn from_error_code(error_code: u32, cpl: u8, ac: bool) -> Access {
        let user = error_code & PFERR_U != 0;
        Access {
            write: error_code & PFERR_W != 0,
            fetch: error_code & PFERR_ID != 0,
            user,
            implicit: !user && cpl == 3,
            ac,
        }
    }
}

/// A page fault that belongs to the guest: inject #PF with this error code, CR2 = `cr2`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageFault {
    /// The #PF error code (P, W, U, RSVD, I/D).
    pub error_code: u32,
    /// The faulting linear address.
    pub cr2: u64,
}

/// Permission bit: writable.
pub const ACC_W: u8 = 1;
/// Permission bit: user-accessible.
pub const ACC_U: u8 = 2;
/// Permission bit: executable.
pub const ACC_X: u8 = 4;
/// All permissions.
pub const ACC_ALL: u8 = ACC_W | ACC_U | ACC_X;

/// The guest state a walk depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PagingCtx {
    /// Paging mode.
    pub mode: GuestMode,
    /// Guest CR3.
    pub cr3: u64,
    /// PAE PDPTE registers (loaded at CR3 write / PAE paging enable).
    pub pdptes: [u64; 4],
    /// CR0.WP.
    pub wp: bool,
    /// EFER.NXE.
    pub nxe: bool,
    /// CR4.SMEP.
    pub smep: bool,
    /// CR4.SMAP.
    pub smap: bool,
    /// CR4.PSE.
    pub pse: bool,
    /// Guest MAXPHYADDR (CPUID 0x80000008 EAX[7:0]), 32..=52.
    pub maxphyaddr: u8,
    /// 1 GiB pages supported (CPUID 0x80000001 EDX[26]).
    pub gb_pages: bool,
}

impl PagingCtx {
    /// A context with paging off.
    pub const fn off(maxphyaddr: u8) -> Self {
        PagingCtx {
            mode: GuestMode::Off,
            cr3: 0,
            pdptes: [0; 4],
            wp: false,
            nxe: false,
            smep: false,
            smap: false,
            pse: false,
            maxphyaddr,
            gb_pages: true,
        }
    }

    /// The PAE PDPTE that maps `gva` (selected by bits 31:30).
    pub fn pdpte_for(&self, gva: u64) -> u64 {
        let [p0, p1, p2, p3] = self.pdptes;
        match (gva >> 30) & 3 {
            0 => p0,
            1 => p1,
            2 => p2,
            _ => p3,
        }
    }

    fn m(&self) -> u32 {
        u32::from(self.maxphyaddr).clamp(32, 52)
    }

    /// Reserved bits above MAXPHYADDR in 8-byte entries of 4-level paging (bits 51:M).
    fn high_rsvd_long(&self) -> u64 {
        bits(51, self.m())
    }

    /// Reserved bits above MAXPHYADDR in PAE entries (bits 62:M).
    fn high_rsvd_pae(&self) -> u64 {
        bits(62, self.m())
    }

    fn nx_rsvd(&self) -> u64 {
        if self.nxe {
            0
        } else {
            PTE_NX
        }
    }

    /// Reserved bits of a PAE PDPTE (checked when the PDPTEs are loaded).
    pub fn pdpte_rsvd(&self) -> u64 {
        bits(2, 1) | bits(8, 5) | bits(63, self.m())
    }

    /// Whether a translation fault sets the I/D bit for fetches.
    fn id_reported(&self) -> bool {
        self.smep || (self.mode != GuestMode::Bits32 && self.nxe)
    }

    /// The #PF error code for `access`.
    pub fn error_code(&self, access: Access, present: bool, rsvd: bool) -> u32 {
        let mut e = 0;
        if present || rsvd {
            e |= PFERR_P;
        }
        if rsvd {
            e |= PFERR_RSVD;
        }
        if access.write && !access.fetch {
            e |= PFERR_W;
        }
        if access.user {
            e |= PFERR_U;
        }
        if access.fetch && self.id_reported() {
            e |= PFERR_ID;
        }
        e
    }

    /// Whether the effective permissions `perm` allow `access` (SDM 4.6).
    pub fn allows(&self, perm: u8, access: Access) -> bool {
        let user_page = perm & ACC_U != 0;
        let w = perm & ACC_W != 0;
        let x = perm & ACC_X != 0;
        let smap_blocks = user_page && self.smap && (access.implicit || !access.ac);
        if access.fetch {
            if access.user {
                user_page && x
            } else {
                x && !(self.smep && user_page)
            }
        } else if access.write {
            if access.user {
                user_page && w
            } else {
                !smap_blocks && (w || !self.wp)
            }
        } else if access.user {
            user_page
        } else {
            !smap_blocks
        }
    }

    /// The linear address as the mode forms it: 32 bits outside IA-32e mode, all 64 bits
    /// in it (the walk uses bits 47:0; a #PF reports the whole address in CR2).
    pub fn canon(&self, gva: u64) -> u64 {
        match self.mode {
            GuestMode::Long4 => gva,
            _ => gva & 0xffff_ffff,
        }
    }
}

/// Everything a successful walk learned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Walk {
    /// Guest-physical address of the accessed byte.
    pub gpa: u64,
    /// Leaf level: 1 = 4 KiB, 2 = 2/4 MiB, 3 = 1 GiB.
    pub level: u8,
    /// Effective permissions (AND over all levels).
    pub perm: u8,
    /// Leaf D bit after the walk's own update.
    pub dirty: bool,
    /// Guest table frame read at each level (index = level; PAE level 3 is the register).
    pub table_gfn: [u64; 5],
    /// AND of the permissions of the entries above each level (index = level).
    pub acc_above: [u8; 5],
    /// Entry value read at each level.
    pub pte: [u64; 5],
    /// Guest-physical address of the entry at each level.
    pub pte_gpa: [u64; 5],
}

/// A guest paging format (KVM's `paging_tmpl.h` as a trait). The walk, the #PF path,
/// sync, prefetch and page-table-write handling are generic over it; they choose the
/// format once, at their entry point, with [`with_format!`].
pub trait Format: Sized {
    /// Bytes per entry.
    const PTE_BYTES: u64;
    /// Level of the first table read from memory (0: none, paging is off).
    const TOP: u8;
    /// Whether linear addresses are translated through guest tables at all.
    const PAGING: bool = true;
    /// Index of `gva` in a table of `level`.
    fn index(gva: u64, level: u8) -> u64;
    /// Reserved bits set in a present entry.
    fn rsvd(ctx: &PagingCtx, pte: u64, level: u8) -> bool;
    /// Whether a present entry at `level` maps a page (level 1 always does).
    fn leaf(ctx: &PagingCtx, pte: u64, level: u8) -> bool;
    /// Guest-physical address of the table an entry points to.
    fn next_table(pte: u64) -> u64;
    /// Guest-physical address of `gva` through leaf `pte` at `level`.
    fn page_gpa(pte: u64, level: u8, gva: u64) -> u64;
    /// Guest-physical address of the table at level [`Format::TOP`] for `gva`, from CR3
    /// (what a walk records of a register level goes into `w`); `None` if a not-present
    /// register entry ends the walk there.
    fn top_table(ctx: &PagingCtx, _gva: u64, _w: &mut Walk) -> Option<u64> {
        Some(ctx.cr3 & bits(51, 12) & !ctx.high_rsvd_long())
    }
    /// The guest frame a level-1 entry maps.
    fn leaf_gfn(pte: u64) -> u64 {
        Self::next_table(pte) >> 12
    }
    /// Which part of its guest table a shadow page of `level` that translates `gva`
    /// shadows: a guest table with more entries than a shadow page (512) is shadowed by
    /// several pages, told apart by this quadrant in their role (as in KVM).
    fn quadrant(_gva: u64, _level: u8) -> u32 {
        0
    }
    /// Index in the guest table of the entry behind slot `slot` of a shadow page of
    /// `level` and `quadrant`.
    fn gpte_index(_level: u8, _quadrant: u32, slot: usize) -> u64 {
        slot as u64
    }
    /// The slots of a shadow page of `level` and `quadrant` that are derived from entry
    /// `gi` of the guest table it shadows (empty if another quadrant holds them).
    fn shadow_slots(_level: u8, _quadrant: u32, gi: u64) -> Range<usize> {
        // gi < 512 for 8-byte entries in a 4 KiB table: no overflow.
        let s = (gi & 511) as usize;
        s..s.saturating_add(1)
    }
    /// Permissions one entry grants.
    fn perm(ctx: &PagingCtx, pte: u64) -> u8 {
        let mut p = ACC_X;
        if pte & PTE_W != 0 {
            p |= ACC_W;
        }
        if pte & PTE_U != 0 {
            p |= ACC_U;
        }
        if ctx.nxe && pte & PTE_NX != 0 {
            p &= !ACC_X;
        }
        p
    }
    /// Walks the guest tables for `gva` (already formed by [`PagingCtx::canon`]); with
    /// `set_ad`, sets A/D bits like the CPU on success.
    fn walk<G: GuestMemory + ?Sized>(
        ctx: &PagingCtx,
        mem: &G,
        gva: u64,
        access: Access,
        set_ad: bool,
    ) -> Result<Walk, PageFault> {
        walk_fmt::<Self, G>(ctx, mem, gva, access, set_ad)
    }
    /// [`apply_ad`] in this format.
    fn apply_ad<G: GuestMemory + ?Sized>(mem: &G, w: &mut Walk, access: Access) -> bool {
        apply_ad_fmt::<Self, G>(mem, w, access)
    }
}

/// Evaluates `$body` with the type name `$F` bound to the [`Format`] of guest mode
/// `$mode`: the one place a paging mode turns into a format (KVM picks its
/// `paging_tmpl.h` instance the same way, once per MMU context).
macro_rules! with_format {
    ($mode:expr, $F:ident => $body:expr) => {
        match $mode {
            super::walk::GuestMode::Off => {
                type $F = super::walk::NoPaging;
                $body
            }
            super::walk::GuestMode::Bits32 => {
                type $F = super::walk::Bits32;
                $body
            }
            super::walk::GuestMode::Pae => {
                type $F = super::walk::Pae;
                $body
            }
            super::walk::GuestMode::Long4 => {
                type $F = super::walk::Long4;
                $body
            }
        }
    };
}
pub(crate) use with_format;

/// Paging off (CR0.PG=0): linear = physical, with all permissions.
pub struct NoPaging;

/// 4-level paging.
pub struct Long4;
/// PAE paging (below the PDPTE registers).
pub struct Pae;
/// 32-bit paging.
pub struct Bits32;

impl Format for NoPaging {
    const PTE_BYTES: u64 = 8;
    const TOP: u8 = 0;
    const PAGING: bool = false;
    fn index(_gva: u64, _level: u8) -> u64 {
        0
    }
    fn rsvd(_ctx: &PagingCtx, _pte: u64, _level: u8) -> bool {
        false
    }
    fn leaf(_ctx: &PagingCtx, _pte: u64, _level: u8) -> bool {
        true
    }
    fn next_table(pte: u64) -> u64 {
        pte & bits(51, 12)
    }
    fn page_gpa(_pte: u64, _level: u8, gva: u64) -> u64 {
        gva
    }
    fn walk<G: GuestMemory + ?Sized>(
        _ctx: &PagingCtx,
        _mem: &G,
        gva: u64,
        _access: Access,
        _set_ad: bool,
    ) -> Result<Walk, PageFault> {
        Ok(Walk {
            gpa: gva,
            level: 1,
            perm: ACC_ALL,
            dirty: true,
            ..Walk::default()
        })
    }
    fn apply_ad<G: GuestMemory + ?Sized>(_mem: &G, _w: &mut Walk, _access: Access) -> bool {
        true
    }
}

impl Format for Long4 {
    const PTE_BYTES: u64 = 8;
    const TOP: u8 = 4;
    fn index(gva: u64, level: u8) -> u64 {
        // level - 1 is masked to 0..=3, so the shift is at most 39.
        (gva >> 12u32.saturating_add(9u32.saturating_mul(u32::from(level.saturating_sub(1)) & 3)))
            & 511
    }
    fn rsvd(ctx: &PagingCtx, pte: u64, level: u8) -> bool {
        let base = ctx.high_rsvd_long() | ctx.nx_rsvd();
        let ps = pte & PTE_PS != 0;
        let m = match level {
            4 => base | PTE_PS,
            3 if ps => {
                if !ctx.gb_pages {
                    return true;
                }
                base | bits(29, 13)
            }
            2 if ps => base | bits(20, 13),
            _ => base,
        };
        pte & m != 0
    }
    fn leaf(_ctx: &PagingCtx, pte: u64, level: u8) -> bool {
        level == 1 || ((level == 2 || level == 3) && pte & PTE_PS != 0)
    }
    fn next_table(pte: u64) -> u64 {
        pte & bits(51, 12)
    }
    fn page_gpa(pte: u64, level: u8, gva: u64) -> u64 {
        match level {
            3 => (pte & bits(51, 30)) | (gva & bits(29, 0)),
            2 => (pte & bits(51, 21)) | (gva & bits(20, 0)),
            _ => (pte & bits(51, 12)) | (gva & 0xfff),
        }
    }
}

impl Format for Pae {
    const PTE_BYTES: u64 = 8;
    const TOP: u8 = 2;
    fn top_table(ctx: &PagingCtx, gva: u64, w: &mut Walk) -> Option<u64> {
        // Level 3 is the PDPTE register that maps `gva`.
        let pdpte = ctx.pdpte_for(gva);
        w.pte[3] = pdpte;
        w.acc_above[3] = ACC_ALL;
        (pdpte & PTE_P != 0).then_some(pdpte & bits(51, 12))
    }
    fn index(gva: u64, level: u8) -> u64 {
        if level == 2 {
            (gva >> 21) & 511
        } else {
            (gva >> 12) & 511
        }
    }
    fn rsvd(ctx: &PagingCtx, pte: u64, level: u8) -> bool {
        let mut m = ctx.high_rsvd_pae() | ctx.nx_rsvd();
        if level == 2 && pte & PTE_PS != 0 {
            m |= bits(20, 13);
        }
        pte & m != 0
    }
    fn leaf(_ctx: &PagingCtx, pte: u64, level: u8) -> bool {
        level == 1 || (level == 2 && pte & PTE_PS != 0)
    }
    fn next_table(pte: u64) -> u64 {
        pte & bits(51, 12)
    }
    fn page_gpa(pte: u64, level: u8, gva: u64) -> u64 {
        if level == 2 {
            (pte & bits(51, 21)) | (gva & bits(20, 0))
        } else {
            (pte & bits(51, 12)) | (gva & 0xfff)
        }
    }
}

impl Format for Bits32 {
    const PTE_BYTES: u64 = 4;
    const TOP: u8 = 2;
    fn top_table(ctx: &PagingCtx, _gva: u64, _w: &mut Walk) -> Option<u64> {
        Some(ctx.cr3 & 0xffff_f000)
    }
    fn index(gva: u64, level: u8) -> u64 {
        if level == 2 {
            (gva >> 22) & 1023
        } else {
            (gva >> 12) & 1023
        }
    }
    fn rsvd(ctx: &PagingCtx, pte: u64, level: u8) -> bool {
        if level != 2 || !ctx.pse || pte & PTE_PS == 0 {
            return false;
        }
        // 4 MiB page: bit 21 reserved; PDE bits 20:13 hold physical bits 39:32 (PSE-36),
        // those at or above MAXPHYADDR (capped at 40) are reserved.
        let m = ctx.m().min(40);
        let mut r = 1u64 << 21;
        if m < 40 {
            // m is 32..40 here (`m()` clamps to at least 32).
            r |= bits(20, 13u32.saturating_add(m.saturating_sub(32)));
        }
        pte & r != 0
    }
    fn leaf(ctx: &PagingCtx, pte: u64, level: u8) -> bool {
        level == 1 || (level == 2 && ctx.pse && pte & PTE_PS != 0)
    }
    fn next_table(pte: u64) -> u64 {
        pte & 0xffff_f000
    }
    fn page_gpa(pte: u64, level: u8, gva: u64) -> u64 {
        if level == 2 {
            (pte & 0xffc0_0000) | (((pte >> 13) & 0xff) << 32) | (gva & 0x3f_ffff)
        } else {
            (pte & 0xffff_f000) | (gva & 0xfff)
        }
    }
    fn quadrant(gva: u64, level: u8) -> u32 {
        // A 1024-entry page table is two level-1 shadow pages, one per 2 MiB half of its
        // 4 MiB. (The page directory's four quadrants are the PAE root's pages.)
        if level == 1 {
            ((gva >> 21) & 1) as u32
        } else {
            0
        }
    }
    fn gpte_index(level: u8, quadrant: u32, slot: usize) -> u64 {
        // quadrant < 4 and slot < 512 in the callers: below 2^11, nothing wraps.
        let q = u64::from(quadrant);
        if level == 1 {
            q.wrapping_mul(512).wrapping_add(slot as u64)
        } else {
            // A page-directory entry (4 MiB) is two shadow entries (2 MiB each).
            q.wrapping_mul(256).wrapping_add(slot as u64 >> 1)
        }
    }
    fn shadow_slots(level: u8, quadrant: u32, gi: u64) -> Range<usize> {
        let q = u64::from(quadrant);
        if level == 1 {
            if gi / 512 == q {
                let s = (gi % 512) as usize;
                return s..s.saturating_add(1);
            }
        } else if gi / 256 == q {
            // A 4 MiB guest entry is the two shadow entries 2i and 2i+1.
            let s = ((gi % 256) << 1) as usize;
            return s..s.saturating_add(2);
        }
        0..0
    }
    fn perm(_ctx: &PagingCtx, pte: u64) -> u8 {
        let mut p = ACC_X;
        if pte & PTE_W != 0 {
            p |= ACC_W;
        }
        if pte & PTE_U != 0 {
            p |= ACC_U;
        }
        p
    }
}

/// Walks the guest tables for `gva`. With `set_ad`, sets A/D bits like the CPU on success.
pub fn walk<G: GuestMemory + ?Sized>(
    ctx: &PagingCtx,
    mem: &G,
    gva: u64,
    access: Access,
    set_ad: bool,
) -> Result<Walk, PageFault> {
    let gva = ctx.canon(gva);
    with_format!(ctx.mode, F => F::walk(ctx, mem, gva, access, set_ad))
}

fn walk_fmt<F: Format, G: GuestMemory + ?Sized>(
    ctx: &PagingCtx,
    mem: &G,
    gva: u64,
    access: Access,
    set_ad: bool,
) -> Result<Walk, PageFault> {
    // A failed compare-exchange means an entry changed under us: walk again. Each retry
    // observes at least one more A/D bit set, so a handful is plenty without races.
    let mut tries = 0u32;
    loop {
        // At most 16 (the loop ends there).
        tries = tries.saturating_add(1);
        let mut w = walk_once::<F, G>(ctx, mem, gva, access)?;
        if !set_ad || apply_ad_fmt::<F, G>(mem, &mut w, access) || tries >= 16 {
            return Ok(w);
        }
    }
}

/// Sets the A bits of every entry a successful walk used and, for a write, the leaf's D
/// bit, with locked compare-exchange. False if an entry changed since the walk read it
/// (the caller walks again or lets the access fault again).
pub fn apply_ad<G: GuestMemory + ?Sized>(
    ctx: &PagingCtx,
    mem: &G,
    w: &mut Walk,
    access: Access,
) -> bool {
    with_format!(ctx.mode, F => F::apply_ad(mem, w, access))
}

fn apply_ad_fmt<F: Format, G: GuestMemory + ?Sized>(mem: &G, w: &mut Walk, access: Access) -> bool {
    let leaf = w.level.max(1);
    let write = access.write && !access.fetch;
    let mut l = F::TOP;
    while l >= leaf {
        let li = l as usize & 7;
        let old = w.pte.get(li).copied().unwrap_or(0);
        let gpa = w.pte_gpa.get(li).copied().unwrap_or(0);
        let mut new = old | PTE_A;
        if l == leaf && write {
            new |= PTE_D;
        }
        if new != old {
            if !cmpxchg_gpte(mem, gpa, F::PTE_BYTES, old, new) {
                return false;
            }
            // A recursive table can put one entry on the walk at several levels: the
            // levels below that read it as `old` now see `new`, so their exchange does not
            // fail on this update (the CPU sets the bits of that one entry once).
            for k in leaf..=l {
                let k = usize::from(k) & 7;
                if w.pte_gpa.get(k) == Some(&gpa) {
                    if let Some(p) = w.pte.get_mut(k).filter(|p| **p == old) {
                        *p = new;
                    }
                }
            }
        }
        // l >= leaf >= 1.
        l = l.saturating_sub(1);
    }
    if write {
        w.dirty = true;
    }
    true
}

fn walk_once<F: Format, G: GuestMemory + ?Sized>(
    ctx: &PagingCtx,
    mem: &G,
    gva: u64,
    access: Access,
) -> Result<Walk, PageFault> {
    let fault = |present: bool, rsvd: bool| PageFault {
        error_code: ctx.error_code(access, present, rsvd),
        cr2: gva,
    };
    let mut w = Walk::default();
    let Some(mut table) = F::top_table(ctx, gva, &mut w) else {
        return Err(fault(false, false));
    };
    let mut acc = ACC_ALL;
    let mut level = F::TOP;
    loop {
        let li = level as usize & 7;
        let pte_gpa = table.wrapping_add(F::index(gva, level).wrapping_mul(F::PTE_BYTES));
        let pte = read_gpte(mem, pte_gpa, F::PTE_BYTES);
        if let (Some(a), Some(b), Some(c), Some(d)) = (
            w.pte.get_mut(li),
            w.pte_gpa.get_mut(li),
            w.table_gfn.get_mut(li),
            w.acc_above.get_mut(li),
        ) {
            *a = pte;
            *b = pte_gpa;
            *c = table >> 12;
            *d = acc;
        }
        if pte & PTE_P == 0 {
            return Err(fault(false, false));
        }
        if F::rsvd(ctx, pte, level) {
            return Err(fault(true, true));
        }
        acc &= F::perm(ctx, pte);
        if F::leaf(ctx, pte, level) {
            w.gpa = F::page_gpa(pte, level, gva);
            w.level = level;
            break;
        }
        table = F::next_table(pte);
        if level <= 1 {
            // Unreachable: level 1 entries are always leaves.
            return Err(fault(false, false));
        }
        // level > 1 (checked above).
        level = level.saturating_sub(1);
    }
    w.perm = acc;
    if !ctx.allows(acc, access) {
        return Err(fault(true, false));
    }
    w.dirty = w.pte.get(w.level as usize).copied().unwrap_or(0) & PTE_D != 0;
    Ok(w)
}
