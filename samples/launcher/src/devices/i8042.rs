// SPDX-License-Identifier: GPL-2.0

//! The i8042 keyboard controller, for its reset line: command 0xFE on port 0x64 resets the
//! machine, which is how many kernels reboot. Built on rust-vmm's `vm-superio` `I8042Device`
//! (used under its BSD-3-Clause licence).

use std::cell::Cell;
use vm_superio::{I8042Device, Trigger};

/// Data port (vm-superio offset 0).
pub const DATA_PORT: u16 = 0x60;
/// Command (write) and status (read) port (vm-superio offset 4).
pub const COMMAND_PORT: u16 = 0x64;

/// Status bits: SYS (the self-test passed, set after POST), A2 (the last write went to the
/// command port) and keyboard not inhibited. QEMU shows 0x1c after the BIOS.
const STATUS_SYSTEM: u8 = 1 << 2;
const STATUS_LAST_WAS_COMMAND: u8 = 1 << 3;
const STATUS_UNLOCKED: u8 = 1 << 4;

/// vm-superio signals the reset through a `Trigger` (an eventfd in its users); here the run
/// loop polls a flag after each write, so the trigger only records the request.
#[derive(Debug, Default)]
pub struct ResetRequest(Cell<bool>);

impl Trigger for ResetRequest {
    type E = std::convert::Infallible;
    fn trigger(&self) -> Result<(), Self::E> {
        self.0.set(true);
        Ok(())
    }
}

pub struct Keyboard {
    device: I8042Device<ResetRequest>,
    status: u8,
}

impl Default for Keyboard {
    fn default() -> Self {
        Self {
            device: I8042Device::new(ResetRequest::default()),
            status: STATUS_SYSTEM | STATUS_LAST_WAS_COMMAND | STATUS_UNLOCKED,
        }
    }
}

impl Keyboard {
    pub fn handles(port: u16) -> bool {
        port == DATA_PORT || port == COMMAND_PORT
    }

    /// A read of `port`. vm-superio reads 0 everywhere; the status port instead reports a
    /// controller that passed its self-test and has no data and an empty input buffer, so a
    /// guest that waits for "input buffer empty" before sending 0xFE goes ahead.
    pub fn read(&mut self, port: u16) -> u8 {
        if port == COMMAND_PORT {
            self.status
        } else {
            self.device.read(0)
        }
    }

    /// A write to `port`; true when it asked for a reset.
    pub fn write(&mut self, port: u16, value: u8) -> bool {
        let offset = if port == COMMAND_PORT {
            self.status |= STATUS_LAST_WAS_COMMAND;
            4
        } else {
            self.status &= !STATUS_LAST_WAS_COMMAND;
            0
        };
        // The trigger cannot fail.
        let _ = self.device.write(offset, value);
        self.device.reset_evt().0.replace(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_command_and_status() {
        let mut k = Keyboard::default();
        assert_eq!(k.read(COMMAND_PORT), 0x1c, "as QEMU after the BIOS");
        assert!(
            !k.write(DATA_PORT, 0xfe),
            "0xFE to the data port is no reset"
        );
        assert_eq!(k.read(COMMAND_PORT), 0x14);
        assert_eq!(k.read(DATA_PORT), 0);
        assert!(!k.write(COMMAND_PORT, 0xad));
        assert_eq!(k.read(COMMAND_PORT), 0x1c);
        assert!(k.write(COMMAND_PORT, 0xfe));
        assert!(!k.write(COMMAND_PORT, 0xaa), "the request is reported once");
        assert!(Keyboard::handles(0x60) && Keyboard::handles(0x64));
        assert!(!Keyboard::handles(0x61));
    }
}
