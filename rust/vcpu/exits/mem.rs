// SPDX-License-Identifier: GPL-2.0

//! Memory exits: #PF for the shadow MMU, instruction emulation (page-table writes and
//! MMIO), INVPCID.

use super::super::state::CS;
use super::super::Completion;
use super::{user, Handled, VcpuCore};
use crate::emulate::{self, CodeSize, MmioData};
use crate::mmu::access::EngineAccess;
use crate::mmu::{self, Access, PfOutcome};
use crate::ram::GuestRam;
use crate::uapi;
use crate::vmx::exit::{ExitInfo, ExitReason};
use crate::vmx::window::CurrentVmcs;
use crate::x86::{self, vector};

/// REP iterations emulated per exit: bounded so interrupts stay off only briefly. Most
/// REP stores over a page table stop well before: once the engine unshadows the frame
/// (flooded with writes), the guest does the rest natively.
const REP_CHUNK: u32 = 1024;

impl VcpuCore {
    /// #PF exit: the shadow MMU fixes its tables, reflects the fault to the guest, or
    /// asks for the instruction to be emulated (a page-table write, MMIO).
    pub(super) fn page_fault(
        &mut self,
        vmcs: &CurrentVmcs<'_>,
        ram: &GuestRam,
        run: &mut uapi::Run,
        info: &ExitInfo,
    ) -> Handled {
        let ac = self.state.rflags & x86::RFLAGS_AC != 0;
        let gva = info.qualification;
        // The fault came from the CPU delivering an event (pushing its frame, reading the
        // IDT or GDT), not from the instruction at RIP: emulating that instruction would be
        // wrong. Stop protecting the frame and deliver the event again (KVM's
        // kvm_mmu_unprotect_page_virt when an event needs reinjection).
        let delivering = info.vectoring_info.valid().into_bool();
        match self.mmu.page_fault(
            &mut self.cache,
            ram,
            gva,
            info.intr_error,
            self.state.cpl(),
            ac,
        ) {
            Err(mmu::MmuError::NeedMemory) => Handled::NeedMemory,
            Err(e @ mmu::MmuError::LimitReached) => self.mmu_failed(e),
            Ok(PfOutcome::Fixed) => Handled::Resume,
            Ok(PfOutcome::Inject(pf)) => self.raise(vector::PF, Some(pf.error_code), Some(pf.cr2)),
            Ok(PfOutcome::EmulateWrite { gpa }) if delivering => {
                if self
                    .mmu
                    .unprotect(&mut self.cache, ram, self.state.rip, gpa)
                {
                    return Handled::Resume;
                }
                self.delivery_error(run, info, gpa)
            }
            // An event frame or descriptor table in MMIO: no device can take that.
            Ok(PfOutcome::Mmio { gpa }) if delivering => self.delivery_error(run, info, gpa),
            Ok(PfOutcome::EmulateWrite { gpa }) => {
                self.emulate(Some(vmcs), ram, run, Some(gpa), None)
            }
            Ok(PfOutcome::Mmio { .. }) => self.emulate(Some(vmcs), ram, run, None, None),
        }
    }

