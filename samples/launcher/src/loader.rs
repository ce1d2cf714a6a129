// SPDX-License-Identifier: GPL-2.0

//! Guest image loading: Multiboot kernels (ELF, or the a.out kludge of the Multiboot header),
//! ELF32/ELF64 (PT_LOAD segments by physical address) and flat binaries. Everything is checked against the guest memory size before a byte is copied, so a bad
//! image is an error message, never a panic or a partial load.

use crate::error::{Error, Result};
use crate::multiboot;
use std::ops::Range;

/// Image format selected on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Multiboot if the file has a Multiboot header, else ELF if it starts with the ELF
    /// magic, else flat.
    Auto,
    /// A Linux bzImage, loaded by `linux::load` (not by this module).
    Linux,
    /// Must have a Multiboot header.
    Multiboot,
    /// ELF, ignoring any Multiboot header (no boot information: EBX = 0).
    Elf,
    /// Raw bytes at `load_addr`, ignoring any header.
    Flat,
}

/// How to load an image.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    pub format: Format,
    /// Flat images only.
    pub load_addr: u64,
    /// Overrides the ELF entry point or the flat load address.
    pub entry: Option<u64>,
    /// Guest-physical range the launcher keeps for its boot structures.
    pub reserved: Range<u64>,
}

/// What was loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loaded {
    /// Guest-physical entry point.
    pub entry: u64,
    /// Guest-physical ranges written (file data and zeroed BSS).
    pub segments: Vec<Range<u64>>,
    /// "elf32", "elf64", "flat", "multiboot-elf32", "multiboot-elf64" or "multiboot-aout".
    pub kind: &'static str,
    /// Set for a Multiboot kernel.
    pub multiboot: Option<MultibootKernel>,
    /// Things the user should know (header flags that are ignored).
    pub notes: Vec<String>,
}

/// A Multiboot kernel's header and the memory it occupies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MultibootKernel {
    pub header: multiboot::Header,
    /// Lowest to highest guest-physical address loaded, BSS included (QEMU's mb_buf).
    pub extent: Range<u64>,
}

const ELF_MAGIC: &[u8; 4] = b"\x7fELF";
const PT_LOAD: u32 = 1;
const ET_EXEC: u16 = 2;
const EM_386: u16 = 3;
const EM_X86_64: u16 = 62;

/// Whether `image` is booted as a Linux kernel (`linux::load`) rather than by `load`:
/// with `--format linux`, or with `auto` when it has a bzImage setup header and no
/// Multiboot header (QEMU, too, tries Multiboot first).
pub fn is_linux(image: &[u8], format: Format) -> Result<bool> {
    Ok(match format {
        Format::Linux => true,
        Format::Auto => {
            multiboot::find_header(image)?.is_none() && crate::linux::has_setup_header(image)
        }
        Format::Multiboot | Format::Elf | Format::Flat => false,
    })
}

/// Loads `image` into guest memory `mem` (guest-physical address = index); not a Linux
/// kernel (`is_linux`).
pub fn load(image: &[u8], mem: &mut [u8], opts: &LoadOptions) -> Result<Loaded> {
    let is_elf = image.starts_with(ELF_MAGIC);
    let header = match opts.format {
        Format::Auto | Format::Multiboot => multiboot::find_header(image)?,
        Format::Elf | Format::Flat => None,
        Format::Linux => {
            return Err(Error::image(
                "a Linux kernel is loaded by the Linux boot protocol, not as a plain image",
            ))
        }
    };
    let loaded = match (opts.format, header) {
        (Format::Multiboot, None) => {
            return Err(Error::image(
                "no Multiboot header (magic 0x1BADB002 with a valid checksum, 4-byte aligned in the first 8 KiB); use --format elf or flat for other images",
            ))
        }
        (_, Some(h)) => load_multiboot(image, mem, opts, h, is_elf)?,
        (format, None) => load_plain(image, mem, opts, format, is_elf)?,
    };
    if loaded.entry >= mem.len() as u64 {
        return Err(Error::image(format!(
            "entry point {:#x} is outside guest memory ({:#x} bytes); check --entry or the link address",
            loaded.entry,
            mem.len()
        )));
    }
    Ok(loaded)
}

