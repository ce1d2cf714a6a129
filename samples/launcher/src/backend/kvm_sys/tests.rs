// SPDX-License-Identifier: GPL-2.0

//! Compiles a small C program against `<linux/kvm.h>` that prints the size and offset of
//! every structure and field `kvm_sys` defines and the value of every ioctl number and
//! constant, and compares them with the Rust definitions, so they cannot drift from the
//! kernel's UAPI headers.

use super::*;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::mem::{offset_of, size_of};
use std::process::Command;

/// Where a Rust structure lives in C: a named type, or an anonymous member of one (the
/// kvm_run exit union members).
#[derive(Clone, Copy)]
struct CPlace {
    ty: &'static str,
    member: Option<&'static str>,
}

impl CPlace {
    /// Key prefix of the printed lines.
    fn key(&self) -> String {
        match self.member {
            None => self.ty.trim_start_matches("struct ").to_string(),
            Some(m) => format!("{}.{m}", self.ty.trim_start_matches("struct ")),
        }
    }

    fn path(&self, field: &str) -> String {
        match self.member {
            None => field.to_string(),
            Some(m) => format!("{m}.{field}"),
        }
    }

    fn size_expr(&self) -> String {
        match self.member {
            None => format!("sizeof({})", self.ty),
            Some(m) => format!("sizeof((({} *)0)->{m})", self.ty),
        }
    }

    fn offset_expr(&self, field: &str) -> String {
        let absolute = format!("offsetof({}, {})", self.ty, self.path(field));
        match self.member {
            None => absolute,
            Some(m) => format!("({absolute} - offsetof({}, {m}))", self.ty),
        }
    }

    fn field_size_expr(&self, field: &str) -> String {
        format!("sizeof((({} *)0)->{})", self.ty, self.path(field))
    }
}

/// Expected values keyed like the lines the C program prints.
#[derive(Default)]
struct Expect {
    c_body: String,
    rust: BTreeMap<String, u64>,
}

impl Expect {
    fn check(&mut self, key: String, c_expr: String, rust: u64) {
        writeln!(
            self.c_body,
            "  printf(\"{key} %llu\\n\", (unsigned long long)({c_expr}));"
        )
        .unwrap();
        assert!(self.rust.insert(key, rust).is_none(), "duplicate check");
    }

    fn size(&mut self, place: CPlace, size: usize) {
        self.check(
            format!("sizeof {}", place.key()),
            place.size_expr(),
            size as u64,
        );
    }

    fn offset(&mut self, place: CPlace, field: &str, offset: usize) {
        self.check(
            format!("offsetof {}.{field}", place.key()),
            place.offset_expr(field),
            offset as u64,
        );
    }

    fn field(&mut self, place: CPlace, field: &str, offset: usize, size: usize) {
        self.offset(place, field, offset);
        self.check(
            format!("sizeof {}.{field}", place.key()),
            place.field_size_expr(field),
            size as u64,
        );
    }

    fn constant(&mut self, name: &str, value: u64) {
        self.check(format!("const {name}"), name.to_string(), value);
    }
}

/// Size of a field's type, from a pointer to it (no value needed).
fn size_of_pointee<T>(_: *const T) -> usize {
    size_of::<T>()
}

macro_rules! layout {
    ($e:ident, $t:ty, $c:literal $(. $m:literal)? { $($f:ident $(as $cf:literal)?),* $(,)? }) => {{
        let place = CPlace { ty: $c, member: layout!(@member $($m)?) };
        $e.size(place, size_of::<$t>());
        $(
            let c_field = layout!(@name $f $($cf)?);
            let base = std::mem::MaybeUninit::<$t>::uninit();
            // SAFETY: only a field address is computed, nothing is read.
            let size = size_of_pointee(unsafe { std::ptr::addr_of!((*base.as_ptr()).$f) });
            $e.field(place, c_field, offset_of!($t, $f), size);
        )*
    }};
    (@member) => { None };
    (@member $m:literal) => { Some($m) };
    (@name $f:ident) => { stringify!($f) };
    (@name $f:ident $cf:literal) => { $cf };
}

macro_rules! constants {
    ($e:ident, $($name:ident),* $(,)?) => {
        $( $e.constant(stringify!($name), u64::from($name)); )*
    };
}

