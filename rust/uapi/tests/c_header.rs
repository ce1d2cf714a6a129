// SPDX-License-Identifier: GPL-2.0

//! Compiles a small C program against `shadowvm.h` that prints the size and offset of every
//! structure and field and the value of every constant, and compares them with the Rust
//! definitions, so the header cannot drift from `mod.rs`.

use shadowvm_uapi::*;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::mem::{offset_of, size_of};
use std::path::PathBuf;
use std::process::Command;

/// Expected values keyed like the lines the C program prints.
struct Expect {
    c_body: String,
    rust: BTreeMap<String, u64>,
}

impl Expect {
    fn size(&mut self, c_struct: &str, size: usize) {
        writeln!(
            self.c_body,
            "  printf(\"sizeof {c_struct} %zu\\n\", sizeof(struct {c_struct}));"
        )
        .unwrap();
        self.rust.insert(format!("sizeof {c_struct}"), size as u64);
    }

    fn field(&mut self, c_struct: &str, c_field: &str, offset: usize, size: usize) {
        writeln!(
            self.c_body,
            "  printf(\"offsetof {c_struct}.{c_field} %zu\\n\", offsetof(struct {c_struct}, {c_field}));\n  \
             printf(\"sizeof {c_struct}.{c_field} %zu\\n\", sizeof(((struct {c_struct} *)0)->{c_field}));"
        )
        .unwrap();
        self.rust
            .insert(format!("offsetof {c_struct}.{c_field}"), offset as u64);
        self.rust
            .insert(format!("sizeof {c_struct}.{c_field}"), size as u64);
    }

    fn constant(&mut self, name: &str, value: u64) {
        writeln!(
            self.c_body,
            "  printf(\"const {name} %llu\\n\", (unsigned long long)({name}));"
        )
        .unwrap();
        self.rust.insert(format!("const {name}"), value);
    }
}

/// Size of a field's type, from a pointer to it (no value needed).
fn size_of_pointee<T>(_: *const T) -> usize {
    size_of::<T>()
}

macro_rules! layout {
    ($e:ident, $t:ty, $c:literal { $($f:ident $(as $cf:literal)?),* $(,)? }) => {{
        $e.size($c, size_of::<$t>());
        $(
            let c_field = layout!(@name $f $($cf)?);
            let base = std::mem::MaybeUninit::<$t>::uninit();
            // SAFETY: only a field address is computed, nothing is read.
            let size = size_of_pointee(unsafe { std::ptr::addr_of!((*base.as_ptr()).$f) });
            $e.field($c, c_field, offset_of!($t, $f), size);
        )*
    }};
    (@name $f:ident) => { stringify!($f) };
    (@name $f:ident $cf:literal) => { $cf };
}

macro_rules! constants {
    ($e:ident, $($name:ident),* $(,)?) => {
        $( $e.constant(stringify!($name), u64::from($name)); )*
    };
}

