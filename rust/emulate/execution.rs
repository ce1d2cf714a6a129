// SPDX-License-Identifier: GPL-2.0

//! Execution: [`execute`] and [`execute_rep`] run a decoded instruction against the
//! caller's [`EmuMemory`], with the protocol of the module documentation (all or nothing,
//! two-phase MMIO reads, locked operations through `cmpxchg`, one REP iteration per step).

use super::addressing::{bit_string, operand_addr, string_addr, Addr, Env, Seg};
use super::alu::{
    add_flags, alu, flags, get_reg, gpr, logic, mask, set_flags, set_gpr, set_reg, sext, sub_flags,
    Regs,
};
use super::decoder::{AluOp, BitOp, CodeSize, Insn, Op, Operand, UnaryOp};

/// How many times a locked read-modify-write is recomputed after losing a race before
/// `execute` gives up with [`Outcome::Retry`].
pub const LOCK_RETRIES: u32 = 8;

/// An exception the caller must inject into the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exception {
    /// #UD.
    Ud,
    /// #GP with this error code.
    Gp(u32),
    /// #SS with this error code.
    Ss(u32),
    /// #PF: CR2 gets `addr`, with this error code.
    Pf {
        /// Faulting linear address (CR2).
        addr: u64,
        /// Page-fault error code.
        error_code: u32,
    },
}

/// Why an [`EmuMemory`] access did not complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemFault {
    /// The access raises this exception (usually #PF from the guest page walk).
    Exception(Exception),
    /// Reads only: the address is MMIO and the value must come from outside. `execute`
    /// returns [`Outcome::MmioRead`]. Writes must queue MMIO data themselves; returning this
    /// from `write`/`cmpxchg` gives [`EmuError::MmioWrite`].
    Mmio,
    /// The host cannot perform the access (for example out of memory). The instruction
    /// is abandoned with nothing changed and [`EmuError::Memory`] is returned.
    Host,
}

/// Guest memory as the emulator sees it: linear addresses, already checked against
/// canonical form. The implementation walks the guest page tables, checks permissions for
/// the guest's current privilege level, sets accessed/dirty bits, and splits accesses that
/// cross a page. Buffers are 1 to 16 bytes long.
pub trait EmuMemory {
    /// Reads `buf.len()` bytes at `addr`.
    fn read(&mut self, addr: &Addr, buf: &mut [u8]) -> Result<(), MemFault>;

    /// Writes `data` at `addr`.
    fn write(&mut self, addr: &Addr, data: &[u8]) -> Result<(), MemFault>;

    /// Atomically: if memory at `addr` equals `old`, store `new` and return `true`.
    /// Otherwise store nothing and return `false`. `old` and `new` have the same length.
    /// Like the CPU, it must check write access even if the comparison fails. The default
    /// does a read and a write, which is fine when no other CPU can write the location.
    /// For MMIO it should just write `new` and return `true`.
    fn cmpxchg(&mut self, addr: &Addr, old: &[u8], new: &[u8]) -> Result<bool, MemFault> {
        let mut cur = [0u8; 16];
        let cur = cur.get_mut(..old.len()).ok_or(MemFault::Host)?;
        self.read(addr, cur)?;
        if cur != old {
            // Still a write access: check it by storing back what is there.
            self.write(addr, cur)?;
            return Ok(false);
        }
        self.write(addr, new)?;
        Ok(true)
    }

    /// Whether a store of this instruction went to MMIO and waits for the caller (who
    /// hands it to userspace). [`execute_rep`] stops after such an iteration: one MMIO
    /// access per exit, as KVM does.
    fn mmio_queued(&self) -> bool {
        false
    }

    /// Whether the guest can now run the rest of a REP string instruction itself, faster
    /// than emulating it: the last store went to a page table the shadow MMU stopped
    /// tracking (the guest reuses the frame as data). [`execute_rep`] stops after an
    /// iteration that makes this true, with RCX/RSI/RDI committed and RIP at the
    /// instruction, so the guest re-executes the remaining iterations natively.
    fn rep_native(&self) -> bool {
        false
    }
}

/// The MMIO value for the read that an earlier `execute` reported as [`Outcome::MmioRead`].
///
/// # Invariants
/// None enforced: `execute` checks `linear` and `len` against the read it is about to
/// do, and returns [`EmuError::MmioMismatch`] if they differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioData {
    /// Linear address of the read (from [`MmioRequest::addr`]).
    pub linear: u64,
    /// Number of valid bytes in `data` (from [`MmioRequest::size`]).
    pub len: u8,
    /// The value, little-endian.
    pub data: [u8; 16],
}

/// An MMIO read the caller must satisfy before executing the instruction again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioRequest {
    /// Where to read.
    pub addr: Addr,
    /// How many bytes (1, 2, 4, 8 or 16).
    pub size: u8,
}

/// What [`execute`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The instruction completed: memory, registers, flags and RIP are updated.
    Done,
    /// One REP iteration completed and more remain. RIP still points at the instruction.
    RepContinue,
    /// Nothing changed. Read `size` bytes of MMIO at `addr`, then execute again with them.
    MmioRead(MmioRequest),
    /// Nothing changed (apart from REP iterations already done). Inject this exception.
    Exception(Exception),
    /// Nothing changed: a locked operation kept losing races. Re-enter the guest.
    Retry,
}

/// Errors from [`execute`]. Nothing in guest state has changed (except REP iterations
/// already done). The hypervisor should report an internal error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EmuError {
    /// `EmuMemory` failed with [`MemFault::Host`].
    Memory,
    /// `EmuMemory::write` or `cmpxchg` returned [`MemFault::Mmio`], which only reads may do.
    MmioWrite,
    /// The [`MmioData`] does not match the read the instruction performs.
    MmioMismatch,
}

fn to_le(v: u64) -> [u8; 8] {
    v.to_le_bytes()
}

pub(super) fn from_le(b: &[u8]) -> u64 {
    let mut v = [0u8; 8];
    for (d, s) in v.iter_mut().zip(b) {
        *d = *s;
    }
    u64::from_le_bytes(v)
}

/// Why a step stopped without committing.
enum Stop {
    Out(Outcome),
    Err(EmuError),
}

impl From<Exception> for Stop {
    fn from(e: Exception) -> Self {
        Stop::Out(Outcome::Exception(e))
    }
}

fn mem_fault(f: MemFault, addr: &Addr, size: usize, reading: bool) -> Stop {
    match f {
        MemFault::Exception(e) => Stop::Out(Outcome::Exception(e)),
        MemFault::Mmio if reading => Stop::Out(Outcome::MmioRead(MmioRequest {
            addr: *addr,
            // size <= 16
            size: size as u8,
        })),
        MemFault::Mmio => Stop::Err(EmuError::MmioWrite),
        MemFault::Host => Stop::Err(EmuError::Memory),
    }
}

/// Guest memory plus the MMIO data for this step's read, if any. Every access passes the
/// segment checks of `env` first.
struct Bus<'a, M: EmuMemory + ?Sized> {
    mem: &'a mut M,
    mmio: Option<&'a MmioData>,
    env: &'a Env,
}

