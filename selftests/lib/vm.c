// SPDX-License-Identifier: GPL-2.0
/* The selftests' shared VM library: see include/shadowvm_util.h. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>
#include "shadowvm_util.h"

double now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

void shadowvm_ensure_loaded(void)
{
	if (access(SHADOWVM_DEV, F_OK) && system("insmod " SHADOWVM_KO))
		printf("# insmod shadowvm.ko failed\n");
	fflush(stdout);
}

int vm_open(struct vm *vm)
{
	vm->mem_size = 0;
	vm->mem = MAP_FAILED;
	vm->run = MAP_FAILED;
	vm->fd = open(SHADOWVM_DEV, O_RDWR | O_CLOEXEC);
	return vm->fd < 0 ? -1 : 0;
}

int vm_create_bare(struct vm *vm, size_t mem_size)
{
	struct shadowvm_memory m = { .size = mem_size };

	if (vm_open(vm))
		return -1;
	vm->mem_size = mem_size;
	if (ioctl(vm->fd, SHADOWVM_SET_MEMORY, &m) || ioctl(vm->fd, SHADOWVM_CREATE_VCPU, 0))
		return -1;
	vm->mem = mmap(NULL, mem_size, PROT_READ | PROT_WRITE, MAP_SHARED, vm->fd, 0);
	vm->run = mmap(NULL, SHADOWVM_RUN_MMAP_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, vm->fd,
		       SHADOWVM_RUN_MMAP_OFFSET);
	return vm->mem == MAP_FAILED || vm->run == MAP_FAILED ? -1 : 0;
}

int vm_create_reset(struct vm *vm, size_t mem_size)
{
	struct shadowvm_regs regs = { .rip = GUEST_CODE, .rflags = 2, .rsp = GUEST_STACK };

	if (vm_create_bare(vm, mem_size))
		return -1;
	return ioctl(vm->fd, SHADOWVM_SET_REGS, &regs);
}

int vm_create(struct vm *vm, size_t mem_size, const void *code, size_t len)
{
	struct shadowvm_sregs s;

	if (vm_create_reset(vm, mem_size))
		return -1;
	vm_load_code(vm, code, len);
	return vm_safe_sregs(vm->fd, &s);
}

void vm_load_code(struct vm *vm, const void *code, size_t len)
{
	memset(vm->mem, 0, 0x3000);
	memcpy(vm->mem + GUEST_CODE, code, len);
	*(uint32_t *)(vm->mem + GUEST_PD) = 0x83;	/* PDE 0: 4 MiB page, present, writable */
}

int vm_safe_sregs(int fd, struct shadowvm_sregs *s)
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

void vm_destroy(struct vm *vm)
{
	int e = errno;

	if (vm->mem != MAP_FAILED && vm->mem)
		munmap(vm->mem, vm->mem_size);
	if (vm->run != MAP_FAILED && vm->run)
		munmap(vm->run, SHADOWVM_RUN_MMAP_SIZE);
	if (vm->fd >= 0)
		close(vm->fd);
	vm->mem = MAP_FAILED;
	vm->run = MAP_FAILED;
	vm->fd = -1;
	errno = e;
}

int vm_run(struct vm *vm)
{
	for (int i = 0; i < 1000; i++) {
		if (ioctl(vm->fd, SHADOWVM_RUN, 0))
			return -errno;
		if (vm->run->exit_reason != SHADOWVM_EXIT_INTR)
			return vm->run->exit_reason;
	}
	return -ETIMEDOUT;
}
