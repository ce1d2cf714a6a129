// SPDX-License-Identifier: GPL-2.0

//! The 8254 programmable interval timer (ports 0x40-0x43) and the channel 2 gate/output bits
//! of port 0x61, counting on the platform clock at 1.193182 MHz. Channel 0's output is ISA
//! IRQ 0; channel 2 is what guests poll to calibrate or to wait. Modelled after the data sheet
//! and QEMU's i8254: modes 0-5, binary counting (BCD is counted as binary), counter latch,
//! read-back, and the gate of channel 2 (channels 0 and 1 are always gated on).

/// Input clock of the 8254.
pub const PIT_HZ: u64 = 1_193_182;

/// Read/write mode of a channel (control word bits 5:4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Access {
    LowByte,
    HighByte,
    #[default]
    Word,
}

/// One counter.
///
/// # Invariants
/// `count` is 1..=0x10000 (a programmed 0 means 0x10000); `load_ns` is when counting started
/// (the count was written, or the gate rose in modes 1 and 5); `armed` is false until then.
#[derive(Clone, Copy, Debug)]
struct Channel {
    mode: u8,
    access: Access,
    count: u32,
    load_ns: u64,
    armed: bool,
    gate: bool,
    /// Low byte written, high byte expected next (word access).
    write_high_next: bool,
    /// Low byte of the count being written.
    write_low: u8,
    /// Latched count and whether its high byte is read next.
    latched: Option<u16>,
    read_high_next: bool,
    /// Status byte latched by a read-back command.
    status: Option<u8>,
    /// Last tick whose interrupt was raised (channel 0).
    irq_tick: u64,
}

impl Default for Channel {
    fn default() -> Self {
        Self {
            mode: 0,
            access: Access::Word,
            count: 0x10000,
            load_ns: 0,
            armed: false,
            gate: true,
            write_high_next: false,
            write_low: 0,
            latched: None,
            read_high_next: false,
            status: None,
            irq_tick: 0,
        }
    }
}

fn ticks_between(from: u64, to: u64) -> u64 {
    (u128::from(to.saturating_sub(from)) * u128::from(PIT_HZ) / 1_000_000_000) as u64
}

fn ns_of_ticks(ticks: u64) -> u64 {
    (u128::from(ticks) * 1_000_000_000).div_ceil(u128::from(PIT_HZ)) as u64
}

impl Channel {
    fn elapsed(&self, now: u64) -> u64 {
        ticks_between(self.load_ns, now)
    }

    /// Counter value now.
    fn value(&self, now: u64) -> u16 {
        if !self.armed {
            return self.count as u16;
        }
        let d = self.elapsed(now);
        let c = u64::from(self.count);
        let v = match self.mode {
            2 => c - d % c,
            // Square wave counts down by two each clock.
            3 => c - (2 * d) % c,
            _ => c.wrapping_sub(d) & 0xffff,
        };
        v as u16
    }

    /// OUT pin now.
    fn output(&self, now: u64) -> bool {
        if !self.armed {
            // After the control word: low in mode 0, high in the others.
            return self.mode != 0;
        }
        let d = self.elapsed(now);
        let c = u64::from(self.count);
        match self.mode {
            0 => d >= c,
            1 => d >= c,
            // Low for one clock at the end of each period.
            2 => d % c != c - 1,
            3 => d % c < c.div_ceil(2),
            // Modes 4 and 5: low for one clock at terminal count.
            _ => d != c,
        }
    }

    /// Clock tick at which OUT next rises after tick `after` (interrupt edges), if ever.
    fn next_rise(&self, after: u64) -> Option<u64> {
        if !self.armed {
            return None;
        }
        let c = u64::from(self.count);
        match self.mode {
            0 | 1 => (after < c).then_some(c),
            // OUT rises after the one-clock low pulse, i.e. at each multiple of the period.
            2 | 3 => Some((after / c + 1) * c),
            _ => (after <= c).then_some(c + 1),
        }
    }

    fn write_count(&mut self, v: u16, now: u64) {
        self.count = if v == 0 { 0x10000 } else { u32::from(v) };
        // Modes 1 and 5 wait for a gate edge; the others start now.
        if !matches!(self.mode, 1 | 5) && self.gate {
            self.load_ns = now;
            self.armed = true;
            self.irq_tick = 0;
        }
    }

    fn set_gate(&mut self, gate: bool, now: u64) {
        if gate && !self.gate && matches!(self.mode, 1 | 2 | 3 | 5) {
            // Rising gate (re)starts the count.
            self.load_ns = now;
            self.armed = true;
            self.irq_tick = 0;
        }
        self.gate = gate;
    }
}

/// The three counters and port 0x61's channel 2 bits.
#[derive(Clone, Debug)]
pub struct Pit {
    channels: [Channel; 3],
    /// Port 0x61 bit 1 (speaker data), kept for reading back.
    speaker: bool,
}

impl Default for Pit {
    /// Power-on: nothing counting, channel 2's gate (port 0x61 bit 0) off.
    fn default() -> Self {
        let mut channels = [Channel::default(); 3];
        channels[2].gate = false;
        Self {
            channels,
            speaker: false,
        }
    }
}