fn expectations() -> Expect {
    let mut e = Expect::default();
    layout!(e, KvmRegs, "struct kvm_regs" {
        rax, rbx, rcx, rdx, rsi, rdi, rsp, rbp, r8, r9, r10, r11, r12, r13, r14, r15, rip, rflags
    });
    layout!(e, KvmSegment, "struct kvm_segment" {
        base, limit, selector, type_ as "type", present, dpl, db, s, l, g, avl, unusable, padding
    });
    layout!(e, KvmDtable, "struct kvm_dtable" { base, limit, padding });
    layout!(e, KvmSregs, "struct kvm_sregs" {
        cs, ds, es, fs, gs, ss, tr, ldt, gdt, idt, cr0, cr2, cr3, cr4, cr8, efer, apic_base,
        interrupt_bitmap
    });
    layout!(e, KvmUserspaceMemoryRegion, "struct kvm_userspace_memory_region" {
        slot, flags, guest_phys_addr, memory_size, userspace_addr
    });
    layout!(e, KvmCpuidEntry2, "struct kvm_cpuid_entry2" {
        function, index, flags, eax, ebx, ecx, edx, padding
    });
    // The flexible arrays have an offset but no size in C.
    layout!(e, KvmCpuid2<0>, "struct kvm_cpuid2" { nent, padding });
    let cpuid2 = CPlace {
        ty: "struct kvm_cpuid2",
        member: None,
    };
    e.offset(cpuid2, "entries", offset_of!(KvmCpuid2<0>, entries));
    layout!(e, KvmMsrEntry, "struct kvm_msr_entry" { index, reserved, data });
    layout!(e, KvmMsrs<0>, "struct kvm_msrs" { nmsrs, pad });
    let msrs = CPlace {
        ty: "struct kvm_msrs",
        member: None,
    };
    e.offset(msrs, "entries", offset_of!(KvmMsrs<0>, entries));
    layout!(e, KvmEnableCap, "struct kvm_enable_cap" { cap, flags, args, pad });
    layout!(e, KvmMsrFilterRange, "struct kvm_msr_filter_range" { flags, nmsrs, base, bitmap });
    layout!(e, KvmMsrFilter, "struct kvm_msr_filter" { flags, ranges });
    layout!(e, KvmInterrupt, "struct kvm_interrupt" { irq });
    layout!(e, KvmStatsHeader, "struct kvm_stats_header" {
        flags, name_size, num_desc, id_offset, desc_offset, data_offset
    });
    layout!(e, KvmStatsDesc, "struct kvm_stats_desc" { flags, exponent, size, offset, bucket_size });
    let stats_desc = CPlace {
        ty: "struct kvm_stats_desc",
        member: None,
    };
    // The name follows the fixed part directly.
    e.offset(stats_desc, "name", size_of::<KvmStatsDesc>());

    // kvm_run up to the end of the exit union (named `padding` in C), whose members sit at
    // its start; C's kvm_run goes on with the sync registers, which are not used.
    let run = CPlace {
        ty: "struct kvm_run",
        member: None,
    };
    for (name, offset, size) in [
        (
            "request_interrupt_window",
            offset_of!(KvmRun, request_interrupt_window),
            1,
        ),
        ("immediate_exit", offset_of!(KvmRun, immediate_exit), 1),
        ("padding1", offset_of!(KvmRun, padding1), 6),
        ("exit_reason", offset_of!(KvmRun, exit_reason), 4),
        (
            "ready_for_interrupt_injection",
            offset_of!(KvmRun, ready_for_interrupt_injection),
            1,
        ),
        ("if_flag", offset_of!(KvmRun, if_flag), 1),
        ("flags", offset_of!(KvmRun, flags), 2),
        ("cr8", offset_of!(KvmRun, cr8), 8),
        ("apic_base", offset_of!(KvmRun, apic_base), 8),
        (
            "padding",
            offset_of!(KvmRun, exit),
            size_of::<KvmExitArea>(),
        ),
    ] {
        e.field(run, name, offset, size);
    }
    e.check(
        "end of kvm_run's exit union".to_string(),
        "offsetof(struct kvm_run, padding) + sizeof(((struct kvm_run *)0)->padding)".to_string(),
        size_of::<KvmRun>() as u64,
    );
    for member in ["io", "mmio", "hypercall", "fail_entry", "internal", "msr"] {
        e.offset(run, member, offset_of!(KvmRun, exit));
    }
    // The explicit tail `pad` of mmio, hypercall and fail_entry is not a field in every
    // header version; the member sizes cover it.
    layout!(e, KvmExitIo, "struct kvm_run"."io" { direction, size, port, count, data_offset });
    layout!(e, KvmExitMmio, "struct kvm_run"."mmio" { phys_addr, data, len, is_write });
    layout!(e, KvmExitHypercall, "struct kvm_run"."hypercall" { nr, args, ret, longmode });
    layout!(e, KvmExitFailEntry, "struct kvm_run"."fail_entry" {
        hardware_entry_failure_reason, cpu
    });
    layout!(e, KvmExitInternal, "struct kvm_run"."internal" { suberror, ndata, data });
    layout!(e, KvmExitMsr, "struct kvm_run"."msr" { error, pad, reason, index, data });

    constants!(
        e,
        KVMIO,
        KVM_API_VERSION,
        KVM_EXIT_IO,
        KVM_EXIT_HYPERCALL,
        KVM_EXIT_HLT,
        KVM_EXIT_MMIO,
        KVM_EXIT_IRQ_WINDOW_OPEN,
        KVM_EXIT_SHUTDOWN,
        KVM_EXIT_FAIL_ENTRY,
        KVM_EXIT_INTR,
        KVM_EXIT_INTERNAL_ERROR,
        KVM_EXIT_X86_RDMSR,
        KVM_EXIT_X86_WRMSR,
        KVM_EXIT_IO_IN,
        KVM_CAP_X86_USER_SPACE_MSR,
        KVM_CAP_X86_MSR_FILTER,
        KVM_MSR_EXIT_REASON_INVAL,
        KVM_MSR_EXIT_REASON_UNKNOWN,
        KVM_MSR_EXIT_REASON_FILTER,
        KVM_MSR_FILTER_READ,
        KVM_MSR_FILTER_WRITE,
        KVM_MSR_FILTER_DEFAULT_ALLOW,
        KVM_GET_API_VERSION,
        KVM_CREATE_VM,
        KVM_CHECK_EXTENSION,
        KVM_GET_VCPU_MMAP_SIZE,
        KVM_GET_SUPPORTED_CPUID,
        KVM_CREATE_VCPU,
        KVM_SET_USER_MEMORY_REGION,
        KVM_SET_TSS_ADDR,
        KVM_SET_IDENTITY_MAP_ADDR,
        KVM_ENABLE_CAP,
        KVM_X86_SET_MSR_FILTER,
        KVM_RUN,
        KVM_GET_REGS,
        KVM_SET_REGS,
        KVM_GET_SREGS,
        KVM_SET_SREGS,
        KVM_INTERRUPT,
        KVM_GET_MSRS,
        KVM_SET_MSRS,
        KVM_SET_CPUID2,
        KVM_NMI,
        KVM_GET_TSC_KHZ,
        KVM_GET_STATS_FD,
        KVM_STATS_TYPE_MASK,
        KVM_STATS_TYPE_CUMULATIVE,
        KVM_STATS_TYPE_INSTANT,
        KVM_STATS_TYPE_PEAK,
    );
    // usize constants, which `u64::from` does not take.
    e.constant("KVM_NR_INTERRUPTS", KVM_NR_INTERRUPTS as u64);
    e.constant(
        "KVM_MSR_FILTER_MAX_RANGES",
        KVM_MSR_FILTER_MAX_RANGES as u64,
    );
    e
}

