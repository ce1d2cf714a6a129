// SPDX-License-Identifier: GPL-2.0

//! `/dev/kvm` backend on our own KVM interface (`kvm_sys`), for comparing shadowvm with
//! KVM's own shadow MMU (kvm-intel ept=0) and with EPT.

use super::kvm_sys::{
    Kvm, KvmCpuidEntry2, KvmEnableCap, KvmExitFailEntry, KvmExitHypercall, KvmExitInternal,
    KvmExitIo, KvmExitMmio, KvmExitMsr, KvmMsrEntry, KvmRegs, KvmSegment, KvmStatsDesc,
    KvmStatsHeader, KvmUserspaceMemoryRegion, MsrFilterRange, VcpuFd, VmFd, KVM_CAP_X86_MSR_FILTER,
    KVM_CAP_X86_USER_SPACE_MSR, KVM_EXIT_FAIL_ENTRY, KVM_EXIT_HLT, KVM_EXIT_HYPERCALL,
    KVM_EXIT_INTERNAL_ERROR, KVM_EXIT_INTR, KVM_EXIT_IO, KVM_EXIT_IO_IN, KVM_EXIT_IRQ_WINDOW_OPEN,
    KVM_EXIT_MMIO, KVM_EXIT_SHUTDOWN, KVM_EXIT_X86_RDMSR, KVM_EXIT_X86_WRMSR,
    KVM_MSR_EXIT_REASON_FILTER, KVM_MSR_EXIT_REASON_INVAL, KVM_MSR_EXIT_REASON_UNKNOWN,
    KVM_MSR_FILTER_DEFAULT_ALLOW, KVM_MSR_FILTER_READ, KVM_MSR_FILTER_WRITE,
    KVM_STATS_TYPE_CUMULATIVE, KVM_STATS_TYPE_INSTANT, KVM_STATS_TYPE_MASK, KVM_STATS_TYPE_PEAK,
};
use super::mmap::Mmap;
use super::{Backend, Capabilities, CpuidEntry, Exit};
use crate::error::{Error, Kind, Result};
use shadowvm_uapi::{Regs, Segment, Sregs};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;

/// Without unrestricted guest, VMX needs a real-mode TSS (three pages) and an identity-map
/// page table for paging-off guests; both sit just below the 4 GiB BIOS area, so guest
/// memory must end below them.
const IDENTITY_MAP_ADDR: u64 = 0xfffb_c000;
const TSS_ADDR: u32 = 0xfffb_d000;

