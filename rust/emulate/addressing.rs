// SPDX-License-Identifier: GPL-2.0

//! Addressing: segments, effective addresses, linear addresses and their checks.
//!
//! The effective address of a ModRM, moffs or string operand ([`effective`],
//! [`string_addr`]), the bit-string displacement of BT* ([`bit_string`]), the linear
//! address through the segment base with the 64-bit canonical check ([`linearize`]), and
//! the limit and type checks of a segment outside 64-bit mode ([`SegCheck`]).

use super::alu::{gpr, gpr_get, mask, sext, Regs};
use super::decoder::{CodeSize, Insn, Op, Operand};
use super::execution::Exception;

/// A segment register, numbered as the encoding numbers them (index into [`Env::seg_base`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seg {
    /// ES.
    Es = 0,
    /// CS.
    Cs = 1,
    /// SS.
    Ss = 2,
    /// DS.
    Ds = 3,
    /// FS.
    Fs = 4,
    /// GS.
    Gs = 5,
}

/// What besides registers the address computation needs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Env {
    /// Segment bases indexed by [`Seg`] (ES, CS, SS, DS, FS, GS). In 64-bit mode only FS
    /// and GS bases are used, as in hardware. Outside it, linear addresses wrap at 4 GiB.
    pub seg_base: [u64; 6],
    /// The limit and type checks of each segment, indexed like `seg_base`.
    pub seg_check: [SegCheck; 6],
    /// CR4.LA57: canonical addresses have 57 bits instead of 48 (64-bit mode only).
    pub la57: bool,
}

/// What the CPU checks on an access through a segment outside 64-bit mode (SDM Vol. 3A,
/// 5.3 and 5.4); a failed check is #GP(0), or #SS(0) through SS.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SegCheck {
    /// Nothing: 64-bit mode, where only the canonical check applies.
    #[default]
    None,
    /// The segment register is unusable (a null selector): every access faults.
    Unusable,
    /// A code or data segment. In real and virtual-8086 mode the caller passes a
    /// read/write data type (no type checks there, only the limit).
    Desc {
        /// Byte-granular limit.
        limit: u32,
        /// Descriptor type (bit 3 code, bit 2 expand-down or conforming, bit 1 writable
        /// or readable).
        type_: u8,
        /// D/B: an expand-down segment ends at 4 GiB instead of 64 KiB.
        big: bool,
    },
}

impl SegCheck {
    /// Checks `size` bytes at `addr` for a read or a write (KVM's `__linearize`).
    pub(super) fn check(self, addr: &Addr, size: usize, write: bool) -> Result<(), Exception> {
        let fault = if addr.seg == Seg::Ss {
            Exception::Ss(0)
        } else {
            Exception::Gp(0)
        };
        let (limit, type_, big) = match self {
            SegCheck::None => return Ok(()),
            SegCheck::Unusable => return Err(fault),
            SegCheck::Desc { limit, type_, big } => (u64::from(limit), type_, big),
        };
        let code = type_ & 8 != 0;
        let allowed = if code {
            !write && type_ & 2 != 0
        } else {
            !write || type_ & 2 != 0
        };
        let last = addr.offset.saturating_add((size as u64).saturating_sub(1));
        let within = if !code && type_ & 4 != 0 {
            let top = if big { 0xffff_ffff } else { 0xffff };
            addr.offset > limit && last <= top
        } else {
            last <= limit
        };
        if allowed && within {
            Ok(())
        } else {
            Err(fault)
        }
    }
}

/// One memory access: the segment and offset (effective address) the instruction used,
/// and the linear address they make. The segment checks use them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Addr {
    /// Segment the access goes through.
    pub seg: Seg,
    /// Effective address (offset in the segment), already wrapped to the address size.
    pub offset: u64,
    /// Linear address.
    pub linear: u64,
}

fn canonical(linear: u64, la57: bool) -> bool {
    let shift = if la57 { 7 } else { 16 };
    (((linear << shift) as i64) >> shift) as u64 == linear
}

