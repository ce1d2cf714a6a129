// SPDX-License-Identifier: GPL-2.0

//! The guest's CPUID table, built by the launcher for every backend: a fixed set of leaves
//! and feature bits, each feature kept only when the backend supports it too, plus what the
//! launcher itself provides (local APIC with TSC-deadline timer, MTRRs, TSC frequency).

use crate::backend::{CpuidEntry, CPUID_FLAG_SIGNIFICANT_INDEX};

/// Leaf 1 ECX features offered when the backend has them: SSE3, PCLMULQDQ, SSSE3, FMA,
/// CMPXCHG16B, PCID, SSE4.1, SSE4.2, MOVBE, POPCNT, AES, XSAVE, AVX, F16C, RDRAND. Left out:
/// MONITOR/MWAIT (it could really wait), VMX/SMX, the debug-store and power-management
/// bits, x2APIC (not emulated) and OSXSAVE (the CPU derives it from CR4).
const LEAF1_ECX: u32 = (1 << 0)
    | (1 << 1)
    | (1 << 9)
    | (1 << 12)
    | (1 << 13)
    | (1 << 17)
    | (1 << 19)
    | (1 << 20)
    | (1 << 22)
    | (1 << 23)
    | (1 << 25)
    | (1 << 26)
    | (1 << 28)
    | (1 << 29)
    | (1 << 30);
/// Leaf 1 ECX bit 24: TSC-deadline timer (the launcher's APIC has it, where the backend lets
/// it see the MSR writes).
pub const LEAF1_ECX_TSC_DEADLINE: u32 = 1 << 24;
/// Leaf 1 ECX bit 31: running under a hypervisor.
pub const LEAF1_ECX_HYPERVISOR: u32 = 1 << 31;
/// Leaf 1 EDX features offered when the backend has them: FPU, VME, DE, PSE, TSC, MSR, PAE,
/// MCE, CX8, SEP, PGE, MCA, CMOV, PAT, PSE-36, CLFLUSH, MMX, FXSR, SSE, SSE2.
const LEAF1_EDX: u32 = (1 << 0)
    | (1 << 1)
    | (1 << 2)
    | (1 << 3)
    | (1 << 4)
    | (1 << 5)
    | (1 << 6)
    | (1 << 7)
    | (1 << 8)
    | (1 << 11)
    | (1 << 13)
    | (1 << 14)
    | (1 << 15)
    | (1 << 16)
    | (1 << 17)
    | (1 << 19)
    | (1 << 23)
    | (1 << 24)
    | (1 << 25)
    | (1 << 26);
/// Leaf 1 EDX bits the launcher provides itself: APIC (9) and MTRR (12).
pub const LEAF1_EDX_APIC: u32 = 1 << 9;
pub const LEAF1_EDX_MTRR: u32 = 1 << 12;
/// Leaf 7.0 EBX: FSGSBASE, BMI1, AVX2, SMEP, BMI2, ERMS, INVPCID, RDSEED, ADX, SMAP,
/// CLFLUSHOPT, CLWB, SHA.
const LEAF7_EBX: u32 = (1 << 0)
    | (1 << 3)
    | (1 << 5)
    | (1 << 7)
    | (1 << 8)
    | (1 << 9)
    | (1 << 10)
    | (1 << 18)
    | (1 << 19)
    | (1 << 20)
    | (1 << 23)
    | (1 << 24)
    | (1 << 29);
