// SPDX-License-Identifier: GPL-2.0

//! The model-specific registers the launcher owns (the same on every backend) and their
//! state. Every other MSR is the backend's; one it does not know raises #GP as on a CPU
//! without it.

use std::ops::RangeInclusive;

pub const IA32_TSC: u32 = 0x10;
pub const IA32_APIC_BASE: u32 = 0x1b;
pub const IA32_FEATURE_CONTROL: u32 = 0x3a;
/// IA32_BIOS_SIGN_ID: the microcode revision (bits 63:32). Linux reads it on every Intel
/// CPU (early_init_intel: write 0, CPUID(1), read).
pub const IA32_UCODE_REV: u32 = 0x8b;
pub const MSR_PLATFORM_INFO: u32 = 0xce;
pub const IA32_MTRRCAP: u32 = 0xfe;
pub const IA32_MISC_ENABLE: u32 = 0x1a0;
pub const IA32_MTRR_PHYSBASE0: u32 = 0x200;
pub const IA32_MTRR_FIX64K_00000: u32 = 0x250;
pub const IA32_MTRR_FIX16K_80000: u32 = 0x258;
pub const IA32_MTRR_FIX16K_A0000: u32 = 0x259;
pub const IA32_MTRR_FIX4K_C0000: u32 = 0x268;
pub const IA32_MTRR_FIX4K_F8000: u32 = 0x26f;
pub const IA32_MTRR_DEF_TYPE: u32 = 0x2ff;
pub const IA32_TSC_DEADLINE: u32 = 0x6e0;
/// x2APIC register MSRs: not offered (CPUID has no x2APIC), so they raise #GP.
pub const X2APIC_MSRS: RangeInclusive<u32> = 0x800..=0x8ff;

/// The MSR ranges the launcher answers; a backend routes guest RDMSR/WRMSR of these to it
/// (the KVM backend with an MSR filter). Each range spans at most 256 MSRs.
pub const OWNED: [RangeInclusive<u32>; 11] = [
    IA32_APIC_BASE..=IA32_APIC_BASE,
    IA32_FEATURE_CONTROL..=IA32_FEATURE_CONTROL,
    IA32_UCODE_REV..=IA32_UCODE_REV,
    MSR_PLATFORM_INFO..=MSR_PLATFORM_INFO,
    IA32_MTRRCAP..=IA32_MTRRCAP,
    IA32_MISC_ENABLE..=IA32_MISC_ENABLE,
    // Variable-range MTRR pairs 0-7 (MTRRcap reports none, so they #GP).
    IA32_MTRR_PHYSBASE0..=0x20f,
    IA32_MTRR_FIX64K_00000..=IA32_MTRR_FIX4K_F8000,
    IA32_MTRR_DEF_TYPE..=IA32_MTRR_DEF_TYPE,
    IA32_TSC_DEADLINE..=IA32_TSC_DEADLINE,
    X2APIC_MSRS,
];

/// IA32_MTRRCAP: no variable ranges (VCNT 0), fixed ranges (bit 8), write-combining (bit 10).
pub const MTRRCAP: u64 = (1 << 8) | (1 << 10);
/// IA32_MISC_ENABLE: fast strings (bit 0), BTS and PEBS unavailable (bits 11, 12); the same
/// value KVM gives plus fast strings. Writes are accepted and change nothing.
pub const MISC_ENABLE: u64 = 1 | (1 << 11) | (1 << 12);
/// IA32_BIOS_SIGN_ID: microcode revision 1, KVM's default (a revision of 0 would mean no
/// microcode was loaded). Guest writes are accepted and change nothing, as under KVM.
pub const UCODE_REV: u64 = 1 << 32;
/// IA32_FEATURE_CONTROL: locked with nothing enabled (no VMX, SGX or LMCE for the guest).
pub const FEATURE_CONTROL: u64 = 1;

/// Fixed-range MTRR MSRs in register order.
const FIXED: [u32; 11] = [
    IA32_MTRR_FIX64K_00000,
    IA32_MTRR_FIX16K_80000,
    IA32_MTRR_FIX16K_A0000,
    IA32_MTRR_FIX4K_C0000,
    0x269,
    0x26a,
    0x26b,
    0x26c,
    0x26d,
    0x26e,
    IA32_MTRR_FIX4K_F8000,
];

/// Memory types a range may have: UC, WC, WT, WP, WB.
fn valid_type(t: u8) -> bool {
    matches!(t, 0 | 1 | 4 | 5 | 6)
}

/// MTRR state: accepted and read back; the backend maps all RAM write-back regardless.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mtrrs {
    def_type: u64,
    fixed: [u64; 11],
}

impl Mtrrs {
    /// RDMSR of an MTRR; None if `index` is not one (or a variable range, of which there
    /// are none).
    pub fn read(&self, index: u32) -> Option<u64> {
        match index {
            IA32_MTRRCAP => Some(MTRRCAP),
            IA32_MTRR_DEF_TYPE => Some(self.def_type),
            _ => FIXED
                .iter()
                .position(|&m| m == index)
                .map(|i| self.fixed[i]),
        }
    }

    /// WRMSR of an MTRR; Err (#GP) for a read-only or absent one, reserved bits or an invalid
    /// memory type.
    pub fn write(&mut self, index: u32, value: u64) -> Result<(), ()> {
        if index == IA32_MTRR_DEF_TYPE {
            // Type in bits 7:0, FE bit 10, E bit 11.
            if value & !0xcff != 0 || !valid_type(value as u8) {
                return Err(());
            }
            self.def_type = value;
            return Ok(());
        }
        let i = FIXED.iter().position(|&m| m == index).ok_or(())?;
        if !value.to_le_bytes().iter().all(|&t| valid_type(t)) {
            return Err(());
        }
        self.fixed[i] = value;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owned_ranges_fit_a_filter() {
        for r in OWNED {
            assert!(r.start() <= r.end());
            assert!(r.end() - r.start() < 256, "{r:#x?}");
        }
        assert!(OWNED.iter().any(|r| r.contains(&IA32_TSC_DEADLINE)));
        assert!(!OWNED.iter().any(|r| r.contains(&IA32_TSC)));
    }

    #[test]
    fn mtrrs_read_back_and_validate() {
        let mut m = Mtrrs::default();
        assert_eq!(m.read(IA32_MTRRCAP), Some(0x500));
        assert_eq!(m.read(IA32_MTRR_DEF_TYPE), Some(0));
        assert_eq!(m.write(IA32_MTRR_DEF_TYPE, 0xc06), Ok(()));
        assert_eq!(m.read(IA32_MTRR_DEF_TYPE), Some(0xc06));
        assert_eq!(m.write(IA32_MTRR_DEF_TYPE, 0x1006), Err(()), "reserved bit");
        assert_eq!(
            m.write(IA32_MTRR_DEF_TYPE, 0x2),
            Err(()),
            "type 2 is reserved"
        );
        assert_eq!(m.write(0x268, 0x0606_0606_0505_0000), Ok(()));
        assert_eq!(m.read(0x268), Some(0x0606_0606_0505_0000));
        assert_eq!(m.write(0x259, 0x0700_0000_0000_0000), Err(()));
        assert_eq!(m.write(IA32_MTRRCAP, 0), Err(()), "read-only");
        assert_eq!(m.read(IA32_MTRR_PHYSBASE0), None, "no variable ranges");
        assert_eq!(m.write(IA32_MTRR_PHYSBASE0, 6), Err(()));
        assert_eq!(m.read(0x251), None, "gap between fixed MTRRs");
    }
}