/// A Multiboot kernel: the header's address fields when flag 16 is set (even in an ELF
/// file, as GRUB and QEMU do), otherwise the ELF program headers.
fn load_multiboot(
    image: &[u8],
    mem: &mut [u8],
    opts: &LoadOptions,
    header: multiboot::Header,
    is_elf: bool,
) -> Result<Loaded> {
    let mut notes = Vec::new();
    if header.flags.video_mode() {
        notes.push("the Multiboot header asks for a video mode (flag 2); there is no display, so it is ignored (QEMU ignores it too)".to_string());
    }
    if header.flags.unknown_required() != 0 {
        notes.push(format!(
            "the Multiboot header sets flags {:#x} this loader does not know; booting anyway, as QEMU does",
            header.flags.unknown_required()
        ));
    }
    let (mut loaded, extent) = if let Some(a) = header.address {
        let l = multiboot::aout_layout(&header, &a, image.len())?;
        let range = checked_range(l.load_addr, l.bss_end - l.load_addr, mem.len() as u64)
            .ok_or_else(|| {
                Error::image(format!(
                    "Multiboot kernel at {:#x}..{:#x} (address fields) is outside guest memory ({:#x} bytes); raise --memory",
                    l.load_addr,
                    l.bss_end,
                    mem.len()
                ))
            })?;
        check_reserved(&range, &opts.reserved, "Multiboot kernel")?;
        let dst = &mut mem[range.start as usize..range.end as usize];
        let (file_part, bss) = dst.split_at_mut(l.file_range.len());
        file_part.copy_from_slice(&image[l.file_range.clone()]);
        bss.fill(0);
        let loaded = Loaded {
            entry: opts.entry.unwrap_or(l.entry),
            segments: vec![range.clone()],
            kind: "multiboot-aout",
            multiboot: None,
            notes: Vec::new(),
        };
        (loaded, range)
    } else {
        if !is_elf {
            return Err(Error::image(
                "the Multiboot header has no address fields (flag 16), so the image must be ELF, and it is not",
            ));
        }
        let mut l = load_elf(image, mem, opts)?;
        let start = l.segments.iter().map(|r| r.start).min().unwrap_or(0);
        let end = l.segments.iter().map(|r| r.end).max().unwrap_or(0);
        l.kind = if l.kind == "elf64" {
            "multiboot-elf64"
        } else {
            "multiboot-elf32"
        };
        (l, start..end)
    };
    loaded.multiboot = Some(MultibootKernel { header, extent });
    loaded.notes = notes;
    Ok(loaded)
}

fn load_plain(
    image: &[u8],
    mem: &mut [u8],
    opts: &LoadOptions,
    format: Format,
    is_elf: bool,
) -> Result<Loaded> {
    let loaded = match format {
        Format::Elf if !is_elf => {
            return Err(Error::image(
                "image is not ELF (no \\x7fELF magic); use --format flat for raw binaries",
            ))
        }
        Format::Elf => load_elf(image, mem, opts)?,
        Format::Auto if is_elf => load_elf(image, mem, opts)?,
        Format::Auto | Format::Flat | Format::Multiboot | Format::Linux => {
            load_flat(image, mem, opts)?
        }
    };
    Ok(loaded)
}

fn load_flat(image: &[u8], mem: &mut [u8], opts: &LoadOptions) -> Result<Loaded> {
    if image.is_empty() {
        return Err(Error::image("image is empty"));
    }
    let range = checked_range(opts.load_addr, image.len() as u64, mem.len() as u64).ok_or_else(|| {
        Error::image(format!(
            "flat image of {} bytes at {:#x} does not fit in guest memory ({:#x} bytes); raise --memory or lower --load-addr",
            image.len(),
            opts.load_addr,
            mem.len()
        ))
    })?;
    check_reserved(&range, &opts.reserved, "flat image")?;
    mem[range.start as usize..range.end as usize].copy_from_slice(image);
    Ok(Loaded {
        entry: opts.entry.unwrap_or(opts.load_addr),
        segments: vec![range],
        kind: "flat",
        multiboot: None,
        notes: Vec::new(),
    })
}

/// `start..start+len` if it lies within `0..limit`.
fn checked_range(start: u64, len: u64, limit: u64) -> Option<Range<u64>> {
    let end = start.checked_add(len)?;
    (end <= limit).then_some(start..end)
}

