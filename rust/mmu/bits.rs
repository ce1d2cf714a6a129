// SPDX-License-Identifier: GPL-2.0

//! Architectural bit definitions (Intel SDM vol. 3A, chapters 2 and 4).

/// CR0.PE: protected mode.
pub const CR0_PE: u64 = 1 << 0;
/// CR0.WP: supervisor writes honour R/W.
pub const CR0_WP: u64 = 1 << 16;
/// CR0.CD: cache disable.
pub const CR0_CD: u64 = 1 << 30;
/// CR0.NW: not write-through.
pub const CR0_NW: u64 = 1 << 29;
/// CR0.PG: paging.
pub const CR0_PG: u64 = 1 << 31;

/// CR4.PSE: 4 MiB pages in 32-bit paging.
pub const CR4_PSE: u64 = 1 << 4;
/// CR4.PAE.
pub const CR4_PAE: u64 = 1 << 5;
/// CR4.PGE: global pages.
pub const CR4_PGE: u64 = 1 << 7;
/// CR4.LA57: 5-level paging.
pub const CR4_LA57: u64 = 1 << 12;
/// CR4.PCIDE.
pub const CR4_PCIDE: u64 = 1 << 17;
/// CR4.SMEP.
pub const CR4_SMEP: u64 = 1 << 20;
/// CR4.SMAP.
pub const CR4_SMAP: u64 = 1 << 21;
/// CR4.PKE.
pub const CR4_PKE: u64 = 1 << 22;
/// CR4.CET.
pub const CR4_CET: u64 = 1 << 23;

/// EFER.LME.
pub const EFER_LME: u64 = 1 << 8;
/// EFER.LMA.
pub const EFER_LMA: u64 = 1 << 10;
/// EFER.NXE.
pub const EFER_NXE: u64 = 1 << 11;

/// Paging entry: present.
pub const PTE_P: u64 = 1 << 0;
/// Paging entry: writable.
pub const PTE_W: u64 = 1 << 1;
/// Paging entry: user.
pub const PTE_U: u64 = 1 << 2;
/// Paging entry: write-through.
pub const PTE_PWT: u64 = 1 << 3;
/// Paging entry: cache disable.
pub const PTE_PCD: u64 = 1 << 4;
/// Paging entry: accessed.
pub const PTE_A: u64 = 1 << 5;
/// Paging entry: dirty (leaf only).
pub const PTE_D: u64 = 1 << 6;
/// Paging entry: page size (large page) in PDE/PDPTE.
pub const PTE_PS: u64 = 1 << 7;
/// Paging entry: global (leaf only).
pub const PTE_G: u64 = 1 << 8;
/// Paging entry: execute disable (PAE and 4-level, with EFER.NXE).
pub const PTE_NX: u64 = 1 << 63;

/// #PF error code: the page was present (protection or reserved-bit fault).
pub const PFERR_P: u32 = 1 << 0;
/// #PF error code: write access.
pub const PFERR_W: u32 = 1 << 1;
/// #PF error code: user-mode access.
pub const PFERR_U: u32 = 1 << 2;
/// #PF error code: reserved bit set in a paging entry.
pub const PFERR_RSVD: u32 = 1 << 3;
/// #PF error code: instruction fetch.
pub const PFERR_ID: u32 = 1 << 4;

/// Mask of bits `hi..=lo` (hi >= lo, hi <= 63).
#[inline]
pub const fn bits(hi: u32, lo: u32) -> u64 {
    if hi < lo || hi > 63 {
        return 0;
    }
    // lo <= hi <= 63: both shift amounts are below 64.
    u64::MAX.wrapping_shr(63u32.saturating_sub(hi)) & u64::MAX.wrapping_shl(lo)
}
