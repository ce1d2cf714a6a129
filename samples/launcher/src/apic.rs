// SPDX-License-Identifier: GPL-2.0

//! The local APIC (xAPIC, memory-mapped), emulated by the launcher for both backends.
//!
//! Time comes in as a parameter (`now`, nanoseconds of the platform clock) so the model is
//! deterministic under test. The timer counts at the APIC bus clock, [`APIC_BUS_HZ`] (1 GHz
//! like KVM's APIC bus: one tick per nanosecond before the divider).

/// Default APIC_BASE address.
pub const APIC_DEFAULT_BASE: u64 = 0xfee0_0000;
/// Size of the register page.
pub const APIC_PAGE_SIZE: u64 = 0x1000;
/// Frequency the timer counts at before the divide configuration (one tick per nanosecond).
pub const APIC_BUS_HZ: u64 = 1_000_000_000;
/// Version register: version 0x14 (integrated APIC), max LVT entry 5 (six LVTs), as on
/// QEMU and KVM.
pub const APIC_VERSION: u32 = 0x0005_0014;

/// IA32_APIC_BASE bits.
pub const APIC_BASE_BSP: u64 = 1 << 8;
pub const APIC_BASE_EXTD: u64 = 1 << 10;
pub const APIC_BASE_ENABLE: u64 = 1 << 11;
/// Address bits of IA32_APIC_BASE (further limited by the physical address width).
const APIC_BASE_ADDR_MASK: u64 = !0xfff;

/// Register offsets in the page (the complete map; some are only named by tests).
#[allow(dead_code)]
pub mod reg {
    pub const ID: u32 = 0x20;
    pub const VERSION: u32 = 0x30;
    pub const TPR: u32 = 0x80;
    pub const APR: u32 = 0x90;
    pub const PPR: u32 = 0xa0;
    pub const EOI: u32 = 0xb0;
    pub const RRD: u32 = 0xc0;
    pub const LDR: u32 = 0xd0;
    pub const DFR: u32 = 0xe0;
    pub const SVR: u32 = 0xf0;
    pub const ISR: u32 = 0x100;
    pub const TMR: u32 = 0x180;
    pub const IRR: u32 = 0x200;
    pub const ESR: u32 = 0x280;
    pub const ICR_LOW: u32 = 0x300;
    pub const ICR_HIGH: u32 = 0x310;
    pub const LVT_TIMER: u32 = 0x320;
    pub const LVT_THERMAL: u32 = 0x330;
    pub const LVT_PERF: u32 = 0x340;
    pub const LVT_LINT0: u32 = 0x350;
    pub const LVT_LINT1: u32 = 0x360;
    pub const LVT_ERROR: u32 = 0x370;
    pub const TIMER_INITIAL: u32 = 0x380;
    pub const TIMER_CURRENT: u32 = 0x390;
    pub const TIMER_DIVIDE: u32 = 0x3e0;
}

/// SVR bit 8: APIC software enable.
pub const SVR_ENABLE: u32 = 1 << 8;
/// LVT bit 16: masked.
pub const LVT_MASKED: u32 = 1 << 16;

/// ESR bits.
pub const ESR_SEND_ILLEGAL_VECTOR: u32 = 1 << 5;
pub const ESR_RECEIVE_ILLEGAL_VECTOR: u32 = 1 << 6;
pub const ESR_ILLEGAL_REGISTER: u32 = 1 << 7;

/// Delivery mode field (bits 10:8) of LVT entries and the ICR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryMode {
    Fixed,
    LowestPriority,
    Smi,
    Nmi,
    Init,
    StartUp,
    ExtInt,
    Reserved,
}

impl DeliveryMode {
    fn of(value: u32) -> Self {
        match (value >> 8) & 7 {
            0 => Self::Fixed,
            1 => Self::LowestPriority,
            2 => Self::Smi,
            4 => Self::Nmi,
            5 => Self::Init,
            6 => Self::StartUp,
            7 => Self::ExtInt,
            _ => Self::Reserved,
        }
    }
}

/// Timer mode, LVT timer bits 18:17.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerMode {
    OneShot,
    Periodic,
    TscDeadline,
}

/// One local vector table entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lvt(pub u32);

impl Lvt {
    pub fn vector(self) -> u8 {
        self.0 as u8
    }
    pub fn masked(self) -> bool {
        self.0 & LVT_MASKED != 0
    }
    pub fn delivery_mode(self) -> DeliveryMode {
        DeliveryMode::of(self.0)
    }
    pub fn timer_mode(self) -> TimerMode {
        match (self.0 >> 17) & 3 {
            1 => TimerMode::Periodic,
            2 => TimerMode::TscDeadline,
            // 3 is reserved; treated as one-shot.
            _ => TimerMode::OneShot,
        }
    }
}

/// The six LVT entries, in register order (no device drives thermal or perf).
#[allow(dead_code)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LvtIndex {
    Timer = 0,
    Thermal = 1,
    Perf = 2,
    Lint0 = 3,
    Lint1 = 4,
    Error = 5,
}

/// Writable bits of each LVT entry (delivery status and remote IRR are read-only).
const LVT_WRITABLE: [u32; 6] = [
    0x0007_00ff, // timer: vector, mask, mode
    0x0001_07ff, // thermal: vector, delivery mode, mask
    0x0001_07ff, // perf
    0x0001_a7ff, // LINT0: vector, delivery mode, polarity, trigger, mask
    0x0001_a7ff, // LINT1
    0x0001_00ff, // error: vector, mask
];

