// SPDX-License-Identifier: GPL-2.0

// Runs in the vCPU's exit handlers with interrupts off: no panicking forms, as in the MMU
// engine and the emulator (see rust/mmu/mod.rs). Tests may use them.
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

//! The rules of shadowvm's virtual CPU that need no hardware: which MSRs the module owns
//! and which values a write to them may take ([`msr`]), and the guest's CPUID table, its
//! filtering and lookup ([`cpuid`]). Pure `core` Rust, shared by the kernel module and the
//! host tests, so that the guest's WRMSR and userspace's SET_MSRS use one implementation.

pub mod cpuid;
pub mod msr;
