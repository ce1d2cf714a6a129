// SPDX-License-Identifier: GPL-2.0

//! The host's side of a window: the VMCS host-state area (what every VM exit loads), the
//! host state a VM exit does not restore ([`HostState`], a guard), and the syscall MSRs
//! the guest uses without exits.

use super::state::GuestState;
use crate::glue::{self, IrqsOff};
use crate::vmx::insn;
use crate::vmx::vmcs::*;
use crate::vmx::window::CurrentVmcs;
use crate::x86::{self, msr};
use core::arch::asm;

extern "C" {
    /// The exit label of `vmenter.S`: where every VM exit resumes (HOST_RIP).
    static shadowvm_vmx_exit: u8;
}

/// The values of the VMCS host-state fields that can change: per CPU (descriptor tables,
/// GS base), per task (CR3, FS base) or with the kernel's CR4. The other host fields are
/// constants.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct HostFields {
    cr0: u64,
    cr3: u64,
    cr4: u64,
    tr: u16,
    tr_base: u64,
    gdt_base: u64,
    idt_base: u64,
    fs_base: u64,
    gs_base: u64,
    sysenter_cs: u64,
    sysenter_esp: u64,
    sysenter_eip: u64,
    efer: u64,
}

impl HostFields {
    /// This CPU's current values.
    fn read() -> Self {
        let (gdt_base, idt_base, tr) = descriptor_tables();
        let cr0: u64;
        let cr3: u64;
        // SAFETY: Reading control registers has no side effects.
        unsafe {
            asm!("mov {}, cr0", out(reg) cr0, options(nomem, nostack, preserves_flags));
            asm!("mov {}, cr3", out(reg) cr3, options(nomem, nostack, preserves_flags));
        }
        let rdmsr = |index| glue::rdmsr(index).unwrap_or(0);
        Self {
            cr0,
            cr3,
            cr4: insn::read_cr4(),
            tr,
            tr_base: tss_base(gdt_base, tr),
            gdt_base,
            idt_base,
            fs_base: rdmsr(msr::FS_BASE),
            gs_base: rdmsr(msr::GS_BASE),
            sysenter_cs: rdmsr(msr::SYSENTER_CS),
            sysenter_esp: rdmsr(msr::SYSENTER_ESP),
            sysenter_eip: rdmsr(msr::SYSENTER_EIP),
            efer: rdmsr(msr::EFER),
        }
    }
}

/// Host state: this CPU's real registers, loaded by every VM exit. Returns the values the
/// VMCS now holds. `in_vmcs` is what the VMCS is known to hold from an earlier window (it
/// keeps its contents between windows and only this function writes host fields): if this
/// CPU's values are the same, nothing is written (about 20 VMWRITEs; KVM likewise rewrites
/// its per-CPU host fields only when the vCPU moves to another CPU).
pub(super) fn write_vmcs_host_state(
    vmcs: &CurrentVmcs<'_>,
    in_vmcs: Option<&HostFields>,
) -> HostFields {
    let now = HostFields::read();
    if in_vmcs == Some(&now) {
        return now;
    }
    vmcs.write(HOST_CR0, now.cr0);
    vmcs.write(HOST_CR3, now.cr3);
    vmcs.write(HOST_CR4, now.cr4);
    vmcs.write(HOST_CS_SELECTOR, KERNEL_CS);
    vmcs.write(HOST_SS_SELECTOR, KERNEL_DS);
    for f in [
        HOST_DS_SELECTOR,
        HOST_ES_SELECTOR,
        HOST_FS_SELECTOR,
        HOST_GS_SELECTOR,
    ] {
        vmcs.write(f, 0);
    }
    vmcs.write(HOST_TR_SELECTOR, now.tr);
    vmcs.write(HOST_TR_BASE, now.tr_base);
    vmcs.write(HOST_GDTR_BASE, now.gdt_base);
    vmcs.write(HOST_IDTR_BASE, now.idt_base);
    vmcs.write(HOST_FS_BASE, now.fs_base);
    vmcs.write(HOST_GS_BASE, now.gs_base);
    // A 32-bit field: VMWRITE would ignore the upper half too.
    vmcs.write(HOST_IA32_SYSENTER_CS, now.sysenter_cs as u32);
    vmcs.write(HOST_IA32_SYSENTER_ESP, now.sysenter_esp);
    vmcs.write(HOST_IA32_SYSENTER_EIP, now.sysenter_eip);
    vmcs.write(HOST_IA32_EFER, now.efer);
    // Only the address of the exit label is taken.
    vmcs.write(HOST_RIP, core::ptr::addr_of!(shadowvm_vmx_exit) as u64);
    now
}

