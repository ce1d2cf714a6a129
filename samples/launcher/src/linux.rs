// SPDX-License-Identifier: GPL-2.0

//! The x86 Linux boot protocol with its 64-bit entry point, written from the kernel's
//! Documentation/arch/x86/boot.rst and zero-page.rst: loads a bzImage's protected-mode
//! kernel where the kernel wants it, builds the zero page (`struct boot_params`: the setup
//! header, the command line, the initrd, an e820 map) and returns the register state of the
//! 64-bit entry.
//!
//! rust-vmm's `linux-loader` does the same, but its licence (Apache-2.0 AND BSD-3-Clause)
//! does not combine with this GPL-2.0-only launcher, so none of it is used here.
//!
//! Guest-physical layout, besides the kernel and the initrd:
//! - 0x1000..0x8000: GDT, TSS and identity page tables (the addresses of `boot`),
//! - [`ZERO_PAGE_ADDR`]: the zero page, [`CMDLINE_ADDR`]: the command line,
//! - [`boot::STACK_TOP`]: the initial stack (the kernel switches to its own at once).

use crate::boot;
use crate::error::{Error, Result};
use shadowvm_uapi::{Dtable, Regs, Segment, Sregs, SHADOWVM_RFLAGS_FIXED1};
use std::fmt;
use std::ops::Range;

/// Where the zero page goes: low memory, which the kernel keeps reserved.
pub const ZERO_PAGE_ADDR: u64 = 0x1_0000;
/// Where the command line goes ("anywhere between the end of the setup heap and 0xA0000").
pub const CMDLINE_ADDR: u64 = 0x2_0000;
/// The command-line area ends where the initial stack's page begins.
const CMDLINE_AREA_END: u64 = 0x7_0000;
/// Conventional memory ends at 640 KiB; 640 KiB..1 MiB is the legacy VGA/ROM hole.
pub const LOW_RAM_END: u64 = 0xa_0000;
/// Start of "high" memory, the lowest address the kernel and the initrd may use.
pub const HIGH_MEMORY: u64 = 0x10_0000;
/// MMIO pages the e820 map reserves: the I/O APIC and the local APIC.
pub const IOAPIC_PAGE: Range<u64> = 0xfec0_0000..0xfec0_1000;
pub const LAPIC_PAGE: Range<u64> = 0xfee0_0000..0xfee0_1000;
/// The launcher's page tables identity-map this much; everything the entry code touches
/// (the kernel's init_size window, the zero page, the command line) must lie below.
const IDENTITY_MAPPED: u64 = 1 << 32;
const PAGE_SIZE: u64 = 0x1000;

/// The 64-bit entry is this far into the protected-mode kernel.
pub const ENTRY_64_OFFSET: u64 = 0x200;
/// GDT selectors the 64-bit entry requires (boot.rst: __BOOT_CS and __BOOT_DS).
pub const BOOT_CS: u16 = 0x10;
pub const BOOT_DS: u16 = 0x18;

/// "HdrS": a setup header with a protocol version follows.
const HDRS_MAGIC: u32 = 0x5372_6448;
const BOOT_FLAG_MAGIC: u16 = 0xaa55;
/// boot.rst's identifier for a boot loader without an assigned one.
const LOADER_TYPE_UNDEFINED: u8 = 0xff;
/// The protocol the 64-bit entry needs: 2.12 added xloadflags and XLF_KERNEL_64.
pub const MIN_PROTOCOL: ProtocolVersion = ProtocolVersion(0x020c);
/// Protocol 2.10 added pref_address and init_size.
const PROTOCOL_2_10: ProtocolVersion = ProtocolVersion(0x020a);
/// The zero page is one page; the setup header and e820 table lie inside it.
const ZERO_PAGE_SIZE: usize = 4096;
/// Protected-mode code starts after the boot sector and the setup sectors.
const SECTOR_SIZE: usize = 512;

/// Offsets of setup header fields, the same in the bzImage file and in the zero page.
mod hdr {
    pub const SETUP_SECTS: usize = 0x1f1;
    pub const SYSSIZE: usize = 0x1f4;
    pub const BOOT_FLAG: usize = 0x1fe;
    /// A two-byte short jump; its displacement (0x201) gives the header's end.
    pub const JUMP: usize = 0x200;
    pub const HEADER: usize = 0x202;
    pub const VERSION: usize = 0x206;
    pub const TYPE_OF_LOADER: usize = 0x210;
    pub const LOADFLAGS: usize = 0x211;
    pub const CODE32_START: usize = 0x214;
    pub const RAMDISK_IMAGE: usize = 0x218;
    pub const RAMDISK_SIZE: usize = 0x21c;
    pub const CMD_LINE_PTR: usize = 0x228;
    pub const INITRD_ADDR_MAX: usize = 0x22c;
    pub const KERNEL_ALIGNMENT: usize = 0x230;
    pub const RELOCATABLE_KERNEL: usize = 0x234;
    pub const XLOADFLAGS: usize = 0x236;
    pub const CMDLINE_SIZE: usize = 0x238;
    pub const PREF_ADDRESS: usize = 0x258;
    pub const INIT_SIZE: usize = 0x260;
    /// The fields read here end with init_size.
    pub const READ_END: usize = INIT_SIZE + 4;
}

/// Offsets of zero-page fields outside the setup header.
mod zp {
    pub const EXT_RAMDISK_IMAGE: usize = 0x0c0;
    pub const EXT_RAMDISK_SIZE: usize = 0x0c4;
    pub const EXT_CMD_LINE_PTR: usize = 0x0c8;
    pub const E820_ENTRIES: usize = 0x1e8;
    pub const E820_TABLE: usize = 0x2d0;
    /// struct boot_e820_entry: u64 address, u64 size, u32 type.
    pub const E820_ENTRY_SIZE: usize = 20;
    pub const E820_MAX_ENTRIES: usize = 128;
}

/// A boot protocol version, major in the high byte (0x020c is 2.12).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ProtocolVersion(pub u16);

impl fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}", self.0 >> 8, self.0 & 0xff)
    }
}

/// loadflags (setup header 0x211).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadFlags(pub u8);

impl LoadFlags {
    /// The protected-mode code is loaded at 1 MiB or above (a bzImage), not at 64 KiB.
    pub const LOADED_HIGH: u8 = 1 << 0;
    /// Suppress early messages (the launcher wants them).
    pub const QUIET: u8 = 1 << 5;

    pub fn loaded_high(self) -> bool {
        self.0 & Self::LOADED_HIGH != 0
    }
}

/// xloadflags (setup header 0x236, protocol 2.12+).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XLoadFlags(pub u16);

impl XLoadFlags {
    /// The kernel has the 64-bit entry point at offset 0x200.
    pub const KERNEL_64: u16 = 1 << 0;

