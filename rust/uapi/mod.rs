// SPDX-License-Identifier: GPL-2.0

//! The `/dev/shadowvm` ABI: ioctl numbers, constants and `#[repr(C)]` structures.
//!
//! This file is the single source of truth for the interface. It is pure `core` Rust with no
//! `crate::` paths and no crate attributes, so that
//! - the kernel module includes it with `#[path = "uapi/mod.rs"] mod uapi;`, and
//! - the host crate `shadowvm-uapi` (`lib.rs`) re-exports it for userspace.
//!
//! `shadowvm.h` mirrors it for C; a cargo test compiles the header and compares every size,
//! offset and constant, so the two cannot drift. `Documentation/uapi.md` describes the
//! semantics.
//!
//! Naming: constants carry the same `SHADOWVM_` names as in C; a C `struct shadowvm_foo_bar`
//! is the Rust type `FooBar`. Every structure the kernel copies from userspace consists of
//! plain integers only, so any bit pattern is a valid value; fields that hold enumerations or
//! flags are integers with named constants. Reserved and padding fields must be zero on input
//! (the module rejects anything else with `EINVAL`) and are zero on output.

use core::mem::{offset_of, size_of};

// ---------------------------------------------------------------------------------------------
// ioctl number encoding (Linux asm-generic/ioctl.h, as used on x86).
// ---------------------------------------------------------------------------------------------

/// Bits of the command number (`nr`).
pub const IOC_NRBITS: u32 = 8;
/// Bits of the ioctl type ("magic").
pub const IOC_TYPEBITS: u32 = 8;
/// Bits of the argument size.
pub const IOC_SIZEBITS: u32 = 14;
/// Bits of the transfer direction.
pub const IOC_DIRBITS: u32 = 2;

/// Shift of `nr` in a command.
pub const IOC_NRSHIFT: u32 = 0;
/// Shift of the type in a command.
pub const IOC_TYPESHIFT: u32 = IOC_NRSHIFT + IOC_NRBITS;
/// Shift of the size in a command.
pub const IOC_SIZESHIFT: u32 = IOC_TYPESHIFT + IOC_TYPEBITS;
/// Shift of the direction in a command.
pub const IOC_DIRSHIFT: u32 = IOC_SIZESHIFT + IOC_SIZEBITS;

/// No data transfer.
pub const IOC_NONE: u32 = 0;
/// Userspace writes, the kernel reads (`copy_from_user`).
pub const IOC_WRITE: u32 = 1;
/// The kernel writes, userspace reads (`copy_to_user`).
pub const IOC_READ: u32 = 2;

/// `_IOC(dir, type, nr, size)`. Fails to compile (const panic) if `size` does not fit.
pub const fn ioc(dir: u32, ty: u32, nr: u32, size: usize) -> u32 {
    assert!(size < (1 << IOC_SIZEBITS), "ioctl argument too large");
    assert!(ty < (1 << IOC_TYPEBITS) && nr < (1 << IOC_NRBITS));
    (dir << IOC_DIRSHIFT) | ((size as u32) << IOC_SIZESHIFT) | (ty << IOC_TYPESHIFT) | nr
}

/// `_IO(type, nr)`: no argument structure.
pub const fn io(ty: u32, nr: u32) -> u32 {
    ioc(IOC_NONE, ty, nr, 0)
}

/// `_IOR(type, nr, T)`: the kernel fills a `T`.
pub const fn ior<T>(ty: u32, nr: u32) -> u32 {
    ioc(IOC_READ, ty, nr, size_of::<T>())
}

/// `_IOW(type, nr, T)`: the kernel reads a `T`.
pub const fn iow<T>(ty: u32, nr: u32) -> u32 {
    ioc(IOC_WRITE, ty, nr, size_of::<T>())
}

/// `_IOWR(type, nr, T)`: the kernel reads and writes back a `T`.
pub const fn iowr<T>(ty: u32, nr: u32) -> u32 {
    ioc(IOC_READ | IOC_WRITE, ty, nr, size_of::<T>())
}

/// `_IOC_NR(cmd)`.
pub const fn ioc_nr(cmd: u32) -> u32 {
    (cmd >> IOC_NRSHIFT) & ((1 << IOC_NRBITS) - 1)
}

/// `_IOC_TYPE(cmd)`.
pub const fn ioc_type(cmd: u32) -> u32 {
    (cmd >> IOC_TYPESHIFT) & ((1 << IOC_TYPEBITS) - 1)
}

/// `_IOC_SIZE(cmd)`.
pub const fn ioc_size(cmd: u32) -> u32 {
    (cmd >> IOC_SIZESHIFT) & ((1 << IOC_SIZEBITS) - 1)
}

/// `_IOC_DIR(cmd)`.
pub const fn ioc_dir(cmd: u32) -> u32 {
    (cmd >> IOC_DIRSHIFT) & ((1 << IOC_DIRBITS) - 1)
}

// ---------------------------------------------------------------------------------------------
// General constants.
// ---------------------------------------------------------------------------------------------

/// ioctl type byte of every shadowvm command.
pub const SHADOWVM_IOCTL_TYPE: u32 = 0xB7;

/// Returned by `SHADOWVM_GET_API_VERSION`. Bumped on any incompatible change of a command,
/// a structure layout or a semantic rule described in `Documentation/uapi.md`.
pub const SHADOWVM_API_VERSION: u32 = 2;

/// Page size of the guest-physical map and of the run structure mapping.
pub const SHADOWVM_PAGE_SIZE: u64 = 4096;

/// `mmap` file offset of guest-physical address 0: guest memory is mapped at file offset =
/// guest-physical address, one slot per mapping.
pub const SHADOWVM_MEMORY_MMAP_OFFSET: u64 = 0;
/// `mmap` file offset of the run structure; at `SHADOWVM_MEMORY_MAX`, where guest memory
/// ends.
pub const SHADOWVM_RUN_MMAP_OFFSET: u64 = 1 << 40;
/// Length to map at `SHADOWVM_RUN_MMAP_OFFSET`: one page.
pub const SHADOWVM_RUN_MMAP_SIZE: u64 = SHADOWVM_PAGE_SIZE;