impl<M: EmuMemory + ?Sized> Bus<'_, M> {
    fn check(&self, addr: &Addr, size: usize, write: bool) -> Result<(), Stop> {
        let c = self
            .env
            .seg_check
            .get(addr.seg as usize)
            .copied()
            .unwrap_or_default();
        c.check(addr, size, write).map_err(Stop::from)
    }

    fn read(&mut self, addr: &Addr, buf: &mut [u8]) -> Result<(), Stop> {
        self.check(addr, buf.len(), false)?;
        if let Some(d) = self.mmio {
            if d.linear != addr.linear || usize::from(d.len) != buf.len() {
                return Err(Stop::Err(EmuError::MmioMismatch));
            }
            let src = d
                .data
                .get(..buf.len())
                .ok_or(Stop::Err(EmuError::MmioMismatch))?;
            // Same length; a zip has no length-mismatch panic path.
            for (b, s) in buf.iter_mut().zip(src) {
                *b = *s;
            }
            return Ok(());
        }
        self.mem
            .read(addr, buf)
            .map_err(|f| mem_fault(f, addr, buf.len(), true))
    }

    fn read_val(&mut self, addr: &Addr, size: u8) -> Result<u64, Stop> {
        let mut b = [0u8; 8];
        let buf = b
            .get_mut(..usize::from(size))
            .ok_or(Stop::Err(EmuError::Memory))?;
        self.read(addr, buf)?;
        Ok(from_le(buf))
    }

    fn write(&mut self, addr: &Addr, data: &[u8]) -> Result<(), Stop> {
        self.check(addr, data.len(), true)?;
        self.mem
            .write(addr, data)
            .map_err(|f| mem_fault(f, addr, data.len(), false))
    }

    fn cmpxchg(&mut self, addr: &Addr, old: &[u8], new: &[u8]) -> Result<bool, Stop> {
        self.check(addr, old.len(), true)?;
        self.mem
            .cmpxchg(addr, old, new)
            .map_err(|f| mem_fault(f, addr, old.len(), false))
    }

    /// Stores `new` to a memory operand that held `old`: atomically if `atomic`.
    /// Returns false if an atomic store lost a race.
    fn store(
        &mut self,
        addr: &Addr,
        size: u8,
        old: u64,
        new: u64,
        atomic: bool,
    ) -> Result<bool, Stop> {
        let n = usize::from(size.min(8));
        let (o, w) = (to_le(old), to_le(new));
        let (o, w) = (o.get(..n).unwrap_or(&[]), w.get(..n).unwrap_or(&[]));
        if atomic {
            self.cmpxchg(addr, o, w)
        } else {
            self.write(addr, w).map(|()| true)
        }
    }
}

/// Finishes an instruction: RIP past it (wrapping to 32 bits outside 64-bit mode), RF clear.
fn retire(insn: &Insn, regs: &mut Regs) {
    let next = regs.rip.wrapping_add(u64::from(insn.len));
    regs.rip = if insn.mode == CodeSize::Bits64 {
        next
    } else {
        next & 0xffff_ffff
    };
    regs.rflags &= !flags::RF;
}

/// Executes `insn` (decoded at `regs.rip`) against guest memory. See the module
/// documentation for the protocol. `mmio` carries the value of an MMIO read that a
/// previous call reported as [`Outcome::MmioRead`]; pass `None` otherwise.
///
/// REP string instructions do one iteration per call.
pub fn execute<M: EmuMemory + ?Sized>(
    insn: &Insn,
    regs: &mut Regs,
    env: &Env,
    mem: &mut M,
    mmio: Option<&MmioData>,
) -> Result<Outcome, EmuError> {
    let mut bus = Bus { mem, mmio, env };
    let mut attempts = 0u32;
    loop {
        let mut r = *regs;
        let res = match insn.op {
            Op::Stos | Op::Movs => string_step(insn, &mut r, env, &mut bus),
            _ => step(insn, &mut r, env, &mut bus).map(|done| {
                if done {
                    retire(insn, &mut r);
                    Outcome::Done
                } else {
                    Outcome::Retry
                }
            }),
        };
        match res {
            Ok(Outcome::Retry) => {
                attempts = attempts.saturating_add(1);
                if attempts >= LOCK_RETRIES {
                    return Ok(Outcome::Retry);
                }
            }
            Ok(o) => {
                *regs = r;
                return Ok(o);
            }
            Err(Stop::Out(o)) => return Ok(o),
            Err(Stop::Err(e)) => return Err(e),
        }
    }
}

/// Like [`execute`], but runs up to `max_iterations` (at least one) iterations of a REP
/// string instruction. Iterations commit one by one into `regs`, so whatever the outcome
/// (an exception, an MMIO read) the ones before it stay done, as on hardware: the caller
/// keeps `regs` in every case. `mmio` is used for the first iteration only. An iteration
/// that used MMIO (the `mmio` data, or a store [`EmuMemory::mmio_queued`]) is the last:
/// one MMIO access per exit, so a device sees each access once and in order. So is an
/// iteration after which [`EmuMemory::rep_native`] holds: the guest does the rest.
pub fn execute_rep<M: EmuMemory + ?Sized>(
    insn: &Insn,
    regs: &mut Regs,
    env: &Env,
    mem: &mut M,
    mmio: Option<&MmioData>,
    max_iterations: u32,
) -> Result<Outcome, EmuError> {
    let mut out = execute(insn, regs, env, mem, mmio)?;
    if mmio.is_some() {
        return Ok(out);
    }
    let mut n = 1u32;
    while out == Outcome::RepContinue
        && n < max_iterations
        && !mem.mmio_queued()
        && !mem.rep_native()
    {
        out = execute(insn, regs, env, mem, None)?;
        n = n.saturating_add(1);
    }
    Ok(out)
}

