// SPDX-License-Identifier: GPL-2.0

//! I/O instruction exits: IN and OUT go to userspace.

use super::super::Completion;
use super::{user, Handled, VcpuCore};
use crate::uapi;
use crate::vmx::exit::ExitInfo;

impl VcpuCore {
    pub(super) fn io(&mut self, run: &mut uapi::Run, info: &ExitInfo) -> Handled {
        let q = info.io();
        let size = q.size_minus_1().get() as u8 + 1;
        let input = q.input().into_bool();
        let port = q.port().get() as u16;
        if q.string().into_bool() {
            // INS/OUTS: not emulated; say so rather than guess.
            let suberror = uapi::SHADOWVM_INTERNAL_ERROR_EMULATION;
            let (reason, qualification) = (info.reason.into_raw(), info.qualification);
            return self
                .internal_error(run, suberror, reason, qualification, [0; 3])
                .into();
        }
        let mask = match size {
            1 => 0xff,
            2 => 0xffff,
            _ => 0xffff_ffff,
        };
        let data = if input { 0 } else { self.state.gpr[0] & mask };
        run.exit.set(uapi::ExitIo {
            direction: if input {
                uapi::SHADOWVM_IO_IN
            } else {
                uapi::SHADOWVM_IO_OUT
            },
            size,
            port,
            count: 1,
            data,
        });
        if input {
            self.completion = Completion::In(size);
        }
        self.skip(info);
        user(run, uapi::SHADOWVM_EXIT_IO)
    }
}
