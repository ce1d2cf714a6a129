// SPDX-License-Identifier: GPL-2.0

//! Guest memory for the instruction emulator, through the guest's page tables and the
//! shadow engine: the [`EmuMemory`] the vCPU hands to [`emulate::execute`] after a
//! [`super::PfOutcome::EmulateWrite`] or an MMIO fault. Pure `core` code, so the host
//! tests drive the real emulator through exactly what the vCPU uses.
//!
//! * Linear addresses are translated with the guest's permission checks for the
//!   instruction's privilege ([`Mmu::translate`]: A/D set as the CPU sets them).
//! * An access that crosses a page is **all or nothing**: every piece is checked first
//!   (a #PF on the second page leaves the first untouched, A/D bits included), then
//!   every piece is performed.
//! * Every store into RAM is reported with [`Mmu::guest_wrote`] (one call per page).
//! * Reads of unbacked memory are [`MemFault::Mmio`]; one MMIO store of up to 8 bytes per
//!   instruction (per iteration of a string instruction) is queued in
//!   [`EngineAccess::mmio_write`] for userspace. A locked store to MMIO is a plain store.
//! * Aligned locked operations of 1, 2, 4 or 8 bytes within a page of RAM are real
//!   atomic compare-exchanges (another vCPU may write the location).
//! * Translations are kept for the life of the value, one instruction (a REP string
//!   instruction's chunk of iterations included), as the CPU's TLB keeps them: a REP store
//!   walks the guest's tables once per page, not once per element. The SDM lets an
//!   instruction use a translation cached before its own stores changed the paging
//!   structures (vol. 3A 4.10.4), so this is exact.
//! * A store that ends the shadowing of a page table (the engine saw the frame flooded
//!   with writes and stopped tracking it) makes [`EmuMemory::rep_native`] true: the guest
//!   does the rest of a REP store itself.

use core::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, AtomicU8, Ordering};

use super::mem::{GuestMemory, PageSource};
use super::walk::{self, Access};
use super::Mmu;
use crate::emulate::{self, Addr, EmuMemory, MemFault};

/// Most pieces an access can have (16 bytes cross at most one page boundary).
const MAX_PIECES: usize = 2;

/// Translations kept: the source and destination pages of a MOVS, each of which may
/// cross into a next page.
const CACHED_PAGES: usize = 4;

/// A translation kept for the instruction: linear page to guest-physical page, for reads
/// only or for writes too (a write translation serves reads: a page that may be written
/// may be read, and its accessed flag is set).
#[derive(Clone, Copy)]
struct CachedPage {
    linear_page: u64,
    gpa_page: u64,
    write: bool,
}

/// One page-sized piece of an access: linear address, offset in the buffer, length, and
/// guest-physical address once translated.
#[derive(Clone, Copy, Default)]
struct Piece {
    off: usize,
    len: usize,
    gpa: u64,
}

/// The emulator's view of guest memory (see the module docs).
pub struct EngineAccess<'a, P: PageSource + ?Sized, G: GuestMemory + ?Sized> {
    /// The engine (translations, and `guest_wrote` for stores).
    pub mmu: &'a mut Mmu,
    /// Pages for the engine (`guest_wrote` needs none; kept for its signature).
    pub src: &'a mut P,
    /// Guest RAM.
    pub mem: &'a G,
    /// Accesses are user-mode (CPL 3).
    pub user: bool,
    /// Accesses are implicit supervisor accesses (descriptor tables).
    pub implicit: bool,
    /// EFLAGS.AC.
    pub ac: bool,
    /// The MMIO store the instruction made, for userspace: (gpa, data, length).
    pub mmio_write: Option<(u64, [u8; 8], u32)>,
    /// Stores that hit shadowed page tables.
    pub pt_writes: u64,
    /// Guest-physical address of the last RAM store (tests).
    pub last_store: Option<u64>,
    /// Guest page walks done with A/D updates: one per page an instruction touches, not
    /// one per access.
    pub walks: u64,
    /// A store took a frame out of the shadow MMU's tracking (see the module docs).
    pub unshadowed: bool,
    cached: [Option<CachedPage>; CACHED_PAGES],
    /// Cache slot the next new translation replaces (round robin).
    next_slot: usize,
}

