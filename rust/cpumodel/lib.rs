// SPDX-License-Identifier: GPL-2.0
//! Host-only crate root: lets Cargo build and test the CPU model that the kernel module
//! includes with `#[path = "cpumodel/mod.rs"] mod cpumodel;`.
#![cfg_attr(not(test), no_std)]

#[path = "mod.rs"]
mod model;
pub use model::*;
