// SPDX-License-Identifier: GPL-2.0

//! The PC platform around the vCPU that the launcher emulates identically for every backend:
//! local APIC, 8259 pair, 8254 PIT, MC146818 RTC, the MSRs in `crate::msr::OWNED`, and the clock their
//! timers use.
//! Devices raise interrupts through `set_irq_line` or an `IrqLine` handle.

use crate::apic::{LocalApic, LvtIndex, Request, APIC_PAGE_SIZE};
use crate::devices::IrqSink;
use crate::msr::{self, Mtrrs};
use crate::pic::Pic;
use crate::pit::Pit;
use crate::rtc::Rtc;
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::rc::Rc;

/// Nanoseconds of a monotonic clock.
pub trait Clock {
    fn now_ns(&self) -> u64;
}

/// CLOCK_MONOTONIC, the clock `signals::sleep_until` and the vCPU kick timer use too.
pub struct HostClock;

impl Clock for HostClock {
    fn now_ns(&self) -> u64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid timespec; CLOCK_MONOTONIC always exists on Linux.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        (ts.tv_sec as u64)
            .saturating_mul(1_000_000_000)
            .saturating_add(ts.tv_nsec as u64)
    }
}

/// The 8259 pair as the devices' `IrqSink` (COM1 is IRQ 4).
struct PicSink(Rc<RefCell<Pic>>);

impl IrqSink for PicSink {
    fn set_irq(&mut self, irq: u8, asserted: bool) {
        self.0.borrow_mut().set_irq_line(irq, asserted);
    }
}

/// ISA IRQ of the RTC.
const RTC_IRQ: u8 = 8;

/// #GP from an MSR access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gp;

/// APIC, PIC, PIT and owned MSRs.
pub struct Platform {
    pub apic: LocalApic,
    pic: Rc<RefCell<Pic>>,
    pit: Pit,
    rtc: Rtc,
    mtrrs: Mtrrs,
    clock: Box<dyn Clock>,
    /// Guest TSC frequency, for TSC_DEADLINE and PLATFORM_INFO (None: backend cannot say).
    tsc_khz: Option<u32>,
    /// Physical-address width CPUID reports, which bounds APIC_BASE.
    phys_bits: u32,
    /// The 8259 output at the last `poll`, for LINT0's edge.
    pic_output_seen: bool,
    quiet: bool,
    noted: BTreeSet<String>,
}

impl Platform {
    pub fn new(clock: Box<dyn Clock>, quiet: bool) -> Self {
        let now = clock.now_ns();
        Self {
            apic: LocalApic::new(),
            pic: Rc::new(RefCell::new(Pic::new())),
            pit: Pit::default(),
            rtc: Rtc::new(now),
            mtrrs: Mtrrs::default(),
            clock,
            tsc_khz: None,
            phys_bits: 36,
            pic_output_seen: false,
            quiet,
            noted: BTreeSet::new(),
        }
    }

    /// What the guest was told in CPUID: TSC frequency and physical-address width.
    pub fn configure(&mut self, tsc_khz: Option<u32>, phys_bits: u32) {
        self.tsc_khz = tsc_khz;
        self.phys_bits = phys_bits;
    }

    pub fn now_ns(&self) -> u64 {
        self.clock.now_ns()
    }

    /// The 8259s' inputs as the devices' interrupt sink.
    pub fn irq_sink(&self) -> Box<dyn IrqSink> {
        Box::new(PicSink(Rc::clone(&self.pic)))
    }

    /// Whether a request on ISA IRQ `irq` gets through the 8259 masks to the CPU (through
    /// LINT0 in ExtINT mode, or directly with the APIC disabled).
    pub fn irq_reaches_cpu(&self, irq: u8) -> bool {
        self.pic.borrow().unmasked(irq) && self.apic.accepts_pic()
    }

    /// Drives ISA IRQ `irq` (0-15; others are ignored) to `level`, as a device would.
    #[cfg(test)]
    pub fn set_irq_line(&mut self, irq: u8, level: bool) {
        self.pic.borrow_mut().set_irq_line(irq, level);
    }

    /// Reports messages the APIC collected, each text once, unless quiet.
    fn flush_notes(&mut self) {
        for n in std::mem::take(&mut self.apic.notes) {
            if !self.quiet && self.noted.insert(n.clone()) {
                eprintln!("shadowvm-run: note: {n} (reported once)");
            }
        }
    }