impl Pit {
    pub fn owns_port(port: u16) -> bool {
        matches!(port, 0x40..=0x43 | 0x61)
    }

    pub fn io_write(&mut self, port: u16, v: u8, now: u64) {
        match port {
            0x40..=0x42 => {
                let ch = &mut self.channels[usize::from(port - 0x40)];
                match ch.access {
                    Access::LowByte => ch.write_count(u16::from(v), now),
                    Access::HighByte => ch.write_count(u16::from(v) << 8, now),
                    Access::Word if !ch.write_high_next => {
                        ch.write_low = v;
                        ch.write_high_next = true;
                        // Mode 0: writing the first byte stops the count (OUT goes low).
                        if ch.mode == 0 {
                            ch.armed = false;
                        }
                    }
                    Access::Word => {
                        ch.write_high_next = false;
                        ch.write_count(u16::from_le_bytes([ch.write_low, v]), now);
                    }
                }
            }
            0x43 => self.control(v, now),
            0x61 => {
                self.speaker = v & 2 != 0;
                self.channels[2].set_gate(v & 1 != 0, now);
            }
            _ => {}
        }
    }

    fn control(&mut self, v: u8, now: u64) {
        let sel = v >> 6;
        if sel == 3 {
            // Read-back: bit 5 clear latches counts, bit 4 clear latches status.
            for (i, ch) in self.channels.iter_mut().enumerate() {
                if v & (2 << i) == 0 {
                    continue;
                }
                if v & 0x20 == 0 && ch.latched.is_none() {
                    ch.latched = Some(ch.value(now));
                    ch.read_high_next = false;
                }
                if v & 0x10 == 0 && ch.status.is_none() {
                    let access = match ch.access {
                        Access::LowByte => 1,
                        Access::HighByte => 2,
                        Access::Word => 3,
                    };
                    ch.status = Some(
                        (u8::from(ch.output(now)) << 7)
                            | (u8::from(!ch.armed) << 6)
                            | (access << 4)
                            | (ch.mode << 1),
                    );
                }
            }
            return;
        }
        let ch = &mut self.channels[usize::from(sel)];
        let access = (v >> 4) & 3;
        if access == 0 {
            // Counter latch command.
            if ch.latched.is_none() {
                ch.latched = Some(ch.value(now));
                ch.read_high_next = false;
            }
            return;
        }
        ch.access = match access {
            1 => Access::LowByte,
            2 => Access::HighByte,
            _ => Access::Word,
        };
        // Modes 6 and 7 are aliases of 2 and 3.
        let mode = (v >> 1) & 7;
        ch.mode = if mode >= 6 { mode - 4 } else { mode };
        ch.armed = false;
        ch.write_high_next = false;
        ch.read_high_next = false;
        ch.latched = None;
    }

    pub fn io_read(&mut self, port: u16, now: u64) -> u8 {
        match port {
            0x40..=0x42 => {
                let ch = &mut self.channels[usize::from(port - 0x40)];
                if let Some(s) = ch.status.take() {
                    return s;
                }
                let value = ch.latched.unwrap_or_else(|| ch.value(now));
                let [lo, hi] = value.to_le_bytes();
                match ch.access {
                    Access::LowByte => {
                        ch.latched = None;
                        lo
                    }
                    Access::HighByte => {
                        ch.latched = None;
                        hi
                    }
                    Access::Word if !ch.read_high_next => {
                        ch.read_high_next = true;
                        if ch.latched.is_none() {
                            // An unlatched word read: hold the value for the high byte.
                            ch.latched = Some(value);
                        }
                        lo
                    }
                    Access::Word => {
                        ch.read_high_next = false;
                        ch.latched = None;
                        hi
                    }
                }
            }
            0x61 => {
                // Bit 4 toggles with DRAM refresh (about every 15 us); bit 5 is OUT2.
                let refresh = (now / 15_085) & 1 == 1;
                u8::from(self.channels[2].gate)
                    | (u8::from(self.speaker) << 1)
                    | (u8::from(refresh) << 4)
                    | (u8::from(self.channels[2].output(now)) << 5)
            }
            // The control port cannot be read.
            _ => 0xff,
        }
    }

    /// When channel 0's OUT next rises (IRQ 0), in platform-clock ns.
    pub fn next_irq0(&self) -> Option<u64> {
        let ch = &self.channels[0];
        let tick = ch.next_rise(ch.irq_tick)?;
        Some(ch.load_ns.saturating_add(ns_of_ticks(tick)))
    }

