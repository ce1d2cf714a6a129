// SPDX-License-Identifier: GPL-2.0

//! The guest's devices, the same for every backend: COM1 (a 16550A from vm-superio), the exit
//! port (shadowvm's, or QEMU's isa-debug-exit), the i8042 reset line, QEMU's fw_cfg, and
//! QEMU pc-testdev's memory window at 0xff000000 (RAM reached only through MMIO exits).

pub mod fw_cfg;
pub mod i8042;
pub mod linux_console;
pub mod uart;

use crate::platform::{HostClock, Platform};
use crate::runloop::Outcome;
use fw_cfg::FwCfg;
use i8042::Keyboard;
use std::collections::BTreeSet;
use std::io::Write;
use std::sync::mpsc::Receiver;
use uart::Uart;

/// First port of the serial UART (COM1).
pub const SERIAL_BASE: u16 = uart::COM1_BASE;
/// Writing a status here ends the run (0 = pass).
pub const EXIT_PORT: u16 = 0xf4;
/// QEMU's `isa-debug-exit,iobase=0xf4,iosize=4` covers 0xf4..0xf8.
const QEMU_EXIT_PORTS: std::ops::Range<u16> = EXIT_PORT..EXIT_PORT + 4;

/// Guest-physical base of the test device's memory window: QEMU's `pc-testdev` iomem region,
/// which kvm-unit-tests' x86/emulator.c uses as `IORAM_BASE_PHYS`.
pub const TESTDEV_IOMEM_BASE: u64 = 0xff00_0000;
/// Its length (QEMU: `IOMEM_LEN`).
pub const TESTDEV_IOMEM_LEN: usize = 0x1_0000;

/// What the exit port means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitDevice {
    /// Port 0xf4: the value written is the launcher's exit status (0 = pass).
    Shadowvm,
    /// QEMU's isa-debug-exit at 0xf4..0xf8: a write of v ends the run with QEMU's process
    /// status `(v << 1) | 1`, and a guest reset ends it with 0 (QEMU with -no-reboot).
    Qemu,
}

/// What an OUT did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutEffect {
    Continue,
    /// The guest wrote this status to the shadowvm exit port.
    Exit(u32),
    /// The guest wrote this value to QEMU's isa-debug-exit.
    DebugExit(u64),
    /// The guest asked the i8042 for a reset.
    Reset,
}

impl OutEffect {
    /// How the run ends, if it does.
    pub fn outcome(self, exit_device: ExitDevice) -> Option<Outcome> {
        match self {
            Self::Continue => None,
            Self::Exit(s) => Some(Outcome::Exited(s)),
            Self::DebugExit(v) => Some(Outcome::DebugExit(v)),
            Self::Reset => Some(Outcome::Reset {
                qemu_no_reboot: exit_device == ExitDevice::Qemu,
                console: None,
            }),
        }
    }
}

/// Receives the interrupt lines the devices drive (COM1: ISA IRQ 4), for an interrupt
/// controller.
pub trait IrqSink {
    /// `irq`'s line went to `asserted` (called on changes only).
    fn set_irq(&mut self, irq: u8, asserted: bool);
}

/// Port I/O counts per device, for the statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoCounts {
    pub serial: u64,
    pub exit_port: u64,
    pub other: u64,
    /// MMIO accesses the test device's memory window answered.
    pub testdev: u64,
    /// i8042 ports 0x60 and 0x64.
    pub keyboard: u64,
    /// fw_cfg ports 0x510 and 0x511.
    pub fw_cfg: u64,
    /// 8259, ELCR, PIT (with port 0x61) and RTC port accesses.
    pub pic: u64,
    /// Local APIC register accesses.
    pub apic: u64,
}

