// SPDX-License-Identifier: GPL-2.0

//! I/O instruction exits: IN and OUT go to userspace.

use super::super::Completion;
use super::{user, ExitInfo, Handled, VcpuCore};
use crate::uapi;

impl VcpuCore {
    pub(super) fn io(&mut self, run: &mut uapi::Run, info: &ExitInfo) -> Handled {
        let q = info.qualification;
        let size = ((q & 7) + 1) as u8;
        let input = q & 8 != 0;
        let port = (q >> 16) as u16;
        if q & 0x10 != 0 {
            // INS/OUTS: not emulated; say so rather than guess.
            return self
                .internal_error(
                    run,
                    uapi::SHADOWVM_INTERNAL_ERROR_EMULATION,
                    info.reason,
                    q,
                    [0, 0, 0],
                )
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
