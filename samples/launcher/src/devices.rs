// SPDX-License-Identifier: GPL-2.0

//! The guest's devices: a 16550-style serial port at 0x3f8 (output only), the exit port, and
//! QEMU pc-testdev's memory window at 0xff000000 (RAM reached only through MMIO exits).

use crate::platform::{HostClock, Platform};
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

/// Guest-physical base of the test device's memory window: QEMU's `pc-testdev` iomem region,
/// which kvm-unit-tests' x86/emulator.c uses as `IORAM_BASE_PHYS`.
pub const TESTDEV_IOMEM_BASE: u64 = 0xff00_0000;
/// Its length (QEMU: `IOMEM_LEN`).
pub const TESTDEV_IOMEM_LEN: usize = 0x1_0000;

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
    /// MMIO accesses the test device's memory window answered.
    pub testdev: u64,
    /// 8259 and ELCR port accesses.
    pub pic: u64,
    /// Local APIC register accesses.
    pub apic: u64,
}

/// The device model shared by every backend.
pub struct Devices {
    serial_out: Box<dyn Write>,
    lcr: u8,
    warned: BTreeSet<u16>,
    quiet: bool,
    /// The test device's memory window; every access to it is an MMIO exit, so it exercises
    /// the hypervisor's instruction emulator with memory that behaves like RAM.
    iomem: Vec<u8>,
    pub counts: IoCounts,
    /// Interrupt controllers, timers and owned MSRs (the 8259 ports and the APIC page are
    /// dispatched to it).
    pub platform: Platform,
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
            iomem: vec![0; TESTDEV_IOMEM_LEN],
            counts: IoCounts::default(),
            platform: Platform::new(Box::new(HostClock), quiet),
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
        if size == 1 && self.platform.io_out(port, value as u8) {
            self.counts.pic += 1;
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
        if size == 1 {
            if let Some(v) = self.platform.io_in(port) {
                self.counts.pic += 1;
                return u64::from(v);
            }
        }
        self.counts.other += 1;
        self.warn_once(port, "IN");
        // Nothing answers: an open ISA bus reads all ones.
        mask(size)
    }

    /// The part of an MMIO access of `len` bytes at `gpa` that falls in the test device's
    /// window, as (offset in the window, offset in the access, length); None when none does.
    /// Like QEMU's memory core, an access partly outside the window gets only its bytes.
    fn iomem_overlap(gpa: u64, len: usize) -> Option<(usize, usize, usize)> {
        let (start, end) = (u128::from(gpa), u128::from(gpa) + len as u128);
        let (base, limit) = (
            u128::from(TESTDEV_IOMEM_BASE),
            u128::from(TESTDEV_IOMEM_BASE) + TESTDEV_IOMEM_LEN as u128,
        );
        let (lo, hi) = (start.max(base), end.min(limit));
        (lo < hi).then(|| {
            (
                (lo - base) as usize,
                (lo - start) as usize,
                (hi - lo) as usize,
            )
        })
    }

    /// Handles an MMIO read of `len` (1..=8) bytes: the bytes read (those outside any device
    /// read as 0), or None when no device is at `gpa`.
    pub fn mmio_read(&mut self, gpa: u64, len: u32) -> Option<[u8; 8]> {
        if let Some(data) = self.platform.mmio_read(gpa, len) {
            self.counts.apic += 1;
            return Some(data);
        }
        let len = (len as usize).min(8);
        let (at, skip, n) = Self::iomem_overlap(gpa, len)?;
        self.counts.testdev += 1;
        let mut data = [0u8; 8];
        data[skip..skip + n].copy_from_slice(&self.iomem[at..at + n]);
        Some(data)
    }

    /// Handles an MMIO write of `data` (1..=8 bytes); false when no device is at `gpa`.
    pub fn mmio_write(&mut self, gpa: u64, data: &[u8]) -> bool {
        let data = &data[..data.len().min(8)];
        if self.platform.mmio_write(gpa, data) {
            self.counts.apic += 1;
            return true;
        }
        let Some((at, skip, n)) = Self::iomem_overlap(gpa, data.len()) else {
            return false;
        };
        self.counts.testdev += 1;
        self.iomem[at..at + n].copy_from_slice(&data[skip..skip + n]);
        true
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

    #[test]
    fn testdev_iomem_is_ram_behind_mmio() {
        let mut d = Devices::new(Box::new(Capture::default()), true);
        let base = TESTDEV_IOMEM_BASE;
        // Starts zeroed, like QEMU's.
        assert_eq!(d.mmio_read(base + 0x100, 8), Some([0; 8]));
        assert!(d.mmio_write(base + 0x100, &0x1122_3344_5566_7788u64.to_le_bytes()));
        assert_eq!(
            d.mmio_read(base + 0x100, 8),
            Some(0x1122_3344_5566_7788u64.to_le_bytes())
        );
        // Little-endian, any length, any alignment.
        assert_eq!(
            d.mmio_read(base + 0x100, 1),
            Some([0x88, 0, 0, 0, 0, 0, 0, 0])
        );
        assert_eq!(
            d.mmio_read(base + 0x103, 2),
            Some([0x55, 0x44, 0, 0, 0, 0, 0, 0])
        );
        assert!(d.mmio_write(base + 0x101, &[0xaa, 0xbb]));
        assert_eq!(
            d.mmio_read(base + 0x100, 4),
            Some([0x88, 0xaa, 0xbb, 0x55, 0, 0, 0, 0])
        );
        // A 4-byte access across the two pages sees one buffer.
        assert!(d.mmio_write(base + 0xffe, &[1, 2, 3, 4]));
        assert_eq!(
            d.mmio_read(base + 0x1000, 2),
            Some([3, 4, 0, 0, 0, 0, 0, 0])
        );
        // First and last bytes of the window.
        assert!(d.mmio_write(base, &[0x5a]));
        assert!(d.mmio_write(base + 0xffff, &[0xa5]));
        assert_eq!(d.mmio_read(base, 1).unwrap()[0], 0x5a);
        assert_eq!(d.mmio_read(base + 0xffff, 1).unwrap()[0], 0xa5);
        assert_eq!(d.counts.testdev, 13);
    }

    #[test]
    fn testdev_iomem_edges() {
        let mut d = Devices::new(Box::new(Capture::default()), true);
        let (base, end) = (
            TESTDEV_IOMEM_BASE,
            TESTDEV_IOMEM_BASE + TESTDEV_IOMEM_LEN as u64,
        );
        // Outside the window: no device.
        assert_eq!(d.mmio_read(base - 1, 1), None);
        assert_eq!(d.mmio_read(end, 4), None);
        assert!(!d.mmio_write(base - 8, &[1; 8]));
        assert!(!d.mmio_write(0xf000_0000, &[1; 4]));
        assert_eq!(d.mmio_read(u64::MAX - 3, 8), None, "no overflow at the top");
        assert_eq!(d.counts.testdev, 0);
        // Partly inside: only the window's bytes are stored; the rest reads as 0.
        assert!(d.mmio_write(base - 2, &[1, 2, 3, 4]));
        assert_eq!(d.mmio_read(base - 2, 4), Some([0, 0, 3, 4, 0, 0, 0, 0]));
        assert!(d.mmio_write(end - 2, &[5, 6, 7, 8, 9, 10, 11, 12]));
        assert_eq!(d.mmio_read(end - 4, 8), Some([0, 0, 5, 6, 0, 0, 0, 0]));
        assert_eq!(d.mmio_read(base, 2), Some([3, 4, 0, 0, 0, 0, 0, 0]));
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
