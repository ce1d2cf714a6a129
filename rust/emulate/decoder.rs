// SPDX-License-Identifier: GPL-2.0

//! Decoding: prefixes, the opcode tables, ModRM/SIB, and the [`Insn`] they make.
//!
//! [`decode`] turns up to [`MAX_INSN_LEN`] bytes into an [`Insn`] or a [`DecodeError`]
//! (which says whether to fetch more bytes, inject #GP/#UD, or report an internal error).

use super::addressing::Seg;
use super::alu::{mask, sext};
use super::execution::Exception;

/// Longest legal x86 instruction (SDM Vol. 2, 2.3.11). Longer ones raise #GP(0).
pub const MAX_INSN_LEN: usize = 15;

/// Default operand/address size of the code segment, which is what decoding depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodeSize {
    /// Real mode, virtual-8086 mode, or a 16-bit protected-mode code segment.
    Bits16,
    /// 32-bit protected mode, or compatibility mode with CS.D=1.
    Bits32,
    /// 64-bit mode (IA-32e mode with CS.L=1).
    Bits64,
}

impl CodeSize {
    /// The code size for a CPU state. `efer_lma`: IA-32e mode active. `cs_l`, `cs_db`: the
    /// CS descriptor's L and D/B bits. `rflags_vm`: virtual-8086 mode. In real mode pass
    /// the hidden CS attributes, whose D bit is normally 0.
    pub fn from_cpu(efer_lma: bool, cs_l: bool, cs_db: bool, rflags_vm: bool) -> Self {
        if efer_lma && cs_l {
            CodeSize::Bits64
        } else if cs_db && !rflags_vm {
            CodeSize::Bits32
        } else {
            CodeSize::Bits16
        }
    }
}

/// Why [`decode`] failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The bytes end before the instruction does (and it is still under 15 bytes). Fetch
    /// more; if the next page cannot be fetched, inject that #PF.
    NeedMoreBytes,
    /// The instruction would be longer than 15 bytes: inject #GP(0).
    TooLong,
    /// An encoding that raises #UD: LOCK on an instruction or operand that does not allow it,
    /// a register operand where only memory is allowed, or an undefined opcode in a group
    /// this emulator decodes.
    Invalid,
    /// A valid instruction the emulator does not implement: report an internal error
    /// (do not inject anything). `opcode` is the primary opcode, or 0x0Fxx for two-byte ones.
    Unsupported {
        /// The opcode.
        opcode: u16,
    },
}

impl DecodeError {
    /// The exception to inject for this failure, or `None` when the hypervisor should
    /// instead fetch more bytes ([`DecodeError::NeedMoreBytes`]) or report an internal error
    /// ([`DecodeError::Unsupported`]).
    pub fn exception(&self) -> Option<Exception> {
        match self {
            DecodeError::NeedMoreBytes | DecodeError::Unsupported { .. } => None,
            DecodeError::TooLong => Some(Exception::Gp(0)),
            DecodeError::Invalid => Some(Exception::Ud),
        }
    }
}

/// The eight classic ALU operations, numbered as in opcodes 00-3F and group 1 /r.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AluOp {
    /// ADD.
    Add,
    /// OR.
    Or,
    /// ADC.
    Adc,
    /// SBB.
    Sbb,
    /// AND.
    And,
    /// SUB.
    Sub,
    /// XOR.
    Xor,
    /// CMP (no write-back).
    Cmp,
}

impl AluOp {
    fn from_num(n: u8) -> Self {
        match n & 7 {
            0 => AluOp::Add,
            1 => AluOp::Or,
            2 => AluOp::Adc,
            3 => AluOp::Sbb,
            4 => AluOp::And,
            5 => AluOp::Sub,
            6 => AluOp::Xor,
            _ => AluOp::Cmp,
        }
    }
}

/// One-operand read-modify-write operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnaryOp {
    /// INC (CF unchanged).
    Inc,
    /// DEC (CF unchanged).
    Dec,
    /// NOT (no flags).
    Not,
    /// NEG.
    Neg,
}

/// Bit test operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BitOp {
    /// BT (read only).
    Bt,
    /// BTS.
    Bts,
    /// BTR.
    Btr,
    /// BTC.
    Btc,
}

/// The operation of a decoded instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// MOV (88-8B, A0-A3, C6/C7 /0).
    Mov,
    /// MOVZX (0F B6/B7).
    Movzx,
    /// MOVSX (0F BE/BF).
    Movsx,
    /// MOVNTI (0F C3).
    Movnti,
    /// XCHG (86/87).
    Xchg,
    /// XADD (0F C0/C1).
    Xadd,
    /// CMPXCHG (0F B0/B1).
    Cmpxchg,
    /// CMPXCHG8B (0F C7 /1).
    Cmpxchg8b,
    /// CMPXCHG16B (REX.W 0F C7 /1).
    Cmpxchg16b,
    /// ADD/OR/ADC/SBB/AND/SUB/XOR/CMP.
    Alu(AluOp),
    /// TEST (84/85, F6/F7 /0).
    Test,
    /// INC/DEC/NOT/NEG.
    Unary(UnaryOp),
    /// BT/BTS/BTR/BTC.
    Bit(BitOp),
    /// STOS (AA/AB), possibly with REP.
    Stos,
    /// MOVS (A4/A5), possibly with REP.
    Movs,
}

/// An instruction operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operand {
    /// No operand.
    None,
    /// General register `n` (0..15) accessed at the operand size (for bytes: AL..BL,
    /// SPL..DIL with REX, R8B..R15B).
    Reg(u8),
    /// AH, CH, DH or BH: bits 15:8 of register `n` (0..3).
    RegHigh8(u8),
    /// The memory operand described by [`Insn::mem`].
    Mem,
    /// An immediate, already sign-extended and masked to the operand size.
    Imm(u64),
}

/// A decoded memory operand: `seg:[base + index*scale + disp]`, or `[rip_next + disp]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemRef {
    /// Segment: the override if there is one, else DS, or SS for rSP/rBP-based addresses.
    /// For MOVS this is the source segment; the destination is always ES.
    pub seg: Seg,
    /// Base register number.
    pub base: Option<u8>,
    /// Index register number.
    pub index: Option<u8>,
    /// Scale: 1, 2, 4 or 8.
    pub scale: u8,
    /// Displacement (sign-extended; for moffs the full offset).
    pub disp: i64,
    /// RIP-relative: the address of the next instruction is added.
    pub rip_relative: bool,
}