/// Smallest guest memory size accepted by `SHADOWVM_SET_MEMORY`.
pub const SHADOWVM_MEMORY_MIN: u64 = SHADOWVM_PAGE_SIZE;
/// End of the guest-physical range memory slots may cover (1 TiB): every slot, hence also
/// `SHADOWVM_SET_MEMORY`'s size, ends at or below it, so that the file offset of any guest
/// memory (its guest-physical address) stays below `SHADOWVM_RUN_MMAP_OFFSET`. The total
/// size is bounded further by the module (`SHADOWVM_CAP_MAX_MEMORY_MB`).
pub const SHADOWVM_MEMORY_MAX: u64 = 1 << 40;

// ---------------------------------------------------------------------------------------------
// Structures.
// ---------------------------------------------------------------------------------------------

/// Argument of `SHADOWVM_SET_MEMORY` (C: `struct shadowvm_memory`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Memory {
    /// Guest memory size in bytes: a multiple of `SHADOWVM_PAGE_SIZE`, between
    /// `SHADOWVM_MEMORY_MIN` and `SHADOWVM_MEMORY_MAX`. Guest-physical `0..size` becomes
    /// memory slot 0 (see `MemoryRegion`); every address outside a slot is MMIO.
    pub size: u64,
    /// No flags are defined: must be 0.
    pub flags: u64,
}

impl Memory {
    /// Whether the kernel accepts this argument (size range and alignment, flags zero).
    pub const fn is_valid(&self) -> bool {
        self.flags == 0
            && self.size >= SHADOWVM_MEMORY_MIN
            && self.size <= SHADOWVM_MEMORY_MAX
            && self.size & (SHADOWVM_PAGE_SIZE - 1) == 0
    }
}

/// General-purpose registers (C: `struct shadowvm_regs`), for `SHADOWVM_GET_REGS` and
/// `SHADOWVM_SET_REGS`. The sixteen GPRs are in x86 encoding order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Regs {
    pub rax: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rbx: u64,
    pub rsp: u64,
    pub rbp: u64,
    pub rsi: u64,
    pub rdi: u64,
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

impl Regs {
    /// GPR by its x86 encoding (0 = RAX ... 15 = R15); `None` for larger numbers.
    pub const fn gpr(&self, index: usize) -> Option<u64> {
        Some(match index {
            0 => self.rax,
            1 => self.rcx,
            2 => self.rdx,
            3 => self.rbx,
            4 => self.rsp,
            5 => self.rbp,
            6 => self.rsi,
            7 => self.rdi,
            8 => self.r8,
            9 => self.r9,
            10 => self.r10,
            11 => self.r11,
            12 => self.r12,
            13 => self.r13,
            14 => self.r14,
            15 => self.r15,
            _ => return None,
        })
    }

    /// Mutable GPR by its x86 encoding (0 = RAX ... 15 = R15); `None` for larger numbers.
    pub fn gpr_mut(&mut self, index: usize) -> Option<&mut u64> {
        Some(match index {
            0 => &mut self.rax,
            1 => &mut self.rcx,
            2 => &mut self.rdx,
            3 => &mut self.rbx,
            4 => &mut self.rsp,
            5 => &mut self.rbp,
            6 => &mut self.rsi,
            7 => &mut self.rdi,
            8 => &mut self.r8,
            9 => &mut self.r9,
            10 => &mut self.r10,
            11 => &mut self.r11,
            12 => &mut self.r12,
            13 => &mut self.r13,
            14 => &mut self.r14,
            15 => &mut self.r15,
            _ => return None,
        })
    }
}

/// RFLAGS bit 1 always reads as 1; `SHADOWVM_SET_REGS` requires it.
pub const SHADOWVM_RFLAGS_FIXED1: u64 = 1 << 1;
/// RFLAGS.IF.
pub const SHADOWVM_RFLAGS_IF: u64 = 1 << 9;
/// RFLAGS.VM (virtual-8086 mode): not supported, rejected by `SHADOWVM_SET_REGS`.
pub const SHADOWVM_RFLAGS_VM: u64 = 1 << 17;
/// RFLAGS bits that must be 0 (3, 5, 15, 22..63).
pub const SHADOWVM_RFLAGS_RESERVED: u64 = !0x3f_7fd7;

/// One segment register with its hidden part (C: `struct shadowvm_segment`). The attribute
/// fields hold the decoded descriptor bits, one per byte, each 0 or 1 except `type_` (4 bits)
/// and `dpl` (2 bits).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    pub base: u64,
    /// Byte-granular limit (already scaled when `g` = 1).
    pub limit: u32,
    pub selector: u16,
    /// Descriptor type (4 bits), C field name `type`.
    pub type_: u8,
    pub present: u8,
    pub dpl: u8,
    /// D/B: default operation size 32 bits.
    pub db: u8,
    /// S: code/data (1) or system (0) descriptor.
    pub s: u8,
    /// L: 64-bit code segment.
    pub l: u8,
    /// G: limit in 4 KiB units in the descriptor.
    pub g: u8,
    pub avl: u8,
    /// 1 = the segment register is unusable (VMX "segment unusable", e.g. a null LDT).
    pub unusable: u8,
    /// Must be 0.
    pub padding: u8,
}

/// A descriptor-table register, GDTR or IDTR (C: `struct shadowvm_dtable`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Dtable {
    pub base: u64,
    pub limit: u16,
    /// Must be 0.
    pub padding: [u16; 3],
}

/// System registers (C: `struct shadowvm_sregs`), for `SHADOWVM_GET_SREGS` and
/// `SHADOWVM_SET_SREGS`. CR0/CR4 are the values the guest sees (the read shadows), CR3 is the
/// guest's own page-table root, never the shadow root.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sregs {
    pub cs: Segment,
    pub ds: Segment,
    pub es: Segment,
    pub fs: Segment,
    pub gs: Segment,
    pub ss: Segment,
    pub tr: Segment,
    pub ldt: Segment,
    pub gdt: Dtable,
    pub idt: Dtable,
    pub cr0: u64,
    pub cr2: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
    /// IA32_APIC_BASE as userspace last set it. The module keeps the value for userspace
    /// (which emulates the local APIC and owns the MSR) and gives it no meaning: any value
    /// is accepted and read back; a fresh vCPU has 0.
    pub apic_base: u64,
}

