// SPDX-License-Identifier: GPL-2.0
//! Host-only crate root: lets Cargo build and test the x86 instruction emulator that the
//! kernel module includes with `#[path = "emulate/mod.rs"] mod emulate;`.
#![cfg_attr(not(test), no_std)]

#[path = "mod.rs"]
mod emulator;
pub use emulator::*;
