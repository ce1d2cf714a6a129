// SPDX-License-Identifier: GPL-2.0

//! The arithmetic core: values at an operand size, registers written as the CPU writes
//! them, and the results and flags of the ALU operations (ADD/SUB with their carries,
//! AND/OR/XOR, the ZF/SF/PF of a result). The bit operations and the other users of
//! these are in [`super::execution`].

use super::decoder::{AluOp, Operand};

/// RFLAGS bits used by the emulator.
pub mod flags {
    /// Carry.
    pub const CF: u64 = 1 << 0;
    /// Parity (of the low byte of the result).
    pub const PF: u64 = 1 << 2;
    /// Auxiliary carry (out of bit 3).
    pub const AF: u64 = 1 << 4;
    /// Zero.
    pub const ZF: u64 = 1 << 6;
    /// Sign.
    pub const SF: u64 = 1 << 7;
    /// Trap (single step).
    pub const TF: u64 = 1 << 8;
    /// Direction (string instructions go down when set).
    pub const DF: u64 = 1 << 10;
    /// Overflow.
    pub const OF: u64 = 1 << 11;
    /// Resume.
    pub const RF: u64 = 1 << 16;
    /// The six arithmetic status flags.
    pub const ARITH: u64 = CF | PF | AF | ZF | SF | OF;
}

/// General-purpose register numbers in x86 encoding order (index into [`Regs::gpr`]).
pub mod gpr {
    /// RAX.
    pub const RAX: usize = 0;
    /// RCX.
    pub const RCX: usize = 1;
    /// RDX.
    pub const RDX: usize = 2;
    /// RBX.
    pub const RBX: usize = 3;
    /// RSP.
    pub const RSP: usize = 4;
    /// RBP.
    pub const RBP: usize = 5;
    /// RSI.
    pub const RSI: usize = 6;
    /// RDI.
    pub const RDI: usize = 7;
}

/// The guest registers the emulator reads and writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Regs {
    /// RAX..R15, in the order the x86 encoding numbers them (see [`gpr`]).
    pub gpr: [u64; 16],
    /// Address of the instruction being emulated; advanced past it on completion.
    pub rip: u64,
    /// RFLAGS.
    pub rflags: u64,
}

pub(super) fn mask(size: u8) -> u64 {
    match size {
        1 => 0xff,
        2 => 0xffff,
        4 => 0xffff_ffff,
        _ => u64::MAX,
    }
}

fn sign_bit(size: u8) -> u64 {
    match size {
        1 => 0x80,
        2 => 0x8000,
        4 => 0x8000_0000,
        _ => 1 << 63,
    }
}

/// Sign-extends the low `size` bytes of `v` to 64 bits.
pub(super) fn sext(v: u64, size: u8) -> u64 {
    let v = v & mask(size);
    if v & sign_bit(size) != 0 {
        v | !mask(size)
    } else {
        v
    }
}

/// Register `n` (taken modulo 16).
pub(super) fn gpr_get(regs: &Regs, n: usize) -> u64 {
    regs.gpr.get(n & 15).copied().unwrap_or(0)
}

/// Writes the low `size` bytes of `val` to register `n` as the CPU does: 32-bit writes
/// zero-extend, 8- and 16-bit writes keep the rest.
pub(super) fn set_gpr(regs: &mut Regs, n: usize, size: u8, val: u64) {
    if let Some(slot) = regs.gpr.get_mut(n & 15) {
        *slot = match size {
            1 | 2 => (*slot & !mask(size)) | (val & mask(size)),
            4 => val & 0xffff_ffff,
            _ => val,
        };
    }
}

pub(super) fn get_reg(regs: &Regs, o: Operand, size: u8) -> u64 {
    match o {
        Operand::Reg(n) => gpr_get(regs, usize::from(n)) & mask(size),
        Operand::RegHigh8(n) => (gpr_get(regs, usize::from(n & 3)) >> 8) & 0xff,
        Operand::Imm(v) => v & mask(size),
        Operand::None | Operand::Mem => 0,
    }
}