/// Argument of `SHADOWVM_GET_STATS` (C: `struct shadowvm_stats`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// In: capacity of the `entries` array. Out: number of statistics available (also when
    /// the call fails with `E2BIG` because the capacity was too small).
    pub count: u32,
    /// No flags are defined: must be 0.
    pub flags: u32,
    /// User pointer to an array of `count` `StatEntry`.
    pub entries: u64,
}

/// Length of `StatEntry::name`, including the terminating NUL.
pub const SHADOWVM_STAT_NAME_LEN: usize = 48;
/// Upper bound on the number of statistics the module will ever report.
pub const SHADOWVM_STATS_MAX: u32 = 512;

/// One statistic (C: `struct shadowvm_stat_entry`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatEntry {
    /// NUL-terminated ASCII name, `group.counter` (see `Documentation/uapi.md`).
    pub name: [u8; SHADOWVM_STAT_NAME_LEN],
    pub value: u64,
}

impl Default for StatEntry {
    fn default() -> Self {
        Self {
            name: [0; SHADOWVM_STAT_NAME_LEN],
            value: 0,
        }
    }
}

impl StatEntry {
    /// Entry with `name` (truncated to `SHADOWVM_STAT_NAME_LEN - 1` bytes) and `value`.
    pub fn new(name: &str, value: u64) -> Self {
        let mut e = Self {
            name: [0; SHADOWVM_STAT_NAME_LEN],
            value,
        };
        let len = core::cmp::min(name.len(), SHADOWVM_STAT_NAME_LEN - 1);
        e.name[..len].copy_from_slice(&name.as_bytes()[..len]);
        e
    }

    /// The name up to its NUL; `None` if it is not NUL-terminated or not UTF-8.
    pub fn name_str(&self) -> Option<&str> {
        let len = self.name.iter().position(|&b| b == 0)?;
        core::str::from_utf8(&self.name[..len]).ok()
    }
}

// ----- ABI v2: capabilities, memory slots, FPU state (issue 11) ----------------------------

/// `SHADOWVM_CHECK_CAP`: number of memory slots (`SHADOWVM_MEMORY_SLOTS`).
pub const SHADOWVM_CAP_MEMORY_SLOTS: u32 = 1;
/// `SHADOWVM_CHECK_CAP`: the module's limit of a VM's total guest memory, in MiB (module
/// parameter `max_memory_mb`).
pub const SHADOWVM_CAP_MAX_MEMORY_MB: u32 = 2;
/// `SHADOWVM_CHECK_CAP`: 1, `SHADOWVM_GET_FPU` and `SHADOWVM_SET_FPU` exist.
pub const SHADOWVM_CAP_FPU: u32 = 3;

/// Memory slots of a VM: slot ids are `0..SHADOWVM_MEMORY_SLOTS`.
pub const SHADOWVM_MEMORY_SLOTS: u32 = 8;

/// Argument of `SHADOWVM_SET_MEMORY_REGION` (C: `struct shadowvm_memory_region`): guest
/// memory at `guest_phys_addr..guest_phys_addr + size`, mapped with `mmap` at file offset
/// `guest_phys_addr`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryRegion {
    /// Slot id, below `SHADOWVM_MEMORY_SLOTS`; each can be set once.
    pub slot: u32,
    /// No flags are defined: must be 0.
    pub flags: u32,
    /// Page-aligned start.
    pub guest_phys_addr: u64,
    /// Nonzero multiple of `SHADOWVM_PAGE_SIZE`; the slot ends at or below
    /// `SHADOWVM_MEMORY_MAX`.
    pub size: u64,
}

impl MemoryRegion {
    /// Guest-physical end (exclusive), `None` if it overflows.
    pub const fn end(&self) -> Option<u64> {
        self.guest_phys_addr.checked_add(self.size)
    }

    /// Whether the argument alone is acceptable (slot id, flags, alignment, bounds). The
    /// module further refuses an existing slot id or an overlap (`EEXIST`) and a total
    /// beyond its limit (`E2BIG`).
    pub const fn is_valid(&self) -> bool {
        let aligned = (self.guest_phys_addr | self.size) & (SHADOWVM_PAGE_SIZE - 1) == 0;
        let in_range = match self.end() {
            Some(end) => end <= SHADOWVM_MEMORY_MAX,
            None => false,
        };
        self.slot < SHADOWVM_MEMORY_SLOTS
            && self.flags == 0
            && self.size != 0
            && aligned
            && in_range
    }

    /// Whether the two ranges share a byte.
    pub const fn overlaps(&self, other: &MemoryRegion) -> bool {
        match (self.end(), other.end()) {
            (Some(a_end), Some(b_end)) => {
                self.guest_phys_addr < b_end && other.guest_phys_addr < a_end
            }
            _ => true,
        }
    }
}

/// Size of an FXSAVE image.
pub const SHADOWVM_FXSAVE_SIZE: usize = 512;
/// Offset of MXCSR in an FXSAVE image (a u32).
pub const SHADOWVM_FXSAVE_MXCSR: usize = 24;
/// Offset of XMM0 in an FXSAVE image; XMMn is 16 bytes at `SHADOWVM_FXSAVE_XMM + 16 * n`.
pub const SHADOWVM_FXSAVE_XMM: usize = 160;

/// x87/SSE state (C: `struct shadowvm_fpu`) for `SHADOWVM_GET_FPU` and `SHADOWVM_SET_FPU`:
/// the 64-bit FXSAVE image (Intel SDM Vol. 1, 10.5.1, Table 10-2) of the vCPU.
#[repr(C, align(16))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fpu {
    pub fxsave: [u8; SHADOWVM_FXSAVE_SIZE],
}

impl Default for Fpu {
    fn default() -> Self {
        Self {
            fxsave: [0; SHADOWVM_FXSAVE_SIZE],
        }
    }
}

impl Fpu {
    /// MXCSR.
    pub const fn mxcsr(&self) -> u32 {
        let m = SHADOWVM_FXSAVE_MXCSR;
        u32::from_le_bytes([
            self.fxsave[m],
            self.fxsave[m + 1],
            self.fxsave[m + 2],
            self.fxsave[m + 3],
        ])
    }