    /// Emulates the instruction at RIP: a write to a write-protected page table
    /// (`pt_gpa`), or an MMIO access. `mmio` completes an MMIO read userspace answered.
    /// Inside a window (`vmcs`), the segments are read from the VMCS first: the guest can
    /// change them without an exit (MOV Sreg, SWAPGS, WRFSBASE).
    fn emulate(
        &mut self,
        vmcs: Option<&CurrentVmcs<'_>>,
        ram: &GuestRam,
        run: &mut uapi::Run,
        pt_gpa: Option<u64>,
        mmio: Option<MmioData>,
    ) -> Handled {
        if let Some(vmcs) = vmcs {
            self.state.save_segments(vmcs);
        }
        let s = &self.state;
        let cpl3 = s.cpl() == 3;
        let ac = s.rflags & x86::RFLAGS_AC != 0;
        let cs = &s.seg[CS];
        let mode = CodeSize::from_cpu(s.long_mode(), cs.l != 0, cs.db != 0, false);
        let rip_linear = if s.code64() {
            s.rip
        } else {
            cs.base.wrapping_add(s.rip) & 0xffff_ffff
        };
        // Fetch up to 15 bytes, page by page, through the guest's tables.
        let mut bytes = [0u8; 15];
        let mut got = 0usize;
        let mut fetch_fault = None;
        while got < bytes.len() {
            let la = rip_linear.wrapping_add(got as u64);
            let n = core::cmp::min(bytes.len() - got, 4096 - (la & 0xfff) as usize);
            let access = Access {
                write: false,
                fetch: true,
                user: cpl3,
                implicit: false,
                ac,
            };
            let gpa = match self.mmu.translate(ram, la, access) {
                Ok(gpa) => gpa,
                Err(pf) => {
                    fetch_fault = Some(pf);
                    break;
                }
            };
            let Some(dst) = bytes.get_mut(got..got + n) else {
                break;
            };
            if !ram.read(gpa, dst) {
                break;
            }
            got += n;
        }
        let insn = match emulate::decode(bytes.get(..got).unwrap_or(&[]), mode) {
            Ok(insn) => insn,
            // The instruction runs into a page the guest cannot fetch: that #PF is what the
            // CPU would raise (the guest changed its tables since the exit).
            Err(emulate::DecodeError::NeedMoreBytes) if fetch_fault.is_some() => {
                let pf = fetch_fault.unwrap_or(mmu::PageFault {
                    cr2: rip_linear,
                    error_code: 0x10,
                });
                return self.raise(vector::PF, Some(pf.error_code), Some(pf.cr2));
            }
            Err(e) => {
                if let (Some(gpa), emulate::DecodeError::Unsupported { .. }) = (pt_gpa, e) {
                    // The engine's fallback: stop shadowing the frame and let the write
                    // through, unless re-entering cannot make progress (then the internal
                    // error below, with the instruction bytes: never a loop).
                    if self
                        .mmu
                        .unprotect(&mut self.cache, ram, self.state.rip, gpa)
                    {
                        return Handled::Resume;
                    }
                }
                if let Some(ex) = e.exception() {
                    return self.raise_emulated(ex);
                }
                let [b0, b1, b2, b3, b4, b5, b6, b7, ..] = bytes;
                let first8 = u64::from_le_bytes([b0, b1, b2, b3, b4, b5, b6, b7]);
                let suberror = uapi::SHADOWVM_INTERNAL_ERROR_EMULATION;
                let reason = ExitReason::ExceptionNmi as u32;
                return self
                    .internal_error(run, suberror, reason, 0, [got as u64, first8, 0])
                    .into();
            }
        };
        let mut regs = emulate::Regs {
            gpr: [0; 16],
            rip: s.rip,
            rflags: s.rflags,
        };
        // RAX..R15; the zip copies the 16 of them without a length check that could panic.
        for (d, v) in regs.gpr.iter_mut().zip(s.gpr) {
            *d = v;
        }
        let mut env = emulate::Env::default();
        // Outside 64-bit mode each access passes its segment's limit and type checks; real
        // and virtual-8086 mode check only the limit (any segment may be written there).
        let typed = s.cr0 & x86::CR0_PE != 0 && s.rflags & x86::RFLAGS_VM == 0;
        for ((b, c), seg) in env
            .seg_base
            .iter_mut()
            .zip(env.seg_check.iter_mut())
            .zip(s.seg.iter())
        {
            *b = seg.base;
            *c = if s.code64() {
                emulate::SegCheck::None
            } else if seg.unusable != 0 {
                emulate::SegCheck::Unusable
            } else {
                let type_ = if typed { seg.type_ } else { 3 };
                emulate::SegCheck::Desc {
                    limit: seg.limit,
                    type_,
                    big: seg.db != 0,
                }
            };
        }
        let mut mem = EngineAccess::new(&mut self.mmu, &mut self.cache, ram, s.cpl(), ac);
        // A REP string store over a page table (a guest clearing a frame it reuses) would
        // exit once per iteration; run a bounded chunk of iterations per exit instead.
        let outcome = if insn.rep() {
            emulate::execute_rep(&insn, &mut regs, &env, &mut mem, mmio.as_ref(), REP_CHUNK)
        } else {
            emulate::execute(&insn, &mut regs, &env, &mut mem, mmio.as_ref())
        };
        let (mmio_write, pt_writes) = (mem.mmio_write, mem.pt_writes);
        let (went_native, last_store) = (mem.unshadowed, mem.last_store);
        self.stats.emulated_pt_writes = self.stats.emulated_pt_writes.wrapping_add(pt_writes);
        // `regs` holds what committed: the whole instruction, or the REP iterations done
        // before an exception or an MMIO read (RIP still at the instruction then).
        if outcome.is_ok() {
            for (d, v) in self.state.gpr.iter_mut().zip(regs.gpr) {
                *d = v;
            }
            self.state.rip = regs.rip;
            self.state.rflags = regs.rflags;
        }
        if outcome == Ok(emulate::Outcome::RepContinue) && went_native {
            if let (Some(Ok(next)), Some(gpa)) = (insn.mem_addr(&regs, &env), last_store) {
                self.map_for_native_rep(ram, next.linear, gpa);
            }
        }
        match outcome {
            Ok(emulate::Outcome::Done | emulate::Outcome::RepContinue) => {
                self.state.interruptibility &= !3;
                if let Some((gpa, data, len)) = mmio_write {
                    run.exit.set(uapi::ExitMmio {
                        gpa,
                        data,
                        len,
                        is_write: 1,
                        padding: [0; 3],
                    });
                    return user(run, uapi::SHADOWVM_EXIT_MMIO);
                }
                Handled::Resume
            }
            Ok(emulate::Outcome::MmioRead(req)) => {
                let access = Access {
                    write: false,
                    fetch: false,
                    user: cpl3,
                    implicit: false,
                    ac,
                };
                let Ok(gpa) = self.mmu.translate(ram, req.addr.linear, access) else {
                    return Handled::Resume;
                };
                if req.size > 8 {
                    return self.emulation_error(run, [u64::from(req.size), 0, 0]);
                }
                // A read across a page is one exit when the second page continues the
                // first in guest-physical space, both MMIO (a device window); anything
                // else (RAM and MMIO mixed, two places) is not split: an internal error.
                let first = 0x1000 - (req.addr.linear & 0xfff);
                if u64::from(req.size) > first {
                    let next = req.addr.linear.wrapping_add(first);
                    let Ok(gpa2) = self.mmu.translate(ram, next, access) else {
                        return Handled::Resume;
                    };
                    let is_ram = |g: u64| crate::mmu::GuestMemory::frame(ram, g >> 12).is_some();
                    if gpa2 != gpa.wrapping_add(first) || is_ram(gpa) || is_ram(gpa2) {
                        return self.emulation_error(run, [u64::from(req.size), gpa, gpa2]);
                    }
                }
                run.exit.set(uapi::ExitMmio {
                    gpa,
                    data: [0; 8],
                    len: u32::from(req.size),
                    is_write: 0,
                    padding: [0; 3],
                });
                self.completion = Completion::MmioRead {
                    linear: req.addr.linear,
                    len: req.size,
                };
                user(run, uapi::SHADOWVM_EXIT_MMIO)
            }
            Ok(emulate::Outcome::Exception(ex)) => self.raise_emulated(ex),
            Ok(emulate::Outcome::Retry) => Handled::Resume,
            Err(_) => self.emulation_error(run, [0; 3]),
        }
    }

