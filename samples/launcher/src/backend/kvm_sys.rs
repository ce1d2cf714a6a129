// SPDX-License-Identifier: GPL-2.0

//! The part of the `/dev/kvm` interface the KVM backend uses: ioctl numbers, `#[repr(C)]`
//! structures and constants written from the kernel's UAPI headers (`<linux/kvm.h>` and
//! x86's `<asm/kvm.h>`, GPL-2.0 WITH Linux-syscall-note), and owned wrappers of the system,
//! VM and vCPU file descriptors. It replaces rust-vmm's `kvm-ioctls`, whose `kvm-bindings`
//! dependency is Apache-2.0 only and so does not combine with GPL-2.0. The unit test in
//! `kvm_sys/tests.rs` compares every size, offset and constant here with `<linux/kvm.h>`.

use super::mmap::Mmap;
use shadowvm_uapi::{io, ior, iow, iowr};
use std::fs::{File, OpenOptions};
use std::io as stdio;
use std::mem::{align_of, size_of};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr;

#[cfg(test)]
mod tests;

// ---------------------------------------------------------------------------------------------
// Constants.
// ---------------------------------------------------------------------------------------------

/// ioctl type byte of every KVM command.
pub const KVMIO: u32 = 0xAE;
/// The only API version KVM has had since Linux 2.6.22; anything else must be refused.
pub const KVM_API_VERSION: u32 = 12;
/// Interrupt vectors: the size of the pending-interrupt bitmap in `kvm_sregs`.
pub const KVM_NR_INTERRUPTS: usize = 256;
/// `KVM_MAX_CPUID_ENTRIES` of the kernel (not UAPI): the most entries KVM_GET_SUPPORTED_CPUID
/// can return and KVM_SET_CPUID2 accepts.
pub const CPUID_MAX_ENTRIES: usize = 256;
/// `MAX_IO_MSRS` of the kernel (not UAPI): KVM_GET_MSRS/KVM_SET_MSRS take fewer entries.
pub const MSRS_MAX_ENTRIES: usize = 256;

pub const KVM_EXIT_IO: u32 = 2;
pub const KVM_EXIT_HYPERCALL: u32 = 3;
pub const KVM_EXIT_HLT: u32 = 5;
pub const KVM_EXIT_MMIO: u32 = 6;
pub const KVM_EXIT_IRQ_WINDOW_OPEN: u32 = 7;
pub const KVM_EXIT_SHUTDOWN: u32 = 8;
pub const KVM_EXIT_FAIL_ENTRY: u32 = 9;
pub const KVM_EXIT_INTR: u32 = 10;
pub const KVM_EXIT_INTERNAL_ERROR: u32 = 17;
pub const KVM_EXIT_X86_RDMSR: u32 = 29;
pub const KVM_EXIT_X86_WRMSR: u32 = 30;

/// `kvm_run.io.direction` of an IN.
pub const KVM_EXIT_IO_IN: u8 = 0;

pub const KVM_CAP_X86_USER_SPACE_MSR: u32 = 188;
pub const KVM_CAP_X86_MSR_FILTER: u32 = 189;

/// `KVM_CAP_X86_USER_SPACE_MSR` argument bits: which refused accesses exit to userspace.
pub const KVM_MSR_EXIT_REASON_INVAL: u32 = 1 << 0;
pub const KVM_MSR_EXIT_REASON_UNKNOWN: u32 = 1 << 1;
pub const KVM_MSR_EXIT_REASON_FILTER: u32 = 1 << 2;

/// `kvm_msr_filter_range.flags`: the range applies to reads, writes.
pub const KVM_MSR_FILTER_READ: u32 = 1 << 0;
pub const KVM_MSR_FILTER_WRITE: u32 = 1 << 1;
/// `kvm_msr_filter.flags`: MSRs outside every range are allowed.
pub const KVM_MSR_FILTER_DEFAULT_ALLOW: u32 = 0;
pub const KVM_MSR_FILTER_MAX_RANGES: usize = 16;