    /// Sets MXCSR.
    pub fn set_mxcsr(&mut self, value: u32) {
        let m = SHADOWVM_FXSAVE_MXCSR;
        let [b0, b1, b2, b3] = value.to_le_bytes();
        self.fxsave[m] = b0;
        self.fxsave[m + 1] = b1;
        self.fxsave[m + 2] = b2;
        self.fxsave[m + 3] = b3;
    }

    /// XMM register `n` (0-15), little-endian; `None` for larger numbers.
    pub fn xmm(&self, n: usize) -> Option<[u8; 16]> {
        let at = SHADOWVM_FXSAVE_XMM + 16 * n.min(16);
        let bytes = self.fxsave.get(at..at + 16).filter(|_| n < 16)?;
        let mut v = [0u8; 16];
        v.copy_from_slice(bytes);
        Some(v)
    }

    /// Sets XMM register `n` (0-15); false (nothing changed) for larger numbers.
    pub fn set_xmm(&mut self, n: usize, value: [u8; 16]) -> bool {
        let at = SHADOWVM_FXSAVE_XMM + 16 * n.min(16);
        match self.fxsave.get_mut(at..at + 16).filter(|_| n < 16) {
            Some(dst) => {
                dst.copy_from_slice(&value);
                true
            }
            None => false,
        }
    }
}

// ----- Exit reasons (`Run::exit_reason`) -----------------------------------------------------

/// No exit yet (before the first RUN).
pub const SHADOWVM_EXIT_NONE: u32 = 0;
/// Port I/O: `Run::io()`.
pub const SHADOWVM_EXIT_IO: u32 = 1;
/// Access to a guest-physical address outside guest memory: `Run::mmio()`.
pub const SHADOWVM_EXIT_MMIO: u32 = 2;
/// HLT. RFLAGS.IF tells whether an interrupt could ever wake the guest.
pub const SHADOWVM_EXIT_HLT: u32 = 3;
/// VMCALL: `Run::hypercall()`.
pub const SHADOWVM_EXIT_HYPERCALL: u32 = 4;
/// Triple fault (or another shutdown condition): the guest is dead.
pub const SHADOWVM_EXIT_SHUTDOWN: u32 = 5;
/// VM entry failed: `Run::fail_entry()`.
pub const SHADOWVM_EXIT_FAIL_ENTRY: u32 = 6;
/// The module could not handle an exit: `Run::internal_error()`.
pub const SHADOWVM_EXIT_INTERNAL_ERROR: u32 = 7;
/// RUN returned before the guest needed anything: `Run::intr()` says why.
pub const SHADOWVM_EXIT_INTR: u32 = 8;
/// RDMSR of an MSR the module does not own: `Run::msr()`; userspace fills `data` (or sets
/// `error`) before the next RUN.
pub const SHADOWVM_EXIT_X86_RDMSR: u32 = 10;
/// WRMSR of an MSR the module does not own: `Run::msr()` holds the value (EDX:EAX);
/// userspace sets `error` to refuse it.
pub const SHADOWVM_EXIT_X86_WRMSR: u32 = 11;
/// Userspace set `Run::request_interrupt_window` and the guest can now take an interrupt
/// (`Run::ready_for_interrupt_injection` is 1). No details.
pub const SHADOWVM_EXIT_IRQ_WINDOW_OPEN: u32 = 9;

/// `ExitIo::direction`: IN (userspace supplies `data`).
pub const SHADOWVM_IO_IN: u8 = 0;
/// `ExitIo::direction`: OUT (`data` holds the value written).
pub const SHADOWVM_IO_OUT: u8 = 1;

/// `SHADOWVM_EXIT_IO` details (C: `struct shadowvm_exit_io`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExitIo {
    /// `SHADOWVM_IO_IN` or `SHADOWVM_IO_OUT`.
    pub direction: u8,
    /// Access size in bytes: 1, 2 or 4.
    pub size: u8,
    pub port: u16,
    /// Number of elements: always 1 (string I/O is split into elements).
    pub count: u32,
    /// The value, little-endian in the low `size` bytes. OUT: written by the guest.
    /// IN: filled by userspace before the next RUN.
    pub data: u64,
}

/// `SHADOWVM_EXIT_MMIO` details (C: `struct shadowvm_exit_mmio`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExitMmio {
    /// Guest-physical address of the access.
    pub gpa: u64,
    /// The bytes. Write: written by the guest. Read: filled by userspace before the next RUN.
    pub data: [u8; 8],
    /// Access length in bytes: 1, 2, 4 or 8.
    pub len: u32,
    /// 1 for a write, 0 for a read.
    pub is_write: u8,
    pub padding: [u8; 3],
}

/// Number of hypercall arguments.
pub const SHADOWVM_HYPERCALL_ARGS: usize = 6;

/// `SHADOWVM_EXIT_HYPERCALL` details (C: `struct shadowvm_exit_hypercall`).
/// The guest passes `nr` in RAX and the arguments in RBX, RCX, RDX, RSI, RDI, R8 (the upper
/// halves are 0 outside 64-bit mode); the next RUN writes `ret` to RAX and skips the VMCALL.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExitHypercall {
    pub nr: u64,
    pub args: [u64; SHADOWVM_HYPERCALL_ARGS],
    /// Set by userspace; 0 when it does not.
    pub ret: u64,
}

/// `SHADOWVM_EXIT_FAIL_ENTRY` details (C: `struct shadowvm_exit_fail_entry`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExitFailEntry {
    /// VMLAUNCH/VMRESUME failed with VMfailValid: the VM-instruction error number.
    /// VM entry failed on guest state or MSR loading: the exit reason, with bit 31 set
    /// (`SHADOWVM_FAIL_ENTRY_EXIT_REASON`).
    pub hardware_entry_failure_reason: u64,
    /// Exit qualification of an entry failure exit, otherwise 0.
    pub exit_qualification: u64,
    /// Host CPU the entry was attempted on.
    pub cpu: u32,
    pub padding: u32,
}

/// Bit 31 of a VMX exit reason: "VM-entry failure".
pub const SHADOWVM_FAIL_ENTRY_EXIT_REASON: u64 = 1 << 31;