    /// IN from a port of the 8259s, the PIT or the RTC; None for other ports.
    pub fn io_in(&mut self, port: u16) -> Option<u8> {
        if Pic::owns_port(port) {
            return Some(self.pic.borrow_mut().io_read(port));
        }
        let now = self.now_ns();
        if Rtc::owns_port(port) {
            let v = self.rtc.io_read(port, now);
            self.update_rtc_line();
            return Some(v);
        }
        Pit::owns_port(port).then(|| self.pit.io_read(port, now))
    }

    /// OUT to a port of the 8259s, the PIT or the RTC; false for other ports.
    pub fn io_out(&mut self, port: u16, value: u8) -> bool {
        let now = self.now_ns();
        if Pic::owns_port(port) {
            self.pic.borrow_mut().io_write(port, value);
        } else if Pit::owns_port(port) {
            self.pit.io_write(port, value, now);
        } else if Rtc::owns_port(port) {
            self.rtc.io_write(port, value, now);
            self.update_rtc_line();
        } else {
            return false;
        }
        true
    }

    /// IRQ 8 follows register C's IRQF (the 8259 latches its rising edge).
    fn update_rtc_line(&mut self) {
        self.pic
            .borrow_mut()
            .set_irq_line(RTC_IRQ, self.rtc.irq_level());
    }

    fn apic_offset(&self, gpa: u64) -> Option<u64> {
        let base = self.apic.mmio_base()?;
        gpa.checked_sub(base).filter(|&o| o < APIC_PAGE_SIZE)
    }

    /// MMIO read in the APIC page (while the APIC is enabled); None elsewhere.
    pub fn mmio_read(&mut self, gpa: u64, len: u32) -> Option<[u8; 8]> {
        let offset = self.apic_offset(gpa)?;
        let now = self.now_ns();
        let data = self.apic.mmio_read(offset, len as usize, now);
        self.flush_notes();
        Some(data)
    }

    /// MMIO write in the APIC page; false elsewhere.
    pub fn mmio_write(&mut self, gpa: u64, data: &[u8]) -> bool {
        let Some(offset) = self.apic_offset(gpa) else {
            return false;
        };
        let now = self.now_ns();
        self.apic.mmio_write(offset, data, now);
        self.flush_notes();
        true
    }

    /// Expires due timers, and passes a rising 8259 output to LINT0 when LINT0 is not in
    /// ExtINT mode (Fixed: its vector into IRR; NMI: an NMI).
    pub fn poll(&mut self) {
        let now = self.now_ns();
        self.apic.poll_timer(now);
        if self.pit.take_irq0(now) {
            // ISA IRQ 0 is edge-triggered: a rising edge latches the request.
            let mut pic = self.pic.borrow_mut();
            pic.set_irq_line(0, true);
            pic.set_irq_line(0, false);
        }
        self.rtc.poll(now);
        self.update_rtc_line();
        let pic_out = self.pic.borrow().output();
        if pic_out && !self.pic_output_seen && !self.apic.accepts_pic() {
            let _: Request = self.apic.local_interrupt(LvtIndex::Lint0);
            self.flush_notes();
        }
        self.pic_output_seen = pic_out;
    }

    /// Whether the 8259 is asking for the CPU through the APIC (ExtINT).
    fn extint_pending(&self) -> bool {
        self.apic.accepts_pic() && self.pic.borrow().output()
    }

    /// An interrupt the CPU would take once IF allows it.
    pub fn interrupt_pending(&self) -> bool {
        self.extint_pending() || self.apic.deliverable().is_some()
    }

    /// INTA: the vector to inject now, acknowledged at the APIC (IRR to ISR) or the 8259.
    /// ExtINT goes first: it bypasses the APIC's priorities.
    pub fn acknowledge(&mut self) -> Option<u8> {
        if self.extint_pending() {
            return Some(self.pic.borrow_mut().acknowledge());
        }
        self.apic.acknowledge()
    }

    /// Takes a pending NMI.
    pub fn take_nmi(&mut self) -> bool {
        self.apic.take_nmi()
    }

    /// When the PIT's next IRQ 0 edge is due, if the 8259 lets IRQ 0 through (a masked
    /// PIT is not worth waking up for).
    fn pit_deadline(&self) -> Option<u64> {
        self.pit
            .next_irq0()
            .filter(|_| self.pic.borrow().unmasked(0))
    }

