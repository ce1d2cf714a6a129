// SPDX-License-Identifier: GPL-2.0

//! Initial machine state: a GDT and TSS in guest memory in both start modes, identity page
//! tables for long mode, and the register values (documented in Documentation/uapi.md,
//! "Launcher boot state").
//!
//! VMX without unrestricted guest checks the hidden segment state against real descriptors
//! only loosely, but the guest reloads segments from the GDT as soon as it takes an interrupt
//! or a far jump, so the descriptors must exist and match what is loaded.

use crate::error::{Error, Result};
use shadowvm_uapi::{Dtable, Regs, Segment, Sregs, SHADOWVM_RFLAGS_FIXED1};
use std::ops::Range;

/// CPU mode the guest starts in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartMode {
    /// 32-bit protected mode, paging off, flat segments (multiboot style).
    Protected,
    /// 64-bit long mode on identity page tables covering the first 4 GiB.
    Long,
}

impl StartMode {
    pub fn name(self) -> &'static str {
        match self {
            Self::Protected => "protected",
            Self::Long => "long",
        }
    }
}

/// Guest-physical address of the launcher's GDT.
pub const GDT_ADDR: u64 = 0x1000;
/// Guest-physical address of the (zeroed) TSS that TR points at.
pub const TSS_ADDR: u64 = 0x1100;
/// TSS limit: the 104-byte 32/64-bit TSS.
pub const TSS_LIMIT: u32 = 0x67;
/// Long mode: PML4 page.
pub const PML4_ADDR: u64 = 0x2000;
/// Long mode: the one PDPT page.
pub const PDPT_ADDR: u64 = 0x3000;
/// Long mode: four page directories of 2 MiB entries, 0x4000..0x8000.
pub const PD_ADDR: u64 = 0x4000;
/// Everything the launcher writes below the guest; images may not overlap it.
pub const BOOT_AREA: Range<u64> = 0x1000..0x8000;
/// Initial stack pointer (the guest is expected to set up its own stack).
pub const STACK_TOP: u64 = 0x8_0000;
/// Multiboot magic in EAX.
pub const MULTIBOOT_MAGIC: u64 = crate::multiboot::BOOT_MAGIC as u64;

/// GDT selectors.
pub const SEL_CODE64: u16 = 0x08;
pub const SEL_CODE32: u16 = 0x10;
pub const SEL_DATA: u16 = 0x18;
pub const SEL_TSS: u16 = 0x20;

/// GDT contents: null, 64-bit code, 32-bit code, data, and a 16-byte TSS descriptor.
const GDT_ENTRIES: usize = 6;

const CR0_PE: u64 = 1 << 0;
const CR0_MP: u64 = 1 << 1;
const CR0_ET: u64 = 1 << 4;
const CR0_NE: u64 = 1 << 5;
const CR0_WP: u64 = 1 << 16;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

const PTE_P: u64 = 1 << 0;
const PTE_RW: u64 = 1 << 1;
const PTE_A: u64 = 1 << 5;
const PTE_D: u64 = 1 << 6;
const PTE_PS: u64 = 1 << 7;

/// 8-byte segment descriptor for a flat segment.
fn flat_descriptor(access: u8, flags: u8) -> u64 {
    // limit 0xfffff with G=1: 4 GiB; base 0.
    0xffff | (0xf << 48) | (u64::from(access) << 40) | (u64::from(flags & 0xf) << 52)
}

/// The 16-byte TSS descriptor (low, high) for a busy TSS at `base`.
fn tss_descriptor(base: u64, limit: u32) -> (u64, u64) {
    let low = u64::from(limit & 0xffff)
        | ((base & 0xff_ffff) << 16)
        | (0x8b << 40) // present, DPL 0, type 11: busy 32/64-bit TSS
        | (u64::from((limit >> 16) & 0xf) << 48)
        | (((base >> 24) & 0xff) << 56);
    (low, base >> 32)
}

fn write_u64(mem: &mut [u8], addr: u64, value: u64) -> Result<()> {
    let a = addr as usize;
    mem.get_mut(a..a + 8)
        .ok_or_else(|| {
            Error::image(format!(
                "boot structure at {addr:#x} is outside guest memory"
            ))
        })?
        .copy_from_slice(&value.to_le_bytes());
    Ok(())
}