impl<'a, P: PageSource + ?Sized, G: GuestMemory + ?Sized> EngineAccess<'a, P, G> {
    /// Memory for an instruction at privilege `cpl` with EFLAGS.AC = `ac`.
    pub fn new(mmu: &'a mut Mmu, src: &'a mut P, mem: &'a G, cpl: u8, ac: bool) -> Self {
        EngineAccess {
            mmu,
            src,
            mem,
            user: cpl == 3,
            implicit: false,
            ac,
            mmio_write: None,
            pt_writes: 0,
            last_store: None,
            walks: 0,
            unshadowed: false,
            cached: [None; CACHED_PAGES],
            next_slot: 0,
        }
    }

    /// The kept translation of the page of `linear` for this kind of access.
    fn cached_gpa(&self, linear: u64, write: bool) -> Option<u64> {
        let page = linear >> 12;
        self.cached
            .iter()
            .flatten()
            .find(|c| c.linear_page == page && (c.write || !write))
            .map(|c| (c.gpa_page << 12) | (linear & 0xfff))
    }

    fn keep(&mut self, linear: u64, gpa: u64, write: bool) {
        let page = CachedPage {
            linear_page: linear >> 12,
            gpa_page: gpa >> 12,
            write,
        };
        // A read translation of the same page is replaced in place.
        let slot = self
            .cached
            .iter()
            .position(|c| c.is_some_and(|c| c.linear_page == page.linear_page))
            .unwrap_or(self.next_slot);
        if let Some(c) = self.cached.get_mut(slot) {
            *c = Some(page);
        }
        if slot == self.next_slot {
            self.next_slot = (slot % CACHED_PAGES).saturating_add(1) % CACHED_PAGES;
        }
    }

    fn access(&self, write: bool) -> Access {
        Access {
            write,
            fetch: false,
            user: self.user,
            implicit: self.implicit,
            ac: self.ac,
        }
    }

    /// Splits `len` bytes at `linear` into pieces and translates them all, from the kept
    /// translations where there are some. When more than one page needs a walk, all are
    /// walked first without side effects (so a fault anywhere changes nothing), then with
    /// A/D updates.
    fn translate(
        &mut self,
        linear: u64,
        len: usize,
        write: bool,
    ) -> Result<([Piece; MAX_PIECES], usize), MemFault> {
        let access = self.access(write);
        let mut pieces = [Piece::default(); MAX_PIECES];
        let mut n = 0;
        let mut done = 0;
        let mut to_walk = 0usize;
        while done < len {
            let la = linear.wrapping_add(done as u64);
            // done < len and (la & 0xfff) < 4096: neither subtraction saturates, and l >= 1.
            let in_page = 4096usize.saturating_sub((la & 0xfff) as usize);
            let l = core::cmp::min(len.saturating_sub(done), in_page);
            let p = pieces.get_mut(n).ok_or(MemFault::Host)?;
            *p = Piece {
                off: done,
                len: l,
                gpa: u64::MAX,
            };
            if let Some(gpa) = self.cached_gpa(la, write) {
                p.gpa = gpa;
            } else {
                to_walk = to_walk.saturating_add(1);
            }
            // n < MAX_PIECES (the piece exists) and done + l <= len.
            n = n.saturating_add(1);
            done = done.saturating_add(l);
        }
        if to_walk > 1 {
            for p in pieces.iter().take(n) {
                let la = linear.wrapping_add(p.off as u64);
                walk::walk(&self.mmu.paging(), self.mem, la, access, false).map_err(pf)?;
            }
        }
        for i in 0..n {
            let Some(p) = pieces.get_mut(i) else {
                break;
            };
            if p.gpa != u64::MAX {
                continue;
            }
            let la = linear.wrapping_add(p.off as u64);
            p.gpa = self.mmu.translate(self.mem, la, access).map_err(pf)?;
            self.walks = self.walks.wrapping_add(1);
            let gpa = p.gpa;
            self.keep(la, gpa, write);
        }
        Ok((pieces, n))
    }

