// SPDX-License-Identifier: GPL-2.0
/* API selftests for /dev/shadowvm: ioctls answered, misuse rejected with a clear errno. */
#include <fcntl.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include "shadowvm.h"
#include "tap.h"

int main(void)
{
	int fd, fd2, v;

	tap_plan(4);
	/* Runs after suites that unload the module. */
	if (access("/dev/shadowvm", F_OK) && system("insmod /lib/modules/shadowvm.ko"))
		printf("# insmod shadowvm.ko failed\n");
	fd = open("/dev/shadowvm", O_RDWR | O_CLOEXEC);
	tap_result(fd >= 0, "open /dev/shadowvm", "open: %s", strerror(errno));
	if (fd < 0)
		return tap_exit();

	v = ioctl(fd, SHADOWVM_GET_API_VERSION, 0);
	tap_result(v == SHADOWVM_API_VERSION, "GET_API_VERSION answers the ABI version",
		   "got %d (errno %s), want %d", v, strerror(errno), SHADOWVM_API_VERSION);

	TAP_ERRNO("an unknown ioctl fails with ENOTTY", ioctl(fd, _IO(SHADOWVM_IOCTL_TYPE, 0xff), 0), ENOTTY);

	fd2 = open("/dev/shadowvm", O_RDWR | O_CLOEXEC);
	tap_result(fd2 >= 0 && ioctl(fd2, SHADOWVM_GET_API_VERSION, 0) == SHADOWVM_API_VERSION,
		   "two VMs (opens) at once", "second open: %s", strerror(errno));
	close(fd2);
	close(fd);
	return tap_exit();
}