/// 256 bits, one per vector (IRR, ISR, TMR).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct VectorSet([u32; 8]);

impl VectorSet {
    fn set(&mut self, v: u8) {
        self.0[usize::from(v / 32)] |= 1 << (v % 32);
    }
    fn clear(&mut self, v: u8) {
        self.0[usize::from(v / 32)] &= !(1 << (v % 32));
    }
    #[cfg(test)]
    fn contains(&self, v: u8) -> bool {
        self.0[usize::from(v / 32)] & (1 << (v % 32)) != 0
    }
    fn highest(&self) -> Option<u8> {
        (0..8usize).rev().find_map(|i| {
            let w = self.0[i];
            (w != 0).then(|| (i * 32 + 31 - w.leading_zeros() as usize) as u8)
        })
    }
}

/// The APIC timer. `start`/`next_fire` are platform-clock nanoseconds.
///
/// # Invariants
/// `next_fire` is `Some` only while the timer is armed: a non-zero `initial` count in one-shot
/// or periodic mode that has not expired (one-shot), or a non-zero `tsc_deadline` in
/// TSC-deadline mode.
#[derive(Clone, Copy, Debug, Default)]
struct Timer {
    initial: u32,
    divide_config: u32,
    start: u64,
    next_fire: Option<u64>,
    tsc_deadline: u64,
}

impl Timer {
    /// Bus clocks per timer tick, from the divide configuration register (bits 0, 1, 3).
    fn divisor(&self) -> u64 {
        let v = (self.divide_config & 3) | ((self.divide_config >> 1) & 4);
        if v == 7 {
            1
        } else {
            2 << v
        }
    }
    /// Nanoseconds per tick.
    fn tick_ns(&self) -> u64 {
        self.divisor() * 1_000_000_000 / APIC_BUS_HZ
    }
    fn period_ns(&self) -> u64 {
        u64::from(self.initial) * self.tick_ns()
    }
}

/// What an accepted interrupt request asks of the CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// Nothing (masked, dropped or an error).
    None,
    Nmi,
    /// Take the vector from the 8259 (virtual wire).
    ExtInt,
}

/// One local APIC (xAPIC mode only: CPUID does not offer x2APIC).
///
/// # Invariants
/// While SVR.enable is clear every LVT entry has its mask bit set.
#[derive(Clone, Debug)]
pub struct LocalApic {
    base_msr: u64,
    id: u32,
    tpr: u32,
    ldr: u32,
    dfr: u32,
    svr: u32,
    isr: VectorSet,
    irr: VectorSet,
    tmr: VectorSet,
    /// Errors collected since the last ESR write.
    esr_pending: u32,
    /// The value ESR reads: the errors latched by the last ESR write.
    esr: u32,
    icr_low: u32,
    icr_high: u32,
    lvt: [u32; 6],
    timer: Timer,
    nmi_pending: bool,
    /// Messages about guest requests the platform cannot honour; the caller reports them.
    pub notes: Vec<String>,
}

impl Default for LocalApic {
    fn default() -> Self {
        Self::new()
    }
}

impl LocalApic {
    /// Power-on state of the bootstrap processor's APIC, as KVM and QEMU leave it: enabled at
    /// the default base, software-disabled (SVR 0xff), every LVT masked except LINT0, which is
    /// ExtINT so the 8259 reaches the CPU (virtual wire, as a BIOS would set it).
    pub fn new() -> Self {
        let mut a = Self {
            base_msr: APIC_DEFAULT_BASE | APIC_BASE_BSP | APIC_BASE_ENABLE,
            id: 0,
            tpr: 0,
            ldr: 0,
            dfr: 0xffff_ffff,
            svr: 0xff,
            isr: VectorSet::default(),
            irr: VectorSet::default(),
            tmr: VectorSet::default(),
            esr_pending: 0,
            esr: 0,
            icr_low: 0,
            icr_high: 0,
            lvt: [LVT_MASKED; 6],
            timer: Timer::default(),
            nmi_pending: false,
            notes: Vec::new(),
        };
        a.lvt[LvtIndex::Lint0 as usize] = 0x700;
        a
    }

    /// IA32_APIC_BASE.
    pub fn base_msr(&self) -> u64 {
        self.base_msr
    }

    /// Guest-physical base of the register page while the APIC is enabled.
    pub fn mmio_base(&self) -> Option<u64> {
        self.hw_enabled()
            .then_some(self.base_msr & APIC_BASE_ADDR_MASK)
    }

    /// IA32_APIC_BASE.EN.
    pub fn hw_enabled(&self) -> bool {
        self.base_msr & APIC_BASE_ENABLE != 0
    }

    /// SVR.enable (and the APIC globally enabled).
    pub fn sw_enabled(&self) -> bool {
        self.hw_enabled() && self.svr & SVR_ENABLE != 0
    }

    /// WRMSR IA32_APIC_BASE; Err for a value that raises #GP (reserved bits, x2APIC, an
    /// address beyond `phys_bits`). Clearing EN resets the APIC (keeping the base), as
    /// re-enabling then starts from the power-on state.
    pub fn write_base_msr(&mut self, value: u64, phys_bits: u32) -> Result<(), ()> {
        let addr_limit = 1u64.checked_shl(phys_bits).unwrap_or(0).wrapping_sub(1);
        let reserved = !(addr_limit & APIC_BASE_ADDR_MASK | APIC_BASE_BSP | APIC_BASE_ENABLE);
        if value & reserved != 0 || value & APIC_BASE_EXTD != 0 {
            return Err(());
        }
        // BSP is read-only.
        let value = (value & !APIC_BASE_BSP) | (self.base_msr & APIC_BASE_BSP);
        if value & APIC_BASE_ENABLE == 0 && self.hw_enabled() {
            let notes = std::mem::take(&mut self.notes);
            *self = Self::new();
            self.notes = notes;
            // Disabled: LINT0 is not in the path, the 8259 reaches the CPU directly.
        }
        self.base_msr = value;
        Ok(())
    }

