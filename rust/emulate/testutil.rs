// SPDX-License-Identifier: GPL-2.0

//! Test helpers shared by the modules' unit tests: [`TestMem`] (flat RAM, an MMIO window,
//! #PF elsewhere), a small random generator, and shorthands to decode and run.

use super::execution::from_le;
use super::{
    decode, execute, Addr, CodeSize, EmuMemory, Env, Exception, Insn, MemFault, Outcome, Regs,
};
use std::vec;
use std::vec::Vec;

/// Flat RAM at `base`, an MMIO window, #PF everywhere else.
pub(super) struct TestMem {
    pub(super) base: u64,
    pub(super) data: Vec<u8>,
    pub(super) mmio_base: u64,
    pub(super) mmio_len: u64,
    pub(super) mmio_writes: Vec<(u64, Vec<u8>)>,
    /// Writes to [ro_base, ro_base+ro_len) fault with a protection #PF.
    pub(super) ro_base: u64,
    pub(super) ro_len: u64,
    /// cmpxchg calls that lose a race: another "CPU" increments the first byte.
    pub(super) races: u32,
    pub(super) cmpxchg_calls: u32,
    pub(super) writes: u32,
    /// A store to [native_base, native_base+native_len) makes `rep_native` true, as a store
    /// that unshadows a page table does.
    pub(super) native_base: u64,
    pub(super) native_len: u64,
    pub(super) native: bool,
}

pub(super) const RAM: u64 = 0x10_0000;
pub(super) const MMIO: u64 = 0xfee0_0000;

impl TestMem {
    pub(super) fn new() -> Self {
        TestMem {
            base: RAM,
            data: vec![0; 0x2000],
            mmio_base: MMIO,
            mmio_len: 0x1000,
            mmio_writes: Vec::new(),
            ro_base: 0,
            ro_len: 0,
            races: 0,
            cmpxchg_calls: 0,
            writes: 0,
            native_base: 0,
            native_len: 0,
            native: false,
        }
    }
    fn range(&self, a: u64, n: usize) -> Option<core::ops::Range<usize>> {
        let off = a.checked_sub(self.base)?;
        let end = off.checked_add(n as u64)?;
        if end > self.data.len() as u64 {
            return None;
        }
        Some(off as usize..end as usize)
    }
    fn in_mmio(&self, a: u64) -> bool {
        a >= self.mmio_base && a < self.mmio_base + self.mmio_len
    }
    pub(super) fn get(&self, a: u64, n: usize) -> u64 {
        from_le(&self.data[self.range(a, n).unwrap()])
    }
    pub(super) fn put(&mut self, a: u64, n: usize, v: u64) {
        let r = self.range(a, n).unwrap();
        self.data[r].copy_from_slice(&v.to_le_bytes()[..n]);
    }
}

impl EmuMemory for TestMem {
    fn read(&mut self, addr: &Addr, buf: &mut [u8]) -> Result<(), MemFault> {
        if self.in_mmio(addr.linear) {
            return Err(MemFault::Mmio);
        }
        let r = self
            .range(addr.linear, buf.len())
            .ok_or(MemFault::Exception(Exception::Pf {
                addr: addr.linear,
                error_code: 0,
            }))?;
        buf.copy_from_slice(&self.data[r]);
        Ok(())
    }
    fn write(&mut self, addr: &Addr, data: &[u8]) -> Result<(), MemFault> {
        if self.in_mmio(addr.linear) {
            self.mmio_writes.push((addr.linear, data.to_vec()));
            return Ok(());
        }
        if addr.linear >= self.ro_base && addr.linear < self.ro_base + self.ro_len {
            return Err(MemFault::Exception(Exception::Pf {
                addr: addr.linear,
                error_code: 3,
            }));
        }
        let r = self
            .range(addr.linear, data.len())
            .ok_or(MemFault::Exception(Exception::Pf {
                addr: addr.linear,
                error_code: 2,
            }))?;
        self.data[r].copy_from_slice(data);
        self.writes += 1;
        if addr.linear.wrapping_sub(self.native_base) < self.native_len {
            self.native = true;
        }
        Ok(())
    }
    /// The caller hands each store to "userspace" and clears the list.
    fn mmio_queued(&self) -> bool {
        !self.mmio_writes.is_empty()
    }
    fn rep_native(&self) -> bool {
        self.native
    }
    fn cmpxchg(&mut self, addr: &Addr, old: &[u8], new: &[u8]) -> Result<bool, MemFault> {
        self.cmpxchg_calls += 1;
        if self.in_mmio(addr.linear) {
            return self.write(addr, new).map(|()| true);
        }
        if addr.linear >= self.ro_base && addr.linear < self.ro_base + self.ro_len {
            return Err(MemFault::Exception(Exception::Pf {
                addr: addr.linear,
                error_code: 3,
            }));
        }
        let r = self
            .range(addr.linear, old.len())
            .ok_or(MemFault::Exception(Exception::Pf {
                addr: addr.linear,
                error_code: 2,
            }))?;
        if self.races > 0 {
            self.races -= 1;
            let s = r.start;
            self.data[s] = self.data[s].wrapping_add(1);
            return Ok(false);
        }
        if self.data[r.clone()] != *old {
            return Ok(false);
        }
        self.data[r].copy_from_slice(new);
        self.writes += 1;
        Ok(true)
    }
}

pub(super) struct Rng(pub(super) u64);
impl Rng {
    pub(super) fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Random value biased towards edge cases.
    pub(super) fn val(&mut self) -> u64 {
        const EDGES: [u64; 12] = [
            0,
            1,
            2,
            0x7f,
            0x80,
            0xff,
            0x7fff,
            0x8000,
            0xffff,
            0x7fff_ffff,
            0x8000_0000,
            0xffff_ffff,
        ];
        match self.next() % 4 {
            0 => EDGES[(self.next() % 12) as usize],
            1 => u64::MAX - EDGES[(self.next() % 12) as usize],
            2 => 0x8000_0000_0000_0000 ^ EDGES[(self.next() % 12) as usize],
            _ => self.next(),
        }
    }
}

pub(super) fn regs() -> Regs {
    Regs {
        gpr: [0; 16],
        rip: 0x40_0000,
        rflags: 0x2,
    }
}

pub(super) fn dec(mode: CodeSize, b: &[u8]) -> Insn {
    decode(b, mode).unwrap_or_else(|e| panic!("decode {b:02x?}: {e:?}"))
}

pub(super) fn run(mode: CodeSize, b: &[u8], r: &mut Regs, m: &mut TestMem) -> Outcome {
    let i = dec(mode, b);
    execute(&i, r, &Env::default(), m, None).unwrap()
}
