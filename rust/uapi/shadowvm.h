/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * shadowvm.h - the /dev/shadowvm ABI for C.
 *
 * Mirrors rust/uapi/mod.rs, the single source of truth; `cargo test -p shadowvm-uapi`
 * compiles this header and checks every size, offset and constant against the Rust side.
 * Semantics: Documentation/uapi.md.
 *
 * Reserved and padding fields must be zero on input and are zero on output.
 */
#ifndef _UAPI_LINUX_SHADOWVM_H
#define _UAPI_LINUX_SHADOWVM_H

#include <linux/types.h>
#include <linux/ioctl.h>

#define SHADOWVM_IOCTL_TYPE 0xB7
#define SHADOWVM_API_VERSION 2

#define SHADOWVM_PAGE_SIZE 4096ULL
#define SHADOWVM_MEMORY_MMAP_OFFSET 0ULL
#define SHADOWVM_RUN_MMAP_OFFSET (1ULL << 40)
#define SHADOWVM_RUN_MMAP_SIZE SHADOWVM_PAGE_SIZE
#define SHADOWVM_MEMORY_MIN SHADOWVM_PAGE_SIZE
#define SHADOWVM_MEMORY_MAX (1ULL << 40)	/* every slot ends at or below it */

/* SHADOWVM_SET_MEMORY */
struct shadowvm_memory {
	__u64 size;	/* multiple of SHADOWVM_PAGE_SIZE, MIN..MAX */
	__u64 flags;	/* must be 0 */
};

/* SHADOWVM_GET_REGS / SHADOWVM_SET_REGS: GPRs in x86 encoding order */
struct shadowvm_regs {
	__u64 rax, rcx, rdx, rbx, rsp, rbp, rsi, rdi;
	__u64 r8, r9, r10, r11, r12, r13, r14, r15;
	__u64 rip, rflags;
};

#define SHADOWVM_RFLAGS_FIXED1 (1ULL << 1)
#define SHADOWVM_RFLAGS_IF (1ULL << 9)
#define SHADOWVM_RFLAGS_VM (1ULL << 17)
#define SHADOWVM_RFLAGS_RESERVED (~0x3f7fd7ULL)

struct shadowvm_segment {
	__u64 base;
	__u32 limit;	/* byte granular */
	__u16 selector;
	__u8 type;
	__u8 present, dpl, db, s, l, g, avl;
	__u8 unusable;
	__u8 padding;
};

struct shadowvm_dtable {
	__u64 base;
	__u16 limit;
	__u16 padding[3];
};

/* SHADOWVM_GET_SREGS / SHADOWVM_SET_SREGS */
struct shadowvm_sregs {
	struct shadowvm_segment cs, ds, es, fs, gs, ss;
	struct shadowvm_segment tr, ldt;
	struct shadowvm_dtable gdt, idt;
	__u64 cr0, cr2, cr3, cr4, efer;
	__u64 apic_base;	/* kept for userspace (which owns IA32_APIC_BASE), no meaning to the module */
};

/* SHADOWVM_GET_STATS */
#define SHADOWVM_STAT_NAME_LEN 48
#define SHADOWVM_STATS_MAX 512

struct shadowvm_stat_entry {
	char name[SHADOWVM_STAT_NAME_LEN];	/* NUL-terminated "group.counter" */
	__u64 value;
};

struct shadowvm_stats {
	__u32 count;	/* in: capacity of entries[]; out: number available */
	__u32 flags;	/* must be 0 */
	__u64 entries;	/* user pointer to struct shadowvm_stat_entry[count] */
};

/* ABI v2 (issue 11): SHADOWVM_CHECK_CAP capabilities */
#define SHADOWVM_CAP_MEMORY_SLOTS 1	/* number of slots */
#define SHADOWVM_CAP_MAX_MEMORY_MB 2	/* module limit of total guest memory, MiB */
#define SHADOWVM_CAP_FPU 3	/* 1: GET_FPU / SET_FPU */

/* SHADOWVM_SET_MEMORY_REGION */
#define SHADOWVM_MEMORY_SLOTS 8

