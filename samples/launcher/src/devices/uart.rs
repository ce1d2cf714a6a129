// SPDX-License-Identifier: GPL-2.0

//! COM1: a 16550A UART from rust-vmm's `vm-superio` (used under its BSD-3-Clause licence).
//! Output goes to the launcher's serial output, input comes from the launcher's stdin through
//! a reader thread, and the interrupt output is a line level the caller reads after each
//! access (ISA IRQ 4).

use super::linux_console::LinuxConsole;
use std::cell::Cell;
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError};
use vm_superio::serial::NoEvents;
use vm_superio::{Serial, Trigger};

/// First port of COM1.
pub const COM1_BASE: u16 = 0x3f8;
/// Ports of COM1.
pub const COM1_PORTS: std::ops::Range<u16> = COM1_BASE..COM1_BASE + 8;
/// COM1's ISA interrupt line.
pub const COM1_IRQ: u8 = 4;
/// Input bytes held back while the guest does not read (the reader thread then blocks).
const MAX_PENDING_INPUT: usize = 4096;

/// vm-superio raises interrupts through a `Trigger`, made for an eventfd wired to KVM's
/// irqfd. The shadowvm backend has no irqfd and the launcher's interrupt controller is code
/// in this process, so this trigger only counts the edges; `Uart::irq_asserted` derives the
/// line level from the device state, which is what an interrupt controller needs.
#[derive(Debug, Default)]
pub struct EdgeCounter(Cell<u64>);

impl Trigger for EdgeCounter {
    type E = std::convert::Infallible;
    fn trigger(&self) -> Result<(), Self::E> {
        self.0.set(self.0.get() + 1);
        Ok(())
    }
}

/// The serial output behind vm-superio. vm-superio flushes after every byte and stops at the
/// first write error; this keeps the launcher's behaviour instead: flush at line ends (a
/// syscall per byte would slow chatty guests), and keep the first error for the end of the
/// run while the guest goes on.
pub struct SerialOutput {
    out: Box<dyn Write>,
    unflushed_line: bool,
    /// Reads a Linux guest's console for how it ends (`Uart::watch_linux_console`).
    linux: Option<LinuxConsole>,
    /// First error writing the output.
    pub error: Option<io::Error>,
}

impl Write for SerialOutput {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(c) = &mut self.linux {
            c.feed(buf);
        }
        if self.error.is_none() {
            match self.out.write_all(buf) {
                Ok(()) => self.unflushed_line |= buf.contains(&b'\n'),
                Err(e) => self.error = Some(e),
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.unflushed_line && self.error.is_none() {
            self.unflushed_line = false;
            if let Err(e) = self.out.flush() {
                self.error = Some(e);
            }
        }
        Ok(())
    }
}

impl SerialOutput {
    /// Flushes whatever is buffered (end of the run).
    pub fn flush_all(&mut self) {
        if self.error.is_none() {
            if let Err(e) = self.out.flush() {
                self.error = Some(e);
            }
        }
    }
}

/// COM1 with its input queue.
pub struct Uart {
    serial: Serial<EdgeCounter, NoEvents, SerialOutput>,
    /// Chunks from the stdin reader; None after end of input (or when there is no input).
    input: Option<Receiver<Vec<u8>>>,
    /// Input read but not yet in the UART's 64-byte receive FIFO.
    pending: VecDeque<u8>,
}

impl Uart {
    pub fn new(out: Box<dyn Write>) -> Self {
        Self {
            serial: Serial::new(
                EdgeCounter::default(),
                SerialOutput {
                    out,
                    unflushed_line: false,
                    linux: None,
                    error: None,
                },
            ),
            input: None,
            pending: VecDeque::new(),
        }
    }

    /// Takes guest input from `rx` (see `spawn_stdin_reader`).
    pub fn set_input(&mut self, rx: Receiver<Vec<u8>>) {
        self.input = Some(rx);
    }

    /// Register write at `offset` (0..8).
    pub fn write(&mut self, offset: u8, value: u8) {
        // The only errors are the trigger's (none) and output errors, which SerialOutput
        // keeps and does not return.
        let _ = self.serial.write(offset, value);
        self.poll_input();
    }

    /// Register read at `offset` (0..8).
    pub fn read(&mut self, offset: u8) -> u8 {
        self.poll_input();
        let v = self.serial.read(offset);
        // A byte left the FIFO: refill it.
        self.poll_input();
        v
    }