    pub fn kernel_64(self) -> bool {
        self.0 & Self::KERNEL_64 != 0
    }
}

/// The setup header fields a 64-bit loader needs, checked.
///
/// # Invariants
///
/// `version >= MIN_PROTOCOL`; `relocatable`; `xloadflags.kernel_64()`;
/// `loadflags.loaded_high()`; `kernel_alignment` is a power of two of at least a page;
/// `setup_size + syssize * 16 <= file length`; `header_end` lies inside the file and
/// inside the zero page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetupHeader {
    pub version: ProtocolVersion,
    /// Bytes before the protected-mode code: the boot sector and the setup sectors.
    pub setup_size: usize,
    /// Size of the protected-mode code in bytes (syssize paragraphs).
    pub protected_mode_size: usize,
    pub loadflags: LoadFlags,
    pub xloadflags: XLoadFlags,
    pub relocatable: bool,
    pub kernel_alignment: u64,
    /// Highest address the initrd's last byte may occupy.
    pub initrd_addr_max: u64,
    /// Longest command line, not counting the terminating NUL.
    pub cmdline_size: u64,
    /// Preferred load address (1 MiB when the protocol predates 2.10).
    pub pref_address: u64,
    /// Memory the kernel needs from its runtime start before it reads the memory map.
    pub init_size: u64,
    /// End of the setup header: what is copied into the zero page.
    pub header_end: usize,
}

fn read_u8(b: &[u8], off: usize) -> Option<u8> {
    b.get(off).copied()
}

fn read_u16(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(off..off + 2)?.try_into().ok()?))
}

fn read_u32(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

fn read_u64(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(off..off + 8)?.try_into().ok()?))
}

/// Whether `image` starts like a Linux kernel with a setup header (the boot sector's
/// 0xAA55 flag and "HdrS"): how `--format auto` tells a bzImage from other images.
/// `SetupHeader::parse` then checks the rest.
pub fn has_setup_header(image: &[u8]) -> bool {
    read_u16(image, hdr::BOOT_FLAG) == Some(BOOT_FLAG_MAGIC)
        && read_u32(image, hdr::HEADER) == Some(HDRS_MAGIC)
}

impl SetupHeader {
    /// Reads and checks the setup header of a bzImage.
    pub fn parse(kernel: &[u8]) -> Result<Self> {
        let truncated = || {
            Error::image(format!(
                "bzImage is truncated ({} bytes): too short for a setup header",
                kernel.len()
            ))
        };
        if kernel.len() < hdr::READ_END {
            return Err(truncated());
        }
        let u8_at = |off| read_u8(kernel, off).ok_or_else(truncated);
        let u16_at = |off| read_u16(kernel, off).ok_or_else(truncated);
        let u32_at = |off| read_u32(kernel, off).ok_or_else(truncated);

        if u16_at(hdr::BOOT_FLAG)? != BOOT_FLAG_MAGIC || u32_at(hdr::HEADER)? != HDRS_MAGIC {
            return Err(Error::image(
                "not a Linux bzImage: no 0xAA55 boot flag and \"HdrS\" setup header at 0x1fe/0x202",
            ));
        }
        let version = ProtocolVersion(u16_at(hdr::VERSION)?);
        if version < MIN_PROTOCOL {
            return Err(Error::image(format!(
                "the kernel speaks boot protocol {version}; the 64-bit entry needs {MIN_PROTOCOL} or later (Linux 3.8+)"
            )));
        }
        let loadflags = LoadFlags(u8_at(hdr::LOADFLAGS)?);
        if !loadflags.loaded_high() {
            return Err(Error::image(
                "a zImage (loaded at 64 KiB) is not supported: build a bzImage",
            ));
        }
        let xloadflags = XLoadFlags(u16_at(hdr::XLOADFLAGS)?);
        if !xloadflags.kernel_64() {
            return Err(Error::image(
                "the kernel has no 64-bit entry point (XLF_KERNEL_64 is clear): boot a 64-bit kernel",
            ));
        }
        let relocatable = u8_at(hdr::RELOCATABLE_KERNEL)? != 0;
        if !relocatable {
            return Err(Error::image(
                "the kernel is not relocatable: rebuild it with CONFIG_RELOCATABLE=y",
            ));
        }
        let kernel_alignment = u64::from(u32_at(hdr::KERNEL_ALIGNMENT)?);
        if !kernel_alignment.is_power_of_two() || kernel_alignment < PAGE_SIZE {
            return Err(Error::image(format!(
                "kernel_alignment {kernel_alignment:#x} is not a power of two of at least 4 KiB"
            )));
        }
        let setup_sects = match u8_at(hdr::SETUP_SECTS)? {
            0 => 4, // boot.rst: "If this field is 0, the real value is 4."
            n => usize::from(n),
        };
        let setup_size = (setup_sects + 1) * SECTOR_SIZE;
        let protected_mode_size = u32_at(hdr::SYSSIZE)? as usize * 16;
        let rest = kernel.len().saturating_sub(setup_size);
        if protected_mode_size == 0 || protected_mode_size > rest {
            return Err(Error::image(format!(
                "bzImage is truncated: the header promises {setup_size} bytes of setup and {protected_mode_size} of kernel, the file has {}",
                kernel.len()
            )));
        }
        let header_end = hdr::HEADER + usize::from(u8_at(hdr::JUMP + 1)?);
        if header_end < hdr::READ_END || header_end > kernel.len() || header_end > ZERO_PAGE_SIZE {
            return Err(Error::image(format!(
                "setup header end {header_end:#x} (from the jump at 0x200) is implausible"
            )));
        }
        let pref_address = match read_u64(kernel, hdr::PREF_ADDRESS) {
            Some(a) if version >= PROTOCOL_2_10 && a != 0 => a,
            _ => HIGH_MEMORY,
        };
        let init_size = if version >= PROTOCOL_2_10 {
            u64::from(u32_at(hdr::INIT_SIZE)?)
        } else {
            0
        };
        Ok(Self {
            version,
            setup_size,
            protected_mode_size,
            loadflags,
            xloadflags,
            relocatable,
            kernel_alignment,
            initrd_addr_max: u64::from(u32_at(hdr::INITRD_ADDR_MAX)?),
            cmdline_size: u64::from(u32_at(hdr::CMDLINE_SIZE)?),
            pref_address,
            init_size,
            header_end,
        })
    }
}

/// Type of an e820 map entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum E820Kind {
    Ram = 1,
    Reserved = 2,
}

/// One e820 entry: `size` bytes at `addr`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct E820Entry {
    pub addr: u64,
    pub size: u64,
    pub kind: E820Kind,
}

