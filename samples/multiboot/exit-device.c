// SPDX-License-Identifier: GPL-2.0
/*
 * exit-device: ends through isa-debug-exit with a code that is neither pass nor fail, so a
 * runner can check that the code reaches it (QEMU's exit status is then 0x2a * 2 + 1 = 85).
 */
#include "mb.h"

#define EXIT_CODE	0x2a

void kmain(void)
{
	tap_plan(1);
	tap_ok(mb_magic == MB_LOADER_MAGIC, "booted by a Multiboot loader");
	diag("writing 0x%x to port 0x%x", EXIT_CODE, PORT_DEBUG_EXIT);
	machine_exit(EXIT_CODE);
}
