// SPDX-License-Identifier: GPL-2.0

//! The hypervisor interface the run loop needs, implemented by `/dev/shadowvm` and `/dev/kvm`.
//! Register state uses the shadowvm ABI types as the common representation.

use crate::error::Result;
use shadowvm_uapi::{Regs, Sregs};

/// `From` both ways between [`CpuidEntry`] and a backend's CPUID leaf `$raw` (the same
/// fields, plus padding: zero on the way out, dropped on the way in). Defined before the
/// backend modules: a `macro_rules!` is visible only after its definition.
macro_rules! cpuid_entry_conversions {
    ($raw:ty) => {
        impl From<$raw> for CpuidEntry {
            fn from(e: $raw) -> Self {
                CpuidEntry {
                    function: e.function,
                    index: e.index,
                    flags: e.flags,
                    eax: e.eax,
                    ebx: e.ebx,
                    ecx: e.ecx,
                    edx: e.edx,
                }
            }
        }

        impl From<CpuidEntry> for $raw {
            fn from(e: CpuidEntry) -> Self {
                Self {
                    function: e.function,
                    index: e.index,
                    flags: e.flags,
                    eax: e.eax,
                    ebx: e.ebx,
                    ecx: e.ecx,
                    edx: e.edx,
                    ..Default::default()
                }
            }
        }
    };
}

pub mod kvm;
mod kvm_sys;
pub mod mmap;
pub mod shadowvm;

/// Why RUN returned, in backend-neutral form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exit {
    /// OUT: one value per element (string I/O gives several).
    IoOut {
        port: u16,
        size: u8,
        values: Vec<u64>,
    },
    /// IN: answer with `Backend::complete_io_in` before the next run.
    IoIn {
        port: u16,
        size: u8,
        count: u32,
    },
    /// Answer with `Backend::complete_mmio_read` before the next run.
    MmioRead {
        gpa: u64,
        len: u32,
    },
    MmioWrite {
        gpa: u64,
        len: u32,
        data: [u8; 8],
    },
    Hlt,
    /// Answer with `Backend::complete_hypercall` before the next run.
    Hypercall {
        nr: u64,
        args: [u64; 6],
    },
    Shutdown,
    FailEntry {
        reason: u64,
        qualification: u64,
        cpu: u32,
    },
    InternalError {
        suberror: u32,
        vmx_exit_reason: u32,
        qualification: u64,
        data: Vec<u64>,
    },
    /// RUN returned early (signal, immediate exit, time slice); nothing to do.
    Intr,
    /// The guest can take an interrupt now (asked for with
    /// `Backend::set_request_interrupt_window`).
    IrqWindowOpen,
    /// RDMSR of an MSR the launcher owns (or the backend does not know): answer with
    /// `Backend::complete_msr` before the next run.
    MsrRead {
        index: u32,
    },
    /// WRMSR likewise; `complete_msr` says whether it raises #GP.
    MsrWrite {
        index: u32,
        data: u64,
    },
    /// A backend-specific exit the launcher does not handle.
    Other(String),
}

impl Exit {
    /// Statistics key of the exit.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::IoOut { .. } | Self::IoIn { .. } => "io",
            Self::MmioRead { .. } | Self::MmioWrite { .. } => "mmio",
            Self::Hlt => "hlt",
            Self::Hypercall { .. } => "hypercall",
            Self::Shutdown => "shutdown",
            Self::FailEntry { .. } => "fail_entry",
            Self::InternalError { .. } => "internal_error",
            Self::Intr => "intr",
            Self::IrqWindowOpen => "irq_window",
            Self::MsrRead { .. } | Self::MsrWrite { .. } => "msr",
            Self::Other(_) => "other",
        }
    }
}

/// One CPUID leaf (the `kvm_cpuid_entry2` / `shadowvm_cpuid_entry` layout without padding).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuidEntry {
    pub function: u32,
    pub index: u32,
    /// `CPUID_FLAG_SIGNIFICANT_INDEX` when `index` (ECX) selects a sub-leaf.
    pub flags: u32,
    pub eax: u32,
    pub ebx: u32,
    pub ecx: u32,
    pub edx: u32,
}

/// `CpuidEntry::flags`: the leaf has sub-leaves selected by ECX.
pub const CPUID_FLAG_SIGNIFICANT_INDEX: u32 = 1;

/// What the backend can do beyond running the guest (ABI v2). A backend without `irq` runs
/// guests without interrupts, as before: a HLT then ends the run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// `inject_interrupt`, `inject_nmi` and the interrupt window work.
    pub irq: bool,
    /// RDMSR/WRMSR of the MSRs in `crate::msr::OWNED` exit as `MsrRead`/`MsrWrite`.
    pub user_msr: bool,
    /// `supported_cpuid`/`set_cpuid` work.
    pub cpuid: bool,
    /// `tsc_khz` and the guest TSC through `get_msrs` work.
    pub tsc: bool,
    /// Guest writes of IA32_TSC_DEADLINE reach the launcher, so CPUID may offer the
    /// TSC-deadline timer.
    pub tsc_deadline: bool,
}