/// Checks the RAM ranges against guest memory and each other; returns them sorted.
fn check_ram(ram: &[Range<u64>], mem_len: u64) -> Result<Vec<Range<u64>>> {
    let mut sorted = ram.to_vec();
    sorted.sort_by_key(|r| r.start);
    for r in &sorted {
        for mmio in [&IOAPIC_PAGE, &LAPIC_PAGE] {
            if overlaps(r, mmio) {
                return Err(Error::image(format!(
                    "RAM range {r:#x?} overlaps the APIC page {mmio:#x?}: leave a hole there"
                )));
            }
        }
        if r.start >= r.end || r.end > mem_len {
            return Err(Error::image(format!(
                "RAM range {r:#x?} is empty or outside guest memory ({mem_len:#x} bytes)"
            )));
        }
    }
    if let Some(pair) = sorted.windows(2).find(|w| w[0].end > w[1].start) {
        return Err(Error::image(format!(
            "RAM ranges {:#x?} and {:#x?} overlap",
            pair[0], pair[1]
        )));
    }
    Ok(sorted)
}

/// The e820 map: the RAM ranges less the 640 KiB..1 MiB hole, and the APIC pages reserved.
/// `ram` must be sorted and checked (`check_ram`).
pub fn e820_map(ram: &[Range<u64>]) -> Vec<E820Entry> {
    let mut map = Vec::new();
    for r in ram {
        for part in [
            r.start..r.end.min(LOW_RAM_END),
            r.start.max(HIGH_MEMORY)..r.end,
        ] {
            if part.start < part.end {
                map.push(E820Entry {
                    addr: part.start,
                    size: part.end - part.start,
                    kind: E820Kind::Ram,
                });
            }
        }
    }
    for page in [IOAPIC_PAGE, LAPIC_PAGE] {
        map.push(E820Entry {
            addr: page.start,
            size: page.end - page.start,
            kind: E820Kind::Reserved,
        });
    }
    map.sort_by_key(|e| e.addr);
    map
}

/// What `load` put where, and the entry state.
#[derive(Clone, Debug)]
pub struct LinuxBoot {
    pub regs: Regs,
    pub sregs: Sregs,
    pub header: SetupHeader,
    /// Where the protected-mode kernel was copied.
    pub kernel: Range<u64>,
    /// The memory the kernel needs from its load address before it reads the e820 map
    /// (init_size; at least the protected-mode kernel).
    pub kernel_window: Range<u64>,
    pub initrd: Option<Range<u64>>,
    pub e820: Vec<E820Entry>,
}

fn align_up(value: u64, align: u64) -> Option<u64> {
    Some(value.checked_add(align - 1)? & !(align - 1))
}

fn contains(outer: &Range<u64>, inner: &Range<u64>) -> bool {
    outer.start <= inner.start && inner.end <= outer.end
}

fn overlaps(a: &Range<u64>, b: &Range<u64>) -> bool {
    a.start < b.end && b.start < a.end
}

fn mib(bytes: u64) -> u64 {
    bytes.div_ceil(1 << 20)
}

/// The highest page-aligned place for `size` bytes of initrd: inside RAM, at or above
/// 1 MiB, its last byte at or below `initrd_addr_max`, clear of the kernel's window.
fn place_initrd(
    ram: &[Range<u64>],
    size: u64,
    initrd_addr_max: u64,
    kernel_window: &Range<u64>,
) -> Option<Range<u64>> {
    let limit = initrd_addr_max.saturating_add(1).min(IDENTITY_MAPPED);
    for r in ram.iter().rev() {
        let top = r.end.min(limit);
        // Highest in the range; failing that, just below the kernel.
        for ceiling in [top, kernel_window.start.min(top)] {
            let Some(start) = ceiling.checked_sub(size).map(|s| s & !(PAGE_SIZE - 1)) else {
                continue;
            };
            let place = start..start + size;
            if start >= HIGH_MEMORY && contains(r, &place) && !overlaps(&place, kernel_window) {
                return Some(place);
            }
        }
    }
    None
}

fn write_bytes(mem: &mut [u8], addr: u64, bytes: &[u8], what: &str) -> Result<()> {
    let start = usize::try_from(addr).ok();
    let dst = start
        .and_then(|s| Some(s..s.checked_add(bytes.len())?))
        .and_then(|r| mem.get_mut(r))
        .ok_or_else(|| Error::image(format!("{what} at {addr:#x} is outside guest memory")))?;
    dst.copy_from_slice(bytes);
    Ok(())
}

/// The zero page under construction: a page-sized buffer with little-endian field writers.
struct ZeroPage([u8; ZERO_PAGE_SIZE]);

impl ZeroPage {
    fn put_u8(&mut self, off: usize, v: u8) {
        self.0[off] = v;
    }
    fn put_u32(&mut self, off: usize, v: u32) {
        self.0[off..off + 4].copy_from_slice(&v.to_le_bytes());
    }
    fn put_u64(&mut self, off: usize, v: u64) {
        self.0[off..off + 8].copy_from_slice(&v.to_le_bytes());
    }
    /// Low 32 bits at `low`, high 32 bits at `high` (the ext_* fields).
    fn put_split(&mut self, low: usize, high: usize, v: u64) {
        self.put_u32(low, v as u32);
        self.put_u32(high, (v >> 32) as u32);
    }
}

/// 8-byte flat (base 0, 4 GiB) segment descriptor.
fn flat_descriptor(access: u8, flags: u8) -> u64 {
    0xffff | (0xf << 48) | (u64::from(access) << 40) | (u64::from(flags & 0xf) << 52)
}

/// Descriptor access bytes and flag nibbles.
const ACCESS_CODE: u8 = 0x9b; // present, DPL 0, code, execute/read, accessed
const ACCESS_DATA: u8 = 0x93; // present, DPL 0, data, read/write, accessed
const FLAGS_CODE64: u8 = 0xa; // G, L
const FLAGS_DATA: u8 = 0xc; // G, B
const ACCESS_TSS_BUSY: u64 = 0x8b; // present, DPL 0, busy 64-bit TSS

/// GDT: null, unused, __BOOT_CS (64-bit code), __BOOT_DS (data), a 16-byte TSS descriptor
/// at `boot::SEL_TSS`.
fn write_gdt(mem: &mut [u8]) -> Result<u16> {
    let tss = boot::TSS_ADDR;
    let limit = u64::from(boot::TSS_LIMIT);
    let tss_low = (limit & 0xffff)
        | ((tss & 0xff_ffff) << 16)
        | (ACCESS_TSS_BUSY << 40)
        | (((limit >> 16) & 0xf) << 48)
        | (((tss >> 24) & 0xff) << 56);
    let mut gdt = [0u64; 6];
    gdt[usize::from(BOOT_CS / 8)] = flat_descriptor(ACCESS_CODE, FLAGS_CODE64);
    gdt[usize::from(BOOT_DS / 8)] = flat_descriptor(ACCESS_DATA, FLAGS_DATA);
    gdt[usize::from(boot::SEL_TSS / 8)] = tss_low;
    gdt[usize::from(boot::SEL_TSS / 8) + 1] = tss >> 32;
    let bytes: Vec<u8> = gdt.iter().flat_map(|d| d.to_le_bytes()).collect();
    write_bytes(mem, boot::GDT_ADDR, &bytes, "the GDT")?;
    write_bytes(mem, tss, &[0; boot::TSS_LIMIT as usize + 1], "the TSS")?;
    Ok((bytes.len() - 1) as u16)
}

