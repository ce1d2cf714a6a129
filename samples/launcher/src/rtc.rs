// SPDX-License-Identifier: GPL-2.0

//! The MC146818 real-time clock and CMOS RAM (index port 0x70, data port 0x71), whose
//! interrupt is ISA IRQ 8 (on the slave 8259). The time is the host's UTC time plus whatever
//! offset the guest sets; the periodic interrupt (register A rate, register B PIE) and the
//! update-ended interrupt (UIE) run on the platform clock. The alarm interrupt is not
//! implemented (AIE raises nothing).

use std::time::{SystemTime, UNIX_EPOCH};

const REG_SECONDS: u8 = 0x00;
const REG_MINUTES: u8 = 0x02;
const REG_HOURS: u8 = 0x04;
const REG_WEEKDAY: u8 = 0x06;
const REG_DAY: u8 = 0x07;
const REG_MONTH: u8 = 0x08;
const REG_YEAR: u8 = 0x09;
const REG_A: u8 = 0x0a;
const REG_B: u8 = 0x0b;
const REG_C: u8 = 0x0c;
const REG_D: u8 = 0x0d;
/// Century byte, where QEMU and SeaBIOS keep it.
const REG_CENTURY: u8 = 0x32;

const B_SET: u8 = 1 << 7;
const B_PIE: u8 = 1 << 6;
const B_UIE: u8 = 1 << 4;
const B_BINARY: u8 = 1 << 2;
const B_24H: u8 = 1 << 1;
const C_IRQF: u8 = 1 << 7;
const C_PF: u8 = 1 << 6;
const C_UF: u8 = 1 << 4;
/// Register A bit 7: update in progress, the last 244 us of each second.
const A_UIP: u8 = 1 << 7;

/// Days since 1970-01-01 of a civil date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Civil date (year, month, day) of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// The RTC and its 128 bytes of CMOS.
///
/// # Invariants
/// `cmos` holds registers A-D and the RAM; the time registers are computed from
/// `host_epoch_ns` + clock + `offset_s` on every read.
pub struct Rtc {
    cmos: [u8; 128],
    index: u8,
    /// Seconds the guest moved the clock by.
    offset_s: i64,
    /// Host UTC time (ns since 1970) at platform-clock 0.
    host_epoch_ns: i128,
    /// Platform-clock ns of the next periodic tick and of the next second boundary already
    /// accounted for.
    next_periodic: Option<u64>,
    next_update: u64,
    /// The time registers the guest wrote while SET was on, applied when SET clears.
    pending_time: Option<[u8; 10]>,
}