    /// PPR: TPR when its class is at least the in-service class, else the in-service class.
    pub fn ppr(&self) -> u32 {
        let isrv = self.isr.highest().map_or(0, u32::from);
        if (self.tpr & 0xf0) >= (isrv & 0xf0) {
            self.tpr & 0xff
        } else {
            isrv & 0xf0
        }
    }

    /// The vector the CPU would take now: the highest IRR vector whose class is above PPR's.
    pub fn deliverable(&self) -> Option<u8> {
        let v = self.irr.highest()?;
        (u32::from(v) & 0xf0 > self.ppr() & 0xf0).then_some(v)
    }

    /// INTA: moves the deliverable vector from IRR to ISR and returns it.
    pub fn acknowledge(&mut self) -> Option<u8> {
        let v = self.deliverable()?;
        self.irr.clear(v);
        self.isr.set(v);
        Some(v)
    }

    /// Takes a pending NMI (LINT1 or ICR in NMI mode).
    pub fn take_nmi(&mut self) -> bool {
        std::mem::take(&mut self.nmi_pending)
    }

    pub fn nmi_pending(&self) -> bool {
        self.nmi_pending
    }

    /// An interrupt arrives with `vector`: into IRR, with TMR for a level-triggered one.
    /// Vectors 0-15 are illegal and only set an error.
    pub fn accept(&mut self, vector: u8, level: bool) {
        if vector < 16 {
            self.error(ESR_RECEIVE_ILLEGAL_VECTOR);
            return;
        }
        self.irr.set(vector);
        if level {
            self.tmr.set(vector);
        } else {
            self.tmr.clear(vector);
        }
    }

    fn error(&mut self, bits: u32) {
        self.esr_pending |= bits;
        let lvt = self.lvt(LvtIndex::Error);
        // An illegal error vector would only raise another error.
        if !lvt.masked() && lvt.vector() >= 16 {
            self.irr.set(lvt.vector());
        }
    }

    pub fn lvt(&self, i: LvtIndex) -> Lvt {
        Lvt(self.lvt[i as usize])
    }

    /// Delivers a local interrupt through LVT entry `i` (LINT0/1, thermal, perf, error).
    pub fn local_interrupt(&mut self, i: LvtIndex) -> Request {
        let lvt = self.lvt(i);
        if !self.hw_enabled() || lvt.masked() {
            return Request::None;
        }
        match lvt.delivery_mode() {
            DeliveryMode::Fixed => {
                // Trigger mode bit 15 only exists on LINT0/1.
                let level =
                    matches!(i, LvtIndex::Lint0 | LvtIndex::Lint1) && lvt.0 & (1 << 15) != 0;
                self.accept(lvt.vector(), level);
                Request::None
            }
            DeliveryMode::Nmi => {
                self.nmi_pending = true;
                Request::Nmi
            }
            DeliveryMode::ExtInt => Request::ExtInt,
            other => {
                self.notes.push(format!(
                    "local APIC: LVT entry {i:?} in delivery mode {other:?} is not supported (ignored)"
                ));
                Request::None
            }
        }
    }

    /// Whether the 8259's INTR output reaches the CPU as ExtINT: through LINT0 in ExtINT mode,
    /// or directly when the APIC is globally disabled.
    pub fn accepts_pic(&self) -> bool {
        if !self.hw_enabled() {
            return true;
        }
        let lint0 = self.lvt(LvtIndex::Lint0);
        !lint0.masked() && lint0.delivery_mode() == DeliveryMode::ExtInt
    }

    /// MMIO read of `len` bytes at `offset` in the page. Registers are 32 bits at 16-byte
    /// boundaries; narrower reads get part of one, and bytes 4-15 of a slot read as 0.
    pub fn mmio_read(&mut self, offset: u64, len: usize, now: u64) -> [u8; 8] {
        let mut out = [0u8; 8];
        let reg = (offset & 0xff0) as u32;
        let value = self.read_reg(reg, now).to_le_bytes();
        let start = (offset & 0xf) as usize;
        for (i, b) in out.iter_mut().take(len.min(8)).enumerate() {
            *b = value.get(start + i).copied().unwrap_or(0);
        }
        out
    }

    /// MMIO write: only aligned 32-bit stores reach a register (as on KVM); others are
    /// ignored with a note.
    pub fn mmio_write(&mut self, offset: u64, data: &[u8], now: u64) {
        if data.len() != 4 || offset & 0xf != 0 {
            self.notes.push(format!(
                "local APIC: {}-byte write at offset {offset:#x} ignored (registers take aligned 32-bit writes)",
                data.len()
            ));
            return;
        }
        let value = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
        self.write_reg((offset & 0xff0) as u32, value, now);
    }

