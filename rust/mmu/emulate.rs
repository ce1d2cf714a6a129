// SPDX-License-Identifier: GPL-2.0

//! x86 instruction emulator for the guest memory accesses the hypervisor completes itself.
//!
//! The hypervisor needs this when a guest instruction faults in a way it cannot just
//! re-run: a write to a guest page-table page that the shadow MMU write-protects, or an
//! access to guest-physical memory with nothing behind it (MMIO). The VM exit reports a #PF.
//! The hypervisor fetches up to [`MAX_INSN_LEN`] bytes at the guest RIP, calls [`decode`],
//! then [`execute`]. `execute` performs the access through the caller's [`EmuMemory`], then
//! updates registers, arithmetic flags and RIP.
//!
//! # Protocol
//!
//! * **All or nothing.** `execute` works on a copy of the registers. Memory is written
//!   at most once per instruction (per iteration for string instructions), after every read
//!   and every check. The registers are copied back only once that write has succeeded.
//!   Any result other than [`Outcome::Done`] / [`Outcome::RepContinue`] leaves the registers
//!   and memory as they were (except for REP iterations that already finished).
//! * **MMIO reads are two-phase.** If [`EmuMemory::read`] returns [`MemFault::Mmio`],
//!   `execute` returns [`Outcome::MmioRead`] and changes nothing. The caller gets the value
//!   (for example from userspace), then calls `execute` again with the same `Insn` and
//!   registers, passing the bytes as [`MmioData`]. That read is then served from the data
//!   instead of from `EmuMemory`. Each execution step reads memory at most once, so one
//!   `MmioData` is always enough. MMIO *writes* never need a second phase: the caller's
//!   `write`/`cmpxchg` queues the data for userspace and returns `Ok`.
//! * **Atomicity.** LOCKed read-modify-write instructions, XCHG (always locked) and
//!   CMPXCHG/CMPXCHG8B/16B write through [`EmuMemory::cmpxchg`] with the value they read.
//!   If another CPU changed the location in between, the step is recomputed, up to
//!   [`LOCK_RETRIES`] times, then [`Outcome::Retry`] is returned (nothing changed;
//!   re-enter the guest and the instruction faults again). Other read-modify-write
//!   instructions are not atomic on hardware either and use a plain `write`.
//! * **REP string instructions** (STOS, MOVS) run **one iteration per `execute` call**. This
//!   is what hardware commits between interrupts. [`Outcome::RepContinue`] means the
//!   iteration (memory, RCX/RSI/RDI) has been committed and RIP still points at the
//!   instruction. The caller either calls `execute` again (or [`execute_rep`], which does up
//!   to N iterations and stops after one that accessed MMIO) or re-enters the guest, which
//!   carries on natively (and exits again at the next MMIO access: one per exit, as in
//!   KVM). `REP` with a zero count just advances RIP.
//! * **Exceptions** to inject come back as [`Outcome::Exception`]. They can come from
//!   `EmuMemory` (#PF with its error code, or #GP/#SS from a limit check by the caller), or
//!   from the emulator: #GP(0)/#SS(0) for a non-canonical address in 64-bit mode, and
//!   #GP(0) for a misaligned CMPXCHG16B. Decoding failures map to exceptions through
//!   [`DecodeError::exception`]. `None` there ([`DecodeError::Unsupported`]) means a valid
//!   instruction this emulator does not implement: report an internal error to userspace,
//!   and do not inject #UD into a guest whose instruction is correct.
//!
//! # Flags
//!
//! CF, PF, AF, ZF, SF and OF are computed exactly as the SDM defines them for ADD, OR, ADC,
//! SBB, AND, SUB, XOR, CMP, TEST, INC, DEC, NEG, XADD and CMPXCHG. The unit tests check them
//! against the host CPU running the same instructions. Choices for undefined flags, which
//! are the values Intel CPUs produce:
//! * AND/OR/XOR/TEST: AF is cleared.
//! * BT/BTS/BTR/BTC: only CF is written. ZF is left alone (as the SDM says). OF, SF, AF and PF,
//!   which the SDM leaves undefined, are also left unchanged.
//! * CMPXCHG8B/16B: only ZF is written.
//!
//! On completion RFLAGS.RF is cleared, as the CPU does when an instruction retires. A
//! single-step trap (TF) after the instruction and the interrupt shadow are left to the
//! caller.
//!
//! # Segments
//! Outside 64-bit mode every access passes the limit and type checks of its segment
//! ([`Env::seg_check`], as KVM's `__linearize`); a read-modify-write destination is checked
//! for the write before it is read.
//!
//! # Not covered
//! Alignment checks (#AC), protection keys, and accesses that cross a page, which the
//! caller's `EmuMemory` splits.
//! Other instructions (PUSH/POP, string compares and scans, LODS, shifts, MUL/DIV, SSE, ...)
//! give [`DecodeError::Unsupported`].