pub struct KvmBackend {
    // Field order: vCPU and VM close before the memory they use is unmapped.
    vcpu: VcpuFd,
    _vm: VmFd,
    _kvm: Kvm,
    mem: Mmap,
    /// Where the last IN wants its data: offset in kvm_run, element size and count.
    pending_in: Option<(usize, u8, u32)>,
    /// The last exit was KVM_EXIT_X86_RDMSR/WRMSR, whose `msr` member `complete_msr` fills.
    pending_msr: bool,
    /// The host's CPUID as KVM can give it (KVM_GET_SUPPORTED_CPUID).
    supported: Vec<KvmCpuidEntry2>,
    /// Whether interrupts were queued with KVM_INTERRUPT since the last exit: KVM holds one.
    interrupt_queued: bool,
    /// The VM's and the vCPU's binary statistics, opened once so that a snapshot (at every
    /// benchmark mark) is one read of each data block; why not, when they cannot be read.
    stats_files: std::result::Result<[StatsFile; 2], String>,
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> Error {
    Error::new(Kind::Unavailable, format!("/dev/kvm: {what} failed: {e}"))
}

fn to_kvm_segment(s: &Segment) -> KvmSegment {
    KvmSegment {
        base: s.base,
        limit: s.limit,
        selector: s.selector,
        type_: s.type_,
        present: s.present,
        dpl: s.dpl,
        db: s.db,
        s: s.s,
        l: s.l,
        g: s.g,
        avl: s.avl,
        unusable: s.unusable,
        padding: 0,
    }
}

impl KvmBackend {
    pub fn open(mem_size: u64, prefault: bool) -> Result<Self> {
        if mem_size > IDENTITY_MAP_ADDR {
            return Err(Error::usage(format!(
                "--memory {mem_size:#x} is too large for the KVM backend: it must end below {IDENTITY_MAP_ADDR:#x}"
            )));
        }
        let kvm = Kvm::open().map_err(|e| {
            Error::new(
                Kind::Unavailable,
                format!("cannot open /dev/kvm: {e} (is kvm-intel loaded?)"),
            )
        })?;
        let vm = kvm
            .create_vm()
            .map_err(|e| unavailable("KVM_CREATE_VM", e))?;
        vm.set_identity_map_address(IDENTITY_MAP_ADDR)
            .map_err(|e| unavailable("KVM_SET_IDENTITY_MAP_ADDR", e))?;
        vm.set_tss_address(TSS_ADDR)
            .map_err(|e| unavailable("KVM_SET_TSS_ADDR", e))?;
        let len = usize::try_from(mem_size)
            .map_err(|_| Error::usage("--memory does not fit in the address space"))?;
        // With --prefault: allocated and locked like shadowvm's pinned guest memory, so
        // that no run pays host page allocation inside the guest and KVM's shadow-PTE
        // prefetch (which maps only pages the host already has) works from the first
        // fault. Without: faulted in lazily, as QEMU does (in Bochs, populating 64 MiB
        // costs about a guest second per run).
        let mem = if prefault {
            Mmap::anonymous_locked(len)
        } else {
            Mmap::anonymous(len)
        }
        .map_err(|e| {
            Error::new(
                Kind::Unavailable,
                format!(
                    "/dev/kvm: guest memory ({} MiB) could not be allocated and locked: {e} \
                     (raise the locked-memory limit, ulimit -l, or lower --memory)",
                    mem_size >> 20
                ),
            )
        })?;
        let region = KvmUserspaceMemoryRegion {
            slot: 0,
            flags: 0,
            guest_phys_addr: 0,
            memory_size: mem_size,
            userspace_addr: mem.as_ptr() as u64,
        };
        // SAFETY: the region is our own mapping of `mem_size` bytes, which outlives the VM
        // (field order in `KvmBackend`).
        unsafe { vm.set_user_memory_region(region) }
            .map_err(|e| unavailable("KVM_SET_USER_MEMORY_REGION", e))?;
        let vcpu = vm
            .create_vcpu(0)
            .map_err(|e| unavailable("KVM_CREATE_VCPU", e))?;
        // KVM rejects EFER.LME in SET_SREGS until the vCPU has CPUID with long mode.
        let cpuid = kvm
            .supported_cpuid()
            .map_err(|e| unavailable("KVM_GET_SUPPORTED_CPUID", e))?;
        vcpu.set_cpuid2(&cpuid)
            .map_err(|e| unavailable("KVM_SET_CPUID2", e))?;
        route_launcher_msrs(&vm)?;
        let stats_files = (|| {
            Ok([
                StatsFile::open("kvm.vm.", vm.stats_fd()?)?,
                StatsFile::open("kvm.vcpu.", vcpu.stats_fd()?)?,
            ])
        })()
        .map_err(|e: std::io::Error| format!("KVM_GET_STATS_FD (Linux 5.14+): {e}"));
        Ok(Self {
            vcpu,
            _vm: vm,
            _kvm: kvm,
            mem,
            pending_in: None,
            pending_msr: false,
            supported: cpuid,
            interrupt_queued: false,
            stats_files,
        })
    }