/// A decoded instruction.
///
/// # Invariants
/// Built only by [`decode`]. `len` is 1..=15. `op_size` is 1, 2, 4 or 8, or 16 for
/// CMPXCHG16B (8 for CMPXCHG8B). `src_size` is 1, 2, 4 or 8. `addr_size` is 2, 4 or 8.
/// Register numbers are below 16, and below 4 in `RegHigh8`. At most one operand is
/// `Operand::Mem`, except MOVS and STOS, which have none and address memory implicitly.
/// `lock` is only set where the LOCK prefix is legal. The emulator still masks every
/// index, so a broken invariant can give wrong results but never a panic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    pub(super) op: Op,
    pub(super) mode: CodeSize,
    pub(super) len: u8,
    pub(super) op_size: u8,
    pub(super) src_size: u8,
    pub(super) addr_size: u8,
    pub(super) lock: bool,
    pub(super) rep: bool,
    pub(super) dst: Operand,
    pub(super) src: Operand,
    pub(super) mem: MemRef,
}

impl Insn {
    /// The operation.
    pub fn op(&self) -> Op {
        self.op
    }
    /// Length in bytes.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }
    /// Never true (instructions are at least one byte); here for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The code size it was decoded for.
    pub fn mode(&self) -> CodeSize {
        self.mode
    }
    /// Operand size in bytes (the destination's, for MOVZX/MOVSX). 8 for CMPXCHG8B and
    /// 16 for CMPXCHG16B.
    pub fn op_size(&self) -> u8 {
        self.op_size
    }
    /// Source size for MOVZX/MOVSX; equals `op_size` otherwise.
    pub fn src_size(&self) -> u8 {
        self.src_size
    }
    /// Address size in bytes.
    pub fn addr_size(&self) -> u8 {
        self.addr_size
    }
    /// LOCK prefix present.
    pub fn lock(&self) -> bool {
        self.lock
    }
    /// REP/REPNE prefix on a string instruction.
    pub fn rep(&self) -> bool {
        self.rep
    }
    /// Destination operand. For MOVS/STOS this is `None`, because memory is addressed implicitly.
    pub fn dst(&self) -> Operand {
        self.dst
    }
    /// Source operand. For the BT family, this is the bit offset.
    pub fn src(&self) -> Operand {
        self.src
    }
    /// The memory operand. Only meaningful when `dst` or `src` is `Operand::Mem`, or for
    /// MOVS, where it holds the source segment.
    pub fn mem(&self) -> &MemRef {
        &self.mem
    }
    /// Whether the instruction may write memory (everything except CMP, TEST, BT and
    /// loads into a register).
    pub fn writes_memory(&self) -> bool {
        match self.op {
            Op::Stos | Op::Movs => true,
            Op::Alu(AluOp::Cmp) | Op::Test | Op::Bit(BitOp::Bt) => false,
            _ => self.dst == Operand::Mem,
        }
    }
}

/// Reads instruction bytes, enforcing the 15-byte limit.
///
/// # Invariants
/// `pos <= MAX_INSN_LEN`.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn byte(&mut self) -> Result<u8, DecodeError> {
        if self.pos >= MAX_INSN_LEN {
            return Err(DecodeError::TooLong);
        }
        let b = *self.bytes.get(self.pos).ok_or(DecodeError::NeedMoreBytes)?;
        self.pos = self.pos.saturating_add(1);
        Ok(b)
    }

    /// Little-endian immediate of `n` (<= 8) bytes.
    fn imm(&mut self, n: u8) -> Result<u64, DecodeError> {
        let mut v = 0u64;
        for i in 0..n.min(8) {
            v |= u64::from(self.byte()?) << (u32::from(i) * 8);
        }
        Ok(v)
    }
}

/// Register operand `n` at `size`: without REX, byte registers 4..7 are AH, CH, DH, BH.
fn reg_operand(n: u8, size: u8, rex: bool) -> Operand {
    let n = n & 15;
    if size == 1 && !rex && (4..8).contains(&n) {
        Operand::RegHigh8(n & 3)
    } else {
        Operand::Reg(n)
    }
}

#[derive(Clone, Copy)]
enum Rm {
    Reg(u8),
    Mem(MemRef),
}

/// Prefix and mode state the ModRM decoder needs.
struct Ctx {
    mode: CodeSize,
    addr_size: u8,
    rex: u8,
    seg: Option<Seg>,
}

impl Ctx {
    fn seg_or(&self, default: Seg) -> Seg {
        self.seg.unwrap_or(default)
    }
}

/// Decodes ModRM (plus SIB and displacement). Returns `(mod, reg | REX.R, rm operand)`.
fn modrm(c: &mut Cursor<'_>, x: &Ctx) -> Result<(u8, u8, Rm), DecodeError> {
    let b = c.byte()?;
    let md = b >> 6;
    let reg = ((b >> 3) & 7) | ((x.rex & 4) << 1);
    let rm = b & 7;
    if md == 3 {
        return Ok((md, reg, Rm::Reg(rm | ((x.rex & 1) << 3))));
    }
    let mut m = MemRef {
        seg: Seg::Ds,
        base: None,
        index: None,
        scale: 1,
        disp: 0,
        rip_relative: false,
    };
    if x.addr_size == 2 {
        let (base, index) = match rm {
            0 => (Some(3), Some(6)),
            1 => (Some(3), Some(7)),
            2 => (Some(5), Some(6)),
            3 => (Some(5), Some(7)),
            4 => (Some(6), None),
            5 => (Some(7), None),
            6 if md == 0 => (None, None),
            6 => (Some(5), None),
            _ => (Some(3), None),
        };
        m.base = base;
        m.index = index;
        m.disp = match md {
            0 if rm == 6 => sext(c.imm(2)?, 2) as i64,
            1 => sext(c.imm(1)?, 1) as i64,
            2 => sext(c.imm(2)?, 2) as i64,
            _ => 0,
        };
        m.seg = x.seg_or(if base == Some(5) { Seg::Ss } else { Seg::Ds });
        return Ok((md, reg, Rm::Mem(m)));
    }
    let mut disp32_only = false;
    if rm == 4 {
        let sib = c.byte()?;
        m.scale = 1 << (sib >> 6);
        let index = ((sib >> 3) & 7) | ((x.rex & 2) << 2);
        if index != 4 {
            m.index = Some(index);
        }
        let base = sib & 7;
        if base == 5 && md == 0 {
            disp32_only = true;
        } else {
            m.base = Some(base | ((x.rex & 1) << 3));
        }
    } else if rm == 5 && md == 0 {
        disp32_only = true;
        m.rip_relative = x.mode == CodeSize::Bits64;
    } else {
        m.base = Some(rm | ((x.rex & 1) << 3));
    }
    m.disp = match md {
        1 => sext(c.imm(1)?, 1) as i64,
        2 => sext(c.imm(4)?, 4) as i64,
        _ if disp32_only => sext(c.imm(4)?, 4) as i64,
        _ => 0,
    };
    m.seg = x.seg_or(if matches!(m.base, Some(4) | Some(5)) {
        Seg::Ss
    } else {
        Seg::Ds
    });
    Ok((md, reg, Rm::Mem(m)))
}