const CR0_PE: u64 = 1 << 0;
const CR0_MP: u64 = 1 << 1;
const CR0_ET: u64 = 1 << 4;
const CR0_NE: u64 = 1 << 5;
const CR0_WP: u64 = 1 << 16;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

/// The 64-bit entry state: long mode on the launcher's identity tables, CS = __BOOT_CS,
/// DS/ES/SS (and FS/GS) = __BOOT_DS, interrupts off, RSI = the zero page.
fn entry_state(entry: u64, gdt_limit: u16) -> (Regs, Sregs) {
    let code = Segment {
        base: 0,
        limit: 0xffff_ffff,
        selector: BOOT_CS,
        type_: ACCESS_CODE & 0xf,
        present: 1,
        s: 1,
        l: 1,
        g: 1,
        ..Default::default()
    };
    let data = Segment {
        base: 0,
        limit: 0xffff_ffff,
        selector: BOOT_DS,
        type_: ACCESS_DATA & 0xf,
        present: 1,
        db: 1,
        s: 1,
        g: 1,
        ..Default::default()
    };
    let sregs = Sregs {
        cs: code,
        ds: data,
        es: data,
        fs: data,
        gs: data,
        ss: data,
        tr: Segment {
            base: boot::TSS_ADDR,
            limit: boot::TSS_LIMIT,
            selector: boot::SEL_TSS,
            type_: (ACCESS_TSS_BUSY & 0xf) as u8,
            present: 1,
            ..Default::default()
        },
        ldt: Segment {
            type_: 0x2,
            unusable: 1,
            ..Default::default()
        },
        gdt: Dtable {
            base: boot::GDT_ADDR,
            limit: gdt_limit,
            padding: [0; 3],
        },
        idt: Dtable::default(),
        cr0: CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG,
        cr3: boot::PML4_ADDR,
        cr4: CR4_PAE,
        efer: EFER_LME | EFER_LMA,
        ..Default::default()
    };
    let regs = Regs {
        rip: entry,
        rsi: ZERO_PAGE_ADDR,
        rsp: boot::STACK_TOP,
        rflags: SHADOWVM_RFLAGS_FIXED1, // IF = 0
        ..Default::default()
    };
    (regs, sregs)
}

/// Loads `kernel` (a bzImage) and `initrd` into guest memory `mem` (index = guest-physical
/// address), whose RAM is `ram`, with the command line `cmdline`, and returns the 64-bit
/// entry state. Every check happens before guest memory is written.
pub fn load(
    mem: &mut [u8],
    ram: &[Range<u64>],
    kernel: &[u8],
    initrd: Option<&[u8]>,
    cmdline: &str,
) -> Result<LinuxBoot> {
    let header = SetupHeader::parse(kernel)?;
    let ram = check_ram(ram, mem.len() as u64)?;
    let low = boot::BOOT_AREA.start..boot::STACK_TOP;
    if !ram.iter().any(|r| contains(r, &low)) {
        return Err(Error::image(format!(
            "RAM must cover {low:#x?}: the boot structures, zero page and command line live there"
        )));
    }

    // boot.rst: a relocatable kernel loaded below pref_address moves itself there, so load it
    // there (aligned) and give it init_size bytes.
    let protected_mode = &kernel[header.setup_size..];
    let pm_len = protected_mode.len() as u64;
    let load_addr = align_up(
        header.pref_address.max(HIGH_MEMORY),
        header.kernel_alignment,
    )
    .ok_or_else(|| Error::image("the kernel's preferred address overflows"))?;
    let window_len = header.init_size.max(pm_len);
    let kernel_window = load_addr..load_addr.saturating_add(window_len);
    if kernel_window.end > IDENTITY_MAPPED || !ram.iter().any(|r| contains(r, &kernel_window)) {
        return Err(Error::image(format!(
            "the kernel needs {} MiB of RAM at {:#x} (its preferred address and init_size): give the guest at least {} MiB",
            mib(window_len),
            load_addr,
            mib(kernel_window.end)
        )));
    }

    let cmdline = cmdline.as_bytes();
    if cmdline.contains(&0) {
        return Err(Error::usage("the kernel command line contains a NUL byte"));
    }
    let cmdline_max = header.cmdline_size.min(CMDLINE_AREA_END - CMDLINE_ADDR - 1);
    if cmdline.len() as u64 > cmdline_max {
        return Err(Error::usage(format!(
            "the kernel command line is {} bytes; this kernel takes at most {cmdline_max}",
            cmdline.len()
        )));
    }

    // An empty initrd file is no initrd.
    let initrd = initrd.filter(|data| !data.is_empty());
    let initrd_place = match initrd {
        None => None,
        Some(data) => {
            let size = data.len() as u64;
            let place = (size <= u64::from(u32::MAX))
                .then(|| place_initrd(&ram, size, header.initrd_addr_max, &kernel_window))
                .flatten()
                .ok_or_else(|| {
                    Error::image(format!(
                        "the initrd ({size} bytes) does not fit in RAM between 1 MiB and the kernel's limit {:#x}, clear of the kernel at {kernel_window:#x?}: give the guest more memory or use a smaller initrd",
                        header.initrd_addr_max
                    ))
                })?;
            Some(place)
        }
    };

    let e820 = e820_map(&ram);
    if e820.len() > zp::E820_MAX_ENTRIES {
        return Err(Error::image(format!(
            "{} e820 entries; the zero page holds {}",
            e820.len(),
            zp::E820_MAX_ENTRIES
        )));
    }

    // Checks done: write guest memory.
    write_bytes(mem, load_addr, protected_mode, "the kernel")?;
    if let (Some(data), Some(place)) = (initrd, &initrd_place) {
        write_bytes(mem, place.start, data, "the initrd")?;
    }
    let mut cmdline_z = cmdline.to_vec();
    cmdline_z.push(0);
    write_bytes(mem, CMDLINE_ADDR, &cmdline_z, "the command line")?;

    let mut zero = ZeroPage([0; ZERO_PAGE_SIZE]);
    zero.0[hdr::SETUP_SECTS..header.header_end]
        .copy_from_slice(&kernel[hdr::SETUP_SECTS..header.header_end]);
    zero.put_u8(hdr::TYPE_OF_LOADER, LOADER_TYPE_UNDEFINED);
    zero.put_u8(
        hdr::LOADFLAGS,
        header.loadflags.0 & !LoadFlags::QUIET | LoadFlags::LOADED_HIGH,
    );
    zero.put_u32(hdr::CODE32_START, load_addr as u32);
    let (initrd_addr, initrd_size) = initrd_place
        .as_ref()
        .map_or((0, 0), |p| (p.start, p.end - p.start));
    zero.put_split(hdr::RAMDISK_IMAGE, zp::EXT_RAMDISK_IMAGE, initrd_addr);
    zero.put_split(hdr::RAMDISK_SIZE, zp::EXT_RAMDISK_SIZE, initrd_size);
    zero.put_split(hdr::CMD_LINE_PTR, zp::EXT_CMD_LINE_PTR, CMDLINE_ADDR);
    zero.put_u8(zp::E820_ENTRIES, e820.len() as u8);
    for (i, e) in e820.iter().enumerate() {
        let off = zp::E820_TABLE + i * zp::E820_ENTRY_SIZE;
        zero.put_u64(off, e.addr);
        zero.put_u64(off + 8, e.size);
        zero.put_u32(off + 16, e.kind as u32);
    }
    write_bytes(mem, ZERO_PAGE_ADDR, &zero.0, "the zero page")?;

    let gdt_limit = write_gdt(mem)?;
    boot::write_page_tables(mem)?;
    let (regs, sregs) = entry_state(load_addr + ENTRY_64_OFFSET, gdt_limit);
    Ok(LinuxBoot {
        regs,
        sregs,
        header,
        kernel: load_addr..load_addr + pm_len,
        kernel_window,
        initrd: initrd_place,
        e820,
    })
}