#[test]
fn kvm_header_matches_rust() {
    let e = expectations();
    let dir = std::env::temp_dir().join(format!("shadowvm-kvm-sys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create temporary directory");
    let src = dir.join("layout.c");
    let exe = dir.join("layout");
    let program = format!(
        "#include <stddef.h>\n#include <stdio.h>\n#include <linux/kvm.h>\n\
         int main(void)\n{{\n{}  return 0;\n}}\n",
        e.c_body
    );
    std::fs::write(&src, program).expect("write C source");

    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let status = Command::new(&cc)
        .args(["-std=gnu11", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(&exe)
        .arg(&src)
        .status()
        .unwrap_or_else(|err| panic!("cannot run the C compiler `{cc}` (set CC): {err}"));
    assert!(
        status.success(),
        "the layout program against <linux/kvm.h> failed to compile with {cc} \
         (are the kernel headers installed? linux-libc-dev)"
    );

    let out = Command::new(&exe).output().expect("run the layout program");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).expect("UTF-8 output");
    let mut c = BTreeMap::new();
    for line in text.lines() {
        let (key, value) = line.rsplit_once(' ').expect("key value line");
        c.insert(key.to_string(), value.parse::<u64>().expect("number"));
    }

    let mut mismatches = Vec::new();
    for (key, rust) in &e.rust {
        match c.get(key) {
            Some(cv) if cv == rust => {}
            other => mismatches.push(format!("{key}: rust {rust:#x}, C {other:x?}")),
        }
    }
    assert!(
        mismatches.is_empty(),
        "kvm_sys drifted from <linux/kvm.h>:\n{}",
        mismatches.join("\n")
    );
    assert_eq!(c.len(), e.rust.len());
}