pub(super) fn set_reg(regs: &mut Regs, o: Operand, size: u8, val: u64) {
    match o {
        Operand::Reg(n) => set_gpr(regs, usize::from(n), size, val),
        Operand::RegHigh8(n) => {
            if let Some(slot) = regs.gpr.get_mut(usize::from(n & 3)) {
                *slot = (*slot & !0xff00) | ((val & 0xff) << 8);
            }
        }
        _ => {}
    }
}

/// ZF, SF, PF of a result.
fn szp(res: u64, size: u8) -> u64 {
    let res = res & mask(size);
    let mut f = 0;
    if res == 0 {
        f |= flags::ZF;
    }
    if res & sign_bit(size) != 0 {
        f |= flags::SF;
    }
    if (res as u8).count_ones() & 1 == 0 {
        f |= flags::PF;
    }
    f
}

/// `a + b + carry` at `size`: (result, CF|PF|AF|ZF|SF|OF).
pub(super) fn add_flags(a: u64, b: u64, carry: bool, size: u8) -> (u64, u64) {
    let m = mask(size);
    let (a, b) = (a & m, b & m);
    let (s1, c1) = a.overflowing_add(b);
    let (s2, c2) = s1.overflowing_add(u64::from(carry));
    let cf = if size >= 8 { c1 || c2 } else { s2 > m };
    let res = s2 & m;
    let mut f = szp(res, size);
    if cf {
        f |= flags::CF;
    }
    if (a ^ b ^ res) & 0x10 != 0 {
        f |= flags::AF;
    }
    if (a ^ res) & (b ^ res) & sign_bit(size) != 0 {
        f |= flags::OF;
    }
    (res, f)
}

/// `a - b - borrow` at `size`: (result, CF|PF|AF|ZF|SF|OF).
pub(super) fn sub_flags(a: u64, b: u64, borrow: bool, size: u8) -> (u64, u64) {
    let m = mask(size);
    let (a, b) = (a & m, b & m);
    let (d1, b1) = a.overflowing_sub(b);
    let (d2, b2) = d1.overflowing_sub(u64::from(borrow));
    let res = d2 & m;
    let mut f = szp(res, size);
    if b1 || b2 {
        f |= flags::CF;
    }
    if (a ^ b ^ res) & 0x10 != 0 {
        f |= flags::AF;
    }
    if (a ^ b) & (a ^ res) & sign_bit(size) != 0 {
        f |= flags::OF;
    }
    (res, f)
}

/// Result and flags of an ALU operation; `cf` is the incoming carry.
pub(super) fn alu(op: AluOp, a: u64, b: u64, cf: bool, size: u8) -> (u64, u64) {
    match op {
        AluOp::Add => add_flags(a, b, false, size),
        AluOp::Adc => add_flags(a, b, cf, size),
        AluOp::Sub | AluOp::Cmp => sub_flags(a, b, false, size),
        AluOp::Sbb => sub_flags(a, b, cf, size),
        AluOp::And => logic(a & b, size),
        AluOp::Or => logic(a | b, size),
        AluOp::Xor => logic(a ^ b, size),
    }
}

/// AND/OR/XOR/TEST: CF=OF=0, AF=0 (undefined; Intel clears it).
pub(super) fn logic(res: u64, size: u8) -> (u64, u64) {
    let res = res & mask(size);
    (res, szp(res, size))
}

