// SPDX-License-Identifier: GPL-2.0

//! The PC's two cascaded 8259A interrupt controllers (master at 0x20/0x21, slave at
//! 0xa0/0xa1 on master IRQ 2) and their edge/level control registers (ELCR, 0x4d0/0x4d1).
//! The model follows the 8259A data sheet as QEMU's i8259 does.

/// Master input the slave's output is wired to.
const CASCADE_IRQ: u8 = 2;

/// One 8259A.
#[derive(Clone, Debug, Default)]
struct Chip {
    /// Interrupt request register.
    irr: u8,
    /// Interrupt mask register (OCW1).
    imr: u8,
    /// In-service register.
    isr: u8,
    /// Input levels seen last, for edge detection.
    last_level: u8,
    /// Rotation: the IRQ with the lowest priority is `priority_add - 1`.
    priority_add: u8,
    /// ICW2: vector of IRQ 0 (low 3 bits zero).
    irq_base: u8,
    /// OCW3 RR/RIS: reads of the command port return ISR instead of IRR.
    read_isr: bool,
    /// OCW3 poll command pending: the next read acknowledges.
    poll: bool,
    special_mask: bool,
    /// 0: ready; 1: expecting ICW2; 2: ICW3; 3: ICW4.
    init_state: u8,
    auto_eoi: bool,
    rotate_on_auto_eoi: bool,
    special_fully_nested: bool,
    icw4_needed: bool,
    single: bool,
    /// Edge/level control: bit set = level-triggered input.
    elcr: u8,
    /// ELCR bits that exist (IRQ 0, 1, 2, 8, 13 are always edge).
    elcr_mask: u8,
    is_master: bool,
}

impl Chip {
    /// Lowest priority number (0 = highest) among the bits of `mask`, 8 for none.
    fn priority(&self, mask: u8) -> u8 {
        (0..8)
            .find(|p| mask & (1 << ((p + self.priority_add) & 7)) != 0)
            .unwrap_or(8)
    }

    /// The IRQ this chip asks the CPU (or the master) for, if any.
    fn pending(&self) -> Option<u8> {
        let p = self.priority(self.irr & !self.imr);
        if p == 8 {
            return None;
        }
        let mut in_service = self.isr;
        if self.special_mask {
            in_service &= !self.imr;
        }
        if self.special_fully_nested && self.is_master {
            // The slave may interrupt its own in-service request.
            in_service &= !(1 << CASCADE_IRQ);
        }
        (p < self.priority(in_service)).then_some((p + self.priority_add) & 7)
    }

    fn set_input(&mut self, irq: u8, level: bool) {
        let bit = 1 << irq;
        if self.elcr & bit != 0 {
            if level {
                self.irr |= bit;
                self.last_level |= bit;
            } else {
                self.irr &= !bit;
                self.last_level &= !bit;
            }
        } else if level {
            if self.last_level & bit == 0 {
                self.irr |= bit;
            }
            self.last_level |= bit;
        } else {
            self.last_level &= !bit;
        }
    }

    /// INTA for `irq`: in service (unless auto-EOI), and an edge request is consumed.
    fn intack(&mut self, irq: u8) {
        let bit = 1 << irq;
        if self.auto_eoi {
            if self.rotate_on_auto_eoi {
                self.priority_add = (irq + 1) & 7;
            }
        } else {
            self.isr |= bit;
        }
        if self.elcr & bit == 0 {
            self.irr &= !bit;
        }
    }

    /// ICW1: everything but the ELCR and the level inputs starts over.
    fn init(&mut self, icw1: u8) {
        *self = Self {
            irr: self.irr & self.elcr,
            elcr: self.elcr,
            elcr_mask: self.elcr_mask,
            is_master: self.is_master,
            init_state: 1,
            icw4_needed: icw1 & 1 != 0,
            single: icw1 & 2 != 0,
            ..Self::default()
        };
    }

