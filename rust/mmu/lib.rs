// SPDX-License-Identifier: GPL-2.0
//! Host-only crate root: lets Cargo build and test the shadow MMU engine that the
//! kernel module includes with `#[path = "mmu/mod.rs"] mod mmu;`.
#![cfg_attr(not(test), no_std)]

// The kernel crate has the emulator at `crate::emulate` (rust/shadowvm.rs); so has this one.
use shadowvm_emulate as emulate;

#[path = "mod.rs"]
mod engine;
pub use engine::*;
