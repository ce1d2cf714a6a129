// SPDX-License-Identifier: GPL-2.0

//! CPUID as the guest sees it: the host's values, filtered to what shadowvm virtualizes.
//! The tables and their rules are in `cpumodel::cpuid`; this file asks the host CPU.

use super::state::CR4_VALID;
use crate::cpumodel::cpuid::{self as model, Table};
use crate::uapi;
use crate::x86::{CR4_FSGSBASE, CR4_PCIDE, CR4_SMAP, CR4_SMEP};
use core::arch::x86_64::__cpuid_count;
use kernel::prelude::*;

fn host(leaf: u32, sub: u32) -> (u32, u32, u32, u32) {
    let r = __cpuid_count(leaf, sub);
    (r.eax, r.ebx, r.ecx, r.edx)
}

/// The host CPU and its VMX controls, for `cpumodel::cpuid::supported`.
struct ThisHost;

impl model::Host for ThisHost {
    fn cpuid(&self, leaf: u32, subleaf: u32) -> [u32; 4] {
        let (a, b, c, d) = host(leaf, subleaf);
        [a, b, c, d]
    }

    /// The secondary control "enable INVPCID" (else INVPCID is #UD in the guest).
    fn invpcid(&self) -> bool {
        crate::caps().map(|c| c.has_invpcid()).unwrap_or(false)
    }
}

/// A table, allocated, of what shadowvm can virtualize on this host
/// (`SHADOWVM_GET_SUPPORTED_CPUID`, and the mask of `SHADOWVM_SET_CPUID`).
pub(crate) fn supported_table() -> Result<KBox<Table>> {
    let mut t = KBox::new(Table::new(), GFP_KERNEL_ACCOUNT)?;
    model::fill_supported(&mut t, &ThisHost);
    Ok(t)
}

/// The table of a new vCPU (see `cpumodel::cpuid::make_default`).
pub(crate) fn default_table() -> Result<KBox<Table>> {
    let mut t = supported_table()?;
    model::make_default(&mut t);
    Ok(t)
}

/// The table SET_CPUID installs: `entries` with their feature bits filtered
/// (`cpumodel::cpuid::filter`). `EINVAL` for too many entries, unknown flags, nonzero
/// padding or two entries for the same leaf and subleaf.
pub(crate) fn filtered_table(entries: &[uapi::CpuidEntry]) -> Result<KBox<Table>> {
    let supported = supported_table()?;
    let mut t = KBox::new(Table::new(), GFP_KERNEL_ACCOUNT)?;
    for e in entries {
        if e.padding != 0 {
            return Err(EINVAL);
        }
        let entry = model::Entry {
            function: e.function,
            index: e.index,
            flags: e.flags,
            regs: [e.eax, e.ebx, e.ecx, e.edx],
        };
        t.push(model::filter(&entry, &supported))
            .map_err(|_| EINVAL)?;
    }
    Ok(t)
}

/// An entry in the ABI's layout.
pub(crate) fn to_uapi(e: &model::Entry) -> uapi::CpuidEntry {
    let [eax, ebx, ecx, edx] = e.regs;
    uapi::CpuidEntry {
        function: e.function,
        index: e.index,
        flags: e.flags,
        eax,
        ebx,
        ecx,
        edx,
        padding: 0,
    }
}

pub(crate) fn has_nx() -> bool {
    host(0x8000_0001, 0).3 & (1 << 20) != 0
}

pub(crate) fn has_gb_pages() -> bool {
    host(0x8000_0001, 0).3 & (1 << 26) != 0
}

/// CR4 bits the guest's MOV to CR4 may set: [`cr4_allowed`], minus the features its CPUID
/// table hides.
pub(crate) fn guest_cr4_allowed(table: &Table) -> u64 {
    let f = table.control_features();
    let mut v = cr4_allowed();
    for (has, bit) in [
        (f.fsgsbase, CR4_FSGSBASE),
        (f.pcid, CR4_PCIDE),
        (f.smep, CR4_SMEP),
        (f.smap, CR4_SMAP),
    ] {
        if !has {
            v &= !bit;
        }
    }
    v
}

/// Whether the guest's WRMSR may set EFER.NXE: the host has NX and the table shows it.
pub(crate) fn guest_nx(table: &Table) -> bool {
    has_nx() && table.control_features().nx
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