#[cfg(test)]
// A RAM layout of one range is a slice holding one range, not a mistake for a Vec of numbers.
#[allow(clippy::single_range_in_vec_init)]
pub(crate) mod tests {
    use super::*;
    use crate::error::Kind;
    use std::path::PathBuf;

    const MEM: u64 = 256 << 20;

    fn rd32(mem: &[u8], addr: u64) -> u32 {
        read_u32(mem, addr as usize).unwrap()
    }

    fn rd64(mem: &[u8], addr: u64) -> u64 {
        read_u64(mem, addr as usize).unwrap()
    }

    /// Fields of a synthetic bzImage.
    #[derive(Clone)]
    pub(crate) struct Synthetic {
        version: u16,
        loadflags: u8,
        xloadflags: u16,
        relocatable: u8,
        kernel_alignment: u32,
        initrd_addr_max: u32,
        cmdline_size: u32,
        pref_address: u64,
        init_size: u32,
        setup_sects: u8,
        payload: usize,
    }

    impl Default for Synthetic {
        /// Like a Linux 7.2 x86-64 bzImage.
        fn default() -> Self {
            Self {
                version: 0x020f,
                loadflags: LoadFlags::LOADED_HIGH,
                xloadflags: 0x7f,
                relocatable: 1,
                kernel_alignment: 0x20_0000,
                initrd_addr_max: 0x7fff_ffff,
                cmdline_size: 2047,
                pref_address: 0x100_0000,
                init_size: 0x80_0000,
                setup_sects: 7,
                payload: 0x3_0000,
            }
        }
    }

    impl Synthetic {
        pub(crate) fn image(&self) -> Vec<u8> {
            let sects = if self.setup_sects == 0 {
                4
            } else {
                usize::from(self.setup_sects)
            };
            let setup = (sects + 1) * SECTOR_SIZE;
            let mut k = vec![0u8; setup + self.payload];
            k[hdr::SETUP_SECTS] = self.setup_sects;
            k[hdr::SYSSIZE..hdr::SYSSIZE + 4]
                .copy_from_slice(&((self.payload / 16) as u32).to_le_bytes());
            k[hdr::BOOT_FLAG..hdr::BOOT_FLAG + 2].copy_from_slice(&BOOT_FLAG_MAGIC.to_le_bytes());
            k[hdr::JUMP] = 0xeb;
            k[hdr::JUMP + 1] = 0x6a; // header ends at 0x26c, as in Linux 7.2
            k[hdr::HEADER..hdr::HEADER + 4].copy_from_slice(&HDRS_MAGIC.to_le_bytes());
            k[hdr::VERSION..hdr::VERSION + 2].copy_from_slice(&self.version.to_le_bytes());
            k[hdr::LOADFLAGS] = self.loadflags;
            k[hdr::INITRD_ADDR_MAX..hdr::INITRD_ADDR_MAX + 4]
                .copy_from_slice(&self.initrd_addr_max.to_le_bytes());
            k[hdr::KERNEL_ALIGNMENT..hdr::KERNEL_ALIGNMENT + 4]
                .copy_from_slice(&self.kernel_alignment.to_le_bytes());
            k[hdr::RELOCATABLE_KERNEL] = self.relocatable;
            k[hdr::XLOADFLAGS..hdr::XLOADFLAGS + 2].copy_from_slice(&self.xloadflags.to_le_bytes());
            k[hdr::CMDLINE_SIZE..hdr::CMDLINE_SIZE + 4]
                .copy_from_slice(&self.cmdline_size.to_le_bytes());
            k[hdr::PREF_ADDRESS..hdr::PREF_ADDRESS + 8]
                .copy_from_slice(&self.pref_address.to_le_bytes());
            k[hdr::INIT_SIZE..hdr::INIT_SIZE + 4].copy_from_slice(&self.init_size.to_le_bytes());
            for (i, b) in k[setup..].iter_mut().enumerate() {
                *b = (i * 7 + 3) as u8;
            }
            k
        }
    }

    fn load_synthetic(
        s: &Synthetic,
        mem_size: u64,
        initrd: Option<&[u8]>,
        cmdline: &str,
    ) -> (Vec<u8>, Result<LinuxBoot>) {
        let mut mem = vec![0u8; mem_size as usize];
        let r = load(&mut mem, &[0..mem_size], &s.image(), initrd, cmdline);
        (mem, r)
    }

    fn err_msg(r: Result<LinuxBoot>) -> String {
        r.expect_err("load should fail").msg
    }

    /// Software walk of the identity tables for one address (2 MiB leaves).
    fn translate(mem: &[u8], cr3: u64, va: u64) -> Option<u64> {
        let mask = 0x000f_ffff_ffff_f000;
        let pml4e = rd64(mem, cr3 + ((va >> 39) & 0x1ff) * 8);
        let pdpte = rd64(mem, (pml4e & mask) + ((va >> 30) & 0x1ff) * 8);
        let pde = rd64(mem, (pdpte & mask) + ((va >> 21) & 0x1ff) * 8);
        (pml4e & pdpte & pde & 1 == 1).then_some((pde & 0x000f_ffff_ffe0_0000) | (va & 0x1f_ffff))
    }

