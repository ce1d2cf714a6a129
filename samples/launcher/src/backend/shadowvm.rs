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
    /// The last exit was an MSR exit, whose details `complete_msr` fills in.
    pending_msr: bool,
    /// An interrupt was queued since the last exit: the run structure's
    /// `ready_for_interrupt_injection` does not know it yet.
    interrupt_queued: bool,
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
        let vm = Self {
            mem,
            run,
            fd,
            pending_msr: false,
            interrupt_queued: false,
        };
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

    /// The answer to the MSR exit in the run structure: `data` for a RDMSR (a WRMSR keeps
    /// the guest's value), or #GP(0).
    fn complete_msr_raw(&mut self, data: u64, gp: bool) {
        let run = self.snapshot();
        let mut area = run.exit;
        let m = area.get_mut::<uapi::ExitMsr>();
        m.error = u8::from(gp);
        if run.exit_reason == uapi::SHADOWVM_EXIT_X86_RDMSR {
            m.data = data;
        }
        self.write_exit_area(area);
    }

    /// GET_MSRS/SET_MSRS on `entries`: an error unless the module took all of them (it
    /// stops at the first MSR it does not own or whose value it refuses).
    fn msrs(&mut self, cmd: u32, name: &str, entries: &mut [uapi::MsrEntry]) -> Result<()> {
        let mut m = uapi::Msrs {
            nmsrs: entries.len() as u32,
            flags: 0,
            entries: entries.as_mut_ptr() as u64,
        };
        let done =
            ioctl(&self.fd, cmd, &mut m).map_err(|e| Error::os(format!("{name} failed: {e}")))?;
        match entries.get(done as usize) {
            Some(e) => Err(Error::os(format!(
                "{name}: the module does not take MSR {:#x} (value {:#x})",
                e.index, e.data
            ))),
            None => Ok(()),
        }
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
        self.pending_msr = false;
        self.interrupt_queued = false;
        match ioctl::<u8>(&self.fd, uapi::SHADOWVM_RUN, ptr::null_mut()) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => return Ok(Exit::Intr),
            Err(e) => return Err(Error::os(format!("SHADOWVM_RUN failed: {e}"))),
        }
        let run = self.snapshot();
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
            uapi::SHADOWVM_EXIT_IRQ_WINDOW_OPEN => Exit::IrqWindowOpen,
            uapi::SHADOWVM_EXIT_X86_RDMSR | uapi::SHADOWVM_EXIT_X86_WRMSR => {
                let m = *run.msr();
                // Until the launcher answers, the instruction raises #GP.
                self.complete_msr_raw(0, true);
                self.pending_msr = true;
                if run.exit_reason == uapi::SHADOWVM_EXIT_X86_RDMSR {
                    Exit::MsrRead { index: m.index }
                } else {
                    Exit::MsrWrite {
                        index: m.index,
                        data: m.data,
                    }
                }
            }
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
        let has = |cap: u32| {
            // CHECK_CAP takes the capability number itself as its argument.
            ioctl::<u8>(&self.fd, uapi::SHADOWVM_CHECK_CAP, cap as usize as *mut u8)
                .is_ok_and(|v| v > 0)
        };
        Capabilities {
            irq: has(uapi::SHADOWVM_CAP_IRQ),
            user_msr: has(uapi::SHADOWVM_CAP_USER_MSR),
            cpuid: has(uapi::SHADOWVM_CAP_CPUID),
            tsc: has(uapi::SHADOWVM_CAP_TSC),
            // Every MSR the module does not own exits, IA32_TSC_DEADLINE included.
            tsc_deadline: has(uapi::SHADOWVM_CAP_USER_MSR),
        }
    }

    fn inject_interrupt(&mut self, vector: u8) -> Result<()> {
        let mut i = uapi::Interrupt {
            irq: u32::from(vector),
            padding: 0,
        };
        ioctl(&self.fd, uapi::SHADOWVM_INTERRUPT, &mut i).map_err(|e| {
            Error::os(format!(
                "SHADOWVM_INTERRUPT of vector {vector:#x} failed: {e}"
            ))
        })?;
        self.interrupt_queued = true;
        Ok(())
    }

    fn inject_nmi(&mut self) -> Result<()> {
        ioctl::<u8>(&self.fd, uapi::SHADOWVM_NMI, ptr::null_mut())
            .map_err(|e| Error::os(format!("SHADOWVM_NMI failed: {e}")))?;
        Ok(())
    }

    fn set_request_interrupt_window(&mut self, on: bool) {
        // SAFETY: in bounds of the run mapping; a byte userspace owns.
        unsafe {
            ptr::write_volatile(
                ptr::addr_of_mut!((*self.run_ptr()).request_interrupt_window),
                u8::from(on),
            )
        };
    }

    fn ready_for_interrupt_injection(&mut self) -> bool {
        // The run structure describes the last exit: an interrupt queued since then waits.
        !self.interrupt_queued && self.snapshot().ready_for_interrupt_injection != 0
    }

    fn guest_if(&mut self) -> bool {
        self.snapshot().if_flag != 0
    }

    fn complete_msr(&mut self, data: u64, gp: bool) {
        if std::mem::take(&mut self.pending_msr) {
            self.complete_msr_raw(data, gp);
        }
    }

    fn supported_cpuid(&mut self) -> Result<Vec<CpuidEntry>> {
        let mut entries =
            vec![uapi::CpuidEntry::default(); uapi::SHADOWVM_CPUID_MAX_ENTRIES as usize];
        let mut c = uapi::Cpuid {
            nent: entries.len() as u32,
            flags: 0,
            entries: entries.as_mut_ptr() as u64,
        };
        ioctl(&self.fd, uapi::SHADOWVM_GET_SUPPORTED_CPUID, &mut c)
            .map_err(|e| Error::os(format!("SHADOWVM_GET_SUPPORTED_CPUID failed: {e}")))?;
        entries.truncate(c.nent as usize);
        Ok(entries.into_iter().map(CpuidEntry::from).collect())
    }

    fn set_cpuid(&mut self, entries: &[CpuidEntry]) -> Result<()> {
        let mut table: Vec<uapi::CpuidEntry> = entries
            .iter()
            .copied()
            .map(uapi::CpuidEntry::from)
            .collect();
        let mut c = uapi::Cpuid {
            nent: table.len() as u32,
            flags: 0,
            entries: table.as_mut_ptr() as u64,
        };
        ioctl(&self.fd, uapi::SHADOWVM_SET_CPUID, &mut c).map_err(|e| {
            Error::os(format!(
                "SHADOWVM_SET_CPUID of {} leaves failed: {e}",
                table.len()
            ))
        })?;
        Ok(())
    }

    fn get_msrs(&mut self, indices: &[u32]) -> Result<Vec<u64>> {
        let mut entries: Vec<uapi::MsrEntry> = indices
            .iter()
            .map(|&index| uapi::MsrEntry {
                index,
                reserved: 0,
                data: 0,
            })
            .collect();
        self.msrs(uapi::SHADOWVM_GET_MSRS, "SHADOWVM_GET_MSRS", &mut entries)?;
        Ok(entries.iter().map(|e| e.data).collect())
    }

    fn set_msrs(&mut self, values: &[(u32, u64)]) -> Result<()> {
        let mut entries: Vec<uapi::MsrEntry> = values
            .iter()
            .map(|&(index, data)| uapi::MsrEntry {
                index,
                reserved: 0,
                data,
            })
            .collect();
        self.msrs(uapi::SHADOWVM_SET_MSRS, "SHADOWVM_SET_MSRS", &mut entries)
    }

    fn tsc_khz(&mut self) -> Result<u32> {
        let khz = ioctl::<u8>(&self.fd, uapi::SHADOWVM_GET_TSC_KHZ, ptr::null_mut())
            .map_err(|e| Error::os(format!("SHADOWVM_GET_TSC_KHZ failed: {e}")))?;
        Ok(khz as u32)
    }
}

cpuid_entry_conversions!(uapi::CpuidEntry);
