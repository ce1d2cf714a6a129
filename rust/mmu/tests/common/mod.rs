// SPDX-License-Identifier: GPL-2.0
//! Test harness: a host page source, guest memory, an independent reference model of x86
//! paging, and a software CPU that walks the shadow tables in their hardware format.
// Each of the three test binaries (model, safety, units) compiles this module and uses a
// part of it, so each would warn about the parts the others use.
#![allow(dead_code)]

use shadowvm_mmu::bits::*;
use shadowvm_mmu::*;
use std::collections::{HashMap, HashSet};

pub(crate) mod fixture;

// ------------------------------------------------------------------ host pages

/// A 4 KiB page, aligned as a real one is (GuestMemory's contract asks for it).
#[repr(C, align(4096))]
struct Page4k([u64; 512]);

/// A zeroed page, leaked until [`free_page4k`].
fn alloc_page4k() -> *mut u64 {
    Box::into_raw(Box::new(Page4k([0; 512]))).cast::<u64>()
}

/// Frees a page of [`alloc_page4k`].
///
/// # Safety
///
/// `p` came from [`alloc_page4k`], was not freed yet and is not used after this.
unsafe fn free_page4k(p: *mut u64) {
    // SAFETY: `p` is the pointer `alloc_page4k` leaked from a `Box<Page4k>` (caller's promise).
    drop(unsafe { Box::from_raw(p.cast::<Page4k>()) });
}

/// Host memory: pages with made-up host-physical addresses.
pub(crate) struct Host {
    pages: HashMap<u64, *mut u64>,
    next: u64,
    next_low: u64,
    pub allocs: u64,
    pub frees: u64,
    /// Fail the allocation with this number (1-based), once.
    pub fail_at: Option<u64>,
    /// Fail every allocation.
    pub dry: bool,
    /// NeedMemory results seen (and retried).
    pub oom_events: u64,
}

pub(crate) const GUEST_HPA_BASE: u64 = 0x80_0000_0000;

impl Host {
    pub(crate) fn new() -> Self {
        Host {
            pages: HashMap::new(),
            next: 0x1_0000_0000,
            next_low: 0x1000_0000,
            allocs: 0,
            frees: 0,
            fail_at: None,
            dry: false,
            oom_events: 0,
        }
    }
    pub(crate) fn live(&self) -> usize {
        self.pages.len()
    }
    /// Reads a u64 of a host page (shadow tables).
    pub(crate) fn read(&self, hpa: u64) -> u64 {
        let base = hpa & !0xfff;
        let p = *self
            .pages
            .get(&base)
            .unwrap_or_else(|| panic!("shadow entry points to unknown host page {base:#x}"));
        // SAFETY: `p` is a live page of 512 u64 (it is in `pages`); the index is below 512.
        unsafe { p.add(((hpa & 0xfff) / 8) as usize).read_volatile() }
    }
    pub(crate) fn has(&self, hpa: u64) -> bool {
        self.pages.contains_key(&(hpa & !0xfff))
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        for (_, p) in self.pages.drain() {
            // SAFETY: every page in `pages` came from `alloc_page4k`; draining drops it once.
            unsafe { free_page4k(p) };
        }
    }
}

impl PageSource for Host {
    fn alloc_page(&mut self, low: bool) -> Option<HostPage> {
        if self.dry {
            return None;
        }
        let n = self.allocs + 1;
        if self.fail_at == Some(n) {
            self.fail_at = None;
            return None;
        }
        self.allocs = n;
        let p = alloc_page4k();
        let hpa = if low {
            self.next_low += 4096;
            assert!(self.next_low < 1 << 32);
            self.next_low
        } else {
            self.next += 4096;
            self.next
        };
        self.pages.insert(hpa, p);
        Some(HostPage {
            ptr: p.cast::<u8>(),
            hpa,
        })
    }
    fn free_page(&mut self, page: HostPage) {
        let p = self
            .pages
            .remove(&page.hpa)
            .unwrap_or_else(|| panic!("double free / unknown page {:#x}", page.hpa));
        assert_eq!(p.cast::<u8>(), page.ptr, "free_page: pointer/hpa mismatch");
        // SAFETY: `p` came from `alloc_page4k` and is no longer in `pages`; the engine gave
        // the page back, so nothing uses it after this.
        unsafe { free_page4k(p) };
        self.frees += 1;
    }
}