/// Forms the linear address of `seg:offset` (offset already wrapped to the address size).
fn linearize(mode: CodeSize, env: &Env, seg: Seg, offset: u64) -> Result<Addr, Exception> {
    let base = env.seg_base.get(seg as usize).copied().unwrap_or(0);
    let linear = match mode {
        CodeSize::Bits64 => {
            let l = if matches!(seg, Seg::Fs | Seg::Gs) {
                base.wrapping_add(offset)
            } else {
                offset
            };
            if !canonical(l, env.la57) {
                return Err(if seg == Seg::Ss {
                    Exception::Ss(0)
                } else {
                    Exception::Gp(0)
                });
            }
            l
        }
        _ => base.wrapping_add(offset) & 0xffff_ffff,
    };
    Ok(Addr {
        seg,
        offset,
        linear,
    })
}

/// Effective address of the ModRM / moffs operand, plus `extra` bytes (bit strings).
fn effective(insn: &Insn, regs: &Regs, extra: u64) -> u64 {
    let m = &insn.mem;
    let mut ea = (m.disp as u64).wrapping_add(extra);
    if let Some(b) = m.base {
        ea = ea.wrapping_add(gpr_get(regs, usize::from(b)));
    }
    if let Some(i) = m.index {
        ea = ea.wrapping_add(gpr_get(regs, usize::from(i)).wrapping_mul(u64::from(m.scale)));
    }
    if m.rip_relative {
        ea = ea.wrapping_add(regs.rip).wrapping_add(u64::from(insn.len));
    }
    ea & mask(insn.addr_size)
}

/// Bit-string displacement for BT* with a register offset and a memory operand: the
/// signed offset selects an operand-sized unit relative to the address.
/// Returns `(byte displacement, bit within the unit)`.
pub(super) fn bit_string(insn: &Insn, regs: &Regs) -> (u64, u32) {
    let size = insn.op_size;
    let (bits_log2, bit_mask) = match size {
        2 => (4, 15u32),
        4 => (5, 31),
        _ => (6, 63),
    };
    match insn.src {
        Operand::Imm(v) => (0, (v as u32) & bit_mask),
        Operand::Reg(n) => {
            let off = sext(gpr_get(regs, usize::from(n)), size) as i64;
            let bit = (off as u32) & bit_mask;
            if insn.dst == Operand::Mem {
                let units = off >> bits_log2;
                ((units as u64).wrapping_mul(u64::from(size)), bit)
            } else {
                (0, bit)
            }
        }
        _ => (0, 0),
    }
}

pub(super) fn operand_addr(insn: &Insn, regs: &Regs, env: &Env) -> Result<Addr, Exception> {
    let extra = match insn.op {
        Op::Bit(_) => bit_string(insn, regs).0,
        _ => 0,
    };
    linearize(insn.mode, env, insn.mem.seg, effective(insn, regs, extra))
}

pub(super) fn string_addr(
    insn: &Insn,
    regs: &Regs,
    env: &Env,
    seg: Seg,
    reg: usize,
) -> Result<Addr, Exception> {
    let off = gpr_get(regs, reg) & mask(insn.addr_size);
    linearize(insn.mode, env, seg, off)
}