fn expectations() -> Expect {
    let mut e = Expect {
        c_body: String::new(),
        rust: BTreeMap::new(),
    };
    layout!(e, Memory, "shadowvm_memory" { size, flags });
    layout!(e, Regs, "shadowvm_regs" {
        rax, rcx, rdx, rbx, rsp, rbp, rsi, rdi, r8, r9, r10, r11, r12, r13, r14, r15, rip, rflags
    });
    layout!(e, Segment, "shadowvm_segment" {
        base, limit, selector, type_ as "type", present, dpl, db, s, l, g, avl, unusable, padding
    });
    layout!(e, Dtable, "shadowvm_dtable" { base, limit, padding });
    layout!(e, Sregs, "shadowvm_sregs" {
        cs, ds, es, fs, gs, ss, tr, ldt, gdt, idt, cr0, cr2, cr3, cr4, efer, apic_base
    });
    layout!(e, Stats, "shadowvm_stats" { count, flags, entries });
    layout!(e, StatEntry, "shadowvm_stat_entry" { name, value });
    layout!(e, MemoryRegion, "shadowvm_memory_region" { slot, flags, guest_phys_addr, size });
    layout!(e, Fpu, "shadowvm_fpu" { fxsave });
    layout!(e, ExitIo, "shadowvm_exit_io" { direction, size, port, count, data });
    layout!(e, ExitMmio, "shadowvm_exit_mmio" { gpa, data, len, is_write, padding });
    layout!(e, ExitHypercall, "shadowvm_exit_hypercall" { nr, args, ret });
    layout!(e, ExitFailEntry, "shadowvm_exit_fail_entry" {
        hardware_entry_failure_reason, exit_qualification, cpu, padding
    });
    layout!(e, ExitInternalError, "shadowvm_exit_internal_error" {
        suberror, vmx_exit_reason, exit_qualification, data
    });
    layout!(e, ExitIntr, "shadowvm_exit_intr" { cause, padding });
    layout!(e, ExitMsr, "shadowvm_exit_msr" { error, pad, index, data });
    layout!(e, Msrs, "shadowvm_msrs" { nmsrs, flags, entries });
    layout!(e, MsrEntry, "shadowvm_msr_entry" { index, reserved, data });
    layout!(e, Cpuid, "shadowvm_cpuid" { nent, flags, entries });
    layout!(e, CpuidEntry, "shadowvm_cpuid_entry" {
        function, index, flags, eax, ebx, ecx, edx, padding
    });
    layout!(e, Run, "shadowvm_run" {
        version, size, immediate_exit, request_interrupt_window, ready_for_interrupt_injection,
        if_flag, exit_reason, exit
    });
    layout!(e, Interrupt, "shadowvm_interrupt" { irq, padding });
    layout!(e, VcpuEvents, "shadowvm_vcpu_events" {
        exception_injected, exception_nr, exception_has_error_code, exception_padding,
        exception_error_code, interrupt_injected, interrupt_nr, interrupt_shadow,
        interrupt_padding, nmi_pending, nmi_masked, nmi_padding, flags, reserved
    });
    constants!(
        e,
        SHADOWVM_IOCTL_TYPE,
        SHADOWVM_API_VERSION,
        SHADOWVM_PAGE_SIZE,
        SHADOWVM_MEMORY_MMAP_OFFSET,
        SHADOWVM_RUN_MMAP_OFFSET,
        SHADOWVM_RUN_MMAP_SIZE,
        SHADOWVM_MEMORY_MIN,
        SHADOWVM_MEMORY_MAX,
        SHADOWVM_RFLAGS_FIXED1,
        SHADOWVM_RFLAGS_IF,
        SHADOWVM_RFLAGS_VM,
        SHADOWVM_RFLAGS_RESERVED,
        SHADOWVM_STATS_MAX,
        SHADOWVM_EXIT_NONE,
        SHADOWVM_EXIT_IO,
        SHADOWVM_EXIT_MMIO,
        SHADOWVM_EXIT_HLT,
        SHADOWVM_EXIT_HYPERCALL,
        SHADOWVM_EXIT_SHUTDOWN,
        SHADOWVM_EXIT_FAIL_ENTRY,
        SHADOWVM_EXIT_INTERNAL_ERROR,
        SHADOWVM_EXIT_INTR,
        SHADOWVM_EXIT_IRQ_WINDOW_OPEN,
        SHADOWVM_CAP_IRQ,
        SHADOWVM_NR_INTERRUPTS,
        SHADOWVM_INTERRUPT_SHADOW_STI,
        SHADOWVM_INTERRUPT_SHADOW_MOV_SS,
        SHADOWVM_NMI_PENDING_MAX,
        SHADOWVM_IO_IN,
        SHADOWVM_IO_OUT,
        SHADOWVM_FAIL_ENTRY_EXIT_REASON,
        SHADOWVM_INTERNAL_ERROR_EMULATION,
        SHADOWVM_INTERNAL_ERROR_UNHANDLED_EXIT,
        SHADOWVM_INTERNAL_ERROR_DELIVERY_EV,
        SHADOWVM_INTERNAL_ERROR_MMU,
        SHADOWVM_INTR_SIGNAL,
        SHADOWVM_INTR_IMMEDIATE_EXIT,
        SHADOWVM_INTR_TIME_SLICE,
        SHADOWVM_RUN_VERSION,
        SHADOWVM_GET_API_VERSION,
        SHADOWVM_SET_MEMORY,
        SHADOWVM_CREATE_VCPU,
        SHADOWVM_GET_REGS,
        SHADOWVM_SET_REGS,
        SHADOWVM_GET_SREGS,
        SHADOWVM_SET_SREGS,
        SHADOWVM_RUN,
        SHADOWVM_GET_STATS,
        SHADOWVM_CAP_MEMORY_SLOTS,
        SHADOWVM_CAP_MAX_MEMORY_MB,
        SHADOWVM_CAP_FPU,
        SHADOWVM_MEMORY_SLOTS,
        SHADOWVM_CHECK_CAP,
        SHADOWVM_SET_MEMORY_REGION,
        SHADOWVM_GET_FPU,
        SHADOWVM_SET_FPU,
        SHADOWVM_EXIT_X86_RDMSR,
        SHADOWVM_EXIT_X86_WRMSR,
        SHADOWVM_CAP_USER_MSR,
        SHADOWVM_CAP_CPUID,
        SHADOWVM_CAP_TSC,
        SHADOWVM_MSRS_MAX,
        SHADOWVM_CPUID_MAX_ENTRIES,
        SHADOWVM_CPUID_FLAG_SIGNIFICANT_INDEX,
        SHADOWVM_GET_MSRS,
        SHADOWVM_SET_MSRS,
        SHADOWVM_GET_SUPPORTED_CPUID,
        SHADOWVM_SET_CPUID,
        SHADOWVM_GET_TSC_KHZ,
        SHADOWVM_INTERRUPT,
        SHADOWVM_NMI,
        SHADOWVM_GET_VCPU_EVENTS,
        SHADOWVM_SET_VCPU_EVENTS,
    );
    // usize constants, which `u64::from` does not take.
    e.constant("SHADOWVM_STAT_NAME_LEN", SHADOWVM_STAT_NAME_LEN as u64);
    e.constant("SHADOWVM_HYPERCALL_ARGS", SHADOWVM_HYPERCALL_ARGS as u64);
    e.constant("SHADOWVM_EXIT_AREA_SIZE", SHADOWVM_EXIT_AREA_SIZE as u64);
    e.constant("SHADOWVM_FXSAVE_SIZE", SHADOWVM_FXSAVE_SIZE as u64);
    e.constant("SHADOWVM_FXSAVE_MXCSR", SHADOWVM_FXSAVE_MXCSR as u64);
    e.constant("SHADOWVM_FXSAVE_XMM", SHADOWVM_FXSAVE_XMM as u64);
    // The FXSAVE image is 16-byte aligned in C too (FXSAVE/FXRSTOR need it).
    e.c_body
        .push_str("  printf(\"alignof shadowvm_fpu %zu\\n\", _Alignof(struct shadowvm_fpu));\n");
    e.rust.insert(
        "alignof shadowvm_fpu".to_string(),
        std::mem::align_of::<Fpu>() as u64,
    );
    // The union members sit at the start of `exit`.
    for m in [
        "io",
        "mmio",
        "hypercall",
        "fail_entry",
        "internal_error",
        "intr",
        "msr",
        "bytes",
    ] {
        e.field(
            "shadowvm_run",
            &format!("exit.{m}"),
            offset_of!(Run, exit),
            0,
        );
    }
    e
}

