// SPDX-License-Identifier: GPL-2.0

//! The guest's CPUID: the table of what shadowvm can virtualize ([`fill_supported`]), the
//! default table a vCPU starts with ([`make_default`]), the filtering of a table userspace
//! installs ([`filter`]) and the lookup at a CPUID exit ([`Table::lookup`]).
//!
//! A whitelist, not a blacklist: a feature the guest is told about must either work in VMX
//! non-root operation as it is, be emulated by the module, or be backed by userspace (the
//! local APIC, x2APIC and TSC-deadline MSRs, the MTRRs: their accesses exit to userspace).
//! Everything else reads as absent.

/// Most entries a table holds (`SHADOWVM_CPUID_MAX_ENTRIES`).
pub const MAX_ENTRIES: usize = 64;
/// `Entry::flags`: the entry is for subleaf `index` only.
pub const FLAG_SIGNIFICANT_INDEX: u32 = 1;

/// Largest basic leaf of the supported table (the launcher may add 0x15 and 0x16, which
/// are not filtered, see [`filter`]).
pub const MAX_BASIC_LEAF: u32 = 0xd;
/// Largest extended leaf of the supported table.
pub const MAX_EXT_LEAF: u32 = 0x8000_0008;

/// "shadowvm" hypervisor signature at leaf 0x40000000 (EBX, ECX, EDX).
pub const SIGNATURE: [u32; 3] = [
    u32::from_le_bytes(*b"shad"),
    u32::from_le_bytes(*b"owvm"),
    0,
];

/// Leaf 1 ECX features the guest may have.
pub const L1_ECX: u32 = (1 << 0) // SSE3
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
/// Leaf 1 ECX.x2APIC: backed by userspace (x2APIC MSRs exit).
pub const L1_ECX_X2APIC: u32 = 1 << 21;
/// Leaf 1 ECX.TSC-deadline: backed by userspace (IA32_TSC_DEADLINE exits).
pub const L1_ECX_TSC_DEADLINE: u32 = 1 << 24;
/// Leaf 1 ECX.hypervisor: set in the default table; userspace decides in its own.
pub const L1_ECX_HYPERVISOR: u32 = 1 << 31;
/// Leaf 1 EDX features the guest may have.
pub const L1_EDX: u32 = (1 << 0) // FPU
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
/// Leaf 1 EDX.APIC: backed by userspace (APIC MMIO and IA32_APIC_BASE exit).
pub const L1_EDX_APIC: u32 = 1 << 9;
/// Leaf 1 EDX.MTRR: backed by userspace (the MTRR MSRs exit).
pub const L1_EDX_MTRR: u32 = 1 << 12;
/// Leaf 7.0 EBX features the guest may have.
pub const L7_EBX: u32 = (1 << 0) // FSGSBASE
    | (1 << 3) // BMI1
    | (1 << 7) // SMEP
    | (1 << 8) // BMI2
    | (1 << 9) // ERMS
    | (1 << 10) // INVPCID (only when VMX can pass it through)
    | (1 << 18) // RDSEED
    | (1 << 19) // ADX
    | (1 << 20); // SMAP
/// Leaf 7.0 EBX.INVPCID.
pub const L7_EBX_INVPCID: u32 = 1 << 10;
/// Leaf 0x80000001 ECX: LAHF/SAHF in 64-bit mode, LZCNT.
pub const X1_ECX: u32 = (1 << 0) | (1 << 5);
/// Leaf 0x80000001 EDX features the guest may have.
pub const X1_EDX: u32 = (1 << 11) // SYSCALL
    | (1 << 20) // NX
    | (1 << 26) // 1 GiB pages
    | (1 << 29); // long mode

/// One leaf/subleaf: the layout-independent form of `shadowvm_cpuid_entry`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Entry {
    /// The leaf (EAX).
    pub function: u32,
    /// The subleaf (ECX), when `flags` has [`FLAG_SIGNIFICANT_INDEX`].
    pub index: u32,
    /// [`FLAG_SIGNIFICANT_INDEX`] or 0.
    pub flags: u32,
    /// EAX, EBX, ECX, EDX.
    pub regs: [u32; 4],
}