/// Internal error: a guest instruction the module must emulate and cannot.
pub const SHADOWVM_INTERNAL_ERROR_EMULATION: u32 = 1;
/// Internal error: a VM exit reason the module does not handle.
pub const SHADOWVM_INTERNAL_ERROR_UNHANDLED_EXIT: u32 = 2;
/// Internal error: an exit while delivering an event (e.g. #PF during IDT vectoring) that
/// could not be resolved.
pub const SHADOWVM_INTERNAL_ERROR_DELIVERY_EV: u32 = 3;
/// Internal error: the shadow MMU failed (e.g. shadow memory limit reached with nothing to
/// reclaim).
pub const SHADOWVM_INTERNAL_ERROR_MMU: u32 = 4;

/// `SHADOWVM_EXIT_INTERNAL_ERROR` details (C: `struct shadowvm_exit_internal_error`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExitInternalError {
    /// `SHADOWVM_INTERNAL_ERROR_*`.
    pub suberror: u32,
    /// Basic VMX exit reason of the exit being handled.
    pub vmx_exit_reason: u32,
    pub exit_qualification: u64,
    /// `data[0]` is the guest RIP; the others depend on `suberror` (see uapi.md).
    pub data: [u64; 4],
}

/// `ExitIntr::cause`: a signal is pending (RUN failed with `EINTR`).
pub const SHADOWVM_INTR_SIGNAL: u32 = 1;
/// `ExitIntr::cause`: `Run::immediate_exit` was set (RUN failed with `EINTR`).
pub const SHADOWVM_INTR_IMMEDIATE_EXIT: u32 = 2;
/// `ExitIntr::cause`: the time slice ended (RUN returned 0); just call RUN again.
pub const SHADOWVM_INTR_TIME_SLICE: u32 = 3;

/// `SHADOWVM_EXIT_INTR` details (C: `struct shadowvm_exit_intr`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExitIntr {
    /// `SHADOWVM_INTR_*`.
    pub cause: u32,
    pub padding: u32,
}

/// `SHADOWVM_EXIT_X86_RDMSR` / `SHADOWVM_EXIT_X86_WRMSR` details (C: `struct
/// shadowvm_exit_msr`, the shape of KVM's `msr` exit).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExitMsr {
    /// Set to 1 by userspace to make the next RUN inject #GP(0) instead of completing the
    /// instruction; 0 from the module.
    pub error: u8,
    pub pad: [u8; 3],
    /// The MSR (guest ECX).
    pub index: u32,
    /// RDMSR: filled by userspace, loaded into EDX:EAX. WRMSR: the guest's EDX:EAX.
    pub data: u64,
}

// ----- Interrupts -----------------------------------------------------------------------------

/// `SHADOWVM_CHECK_CAP`: `SHADOWVM_INTERRUPT`, `SHADOWVM_NMI`, the interrupt window and the
/// vCPU events are there (value 1).
pub const SHADOWVM_CAP_IRQ: u32 = 4;

/// Number of interrupt vectors: `Interrupt::irq` must be below it.
pub const SHADOWVM_NR_INTERRUPTS: u32 = 256;

/// Argument of `SHADOWVM_INTERRUPT` (C: `struct shadowvm_interrupt`; KVM's `kvm_interrupt`
/// plus explicit padding).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Interrupt {
    /// The vector, below `SHADOWVM_NR_INTERRUPTS`.
    pub irq: u32,
    /// Must be 0.
    pub padding: u32,
}

/// `VcpuEvents::interrupt_shadow`: blocking by STI (the instruction after STI).
pub const SHADOWVM_INTERRUPT_SHADOW_STI: u8 = 1;
/// `VcpuEvents::interrupt_shadow`: blocking by MOV SS / POP SS.
pub const SHADOWVM_INTERRUPT_SHADOW_MOV_SS: u8 = 2;
/// Most NMIs that can wait at once: one being handled may have one more latched.
pub const SHADOWVM_NMI_PENDING_MAX: u8 = 2;

/// The vCPU's events (C: `struct shadowvm_vcpu_events`), for `SHADOWVM_GET_VCPU_EVENTS` and
/// `SHADOWVM_SET_VCPU_EVENTS`: what a launcher saves and restores beside the registers.
/// Flags, booleans (0 or 1) and padding are checked on SET (`EINVAL` otherwise).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VcpuEvents {
    /// 1: the exception `exception_nr` is delivered at the next entry (one the guest raised
    /// and the module queued, or one whose delivery an exit interrupted).
    pub exception_injected: u8,
    /// The exception vector, 0-31 but not 2 (NMI) or 21 (#CP: the guest has no CET).
    pub exception_nr: u8,
    /// 1: the exception pushes `exception_error_code` (exactly for vectors 8, 10-14, 17).
    pub exception_has_error_code: u8,
    pub exception_padding: u8,
    /// Bits 31:16 must be 0.
    pub exception_error_code: u32,
    /// 1: the external interrupt `interrupt_nr` is queued (`SHADOWVM_INTERRUPT`, or one
    /// whose delivery an exit interrupted), delivered when the guest can take it.
    pub interrupt_injected: u8,
    pub interrupt_nr: u8,
    /// `SHADOWVM_INTERRUPT_SHADOW_*`: at most one of the two.
    pub interrupt_shadow: u8,
    pub interrupt_padding: u8,
    /// NMIs queued, 0 to `SHADOWVM_NMI_PENDING_MAX`.
    pub nmi_pending: u8,
    /// 1: NMIs are blocked (the guest is in its NMI handler, until IRET).
    pub nmi_masked: u8,
    pub nmi_padding: [u8; 2],
    /// No flags are defined: must be 0.
    pub flags: u32,
    /// Must be 0.
    pub reserved: [u32; 11],
}

// ----- Run structure --------------------------------------------------------------------------

/// Version of the run structure layout, in `Run::version`.
pub const SHADOWVM_RUN_VERSION: u32 = 2;
/// Size of the exit details area, `Run::exit`.
pub const SHADOWVM_EXIT_AREA_SIZE: usize = 256;

/// The exit details area: raw bytes, interpreted according to `Run::exit_reason` through the
/// typed accessors of `Run` (C: an anonymous union `exit`).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitArea {
    pub bytes: [u8; SHADOWVM_EXIT_AREA_SIZE],
}

impl Default for ExitArea {
    fn default() -> Self {
        Self {
            bytes: [0; SHADOWVM_EXIT_AREA_SIZE],
        }
    }
}