    /// Whether IRQ 0 has a rising edge due by `now`; consumes it (edges missed while the
    /// host could not run coalesce into one).
    pub fn take_irq0(&mut self, now: u64) -> bool {
        let Some(due) = self.next_irq0() else {
            return false;
        };
        if now < due {
            return false;
        }
        let ch = &mut self.channels[0];
        ch.irq_tick = ch.elapsed(now).max(ch.next_rise(ch.irq_tick).unwrap_or(0));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ns after which `ticks` PIT clocks have passed.
    fn at(ticks: u64) -> u64 {
        ns_of_ticks(ticks)
    }

    #[test]
    fn channel2_one_shot_like_a_guest_waits() {
        let mut p = Pit::default();
        // lib.c pit_oneshot_start(1000): gate on, mode 0 lobyte/hibyte.
        let b = p.io_read(0x61, 0);
        p.io_write(0x61, (b & !2) | 1, 0);
        p.io_write(0x43, 0xb0, 0);
        p.io_write(0x42, 0xe8, 0);
        assert_eq!(p.io_read(0x61, 0) & 0x20, 0, "OUT2 low while counting");
        p.io_write(0x42, 0x03, 100);
        assert_eq!(p.io_read(0x61, 100 + at(999)) & 0x20, 0);
        assert_eq!(
            p.io_read(0x61, 100 + at(1000)) & 0x20,
            0x20,
            "OUT2 high at 0"
        );
        assert_eq!(
            p.io_read(0x61, 100 + at(5000)) & 0x21,
            0x21,
            "stays high; gate reads back"
        );
    }

    #[test]
    fn counting_latch_and_readback() {
        let mut p = Pit::default();
        p.io_write(0x43, 0x34, 0); // channel 0, word, mode 2
        p.io_write(0x40, 0x00, 0);
        p.io_write(0x40, 0x10, 0); // 4096
        let now = at(100);
        assert_eq!(p.channels[0].value(now), 3996);
        p.io_write(0x43, 0x00, now); // latch channel 0
        let later = at(300);
        assert_eq!(
            u16::from_le_bytes([p.io_read(0x40, later), p.io_read(0x40, later)]),
            3996,
            "the latched value, not the current one"
        );
        assert_eq!(
            u16::from_le_bytes([p.io_read(0x40, later), p.io_read(0x40, later)]),
            3796
        );
        // Read-back of status and count for channel 0.
        p.io_write(0x43, 0xc2, later);
        assert_eq!(
            p.io_read(0x40, later),
            0x80 | 0x30 | 0x04,
            "OUT high, word, mode 2"
        );
        assert_eq!(p.io_read(0x40, later), 0xd4, "then the count, low byte");
        assert_eq!(p.io_read(0x40, later), 0x0e);
        // Periodic reload.
        assert_eq!(p.channels[0].value(at(4096 + 10)), 4086);
        assert_eq!(p.io_read(0x43, 0), 0xff);
    }

    #[test]
    fn square_wave_and_low_byte_access() {
        let mut p = Pit::default();
        p.io_write(0x43, 0x16, 0); // channel 0, low byte only, mode 3
        p.io_write(0x40, 100, 0);
        assert!(p.channels[0].output(at(49)));
        assert!(!p.channels[0].output(at(50)));
        assert!(p.channels[0].output(at(100)));
        assert_eq!(p.channels[0].value(at(10)), 80, "counts by two");
        assert_eq!(p.io_read(0x40, at(10)), 80);
        // Mode 6 is mode 2.
        p.io_write(0x43, 0x1c, 0);
        assert_eq!(p.channels[0].mode, 2);
    }

    #[test]
    fn irq0_edges() {
        let mut p = Pit::default();
        assert_eq!(p.next_irq0(), None, "not programmed");
        p.io_write(0x43, 0x34, 1000);
        p.io_write(0x40, 0xe8, 1000);
        p.io_write(0x40, 0x03, 1000); // 1000 ticks, rate generator
        let period = at(1000);
        assert_eq!(p.next_irq0(), Some(1000 + period));
        assert!(!p.take_irq0(1000 + period - 1));
        assert!(p.take_irq0(1000 + period));
        assert!(!p.take_irq0(1000 + period));
        assert_eq!(p.next_irq0(), Some(1000 + at(2000)));
        // Five periods late: one edge, then the grid continues.
        assert!(p.take_irq0(1000 + at(7000) + 5));
        assert!(!p.take_irq0(1000 + at(7000) + 5));
        assert_eq!(p.next_irq0(), Some(1000 + at(8000)));
        // Mode 0: a single edge.
        p.io_write(0x43, 0x30, 0);
        p.io_write(0x40, 10, 0);
        p.io_write(0x40, 0, 0);
        assert_eq!(p.next_irq0(), Some(at(10)));
        assert!(p.take_irq0(at(10)));
        assert_eq!(p.next_irq0(), None);
    }

    #[test]
    fn gate_starts_mode1_and_count_zero_is_65536() {
        let mut p = Pit::default();
        p.io_write(0x43, 0xb2, 0); // channel 2, word, mode 1
        p.io_write(0x42, 0, 0);
        p.io_write(0x42, 0, 0);
        assert!(
            p.io_read(0x61, 0) & 0x20 != 0,
            "mode 1 waits for the gate, OUT high"
        );
        p.io_write(0x61, 0, 0);
        p.io_write(0x61, 1, 500);
        assert_eq!(
            p.io_read(0x61, 500 + at(65535)) & 0x20,
            0,
            "one-shot pulse low"
        );
        assert_ne!(p.io_read(0x61, 500 + at(65536)) & 0x20, 0);
    }
}
