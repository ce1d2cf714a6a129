// SPDX-License-Identifier: GPL-2.0

//! `/dev/shadowvm` backend, on the ABI in `rust/uapi`.

use super::mmap::Mmap;
use super::{Backend, Capabilities, CpuidEntry, Exit};
use crate::error::{Error, Kind, Result};
use shadowvm_uapi as uapi;
use shadowvm_uapi::{Regs, Run, Sregs};
use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::ptr;

pub const DEVICE: &str = "/dev/shadowvm";

pub struct ShadowVm {
    // Field order: the mappings go before the fd is closed.
    mem: Mmap,
    run: Mmap,
    fd: OwnedFd,
}

/// ioctl with a pointer argument; returns the non-negative result or errno.
fn ioctl<T>(fd: &OwnedFd, cmd: u32, arg: *mut T) -> io::Result<i32> {
    // SAFETY: `cmd` encodes the size of `T` and `arg` points to a valid `T` (or is null for
    // commands without argument); the kernel validates everything else.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), cmd as libc::c_ulong, arg) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// The error of every ABI v2 call this backend does not make yet.
fn needs_abi_v2(what: &str) -> Error {
    Error::new(
        Kind::Unavailable,
        format!("{what} is not supported by the shadowvm backend yet (it needs the ABI v2 calls behind SHADOWVM_CAP_IRQ, _USER_MSR, _CPUID and _TSC, which this launcher does not make yet); run with --backend=kvm for interrupts"),
    )
}

fn unavailable(what: &str, e: io::Error) -> Error {
    Error::new(Kind::Unavailable, format!("{DEVICE}: {what} failed: {e}"))
}

impl ShadowVm {
    /// Opens a VM with `mem_size` bytes of guest memory and its vCPU.
    pub fn open(mem_size: u64) -> Result<Self> {
        let file = OpenOptions::new().read(true).write(true).open(DEVICE).map_err(|e| {
            Error::new(
                Kind::Unavailable,
                format!("cannot open {DEVICE}: {e} (is the shadowvm module loaded? try: insmod shadowvm.ko)"),
            )
        })?;
        let fd = OwnedFd::from(file);
        let version = ioctl::<u8>(&fd, uapi::SHADOWVM_GET_API_VERSION, ptr::null_mut())
            .map_err(|e| unavailable("SHADOWVM_GET_API_VERSION", e))?;
        if version != uapi::SHADOWVM_API_VERSION as i32 {
            return Err(Error::new(
                Kind::Unavailable,
                format!(
                    "shadowvm module API version {version}, this launcher needs {}: rebuild \
                     and reload the module (make module) or rebuild the launcher from the \
                     same tree",
                    uapi::SHADOWVM_API_VERSION
                ),
            ));
        }
        let mut m = uapi::Memory {
            size: mem_size,
            flags: 0,
        };
        ioctl(&fd, uapi::SHADOWVM_SET_MEMORY, &mut m)
            .map_err(|e| unavailable("SHADOWVM_SET_MEMORY", e))?;
        let len = usize::try_from(mem_size)
            .map_err(|_| Error::usage("--memory does not fit in the address space"))?;
        let mem = Mmap::file(fd.as_fd(), len, uapi::SHADOWVM_MEMORY_MMAP_OFFSET)
            .map_err(|e| unavailable("mmap of guest memory", e))?;
        ioctl::<u8>(&fd, uapi::SHADOWVM_CREATE_VCPU, ptr::null_mut())
            .map_err(|e| unavailable("SHADOWVM_CREATE_VCPU", e))?;
        let run = Mmap::file(
            fd.as_fd(),
            uapi::SHADOWVM_RUN_MMAP_SIZE as usize,
            uapi::SHADOWVM_RUN_MMAP_OFFSET,
        )
        .map_err(|e| unavailable("mmap of the run structure", e))?;
        let vm = Self { mem, run, fd };
        let header = vm.snapshot();
        if header.version != uapi::SHADOWVM_RUN_VERSION || (header.size as usize) < size_of::<Run>()
        {
            return Err(Error::new(
                Kind::Unavailable,
                format!(
                    "{DEVICE} run structure is version {} size {}, expected version {} size {}",
                    header.version,
                    header.size,
                    uapi::SHADOWVM_RUN_VERSION,
                    size_of::<Run>()
                ),
            ));
        }
        Ok(vm)
    }

    fn run_ptr(&self) -> *mut Run {
        self.run.as_ptr().cast()
    }

    /// Copy of the run structure. Volatile because the kernel writes it and a signal handler
    /// may write `immediate_exit` at any time.
    fn snapshot(&self) -> Run {
        // SAFETY: the run mapping is one page, page aligned, and holds a `Run`, a type valid
        // for any bit pattern.
        unsafe { ptr::read_volatile(self.run_ptr()) }
    }

    fn write_exit_area(&mut self, area: uapi::ExitArea) {
        // SAFETY: as in `snapshot`; only the exit area, which no signal handler touches.
        unsafe { ptr::write_volatile(ptr::addr_of_mut!((*self.run_ptr()).exit), area) };
    }
}

impl Backend for ShadowVm {
    fn name(&self) -> &'static str {
        "shadowvm"
    }

    fn memory(&mut self) -> &mut [u8] {
        self.mem.as_mut_slice()
    }

    fn set_state(&mut self, regs: &Regs, sregs: &Sregs) -> Result<()> {
        let (mut r, mut s) = (*regs, *sregs);
        ioctl(&self.fd, uapi::SHADOWVM_SET_SREGS, &mut s).map_err(|e| {
            Error::os(format!(
                "SHADOWVM_SET_SREGS failed: {e} (the module rejected the boot state)"
            ))
        })?;
        ioctl(&self.fd, uapi::SHADOWVM_SET_REGS, &mut r)
            .map_err(|e| Error::os(format!("SHADOWVM_SET_REGS failed: {e}")))?;
        Ok(())
    }

    fn regs(&mut self) -> Result<Regs> {
        let mut r = Regs::default();
        ioctl(&self.fd, uapi::SHADOWVM_GET_REGS, &mut r)
            .map_err(|e| Error::os(format!("SHADOWVM_GET_REGS failed: {e}")))?;
        Ok(r)
    }

    fn run(&mut self) -> Result<Exit> {
        let run = loop {
            match ioctl::<u8>(&self.fd, uapi::SHADOWVM_RUN, ptr::null_mut()) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => return Ok(Exit::Intr),
                Err(e) => return Err(Error::os(format!("SHADOWVM_RUN failed: {e}"))),
            }
            let run = self.snapshot();
            match run.exit_reason {
                // MSRs the module does not own: #GP(0), what KVM does for an MSR it does
                // not know (the launcher has no MSR emulation yet).
                uapi::SHADOWVM_EXIT_X86_RDMSR | uapi::SHADOWVM_EXIT_X86_WRMSR => {
                    let mut area = run.exit;
                    area.get_mut::<uapi::ExitMsr>().error = 1;
                    self.write_exit_area(area);
                }
                _ => break run,
            }
        };
        Ok(match run.exit_reason {
            uapi::SHADOWVM_EXIT_IO => {
                let io = run.io();
                if io.direction == uapi::SHADOWVM_IO_OUT {
                    Exit::IoOut {
                        port: io.port,
                        size: io.size,
                        values: vec![io.data],
                    }
                } else {
                    Exit::IoIn {
                        port: io.port,
                        size: io.size,
                        count: io.count.max(1),
                    }
                }
            }
            uapi::SHADOWVM_EXIT_MMIO => {
                let m = run.mmio();
                if m.is_write != 0 {
                    Exit::MmioWrite {
                        gpa: m.gpa,
                        len: m.len,
                        data: m.data,
                    }
                } else {
                    Exit::MmioRead {
                        gpa: m.gpa,
                        len: m.len,
                    }
                }
            }
            uapi::SHADOWVM_EXIT_HLT => Exit::Hlt,
            uapi::SHADOWVM_EXIT_HYPERCALL => Exit::Hypercall {
                nr: run.hypercall().nr,
                args: run.hypercall().args,
            },
            uapi::SHADOWVM_EXIT_SHUTDOWN => Exit::Shutdown,
            uapi::SHADOWVM_EXIT_FAIL_ENTRY => {
                let f = run.fail_entry();
                Exit::FailEntry {
                    reason: f.hardware_entry_failure_reason,
                    qualification: f.exit_qualification,
                    cpu: f.cpu,
                }
            }
            uapi::SHADOWVM_EXIT_INTERNAL_ERROR => {
                let i = run.internal_error();
                Exit::InternalError {
                    suberror: i.suberror,
                    vmx_exit_reason: i.vmx_exit_reason,
                    qualification: i.exit_qualification,
                    data: i.data.to_vec(),
                }
            }
            uapi::SHADOWVM_EXIT_INTR => Exit::Intr,
            r => Exit::Other(format!("unknown shadowvm exit reason {r}")),
        })
    }

    fn complete_io_in(&mut self, values: &[u64]) {
        let mut area = self.snapshot().exit;
        area.get_mut::<uapi::ExitIo>().data = values.first().copied().unwrap_or(0);
        self.write_exit_area(area);
    }

    fn complete_mmio_read(&mut self, data: &[u8]) {
        let mut area = self.snapshot().exit;
        let m = area.get_mut::<uapi::ExitMmio>();
        let n = data.len().min(m.data.len());
        m.data[..n].copy_from_slice(&data[..n]);
        self.write_exit_area(area);
    }

    fn complete_hypercall(&mut self, ret: u64) {
        let mut area = self.snapshot().exit;
        area.get_mut::<uapi::ExitHypercall>().ret = ret;
        self.write_exit_area(area);
    }

    fn immediate_exit_ptr(&mut self) -> *mut u8 {
        // SAFETY: in bounds of the run mapping; no reference is created.
        unsafe { ptr::addr_of_mut!((*self.run_ptr()).immediate_exit) }
    }

    fn stats(&mut self) -> Result<Vec<(String, u64)>> {
        // Ask for the count, then fetch; retry if the set grew in between.
        let mut entries: Vec<uapi::StatEntry> = Vec::new();
        for _ in 0..4 {
            let mut s = uapi::Stats {
                count: entries.len() as u32,
                flags: 0,
                entries: entries.as_mut_ptr() as u64,
            };
            match ioctl(&self.fd, uapi::SHADOWVM_GET_STATS, &mut s) {
                Ok(_) => {
                    entries.truncate(s.count as usize);
                    return Ok(entries
                        .iter()
                        .map(|e| (e.name_str().unwrap_or("(bad name)").to_string(), e.value))
                        .collect());
                }
                Err(e) if e.raw_os_error() == Some(libc::E2BIG) => {
                    let n = s.count.min(uapi::SHADOWVM_STATS_MAX) as usize;
                    entries = vec![uapi::StatEntry::default(); n.max(entries.len() + 1)];
                }
                Err(e) => return Err(Error::os(format!("SHADOWVM_GET_STATS failed: {e}"))),
            }
        }
        Err(Error::os(
            "SHADOWVM_GET_STATS kept reporting more statistics than it returned",
        ))
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }

    fn inject_interrupt(&mut self, _vector: u8) -> Result<()> {
        Err(needs_abi_v2("interrupt injection"))
    }

    fn inject_nmi(&mut self) -> Result<()> {
        Err(needs_abi_v2("NMI injection"))
    }

    fn set_request_interrupt_window(&mut self, _on: bool) {}

    fn ready_for_interrupt_injection(&mut self) -> bool {
        false
    }

    fn guest_if(&mut self) -> bool {
        self.regs()
            .is_ok_and(|r| r.rflags & uapi::SHADOWVM_RFLAGS_IF != 0)
    }

    fn complete_msr(&mut self, _data: u64, _gp: bool) {}

    fn supported_cpuid(&mut self) -> Result<Vec<CpuidEntry>> {
        Err(needs_abi_v2("SHADOWVM_GET_SUPPORTED_CPUID"))
    }

    fn set_cpuid(&mut self, _entries: &[CpuidEntry]) -> Result<()> {
        Err(needs_abi_v2("SHADOWVM_SET_CPUID"))
    }

    fn get_msrs(&mut self, _indices: &[u32]) -> Result<Vec<u64>> {
        Err(needs_abi_v2("SHADOWVM_GET_MSRS"))
    }

    fn set_msrs(&mut self, _entries: &[(u32, u64)]) -> Result<()> {
        Err(needs_abi_v2("SHADOWVM_SET_MSRS"))
    }

    fn tsc_khz(&mut self) -> Result<u32> {
        Err(needs_abi_v2("SHADOWVM_GET_TSC_KHZ"))
    }
}