    /// Everything the protocol asks of a loader, checked in guest memory.
    fn check_boot(mem: &[u8], kernel: &[u8], b: &LinuxBoot, initrd: Option<&[u8]>, cmdline: &str) {
        let h = &b.header;
        let zp = ZERO_PAGE_ADDR;
        // The protected-mode kernel at the aligned preferred address.
        assert_eq!(b.kernel.start % h.kernel_alignment, 0);
        assert!(b.kernel.start >= h.pref_address);
        let pm = &kernel[h.setup_size..];
        assert_eq!(
            &mem[b.kernel.start as usize..b.kernel.end as usize],
            pm,
            "kernel copied"
        );
        assert!(b.kernel_window.end - b.kernel_window.start >= h.init_size);
        // Setup header copied, then the loader's fields.
        let hdr_in_zp = (zp as usize + hdr::SETUP_SECTS)..(zp as usize + h.header_end);
        for (i, (&got, &want)) in mem[hdr_in_zp]
            .iter()
            .zip(&kernel[hdr::SETUP_SECTS..h.header_end])
            .enumerate()
        {
            let off = hdr::SETUP_SECTS + i;
            let written = [hdr::TYPE_OF_LOADER, hdr::LOADFLAGS].contains(&off)
                || (hdr::CODE32_START..hdr::CODE32_START + 4).contains(&off)
                || (hdr::RAMDISK_IMAGE..hdr::RAMDISK_SIZE + 4).contains(&off)
                || (hdr::CMD_LINE_PTR..hdr::CMD_LINE_PTR + 4).contains(&off);
            if !written {
                assert_eq!(got, want, "setup header byte {off:#x}");
            }
        }
        assert_eq!(mem[(zp + 0x1ef) as usize], 0, "sentinel clear");
        assert_eq!(mem[(zp as usize) + hdr::TYPE_OF_LOADER], 0xff);
        assert_eq!(
            mem[(zp as usize) + hdr::LOADFLAGS] & LoadFlags::LOADED_HIGH,
            LoadFlags::LOADED_HIGH
        );
        assert_eq!(mem[(zp as usize) + hdr::LOADFLAGS] & LoadFlags::QUIET, 0);
        // The command line, NUL-terminated, where cmd_line_ptr says.
        let ptr = u64::from(rd32(mem, zp + hdr::CMD_LINE_PTR as u64))
            | u64::from(rd32(mem, zp + zp::EXT_CMD_LINE_PTR as u64)) << 32;
        assert!(ptr < LOW_RAM_END);
        let cl = &mem[ptr as usize..ptr as usize + cmdline.len() + 1];
        assert_eq!(&cl[..cmdline.len()], cmdline.as_bytes());
        assert_eq!(cl[cmdline.len()], 0);
        // The initrd: page aligned, under initrd_addr_max, clear of the kernel, above 1 MiB.
        let image = u64::from(rd32(mem, zp + hdr::RAMDISK_IMAGE as u64));
        let size = u64::from(rd32(mem, zp + hdr::RAMDISK_SIZE as u64));
        match initrd {
            None => assert_eq!((image, size), (0, 0)),
            Some(data) => {
                assert_eq!(size, data.len() as u64);
                assert_eq!(image % PAGE_SIZE, 0);
                assert!(image >= HIGH_MEMORY);
                assert!(image + size - 1 <= h.initrd_addr_max);
                assert!(!overlaps(&(image..image + size), &b.kernel_window));
                assert_eq!(&mem[image as usize..(image + size) as usize], data);
                assert_eq!(b.initrd, Some(image..image + size));
            }
        }
        // e820 in the zero page matches what load returned.
        let n = mem[zp as usize + zp::E820_ENTRIES] as usize;
        assert_eq!(n, b.e820.len());
        for (i, e) in b.e820.iter().enumerate() {
            let off = zp + (zp::E820_TABLE + i * zp::E820_ENTRY_SIZE) as u64;
            assert_eq!(rd64(mem, off), e.addr);
            assert_eq!(rd64(mem, off + 8), e.size);
            assert_eq!(rd32(mem, off + 16), e.kind as u32);
        }
        // The 64-bit entry state.
        let (r, s) = (&b.regs, &b.sregs);
        assert_eq!(r.rip, b.kernel.start + 0x200);
        assert_eq!(r.rsi, zp);
        assert_eq!(r.rflags & (1 << 9), 0, "interrupts off");
        assert_eq!((r.rbp, r.rdi, r.rbx), (0, 0, 0));
        assert_eq!(s.cs.selector, 0x10);
        assert_eq!(
            (s.ds.selector, s.es.selector, s.ss.selector),
            (0x18, 0x18, 0x18)
        );
        assert_eq!((s.cs.l, s.cs.db), (1, 0));
        assert!(s.efer & EFER_LMA != 0 && s.cr0 & CR0_PG != 0 && s.cr4 & CR4_PAE != 0);
        // GDT descriptors match the loaded segments and are flat.
        for seg in [s.cs, s.ds, s.ss, s.es] {
            let d = rd64(mem, s.gdt.base + u64::from(seg.selector));
            assert!(u64::from(seg.selector) + 7 <= u64::from(s.gdt.limit));
            assert_eq!((d >> 40) & 0xf, u64::from(seg.type_));
            assert_eq!((d >> 47) & 1, 1, "present");
            assert_eq!((d >> 53) & 1, u64::from(seg.l));
            assert_eq!((d >> 54) & 1, u64::from(seg.db));
            assert_eq!(
                d & 0xffff | ((d >> 48) & 0xf) << 16,
                0xf_ffff,
                "4 GiB limit"
            );
            assert_eq!((d >> 16) & 0xff_ffff | (d >> 56) << 24, 0, "base 0");
        }
        assert_eq!(
            rd64(mem, s.gdt.base + 0x10) >> 40 & 0xa,
            0xa,
            "code: execute/read"
        );
        assert_eq!(
            rd64(mem, s.gdt.base + 0x18) >> 40 & 0xa,
            0x2,
            "data: read/write"
        );
        // Identity mapping of everything the entry code touches.
        for a in [
            r.rip,
            b.kernel_window.end - 1,
            zp,
            ptr,
            r.rsp - 8,
            s.gdt.base,
        ] {
            assert_eq!(translate(mem, s.cr3, a), Some(a), "{a:#x} identity-mapped");
        }
    }

    #[test]
    fn synthetic_kernel_is_laid_out_as_the_protocol_says() {
        let s = Synthetic::default();
        let initrd: Vec<u8> = (0..300_001u32).map(|i| (i % 251) as u8).collect();
        let cmdline = "console=ttyS0 pti=on";
        let (mem, r) = load_synthetic(&s, MEM, Some(&initrd), cmdline);
        let b = r.unwrap();
        check_boot(&mem, &s.image(), &b, Some(&initrd), cmdline);
        assert_eq!(b.kernel.start, 0x100_0000);
        assert_eq!(b.kernel_window, 0x100_0000..0x180_0000);
        // High in RAM: the last page-aligned place below the end of memory.
        assert_eq!(
            b.initrd,
            Some((MEM - 300_001) & !0xfff..((MEM - 300_001) & !0xfff) + 300_001)
        );
    }

