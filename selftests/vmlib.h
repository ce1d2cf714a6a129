/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Shared helpers of the in-guest C selftests (fuzz.c, lifecycle.c, reload.c): a VM with
 * memory, one vCPU and both mappings, whose guest runs code at GUEST_CODE with paging on
 * (one 4 MiB page at 0, page directory at GUEST_PD) and an IDT at GUEST_IDT, which that
 * paging does not map: any exception the guest takes ends in a #PF that shadowvm
 * intercepts and then in a triple fault it reports as SHUTDOWN. (Bochs turns a triple
 * fault taken inside the CPU into a machine shutdown, so no test guest may get one.)
 */
#ifndef SHADOWVM_VMLIB_H
#define SHADOWVM_VMLIB_H
#include <errno.h>
#include <fcntl.h>
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

struct vm {
	int fd;
	size_t mem_size;
	uint8_t *mem;		/* MAP_FAILED when not mapped */
	struct shadowvm_run *run;	/* MAP_FAILED when not mapped */
};

static inline double now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

/* Writes the page directory and `code` at GUEST_CODE; the rest of the first pages is 0. */
static inline void vm_load_code(struct vm *vm, const void *code, size_t len)
{
	memset(vm->mem, 0, 0x3000);
	memcpy(vm->mem + GUEST_CODE, code, len);
	*(uint32_t *)(vm->mem + GUEST_PD) = 0x83;	/* PDE 0: 4 MiB page, present, writable */
}

/* The paging and IDT of the top of this file, on top of the vCPU's reset state. */
static inline int vm_safe_sregs(int fd, struct shadowvm_sregs *s)
{
	if (ioctl(fd, SHADOWVM_GET_SREGS, s))
		return -1;
	s->cr4 |= 1 << 4;		/* PSE */
	s->cr0 |= 1u << 31;		/* PG */
	s->cr3 = GUEST_PD;
	s->idt.base = GUEST_IDT;
	s->idt.limit = 0x7ff;
	return ioctl(fd, SHADOWVM_SET_SREGS, s);
}

/*
 * Opens a VM with mem_size bytes of memory, a vCPU and both mappings, loads `code` and
 * sets the safe state with RIP at GUEST_CODE. Returns 0, or -1 with errno set (the VM is
 * then half set up: vm_destroy() it).
 */
static inline int vm_create(struct vm *vm, size_t mem_size, const void *code, size_t len)
{
	struct shadowvm_memory m = { .size = mem_size };
	struct shadowvm_regs regs = { .rip = GUEST_CODE, .rflags = 2, .rsp = GUEST_STACK };
	struct shadowvm_sregs s;

	vm->mem_size = mem_size;
	vm->mem = MAP_FAILED;
	vm->run = MAP_FAILED;
	vm->fd = open("/dev/shadowvm", O_RDWR | O_CLOEXEC);
	if (vm->fd < 0 || ioctl(vm->fd, SHADOWVM_SET_MEMORY, &m) ||
	    ioctl(vm->fd, SHADOWVM_CREATE_VCPU, 0))
		return -1;
	vm->mem = mmap(NULL, mem_size, PROT_READ | PROT_WRITE, MAP_SHARED, vm->fd, 0);
	vm->run = mmap(NULL, SHADOWVM_RUN_MMAP_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, vm->fd,
		       SHADOWVM_RUN_MMAP_OFFSET);
	if (vm->mem == MAP_FAILED || vm->run == MAP_FAILED)
		return -1;
	vm_load_code(vm, code, len);
	if (vm_safe_sregs(vm->fd, &s))
		return -1;
	return ioctl(vm->fd, SHADOWVM_SET_REGS, &regs);
}

/* Unmaps what is mapped and closes the fd (if open). */
static inline void vm_destroy(struct vm *vm)
{
	int e = errno;

	if (vm->mem != MAP_FAILED)
		munmap(vm->mem, vm->mem_size);
	if (vm->run != MAP_FAILED)
		munmap(vm->run, SHADOWVM_RUN_MMAP_SIZE);
	if (vm->fd >= 0)
		close(vm->fd);
	vm->mem = MAP_FAILED;
	vm->run = MAP_FAILED;
	vm->fd = -1;
	errno = e;
}

/* RUN until an exit other than a time slice; returns the exit reason or -errno. */
static inline int vm_run(struct vm *vm)
{
	for (int i = 0; i < 1000; i++) {
		if (ioctl(vm->fd, SHADOWVM_RUN, 0))
			return -errno;
		if (vm->run->exit_reason != SHADOWVM_EXIT_INTR)
			return vm->run->exit_reason;
	}
	return -ETIMEDOUT;
}

static const uint8_t guest_hlt[] = { 0xf4 }, guest_loop[] = { 0xeb, 0xfe };
#endif