    /// Reads register `reg` (offset in the page).
    pub fn read_reg(&mut self, reg: u32, now: u64) -> u32 {
        let vec_word = |set: &VectorSet, base: u32| set.0[((reg - base) / 0x10) as usize];
        match reg {
            reg::ID => self.id,
            reg::VERSION => APIC_VERSION,
            reg::TPR => self.tpr,
            reg::APR | reg::RRD | reg::EOI => 0,
            reg::PPR => self.ppr(),
            reg::LDR => self.ldr,
            reg::DFR => self.dfr,
            reg::SVR => self.svr,
            0x100..=0x170 => vec_word(&self.isr, reg::ISR),
            0x180..=0x1f0 => vec_word(&self.tmr, reg::TMR),
            0x200..=0x270 => vec_word(&self.irr, reg::IRR),
            reg::ESR => self.esr,
            reg::ICR_LOW => self.icr_low,
            reg::ICR_HIGH => self.icr_high,
            reg::LVT_TIMER..=reg::LVT_ERROR => self.lvt[((reg - reg::LVT_TIMER) / 0x10) as usize],
            reg::TIMER_INITIAL => self.timer.initial,
            reg::TIMER_CURRENT => self.current_count(now),
            reg::TIMER_DIVIDE => self.timer.divide_config,
            _ => {
                self.error(ESR_ILLEGAL_REGISTER);
                0
            }
        }
    }

    /// Writes register `reg`.
    pub fn write_reg(&mut self, reg: u32, value: u32, now: u64) {
        match reg {
            reg::ID => self.id = value & 0xff00_0000,
            reg::TPR => self.tpr = value & 0xff,
            reg::EOI => self.eoi(),
            reg::LDR => self.ldr = value & 0xff00_0000,
            reg::DFR => self.dfr = value | 0x0fff_ffff,
            reg::SVR => {
                self.svr = value & 0x3ff;
                if value & SVR_ENABLE == 0 {
                    for l in &mut self.lvt {
                        *l |= LVT_MASKED;
                    }
                }
            }
            reg::ESR => {
                self.esr = std::mem::take(&mut self.esr_pending);
            }
            reg::ICR_LOW => {
                // Delivery status (bit 12) reads 0: an IPI is delivered at once.
                self.icr_low = value & 0x000c_cfff;
                self.send_ipi();
            }
            reg::ICR_HIGH => self.icr_high = value & 0xff00_0000,
            reg::LVT_TIMER..=reg::LVT_ERROR => {
                let i = ((reg - reg::LVT_TIMER) / 0x10) as usize;
                let mut v = value & LVT_WRITABLE[i];
                if !self.sw_enabled() {
                    v |= LVT_MASKED;
                }
                if i == LvtIndex::Timer as usize {
                    let old = Lvt(self.lvt[i]).timer_mode();
                    let new = Lvt(v).timer_mode();
                    if (old == TimerMode::TscDeadline) != (new == TimerMode::TscDeadline) {
                        // Switching to or from TSC-deadline mode disarms the timer (SDM 11.5.4.1).
                        self.timer.initial = 0;
                        self.timer.tsc_deadline = 0;
                        self.timer.next_fire = None;
                    }
                }
                self.lvt[i] = v;
            }
            reg::TIMER_INITIAL => {
                if self.lvt(LvtIndex::Timer).timer_mode() == TimerMode::TscDeadline {
                    return;
                }
                self.timer.initial = value;
                self.timer.start = now;
                self.timer.next_fire = (value != 0).then(|| now + self.timer.period_ns());
            }
            reg::TIMER_DIVIDE => {
                // Keep the ticks already counted, continue at the new rate.
                let ticks_done = self.ticks_since_start(now);
                self.timer.divide_config = value & 0xb;
                if self.timer.next_fire.is_some()
                    && self.lvt(LvtIndex::Timer).timer_mode() != TimerMode::TscDeadline
                {
                    let elapsed = ticks_done.saturating_mul(self.timer.tick_ns());
                    self.timer.start = now.saturating_sub(elapsed);
                    self.timer.next_fire = Some(self.next_period_end(now));
                }
            }
            reg::VERSION | reg::APR | reg::PPR | reg::RRD | reg::TIMER_CURRENT => {}
            0x100..=0x270 => {}
            _ => self.error(ESR_ILLEGAL_REGISTER),
        }
    }

    /// EOI: retires the highest in-service vector.
    pub fn eoi(&mut self) {
        if let Some(v) = self.isr.highest() {
            self.isr.clear(v);
            // A level-triggered interrupt would now send the EOI on to an I/O APIC; there is
            // none, so only TMR is cleared.
            self.tmr.clear(v);
        }
    }

    fn send_ipi(&mut self) {
        let icr = self.icr_low;
        let vector = icr as u8;
        let mode = DeliveryMode::of(icr);
        let to_self = match (icr >> 18) & 3 {
            1 | 2 => true,
            3 => false,
            _ => self.destination_is_self(),
        };
        if !to_self {
            if (icr >> 18) & 3 == 0 {
                self.notes.push(format!(
                    "local APIC: IPI to destination {:#x} dropped: this machine has one CPU (APIC ID {:#x})",
                    self.icr_high >> 24,
                    self.id >> 24
                ));
            }
            return;
        }
        match mode {
            DeliveryMode::Fixed | DeliveryMode::LowestPriority => {
                if vector < 16 {
                    self.error(ESR_SEND_ILLEGAL_VECTOR);
                } else {
                    self.accept(vector, false);
                }
            }
            DeliveryMode::Nmi => self.nmi_pending = true,
            other => self.notes.push(format!(
                "local APIC: self-IPI in delivery mode {other:?} ignored"
            )),
        }
    }