    /// A REP store stopped being emulated because its page table was unshadowed: the
    /// shadow still maps the frame read-only, so the guest's next store would exit once
    /// more only to have it made writable. When the next store (at `linear`) goes to the
    /// same frame as the last one (`last_gpa`), do that now: the same fix a write fault
    /// there gets. Nothing else is touched (the walk sets no accessed or dirty flag the
    /// store just made did not set); if it cannot be done here, the guest's store
    /// faults and gets it.
    fn map_for_native_rep(&mut self, ram: &GuestRam, linear: u64, last_gpa: u64) {
        let cpl = self.state.cpl();
        let ac = self.state.rflags & x86::RFLAGS_AC != 0;
        let access = Access {
            write: true,
            fetch: false,
            user: cpl == 3,
            implicit: false,
            ac,
        };
        let same_frame = mmu::walk::walk(&self.mmu.paging(), ram, linear, access, false)
            .is_ok_and(|w| w.gpa >> 12 == last_gpa >> 12 && w.dirty);
        if !same_frame {
            return;
        }
        let user = if cpl == 3 { mmu::bits::PFERR_U } else { 0 };
        let error_code = mmu::bits::PFERR_P | mmu::bits::PFERR_W | user;
        // Fixed is what it returns; anything else (memory short) leaves it to the fault.
        let _ = self
            .mmu
            .page_fault(&mut self.cache, ram, linear, error_code, cpl, ac);
    }

    /// The emulator could not complete the instruction: an internal error for userspace
    /// (exit reason 0, qualification 0, data: RIP then `more`).
    fn emulation_error(&self, run: &mut uapi::Run, more: [u64; 3]) -> Handled {
        let suberror = uapi::SHADOWVM_INTERNAL_ERROR_EMULATION;
        let reason = ExitReason::ExceptionNmi as u32;
        self.internal_error(run, suberror, reason, 0, more).into()
    }

    /// A #PF while the CPU delivered an event, on a frame that cannot be fixed: an internal
    /// error for userspace (data: RIP, the event, the frame's guest-physical address).
    fn delivery_error(&self, run: &mut uapi::Run, info: &ExitInfo, gpa: u64) -> Handled {
        let suberror = uapi::SHADOWVM_INTERNAL_ERROR_DELIVERY_EV;
        let (reason, gva) = (info.reason.into_raw(), info.qualification);
        let event = info.vectoring_info.into_raw().into();
        self.internal_error(run, suberror, reason, gva, [event, gpa, 0])
            .into()
    }