/// Decodes one instruction from `bytes` (fetched at RIP) for code of size `mode`.
///
/// Only the first [`MAX_INSN_LEN`] bytes are looked at. Never panics, whatever the bytes.
pub fn decode(bytes: &[u8], mode: CodeSize) -> Result<Insn, DecodeError> {
    let mut c = Cursor { bytes, pos: 0 };
    let mut opsize_pfx = false;
    let mut addr_pfx = false;
    let mut lock = false;
    let mut rep = false;
    let mut seg = None;
    let mut rex = 0u8;
    let long = mode == CodeSize::Bits64;
    let opcode = loop {
        let b = c.byte()?;
        match b {
            0x66 => opsize_pfx = true,
            0x67 => addr_pfx = true,
            0xF0 => lock = true,
            0xF2 | 0xF3 => rep = true,
            0x26 => seg = Some(Seg::Es),
            0x2E => seg = Some(Seg::Cs),
            0x36 => seg = Some(Seg::Ss),
            0x3E => seg = Some(Seg::Ds),
            0x64 => seg = Some(Seg::Fs),
            0x65 => seg = Some(Seg::Gs),
            0x40..=0x4F if long => {
                rex = b;
                continue;
            }
            _ => break b,
        }
        // A REX prefix only counts immediately before the opcode.
        rex = 0;
    };
    // 64-bit mode ignores CS/DS/ES/SS overrides.
    if long && !matches!(seg, Some(Seg::Fs) | Some(Seg::Gs)) {
        seg = None;
    }
    let has_rex = rex != 0;
    let rex_w = rex & 8 != 0;
    let op_size: u8 = if long && rex_w {
        8
    } else if (mode == CodeSize::Bits16) != opsize_pfx {
        2
    } else {
        4
    };
    let addr_size: u8 = match (mode, addr_pfx) {
        (CodeSize::Bits64, false) => 8,
        (CodeSize::Bits64, true) | (CodeSize::Bits32, false) | (CodeSize::Bits16, true) => 4,
        (CodeSize::Bits32, true) | (CodeSize::Bits16, false) => 2,
    };
    let x = Ctx {
        mode,
        addr_size,
        rex,
        seg,
    };
    let mut insn = Insn {
        op: Op::Mov,
        mode,
        len: 0,
        op_size,
        src_size: op_size,
        addr_size,
        lock,
        rep: false,
        dst: Operand::None,
        src: Operand::None,
        mem: MemRef {
            seg: x.seg_or(Seg::Ds),
            base: None,
            index: None,
            scale: 1,
            disp: 0,
            rip_relative: false,
        },
    };
    let byte_or = |op: u8| if op & 1 == 0 { 1 } else { op_size };
    // iz: imm16 for 16-bit operands, else imm32 sign-extended to the operand size.
    let iz = |c: &mut Cursor<'_>, size: u8| -> Result<u64, DecodeError> {
        let n = size.min(4);
        Ok(sext(c.imm(n)?, n) & mask(size))
    };
    let e_operand = |rm: Rm, size: u8, insn: &mut Insn| match rm {
        Rm::Reg(n) => reg_operand(n, size, has_rex),
        Rm::Mem(m) => {
            insn.mem = m;
            Operand::Mem
        }
    };
    let unsupported = |opcode: u16| Err(DecodeError::Unsupported { opcode });

    match opcode {
        // ALU r/m forms: 00-03, 08-0B, ..., 38-3B.
        0x00..=0x3F if opcode & 7 < 4 => {
            let size = byte_or(opcode);
            let (_, reg, rm) = modrm(&mut c, &x)?;
            insn.op = Op::Alu(AluOp::from_num(opcode >> 3));
            insn.op_size = size;
            let e = e_operand(rm, size, &mut insn);
            let g = reg_operand(reg, size, has_rex);
            (insn.dst, insn.src) = if opcode & 2 == 0 { (e, g) } else { (g, e) };
        }
        0x80..=0x83 => {
            if opcode == 0x82 && long {
                return Err(DecodeError::Invalid);
            }
            let size = byte_or(opcode);
            let (_, reg, rm) = modrm(&mut c, &x)?;
            insn.op = Op::Alu(AluOp::from_num(reg));
            insn.op_size = size;
            insn.dst = e_operand(rm, size, &mut insn);
            let imm = match opcode {
                0x81 => iz(&mut c, size)?,
                _ => sext(c.imm(1)?, 1) & mask(size),
            };
            insn.src = Operand::Imm(imm);
        }
        0x84..=0x8B => {
            let size = byte_or(opcode);
            let (_, reg, rm) = modrm(&mut c, &x)?;
            insn.op = match opcode {
                0x84 | 0x85 => Op::Test,
                0x86 | 0x87 => Op::Xchg,
                _ => Op::Mov,
            };
            insn.op_size = size;
            let e = e_operand(rm, size, &mut insn);
            let g = reg_operand(reg, size, has_rex);
            (insn.dst, insn.src) = if opcode >= 0x8A { (g, e) } else { (e, g) };
        }
        // MOVSXD (64-bit mode; ARPL elsewhere): sign-extends 32 bits with REX.W, else a
        // plain 32- or 16-bit move.
        0x63 if long => {
            let (_, reg, rm) = modrm(&mut c, &x)?;
            insn.op = Op::Movsx;
            insn.src_size = op_size.min(4);
            insn.src = e_operand(rm, insn.src_size, &mut insn);
            insn.dst = reg_operand(reg, op_size, has_rex);
        }
        0xA0..=0xA3 => {
            let size = byte_or(opcode);
            insn.op = Op::Mov;
            insn.op_size = size;
            insn.mem.disp = c.imm(addr_size)? as i64;
            let acc = Operand::Reg(0);
            (insn.dst, insn.src) = if opcode < 0xA2 {
                (acc, Operand::Mem)
            } else {
                (Operand::Mem, acc)
            };
        }
        0xA4 | 0xA5 | 0xAA | 0xAB => {
            insn.op = if opcode < 0xA8 { Op::Movs } else { Op::Stos };
            insn.op_size = byte_or(opcode);
            insn.rep = rep;
        }
        0xC6 | 0xC7 => {
            let size = byte_or(opcode);
            let (_, reg, rm) = modrm(&mut c, &x)?;
            if reg & 7 != 0 {
                // /7 is XABORT/XBEGIN; the rest are undefined.
                return if reg & 7 == 7 {
                    unsupported(u16::from(opcode))
                } else {
                    Err(DecodeError::Invalid)
                };
            }
            insn.op = Op::Mov;
            insn.op_size = size;
            insn.dst = e_operand(rm, size, &mut insn);
            insn.src = Operand::Imm(if size == 1 {
                c.imm(1)?
            } else {
                iz(&mut c, size)?
            });
        }
        0xF6 | 0xF7 => {
            let size = byte_or(opcode);
            let (_, reg, rm) = modrm(&mut c, &x)?;
            insn.op_size = size;
            insn.dst = e_operand(rm, size, &mut insn);
            match reg & 7 {
                // /1 is an undocumented alias of TEST on Intel and AMD.
                0 | 1 => {
                    insn.op = Op::Test;
                    insn.src = Operand::Imm(if size == 1 {
                        c.imm(1)?
                    } else {
                        iz(&mut c, size)?
                    });
                }
                2 => insn.op = Op::Unary(UnaryOp::Not),
                3 => insn.op = Op::Unary(UnaryOp::Neg),
                _ => return unsupported(u16::from(opcode)),
            }
        }
        0xFE | 0xFF => {
            let size = byte_or(opcode);
            let (_, reg, rm) = modrm(&mut c, &x)?;
            insn.op_size = size;
            insn.dst = e_operand(rm, size, &mut insn);
            insn.op = match (opcode, reg & 7) {
                (_, 0) => Op::Unary(UnaryOp::Inc),
                (_, 1) => Op::Unary(UnaryOp::Dec),
                (0xFE, _) | (_, 7) => return Err(DecodeError::Invalid),
                _ => return unsupported(u16::from(opcode)),
            };
        }
        0x0F => {
            let op2 = c.byte()?;
            let code = 0x0F00 | u16::from(op2);
            match op2 {
                0xA3 | 0xAB | 0xB3 | 0xBB => {
                    let (_, reg, rm) = modrm(&mut c, &x)?;
                    insn.op = Op::Bit(match op2 {
                        0xA3 => BitOp::Bt,
                        0xAB => BitOp::Bts,
                        0xB3 => BitOp::Btr,
                        _ => BitOp::Btc,
                    });
                    insn.dst = e_operand(rm, op_size, &mut insn);
                    insn.src = Operand::Reg(reg);
                }
                0xBA => {
                    let (_, reg, rm) = modrm(&mut c, &x)?;
                    insn.op = Op::Bit(match reg & 7 {
                        4 => BitOp::Bt,
                        5 => BitOp::Bts,
                        6 => BitOp::Btr,
                        7 => BitOp::Btc,
                        _ => return Err(DecodeError::Invalid),
                    });
                    insn.dst = e_operand(rm, op_size, &mut insn);
                    insn.src = Operand::Imm(c.imm(1)?);
                }
                0xB0 | 0xB1 | 0xC0 | 0xC1 => {
                    let size = byte_or(op2);
                    let (_, reg, rm) = modrm(&mut c, &x)?;
                    insn.op = if op2 < 0xC0 { Op::Cmpxchg } else { Op::Xadd };
                    insn.op_size = size;
                    insn.dst = e_operand(rm, size, &mut insn);
                    insn.src = reg_operand(reg, size, has_rex);
                }
                0xB6 | 0xB7 | 0xBE | 0xBF => {
                    let (_, reg, rm) = modrm(&mut c, &x)?;
                    let src_size = if op2 & 1 == 0 { 1 } else { 2 };
                    insn.op = if op2 < 0xB8 { Op::Movzx } else { Op::Movsx };
                    insn.src_size = src_size;
                    insn.src = e_operand(rm, src_size, &mut insn);
                    insn.dst = Operand::Reg(reg);
                }
                0xC3 => {
                    let (md, reg, rm) = modrm(&mut c, &x)?;
                    if md == 3 || opsize_pfx {
                        return Err(DecodeError::Invalid);
                    }
                    // No 16-bit form: 32 bits unless REX.W, whatever the code size.
                    insn.op = Op::Movnti;
                    insn.op_size = if rex_w { 8 } else { 4 };
                    insn.dst = e_operand(rm, insn.op_size, &mut insn);
                    insn.src = Operand::Reg(reg);
                }
                0xC7 => {
                    let (md, reg, rm) = modrm(&mut c, &x)?;
                    if reg & 7 != 1 {
                        return unsupported(code);
                    }
                    if md == 3 {
                        return Err(DecodeError::Invalid);
                    }
                    insn.op = if rex_w { Op::Cmpxchg16b } else { Op::Cmpxchg8b };
                    insn.op_size = if rex_w { 16 } else { 8 };
                    insn.src_size = insn.op_size;
                    insn.dst = e_operand(rm, 8, &mut insn);
                }
                _ => return unsupported(code),
            }
        }
        _ => return unsupported(u16::from(opcode)),
    }
    if !matches!(
        insn.op,
        Op::Movzx | Op::Movsx | Op::Cmpxchg8b | Op::Cmpxchg16b
    ) {
        insn.src_size = insn.op_size;
    }
    if lock && !lockable(&insn) {
        return Err(DecodeError::Invalid);
    }
    // pos is at most MAX_INSN_LEN.
    insn.len = c.pos as u8;
    Ok(insn)
}

