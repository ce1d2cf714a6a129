// SPDX-License-Identifier: GPL-2.0

//! The guest's architectural state as shadowvm keeps it between VMX windows, its checks
//! (what `SET_SREGS`/`SET_REGS` accept), and its transfer to and from the VMCS.
//!
//! Between windows this struct is the truth (GET/SET_REGS work without VMX); inside a
//! window the VMCS is, and [`GuestState::save`] brings the struct up to date on the way out.

use crate::uapi::{self, Dtable, Segment};
use crate::vmx::vmcs::*;
use crate::vmx::window::CurrentVmcs;
use crate::x86::{
    CR0_CD, CR0_DEFINED, CR0_ET, CR0_NE, CR0_NW, CR0_PE, CR0_PG, CR4_FSGSBASE, CR4_LOW11, CR4_PAE,
    CR4_PCIDE, CR4_SMAP, CR4_SMEP, DR6_ACTIVE_LOW, DR7_RESET, EFER_LMA, EFER_LME, EFER_NXE,
    EFER_SCE,
};
use kernel::num::Bounded;

/// CR0 bits a guest may set (the rest are reserved: #GP).
pub(crate) const CR0_VALID: u64 = CR0_DEFINED;
/// CR4 bits a guest may set: VME PVI TSD DE PSE PAE MCE PGE PCE OSFXSR OSXMMEXCPT, FSGSBASE,
/// PCIDE, SMEP, SMAP. Not VMXE (no nested VMX), OSXSAVE (XSAVE is hidden), LA57, PKE, CET.
pub(crate) const CR4_VALID: u64 = CR4_LOW11 | CR4_FSGSBASE | CR4_PCIDE | CR4_SMEP | CR4_SMAP;
/// EFER bits a guest may set.
pub(crate) const EFER_VALID: u64 = EFER_SCE | EFER_LME | EFER_LMA | EFER_NXE;

/// Segment registers in VMCS order (the encodings of ES..GS, LDTR, TR step by 2).
pub(crate) const ES: usize = 0;
pub(crate) const CS: usize = 1;
pub(crate) const SS: usize = 2;
pub(crate) const DS: usize = 3;
pub(crate) const FS: usize = 4;
pub(crate) const GS: usize = 5;
pub(crate) const LDTR: usize = 6;
pub(crate) const TR: usize = 7;

/// The guest's registers.
///
/// # Invariants
///
/// The values satisfy [`check_sregs`] whenever a window is entered: everything
/// userspace sets is checked on the way in, and the guest can only change them through
/// instructions the CPU or the exit handlers check.
#[derive(Clone, Copy, Default)]
pub(crate) struct GuestState {
    /// RAX..R15 in encoding order, then CR2: the layout `shadowvm_vmx_run` expects.
    /// `gpr[4]` (RSP) is kept here between windows and in the VMCS inside one.
    pub(crate) gpr: [u64; 17],
    pub(crate) rip: u64,
    pub(crate) rflags: u64,
    pub(crate) seg: [Segment; 8],
    pub(crate) gdt: Dtable,
    pub(crate) idt: Dtable,
    /// CR0, CR3, CR4 and EFER as the guest sees them. Their only owner: the MMU is handed
    /// each change (`Mmu::set_mode`, `Mmu::set_cr3`) and keeps only what it derives.
    pub(crate) cr0: u64,
    pub(crate) cr3: u64,
    pub(crate) cr4: u64,
    pub(crate) efer: u64,
    pub(crate) cr8: u64,
    pub(crate) dr: [u64; 4],
    pub(crate) dr6: u64,
    pub(crate) dr7: u64,
    pub(crate) sysenter_cs: u64,
    pub(crate) sysenter_esp: u64,
    pub(crate) sysenter_eip: u64,
    /// MSRs the CPU uses but VMX does not switch: loaded for the window, saved after it.
    pub(crate) kernel_gs_base: u64,
    pub(crate) star: u64,
    pub(crate) lstar: u64,
    pub(crate) cstar: u64,
    pub(crate) sfmask: u64,
    pub(crate) pat: u64,
    /// Added to the host TSC for the guest (VMCS TSC offset): the guest's IA32_TSC is
    /// host TSC + offset, wrapping.
    pub(crate) tsc_offset: u64,
    /// IA32_APIC_BASE as userspace set it in SET_SREGS: kept for userspace, which owns the
    /// MSR (guest accesses exit to it), never used here.
    pub(crate) apic_base: u64,
    pub(crate) interruptibility: u64,
    /// Debug exceptions the CPU had pending at the last exit (VMCS format, SDM 25.4.2):
    /// a single-step trap after STI or MOV SS must survive the window boundary.
    pub(crate) pending_dbg: u64,
}