    fn destination_is_self(&self) -> bool {
        let dest = self.icr_high >> 24;
        if self.icr_low & (1 << 11) == 0 {
            // Physical.
            return dest == 0xff || dest == self.id >> 24;
        }
        if dest == 0xff {
            return true;
        }
        let ldr = self.ldr >> 24;
        if self.dfr >> 28 == 0xf {
            // Flat model: one bit per CPU.
            ldr & dest != 0
        } else {
            // Cluster model: cluster in the high nibble, CPU bits in the low one.
            dest >> 4 == ldr >> 4 && dest & ldr & 0xf != 0
        }
    }

    fn ticks_since_start(&self, now: u64) -> u64 {
        now.saturating_sub(self.timer.start) / self.timer.tick_ns()
    }

    /// End of the period that contains `now` (periodic) or of the count (one-shot).
    fn next_period_end(&self, now: u64) -> u64 {
        let period = self.timer.period_ns().max(1);
        match self.lvt(LvtIndex::Timer).timer_mode() {
            TimerMode::Periodic => {
                let k = now.saturating_sub(self.timer.start) / period + 1;
                self.timer.start.saturating_add(k.saturating_mul(period))
            }
            _ => self.timer.start.saturating_add(period),
        }
    }

    /// Current-count register: counts down from the initial count in real time.
    pub fn current_count(&self, now: u64) -> u32 {
        let t = &self.timer;
        if t.next_fire.is_none()
            || t.initial == 0
            || self.lvt(LvtIndex::Timer).timer_mode() == TimerMode::TscDeadline
        {
            return 0;
        }
        let ticks = self.ticks_since_start(now);
        let initial = u64::from(t.initial);
        match self.lvt(LvtIndex::Timer).timer_mode() {
            TimerMode::Periodic => (initial - ticks % initial) as u32,
            _ => initial.saturating_sub(ticks) as u32,
        }
    }

    /// WRMSR IA32_TSC_DEADLINE with the guest TSC `tsc_now` read at `now` and the TSC
    /// frequency. Ignored outside TSC-deadline mode; 0 disarms.
    pub fn write_tsc_deadline(&mut self, deadline: u64, tsc_now: u64, tsc_khz: u32, now: u64) {
        if self.lvt(LvtIndex::Timer).timer_mode() != TimerMode::TscDeadline {
            return;
        }
        self.timer.tsc_deadline = deadline;
        self.timer.next_fire = (deadline != 0).then(|| {
            let cycles = deadline.saturating_sub(tsc_now);
            let ns = u128::from(cycles) * 1_000_000 / u128::from(tsc_khz.max(1));
            now.saturating_add(u64::try_from(ns).unwrap_or(u64::MAX))
        });
    }

    /// RDMSR IA32_TSC_DEADLINE: the armed deadline, 0 once it fired or outside the mode.
    pub fn tsc_deadline(&self) -> u64 {
        if self.lvt(LvtIndex::Timer).timer_mode() == TimerMode::TscDeadline {
            self.timer.tsc_deadline
        } else {
            0
        }
    }

    /// When the timer next expires (platform-clock ns), if armed.
    pub fn next_timer_deadline(&self) -> Option<u64> {
        self.timer.next_fire
    }

    /// Whether the timer can still raise an interrupt without the guest doing anything.
    pub fn timer_can_interrupt(&self) -> bool {
        self.timer.next_fire.is_some() && !self.lvt(LvtIndex::Timer).masked()
    }

    /// Expires the timer if its deadline has passed: sets the LVT timer vector in IRR
    /// (unless masked) and rearms a periodic timer for its next period (missed periods
    /// coalesce into one interrupt, as when the host could not run the guest in time).
    pub fn poll_timer(&mut self, now: u64) {
        let Some(fire) = self.timer.next_fire else {
            return;
        };
        if now < fire {
            return;
        }
        let lvt = self.lvt(LvtIndex::Timer);
        self.timer.next_fire = match lvt.timer_mode() {
            TimerMode::Periodic => Some(self.next_period_end(now)),
            TimerMode::OneShot => None,
            TimerMode::TscDeadline => {
                self.timer.tsc_deadline = 0;
                None
            }
        };
        if !lvt.masked() && self.hw_enabled() {
            self.accept(lvt.vector(), false);
        }
    }