    /// Moves input that has arrived into the receive FIFO; true if any did. Never blocks.
    pub fn poll_input(&mut self) -> bool {
        if let Some(rx) = &self.input {
            while self.pending.len() < MAX_PENDING_INPUT {
                match rx.try_recv() {
                    Ok(chunk) => self.pending.extend(chunk),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        self.input = None;
                        break;
                    }
                }
            }
        }
        let room = self.serial.fifo_capacity().min(self.pending.len());
        if room == 0 {
            return false;
        }
        let bytes: Vec<u8> = self.pending.iter().take(room).copied().collect();
        // In loopback mode the UART takes no external input (Ok(0)): keep it pending.
        let taken = self.serial.enqueue_raw_bytes(&bytes).unwrap_or(0);
        self.pending.drain(..taken);
        taken > 0
    }

    /// Whether input may still arrive (the reader has not reached end of input).
    pub fn input_open(&self) -> bool {
        self.input.is_some()
    }

    /// IER bit 0: the guest wants the received-data interrupt.
    pub fn receive_interrupt_enabled(&self) -> bool {
        self.serial.state().interrupt_enable & 1 != 0
    }

    /// Level of the interrupt output: an interrupt is pending in IIR (as QEMU's serial
    /// model, OUT2 in MCR does not gate it).
    pub fn irq_asserted(&self) -> bool {
        self.serial.state().interrupt_identification & 1 == 0
    }

    /// Interrupts the device has raised (rising edges).
    #[cfg(test)]
    pub fn irq_edges(&self) -> u64 {
        self.serial.interrupt_evt().0.get()
    }

    /// Reads the output as a Linux kernel's console from now on.
    pub fn watch_linux_console(&mut self) {
        self.serial.writer_mut().linux = Some(LinuxConsole::default());
    }

    /// What the Linux console said, if it is watched.
    pub fn linux_console(&self) -> Option<&LinuxConsole> {
        self.serial.writer().linux.as_ref()
    }

    pub fn output(&mut self) -> &mut SerialOutput {
        self.serial.writer_mut()
    }
}

/// Starts a thread that reads the launcher's stdin and sends it in chunks; the channel
/// closes at end of input or on a read error. The channel is bounded, so a guest that never
/// reads stops the reader, not the run. The thread blocks the launcher's timeout and
/// interrupt signals, so they always reach the thread running the guest. A terminal stays
/// in its line mode: input arrives a line at a time, echoed by the terminal.
///
/// When stdin is a terminal that the launcher is in the background of, reading would stop
/// the whole launcher (SIGTTIN), so there is no input then (`note` says so).
pub fn spawn_stdin_reader(note: bool) -> Receiver<Vec<u8>> {
    let (tx, rx) = sync_channel::<Vec<u8>>(4);
    // SAFETY: isatty, tcgetpgrp and getpgrp only query state.
    let background = unsafe { libc::isatty(0) == 1 && libc::tcgetpgrp(0) != libc::getpgrp() };
    if background {
        if note {
            eprintln!("shadowvm-run: note: running in the background of the terminal, so the guest gets no serial input");
        }
        return rx;
    }
    spawn_reader(io::stdin(), tx);
    rx
}