pub(crate) const CR2: usize = 16;
pub(crate) const RSP: usize = 4;

/// Access rights of a segment in the VMCS format.
fn access_rights(s: &Segment) -> AccessRights {
    if s.unusable != 0 {
        return AccessRights::from_raw(0).with_unusable(true);
    }
    AccessRights::from_raw(0)
        .with_seg_type(Bounded::from_expr(u32::from(s.type_) & 0xf))
        .with_s(s.s & 1 != 0)
        .with_dpl(Bounded::from_expr(u32::from(s.dpl) & 3))
        .with_present(s.present & 1 != 0)
        .with_avl(s.avl & 1 != 0)
        .with_l(s.l & 1 != 0)
        .with_db(s.db & 1 != 0)
        .with_g(s.g & 1 != 0)
}

fn segment_from(ar: AccessRights, base: u64, limit: u32, selector: u16) -> Segment {
    let bit = |b: Bounded<u32, 1>| u8::from(b.into_bool());
    Segment {
        base,
        limit,
        selector,
        type_: ar.seg_type().get() as u8,
        s: bit(ar.s()),
        dpl: ar.dpl().get() as u8,
        present: bit(ar.present()),
        avl: bit(ar.avl()),
        l: bit(ar.l()),
        db: bit(ar.db()),
        g: bit(ar.g()),
        unusable: bit(ar.unusable()),
        padding: 0,
    }
}

impl GuestState {
    /// The state of a freshly created vCPU: 32-bit protected mode, paging off, flat
    /// segments, no GDT/IDT, the TSC counting from 0 (as KVM starts a vCPU's TSC).
    /// Userspace sets its own before the first RUN.
    pub(crate) fn reset() -> Self {
        let flat = |type_: u8, selector: u16| Segment {
            base: 0,
            limit: 0xffff_ffff,
            selector,
            type_,
            present: 1,
            dpl: 0,
            db: 1,
            s: 1,
            l: 0,
            g: 1,
            avl: 0,
            unusable: 0,
            padding: 0,
        };
        let mut seg = [flat(3, 0x10); 8];
        seg[CS] = flat(11, 0x08);
        seg[LDTR] = Segment {
            unusable: 1,
            ..Segment::default()
        };
        seg[TR] = Segment {
            type_: 11,
            present: 1,
            limit: 0x67,
            ..Segment::default()
        };
        Self {
            rflags: 2,
            seg,
            cr0: CR0_PE | CR0_ET | CR0_NE,
            dr6: DR6_ACTIVE_LOW,
            dr7: DR7_RESET,
            pat: 0x0007_0406_0007_0406,
            tsc_offset: 0u64.wrapping_sub(crate::vmx::insn::rdtsc()),
            ..Self::default()
        }
    }

    pub(crate) fn long_mode(&self) -> bool {
        self.efer & EFER_LMA != 0
    }

    /// 64-bit mode: IA-32e mode with CS.L = 1.
    pub(crate) fn code64(&self) -> bool {
        self.long_mode() && self.seg[CS].l != 0
    }

    pub(crate) fn cpl(&self) -> u8 {
        self.seg[SS].dpl & 3
    }

    pub(crate) fn regs(&self) -> uapi::Regs {
        let g = &self.gpr;
        uapi::Regs {
            rax: g[0],
            rcx: g[1],
            rdx: g[2],
            rbx: g[3],
            rsp: g[4],
            rbp: g[5],
            rsi: g[6],
            rdi: g[7],
            r8: g[8],
            r9: g[9],
            r10: g[10],
            r11: g[11],
            r12: g[12],
            r13: g[13],
            r14: g[14],
            r15: g[15],
            rip: self.rip,
            rflags: self.rflags,
        }
    }