/// Writes the GDT and the zeroed TSS.
pub fn write_gdt(mem: &mut [u8]) -> Result<()> {
    let (tss_low, tss_high) = tss_descriptor(TSS_ADDR, TSS_LIMIT);
    let gdt: [u64; GDT_ENTRIES] = [
        0,
        flat_descriptor(0x9b, 0xa), // 64-bit code: P, S, execute/read, accessed; G, L
        flat_descriptor(0x9b, 0xc), // 32-bit code: G, D
        flat_descriptor(0x93, 0xc), // data: P, S, read/write, accessed; G, B
        tss_low,
        tss_high,
    ];
    for (i, d) in gdt.iter().enumerate() {
        write_u64(mem, GDT_ADDR + 8 * i as u64, *d)?;
    }
    let tss = TSS_ADDR as usize..TSS_ADDR as usize + TSS_LIMIT as usize + 1;
    mem.get_mut(tss)
        .ok_or_else(|| Error::image("TSS is outside guest memory"))?
        .fill(0);
    Ok(())
}

/// Writes identity page tables for 0..4 GiB with 2 MiB pages. Accessed and dirty bits are
/// preset so the boot tables themselves never need A/D updates.
pub fn write_page_tables(mem: &mut [u8]) -> Result<()> {
    mem.get_mut(PML4_ADDR as usize..BOOT_AREA.end as usize)
        .ok_or_else(|| Error::image("page tables are outside guest memory"))?
        .fill(0);
    write_u64(mem, PML4_ADDR, PDPT_ADDR | PTE_P | PTE_RW | PTE_A)?;
    for gib in 0..4u64 {
        let pd = PD_ADDR + gib * 0x1000;
        write_u64(mem, PDPT_ADDR + gib * 8, pd | PTE_P | PTE_RW | PTE_A)?;
        for i in 0..512u64 {
            let phys = (gib << 30) | (i << 21);
            write_u64(
                mem,
                pd + i * 8,
                phys | PTE_P | PTE_RW | PTE_PS | PTE_A | PTE_D,
            )?;
        }
    }
    Ok(())
}