// ---------------------------------------------------------------------------------------------
// Structures.
// ---------------------------------------------------------------------------------------------

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct KvmRegs {
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rsp: u64,
    pub rbp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    pub rip: u64,
    pub rflags: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct KvmSegment {
    pub base: u64,
    pub limit: u32,
    pub selector: u16,
    pub type_: u8,
    pub present: u8,
    pub dpl: u8,
    pub db: u8,
    pub s: u8,
    pub l: u8,
    pub g: u8,
    pub avl: u8,
    pub unusable: u8,
    pub padding: u8,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct KvmDtable {
    pub base: u64,
    pub limit: u16,
    pub padding: [u16; 3],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct KvmSregs {
    pub cs: KvmSegment,
    pub ds: KvmSegment,
    pub es: KvmSegment,
    pub fs: KvmSegment,
    pub gs: KvmSegment,
    pub ss: KvmSegment,
    pub tr: KvmSegment,
    pub ldt: KvmSegment,
    pub gdt: KvmDtable,
    pub idt: KvmDtable,
    pub cr0: u64,
    pub cr2: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub cr8: u64,
    pub efer: u64,
    pub apic_base: u64,
    pub interrupt_bitmap: [u64; KVM_NR_INTERRUPTS.div_ceil(64)],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct KvmUserspaceMemoryRegion {
    pub slot: u32,
    pub flags: u32,
    pub guest_phys_addr: u64,
    pub memory_size: u64,
    pub userspace_addr: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct KvmCpuidEntry2 {
    pub function: u32,
    pub index: u32,
    pub flags: u32,
    pub eax: u32,
    pub ebx: u32,
    pub ecx: u32,
    pub edx: u32,
    pub padding: [u32; 3],
}

/// `struct kvm_cpuid2` with room for `N` entries (`N = 0` is the C header alone, which is
/// what the ioctl numbers encode).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct KvmCpuid2<const N: usize> {
    pub nent: u32,
    pub padding: u32,
    pub entries: [KvmCpuidEntry2; N],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct KvmMsrEntry {
    pub index: u32,
    pub reserved: u32,
    pub data: u64,
}

/// `struct kvm_msrs` with room for `N` entries, like `KvmCpuid2`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct KvmMsrs<const N: usize> {
    pub nmsrs: u32,
    pub pad: u32,
    pub entries: [KvmMsrEntry; N],
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct KvmEnableCap {
    pub cap: u32,
    pub flags: u32,
    pub args: [u64; 4],
    pub pad: [u8; 64],
}

impl KvmEnableCap {
    pub fn new(cap: u32, arg0: u64) -> Self {
        Self {
            cap,
            flags: 0,
            args: [arg0, 0, 0, 0],
            pad: [0; 64],
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct KvmMsrFilterRange {
    pub flags: u32,
    pub nmsrs: u32,
    pub base: u32,
    /// One bit per MSR from `base`: 1 allows the accesses in `flags`, 0 denies them.
    pub bitmap: *const u8,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct KvmMsrFilter {
    pub flags: u32,
    pub ranges: [KvmMsrFilterRange; KVM_MSR_FILTER_MAX_RANGES],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct KvmInterrupt {
    pub irq: u32,
}

/// Size of the exit union of `struct kvm_run` (its `padding` member).
pub const KVM_RUN_EXIT_AREA_SIZE: usize = 256;

/// The exit union of `struct kvm_run`: read and written as one of the `ExitMember` types.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug)]
pub struct KvmExitArea(pub [u8; KVM_RUN_EXIT_AREA_SIZE]);

/// The start of `struct kvm_run`, up to and including the exit union; the rest (sync
/// registers) is not used.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct KvmRun {
    pub request_interrupt_window: u8,
    /// Written by the launcher's signal handlers at any time: only through raw pointers.
    pub immediate_exit: u8,
    pub padding1: [u8; 6],
    pub exit_reason: u32,
    pub ready_for_interrupt_injection: u8,
    pub if_flag: u8,
    pub flags: u16,
    pub cr8: u64,
    pub apic_base: u64,
    pub exit: KvmExitArea,
}

/// `kvm_run.io` (KVM_EXIT_IO): the data is `count` elements of `size` bytes at
/// `data_offset` from the start of the kvm_run mapping.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct KvmExitIo {
    pub direction: u8,
    pub size: u8,
    pub port: u16,
    pub count: u32,
    pub data_offset: u64,
}

/// `kvm_run.mmio` (KVM_EXIT_MMIO).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct KvmExitMmio {
    pub phys_addr: u64,
    pub data: [u8; 8],
    pub len: u32,
    pub is_write: u8,
    /// Tail padding in C; explicit so that every byte is read and written back.
    pub pad: [u8; 3],
}

/// `kvm_run.hypercall` (KVM_EXIT_HYPERCALL).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct KvmExitHypercall {
    pub nr: u64,
    pub args: [u64; 6],
    pub ret: u64,
    pub longmode: u32,
    /// `pad` in older headers, the upper half of a `flags` union member in newer ones;
    /// kept so that every byte is read and written back.
    pub pad: u32,
}

/// `kvm_run.fail_entry` (KVM_EXIT_FAIL_ENTRY).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct KvmExitFailEntry {
    pub hardware_entry_failure_reason: u64,
    pub cpu: u32,
    /// Tail padding in C, explicit like `KvmExitMmio::pad`.
    pub pad: u32,
}

/// `kvm_run.internal` (KVM_EXIT_INTERNAL_ERROR).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct KvmExitInternal {
    pub suberror: u32,
    pub ndata: u32,
    pub data: [u64; 16],
}

/// `kvm_run.msr` (KVM_EXIT_X86_RDMSR/WRMSR).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct KvmExitMsr {
    pub error: u8,
    pub pad: [u8; 7],
    pub reason: u32,
    pub index: u32,
    pub data: u64,
}

/// `struct kvm_stats_header`: the start of a binary statistics file (KVM_GET_STATS_FD,
/// Documentation/virt/kvm/api.rst). Offsets are from the start of the file.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvmStatsHeader {
    pub flags: u32,
    /// Bytes of each descriptor's name, trailing NULs included.
    pub name_size: u32,
    pub num_desc: u32,
    pub id_offset: u32,
    pub desc_offset: u32,
    pub data_offset: u32,
}

/// `struct kvm_stats_desc` up to its flexible `name` member: each descriptor in the file is
/// this followed by `KvmStatsHeader::name_size` bytes of name.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvmStatsDesc {
    /// Type (`KVM_STATS_TYPE_*`), unit and base of the statistic.
    pub flags: u32,
    pub exponent: i16,
    /// Number of u64 values (1 for a counter, the bucket count for a histogram).
    pub size: u16,
    /// Offset of the first value from the data block (`KvmStatsHeader::data_offset`).
    pub offset: u32,
    pub bucket_size: u32,
}

/// `KvmStatsDesc::flags`: the statistic's type.
pub const KVM_STATS_TYPE_MASK: u32 = 0xf;
/// A counter that only grows: its difference between two reads counts events.
pub const KVM_STATS_TYPE_CUMULATIVE: u32 = 0;
/// A current value (a gauge).
pub const KVM_STATS_TYPE_INSTANT: u32 = 1;
/// The highest value seen.
pub const KVM_STATS_TYPE_PEAK: u32 = 2;

/// Reads a little-endian `u32`/`u16` at `at` of `bytes` (None past the end).
fn le_u32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        bytes.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn le_u16(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        bytes.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}

impl KvmStatsHeader {
    /// The header at the start of `file` (None when it is shorter than a header).
    pub fn parse(file: &[u8]) -> Option<Self> {
        let field = |i: usize| le_u32(file, i * 4);
        Some(Self {
            flags: field(0)?,
            name_size: field(1)?,
            num_desc: field(2)?,
            id_offset: field(3)?,
            desc_offset: field(4)?,
            data_offset: field(5)?,
        })
    }
}

impl KvmStatsDesc {
    /// The descriptor at offset `at` of `file`, and its name (up to the first NUL), for a
    /// file whose names take `name_size` bytes. None when either runs past the end.
    pub fn parse(file: &[u8], at: usize, name_size: usize) -> Option<(Self, String)> {
        let desc = Self {
            flags: le_u32(file, at)?,
            exponent: le_u16(file, at.checked_add(4)?)? as i16,
            size: le_u16(file, at.checked_add(6)?)?,
            offset: le_u32(file, at.checked_add(8)?)?,
            bucket_size: le_u32(file, at.checked_add(12)?)?,
        };
        let start = at.checked_add(size_of::<Self>())?;
        let name = file.get(start..start.checked_add(name_size)?)?;
        let name = name.split(|&b| b == 0).next().unwrap_or_default();
        Some((desc, String::from_utf8_lossy(name).into_owned()))
    }
}

/// A member of the kvm_run exit union.
///
/// # Safety
///
/// Implementors are `#[repr(C)]` structures of integers (valid for every bit pattern)
/// without implicit padding (so writing one back after reading it changes only the fields
/// set in between), no larger than `KvmExitArea` and aligned no more strictly.
pub unsafe trait ExitMember: Copy {}

// SAFETY: each is a `#[repr(C)]` structure of integers with explicit padding; sizes and
// alignments are checked by the `const` assertions below.
unsafe impl ExitMember for KvmExitIo {}
// SAFETY: as above.
unsafe impl ExitMember for KvmExitMmio {}
// SAFETY: as above.
unsafe impl ExitMember for KvmExitHypercall {}
// SAFETY: as above.
unsafe impl ExitMember for KvmExitFailEntry {}
// SAFETY: as above.
unsafe impl ExitMember for KvmExitInternal {}
// SAFETY: as above.
unsafe impl ExitMember for KvmExitMsr {}

const fn fits_exit_area<T>() -> bool {
    size_of::<T>() <= size_of::<KvmExitArea>() && align_of::<T>() <= align_of::<KvmExitArea>()
}
const _: () = assert!(
    fits_exit_area::<KvmExitIo>()
        && fits_exit_area::<KvmExitMmio>()
        && fits_exit_area::<KvmExitHypercall>()
        && fits_exit_area::<KvmExitFailEntry>()
        && fits_exit_area::<KvmExitInternal>()
        && fits_exit_area::<KvmExitMsr>()
);

// ---------------------------------------------------------------------------------------------
// ioctl numbers.
// ---------------------------------------------------------------------------------------------

// System ioctls (/dev/kvm).
pub const KVM_GET_API_VERSION: u32 = io(KVMIO, 0x00);
pub const KVM_CREATE_VM: u32 = io(KVMIO, 0x01);
pub const KVM_CHECK_EXTENSION: u32 = io(KVMIO, 0x03);
pub const KVM_GET_VCPU_MMAP_SIZE: u32 = io(KVMIO, 0x04);
pub const KVM_GET_SUPPORTED_CPUID: u32 = iowr::<KvmCpuid2<0>>(KVMIO, 0x05);

// VM ioctls.
pub const KVM_CREATE_VCPU: u32 = io(KVMIO, 0x41);
pub const KVM_SET_USER_MEMORY_REGION: u32 = iow::<KvmUserspaceMemoryRegion>(KVMIO, 0x46);
pub const KVM_SET_TSS_ADDR: u32 = io(KVMIO, 0x47);
pub const KVM_SET_IDENTITY_MAP_ADDR: u32 = iow::<u64>(KVMIO, 0x48);
pub const KVM_ENABLE_CAP: u32 = iow::<KvmEnableCap>(KVMIO, 0xa3);
pub const KVM_X86_SET_MSR_FILTER: u32 = iow::<KvmMsrFilter>(KVMIO, 0xc6);

// vCPU ioctls.
pub const KVM_RUN: u32 = io(KVMIO, 0x80);
pub const KVM_GET_REGS: u32 = ior::<KvmRegs>(KVMIO, 0x81);
pub const KVM_SET_REGS: u32 = iow::<KvmRegs>(KVMIO, 0x82);
pub const KVM_GET_SREGS: u32 = ior::<KvmSregs>(KVMIO, 0x83);
pub const KVM_SET_SREGS: u32 = iow::<KvmSregs>(KVMIO, 0x84);
pub const KVM_INTERRUPT: u32 = iow::<KvmInterrupt>(KVMIO, 0x86);
pub const KVM_GET_MSRS: u32 = iowr::<KvmMsrs<0>>(KVMIO, 0x88);
pub const KVM_SET_MSRS: u32 = iow::<KvmMsrs<0>>(KVMIO, 0x89);
pub const KVM_SET_CPUID2: u32 = iow::<KvmCpuid2<0>>(KVMIO, 0x90);
pub const KVM_NMI: u32 = io(KVMIO, 0x9a);
pub const KVM_GET_TSC_KHZ: u32 = io(KVMIO, 0xa3);

// VM and vCPU ioctl.
pub const KVM_GET_STATS_FD: u32 = io(KVMIO, 0xce);

// ---------------------------------------------------------------------------------------------
// File descriptor wrappers.
// ---------------------------------------------------------------------------------------------

/// An ioctl whose argument is a pointer to `T`; returns the non-negative result or errno.
///
/// # Safety
///
/// `cmd` must be a command whose argument is a `T` that the kernel reads and/or writes (or
/// takes no argument), and `arg` must point to a valid `T` for the whole call.
unsafe fn ioctl_ptr<T>(fd: BorrowedFd<'_>, cmd: u32, arg: *mut T) -> stdio::Result<i32> {
    // SAFETY: the caller guarantees that `arg` is what `cmd` expects.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::c_ulong::from(cmd), arg) };
    if r < 0 {
        Err(stdio::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// An ioctl whose argument is an integer (or that takes none, `arg` = 0). Only for the
/// by-value commands of this module (`io()` numbers: no argument structure).
fn ioctl_val(fd: BorrowedFd<'_>, cmd: u32, arg: libc::c_ulong) -> stdio::Result<i32> {
    // SAFETY: the commands passed here (KVM_GET_API_VERSION, KVM_CREATE_VM,
    // KVM_CHECK_EXTENSION, KVM_GET_VCPU_MMAP_SIZE, KVM_CREATE_VCPU, KVM_SET_TSS_ADDR,
    // KVM_RUN, KVM_NMI, KVM_GET_TSC_KHZ, KVM_GET_STATS_FD) take their argument by value, so
    // the kernel dereferences nothing of ours.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::c_ulong::from(cmd), arg) };
    if r < 0 {
        Err(stdio::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Wraps a file descriptor that an ioctl has just returned.
fn own_fd(fd: i32) -> OwnedFd {
    // SAFETY: the kernel returned a new descriptor, which nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn too_many(what: &str, n: usize, max: usize) -> stdio::Error {
    stdio::Error::new(
        stdio::ErrorKind::InvalidInput,
        format!("{n} {what} given, KVM takes at most {max}"),
    )
}

/// `/dev/kvm`.
pub struct Kvm {
    fd: OwnedFd,
}

impl Kvm {
    /// Opens `/dev/kvm` (close-on-exec) and checks its API version.
    pub fn open() -> stdio::Result<Self> {
        let file = OpenOptions::new().read(true).write(true).open("/dev/kvm")?;
        let kvm = Self { fd: file.into() };
        let version = ioctl_val(kvm.fd.as_fd(), KVM_GET_API_VERSION, 0)?;
        if version != KVM_API_VERSION as i32 {
            return Err(stdio::Error::other(format!(
                "KVM API version {version}, expected {KVM_API_VERSION}"
            )));
        }
        Ok(kvm)
    }

    /// KVM_GET_VCPU_MMAP_SIZE: the length of each vCPU's kvm_run mapping.
    fn vcpu_mmap_size(&self) -> stdio::Result<usize> {
        let size = ioctl_val(self.fd.as_fd(), KVM_GET_VCPU_MMAP_SIZE, 0)?;
        usize::try_from(size).map_err(|_| stdio::Error::from_raw_os_error(libc::EINVAL))
    }

    /// KVM_CREATE_VM of the default machine type.
    pub fn create_vm(&self) -> stdio::Result<VmFd> {
        let run_size = self.vcpu_mmap_size()?;
        if run_size < size_of::<KvmRun>() {
            return Err(stdio::Error::other(format!(
                "KVM_GET_VCPU_MMAP_SIZE is {run_size}, smaller than struct kvm_run"
            )));
        }
        let fd = own_fd(ioctl_val(self.fd.as_fd(), KVM_CREATE_VM, 0)?);
        Ok(VmFd { fd, run_size })
    }

    /// KVM_GET_SUPPORTED_CPUID: the CPUID leaves KVM can give a guest.
    pub fn supported_cpuid(&self) -> stdio::Result<Vec<KvmCpuidEntry2>> {
        let mut cpuid = Box::new(KvmCpuid2::<CPUID_MAX_ENTRIES> {
            nent: CPUID_MAX_ENTRIES as u32,
            padding: 0,
            entries: [KvmCpuidEntry2::default(); CPUID_MAX_ENTRIES],
        });
        // SAFETY: the command reads `nent` and writes at most that many entries after the
        // header, which `cpuid` has room for.
        unsafe { ioctl_ptr(self.fd.as_fd(), KVM_GET_SUPPORTED_CPUID, &mut *cpuid)? };
        let n = (cpuid.nent as usize).min(CPUID_MAX_ENTRIES);
        Ok(cpuid.entries[..n].to_vec())
    }
}

/// One range of a KVM_X86_SET_MSR_FILTER, with its bitmap borrowed for the call.
pub struct MsrFilterRange<'a> {
    /// `KVM_MSR_FILTER_READ` and/or `KVM_MSR_FILTER_WRITE`.
    pub flags: u32,
    pub base: u32,
    pub count: u32,
    /// One bit per MSR: 1 allows, 0 denies (the access exits with reason FILTER).
    pub bitmap: &'a [u8],
}

/// A VM.
pub struct VmFd {
    fd: OwnedFd,
    /// KVM_GET_VCPU_MMAP_SIZE, at least `size_of::<KvmRun>()`.
    run_size: usize,
}

impl VmFd {
    /// KVM_CHECK_EXTENSION on the VM: 0 if `cap` is absent, else a capability-specific
    /// positive value.
    pub fn check_extension(&self, cap: u32) -> stdio::Result<i32> {
        ioctl_val(
            self.fd.as_fd(),
            KVM_CHECK_EXTENSION,
            libc::c_ulong::from(cap),
        )
    }

    pub fn set_identity_map_address(&self, addr: u64) -> stdio::Result<()> {
        let mut addr = addr;
        // SAFETY: the command reads one u64.
        unsafe { ioctl_ptr(self.fd.as_fd(), KVM_SET_IDENTITY_MAP_ADDR, &mut addr) }.map(drop)
    }

    pub fn set_tss_address(&self, addr: u32) -> stdio::Result<()> {
        ioctl_val(self.fd.as_fd(), KVM_SET_TSS_ADDR, libc::c_ulong::from(addr)).map(drop)
    }

    /// KVM_SET_USER_MEMORY_REGION.
    ///
    /// # Safety
    ///
    /// `userspace_addr` must be a mapping of `memory_size` bytes, readable and writable,
    /// that stays mapped as long as the VM exists (the guest accesses it at any time).
    pub unsafe fn set_user_memory_region(
        &self,
        region: KvmUserspaceMemoryRegion,
    ) -> stdio::Result<()> {
        let mut region = region;
        // SAFETY: the command reads one `kvm_userspace_memory_region`; the caller
        // guarantees the memory it names.
        unsafe { ioctl_ptr(self.fd.as_fd(), KVM_SET_USER_MEMORY_REGION, &mut region) }.map(drop)
    }

    pub fn enable_cap(&self, cap: &KvmEnableCap) -> stdio::Result<()> {
        let mut cap = *cap;
        // SAFETY: the command reads one `kvm_enable_cap`.
        unsafe { ioctl_ptr(self.fd.as_fd(), KVM_ENABLE_CAP, &mut cap) }.map(drop)
    }

    /// KVM_X86_SET_MSR_FILTER with `flags` (`KVM_MSR_FILTER_DEFAULT_*`) for MSRs outside
    /// the ranges.
    pub fn set_msr_filter(&self, flags: u32, ranges: &[MsrFilterRange<'_>]) -> stdio::Result<()> {
        if ranges.len() > KVM_MSR_FILTER_MAX_RANGES {
            return Err(too_many(
                "MSR filter ranges",
                ranges.len(),
                KVM_MSR_FILTER_MAX_RANGES,
            ));
        }
        let unused = KvmMsrFilterRange {
            flags: 0,
            nmsrs: 0,
            base: 0,
            bitmap: ptr::null(),
        };
        let mut filter = KvmMsrFilter {
            flags,
            ranges: [unused; KVM_MSR_FILTER_MAX_RANGES],
        };
        for (raw, r) in filter.ranges.iter_mut().zip(ranges) {
            // The kernel copies `nmsrs` bits from the bitmap: it must hold them all.
            if (r.count as usize).div_ceil(8) > r.bitmap.len() {
                return Err(stdio::Error::new(
                    stdio::ErrorKind::InvalidInput,
                    format!(
                        "MSR filter range at {:#x}: {} MSRs but a bitmap of {} bytes",
                        r.base,
                        r.count,
                        r.bitmap.len()
                    ),
                ));
            }
            *raw = KvmMsrFilterRange {
                flags: r.flags,
                nmsrs: r.count,
                base: r.base,
                bitmap: r.bitmap.as_ptr(),
            };
        }
        // SAFETY: the command reads one `kvm_msr_filter` and, for each range (the first
        // with flags 0 ends the list), `nmsrs` bits of its bitmap, which are borrowed from
        // `ranges` and checked above to be long enough.
        unsafe { ioctl_ptr(self.fd.as_fd(), KVM_X86_SET_MSR_FILTER, &mut filter) }.map(drop)
    }

    /// KVM_CREATE_VCPU and the mapping of its kvm_run.
    pub fn create_vcpu(&self, id: u32) -> stdio::Result<VcpuFd> {
        let fd = own_fd(ioctl_val(
            self.fd.as_fd(),
            KVM_CREATE_VCPU,
            libc::c_ulong::from(id),
        )?);
        let run = Mmap::file(fd.as_fd(), self.run_size, 0)?;
        Ok(VcpuFd { run, fd })
    }

    /// KVM_GET_STATS_FD of the VM (Linux 5.14+).
    pub fn stats_fd(&self) -> stdio::Result<File> {
        stats_fd(self.fd.as_fd())
    }
}

fn stats_fd(fd: BorrowedFd<'_>) -> stdio::Result<File> {
    Ok(File::from(own_fd(ioctl_val(fd, KVM_GET_STATS_FD, 0)?)))
}

/// A vCPU and its kvm_run mapping.
///
/// # Invariants
///
/// `run` is the vCPU's kvm_run mapping, page aligned and at least `size_of::<KvmRun>()`
/// bytes (`VmFd::run_size`). The kernel writes it only during KVM_RUN, which takes
/// `&mut self`; a signal handler may write `immediate_exit` at any time, so the mapping is
/// only accessed through raw pointers to the fields used, never as a whole reference.
pub struct VcpuFd {
    // Field order: unmapped before the vCPU is closed.
    run: Mmap,
    fd: OwnedFd,
}

impl VcpuFd {
    fn run_ptr(&self) -> *mut KvmRun {
        self.run.as_ptr().cast()
    }

    /// KVM_RUN; the exit is then described by `exit_reason` and the exit union.
    pub fn run(&mut self) -> stdio::Result<()> {
        ioctl_val(self.fd.as_fd(), KVM_RUN, 0).map(drop)
    }

    pub fn exit_reason(&self) -> u32 {
        // SAFETY: the mapping holds a `KvmRun` (type invariant); a plain u32 read.
        unsafe { ptr::read_volatile(ptr::addr_of!((*self.run_ptr()).exit_reason)) }
    }

    pub fn ready_for_interrupt_injection(&self) -> bool {
        // SAFETY: as in `exit_reason`.
        let ready = unsafe {
            ptr::read_volatile(ptr::addr_of!(
                (*self.run_ptr()).ready_for_interrupt_injection
            ))
        };
        ready != 0
    }

    pub fn if_flag(&self) -> bool {
        // SAFETY: as in `exit_reason`.
        unsafe { ptr::read_volatile(ptr::addr_of!((*self.run_ptr()).if_flag)) != 0 }
    }

    pub fn set_request_interrupt_window(&mut self, on: bool) {
        // SAFETY: as in `exit_reason`; a plain u8 write.
        unsafe {
            ptr::write_volatile(
                ptr::addr_of_mut!((*self.run_ptr()).request_interrupt_window),
                u8::from(on),
            )
        }
    }

    /// `kvm_run.immediate_exit`, for a signal handler to set.
    pub fn immediate_exit_ptr(&mut self) -> *mut u8 {
        // SAFETY: as in `exit_reason`; only the address is computed.
        unsafe { ptr::addr_of_mut!((*self.run_ptr()).immediate_exit) }
    }

    /// The exit union read as `T`, the member of the last exit's reason.
    pub fn exit<T: ExitMember>(&self) -> T {
        // SAFETY: the mapping holds a `KvmRun` (type invariant); `T` fits the exit area's
        // size and alignment and is valid for any bits (`ExitMember`).
        unsafe { ptr::read_volatile(ptr::addr_of!((*self.run_ptr()).exit).cast::<T>()) }
    }

    /// Writes the exit union as `T`: the answer KVM_RUN hands to the guest.
    pub fn set_exit<T: ExitMember>(&mut self, member: T) {
        // SAFETY: as in `exit`.
        unsafe {
            ptr::write_volatile(
                ptr::addr_of_mut!((*self.run_ptr()).exit).cast::<T>(),
                member,
            )
        }
    }

    /// The bytes at `offset` of the kvm_run mapping that KVM_EXIT_IO's `data_offset`
    /// points into, or None if they are not inside it.
    fn io_data_ptr(&self, offset: usize, len: usize) -> Option<*mut u8> {
        let end = offset.checked_add(len)?;
        // I/O data sits after the header fields (a signal handler writes `immediate_exit`).
        if offset < size_of::<KvmRun>() - KVM_RUN_EXIT_AREA_SIZE || end > self.run.mapped_len() {
            return None;
        }
        // SAFETY: `offset` is inside the mapping, checked above.
        Some(unsafe { self.run.as_ptr().add(offset) })
    }

    /// Copies `buf.len()` bytes of I/O data at `offset` of the kvm_run mapping into `buf`.
    pub fn read_io_data(&self, offset: usize, buf: &mut [u8]) -> stdio::Result<()> {
        let src = self
            .io_data_ptr(offset, buf.len())
            .ok_or_else(|| stdio::Error::from_raw_os_error(libc::EFAULT))?;
        // SAFETY: `io_data_ptr` checked that the range is inside the mapping, which the
        // kernel does not write outside KVM_RUN (type invariant).
        unsafe { ptr::copy_nonoverlapping(src, buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }

    /// Copies `data` to `offset` of the kvm_run mapping (the answer to an IN).
    pub fn write_io_data(&mut self, offset: usize, data: &[u8]) -> stdio::Result<()> {
        let dst = self
            .io_data_ptr(offset, data.len())
            .ok_or_else(|| stdio::Error::from_raw_os_error(libc::EFAULT))?;
        // SAFETY: as in `read_io_data`.
        unsafe { ptr::copy_nonoverlapping(data.as_ptr(), dst, data.len()) };
        Ok(())
    }

    pub fn get_regs(&self) -> stdio::Result<KvmRegs> {
        let mut regs = KvmRegs::default();
        // SAFETY: the command writes one `kvm_regs`.
        unsafe { ioctl_ptr(self.fd.as_fd(), KVM_GET_REGS, &mut regs)? };
        Ok(regs)
    }

    pub fn set_regs(&self, regs: &KvmRegs) -> stdio::Result<()> {
        let mut regs = *regs;
        // SAFETY: the command reads one `kvm_regs`.
        unsafe { ioctl_ptr(self.fd.as_fd(), KVM_SET_REGS, &mut regs) }.map(drop)
    }

    pub fn get_sregs(&self) -> stdio::Result<KvmSregs> {
        let mut sregs = KvmSregs::default();
        // SAFETY: the command writes one `kvm_sregs`.
        unsafe { ioctl_ptr(self.fd.as_fd(), KVM_GET_SREGS, &mut sregs)? };
        Ok(sregs)
    }

    pub fn set_sregs(&self, sregs: &KvmSregs) -> stdio::Result<()> {
        let mut sregs = *sregs;
        // SAFETY: the command reads one `kvm_sregs`.
        unsafe { ioctl_ptr(self.fd.as_fd(), KVM_SET_SREGS, &mut sregs) }.map(drop)
    }

    /// KVM_SET_CPUID2.
    pub fn set_cpuid2(&self, entries: &[KvmCpuidEntry2]) -> stdio::Result<()> {
        if entries.len() > CPUID_MAX_ENTRIES {
            return Err(too_many("CPUID entries", entries.len(), CPUID_MAX_ENTRIES));
        }
        let mut cpuid = Box::new(KvmCpuid2::<CPUID_MAX_ENTRIES> {
            nent: entries.len() as u32,
            padding: 0,
            entries: [KvmCpuidEntry2::default(); CPUID_MAX_ENTRIES],
        });
        cpuid.entries[..entries.len()].copy_from_slice(entries);
        // SAFETY: the command reads the header and `nent` entries after it, all inside
        // `cpuid`.
        unsafe { ioctl_ptr(self.fd.as_fd(), KVM_SET_CPUID2, &mut *cpuid) }.map(drop)
    }

    /// KVM_GET_MSRS of `entries`' indices into their `data`; returns how many were read
    /// (KVM stops at the first it cannot read).
    pub fn get_msrs(&self, entries: &mut [KvmMsrEntry]) -> stdio::Result<usize> {
        let mut msrs = Self::msr_buffer(entries)?;
        // SAFETY: the command reads the header and `nmsrs` entries after it and writes
        // their data, all inside `msrs`.
        let n = unsafe { ioctl_ptr(self.fd.as_fd(), KVM_GET_MSRS, &mut *msrs)? };
        entries.copy_from_slice(&msrs.entries[..entries.len()]);
        Ok(n as usize)
    }

    /// KVM_SET_MSRS; returns how many were written (KVM stops at the first it refuses).
    pub fn set_msrs(&self, entries: &[KvmMsrEntry]) -> stdio::Result<usize> {
        let mut msrs = Self::msr_buffer(entries)?;
        // SAFETY: the command reads the header and `nmsrs` entries after it, all inside
        // `msrs`.
        let n = unsafe { ioctl_ptr(self.fd.as_fd(), KVM_SET_MSRS, &mut *msrs)? };
        Ok(n as usize)
    }

    fn msr_buffer(entries: &[KvmMsrEntry]) -> stdio::Result<Box<KvmMsrs<MSRS_MAX_ENTRIES>>> {
        if entries.len() >= MSRS_MAX_ENTRIES {
            return Err(too_many("MSRs", entries.len(), MSRS_MAX_ENTRIES - 1));
        }
        let mut msrs = Box::new(KvmMsrs::<MSRS_MAX_ENTRIES> {
            nmsrs: entries.len() as u32,
            pad: 0,
            entries: [KvmMsrEntry::default(); MSRS_MAX_ENTRIES],
        });
        msrs.entries[..entries.len()].copy_from_slice(entries);
        Ok(msrs)
    }

    /// KVM_INTERRUPT: queues external interrupt `vector` (no in-kernel interrupt
    /// controller).
    pub fn interrupt(&self, vector: u8) -> stdio::Result<()> {
        let mut irq = KvmInterrupt {
            irq: u32::from(vector),
        };
        // SAFETY: the command reads one `kvm_interrupt`.
        unsafe { ioctl_ptr(self.fd.as_fd(), KVM_INTERRUPT, &mut irq) }.map(drop)
    }

    pub fn nmi(&self) -> stdio::Result<()> {
        ioctl_val(self.fd.as_fd(), KVM_NMI, 0).map(drop)
    }

    /// KVM_GET_TSC_KHZ: the guest TSC frequency.
    pub fn tsc_khz(&self) -> stdio::Result<u32> {
        let khz = ioctl_val(self.fd.as_fd(), KVM_GET_TSC_KHZ, 0)?;
        u32::try_from(khz).map_err(|_| stdio::Error::from_raw_os_error(libc::EINVAL))
    }

    /// KVM_GET_STATS_FD of the vCPU (Linux 5.14+).
    pub fn stats_fd(&self) -> stdio::Result<File> {
        stats_fd(self.fd.as_fd())
    }
}