    #[test]
    fn without_initrd_the_ramdisk_fields_are_zero() {
        let s = Synthetic::default();
        let (mem, r) = load_synthetic(&s, MEM, None, "");
        let b = r.unwrap();
        check_boot(&mem, &s.image(), &b, None, "");
        assert_eq!(b.initrd, None);
        // An empty initrd file is no initrd.
        let (mem, r) = load_synthetic(&s, MEM, Some(&[]), "");
        let b = r.unwrap();
        check_boot(&mem, &s.image(), &b, None, "");
        assert_eq!(b.initrd, None);
    }

    #[test]
    fn more_ram_ranges_than_the_e820_table_holds() {
        let s = Synthetic::default();
        let mem_size = 64u64 << 20;
        let mut mem = vec![0u8; mem_size as usize];
        let mut ram = vec![0..0x300_0000u64];
        ram.extend((0..126u64).map(|i| 0x300_0000 + i * 0x2000..0x300_1000 + i * 0x2000));
        // 2 entries for the first range, 126 more, 2 APIC pages: 130 > 128.
        let e = err_msg(load(&mut mem, &ram, &s.image(), None, ""));
        assert!(
            e.contains("130 e820 entries; the zero page holds 128"),
            "{e}"
        );
        assert!(mem.iter().all(|&b| b == 0), "nothing written on failure");
        ram.truncate(125);
        let b = load(&mut mem, &ram, &s.image(), None, "").unwrap();
        assert_eq!(b.e820.len(), 128);
        check_boot(&mem, &s.image(), &b, None, "");
    }

    #[test]
    fn initrd_stays_below_initrd_addr_max_and_clear_of_the_kernel() {
        // initrd_addr_max inside the kernel's window: the initrd goes just below the kernel.
        let s = Synthetic {
            initrd_addr_max: 0x120_0000,
            ..Default::default()
        };
        let initrd = vec![0x5a; 0x1000 * 5];
        let (mem, r) = load_synthetic(&s, MEM, Some(&initrd), "x");
        let b = r.unwrap();
        check_boot(&mem, &s.image(), &b, Some(&initrd), "x");
        assert_eq!(b.initrd, Some(0x100_0000 - 0x5000..0x100_0000));

        // A limit above the kernel: the initrd ends at it.
        let s = Synthetic {
            initrd_addr_max: 0x3ff_ffff,
            ..Default::default()
        };
        let (mem, r) = load_synthetic(&s, MEM, Some(&initrd), "x");
        let b = r.unwrap();
        check_boot(&mem, &s.image(), &b, Some(&initrd), "x");
        assert_eq!(b.initrd, Some(0x400_0000 - 0x5000..0x400_0000));
    }

    #[test]
    fn kernel_is_aligned_up_from_its_preferred_address() {
        let s = Synthetic {
            pref_address: 0x130_0000,
            ..Default::default()
        };
        let (mem, r) = load_synthetic(&s, MEM, None, "");
        let b = r.unwrap();
        check_boot(&mem, &s.image(), &b, None, "");
        assert_eq!(b.kernel.start, 0x140_0000);
        // setup_sects 0 means 4.
        let s = Synthetic {
            setup_sects: 0,
            ..Default::default()
        };
        let (mem, r) = load_synthetic(&s, MEM, None, "");
        let b = r.unwrap();
        assert_eq!(b.header.setup_size, 5 * 512);
        check_boot(&mem, &s.image(), &b, None, "");
    }

    #[test]
    fn e820_has_the_legacy_hole_and_the_apic_pages() {
        let ram = [0..0x8000_0000u64, 0x1_0000_0000..0x1_4000_0000];
        let map = e820_map(&check_ram(&ram, 0x1_4000_0000).unwrap());
        let ram_entry = |addr, size| E820Entry {
            addr,
            size,
            kind: E820Kind::Ram,
        };
        let reserved = |r: Range<u64>| E820Entry {
            addr: r.start,
            size: r.end - r.start,
            kind: E820Kind::Reserved,
        };
        assert_eq!(
            map,
            vec![
                ram_entry(0, 0xa_0000),
                ram_entry(0x10_0000, 0x8000_0000 - 0x10_0000),
                reserved(IOAPIC_PAGE),
                reserved(LAPIC_PAGE),
                ram_entry(0x1_0000_0000, 0x4000_0000),
            ]
        );
    }

    #[test]
    fn bad_ram_layouts_are_refused() {
        let s = Synthetic::default();
        let k = s.image();
        let mut mem = vec![0u8; MEM as usize];
        for (ram, want) in [
            (vec![0..MEM + 1], "outside guest memory"),
            (vec![0..0x100_0000, 0x80_0000..MEM], "overlap"),
            (vec![0x10_0000..MEM], "RAM must cover"),
            (vec![0..0x1000_0000, 0xfee0_0000..0xfef0_0000], "APIC page"),
        ] {
            let e = err_msg(load(&mut mem, &ram, &k, None, ""));
            assert!(e.contains(want), "{ram:x?}: {e}");
        }
        assert!(mem.iter().all(|&b| b == 0), "nothing written on failure");
    }

    #[test]
    fn header_errors_say_what_to_do() {
        let cases: [(Synthetic, &str); 5] = [
            (
                Synthetic {
                    version: 0x020b,
                    ..Default::default()
                },
                "boot protocol 2.11; the 64-bit entry needs 2.12",
            ),
            (
                Synthetic {
                    relocatable: 0,
                    ..Default::default()
                },
                "not relocatable: rebuild it with CONFIG_RELOCATABLE=y",
            ),
            (
                Synthetic {
                    xloadflags: 0x7e,
                    ..Default::default()
                },
                "no 64-bit entry point",
            ),
            (
                Synthetic {
                    loadflags: 0,
                    ..Default::default()
                },
                "zImage",
            ),
            (
                Synthetic {
                    kernel_alignment: 0x30_0000,
                    ..Default::default()
                },
                "not a power of two",
            ),
        ];
        for (s, want) in cases {
            let (mem, r) = load_synthetic(&s, MEM, None, "");
            let e = r.unwrap_err();
            assert_eq!(e.kind, Kind::Image);
            assert!(e.msg.contains(want), "{}", e.msg);
            assert!(mem.iter().all(|&b| b == 0), "nothing written on failure");
        }
        // Not a bzImage at all, and truncated ones.
        let mut mem = vec![0u8; MEM as usize];
        let ram = [0..MEM];
        assert!(err_msg(load(&mut mem, &ram, &[0x7f; 0x1000], None, ""))
            .contains("not a Linux bzImage"));
        assert!(err_msg(load(&mut mem, &ram, &[0; 0x100], None, "")).contains("truncated"));
        let mut k = Synthetic::default().image();
        k.truncate(k.len() - 16);
        assert!(err_msg(load(&mut mem, &ram, &k, None, "")).contains("truncated"));
    }

