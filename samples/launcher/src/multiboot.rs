// SPDX-License-Identifier: GPL-2.0

//! Multiboot v1 (the boot protocol of `qemu-system-x86_64 -kernel`): the header search, the
//! a.out kludge, and the boot information the loader hands over in EBX.
//!
//! The layout copies QEMU's `hw/i386/multiboot.c` plus what its option ROM and SeaBIOS fill
//! in (checked against QEMU 7.2 with a kernel that dumps what it was given), so a kernel sees
//! the same addresses and values under shadowvm-run as under QEMU:
//!
//! - the memory map at [`MMAP_ADDR`] (0x9000), the info structure at [`INFO_ADDR`] (0x9500);
//! - after the kernel, at the next page: one 16-byte entry per module, then the module
//!   strings, the kernel command line ("IMAGE APPEND"), and the boot loader name "qemu" at
//!   the offset QEMU computes for it;
//! - then each module on its own page.

use crate::error::{Error, Result};
use std::ops::Range;

/// Magic of the Multiboot v1 header in the image.
pub const HEADER_MAGIC: u32 = 0x1BAD_B002;
/// Magic the loader leaves in EAX.
pub const BOOT_MAGIC: u32 = 0x2BAD_B002;
/// The header must start within the first 8 KiB; like QEMU, all 48 bytes of the full header
/// (with the video fields) must fit there too.
const SEARCH_LIMIT: usize = 8192 - 48;

/// Where the memory map goes (QEMU's `ADDR_E820_MAP`).
pub const MMAP_ADDR: u64 = 0x9000;
/// Where the info structure goes (QEMU's `ADDR_MBI`).
pub const INFO_ADDR: u64 = 0x9500;
/// Size of the info structure (through the VBE fields).
pub const INFO_SIZE: usize = 88;
/// Guest memory the launcher writes the memory map and info structure into.
pub const INFO_AREA: Range<u64> = MMAP_ADDR..0xa000;
/// The name in `boot_loader_name`, as QEMU gives it.
pub const BOOT_LOADER_NAME: &str = "qemu";
/// `boot_device`: QEMU's fixed value (BIOS drive 0x80, no partitions).
const BOOT_DEVICE: u32 = 0x8000_ffff;
const PAGE: u64 = 0x1000;
/// One module entry: mod_start, mod_end, string, reserved.
const MODULE_ENTRY_SIZE: u64 = 16;

/// Header flags (the `flags` word of the image's header).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeaderFlags(pub u32);

/// Bit 0 (modules page-aligned) and bit 1 (memory information required) need no check:
/// the launcher always aligns modules and always gives the memory information, as QEMU does.
impl HeaderFlags {
    /// Bit 2: a video mode is requested; there is no display, so it is ignored.
    pub fn video_mode(self) -> bool {
        self.0 & (1 << 2) != 0
    }
    /// Bit 16: the header's address fields say where to load the file (the "a.out kludge").
    pub fn address_fields(self) -> bool {
        self.0 & (1 << 16) != 0
    }
    /// Required bits (0..15) this loader does not know: 3..15.
    pub fn unknown_required(self) -> u32 {
        self.0 & 0xfff8
    }
}

/// The address fields of a header with flag 16.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddressFields {
    pub header_addr: u32,
    pub load_addr: u32,
    pub load_end_addr: u32,
    pub bss_end_addr: u32,
    pub entry_addr: u32,
}

/// A valid Multiboot header found in an image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// File offset of the magic.
    pub offset: usize,
    pub flags: HeaderFlags,
    /// Present when flag 16 is set.
    pub address: Option<AddressFields>,
}

fn le32(image: &[u8], off: usize) -> Option<u32> {
    let b = image.get(off..off.checked_add(4)?)?;
    Some(u32::from_le_bytes(b.try_into().ok()?))
}

