// SPDX-License-Identifier: GPL-2.0

//! Layout and encoding tests of the Rust side of the ABI.

use shadowvm_uapi::*;
use std::mem::{align_of, size_of};

#[test]
fn ioctl_numbers_match_linux_encoding() {
    // Values computed by hand from dir<<30 | size<<16 | type<<8 | nr.
    assert_eq!(SHADOWVM_GET_API_VERSION, 0x0000_B700);
    assert_eq!(SHADOWVM_SET_MEMORY, 0x4010_B701);
    assert_eq!(SHADOWVM_CREATE_VCPU, 0x0000_B702);
    assert_eq!(SHADOWVM_GET_REGS, 0x8090_B703);
    assert_eq!(SHADOWVM_SET_REGS, 0x4090_B704);
    assert_eq!(SHADOWVM_GET_SREGS, 0x8110_B705);
    assert_eq!(SHADOWVM_SET_SREGS, 0x4110_B706);
    assert_eq!(SHADOWVM_RUN, 0x0000_B707);
    assert_eq!(SHADOWVM_GET_STATS, 0xC010_B708);
    assert_eq!(SHADOWVM_CHECK_CAP, 0x0000_B709);
    assert_eq!(SHADOWVM_INTERRUPT, 0x4008_B70B);
    assert_eq!(SHADOWVM_NMI, 0x0000_B70C);
    assert_eq!(SHADOWVM_GET_VCPU_EVENTS, 0x8040_B713);
    assert_eq!(SHADOWVM_SET_VCPU_EVENTS, 0x4040_B714);
}

#[test]
fn ioctl_fields_decode() {
    let cmds = [
        SHADOWVM_GET_API_VERSION,
        SHADOWVM_SET_MEMORY,
        SHADOWVM_CREATE_VCPU,
        SHADOWVM_GET_REGS,
        SHADOWVM_SET_REGS,
        SHADOWVM_GET_SREGS,
        SHADOWVM_SET_SREGS,
        SHADOWVM_RUN,
        SHADOWVM_GET_STATS,
    ];
    for (nr, cmd) in cmds.iter().enumerate() {
        assert_eq!(ioc_type(*cmd), SHADOWVM_IOCTL_TYPE);
        assert_eq!(ioc_nr(*cmd), nr as u32);
    }
    assert_eq!(ioc_dir(SHADOWVM_GET_STATS), IOC_READ | IOC_WRITE);
    assert_eq!(ioc_size(SHADOWVM_SET_SREGS) as usize, size_of::<Sregs>());
    assert_eq!(ioc_dir(SHADOWVM_RUN), IOC_NONE);
}

#[test]
fn sizes_and_alignment() {
    assert_eq!(size_of::<Memory>(), 16);
    assert_eq!(size_of::<Regs>(), 144);
    assert_eq!(size_of::<Segment>(), 24);
    assert_eq!(size_of::<Dtable>(), 16);
    assert_eq!(size_of::<Sregs>(), 272);
    assert_eq!(size_of::<Stats>(), 16);
    assert_eq!(size_of::<StatEntry>(), 56);
    assert_eq!(size_of::<Run>(), 272);
    assert_eq!(size_of::<Interrupt>(), 8);
    assert_eq!(size_of::<VcpuEvents>(), 64);
    assert_eq!(align_of::<Run>(), 8);
    assert!(size_of::<Run>() as u64 <= SHADOWVM_RUN_MMAP_SIZE);
}

#[test]
fn memory_validation() {
    let ok = |size| Memory { size, flags: 0 }.is_valid();
    assert!(ok(64 << 20));
    assert!(ok(SHADOWVM_MEMORY_MIN));
    assert!(ok(SHADOWVM_MEMORY_MAX));
    // Above 4 GiB is fine in v2 (the module's limit decides).
    assert!(ok(8 << 30));
    assert!(!ok(0));
    assert!(!ok(4097));
    assert!(!ok(SHADOWVM_MEMORY_MAX + 4096));
    assert!(!Memory {
        size: 4096,
        flags: 1
    }
    .is_valid());
}

#[test]
fn rflags_masks() {
    // Every architecturally defined bit (0..21 except 1, 3, 5, 15) is allowed.
    for bit in 0..64 {
        let reserved = SHADOWVM_RFLAGS_RESERVED & (1 << bit) != 0;
        let expect = !matches!(bit, 0 | 1 | 2 | 4 | 6..=14 | 16..=21);
        assert_eq!(reserved, expect, "bit {bit}");
    }
}

#[test]
fn exit_area_views_share_storage() {
    let mut run = Run::default();
    run.exit.set(ExitIo {
        direction: SHADOWVM_IO_OUT,
        size: 1,
        port: 0x3f8,
        count: 1,
        data: 0x41,
    });
    assert_eq!(run.io().port, 0x3f8);
    assert_eq!(&run.exit.bytes[..4], &[SHADOWVM_IO_OUT, 1, 0xf8, 0x03]);
    run.io_mut().data = 0x1234;
    assert_eq!(run.exit.bytes[8], 0x34);
    run.exit.set(ExitIntr {
        cause: SHADOWVM_INTR_SIGNAL,
        padding: 0,
    });
    assert_eq!(run.intr().cause, SHADOWVM_INTR_SIGNAL);
    // `set` clears what the previous exit left.
    assert_eq!(run.exit.bytes[8], 0);
    run.hypercall_mut().ret = 7;
    assert_eq!(run.hypercall().ret, 7);
}