    /// SET_REGS: RFLAGS must have its fixed bit set, no reserved bit, and no VM (virtual-8086
    /// mode needs real-mode support shadowvm does not have).
    pub(crate) fn set_regs(&mut self, r: &uapi::Regs) -> bool {
        if r.rflags & uapi::SHADOWVM_RFLAGS_RESERVED != 0
            || r.rflags & uapi::SHADOWVM_RFLAGS_FIXED1 == 0
            || r.rflags & uapi::SHADOWVM_RFLAGS_VM != 0
            || (!self.code64() && (r.rip >> 32) != 0)
        {
            return false;
        }
        for i in 0..16 {
            self.gpr[i] = r.gpr(i).unwrap_or(0);
        }
        self.rip = r.rip;
        self.rflags = r.rflags;
        true
    }

    pub(crate) fn sregs(&self) -> uapi::Sregs {
        uapi::Sregs {
            cs: self.seg[CS],
            ds: self.seg[DS],
            es: self.seg[ES],
            fs: self.seg[FS],
            gs: self.seg[GS],
            ss: self.seg[SS],
            tr: self.seg[TR],
            ldt: self.seg[LDTR],
            gdt: self.gdt,
            idt: self.idt,
            cr0: self.cr0,
            cr2: self.gpr[CR2],
            cr3: self.cr3,
            cr4: self.cr4,
            efer: self.efer,
            apic_base: self.apic_base,
        }
    }

    /// SET_SREGS, after [`check_sregs`] accepted the values.
    pub(crate) fn set_sregs(&mut self, s: &uapi::Sregs) {
        self.seg[CS] = s.cs;
        self.seg[DS] = s.ds;
        self.seg[ES] = s.es;
        self.seg[FS] = s.fs;
        self.seg[GS] = s.gs;
        self.seg[SS] = s.ss;
        self.seg[TR] = s.tr;
        self.seg[LDTR] = s.ldt;
        self.gdt = s.gdt;
        self.idt = s.idt;
        self.cr0 = s.cr0 | CR0_ET;
        self.gpr[CR2] = s.cr2;
        self.cr3 = s.cr3;
        self.cr4 = s.cr4;
        self.efer = s.efer;
        self.apic_base = s.apic_base;
    }

    /// Writes the guest-state area of the VMCS (except what the MMU decides: GUEST_CR0/3/4,
    /// EFER and the read shadows, see `VcpuCore::sync_paging`). Returns what the VMCS now
    /// holds of the registers [`Self::load_volatile`] writes back.
    ///
    /// `in_vmcs`: what the VMCS is known to hold of the fields [`Self::save`] reads back
    /// (see [`SavedFields`]); those are written only if this state differs from it.
    pub(crate) fn load(
        &self,
        vmcs: &CurrentVmcs<'_>,
        in_vmcs: Option<&SavedFields>,
    ) -> VolatileInVmcs {
        if !in_vmcs.is_some_and(|f| f.matches(self)) {
            for (s, f) in self.seg.iter().zip(GUEST_SEGMENTS) {
                vmcs.write(f.selector, s.selector);
                vmcs.write(f.limit, s.limit);
                vmcs.write(f.access_rights, access_rights(s).into_raw());
                vmcs.write(f.base, s.base);
            }
            vmcs.write(GUEST_GDTR_BASE, self.gdt.base);
            vmcs.write(GUEST_GDTR_LIMIT, self.gdt.limit.into());
            vmcs.write(GUEST_IDTR_BASE, self.idt.base);
            vmcs.write(GUEST_IDTR_LIMIT, self.idt.limit.into());
            // A 32-bit field: VMWRITE would ignore the upper half too.
            vmcs.write(GUEST_SYSENTER_CS, self.sysenter_cs as u32);
            vmcs.write(GUEST_SYSENTER_ESP, self.sysenter_esp);
            vmcs.write(GUEST_SYSENTER_EIP, self.sysenter_eip);
            vmcs.write(GUEST_PENDING_DBG_EXCEPTIONS, self.pending_dbg);
        }
        vmcs.write(GUEST_RSP, self.gpr[RSP]);
        vmcs.write(GUEST_RIP, self.rip);
        vmcs.write(GUEST_RFLAGS, self.rflags);
        // The guest's breakpoints are armed for real: DR0-3 are loaded for the window
        // (`vcpu::HostState`), DR7 by the "load debug controls" entry control. #DB is
        // intercepted, so a breakpoint loop always comes back through VM exits.
        vmcs.write(GUEST_DR7, self.dr7);
        vmcs.write(GUEST_INTERRUPTIBILITY_INFO, self.interruptibility as u32);
        vmcs.write(GUEST_ACTIVITY_STATE, 0);
        vmcs.write(GUEST_IA32_DEBUGCTL, 0);
        vmcs.write(VMCS_LINK_POINTER, u64::MAX);
        self.volatile()
    }