/// Finds the first Multiboot header with a valid checksum (4-byte aligned, in the first
/// 8 KiB, as QEMU and GRUB search). `Ok(None)` when there is none.
pub fn find_header(image: &[u8]) -> Result<Option<Header>> {
    for offset in (0..SEARCH_LIMIT).step_by(4) {
        let (Some(magic), Some(flags), Some(checksum)) = (
            le32(image, offset),
            le32(image, offset + 4),
            le32(image, offset + 8),
        ) else {
            break;
        };
        if magic != HEADER_MAGIC || magic.wrapping_add(flags).wrapping_add(checksum) != 0 {
            continue;
        }
        let flags = HeaderFlags(flags);
        let address = if flags.address_fields() {
            let field = |i: usize| {
                le32(image, offset + 12 + 4 * i).ok_or_else(|| {
                    Error::image(format!(
                        "Multiboot header at offset {offset:#x} sets flag 16 (address fields) but the file ends inside the header"
                    ))
                })
            };
            Some(AddressFields {
                header_addr: field(0)?,
                load_addr: field(1)?,
                load_end_addr: field(2)?,
                bss_end_addr: field(3)?,
                entry_addr: field(4)?,
            })
        } else {
            None
        };
        return Ok(Some(Header {
            offset,
            flags,
            address,
        }));
    }
    Ok(None)
}

/// What the a.out kludge loads: file bytes `file_range` to `load_addr`, then zeros up to
/// `bss_end`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AoutLayout {
    pub file_range: Range<usize>,
    pub load_addr: u64,
    pub load_end: u64,
    pub bss_end: u64,
    pub entry: u64,
}

/// Checks the address fields against the file, with QEMU's rules: the header's position in
/// the file fixes where `load_addr` is in the file; `load_end_addr` 0 means "to the end of
/// the file", `bss_end_addr` 0 means no BSS.
pub fn aout_layout(header: &Header, a: &AddressFields, file_len: usize) -> Result<AoutLayout> {
    let bad = |what: String| Error::image(format!("Multiboot address fields: {what}"));
    if a.header_addr < a.load_addr {
        return Err(bad(format!(
            "header_addr {:#x} is below load_addr {:#x}",
            a.header_addr, a.load_addr
        )));
    }
    let into_image = (a.header_addr - a.load_addr) as usize;
    let text_offset = header.offset.checked_sub(into_image).ok_or_else(|| {
        bad(format!(
            "header_addr - load_addr = {into_image:#x} is larger than the header's file offset {:#x}, so load_addr would be before the file start",
            header.offset
        ))
    })?;
    let load_size = if a.load_end_addr != 0 {
        if a.load_end_addr < a.load_addr {
            return Err(bad(format!(
                "load_end_addr {:#x} is below load_addr {:#x}",
                a.load_end_addr, a.load_addr
            )));
        }
        (a.load_end_addr - a.load_addr) as usize
    } else {
        file_len - text_offset
    };
    let file_end = text_offset
        .checked_add(load_size)
        .filter(|&e| e <= file_len)
        .ok_or_else(|| {
            bad(format!(
                "the file ({file_len:#x} bytes) ends before load_end_addr {:#x} (needs file bytes {text_offset:#x}..{:#x})",
                a.load_end_addr,
                text_offset.saturating_add(load_size)
            ))
        })?;
    let load_end = u64::from(a.load_addr) + load_size as u64;
    let bss_end = if a.bss_end_addr != 0 {
        if u64::from(a.bss_end_addr) < load_end {
            return Err(bad(format!(
                "bss_end_addr {:#x} is below the end of the loaded part {load_end:#x}",
                a.bss_end_addr
            )));
        }
        u64::from(a.bss_end_addr)
    } else {
        load_end
    };
    Ok(AoutLayout {
        file_range: text_offset..file_end,
        load_addr: u64::from(a.load_addr),
        load_end,
        bss_end,
        entry: u64::from(a.entry_addr),
    })
}

/// One module to load: its string (path as given, then a space and the arguments if any,
/// as QEMU's `-initrd "path args"` gives it) and its contents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Module {
    pub string: String,
    pub data: Vec<u8>,
}