impl Entry {
    fn significant(&self) -> bool {
        self.flags & FLAG_SIGNIFICANT_INDEX != 0
    }

    /// Whether this entry answers CPUID(`function`, `index`) (KVM's
    /// `kvm_find_cpuid_entry2`: the index counts only with SIGNIFICANT_INDEX).
    fn matches(&self, function: u32, index: u32) -> bool {
        self.function == function && (!self.significant() || self.index == index)
    }
}

/// Why a table is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableError {
    /// More than [`MAX_ENTRIES`].
    TooMany,
    /// A flag other than [`FLAG_SIGNIFICANT_INDEX`].
    BadFlags,
    /// Two entries answer the same leaf and subleaf.
    Duplicate,
}

/// A CPUID table.
///
/// # Invariants
///
/// `len <= MAX_ENTRIES`; the first `len` entries have no flag but
/// [`FLAG_SIGNIFICANT_INDEX`] and no two of them answer the same leaf and subleaf.
#[derive(Clone, Debug)]
pub struct Table {
    entries: [Entry; MAX_ENTRIES],
    len: usize,
}

impl Default for Table {
    fn default() -> Self {
        Self::new()
    }
}

impl Table {
    /// An empty table: every CPUID reads 0.
    pub const fn new() -> Self {
        Self {
            entries: [Entry {
                function: 0,
                index: 0,
                flags: 0,
                regs: [0; 4],
            }; MAX_ENTRIES],
            len: 0,
        }
    }

    /// Removes every entry.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Adds an entry.
    pub fn push(&mut self, e: Entry) -> Result<(), TableError> {
        if e.flags & !FLAG_SIGNIFICANT_INDEX != 0 {
            return Err(TableError::BadFlags);
        }
        let clash = self.entries().iter().any(|o| {
            o.function == e.function && (!o.significant() || !e.significant() || o.index == e.index)
        });
        if clash {
            return Err(TableError::Duplicate);
        }
        let slot = self.entries.get_mut(self.len).ok_or(TableError::TooMany)?;
        *slot = e;
        // INVARIANT: the slot existed, so `len` stays within MAX_ENTRIES; checked above.
        self.len = self.len.saturating_add(1);
        Ok(())
    }

    /// The entries in the order they were added.
    pub fn entries(&self) -> &[Entry] {
        self.entries.get(..self.len).unwrap_or(&[])
    }

    /// The entry for CPUID(`function`, `index`), if the table has one.
    pub fn find(&self, function: u32, index: u32) -> Option<&Entry> {
        self.entries().iter().find(|e| e.matches(function, index))
    }

    fn entry_mut(&mut self, function: u32, index: u32) -> Option<&mut Entry> {
        let len = self.len;
        self.entries
            .get_mut(..len)
            .and_then(|es| es.iter_mut().find(|e| e.matches(function, index)))
    }

    /// Whether leaf 0 names an AMD-style vendor, whose CPUs read 0 for leaves out of range.
    fn amd_vendor(&self) -> bool {
        let Some(basic) = self.find(0, 0) else {
            return false;
        };
        let [_, b, c, d] = basic.regs;
        let vendor = [b, d, c];
        vendor == vendor_regs(b"AuthenticAMD") || vendor == vendor_regs(b"HygonGenuine")
    }