/// Leaf 7.0 ECX: GFNI, VAES, VPCLMULQDQ, RDPID.
const LEAF7_ECX: u32 = (1 << 8) | (1 << 9) | (1 << 10) | (1 << 22);
/// Leaf 7.0 EDX: FSRM, MD_CLEAR.
const LEAF7_EDX: u32 = (1 << 4) | (1 << 10);
/// Leaf 0xd.0 EAX: XSAVE components x87, SSE, AVX.
const XCR0_ALLOWED: u32 = 0b111;
/// Leaf 0xd.1 EAX: XSAVEOPT, XSAVEC, XGETBV with ECX=1 (not XSAVES: no IA32_XSS).
const LEAF_D1_EAX: u32 = 0b111;
/// Leaf 0x8000_0001 ECX: LAHF/SAHF, LZCNT, PREFETCHW.
const EXT1_ECX: u32 = (1 << 0) | (1 << 5) | (1 << 8);
/// Leaf 0x8000_0001 EDX: SYSCALL, NX, 1 GiB pages, RDTSCP, long mode.
const EXT1_EDX: u32 = (1 << 11) | (1 << 20) | (1 << 26) | (1 << 27) | (1 << 29);
/// Leaf 0x8000_0007 EDX bit 8: invariant TSC (the guest's TSC is the host's).
const EXT7_EDX: u32 = 1 << 8;

/// Hypervisor leaf signature (EBX, ECX, EDX of 0x4000_0000).
pub const HYPERVISOR_SIGNATURE: &[u8; 12] = b"shadowvm-run";
/// Frequency of the crystal in leaf 0x15: the APIC timer's bus clock.
pub const CRYSTAL_HZ: u32 = crate::apic::APIC_BUS_HZ as u32;

/// The TSC/crystal ratio for leaf 0x15 as (numerator, denominator), the best approximation
/// of `tsc_khz` / `CRYSTAL_HZ / 1000` with a numerator of at most 4294: Linux computes
/// `crystal_khz * numerator` in 32 bits. That bound limits the precision to a few parts in
/// 10^5 in the worst case; leaf 0x16 gives the frequency in MHz besides.
pub fn tsc_crystal_ratio(tsc_khz: u32) -> (u32, u32) {
    let max_num = u64::from(u32::MAX) / u64::from(CRYSTAL_HZ / 1000);
    let (x, y) = (u64::from(tsc_khz), u64::from(CRYSTAL_HZ / 1000));
    // Continued-fraction convergents of x/y, stopping before the numerator gets too big.
    let (mut p0, mut q0, mut p1, mut q1) = (0u64, 1u64, 1u64, 0u64);
    let (mut a, mut b) = (x, y);
    while b != 0 {
        let t = a / b;
        let (p2, q2) = (t * p1 + p0, t * q1 + q0);
        if p2 > max_num {
            break;
        }
        (p0, q0, p1, q1) = (p1, q1, p2, q2);
        (a, b) = (b, a - t * b);
    }
    if q1 == 0 {
        return (0, 0);
    }
    (p1 as u32, q1 as u32)
}

fn find(s: &[CpuidEntry], function: u32, index: u32) -> Option<&CpuidEntry> {
    s.iter().find(|e| {
        e.function == function && (e.index == index || e.flags & CPUID_FLAG_SIGNIFICANT_INDEX == 0)
    })
}

fn entry(function: u32, index: u32, regs: [u32; 4]) -> CpuidEntry {
    CpuidEntry {
        function,
        index,
        flags: 0,
        eax: regs[0],
        ebx: regs[1],
        ecx: regs[2],
        edx: regs[3],
    }
}

fn sub(function: u32, index: u32, regs: [u32; 4]) -> CpuidEntry {
    CpuidEntry {
        flags: CPUID_FLAG_SIGNIFICANT_INDEX,
        ..entry(function, index, regs)
    }
}