/// Marker for the exit detail structures that live in `ExitArea`.
///
/// # Safety
///
/// Implementors are `#[repr(C)]`, consist of integers and integer arrays only (every bit
/// pattern is a valid value), have an alignment of at most 8 and a size of at most
/// `SHADOWVM_EXIT_AREA_SIZE`.
pub unsafe trait ExitDetails: Copy {}

macro_rules! exit_details {
    ($($t:ty),*) => {$(
        // SAFETY: plain-integer `repr(C)` structure, checked to fit by the assertions below.
        unsafe impl ExitDetails for $t {}
        const _: () = assert!(size_of::<$t>() <= SHADOWVM_EXIT_AREA_SIZE);
        const _: () = assert!(core::mem::align_of::<$t>() <= 8);
    )*};
}
exit_details!(
    ExitIo,
    ExitMmio,
    ExitHypercall,
    ExitFailEntry,
    ExitInternalError,
    ExitIntr,
    ExitMsr
);

impl ExitArea {
    /// The area viewed as `T`.
    pub fn get<T: ExitDetails>(&self) -> &T {
        // SAFETY: `ExitDetails` guarantees `T` fits in the area, needs no more than its
        // 8-byte alignment and accepts any bit pattern.
        unsafe { &*(self.bytes.as_ptr().cast::<T>()) }
    }

    /// The area viewed as a mutable `T`.
    pub fn get_mut<T: ExitDetails>(&mut self) -> &mut T {
        // SAFETY: as in `get`; every bit pattern written through `T` is also valid as bytes.
        unsafe { &mut *(self.bytes.as_mut_ptr().cast::<T>()) }
    }

    /// Zero the area and store `value` at its start.
    pub fn set<T: ExitDetails>(&mut self, value: T) {
        self.bytes = [0; SHADOWVM_EXIT_AREA_SIZE];
        *self.get_mut::<T>() = value;
    }
}

/// The run structure (C: `struct shadowvm_run`), shared through `mmap` at
/// `SHADOWVM_RUN_MMAP_OFFSET`. The module writes everything but `immediate_exit`,
/// `request_interrupt_window` and the completion data (`ExitIo::data` of an IN,
/// `ExitMmio::data` of a read, `ExitHypercall::ret`), which userspace writes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Run {
    /// `SHADOWVM_RUN_VERSION`, set by the module at `SHADOWVM_CREATE_VCPU`.
    pub version: u32,
    /// `size_of::<Run>()` as the module knows it.
    pub size: u32,
    /// Set to 1 by userspace (e.g. from a signal handler) to make RUN return `EINTR` with
    /// `SHADOWVM_EXIT_INTR` promptly instead of entering the guest. The module never clears it.
    pub immediate_exit: u8,
    /// Set to 1 by userspace to have RUN return `SHADOWVM_EXIT_IRQ_WINDOW_OPEN` as soon as
    /// the guest can take an interrupt (KVM's `request_interrupt_window`). The module never
    /// writes it.
    pub request_interrupt_window: u8,
    /// Written by the module when RUN returns: 1 if `SHADOWVM_INTERRUPT` would be delivered
    /// at the next entry (RFLAGS.IF = 1, no STI/MOV SS shadow, no event waiting to be
    /// delivered, no interrupt queued).
    pub ready_for_interrupt_injection: u8,
    /// Written by the module when RUN returns: the guest's RFLAGS.IF.
    pub if_flag: u8,
    /// `SHADOWVM_EXIT_*`.
    pub exit_reason: u32,
    /// Details for `exit_reason`.
    pub exit: ExitArea,
}

impl Run {
    /// Port I/O details (`SHADOWVM_EXIT_IO`).
    pub fn io(&self) -> &ExitIo {
        self.exit.get()
    }
    /// Port I/O details, for filling in the value of an IN.
    pub fn io_mut(&mut self) -> &mut ExitIo {
        self.exit.get_mut()
    }
    /// MMIO details (`SHADOWVM_EXIT_MMIO`).
    pub fn mmio(&self) -> &ExitMmio {
        self.exit.get()
    }
    /// MMIO details, for filling in the value of a read.
    pub fn mmio_mut(&mut self) -> &mut ExitMmio {
        self.exit.get_mut()
    }
    /// Hypercall details (`SHADOWVM_EXIT_HYPERCALL`).
    pub fn hypercall(&self) -> &ExitHypercall {
        self.exit.get()
    }
    /// Hypercall details, for setting the return value.
    pub fn hypercall_mut(&mut self) -> &mut ExitHypercall {
        self.exit.get_mut()
    }
    /// Entry failure details (`SHADOWVM_EXIT_FAIL_ENTRY`).
    pub fn fail_entry(&self) -> &ExitFailEntry {
        self.exit.get()
    }
    /// Internal error details (`SHADOWVM_EXIT_INTERNAL_ERROR`).
    pub fn internal_error(&self) -> &ExitInternalError {
        self.exit.get()
    }
    /// Interruption details (`SHADOWVM_EXIT_INTR`).
    pub fn intr(&self) -> &ExitIntr {
        self.exit.get()
    }
    /// RDMSR/WRMSR details (`SHADOWVM_EXIT_X86_RDMSR`, `SHADOWVM_EXIT_X86_WRMSR`).
    pub fn msr(&self) -> &ExitMsr {
        self.exit.get()
    }
    /// RDMSR/WRMSR details, for the value of a read or the error of either.
    pub fn msr_mut(&mut self) -> &mut ExitMsr {
        self.exit.get_mut()
    }
}

/// Name of an exit reason, for messages and statistics (`"unknown"` for others).
pub const fn exit_reason_name(reason: u32) -> &'static str {
    match reason {
        SHADOWVM_EXIT_NONE => "none",
        SHADOWVM_EXIT_IO => "io",
        SHADOWVM_EXIT_MMIO => "mmio",
        SHADOWVM_EXIT_HLT => "hlt",
        SHADOWVM_EXIT_HYPERCALL => "hypercall",
        SHADOWVM_EXIT_SHUTDOWN => "shutdown",
        SHADOWVM_EXIT_FAIL_ENTRY => "fail_entry",
        SHADOWVM_EXIT_INTERNAL_ERROR => "internal_error",
        SHADOWVM_EXIT_INTR => "intr",
        SHADOWVM_EXIT_X86_RDMSR => "x86_rdmsr",
        SHADOWVM_EXIT_X86_WRMSR => "x86_wrmsr",
        SHADOWVM_EXIT_IRQ_WINDOW_OPEN => "irq_window_open",
        _ => "unknown",
    }
}