    /// CPUID(`function`, `index`) as the guest sees it: EAX, EBX, ECX, EDX. KVM's
    /// `kvm_cpuid()`: a leaf above the maximum of its range (leaf 0, 0x40000000,
    /// 0x80000000 or 0xc0000000 EAX) reads as the highest basic leaf, as on Intel CPUs
    /// (SDM, CPUID: "If a value entered for CPUID.EAX is higher than the maximum input
    /// value for basic or extended function ..."); AMD vendors read 0. A leaf in range
    /// that the table lacks reads 0, except that leaves 0xB and 0x1F keep reporting the
    /// subleaf (ECX) and the x2APIC ID (EDX) past the last level.
    pub fn lookup(&self, function: u32, index: u32) -> [u32; 4] {
        if let Some(e) = self.find(function, index) {
            return e.regs;
        }
        let mut function = function;
        if let Some(max_basic) = self.out_of_range(function) {
            function = max_basic;
            if let Some(e) = self.find(function, index) {
                return e.regs;
            }
        }
        if function == 0xb || function == 0x1f {
            if let Some(e) = self.find(function, 1) {
                return [0, 0, index & 0xff, e.regs[3]];
            }
        }
        [0; 4]
    }

    /// The highest basic leaf, if `function` is above the maximum of its range.
    fn out_of_range(&self, function: u32) -> Option<u32> {
        let basic = self.find(0, 0)?;
        if self.amd_vendor() {
            return None;
        }
        let class = match function {
            0x4000_0000..=0x4fff_ffff => self.find(function & 0xffff_ff00, 0),
            0xc000_0000.. => self.find(0xc000_0000, 0),
            _ => self.find(function & 0x8000_0000, 0),
        };
        match class {
            Some(c) if function <= c.regs[0] => None,
            _ => Some(basic.regs[0]),
        }
    }
}

/// The features of a table that decide which CR4 and EFER bits the guest's own MOV to CR4
/// and WRMSR may set (KVM's `guest_cpuid_has` checks): a feature the table hides faults
/// like on a CPU without it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ControlFeatures {
    /// Leaf 0x80000001 EDX.NX: EFER.NXE.
    pub nx: bool,
    /// Leaf 7.0 EBX.FSGSBASE: CR4.FSGSBASE.
    pub fsgsbase: bool,
    /// Leaf 1 ECX.PCID: CR4.PCIDE.
    pub pcid: bool,
    /// Leaf 7.0 EBX.SMEP: CR4.SMEP.
    pub smep: bool,
    /// Leaf 7.0 EBX.SMAP: CR4.SMAP.
    pub smap: bool,
}

impl Table {
    /// What the table says about the features behind CR4 and EFER bits (exact entries
    /// only: an absent leaf has none of them).
    pub fn control_features(&self) -> ControlFeatures {
        let regs = |function, index| self.find(function, index).map_or([0; 4], |e| e.regs);
        let [_, _, ecx1, _] = regs(1, 0);
        let [_, ebx7, _, _] = regs(7, 0);
        let [_, _, _, edx_x1] = regs(0x8000_0001, 0);
        ControlFeatures {
            nx: edx_x1 & (1 << 20) != 0,
            fsgsbase: ebx7 & (1 << 0) != 0,
            pcid: ecx1 & (1 << 17) != 0,
            smep: ebx7 & (1 << 7) != 0,
            smap: ebx7 & (1 << 20) != 0,
        }
    }
}

/// A 12-byte vendor string as EBX, EDX, ECX.
fn vendor_regs(s: &[u8; 12]) -> [u32; 3] {
    let w = |i: usize| {
        let b = |j: usize| s.get(i.wrapping_add(j)).copied().unwrap_or(0);
        u32::from_le_bytes([b(0), b(1), b(2), b(3)])
    };
    [w(0), w(4), w(8)]
}

/// How [`filter`] treats one register of a leaf.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Rule {
    /// Userspace's value as it is: descriptions (vendor, family, cache and topology, TSC
    /// frequency, hypervisor leaves) that the module does not depend on.
    Free,
    /// Userspace's value ANDed with the supported entry's (0 when there is none): feature
    /// bits.
    Masked,
    /// The supported entry's value whatever userspace says: facts the module relies on
    /// (the physical-address width its MMU checks reserved bits with).
    Module,
}

use Rule::{Free, Masked, Module};