    /// KVM_EXIT_IO: an OUT's values, or an IN whose data `complete_io_in` fills. The data
    /// is `count` elements of `size` bytes at `data_offset` in the kvm_run mapping.
    fn io_exit(&mut self) -> Result<Exit> {
        let io: KvmExitIo = self.vcpu.exit();
        let (size, count) = (io.size, io.count);
        let off = usize::try_from(io.data_offset).unwrap_or(usize::MAX);
        if io.direction == KVM_EXIT_IO_IN {
            self.pending_in = Some((off, size, count));
            return Ok(Exit::IoIn {
                port: io.port,
                size,
                count,
            });
        }
        let n = usize::from(size).min(8);
        let values = (0..count as usize)
            .map(|i| {
                let mut b = [0u8; 8];
                self.vcpu
                    .read_io_data(off.saturating_add(i * n), &mut b[..n])
                    .map_err(|e| {
                        Error::os(format!(
                            "KVM_EXIT_IO OUT to port {:#x}: data at offset {off:#x} unreadable: {e}",
                            io.port
                        ))
                    })?;
                Ok(u64::from_le_bytes(b))
            })
            .collect::<Result<Vec<u64>>>()?;
        Ok(Exit::IoOut {
            port: io.port,
            size,
            values,
        })
    }
}

/// Makes guest RDMSR/WRMSR of the MSRs the launcher owns (`crate::msr::OWNED`: without an
/// in-kernel LAPIC KVM would silently accept APIC_BASE and TSC_DEADLINE and keep its own
/// MTRRs and MISC_ENABLE) and of MSRs KVM does not know or rejects exit to userspace, so the
/// launcher answers them the same way on every backend.
fn route_launcher_msrs(vm: &VmFd) -> Result<()> {
    let has = |cap| vm.check_extension(cap).is_ok_and(|v| v > 0);
    if !has(KVM_CAP_X86_USER_SPACE_MSR) || !has(KVM_CAP_X86_MSR_FILTER) {
        return Err(Error::new(
            Kind::Unavailable,
            "/dev/kvm lacks KVM_CAP_X86_USER_SPACE_MSR or KVM_CAP_X86_MSR_FILTER (Linux 5.10+ needed)",
        ));
    }
    let cap = KvmEnableCap::new(
        KVM_CAP_X86_USER_SPACE_MSR,
        u64::from(
            KVM_MSR_EXIT_REASON_FILTER | KVM_MSR_EXIT_REASON_UNKNOWN | KVM_MSR_EXIT_REASON_INVAL,
        ),
    );
    vm.enable_cap(&cap)
        .map_err(|e| unavailable("KVM_ENABLE_CAP(KVM_CAP_X86_USER_SPACE_MSR)", e))?;
    // All-zero bitmaps: every MSR of each range is denied, i.e. exits with reason FILTER.
    let deny = [0u8; 256 / 8];
    let ranges: Vec<MsrFilterRange<'_>> = crate::msr::OWNED
        .iter()
        .map(|r| MsrFilterRange {
            flags: KVM_MSR_FILTER_READ | KVM_MSR_FILTER_WRITE,
            base: *r.start(),
            count: r.end() - r.start() + 1,
            bitmap: &deny,
        })
        .collect();
    vm.set_msr_filter(KVM_MSR_FILTER_DEFAULT_ALLOW, &ranges)
        .map_err(|e| unavailable("KVM_X86_SET_MSR_FILTER", e))
}

impl Backend for KvmBackend {
    fn name(&self) -> &'static str {
        "kvm"
    }

    fn memory(&mut self) -> &mut [u8] {
        self.mem.as_mut_slice()
    }