/// What the boot information describes besides memory.
#[derive(Clone, Debug)]
pub struct BootInputs<'a> {
    /// The image path as given (QEMU puts the -kernel argument first on the command line).
    pub image_name: &'a str,
    /// `--append`, QEMU's `-append` (empty when absent).
    pub append: &'a str,
    pub modules: &'a [Module],
}

/// Memory map entry types.
pub const E820_RAM: u32 = 1;
pub const E820_RESERVED: u32 = 2;

/// One memory map entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryRegion {
    pub base: u64,
    pub len: u64,
    pub kind: u32,
}

/// End of conventional memory below 1 MiB: SeaBIOS keeps the top 1 KiB for its EBDA.
const LOW_RAM_END: u64 = 0x9_fc00;
/// SeaBIOS keeps the top 128 KiB of RAM below 4 GiB for its tables.
const BIOS_HIGH_RESERVED: u64 = 128 << 10;
/// The BIOS ROM at 0xf0000..0x100000 and its alias below 4 GiB.
const BIOS_LOW: Range<u64> = 0xf_0000..0x10_0000;
const BIOS_HIGH: Range<u64> = 0xfffc_0000..0x1_0000_0000;

/// The memory map a QEMU PC with SeaBIOS reports (int 15h e820) for `ram` bytes of RAM at 0:
/// for 128 MiB, usable 0..0x9fc00, reserved 0x9fc00..0xa0000 and 0xf0000..0x100000, usable
/// 0x100000..0x7fe0000, reserved 0x7fe0000..0x8000000 and 0xfffc0000..4 GiB. (QEMU adds an
/// entry above 4 GiB for guests whose CPUID vendor is AMD; shadowvm's guests see an Intel
/// CPU, so it is not here.) RAM that reaches into the BIOS alias below 4 GiB ends there.
pub fn memory_map(ram: u64) -> Vec<MemoryRegion> {
    let top = ram.min(BIOS_HIGH.start);
    let high_end = top.saturating_sub(BIOS_HIGH_RESERVED).max(BIOS_LOW.end);
    let mut map = vec![
        MemoryRegion {
            base: 0,
            len: LOW_RAM_END,
            kind: E820_RAM,
        },
        MemoryRegion {
            base: LOW_RAM_END,
            len: 0xa_0000 - LOW_RAM_END,
            kind: E820_RESERVED,
        },
        MemoryRegion {
            base: BIOS_LOW.start,
            len: BIOS_LOW.end - BIOS_LOW.start,
            kind: E820_RESERVED,
        },
    ];
    if high_end > BIOS_LOW.end {
        map.push(MemoryRegion {
            base: BIOS_LOW.end,
            len: high_end - BIOS_LOW.end,
            kind: E820_RAM,
        });
    }
    if top > high_end {
        map.push(MemoryRegion {
            base: high_end,
            len: top - high_end,
            kind: E820_RESERVED,
        });
    }
    map.push(MemoryRegion {
        base: BIOS_HIGH.start,
        len: BIOS_HIGH.end - BIOS_HIGH.start,
        kind: E820_RESERVED,
    });
    map
}

/// Info structure flags QEMU sets: mem_*, boot_device, cmdline, mods, mmap, boot_loader_name.
pub const INFO_FLAGS: u32 = (1 << 0) | (1 << 1) | (1 << 2) | (1 << 3) | (1 << 6) | (1 << 9);

/// Byte offsets of the info structure's fields.
mod info {
    pub const FLAGS: usize = 0;
    pub const MEM_LOWER: usize = 4;
    pub const MEM_UPPER: usize = 8;
    pub const BOOT_DEVICE: usize = 12;
    pub const CMDLINE: usize = 16;
    pub const MODS_COUNT: usize = 20;
    pub const MODS_ADDR: usize = 24;
    pub const MMAP_LENGTH: usize = 44;
    pub const MMAP_ADDR: usize = 48;
    pub const BOOT_LOADER_NAME: usize = 64;
}