// ---------------------------------------------------------------------------------------------
// Commands.
// ---------------------------------------------------------------------------------------------

const TY: u32 = SHADOWVM_IOCTL_TYPE;

/// Returns `SHADOWVM_API_VERSION` as the ioctl's return value. Argument must be 0.
pub const SHADOWVM_GET_API_VERSION: u32 = io(TY, 0x00);
/// Allocate guest memory, once per VM (`Memory`).
pub const SHADOWVM_SET_MEMORY: u32 = iow::<Memory>(TY, 0x01);
/// Create the VM's one vCPU, after `SHADOWVM_SET_MEMORY`. Argument (vCPU id) must be 0.
pub const SHADOWVM_CREATE_VCPU: u32 = io(TY, 0x02);
/// Read the general registers (`Regs`).
pub const SHADOWVM_GET_REGS: u32 = ior::<Regs>(TY, 0x03);
/// Write the general registers (`Regs`).
pub const SHADOWVM_SET_REGS: u32 = iow::<Regs>(TY, 0x04);
/// Read the system registers (`Sregs`).
pub const SHADOWVM_GET_SREGS: u32 = ior::<Sregs>(TY, 0x05);
/// Write the system registers (`Sregs`).
pub const SHADOWVM_SET_SREGS: u32 = iow::<Sregs>(TY, 0x06);
/// Run the vCPU until an exit that needs userspace. Argument must be 0.
pub const SHADOWVM_RUN: u32 = io(TY, 0x07);
/// Read statistics (`Stats`).
pub const SHADOWVM_GET_STATS: u32 = iowr::<Stats>(TY, 0x08);

// ABI v2 (issue 11).
/// Returns the value of the capability in the argument (`SHADOWVM_CAP_*`; 0 = absent);
/// `EINVAL` for an unknown one.
pub const SHADOWVM_CHECK_CAP: u32 = io(TY, 0x09);
/// Add a memory slot (`MemoryRegion`).
pub const SHADOWVM_SET_MEMORY_REGION: u32 = iow::<MemoryRegion>(TY, 0x0a);
/// Read the vCPU's x87/SSE state (`Fpu`).
pub const SHADOWVM_GET_FPU: u32 = ior::<Fpu>(TY, 0x11);
/// Write the vCPU's x87/SSE state (`Fpu`).
pub const SHADOWVM_SET_FPU: u32 = iow::<Fpu>(TY, 0x12);
// ----- Interrupts (ABI v2): INTERRUPT, NMI, vCPU events ------------------------------------
/// Queue an external interrupt (`Interrupt`), delivered when the guest can take it.
pub const SHADOWVM_INTERRUPT: u32 = iow::<Interrupt>(TY, 0x0b);
/// Queue an NMI. Argument must be 0.
pub const SHADOWVM_NMI: u32 = io(TY, 0x0c);
/// Read the vCPU's pending events (`VcpuEvents`).
pub const SHADOWVM_GET_VCPU_EVENTS: u32 = ior::<VcpuEvents>(TY, 0x13);
/// Replace the vCPU's pending events (`VcpuEvents`).
pub const SHADOWVM_SET_VCPU_EVENTS: u32 = iow::<VcpuEvents>(TY, 0x14);

// ---------------------------------------------------------------------------------------------
// Layout checks: the sizes and offsets below are the ABI.
// ---------------------------------------------------------------------------------------------

macro_rules! check_layout {
    ($t:ty, $size:expr, { $($field:ident : $off:expr),* $(,)? }) => {
        const _: () = assert!(size_of::<$t>() == $size);
        $(const _: () = assert!(offset_of!($t, $field) == $off);)*
    };
}

check_layout!(Memory, 16, { size: 0, flags: 8 });
check_layout!(Regs, 144, {
    rax: 0, rcx: 8, rdx: 16, rbx: 24, rsp: 32, rbp: 40, rsi: 48, rdi: 56,
    r8: 64, r9: 72, r10: 80, r11: 88, r12: 96, r13: 104, r14: 112, r15: 120,
    rip: 128, rflags: 136,
});
check_layout!(Segment, 24, {
    base: 0, limit: 8, selector: 12, type_: 14, present: 15, dpl: 16, db: 17, s: 18, l: 19,
    g: 20, avl: 21, unusable: 22, padding: 23,
});
check_layout!(Dtable, 16, { base: 0, limit: 8, padding: 10 });
check_layout!(Sregs, 272, {
    cs: 0, ds: 24, es: 48, fs: 72, gs: 96, ss: 120, tr: 144, ldt: 168, gdt: 192, idt: 208,
    cr0: 224, cr2: 232, cr3: 240, cr4: 248, efer: 256, apic_base: 264,
});
check_layout!(Stats, 16, { count: 0, flags: 4, entries: 8 });
check_layout!(StatEntry, 56, { name: 0, value: 48 });
check_layout!(ExitIo, 16, { direction: 0, size: 1, port: 2, count: 4, data: 8 });
check_layout!(ExitMmio, 24, { gpa: 0, data: 8, len: 16, is_write: 20, padding: 21 });
check_layout!(ExitHypercall, 64, { nr: 0, args: 8, ret: 56 });
check_layout!(ExitFailEntry, 24, {
    hardware_entry_failure_reason: 0, exit_qualification: 8, cpu: 16, padding: 20,
});
check_layout!(ExitInternalError, 48, {
    suberror: 0, vmx_exit_reason: 4, exit_qualification: 8, data: 16,
});
check_layout!(ExitIntr, 8, { cause: 0, padding: 4 });
check_layout!(ExitArea, 256, { bytes: 0 });
check_layout!(Run, 272, {
    version: 0, size: 4, immediate_exit: 8, request_interrupt_window: 9,
    ready_for_interrupt_injection: 10, if_flag: 11, exit_reason: 12, exit: 16,
});
check_layout!(Interrupt, 8, { irq: 0, padding: 4 });
check_layout!(VcpuEvents, 64, {
    exception_injected: 0, exception_nr: 1, exception_has_error_code: 2, exception_padding: 3,
    exception_error_code: 4, interrupt_injected: 8, interrupt_nr: 9, interrupt_shadow: 10,
    interrupt_padding: 11, nmi_pending: 12, nmi_masked: 13, nmi_padding: 14, flags: 16,
    reserved: 20,
});
check_layout!(MemoryRegion, 24, { slot: 0, flags: 4, guest_phys_addr: 8, size: 16 });
check_layout!(Fpu, 512, { fxsave: 0 });
const _: () = assert!(core::mem::align_of::<Fpu>() == 16);
const _: () = assert!(size_of::<Run>() as u64 <= SHADOWVM_RUN_MMAP_SIZE);
const _: () = assert!(SHADOWVM_RUN_MMAP_OFFSET & (SHADOWVM_PAGE_SIZE - 1) == 0);
const _: () = assert!(SHADOWVM_RUN_MMAP_OFFSET >= SHADOWVM_MEMORY_MAX);