fn rules(function: u32) -> [Rule; 4] {
    match function {
        // Maximum leaf and vendor; cache descriptors, deterministic cache parameters,
        // topology, TSC and core frequencies (the launcher fills 0x15/0x16 from
        // SHADOWVM_GET_TSC_KHZ); hypervisor leaves; brand string, L2 cache.
        0 | 2 | 4 | 0xb | 0x15 | 0x16 | 0x1f | 0x4000_0000..=0x4fff_ffff => [Free; 4],
        0x8000_0000 | 0x8000_0002..=0x8000_0004 | 0x8000_0006 => [Free; 4],
        // Family/model/stepping, brand index, CLFLUSH size, APIC ID; the features.
        1 | 0x8000_0001 => [Free, Free, Masked, Masked],
        0x8000_0008 => [Module, Masked, Masked, Masked],
        _ => [Masked; 4],
    }
}

/// `e` with every feature bit shadowvm cannot virtualize cleared (see `rules`).
pub fn filter(e: &Entry, supported: &Table) -> Entry {
    let sup = supported
        .find(e.function, e.index)
        .map(|s| s.regs)
        .unwrap_or([0; 4]);
    let mut out = *e;
    for ((r, rule), s) in out.regs.iter_mut().zip(rules(e.function)).zip(sup) {
        *r = match rule {
            Free => *r,
            Masked => *r & s,
            Module => s,
        };
    }
    out
}

/// What the host and VMX offer, for [`fill_supported`].
pub trait Host {
    /// The host's CPUID(leaf, subleaf).
    fn cpuid(&self, leaf: u32, subleaf: u32) -> [u32; 4];
    /// VMX lets the guest execute INVPCID ("enable INVPCID").
    fn invpcid(&self) -> bool;
}

/// Subleaves of leaves 4 and 0xB the table takes at most (one per cache level or topology
/// level; hardware has 4-5 and 2-3).
const MAX_SUBLEAVES: u32 = 8;