/// One non-string instruction on the working copy `r`. Ok(false): lost a race.
fn step<M: EmuMemory + ?Sized>(
    insn: &Insn,
    r: &mut Regs,
    env: &Env,
    bus: &mut Bus<'_, M>,
) -> Result<bool, Stop> {
    let size = insn.op_size;
    let addr = if insn.dst == Operand::Mem || insn.src == Operand::Mem {
        Some(operand_addr(insn, r, env)?)
    } else {
        None
    };
    let atomic = insn.lock && insn.dst == Operand::Mem;
    // A destination that is read first is checked for the write before the read, so an
    // access the segment forbids reaches no device.
    if let (true, Some(a)) = (
        insn.dst == Operand::Mem && insn.writes_memory(),
        addr.as_ref(),
    ) {
        let n = match insn.op {
            Op::Cmpxchg8b => 8,
            Op::Cmpxchg16b => 16,
            _ => usize::from(size),
        };
        bus.check(a, n, true)?;
    }

    // Operand access helpers over the one memory operand.
    macro_rules! load {
        ($o:expr, $size:expr) => {
            match ($o, addr.as_ref()) {
                (Operand::Mem, Some(a)) => bus.read_val(a, $size)?,
                (o, _) => get_reg(r, o, $size),
            }
        };
    }
    // Stores to the destination; evaluates to false if an atomic store lost a race.
    macro_rules! store_dst {
        ($old:expr, $new:expr, $atomic:expr) => {
            match (insn.dst, addr.as_ref()) {
                (Operand::Mem, Some(a)) => bus.store(a, size, $old, $new, $atomic)?,
                (o, _) => {
                    set_reg(r, o, size, $new);
                    true
                }
            }
        };
    }

    match insn.op {
        Op::Mov | Op::Movnti => {
            let v = load!(insn.src, size);
            if let (Operand::Mem, Some(a)) = (insn.dst, addr.as_ref()) {
                let b = to_le(v);
                bus.write(a, b.get(..usize::from(size)).unwrap_or(&[]))?;
            } else {
                set_reg(r, insn.dst, size, v);
            }
            Ok(true)
        }
        Op::Movzx | Op::Movsx => {
            let v = load!(insn.src, insn.src_size);
            let v = if insn.op == Op::Movsx {
                sext(v, insn.src_size)
            } else {
                v
            };
            set_reg(r, insn.dst, size, v);
            Ok(true)
        }
        Op::Alu(op) => {
            let a = load!(insn.dst, size);
            let b = load!(insn.src, size);
            let (res, f) = alu(op, a, b, r.rflags & flags::CF != 0, size);
            if op != AluOp::Cmp && !store_dst!(a, res, atomic) {
                return Ok(false);
            }
            set_flags(r, flags::ARITH, f);
            Ok(true)
        }
        Op::Test => {
            let a = load!(insn.dst, size);
            let b = load!(insn.src, size);
            set_flags(r, flags::ARITH, logic(a & b, size).1);
            Ok(true)
        }
        Op::Unary(op) => {
            let a = load!(insn.dst, size);
            let (res, affected, f) = match op {
                UnaryOp::Inc => {
                    let (v, f) = add_flags(a, 1, false, size);
                    (v, flags::ARITH & !flags::CF, f)
                }
                UnaryOp::Dec => {
                    let (v, f) = sub_flags(a, 1, false, size);
                    (v, flags::ARITH & !flags::CF, f)
                }
                UnaryOp::Not => (!a & mask(size), 0, 0),
                UnaryOp::Neg => {
                    let (v, f) = sub_flags(0, a, false, size);
                    (v, flags::ARITH, f)
                }
            };
            if !store_dst!(a, res, atomic) {
                return Ok(false);
            }
            set_flags(r, affected, f);
            Ok(true)
        }
        Op::Xchg => {
            let a = load!(insn.dst, size);
            let b = load!(insn.src, size);
            // XCHG with memory is always locked.
            if !store_dst!(a, b, insn.dst == Operand::Mem) {
                return Ok(false);
            }
            if insn.dst == Operand::Mem {
                set_reg(r, insn.src, size, a);
            } else {
                // Register form: dst already holds b; src gets a.
                set_reg(r, insn.src, size, a);
                set_reg(r, insn.dst, size, b);
            }
            Ok(true)
        }
        Op::Xadd => {
            let a = load!(insn.dst, size);
            let b = load!(insn.src, size);
            let (sum, f) = add_flags(a, b, false, size);
            // SRC <- DEST, then DEST <- SUM (DEST wins if they are the same register).
            set_reg(r, insn.src, size, a);
            if !store_dst!(a, sum, atomic) {
                return Ok(false);
            }
            set_flags(r, flags::ARITH, f);
            Ok(true)
        }
        Op::Cmpxchg => {
            let acc = r.gpr[gpr::RAX] & mask(size);
            let d = load!(insn.dst, size);
            let s = load!(insn.src, size);
            let (_, f) = sub_flags(acc, d, false, size);
            // Always through cmpxchg for memory, so a failed compare cannot overwrite a
            // concurrent update when it writes the old value back.
            let mem_dst = insn.dst == Operand::Mem;
            if acc == d {
                if !store_dst!(d, s, mem_dst) {
                    return Ok(false);
                }
            } else {
                if !store_dst!(d, d, mem_dst) {
                    return Ok(false);
                }
                set_gpr(r, gpr::RAX, size, d);
            }
            set_flags(r, flags::ARITH, f);
            Ok(true)
        }
        Op::Cmpxchg8b | Op::Cmpxchg16b => {
            let Some(a) = addr else {
                return Err(Exception::Ud.into());
            };
            let half: u8 = if insn.op == Op::Cmpxchg16b { 8 } else { 4 };
            if half == 8 && a.linear & 15 != 0 {
                return Err(Exception::Gp(0).into());
            }
            let n = usize::from(half) * 2;
            let mut cur = [0u8; 16];
            let cur = cur.get_mut(..n).ok_or(Stop::Err(EmuError::Memory))?;
            bus.read(&a, cur)?;
            let m = mask(half);
            let h = u32::from(half) * 8;
            let expect = (u128::from(r.gpr[gpr::RDX] & m) << h) | u128::from(r.gpr[gpr::RAX] & m);
            let new = (u128::from(r.gpr[gpr::RCX] & m) << h) | u128::from(r.gpr[gpr::RBX] & m);
            let mut wide = [0u8; 16];
            for (d, s) in wide.iter_mut().zip(cur.iter()) {
                *d = *s;
            }
            let old = u128::from_le_bytes(wide);
            let equal = old == expect;
            let new_bytes = new.to_le_bytes();
            let new_bytes = new_bytes.get(..n).unwrap_or(&[]);
            if !bus.cmpxchg(&a, cur, if equal { new_bytes } else { cur })? {
                return Ok(false);
            }
            if equal {
                set_flags(r, flags::ZF, flags::ZF);
            } else {
                set_gpr(r, gpr::RAX, half, old as u64);
                set_gpr(r, gpr::RDX, half, (old >> h) as u64);
                set_flags(r, flags::ZF, 0);
            }
            Ok(true)
        }
        Op::Bit(op) => {
            let bit = bit_string(insn, r).1;
            let a = load!(insn.dst, size);
            let m = 1u64.checked_shl(bit).unwrap_or(0);
            let new = match op {
                BitOp::Bt => a,
                BitOp::Bts => a | m,
                BitOp::Btr => a & !m,
                BitOp::Btc => a ^ m,
            };
            if op != BitOp::Bt && !store_dst!(a, new, atomic) {
                return Ok(false);
            }
            set_flags(r, flags::CF, if a & m != 0 { flags::CF } else { 0 });
            Ok(true)
        }
        Op::Stos | Op::Movs => Ok(true),
    }
}