    fn write(&mut self, command_port: bool, v: u8) {
        if command_port {
            if v & 0x10 != 0 {
                self.init(v);
            } else if v & 0x08 != 0 {
                // OCW3.
                if v & 0x04 != 0 {
                    self.poll = true;
                }
                if v & 0x02 != 0 {
                    self.read_isr = v & 1 != 0;
                }
                if v & 0x40 != 0 {
                    self.special_mask = v & 0x20 != 0;
                }
            } else {
                self.ocw2(v);
            }
            return;
        }
        match self.init_state {
            0 => self.imr = v,
            1 => {
                self.irq_base = v & 0xf8;
                self.init_state = match (self.single, self.icw4_needed) {
                    (false, _) => 2,
                    (true, true) => 3,
                    (true, false) => 0,
                };
            }
            // ICW3 (cascade wiring) is fixed on a PC.
            2 => self.init_state = if self.icw4_needed { 3 } else { 0 },
            _ => {
                self.special_fully_nested = v & 0x10 != 0;
                self.auto_eoi = v & 0x02 != 0;
                self.init_state = 0;
            }
        }
    }

    fn ocw2(&mut self, v: u8) {
        let irq = v & 7;
        match v >> 5 {
            // Rotate in auto-EOI mode: clear / set.
            0 => self.rotate_on_auto_eoi = false,
            4 => self.rotate_on_auto_eoi = true,
            // Non-specific EOI (1), and with rotation (5).
            cmd @ (1 | 5) => {
                let p = self.priority(self.isr);
                if p != 8 {
                    let done = (p + self.priority_add) & 7;
                    self.isr &= !(1 << done);
                    if cmd == 5 {
                        self.priority_add = (done + 1) & 7;
                    }
                }
            }
            // Specific EOI.
            3 => self.isr &= !(1 << irq),
            // Set priority: `irq` becomes the lowest.
            6 => self.priority_add = (irq + 1) & 7,
            // Rotate on specific EOI.
            7 => {
                self.isr &= !(1 << irq);
                self.priority_add = (irq + 1) & 7;
            }
            // 2: no operation.
            _ => {}
        }
    }

    fn read(&mut self, command_port: bool) -> u8 {
        if std::mem::take(&mut self.poll) {
            return match self.pending() {
                Some(irq) => {
                    self.intack(irq);
                    0x80 | irq
                }
                None => 0,
            };
        }
        match (command_port, self.read_isr) {
            (true, true) => self.isr,
            (true, false) => self.irr,
            (false, _) => self.imr,
        }
    }
}

/// The master/slave pair.
#[derive(Clone, Debug)]
pub struct Pic {
    master: Chip,
    slave: Chip,
}

impl Default for Pic {
    fn default() -> Self {
        Self::new()
    }
}

impl Pic {
    /// The state a PC BIOS (SeaBIOS) leaves for the OS: IRQ 0-7 at vectors 0x08-0x0f, IRQ 8-15
    /// at 0x70-0x77, everything masked except the cascade, all inputs edge-triggered. A guest
    /// that never programs the 8259 thus gets no interrupts from it.
    pub fn new() -> Self {
        let mut p = Self {
            master: Chip {
                is_master: true,
                elcr_mask: 0xf8,
                ..Chip::default()
            },
            slave: Chip {
                elcr_mask: 0xde,
                ..Chip::default()
            },
        };
        for (chip, base, imr) in [(&mut p.master, 0x08, 0xfb), (&mut p.slave, 0x70, 0xff)] {
            chip.write(true, 0x11);
            chip.write(false, base);
            chip.write(
                false,
                if chip.is_master {
                    1 << CASCADE_IRQ
                } else {
                    CASCADE_IRQ
                },
            );
            chip.write(false, 0x01);
            chip.write(false, imr);
        }
        p
    }

    /// Whether `port` belongs to the 8259s or their ELCR.
    pub fn owns_port(port: u16) -> bool {
        matches!(port, 0x20 | 0x21 | 0xa0 | 0xa1 | 0x4d0 | 0x4d1)
    }

    /// The slave's INT drives master input 2 as a level: a request masked away at the slave
    /// no longer reaches the CPU.
    fn cascade(&mut self) {
        if self.slave.pending().is_some() {
            self.master.irr |= 1 << CASCADE_IRQ;
        } else {
            self.master.irr &= !(1 << CASCADE_IRQ);
        }
    }

    /// Drives ISA IRQ line `irq` (0-15) to `level`. Edge-triggered inputs latch on a rising
    /// edge; level-triggered ones (ELCR) follow the line.
    pub fn set_irq_line(&mut self, irq: u8, level: bool) {
        match irq {
            0..=7 => self.master.set_input(irq, level),
            8..=15 => self.slave.set_input(irq - 8, level),
            _ => return,
        }
        self.cascade();
    }