fn check_reserved(r: &Range<u64>, reserved: &Range<u64>, what: &str) -> Result<()> {
    if r.start < reserved.end && reserved.start < r.end {
        return Err(Error::image(format!(
            "{what} at {:#x}..{:#x} overlaps the launcher's boot area {:#x}..{:#x}; link or load the guest at 1 MiB",
            r.start, r.end, reserved.start, reserved.end
        )));
    }
    Ok(())
}

/// Little-endian field reader over the image with bounds checks.
struct Reader<'a> {
    data: &'a [u8],
}

impl Reader<'_> {
    fn bytes<const N: usize>(&self, off: u64) -> Result<[u8; N]> {
        let start = usize::try_from(off).ok();
        start
            .and_then(|s| self.data.get(s..s.checked_add(N)?))
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| {
                Error::image(format!(
                    "ELF file is truncated: needs bytes at offset {off:#x}"
                ))
            })
    }
    fn u16(&self, off: u64) -> Result<u16> {
        self.bytes(off).map(u16::from_le_bytes)
    }
    fn u32(&self, off: u64) -> Result<u32> {
        self.bytes(off).map(u32::from_le_bytes)
    }
    fn u64(&self, off: u64) -> Result<u64> {
        self.bytes(off).map(u64::from_le_bytes)
    }
}

/// One PT_LOAD program header.
struct Segment {
    offset: u64,
    vaddr: u64,
    paddr: u64,
    filesz: u64,
    memsz: u64,
}

