/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The selftests' shared VM library (lib/vm.c; the KVM selftests' lib/kvm_util.c is the
 * model): open a VM, give it memory, a vCPU and both mappings, load a guest, put it in a
 * known state and run it, for api.c, lifecycle.c, fuzz.c and reload.c.
 *
 * The "safe" state (vm_create(), vm_safe_sregs()): the guest runs code at GUEST_CODE with
 * paging on (one 4 MiB page at 0, page directory at GUEST_PD) and an IDT at GUEST_IDT,
 * which that paging does not map: any exception the guest takes ends in a #PF that
 * shadowvm intercepts and then in a triple fault it reports as SHUTDOWN. (Bochs turns a
 * triple fault taken inside the CPU into a machine shutdown, so no test guest may get one.)
 */
#ifndef SHADOWVM_UTIL_H
#define SHADOWVM_UTIL_H
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
#include "shadowvm.h"

#define GUEST_CODE 0x1000u
#define GUEST_PD 0x2000u
#define GUEST_IDT 0x00800000u
#define GUEST_STACK 0x8000u	/* inside the smallest memory the tests use (64 KiB) */

#define SHADOWVM_DEV "/dev/shadowvm"
#define SHADOWVM_KO "/lib/modules/shadowvm.ko"

struct vm {
	int fd;			/* -1 when not open */
	size_t mem_size;
	uint8_t *mem;		/* MAP_FAILED when not mapped */
	struct shadowvm_run *run;	/* MAP_FAILED when not mapped */
};

/* A struct vm that holds nothing (what vm_destroy() leaves). */
#define VM_NONE { .fd = -1, .mem = MAP_FAILED, .run = MAP_FAILED }

static const uint8_t guest_hlt[] = { 0xf4 }, guest_loop[] = { 0xeb, 0xfe };

/* CLOCK_MONOTONIC in seconds. */
double now(void);

/* Loads the module if /dev/shadowvm is missing (suites that unload it may run before). */
void shadowvm_ensure_loaded(void);

/* Opens /dev/shadowvm into vm (nothing else); 0, or -1 with errno set. */
int vm_open(struct vm *vm);

/*
 * Opens a VM with mem_size bytes of memory (SET_MEMORY), a vCPU (CREATE_VCPU) and both
 * mappings (guest RAM, run page), the registers as CREATE_VCPU left them. Returns 0, or -1
 * with errno set (the VM is then half set up: vm_destroy() it).
 */
int vm_create_bare(struct vm *vm, size_t mem_size);

/*
 * vm_create_bare(), then the vCPU's reset
 * state but for RIP = GUEST_CODE, RFLAGS = 2 and RSP = GUEST_STACK. Returns 0, or -1 with
 * errno set (the VM is then half set up: vm_destroy() it).
 */
int vm_create_reset(struct vm *vm, size_t mem_size);

/* vm_create_reset(), then `code` loaded by vm_load_code() and the safe state set. */
int vm_create(struct vm *vm, size_t mem_size, const void *code, size_t len);

/* Writes the page directory and `code` at GUEST_CODE; the rest of the first pages is 0. */
void vm_load_code(struct vm *vm, const void *code, size_t len);

/* The safe paging and IDT (top of this file) on top of the vCPU's current state. */
int vm_safe_sregs(int fd, struct shadowvm_sregs *s);

/* Unmaps what is mapped and closes the fd (if open); keeps errno. */
void vm_destroy(struct vm *vm);

/* RUN until an exit other than a time slice (INTR); returns the exit reason or -errno. */
int vm_run(struct vm *vm);
#endif
