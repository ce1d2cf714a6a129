// SPDX-License-Identifier: GPL-2.0

//! shadowvm: a minimal hypervisor over Intel VMX with shadow page tables instead of EPT.
//!
//! Module root: load-time VMX checks and per-CPU probe, the `/dev/shadowvm` misc device and
//! its ioctl dispatch, and the debugfs view (`/sys/kernel/debug/shadowvm/`).
//!
//! VMX operation happens only inside interrupts-off windows ("local mode", see
//! [`vmx::window`]); between windows the CPU is not in VMX operation, so other hypervisors
//! (kvm-intel) can load and unload freely, and a window that finds VMX taken fails with
//! `EBUSY`.

use core::fmt;
use kernel::{
    debugfs::{Dir, File as DebugFsFile},
    miscdevice::{MiscDeviceOptions, MiscDeviceRegistration},
    new_mutex,
    prelude::*,
    sync::{
        atomic::{Atomic, Relaxed},
        Mutex, SetOnce,
    },
    uaccess::UserSliceReader,
};

// The virtual CPU's rules (MSR writes, CPUID tables), shared with a host crate for tests.
#[path = "cpumodel/mod.rs"]
pub mod cpumodel;
mod glue;
// The emulator, the engine and the ABI are shared with host crates (their public API is
// theirs, whether this crate uses every item or not), so they are `pub` here too.
#[path = "emulate/mod.rs"]
pub mod emulate;
#[path = "mmu/mod.rs"]
pub mod mmu;
mod ram;
#[path = "uapi/mod.rs"]
// Its structures' fields are the C ABI's, documented field by field in
// Documentation/uapi.md and rust/uapi/shadowvm.h.
#[allow(missing_docs)]
pub mod uapi;
mod vcpu;
mod vm;
mod vmx;
mod x86;

use glue::IrqsOff;
use vmx::caps::VmxCaps;
use vmx::window::{self, VmxRegion, WindowError, WindowReport};

module! {
    type: ShadowVm,
    name: "shadowvm",
    authors: ["The shadowvm developers"],
    description: "Minimal VMX hypervisor with shadow page tables",
    license: "GPL",
    params: {
        max_memory_mb: u64 {
            default: 16384,
            description: "Largest guest memory of one VM, all slots together, in MiB \
                (SET_MEMORY or SET_MEMORY_REGION beyond it: E2BIG; CHECK_CAP MAX_MEMORY_MB)",
        },
        max_shadow_pages: u64 {
            default: 0,
            description: "Shadow pages per VM before the least recently used are reclaimed \
                (0: 4096, raised to guest memory / 256 KiB for guests above 1 GiB)",
        },
        prefetch: u64 {
            default: 8,
            description: "Guest PTEs around a faulting one mapped with it when the guest \
                allows (power of two up to 512; 0 off)",
        },
        // Not KVM's 4 (current + 3 previous): switching among more address spaces than
        // cached rebuilds a root every time (see Documentation/benchmarks.md, cr3_pingpong).
        // The bound; the cache itself starts at 16 and grows with what the guest uses.
        root_cache: u64 {
            default: 128,
            description: "Most address spaces (CR3 values) whose shadow roots each VM keeps \
                (1-128); the cache starts at 16 and doubles each time the guest switches \
                back to an address space whose root it evicted",
        },
        max_vms: u64 {
            default: 256,
            description: "VMs (open /dev/shadowvm files) at once, all users together \
                (more: EMFILE)",
        },
        max_vms_per_user: u64 {
            default: 64,
            description: "VMs at once per user (effective uid at open; more: EMFILE)",
        },
        window_us: u64 {
            default: 1000,
            description: "Longest time a vCPU holds its CPU with interrupts off, \
                in microseconds (10-100000)",
        },
        run_slice_ms: u64 {
            default: 100,
            description: "RUN returns to userspace (exit reason INTR) after this long in the guest",
        },
        gnp_bypass: u64 {
            default: 0,
            description: "Guest-not-present #PFs go to the guest without a VM exit where the \
                CPU allows it (1: MAXPHYADDR below 52), or every #PF exits (0, the default: \
                measured not to pay, Documentation/benchmarks.md); read when a VM is created",
        },
        vpid: u64 {
            default: 1,
            description: "Tag each vCPU's TLB entries with a VPID where the CPU has them (1), \
                or flush the TLB at every VM entry (0); read when a vCPU is created",
        },
    },
}

pub(crate) fn vpid_enabled() -> bool {
    *module_parameters::vpid.value() != 0
}

pub(crate) fn max_memory_bytes() -> u64 {
    module_parameters::max_memory_mb
        .value()
        .saturating_mul(1 << 20)
}

