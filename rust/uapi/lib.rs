// SPDX-License-Identifier: GPL-2.0

//! Host crate for the shadowvm ABI. The definitions live in `mod.rs`, which the kernel module
//! includes directly; this crate only re-exports them for userspace and runs the layout tests.

#![no_std]

// As in the kernel crate (rust/shadowvm.rs): the structures' fields are the C ABI's,
// documented field by field in Documentation/uapi.md and rust/uapi/shadowvm.h.
#[allow(missing_docs)]
#[path = "mod.rs"]
mod abi;

pub use abi::*;