// ------------------------------------------------------------------ guest memory

pub(crate) struct GMem {
    frames: Vec<Option<*mut u64>>,
}

impl GMem {
    /// `n` frames, those in `holes` unbacked.
    pub(crate) fn new(n: usize, holes: &[u64]) -> Self {
        let frames = (0..n as u64)
            .map(|g| {
                if holes.contains(&g) {
                    None
                } else {
                    Some(alloc_page4k())
                }
            })
            .collect();
        GMem { frames }
    }
    pub(crate) fn backed(&self, gfn: u64) -> bool {
        matches!(self.frames.get(gfn as usize), Some(Some(_)))
    }
    pub(crate) fn hpa_of(&self, gpa: u64) -> u64 {
        GUEST_HPA_BASE + gpa
    }
    pub(crate) fn read(&self, gpa: u64, size: u32) -> u64 {
        let Some(Some(p)) = self.frames.get((gpa >> 12) as usize) else {
            return 0;
        };
        let off = (gpa & 0xfff) as usize;
        // SAFETY: `p` is a live 4096-byte frame; `off & !3` (4-aligned) and `off / 8` are
        // inside it.
        unsafe {
            if size == 4 {
                u64::from(
                    (*p).cast::<u8>()
                        .add(off & !3)
                        .cast::<u32>()
                        .read_volatile(),
                )
            } else {
                p.add(off / 8).read_volatile()
            }
        }
    }
    pub(crate) fn write(&self, gpa: u64, size: u32, v: u64) {
        let Some(Some(p)) = self.frames.get((gpa >> 12) as usize) else {
            return;
        };
        let off = (gpa & 0xfff) as usize;
        // SAFETY: `p` is a live 4096-byte frame; `off & !3` (4-aligned) and `off / 8` are
        // inside it.
        unsafe {
            if size == 4 {
                (*p).cast::<u8>()
                    .add(off & !3)
                    .cast::<u32>()
                    .write_volatile(v as u32)
            } else {
                p.add(off / 8).write_volatile(v)
            }
        }
    }
    pub(crate) fn frame_copy(&self, gfn: u64) -> [u64; 512] {
        let mut out = [0u64; 512];
        if let Some(Some(p)) = self.frames.get(gfn as usize) {
            for (i, o) in out.iter_mut().enumerate() {
                // SAFETY: `i` < 512, inside the live frame `p`.
                *o = unsafe { p.add(i).read_volatile() };
            }
        }
        out
    }
}

impl Drop for GMem {
    fn drop(&mut self) {
        for p in self.frames.drain(..).flatten() {
            // SAFETY: every frame came from `alloc_page4k`; draining drops it once.
            unsafe { free_page4k(p) };
        }
    }
}

// SAFETY: Each frame is a 4096-byte, 4096-aligned `Page4k`, freed only when the GMem is
// dropped, which needs `&mut self`, so not while an engine call holds `&self`. The tests
// run one thread per GMem: nothing else writes a frame during an engine call.
unsafe impl GuestMemory for GMem {
    fn frame(&self, gfn: u64) -> Option<GuestFrame> {
        match self.frames.get(usize::try_from(gfn).ok()?) {
            Some(Some(p)) => Some(GuestFrame {
                ptr: (*p).cast::<u8>(),
                hpa: GUEST_HPA_BASE + (gfn << 12),
            }),
            _ => None,
        }
    }
}

// ------------------------------------------------------------------ reference model