/// One VM with one vCPU.
pub trait Backend {
    /// "shadowvm" or "kvm".
    fn name(&self) -> &'static str;
    /// Guest memory; index = guest-physical address.
    fn memory(&mut self) -> &mut [u8];
    fn set_state(&mut self, regs: &Regs, sregs: &Sregs) -> Result<()>;
    fn regs(&mut self) -> Result<Regs>;
    /// Enters the guest until the next exit userspace must see.
    fn run(&mut self) -> Result<Exit>;
    /// Supplies the values of the last `Exit::IoIn`.
    fn complete_io_in(&mut self, values: &[u64]);
    /// Supplies the bytes of the last `Exit::MmioRead` (its `len` of them).
    fn complete_mmio_read(&mut self, data: &[u8]);
    /// Supplies the return value of the last `Exit::Hypercall`.
    fn complete_hypercall(&mut self, ret: u64);
    /// The run structure's `immediate_exit` byte, for a signal handler to set. Valid as long
    /// as the backend lives.
    fn immediate_exit_ptr(&mut self) -> *mut u8;
    /// The backend's own statistics (MMU counters, exits seen by the hypervisor).
    fn stats(&mut self) -> Result<Vec<(String, u64)>>;

    /// What of the rest of this trait works.
    fn capabilities(&self) -> Capabilities;
    /// Queues external interrupt `vector` for delivery at the next entry; only when
    /// `ready_for_interrupt_injection` said so (like KVM_INTERRUPT without an in-kernel irqchip).
    fn inject_interrupt(&mut self, vector: u8) -> Result<()>;
    /// Queues an NMI; the backend delivers it when the guest is not blocking NMIs.
    fn inject_nmi(&mut self) -> Result<()>;
    /// Asks the next RUN to return with `Exit::IrqWindowOpen` as soon as the guest can take an
    /// interrupt.
    fn set_request_interrupt_window(&mut self, on: bool);
    /// At the last exit: IF=1, no STI/MOV SS shadow, and no interrupt already queued.
    fn ready_for_interrupt_injection(&mut self) -> bool;
    /// RFLAGS.IF at the last exit.
    fn guest_if(&mut self) -> bool;
    /// Answers the last `Exit::MsrRead` (`data`) or `Exit::MsrWrite` (`data` ignored); `gp`
    /// makes the instruction raise #GP(0) instead.
    fn complete_msr(&mut self, data: u64, gp: bool);
    /// The CPUID leaves the backend can give the guest, with the host's values.
    fn supported_cpuid(&mut self) -> Result<Vec<CpuidEntry>>;
    /// The guest's CPUID table (before the first RUN).
    fn set_cpuid(&mut self, entries: &[CpuidEntry]) -> Result<()>;
    /// Reads the backend-owned MSRs `indices` (for example IA32_TSC).
    fn get_msrs(&mut self, indices: &[u32]) -> Result<Vec<u64>>;
    /// Writes backend-owned MSRs.
    #[allow(dead_code)] // part of the backend interface; nothing sets MSRs at boot yet
    fn set_msrs(&mut self, entries: &[(u32, u64)]) -> Result<()>;
    /// The guest TSC frequency in kHz.
    fn tsc_khz(&mut self) -> Result<u32>;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each backend's CPUID leaf converts from and to [`CpuidEntry`] field by field, with
    /// zero padding: a leaf whose fields all differ shows a swapped or dropped one.
    #[test]
    fn cpuid_entry_conversions_keep_every_field() {
        let leaf = CpuidEntry {
            function: 0x8000_0001,
            index: 2,
            flags: 1,
            eax: 0x11,
            ebx: 0x22,
            ecx: 0x33,
            edx: 0x44,
        };
        let want = [0x8000_0001, 2, 1, 0x11, 0x22, 0x33, 0x44];
        let k = kvm_sys::KvmCpuidEntry2::from(leaf);
        assert_eq!(
            [k.function, k.index, k.flags, k.eax, k.ebx, k.ecx, k.edx],
            want
        );
        assert_eq!(k.padding, [0; 3]);
        assert_eq!(CpuidEntry::from(k), leaf);
        let u = shadowvm_uapi::CpuidEntry::from(leaf);
        assert_eq!(
            [u.function, u.index, u.flags, u.eax, u.ebx, u.ecx, u.edx],
            want
        );
        assert_eq!(u.padding, 0);
        assert_eq!(CpuidEntry::from(u), leaf);
    }
}
