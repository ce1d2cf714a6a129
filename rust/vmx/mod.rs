// SPDX-License-Identifier: GPL-2.0

//! Intel VMX: capability checks, local-mode windows, raw instructions.

pub(crate) mod caps;
pub(crate) mod exit;
pub(crate) mod insn;
pub(crate) mod vmcs;
pub(crate) mod vpid;
pub(crate) mod window;