impl Rtc {
    /// An RTC on the host's time; `now` is the platform clock at this moment.
    pub fn new(now: u64) -> Self {
        let host_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i128);
        Self::at(host_ns - i128::from(now), now)
    }

    /// An RTC whose platform-clock 0 is `host_epoch_ns` UTC.
    fn at(host_epoch_ns: i128, now: u64) -> Self {
        let mut cmos = [0u8; 128];
        // 32.768 kHz time base, 1024 Hz periodic rate; 24-hour BCD; valid RAM and time.
        cmos[usize::from(REG_A)] = 0x26;
        cmos[usize::from(REG_B)] = B_24H;
        cmos[usize::from(REG_D)] = 0x80;
        let mut r = Self {
            cmos,
            index: 0,
            offset_s: 0,
            host_epoch_ns,
            next_periodic: None,
            next_update: 0,
            pending_time: None,
        };
        r.next_update = r.next_second_boundary(now);
        r
    }

    pub fn owns_port(port: u16) -> bool {
        matches!(port, 0x70 | 0x71)
    }

    /// Guest time in ns since 1970.
    fn guest_ns(&self, now: u64) -> i128 {
        self.host_epoch_ns + i128::from(now) + i128::from(self.offset_s) * 1_000_000_000
    }

    fn next_second_boundary(&self, now: u64) -> u64 {
        let into = self.guest_ns(now).rem_euclid(1_000_000_000) as u64;
        now + (1_000_000_000 - into)
    }

    fn encode(&self, v: u32) -> u8 {
        if self.cmos[usize::from(REG_B)] & B_BINARY != 0 {
            v as u8
        } else {
            (((v / 10) << 4) | (v % 10)) as u8
        }
    }

    fn decode(&self, v: u8) -> u32 {
        if self.cmos[usize::from(REG_B)] & B_BINARY != 0 {
            u32::from(v)
        } else {
            u32::from(v >> 4) * 10 + u32::from(v & 0xf)
        }
    }

    /// The ten time registers 0x00-0x09 (alarm registers as stored) for guest time `now`.
    fn time_registers(&self, now: u64) -> [u8; 10] {
        let secs = self.guest_ns(now).div_euclid(1_000_000_000) as i64;
        let days = secs.div_euclid(86_400);
        let sod = secs.rem_euclid(86_400) as u32;
        let (y, m, d) = civil_from_days(days);
        let (h, min, s) = (sod / 3600, sod / 60 % 60, sod % 60);
        let hour = if self.cmos[usize::from(REG_B)] & B_24H != 0 {
            self.encode(h)
        } else {
            // 12-hour mode: 12, 1..11 with bit 7 for PM.
            let h12 = if h % 12 == 0 { 12 } else { h % 12 };
            self.encode(h12) | if h >= 12 { 0x80 } else { 0 }
        };
        let mut r = [0u8; 10];
        r[usize::from(REG_SECONDS)] = self.encode(s);
        r[1] = self.cmos[1];
        r[usize::from(REG_MINUTES)] = self.encode(min);
        r[3] = self.cmos[3];
        r[usize::from(REG_HOURS)] = hour;
        r[5] = self.cmos[5];
        // 1970-01-01 was a Thursday; register 6 counts Sunday = 1.
        r[usize::from(REG_WEEKDAY)] = self.encode(((days + 4).rem_euclid(7) + 1) as u32);
        r[usize::from(REG_DAY)] = self.encode(d);
        r[usize::from(REG_MONTH)] = self.encode(m);
        r[usize::from(REG_YEAR)] = self.encode(y.rem_euclid(100) as u32);
        r
    }

    fn century(&self, now: u64) -> u8 {
        let days = self.guest_ns(now).div_euclid(1_000_000_000 * 86_400) as i64;
        self.encode(civil_from_days(days).0.div_euclid(100) as u32)
    }

    /// Moves the clock so it shows the time in `regs` (and the century byte) from `now`.
    fn set_time(&mut self, regs: [u8; 10], now: u64) {
        let hour_reg = regs[usize::from(REG_HOURS)];
        let hour = if self.cmos[usize::from(REG_B)] & B_24H != 0 {
            self.decode(hour_reg)
        } else {
            self.decode(hour_reg & 0x7f) % 12 + if hour_reg & 0x80 != 0 { 12 } else { 0 }
        };
        let year = i64::from(self.decode(self.cmos[usize::from(REG_CENTURY)])) * 100
            + i64::from(self.decode(regs[usize::from(REG_YEAR)]));
        let month = self.decode(regs[usize::from(REG_MONTH)]).clamp(1, 12);
        let day = self.decode(regs[usize::from(REG_DAY)]).clamp(1, 31);
        let target = days_from_civil(year, month, day) * 86_400
            + i64::from(hour) * 3600
            + i64::from(self.decode(regs[usize::from(REG_MINUTES)])) * 60
            + i64::from(self.decode(regs[usize::from(REG_SECONDS)]));
        let current = self.guest_ns(now).div_euclid(1_000_000_000) as i64;
        self.offset_s += target - current;
    }

    /// Periodic interrupt interval from register A's rate select, None when off.
    fn period_ns(&self) -> Option<u64> {
        let rs = self.cmos[usize::from(REG_A)] & 0xf;
        let hz: u64 = match rs {
            0 => return None,
            1 => 256,
            2 => 128,
            _ => 32_768 >> (rs - 1),
        };
        Some(1_000_000_000 / hz)
    }

    fn restart_periodic(&mut self, now: u64) {
        self.next_periodic = self.period_ns().map(|p| now + p);
    }

    /// IRQ 8's level: register C's IRQF.
    pub fn irq_level(&self) -> bool {
        self.cmos[usize::from(REG_C)] & C_IRQF != 0
    }

    /// Advances the periodic and update-ended flags to `now`.
    pub fn poll(&mut self, now: u64) {
        if let (Some(due), Some(p)) = (self.next_periodic, self.period_ns()) {
            if now >= due {
                self.raise(C_PF, B_PIE);
                // Missed periods coalesce.
                self.next_periodic = Some(due + ((now - due) / p + 1) * p);
            }
        }
        if now >= self.next_update {
            if self.cmos[usize::from(REG_B)] & B_SET == 0 {
                self.raise(C_UF, B_UIE);
            }
            self.next_update = self.next_second_boundary(now);
        }
    }

    fn raise(&mut self, flag: u8, enable: u8) {
        let c = &mut self.cmos[usize::from(REG_C)];
        *c |= flag;
        if self.cmos[usize::from(REG_B)] & enable != 0 {
            self.cmos[usize::from(REG_C)] |= C_IRQF;
        }
    }

    /// When an enabled interrupt of the RTC is next due, in platform-clock ns.
    pub fn next_irq(&self) -> Option<u64> {
        let b = self.cmos[usize::from(REG_B)];
        let periodic = self.next_periodic.filter(|_| b & B_PIE != 0);
        let update = (b & B_UIE != 0 && b & B_SET == 0).then_some(self.next_update);
        match (periodic, update) {
            (Some(a), Some(u)) => Some(a.min(u)),
            (a, u) => a.or(u),
        }
    }

    pub fn io_write(&mut self, port: u16, v: u8, now: u64) {
        if port == 0x70 {
            // Bit 7 masks NMIs on a PC; nothing raises one here.
            self.index = v & 0x7f;
            return;
        }
        let i = self.index;
        match i {
            0x00..=0x09 => {
                let mut regs = self
                    .pending_time
                    .unwrap_or_else(|| self.time_registers(now));
                regs[usize::from(i)] = v;
                if self.cmos[usize::from(REG_B)] & B_SET != 0 {
                    self.pending_time = Some(regs);
                } else if matches!(i, 1 | 3 | 5) {
                    self.cmos[usize::from(i)] = v;
                } else {
                    self.set_time(regs, now);
                }
            }
            REG_A => {
                // UIP is read-only.
                self.cmos[usize::from(REG_A)] = v & !A_UIP;
                self.poll(now);
                self.restart_periodic(now);
            }
            REG_B => {
                let old = self.cmos[usize::from(REG_B)];
                // SET stops updates; it also clears UIE.
                let v = if v & B_SET != 0 { v & !B_UIE } else { v };
                if old & B_SET != 0 && v & B_SET == 0 {
                    if let Some(regs) = self.pending_time.take() {
                        self.set_time(regs, now);
                    }
                }
                if old & B_SET == 0 && v & B_SET != 0 {
                    self.pending_time = Some(self.time_registers(now));
                }
                self.cmos[usize::from(REG_B)] = v;
                if v & B_PIE != 0 && old & B_PIE == 0 {
                    self.restart_periodic(now);
                }
            }
            // C and D are read-only.
            REG_C | REG_D => {}
            REG_CENTURY => {
                self.cmos[usize::from(REG_CENTURY)] = v;
            }
            _ => self.cmos[usize::from(i)] = v,
        }
    }

    pub fn io_read(&mut self, port: u16, now: u64) -> u8 {
        if port == 0x70 {
            // The index port is write-only; reading gives the open bus.
            return 0xff;
        }
        self.poll(now);
        let i = self.index;
        match i {
            0x00..=0x09 => match self.pending_time {
                Some(regs) => regs[usize::from(i)],
                None => self.time_registers(now)[usize::from(i)],
            },
            REG_A => {
                let into = self.guest_ns(now).rem_euclid(1_000_000_000);
                let uip =
                    into >= 1_000_000_000 - 244_000 && self.cmos[usize::from(REG_B)] & B_SET == 0;
                self.cmos[usize::from(REG_A)] | if uip { A_UIP } else { 0 }
            }
            REG_C => std::mem::take(&mut self.cmos[usize::from(REG_C)]),
            REG_CENTURY if self.cmos[usize::from(REG_CENTURY)] == 0 => self.century(now),
            _ => self.cmos[usize::from(i)],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-30 13:45:07.5 UTC at platform-clock 0.
    const EPOCH: i128 = (1_796_046_307 * 1_000_000_000) + 500_000_000;

    fn read(r: &mut Rtc, reg: u8, now: u64) -> u8 {
        r.io_write(0x70, 0x80 | reg, now);
        r.io_read(0x71, now)
    }

    fn write(r: &mut Rtc, reg: u8, v: u8, now: u64) {
        r.io_write(0x70, reg, now);
        r.io_write(0x71, v, now);
    }

    #[test]
    fn date_conversions() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        for d in [-1000, 0, 11_016, 11_017, 20_000, 20_787] {
            let (y, m, dd) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, dd), d);
        }
    }

    #[test]
    fn reads_the_time_in_bcd_and_binary() {
        let mut r = Rtc::at(EPOCH, 0);
        assert_eq!(read(&mut r, REG_SECONDS, 0), 0x07);
        assert_eq!(read(&mut r, REG_MINUTES, 0), 0x45);
        assert_eq!(read(&mut r, REG_HOURS, 0), 0x13);
        assert_eq!(read(&mut r, REG_DAY, 0), 0x30);
        assert_eq!(read(&mut r, REG_MONTH, 0), 0x11);
        assert_eq!(read(&mut r, REG_YEAR, 0), 0x26);
        assert_eq!(read(&mut r, REG_CENTURY, 0), 0x20);
        assert_eq!(read(&mut r, REG_WEEKDAY, 0), 2, "a Monday");
        assert_eq!(read(&mut r, REG_D, 0), 0x80);
        // Time advances with the platform clock.
        assert_eq!(read(&mut r, REG_SECONDS, 3_000_000_000), 0x10);
        // Binary, 12-hour mode.
        write(&mut r, REG_B, B_BINARY, 0);
        assert_eq!(read(&mut r, REG_MINUTES, 0), 45);
        assert_eq!(read(&mut r, REG_HOURS, 0), 0x80 | 1, "1 PM");
        // UIP in the last 244 us of a second.
        assert_eq!(read(&mut r, REG_A, 0) & A_UIP, 0);
        assert_eq!(read(&mut r, REG_A, 499_900_000) & A_UIP, A_UIP);
    }

    #[test]
    fn setting_the_time() {
        let mut r = Rtc::at(EPOCH, 0);
        write(&mut r, REG_B, B_24H | B_SET, 0);
        write(&mut r, REG_HOURS, 0x08, 0);
        write(&mut r, REG_MINUTES, 0x30, 0);
        assert_eq!(read(&mut r, REG_HOURS, 0), 0x08, "held while SET");
        write(&mut r, REG_B, B_24H, 0);
        assert_eq!(read(&mut r, REG_HOURS, 10), 0x08);
        assert_eq!(read(&mut r, REG_MINUTES, 10), 0x30);
        assert_eq!(read(&mut r, REG_DAY, 10), 0x30, "date unchanged");
        // A single register without SET.
        write(&mut r, REG_YEAR, 0x30, 20);
        assert_eq!(read(&mut r, REG_YEAR, 20), 0x30);
        assert_eq!(read(&mut r, REG_HOURS, 20), 0x08);
    }

    #[test]
    fn periodic_interrupt_and_register_c() {
        let mut r = Rtc::at(EPOCH, 0);
        assert_eq!(r.next_irq(), None);
        // Rate 6: 1024 Hz.
        write(&mut r, REG_A, 0x26, 0);
        write(&mut r, REG_B, B_24H | B_PIE, 0);
        let p = 1_000_000_000 / 1024;
        assert_eq!(r.next_irq(), Some(p));
        r.poll(p - 1);
        assert!(!r.irq_level());
        r.poll(p);
        assert!(r.irq_level());
        assert_eq!(read(&mut r, REG_C, p), C_IRQF | C_PF);
        assert!(!r.irq_level(), "reading C lowers IRQ 8");
        assert_eq!(read(&mut r, REG_C, p), 0);
        // Late by several periods: one interrupt.
        r.poll(10 * p + 5);
        assert!(r.irq_level());
        assert_eq!(r.next_irq(), Some(11 * p));
        // PIE off: PF still sets, no IRQ.
        write(&mut r, REG_B, B_24H, 11 * p);
        read(&mut r, REG_C, 11 * p);
        r.poll(12 * p);
        assert!(!r.irq_level());
        assert_eq!(read(&mut r, REG_C, 12 * p), C_PF);
    }

    #[test]
    fn update_ended_interrupt() {
        let mut r = Rtc::at(EPOCH, 0);
        write(&mut r, REG_B, B_24H | B_UIE, 0);
        assert_eq!(r.next_irq(), Some(500_000_000), "next second boundary");
        r.poll(500_000_000);
        assert!(r.irq_level());
        assert_eq!(read(&mut r, REG_C, 500_000_000), C_IRQF | C_UF);
        assert_eq!(r.next_irq(), Some(1_500_000_000));
        // SET clears UIE.
        write(&mut r, REG_B, B_24H | B_UIE | B_SET, 0);
        assert_eq!(read(&mut r, REG_B, 0), B_24H | B_SET);
    }

    #[test]
    fn cmos_ram() {
        let mut r = Rtc::at(EPOCH, 0);
        write(&mut r, 0x40, 0xa5, 0);
        assert_eq!(read(&mut r, 0x40, 0), 0xa5);
        write(&mut r, REG_D, 0, 0);
        assert_eq!(read(&mut r, REG_D, 0), 0x80, "D is read-only");
        assert_eq!(r.io_read(0x70, 0), 0xff);
    }
}