/// Where everything went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootInfo {
    /// The 88 bytes written at [`INFO_ADDR`] (QEMU's fw_cfg INITRD_DATA).
    pub info: [u8; INFO_SIZE],
    /// Kernel, module entries, strings and modules: QEMU's fw_cfg KERNEL_ADDR..+KERNEL_SIZE.
    pub region: Range<u64>,
    /// Each module's guest-physical range.
    pub modules: Vec<Range<u64>>,
    pub cmdline_addr: u64,
    pub boot_loader_name_addr: u64,
}

fn align_page(a: u64) -> Option<u64> {
    Some(a.checked_add(PAGE - 1)? & !(PAGE - 1))
}

/// The guest-physical bytes `range`, or an error naming `what`.
fn guest<'m>(mem: &'m mut [u8], range: Range<u64>, what: &str) -> Result<&'m mut [u8]> {
    let len = mem.len() as u64;
    if range.start > range.end || range.end > len || range.end > 1 << 32 {
        return Err(Error::image(format!(
            "{what} at {:#x}..{:#x} does not fit in guest memory ({len:#x} bytes) below 4 GiB; raise --memory or use smaller modules",
            range.start, range.end
        )));
    }
    Ok(&mut mem[range.start as usize..range.end as usize])
}

fn put32(buf: &mut [u8], at: usize, v: u64) -> Result<()> {
    let v = u32::try_from(v)
        .map_err(|_| Error::image(format!("Multiboot field value {v:#x} is above 4 GiB")))?;
    buf[at..at + 4].copy_from_slice(&v.to_le_bytes());
    Ok(())
}