    /// This state's values of the registers [`Self::save_volatile`] reads.
    fn volatile(&self) -> VolatileInVmcs {
        VolatileInVmcs {
            rsp: self.gpr[RSP],
            rip: self.rip,
            rflags: self.rflags,
            interruptibility: self.interruptibility,
        }
    }

    /// Reads back what the guest can change without a VM exit. RIP, RSP, RFLAGS and the
    /// interruptibility state are already here: [`Self::save_volatile`] ran at each exit
    /// and the handlers may have changed them since (an instruction they completed).
    pub(crate) fn save(&mut self, vmcs: &CurrentVmcs<'_>) {
        self.save_segments(vmcs);
        self.gdt.base = vmcs.read(GUEST_GDTR_BASE);
        self.gdt.limit = vmcs.read(GUEST_GDTR_LIMIT) as u16;
        self.idt.base = vmcs.read(GUEST_IDTR_BASE);
        self.idt.limit = vmcs.read(GUEST_IDTR_LIMIT) as u16;
        self.sysenter_cs = vmcs.read(GUEST_SYSENTER_CS).into();
        self.sysenter_esp = vmcs.read(GUEST_SYSENTER_ESP);
        self.sysenter_eip = vmcs.read(GUEST_SYSENTER_EIP);
        self.pending_dbg = vmcs.read(GUEST_PENDING_DBG_EXCEPTIONS);
    }

    /// Reads the segment registers back: the guest loads them without exits.
    pub(crate) fn save_segments(&mut self, vmcs: &CurrentVmcs<'_>) {
        for (s, f) in self.seg.iter_mut().zip(GUEST_SEGMENTS) {
            *s = segment_from(
                AccessRights::from_raw(vmcs.read(f.access_rights)),
                vmcs.read(f.base),
                vmcs.read(f.limit),
                vmcs.read(f.selector),
            );
        }
    }

    /// The registers every exit handler may need and change; returns what the VMCS holds
    /// of them (for [`Self::load_volatile`]).
    pub(crate) fn save_volatile(&mut self, vmcs: &CurrentVmcs<'_>) -> VolatileInVmcs {
        self.gpr[RSP] = vmcs.read(GUEST_RSP);
        self.rip = vmcs.read(GUEST_RIP);
        self.rflags = vmcs.read(GUEST_RFLAGS);
        self.interruptibility = vmcs.read(GUEST_INTERRUPTIBILITY_INFO).into();
        let cs = AccessRights::from_raw(vmcs.read(GUEST_CS_AR_BYTES));
        let ss = AccessRights::from_raw(vmcs.read(GUEST_SS_AR_BYTES));
        self.seg[CS].l = u8::from(cs.l().into_bool());
        self.seg[SS].dpl = ss.dpl().get() as u8;
        self.volatile()
    }