/// Longest legal x86 instruction (SDM Vol. 2, 2.3.11). Longer ones raise #GP(0).
pub const MAX_INSN_LEN: usize = 15;

/// How many times a locked read-modify-write is recomputed after losing a race before
/// `execute` gives up with [`Outcome::Retry`].
pub const LOCK_RETRIES: u32 = 8;

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
    fn check(self, addr: &Addr, size: usize, write: bool) -> Result<(), Exception> {
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
    op: Op,
    mode: CodeSize,
    len: u8,
    op_size: u8,
    src_size: u8,
    addr_size: u8,
    lock: bool,
    rep: bool,
    dst: Operand,
    src: Operand,
    mem: MemRef,
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

// ---------------------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------------------

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

fn mask(size: u8) -> u64 {
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
fn sext(v: u64, size: u8) -> u64 {
    let v = v & mask(size);
    if v & sign_bit(size) != 0 {
        v | !mask(size)
    } else {
        v
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

// ---------------------------------------------------------------------------------------
// Addresses
// ---------------------------------------------------------------------------------------

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
fn bit_string(insn: &Insn, regs: &Regs) -> (u64, u32) {
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

fn operand_addr(insn: &Insn, regs: &Regs, env: &Env) -> Result<Addr, Exception> {
    let extra = match insn.op {
        Op::Bit(_) => bit_string(insn, regs).0,
        _ => 0,
    };
    linearize(insn.mode, env, insn.mem.seg, effective(insn, regs, extra))
}

fn string_addr(
    insn: &Insn,
    regs: &Regs,
    env: &Env,
    seg: Seg,
    reg: usize,
) -> Result<Addr, Exception> {
    let off = gpr_get(regs, reg) & mask(insn.addr_size);
    linearize(insn.mode, env, seg, off)
}

// ---------------------------------------------------------------------------------------
// Registers and flags
// ---------------------------------------------------------------------------------------

/// Register `n` (taken modulo 16).
fn gpr_get(regs: &Regs, n: usize) -> u64 {
    regs.gpr.get(n & 15).copied().unwrap_or(0)
}

/// Writes the low `size` bytes of `val` to register `n` as the CPU does: 32-bit writes
/// zero-extend, 8- and 16-bit writes keep the rest.
fn set_gpr(regs: &mut Regs, n: usize, size: u8, val: u64) {
    if let Some(slot) = regs.gpr.get_mut(n & 15) {
        *slot = match size {
            1 | 2 => (*slot & !mask(size)) | (val & mask(size)),
            4 => val & 0xffff_ffff,
            _ => val,
        };
    }
}

fn get_reg(regs: &Regs, o: Operand, size: u8) -> u64 {
    match o {
        Operand::Reg(n) => gpr_get(regs, usize::from(n)) & mask(size),
        Operand::RegHigh8(n) => (gpr_get(regs, usize::from(n & 3)) >> 8) & 0xff,
        Operand::Imm(v) => v & mask(size),
        Operand::None | Operand::Mem => 0,
    }
}

fn set_reg(regs: &mut Regs, o: Operand, size: u8, val: u64) {
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
fn add_flags(a: u64, b: u64, carry: bool, size: u8) -> (u64, u64) {
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
fn sub_flags(a: u64, b: u64, borrow: bool, size: u8) -> (u64, u64) {
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
fn alu(op: AluOp, a: u64, b: u64, cf: bool, size: u8) -> (u64, u64) {
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
fn logic(res: u64, size: u8) -> (u64, u64) {
    let res = res & mask(size);
    (res, szp(res, size))
}

fn set_flags(regs: &mut Regs, affected: u64, value: u64) {
    regs.rflags = (regs.rflags & !affected) | (value & affected);
}

fn to_le(v: u64) -> [u8; 8] {
    v.to_le_bytes()
}

fn from_le(b: &[u8]) -> u64 {
    let mut v = [0u8; 8];
    for (d, s) in v.iter_mut().zip(b) {
        *d = *s;
    }
    u64::from_le_bytes(v)
}

// ---------------------------------------------------------------------------------------
// Execution
// ---------------------------------------------------------------------------------------

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
/// one MMIO access per exit, so a device sees each access once and in order.
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
    while out == Outcome::RepContinue && n < max_iterations && !mem.mmio_queued() {
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
    use super::*;
    use core::arch::asm;
    use std::vec;
    use std::vec::Vec;

    // -----------------------------------------------------------------------------------
    // Test memory
    // -----------------------------------------------------------------------------------

    /// Flat RAM at `base`, an MMIO window, #PF everywhere else.
    struct TestMem {
        base: u64,
        data: Vec<u8>,
        mmio_base: u64,
        mmio_len: u64,
        mmio_writes: Vec<(u64, Vec<u8>)>,
        /// Writes to [ro_base, ro_base+ro_len) fault with a protection #PF.
        ro_base: u64,
        ro_len: u64,
        /// cmpxchg calls that lose a race: another "CPU" increments the first byte.
        races: u32,
        cmpxchg_calls: u32,
        writes: u32,
    }

    const RAM: u64 = 0x10_0000;
    const MMIO: u64 = 0xfee0_0000;

    impl TestMem {
        fn new() -> Self {
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
        fn get(&self, a: u64, n: usize) -> u64 {
            from_le(&self.data[self.range(a, n).unwrap()])
        }
        fn put(&mut self, a: u64, n: usize, v: u64) {
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
            Ok(())
        }
        /// The caller hands each store to "userspace" and clears the list.
        fn mmio_queued(&self) -> bool {
            !self.mmio_writes.is_empty()
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

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            // xorshift64*
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        /// Random value biased towards edge cases.
        fn val(&mut self) -> u64 {
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

    const MODES: [CodeSize; 3] = [CodeSize::Bits16, CodeSize::Bits32, CodeSize::Bits64];

    fn regs() -> Regs {
        Regs {
            gpr: [0; 16],
            rip: 0x40_0000,
            rflags: 0x2,
        }
    }

    fn dec(mode: CodeSize, b: &[u8]) -> Insn {
        decode(b, mode).unwrap_or_else(|e| panic!("decode {b:02x?}: {e:?}"))
    }

    fn run(mode: CodeSize, b: &[u8], r: &mut Regs, m: &mut TestMem) -> Outcome {
        let i = dec(mode, b);
        execute(&i, r, &Env::default(), m, None).unwrap()
    }

    // -----------------------------------------------------------------------------------
    // Decoder
    // -----------------------------------------------------------------------------------

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

    // -----------------------------------------------------------------------------------
    // Addressing
    // -----------------------------------------------------------------------------------

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
        r.gpr[gpr::RAX] = MMIO as u32 as u64;
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