fn load_elf(image: &[u8], mem: &mut [u8], opts: &LoadOptions) -> Result<Loaded> {
    let r = Reader { data: image };
    let ident: [u8; 16] = r.bytes(0)?;
    let is64 = match ident[4] {
        1 => false,
        2 => true,
        c => {
            return Err(Error::image(format!(
                "ELF class {c} is not supported: build an ELF32 or ELF64 image"
            )))
        }
    };
    if ident[5] != 1 {
        return Err(Error::image(
            "ELF file is big-endian: build a little-endian x86 image",
        ));
    }
    let e_type = r.u16(16)?;
    let machine = r.u16(18)?;
    if machine != EM_386 && machine != EM_X86_64 {
        return Err(Error::image(format!(
            "ELF machine {machine} is not x86 (3) or x86-64 (62)"
        )));
    }
    if e_type != ET_EXEC {
        return Err(Error::image(format!(
            "ELF type {e_type} is not an executable (ET_EXEC); link the guest statically at a fixed address"
        )));
    }
    let (entry, phoff, phentsize, phnum) = if is64 {
        (r.u64(24)?, r.u64(32)?, r.u16(54)?, r.u16(56)?)
    } else {
        (
            u64::from(r.u32(24)?),
            u64::from(r.u32(28)?),
            r.u16(42)?,
            r.u16(44)?,
        )
    };
    let min_phent = if is64 { 56 } else { 32 };
    if phnum > 0 && phentsize < min_phent {
        return Err(Error::image(format!(
            "ELF program header size {phentsize} is too small"
        )));
    }

    let mut segments = Vec::new();
    for i in 0..u64::from(phnum) {
        let ph = phoff
            .checked_add(i * u64::from(phentsize))
            .ok_or_else(|| Error::image("ELF program header offset overflows"))?;
        if r.u32(ph)? != PT_LOAD {
            continue;
        }
        let seg = if is64 {
            Segment {
                offset: r.u64(ph + 8)?,
                vaddr: r.u64(ph + 16)?,
                paddr: r.u64(ph + 24)?,
                filesz: r.u64(ph + 32)?,
                memsz: r.u64(ph + 40)?,
            }
        } else {
            Segment {
                offset: u64::from(r.u32(ph + 4)?),
                vaddr: u64::from(r.u32(ph + 8)?),
                paddr: u64::from(r.u32(ph + 12)?),
                filesz: u64::from(r.u32(ph + 16)?),
                memsz: u64::from(r.u32(ph + 20)?),
            }
        };
        if seg.memsz == 0 {
            continue;
        }
        if seg.filesz > seg.memsz {
            return Err(Error::image(format!(
                "ELF segment {i} has p_filesz {:#x} larger than p_memsz {:#x}",
                seg.filesz, seg.memsz
            )));
        }
        if checked_range(seg.offset, seg.filesz, image.len() as u64).is_none() {
            return Err(Error::image(format!(
                "ELF file is truncated: segment {i} needs file bytes {:#x}..{:#x} but the file has {:#x}",
                seg.offset,
                seg.offset.saturating_add(seg.filesz),
                image.len()
            )));
        }
        let range = checked_range(seg.paddr, seg.memsz, mem.len() as u64).ok_or_else(|| {
            Error::image(format!(
                "ELF segment {i} at physical {:#x}..{:#x} is outside guest memory ({:#x} bytes); raise --memory",
                seg.paddr,
                seg.paddr.saturating_add(seg.memsz),
                mem.len()
            ))
        })?;
        check_reserved(&range, &opts.reserved, &format!("ELF segment {i}"))?;
        if let Some((j, _)) =
            segments
                .iter()
                .enumerate()
                .find(|(_, (_, other)): &(usize, &(Segment, Range<u64>))| {
                    other.start < range.end && range.start < other.end
                })
        {
            return Err(Error::image(format!(
                "ELF segment {i} at {:#x}..{:#x} overlaps another PT_LOAD segment ({j} of the loadable ones)",
                range.start, range.end
            )));
        }
        segments.push((seg, range));
    }
    if segments.is_empty() {
        return Err(Error::image("ELF file has no PT_LOAD segment to load"));
    }

    for (seg, range) in &segments {
        let dst = &mut mem[range.start as usize..range.end as usize];
        let (file_part, bss) = dst.split_at_mut(seg.filesz as usize);
        file_part.copy_from_slice(&image[seg.offset as usize..(seg.offset + seg.filesz) as usize]);
        bss.fill(0);
    }

    // The guest starts with paging off or identity-mapped, so a higher-half (virtual) entry
    // point is translated through the segment that contains it, as multiboot loaders do.
    let entry = opts.entry.unwrap_or_else(|| {
        segments
            .iter()
            .find(|(s, _)| s.vaddr != s.paddr && entry >= s.vaddr && entry - s.vaddr < s.memsz)
            .map_or(entry, |(s, _)| entry - s.vaddr + s.paddr)
    });
    Ok(Loaded {
        entry,
        segments: segments.into_iter().map(|(_, r)| r).collect(),
        kind: if is64 { "elf64" } else { "elf32" },
        multiboot: None,
        notes: Vec::new(),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const RESERVED: Range<u64> = 0x1000..0x8000;

    fn opts() -> LoadOptions {
        LoadOptions {
            format: Format::Auto,
            load_addr: 0x10_0000,
            entry: None,
            reserved: RESERVED,
        }
    }

    /// (paddr, vaddr, file bytes, memsz) per segment.
    pub(crate) type Seg<'a> = (u64, u64, &'a [u8], u64);

    /// Builds a minimal ELF executable.
    pub(crate) fn elf(is64: bool, entry: u64, segs: &[Seg<'_>]) -> Vec<u8> {
        let (ehsize, phentsize) = if is64 { (64usize, 56usize) } else { (52, 32) };
        let data_start = ehsize + phentsize * segs.len();
        let mut out = vec![0u8; data_start];
        out[..4].copy_from_slice(ELF_MAGIC);
        out[4] = if is64 { 2 } else { 1 };
        out[5] = 1;
        out[6] = 1;
        out[16..18].copy_from_slice(&ET_EXEC.to_le_bytes());
        out[18..20].copy_from_slice(&(if is64 { EM_X86_64 } else { EM_386 }).to_le_bytes());
        let mut offsets = Vec::new();
        for (_, _, bytes, _) in segs {
            offsets.push(out.len() as u64);
            out.extend_from_slice(bytes);
        }
        if is64 {
            out[24..32].copy_from_slice(&entry.to_le_bytes());
            out[32..40].copy_from_slice(&(ehsize as u64).to_le_bytes());
            out[54..56].copy_from_slice(&(phentsize as u16).to_le_bytes());
            out[56..58].copy_from_slice(&(segs.len() as u16).to_le_bytes());
        } else {
            out[24..28].copy_from_slice(&(entry as u32).to_le_bytes());
            out[28..32].copy_from_slice(&(ehsize as u32).to_le_bytes());
            out[42..44].copy_from_slice(&(phentsize as u16).to_le_bytes());
            out[44..46].copy_from_slice(&(segs.len() as u16).to_le_bytes());
        }
        for (i, ((paddr, vaddr, bytes, memsz), off)) in segs.iter().zip(&offsets).enumerate() {
            let ph = ehsize + i * phentsize;
            let w = |out: &mut Vec<u8>, at: usize, v: u64| {
                if is64 {
                    out[at..at + 8].copy_from_slice(&v.to_le_bytes());
                } else {
                    out[at..at + 4].copy_from_slice(&(v as u32).to_le_bytes());
                }
            };
            out[ph..ph + 4].copy_from_slice(&PT_LOAD.to_le_bytes());
            if is64 {
                w(&mut out, ph + 8, *off);
                w(&mut out, ph + 16, *vaddr);
                w(&mut out, ph + 24, *paddr);
                w(&mut out, ph + 32, bytes.len() as u64);
                w(&mut out, ph + 40, *memsz);
            } else {
                w(&mut out, ph + 4, *off);
                w(&mut out, ph + 8, *vaddr);
                w(&mut out, ph + 12, *paddr);
                w(&mut out, ph + 16, bytes.len() as u64);
                w(&mut out, ph + 20, *memsz);
            }
        }
        out
    }

    #[test]
    fn elf32_and_elf64_load_by_paddr_and_zero_bss() {
        for is64 in [false, true] {
            let img = elf(
                is64,
                0x10_0000,
                &[
                    (0x10_0000, 0x10_0000, b"\xf4\x90", 0x10),
                    (0x20_0000, 0x20_0000, b"AB", 2),
                ],
            );
            let mut mem = vec![0xaau8; 4 << 20];
            let l = load(&img, &mut mem, &opts()).unwrap();
            assert_eq!(l.entry, 0x10_0000);
            assert_eq!(l.kind, if is64 { "elf64" } else { "elf32" });
            assert_eq!(l.segments, vec![0x10_0000..0x10_0010, 0x20_0000..0x20_0002]);
            assert_eq!(&mem[0x10_0000..0x10_0002], b"\xf4\x90");
            assert!(
                mem[0x10_0002..0x10_0010].iter().all(|&b| b == 0),
                "bss zeroed"
            );
            assert_eq!(mem[0x10_0010], 0xaa, "nothing past memsz");
            assert_eq!(&mem[0x20_0000..0x20_0002], b"AB");
        }
    }

    #[test]
    fn higher_half_entry_is_translated_to_physical() {
        let img = elf(
            true,
            0xffff_ffff_8010_0004,
            &[(0x10_0000, 0xffff_ffff_8010_0000, b"abcdefgh", 8)],
        );
        let mut mem = vec![0u8; 4 << 20];
        assert_eq!(load(&img, &mut mem, &opts()).unwrap().entry, 0x10_0004);
        let mut o = opts();
        o.entry = Some(0x10_0006);
        assert_eq!(load(&img, &mut mem, &o).unwrap().entry, 0x10_0006);
    }

    fn err(img: &[u8], mem: usize) -> Error {
        let mut mem = vec![0u8; mem];
        load(img, &mut mem, &opts()).expect_err("must fail")
    }

    #[test]
    fn truncated_elf() {
        let img = elf(true, 0x10_0000, &[(0x10_0000, 0x10_0000, &[1; 64], 64)]);
        for cut in [10, 40, 64 + 20, img.len() - 1] {
            let e = err(&img[..cut], 4 << 20);
            assert_eq!(e.kind, crate::error::Kind::Image);
            assert!(e.msg.contains("truncated"), "{cut}: {}", e.msg);
        }
    }

    #[test]
    fn segment_outside_memory() {
        let img = elf(false, 0x10_0000, &[(0x3f_fff0, 0x3f_fff0, b"x", 0x20)]);
        assert!(err(&img, 4 << 20).msg.contains("outside guest memory"));
        // Overflowing address arithmetic is an error too, not a panic.
        let img = elf(true, 0x10_0000, &[(u64::MAX - 4, u64::MAX - 4, b"x", 0x20)]);
        assert!(err(&img, 4 << 20).msg.contains("outside guest memory"));
    }

    #[test]
    fn overlapping_segments() {
        let img = elf(
            true,
            0x10_0000,
            &[
                (0x10_0000, 0x10_0000, b"a", 0x1000),
                (0x10_0800, 0x10_0800, b"b", 0x10),
            ],
        );
        assert!(err(&img, 4 << 20).msg.contains("overlaps another PT_LOAD"));
    }

    #[test]
    fn boot_area_is_protected() {
        let img = elf(false, 0x2000, &[(0x2000, 0x2000, b"a", 0x10)]);
        assert!(err(&img, 4 << 20).msg.contains("boot area"));
    }

    #[test]
    fn bad_headers() {
        let good = elf(true, 0x10_0000, &[(0x10_0000, 0x10_0000, b"a", 1)]);
        let mut bad = good.clone();
        bad[4] = 3;
        assert!(err(&bad, 4 << 20).msg.contains("class"));
        let mut bad = good.clone();
        bad[5] = 2;
        assert!(err(&bad, 4 << 20).msg.contains("big-endian"));
        let mut bad = good.clone();
        bad[18] = 40;
        assert!(err(&bad, 4 << 20).msg.contains("machine"));
        let mut bad = good.clone();
        bad[16] = 3;
        assert!(err(&bad, 4 << 20).msg.contains("ET_EXEC"));
        let mut bad = good.clone();
        bad[54] = 8;
        assert!(err(&bad, 4 << 20).msg.contains("too small"));
        let none = elf(true, 0x10_0000, &[]);
        assert!(err(&none, 4 << 20).msg.contains("no PT_LOAD"));
        let mut fsz = good;
        fsz[64 + 40..64 + 48].copy_from_slice(&0u64.to_le_bytes());
        fsz[64 + 40] = 0; // memsz 0: skipped, so nothing is loadable
        assert!(err(&fsz, 4 << 20).msg.contains("no PT_LOAD"));
        let bigfile = elf(true, 0x10_0000, &[(0x10_0000, 0x10_0000, b"abcd", 2)]);
        assert!(err(&bigfile, 4 << 20).msg.contains("larger than p_memsz"));
    }

    #[test]
    fn entry_outside_memory() {
        let img = elf(true, 0x900_0000, &[(0x10_0000, 0x10_0000, b"a", 1)]);
        assert!(err(&img, 4 << 20).msg.contains("entry point"));
    }

    use crate::multiboot::tests::image_with_header;

    #[test]
    fn multiboot_elf_is_loaded_by_its_program_headers() {
        let mut seg = image_with_header(16, 0, 3, None);
        seg.extend_from_slice(b"\xf4");
        let img = elf(false, 0x10_000c, &[(0x10_0000, 0x10_0000, &seg, 0x2010)]);
        let mut mem = vec![0u8; 4 << 20];
        let l = load(&img, &mut mem, &opts()).unwrap();
        assert_eq!((l.kind, l.entry), ("multiboot-elf32", 0x10_000c));
        let mb = l.multiboot.unwrap();
        assert_eq!(mb.header.offset, 84, "after the ELF and program headers");
        assert_eq!(mb.extent, 0x10_0000..0x10_2010);
        assert!(l.notes.is_empty());
        // --format elf ignores the header.
        let mut o = opts();
        o.format = Format::Elf;
        let l = load(&img, &mut mem, &o).unwrap();
        assert_eq!((l.kind, l.multiboot), ("elf32", None));
        // Flag 2 (video) is noted, not refused; unknown required flags too.
        let mut seg = image_with_header(16, 0, 4 | 8, None);
        seg.push(0xf4);
        let img = elf(false, 0x10_000c, &[(0x10_0000, 0x10_0000, &seg, 0x20)]);
        let l = load(&img, &mut mem, &opts()).unwrap();
        assert_eq!(l.notes.len(), 2, "{:?}", l.notes);
        assert!(l.notes[0].contains("video"));
    }

    #[test]
    fn aout_kludge_loads_by_the_header() {
        // A raw image with the header at file offset 0x10: load_addr is 0x10 before it.
        let mut img = image_with_header(
            0x80,
            0x10,
            1 << 16,
            Some([0x20_0010, 0x20_0000, 0x20_0040, 0x20_1000, 0x20_0030]),
        );
        img[0x30] = 0xf4;
        img[0x7f] = 0x77; // past load_end_addr: not loaded
        let mut mem = vec![0xaau8; 4 << 20];
        let l = load(&img, &mut mem, &opts()).unwrap();
        assert_eq!((l.kind, l.entry), ("multiboot-aout", 0x20_0030));
        assert_eq!(l.segments, vec![0x20_0000..0x20_1000]);
        assert_eq!(l.multiboot.unwrap().extent, 0x20_0000..0x20_1000);
        assert_eq!(&mem[0x20_0000..0x20_0040], &img[..0x40]);
        assert!(mem[0x20_0040..0x20_1000].iter().all(|&b| b == 0), "bss");
        assert_eq!(mem[0x20_1000], 0xaa);
    }

    #[test]
    fn aout_kludge_wins_over_elf_program_headers() {
        // The header sits at file offset 84 of an ELF file; its fields load the whole file
        // at 0x300000 (load_end_addr 0: to the end of the file; no BSS).
        let mut seg = image_with_header(
            48,
            0,
            1 << 16,
            Some([0x30_0054, 0x30_0000, 0, 0, 0x30_0084]),
        );
        seg.push(0xf4);
        let img = elf(false, 0x10_0000, &[(0x10_0000, 0x10_0000, &seg, 0x100)]);
        let mut mem = vec![0u8; 4 << 20];
        let l = load(&img, &mut mem, &opts()).unwrap();
        assert_eq!((l.kind, l.entry), ("multiboot-aout", 0x30_0084));
        assert_eq!(&mem[0x30_0000..0x30_0000 + img.len()], &img[..]);
        assert_eq!(mem[0x30_0084], 0xf4);
        assert!(
            mem[0x10_0000..0x10_0100].iter().all(|&b| b == 0),
            "program headers unused"
        );
    }

    #[test]
    fn multiboot_errors() {
        let mut mem = vec![0u8; 4 << 20];
        let plain = elf(false, 0x10_0000, &[(0x10_0000, 0x10_0000, b"\xf4", 1)]);
        let mut o = opts();
        o.format = Format::Multiboot;
        assert!(load(&plain, &mut mem, &o)
            .unwrap_err()
            .msg
            .contains("no Multiboot header"));
        // No address fields and not ELF.
        let raw = image_with_header(64, 0, 0, None);
        assert!(load(&raw, &mut mem, &opts())
            .unwrap_err()
            .msg
            .contains("must be ELF"));
        // Address fields outside memory or over the boot area.
        let far = image_with_header(
            64,
            0,
            1 << 16,
            Some([0x50_0000, 0x50_0000, 0, 0, 0x50_0000]),
        );
        assert!(load(&far, &mut mem, &opts())
            .unwrap_err()
            .msg
            .contains("outside guest memory"));
        let low = image_with_header(64, 0, 1 << 16, Some([0x2000, 0x2000, 0, 0, 0x2000]));
        assert!(load(&low, &mut mem, &opts())
            .unwrap_err()
            .msg
            .contains("boot area"));
    }

    #[test]
    fn flat_images() {
        let mut mem = vec![0u8; 4 << 20];
        let l = load(b"\xf4", &mut mem, &opts()).unwrap();
        assert_eq!((l.entry, l.kind), (0x10_0000, "flat"));
        assert_eq!(l.segments.first(), Some(&(0x10_0000..0x10_0001)));
        assert_eq!(mem[0x10_0000], 0xf4);
        let mut o = opts();
        o.format = Format::Flat;
        o.load_addr = 0x20_0000;
        o.entry = Some(0x20_0010);
        // Even an ELF file loads raw when flat is forced.
        let l = load(b"\x7fELF-ish", &mut mem, &o).unwrap();
        assert_eq!(l.entry, 0x20_0010);
        assert_eq!(&mem[0x20_0000..0x20_0008], b"\x7fELF-ish");

        assert!(load(b"", &mut mem, &opts())
            .unwrap_err()
            .msg
            .contains("empty"));
        o.load_addr = (4 << 20) - 1;
        o.entry = None;
        assert!(load(b"ab", &mut mem, &o)
            .unwrap_err()
            .msg
            .contains("does not fit"));
        o.load_addr = 0x7000;
        assert!(load(b"ab", &mut mem, &o)
            .unwrap_err()
            .msg
            .contains("boot area"));
        o.format = Format::Elf;
        assert!(load(b"ab", &mut mem, &o)
            .unwrap_err()
            .msg
            .contains("not ELF"));
    }
}