    fn set_state(&mut self, regs: &Regs, sregs: &Sregs) -> Result<()> {
        let mut s = self
            .vcpu
            .get_sregs()
            .map_err(|e| Error::os(format!("KVM_GET_SREGS failed: {e}")))?;
        s.cs = to_kvm_segment(&sregs.cs);
        s.ds = to_kvm_segment(&sregs.ds);
        s.es = to_kvm_segment(&sregs.es);
        s.fs = to_kvm_segment(&sregs.fs);
        s.gs = to_kvm_segment(&sregs.gs);
        s.ss = to_kvm_segment(&sregs.ss);
        s.tr = to_kvm_segment(&sregs.tr);
        s.ldt = to_kvm_segment(&sregs.ldt);
        s.gdt.base = sregs.gdt.base;
        s.gdt.limit = sregs.gdt.limit;
        s.idt.base = sregs.idt.base;
        s.idt.limit = sregs.idt.limit;
        s.cr0 = sregs.cr0;
        s.cr2 = sregs.cr2;
        s.cr3 = sregs.cr3;
        s.cr4 = sregs.cr4;
        s.efer = sregs.efer;
        self.vcpu
            .set_sregs(&s)
            .map_err(|e| Error::os(format!("KVM_SET_SREGS failed: {e}")))?;
        let r = KvmRegs {
            rax: regs.rax,
            rbx: regs.rbx,
            rcx: regs.rcx,
            rdx: regs.rdx,
            rsi: regs.rsi,
            rdi: regs.rdi,
            rsp: regs.rsp,
            rbp: regs.rbp,
            r8: regs.r8,
            r9: regs.r9,
            r10: regs.r10,
            r11: regs.r11,
            r12: regs.r12,
            r13: regs.r13,
            r14: regs.r14,
            r15: regs.r15,
            rip: regs.rip,
            rflags: regs.rflags,
        };
        self.vcpu
            .set_regs(&r)
            .map_err(|e| Error::os(format!("KVM_SET_REGS failed: {e}")))
    }

    fn regs(&mut self) -> Result<Regs> {
        let r = self
            .vcpu
            .get_regs()
            .map_err(|e| Error::os(format!("KVM_GET_REGS failed: {e}")))?;
        Ok(Regs {
            rax: r.rax,
            rcx: r.rcx,
            rdx: r.rdx,
            rbx: r.rbx,
            rsp: r.rsp,
            rbp: r.rbp,
            rsi: r.rsi,
            rdi: r.rdi,
            r8: r.r8,
            r9: r.r9,
            r10: r.r10,
            r11: r.r11,
            r12: r.r12,
            r13: r.r13,
            r14: r.r14,
            r15: r.r15,
            rip: r.rip,
            rflags: r.rflags,
        })
    }