    /// When the RTC's next enabled interrupt is due, if IRQ 8 gets through the 8259s.
    fn rtc_deadline(&self) -> Option<u64> {
        self.rtc
            .next_irq()
            .filter(|_| self.pic.borrow().unmasked(RTC_IRQ))
    }

    /// Whether something can interrupt a halted CPU without the CPU running: a pending
    /// request or an armed timer whose interrupt is not masked.
    pub fn can_wake(&self, interrupts_enabled: bool) -> bool {
        if self.apic.nmi_pending() {
            return true;
        }
        interrupts_enabled
            && (self.interrupt_pending()
                || self.apic.timer_can_interrupt()
                || self.pit_deadline().is_some()
                || self.rtc_deadline().is_some())
    }

    /// When the next timer interrupt is due (clock ns).
    pub fn next_deadline(&self) -> Option<u64> {
        [
            self.apic.next_timer_deadline(),
            self.pit_deadline(),
            self.rtc_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// RDMSR of an owned MSR.
    pub fn rdmsr(&mut self, index: u32) -> Result<u64, Gp> {
        match index {
            msr::IA32_APIC_BASE => Ok(self.apic.base_msr()),
            msr::IA32_TSC_DEADLINE => Ok(self.apic.tsc_deadline()),
            msr::IA32_MISC_ENABLE => Ok(msr::MISC_ENABLE),
            msr::IA32_FEATURE_CONTROL => Ok(msr::FEATURE_CONTROL),
            msr::IA32_UCODE_REV => Ok(msr::UCODE_REV),
            msr::MSR_PLATFORM_INFO => {
                // Maximum non-turbo ratio (bits 15:8) on a 100 MHz bus clock.
                let ratio = self.tsc_khz.map_or(0, |k| (k + 50_000) / 100_000).min(0xff);
                Ok(u64::from(ratio) << 8)
            }
            _ => self.mtrrs.read(index).ok_or(Gp),
        }
    }

    /// WRMSR of an owned MSR. `guest_tsc` is the guest's TSC now, needed for TSC_DEADLINE.
    pub fn wrmsr(&mut self, index: u32, value: u64, guest_tsc: Option<u64>) -> Result<(), Gp> {
        match index {
            msr::IA32_APIC_BASE => self
                .apic
                .write_base_msr(value, self.phys_bits)
                .map_err(|()| Gp),
            msr::IA32_TSC_DEADLINE => {
                let (Some(tsc), Some(khz)) = (guest_tsc, self.tsc_khz) else {
                    // Without the guest TSC the deadline cannot be timed; CPUID still
                    // offers the mode, so say why it does not fire.
                    self.apic.notes.push(
                        "IA32_TSC_DEADLINE written but the backend gives no guest TSC or TSC frequency: the deadline never fires".into(),
                    );
                    self.flush_notes();
                    return Ok(());
                };
                let now = self.now_ns();
                self.apic.write_tsc_deadline(value, tsc, khz, now);
                Ok(())
            }
            // Accepted, no effect: the value reads back fixed.
            msr::IA32_MISC_ENABLE | msr::IA32_UCODE_REV => Ok(()),
            msr::IA32_FEATURE_CONTROL | msr::MSR_PLATFORM_INFO => Err(Gp),
            _ => self.mtrrs.write(index, value).map_err(|()| Gp),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::apic::reg;
    use std::cell::Cell;

    /// A clock the test moves.
    #[derive(Clone, Default)]
    pub(crate) struct FakeClock(pub Rc<Cell<u64>>);

    impl Clock for FakeClock {
        fn now_ns(&self) -> u64 {
            self.0.get()
        }
    }

    pub(crate) fn platform() -> (Platform, FakeClock) {
        let clock = FakeClock::default();
        (Platform::new(Box::new(clock.clone()), true), clock)
    }

    fn w32(p: &mut Platform, reg: u32, v: u32) {
        assert!(p.mmio_write(0xfee0_0000 + u64::from(reg), &v.to_le_bytes()));
    }

    #[test]
    fn pic_reaches_cpu_through_lint0_extint() {
        let (mut p, _) = platform();
        p.io_out(0x21, 0xef); // unmask IRQ 4 (vectors 0x08-0x0f from the BIOS state)
        assert!(!p.interrupt_pending());
        p.set_irq_line(4, true);
        p.set_irq_line(4, false);
        assert!(p.interrupt_pending());
        assert!(p.can_wake(true));
        assert!(!p.can_wake(false));
        assert_eq!(p.acknowledge(), Some(0x0c));
        assert!(!p.interrupt_pending());
        // LINT0 masked: the 8259 no longer reaches the CPU.
        w32(&mut p, reg::SVR, 0x1ff);
        w32(&mut p, reg::LVT_LINT0, 0x1_0700);
        p.io_out(0x20, 0x20);
        p.set_irq_line(4, true);
        assert!(!p.interrupt_pending());
        // APIC globally disabled: directly, as through the virtual wire.
        p.wrmsr(msr::IA32_APIC_BASE, 0xfee0_0000, None).unwrap();
        assert!(p.interrupt_pending());
        assert_eq!(
            p.mmio_read(0xfee0_0020, 4),
            None,
            "no APIC page while disabled"
        );
    }

    #[test]
    fn extint_bypasses_apic_priority() {
        let (mut p, _) = platform();
        w32(&mut p, reg::SVR, 0x1ff);
        w32(&mut p, reg::ICR_LOW, (1 << 18) | 0x80);
        w32(&mut p, reg::TPR, 0xf0);
        assert_eq!(p.acknowledge(), None, "TPR blocks the self-IPI");
        p.io_out(0x21, 0xfe);
        p.set_irq_line(0, true);
        assert_eq!(p.acknowledge(), Some(0x08));
        w32(&mut p, reg::TPR, 0);
        assert_eq!(p.acknowledge(), Some(0x80));
    }

    #[test]
    fn apic_relocation_moves_the_page() {
        let (mut p, _) = platform();
        assert_eq!(
            p.mmio_read(0xfee0_0030, 4).map(|d| d[0]),
            Some(0x14),
            "version"
        );
        p.wrmsr(msr::IA32_APIC_BASE, 0xfed0_0800, None).unwrap();
        assert_eq!(p.rdmsr(msr::IA32_APIC_BASE), Ok(0xfed0_0900));
        assert_eq!(p.mmio_read(0xfee0_0030, 4), None);
        assert!(p.mmio_read(0xfed0_0030, 4).is_some());
        assert!(!p.mmio_write(0xfed0_1000, &[0; 4]), "past the page");
    }

    #[test]
    fn owned_msrs() {
        let (mut p, _) = platform();
        p.configure(Some(2_400_000), 39);
        assert_eq!(p.rdmsr(msr::IA32_MISC_ENABLE), Ok(0x1801));
        assert_eq!(p.wrmsr(msr::IA32_MISC_ENABLE, 0, None), Ok(()));
        assert_eq!(p.rdmsr(msr::IA32_MISC_ENABLE), Ok(0x1801));
        // Linux's microcode revision check: write 0, read the revision in the high half.
        assert_eq!(p.wrmsr(msr::IA32_UCODE_REV, 0, None), Ok(()));
        assert_eq!(p.rdmsr(msr::IA32_UCODE_REV), Ok(1 << 32));
        assert_eq!(p.rdmsr(msr::MSR_PLATFORM_INFO), Ok(24 << 8));
        assert_eq!(p.wrmsr(msr::MSR_PLATFORM_INFO, 0, None), Err(Gp));
        assert_eq!(p.rdmsr(msr::IA32_FEATURE_CONTROL), Ok(1));
        assert_eq!(p.wrmsr(msr::IA32_FEATURE_CONTROL, 5, None), Err(Gp));
        assert_eq!(p.rdmsr(msr::IA32_MTRRCAP), Ok(0x500));
        assert_eq!(p.wrmsr(msr::IA32_MTRR_DEF_TYPE, 0xc06, None), Ok(()));
        assert_eq!(p.rdmsr(msr::IA32_MTRR_DEF_TYPE), Ok(0xc06));
        assert_eq!(p.rdmsr(0x200), Err(Gp));
        assert_eq!(p.rdmsr(0x802), Err(Gp), "no x2APIC");
        assert_eq!(p.wrmsr(0x80b, 0, None), Err(Gp));
        // APIC_BASE beyond the 39 physical-address bits CPUID reports.
        assert_eq!(p.wrmsr(msr::IA32_APIC_BASE, 1 << 39 | 0x800, None), Err(Gp));
        assert_eq!(p.wrmsr(msr::IA32_APIC_BASE, 1 << 38 | 0x800, None), Ok(()));
    }

    #[test]
    fn tsc_deadline_through_the_msr() {
        let (mut p, clock) = platform();
        p.configure(Some(1_000_000), 36); // 1 GHz: one TSC cycle per ns
        w32(&mut p, reg::SVR, 0x1ff);
        w32(&mut p, reg::LVT_TIMER, (2 << 17) | 0xec);
        clock.0.set(1000);
        p.wrmsr(msr::IA32_TSC_DEADLINE, 50_000, Some(40_000))
            .unwrap();
        assert_eq!(p.rdmsr(msr::IA32_TSC_DEADLINE), Ok(50_000));
        assert_eq!(p.next_deadline(), Some(11_000));
        assert!(p.can_wake(true));
        clock.0.set(10_999);
        p.poll();
        assert!(!p.interrupt_pending());
        clock.0.set(11_000);
        p.poll();
        assert_eq!(p.acknowledge(), Some(0xec));
        assert_eq!(p.rdmsr(msr::IA32_TSC_DEADLINE), Ok(0));
        assert!(!p.can_wake(true), "nothing armed any more");
    }

    #[test]
    fn pit_channel0_raises_irq0() {
        let (mut p, clock) = platform();
        // Rate generator, 1193 ticks (about 1 ms).
        p.io_out(0x43, 0x34);
        p.io_out(0x40, 0xa9);
        p.io_out(0x40, 0x04);
        assert_eq!(p.next_deadline(), None, "IRQ 0 masked by the BIOS state");
        assert!(!p.can_wake(true));
        p.io_out(0x21, 0xfa);
        let due = p.next_deadline().unwrap();
        assert!((999_000..1_000_000).contains(&due), "{due}");
        assert!(p.can_wake(true));
        clock.0.set(due - 1);
        p.poll();
        assert!(!p.interrupt_pending());
        clock.0.set(due);
        p.poll();
        assert_eq!(p.acknowledge(), Some(0x08));
        p.io_out(0x20, 0x20);
        assert!(p.next_deadline().unwrap() > due);
        // Channel 2 through port 0x61, as guests poll it.
        assert_eq!(p.io_in(0x61).map(|v| v & 1), Some(0));
        assert!(p.io_out(0x61, 1));
        assert_eq!(p.io_in(0x61).map(|v| v & 1), Some(1));
    }

    #[test]
    fn apic_timer_and_pit_deadlines_combine() {
        let (mut p, _) = platform();
        w32(&mut p, reg::SVR, 0x1ff);
        w32(&mut p, reg::TIMER_DIVIDE, 0xb);
        w32(&mut p, reg::LVT_TIMER, 0x30);
        w32(&mut p, reg::TIMER_INITIAL, 5_000_000);
        assert_eq!(p.next_deadline(), Some(5_000_000));
        p.io_out(0x21, 0xfa);
        p.io_out(0x43, 0x34);
        p.io_out(0x40, 0xa9);
        p.io_out(0x40, 0x04);
        assert!(p.next_deadline().unwrap() < 1_000_000);
    }

    #[test]
    fn rtc_periodic_interrupt_through_the_cascade() {
        let (mut p, clock) = platform();
        for (port, base, icw3) in [(0x20u16, 0x20u8, 4u8), (0xa0, 0x28, 2)] {
            for v in [0x11, base, icw3, 0x01] {
                p.io_out(if v == 0x11 { port } else { port + 1 }, v);
            }
        }
        p.io_out(0x21, 0xfb);
        p.io_out(0xa1, 0xfe);
        // Rate 6 (1024 Hz), PIE.
        p.io_out(0x70, 0x8a);
        p.io_out(0x71, 0x26);
        p.io_out(0x70, 0x8b);
        p.io_out(0x71, 0x42);
        let period = 1_000_000_000 / 1024;
        assert_eq!(p.next_deadline(), Some(period));
        assert!(p.can_wake(true));
        clock.0.set(period);
        p.poll();
        assert_eq!(p.acknowledge(), Some(0x28));
        // The handler reads register C (lowering IRQ 8) and EOIs both chips.
        p.io_out(0x70, 0x8c);
        assert_eq!(p.io_in(0x71), Some(0xc0));
        p.io_out(0xa0, 0x20);
        p.io_out(0x20, 0x20);
        clock.0.set(2 * period);
        p.poll();
        assert_eq!(p.acknowledge(), Some(0x28), "a new edge after C was read");
        // Masked at the slave: no longer a wake source.
        p.io_out(0xa1, 0xff);
        assert_eq!(p.next_deadline(), None);
    }
}