/// The device model shared by every backend.
pub struct Devices {
    uart: Uart,
    keyboard: Keyboard,
    fw_cfg: Option<FwCfg>,
    exit_device: ExitDevice,
    irq_sink: Option<Box<dyn IrqSink>>,
    /// COM1's interrupt line as last reported.
    com1_irq: bool,
    warned: BTreeSet<u16>,
    quiet: bool,
    /// The test device's memory window; every access to it is an MMIO exit, so it exercises
    /// the hypervisor's instruction emulator with memory that behaves like RAM.
    iomem: Vec<u8>,
    pub counts: IoCounts,
    /// Interrupt controllers, timers and owned MSRs (their ports and the APIC page are
    /// dispatched to it); the devices' interrupt lines go to its 8259s. Replace it only with
    /// `set_platform`.
    pub platform: Platform,
    /// First error writing serial output; reported at the end instead of stopping the guest.
    pub output_error: Option<std::io::Error>,
    /// A benchmark mark the run loop records before the first entry (`mark_entry`).
    entry_mark: Option<u64>,
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
        let mut d = Self {
            uart: Uart::new(serial_out),
            keyboard: Keyboard::default(),
            fw_cfg: None,
            exit_device: ExitDevice::Shadowvm,
            irq_sink: None,
            com1_irq: false,
            warned: BTreeSet::new(),
            quiet,
            iomem: vec![0; TESTDEV_IOMEM_LEN],
            counts: IoCounts::default(),
            platform: Platform::new(Box::new(HostClock), quiet),
            output_error: None,
            entry_mark: None,
        };
        d.set_irq_sink(d.platform.irq_sink());
        d
    }

    /// Puts in another platform (a test's, on a fake clock) and connects the interrupt
    /// lines to it.
    #[cfg(test)]
    pub fn set_platform(&mut self, platform: Platform) {
        self.platform = platform;
        self.set_irq_sink(self.platform.irq_sink());
    }

    /// Whether COM1 could still raise its receive interrupt by itself: input may arrive, the
    /// guest enabled the received-data interrupt, and IRQ 4 reaches the CPU.
    pub fn serial_input_can_interrupt(&self) -> bool {
        self.uart.input_open()
            && self.uart.receive_interrupt_enabled()
            && self.platform.irq_reaches_cpu(uart::COM1_IRQ)
    }

    /// Reads COM1's output as a Linux kernel's console, to tell how the guest ends
    /// (`linux_console`).
    pub fn watch_linux_console(&mut self) {
        self.uart.watch_linux_console();
    }

    /// Records benchmark mark `value` at the guest's entry, as if the guest had written it to
    /// the mark port before its first instruction: a Linux guest cannot mark its own kernel
    /// entry, so its benchmark marks the end of its boot and the launcher the start.
    pub fn mark_entry(&mut self, value: u64) {
        self.entry_mark = Some(value);
    }

    /// The mark to record at entry, if any (`mark_entry`).
    pub fn entry_mark(&self) -> Option<u64> {
        self.entry_mark
    }

    /// A watched Linux console finished reporting a kernel panic: how the run ends.
    pub fn linux_panic_finished(&self) -> Option<Outcome> {
        self.uart.linux_console()?.panic_finished()
    }

    /// The outcome named after what a watched Linux console said (unchanged otherwise).
    pub fn explain_linux_end(&self, outcome: Outcome) -> Outcome {
        match self.uart.linux_console() {
            Some(c) => c.explain(outcome),
            None => outcome,
        }
    }

    pub fn set_exit_device(&mut self, d: ExitDevice) {
        self.exit_device = d;
    }

    pub fn exit_device(&self) -> ExitDevice {
        self.exit_device
    }

    pub fn set_fw_cfg(&mut self, f: FwCfg) {
        self.fw_cfg = Some(f);
    }

    /// COM1 input (see `uart::spawn_stdin_reader`).
    pub fn set_serial_input(&mut self, rx: Receiver<Vec<u8>>) {
        self.uart.set_input(rx);
    }

    /// Where interrupt line changes go; the current levels are reported at once. This is the
    /// connection for an interrupt controller (`Devices::new` connects the platform's 8259s).
    pub fn set_irq_sink(&mut self, mut sink: Box<dyn IrqSink>) {
        sink.set_irq(uart::COM1_IRQ, self.com1_irq);
        self.irq_sink = Some(sink);
    }

    /// Moves arrived serial input into COM1 (which may raise its interrupt). Called by the
    /// run loop before each entry; never blocks.
    pub fn poll_input(&mut self) {
        if self.uart.poll_input() {
            self.update_irqs();
        }
    }

    fn update_irqs(&mut self) {
        let level = self.uart.irq_asserted();
        if level != self.com1_irq {
            self.com1_irq = level;
            if let Some(sink) = &mut self.irq_sink {
                sink.set_irq(uart::COM1_IRQ, level);
            }
        }
    }

    /// Handles an OUT of `size` bytes.
    pub fn io_out(&mut self, port: u16, size: u8, value: u64) -> OutEffect {
        let value = value & mask(size);
        match self.exit_device {
            ExitDevice::Shadowvm if port == EXIT_PORT => {
                self.counts.exit_port += 1;
                return OutEffect::Exit(value as u32);
            }
            ExitDevice::Qemu if QEMU_EXIT_PORTS.contains(&port) => {
                self.counts.exit_port += 1;
                return OutEffect::DebugExit(value);
            }
            _ => {}
        }
        if uart::COM1_PORTS.contains(&port) {
            self.counts.serial += 1;
            // Wider accesses write the low byte to the addressed register.
            self.uart.write((port - SERIAL_BASE) as u8, value as u8);
            self.update_irqs();
            return OutEffect::Continue;
        }
        if Keyboard::handles(port) {
            self.counts.keyboard += 1;
            return if self.keyboard.write(port, value as u8) {
                OutEffect::Reset
            } else {
                OutEffect::Continue
            };
        }
        if let Some(f) = self.fw_cfg.as_mut().filter(|_| is_fw_cfg(port)) {
            self.counts.fw_cfg += 1;
            // Byte or word writes to the selector select (QEMU); data writes are ignored.
            if port == fw_cfg::SELECTOR_PORT && size <= 2 {
                f.select(value as u16);
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
        let exit_ports = match self.exit_device {
            ExitDevice::Shadowvm => EXIT_PORT..EXIT_PORT + 1,
            ExitDevice::Qemu => QEMU_EXIT_PORTS,
        };
        if exit_ports.contains(&port) {
            self.counts.exit_port += 1;
            return 0;
        }
        if uart::COM1_PORTS.contains(&port) {
            self.counts.serial += 1;
            let v = self.uart.read((port - SERIAL_BASE) as u8);
            self.update_irqs();
            return u64::from(v);
        }
        if Keyboard::handles(port) {
            self.counts.keyboard += 1;
            return u64::from(self.keyboard.read(port));
        }
        if let Some(f) = self.fw_cfg.as_mut().filter(|_| is_fw_cfg(port)) {
            self.counts.fw_cfg += 1;
            // QEMU's fw_cfg I/O ports take byte reads only (both ports return data); wider
            // ones read as if nothing answered.
            return if size == 1 {
                u64::from(f.read_byte())
            } else {
                mask(size)
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

    fn warn_once(&mut self, port: u16, dir: &str) {
        if !self.quiet && self.warned.insert(port) {
            eprintln!("shadowvm-run: note: guest {dir} on port {port:#x}, which has no device (ignored; reported once)");
        }
    }

    /// Flushes serial output and collects its first error into `output_error`.
    pub fn flush(&mut self) {
        let out = self.uart.output();
        out.flush_all();
        if let Some(e) = out.error.take() {
            self.output_error.get_or_insert(e);
        }
    }
}

fn is_fw_cfg(port: u16) -> bool {
    port == fw_cfg::SELECTOR_PORT || port == fw_cfg::DATA_PORT
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
        assert_eq!(d.io_in(0x2f8, 1), 0xff);
        assert_eq!(d.io_in(0x2f8, 2), 0xffff);
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

    #[test]
    fn qemu_exit_device_statuses() {
        let mut d = Devices::new(Box::new(Capture::default()), true);
        d.set_exit_device(ExitDevice::Qemu);
        let status = |d: &mut Devices, port, size, v| {
            let e = d.io_out(port, size, v);
            e.outcome(ExitDevice::Qemu).map(|o| (e, o.exit_status()))
        };
        // QEMU exits with (v << 1) | 1; the process status is its low byte.
        assert_eq!(
            status(&mut d, 0xf4, 4, 0),
            Some((OutEffect::DebugExit(0), 1))
        );
        assert_eq!(
            status(&mut d, 0xf4, 4, 0x42),
            Some((OutEffect::DebugExit(0x42), 133))
        );
        assert_eq!(
            status(&mut d, 0xf4, 4, 0x7f),
            Some((OutEffect::DebugExit(0x7f), 255))
        );
        assert_eq!(
            status(&mut d, 0xf4, 4, 0x80),
            Some((OutEffect::DebugExit(0x80), 1))
        );
        assert_eq!(status(&mut d, 0xf4, 4, 0xffff_ffff).map(|x| x.1), Some(255));
        // iosize=4: the whole of 0xf4..0xf8, any width.
        assert_eq!(
            status(&mut d, 0xf7, 1, 0x1ff),
            Some((OutEffect::DebugExit(0xff), 255))
        );
        assert_eq!(d.io_in(0xf6, 1), 0, "reads 0 as QEMU's");
        assert_eq!(status(&mut d, 0xf8, 1, 3), None, "past the device");
        // The shadowvm exit device has only 0xf4.
        let mut d = Devices::new(Box::new(Capture::default()), true);
        assert_eq!(d.io_out(0xf5, 1, 3), OutEffect::Continue);
        assert_eq!(d.io_in(0xf5, 1), 0xff);
    }

    #[test]
    fn i8042_reset_outcome() {
        let mut d = Devices::new(Box::new(Capture::default()), true);
        assert_eq!(d.io_in(0x64, 1), 0x1c);
        assert_eq!(d.io_out(0x64, 1, 0xd1), OutEffect::Continue);
        let e = d.io_out(0x64, 1, 0xfe);
        assert_eq!(e, OutEffect::Reset);
        assert_eq!(e.outcome(ExitDevice::Shadowvm).unwrap().exit_status(), 178);
        assert_eq!(e.outcome(ExitDevice::Qemu).unwrap().exit_status(), 0);
        assert_eq!(d.counts.keyboard, 3);
    }

    #[test]
    fn fw_cfg_through_the_ports() {
        let mut d = Devices::new(Box::new(Capture::default()), true);
        // Without fw_cfg the ports float.
        assert_eq!(d.io_in(0x511, 1), 0xff);
        d.set_fw_cfg(FwCfg::new(64 << 20, 1, &[(0, 64 << 20, 1)]));
        d.io_out(0x510, 2, u64::from(fw_cfg::key::SIGNATURE));
        let sig: Vec<u64> = (0..4).map(|_| d.io_in(0x511, 1)).collect();
        assert_eq!(sig, [b'Q', b'E', b'M', b'U'].map(u64::from));
        // A byte write selects too, and the selector port reads data, as in QEMU.
        d.io_out(0x510, 1, u64::from(fw_cfg::key::ID));
        assert_eq!(d.io_in(0x510, 1), 1);
        // Wider reads are not part of the interface; data writes are ignored.
        assert_eq!(d.io_in(0x511, 2), 0xffff);
        d.io_out(0x511, 1, 0x55);
        d.io_out(0x510, 2, u64::from(fw_cfg::key::RAM_SIZE));
        let ram: u64 = (0..8).map(|i| d.io_in(0x511, 1) << (8 * i)).sum();
        assert_eq!(ram, 64 << 20);
        assert_eq!(d.counts.fw_cfg, 18);
    }

    #[derive(Clone, Default)]
    struct Lines(Rc<RefCell<Vec<(u8, bool)>>>);
    impl IrqSink for Lines {
        fn set_irq(&mut self, irq: u8, asserted: bool) {
            self.0.borrow_mut().push((irq, asserted));
        }
    }

    #[test]
    fn com1_interrupt_reaches_the_sink() {
        let mut d = Devices::new(Box::new(Capture::default()), true);
        let lines = Lines::default();
        d.set_irq_sink(Box::new(lines.clone()));
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        d.set_serial_input(rx);
        d.io_out(0x3f9, 1, 1); // IER: received data available
        assert_eq!(*lines.0.borrow(), [(4, false)], "initial level only");
        tx.send(b"k".to_vec()).unwrap();
        d.poll_input();
        assert_eq!(lines.0.borrow().last(), Some(&(4, true)));
        assert_eq!(d.io_in(0x3fa, 1), 0xc4, "IIR: received data");
        assert_eq!(lines.0.borrow().last(), Some(&(4, false)));
        assert_eq!(d.io_in(0x3f8, 1), u64::from(b'k'));
        assert_eq!(lines.0.borrow().len(), 3);
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
        d.flush();
        assert!(d.output_error.is_some());
    }
}