    /// A store of `len` bytes at `gpa` (within one frame) is in RAM: tells the engine.
    fn wrote(&mut self, gpa: u64, len: usize) {
        let shadowed = self.mmu.is_shadowed(gpa >> 12);
        if shadowed {
            self.pt_writes = self.pt_writes.wrapping_add(1);
        }
        self.mmu.guest_wrote(self.src, self.mem, gpa, len);
        if shadowed && !self.mmu.is_shadowed(gpa >> 12) {
            self.unshadowed = true;
        }
        self.last_store = Some(gpa);
    }

    /// Host pointer to `len` bytes of RAM at `gpa` (within one frame), if backed.
    fn ram(&self, gpa: u64, len: usize) -> Option<*mut u8> {
        let off = (gpa & 0xfff) as usize;
        // Saturates (and fails the check) only for an absurd len.
        if off.saturating_add(len) > 4096 {
            return None;
        }
        let f = self.mem.frame(gpa >> 12)?;
        // SAFETY: `f.ptr` points to the 4096 bytes of the frame (GuestMemory contract) and
        // `off < 4096`.
        Some(unsafe { f.ptr.add(off) })
    }
}

fn pf(p: walk::PageFault) -> MemFault {
    MemFault::Exception(emulate::Exception::Pf {
        addr: p.cr2,
        error_code: p.error_code,
    })
}

/// Copies bytes out of guest RAM with atomic byte loads (other vCPUs may write it).
///
/// # Safety
///
/// `src` points to `dst.len()` bytes of a guest frame (valid for atomic access).
unsafe fn load_bytes(src: *mut u8, dst: &mut [u8]) {
    for (i, d) in dst.iter_mut().enumerate() {
        // SAFETY: `src + i` is inside the range the caller vouches for.
        *d = unsafe { AtomicU8::from_ptr(src.add(i)) }.load(Ordering::Relaxed);
    }
}

/// Copies bytes into guest RAM with atomic byte stores.
///
/// # Safety
///
/// As for [`load_bytes`].
unsafe fn store_bytes(dst: *mut u8, src: &[u8]) {
    for (i, s) in src.iter().enumerate() {
        // SAFETY: `dst + i` is inside the range the caller vouches for.
        unsafe { AtomicU8::from_ptr(dst.add(i)) }.store(*s, Ordering::Relaxed);
    }
}

fn le(b: &[u8]) -> u64 {
    b.iter().rev().fold(0u64, |v, &x| (v << 8) | u64::from(x))
}