const KERNEL_CS: u16 = 0x10;
const KERNEL_DS: u16 = 0x18;

/// GDT base, IDT base and TR selector of this CPU.
fn descriptor_tables() -> (u64, u64, u16) {
    let mut gdt = [0u8; 10];
    let mut idt = [0u8; 10];
    let tr: u16;
    // SAFETY: SGDT/SIDT store 10 bytes into the buffers; STR reads a register.
    unsafe {
        asm!("sgdt [{}]", in(reg) gdt.as_mut_ptr(), options(nostack));
        asm!("sidt [{}]", in(reg) idt.as_mut_ptr(), options(nostack));
        asm!("str {0:x}", out(reg) tr, options(nomem, nostack));
    }
    let base = |b: &[u8; 10]| u64::from_le_bytes([b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9]]);
    (base(&gdt), base(&idt), tr)
}

/// Base of the 64-bit TSS descriptor `tr` in the GDT at `gdt`.
fn tss_base(gdt: u64, tr: u16) -> u64 {
    let desc = gdt.wrapping_add(u64::from(tr & !7)) as *const u64;
    // SAFETY: The kernel's GDT is mapped and TR indexes its 16-byte TSS descriptor.
    let (lo, hi) = unsafe { (desc.read_unaligned(), desc.add(1).read_unaligned()) };
    ((lo >> 16) & 0xff_ffff) | (((lo >> 56) & 0xff) << 24) | ((hi & 0xffff_ffff) << 32)
}

/// MSRs the guest's instructions use directly but VMX does not switch (SWAPGS, SYSCALL):
/// the guest's values are in the CPU only while the window is open ([`HostState`] puts
/// the host's back).
const SYSCALL_MSRS: [u32; 5] = [
    msr::KERNEL_GS_BASE,
    msr::STAR,
    msr::LSTAR,
    msr::CSTAR,
    msr::SFMASK,
];

pub(super) fn load_syscall_msrs(s: &GuestState) {
    for (msr, v) in
        SYSCALL_MSRS
            .into_iter()
            .zip([s.kernel_gs_base, s.star, s.lstar, s.cstar, s.sfmask])
    {
        wrmsr(msr, v);
    }
}

/// Saves what the guest can change without an exit (SWAPGS changes KERNEL_GS_BASE).
pub(super) fn save_syscall_msrs(s: &mut GuestState) {
    s.kernel_gs_base = glue::rdmsr(msr::KERNEL_GS_BASE).unwrap_or(0);
}

/// The host state a VM exit does not restore, saved before a window and put back when
/// dropped, in the order the dependencies need: LDT before the selectors that may point
/// into it, GS before KERNEL_GS_BASE (loading GS through `load_gs_index` changes it),
/// breakpoint addresses before DR7, and the GDT/TSS limits last (KVM:
/// `vmx_prepare_switch_to_host`, `hw_breakpoint_restore`).
///
/// # Invariants
///
/// Interrupts are off for `'irq`; while the value lives the CPU may hold the guest's
/// syscall MSRs and, when `host_drs` is set, the guest's DR0-3.
pub(super) struct HostState<'irq> {
    irqs: &'irq IrqsOff,
    ds: u16,
    es: u16,
    fs: u16,
    gs: u16,
    ldt: u16,
    /// FS base, when FS holds a selector whose reload would change it.
    fs_base: u64,
    msrs: [u64; SYSCALL_MSRS.len()],
    dr7: u64,
    debugctl: u64,
    /// The host's DR0-3 and DR6, when the guest's breakpoints were loaded.
    host_drs: Option<[u64; 5]>,
}