    /// Whether IRQ `irq` (0-15) gets past the masks of both chips.
    pub fn unmasked(&self, irq: u8) -> bool {
        match irq {
            0..=7 => self.master.imr & (1 << irq) == 0,
            8..=15 => {
                self.slave.imr & (1 << (irq - 8)) == 0 && self.master.imr & (1 << CASCADE_IRQ) == 0
            }
            _ => false,
        }
    }

    /// The INTR output to the CPU.
    pub fn output(&self) -> bool {
        self.master.pending().is_some()
    }

    /// INTA cycle: the vector of the highest-priority request, acknowledged. With nothing to
    /// give (the request went away) the 8259 answers IRQ 7 of the chip, a spurious interrupt.
    pub fn acknowledge(&mut self) -> u8 {
        let vector = match self.master.pending() {
            Some(CASCADE_IRQ) => {
                self.master.intack(CASCADE_IRQ);
                let irq = match self.slave.pending() {
                    Some(irq) => {
                        self.slave.intack(irq);
                        irq
                    }
                    None => 7,
                };
                self.slave.irq_base + irq
            }
            Some(irq) => {
                self.master.intack(irq);
                self.master.irq_base + irq
            }
            None => self.master.irq_base + 7,
        };
        self.cascade();
        vector
    }

    pub fn io_write(&mut self, port: u16, value: u8) {
        match port {
            0x20 | 0x21 => self.master.write(port == 0x20, value),
            0xa0 | 0xa1 => self.slave.write(port == 0xa0, value),
            0x4d0 => self.master.elcr = value & self.master.elcr_mask,
            0x4d1 => self.slave.elcr = value & self.slave.elcr_mask,
            _ => return,
        }
        self.cascade();
    }