    fn run(&mut self) -> Result<Exit> {
        self.pending_in = None;
        self.pending_msr = false;
        self.interrupt_queued = false;
        match self.vcpu.run() {
            Ok(()) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EAGAIN)) => {
                return Ok(Exit::Intr)
            }
            Err(e) => return Err(Error::os(format!("KVM_RUN failed: {e}"))),
        }
        // Each exit reason's union member is read as a copy; answers are written back
        // through `set_exit` by the `complete_*` methods.
        let exit = match self.vcpu.exit_reason() {
            KVM_EXIT_IO => return self.io_exit(),
            KVM_EXIT_MMIO => {
                let mmio: KvmExitMmio = self.vcpu.exit();
                if mmio.is_write != 0 {
                    let mut data = [0u8; 8];
                    let n = (mmio.len as usize).min(data.len());
                    data[..n].copy_from_slice(&mmio.data[..n]);
                    Exit::MmioWrite {
                        gpa: mmio.phys_addr,
                        len: mmio.len,
                        data,
                    }
                } else {
                    Exit::MmioRead {
                        gpa: mmio.phys_addr,
                        len: mmio.len,
                    }
                }
            }
            KVM_EXIT_HLT => Exit::Hlt,
            KVM_EXIT_HYPERCALL => {
                let h: KvmExitHypercall = self.vcpu.exit();
                Exit::Hypercall {
                    nr: h.nr,
                    args: h.args,
                }
            }
            KVM_EXIT_SHUTDOWN => Exit::Shutdown,
            KVM_EXIT_FAIL_ENTRY => {
                let f: KvmExitFailEntry = self.vcpu.exit();
                Exit::FailEntry {
                    reason: f.hardware_entry_failure_reason,
                    qualification: 0,
                    cpu: f.cpu,
                }
            }
            KVM_EXIT_INTERNAL_ERROR => {
                let i: KvmExitInternal = self.vcpu.exit();
                let n = (i.ndata as usize).min(i.data.len());
                Exit::InternalError {
                    suberror: i.suberror,
                    vmx_exit_reason: 0,
                    qualification: 0,
                    data: i.data[..n].to_vec(),
                }
            }
            KVM_EXIT_INTR => Exit::Intr,
            KVM_EXIT_IRQ_WINDOW_OPEN => Exit::IrqWindowOpen,
            reason @ (KVM_EXIT_X86_RDMSR | KVM_EXIT_X86_WRMSR) => {
                let mut m: KvmExitMsr = self.vcpu.exit();
                // Until the launcher answers, an access that is never completed gives #GP.
                m.error = 1;
                self.vcpu.set_exit(m);
                self.pending_msr = true;
                if reason == KVM_EXIT_X86_RDMSR {
                    Exit::MsrRead { index: m.index }
                } else {
                    Exit::MsrWrite {
                        index: m.index,
                        data: m.data,
                    }
                }
            }
            other => Exit::Other(format!(
                "KVM exit reason {other} (KVM_EXIT_* in <linux/kvm.h>)"
            )),
        };
        Ok(exit)
    }

    fn complete_io_in(&mut self, values: &[u64]) {
        let Some((off, size, count)) = self.pending_in.take() else {
            return;
        };
        let n = usize::from(size).min(8);
        for (i, v) in values.iter().take(count as usize).enumerate() {
            // KVM never points data_offset outside the kvm_run mapping; if it did, the IN
            // would read what KVM left there, which is all that can be done.
            let _ = self
                .vcpu
                .write_io_data(off.saturating_add(i * n), &v.to_le_bytes()[..n]);
        }
    }

    fn complete_mmio_read(&mut self, data: &[u8]) {
        // KVM_RUN hands these bytes to the instruction; called right after a KVM_EXIT_MMIO
        // read, whose member is `mmio`.
        let mut mmio: KvmExitMmio = self.vcpu.exit();
        let n = data.len().min(mmio.data.len());
        mmio.data[..n].copy_from_slice(&data[..n]);
        self.vcpu.set_exit(mmio);
    }

    fn complete_hypercall(&mut self, ret: u64) {
        // Called right after a KVM_EXIT_HYPERCALL, whose member is `hypercall`.
        let mut h: KvmExitHypercall = self.vcpu.exit();
        h.ret = ret;
        self.vcpu.set_exit(h);
    }

    fn immediate_exit_ptr(&mut self) -> *mut u8 {
        self.vcpu.immediate_exit_ptr()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            irq: true,
            user_msr: true,
            cpuid: true,
            tsc: true,
            // KVM's WRMSR fastpath takes IA32_TSC_DEADLINE in the kernel, past the MSR
            // filter, and drops it when there is no in-kernel LAPIC (seen under Linux 7.2:
            // the write never exits), so the guest is not offered the mode.
            tsc_deadline: false,
        }
    }

    fn inject_interrupt(&mut self, vector: u8) -> Result<()> {
        self.vcpu
            .interrupt(vector)
            .map_err(|e| Error::os(format!("KVM_INTERRUPT of vector {vector:#x} failed: {e}")))?;
        self.interrupt_queued = true;
        Ok(())
    }

    fn inject_nmi(&mut self) -> Result<()> {
        self.vcpu
            .nmi()
            .map_err(|e| Error::os(format!("KVM_NMI failed: {e}")))
    }

    fn set_request_interrupt_window(&mut self, on: bool) {
        self.vcpu.set_request_interrupt_window(on);
    }

    fn ready_for_interrupt_injection(&mut self) -> bool {
        !self.interrupt_queued && self.vcpu.ready_for_interrupt_injection()
    }

    fn guest_if(&mut self) -> bool {
        self.vcpu.if_flag()
    }

    fn complete_msr(&mut self, data: u64, gp: bool) {
        if !std::mem::take(&mut self.pending_msr) {
            return;
        }
        // The last exit was KVM_EXIT_X86_RDMSR/WRMSR (`pending_msr`), whose member is `msr`.
        let mut m: KvmExitMsr = self.vcpu.exit();
        m.error = u8::from(gp);
        m.data = data;
        self.vcpu.set_exit(m);
    }

    fn supported_cpuid(&mut self) -> Result<Vec<CpuidEntry>> {
        Ok(self
            .supported
            .iter()
            .copied()
            .map(CpuidEntry::from)
            .collect())
    }

    fn set_cpuid(&mut self, entries: &[CpuidEntry]) -> Result<()> {
        let raw: Vec<KvmCpuidEntry2> = entries.iter().copied().map(KvmCpuidEntry2::from).collect();
        self.vcpu.set_cpuid2(&raw).map_err(|e| {
            Error::os(format!(
                "KVM_SET_CPUID2 of {} leaves failed: {e}",
                raw.len()
            ))
        })
    }

    fn get_msrs(&mut self, indices: &[u32]) -> Result<Vec<u64>> {
        let mut raw: Vec<KvmMsrEntry> = indices
            .iter()
            .map(|&index| KvmMsrEntry {
                index,
                ..Default::default()
            })
            .collect();
        let n = self
            .vcpu
            .get_msrs(&mut raw)
            .map_err(|e| Error::os(format!("KVM_GET_MSRS of {indices:#x?} failed: {e}")))?;
        if n != indices.len() {
            return Err(Error::os(format!(
                "KVM_GET_MSRS read only {n} of the MSRs {indices:#x?}"
            )));
        }
        Ok(raw.iter().map(|e| e.data).collect())
    }

    fn set_msrs(&mut self, entries: &[(u32, u64)]) -> Result<()> {
        let raw: Vec<KvmMsrEntry> = entries
            .iter()
            .map(|&(index, data)| KvmMsrEntry {
                index,
                data,
                ..Default::default()
            })
            .collect();
        let n = self
            .vcpu
            .set_msrs(&raw)
            .map_err(|e| Error::os(format!("KVM_SET_MSRS of {} MSRs failed: {e}", raw.len())))?;
        match entries.get(n) {
            None => Ok(()),
            Some((index, data)) => Err(Error::os(format!(
                "KVM_SET_MSRS refused MSR {index:#x} = {data:#x}"
            ))),
        }
    }

    fn tsc_khz(&mut self) -> Result<u32> {
        self.vcpu
            .tsc_khz()
            .map_err(|e| Error::os(format!("KVM_GET_TSC_KHZ failed: {e}")))
    }

    fn stats(&mut self) -> Result<Vec<(String, u64)>> {
        let files = self
            .stats_files
            .as_ref()
            .map_err(|e| Error::new(Kind::Unavailable, e.clone()))?;
        let mut out = Vec::new();
        for f in files {
            f.read_into(&mut out)
                .map_err(|e| Error::os(format!("reading KVM statistics: {e}")))?;
        }
        Ok(out)
    }
}