/// Fills `t` with the table of what shadowvm can virtualize on this host
/// (`SHADOWVM_GET_SUPPORTED_CPUID`): the host's values, feature bits limited to the
/// whitelists above (plus the bits backed by userspace), the "shadowvm" signature at
/// 0x40000000. In place: the kernel keeps tables off its small stack.
pub fn fill_supported(t: &mut Table, host: &impl Host) {
    t.clear();
    // Only leaves the host has: pushes cannot fail (distinct leaves, far fewer than
    // MAX_ENTRIES), so their results are not needed.
    let mut add = |function: u32, index: u32, significant: bool, regs: [u32; 4]| {
        let flags = if significant {
            FLAG_SIGNIFICANT_INDEX
        } else {
            0
        };
        let _ = t.push(Entry {
            function,
            index,
            flags,
            regs,
        });
    };
    let [host_max, b0, c0, d0] = host.cpuid(0, 0);
    let max_basic = core::cmp::min(host_max, MAX_BASIC_LEAF);
    add(0, 0, false, [max_basic, b0, c0, d0]);
    if max_basic >= 1 {
        let [a, b, c, d] = host.cpuid(1, 0);
        // Initial APIC ID 0, no logical-processor count: userspace sets its own.
        let ecx = (c & L1_ECX) | L1_ECX_X2APIC | L1_ECX_TSC_DEADLINE | L1_ECX_HYPERVISOR;
        let edx = (d & L1_EDX) | L1_EDX_APIC | L1_EDX_MTRR;
        add(1, 0, false, [a, b & 0xffff, ecx, edx]);
    }
    for leaf in 2..=max_basic {
        match leaf {
            // Deterministic cache parameters: one subleaf per cache, up to the null one.
            4 => {
                for sub in 0..MAX_SUBLEAVES {
                    let r = host.cpuid(4, sub);
                    add(4, sub, true, r);
                    if r[0] & 0x1f == 0 {
                        break;
                    }
                }
            }
            7 => {
                let mut ebx = host.cpuid(7, 0)[1] & L7_EBX;
                if !host.invpcid() {
                    ebx &= !L7_EBX_INVPCID;
                }
                // EAX = 0: subleaf 0 is the only one.
                add(7, 0, true, [0, ebx, 0, 0]);
            }
            // Topology, up to the first invalid level; the x2APIC ID is the guest's (0).
            0xb => {
                for sub in 0..MAX_SUBLEAVES {
                    let [a, b, c, _] = host.cpuid(0xb, sub);
                    add(0xb, sub, true, [a, b, c, 0]);
                    if (c >> 8) & 0xff == 0 {
                        break;
                    }
                }
            }
            // Thermal and power, performance monitoring, XSAVE: not virtualized.
            6 | 0xa | 0xd => {}
            // Cache descriptors and the like: harmless to pass through.
            _ => add(leaf, 0, false, host.cpuid(leaf, 0)),
        }
    }
    add(
        0x4000_0000,
        0,
        false,
        [0x4000_0000, SIGNATURE[0], SIGNATURE[1], SIGNATURE[2]],
    );
    let [host_max_ext, bx, cx, dx] = host.cpuid(0x8000_0000, 0);
    if host_max_ext >= 0x8000_0000 {
        let max_ext = core::cmp::min(host_max_ext, MAX_EXT_LEAF);
        add(0x8000_0000, 0, false, [max_ext, bx, cx, dx]);
        if max_ext >= 0x8000_0001 {
            let [a, b, c, d] = host.cpuid(0x8000_0001, 0);
            add(0x8000_0001, 0, false, [a, b, c & X1_ECX, d & X1_EDX]);
        }
        for leaf in [0x8000_0002, 0x8000_0003, 0x8000_0004, 0x8000_0006] {
            if leaf <= max_ext {
                add(leaf, 0, false, host.cpuid(leaf, 0));
            }
        }
        // Physical and linear address sizes: the MMU uses the same MAXPHYADDR.
        if max_ext >= 0x8000_0008 {
            add(
                0x8000_0008,
                0,
                false,
                [host.cpuid(0x8000_0008, 0)[0] & 0xffff, 0, 0, 0],
            );
        }
    }
}