impl Insn {
    /// The address of the explicit memory operand for these registers. For MOVS and STOS it is
    /// the destination, ES:rDI. For BT* with a register bit offset it includes the
    /// bit-string displacement. `None` if the instruction has no memory operand.
    /// `Err` when the address is not canonical.
    pub fn mem_addr(&self, regs: &Regs, env: &Env) -> Option<Result<Addr, Exception>> {
        match self.op {
            Op::Stos | Op::Movs => Some(string_addr(self, regs, env, Seg::Es, gpr::RDI)),
            _ if self.dst == Operand::Mem || self.src == Operand::Mem => {
                Some(operand_addr(self, regs, env))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::*;
    use super::*;

    #[test]
    fn bit_string_addressing() {
        // bts dword [rbx], rcx with a bit offset beyond the operand: 100 = 3*32 + 4.
        let mut m = TestMem::new();
        let mut r = regs();
        r.gpr[gpr::RBX] = RAM + 0x100;
        r.gpr[gpr::RCX] = 100;
        assert_eq!(
            run(CodeSize::Bits64, &[0x0f, 0xab, 0x0b], &mut r, &mut m),
            Outcome::Done
        );
        assert_eq!(m.get(RAM + 0x100 + 12, 4), 1 << 4);
        // Negative offset: -1 is bit 31 of the dword before.
        r.gpr[gpr::RCX] = u64::MAX;
        run(CodeSize::Bits64, &[0x0f, 0xab, 0x0b], &mut r, &mut m);
        assert_eq!(m.get(RAM + 0x100 - 4, 4), 1 << 31);
        // 64-bit: -65 is bit 63 of the qword two before.
        r.gpr[gpr::RCX] = (-65i64) as u64;
        run(CodeSize::Bits64, &[0x48, 0x0f, 0xab, 0x0b], &mut r, &mut m);
        assert_eq!(m.get(RAM + 0x100 - 16, 8), 1 << 63);
        // 16-bit operand: the offset register is taken as a signed 16-bit value.
        r.gpr[gpr::RCX] = 0xffff_0000_0000_0011; // cx = 17
        run(CodeSize::Bits64, &[0x66, 0x0f, 0xab, 0x0b], &mut r, &mut m);
        assert_eq!(m.get(RAM + 0x102, 2), 1 << 1);
        r.gpr[gpr::RCX] = 0x0000_ffff_ffff_fff0; // cx = -16: the word before, bit 0
        run(CodeSize::Bits64, &[0x66, 0x0f, 0xab, 0x0b], &mut r, &mut m);
        assert_eq!(m.get(RAM + 0x100 - 2, 2) & 1, 1);
        // 32-bit offset register, sign-extended from 32 bits: ecx = -33.
        r.gpr[gpr::RCX] = 0x1234_5678_ffff_ffdf;
        run(CodeSize::Bits64, &[0x0f, 0xb3, 0x0b], &mut r, &mut m); // btr
                                                                    // -33 = -2*32 + 31: dword at -8, bit 31 (was clear): CF=0.
        assert_eq!(r.rflags & flags::CF, 0);
        // BT reads through the same address and sets CF.
        r.gpr[gpr::RCX] = 100;
        run(CodeSize::Bits64, &[0x0f, 0xa3, 0x0b], &mut r, &mut m);
        assert_eq!(r.rflags & flags::CF, flags::CF);
        // The address is reported, too.
        let i = dec(CodeSize::Bits64, &[0x0f, 0xab, 0x0b]);
        assert_eq!(
            i.mem_addr(&r, &Env::default()).unwrap().unwrap().linear,
            RAM + 0x100 + 12
        );
        // Immediate offsets never move the address.
        r.gpr[gpr::RBX] = RAM + 0x200;
        run(CodeSize::Bits64, &[0x0f, 0xba, 0x2b, 100], &mut r, &mut m); // bts [rbx], 100 -> bit 4
        assert_eq!(m.get(RAM + 0x200, 4), 1 << 4);
    }

    #[test]
    fn rip_relative() {
        // mov [rip+0x10], eax at rip = RAM: writes at RAM + 6 + 0x10.
        let mut m = TestMem::new();
        let mut r = regs();
        r.rip = RAM;
        r.gpr[gpr::RAX] = 0xdead_beef;
        assert_eq!(
            run(
                CodeSize::Bits64,
                &[0x89, 0x05, 0x10, 0, 0, 0],
                &mut r,
                &mut m
            ),
            Outcome::Done
        );
        assert_eq!(m.get(RAM + 0x16, 4), 0xdead_beef);
        assert_eq!(r.rip, RAM + 6);
        // With an immediate after the displacement, the end of the whole instruction counts:
        // mov dword [rip+0x20], 5 is 10 bytes.
        r.rip = RAM;
        run(
            CodeSize::Bits64,
            &[0xc7, 0x05, 0x20, 0, 0, 0, 5, 0, 0, 0],
            &mut r,
            &mut m,
        );
        assert_eq!(m.get(RAM + 10 + 0x20, 4), 5);
        // Negative displacement.
        r.rip = RAM + 0x100;
        run(
            CodeSize::Bits64,
            &[0x89, 0x05, 0xf0, 0xff, 0xff, 0xff],
            &mut r,
            &mut m,
        );
        assert_eq!(m.get(RAM + 0x106 - 0x10, 4), 0xdead_beef);
        // 67: EIP-relative, wraps at 4 GiB.
        let i = dec(CodeSize::Bits64, &[0x67, 0x89, 0x05, 0x10, 0, 0, 0]);
        let mut r2 = regs();
        r2.rip = 0x1_ffff_fff0;
        let a = i.mem_addr(&r2, &Env::default()).unwrap().unwrap();
        assert_eq!(a.linear, (0x1_ffff_fff0u64 + 7 + 0x10) & 0xffff_ffff);
    }

    #[test]
    fn addressing_16bit() {
        let env = Env {
            seg_base: [0x1000, 0x2000, 0x3000, 0x4000, 0, 0],
            la57: false,
            ..Env::default()
        };
        let mut r = regs();
        // [bx+si] with wraparound at 64 KiB.
        r.gpr[gpr::RBX] = 0xffff;
        r.gpr[gpr::RSI] = 0x0002;
        let i = dec(CodeSize::Bits16, &[0x89, 0x00]);
        let a = i.mem_addr(&r, &env).unwrap().unwrap();
        assert_eq!((a.seg, a.offset, a.linear), (Seg::Ds, 1, 0x4001));
        // [bp+di-2] uses SS.
        r.gpr[gpr::RBP] = 0x0001;
        r.gpr[gpr::RDI] = 0x0000;
        let i = dec(CodeSize::Bits16, &[0x89, 0x43, 0xfe]);
        let a = i.mem_addr(&r, &env).unwrap().unwrap();
        assert_eq!(
            (a.seg, a.offset, a.linear),
            (Seg::Ss, 0xffff, 0x3000 + 0xffff)
        );
        // Upper register bits are ignored by 16-bit addressing.
        r.gpr[gpr::RBX] = 0xdead_0000_0010;
        let i = dec(CodeSize::Bits16, &[0x8b, 0x07]);
        assert_eq!(i.mem_addr(&r, &env).unwrap().unwrap().offset, 0x10);
        // ES override; execute a real-mode store: mov es:[di], ax.
        let env = Env {
            seg_base: [RAM, 0, 0, 0, 0, 0],
            la57: false,
            ..Env::default()
        };
        let mut m = TestMem::new();
        r.gpr[gpr::RDI] = 0x20;
        r.gpr[gpr::RAX] = 0xffff_1234;
        r.rip = 0xfffe;
        let i = dec(CodeSize::Bits16, &[0x26, 0x89, 0x05]);
        assert_eq!(execute(&i, &mut r, &env, &mut m, None), Ok(Outcome::Done));
        assert_eq!(m.get(RAM + 0x20, 4), 0x1234);
        assert_eq!(r.rip, 0x1_0001);
    }

    #[test]
    fn addressing_32bit_and_segments() {
        // 32-bit: base + index*scale + disp wraps at 4 GiB; so does base+segment.
        let env = Env {
            seg_base: [0, 0, 0, 0x10, 0, 0],
            la57: false,
            ..Env::default()
        };
        let mut r = regs();
        r.gpr[gpr::RAX] = 0xffff_fff0;
        r.gpr[gpr::RCX] = 0x8;
        let i = dec(CodeSize::Bits32, &[0x89, 0x54, 0x88, 0x04]); // mov [eax+ecx*4+4], edx
        let a = i.mem_addr(&r, &env).unwrap().unwrap();
        assert_eq!((a.offset, a.linear), (0x14, 0x24));
        // 64-bit: DS base ignored, FS base used, 64-bit wrap.
        let env = Env {
            seg_base: [0x111, 0x222, 0x333, 0x444, 0xffff_8000_0000_0000, 0x7000],
            la57: false,
            ..Env::default()
        };
        r.gpr[gpr::RAX] = 0x1000;
        let i = dec(CodeSize::Bits64, &[0x89, 0x10]);
        assert_eq!(i.mem_addr(&r, &env).unwrap().unwrap().linear, 0x1000);
        let i = dec(CodeSize::Bits64, &[0x64, 0x89, 0x10]);
        let a = i.mem_addr(&r, &env).unwrap().unwrap();
        assert_eq!(
            (a.seg, a.offset, a.linear),
            (Seg::Fs, 0x1000, 0xffff_8000_0000_1000)
        );
        // 67 in 64-bit mode: 32-bit effective address, then FS base in 64 bits.
        r.gpr[gpr::RAX] = 0x1_0000_0010;
        let i = dec(CodeSize::Bits64, &[0x65, 0x67, 0x89, 0x10]);
        assert_eq!(i.mem_addr(&r, &env).unwrap().unwrap().linear, 0x7010);
        // Non-canonical: #GP(0), or #SS(0) through SS.
        r.gpr[gpr::RAX] = 0x0000_8000_0000_0000;
        let mut m = TestMem::new();
        let before = r;
        let i = dec(CodeSize::Bits64, &[0x89, 0x10]);
        assert_eq!(
            execute(&i, &mut r, &env, &mut m, None),
            Ok(Outcome::Exception(Exception::Gp(0)))
        );
        r.gpr[gpr::RBP] = 0x0000_8000_0000_0000;
        let i = dec(CodeSize::Bits64, &[0x89, 0x55, 0x00]);
        assert_eq!(
            execute(&i, &mut r, &env, &mut m, None),
            Ok(Outcome::Exception(Exception::Ss(0)))
        );
        r.gpr[gpr::RBP] = 0;
        assert_eq!(r.gpr, before.gpr);
        assert_eq!(r.rip, before.rip);
        // LA57 makes it canonical.
        let env57 = Env { la57: true, ..env };
        let i = dec(CodeSize::Bits64, &[0x89, 0x10]);
        assert!(i.mem_addr(&r, &env57).unwrap().is_ok());
        // 32-bit mode RIP wraps at 4 GiB.
        let mut m = TestMem::new();
        let mut r = regs();
        r.rip = 0xffff_fffe;
        r.gpr[gpr::RAX] = RAM;
        assert_eq!(
            run(CodeSize::Bits32, &[0x89, 0x08], &mut r, &mut m),
            Outcome::Done
        );
        assert_eq!(r.rip, 0);
    }

    /// Issue 10 item 8: outside 64-bit mode every access passes its segment's limit and
    /// type checks (SDM Vol. 3A 5.3, 5.4), with #SS(0) through SS and #GP(0) otherwise.
    #[test]
    fn segment_limit_and_type_checks() {
        let data_rw = SegCheck::Desc {
            limit: 0xfff,
            type_: 3,
            big: true,
        };
        let mut env = Env {
            seg_check: [data_rw; 6],
            ..Env::default()
        };
        env.seg_base[Seg::Ds as usize] = RAM;
        env.seg_base[Seg::Ss as usize] = RAM;
        let mut m = TestMem::new();
        let mut r = regs();
        r.rip = 0x1000;
        // mov [eax], ecx: the last byte at the limit passes, one byte further faults.
        let store = dec(CodeSize::Bits32, &[0x89, 0x08]);
        r.gpr[gpr::RAX] = 0xffc;
        assert_eq!(
            execute(&store, &mut r, &env, &mut m, None),
            Ok(Outcome::Done)
        );
        r.rip = 0x1000;
        r.gpr[gpr::RAX] = 0xffd;
        assert_eq!(
            execute(&store, &mut r, &env, &mut m, None),
            Ok(Outcome::Exception(Exception::Gp(0)))
        );
        // Through SS ([ebp]): #SS(0).
        let via_ss = dec(CodeSize::Bits32, &[0x89, 0x4d, 0x00]);
        r.gpr[gpr::RBP] = 0x1000;
        assert_eq!(
            execute(&via_ss, &mut r, &env, &mut m, None),
            Ok(Outcome::Exception(Exception::Ss(0)))
        );
        // Read-only data: loads pass, stores and read-modify-writes fault before any read
        // (no MMIO read for an access the segment forbids).
        env.seg_check[Seg::Ds as usize] = SegCheck::Desc {
            limit: 0xffff_ffff,
            type_: 1,
            big: true,
        };
        r.gpr[gpr::RAX] = 0x10;
        let load = dec(CodeSize::Bits32, &[0x8b, 0x08]);
        assert_eq!(
            execute(&load, &mut r, &env, &mut m, None),
            Ok(Outcome::Done)
        );
        r.rip = 0x1000;
        assert_eq!(
            execute(&store, &mut r, &env, &mut m, None),
            Ok(Outcome::Exception(Exception::Gp(0)))
        );
        env.seg_base[Seg::Ds as usize] = 0;
        r.gpr[gpr::RAX] = u64::from(MMIO as u32);
        let add = dec(CodeSize::Bits32, &[0x01, 0x08]);
        assert_eq!(
            execute(&add, &mut r, &env, &mut m, None),
            Ok(Outcome::Exception(Exception::Gp(0)))
        );
        // Code segments: never written; read only if readable.
        env.seg_base[Seg::Ds as usize] = RAM;
        r.gpr[gpr::RAX] = 0x10;
        env.seg_check[Seg::Ds as usize] = SegCheck::Desc {
            limit: 0xffff_ffff,
            type_: 0xb,
            big: true,
        };
        assert_eq!(
            execute(&load, &mut r, &env, &mut m, None),
            Ok(Outcome::Done)
        );
        r.rip = 0x1000;
        assert_eq!(
            execute(&store, &mut r, &env, &mut m, None),
            Ok(Outcome::Exception(Exception::Gp(0)))
        );
        env.seg_check[Seg::Ds as usize] = SegCheck::Desc {
            limit: 0xffff_ffff,
            type_: 0x9,
            big: true,
        };
        assert_eq!(
            execute(&load, &mut r, &env, &mut m, None),
            Ok(Outcome::Exception(Exception::Gp(0)))
        );
        // Expand-down: valid offsets lie above the limit, up to 64 KiB (B=0) or 4 GiB.
        env.seg_check[Seg::Ds as usize] = SegCheck::Desc {
            limit: 0xfff,
            type_: 7,
            big: false,
        };
        r.gpr[gpr::RAX] = 0xffc;
        assert_eq!(
            execute(&load, &mut r, &env, &mut m, None),
            Ok(Outcome::Exception(Exception::Gp(0)))
        );
        r.gpr[gpr::RAX] = 0x1000;
        assert_eq!(
            execute(&load, &mut r, &env, &mut m, None),
            Ok(Outcome::Done)
        );
        r.rip = 0x1000;
        r.gpr[gpr::RAX] = 0xfffe;
        assert_eq!(
            execute(&load, &mut r, &env, &mut m, None),
            Ok(Outcome::Exception(Exception::Gp(0)))
        );
        // An unusable (null) segment: every access faults.
        env.seg_check[Seg::Es as usize] = SegCheck::Unusable;
        let stos = dec(CodeSize::Bits32, &[0xab]);
        assert_eq!(
            execute(&stos, &mut r, &env, &mut m, None),
            Ok(Outcome::Exception(Exception::Gp(0)))
        );
        // A REP string store stops at the limit with the iterations before it done.
        env.seg_check[Seg::Es as usize] = SegCheck::Desc {
            limit: 0x107,
            type_: 3,
            big: true,
        };
        env.seg_base[Seg::Es as usize] = RAM;
        let rep = dec(CodeSize::Bits32, &[0xf3, 0xab]);
        r.gpr[gpr::RDI] = 0x100;
        r.gpr[gpr::RCX] = 5;
        let out = execute_rep(&rep, &mut r, &env, &mut m, None, 1024);
        assert_eq!(out, Ok(Outcome::Exception(Exception::Gp(0))));
        assert_eq!((r.gpr[gpr::RCX], r.gpr[gpr::RDI]), (3, 0x108));
        // 64-bit mode: no limit checks.
        let env64 = Env {
            seg_check: [SegCheck::None; 6],
            ..Env::default()
        };
        let mut r = regs();
        r.gpr[gpr::RAX] = RAM + 0x1000;
        assert_eq!(
            run(CodeSize::Bits64, &[0x89, 0x08], &mut r, &mut m),
            Outcome::Done
        );
        let _ = env64;
    }
}