fn code_segment(mode: StartMode) -> Segment {
    let long = mode == StartMode::Long;
    Segment {
        base: 0,
        limit: 0xffff_ffff,
        selector: if long { SEL_CODE64 } else { SEL_CODE32 },
        type_: 0xb,
        present: 1,
        dpl: 0,
        db: u8::from(!long),
        s: 1,
        l: u8::from(long),
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

fn data_segment() -> Segment {
    Segment {
        base: 0,
        limit: 0xffff_ffff,
        selector: SEL_DATA,
        type_: 0x3,
        present: 1,
        db: 1,
        s: 1,
        g: 1,
        ..Default::default()
    }
}

/// Writes the boot structures for `mode` and returns the initial registers; EBX gets
/// `boot_info` (the Multiboot information's address, or 0).
pub fn setup(mem: &mut [u8], mode: StartMode, entry: u64, boot_info: u64) -> Result<(Regs, Sregs)> {
    if mode == StartMode::Protected && entry > u64::from(u32::MAX) {
        return Err(Error::image(format!(
            "entry point {entry:#x} is not reachable from 32-bit protected mode"
        )));
    }
    write_gdt(mem)?;
    let data = data_segment();
    let mut sregs = Sregs {
        cs: code_segment(mode),
        ds: data,
        es: data,
        fs: data,
        gs: data,
        ss: data,
        tr: Segment {
            base: TSS_ADDR,
            limit: TSS_LIMIT,
            selector: SEL_TSS,
            type_: 0xb,
            present: 1,
            ..Default::default()
        },
        ldt: Segment {
            type_: 0x2,
            unusable: 1,
            ..Default::default()
        },
        gdt: Dtable {
            base: GDT_ADDR,
            limit: (GDT_ENTRIES * 8 - 1) as u16,
            padding: [0; 3],
        },
        idt: Dtable::default(),
        cr0: CR0_PE | CR0_ET,
        ..Default::default()
    };
    if mode == StartMode::Long {
        write_page_tables(mem)?;
        sregs.cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG;
        sregs.cr3 = PML4_ADDR;
        sregs.cr4 = CR4_PAE;
        sregs.efer = EFER_LME | EFER_LMA;
    }
    let regs = Regs {
        rax: MULTIBOOT_MAGIC,
        rbx: boot_info,
        rsp: STACK_TOP,
        rip: entry,
        rflags: SHADOWVM_RFLAGS_FIXED1, // IF = 0
        ..Default::default()
    };
    Ok((regs, sregs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rd(mem: &[u8], addr: u64) -> u64 {
        u64::from_le_bytes(mem[addr as usize..addr as usize + 8].try_into().unwrap())
    }

    /// Software walk of 4-level tables with 2 MiB leaves.
    fn translate(mem: &[u8], cr3: u64, va: u64) -> Option<u64> {
        let mask = 0x000f_ffff_ffff_f000;
        let pml4e = rd(mem, (cr3 & mask) + ((va >> 39) & 0x1ff) * 8);
        if pml4e & PTE_P == 0 {
            return None;
        }
        let pdpte = rd(mem, (pml4e & mask) + ((va >> 30) & 0x1ff) * 8);
        if pdpte & PTE_P == 0 || pdpte & PTE_PS != 0 {
            return None;
        }
        let pde = rd(mem, (pdpte & mask) + ((va >> 21) & 0x1ff) * 8);
        if pde & PTE_P == 0 || pde & PTE_PS == 0 || pde & PTE_RW == 0 {
            return None;
        }
        Some((pde & 0x000f_ffff_ffe0_0000) | (va & 0x1f_ffff))
    }

    #[test]
    fn long_mode_tables_identity_map_4gib() {
        let mut mem = vec![0u8; 2 << 20];
        let (regs, sregs) = setup(&mut mem, StartMode::Long, 0x10_0000, 0).unwrap();
        assert_eq!(sregs.cr3, PML4_ADDR);
        for va in [
            0u64,
            0x1234,
            0x10_0000,
            0x3fff_ffff,
            0x4000_0000,
            0xbeef_f00d,
            0xffff_ffff,
        ] {
            assert_eq!(translate(&mem, sregs.cr3, va), Some(va), "{va:#x}");
        }
        assert_eq!(
            translate(&mem, sregs.cr3, 1 << 32),
            None,
            "nothing above 4 GiB"
        );
        assert_eq!(regs.rip, 0x10_0000);
        assert_eq!(sregs.efer, EFER_LME | EFER_LMA);
        assert!(sregs.cr0 & CR0_PG != 0 && sregs.cr4 & CR4_PAE != 0);
        assert_eq!(
            (sregs.cs.l, sregs.cs.db, sregs.cs.selector),
            (1, 0, SEL_CODE64)
        );
    }

    #[test]
    fn gdt_matches_loaded_segments() {
        for mode in [StartMode::Protected, StartMode::Long] {
            let mut mem = vec![0u8; 2 << 20];
            let (_, s) = setup(&mut mem, mode, 0x10_0000, 0).unwrap();
            for seg in [s.cs, s.ds, s.ss] {
                let d = rd(&mem, s.gdt.base + u64::from(seg.selector));
                assert_eq!(
                    (d >> 40) & 0xf,
                    u64::from(seg.type_),
                    "type of {:#x}",
                    seg.selector
                );
                assert_eq!((d >> 47) & 1, u64::from(seg.present));
                assert_eq!((d >> 44) & 1, u64::from(seg.s));
                assert_eq!((d >> 53) & 1, u64::from(seg.l));
                assert_eq!((d >> 54) & 1, u64::from(seg.db));
                assert_eq!((d >> 55) & 1, u64::from(seg.g));
                assert_eq!(d & 0xffff, 0xffff);
            }
            let t = rd(&mem, s.gdt.base + u64::from(s.tr.selector));
            assert_eq!((t >> 40) & 0xf, 0xb);
            assert_eq!(((t >> 16) & 0xff_ffff) | ((t >> 56) << 24), TSS_ADDR);
            assert!(u64::from(s.tr.selector) + 15 <= u64::from(s.gdt.limit));
        }
    }

    #[test]
    fn protected_mode_state() {
        let mut mem = vec![0u8; 2 << 20];
        let (regs, s) = setup(&mut mem, StartMode::Protected, 0x10_000c, 0x9500).unwrap();
        assert_eq!(regs.rax, 0x2BAD_B002);
        assert_eq!(regs.rbx, 0x9500);
        assert_eq!(regs.rflags, 0x2);
        assert_eq!(s.cr0, CR0_PE | CR0_ET);
        assert_eq!((s.cr3, s.cr4, s.efer), (0, 0, 0));
        assert_eq!(
            (s.cs.db, s.cs.l, s.cs.selector, s.cs.limit),
            (1, 0, SEL_CODE32, 0xffff_ffff)
        );
        assert_eq!(rd(&mem, PML4_ADDR), 0, "no page tables in protected mode");
        assert!(setup(&mut mem, StartMode::Protected, 1 << 33, 0).is_err());
    }

    #[test]
    fn too_small_memory_is_an_error() {
        let mut mem = vec![0u8; 0x3000];
        assert!(setup(&mut mem, StartMode::Long, 0x10, 0).is_err());
    }
}