pub(super) fn set_flags(regs: &mut Regs, affected: u64, value: u64) {
    regs.rflags = (regs.rflags & !affected) | (value & affected);
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::*;
    use super::*;
    use core::arch::asm;
    use std::vec;
    use std::vec::Vec;

    // -----------------------------------------------------------------------------------
    // Native oracle: run the instruction on this CPU.
    // -----------------------------------------------------------------------------------

    macro_rules! native2 {
        ($mn:literal, $size:expr, $a:expr, $b:expr, $f:expr) => {{
            let (mut a, b, mut f): (u64, u64, u64) = ($a, $b, $f);
            // SAFETY: register-only arithmetic between a balanced push/pop of RFLAGS; the
            // block uses the stack, so `nostack` is not given.
            unsafe {
                match $size {
                    1 => asm!("push {f}", "popfq", concat!($mn, " {a:l}, {b:l}"), "pushfq", "pop {f}",
                        a = inout(reg) a, b = in(reg) b, f = inout(reg) f),
                    2 => asm!("push {f}", "popfq", concat!($mn, " {a:x}, {b:x}"), "pushfq", "pop {f}",
                        a = inout(reg) a, b = in(reg) b, f = inout(reg) f),
                    4 => asm!("push {f}", "popfq", concat!($mn, " {a:e}, {b:e}"), "pushfq", "pop {f}",
                        a = inout(reg) a, b = in(reg) b, f = inout(reg) f),
                    _ => asm!("push {f}", "popfq", concat!($mn, " {a:r}, {b:r}"), "pushfq", "pop {f}",
                        a = inout(reg) a, b = in(reg) b, f = inout(reg) f),
                }
            }
            (a, f)
        }};
    }

    /// Like `native2`, for instructions without a byte form.
    macro_rules! native2w {
        ($mn:literal, $size:expr, $a:expr, $b:expr, $f:expr) => {{
            let (mut a, b, mut f): (u64, u64, u64) = ($a, $b, $f);
            // SAFETY: as in native2.
            unsafe {
                match $size {
                    2 => asm!("push {f}", "popfq", concat!($mn, " {a:x}, {b:x}"), "pushfq", "pop {f}",
                        a = inout(reg) a, b = in(reg) b, f = inout(reg) f),
                    4 => asm!("push {f}", "popfq", concat!($mn, " {a:e}, {b:e}"), "pushfq", "pop {f}",
                        a = inout(reg) a, b = in(reg) b, f = inout(reg) f),
                    _ => asm!("push {f}", "popfq", concat!($mn, " {a:r}, {b:r}"), "pushfq", "pop {f}",
                        a = inout(reg) a, b = in(reg) b, f = inout(reg) f),
                }
            }
            (a, f)
        }};
    }

    macro_rules! native1 {
        ($mn:literal, $size:expr, $a:expr, $f:expr) => {{
            let (mut a, mut f): (u64, u64) = ($a, $f);
            // SAFETY: as in native2.
            unsafe {
                match $size {
                    1 => asm!("push {f}", "popfq", concat!($mn, " {a:l}"), "pushfq", "pop {f}",
                        a = inout(reg) a, f = inout(reg) f),
                    2 => asm!("push {f}", "popfq", concat!($mn, " {a:x}"), "pushfq", "pop {f}",
                        a = inout(reg) a, f = inout(reg) f),
                    4 => asm!("push {f}", "popfq", concat!($mn, " {a:e}"), "pushfq", "pop {f}",
                        a = inout(reg) a, f = inout(reg) f),
                    _ => asm!("push {f}", "popfq", concat!($mn, " {a:r}"), "pushfq", "pop {f}",
                        a = inout(reg) a, f = inout(reg) f),
                }
            }
            (a, f)
        }};
    }

    fn native_alu(op: u8, size: u8, a: u64, b: u64, f: u64) -> (u64, u64) {
        match op {
            0 => native2!("add", size, a, b, f),
            1 => native2!("or", size, a, b, f),
            2 => native2!("adc", size, a, b, f),
            3 => native2!("sbb", size, a, b, f),
            4 => native2!("and", size, a, b, f),
            5 => native2!("sub", size, a, b, f),
            6 => native2!("xor", size, a, b, f),
            _ => native2!("cmp", size, a, b, f),
        }
    }

    /// Operand-size prefix bytes for a 64-bit-mode instruction.
    fn size_prefix(size: u8) -> Vec<u8> {
        match size {
            2 => vec![0x66],
            8 => vec![0x48],
            _ => vec![],
        }
    }

    /// Runs `prefix(size) ++ body` in 64-bit mode with [rbx] = `mem_val` at RAM and the
    /// given registers; returns (memory value, registers after).
    fn emu64(size: u8, body: &[u8], mem_val: u64, mut r: Regs) -> (u64, Regs) {
        // Legacy prefixes (LOCK) first: REX must be last before the opcode.
        let (lock, body) = match body.split_first() {
            Some((&0xf0, rest)) => (&[0xf0u8][..], rest),
            _ => (&[][..], body),
        };
        let mut b = lock.to_vec();
        b.extend_from_slice(&size_prefix(size));
        b.extend_from_slice(body);
        let mut m = TestMem::new();
        m.put(RAM, 8, mem_val);
        r.gpr[gpr::RBX] = RAM;
        assert_eq!(
            run(CodeSize::Bits64, &b, &mut r, &mut m),
            Outcome::Done,
            "{b:02x?}"
        );
        assert_eq!(r.rip, 0x40_0000 + b.len() as u64);
        (m.get(RAM, 8), r)
    }

    const SIZES: [u8; 4] = [1, 2, 4, 8];

    #[test]
    fn alu_flags_match_cpu() {
        let mut rng = Rng(0x1234_5678_9abc_def1);
        for op in 0..8u8 {
            for size in SIZES {
                let w = u8::from(size != 1);
                let msk = mask(size);
                for _ in 0..400 {
                    let (a, b) = (rng.val(), rng.val());
                    let fin = 0x2 | (rng.next() & flags::ARITH);
                    let (na, nf) = native_alu(op, size, a, b, fin);
                    let want = (na & msk, nf & flags::ARITH);
                    let mut r = regs();
                    r.rflags = fin;
                    // op [rbx], rcx
                    r.gpr[gpr::RCX] = b;
                    let (mv, r1) = emu64(size, &[op * 8 + w, 0x0b], a, r);
                    assert_eq!(
                        (mv & msk, r1.rflags & flags::ARITH),
                        want,
                        "op {op} size {size} {a:#x} {b:#x} f {fin:#x}"
                    );
                    assert_eq!(mv & !msk, a & !msk, "bytes beyond the operand untouched");
                    // op rcx, [rbx]
                    r.gpr[gpr::RCX] = a;
                    let (_, r2) = emu64(size, &[op * 8 + w + 2, 0x0b], b, r);
                    assert_eq!((r2.gpr[gpr::RCX] & msk, r2.rflags & flags::ARITH), want);
                    // Register write semantics: 32-bit zero-extends, 8/16 merge.
                    let expect_rcx = match (size, op) {
                        (_, 7) => a,
                        (4, _) => na & 0xffff_ffff,
                        (8, _) => na,
                        _ => (a & !msk) | (na & msk),
                    };
                    assert_eq!(r2.gpr[gpr::RCX], expect_rcx);
                    // group 1 with immediate: 80/81 (imm32 sign-extended for 64-bit), 83.
                    let imm = if size == 8 { sext(b, 4) } else { b & msk };
                    let (na, nf) = native_alu(op, size, a, imm, fin);
                    let mut body = vec![if size == 1 { 0x80 } else { 0x81 }, (op << 3) | 3];
                    body.extend_from_slice(&imm.to_le_bytes()[..usize::from(size.min(4))]);
                    let (mv, r3) = emu64(size, &body, a, r);
                    assert_eq!(
                        (mv & msk, r3.rflags & flags::ARITH),
                        (na & msk, nf & flags::ARITH)
                    );
                    if size != 1 {
                        let imm8 = sext(b, 1) & msk;
                        let (na, nf) = native_alu(op, size, a, imm8, fin);
                        let (mv, r4) = emu64(size, &[0x83, (op << 3) | 3, b as u8], a, r);
                        assert_eq!(
                            (mv & msk, r4.rflags & flags::ARITH),
                            (na & msk, nf & flags::ARITH)
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn unary_test_xadd_flags_match_cpu() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for size in SIZES {
            let w = u8::from(size != 1);
            let msk = mask(size);
            for _ in 0..500 {
                let (a, b) = (rng.val(), rng.val());
                let fin = 0x2 | (rng.next() & flags::ARITH);
                let mut r = regs();
                r.rflags = fin;
                let cases: [((u64, u64), &[u8]); 4] = [
                    (native1!("inc", size, a, fin), &[0xfe | w, 0x03]),
                    (native1!("dec", size, a, fin), &[0xfe | w, 0x0b]),
                    (native1!("not", size, a, fin), &[0xf6 | w, 0x13]),
                    (native1!("neg", size, a, fin), &[0xf6 | w, 0x1b]),
                ];
                for ((na, nf), body) in cases {
                    let (mv, r1) = emu64(size, body, a, r);
                    assert_eq!(
                        (mv & msk, r1.rflags),
                        (na & msk, (nf & flags::ARITH) | (fin & !flags::ARITH)),
                        "{body:02x?} size {size} {a:#x} f {fin:#x}"
                    );
                }
                // test [rbx], rcx and test [rbx], imm
                r.gpr[gpr::RCX] = b;
                let (_, nf) = native2!("test", size, a, b, fin);
                let (mv, r1) = emu64(size, &[0x84 | w, 0x0b], a, r);
                assert_eq!(
                    (mv, r1.rflags),
                    (a, (nf & flags::ARITH) | 2),
                    "test size {size}"
                );
                let imm = if size == 8 { sext(b, 4) } else { b & msk };
                let (_, nf) = native2!("test", size, a, imm, fin);
                let mut body = vec![0xf6 | w, 0x03];
                body.extend_from_slice(&imm.to_le_bytes()[..usize::from(size.min(4))]);
                let (_, r1) = emu64(size, &body, a, r);
                assert_eq!(r1.rflags, (nf & flags::ARITH) | 2);
                // lock xadd [rbx], rcx
                let (mut na, mut nb, mut nf) = (a, b, fin);
                // SAFETY: register-only XADD between a balanced push/pop of RFLAGS.
                unsafe {
                    match size {
                        1 => {
                            asm!("push {f}", "popfq", "xadd {a:l}, {b:l}", "pushfq", "pop {f}", a = inout(reg) na, b = inout(reg) nb, f = inout(reg) nf)
                        }
                        2 => {
                            asm!("push {f}", "popfq", "xadd {a:x}, {b:x}", "pushfq", "pop {f}", a = inout(reg) na, b = inout(reg) nb, f = inout(reg) nf)
                        }
                        4 => {
                            asm!("push {f}", "popfq", "xadd {a:e}, {b:e}", "pushfq", "pop {f}", a = inout(reg) na, b = inout(reg) nb, f = inout(reg) nf)
                        }
                        _ => {
                            asm!("push {f}", "popfq", "xadd {a}, {b}", "pushfq", "pop {f}", a = inout(reg) na, b = inout(reg) nb, f = inout(reg) nf)
                        }
                    }
                }
                let (mv, r1) = emu64(size, &[0xf0, 0x0f, 0xc0 | w, 0x0b], a, r);
                let _ = &mut na;
                assert_eq!(
                    (mv & msk, r1.gpr[gpr::RCX], r1.rflags),
                    (na & msk, nb, (nf & flags::ARITH) | 2),
                    "xadd size {size} {a:#x} {b:#x}"
                );
            }
        }
    }

    #[test]
    fn cmpxchg_matches_cpu() {
        let mut rng = Rng(0xdead_beef_cafe_f00d);
        for size in SIZES {
            let w = u8::from(size != 1);
            let msk = mask(size);
            for i in 0..500 {
                let (d, s) = (rng.val(), rng.val());
                // Half the time the accumulator matches the destination.
                let acc = if i % 2 == 0 {
                    (rng.val() & !msk) | (d & msk)
                } else {
                    rng.val()
                };
                let fin = 0x2 | (rng.next() & flags::ARITH);
                let (mut nd, mut nacc, mut nf) = (d, acc, fin);
                // SAFETY: register-only CMPXCHG between a balanced push/pop of RFLAGS.
                unsafe {
                    match size {
                        1 => {
                            asm!("push {f}", "popfq", "cmpxchg {d:l}, {s:l}", "pushfq", "pop {f}", d = inout(reg) nd, s = in(reg) s, f = inout(reg) nf, inout("rax") nacc)
                        }
                        2 => {
                            asm!("push {f}", "popfq", "cmpxchg {d:x}, {s:x}", "pushfq", "pop {f}", d = inout(reg) nd, s = in(reg) s, f = inout(reg) nf, inout("rax") nacc)
                        }
                        4 => {
                            asm!("push {f}", "popfq", "cmpxchg {d:e}, {s:e}", "pushfq", "pop {f}", d = inout(reg) nd, s = in(reg) s, f = inout(reg) nf, inout("rax") nacc)
                        }
                        _ => {
                            asm!("push {f}", "popfq", "cmpxchg {d}, {s}", "pushfq", "pop {f}", d = inout(reg) nd, s = in(reg) s, f = inout(reg) nf, inout("rax") nacc)
                        }
                    }
                }
                let mut r = regs();
                r.rflags = fin;
                r.gpr[gpr::RAX] = acc;
                r.gpr[gpr::RCX] = s;
                let (mv, r1) = emu64(size, &[0xf0, 0x0f, 0xb0 | w, 0x0b], d, r);
                // RAX in full: the upper half of RAX is kept on success, zeroed on a
                // failed 32-bit compare.
                assert_eq!(
                    (mv & msk, r1.gpr[gpr::RAX], r1.rflags),
                    (nd & msk, nacc, (nf & flags::ARITH) | 2),
                    "cmpxchg size {size} d {d:#x} s {s:#x} acc {acc:#x}"
                );
            }
        }
    }

    #[test]
    fn bit_ops_match_cpu() {
        let mut rng = Rng(0x0bad_5eed_1234_4321);
        for size in [2u8, 4, 8] {
            let msk = mask(size);
            let bits = u64::from(size) * 8;
            for _ in 0..300 {
                let a = rng.val();
                let bit = rng.next() % bits;
                let fin = 0x2 | (rng.next() & flags::ARITH);
                let natives = [
                    native2w!("bt", size, a, bit, fin),
                    native2w!("bts", size, a, bit, fin),
                    native2w!("btr", size, a, bit, fin),
                    native2w!("btc", size, a, bit, fin),
                ];
                for (k, (na, nf)) in natives.into_iter().enumerate() {
                    let k = k as u8;
                    let mut r = regs();
                    r.rflags = fin;
                    r.gpr[gpr::RCX] = bit;
                    // bt* [rbx], rcx (register offset within the operand)
                    let (mv, r1) = emu64(size, &[0x0f, 0xa3 | (k << 3), 0x0b], a, r);
                    assert_eq!(mv & msk, na & msk);
                    // CF and ZF as the CPU; OF/SF/AF/PF (undefined) are left unchanged.
                    let cz = flags::CF | flags::ZF;
                    assert_eq!(
                        r1.rflags & cz,
                        nf & cz,
                        "bt{k} size {size} {a:#x} bit {bit}"
                    );
                    assert_eq!(r1.rflags & !flags::CF, fin & !flags::CF);
                    // bt* [rbx], imm8 (0F BA /4../7); the immediate is taken modulo the size.
                    let imm = (bit + bits * (rng.next() % 4)) as u8;
                    let (mv, r2) = emu64(size, &[0x0f, 0xba, ((4 + k) << 3) | 3, imm], a, r);
                    assert_eq!((mv & msk, r2.rflags & cz), (na & msk, nf & cz));
                }
            }
        }
    }

    #[test]
    fn cmpxchg8b_16b_match_cpu() {
        #[repr(align(16))]
        struct A16([u64; 2]);
        let mut rng = Rng(77);
        for i in 0..400 {
            let mem = [rng.val(), rng.val()];
            let eq = i % 2 == 0;
            let (rax, rdx) = if eq {
                (
                    rng.val() & !0xffff_ffff | (mem[0] & 0xffff_ffff),
                    rng.val() & !0xffff_ffff | (mem[0] >> 32),
                )
            } else {
                (rng.val(), rng.val())
            };
            let (rbx, rcx) = (rng.val(), rng.val());
            let fin = 0x2 | (rng.next() & flags::ARITH);
            // 8B.
            let mut m8 = mem[0];
            let (mut nax, mut ndx, mut nf) = (rax, rdx, fin);
            // SAFETY: RDI points to a live u64; RBX is swapped with RSI and back, so it is
            // restored; RFLAGS push/pop is balanced.
            unsafe {
                // Every operand in a fixed register: LLVM may otherwise hand out RBX,
                // which this block swaps.
                asm!("xchg rbx, rsi", "push r8", "popfq", "lock cmpxchg8b [rdi]", "pushfq", "pop r8", "xchg rbx, rsi",
                    in("rdi") core::ptr::from_mut(&mut m8), inout("rsi") rbx => _, inout("r8") nf,
                    inout("rax") nax, inout("rdx") ndx, in("rcx") rcx);
            }
            let mut r = regs();
            r.rflags = fin;
            r.gpr[gpr::RAX] = rax;
            r.gpr[gpr::RDX] = rdx;
            r.gpr[gpr::RCX] = rcx;
            r.gpr[gpr::RDI] = rbx;
            let mut m = TestMem::new();
            m.put(RAM, 8, mem[0]);
            let mut rr = r;
            rr.gpr[gpr::RBX] = rbx;
            rr.gpr[gpr::RSI] = RAM;
            assert_eq!(
                run(CodeSize::Bits64, &[0xf0, 0x0f, 0xc7, 0x0e], &mut rr, &mut m),
                Outcome::Done
            );
            assert_eq!(
                (m.get(RAM, 8), rr.gpr[gpr::RAX], rr.gpr[gpr::RDX], rr.rflags),
                (m8, nax, ndx, (nf & flags::ARITH) | 2),
                "cmpxchg8b {i}"
            );
            // Same in 32-bit mode.
            let mut m = TestMem::new();
            m.put(RAM, 8, mem[0]);
            let mut r32 = rr;
            r32.gpr = [0; 16];
            for (k, v) in [(0, rax), (2, rdx), (1, rcx), (3, rbx)] {
                r32.gpr[k] = v & 0xffff_ffff;
            }
            r32.gpr[gpr::RSI] = RAM;
            r32.rip = 0x1000;
            r32.rflags = fin;
            assert_eq!(
                run(
                    CodeSize::Bits32,
                    &[0xf0, 0x0f, 0xc7, 0x0e],
                    &mut r32,
                    &mut m
                ),
                Outcome::Done
            );
            assert_eq!(
                (m.get(RAM, 8), r32.gpr[0], r32.gpr[2]),
                (m8, nax & 0xffff_ffff, ndx & 0xffff_ffff)
            );
            // 16B.
            let mut m16 = A16(mem);
            let (rax, rdx) = if eq { (mem[0], mem[1]) } else { (rax, rdx) };
            let (mut nax, mut ndx, mut nf) = (rax, rdx, fin);
            // SAFETY: RDI points to a live 16-byte-aligned [u64; 2]; RBX is swapped with RSI and
            // back; RFLAGS push/pop is balanced.
            unsafe {
                // Every operand in a fixed register: LLVM may otherwise hand out RBX,
                // which this block swaps.
                asm!("xchg rbx, rsi", "push r8", "popfq", "lock cmpxchg16b [rdi]", "pushfq", "pop r8", "xchg rbx, rsi",
                    in("rdi") m16.0.as_mut_ptr(), inout("rsi") rbx => _, inout("r8") nf,
                    inout("rax") nax, inout("rdx") ndx, in("rcx") rcx);
            }
            let mut m = TestMem::new();
            m.put(RAM, 8, mem[0]);
            m.put(RAM + 8, 8, mem[1]);
            let mut rr = regs();
            rr.rflags = fin;
            rr.gpr[gpr::RAX] = rax;
            rr.gpr[gpr::RDX] = rdx;
            rr.gpr[gpr::RCX] = rcx;
            rr.gpr[gpr::RBX] = rbx;
            rr.gpr[gpr::RSI] = RAM;
            assert_eq!(
                run(
                    CodeSize::Bits64,
                    &[0xf0, 0x48, 0x0f, 0xc7, 0x0e],
                    &mut rr,
                    &mut m
                ),
                Outcome::Done
            );
            assert_eq!(
                (
                    m.get(RAM, 8),
                    m.get(RAM + 8, 8),
                    rr.gpr[gpr::RAX],
                    rr.gpr[gpr::RDX],
                    rr.rflags
                ),
                (m16.0[0], m16.0[1], nax, ndx, (nf & flags::ARITH) | 2),
                "cmpxchg16b {i}"
            );
        }
    }
}
