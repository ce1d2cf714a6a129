// SPDX-License-Identifier: GPL-2.0

//! CPUID as the guest sees it: the host's values, filtered to what shadowvm virtualizes.
//!
//! A whitelist, not a blacklist: a feature the guest is told about must either work in
//! VMX non-root operation as it is, or be emulated here. Everything else reads as absent.

use super::state::CR4_VALID;
use crate::x86::{CR4_FSGSBASE, CR4_PCIDE, CR4_SMAP, CR4_SMEP};
use core::arch::x86_64::__cpuid_count;

const MAX_BASIC_LEAF: u32 = 0xd;
const MAX_EXT_LEAF: u32 = 0x8000_0008;
/// "shadowvm" hypervisor signature at leaf 0x40000000 (EBX, ECX, EDX).
const SIGNATURE: [u32; 3] = [
    u32::from_le_bytes(*b"shad"),
    u32::from_le_bytes(*b"owvm"),
    0,
];

// Leaf 1 ECX / EDX, leaf 7 EBX, leaf 0x80000001 EDX bits shown to the guest.
const L1_ECX: u32 = (1 << 0) // SSE3
    | (1 << 1) // PCLMULQDQ
    | (1 << 9) // SSSE3
    | (1 << 13) // CMPXCHG16B
    | (1 << 17) // PCID (emulated by the MMU)
    | (1 << 19) // SSE4.1
    | (1 << 20) // SSE4.2
    | (1 << 22) // MOVBE
    | (1 << 23) // POPCNT
    | (1 << 25) // AES
    | (1 << 30); // RDRAND
const L1_ECX_HYPERVISOR: u32 = 1 << 31;
const L1_EDX: u32 = (1 << 0) // FPU
    | (1 << 3) // PSE
    | (1 << 4) // TSC
    | (1 << 5) // MSR
    | (1 << 6) // PAE
    | (1 << 8) // CX8
    | (1 << 11) // SEP
    | (1 << 13) // PGE
    | (1 << 15) // CMOV
    | (1 << 16) // PAT
    | (1 << 17) // PSE-36
    | (1 << 19) // CLFLUSH
    | (1 << 23) // MMX
    | (1 << 24) // FXSR
    | (1 << 25) // SSE
    | (1 << 26); // SSE2
const L7_EBX: u32 = (1 << 0) // FSGSBASE
    | (1 << 3) // BMI1
    | (1 << 7) // SMEP
    | (1 << 8) // BMI2
    | (1 << 9) // ERMS
    | (1 << 10) // INVPCID (only when VMX can pass it through, checked below)
    | (1 << 18) // RDSEED
    | (1 << 19) // ADX
    | (1 << 20); // SMAP
const X1_ECX: u32 = (1 << 0) | (1 << 5); // LAHF/SAHF in 64-bit mode, LZCNT
const X1_EDX: u32 = (1 << 11) // SYSCALL
    | (1 << 20) // NX
    | (1 << 26) // 1 GiB pages
    | (1 << 29); // long mode

fn host(leaf: u32, sub: u32) -> (u32, u32, u32, u32) {
    let r = __cpuid_count(leaf, sub);
    (r.eax, r.ebx, r.ecx, r.edx)
}

/// Whether the host CPU lets the guest use INVPCID (secondary control "enable INVPCID").
fn invpcid_ok() -> bool {
    crate::caps().map(|c| c.has_invpcid()).unwrap_or(false)
}

pub(crate) fn has_nx() -> bool {
    host(0x8000_0001, 0).3 & (1 << 20) != 0
}

pub(crate) fn has_gb_pages() -> bool {
    host(0x8000_0001, 0).3 & (1 << 26) != 0
}

/// CR4 bits a guest may set on this host: the architectural set shadowvm supports, minus
/// features the host lacks.
pub(crate) fn cr4_allowed() -> u64 {
    let (_, _, ecx1, _) = host(1, 0);
    let (_, ebx7, _, _) = host(7, 0);
    let mut v = CR4_VALID;
    if ebx7 & 1 == 0 {
        v &= !CR4_FSGSBASE;
    }
    if ecx1 & (1 << 17) == 0 {
        v &= !CR4_PCIDE;
    }
    if ebx7 & (1 << 7) == 0 {
        v &= !CR4_SMEP;
    }
    if ebx7 & (1 << 20) == 0 {
        v &= !CR4_SMAP;
    }
    v
}

/// The guest's CPUID(leaf, subleaf): EAX, EBX, ECX, EDX.
pub(crate) fn guest_cpuid(leaf: u32, sub: u32) -> (u32, u32, u32, u32) {
    let max_basic = core::cmp::min(host(0, 0).0, MAX_BASIC_LEAF);
    let max_ext = core::cmp::min(host(0x8000_0000, 0).0, MAX_EXT_LEAF);
    match leaf {
        0 => {
            let (_, b, c, d) = host(0, 0);
            (max_basic, b, c, d)
        }
        1 => {
            let (a, b, c, d) = host(1, 0);
            // Initial APIC ID 0, one logical processor; no APIC is emulated.
            // XSAVE/OSXSAVE are not offered: the guest keeps to x87/SSE state, which the
            // window switches with FXSAVE/FXRSTOR.
            (a, b & 0xffff, (c & L1_ECX) | L1_ECX_HYPERVISOR, d & L1_EDX)
        }
        7 if sub == 0 => {
            let mut ebx = host(7, 0).1 & L7_EBX;
            if !invpcid_ok() {
                ebx &= !(1 << 10);
            }
            (0, ebx, 0, 0)
        }
        2..=MAX_BASIC_LEAF
            if leaf <= max_basic && leaf != 7 && leaf != 0xd && leaf != 6 && leaf != 0xa =>
        {
            // Cache and topology descriptors are harmless to pass through.
            host(leaf, sub)
        }
        0x4000_0000 => (0x4000_0000, SIGNATURE[0], SIGNATURE[1], SIGNATURE[2]),
        0x8000_0000 => {
            let (_, b, c, d) = host(0x8000_0000, 0);
            (max_ext, b, c, d)
        }
        0x8000_0001 => {
            let (a, b, c, d) = host(leaf, 0);
            (a, b, c & X1_ECX, d & X1_EDX)
        }
        // Brand string and cache description.
        0x8000_0002..=0x8000_0004 | 0x8000_0006 if leaf <= max_ext => host(leaf, sub),
        // Physical and linear address sizes (the MMU uses the same MAXPHYADDR).
        0x8000_0008 if leaf <= max_ext => (host(leaf, 0).0 & 0xffff, 0, 0, 0),
        _ => (0, 0, 0, 0),
    }
}