pub(crate) fn max_vms() -> u64 {
    *module_parameters::max_vms.value()
}

pub(crate) fn max_vms_per_user() -> u64 {
    *module_parameters::max_vms_per_user.value()
}

pub(crate) fn window_us() -> u64 {
    (*module_parameters::window_us.value()).clamp(10, 100_000)
}

pub(crate) fn run_slice_ms() -> u32 {
    (*module_parameters::run_slice_ms.value()).clamp(1, 10_000) as u32
}

/// The MMU engine configuration for a new VM, from the module parameters.
pub(crate) fn mmu_config() -> mmu::Config {
    let mut cfg = mmu::Config::DEFAULT;
    let max_shadow_pages = *module_parameters::max_shadow_pages.value();
    // 0: the default floor, scaled with guest memory; anything else: a fixed bound.
    if max_shadow_pages != 0 {
        cfg.max_shadow_pages = max_shadow_pages.clamp(64, 1 << 20) as usize;
        cfg.scale_shadow_pages = false;
    }
    cfg.root_cache_size =
        (*module_parameters::root_cache.value()).clamp(1, mmu::MAX_ROOT_CACHE as u64) as usize;
    cfg.prefetch = (*module_parameters::prefetch.value()).min(512) as u16;
    cfg.gnp_bypass = *module_parameters::gnp_bypass.value() != 0;
    cfg
}

/// The VMX capabilities read at load; immutable afterwards.
static CAPS: SetOnce<VmxCaps> = SetOnce::new();

pub(crate) fn caps() -> Result<&'static VmxCaps> {
    CAPS.as_ref().ok_or(ENODEV)
}

/// Outcome of the load-time probe on one CPU.
const PROBE_NOT_RUN: i32 = 0;
const PROBE_OK: i32 = 1;
const PROBE_BUSY: i32 = 2;
const PROBE_FAILED: i32 = 3;

/// What the load-time probe saw on every CPU (shown in debugfs).
struct ProbeSummary {
    results: KVec<i32>,
}

impl ProbeSummary {
    fn count(&self, what: i32) -> usize {
        self.results.iter().filter(|&&r| r == what).count()
    }
}

impl fmt::Display for ProbeSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (cpu, r) in self.results.iter().enumerate() {
            let s = match *r {
                PROBE_OK => "ok",
                PROBE_BUSY => "busy (another hypervisor holds VMX)",
                PROBE_FAILED => "failed",
                _ => continue, // offline at load
            };
            writeln!(f, "cpu{cpu}: vmxon/vmxoff {s}")?;
        }
        Ok(())
    }
}

/// Does VMXON/VMXOFF once on every online CPU, in an interrupts-off cross-CPU call.
fn probe_all_cpus(caps: &VmxCaps) -> Result<ProbeSummary> {
    struct Probe {
        regions: KVec<VmxRegion>,
        results: KVec<Atomic<i32>>,
    }
    let nr = kernel::cpu::nr_cpu_ids() as usize;
    let mut probe = Probe {
        regions: KVec::with_capacity(nr, GFP_KERNEL)?,
        results: KVec::with_capacity(nr, GFP_KERNEL)?,
    };
    for _ in 0..nr {
        probe.regions.push(VmxRegion::new(caps)?, GFP_KERNEL)?;
        probe.results.push(Atomic::new(PROBE_NOT_RUN), GFP_KERNEL)?;
    }
    glue::on_each_cpu(&probe, |p, irqs| {
        let cpu = irqs.cpu() as usize;
        let (Some(region), Some(result)) = (p.regions.get(cpu), p.results.get(cpu)) else {
            return;
        };
        let report = window::probe(irqs, region, None);
        let code = match report.result {
            Some(Ok(())) if report.cr4_restored() => PROBE_OK,
            Some(Err(WindowError::Busy)) => PROBE_BUSY,
            _ => PROBE_FAILED,
        };
        result.store(code, Relaxed);
    });
    let mut results = KVec::with_capacity(nr, GFP_KERNEL)?;
    for r in probe.results.iter() {
        results.push(r.load(Relaxed), GFP_KERNEL)?;
    }
    Ok(ProbeSummary { results })
}

/// Read-only debugfs data: capabilities and the load-time probe.
struct VmxInfo {
    caps: VmxCaps,
    probe: ProbeSummary,
}

#[pin_data]
struct ShadowVm {
    #[pin]
    _misc: MiscDeviceRegistration<vm::VmFile>,
    #[pin]
    _vmx_info: DebugFsFile<VmxInfo>,
    #[pin]
    _window: DebugFsFile<Mutex<WindowReport>>,
    _debugfs: Dir,
}