    /// Writes back what [`Self::save_volatile`] read and a handler changed since: the
    /// fields whose value differs from `held`, what the VMCS holds (most exits change
    /// only RIP). `held` is updated to the values written.
    pub(crate) fn load_volatile(&self, vmcs: &CurrentVmcs<'_>, held: &mut VolatileInVmcs) {
        let now = self.volatile();
        if now.rsp != held.rsp {
            vmcs.write(GUEST_RSP, now.rsp);
        }
        if now.rip != held.rip {
            vmcs.write(GUEST_RIP, now.rip);
        }
        if now.rflags != held.rflags {
            vmcs.write(GUEST_RFLAGS, now.rflags);
        }
        if now.interruptibility != held.interruptibility {
            vmcs.write(GUEST_INTERRUPTIBILITY_INFO, now.interruptibility as u32);
        }
        *held = now;
    }
}

/// The values of GUEST_RSP, GUEST_RIP, GUEST_RFLAGS and GUEST_INTERRUPTIBILITY_INFO in the
/// current VMCS, as last read or written (a VMWRITE is skipped when the value is there).
///
/// # Invariants
///
/// The fields are what the current VMCS holds: set by [`GuestState::load`] when a window
/// opens, by [`GuestState::save_volatile`] after each exit (which is what the CPU stored)
/// and by [`GuestState::load_volatile`] before each entry.
#[derive(Clone, Copy)]
pub(crate) struct VolatileInVmcs {
    rsp: u64,
    rip: u64,
    rflags: u64,
    interruptibility: u64,
}

/// The guest-state fields [`GuestState::save`] reads back when a window closes, with the
/// values it read. The VMCS keeps its contents from one window to the next (VMCLEAR writes
/// them to the VMCS region, which VMPTRLD loads again after VMXON, on any CPU: KVM moves
/// its VMCSs between CPUs that way), and only the guest and shadowvm's own VMWRITEs change
/// them. So while the vCPU's state still holds these values (no SET_SREGS, SET_MSRS and
/// the like since), the VMCS does too and the next window need not write them again (40
/// VMWRITEs; KVM likewise writes them only when userspace sets them).
///
/// Kept, copied and compared as words in place: whole-structure moves and the derived
/// comparison (memcpy, field by field) cost about as much as the VMWRITEs they save.
#[derive(Default)]
pub(crate) struct SavedFields {
    /// The 8 segment registers, as [`segment_words`].
    seg: [u64; 24],
    /// GDTR and IDTR, as [`dtable_words`].
    gdt: [u64; 2],
    idt: [u64; 2],
    /// SYSENTER CS, ESP, EIP and the pending debug exceptions.
    scalars: [u64; 4],
}

impl SavedFields {
    /// Takes `s`'s values (right after [`GuestState::save`] read them from the VMCS).
    pub(crate) fn record(&mut self, s: &GuestState) {
        copy_words(segment_words(&s.seg), &mut self.seg);
        copy_words(dtable_words(&s.gdt), &mut self.gdt);
        copy_words(dtable_words(&s.idt), &mut self.idt);
        self.scalars = s.saved_scalars();
    }

    /// Whether `s` holds the recorded values.
    pub(crate) fn matches(&self, s: &GuestState) -> bool {
        words_equal(segment_words(&s.seg), &self.seg)
            & words_equal(dtable_words(&s.gdt), &self.gdt)
            & words_equal(dtable_words(&s.idt), &self.idt)
            & (s.saved_scalars() == self.scalars)
    }
}

impl GuestState {
    fn saved_scalars(&self) -> [u64; 4] {
        [
            self.sysenter_cs,
            self.sysenter_esp,
            self.sysenter_eip,
            self.pending_dbg,
        ]
    }
}

const _: () = assert!(
    core::mem::size_of::<[Segment; 8]>() == 24 * 8
        && core::mem::align_of::<Segment>() >= 8
        && core::mem::size_of::<Dtable>() == 2 * 8
        && core::mem::align_of::<Dtable>() >= 8
);

/// The segment registers as words.
fn segment_words(seg: &[Segment; 8]) -> &[u64; 24] {
    // SAFETY: `Segment` is a `repr(C)` structure of integers that names its padding as a
    // field, so all 192 bytes are initialised and any bit pattern is a `u64`; its alignment
    // is at least a word's and the sizes match (asserted above).
    unsafe { &*core::ptr::from_ref(seg).cast::<[u64; 24]>() }
}