/// Writes the memory map, info structure, module entries, strings and modules for a kernel
/// occupying `kernel` (guest-physical, BSS included) into `mem`.
pub fn write_boot_info(
    mem: &mut [u8],
    kernel: Range<u64>,
    inputs: &BootInputs,
) -> Result<BootInfo> {
    let ram = mem.len() as u64;
    if kernel.start < INFO_AREA.end && INFO_AREA.start < kernel.end {
        return Err(Error::image(format!(
            "kernel at {:#x}..{:#x} overlaps the Multiboot information at {:#x}..{:#x}; load it at 1 MiB",
            kernel.start, kernel.end, INFO_AREA.start, INFO_AREA.end
        )));
    }

    // The memory map, each entry preceded by its size (20), as the option ROM stores it.
    let map = memory_map(ram);
    let mut mmap = Vec::with_capacity(map.len() * 24);
    for r in &map {
        mmap.extend_from_slice(&20u32.to_le_bytes());
        mmap.extend_from_slice(&r.base.to_le_bytes());
        mmap.extend_from_slice(&r.len.to_le_bytes());
        mmap.extend_from_slice(&r.kind.to_le_bytes());
    }
    guest(mem, MMAP_ADDR..INFO_ADDR, "memory map")?.fill(0);
    guest(mem, MMAP_ADDR..MMAP_ADDR + mmap.len() as u64, "memory map")?.copy_from_slice(&mmap);
    // mem_upper: the RAM contiguous from 1 MiB, in KiB.
    let mut upper_end = 0x10_0000;
    while let Some(r) = map
        .iter()
        .find(|r| r.kind == E820_RAM && r.base <= upper_end && upper_end < r.base + r.len)
    {
        upper_end = r.base + r.len;
    }

    // Module entries, then strings, at the first page after the kernel.
    let too_big = || Error::image("kernel and modules do not fit below 4 GiB");
    let entries = align_page(kernel.end).ok_or_else(too_big)?;
    if entries < INFO_AREA.end {
        return Err(Error::image(format!(
            "kernel ends at {:#x}, so the module list and strings after it would overlap the launcher's boot area below {:#x}; load it at 1 MiB",
            kernel.end, INFO_AREA.end
        )));
    }
    let count = inputs.modules.len() as u64;
    let strings = entries + MODULE_ENTRY_SIZE * count;
    let kernel_cmdline = format!("{} {}", inputs.image_name, inputs.append);
    // QEMU sizes the string area as image name + append + the whole -initrd argument (the
    // module strings joined by commas), each with a NUL, and puts the loader name after it.
    let mut strings_len = inputs.image_name.len() as u64 + 1 + inputs.append.len() as u64 + 1;
    if count > 0 {
        let initrd_len: u64 = inputs.modules.iter().map(|m| m.string.len() as u64).sum();
        strings_len += initrd_len + (count - 1) + 1;
    }
    let loader_name_addr = strings + strings_len;
    let info_end = loader_name_addr + BOOT_LOADER_NAME.len() as u64 + 1;
    let mut module_at = align_page(info_end).ok_or_else(too_big)?;
    guest(mem, entries..module_at, "Multiboot module list and strings")?.fill(0);

    let mut next_string = strings;
    let mut put_string = |mem: &mut [u8], s: &str| -> Result<u64> {
        let at = next_string;
        let dst = guest(mem, at..at + s.len() as u64 + 1, "Multiboot string")?;
        dst[..s.len()].copy_from_slice(s.as_bytes());
        dst[s.len()] = 0;
        next_string += s.len() as u64 + 1;
        Ok(at)
    };
    let mut modules = Vec::new();
    for (i, m) in inputs.modules.iter().enumerate() {
        let string_addr = put_string(mem, &m.string)?;
        let range = module_at..module_at + m.data.len() as u64;
        guest(
            mem,
            range.clone(),
            &format!("module {} ({})", i + 1, m.string),
        )?
        .copy_from_slice(&m.data);
        let entry = guest(
            mem,
            entries + MODULE_ENTRY_SIZE * i as u64..entries + MODULE_ENTRY_SIZE * (i as u64 + 1),
            "Multiboot module list",
        )?;
        put32(entry, 0, range.start)?;
        put32(entry, 4, range.end)?;
        put32(entry, 8, string_addr)?;
        modules.push(range.clone());
        module_at = align_page(range.end).ok_or_else(too_big)?;
    }
    let cmdline_addr = put_string(mem, &kernel_cmdline)?;
    // The loader name sits at QEMU's offset, which is past the strings written so far.
    let dst = guest(mem, loader_name_addr..info_end, "boot loader name")?;
    dst[..BOOT_LOADER_NAME.len()].copy_from_slice(BOOT_LOADER_NAME.as_bytes());
    // Past the last module, as QEMU's KERNEL_SIZE; never past guest memory.
    let region_end = module_at.min(ram);

    let mut info = [0u8; INFO_SIZE];
    put32(&mut info, info::FLAGS, u64::from(INFO_FLAGS))?;
    put32(&mut info, info::MEM_LOWER, LOW_RAM_END >> 10)?;
    put32(&mut info, info::MEM_UPPER, (upper_end - 0x10_0000) >> 10)?;
    put32(&mut info, info::BOOT_DEVICE, u64::from(BOOT_DEVICE))?;
    put32(&mut info, info::CMDLINE, cmdline_addr)?;
    put32(&mut info, info::MODS_COUNT, count)?;
    put32(&mut info, info::MODS_ADDR, entries)?;
    put32(&mut info, info::MMAP_LENGTH, mmap.len() as u64)?;
    put32(&mut info, info::MMAP_ADDR, MMAP_ADDR)?;
    put32(&mut info, info::BOOT_LOADER_NAME, loader_name_addr)?;
    guest(
        mem,
        INFO_ADDR..INFO_ADDR + INFO_SIZE as u64,
        "Multiboot information",
    )?
    .copy_from_slice(&info);
    Ok(BootInfo {
        info,
        region: kernel.start..region_end,
        modules,
        cmdline_addr,
        boot_loader_name_addr: loader_name_addr,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A header at `offset` of a `len`-byte image, with the address fields when given.
    pub(crate) fn image_with_header(
        len: usize,
        offset: usize,
        flags: u32,
        addr: Option<[u32; 5]>,
    ) -> Vec<u8> {
        let mut img = vec![0u8; len];
        let checksum = 0u32.wrapping_sub(HEADER_MAGIC).wrapping_sub(flags);
        let mut words = vec![HEADER_MAGIC, flags, checksum];
        words.extend(
            addr.unwrap_or_default()
                .iter()
                .take(if addr.is_some() { 5 } else { 0 }),
        );
        for (i, w) in words.iter().enumerate() {
            img[offset + 4 * i..offset + 4 * i + 4].copy_from_slice(&w.to_le_bytes());
        }
        img
    }

    fn rd32(mem: &[u8], a: u64) -> u32 {
        u32::from_le_bytes(mem[a as usize..a as usize + 4].try_into().unwrap())
    }

    fn cstr(mem: &[u8], a: u32) -> &str {
        let s = &mem[a as usize..];
        std::str::from_utf8(&s[..s.iter().position(|&b| b == 0).unwrap()]).unwrap()
    }

    #[test]
    fn header_search_rules() {
        let img = image_with_header(8192, 0x40, 3, None);
        let h = find_header(&img).unwrap().unwrap();
        assert_eq!((h.offset, h.flags, h.address), (0x40, HeaderFlags(3), None));
        assert!(!h.flags.video_mode() && !h.flags.address_fields());
        assert_eq!(HeaderFlags(0x1_fffc).unknown_required(), 0xfff8);
        assert!(HeaderFlags(4).video_mode());
        // Bad checksum: skipped; a later valid header is found.
        let mut img = image_with_header(8192, 0x100, 0, None);
        img[0x10..0x14].copy_from_slice(&HEADER_MAGIC.to_le_bytes());
        assert_eq!(find_header(&img).unwrap().unwrap().offset, 0x100);
        // Unaligned: not a header.
        assert_eq!(
            find_header(&image_with_header(8192, 0x42, 0, None)).unwrap(),
            None
        );
        // Last place QEMU looks, and just past it.
        assert!(find_header(&image_with_header(16384, 8192 - 52, 0, None))
            .unwrap()
            .is_some());
        assert_eq!(
            find_header(&image_with_header(16384, 8192 - 48, 0, None)).unwrap(),
            None
        );
        // Short files and files cut inside the header.
        assert_eq!(find_header(b"").unwrap(), None);
        assert_eq!(find_header(&[0; 11]).unwrap(), None);
        let cut = image_with_header(64, 0, 1 << 16, Some([1, 2, 3, 4, 5]));
        assert!(find_header(&cut[..20])
            .unwrap_err()
            .msg
            .contains("ends inside the header"));
    }

    #[test]
    fn address_fields_are_read() {
        let img = image_with_header(
            0x200,
            0x20,
            1 << 16,
            Some([0x10_0020, 0x10_0000, 0x10_0100, 0x10_2000, 0x10_0040]),
        );
        let h = find_header(&img).unwrap().unwrap();
        let a = h.address.unwrap();
        assert_eq!(
            a,
            AddressFields {
                header_addr: 0x10_0020,
                load_addr: 0x10_0000,
                load_end_addr: 0x10_0100,
                bss_end_addr: 0x10_2000,
                entry_addr: 0x10_0040
            }
        );
        let l = aout_layout(&h, &a, img.len()).unwrap();
        assert_eq!(l.file_range, 0..0x100);
        assert_eq!(
            (l.load_addr, l.load_end, l.bss_end, l.entry),
            (0x10_0000, 0x10_0100, 0x10_2000, 0x10_0040)
        );
        // load_end 0: to the end of the file; bss_end 0: no BSS.
        let a0 = AddressFields {
            load_end_addr: 0,
            bss_end_addr: 0,
            ..a
        };
        let l = aout_layout(&h, &a0, 0x180).unwrap();
        assert_eq!(
            (l.file_range, l.load_end, l.bss_end),
            (0..0x180, 0x10_0180, 0x10_0180)
        );
        // The header 0x20 into the loaded part, at file offset 0x20: the file starts at 0.
        // Header further into the file: loading starts later in the file.
        let h2 = Header {
            offset: 0x1020,
            ..h
        };
        assert_eq!(
            aout_layout(&h2, &a, 0x2000).unwrap().file_range,
            0x1000..0x1100
        );
    }

    #[test]
    fn address_field_errors() {
        let h = Header {
            offset: 0x20,
            flags: HeaderFlags(1 << 16),
            address: None,
        };
        let a = AddressFields {
            header_addr: 0x10_0020,
            load_addr: 0x10_0000,
            load_end_addr: 0x10_0100,
            bss_end_addr: 0x10_2000,
            entry_addr: 0x10_0040,
        };
        let err = |a: AddressFields, len: usize| aout_layout(&h, &a, len).unwrap_err().msg;
        assert!(err(
            AddressFields {
                header_addr: 0xf_ffff,
                ..a
            },
            0x200
        )
        .contains("below load_addr"));
        assert!(err(
            AddressFields {
                header_addr: 0x10_0040,
                ..a
            },
            0x200
        )
        .contains("before the file start"));
        assert!(err(
            AddressFields {
                load_end_addr: 0xf_0000,
                ..a
            },
            0x200
        )
        .contains("load_end_addr"));
        assert!(err(a, 0xff).contains("ends before load_end_addr"));
        assert!(err(
            AddressFields {
                bss_end_addr: 0x10_00ff,
                ..a
            },
            0x200
        )
        .contains("bss_end_addr"));
    }

    #[test]
    fn memory_map_matches_qemu_seabios() {
        // What QEMU 7.2 + SeaBIOS reported for -m 128M (Intel CPU vendor).
        let m = memory_map(128 << 20);
        let want = [
            (0, 0x9_fc00, 1),
            (0x9_fc00, 0x400, 2),
            (0xf_0000, 0x1_0000, 2),
            (0x10_0000, 0x7ee_0000, 1),
            (0x7fe_0000, 0x2_0000, 2),
            (0xfffc_0000, 0x4_0000, 2),
        ];
        let got: Vec<_> = m.iter().map(|r| (r.base, r.len, r.kind)).collect();
        assert_eq!(got, want);
        // 2 MiB, the smallest --memory: still a usable part above 1 MiB.
        let m = memory_map(2 << 20);
        assert_eq!((m[3].base, m[3].len), (0x10_0000, 0xe_0000));
        // 4 GiB: RAM ends at the BIOS alias.
        let m = memory_map(1 << 32);
        assert_eq!(m[4].base + m[4].len, 0xfffc_0000);
    }

    fn run(
        mem_size: usize,
        kernel: Range<u64>,
        append: &str,
        modules: &[Module],
    ) -> (Vec<u8>, Result<BootInfo>) {
        let mut mem = vec![0xeeu8; mem_size];
        let r = write_boot_info(
            &mut mem,
            kernel,
            &BootInputs {
                image_name: "k.elf",
                append,
                modules,
            },
        );
        (mem, r)
    }

    #[test]
    fn info_matches_qemu_for_two_modules() {
        // QEMU 7.2: -m 128M -kernel k.elf -append "foo bar" -initrd "mod1 arg1 arg2,mod2",
        // kernel at 0x100000..0x102010 (BSS included).
        let mods = [
            Module {
                string: "mod1 arg1 arg2".into(),
                data: b"hello\n".to_vec(),
            },
            Module {
                string: "mod2".into(),
                data: b"ABCD1234".to_vec(),
            },
        ];
        let (mem, r) = run(128 << 20, 0x10_0000..0x10_2010, "foo bar", &mods);
        let bi = r.unwrap();
        let i = INFO_ADDR;
        assert_eq!(rd32(&mem, i), 0x24f, "flags");
        assert_eq!(rd32(&mem, i + 4), 0x27f, "mem_lower");
        assert_eq!(rd32(&mem, i + 8), 0x1_fb80, "mem_upper");
        assert_eq!(rd32(&mem, i + 12), 0x8000_ffff, "boot_device");
        assert_eq!(rd32(&mem, i + 16), 0x10_3034, "cmdline");
        assert_eq!(cstr(&mem, 0x10_3034), "k.elf foo bar");
        assert_eq!(
            (rd32(&mem, i + 20), rd32(&mem, i + 24)),
            (2, 0x10_3000),
            "mods"
        );
        assert_eq!(
            (rd32(&mem, i + 44), rd32(&mem, i + 48)),
            (0x90, 0x9000),
            "mmap"
        );
        assert_eq!(rd32(&mem, i + 64), 0x10_3042, "boot_loader_name");
        assert_eq!(cstr(&mem, 0x10_3042), "qemu");
        for off in [28, 32, 36, 40, 52, 56, 60, 68, 72, 76, 80, 84] {
            assert_eq!(rd32(&mem, i + off), 0, "unused field at {off}");
        }
        assert_eq!(&mem[i as usize..i as usize + INFO_SIZE], &bi.info[..]);
        // Module entries and strings at QEMU's addresses; modules page-aligned.
        let e = 0x10_3000;
        assert_eq!(
            [rd32(&mem, e), rd32(&mem, e + 4), rd32(&mem, e + 8)],
            [0x10_4000, 0x10_4006, 0x10_3020]
        );
        assert_eq!(
            [rd32(&mem, e + 16), rd32(&mem, e + 20), rd32(&mem, e + 24)],
            [0x10_5000, 0x10_5008, 0x10_302f]
        );
        assert_eq!(cstr(&mem, 0x10_3020), "mod1 arg1 arg2");
        assert_eq!(cstr(&mem, 0x10_302f), "mod2");
        assert_eq!(&mem[0x10_4000..0x10_4006], b"hello\n");
        assert_eq!(&mem[0x10_5000..0x10_5008], b"ABCD1234");
        assert_eq!(bi.modules, vec![0x10_4000..0x10_4006, 0x10_5000..0x10_5008]);
        // QEMU's KERNEL_ADDR/KERNEL_SIZE: 0x100000, 0x6000.
        assert_eq!(bi.region, 0x10_0000..0x10_6000);
        // The memory map: each entry's size word is 20.
        assert_eq!(rd32(&mem, MMAP_ADDR), 20);
        assert_eq!(rd32(&mem, MMAP_ADDR + 24 + 4), 0x9_fc00);
        assert_eq!(rd32(&mem, MMAP_ADDR + 24 * 5 + 4), 0xfffc_0000);
        assert_eq!(mem[0x10_2010], 0xee, "the kernel's memory is not touched");
    }

    #[test]
    fn info_without_modules() {
        // QEMU: cmdline "k.elf x" at 0x103000, loader name at 0x103008.
        let (mem, r) = run(64 << 20, 0x10_0000..0x10_2010, "x", &[]);
        r.unwrap();
        assert_eq!(rd32(&mem, INFO_ADDR + 16), 0x10_3000);
        assert_eq!(rd32(&mem, INFO_ADDR + 64), 0x10_3008);
        assert_eq!(rd32(&mem, INFO_ADDR + 20), 0);
        assert_eq!(rd32(&mem, INFO_ADDR + 8), 0xfb80, "mem_upper of 64 MiB");
        // No --append: "k.elf " like QEMU's "%s %s".
        let (mem, _) = run(64 << 20, 0x10_0000..0x10_1000, "", &[]);
        assert_eq!(cstr(&mem, 0x10_1000), "k.elf ");
    }

    #[test]
    fn placement_errors() {
        let big = [Module {
            string: "big".into(),
            data: vec![1; 3 << 20],
        }];
        let (_, r) = run(4 << 20, 0x10_0000..0x10_1000, "", &big);
        let e = r.unwrap_err();
        assert!(
            e.msg.contains("module 1 (big)") && e.msg.contains("raise --memory"),
            "{}",
            e.msg
        );
        let (_, r) = run(4 << 20, 0x8000..0x9100, "", &[]);
        assert!(r
            .unwrap_err()
            .msg
            .contains("overlaps the Multiboot information"));
        // A kernel ending at the very top of memory: no room for the strings.
        let (_, r) = run(2 << 20, 0x10_0000..0x20_0000, "", &[]);
        assert!(r.unwrap_err().msg.contains("does not fit"));
    }
}