    /// INVPCID: type in a register, descriptor (PCID, address) in memory.
    pub(super) fn invpcid(
        &mut self,
        vmcs: &CurrentVmcs<'_>,
        ram: &GuestRam,
        info: &ExitInfo,
    ) -> Handled {
        self.state.save_segments(vmcs);
        let ii = info.inv_info();
        let kind = self.gpr_operand(ii.reg2().get() as usize);
        let mut addr = info.qualification;
        if !ii.base_invalid().into_bool() {
            addr = addr.wrapping_add(self.gpr(ii.base().get() as usize));
        }
        if !ii.index_invalid().into_bool() {
            addr = addr.wrapping_add(self.gpr(ii.index().get() as usize) << ii.scale().get());
        }
        // The instruction's address size.
        addr &= match ii.address_size().get() {
            0 => 0xffff,
            1 => 0xffff_ffff,
            _ => u64::MAX,
        };
        let seg = ii.segment().get() as usize;
        let code64 = self.state.code64();
        let base = self
            .state
            .seg
            .get(seg)
            .map_or(0, |s| if code64 && seg < 4 { 0 } else { s.base });
        addr = addr.wrapping_add(base);
        if !code64 {
            addr &= 0xffff_ffff;
        }
        // A supervisor data read: SMAP applies unless EFLAGS.AC is set; it may cross a page.
        let ac = self.state.rflags & x86::RFLAGS_AC != 0;
        let access = Access {
            write: false,
            fetch: false,
            user: false,
            implicit: false,
            ac,
        };
        let mut desc = [0u8; 16];
        let mut done = 0;
        while done < desc.len() {
            let la = addr.wrapping_add(done as u64);
            let n = core::cmp::min(desc.len() - done, 4096 - (la & 0xfff) as usize);
            let gpa = match self.mmu.translate(ram, la, access) {
                Ok(gpa) => gpa,
                Err(pf) => return self.raise(vector::PF, Some(pf.error_code), Some(pf.cr2)),
            };
            let Some(dst) = desc.get_mut(done..done + n) else {
                break;
            };
            if !ram.read(gpa, dst) {
                return self.raise(vector::GP, Some(0), None);
            }
            done += n;
        }
        let [p0, p1, p2, p3, p4, p5, p6, p7, g0, g1, g2, g3, g4, g5, g6, g7] = desc;
        let pcid = u64::from_le_bytes([p0, p1, p2, p3, p4, p5, p6, p7]);
        let gva = u64::from_le_bytes([g0, g1, g2, g3, g4, g5, g6, g7]);
        let kind = match kind {
            0 if !x86::canonical(gva) => return self.raise(vector::GP, Some(0), None),
            0 => mmu::InvpcidKind::Address,
            1 => mmu::InvpcidKind::Single,
            2 => mmu::InvpcidKind::AllIncludingGlobal,
            3 => mmu::InvpcidKind::AllExceptGlobal,
            _ => return self.raise(vector::GP, Some(0), None),
        };
        self.set_aside_engine_reports();
        match self.mmu.invpcid(ram, kind, pcid, gva) {
            mmu::CtlOutcome::Gp => self.raise(vector::GP, Some(0), None),
            mmu::CtlOutcome::Ok => {
                let engine = self.mmu.take_tlb_flush();
                let pcide = self.state.cr4 & x86::CR4_PCIDE != 0;
                let current = if pcide { self.state.cr3 & 0xfff } else { 0 };
                match kind {
                    // One address of the current PCID is an INVLPG.
                    mmu::InvpcidKind::Address if pcid == current => {
                        self.flush_guest_address(gva, engine)
                    }
                    // Another PCID's translations are not in the CPU's TLB.
                    mmu::InvpcidKind::Address | mmu::InvpcidKind::Single if pcid != current => {
                        self.flush_engine_changes(engine)
                    }
                    _ => self.flush_guest_tlb(),
                }
                self.skip(info)
            }
        }
    }

    /// Completes an MMIO read userspace answered (outside a window): the instruction is
    /// decoded again and executed with the value. It may still need userspace (the store
    /// of a read-modify-write or of MOVS to MMIO, or an internal error): then `run` holds
    /// that exit and the result is true. An exception it raises is queued.
    pub(in crate::vcpu) fn complete_mmio(
        &mut self,
        ram: &GuestRam,
        run: &mut uapi::Run,
        linear: u64,
        len: u8,
    ) -> bool {
        let m = run.mmio();
        let mut data = [0u8; 16];
        // Element by element: `copy_from_slice` keeps a length check (a panic path) when
        // the optimizer does not see through the range.
        for (d, s) in data.iter_mut().zip(m.data) {
            *d = s;
        }
        let mmio = MmioData { linear, len, data };
        matches!(
            self.emulate(None, ram, run, None, Some(mmio)),
            Handled::End(_)
        )
    }
}
