// SPDX-License-Identifier: GPL-2.0
/*
 * i8042-reset: resets the machine through the keyboard controller (command 0xfe, pulse
 * the reset line), the way Linux's reboot=k does.  The runner checks that the machine
 * reset right after the TAP output: under QEMU with -no-reboot, QEMU exits with status 0
 * and nothing is printed after the last line.  If the reset does not happen, the kernel
 * says so and exits with code 1 through isa-debug-exit.
 */
#include "mb.h"

#define I8042_STATUS		0x64
#define I8042_COMMAND		0x64
#define I8042_IN_FULL		0x02
#define I8042_PULSE_RESET	0xfe

void kmain(void)
{
	tap_plan(1);
	int ready = 0;
	for (int i = 0; i < 100000 && !ready; i++)
		ready = !(inb(I8042_STATUS) & I8042_IN_FULL);
	tap_ok(ready, "i8042: the input buffer is empty, the controller takes a command");
	diag("writing 0x%x (pulse reset) to port 0x%x", I8042_PULSE_RESET, I8042_COMMAND);
	outb(I8042_COMMAND, I8042_PULSE_RESET);
	pit_wait_ms(500);
	printf("Bail out! still running 500 ms after the i8042 reset command\n");
	outl(PORT_DEBUG_EXIT, EXIT_FAIL);
	for (;;)
		__asm__ volatile("cli; hlt");
}