/// Turns a supported table (from [`fill_supported`]) into the table of a vCPU whose
/// userspace installs none (API version 1 behaviour): without the bits only userspace can
/// back (it would have to emulate them), with the hypervisor bit.
pub fn make_default(t: &mut Table) {
    if let Some(e) = t.entry_mut(1, 0) {
        e.regs[2] &= !(L1_ECX_X2APIC | L1_ECX_TSC_DEADLINE);
        e.regs[2] |= L1_ECX_HYPERVISOR;
        e.regs[3] &= !(L1_EDX_APIC | L1_EDX_MTRR);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn supported(host: &impl Host) -> Table {
        let mut t = Table::new();
        fill_supported(&mut t, host);
        t
    }

    fn default_table(supported: &Table) -> Table {
        let mut t = supported.clone();
        make_default(&mut t);
        t
    }

    /// A host CPU described by its leaves (subleaf 0 for unindexed ones); missing leaves
    /// read as Intel's out-of-range rule would, simplified to zeros.
    struct FakeHost {
        leaves: HashMap<(u32, u32), [u32; 4]>,
        invpcid: bool,
    }

    impl Host for FakeHost {
        fn cpuid(&self, leaf: u32, sub: u32) -> [u32; 4] {
            self.leaves
                .get(&(leaf, sub))
                .or_else(|| {
                    self.leaves
                        .get(&(leaf, 0))
                        .filter(|_| leaf != 4 && leaf != 0xb)
                })
                .copied()
                .unwrap_or([0; 4])
        }
        fn invpcid(&self) -> bool {
            self.invpcid
        }
    }

    fn intel_host() -> FakeHost {
        let v = vendor_regs(b"GenuineIntel");
        let mut leaves = HashMap::new();
        leaves.insert((0, 0), [0x16, v[0], v[2], v[1]]);
        // Every feature bit set: what survives is the whitelist.
        leaves.insert((1, 0), [0x906ea, 0x0810_0800, u32::MAX, u32::MAX]);
        leaves.insert((2, 0), [0x76036301, 0xf0b5ff, 0, 0xc30000]);
        leaves.insert((4, 0), [0x1c004121, 0x1c0003f, 0x3f, 0]);
        leaves.insert((4, 1), [0x1c004122, 0x1c0003f, 0x3f, 0]);
        leaves.insert((4, 2), [0x1c004143, 0x3c0003f, 0x3ff, 0]);
        leaves.insert((4, 3), [0, 0, 0, 0]);
        leaves.insert((6, 0), [0x77, 2, 9, 0]);
        leaves.insert((7, 0), [0, u32::MAX, u32::MAX, u32::MAX]);
        leaves.insert((0xa, 0), [0x7300404, 0, 0, 0x603]);
        leaves.insert((0xb, 0), [1, 2, 0x100, 6]);
        leaves.insert((0xb, 1), [4, 8, 0x201, 6]);
        leaves.insert((0xb, 2), [0, 0, 2, 6]);
        leaves.insert((0xd, 0), [0x1f, 0x440, 0x440, 0]);
        leaves.insert((0x8000_0000, 0), [0x8000_0008, 0, 0, 0]);
        leaves.insert((0x8000_0001, 0), [0, 0, u32::MAX, u32::MAX]);
        leaves.insert((0x8000_0002, 0), [1, 2, 3, 4]);
        leaves.insert((0x8000_0008, 0), [0x3027, 0x100d000, 0, 0]);
        FakeHost {
            leaves,
            invpcid: false,
        }
    }

    #[test]
    fn supported_keeps_to_the_whitelist() {
        let t = supported(&intel_host());
        assert_eq!(t.find(0, 0).unwrap().regs[0], MAX_BASIC_LEAF);
        let l1 = t.find(1, 0).unwrap().regs;
        assert_eq!(l1[0], 0x906ea);
        assert_eq!(l1[1], 0x0800, "no APIC ID or logical count from the host");
        assert_eq!(
            l1[2],
            L1_ECX | L1_ECX_X2APIC | L1_ECX_TSC_DEADLINE | L1_ECX_HYPERVISOR
        );
        assert_eq!(l1[3], L1_EDX | L1_EDX_APIC | L1_EDX_MTRR);
        assert_eq!(l1[2] & (1 << 5), 0, "no VMX");
        assert_eq!(l1[2] & (1 << 26 | 1 << 27), 0, "no XSAVE/OSXSAVE");
        assert_eq!(
            t.find(7, 0).unwrap().regs,
            [0, L7_EBX & !L7_EBX_INVPCID, 0, 0]
        );
        assert!(t.find(6, 0).is_none() && t.find(0xa, 0).is_none() && t.find(0xd, 0).is_none());
        // Cache parameters and topology up to their terminators, indexed.
        assert_eq!(t.find(4, 2).unwrap().regs[0], 0x1c004143);
        assert!(t.find(4, 3).is_some() && t.find(4, 4).is_none());
        assert_eq!(t.find(0xb, 1).unwrap().regs, [4, 8, 0x201, 0]);
        assert!(t.find(0xb, 3).is_none());
        assert_eq!(t.find(0x8000_0001, 0).unwrap().regs, [0, 0, X1_ECX, X1_EDX]);
        assert_eq!(t.find(0x8000_0008, 0).unwrap().regs, [0x3027, 0, 0, 0]);
        assert_eq!(
            t.find(0x4000_0000, 0).unwrap().regs,
            [0x4000_0000, SIGNATURE[0], SIGNATURE[1], 0]
        );
        let mut h = intel_host();
        h.invpcid = true;
        assert_eq!(supported(&h).find(7, 0).unwrap().regs[1], L7_EBX);
    }

    #[test]
    fn default_table_hides_userspace_backed_features() {
        let s = supported(&intel_host());
        let d = default_table(&s);
        let l1 = d.find(1, 0).unwrap().regs;
        assert_eq!(l1[2], L1_ECX | L1_ECX_HYPERVISOR);
        assert_eq!(l1[3], L1_EDX);
        assert_eq!(d.entries().len(), s.entries().len());
    }

    #[test]
    fn filter_masks_features_and_keeps_descriptions() {
        let s = supported(&intel_host());
        let all = |function, index| Entry {
            function,
            index,
            flags: 0,
            regs: [u32::MAX; 4],
        };
        let l1 = filter(&all(1, 0), &s).regs;
        assert_eq!(
            l1,
            [
                u32::MAX,
                u32::MAX,
                s.find(1, 0).unwrap().regs[2],
                s.find(1, 0).unwrap().regs[3]
            ]
        );
        // The hypervisor bit is userspace's choice.
        let mut no_hv = all(1, 0);
        no_hv.regs[2] = L1_ECX & !L1_ECX_HYPERVISOR;
        assert_eq!(filter(&no_hv, &s).regs[2], L1_ECX);
        assert_eq!(
            filter(&all(7, 0), &s).regs,
            [0, L7_EBX & !L7_EBX_INVPCID, 0, 0]
        );
        // Leaves shadowvm does not virtualize read 0, whatever userspace says.
        assert_eq!(filter(&all(0xd, 0), &s).regs, [0; 4]);
        assert_eq!(filter(&all(0xa, 0), &s).regs, [0; 4]);
        assert_eq!(filter(&all(0x12, 0), &s).regs, [0; 4]);
        // Free leaves pass: vendor, TSC frequency, hypervisor leaves, topology.
        for f in [0, 0x15, 0x16, 0x4000_0000, 0x4000_0010, 0xb, 0x8000_0002] {
            assert_eq!(filter(&all(f, 0), &s).regs, [u32::MAX; 4], "{f:#x}");
        }
        // Address sizes are the module's.
        assert_eq!(filter(&all(0x8000_0008, 0), &s).regs, [0x3027, 0, 0, 0]);
    }

    #[test]
    fn control_features_follow_the_table() {
        let all = ControlFeatures {
            nx: true,
            fsgsbase: true,
            pcid: true,
            smep: true,
            smap: true,
        };
        let mut h = intel_host();
        h.invpcid = true;
        assert_eq!(supported(&h).control_features(), all);
        assert_eq!(default_table(&supported(&h)).control_features(), all);
        let none = ControlFeatures {
            nx: false,
            fsgsbase: false,
            pcid: false,
            smep: false,
            smap: false,
        };
        assert_eq!(Table::new().control_features(), none);
        // Only SMEP in leaf 7, only NX in 0x80000001.
        let t = table(&[
            (7, 0, 1, [0, 1 << 7, 0, 0]),
            (0x8000_0001, 0, 0, [0, 0, 0, 1 << 20]),
        ]);
        let f = t.control_features();
        assert!(f.smep && f.nx && !f.smap && !f.fsgsbase && !f.pcid);
    }

    fn table(entries: &[(u32, u32, u32, [u32; 4])]) -> Table {
        let mut t = Table::new();
        for &(function, index, flags, regs) in entries {
            t.push(Entry {
                function,
                index,
                flags,
                regs,
            })
            .unwrap();
        }
        t
    }

    #[test]
    fn push_checks() {
        let mut t = Table::new();
        let e = |function, index, flags| Entry {
            function,
            index,
            flags,
            regs: [0; 4],
        };
        assert_eq!(t.push(e(1, 0, 2)), Err(TableError::BadFlags));
        t.push(e(4, 0, 1)).unwrap();
        t.push(e(4, 1, 1)).unwrap();
        assert_eq!(t.push(e(4, 1, 1)), Err(TableError::Duplicate));
        assert_eq!(t.push(e(4, 7, 0)), Err(TableError::Duplicate));
        t.push(e(1, 0, 0)).unwrap();
        assert_eq!(t.push(e(1, 5, 1)), Err(TableError::Duplicate));
        for f in 0..(MAX_ENTRIES as u32 - 3) {
            t.push(e(0x100 + f, 0, 0)).unwrap();
        }
        assert_eq!(t.entries().len(), MAX_ENTRIES);
        assert_eq!(t.push(e(0x1000, 0, 0)), Err(TableError::TooMany));
    }

    #[test]
    fn lookup_index_significance() {
        let t = table(&[
            (0, 0, 0, [0xb, 0, 0, 0]),
            (1, 0, 0, [1, 1, 1, 1]),
            (4, 0, 1, [40, 0, 0, 0]),
            (4, 1, 1, [41, 0, 0, 0]),
            (0xb, 0, 1, [1, 1, 0x100, 7]),
            (0xb, 1, 1, [4, 4, 0x201, 7]),
        ]);
        // Not significant: any subleaf.
        assert_eq!(t.lookup(1, 99), [1, 1, 1, 1]);
        assert_eq!(t.lookup(4, 1), [41, 0, 0, 0]);
        // In range, subleaf absent: zeros.
        assert_eq!(t.lookup(4, 2), [0; 4]);
        // Leaf 0xB past the last level: subleaf and x2APIC ID.
        assert_eq!(t.lookup(0xb, 5), [0, 0, 5, 7]);
        // In range, leaf absent: zeros.
        assert_eq!(t.lookup(3, 0), [0; 4]);
    }

    #[test]
    fn lookup_out_of_range_reads_the_highest_basic_leaf() {
        let v = vendor_regs(b"GenuineIntel");
        let t = table(&[
            (0, 0, 0, [2, v[0], v[2], v[1]]),
            (2, 0, 0, [0x22, 0x33, 0x44, 0x55]),
            (0x4000_0000, 0, 0, [0x4000_0001, 0, 0, 0]),
            (0x4000_0001, 0, 0, [9, 9, 9, 9]),
            (0x8000_0000, 0, 0, [0x8000_0001, 0, 0, 0]),
        ]);
        let top = [0x22, 0x33, 0x44, 0x55];
        assert_eq!(t.lookup(3, 0), top);
        assert_eq!(t.lookup(0x3fff_ffff, 0), top);
        assert_eq!(t.lookup(0x8000_0002, 0), top);
        assert_eq!(t.lookup(0x4000_0002, 0), top);
        assert_eq!(
            t.lookup(0xc000_0000, 0),
            top,
            "no 0xc0000000 leaf: out of range"
        );
        assert_eq!(t.lookup(0x4000_0001, 0), [9, 9, 9, 9]);
        // In range but absent: zeros.
        assert_eq!(t.lookup(0x8000_0001, 0), [0; 4]);
        assert_eq!(t.lookup(1, 0), [0; 4]);
        // An AMD vendor reads 0 out of range.
        let a = vendor_regs(b"AuthenticAMD");
        let amd = table(&[(0, 0, 0, [2, a[0], a[2], a[1]]), (2, 0, 0, top)]);
        assert_eq!(amd.lookup(3, 0), [0; 4]);
        assert_eq!(amd.lookup(2, 0), top);
        // No leaf 0 at all: nothing is out of range.
        assert_eq!(table(&[(2, 0, 0, top)]).lookup(3, 0), [0; 4]);
    }

    #[test]
    fn default_table_out_of_range_matches_the_old_fixed_table() {
        // Leaves above 0xd read the (absent, so zero) leaf 0xd, as the fixed table read 0.
        let d = default_table(&supported(&intel_host()));
        for f in [
            0xe,
            0x14,
            0x15,
            0x3fff_ffff,
            0x4000_0001,
            0x8000_0009,
            0xc000_0000,
        ] {
            assert_eq!(d.lookup(f, 0), [0; 4], "{f:#x}");
        }
    }
}