impl kernel::InPlaceModule for ShadowVm {
    fn init(_module: &'static ThisModule) -> impl PinInit<Self, Error> {
        try_pin_init!(&this in Self {
            _debugfs: Dir::new(c"shadowvm"),
            _vmx_info <- {
                if glue::fred_enabled() {
                    // An NMI that arrives in the guest is re-raised with INT 2, which a FRED
                    // host cannot take.
                    pr_err!("not loading: the host uses FRED, which shadowvm does not support \
                             (boot with fred=off)\n");
                    return Err(glue::eopnotsupp());
                }
                // SAFETY: Called once, before the device that uses the counts is registered.
                unsafe { vm::VM_COUNTS.init() };
                let caps = VmxCaps::read().map_err(|e| {
                    pr_err!("not loading: {e}\n");
                    e.errno()
                })?;
                let probe = probe_all_cpus(&caps)?;
                let (ok, busy) = (probe.count(PROBE_OK), probe.count(PROBE_BUSY));
                let failed = probe.count(PROBE_FAILED);
                if failed > 0 {
                    pr_err!("not loading: VMXON/VMXOFF probe failed on {failed} CPU(s)\n");
                    return Err(EIO);
                }
                pr_info!(
                    "VMX revision {:#x}, VMCS {} bytes, EPT {}, unrestricted guest {} \
                     (neither used); VMXON/VMXOFF probed on {} CPU(s){}\n",
                    caps.revision_id(), caps.vmcs_size(),
                    if caps.has_ept() { "present" } else { "absent" },
                    if caps.has_unrestricted_guest() { "present" } else { "absent" },
                    ok,
                    if busy > 0 {
                        ", busy on some (another hypervisor holds VMX there)"
                    } else {
                        ""
                    },
                );
                CAPS.populate(caps);
                // SAFETY: `this` is the module being initialised; `_debugfs` is initialised
                // above it in this initializer and lives as long as the module.
                let dir = unsafe { &(*this.as_ptr())._debugfs };
                let info = VmxInfo { caps, probe };
                dir.read_callback_file(c"vmx", info, &|i: &VmxInfo, f: &mut fmt::Formatter<'_>| {
                    write!(f, "{}{}", i.caps, i.probe)
                })
            },
            _window <- {
                // SAFETY: As above.
                let dir = unsafe { &(*this.as_ptr())._debugfs };
                let report = new_mutex!(WindowReport::default());
                dir.read_write_callback_file(c"window", report, &show_window, &open_window)
            },
            _misc <- MiscDeviceRegistration::register(MiscDeviceOptions { name: c"shadowvm" }),
            _: {
                // SAFETY: `_misc` was initialised just above and lives as long as the module;
                // an open that ran before this sees no owner and fails (`VmFile::open`).
                unsafe { glue::misc_set_owner((*this.as_ptr())._misc.as_raw()) };
            },
        })
    }
}

/// debugfs `window` read: the last window opened through it.
fn show_window(report: &Mutex<WindowReport>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let r = *report.lock();
    match r.result {
        None => writeln!(f, "no window opened yet; write 1 to open one"),
        Some(res) => {
            let res = match res {
                Ok(()) => "ok",
                Err(WindowError::Busy) => "busy",
                Err(_) => "failed",
            };
            writeln!(
                f,
                "result: {res}\ncpu: {}\ncr4_before: {:#x}\ncr4_after: {:#x}\ncr4_restored: {}",
                r.cpu,
                r.cr4_before,
                r.cr4_after,
                if r.cr4_restored() { "yes" } else { "no" }
            )
        }
    }
}

/// debugfs `window` write: opens one VMX window on the current CPU (VMXON, VMCLEAR and
/// VMPTRLD of a fresh VMCS, VMCLEAR, VMXOFF); the write fails with the window's errno.
fn open_window(report: &Mutex<WindowReport>, _input: &mut UserSliceReader) -> Result {
    let caps = caps()?;
    let (vmxon, vmcs) = (VmxRegion::new(caps)?, VmxRegion::new(caps)?);
    let r = {
        let irqs = IrqsOff::save();
        window::probe(&irqs, &vmxon, Some(&vmcs))
    };
    *report.lock() = r;
    match r.result {
        Some(Err(e)) => {
            pr_warn!("VMX window on cpu{} refused: {e}\n", r.cpu);
            Err(e.errno())
        }
        _ if !r.cr4_restored() => {
            pr_err!(
                "VMX window on cpu{} left CR4 {:#x} -> {:#x}\n",
                r.cpu,
                r.cr4_before,
                r.cr4_after
            );
            Err(EIO)
        }
        _ => Ok(()),
    }
}