    #[cfg(test)]
    fn irr_contains(&self, v: u8) -> bool {
        self.irr.contains(v)
    }
    #[cfg(test)]
    fn isr_contains(&self, v: u8) -> bool {
        self.isr.contains(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enabled() -> LocalApic {
        let mut a = LocalApic::new();
        a.write_reg(reg::SVR, SVR_ENABLE | 0xff, 0);
        a
    }

    #[test]
    fn reset_state() {
        let mut a = LocalApic::new();
        assert_eq!(a.base_msr(), 0xfee0_0900);
        assert_eq!(a.mmio_base(), Some(0xfee0_0000));
        assert_eq!(a.read_reg(reg::VERSION, 0), 0x50014);
        assert_eq!(a.read_reg(reg::SVR, 0), 0xff);
        assert_eq!(a.read_reg(reg::DFR, 0), 0xffff_ffff);
        assert_eq!(a.read_reg(reg::LVT_LINT0, 0), 0x700);
        assert_eq!(a.read_reg(reg::LVT_TIMER, 0), LVT_MASKED);
        assert!(a.accepts_pic());
        assert!(!a.sw_enabled());
    }

    #[test]
    fn id_tpr_and_byte_reads() {
        let mut a = enabled();
        a.mmio_write(0x20, &0x1234_5678u32.to_le_bytes(), 0);
        assert_eq!(a.read_reg(reg::ID, 0), 0x1200_0000);
        a.write_reg(reg::TPR, 0x1_23, 0);
        assert_eq!(a.read_reg(reg::TPR, 0), 0x23);
        assert_eq!(a.mmio_read(0x80, 4, 0)[..4], [0x23, 0, 0, 0]);
        assert_eq!(a.mmio_read(0x33, 1, 0)[0], 0x00);
        assert_eq!(a.mmio_read(0x32, 1, 0)[0], 0x05);
        assert_eq!(
            a.mmio_read(0x84, 4, 0),
            [0; 8],
            "bytes 4-15 of a slot are 0"
        );
        // A narrow write is ignored.
        a.mmio_write(0x80, &[0x40], 0);
        assert_eq!(a.read_reg(reg::TPR, 0), 0x23);
        assert_eq!(a.notes.len(), 1);
    }

    #[test]
    fn priorities_irr_isr_eoi() {
        let mut a = enabled();
        a.accept(0x31, false);
        a.accept(0x45, true);
        a.accept(0x41, false);
        assert_eq!(a.read_reg(reg::IRR + 0x10, 0), 1 << 0x11);
        assert_eq!(a.read_reg(reg::IRR + 0x20, 0), (1 << 5) | (1 << 1));
        assert_eq!(a.read_reg(reg::TMR + 0x20, 0), 1 << 5);
        // Highest first.
        assert_eq!(a.acknowledge(), Some(0x45));
        assert_eq!(a.read_reg(reg::ISR + 0x20, 0), 1 << 5);
        // 0x41 is in the same class as the in-service 0x45: blocked.
        assert_eq!(a.ppr(), 0x40);
        assert_eq!(a.deliverable(), None);
        // A higher class preempts.
        a.accept(0x51, false);
        assert_eq!(a.acknowledge(), Some(0x51));
        assert_eq!(a.ppr(), 0x50);
        a.write_reg(reg::EOI, 0, 0);
        assert!(!a.isr_contains(0x51));
        assert!(a.isr_contains(0x45));
        a.write_reg(reg::EOI, 0, 0);
        assert_eq!(
            a.read_reg(reg::TMR + 0x20, 0),
            0,
            "EOI clears TMR of the level vector"
        );
        assert_eq!(a.acknowledge(), Some(0x41));
        a.eoi();
        assert_eq!(a.acknowledge(), Some(0x31));
        a.eoi();
        assert_eq!(a.acknowledge(), None);
        a.eoi(); // with nothing in service: no effect
        assert_eq!(a.ppr(), 0);
    }

    #[test]
    fn tpr_blocks_by_class() {
        let mut a = enabled();
        a.write_reg(reg::TPR, 0x55, 0);
        a.accept(0x5f, false);
        assert_eq!(a.ppr(), 0x55);
        assert_eq!(a.deliverable(), None, "same class as TPR is blocked");
        a.accept(0x60, false);
        assert_eq!(a.acknowledge(), Some(0x60));
        // ISR class 0x60 above TPR: PPR is the ISR class.
        assert_eq!(a.ppr(), 0x60);
        a.eoi();
        a.write_reg(reg::TPR, 0x40, 0);
        assert_eq!(a.acknowledge(), Some(0x5f));
    }

    #[test]
    fn illegal_vectors_and_esr_write_then_read() {
        let mut a = enabled();
        a.accept(5, false);
        assert_eq!(a.deliverable(), None);
        assert_eq!(
            a.read_reg(reg::ESR, 0),
            0,
            "ESR shows errors only after a write"
        );
        a.write_reg(reg::ESR, 0, 0);
        assert_eq!(a.read_reg(reg::ESR, 0), ESR_RECEIVE_ILLEGAL_VECTOR);
        a.write_reg(reg::ESR, 0, 0);
        assert_eq!(
            a.read_reg(reg::ESR, 0),
            0,
            "the write clears the collected errors"
        );
        // ICR fixed with vector 3: send illegal vector, error LVT delivers.
        a.write_reg(reg::LVT_ERROR, 0xe3, 0);
        a.write_reg(reg::ICR_LOW, (1 << 18) | 3, 0);
        assert_eq!(a.acknowledge(), Some(0xe3));
        a.write_reg(reg::ESR, 0, 0);
        assert_eq!(a.read_reg(reg::ESR, 0), ESR_SEND_ILLEGAL_VECTOR);
        // Reserved register.
        a.eoi();
        assert_eq!(a.read_reg(0x2f0, 0), 0);
        a.write_reg(reg::ESR, 0, 0);
        assert_eq!(a.read_reg(reg::ESR, 0), ESR_ILLEGAL_REGISTER);
    }

    #[test]
    fn software_disable_masks_lvts() {
        let mut a = enabled();
        a.write_reg(reg::LVT_TIMER, 0x20, 0);
        assert_eq!(a.read_reg(reg::LVT_TIMER, 0), 0x20);
        a.write_reg(reg::SVR, 0xff, 0);
        assert_eq!(a.read_reg(reg::LVT_TIMER, 0), 0x20 | LVT_MASKED);
        assert!(!a.accepts_pic(), "LINT0 masked too");
        a.write_reg(reg::LVT_TIMER, 0x21, 0);
        assert_eq!(a.read_reg(reg::LVT_TIMER, 0), 0x21 | LVT_MASKED);
        a.write_reg(reg::SVR, 0x1ff, 0);
        a.write_reg(reg::LVT_TIMER, 0x21 | 0xf000_0000, 0);
        assert_eq!(a.read_reg(reg::LVT_TIMER, 0), 0x21, "reserved bits drop");
    }

    #[test]
    fn self_ipis() {
        let mut a = enabled();
        // Self shorthand.
        a.write_reg(reg::ICR_LOW, (1 << 18) | 0x40, 0);
        assert!(a.irr_contains(0x40));
        assert_eq!(
            a.read_reg(reg::ICR_LOW, 0) & (1 << 12),
            0,
            "delivered at once"
        );
        // Physical destination = own ID.
        a.write_reg(reg::ID, 0x0300_0000, 0);
        a.write_reg(reg::ICR_HIGH, 0x0300_0000, 0);
        a.write_reg(reg::ICR_LOW, 0x41, 0);
        assert!(a.irr_contains(0x41));
        // Another CPU: dropped with a note.
        a.write_reg(reg::ICR_HIGH, 0x0400_0000, 0);
        a.write_reg(reg::ICR_LOW, 0x42, 0);
        assert!(!a.irr_contains(0x42));
        assert!(a.notes.last().unwrap().contains("one CPU"));
        // All excluding self: nobody.
        a.write_reg(reg::ICR_LOW, (3 << 18) | 0x43, 0);
        assert!(!a.irr_contains(0x43));
        // All including self.
        a.write_reg(reg::ICR_LOW, (2 << 18) | 0x44, 0);
        assert!(a.irr_contains(0x44));
        // Logical flat: LDR bit matches.
        a.write_reg(reg::LDR, 0x0200_0000, 0);
        a.write_reg(reg::ICR_HIGH, 0x0600_0000, 0);
        a.write_reg(reg::ICR_LOW, (1 << 11) | 0x45, 0);
        assert!(a.irr_contains(0x45));
        a.write_reg(reg::ICR_HIGH, 0x0100_0000, 0);
        a.write_reg(reg::ICR_LOW, (1 << 11) | 0x46, 0);
        assert!(!a.irr_contains(0x46));
        // Logical cluster: cluster 2, CPU bit 1.
        a.write_reg(reg::DFR, 0x0fff_ffff, 0);
        a.write_reg(reg::LDR, 0x2100_0000, 0);
        a.write_reg(reg::ICR_HIGH, 0x2300_0000, 0);
        a.write_reg(reg::ICR_LOW, (1 << 11) | 0x47, 0);
        assert!(a.irr_contains(0x47));
        a.write_reg(reg::ICR_HIGH, 0x1100_0000, 0);
        a.write_reg(reg::ICR_LOW, (1 << 11) | 0x48, 0);
        assert!(!a.irr_contains(0x48));
        // NMI to self.
        a.write_reg(reg::ICR_LOW, (1 << 18) | (4 << 8), 0);
        assert!(a.take_nmi());
        assert!(!a.take_nmi());
    }

    #[test]
    fn lint_delivery_modes() {
        let mut a = enabled();
        assert_eq!(a.local_interrupt(LvtIndex::Lint1), Request::None, "masked");
        a.write_reg(reg::LVT_LINT1, 4 << 8, 0);
        assert_eq!(a.local_interrupt(LvtIndex::Lint1), Request::Nmi);
        assert!(a.take_nmi());
        a.write_reg(reg::LVT_LINT0, 0x700, 0);
        assert_eq!(a.local_interrupt(LvtIndex::Lint0), Request::ExtInt);
        a.write_reg(reg::LVT_LINT0, 0x8000 | 0x33, 0);
        assert!(!a.accepts_pic());
        assert_eq!(a.local_interrupt(LvtIndex::Lint0), Request::None);
        assert!(a.irr_contains(0x33));
        assert_eq!(
            a.read_reg(reg::TMR + 0x10, 0),
            1 << 0x13,
            "level-triggered LINT0"
        );
    }

    #[test]
    fn base_msr_relocate_and_disable() {
        let mut a = enabled();
        assert!(a.write_base_msr(0xfed0_0800, 36).is_ok());
        assert_eq!(a.base_msr(), 0xfed0_0900, "BSP bit stays");
        assert_eq!(a.mmio_base(), Some(0xfed0_0000));
        assert!(a.write_base_msr(0xfee0_0c00, 36).is_err(), "x2APIC");
        assert!(
            a.write_base_msr(0x1_0000_0000_0800, 36).is_err(),
            "beyond phys bits"
        );
        assert!(
            a.write_base_msr(0xfee0_0801, 36).is_err(),
            "reserved low bits"
        );
        a.write_reg(reg::TPR, 0x20, 0);
        assert!(a.write_base_msr(0xfee0_0000, 36).is_ok());
        assert_eq!(a.mmio_base(), None);
        assert!(
            a.accepts_pic(),
            "disabled: the 8259 reaches the CPU directly"
        );
        assert!(a.write_base_msr(0xfee0_0800, 36).is_ok());
        assert_eq!(
            a.read_reg(reg::TPR, 0),
            0,
            "re-enabled from the reset state"
        );
        assert_eq!(a.read_reg(reg::SVR, 0), 0xff);
    }

    #[test]
    fn divide_configuration() {
        let mut a = enabled();
        for (dcr, div) in [
            (0b0000, 2),
            (0b0001, 4),
            (0b0010, 8),
            (0b0011, 16),
            (0b1000, 32),
            (0b1001, 64),
            (0b1010, 128),
            (0b1011, 1),
        ] {
            a.write_reg(reg::TIMER_DIVIDE, dcr, 0);
            assert_eq!(a.timer.divisor(), div, "dcr {dcr:#b}");
        }
    }

    #[test]
    fn one_shot_timer() {
        let mut a = enabled();
        a.write_reg(reg::TIMER_DIVIDE, 0b1011, 0); // divide by 1: 1 tick = 1 ns
        a.write_reg(reg::LVT_TIMER, 0x30, 0);
        a.write_reg(reg::TIMER_INITIAL, 1000, 100);
        assert_eq!(a.next_timer_deadline(), Some(1100));
        assert_eq!(a.read_reg(reg::TIMER_CURRENT, 100), 1000);
        assert_eq!(a.read_reg(reg::TIMER_CURRENT, 600), 500);
        a.poll_timer(1099);
        assert!(!a.irr_contains(0x30));
        a.poll_timer(1100);
        assert!(a.irr_contains(0x30));
        assert_eq!(a.read_reg(reg::TIMER_CURRENT, 1100), 0);
        assert_eq!(a.read_reg(reg::TIMER_CURRENT, 5000), 0);
        assert_eq!(a.next_timer_deadline(), None);
        // Writing 0 stops a running timer.
        a.write_reg(reg::TIMER_INITIAL, 10, 2000);
        a.write_reg(reg::TIMER_INITIAL, 0, 2001);
        assert_eq!(a.next_timer_deadline(), None);
    }

    #[test]
    fn masked_timer_counts_without_interrupt() {
        let mut a = enabled();
        a.write_reg(reg::LVT_TIMER, LVT_MASKED | 0x30, 0);
        a.write_reg(reg::TIMER_INITIAL, 10, 0);
        assert!(!a.timer_can_interrupt());
        assert_eq!(a.read_reg(reg::TIMER_CURRENT, 4), 8, "divide by 2 at reset");
        a.poll_timer(20);
        assert!(!a.irr_contains(0x30));
        assert_eq!(a.next_timer_deadline(), None);
    }

    #[test]
    fn periodic_timer() {
        let mut a = enabled();
        a.write_reg(reg::TIMER_DIVIDE, 0b0001, 0); // divide by 4
        a.write_reg(reg::LVT_TIMER, (1 << 17) | 0x31, 0);
        a.write_reg(reg::TIMER_INITIAL, 250, 0); // 1000 ns period
        assert_eq!(a.read_reg(reg::TIMER_CURRENT, 400), 150);
        a.poll_timer(1000);
        assert_eq!(a.acknowledge(), Some(0x31));
        a.eoi();
        assert_eq!(a.next_timer_deadline(), Some(2000));
        assert_eq!(a.read_reg(reg::TIMER_CURRENT, 1400), 150, "reloaded");
        // Late by several periods: one interrupt, next deadline on the period grid.
        a.poll_timer(5300);
        assert_eq!(a.acknowledge(), Some(0x31));
        assert_eq!(a.acknowledge(), None);
        assert_eq!(a.next_timer_deadline(), Some(6000));
        // Divider change keeps the elapsed ticks: at 6400 (100 ticks into the period of
        // 250), switch to divide by 1: 150 ticks left = 150 ns.
        a.write_reg(reg::TIMER_DIVIDE, 0b1011, 6400);
        assert_eq!(a.read_reg(reg::TIMER_CURRENT, 6400), 150);
        assert_eq!(a.next_timer_deadline(), Some(6550));
    }

    #[test]
    fn tsc_deadline_timer() {
        let mut a = enabled();
        // Not in TSC-deadline mode: the MSR is ignored and reads 0.
        a.write_tsc_deadline(5000, 0, 1_000_000, 0);
        assert_eq!(a.tsc_deadline(), 0);
        assert_eq!(a.next_timer_deadline(), None);
        a.write_reg(reg::LVT_TIMER, (2 << 17) | 0x32, 0);
        // Initial count is ignored in this mode.
        a.write_reg(reg::TIMER_INITIAL, 100, 0);
        assert_eq!(a.next_timer_deadline(), None);
        // 2 GHz TSC, now at TSC 10_000 and clock 500 ns: deadline 30_000 is 10_000 ns later.
        a.write_tsc_deadline(30_000, 10_000, 2_000_000, 500);
        assert_eq!(a.tsc_deadline(), 30_000);
        assert_eq!(a.next_timer_deadline(), Some(10_500));
        a.poll_timer(10_499);
        assert!(!a.irr_contains(0x32));
        a.poll_timer(10_500);
        assert!(a.irr_contains(0x32));
        assert_eq!(a.tsc_deadline(), 0, "reads 0 after it fired");
        // A deadline in the past fires at once; 0 disarms.
        a.write_tsc_deadline(5, 10_000, 2_000_000, 20_000);
        assert_eq!(a.next_timer_deadline(), Some(20_000));
        a.write_tsc_deadline(0, 10_000, 2_000_000, 20_000);
        assert_eq!(a.next_timer_deadline(), None);
        // Leaving the mode disarms.
        a.write_tsc_deadline(1 << 40, 0, 2_000_000, 0);
        a.write_reg(reg::LVT_TIMER, 0x32, 0);
        assert_eq!(a.next_timer_deadline(), None);
        assert_eq!(a.tsc_deadline(), 0);
    }
}