/// A descriptor-table register as words.
fn dtable_words(t: &Dtable) -> &[u64; 2] {
    // SAFETY: As for `segment_words`: `Dtable` is `repr(C)` of integers, padding named.
    unsafe { &*core::ptr::from_ref(t).cast::<[u64; 2]>() }
}

/// A word at a time (volatile, so the compiler does not turn it into a memcpy call, which
/// costs more than the copy for these sizes).
fn copy_words<const N: usize>(src: &[u64; N], dst: &mut [u64; N]) {
    for (d, s) in dst.iter_mut().zip(src) {
        // SAFETY: `d` is a valid, aligned `&mut u64`.
        unsafe { core::ptr::from_mut(d).write_volatile(*s) };
    }
}

/// Without branches or a memcmp call, for the same reason.
fn words_equal<const N: usize>(a: &[u64; N], b: &[u64; N]) -> bool {
    a.iter().zip(b).fold(0, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether `s` turns on PAE paging (CR0.PG, CR4.PAE, not IA-32e mode): the mode in which
/// the CPU loads four PDPTEs together with CR3.
pub(crate) fn pae_paging(s: &uapi::Sregs) -> bool {
    s.cr0 & CR0_PG != 0 && s.cr4 & CR4_PAE != 0 && s.efer & EFER_LMA == 0
}

fn seg_ok(s: &Segment, code: bool) -> bool {
    if s.unusable != 0 {
        return !code;
    }
    let limit_ok = if s.g != 0 {
        s.limit & 0xfff == 0xfff
    } else {
        s.limit >> 20 == 0
    };
    s.present != 0 && s.s != 0 && limit_ok && s.type_ & 1 != 0 && (s.type_ & 8 != 0) == code
}

/// Checks SET_SREGS values against what VM entry requires (SDM 26.3.1) and what shadowvm
/// supports, so that a bad value gets EINVAL instead of a VM-entry failure.
pub(crate) fn check_sregs(s: &uapi::Sregs) -> bool {
    let cr0 = s.cr0 | CR0_ET;
    let lma = s.efer & EFER_LMA != 0;
    let paging = cr0 & CR0_PG != 0;
    let selectors_ok = [&s.ds, &s.es, &s.fs, &s.gs]
        .iter()
        .all(|d| seg_ok(d, false) || d.unusable != 0);
    cr0 & !CR0_VALID == 0
        // Protected mode only: real mode would need unrestricted guest or vm86 emulation.
        && cr0 & CR0_PE != 0
        && !(cr0 & CR0_NW != 0 && cr0 & CR0_CD == 0)
        && s.cr4 & !CR4_VALID == 0
        && s.efer & !EFER_VALID == 0
        && lma == (paging && s.efer & EFER_LME != 0)
        && (!lma || s.cr4 & CR4_PAE != 0)
        && (s.cr4 & CR4_PCIDE == 0 || (lma && s.cr3 & 0xfff == 0))
        && (lma || s.cr3 >> 32 == 0)
        && seg_ok(&s.cs, true)
        && !(s.cs.l != 0 && (s.cs.db != 0 || !lma))
        && (s.ss.unusable != 0 || (seg_ok(&s.ss, false) && s.ss.type_ & 2 != 0))
        && (s.ss.unusable != 0 || s.ss.dpl == s.cs.dpl || s.cs.type_ & 4 != 0)
        && s.ss.selector & 3 == u16::from(s.ss.dpl)
        && selectors_ok
        && s.tr.unusable == 0 && s.tr.present != 0 && s.tr.s == 0
        && (s.tr.type_ == 11 || (!lma && s.tr.type_ == 3))
        && s.tr.selector & 4 == 0
        && (s.ldt.unusable != 0 || (s.ldt.type_ == 2 && s.ldt.present != 0 && s.ldt.s == 0))
        && s.gdt.padding == [0; 3]
        && s.idt.padding == [0; 3]
        && [&s.cs, &s.ds, &s.es, &s.fs, &s.gs, &s.ss, &s.tr, &s.ldt].iter().all(|x| x.padding == 0)
        && (lma || [&s.cs, &s.ds, &s.es, &s.ss].iter().all(|x| x.base >> 32 == 0))
}