// ----- MSRs, CPUID, TSC (ABI v2) -------------------------------------------------------------

/// `SHADOWVM_CHECK_CAP`: RDMSR/WRMSR of MSRs the module does not own exit to userspace
/// (`SHADOWVM_EXIT_X86_RDMSR`/`WRMSR`); value 1.
pub const SHADOWVM_CAP_USER_MSR: u32 = 5;
/// `SHADOWVM_CHECK_CAP`: `SHADOWVM_GET_SUPPORTED_CPUID` and `SHADOWVM_SET_CPUID`; value 1.
pub const SHADOWVM_CAP_CPUID: u32 = 6;
/// `SHADOWVM_CHECK_CAP`: `SHADOWVM_GET_TSC_KHZ`, IA32_TSC through `SHADOWVM_GET_MSRS` /
/// `SHADOWVM_SET_MSRS`; value 1.
pub const SHADOWVM_CAP_TSC: u32 = 7;

/// Most entries one `SHADOWVM_GET_MSRS`/`SHADOWVM_SET_MSRS` call takes (more: `EINVAL`).
pub const SHADOWVM_MSRS_MAX: u32 = 256;

/// Argument of `SHADOWVM_GET_MSRS` and `SHADOWVM_SET_MSRS` (C: `struct shadowvm_msrs`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Msrs {
    /// Number of entries, at most `SHADOWVM_MSRS_MAX`.
    pub nmsrs: u32,
    /// No flags are defined: must be 0.
    pub flags: u32,
    /// User pointer to an array of `nmsrs` `MsrEntry`.
    pub entries: u64,
}

/// One MSR (C: `struct shadowvm_msr_entry`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MsrEntry {
    pub index: u32,
    /// Must be 0.
    pub reserved: u32,
    pub data: u64,
}

/// Most entries a CPUID table holds (`SHADOWVM_SET_CPUID` with more: `EINVAL`).
pub const SHADOWVM_CPUID_MAX_ENTRIES: u32 = 64;
/// `CpuidEntry::flags`: the entry applies to subleaf `index` only (otherwise to every
/// subleaf of `function`). KVM's `KVM_CPUID_FLAG_SIGNIFCANT_INDEX`.
pub const SHADOWVM_CPUID_FLAG_SIGNIFICANT_INDEX: u32 = 1;

/// Argument of `SHADOWVM_GET_SUPPORTED_CPUID` and `SHADOWVM_SET_CPUID` (C: `struct
/// shadowvm_cpuid`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cpuid {
    /// In: number of entries in the array (capacity for GET_SUPPORTED_CPUID). Out
    /// (GET_SUPPORTED_CPUID, also when it fails with `E2BIG`): entries the module has.
    pub nent: u32,
    /// No flags are defined: must be 0.
    pub flags: u32,
    /// User pointer to an array of `nent` `CpuidEntry`.
    pub entries: u64,
}

/// One CPUID leaf/subleaf (C: `struct shadowvm_cpuid_entry`): `kvm_cpuid_entry2` without its
/// trailing padding.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuidEntry {
    /// The leaf (EAX).
    pub function: u32,
    /// The subleaf (ECX), when `flags` has `SHADOWVM_CPUID_FLAG_SIGNIFICANT_INDEX`.
    pub index: u32,
    pub flags: u32,
    pub eax: u32,
    pub ebx: u32,
    pub ecx: u32,
    pub edx: u32,
    /// Must be 0.
    pub padding: u32,
}

/// Read MSRs (`Msrs`): returns the number of entries read, stopping at the first MSR the
/// module does not own.
pub const SHADOWVM_GET_MSRS: u32 = iowr::<Msrs>(TY, 0x0d);
/// Write MSRs (`Msrs`): returns the number of entries written, stopping at the first MSR the
/// module does not own or whose value a guest WRMSR would fault on.
pub const SHADOWVM_SET_MSRS: u32 = iow::<Msrs>(TY, 0x0e);
/// The CPUID values the module can virtualize (`Cpuid`); `E2BIG` and `nent` updated when
/// the array is too small.
pub const SHADOWVM_GET_SUPPORTED_CPUID: u32 = iowr::<Cpuid>(TY, 0x0f);
/// Install the guest's CPUID table (`Cpuid`), feature bits filtered by the supported set.
pub const SHADOWVM_SET_CPUID: u32 = iow::<Cpuid>(TY, 0x10);
/// Returns the guest TSC frequency in kHz (the host's: no TSC scaling). Argument must be 0.
pub const SHADOWVM_GET_TSC_KHZ: u32 = io(TY, 0x15);

check_layout!(Msrs, 16, { nmsrs: 0, flags: 4, entries: 8 });
check_layout!(MsrEntry, 16, { index: 0, reserved: 4, data: 8 });
check_layout!(Cpuid, 16, { nent: 0, flags: 4, entries: 8 });
check_layout!(CpuidEntry, 32, {
    function: 0, index: 4, flags: 8, eax: 12, ebx: 16, ecx: 20, edx: 24, padding: 28,
});
check_layout!(ExitMsr, 16, { error: 0, pad: 1, index: 4, data: 8 });