/// The architectural state the reference model needs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RefState {
    /// 0 off, 1 32-bit, 2 PAE, 3 4-level.
    pub mode: u8,
    pub cr3: u64,
    pub pdptes: [u64; 4],
    pub wp: bool,
    pub nxe: bool,
    pub smep: bool,
    pub smap: bool,
    pub pse: bool,
    pub m: u32,
    pub gb: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Acc {
    pub write: bool,
    pub fetch: bool,
    pub user: bool,
    pub implicit: bool,
    pub ac: bool,
    pub cpl: u8,
}

impl Acc {
    pub(crate) fn to_engine(self) -> Access {
        Access {
            write: self.write,
            fetch: self.fetch,
            user: self.user,
            implicit: self.implicit,
            ac: self.ac,
        }
    }
    pub(crate) fn hw_error_code(self) -> u32 {
        let mut e = 0;
        if self.write {
            e |= PFERR_W;
        }
        if self.user {
            e |= PFERR_U;
        }
        if self.fetch {
            e |= PFERR_ID;
        }
        e
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum RefResult {
    Ok {
        gpa: u64,
        page_size: u64,
        entries: Vec<(u64, u32)>,
        leaf: (u64, u32),
    },
    Fault(u32),
}

fn m_bits(hi: u32, lo: u32) -> u64 {
    if hi < lo {
        0
    } else {
        (((1u128 << (hi - lo + 1)) - 1) as u64) << lo
    }
}

impl RefState {
    fn err(&self, a: Acc, p: bool, rsvd: bool) -> u32 {
        let mut e = 0;
        if p || rsvd {
            e |= 1;
        }
        if rsvd {
            e |= 8;
        }
        if a.write {
            e |= 2;
        }
        if a.user {
            e |= 4;
        }
        if a.fetch && (self.smep || (self.mode >= 2 && self.nxe)) {
            e |= 16;
        }
        e
    }

    fn perm_ok(&self, a: Acc, user_all: bool, write_all: bool, nx: bool) -> bool {
        if a.fetch {
            if nx {
                return false;
            }
            if a.user {
                return user_all;
            }
            return !(self.smep && user_all);
        }
        if a.user {
            return user_all && (!a.write || write_all);
        }
        if user_all && self.smap && (a.implicit || !a.ac) {
            return false;
        }
        if a.write && self.wp && !write_all {
            return false;
        }
        true
    }

    /// Walks guest tables through `read(gpa, size)`.
    pub(crate) fn walk(&self, read: &dyn Fn(u64, u32) -> u64, gva: u64, a: Acc) -> RefResult {
        let mut entries = Vec::new();
        let mut user_all = true;
        let mut write_all = true;
        let mut nx = false;
        let (gpa, size);
        match self.mode {
            0 => {
                let la = gva & 0xffff_ffff;
                return RefResult::Ok {
                    gpa: la,
                    page_size: 4096,
                    entries,
                    leaf: (0, 0),
                };
            }
            1 => {
                let la = gva & 0xffff_ffff;
                let pde_a = (self.cr3 & 0xffff_f000) + ((la >> 22) & 1023) * 4;
                let pde = read(pde_a, 4);
                entries.push((pde_a, 4));
                if pde & 1 == 0 {
                    return RefResult::Fault(self.err(a, false, false));
                }
                user_all &= pde & 4 != 0;
                write_all &= pde & 2 != 0;
                if self.pse && pde & 0x80 != 0 {
                    let mm = self.m.min(40);
                    let mut rs = 1u64 << 21;
                    if mm < 40 {
                        rs |= m_bits(20, 13 + mm - 32);
                    }
                    if pde & rs != 0 {
                        return RefResult::Fault(self.err(a, true, true));
                    }
                    gpa = (pde & 0xffc0_0000) + (((pde >> 13) & 0xff) << 32) + (la & 0x3f_ffff);
                    size = 4 << 20;
                } else {
                    let pte_a = (pde & 0xffff_f000) + ((la >> 12) & 1023) * 4;
                    let pte = read(pte_a, 4);
                    entries.push((pte_a, 4));
                    if pte & 1 == 0 {
                        return RefResult::Fault(self.err(a, false, false));
                    }
                    user_all &= pte & 4 != 0;
                    write_all &= pte & 2 != 0;
                    gpa = (pte & 0xffff_f000) + (la & 0xfff);
                    size = 4096;
                }
            }
            2 => {
                let la = gva & 0xffff_ffff;
                let pdpte = self.pdptes[(la >> 30) as usize & 3];
                if pdpte & 1 == 0 {
                    return RefResult::Fault(self.err(a, false, false));
                }
                let hi = m_bits(62, self.m) | if self.nxe { 0 } else { 1 << 63 };
                let pde_a = (pdpte & m_bits(51, 12)) + ((la >> 21) & 511) * 8;
                let pde = read(pde_a, 8);
                entries.push((pde_a, 8));
                if pde & 1 == 0 {
                    return RefResult::Fault(self.err(a, false, false));
                }
                let big = pde & 0x80 != 0;
                if pde & (hi | if big { m_bits(20, 13) } else { 0 }) != 0 {
                    return RefResult::Fault(self.err(a, true, true));
                }
                user_all &= pde & 4 != 0;
                write_all &= pde & 2 != 0;
                nx |= self.nxe && pde >> 63 != 0;
                if big {
                    gpa = (pde & m_bits(51, 21)) + (la & 0x1f_ffff);
                    size = 2 << 20;
                } else {
                    let pte_a = (pde & m_bits(51, 12)) + ((la >> 12) & 511) * 8;
                    let pte = read(pte_a, 8);
                    entries.push((pte_a, 8));
                    if pte & 1 == 0 {
                        return RefResult::Fault(self.err(a, false, false));
                    }
                    if pte & hi != 0 {
                        return RefResult::Fault(self.err(a, true, true));
                    }
                    user_all &= pte & 4 != 0;
                    write_all &= pte & 2 != 0;
                    nx |= self.nxe && pte >> 63 != 0;
                    gpa = (pte & m_bits(51, 12)) + (la & 0xfff);
                    size = 4096;
                }
            }
            _ => {
                let la = gva & 0xffff_ffff_ffff;
                let hi = m_bits(51, self.m) | if self.nxe { 0 } else { 1 << 63 };
                let mut table = self.cr3 & m_bits(51, 12) & !m_bits(51, self.m);
                let mut shift = 39;
                loop {
                    let ea = table + ((la >> shift) & 511) * 8;
                    let e = read(ea, 8);
                    entries.push((ea, 8));
                    if e & 1 == 0 {
                        return RefResult::Fault(self.err(a, false, false));
                    }
                    let ps = e & 0x80 != 0;
                    let extra = match shift {
                        39 => 0x80,
                        30 if ps => {
                            if !self.gb {
                                return RefResult::Fault(self.err(a, true, true));
                            }
                            m_bits(29, 13)
                        }
                        21 if ps => m_bits(20, 13),
                        _ => 0,
                    };
                    if e & (hi | extra) != 0 {
                        return RefResult::Fault(self.err(a, true, true));
                    }
                    user_all &= e & 4 != 0;
                    write_all &= e & 2 != 0;
                    nx |= self.nxe && e >> 63 != 0;
                    if shift == 12 || (ps && (shift == 21 || shift == 30)) {
                        gpa = (e & m_bits(51, shift)) + (la & ((1 << shift) - 1));
                        size = 1u64 << shift;
                        break;
                    }
                    table = e & m_bits(51, 12);
                    shift -= 9;
                }
            }
        }
        if !self.perm_ok(a, user_all, write_all, nx) {
            return RefResult::Fault(self.err(a, true, false));
        }
        let leaf = *entries.last().unwrap();
        RefResult::Ok {
            gpa,
            page_size: size,
            entries,
            leaf,
        }
    }

    /// Applies the A/D updates of a successful walk to a copy of memory values.
    pub(crate) fn ad_updates(
        &self,
        read: &dyn Fn(u64, u32) -> u64,
        r: &RefResult,
        a: Acc,
    ) -> Vec<(u64, u32, u64)> {
        let RefResult::Ok { entries, leaf, .. } = r else {
            return vec![];
        };
        let mut vals: Vec<(u64, u32, u64)> = Vec::new();
        for (i, &(ea, sz)) in entries.iter().enumerate() {
            let cur = vals
                .iter()
                .find(|v| v.0 == ea)
                .map(|v| v.2)
                .unwrap_or_else(|| read(ea, sz));
            let mut new = cur | 0x20;
            if i == entries.len() - 1 && (ea, sz) == *leaf && a.write {
                new |= 0x40;
            }
            if let Some(v) = vals.iter_mut().find(|v| v.0 == ea) {
                v.2 = new;
            } else {
                vals.push((ea, sz, new));
            }
        }
        vals
    }

    /// Loads PAE PDPTEs; None if one has reserved bits (#GP).
    pub(crate) fn load_pdptes(&self, mem: &GMem, cr3: u64) -> Option<[u64; 4]> {
        let base = cr3 & 0xffff_ffe0;
        let mut p = [0; 4];
        for (i, e) in p.iter_mut().enumerate() {
            let v = mem.read(base + 8 * i as u64, 8);
            let rsvd = m_bits(2, 1) | m_bits(8, 5) | m_bits(63, self.m);
            if v & 1 != 0 && v & rsvd != 0 {
                return None;
            }
            *e = v;
        }
        Some(p)
    }

    pub(crate) fn cr0(&self) -> u64 {
        let mut c = CR0_PE | (1 << 4);
        if self.mode != 0 {
            c |= CR0_PG;
        }
        if self.wp {
            c |= CR0_WP;
        }
        c
    }
}

// ------------------------------------------------------------------ software CPU

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CpuResult {
    /// The access completed at this host-physical address.
    Ok(u64),
    /// #PF delivered to the guest.
    Fault(u32),
    /// MMIO exit.
    Mmio(u64),
    /// Emulated write at this gpa.
    Emulated(u64),
}

thread_local! {
    /// #PFs the software CPU delivered straight to the guest (P=0 with the engine's
    /// guest-not-present bypass in force), on this thread.
    static DIRECT_FAULTS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// #PFs delivered to the guest without an exit so far on this thread.
pub(crate) fn direct_faults() -> u64 {
    DIRECT_FAULTS.with(|c| c.get())
}

/// Whether the CPU delivers #PF with error code `ec` to the guest without a VM exit:
/// #PF is in the exception bitmap and, with the bypass, PFEC_MASK = PFEC_MATCH = P (SDM
/// vol. 3C 25.2: a #PF exits iff (ec & mask) == match when bit 14 is set).
pub(crate) fn pf_skips_exit(mmu: &Mmu, ec: u32) -> bool {
    let (mask, matched) = if mmu.hw_state().pfec_bypass {
        (PFERR_P, PFERR_P)
    } else {
        (0, 0)
    };
    ec & mask != matched
}

/// Walks the shadow tables exactly as the CPU would (real CR0.WP=1, EFER.NXE=1, real
/// SMEP/SMAP from the engine's hardware state, reserved physical-address bits from the
/// host MAXPHYADDR the engine was given). Returns Ok(hpa) or the hardware #PF code.
pub(crate) fn hw_walk(mmu: &Mmu, host: &Host, gva: u64, a: Acc) -> Result<u64, u32> {
    let hw = mmu.hw_state();
    assert_eq!(hw.cr0_set & (CR0_PG | CR0_WP), CR0_PG | CR0_WP);
    assert!(hw.efer & EFER_NXE != 0);
    assert!(hw.cr4 & CR4_PAE != 0);
    let long = hw.efer & EFER_LMA != 0;
    let smep = hw.cr4 & CR4_SMEP != 0;
    let smap = hw.cr4 & CR4_SMAP != 0;
    let host_m = u32::from(mmu.config().host_maxphyaddr);
    let err = |p: bool| -> u32 {
        let mut e = if p { 1 } else { 0 };
        if a.write {
            e |= 2;
        }
        if a.user {
            e |= 4;
        }
        if a.fetch {
            e |= 16;
        }
        e
    };
    let root = mmu.root_hpa();
    assert!(root != 0, "no shadow root");
    let (mut table, mut shift, la) = if long {
        (root, 39u32, gva & 0xffff_ffff_ffff)
    } else {
        assert!(root < 1 << 32, "PAE root above 4 GiB");
        assert_eq!(root & 31, 0);
        let la = gva & 0xffff_ffff;
        let pdpte = host.read(root + ((la >> 30) & 3) * 8);
        if pdpte & 1 == 0 {
            return Err(err(false));
        }
        assert_eq!(
            pdpte & (m_bits(2, 1) | m_bits(8, 5) | m_bits(63, 52)),
            0,
            "reserved bits in shadow PDPTE {pdpte:#x}"
        );
        (pdpte & m_bits(51, 12), 21u32, la)
    };
    let (mut u, mut w, mut x) = (true, true, true);
    loop {
        let e = host.read(table + ((la >> shift) & 511) * 8);
        if e & 1 == 0 {
            return Err(err(false));
        }
        if e & m_bits(51, host_m) != 0 {
            return Err(err(true) | PFERR_RSVD);
        }
        assert_eq!(e & 0x80, 0, "shadow uses a large page");
        if !long {
            assert_eq!(e & m_bits(62, 52), 0, "reserved bits in PAE shadow entry");
        }
        u &= e & 4 != 0;
        w &= e & 2 != 0;
        x &= e >> 63 == 0;
        if shift == 12 {
            let hpa = (e & m_bits(51, 12)) + (la & 0xfff);
            // Permission check with WP=1.
            let ok = if a.fetch {
                x && if a.user { u } else { !(smep && u) }
            } else if a.user {
                u && (!a.write || w)
            } else {
                !(u && smap && (a.implicit || !a.ac)) && (!a.write || w)
            };
            return if ok { Ok(hpa) } else { Err(err(true)) };
        }
        table = e & m_bits(51, 12);
        assert!(host.has(table), "shadow non-leaf entry to unknown page");
        shift -= 9;
    }
}

/// The CPU's TLB in front of the shadow tables, as a vCPU with a VPID has it (translations
/// survive VM exits and entries), invalidated as `rust/vcpu` does it: whatever the engine
/// reports ([`Mmu::take_tlb_flush`]) before the next entry, one page for INVLPG when the
/// engine changed at most that page's entry, everything for the guest's own flushes; the
/// CPU itself drops a page's entries when an access to it faults. Entries are per access
/// kind (a write hit needs an earlier write walk, as for the dirty flag). Off: no TLB (no
/// VPID, every entry flushes).
#[derive(Default)]
pub(crate) struct Tlb {
    on: bool,
    entries: HashMap<(u64, Acc), u64>,
}

impl Tlb {
    /// A TLB that keeps translations.
    pub(crate) fn new() -> Tlb {
        Tlb {
            on: true,
            entries: HashMap::new(),
        }
    }

    fn page(mmu: &Mmu, gva: u64) -> u64 {
        let long = mmu.hw_state().efer & EFER_LMA != 0;
        (if long { gva } else { gva & 0xffff_ffff }) >> 12
    }

    /// The guest's (or userspace's) full flush.
    pub(crate) fn flush_all(&mut self) {
        self.entries.clear();
    }

    fn flush_page(&mut self, mmu: &Mmu, gva: u64) {
        let p = Self::page(mmu, gva);
        self.entries.retain(|k, _| k.0 != p);
    }

    /// Before the next VM entry: what the engine reports (one leaf or all: all).
    pub(crate) fn engine(&mut self, mmu: &mut Mmu) {
        if mmu.take_tlb_flush() != TlbFlush::None {
            self.flush_all();
        }
    }

    /// INVLPG (INVPCID of one address) of `gva` just handed to the engine, whose earlier
    /// reports were taken before it.
    pub(crate) fn invlpg(&mut self, mmu: &mut Mmu, gva: u64) {
        match mmu.take_tlb_flush() {
            TlbFlush::None | TlbFlush::OneLeaf => self.flush_page(mmu, gva),
            TlbFlush::All => self.flush_all(),
        }
    }
}

/// One guest access on the software CPU, with the engine handling every #PF exit like the
/// vCPU would. `store` is written to guest memory if the access is a write (page-table
/// updates done by guest code).
pub(crate) fn cpu_access(
    mmu: &mut Mmu,
    host: &mut Host,
    mem: &GMem,
    gva: u64,
    a: Acc,
    store: Option<(u64, u32)>,
) -> CpuResult {
    cpu_access_via(mmu, host, mem, &mut Tlb::default(), gva, a, store)
}

/// [`cpu_access`] through `tlb`.
pub(crate) fn cpu_access_via(
    mmu: &mut Mmu,
    host: &mut Host,
    mem: &GMem,
    tlb: &mut Tlb,
    gva: u64,
    a: Acc,
    store: Option<(u64, u32)>,
) -> CpuResult {
    tlb.engine(mmu);
    let key = (Tlb::page(mmu, gva), a);
    for _ in 0..8 {
        let cached = tlb.entries.get(&key).map(|&page| page | (gva & 0xfff));
        let walked = match cached {
            Some(hpa) => Ok(hpa),
            None => hw_walk(mmu, host, gva, a),
        };
        if let (true, Ok(hpa)) = (tlb.on, walked) {
            tlb.entries.insert(key, hpa & !0xfff);
        }
        match walked {
            Ok(hpa) => {
                if let Some((v, sz)) = store {
                    assert!(
                        hpa >= GUEST_HPA_BASE,
                        "write through shadow to a non-guest page"
                    );
                    mem.write(hpa - GUEST_HPA_BASE, sz, v);
                }
                return CpuResult::Ok(hpa);
            }
            Err(ec) => {
                tlb.flush_page(mmu, gva);
                if pf_skips_exit(mmu, ec) {
                    // The guest's handler runs with the CPU's error code; CR2 is the
                    // linear address, which the callers compare against the model.
                    DIRECT_FAULTS.with(|c| c.set(c.get() + 1));
                    return CpuResult::Fault(ec);
                }
                let out = retry_oom(host, |h| mmu.page_fault(h, mem, gva, ec, a.cpl, a.ac));
                tlb.engine(mmu);
                match out {
                    PfOutcome::Fixed => continue,
                    PfOutcome::Inject(pf) => {
                        // CR2 is the whole linear address (64 bits in IA-32e mode).
                        let long = mmu.paging().mode == GuestMode::Long4;
                        let la = if long { gva } else { gva & 0xffff_ffff };
                        assert_eq!(pf.cr2, la, "CR2");
                        return CpuResult::Fault(pf.error_code);
                    }
                    PfOutcome::Mmio { gpa } => {
                        // The emulator translates with the access it decoded (it knows an
                        // implicit access is one), as the vCPU would.
                        return match mmu.translate(mem, gva, a.to_engine()) {
                            Ok(t) => {
                                assert_eq!(t, gpa, "translate disagrees with the MMIO fault");
                                CpuResult::Mmio(gpa)
                            }
                            Err(pf) => CpuResult::Fault(pf.error_code),
                        };
                    }
                    PfOutcome::EmulateWrite { gpa } => {
                        assert!(a.write, "EmulateWrite for a non-write");
                        let r = emulate_store(mmu, host, mem, gva, gpa, a, store);
                        tlb.engine(mmu);
                        return r;
                    }
                }
            }
        }
    }
    panic!("access to {gva:#x} {a:?} keeps faulting after the engine said Fixed");
}

/// The vCPU's side of [`PfOutcome::EmulateWrite`]: decodes the guest's store instruction
/// and runs the real emulator over the engine's [`access::EngineAccess`] (translation with
/// the guest's permissions and A/D, the store, `guest_wrote`). The store is the value of
/// `store` (a page-table update by guest code), or what memory holds (a plain write
/// access): `mov [rdi], rax` in 64-bit code, `mov [edi], eax` or, for 8-byte entries,
/// `lock cmpxchg8b [edi]` in 32-bit code.
pub(crate) fn emulate_store(
    mmu: &mut Mmu,
    host: &mut Host,
    mem: &GMem,
    gva: u64,
    gpa: u64,
    a: Acc,
    store: Option<(u64, u32)>,
) -> CpuResult {
    use shadowvm_emulate::{self as emulate, gpr, CodeSize, Env, Outcome, Regs};
    let long = mmu.paging().mode == GuestMode::Long4;
    let width = if long { 8 } else { 4 };
    let (v, sz) = store.unwrap_or_else(|| (mem.read(gpa, width), width));
    let mut regs = Regs {
        gpr: [0; 16],
        rip: 0x1000,
        rflags: 2 | if a.ac { 1 << 18 } else { 0 },
    };
    regs.gpr[gpr::RDI] = gva;
    let (bytes, mode): (&[u8], CodeSize) = match (long, sz) {
        (true, _) => {
            regs.gpr[gpr::RAX] = v;
            (&[0x48, 0x89, 0x07], CodeSize::Bits64)
        }
        (false, 8) => {
            let old = mem.read(gpa, 8);
            regs.gpr[gpr::RAX] = old & 0xffff_ffff;
            regs.gpr[gpr::RDX] = old >> 32;
            regs.gpr[gpr::RBX] = v & 0xffff_ffff;
            regs.gpr[gpr::RCX] = v >> 32;
            (&[0xf0, 0x0f, 0xc7, 0x0f], CodeSize::Bits32)
        }
        _ => {
            regs.gpr[gpr::RAX] = v & 0xffff_ffff;
            (&[0x89, 0x07], CodeSize::Bits32)
        }
    };
    let insn = emulate::decode(bytes, mode).expect("decode");
    let env = Env::default();
    let mut m = access::EngineAccess::new(mmu, host, mem, a.cpl, a.ac);
    m.user = a.user;
    m.implicit = a.implicit;
    let out = emulate::execute(&insn, &mut regs, &env, &mut m, None).expect("emulator error");
    let last = m.last_store;
    assert!(m.mmio_write.is_none(), "page-table store went to MMIO");
    match out {
        Outcome::Done => {
            assert_eq!(
                last,
                Some(gpa),
                "the emulator stored elsewhere than the fault said"
            );
            assert_eq!(regs.rip, 0x1000 + bytes.len() as u64);
            CpuResult::Emulated(gpa)
        }
        Outcome::Exception(emulate::Exception::Pf { addr, error_code }) => {
            let la = if long { gva } else { gva & 0xffff_ffff };
            assert_eq!(addr, la, "CR2 from the emulator");
            CpuResult::Fault(error_code)
        }
        o => panic!("emulated store: {o:?}"),
    }
}

/// Runs an engine event; on `NeedMemory` (an injected allocation failure) checks that the
/// failure was the injected one and retries the same event with the same arguments.
pub(crate) fn retry_oom<T>(
    host: &mut Host,
    mut f: impl FnMut(&mut Host) -> Result<T, MmuError>,
) -> T {
    for _ in 0..100 {
        match f(host) {
            Ok(v) => return v,
            Err(MmuError::LimitReached) => panic!("LimitReached"),
            Err(MmuError::NeedMemory) => {
                assert!(!host.dry, "NeedMemory while dry");
                assert!(
                    host.fail_at.is_none(),
                    "NeedMemory without an injected failure"
                );
                host.oom_events += 1;
            }
        }
    }
    panic!("event keeps failing with NeedMemory");
}

/// A set of frames (test helper).
pub(crate) fn set(v: &[u64]) -> HashSet<u64> {
    v.iter().copied().collect()
}