/// The reader thread: `input` in chunks to `tx` until end of input or a read error.
fn spawn_reader(mut input: impl Read + Send + 'static, tx: SyncSender<Vec<u8>>) {
    // SAFETY: sigset_t is plain data that sigemptyset/sigaddset initialise; pthread_sigmask
    // only changes this thread's mask, which is restored below, and the spawned thread
    // inherits the blocked mask.
    let old = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGALRM, libc::SIGINT, libc::SIGTERM] {
            libc::sigaddset(&mut set, sig);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
        old
    };
    let spawned = std::thread::Builder::new()
        .name("serial-input".into())
        .spawn(move || {
            let mut buf = [0u8; 1024];
            loop {
                match input.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if tx.send(buf[..n].to_vec()).is_err() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
        });
    // SAFETY: restores the mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    if let Err(e) = spawned {
        // Without the thread the sender is gone: the guest sees no input, as at end of input.
        eprintln!("shadowvm-run: warning: no serial input: cannot start the input reader: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::tests::Capture;
    use std::sync::mpsc::sync_channel;

    const RBR: u8 = 0;
    const IER: u8 = 1;
    const IIR: u8 = 2;
    const LSR: u8 = 5;

    #[test]
    fn output_goes_through_vm_superio() {
        let cap = Capture::default();
        let mut u = Uart::new(Box::new(cap.clone()));
        for b in b"ok\n" {
            u.write(0, *b);
        }
        assert_eq!(&*cap.0.borrow(), b"ok\n");
        assert_eq!(u.read(LSR), 0x60, "THR empty and idle, no data");
        assert_eq!(u.read(4), 0x08, "MCR: OUT2, vm-superio's reset value");
        assert_eq!(u.read(6), 0xb0, "MSR: DCD, DSR, CTS");
    }

    #[test]
    fn input_reaches_the_guest_in_order_and_eof_is_kept() {
        let mut u = Uart::new(Box::new(Capture::default()));
        let (tx, rx) = sync_channel(4);
        u.set_input(rx);
        assert_eq!(u.read(LSR) & 1, 0, "nothing yet");
        tx.send(b"hi".to_vec()).unwrap();
        assert_eq!(u.read(LSR), 0x61, "data ready");
        assert_eq!(u.read(RBR), b'h');
        assert_eq!(u.read(RBR), b'i');
        assert_eq!(u.read(LSR), 0x60);
        drop(tx);
        assert!(u.input_open());
        assert!(!u.poll_input());
        assert!(!u.input_open(), "end of input seen");
        assert_eq!(u.read(RBR), 0, "an empty FIFO reads 0");
    }

    #[test]
    fn input_beyond_the_fifo_waits() {
        let mut u = Uart::new(Box::new(Capture::default()));
        let (tx, rx) = sync_channel(4);
        u.set_input(rx);
        let data: Vec<u8> = (0..200u8).collect();
        tx.send(data.clone()).unwrap();
        let mut got = Vec::new();
        while u.read(LSR) & 1 != 0 {
            got.push(u.read(RBR));
        }
        assert_eq!(got, data, "all 200 bytes through a 64-byte FIFO");
    }

    #[test]
    fn interrupt_line_follows_iir() {
        let mut u = Uart::new(Box::new(Capture::default()));
        let (tx, rx) = sync_channel(4);
        u.set_input(rx);
        assert!(!u.irq_asserted());
        // Received-data interrupt enabled: input raises the line, reading IIR drops it.
        u.write(IER, 0x01);
        assert!(!u.irq_asserted(), "no data, no interrupt");
        tx.send(b"x".to_vec()).unwrap();
        assert!(u.poll_input());
        assert!(u.irq_asserted());
        assert_eq!(u.irq_edges(), 1);
        assert_eq!(u.read(IIR), 0xc4, "RDA, FIFOs on");
        assert!(!u.irq_asserted());
        assert_eq!(u.read(RBR), b'x');
        // THR-empty interrupt: enabling it raises the line at once (the THR is empty).
        u.write(IER, 0x02);
        assert!(u.irq_asserted());
        assert_eq!(u.read(IIR), 0xc2);
        assert!(!u.irq_asserted());
        // With interrupts off, output raises nothing.
        u.write(IER, 0);
        u.read(IIR);
        u.write(0, b'a');
        assert!(!u.irq_asserted());
    }

    #[test]
    fn reader_thread_forwards_input_then_closes() {
        let (tx, rx) = sync_channel(4);
        spawn_reader(io::Cursor::new(b"typed\n".to_vec()), tx);
        let mut u = Uart::new(Box::new(Capture::default()));
        u.set_input(rx);
        let mut got = Vec::new();
        let start = std::time::Instant::now();
        while u.input_open() && start.elapsed() < std::time::Duration::from_secs(10) {
            while u.read(LSR) & 1 != 0 {
                got.push(u.read(RBR));
            }
            std::thread::yield_now();
        }
        while u.read(LSR) & 1 != 0 {
            got.push(u.read(RBR));
        }
        assert_eq!(got, b"typed\n");
        assert!(!u.input_open(), "end of input closes the channel");
    }

    struct Broken;
    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::other("disk full"))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn output_errors_are_kept() {
        let mut u = Uart::new(Box::new(Broken));
        u.write(0, b'x');
        u.write(0, b'y');
        assert_eq!(u.output().error.as_ref().unwrap().to_string(), "disk full");
        assert_eq!(u.read(LSR), 0x60, "the guest is not held up");
    }
}