fn word(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// The physical-address width the guest is told (leaf 0x8000_0008 EAX[7:0]), 36 without it.
pub fn phys_bits(table: &[CpuidEntry]) -> u32 {
    find(table, 0x8000_0008, 0)
        .map(|e| e.eax & 0xff)
        .filter(|&b| b >= 32)
        .unwrap_or(36)
}

/// Builds the guest's table from the backend's `supported` leaves; leaves 0x15/0x16 need the
/// TSC frequency, and the TSC-deadline bit a backend that lets the launcher see writes of
/// IA32_TSC_DEADLINE.
pub fn build(
    supported: &[CpuidEntry],
    tsc_khz: Option<u32>,
    tsc_deadline: bool,
) -> Vec<CpuidEntry> {
    let get = |f: u32, i: u32| find(supported, f, i).copied().unwrap_or_default();
    let mut t = Vec::new();

    let max_basic = if tsc_khz.is_some() { 0x16 } else { 0xd };
    let l0 = find(supported, 0, 0).copied().unwrap_or(CpuidEntry {
        ebx: word(b"Genu"),
        edx: word(b"ineI"),
        ecx: word(b"ntel"),
        ..Default::default()
    });
    t.push(entry(0, 0, [max_basic, l0.ebx, l0.ecx, l0.edx]));

    let l1 = get(1, 0);
    // APIC ID 0, one logical processor, CLFLUSH line 8 * 8 bytes.
    let l1_ebx = (1 << 16) | (8 << 8);
    let mut l1_ecx = (l1.ecx & LEAF1_ECX) | LEAF1_ECX_HYPERVISOR;
    if tsc_deadline {
        l1_ecx |= LEAF1_ECX_TSC_DEADLINE;
    }
    let l1_edx = (l1.edx & LEAF1_EDX) | LEAF1_EDX_APIC | LEAF1_EDX_MTRR;
    t.push(entry(1, 0, [l1.eax, l1_ebx, l1_ecx, l1_edx]));

    // Deterministic cache parameters: the host's caches, one core and thread sharing each.
    for i in 0..8 {
        let c = get(4, i);
        if c.eax & 0x1f == 0 {
            t.push(sub(4, i, [0; 4]));
            break;
        }
        t.push(sub(4, i, [c.eax & 0x3fff, c.ebx, c.ecx, c.edx]));
    }
    // Thermal and power: only ARAT, the APIC timer runs in every C-state.
    t.push(entry(6, 0, [1 << 2, 0, 0, 0]));

    let l7 = get(7, 0);
    t.push(sub(
        7,
        0,
        [
            0,
            l7.ebx & LEAF7_EBX,
            l7.ecx & LEAF7_ECX,
            l7.edx & LEAF7_EDX,
        ],
    ));

    if l1_ecx & (1 << 26) != 0 {
        let d0 = get(0xd, 0);
        let xcr0 = d0.eax & XCR0_ALLOWED;
        // Largest save area for the offered components: legacy area and header (576
        // bytes) plus the AVX upper halves (256 bytes at offset 576).
        let size = if xcr0 & 4 != 0 { 832 } else { 576 };
        t.push(sub(0xd, 0, [xcr0, size, size, 0]));
        let d1 = get(0xd, 1);
        t.push(sub(0xd, 1, [d1.eax & LEAF_D1_EAX, 0, 0, 0]));
        if xcr0 & 4 != 0 {
            let d2 = get(0xd, 2);
            t.push(sub(0xd, 2, [d2.eax, d2.ebx, d2.ecx, 0]));
        }
    }

    if let Some(khz) = tsc_khz {
        let (num, den) = tsc_crystal_ratio(khz);
        t.push(entry(0x15, 0, [den, num, CRYSTAL_HZ, 0]));
        let mhz = khz / 1000;
        t.push(entry(0x16, 0, [mhz, mhz, CRYSTAL_HZ / 1_000_000, 0]));
    }

    let sig = HYPERVISOR_SIGNATURE;
    t.push(entry(
        0x4000_0000,
        0,
        [
            0x4000_0000,
            word(&sig[0..4]),
            word(&sig[4..8]),
            word(&sig[8..12]),
        ],
    ));

    let e0 = get(0x8000_0000, 0);
    let max_ext = e0.eax.clamp(0x8000_0000, 0x8000_0008);
    t.push(entry(0x8000_0000, 0, [max_ext, e0.ebx, e0.ecx, e0.edx]));
    for f in 0x8000_0001..=max_ext {
        let e = get(f, 0);
        let regs = match f {
            0x8000_0001 => [e.eax, 0, e.ecx & EXT1_ECX, e.edx & EXT1_EDX],
            // Brand string and L2 cache description.
            0x8000_0002..=0x8000_0004 | 0x8000_0006 => [e.eax, e.ebx, e.ecx, e.edx],
            0x8000_0007 => [0, 0, 0, e.edx & EXT7_EDX],
            // Physical and linear address widths.
            0x8000_0008 => [e.eax & 0xffff, 0, 0, 0],
            _ => [0; 4],
        };
        t.push(entry(f, 0, regs));
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Leaf 1 ECX bit 21: x2APIC, never offered.
    const LEAF1_ECX_X2APIC: u32 = 1 << 21;

    /// Roughly what KVM reports on a recent Intel host.
    fn host() -> Vec<CpuidEntry> {
        vec![
            entry(0, 0, [0x20, word(b"Genu"), word(b"ntel"), word(b"ineI")]),
            entry(1, 0, [0x000906ea, 0x0010_0800, 0xf7fa_3223, 0x178b_fbff]),
            sub(4, 0, [0x1c00_4121, 0x01c0_003f, 0x3f, 0]),
            sub(4, 1, [0x1c00_4143, 0x01c0_003f, 0x3ff, 0]),
            sub(4, 2, [0, 0, 0, 0]),
            sub(7, 0, [0, 0x029c_6fbf, 0x0040_0004, 0xac00_0400]),
            sub(0xd, 0, [0x2e7, 0x340, 0xa88, 0]),
            sub(0xd, 1, [0xf, 0, 0, 0]),
            sub(0xd, 2, [0x100, 0x240, 0, 0]),
            entry(
                0x4000_0000,
                0,
                [0x4000_0001, 0x4b4d_564b, 0x564b_4d56, 0x4d],
            ),
            entry(0x8000_0000, 0, [0x8000_0008, 0, 0, 0]),
            entry(0x8000_0001, 0, [0, 0, 0x121, 0x2c10_0800]),
            entry(0x8000_0007, 0, [0, 0, 0, 0x100]),
            entry(0x8000_0008, 0, [0x3027, 0, 0, 0]),
        ]
    }

    fn leaf(t: &[CpuidEntry], f: u32, i: u32) -> CpuidEntry {
        *find(t, f, i).unwrap_or_else(|| panic!("leaf {f:#x}.{i}"))
    }

    #[test]
    fn table_from_a_kvm_host() {
        let t = build(&host(), Some(2_494_140), true);
        let l0 = leaf(&t, 0, 0);
        assert_eq!(l0.eax, 0x16);
        assert_eq!(
            [l0.ebx, l0.edx, l0.ecx],
            [word(b"Genu"), word(b"ineI"), word(b"ntel")]
        );
        let l1 = leaf(&t, 1, 0);
        assert_eq!(l1.eax, 0x000906ea, "host family/model/stepping");
        assert_eq!(l1.ebx >> 24, 0, "APIC ID 0");
        assert_ne!(l1.ecx & LEAF1_ECX_TSC_DEADLINE, 0);
        assert_ne!(l1.ecx & LEAF1_ECX_HYPERVISOR, 0);
        assert_eq!(l1.ecx & LEAF1_ECX_X2APIC, 0, "x2APIC is not emulated");
        assert_eq!(l1.ecx & (1 << 3), 0, "no MONITOR");
        assert_eq!(l1.ecx & (1 << 5), 0, "no VMX");
        assert_eq!(l1.ecx & (1 << 27), 0, "OSXSAVE is the CPU's");
        assert_ne!(l1.ecx & (1 << 26), 0, "XSAVE from the host");
        assert_ne!(l1.edx & LEAF1_EDX_APIC, 0);
        assert_eq!(l1.edx & (1 << 28), 0, "no HTT");
        let l7 = leaf(&t, 7, 0);
        assert_ne!(l7.ebx & (1 << 10), 0, "INVPCID kept");
        assert_eq!(l7.ebx & (1 << 16), 0, "AVX-512 left out");
        let d0 = leaf(&t, 0xd, 0);
        assert_eq!((d0.eax, d0.ecx), (7, 832));
        assert_eq!(leaf(&t, 0xd, 1).eax, 0b111, "no XSAVES");
        assert_eq!(leaf(&t, 4, 0).eax & !0x3fff, 0, "one core, one thread");
        assert_eq!(leaf(&t, 6, 0).eax, 4);
        let l15 = leaf(&t, 0x15, 0);
        assert_eq!(l15.ecx, 1_000_000_000);
        // Linux: crystal_khz * ebx / eax in 32 bits.
        let linux_khz = (l15.ecx / 1000).checked_mul(l15.ebx).unwrap() / l15.eax;
        assert!((2_494_000..=2_494_140).contains(&linux_khz), "{linux_khz}");
        let l16 = leaf(&t, 0x16, 0);
        assert_eq!((l16.eax, l16.ecx), (2494, 1000));
        let h = leaf(&t, 0x4000_0000, 0);
        assert_eq!(
            [h.ebx, h.ecx, h.edx],
            [word(b"shad"), word(b"owvm"), word(b"-run")]
        );
        let e1 = leaf(&t, 0x8000_0001, 0);
        assert_ne!(e1.edx & (1 << 29), 0, "long mode");
        assert_eq!(leaf(&t, 0x8000_0007, 0).edx, 0x100);
        assert_eq!(phys_bits(&t), 39);
    }

    #[test]
    fn features_are_intersected_with_the_backend() {
        // A backend that supports only the basics.
        let small = vec![
            entry(0, 0, [1, word(b"Genu"), word(b"ntel"), word(b"ineI")]),
            entry(1, 0, [0x600, 0, 0, 0x0000_0011]),
        ];
        let t = build(&small, None, true);
        let l1 = leaf(&t, 1, 0);
        assert_eq!(l1.ecx, LEAF1_ECX_TSC_DEADLINE | LEAF1_ECX_HYPERVISOR);
        assert_eq!(l1.edx, 0x11 | LEAF1_EDX_APIC | LEAF1_EDX_MTRR);
        assert_eq!(
            leaf(&t, 0, 0).eax,
            0xd,
            "no TSC frequency: no leaf 0x15/0x16"
        );
        assert!(find(&t, 0x15, 0).is_none());
        assert!(find(&t, 0xd, 0).is_none(), "no XSAVE: no leaf 0xd");
        assert_eq!(leaf(&t, 7, 0).ebx, 0);
        assert_eq!(leaf(&t, 0x8000_0000, 0).eax, 0x8000_0000);
        assert_eq!(phys_bits(&t), 36);
        // Even with nothing supported the table is well formed.
        let t = build(&[], None, true);
        assert_eq!(leaf(&t, 0, 0).ebx, word(b"Genu"));
        // A backend that keeps IA32_TSC_DEADLINE writes to itself: no TSC-deadline mode.
        let t = build(&host(), Some(2_494_140), false);
        assert_eq!(leaf(&t, 1, 0).ecx & LEAF1_ECX_TSC_DEADLINE, 0);
        assert_ne!(leaf(&t, 1, 0).ecx & LEAF1_ECX_HYPERVISOR, 0);
    }

    #[test]
    fn crystal_ratio() {
        for khz in [
            1_000_000, 2_494_140, 3_000_000, 3_599_999, 800_000, 4_200_123,
        ] {
            let (num, den) = tsc_crystal_ratio(khz);
            assert!(num <= 4294 && den > 0, "{khz}: {num}/{den}");
            let got = f64::from(num) / f64::from(den) * 1e6;
            // The 32-bit limit costs precision when a large partial quotient comes early.
            assert!(
                (got - f64::from(khz)).abs() / f64::from(khz) < 5e-5,
                "{khz}: {got}"
            );
        }
        assert_eq!(tsc_crystal_ratio(2_000_000), (2, 1));
    }
}