/// One binary statistics file (KVM_GET_STATS_FD): the single-value statistics' names and
/// offsets, read once; `read_into` re-reads only the data block.
struct StatsFile {
    file: File,
    /// Prefix of every name ("kvm.vm." or "kvm.vcpu.").
    prefix: &'static str,
    /// Where the data block starts in the file, and its length in bytes.
    data_offset: u64,
    data_len: usize,
    /// Name and byte offset in the data block of every single-value statistic.
    values: Vec<(String, usize)>,
}

impl StatsFile {
    fn open(prefix: &'static str, mut file: File) -> std::io::Result<Self> {
        let mut all = Vec::new();
        file.read_to_end(&mut all)?;
        let layout = parse_stats_layout(&all).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "malformed statistics header",
            )
        })?;
        Ok(Self {
            file,
            prefix,
            data_offset: layout.data_offset,
            data_len: all.len().saturating_sub(layout.data_offset as usize),
            values: layout.values,
        })
    }

    /// Appends the current value of every statistic to `out`.
    fn read_into(&self, out: &mut Vec<(String, u64)>) -> std::io::Result<()> {
        let mut data = vec![0u8; self.data_len];
        self.file.read_exact_at(&mut data, self.data_offset)?;
        for (name, at) in &self.values {
            let v = data
                .get(*at..at.saturating_add(8))
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes);
            if let Some(v) = v {
                out.push((format!("{}{name}", self.prefix), v));
            }
        }
        Ok(())
    }
}

