// SPDX-License-Identifier: GPL-2.0

// The emulator runs with interrupts off in VMX operation (from the vCPU's exit handlers),
// where a panic is a kernel BUG with the CPU in VMX operation: no indexing that can go out
// of bounds, no arithmetic that can overflow (the kernel builds with overflow checks), no
// unwrap/expect/panic!/unreachable!. Tests may use them. The same list as the MMU engine's
// (rust/mmu/mod.rs); see Documentation/shadow-paging.md, "No panics with interrupts off".
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::unreachable
    )
)]

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
//!
//! # Layout
//!
//! Pure `core` Rust, shared by the kernel module (included with
//! `#[path = "emulate/mod.rs"] mod emulate;`) and the host tests (`rust/emulate/lib.rs`,
//! crate `shadowvm-emulate`). The public API is re-exported here.
//!
//! | File | What |
//! |------|------|
//! | `decoder.rs` | prefixes, opcode tables, ModRM/SIB: [`decode`], [`Insn`], [`DecodeError`] |
//! | `addressing.rs` | effective and linear addresses, canonical and segment checks ([`Env`]) |
//! | `alu.rs` | operand sizes, registers ([`Regs`]), RFLAGS results of the ALU operations |
//! | `execution.rs` | [`execute`], [`execute_rep`], [`EmuMemory`], MMIO data, [`Outcome`] |
//! | `testutil.rs` | test only: the `TestMem` guest memory and helpers for the unit tests |
//!
//! Each file has its unit tests beside the code (`mod tests`); the flag tests run the same
//! instructions on the host CPU.

mod addressing;
mod alu;
mod decoder;
mod execution;
#[cfg(test)]
mod testutil;

pub use addressing::{Addr, Env, Seg, SegCheck};
pub use alu::{flags, gpr, Regs};
pub use decoder::{
    decode, AluOp, BitOp, CodeSize, DecodeError, Insn, MemRef, Op, Operand, UnaryOp, MAX_INSN_LEN,
};
pub use execution::{
    execute, execute_rep, EmuError, EmuMemory, Exception, MemFault, MmioData, MmioRequest, Outcome,
    LOCK_RETRIES,
};