    #[test]
    fn command_line_too_long() {
        let s = Synthetic {
            cmdline_size: 16,
            ..Default::default()
        };
        let (mem, r) = load_synthetic(&s, MEM, None, &"x".repeat(16));
        check_boot(&mem, &s.image(), &r.unwrap(), None, &"x".repeat(16));
        let (mem, r) = load_synthetic(&s, MEM, None, &"x".repeat(17));
        let e = r.unwrap_err();
        assert_eq!(e.kind, Kind::Usage);
        assert!(
            e.msg.contains("17 bytes; this kernel takes at most 16"),
            "{}",
            e.msg
        );
        assert!(mem.iter().all(|&b| b == 0));
        let (_, r) = load_synthetic(&Synthetic::default(), MEM, None, "a\0b");
        assert!(err_msg(r).contains("NUL"));
    }

    #[test]
    fn initrd_too_large() {
        let s = Synthetic::default();
        // 32 MiB of RAM: the kernel window takes 16..24 MiB, 8 MiB are left above it and
        // ~15 MiB below.
        let big = vec![0u8; 16 << 20];
        let (mem, r) = load_synthetic(&s, 32 << 20, Some(&big), "");
        let msg = err_msg(r);
        assert!(msg.contains("does not fit"), "{msg}");
        assert!(mem.iter().all(|&b| b == 0));
        let fits = vec![1u8; 15 << 20];
        let (mem, r) = load_synthetic(&s, 32 << 20, Some(&fits), "");
        let b = r.unwrap();
        check_boot(&mem, &s.image(), &b, Some(&fits), "");
        assert!(b.initrd.unwrap().end <= 0x100_0000, "below the kernel");
    }

    #[test]
    fn kernel_window_must_fit_in_ram() {
        let s = Synthetic::default();
        let (_, r) = load_synthetic(&s, 20 << 20, None, "");
        let msg = err_msg(r);
        assert!(msg.contains("give the guest at least 24 MiB"), "{msg}");
    }

    /// The guest kernel `make linux-guest` builds (skipped when it has not been built).
    fn guest_bzimage() -> Option<Vec<u8>> {
        let path = std::env::var_os("SHADOWVM_LINUX_BZIMAGE")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../out/linux/bzImage")
            });
        match std::fs::read(&path) {
            Ok(k) => Some(k),
            Err(e) => {
                eprintln!(
                    "skipped: no guest kernel at {} ({e}); make linux-guest builds it",
                    path.display()
                );
                None
            }
        }
    }

    /// Loads the real guest kernel and initramfs as a 256 MiB QEMU `pc` machine's RAM is laid
    /// out (RAM up to 0xffe0000, then the firmware's tables) and writes the regions `load`
    /// filled to SHADOWVM_LINUX_DUMP: `NAME.bin` files and `regions` ("NAME ADDRESS" per
    /// line, the low region last). samples/linux/run-loader-qemu.sh boots them under QEMU
    /// through samples/linux/enter64.S. Run only on request: it writes files.
    #[test]
    #[ignore = "writes files; run by samples/linux/run-loader-qemu.sh"]
    fn dump_loaded_guest_for_qemu() {
        let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"));
        let dir = PathBuf::from(var("SHADOWVM_LINUX_DUMP"));
        let kernel = std::fs::read(var("SHADOWVM_LINUX_BZIMAGE")).unwrap();
        let initrd = std::fs::read(var("SHADOWVM_LINUX_INITRD")).unwrap();
        let cmdline = var("SHADOWVM_LINUX_CMDLINE");
        let mut mem = vec![0u8; MEM as usize];
        let b = load(&mut mem, &[0..0xffe_0000], &kernel, Some(&initrd), &cmdline).unwrap();
        check_boot(&mem, &kernel, &b, Some(&initrd), &cmdline);
        let low_end = align_up(CMDLINE_ADDR + cmdline.len() as u64 + 1, PAGE_SIZE).unwrap();
        let regions = [
            ("kernel", b.kernel.clone()),
            ("initrd", b.initrd.clone().unwrap()),
            ("low", boot::GDT_ADDR..low_end),
        ];
        std::fs::create_dir_all(&dir).unwrap();
        let mut list = String::new();
        for (name, r) in regions {
            std::fs::write(
                dir.join(format!("{name}.bin")),
                &mem[r.start as usize..r.end as usize],
            )
            .unwrap();
            list += &format!("{name} {:#x}\n", r.start);
        }
        std::fs::write(dir.join("regions"), list).unwrap();
        // enter64.S builds this state itself; it must be the one load returned.
        let (r, s) = (&b.regs, &b.sregs);
        assert_eq!((r.rip, r.rsi), (b.kernel.start + 0x200, 0x1_0000));
        assert_eq!((s.cr3, s.gdt.base, s.gdt.limit), (0x2000, 0x1000, 47));
        assert_eq!((s.cs.selector, s.ds.selector), (0x10, 0x18));
    }

    #[test]
    fn real_guest_kernel_loads() {
        let Some(kernel) = guest_bzimage() else {
            return;
        };
        let h = SetupHeader::parse(&kernel).unwrap();
        assert!(
            h.version >= ProtocolVersion(0x020f),
            "Linux 7.2 speaks 2.15+"
        );
        assert!(h.xloadflags.kernel_64() && h.relocatable);
        assert_eq!(h.pref_address, 0x100_0000, "CONFIG_PHYSICAL_START");
        assert_eq!(h.kernel_alignment, 0x20_0000, "CONFIG_PHYSICAL_ALIGN");
        assert!(h.init_size as usize >= h.protected_mode_size);
        assert!(h.setup_size + h.protected_mode_size <= kernel.len());
        let initrd = vec![0xa5u8; 3 << 20];
        let cmdline = "console=ttyS0 earlyprintk=serial,ttyS0,115200 pti=on panic=-1";
        let mut mem = vec![0u8; MEM as usize];
        let b = load(&mut mem, &[0..MEM], &kernel, Some(&initrd), cmdline).unwrap();
        check_boot(&mem, &kernel, &b, Some(&initrd), cmdline);
        // The kernel's version string (kernel_version, offset 0x20e: a pointer into the setup
        // code, minus 0x200) names the release.
        let off = usize::from(read_u16(&kernel, 0x20e).unwrap()) + 0x200;
        let version = &kernel[off..off + 4];
        assert_eq!(version, b"7.2.", "kernel_version string");
    }
}
