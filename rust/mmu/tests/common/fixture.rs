// SPDX-License-Identifier: GPL-2.0
//! The set-up the directed tests (safety.rs, units.rs) share: guest page tables built in
//! any paging mode, an engine started on them, the accesses they make, and the check that
//! a test gave every page back.

use super::{retry_oom, Acc, GMem, Host, GUEST_HPA_BASE};
use shadowvm_emulate::Regs;
use shadowvm_mmu::bits::*;
use shadowvm_mmu::*;

/// Present, writable, user.
pub(crate) const PWU: u64 = PTE_P | PTE_W | PTE_U;

/// A supervisor data read at CPL 0.
pub(crate) const RD: Acc = Acc {
    write: false,
    fetch: false,
    user: false,
    implicit: false,
    ac: false,
    cpl: 0,
};
/// A supervisor data write at CPL 0.
pub(crate) const WR: Acc = Acc { write: true, ..RD };
/// A supervisor instruction fetch at CPL 0.
pub(crate) const FETCH: Acc = Acc { fetch: true, ..RD };

/// The host-physical address of guest frame `gfn` ([`GMem`] maps frames in order).
pub(crate) fn hpa(gfn: u64) -> u64 {
    GUEST_HPA_BASE + (gfn << 12)
}

/// Writes 8-byte entry `idx` of the table in guest frame `gfn`.
pub(crate) fn w8(mem: &GMem, gfn: u64, idx: u64, v: u64) {
    mem.write((gfn << 12) + idx * 8, 8, v);
}

/// Emulator registers at `rip` with every general register 0 and RFLAGS at its reset value.
pub(crate) fn emu_regs(rip: u64) -> Regs {
    Regs {
        gpr: [0; 16],
        rip,
        rflags: 2,
    }
}

/// Builds guest page tables in any paging mode (0 off, 1 32-bit, 2 PAE, 3 4-level), one
/// set of tables per address space, taking frames from `next` upwards.
pub(crate) struct Builder {
    pub mode: u8,
    pub next: u64,
}

impl Builder {
    /// A builder for `mode` that starts at frame 1.
    pub(crate) fn new(mode: u8) -> Self {
        Builder { mode, next: 1 }
    }

    pub(crate) fn alloc(&mut self) -> u64 {
        let f = self.next;
        self.next += 1;
        f
    }

    /// Bytes per guest entry.
    pub(crate) fn esz(&self) -> u64 {
        if self.mode == 1 {
            4
        } else {
            8
        }
    }

    pub(crate) fn read(&self, mem: &GMem, gfn: u64, idx: u64) -> u64 {
        mem.read((gfn << 12) + idx * self.esz(), self.esz() as u32)
    }

    pub(crate) fn write(&self, mem: &GMem, gfn: u64, idx: u64, v: u64) {
        mem.write((gfn << 12) + idx * self.esz(), self.esz() as u32, v);
    }

    /// A new address space; returns its CR3.
    pub(crate) fn root(&mut self) -> u64 {
        self.alloc() << 12
    }

    /// The table below the root (the PDPT's directory for PAE) and the index shifts of
    /// the levels from there down to the page table.
    fn top(&self, mem: &GMem, cr3: u64, gva: u64) -> (u64, &'static [u32]) {
        match self.mode {
            1 => (cr3 >> 12, &[22, 12]),
            // The PDPT is in the CR3 frame (32-byte aligned at offset 0).
            2 => (
                self.read(mem, cr3 >> 12, (gva >> 30) & 3) >> 12 & ((1 << 40) - 1),
                &[21, 12],
            ),
            _ => (cr3 >> 12, &[39, 30, 21, 12]),
        }
    }

    fn index_bits(&self) -> u32 {
        if self.mode == 1 {
            10
        } else {
            9
        }
    }

    /// Maps `gva` to `gfn` (4 KiB, writable, user) in the address space `cr3`.
    pub(crate) fn map(&mut self, mem: &GMem, cr3: u64, gva: u64, gfn: u64) {
        if self.mode == 2 {
            let (pdpt, i) = (cr3 >> 12, (gva >> 30) & 3);
            if self.read(mem, pdpt, i) & PTE_P == 0 {
                let e = (self.alloc() << 12) | PTE_P;
                self.write(mem, pdpt, i, e);
            }
        }
        let (mut table, levels) = self.top(mem, cr3, gva);
        let bits = self.index_bits();
        for (n, &shift) in levels.iter().enumerate() {
            let idx = (gva >> shift) & ((1 << bits) - 1);
            if n + 1 == levels.len() {
                self.write(mem, table, idx, (gfn << 12) | PWU);
                return;
            }
            let mut e = self.read(mem, table, idx);
            if e & PTE_P == 0 {
                e = (self.alloc() << 12) | PWU;
                self.write(mem, table, idx, e);
            }
            table = (e >> 12) & ((1 << 40) - 1);
        }
    }

    /// The guest table at `level` (1 = the page table) on the path of `gva` in the
    /// address space `cr3`, which [`Builder::map`] built.
    pub(crate) fn table(&self, mem: &GMem, cr3: u64, gva: u64, level: usize) -> u64 {
        let (mut table, levels) = self.top(mem, cr3, gva);
        let bits = self.index_bits();
        for &shift in &levels[..levels.len() - level] {
            let idx = (gva >> shift) & ((1 << bits) - 1);
            table = (self.read(mem, table, idx) >> 12) & ((1 << 40) - 1);
        }
        table
    }
}

/// CR0, CR4 and EFER of paging mode `mode` (as [`Builder`] numbers them), CR0.WP set.
pub(crate) fn mode_regs(mode: u8) -> (u64, u64, u64) {
    let cr0 = CR0_PE | CR0_WP | if mode == 0 { 0 } else { CR0_PG };
    match mode {
        3 => (cr0, CR4_PAE, EFER_LME | EFER_LMA | EFER_NXE),
        2 => (cr0, CR4_PAE, EFER_NXE),
        _ => (cr0, 0, 0),
    }
}

/// An engine with configuration `cfg`, in paging mode `mode`, on the address space `cr3`.
pub(crate) fn start(mode: u8, cfg: Config, mem: &GMem, host: &mut Host, cr3: u64) -> Mmu {
    let mut mmu = Mmu::new(cfg);
    assert_eq!(
        retry_oom(host, |h| mmu.set_cr3(h, mem, cr3)),
        CtlOutcome::Ok
    );
    let (cr0, cr4, efer) = mode_regs(mode);
    assert_eq!(
        retry_oom(host, |h| mmu.set_mode(h, mem, cr0, cr4, efer)),
        CtlOutcome::Ok
    );
    mmu
}

/// Tears the engine down and checks that every page went back to the host.
pub(crate) fn finish(mmu: &mut Mmu, host: &mut Host) {
    mmu.teardown(host);
    assert_eq!(host.live(), 0, "pages not given back");
}