/// One iteration of STOS/MOVS (or none, for REP with a zero count) on the working copy.
fn string_step<M: EmuMemory + ?Sized>(
    insn: &Insn,
    r: &mut Regs,
    env: &Env,
    bus: &mut Bus<'_, M>,
) -> Result<Outcome, Stop> {
    let asz = insn.addr_size;
    let size = insn.op_size;
    let count = r.gpr[gpr::RCX] & mask(asz);
    if insn.rep && count == 0 {
        retire(insn, r);
        return Ok(Outcome::Done);
    }
    let dst = string_addr(insn, r, env, Seg::Es, gpr::RDI)?;
    let n = usize::from(size.min(8));
    let value = if insn.op == Op::Movs {
        let src = string_addr(insn, r, env, insn.mem.seg, gpr::RSI)?;
        bus.read_val(&src, size)?
    } else {
        r.gpr[gpr::RAX] & mask(size)
    };
    let b = to_le(value);
    bus.write(&dst, b.get(..n).unwrap_or(&[]))?;
    let delta = if r.rflags & flags::DF != 0 {
        0u64.wrapping_sub(u64::from(size))
    } else {
        u64::from(size)
    };
    let rdi = r.gpr[gpr::RDI].wrapping_add(delta);
    set_gpr(r, gpr::RDI, asz, rdi);
    if insn.op == Op::Movs {
        let rsi = r.gpr[gpr::RSI].wrapping_add(delta);
        set_gpr(r, gpr::RSI, asz, rsi);
    }
    if insn.rep {
        let left = count.wrapping_sub(1);
        set_gpr(r, gpr::RCX, asz, left);
        if left != 0 {
            return Ok(Outcome::RepContinue);
        }
    }
    retire(insn, r);
    Ok(Outcome::Done)
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::*;
    use super::*;
    use std::vec;

    /// Accepts any address: reads give pseudo-random bytes or MMIO or faults, writes and
    /// cmpxchg succeed or fail at random. For the no-panic fuzzer.
    struct ChaosMem {
        rng: Rng,
    }

    impl EmuMemory for ChaosMem {
        fn read(&mut self, _addr: &Addr, buf: &mut [u8]) -> Result<(), MemFault> {
            match self.rng.next() % 8 {
                0 => Err(MemFault::Mmio),
                1 => Err(MemFault::Exception(Exception::Pf {
                    addr: 0,
                    error_code: 0,
                })),
                2 => Err(MemFault::Host),
                _ => {
                    for b in buf.iter_mut() {
                        *b = self.rng.next() as u8;
                    }
                    Ok(())
                }
            }
        }
        fn write(&mut self, _addr: &Addr, _data: &[u8]) -> Result<(), MemFault> {
            match self.rng.next() % 8 {
                0 => Err(MemFault::Mmio),
                1 => Err(MemFault::Exception(Exception::Pf {
                    addr: 0,
                    error_code: 2,
                })),
                _ => Ok(()),
            }
        }
        fn cmpxchg(&mut self, _addr: &Addr, _old: &[u8], _new: &[u8]) -> Result<bool, MemFault> {
            match self.rng.next() % 4 {
                0 => Ok(false),
                1 => Err(MemFault::Exception(Exception::Pf {
                    addr: 0,
                    error_code: 2,
                })),
                _ => Ok(true),
            }
        }
    }

    const MODES: [CodeSize; 3] = [CodeSize::Bits16, CodeSize::Bits32, CodeSize::Bits64];

    #[test]
    fn moves_and_extensions() {
        let mut m = TestMem::new();
        m.put(RAM, 8, 0x8899_aabb_ccdd_eeff);
        let mut r = regs();
        r.gpr[gpr::RSI] = RAM;
        r.gpr[gpr::RAX] = u64::MAX;
        // movzx eax, byte [rsi]: zero-extends to 64.
        run(CodeSize::Bits64, &[0x0f, 0xb6, 0x06], &mut r, &mut m);
        assert_eq!(r.gpr[gpr::RAX], 0xff);
        // movsx rax, word [rsi]
        run(CodeSize::Bits64, &[0x48, 0x0f, 0xbf, 0x06], &mut r, &mut m);
        assert_eq!(r.gpr[gpr::RAX], 0xffff_ffff_ffff_eeff);
        // movsx ax, byte [rsi]: only AX changes.
        r.gpr[gpr::RAX] = 0x1111_2222_3333_4444;
        run(CodeSize::Bits64, &[0x66, 0x0f, 0xbe, 0x06], &mut r, &mut m);
        assert_eq!(r.gpr[gpr::RAX], 0x1111_2222_3333_ffff);
        // movsxd rcx, dword [rsi+4]: sign-extends; without REX.W a 32-bit move (zero-extends).
        run(CodeSize::Bits64, &[0x48, 0x63, 0x4e, 0x04], &mut r, &mut m);
        assert_eq!(r.gpr[gpr::RCX], 0xffff_ffff_8899_aabb);
        r.gpr[gpr::RCX] = u64::MAX;
        run(CodeSize::Bits64, &[0x63, 0x4e, 0x04], &mut r, &mut m);
        assert_eq!(r.gpr[gpr::RCX], 0x8899_aabb);
        // mov ah, [rsi] / mov bh -> mem / mov r9b, [rsi]
        run(CodeSize::Bits64, &[0x8a, 0x26], &mut r, &mut m);
        assert_eq!(r.gpr[gpr::RAX], 0x1111_2222_3333_ffff);
        r.gpr[gpr::RAX] = 0;
        run(CodeSize::Bits64, &[0x8a, 0x26], &mut r, &mut m);
        assert_eq!(r.gpr[gpr::RAX], 0xff00);
        r.gpr[gpr::RBX] = 0x4200;
        run(CodeSize::Bits64, &[0x88, 0x7e, 0x01], &mut r, &mut m); // mov [rsi+1], bh
        assert_eq!(m.get(RAM, 2), 0x42ff);
        r.gpr[9] = u64::MAX;
        run(CodeSize::Bits64, &[0x44, 0x8a, 0x0e], &mut r, &mut m); // mov r9b, [rsi]
        assert_eq!(r.gpr[9], 0xffff_ffff_ffff_ffff);
        // mov qword [rsi], imm32 sign-extended
        run(
            CodeSize::Bits64,
            &[0x48, 0xc7, 0x06, 0xfe, 0xff, 0xff, 0xff],
            &mut r,
            &mut m,
        );
        assert_eq!(m.get(RAM, 8), (-2i64) as u64);
        // moffs: mov eax, [RAM] (32-bit mode).
        let mut r32 = regs();
        r32.rip = 0x1000;
        let b = [0xa1, 0, 0, 0x10, 0];
        run(CodeSize::Bits32, &b, &mut r32, &mut m);
        assert_eq!(r32.gpr[gpr::RAX], 0xffff_fffe);
        // movnti [rsi+8], rcx
        r.gpr[gpr::RCX] = 0x0123_4567_89ab_cdef;
        run(
            CodeSize::Bits64,
            &[0x48, 0x0f, 0xc3, 0x4e, 0x08],
            &mut r,
            &mut m,
        );
        assert_eq!(m.get(RAM + 8, 8), 0x0123_4567_89ab_cdef);
        // xchg [rsi], ecx: memory gets ecx, rcx gets the old dword (zero-extended).
        m.put(RAM, 8, 0x5555_5555_7777_7777);
        run(CodeSize::Bits64, &[0x87, 0x0e], &mut r, &mut m);
        assert_eq!(
            (m.get(RAM, 8), r.gpr[gpr::RCX]),
            (0x5555_5555_89ab_cdef, 0x7777_7777)
        );
        assert_eq!(m.cmpxchg_calls, 1, "xchg with memory is atomic");
        // RF is cleared on completion; other flags untouched by MOV.
        r.rflags = 0x2 | flags::RF | flags::CF | flags::DF;
        run(CodeSize::Bits64, &[0x89, 0x0e], &mut r, &mut m);
        assert_eq!(r.rflags, 0x2 | flags::CF | flags::DF);
    }

    // -----------------------------------------------------------------------------------
    // String instructions
    // -----------------------------------------------------------------------------------

    /// A store after which the guest can go on natively (a page table the shadow stopped
    /// tracking) ends the emulated chunk right after that iteration, with RCX/RDI/RSI as
    /// the SDM leaves them between iterations and RIP at the instruction; in every
    /// direction and address size, wrapping included.
    #[test]
    fn rep_stops_when_the_rest_can_run_natively() {
        let env = Env::default();
        // rep stosd, 64-bit, DF=0: the 4th store (at RAM+12) unshadows.
        let mut m = TestMem::new();
        m.native_base = RAM + 12;
        m.native_len = 4;
        let i = dec(CodeSize::Bits64, &[0xf3, 0xab]);
        let mut r = regs();
        r.gpr[gpr::RDI] = RAM;
        r.gpr[gpr::RCX] = 10;
        r.gpr[gpr::RAX] = 0xdead_beef;
        let out = execute_rep(&i, &mut r, &env, &mut m, None, 1024);
        assert_eq!(out, Ok(Outcome::RepContinue));
        assert_eq!(
            (r.rip, r.gpr[gpr::RCX], r.gpr[gpr::RDI], m.writes),
            (0x40_0000, 6, RAM + 16, 4)
        );
        assert_eq!((m.get(RAM + 12, 4), m.get(RAM + 16, 4)), (0xdead_beef, 0));
        // The first iteration alone can end it, and the last one completes the instruction.
        let mut m = TestMem::new();
        m.native_base = RAM;
        m.native_len = 0x2000;
        r.gpr[gpr::RDI] = RAM;
        r.gpr[gpr::RCX] = 2;
        let out = execute_rep(&i, &mut r, &env, &mut m, None, 1024);
        assert_eq!(
            (out, r.gpr[gpr::RCX], r.rip),
            (Ok(Outcome::RepContinue), 1, 0x40_0000)
        );
        let out = execute_rep(&i, &mut r, &env, &mut m, None, 1024);
        assert_eq!(
            (out, r.gpr[gpr::RCX], r.rip),
            (Ok(Outcome::Done), 0, 0x40_0002)
        );

        // rep movsq, DF=1: RSI and RDI go down together.
        let mut m = TestMem::new();
        for k in 0..8u64 {
            m.put(RAM + 0x1000 + 8 * k, 8, 0x1000 + k);
        }
        m.native_base = RAM + 0x28;
        m.native_len = 8;
        let i = dec(CodeSize::Bits64, &[0xf3, 0x48, 0xa5]);
        let mut r = regs();
        r.rflags |= flags::DF;
        r.gpr[gpr::RSI] = RAM + 0x1038;
        r.gpr[gpr::RDI] = RAM + 0x38;
        r.gpr[gpr::RCX] = 8;
        let out = execute_rep(&i, &mut r, &env, &mut m, None, 1024);
        assert_eq!(out, Ok(Outcome::RepContinue));
        assert_eq!(
            (r.gpr[gpr::RCX], r.gpr[gpr::RSI], r.gpr[gpr::RDI]),
            (5, RAM + 0x1020, RAM + 0x20)
        );
        assert_eq!((m.get(RAM + 0x28, 8), m.get(RAM + 0x20, 8)), (0x1005, 0));

        // 16-bit address size, DF=1: DI wraps from 0 to 0xfffe, RDI's upper bits and
        // RCX's upper half stay; ES base added.
        let env16 = Env {
            seg_base: [RAM, 0, 0, 0, 0, 0],
            ..Env::default()
        };
        let mut m = TestMem::new();
        m.data = vec![0; 0x1_0000];
        m.native_base = RAM + 0xfffe;
        m.native_len = 2;
        let i = dec(CodeSize::Bits16, &[0xf3, 0xab]);
        let mut r = regs();
        r.rip = 0x100;
        r.rflags |= flags::DF;
        r.gpr[gpr::RDI] = 0x5555_0002;
        r.gpr[gpr::RCX] = 0x7777_0005;
        r.gpr[gpr::RAX] = 0x1234;
        let out = execute_rep(&i, &mut r, &env16, &mut m, None, 1024);
        assert_eq!(out, Ok(Outcome::RepContinue));
        assert_eq!(
            (r.rip, r.gpr[gpr::RCX], r.gpr[gpr::RDI]),
            (0x100, 0x7777_0002, 0x5555_fffc)
        );
        assert_eq!(
            (m.get(RAM + 2, 2), m.get(RAM, 2), m.get(RAM + 0xfffe, 2)),
            (0x1234, 0x1234, 0x1234)
        );

        // 32-bit address size in 64-bit mode (67h): EDI wraps at 4 GiB, RDI zero-extended.
        let mut m = TestMem::new();
        m.base = 0xffff_f000;
        m.native_base = 0xffff_fffc;
        m.native_len = 4;
        let i = dec(CodeSize::Bits64, &[0x67, 0xf3, 0xab]);
        let mut r = regs();
        r.gpr[gpr::RDI] = 0x1_ffff_fff8;
        r.gpr[gpr::RCX] = 0x1_0000_0004;
        r.gpr[gpr::RAX] = 0x4242_4242;
        let out = execute_rep(&i, &mut r, &env, &mut m, None, 1024);
        assert_eq!(out, Ok(Outcome::RepContinue));
        assert_eq!((r.gpr[gpr::RCX], r.gpr[gpr::RDI]), (2, 0));
        assert_eq!(m.get(0xffff_fffc, 4), 0x4242_4242);
    }

    #[test]
    fn rep_stos_stepping() {
        let env = Env::default();
        let mut m = TestMem::new();
        let mut r = regs();
        // rep stosq with RCX = 0: nothing written, RIP advanced.
        let i = dec(CodeSize::Bits64, &[0xf3, 0x48, 0xab]);
        r.gpr[gpr::RDI] = RAM;
        r.gpr[gpr::RAX] = 0x1111_2222_3333_4444;
        r.rflags = 0x2 | flags::RF;
        assert_eq!(execute(&i, &mut r, &env, &mut m, None), Ok(Outcome::Done));
        assert_eq!((r.rip, r.gpr[gpr::RDI], m.writes), (0x40_0003, RAM, 0));
        // RCX = 0 counts with the address size: 67 rep stosq with ecx = 0, rcx != 0.
        let i67 = dec(CodeSize::Bits64, &[0x67, 0xf3, 0x48, 0xab]);
        r.rip = 0x40_0000;
        r.gpr[gpr::RCX] = 0x1_0000_0000;
        assert_eq!(execute(&i67, &mut r, &env, &mut m, None), Ok(Outcome::Done));
        assert_eq!((r.gpr[gpr::RCX], m.writes), (0x1_0000_0000, 0));
        // RCX = 3: one iteration per call.
        r.rip = 0x40_0000;
        r.gpr[gpr::RCX] = 3;
        assert_eq!(
            execute(&i, &mut r, &env, &mut m, None),
            Ok(Outcome::RepContinue)
        );
        assert_eq!(
            (r.rip, r.gpr[gpr::RCX], r.gpr[gpr::RDI]),
            (0x40_0000, 2, RAM + 8)
        );
        assert_eq!(m.get(RAM, 8), 0x1111_2222_3333_4444);
        assert_eq!(
            execute(&i, &mut r, &env, &mut m, None),
            Ok(Outcome::RepContinue)
        );
        assert_eq!(execute(&i, &mut r, &env, &mut m, None), Ok(Outcome::Done));
        assert_eq!(
            (r.rip, r.gpr[gpr::RCX], r.gpr[gpr::RDI], m.writes),
            (0x40_0003, 0, RAM + 24, 3)
        );
        // A fault in the middle keeps the iterations already done.
        m.ro_base = RAM + 0x100 + 16;
        m.ro_len = 8;
        r.rip = 0x40_0000;
        r.gpr[gpr::RCX] = 4;
        r.gpr[gpr::RDI] = RAM + 0x100;
        let out = execute_rep(&i, &mut r, &env, &mut m, None, 100);
        assert_eq!(
            out,
            Ok(Outcome::Exception(Exception::Pf {
                addr: RAM + 0x110,
                error_code: 3
            }))
        );
        assert_eq!(
            (r.rip, r.gpr[gpr::RCX], r.gpr[gpr::RDI]),
            (0x40_0000, 2, RAM + 0x110)
        );
        // Bounded chunks.
        m.ro_len = 0;
        r.gpr[gpr::RCX] = 10;
        assert_eq!(
            execute_rep(&i, &mut r, &env, &mut m, None, 4),
            Ok(Outcome::RepContinue)
        );
        assert_eq!(r.gpr[gpr::RCX], 6);
        assert_eq!(
            execute_rep(&i, &mut r, &env, &mut m, None, 100),
            Ok(Outcome::Done)
        );
        assert_eq!((r.gpr[gpr::RCX], r.rip), (0, 0x40_0003));
        // DF=1: downwards; stosb without REP: one store, RCX untouched.
        let i = dec(CodeSize::Bits64, &[0xaa]);
        r.rip = 0x40_0000;
        r.rflags |= flags::DF;
        r.gpr[gpr::RDI] = RAM + 0x300;
        r.gpr[gpr::RCX] = 7;
        assert_eq!(execute(&i, &mut r, &env, &mut m, None), Ok(Outcome::Done));
        assert_eq!(
            (r.gpr[gpr::RDI], r.gpr[gpr::RCX], m.get(RAM + 0x300, 1)),
            (RAM + 0x2ff, 7, 0x44)
        );
        // 16-bit: rep stosw with DI wrapping at 64 KiB, ES base added; upper RDI bits kept.
        let env16 = Env {
            seg_base: [RAM, 0, 0, 0, 0, 0],
            la57: false,
            ..Env::default()
        };
        let i = dec(CodeSize::Bits16, &[0xf3, 0xab]);
        let mut r = regs();
        r.rip = 0x100;
        r.gpr[gpr::RDI] = 0xabcd_0000;
        r.gpr[gpr::RCX] = 0xffff_0001;
        r.gpr[gpr::RAX] = 0x7777;
        r.rflags = 0x2 | flags::DF;
        assert_eq!(execute(&i, &mut r, &env16, &mut m, None), Ok(Outcome::Done));
        assert_eq!(
            (r.gpr[gpr::RDI], r.gpr[gpr::RCX], m.get(RAM, 2)),
            (0xabcd_fffe, 0xffff_0000, 0x7777)
        );
        // 32-bit address size in 64-bit mode zero-extends RDI/RCX writes.
        let i = dec(CodeSize::Bits64, &[0x67, 0xf3, 0xaa]);
        let mut r = regs();
        r.gpr[gpr::RDI] = 0xffff_ffff_0000_0000 | RAM;
        r.gpr[gpr::RCX] = 0xffff_ffff_0000_0002;
        assert_eq!(
            execute(&i, &mut r, &env, &mut m, None),
            Ok(Outcome::RepContinue)
        );
        assert_eq!((r.gpr[gpr::RDI], r.gpr[gpr::RCX]), (RAM + 1, 1));
    }

    #[test]
    fn movs_and_mmio_source() {
        let env = Env::default();
        let mut m = TestMem::new();
        m.put(RAM, 8, 0x0807_0605_0403_0201);
        let mut r = regs();
        // rep movsd from RAM to RAM+0x100, 2 dwords.
        let i = dec(CodeSize::Bits64, &[0xf3, 0xa5]);
        r.gpr[gpr::RSI] = RAM;
        r.gpr[gpr::RDI] = RAM + 0x100;
        r.gpr[gpr::RCX] = 2;
        assert_eq!(
            execute_rep(&i, &mut r, &env, &mut m, None, 16),
            Ok(Outcome::Done)
        );
        assert_eq!(m.get(RAM + 0x100, 8), 0x0807_0605_0403_0201);
        assert_eq!((r.gpr[gpr::RSI], r.gpr[gpr::RDI]), (RAM + 8, RAM + 0x108));
        // movsd from MMIO: two-phase.
        let i = dec(CodeSize::Bits64, &[0xa5]);
        r.rip = 0x40_0000;
        r.gpr[gpr::RSI] = MMIO + 0x30;
        let before = r;
        let out = execute(&i, &mut r, &env, &mut m, None).unwrap();
        let Outcome::MmioRead(req) = out else {
            panic!("{out:?}")
        };
        assert_eq!(
            (req.addr.linear, req.addr.seg, req.size),
            (MMIO + 0x30, Seg::Ds, 4)
        );
        assert_eq!(r, before);
        let mut data = MmioData {
            linear: req.addr.linear,
            len: req.size,
            data: [0; 16],
        };
        data.data[..4].copy_from_slice(&0xcafe_f00du32.to_le_bytes());
        assert_eq!(
            execute(&i, &mut r, &env, &mut m, Some(&data)),
            Ok(Outcome::Done)
        );
        assert_eq!(m.get(RAM + 0x108, 4), 0xcafe_f00d);
        assert_eq!(
            (r.gpr[gpr::RSI], r.gpr[gpr::RDI], r.rip),
            (MMIO + 0x34, RAM + 0x10c, 0x40_0001)
        );
        // movsb to MMIO: the write goes to the caller's MMIO queue in one phase.
        let i = dec(CodeSize::Bits64, &[0xa4]);
        r.gpr[gpr::RSI] = RAM;
        r.gpr[gpr::RDI] = MMIO;
        assert_eq!(execute(&i, &mut r, &env, &mut m, None), Ok(Outcome::Done));
        assert_eq!(m.mmio_writes, vec![(MMIO, vec![0x01])]);
    }

    // -----------------------------------------------------------------------------------
    // MMIO, faults, atomicity
    // -----------------------------------------------------------------------------------

    /// Issue 10 item 5: REP string instructions make one MMIO access per exit, and keep
    /// the iterations they committed whatever stops them.
    #[test]
    fn rep_string_mmio_one_access_per_exit() {
        let env = Env::default();
        let mut m = TestMem::new();
        // rep stosd to MMIO, 3 iterations: one store per call, RCX/RDI committed each time.
        let i = dec(CodeSize::Bits64, &[0xf3, 0xab]);
        let mut r = regs();
        r.gpr[gpr::RDI] = MMIO + 0x10;
        r.gpr[gpr::RCX] = 3;
        r.gpr[gpr::RAX] = 0xaabb_ccdd;
        for left in [2u64, 1] {
            assert_eq!(
                execute_rep(&i, &mut r, &env, &mut m, None, 1024),
                Ok(Outcome::RepContinue)
            );
            assert_eq!(m.mmio_writes.len(), 1, "one MMIO store per exit");
            assert_eq!((r.gpr[gpr::RCX], r.rip), (left, 0x40_0000));
            m.mmio_writes.clear();
        }
        assert_eq!(
            execute_rep(&i, &mut r, &env, &mut m, None, 1024),
            Ok(Outcome::Done)
        );
        assert_eq!(
            m.mmio_writes,
            vec![(MMIO + 0x18, vec![0xdd, 0xcc, 0xbb, 0xaa])]
        );
        assert_eq!(
            (r.gpr[gpr::RCX], r.gpr[gpr::RDI], r.rip),
            (0, MMIO + 0x1c, 0x40_0002)
        );
        // rep movsb from MMIO to RAM: the read's data serves one iteration, then the
        // instruction stops (the next device read is the next exit's).
        m.mmio_writes.clear();
        let i = dec(CodeSize::Bits64, &[0xf3, 0xa4]);
        let mut r = regs();
        r.gpr[gpr::RSI] = MMIO;
        r.gpr[gpr::RDI] = RAM + 0x100;
        r.gpr[gpr::RCX] = 3;
        for k in 0..3u64 {
            let out = execute_rep(&i, &mut r, &env, &mut m, None, 1024);
            let Ok(Outcome::MmioRead(req)) = out else {
                panic!("{out:?}")
            };
            assert_eq!((req.addr.linear, req.size), (MMIO + k, 1));
            let mut d = MmioData {
                linear: MMIO + k,
                len: 1,
                data: [0; 16],
            };
            d.data[0] = 0x50 + k as u8;
            let want = if k < 2 {
                Outcome::RepContinue
            } else {
                Outcome::Done
            };
            assert_eq!(
                execute_rep(&i, &mut r, &env, &mut m, Some(&d), 1024),
                Ok(want)
            );
            assert_eq!((r.gpr[gpr::RCX], r.gpr[gpr::RSI]), (2 - k, MMIO + k + 1));
        }
        assert_eq!(m.get(RAM + 0x100, 3), 0x52_5150);
        // rep stosd over RAM into a page that faults: the iterations before the fault are
        // committed in the registers the caller gets back with the exception.
        let i = dec(CodeSize::Bits64, &[0xf3, 0xab]);
        let mut r = regs();
        let end = RAM + m.data.len() as u64;
        r.gpr[gpr::RDI] = end - 8;
        r.gpr[gpr::RCX] = 4;
        let out = execute_rep(&i, &mut r, &env, &mut m, None, 1024);
        assert_eq!(
            out,
            Ok(Outcome::Exception(Exception::Pf {
                addr: end,
                error_code: 2
            }))
        );
        assert_eq!(
            (r.gpr[gpr::RCX], r.gpr[gpr::RDI], r.rip),
            (2, end, 0x40_0000)
        );
    }

    #[test]
    fn mmio_read_two_phase() {
        let env = Env::default();
        let mut m = TestMem::new();
        let mut r = regs();
        r.gpr[gpr::RBX] = MMIO + 0x20;
        r.gpr[gpr::RCX] = 5;
        r.rflags = 0x2;
        // add [rbx], ecx: read from MMIO first, then write the sum to MMIO.
        let i = dec(CodeSize::Bits64, &[0x01, 0x0b]);
        let before = r;
        let out = execute(&i, &mut r, &env, &mut m, None).unwrap();
        let Outcome::MmioRead(req) = out else {
            panic!("{out:?}")
        };
        assert_eq!((req.addr.linear, req.size), (MMIO + 0x20, 4));
        assert_eq!(r, before);
        assert!(m.mmio_writes.is_empty());
        // Wrong data: rejected, nothing changes.
        let bad = MmioData {
            linear: MMIO,
            len: 4,
            data: [0; 16],
        };
        assert_eq!(
            execute(&i, &mut r, &env, &mut m, Some(&bad)),
            Err(EmuError::MmioMismatch)
        );
        let bad = MmioData {
            linear: MMIO + 0x20,
            len: 2,
            data: [0; 16],
        };
        assert_eq!(
            execute(&i, &mut r, &env, &mut m, Some(&bad)),
            Err(EmuError::MmioMismatch)
        );
        assert_eq!(r, before);
        let mut d = MmioData {
            linear: MMIO + 0x20,
            len: 4,
            data: [0; 16],
        };
        d.data[..4].copy_from_slice(&0xffff_fffbu32.to_le_bytes());
        assert_eq!(
            execute(&i, &mut r, &env, &mut m, Some(&d)),
            Ok(Outcome::Done)
        );
        assert_eq!(m.mmio_writes, vec![(MMIO + 0x20, vec![0, 0, 0, 0])]);
        assert_eq!(
            r.rflags & flags::ARITH,
            flags::ZF | flags::CF | flags::PF | flags::AF
        );
        assert_eq!(r.rip, before.rip + 2);
        // mov rax, [rbx] from MMIO; cmp does not write.
        let i = dec(CodeSize::Bits64, &[0x48, 0x8b, 0x03]);
        let Ok(Outcome::MmioRead(req)) = execute(&i, &mut r, &env, &mut m, None) else {
            panic!()
        };
        assert_eq!(req.size, 8);
        let d = MmioData {
            linear: req.addr.linear,
            len: 8,
            data: [0x11; 16],
        };
        assert_eq!(
            execute(&i, &mut r, &env, &mut m, Some(&d)),
            Ok(Outcome::Done)
        );
        assert_eq!(r.gpr[gpr::RAX], 0x1111_1111_1111_1111);
        // lock cmpxchg8b on MMIO: the read is two-phase, the write goes through cmpxchg.
        let i = dec(CodeSize::Bits64, &[0xf0, 0x0f, 0xc7, 0x0b]);
        let Ok(Outcome::MmioRead(req)) = execute(&i, &mut r, &env, &mut m, None) else {
            panic!()
        };
        assert_eq!(req.size, 8);
        r.gpr[gpr::RAX] = 0x1111_1111;
        r.gpr[gpr::RDX] = 0x1111_1111;
        r.gpr[gpr::RBX] = MMIO + 0x20;
        r.gpr[gpr::RCX] = 0x2222_2222;
        let d = MmioData {
            linear: req.addr.linear,
            len: 8,
            data: [0x11; 16],
        };
        assert_eq!(
            execute(&i, &mut r, &env, &mut m, Some(&d)),
            Ok(Outcome::Done)
        );
        assert_eq!(r.rflags & flags::ZF, flags::ZF);
    }

    #[test]
    fn faults_change_nothing() {
        let env = Env::default();
        let mut m = TestMem::new();
        m.put(RAM, 8, 0x1234);
        m.ro_base = RAM;
        m.ro_len = 0x10;
        let mut r = regs();
        r.gpr[gpr::RBX] = RAM;
        r.gpr[gpr::RCX] = 0x10;
        r.rflags = 0x2 | flags::RF;
        let before = r;
        for b in [
            &[0x48, 0x01, 0x0b][..],         // add [rbx], rcx
            &[0xf0, 0x48, 0x0f, 0xc1, 0x0b], // lock xadd: RCX would change
            &[0x87, 0x0b],                   // xchg: RCX would change
            &[0xf0, 0x0f, 0xb1, 0x0b],       // lock cmpxchg (compare fails: RAX would change)
            &[0xf0, 0x0f, 0xc7, 0x0b],       // lock cmpxchg8b (fails: EDX:EAX would change)
            &[0x48, 0xab],                   // stosq via rdi? (rdi = 0: not mapped)
            &[0xfe, 0x0b],                   // dec byte [rbx]
        ] {
            let i = dec(CodeSize::Bits64, b);
            let out = execute(&i, &mut r, &env, &mut m, None).unwrap();
            assert!(
                matches!(out, Outcome::Exception(Exception::Pf { .. })),
                "{b:02x?}: {out:?}"
            );
            assert_eq!(r, before, "{b:02x?}");
            assert_eq!(m.get(RAM, 8), 0x1234);
        }
        // A read that faults: the error code from the caller is passed through.
        r.gpr[gpr::RBX] = 0x5000;
        let i = dec(CodeSize::Bits64, &[0x8b, 0x03]);
        assert_eq!(
            execute(&i, &mut r, &env, &mut m, None),
            Ok(Outcome::Exception(Exception::Pf {
                addr: 0x5000,
                error_code: 0
            }))
        );
        // CMPXCHG16B needs 16-byte alignment: #GP(0).
        r.gpr[gpr::RBX] = RAM + 8;
        m.ro_len = 0;
        let i = dec(CodeSize::Bits64, &[0xf0, 0x48, 0x0f, 0xc7, 0x0b]);
        assert_eq!(
            execute(&i, &mut r, &env, &mut m, None),
            Ok(Outcome::Exception(Exception::Gp(0)))
        );
        // Host failures and MMIO writes refused by the caller are errors.
        struct Broken(MemFault);
        impl EmuMemory for Broken {
            fn read(&mut self, _: &Addr, _: &mut [u8]) -> Result<(), MemFault> {
                Err(self.0)
            }
            fn write(&mut self, _: &Addr, _: &[u8]) -> Result<(), MemFault> {
                Err(self.0)
            }
        }
        let i = dec(CodeSize::Bits64, &[0x89, 0x03]);
        assert_eq!(
            execute(&i, &mut r, &env, &mut Broken(MemFault::Host), None),
            Err(EmuError::Memory)
        );
        assert_eq!(
            execute(&i, &mut r, &env, &mut Broken(MemFault::Mmio), None),
            Err(EmuError::MmioWrite)
        );
    }

    #[test]
    fn locked_ops_retry_on_races() {
        let env = Env::default();
        let mut m = TestMem::new();
        m.put(RAM, 8, 0x10);
        let mut r = regs();
        r.gpr[gpr::RBX] = RAM;
        r.gpr[gpr::RCX] = 0x1;
        // lock or [rbx], ecx: the first attempt loses (the other CPU bumps byte 0 to 0x11),
        // the second sees the new value.
        m.races = 1;
        let i = dec(CodeSize::Bits64, &[0xf0, 0x09, 0x0b]);
        assert_eq!(execute(&i, &mut r, &env, &mut m, None), Ok(Outcome::Done));
        assert_eq!(m.get(RAM, 4), 0x11);
        assert_eq!(m.cmpxchg_calls, 2);
        // Always losing: Retry with nothing changed.
        m.races = 1000;
        let before = r;
        assert_eq!(execute(&i, &mut r, &env, &mut m, None), Ok(Outcome::Retry));
        assert_eq!(r, before);
        // Without LOCK, plain writes.
        m.races = 0;
        let calls = m.cmpxchg_calls;
        let i = dec(CodeSize::Bits64, &[0x09, 0x0b]);
        assert_eq!(execute(&i, &mut r, &env, &mut m, None), Ok(Outcome::Done));
        assert_eq!(m.cmpxchg_calls, calls);
        // The default cmpxchg (read + write) works for single-CPU callers.
        struct Flat([u8; 16]);
        impl EmuMemory for Flat {
            fn read(&mut self, a: &Addr, b: &mut [u8]) -> Result<(), MemFault> {
                let o = a.linear as usize;
                b.copy_from_slice(&self.0[o..o + b.len()]);
                Ok(())
            }
            fn write(&mut self, a: &Addr, d: &[u8]) -> Result<(), MemFault> {
                let o = a.linear as usize;
                self.0[o..o + d.len()].copy_from_slice(d);
                Ok(())
            }
        }
        let mut f = Flat([0; 16]);
        let mut r = regs();
        r.gpr[gpr::RAX] = 0;
        r.gpr[gpr::RCX] = 0xab;
        let i = dec(CodeSize::Bits64, &[0xf0, 0x0f, 0xb0, 0x0b]); // lock cmpxchg [rbx], cl
        assert_eq!(execute(&i, &mut r, &env, &mut f, None), Ok(Outcome::Done));
        assert_eq!((f.0[0], r.rflags & flags::ZF), (0xab, flags::ZF));
        assert_eq!(execute(&i, &mut r, &env, &mut f, None), Ok(Outcome::Done));
        assert_eq!((r.gpr[gpr::RAX], r.rflags & flags::ZF), (0xab, 0));
    }

    #[test]
    fn pae_pte_update_32bit() {
        // What a 32-bit PAE guest does to write a PTE: lock cmpxchg8b [esi].
        let env = Env {
            seg_base: [0; 6],
            la57: false,
            ..Env::default()
        };
        let mut m = TestMem::new();
        m.put(RAM + 0x18, 8, 0x8000_0000_1234_5063);
        let mut r = regs();
        r.rip = 0xc010_0000;
        r.gpr[gpr::RSI] = RAM + 0x18;
        r.gpr[gpr::RAX] = 0x1234_5063;
        r.gpr[gpr::RDX] = 0x8000_0000;
        r.gpr[gpr::RBX] = 0x5678_9067;
        r.gpr[gpr::RCX] = 0x0000_0001;
        let i = dec(CodeSize::Bits32, &[0xf0, 0x0f, 0xc7, 0x0e]);
        assert_eq!(i.len(), 4);
        assert_eq!(execute(&i, &mut r, &env, &mut m, None), Ok(Outcome::Done));
        assert_eq!(m.get(RAM + 0x18, 8), 0x0000_0001_5678_9067);
        assert_eq!((r.rip, r.rflags & flags::ZF), (0xc010_0004, flags::ZF));
        // And a failing compare loads EDX:EAX.
        r.rip = 0xc010_0000;
        assert_eq!(execute(&i, &mut r, &env, &mut m, None), Ok(Outcome::Done));
        assert_eq!(
            (r.gpr[gpr::RAX], r.gpr[gpr::RDX], r.rflags & flags::ZF),
            (0x5678_9067, 1, 0)
        );
    }

    // -----------------------------------------------------------------------------------
    // Robustness
    // -----------------------------------------------------------------------------------

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = Rng(0x5eed_0000_0000_0001);
        let mut mem = ChaosMem { rng: Rng(42) };
        // Bias towards bytes the decoder cares about.
        const INTERESTING: [u8; 24] = [
            0x66, 0x67, 0xf0, 0xf2, 0xf3, 0x26, 0x2e, 0x36, 0x3e, 0x64, 0x65, 0x48, 0x4f, 0x0f,
            0xc7, 0xba, 0xab, 0x89, 0x81, 0xf7, 0xfe, 0xa5, 0x04, 0x05,
        ];
        let mut decoded = 0u32;
        for n in 0..300_000u32 {
            let len = (rng.next() % 18) as usize;
            let mut b = [0u8; 18];
            for x in b.iter_mut().take(len) {
                *x = if rng.next().is_multiple_of(3) {
                    INTERESTING[(rng.next() % 24) as usize]
                } else {
                    rng.next() as u8
                };
            }
            let mode = MODES[(n % 3) as usize];
            let Ok(i) = decode(&b[..len], mode) else {
                continue;
            };
            decoded += 1;
            assert!(!i.is_empty() && i.len() <= MAX_INSN_LEN && i.len() <= len);
            let mut r = Regs {
                gpr: [0; 16],
                rip: rng.val(),
                rflags: rng.next(),
            };
            for g in r.gpr.iter_mut() {
                *g = rng.val();
            }
            let env = Env {
                seg_base: [
                    rng.val(),
                    rng.val(),
                    rng.val(),
                    rng.val(),
                    rng.val(),
                    rng.val(),
                ],
                // Random limits and types: no check may panic either.
                seg_check: core::array::from_fn(|_| match rng.next() % 3 {
                    0 => SegCheck::None,
                    1 => SegCheck::Unusable,
                    _ => SegCheck::Desc {
                        limit: rng.val() as u32,
                        type_: (rng.next() & 0xf) as u8,
                        big: rng.next().is_multiple_of(2),
                    },
                }),
                la57: rng.next().is_multiple_of(2),
            };
            let mmio = MmioData {
                linear: rng.val(),
                len: (rng.next() % 20) as u8,
                data: [0xa5; 16],
            };
            let _ = i.mem_addr(&r, &env);
            let _ = execute(
                &i,
                &mut r,
                &env,
                &mut mem,
                if n % 5 == 0 { Some(&mmio) } else { None },
            );
            let _ = execute_rep(&i, &mut r, &env, &mut mem, None, 3);
        }
        assert!(decoded > 10_000, "{decoded}");
    }
}
