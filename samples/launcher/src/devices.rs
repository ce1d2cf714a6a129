// SPDX-License-Identifier: GPL-2.0

//! The guest's devices: a 16550-style serial port at 0x3f8 (output only) and the exit port.

use std::collections::BTreeSet;
use std::io::Write;

/// First port of the serial UART (COM1).
pub const SERIAL_BASE: u16 = 0x3f8;
/// Line status register offset.
const UART_LSR: u16 = 5;
/// Line control register offset; bit 7 is DLAB.
const UART_LCR: u16 = 3;
/// LSR value: transmitter holding register and transmitter empty, so guests never wait.
const LSR_IDLE: u8 = 0x60;
/// Writing a status here ends the run (0 = pass).
pub const EXIT_PORT: u16 = 0xf4;

/// What an OUT did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutEffect {
    Continue,
    /// The guest wrote this status to the exit port.
    Exit(u32),
}

/// Port I/O counts per device, for the statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoCounts {
    pub serial: u64,
    pub exit_port: u64,
    pub other: u64,
}

/// The device model shared by every backend.
pub struct Devices {
    serial_out: Box<dyn Write>,
    lcr: u8,
    warned: BTreeSet<u16>,
    quiet: bool,
    pub counts: IoCounts,
    /// First error writing serial output; reported at the end instead of stopping the guest.
    pub output_error: Option<std::io::Error>,
}

fn mask(size: u8) -> u64 {
    match size {
        1 => 0xff,
        2 => 0xffff,
        4 => 0xffff_ffff,
        _ => u64::MAX,
    }
}

impl Devices {
    pub fn new(serial_out: Box<dyn Write>, quiet: bool) -> Self {
        Self {
            serial_out,
            lcr: 0,
            warned: BTreeSet::new(),
            quiet,
            counts: IoCounts::default(),
            output_error: None,
        }
    }

    fn is_serial(port: u16) -> bool {
        (SERIAL_BASE..SERIAL_BASE + 8).contains(&port)
    }

    /// Handles an OUT of `size` bytes.
    pub fn io_out(&mut self, port: u16, size: u8, value: u64) -> OutEffect {
        let value = value & mask(size);
        if port == EXIT_PORT {
            self.counts.exit_port += 1;
            return OutEffect::Exit(value as u32);
        }
        if Self::is_serial(port) {
            self.counts.serial += 1;
            match port - SERIAL_BASE {
                // THR, unless DLAB redirects offset 0 to the divisor latch.
                0 if self.lcr & 0x80 == 0 => self.serial_byte(value as u8),
                UART_LCR => self.lcr = value as u8,
                _ => {}
            }
            return OutEffect::Continue;
        }
        self.counts.other += 1;
        self.warn_once(port, "OUT");
        OutEffect::Continue
    }

    /// Handles an IN of `size` bytes and returns the value.
    pub fn io_in(&mut self, port: u16, size: u8) -> u64 {
        if port == EXIT_PORT {
            self.counts.exit_port += 1;
            return 0;
        }
        if Self::is_serial(port) {
            self.counts.serial += 1;
            return if port - SERIAL_BASE == UART_LSR {
                u64::from(LSR_IDLE)
            } else {
                0
            };
        }
        self.counts.other += 1;
        self.warn_once(port, "IN");
        // Nothing answers: an open ISA bus reads all ones.
        mask(size)
    }

    fn serial_byte(&mut self, b: u8) {
        if self.output_error.is_some() {
            return;
        }
        let mut r = self.serial_out.write_all(&[b]);
        if r.is_ok() && b == b'\n' {
            r = self.serial_out.flush();
        }
        if let Err(e) = r {
            self.output_error = Some(e);
        }
    }

    fn warn_once(&mut self, port: u16, dir: &str) {
        if !self.quiet && self.warned.insert(port) {
            eprintln!("shadowvm-run: note: guest {dir} on port {port:#x}, which has no device (ignored; reported once)");
        }
    }

    /// Flushes serial output.
    pub fn flush(&mut self) {
        if let Err(e) = self.serial_out.flush() {
            self.output_error.get_or_insert(e);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;

    /// A `Write` whose bytes the test can read back.
    #[derive(Clone, Default)]
    pub(crate) struct Capture(pub Rc<RefCell<Vec<u8>>>);

    impl Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.borrow_mut().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn serial_output_and_lsr() {
        let cap = Capture::default();
        let mut d = Devices::new(Box::new(cap.clone()), true);
        for b in b"hi\n" {
            assert_eq!(d.io_out(0x3f8, 1, u64::from(*b)), OutEffect::Continue);
        }
        assert_eq!(d.io_in(0x3fd, 1), 0x60);
        assert_eq!(d.io_in(0x3f9, 1), 0);
        assert_eq!(d.io_in(0x3ff, 1), 0);
        assert_eq!(&*cap.0.borrow(), b"hi\n");
        assert_eq!(d.counts.serial, 6);
    }

    #[test]
    fn divisor_latch_writes_are_not_output() {
        let cap = Capture::default();
        let mut d = Devices::new(Box::new(cap.clone()), true);
        d.io_out(0x3fb, 1, 0x80); // DLAB on
        d.io_out(0x3f8, 1, 0x01); // divisor low
        d.io_out(0x3f9, 1, 0x00); // divisor high
        d.io_out(0x3fb, 1, 0x03); // 8N1, DLAB off
        d.io_out(0x3f8, 2, 0x4241); // wide OUT: low byte only
        assert_eq!(&*cap.0.borrow(), b"A");
    }

    #[test]
    fn exit_port_status() {
        let mut d = Devices::new(Box::new(Capture::default()), true);
        assert_eq!(d.io_out(0xf4, 4, 0), OutEffect::Exit(0));
        assert_eq!(d.io_out(0xf4, 4, 0xdead_beef), OutEffect::Exit(0xdead_beef));
        assert_eq!(d.io_out(0xf4, 1, 0x1ff), OutEffect::Exit(0xff));
        assert_eq!(d.io_in(0xf4, 4), 0);
        assert_eq!(d.counts.exit_port, 4);
    }

    #[test]
    fn unknown_ports_float_high_and_ignore_writes() {
        let mut d = Devices::new(Box::new(Capture::default()), true);
        assert_eq!(d.io_in(0x60, 1), 0xff);
        assert_eq!(d.io_in(0x60, 2), 0xffff);
        assert_eq!(d.io_in(0xcfc, 4), 0xffff_ffff);
        assert_eq!(d.io_out(0x80, 1, 0x12), OutEffect::Continue);
        assert_eq!(d.counts.other, 4);
    }

    struct Broken;
    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("disk full"))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn output_errors_are_kept_not_fatal() {
        let mut d = Devices::new(Box::new(Broken), true);
        d.io_out(0x3f8, 1, b'x'.into());
        d.io_out(0x3f8, 1, b'y'.into());
        assert!(d.output_error.is_some());
    }
}