/// Whether LOCK is legal: the locked instructions, with a memory destination.
fn lockable(insn: &Insn) -> bool {
    insn.dst == Operand::Mem
        && match insn.op {
            Op::Alu(op) => op != AluOp::Cmp,
            Op::Bit(op) => op != BitOp::Bt,
            Op::Unary(_) | Op::Xchg | Op::Xadd | Op::Cmpxchg | Op::Cmpxchg8b | Op::Cmpxchg16b => {
                true
            }
            _ => false,
        }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use std::vec;

    /// Encodings produced by GNU as (`.intel_syntax noprefix`, `.code16/32/64`).
    #[rustfmt::skip]
    const TABLE: &[(CodeSize, &[u8], Op)] = &[
        (CodeSize::Bits64, &[0x89, 0x03], Op::Mov), // mov [rbx], eax
        (CodeSize::Bits64, &[0x48, 0x89, 0x0d, 0x34, 0x12, 0x00, 0x00], Op::Mov), // mov qword ptr [rip+0x1234], rcx
        (CodeSize::Bits64, &[0x43, 0x88, 0x74, 0xac, 0x10], Op::Mov), // mov byte ptr [r12+r13*4+0x10], sil
        (CodeSize::Bits64, &[0x8a, 0x20], Op::Mov), // mov ah, byte ptr [rax]
        (CodeSize::Bits64, &[0x64, 0x66, 0x45, 0x8b, 0x48, 0xf8], Op::Mov), // mov r9w, word ptr fs:[r8-8]
        (CodeSize::Bits64, &[0xc7, 0x44, 0x24, 0x08, 0x78, 0x56, 0x34, 0x12], Op::Mov), // mov dword ptr [rsp+8], 0x12345678
        (CodeSize::Bits64, &[0x48, 0xc7, 0x45, 0x00, 0xfb, 0xff, 0xff, 0xff], Op::Mov), // mov qword ptr [rbp], -5
        (CodeSize::Bits64, &[0x65, 0xc6, 0x04, 0x25, 0x10, 0x00, 0x00, 0x00, 0x7f], Op::Mov), // mov byte ptr gs:[0x10], 0x7f
        (CodeSize::Bits64, &[0xa1, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11], Op::Mov), // movabs eax, ds:0x1122334455667788
        (CodeSize::Bits64, &[0x48, 0xa3, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11], Op::Mov), // movabs ds:0x1122334455667788, rax
        (CodeSize::Bits64, &[0xa0, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11], Op::Mov), // movabs al, ds:0x1122334455667788
        (CodeSize::Bits64, &[0x0f, 0xb6, 0x07], Op::Movzx), // movzx eax, byte ptr [rdi]
        (CodeSize::Bits64, &[0x4c, 0x0f, 0xb7, 0x14, 0x77], Op::Movzx), // movzx r10, word ptr [rdi+rsi*2]
        (CodeSize::Bits64, &[0x49, 0x0f, 0xbe, 0x45, 0x00], Op::Movsx), // movsx rax, byte ptr [r13]
        (CodeSize::Bits64, &[0x48, 0x63, 0x0b], Op::Movsx), // movsxd rcx, dword ptr [rbx]
        (CodeSize::Bits64, &[0x63, 0x0b], Op::Movsx), // movsxd ecx, dword ptr [rbx]
        (CodeSize::Bits64, &[0x41, 0x0f, 0xbf, 0x8d, 0x00, 0x01, 0x00, 0x00], Op::Movsx), // movsx ecx, word ptr [r13+0x100]
        (CodeSize::Bits64, &[0x48, 0x87, 0x02], Op::Xchg), // xchg [rdx], rax
        (CodeSize::Bits64, &[0x86, 0x3a], Op::Xchg), // xchg byte ptr [rdx], bh
        (CodeSize::Bits64, &[0xf0, 0x48, 0x0f, 0xb1, 0x37], Op::Cmpxchg), // lock cmpxchg [rdi], rsi
        (CodeSize::Bits64, &[0x0f, 0xb0, 0x17], Op::Cmpxchg), // cmpxchg byte ptr [rdi], dl
        (CodeSize::Bits64, &[0xf0, 0x0f, 0xc7, 0x0f], Op::Cmpxchg8b), // lock cmpxchg8b qword ptr [rdi]
        (CodeSize::Bits64, &[0xf0, 0x4a, 0x0f, 0xc7, 0x0c, 0x07], Op::Cmpxchg16b), // lock cmpxchg16b xmmword ptr [rdi+r8]
        (CodeSize::Bits64, &[0xf0, 0x0f, 0xc1, 0x08], Op::Xadd), // lock xadd [rax], ecx
        (CodeSize::Bits64, &[0x0f, 0xc0, 0x08], Op::Xadd), // xadd byte ptr [rax], cl
        (CodeSize::Bits64, &[0x01, 0x08], Op::Alu(AluOp::Add)), // add [rax], ecx
        (CodeSize::Bits64, &[0xf0, 0x48, 0x83, 0x08, 0x40], Op::Alu(AluOp::Or)), // lock or qword ptr [rax], 0x40
        (CodeSize::Bits64, &[0x80, 0x10, 0x80], Op::Alu(AluOp::Adc)), // adc byte ptr [rax], 0x80
        (CodeSize::Bits64, &[0x48, 0x1b, 0x03], Op::Alu(AluOp::Sbb)), // sbb rax, [rbx]
        (CodeSize::Bits64, &[0xf0, 0x49, 0x83, 0x27, 0xfe], Op::Alu(AluOp::And)), // lock and qword ptr [r15], -2
        (CodeSize::Bits64, &[0x81, 0x28, 0x78, 0x56, 0x34, 0x12], Op::Alu(AluOp::Sub)), // sub dword ptr [rax], 0x12345678
        (CodeSize::Bits64, &[0x32, 0x08], Op::Alu(AluOp::Xor)), // xor cl, byte ptr [rax]
        (CodeSize::Bits64, &[0x48, 0x81, 0x38, 0xff, 0xff, 0xff, 0x7f], Op::Alu(AluOp::Cmp)), // cmp qword ptr [rax], 0x7fffffff
        (CodeSize::Bits64, &[0x66, 0x44, 0x3b, 0x00], Op::Alu(AluOp::Cmp)), // cmp r8w, word ptr [rax]
        (CodeSize::Bits64, &[0xf0, 0x48, 0xff, 0x00], Op::Unary(UnaryOp::Inc)), // lock inc qword ptr [rax]
        (CodeSize::Bits64, &[0xfe, 0x08], Op::Unary(UnaryOp::Dec)), // dec byte ptr [rax]
        (CodeSize::Bits64, &[0x66, 0xf7, 0x10], Op::Unary(UnaryOp::Not)), // not word ptr [rax]
        (CodeSize::Bits64, &[0xf0, 0xf7, 0x18], Op::Unary(UnaryOp::Neg)), // lock neg dword ptr [rax]
        (CodeSize::Bits64, &[0xf0, 0x48, 0x0f, 0xab, 0x08], Op::Bit(BitOp::Bts)), // lock bts [rax], rcx
        (CodeSize::Bits64, &[0x0f, 0xba, 0x30, 0x1f], Op::Bit(BitOp::Btr)), // btr dword ptr [rax], 31
        (CodeSize::Bits64, &[0x66, 0x0f, 0xbb, 0x10], Op::Bit(BitOp::Btc)), // btc word ptr [rax], dx
        (CodeSize::Bits64, &[0x48, 0x0f, 0xba, 0x20, 0x3f], Op::Bit(BitOp::Bt)), // bt qword ptr [rax], 63
        (CodeSize::Bits64, &[0x85, 0x10], Op::Test), // test [rax], edx
        (CodeSize::Bits64, &[0xf6, 0x00, 0x01], Op::Test), // test byte ptr [rax], 1
        (CodeSize::Bits64, &[0x48, 0xf7, 0x00, 0xff, 0xff, 0xff, 0xff], Op::Test), // test qword ptr [rax], -1
        (CodeSize::Bits64, &[0xf3, 0x48, 0xab], Op::Stos), // rep stosq
        (CodeSize::Bits64, &[0xaa], Op::Stos), // stosb
        (CodeSize::Bits64, &[0xf3, 0xa5], Op::Movs), // rep movsd
        (CodeSize::Bits64, &[0x66, 0xa5], Op::Movs), // movsw
        (CodeSize::Bits64, &[0x48, 0x0f, 0xc3, 0x08], Op::Movnti), // movnti [rax], rcx
        (CodeSize::Bits64, &[0x44, 0x0f, 0xc3, 0x8c, 0xd8, 0x00, 0x10, 0x00, 0x00], Op::Movnti), // movnti [rax+rbx*8+0x1000], r9d
        (CodeSize::Bits64, &[0x67, 0x8b, 0x00], Op::Mov), // mov eax, [eax]
        (CodeSize::Bits64, &[0x67, 0x8b, 0x05, 0x10, 0x00, 0x00, 0x00], Op::Mov), // mov eax, [eip+0x10]
        (CodeSize::Bits64, &[0x48, 0x8b, 0x04, 0x25, 0x00, 0x10, 0x00, 0x00], Op::Mov), // mov rax, [0x1000]
        (CodeSize::Bits64, &[0x49, 0x8b, 0x04, 0x24], Op::Mov), // mov rax, [r12]
        (CodeSize::Bits64, &[0x49, 0x8b, 0x45, 0x00], Op::Mov), // mov rax, [r13]
        (CodeSize::Bits64, &[0x4a, 0x8b, 0x04, 0x24], Op::Mov), // mov rax, [rsp+r12*1]
        (CodeSize::Bits32, &[0x89, 0x08], Op::Mov), // mov [eax], ecx
        (CodeSize::Bits32, &[0xf0, 0x0f, 0xc7, 0x08], Op::Cmpxchg8b), // lock cmpxchg8b qword ptr [eax]
        (CodeSize::Bits32, &[0xf0, 0x0f, 0xc7, 0x8c, 0xce, 0x78, 0x56, 0x34, 0x12], Op::Cmpxchg8b), // lock cmpxchg8b qword ptr [esi+ecx*8+0x12345678]
        (CodeSize::Bits32, &[0xc7, 0x05, 0x00, 0x10, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00], Op::Mov), // mov dword ptr [0x1000], 5
        (CodeSize::Bits32, &[0x66, 0x89, 0x45, 0xfc], Op::Mov), // mov word ptr [ebp-4], ax
        (CodeSize::Bits32, &[0x67, 0x66, 0x8b, 0x00], Op::Mov), // mov ax, [bx+si]
        (CodeSize::Bits32, &[0xa1, 0x78, 0x56, 0x34, 0x12], Op::Mov), // mov eax, ds:0x12345678
        (CodeSize::Bits32, &[0xf3, 0xab], Op::Stos), // rep stosd
        (CodeSize::Bits32, &[0xf3, 0xa4], Op::Movs), // rep movsb
        (CodeSize::Bits32, &[0xf0, 0x83, 0x20, 0xfe], Op::Alu(AluOp::And)), // lock and dword ptr [eax], 0xfffffffe
        (CodeSize::Bits32, &[0xf0, 0x0f, 0xb3, 0x01], Op::Bit(BitOp::Btr)), // lock btr dword ptr [ecx], eax
        (CodeSize::Bits32, &[0x87, 0x03], Op::Xchg), // xchg [ebx], eax
        (CodeSize::Bits32, &[0x80, 0x04, 0x24, 0x01], Op::Alu(AluOp::Add)), // add byte ptr [esp], 1
        (CodeSize::Bits32, &[0x26, 0x8b, 0x03], Op::Mov), // mov eax, es:[ebx]
        (CodeSize::Bits16, &[0x89, 0x00], Op::Mov), // mov [bx+si], ax
        (CodeSize::Bits16, &[0x88, 0x43, 0x10], Op::Mov), // mov [bp+di+0x10], al
        (CodeSize::Bits16, &[0x89, 0x46, 0x00], Op::Mov), // mov [bp], ax
        (CodeSize::Bits16, &[0xc7, 0x06, 0x34, 0x12, 0x78, 0x56], Op::Mov), // mov word ptr [0x1234], 0x5678
        (CodeSize::Bits16, &[0x66, 0x8b, 0x87, 0x34, 0x12], Op::Mov), // mov eax, [bx+0x1234]
        (CodeSize::Bits16, &[0x67, 0x66, 0x8b, 0x04, 0x8b], Op::Mov), // mov eax, [ebx+ecx*4]
        (CodeSize::Bits16, &[0xa1, 0x34, 0x12], Op::Mov), // mov ax, ds:0x1234
        (CodeSize::Bits16, &[0xf3, 0xab], Op::Stos), // rep stosw
        (CodeSize::Bits16, &[0x66, 0xf3, 0xab], Op::Stos), // rep stosd
        (CodeSize::Bits16, &[0xf0, 0x0f, 0xc7, 0x0d], Op::Cmpxchg8b), // lock cmpxchg8b qword ptr [di]
        (CodeSize::Bits16, &[0x81, 0x04, 0x34, 0x12], Op::Alu(AluOp::Add)), // add word ptr [si], 0x1234
        (CodeSize::Bits16, &[0x83, 0x2c, 0xfd], Op::Alu(AluOp::Sub)), // sub word ptr [si], -3
        (CodeSize::Bits16, &[0x2e, 0xc6, 0x07, 0x01], Op::Mov), // mov byte ptr cs:[bx], 1
    ];

    #[test]
    fn decode_gnu_as_table() {
        for &(mode, bytes, op) in TABLE {
            let i = dec(mode, bytes);
            assert_eq!(i.len(), bytes.len(), "{bytes:02x?}");
            assert_eq!(i.op(), op, "{bytes:02x?}");
            // Every truncation asks for more bytes.
            for n in 0..bytes.len() {
                assert_eq!(
                    decode(&bytes[..n], mode),
                    Err(DecodeError::NeedMoreBytes),
                    "{bytes:02x?}"
                );
            }
            // Trailing bytes are not consumed.
            let mut long = bytes.to_vec();
            long.extend_from_slice(&[0x90; 8]);
            assert_eq!(decode(&long, mode).unwrap().len(), bytes.len());
        }
    }

    #[test]
    fn decode_operands() {
        use CodeSize::*;
        // mov byte ptr [r12+r13*4+0x10], sil: REX.X/B, SIL needs REX.
        let i = dec(Bits64, &[0x43, 0x88, 0x74, 0xac, 0x10]);
        assert_eq!(
            (i.dst(), i.src(), i.op_size()),
            (Operand::Mem, Operand::Reg(6), 1)
        );
        let m = i.mem();
        assert_eq!(
            (m.base, m.index, m.scale, m.disp, m.seg),
            (Some(12), Some(13), 4, 0x10, Seg::Ds)
        );
        // mov ah, [rax]: no REX, so reg 4 is AH.
        let i = dec(Bits64, &[0x8a, 0x20]);
        assert_eq!(i.dst(), Operand::RegHigh8(0));
        // RIP-relative.
        let i = dec(Bits64, &[0x48, 0x89, 0x0d, 0x34, 0x12, 0x00, 0x00]);
        assert!(i.mem().rip_relative);
        assert_eq!(
            (i.mem().disp, i.op_size(), i.src()),
            (0x1234, 8, Operand::Reg(1))
        );
        // Same bytes in 32-bit mode: absolute disp32, and 0x48 is DEC EAX (unsupported).
        assert_eq!(
            decode(&[0x48, 0x89, 0x0d, 0x34, 0x12, 0x00, 0x00], Bits32),
            Err(DecodeError::Unsupported { opcode: 0x48 })
        );
        let i = dec(Bits32, &[0x89, 0x0d, 0x34, 0x12, 0x00, 0x00]);
        assert!(!i.mem().rip_relative);
        assert_eq!((i.mem().base, i.mem().disp), (None, 0x1234));
        // fs: override, 16-bit operand, REX.R/B.
        let i = dec(Bits64, &[0x64, 0x66, 0x45, 0x8b, 0x48, 0xf8]);
        assert_eq!(
            (
                i.dst(),
                i.op_size(),
                i.mem().seg,
                i.mem().base,
                i.mem().disp
            ),
            (Operand::Reg(9), 2, Seg::Fs, Some(8), -8)
        );
        // ds override ignored in 64-bit mode; [rsp+8] defaults to SS.
        let i = dec(
            Bits64,
            &[0x3e, 0xc7, 0x44, 0x24, 0x08, 0x78, 0x56, 0x34, 0x12],
        );
        assert_eq!(
            (i.mem().seg, i.src(), i.len()),
            (Seg::Ss, Operand::Imm(0x1234_5678), 9)
        );
        // mov qword ptr [rbp], -5: imm32 sign-extended to 64; [rbp] is mod=01 disp8 0.
        let i = dec(Bits64, &[0x48, 0xc7, 0x45, 0x00, 0xfb, 0xff, 0xff, 0xff]);
        assert_eq!(
            (i.src(), i.mem().seg, i.mem().base),
            (Operand::Imm(u64::MAX - 4), Seg::Ss, Some(5))
        );
        // [r13] is also mod=01 but defaults to DS; [r12] needs a SIB.
        assert_eq!(dec(Bits64, &[0x49, 0x8b, 0x45, 0x00]).mem().seg, Seg::Ds);
        assert_eq!(dec(Bits64, &[0x49, 0x8b, 0x04, 0x24]).mem().base, Some(12));
        // SIB with index 100 + REX.X is R12, not "no index".
        let i = dec(Bits64, &[0x4a, 0x8b, 0x04, 0x24]);
        assert_eq!((i.mem().base, i.mem().index), (Some(4), Some(12)));
        // SIB base 101 with mod=00: disp32, no base.
        let i = dec(Bits64, &[0x8b, 0x04, 0x8d, 0x00, 0x10, 0x00, 0x00]);
        assert_eq!(
            (i.mem().base, i.mem().index, i.mem().scale, i.mem().disp),
            (None, Some(1), 4, 0x1000)
        );
        // moffs: 8-byte offset in 64-bit mode, 4 with 67.
        let i = dec(
            Bits64,
            &[0x48, 0xa3, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11],
        );
        assert_eq!(
            (i.dst(), i.src(), i.mem().disp, i.op_size()),
            (Operand::Mem, Operand::Reg(0), 0x1122_3344_5566_7788, 8)
        );
        let i = dec(Bits64, &[0x67, 0xa1, 0x44, 0x33, 0x22, 0x11]);
        assert_eq!((i.len(), i.addr_size(), i.mem().disp), (6, 4, 0x1122_3344));
        // 16-bit moffs.
        assert_eq!(dec(Bits16, &[0xa1, 0x34, 0x12]).mem().disp, 0x1234);
        // 16-bit addressing: [bp+di+0x10] uses SS; [bp] is mod=01; [0x1234] is disp16.
        let i = dec(Bits16, &[0x88, 0x43, 0x10]);
        assert_eq!(
            (i.mem().base, i.mem().index, i.mem().disp, i.mem().seg),
            (Some(5), Some(7), 0x10, Seg::Ss)
        );
        let i = dec(Bits16, &[0x89, 0x46, 0x00]);
        assert_eq!((i.mem().base, i.mem().seg), (Some(5), Seg::Ss));
        let i = dec(Bits16, &[0xc7, 0x06, 0x34, 0x12, 0x78, 0x56]);
        assert_eq!(
            (i.mem().base, i.mem().disp, i.src(), i.op_size()),
            (None, 0x1234, Operand::Imm(0x5678), 2)
        );
        // disp16 is sign-extended (and wrapped to 16 bits at execution).
        assert_eq!(dec(Bits16, &[0x8b, 0x87, 0xfe, 0xff]).mem().disp, -2);
        // 66 67 in 16-bit code: 32-bit operand and addressing with SIB.
        let i = dec(Bits16, &[0x67, 0x66, 0x8b, 0x04, 0x8b]);
        assert_eq!(
            (
                i.op_size(),
                i.addr_size(),
                i.mem().base,
                i.mem().index,
                i.mem().scale
            ),
            (4, 4, Some(3), Some(1), 4)
        );
        // 83 /0 sign-extends imm8 to the operand size.
        let i = dec(Bits16, &[0x83, 0x2c, 0xfd]);
        assert_eq!(
            (i.op(), i.src()),
            (Op::Alu(AluOp::Sub), Operand::Imm(0xfffd))
        );
        // cs: override honoured outside 64-bit mode.
        assert_eq!(dec(Bits16, &[0x2e, 0xc6, 0x07, 0x01]).mem().seg, Seg::Cs);
        assert_eq!(dec(Bits32, &[0x26, 0x8b, 0x03]).mem().seg, Seg::Es);
        // MOVZX/MOVSX sizes.
        let i = dec(Bits64, &[0x4c, 0x0f, 0xb7, 0x14, 0x77]);
        assert_eq!(
            (i.op_size(), i.src_size(), i.dst()),
            (8, 2, Operand::Reg(10))
        );
        let i = dec(Bits64, &[0x48, 0x0f, 0xbe, 0x45, 0x00]);
        assert_eq!((i.op_size(), i.src_size()), (8, 1));
        // CMPXCHG8B/16B, lock.
        let i = dec(Bits32, &[0xf0, 0x0f, 0xc7, 0x08]);
        assert_eq!((i.op(), i.lock(), i.op_size()), (Op::Cmpxchg8b, true, 8));
        let i = dec(Bits64, &[0xf0, 0x49, 0x0f, 0xc7, 0x0c, 0x38]);
        assert_eq!((i.op(), i.op_size()), (Op::Cmpxchg16b, 16));
        // Bit ops: immediate and register offsets.
        let i = dec(Bits64, &[0x0f, 0xba, 0x30, 0x1f]);
        assert_eq!(
            (i.op(), i.src(), i.op_size()),
            (Op::Bit(BitOp::Btr), Operand::Imm(31), 4)
        );
        let i = dec(Bits64, &[0x66, 0x0f, 0xbb, 0x10]);
        assert_eq!(
            (i.op(), i.src(), i.op_size()),
            (Op::Bit(BitOp::Btc), Operand::Reg(2), 2)
        );
        // String ops: REP, sizes; F2 acts as REP for STOS/MOVS.
        let i = dec(Bits64, &[0xf3, 0x48, 0xab]);
        assert_eq!(
            (i.op(), i.rep(), i.op_size(), i.addr_size()),
            (Op::Stos, true, 8, 8)
        );
        let i = dec(Bits64, &[0xf2, 0x67, 0xa4]);
        assert_eq!(
            (i.op(), i.rep(), i.op_size(), i.addr_size()),
            (Op::Movs, true, 1, 4)
        );
        assert!(!dec(Bits32, &[0xa5]).rep());
        // MOVS takes a source segment override.
        assert_eq!(dec(Bits64, &[0x65, 0xa5]).mem().seg, Seg::Gs);
        // MOVNTI is 32-bit even in 16-bit code.
        assert_eq!(dec(Bits16, &[0x0f, 0xc3, 0x07]).op_size(), 4);
        // Group aliases: F6 /1 is TEST.
        assert_eq!(dec(Bits64, &[0xf6, 0x08, 0x01]).op(), Op::Test);
        // 82 is 80 outside 64-bit mode.
        assert_eq!(dec(Bits32, &[0x82, 0x00, 0x01]).op(), Op::Alu(AluOp::Add));
        assert!(!dec(Bits64, &[0x8b, 0x03]).writes_memory());
        assert!(dec(Bits64, &[0x0f, 0xab, 0x03]).writes_memory());
        assert!(!dec(Bits64, &[0x0f, 0xa3, 0x03]).writes_memory());
    }

    #[test]
    fn decode_prefix_rules() {
        use CodeSize::*;
        // REX must come last: a legacy prefix after it cancels it.
        let i = dec(Bits64, &[0x48, 0x66, 0x89, 0x03]);
        assert_eq!(i.op_size(), 2);
        let i = dec(Bits64, &[0x66, 0x48, 0x89, 0x03]);
        assert_eq!(i.op_size(), 8);
        // Two REX: the last one counts.
        let i = dec(Bits64, &[0x48, 0x41, 0x89, 0x03]);
        assert_eq!((i.op_size(), i.mem().base), (4, Some(11)));
        // In 16/32-bit mode, 0x40-0x4F are INC/DEC.
        assert_eq!(
            decode(&[0x41, 0x89, 0x03], Bits32),
            Err(DecodeError::Unsupported { opcode: 0x41 })
        );
        // Byte registers: REX makes 4..7 SPL..DIL.
        assert_eq!(dec(Bits64, &[0x40, 0x88, 0x20]).src(), Operand::Reg(4));
        assert_eq!(dec(Bits64, &[0x88, 0x20]).src(), Operand::RegHigh8(0));
        assert_eq!(dec(Bits64, &[0x88, 0x38]).src(), Operand::RegHigh8(3));
        // The last segment override wins.
        assert_eq!(dec(Bits32, &[0x64, 0x65, 0x8b, 0x03]).mem().seg, Seg::Gs);
    }

    #[test]
    fn decode_length_limit() {
        // 13 prefixes + 2 = 15 bytes: fine. 14 + 2 = 16: #GP.
        let mut b = vec![0x3e; 13];
        b.extend_from_slice(&[0x89, 0x03]);
        assert_eq!(dec(CodeSize::Bits32, &b).len(), 15);
        let mut b = vec![0x3e; 14];
        b.extend_from_slice(&[0x89, 0x03]);
        assert_eq!(decode(&b, CodeSize::Bits32), Err(DecodeError::TooLong));
        assert_eq!(DecodeError::TooLong.exception(), Some(Exception::Gp(0)));
        // Immediates past byte 15: #GP even if the caller only gave 15 bytes.
        let mut b = vec![0x66; 8];
        b.extend_from_slice(&[0x48, 0xc7, 0x84, 0x88, 0, 0, 0, 0, 1, 2, 3, 4]);
        assert_eq!(
            decode(&b[..15], CodeSize::Bits64),
            Err(DecodeError::TooLong)
        );
        assert_eq!(
            decode(&b[..12], CodeSize::Bits64),
            Err(DecodeError::NeedMoreBytes)
        );
        assert_eq!(
            decode(&[], CodeSize::Bits64),
            Err(DecodeError::NeedMoreBytes)
        );
        // All prefixes, never an opcode.
        assert_eq!(
            decode(&[0xf0; 40], CodeSize::Bits64),
            Err(DecodeError::TooLong)
        );
    }

    #[test]
    fn decode_invalid_and_unsupported() {
        use CodeSize::*;
        let ud = Err(DecodeError::Invalid);
        assert_eq!(decode(&[0xf0, 0x89, 0x03], Bits64), ud, "lock mov");
        assert_eq!(decode(&[0xf0, 0x01, 0xc8], Bits64), ud, "lock add reg,reg");
        assert_eq!(decode(&[0xf0, 0x03, 0x03], Bits64), ud, "lock add reg,mem");
        assert_eq!(decode(&[0xf0, 0x39, 0x03], Bits64), ud, "lock cmp");
        assert_eq!(decode(&[0xf0, 0x85, 0x03], Bits64), ud, "lock test");
        assert_eq!(decode(&[0xf0, 0x0f, 0xa3, 0x03], Bits64), ud, "lock bt");
        assert_eq!(decode(&[0xf0, 0xab], Bits64), ud, "lock stos");
        assert_eq!(decode(&[0x0f, 0xc7, 0xc8], Bits64), ud, "cmpxchg8b reg");
        assert_eq!(decode(&[0x0f, 0xc3, 0xc0], Bits64), ud, "movnti reg");
        assert_eq!(decode(&[0x66, 0x0f, 0xc3, 0x00], Bits64), ud, "66 movnti");
        assert_eq!(decode(&[0x82, 0x00, 0x01], Bits64), ud);
        assert_eq!(decode(&[0xfe, 0x10], Bits64), ud);
        assert_eq!(decode(&[0xc6, 0x08, 0x00], Bits64), ud);
        assert_eq!(decode(&[0x0f, 0xba, 0x00, 0x01], Bits64), ud);
        assert_eq!(DecodeError::Invalid.exception(), Some(Exception::Ud));
        let un = |o| Err(DecodeError::Unsupported { opcode: o });
        assert_eq!(decode(&[0x90], Bits64), un(0x90));
        assert_eq!(decode(&[0xff, 0x30], Bits64), un(0xff), "push [rax]");
        assert_eq!(decode(&[0xf7, 0x20], Bits64), un(0xf7), "mul [rax]");
        assert_eq!(decode(&[0x0f, 0x05], Bits64), un(0x0f05));
        assert_eq!(decode(&[0xa6], Bits64), un(0xa6), "cmpsb");
        assert_eq!(decode(&[0x0f, 0xc7, 0xf0], Bits64), un(0x0fc7), "rdrand");
        assert_eq!(DecodeError::Unsupported { opcode: 0 }.exception(), None);
        // XCHG is implicitly locked; an explicit LOCK is legal.
        assert!(decode(&[0xf0, 0x87, 0x03], Bits64).is_ok());
    }
}