impl<P: PageSource + ?Sized, G: GuestMemory + ?Sized> EmuMemory for EngineAccess<'_, P, G> {
    fn read(&mut self, addr: &Addr, buf: &mut [u8]) -> Result<(), MemFault> {
        let (pieces, n) = self.translate(addr.linear, buf.len(), false)?;
        for p in pieces.iter().take(n) {
            // p.off + p.len <= buf.len() (translate's pieces); `get_mut` checks it anyway.
            let dst = buf
                .get_mut(p.off..p.off.saturating_add(p.len))
                .ok_or(MemFault::Host)?;
            let Some(src) = self.ram(p.gpa, p.len) else {
                return Err(MemFault::Mmio);
            };
            // SAFETY: `ram` returned a pointer to `p.len` bytes of one guest frame.
            unsafe { load_bytes(src, dst) };
        }
        Ok(())
    }

    fn write(&mut self, addr: &Addr, data: &[u8]) -> Result<(), MemFault> {
        let (pieces, n) = self.translate(addr.linear, data.len(), true)?;
        // All or nothing: find the MMIO part (at most 8 bytes, one per instruction) before
        // storing anything. Two MMIO pieces make one store when the second continues the
        // first in guest-physical space (a device window across a page boundary).
        let mut mmio: Option<Piece> = None;
        for p in pieces.iter().take(n) {
            if self.ram(p.gpa, p.len).is_none() {
                mmio = match mmio {
                    None => Some(*p),
                    Some(m) if m.gpa.wrapping_add(m.len as u64) == p.gpa => Some(Piece {
                        off: m.off,
                        len: m.len.saturating_add(p.len),
                        gpa: m.gpa,
                    }),
                    Some(_) => return Err(MemFault::Host),
                };
            }
        }
        if mmio.is_some_and(|m| m.len > 8) || (mmio.is_some() && self.mmio_write.is_some()) {
            return Err(MemFault::Host);
        }
        for p in pieces.iter().take(n) {
            let src = data
                .get(p.off..p.off.saturating_add(p.len))
                .ok_or(MemFault::Host)?;
            if let Some(dst) = self.ram(p.gpa, p.len) {
                // SAFETY: `ram` returned a pointer to `p.len` bytes of one guest frame.
                unsafe { store_bytes(dst, src) };
                self.wrote(p.gpa, p.len);
            }
        }
        if let Some(p) = mmio {
            let src = data
                .get(p.off..p.off.saturating_add(p.len))
                .ok_or(MemFault::Host)?;
            let mut bytes = [0u8; 8];
            let dst = bytes.get_mut(..p.len).ok_or(MemFault::Host)?;
            // Same length (both p.len); a zip has no length-mismatch panic path.
            for (d, s) in dst.iter_mut().zip(src) {
                *d = *s;
            }
            self.mmio_write = Some((p.gpa, bytes, p.len as u32));
        }
        Ok(())
    }

    fn cmpxchg(&mut self, addr: &Addr, old: &[u8], new: &[u8]) -> Result<bool, MemFault> {
        let len = old.len();
        // `len >= 1` where the mask is computed (matches! short-circuits).
        let aligned = matches!(len, 1 | 2 | 4 | 8)
            && addr.linear & (len as u64).saturating_sub(1) == 0
            && new.len() == len;
        if aligned {
            let (pieces, n) = self.translate(addr.linear, len, true)?;
            if let (1, Some(p)) = (n, pieces.first()) {
                if let Some(ptr) = self.ram(p.gpa, len) {
                    let (o, w) = (le(old), le(new));
                    // SAFETY: `ptr` points to `len` bytes of a guest frame, aligned to
                    // `len` (the linear address is, and frames are 4 KiB aligned).
                    let ok = unsafe {
                        match len {
                            1 => AtomicU8::from_ptr(ptr)
                                .compare_exchange(
                                    o as u8,
                                    w as u8,
                                    Ordering::SeqCst,
                                    Ordering::SeqCst,
                                )
                                .is_ok(),
                            2 => AtomicU16::from_ptr(ptr.cast())
                                .compare_exchange(
                                    o as u16,
                                    w as u16,
                                    Ordering::SeqCst,
                                    Ordering::SeqCst,
                                )
                                .is_ok(),
                            4 => AtomicU32::from_ptr(ptr.cast())
                                .compare_exchange(
                                    o as u32,
                                    w as u32,
                                    Ordering::SeqCst,
                                    Ordering::SeqCst,
                                )
                                .is_ok(),
                            _ => AtomicU64::from_ptr(ptr.cast())
                                .compare_exchange(o, w, Ordering::SeqCst, Ordering::SeqCst)
                                .is_ok(),
                        }
                    };
                    if ok {
                        self.wrote(p.gpa, len);
                    }
                    return Ok(ok);
                }
            }
        }
        // Crossing, unaligned or MMIO: read, compare, write (the write access is checked
        // even when the comparison fails, as the CPU does).
        let mut cur = [0u8; 16];
        let cur = cur.get_mut(..len).ok_or(MemFault::Host)?;
        if let Err(MemFault::Mmio) = self.read(addr, cur) {
            // The emulator has the device's value already (an MMIO exit); the store goes
            // to the device as a plain write, as in KVM (a device has no atomics).
            self.write(addr, new)?;
            return Ok(true);
        }
        self.read(addr, cur)?;
        if cur != old {
            self.write(addr, cur)?;
            return Ok(false);
        }
        self.write(addr, new)?;
        Ok(true)
    }

    fn mmio_queued(&self) -> bool {
        self.mmio_write.is_some()
    }

    fn rep_native(&self) -> bool {
        self.unshadowed
    }
}