#[test]
fn gpr_by_encoding() {
    let mut regs = Regs::default();
    for i in 0..16 {
        *regs.gpr_mut(i).unwrap() = i as u64 + 100;
    }
    assert_eq!(regs.rax, 100);
    assert_eq!(regs.rsp, 104);
    assert_eq!(regs.r15, 115);
    assert_eq!(regs.gpr(7), Some(107));
    assert_eq!(regs.gpr(16), None);
    assert!(regs.gpr_mut(16).is_none());
}

#[test]
fn stat_entry_names() {
    let e = StatEntry::new("mmu.pf_fixed", 5);
    assert_eq!(e.name_str(), Some("mmu.pf_fixed"));
    let long = "x".repeat(100);
    let e = StatEntry::new(&long, 1);
    assert_eq!(e.name_str().map(str::len), Some(SHADOWVM_STAT_NAME_LEN - 1));
    let bad = StatEntry {
        name: [b'a'; SHADOWVM_STAT_NAME_LEN],
        value: 0,
    };
    assert_eq!(bad.name_str(), None);
}

#[test]
fn exit_reason_names() {
    assert_eq!(exit_reason_name(SHADOWVM_EXIT_IO), "io");
    assert_eq!(exit_reason_name(SHADOWVM_EXIT_INTR), "intr");
    assert_eq!(
        exit_reason_name(SHADOWVM_EXIT_IRQ_WINDOW_OPEN),
        "irq_window_open"
    );
    assert_eq!(exit_reason_name(99), "unknown");
}

#[test]
fn v2_ioctl_numbers() {
    assert_eq!(SHADOWVM_CHECK_CAP, 0x0000_B709);
    assert_eq!(SHADOWVM_SET_MEMORY_REGION, 0x4018_B70A);
    assert_eq!(SHADOWVM_GET_FPU, 0x8200_B711);
    assert_eq!(SHADOWVM_SET_FPU, 0x4200_B712);
    assert_eq!(ioc_size(SHADOWVM_SET_FPU) as usize, size_of::<Fpu>());
    assert_eq!(SHADOWVM_API_VERSION, 2);
    assert_eq!(SHADOWVM_RUN_VERSION, 2);
}

#[test]
fn v2_sizes_and_alignment() {
    assert_eq!(size_of::<MemoryRegion>(), 24);
    assert_eq!(size_of::<Fpu>(), 512);
    assert_eq!(align_of::<Fpu>(), 16);
    // Guest memory's file offsets (= guest-physical addresses) end where the run page is.
    const { assert!(SHADOWVM_MEMORY_MAX <= SHADOWVM_RUN_MMAP_OFFSET) };
}

#[test]
fn memory_region_validation() {
    let r = |slot, gpa, size| MemoryRegion {
        slot,
        flags: 0,
        guest_phys_addr: gpa,
        size,
    };
    assert!(r(0, 0, 2 << 20).is_valid());
    assert!(r(7, 4 << 30, 2 << 20).is_valid());
    assert!(r(1, SHADOWVM_MEMORY_MAX - 4096, 4096).is_valid());
    assert!(
        !r(SHADOWVM_MEMORY_SLOTS, 0, 4096).is_valid(),
        "slot id out of range"
    );
    assert!(!r(0, 0, 0).is_valid(), "size 0 (deletion) is not supported");
    assert!(!r(0, 0x800, 4096).is_valid(), "unaligned address");
    assert!(!r(0, 0, 4097).is_valid(), "unaligned size");
    assert!(
        !r(0, SHADOWVM_MEMORY_MAX, 4096).is_valid(),
        "beyond the end"
    );
    assert!(
        !r(0, SHADOWVM_MEMORY_MAX - 4096, 8192).is_valid(),
        "crosses the end"
    );
    assert!(!r(0, !0xfff, 1 << 12).is_valid(), "wraps around");
    let mut flagged = r(0, 0, 4096);
    flagged.flags = 1;
    assert!(!flagged.is_valid());

    let a = r(0, 0x10_0000, 0x10_0000);
    assert!(a.overlaps(&r(1, 0x1f_f000, 0x1000)));
    assert!(a.overlaps(&r(1, 0, 0x20_0000)));
    assert!(!a.overlaps(&r(1, 0x20_0000, 0x1000)), "adjacent above");
    assert!(!a.overlaps(&r(1, 0xf_f000, 0x1000)), "adjacent below");
}

#[test]
fn fpu_image_accessors() {
    let mut f = Fpu::default();
    f.set_mxcsr(0x1f80);
    assert_eq!(&f.fxsave[24..28], &[0x80, 0x1f, 0, 0]);
    assert_eq!(f.mxcsr(), 0x1f80);
    let v: [u8; 16] = core::array::from_fn(|i| i as u8 + 1);
    assert!(f.set_xmm(15, v));
    assert_eq!(&f.fxsave[400..416], &v);
    assert_eq!(f.xmm(15), Some(v));
    assert_eq!(f.xmm(0), Some([0; 16]));
    assert_eq!(f.xmm(16), None);
    assert_eq!(f.xmm(usize::MAX), None);
    assert!(!f.set_xmm(16, v));
}