struct shadowvm_memory_region {
	__u32 slot;	/* 0 .. SHADOWVM_MEMORY_SLOTS - 1, each set once */
	__u32 flags;	/* must be 0 */
	__u64 guest_phys_addr;	/* page-aligned; also the mmap file offset */
	__u64 size;	/* nonzero, page-aligned; end <= SHADOWVM_MEMORY_MAX */
};

/* SHADOWVM_GET_FPU / SHADOWVM_SET_FPU: the 64-bit FXSAVE image */
#define SHADOWVM_FXSAVE_SIZE 512
#define SHADOWVM_FXSAVE_MXCSR 24	/* offset of MXCSR (u32) */
#define SHADOWVM_FXSAVE_XMM 160	/* offset of XMM0; XMMn at + 16 * n */

struct shadowvm_fpu {
	__u8 fxsave[SHADOWVM_FXSAVE_SIZE] __attribute__((aligned(16)));
};

/* Exit reasons (shadowvm_run.exit_reason) */
#define SHADOWVM_EXIT_NONE 0
#define SHADOWVM_EXIT_IO 1
#define SHADOWVM_EXIT_MMIO 2
#define SHADOWVM_EXIT_HLT 3
#define SHADOWVM_EXIT_HYPERCALL 4
#define SHADOWVM_EXIT_SHUTDOWN 5
#define SHADOWVM_EXIT_FAIL_ENTRY 6
#define SHADOWVM_EXIT_INTERNAL_ERROR 7
#define SHADOWVM_EXIT_INTR 8
#define SHADOWVM_EXIT_X86_RDMSR 10
#define SHADOWVM_EXIT_X86_WRMSR 11
#define SHADOWVM_EXIT_IRQ_WINDOW_OPEN 9

#define SHADOWVM_IO_IN 0
#define SHADOWVM_IO_OUT 1

struct shadowvm_exit_io {
	__u8 direction;	/* SHADOWVM_IO_IN / SHADOWVM_IO_OUT */
	__u8 size;	/* 1, 2 or 4 */
	__u16 port;
	__u32 count;	/* always 1 (string I/O is split into elements) */
	__u64 data;	/* low `size` bytes, little-endian; IN: filled by userspace */
};

struct shadowvm_exit_mmio {
	__u64 gpa;
	__u8 data[8];	/* read: filled by userspace */
	__u32 len;	/* 1, 2, 4 or 8 */
	__u8 is_write;
	__u8 padding[3];
};

#define SHADOWVM_HYPERCALL_ARGS 6

/* nr = RAX, args = RBX, RCX, RDX, RSI, RDI, R8; ret goes to RAX on the next RUN */
struct shadowvm_exit_hypercall {
	__u64 nr;
	__u64 args[SHADOWVM_HYPERCALL_ARGS];
	__u64 ret;
};

#define SHADOWVM_FAIL_ENTRY_EXIT_REASON (1ULL << 31)

struct shadowvm_exit_fail_entry {
	__u64 hardware_entry_failure_reason;	/* VM-instruction error, or exit reason | bit 31 */
	__u64 exit_qualification;
	__u32 cpu;
	__u32 padding;
};

#define SHADOWVM_INTERNAL_ERROR_EMULATION 1
#define SHADOWVM_INTERNAL_ERROR_UNHANDLED_EXIT 2
#define SHADOWVM_INTERNAL_ERROR_DELIVERY_EV 3
#define SHADOWVM_INTERNAL_ERROR_MMU 4

struct shadowvm_exit_internal_error {
	__u32 suberror;
	__u32 vmx_exit_reason;
	__u64 exit_qualification;
	__u64 data[4];	/* data[0] = guest RIP */
};

#define SHADOWVM_INTR_SIGNAL 1
#define SHADOWVM_INTR_IMMEDIATE_EXIT 2
#define SHADOWVM_INTR_TIME_SLICE 3

struct shadowvm_exit_intr {
	__u32 cause;	/* SHADOWVM_INTR_* */
	__u32 padding;
};