impl<'irq> HostState<'irq> {
    /// Saves the host's state and loads the guest's breakpoint addresses if it has any
    /// enabled (DR7 itself is loaded by VM entry).
    pub(super) fn save(irqs: &'irq IrqsOff, guest: &GuestState) -> Self {
        let (ds, es, fs, gs, ldt): (u16, u16, u16, u16, u16);
        // SAFETY: Reading segment selectors and LDTR has no side effects.
        unsafe {
            asm!("mov {0:x}, ds", out(reg) ds, options(nomem, nostack, preserves_flags));
            asm!("mov {0:x}, es", out(reg) es, options(nomem, nostack, preserves_flags));
            asm!("mov {0:x}, fs", out(reg) fs, options(nomem, nostack, preserves_flags));
            asm!("mov {0:x}, gs", out(reg) gs, options(nomem, nostack, preserves_flags));
            asm!("sldt {0:x}", out(reg) ldt, options(nomem, nostack, preserves_flags));
        }
        let mut msrs = [0; SYSCALL_MSRS.len()];
        for (v, msr) in msrs.iter_mut().zip(SYSCALL_MSRS) {
            *v = glue::rdmsr(msr).unwrap_or(0);
        }
        let dr7 = insn::read_dr::<7>();
        let host_drs = (guest.dr7 & x86::DR7_ENABLES != 0).then(|| {
            let host = [
                insn::read_dr::<0>(),
                insn::read_dr::<1>(),
                insn::read_dr::<2>(),
                insn::read_dr::<3>(),
                insn::read_dr::<6>(),
            ];
            // SAFETY: Interrupts are off and `drop` writes the host's values back. The
            // host's breakpoints are disabled first (as KVM does), so none fires on a guest
            // address before VM entry loads the guest's DR7.
            unsafe {
                insn::write_dr::<7>(x86::DR7_RESET);
                insn::write_dr::<0>(guest.dr[0]);
                insn::write_dr::<1>(guest.dr[1]);
                insn::write_dr::<2>(guest.dr[2]);
                insn::write_dr::<3>(guest.dr[3]);
            }
            host
        });
        Self {
            irqs,
            ds,
            es,
            fs,
            gs,
            ldt,
            fs_base: if fs != 0 {
                glue::rdmsr(msr::FS_BASE).unwrap_or(0)
            } else {
                0
            },
            msrs,
            dr7,
            debugctl: glue::rdmsr(msr::IA32_DEBUGCTL).unwrap_or(0),
            host_drs,
        }
    }
}

impl Drop for HostState<'_> {
    fn drop(&mut self) {
        // SAFETY: These are the values the CPU held before the window, valid in the same
        // GDT/LDT; interrupts are off (type invariant) so nothing observes the
        // intermediate state. GS goes through `load_gs_index`, which keeps the kernel's
        // GS base.
        unsafe {
            asm!("mov ds, {0:x}", in(reg) self.ds, options(nostack, preserves_flags));
            asm!("mov es, {0:x}", in(reg) self.es, options(nostack, preserves_flags));
            if self.ldt != 0 {
                asm!("lldt {0:x}", in(reg) self.ldt, options(nostack, preserves_flags));
            }
        }
        // A VM exit loads null FS/GS selectors (HOST_FS/GS_SELECTOR): a 32-bit task's TLS
        // selectors would be gone when it returns to user mode.
        glue::load_user_segments(self.irqs, self.fs, self.gs, self.fs_base);
        for (msr, v) in SYSCALL_MSRS.into_iter().zip(self.msrs) {
            wrmsr(msr, v);
        }
        if let Some([dr0, dr1, dr2, dr3, dr6]) = self.host_drs {
            // SAFETY: The host's own values, saved in `save` with interrupts off.
            unsafe {
                insn::write_dr::<0>(dr0);
                insn::write_dr::<1>(dr1);
                insn::write_dr::<2>(dr2);
                insn::write_dr::<3>(dr3);
                insn::write_dr::<6>(dr6);
            }
        }
        // A VM exit clears DR7 and IA32_DEBUGCTL: the host's breakpoints (ptrace, perf)
        // and branch tracing would silently stop on this CPU.
        if self.dr7 != x86::DR7_RESET {
            // SAFETY: The host's own DR7, its breakpoint addresses restored just above.
            unsafe { insn::write_dr::<7>(self.dr7) };
        }
        if self.debugctl != 0 {
            wrmsr(msr::IA32_DEBUGCTL, self.debugctl);
        }
        glue::restore_host_descriptors(self.irqs);
    }
}

/// Writes an MSR of the vCPU's fixed set: the syscall MSRs (present on every x86-64 CPU
/// with VMX), and DEBUGCTL with the host's own value, read from the CPU.
pub(super) fn wrmsr(index: u32, v: u64) {
    let (lo, hi) = (v as u32, (v >> 32) as u32);
    // SAFETY: Called with interrupts off around a window; the values are the host's own or
    // the guest's, checked canonical at WRMSR emulation.
    unsafe { asm!("wrmsr", in("ecx") index, in("eax") lo, in("edx") hi, options(nostack)) };
}
