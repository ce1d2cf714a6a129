// SPDX-License-Identifier: GPL-2.0
/*
 * Waits until everything written to the console has left the serial port. /init runs it
 * before poweroff -f, which would otherwise cut off the end of the log (Bochs' UART is slow).
 */
#include <fcntl.h>
#include <termios.h>
#include <unistd.h>

int main(void)
{
	int fd = open("/dev/console", O_WRONLY | O_NOCTTY);

	return fd < 0 || tcdrain(fd) ? 1 : 0;
}