/* SHADOWVM_EXIT_X86_RDMSR / SHADOWVM_EXIT_X86_WRMSR */
struct shadowvm_exit_msr {
	__u8 error;	/* set to 1 by userspace: #GP(0) at the next RUN */
	__u8 pad[3];
	__u32 index;	/* guest ECX */
	__u64 data;	/* RDMSR: filled by userspace (EDX:EAX); WRMSR: the guest's EDX:EAX */
};

/* Interrupts (ABI v2) */
#define SHADOWVM_CAP_IRQ 4	/* SHADOWVM_CHECK_CAP: INTERRUPT, NMI, window, vcpu events */
#define SHADOWVM_NR_INTERRUPTS 256

/* SHADOWVM_INTERRUPT */
struct shadowvm_interrupt {
	__u32 irq;	/* vector, < SHADOWVM_NR_INTERRUPTS */
	__u32 padding;
};

#define SHADOWVM_INTERRUPT_SHADOW_STI 1
#define SHADOWVM_INTERRUPT_SHADOW_MOV_SS 2
#define SHADOWVM_NMI_PENDING_MAX 2

/* SHADOWVM_GET_VCPU_EVENTS / SHADOWVM_SET_VCPU_EVENTS */
struct shadowvm_vcpu_events {
	__u8 exception_injected;	/* 0 or 1 */
	__u8 exception_nr;	/* 0-31, not 2 or 21 */
	__u8 exception_has_error_code;	/* exactly for 8, 10-14, 17 */
	__u8 exception_padding;
	__u32 exception_error_code;	/* bits 31:16 zero */
	__u8 interrupt_injected;	/* 0 or 1: interrupt_nr queued */
	__u8 interrupt_nr;
	__u8 interrupt_shadow;	/* SHADOWVM_INTERRUPT_SHADOW_*, at most one */
	__u8 interrupt_padding;
	__u8 nmi_pending;	/* 0..SHADOWVM_NMI_PENDING_MAX */
	__u8 nmi_masked;	/* 0 or 1 */
	__u8 nmi_padding[2];
	__u32 flags;	/* must be 0 */
	__u32 reserved[11];
};

#define SHADOWVM_RUN_VERSION 2
#define SHADOWVM_EXIT_AREA_SIZE 256

/* mmap'd at SHADOWVM_RUN_MMAP_OFFSET */
struct shadowvm_run {
	__u32 version;	/* SHADOWVM_RUN_VERSION */
	__u32 size;	/* sizeof(struct shadowvm_run) */
	__u8 immediate_exit;	/* set by userspace */
	__u8 request_interrupt_window;	/* set by userspace */
	__u8 ready_for_interrupt_injection;	/* set by the module */
	__u8 if_flag;	/* set by the module: guest RFLAGS.IF */
	__u32 exit_reason;	/* SHADOWVM_EXIT_* */
	union {
		struct shadowvm_exit_io io;
		struct shadowvm_exit_mmio mmio;
		struct shadowvm_exit_hypercall hypercall;
		struct shadowvm_exit_fail_entry fail_entry;
		struct shadowvm_exit_internal_error internal_error;
		struct shadowvm_exit_intr intr;
		struct shadowvm_exit_msr msr;
		__u8 bytes[SHADOWVM_EXIT_AREA_SIZE];
		__u64 align8;
	} exit;
};

