// SPDX-License-Identifier: GPL-2.0
/*
 * exit-device CODE: ends the machine through the exit device, a 32-bit write of CODE to
 * I/O port 0xf4 (QEMU's isa-debug-exit at iobase 0xf4, iosize 4: QEMU exits with status
 * CODE * 2 + 1; shadowvm-run --exit-device qemu gives the same). Needs CAP_SYS_RAWIO
 * (init has it). If the write returns, no exit device is there: it says so and fails.
 *
 * No C library: a static binary of a few kilobytes in the initramfs.
 */
#include "nolibc.h"

#define EXIT_PORT 0xf4

static void start_c(long *stack)
{
	long argc = stack[0];
	char **argv = (char **)(stack + 1);
	long long code = argc == 2 ? parse(argv[1]) : -1;

	if (code < 0) {
		put(2, "usage: exit-device CODE   (0 <= CODE < 2^32; written to port 0xf4)\n");
		quit(2);
	}
	if (syscall3(SYS_ioperm, EXIT_PORT, 4, 1) != 0) {
		put(2, "exit-device: ioperm(0xf4) failed (needs CAP_SYS_RAWIO)\n");
		quit(1);
	}
	asm volatile("outl %0, %1" : : "a"((unsigned int)code), "Nd"((unsigned short)EXIT_PORT));
	put(2, "exit-device: the write to port 0xf4 returned: no exit device\n");
	quit(1);
}