#[test]
fn c_header_matches_rust() {
    let mut e = expectations();
    // The union members' sizes are those of the detail structures (bytes: the whole area).
    let union_sizes = [
        ("io", size_of::<ExitIo>()),
        ("mmio", size_of::<ExitMmio>()),
        ("hypercall", size_of::<ExitHypercall>()),
        ("fail_entry", size_of::<ExitFailEntry>()),
        ("internal_error", size_of::<ExitInternalError>()),
        ("intr", size_of::<ExitIntr>()),
        ("msr", size_of::<ExitMsr>()),
        ("bytes", SHADOWVM_EXIT_AREA_SIZE),
    ];
    for (m, size) in union_sizes {
        e.rust
            .insert(format!("sizeof shadowvm_run.exit.{m}"), size as u64);
    }

    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("uapi-c-header");
    std::fs::create_dir_all(&dir).expect("create temporary directory");
    let src = dir.join("layout.c");
    let exe = dir.join("layout");
    let header_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let program = format!(
        "#include <stddef.h>\n#include <stdio.h>\n#include \"shadowvm.h\"\n\
         int main(void)\n{{\n{}  return 0;\n}}\n",
        e.c_body
    );
    std::fs::write(&src, program).expect("write C source");

    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let status = Command::new(&cc)
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-pedantic", "-o"])
        .arg(&exe)
        .arg("-I")
        .arg(&header_dir)
        .arg(&src)
        .status()
        .unwrap_or_else(|err| panic!("cannot run the C compiler `{cc}` (set CC): {err}"));
    assert!(status.success(), "shadowvm.h failed to compile with {cc}");

    let out = Command::new(&exe).output().expect("run the layout program");
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
        "shadowvm.h drifted from mod.rs:\n{}",
        mismatches.join("\n")
    );
    assert_eq!(c.len(), e.rust.len());
}