/* ioctls on an open /dev/shadowvm (one VM with one vCPU) */
#define SHADOWVM_GET_API_VERSION _IO(SHADOWVM_IOCTL_TYPE, 0x00)
#define SHADOWVM_SET_MEMORY _IOW(SHADOWVM_IOCTL_TYPE, 0x01, struct shadowvm_memory)
#define SHADOWVM_CREATE_VCPU _IO(SHADOWVM_IOCTL_TYPE, 0x02)
#define SHADOWVM_GET_REGS _IOR(SHADOWVM_IOCTL_TYPE, 0x03, struct shadowvm_regs)
#define SHADOWVM_SET_REGS _IOW(SHADOWVM_IOCTL_TYPE, 0x04, struct shadowvm_regs)
#define SHADOWVM_GET_SREGS _IOR(SHADOWVM_IOCTL_TYPE, 0x05, struct shadowvm_sregs)
#define SHADOWVM_SET_SREGS _IOW(SHADOWVM_IOCTL_TYPE, 0x06, struct shadowvm_sregs)
#define SHADOWVM_RUN _IO(SHADOWVM_IOCTL_TYPE, 0x07)
#define SHADOWVM_GET_STATS _IOWR(SHADOWVM_IOCTL_TYPE, 0x08, struct shadowvm_stats)
/* ABI v2 (issue 11) */
#define SHADOWVM_CHECK_CAP _IO(SHADOWVM_IOCTL_TYPE, 0x09)
#define SHADOWVM_SET_MEMORY_REGION _IOW(SHADOWVM_IOCTL_TYPE, 0x0a, struct shadowvm_memory_region)
#define SHADOWVM_GET_FPU _IOR(SHADOWVM_IOCTL_TYPE, 0x11, struct shadowvm_fpu)
#define SHADOWVM_SET_FPU _IOW(SHADOWVM_IOCTL_TYPE, 0x12, struct shadowvm_fpu)

/* MSRs, CPUID, TSC */
#define SHADOWVM_CAP_USER_MSR 5
#define SHADOWVM_CAP_CPUID 6
#define SHADOWVM_CAP_TSC 7

#define SHADOWVM_MSRS_MAX 256

struct shadowvm_msr_entry {
	__u32 index;
	__u32 reserved;	/* must be 0 */
	__u64 data;
};

/* SHADOWVM_GET_MSRS / SHADOWVM_SET_MSRS: return the number of entries processed */
struct shadowvm_msrs {
	__u32 nmsrs;	/* at most SHADOWVM_MSRS_MAX */
	__u32 flags;	/* must be 0 */
	__u64 entries;	/* user pointer to struct shadowvm_msr_entry[nmsrs] */
};

#define SHADOWVM_CPUID_MAX_ENTRIES 64
#define SHADOWVM_CPUID_FLAG_SIGNIFICANT_INDEX 1

struct shadowvm_cpuid_entry {
	__u32 function;
	__u32 index;
	__u32 flags;	/* SHADOWVM_CPUID_FLAG_SIGNIFICANT_INDEX */
	__u32 eax, ebx, ecx, edx;
	__u32 padding;	/* must be 0 */
};

/* SHADOWVM_GET_SUPPORTED_CPUID / SHADOWVM_SET_CPUID */
struct shadowvm_cpuid {
	__u32 nent;	/* in: entries in the array; out (GET_SUPPORTED): entries available */
	__u32 flags;	/* must be 0 */
	__u64 entries;	/* user pointer to struct shadowvm_cpuid_entry[nent] */
};

#define SHADOWVM_GET_MSRS _IOWR(SHADOWVM_IOCTL_TYPE, 0x0d, struct shadowvm_msrs)
#define SHADOWVM_SET_MSRS _IOW(SHADOWVM_IOCTL_TYPE, 0x0e, struct shadowvm_msrs)
#define SHADOWVM_GET_SUPPORTED_CPUID _IOWR(SHADOWVM_IOCTL_TYPE, 0x0f, struct shadowvm_cpuid)
#define SHADOWVM_SET_CPUID _IOW(SHADOWVM_IOCTL_TYPE, 0x10, struct shadowvm_cpuid)
#define SHADOWVM_GET_TSC_KHZ _IO(SHADOWVM_IOCTL_TYPE, 0x15)
#define SHADOWVM_INTERRUPT _IOW(SHADOWVM_IOCTL_TYPE, 0x0b, struct shadowvm_interrupt)
#define SHADOWVM_NMI _IO(SHADOWVM_IOCTL_TYPE, 0x0c)
#define SHADOWVM_GET_VCPU_EVENTS _IOR(SHADOWVM_IOCTL_TYPE, 0x13, struct shadowvm_vcpu_events)
#define SHADOWVM_SET_VCPU_EVENTS _IOW(SHADOWVM_IOCTL_TYPE, 0x14, struct shadowvm_vcpu_events)

#endif /* _UAPI_LINUX_SHADOWVM_H */