    pub fn io_read(&mut self, port: u16) -> u8 {
        let v = match port {
            0x20 | 0x21 => self.master.read(port == 0x20),
            0xa0 | 0xa1 => self.slave.read(port == 0xa0),
            0x4d0 => self.master.elcr,
            0x4d1 => self.slave.elcr,
            _ => 0xff,
        };
        self.cascade();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Programs both chips like Linux does: vectors 0x20/0x28, ICW4 8086 mode, all unmasked.
    fn programmed() -> Pic {
        let mut p = Pic::new();
        for (port, base, icw3) in [(0x20u16, 0x20u8, 4u8), (0xa0, 0x28, 2)] {
            p.io_write(port, 0x11);
            p.io_write(port + 1, base);
            p.io_write(port + 1, icw3);
            p.io_write(port + 1, 0x01);
            p.io_write(port + 1, 0x00);
        }
        p
    }

    #[test]
    fn bios_state_masks_everything() {
        let mut p = Pic::new();
        assert_eq!(p.io_read(0x21), 0xfb);
        assert_eq!(p.io_read(0xa1), 0xff);
        p.set_irq_line(4, true);
        p.set_irq_line(12, true);
        assert!(!p.output());
        p.io_write(0x21, 0xeb); // unmask IRQ 4
        assert!(p.output());
        assert_eq!(p.acknowledge(), 0x0c);
    }

    #[test]
    fn priority_and_eoi() {
        let mut p = programmed();
        p.set_irq_line(4, true);
        p.set_irq_line(1, true);
        assert_eq!(p.io_read(0x20), 0x12, "IRR");
        assert_eq!(p.acknowledge(), 0x21, "IRQ 1 before IRQ 4");
        // IRQ 4 is lower priority than the in-service IRQ 1.
        assert!(!p.output());
        p.io_write(0x20, 0x0b); // OCW3: read ISR
        assert_eq!(p.io_read(0x20), 0x02);
        p.io_write(0x20, 0x20); // non-specific EOI
        assert_eq!(p.io_read(0x20), 0x00);
        assert!(p.output());
        assert_eq!(p.acknowledge(), 0x24);
        // IRQ 0 preempts the in-service IRQ 4.
        p.set_irq_line(0, true);
        assert!(p.output());
        assert_eq!(p.acknowledge(), 0x20);
        assert_eq!(p.io_read(0x20), 0x11);
        p.io_write(0x20, 0x64); // specific EOI for IRQ 4
        assert_eq!(p.io_read(0x20), 0x01);
    }

    #[test]
    fn edge_needs_a_new_rising_edge() {
        let mut p = programmed();
        p.set_irq_line(3, true);
        assert_eq!(p.acknowledge(), 0x23);
        p.io_write(0x20, 0x20);
        assert!(!p.output(), "line still high: no new request");
        p.set_irq_line(3, false);
        p.set_irq_line(3, true);
        assert!(p.output());
    }

    #[test]
    fn level_triggered_via_elcr() {
        let mut p = programmed();
        p.io_write(0x4d1, 0xff);
        assert_eq!(p.io_read(0x4d1), 0xde, "IRQ 8 and 13 are always edge");
        p.set_irq_line(10, true);
        assert_eq!(p.acknowledge(), 0x2a);
        p.io_write(0xa0, 0x20);
        p.io_write(0x20, 0x20);
        assert!(p.output(), "level still asserted");
        p.set_irq_line(10, false);
        assert!(!p.output());
    }

    #[test]
    fn cascade_and_masks() {
        let mut p = programmed();
        p.set_irq_line(14, true);
        assert!(p.output());
        p.io_write(0xa1, 0x40); // mask IRQ 14 at the slave
        assert!(!p.output());
        p.io_write(0xa1, 0x00);
        p.io_write(0x21, 0x04); // mask the cascade at the master
        assert!(!p.output());
        p.io_write(0x21, 0x00);
        assert_eq!(p.acknowledge(), 0x2e);
        // Master IRQ 2 and slave IRQ 6 are in service.
        p.io_write(0x20, 0x0b);
        p.io_write(0xa0, 0x0b);
        assert_eq!(p.io_read(0x20), 0x04);
        assert_eq!(p.io_read(0xa0), 0x40);
        assert_eq!(p.io_read(0xa1), 0x00, "data port reads IMR");
    }

    #[test]
    fn spurious_when_request_vanishes() {
        let mut p = programmed();
        assert_eq!(p.acknowledge(), 0x27);
    }

    #[test]
    fn auto_eoi_rotation_and_poll() {
        let mut p = Pic::new();
        p.io_write(0x20, 0x11);
        p.io_write(0x21, 0x40);
        p.io_write(0x21, 0x04);
        p.io_write(0x21, 0x03); // auto-EOI
        p.io_write(0x21, 0x00);
        p.set_irq_line(5, true);
        assert_eq!(p.acknowledge(), 0x45);
        p.io_write(0x20, 0x0b);
        assert_eq!(p.io_read(0x20), 0, "auto-EOI leaves nothing in service");
        // Set priority: IRQ 3 lowest, so IRQ 4 now beats IRQ 1.
        p.io_write(0x20, 0xc3);
        p.set_irq_line(1, true);
        p.set_irq_line(4, true);
        assert_eq!(p.acknowledge(), 0x44);
        // Poll mode read acknowledges IRQ 1.
        p.io_write(0x20, 0x0c);
        assert_eq!(p.io_read(0x20), 0x81);
        p.io_write(0x20, 0x0c);
        assert_eq!(p.io_read(0x20), 0x00);
    }

    #[test]
    fn special_mask_mode() {
        let mut p = programmed();
        p.set_irq_line(1, true);
        assert_eq!(p.acknowledge(), 0x21);
        p.set_irq_line(5, true);
        assert!(!p.output());
        // Mask IRQ 1 and turn on special mask mode: lower priorities get through.
        p.io_write(0x21, 0x02);
        p.io_write(0x20, 0x68);
        assert!(p.output());
        assert_eq!(p.acknowledge(), 0x25);
    }

    #[test]
    fn icw1_resets_state() {
        let mut p = programmed();
        p.set_irq_line(6, true);
        p.io_write(0x20, 0x11);
        assert_eq!(p.io_read(0x20), 0, "edge request forgotten");
        p.io_write(0x21, 0x30);
        p.io_write(0x21, 0x04);
        p.io_write(0x21, 0x01);
        assert_eq!(p.io_read(0x21), 0x00, "IMR cleared by ICW1");
        p.set_irq_line(6, false);
        p.set_irq_line(6, true);
        assert_eq!(p.acknowledge(), 0x36);
    }
}
