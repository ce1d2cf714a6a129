// SPDX-License-Identifier: GPL-2.0

//! The hypervisor interface the run loop needs, implemented by `/dev/shadowvm` and `/dev/kvm`.
//! Register state uses the shadowvm ABI types as the common representation.

use crate::error::Result;
use shadowvm_uapi::{Regs, Sregs};

pub mod kvm;
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
            Self::Other(_) => "other",
        }
    }
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
}