/// Where a statistics file keeps its values.
struct StatsLayout {
    data_offset: u64,
    /// Name and byte offset in the data block of each single-value statistic (counters,
    /// gauges and peaks; histograms and unknown types are left out).
    values: Vec<(String, usize)>,
}

/// Reads the header and descriptors of a binary statistics file (Documentation/virt/kvm/
/// api.rst, KVM_GET_STATS_FD). None for a file too short for its header; descriptors that
/// run past the end are dropped.
fn parse_stats_layout(file: &[u8]) -> Option<StatsLayout> {
    let header = KvmStatsHeader::parse(file)?;
    let name_size = header.name_size as usize;
    let desc_size = std::mem::size_of::<KvmStatsDesc>().checked_add(name_size)?;
    let mut values = Vec::new();
    for i in 0..header.num_desc as usize {
        let at = (header.desc_offset as usize).checked_add(i.checked_mul(desc_size)?)?;
        let Some((desc, name)) = KvmStatsDesc::parse(file, at, name_size) else {
            break;
        };
        let single_value = matches!(
            desc.flags & KVM_STATS_TYPE_MASK,
            KVM_STATS_TYPE_CUMULATIVE | KVM_STATS_TYPE_INSTANT | KVM_STATS_TYPE_PEAK
        );
        if single_value && desc.size == 1 {
            values.push((name, desc.offset as usize));
        }
    }
    Some(StatsLayout {
        data_offset: u64::from(header.data_offset),
        values,
    })
}

cpuid_entry_conversions!(KvmCpuidEntry2);

/// The single-value statistics of a whole binary statistics file.
#[cfg(test)]
fn parse_binary_stats(file: &[u8]) -> Vec<(String, u64)> {
    let Some(layout) = parse_stats_layout(file) else {
        return Vec::new();
    };
    let data = file.get(layout.data_offset as usize..).unwrap_or_default();
    layout
        .values
        .into_iter()
        .filter_map(|(name, at)| {
            let b = data.get(at..at + 8)?;
            Some((name, u64::from_le_bytes(b.try_into().ok()?)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_stats_parse() {
        let name_size = 48usize;
        let descs = [
            ("pf_fixed", 1u16, 0u32),
            ("halt_wait_hist", 32, 8),
            ("exits", 1, 8 + 32 * 8),
        ];
        let desc_offset = 24 + 16; // header, then a 16-byte id string
        let data_offset = desc_offset + descs.len() * (16 + name_size);
        let mut f = vec![0u8; data_offset + (8 + 32 * 8 + 8)];
        f[4..8].copy_from_slice(&(name_size as u32).to_le_bytes());
        f[8..12].copy_from_slice(&(descs.len() as u32).to_le_bytes());
        f[12..16].copy_from_slice(&24u32.to_le_bytes());
        f[16..20].copy_from_slice(&(desc_offset as u32).to_le_bytes());
        f[20..24].copy_from_slice(&(data_offset as u32).to_le_bytes());
        for (i, (name, size, off)) in descs.iter().enumerate() {
            let d = desc_offset + i * (16 + name_size);
            f[d + 6..d + 8].copy_from_slice(&size.to_le_bytes());
            f[d + 8..d + 12].copy_from_slice(&off.to_le_bytes());
            f[d + 16..d + 16 + name.len()].copy_from_slice(name.as_bytes());
        }
        f[data_offset..data_offset + 8].copy_from_slice(&42u64.to_le_bytes());
        let e = data_offset + 8 + 32 * 8;
        f[e..e + 8].copy_from_slice(&7u64.to_le_bytes());
        assert_eq!(
            parse_binary_stats(&f),
            vec![("pf_fixed".to_string(), 42), ("exits".to_string(), 7)]
        );
        // Truncated input yields a prefix, never a panic.
        for cut in 0..f.len() {
            let _ = parse_binary_stats(&f[..cut]);
        }
    }
}
