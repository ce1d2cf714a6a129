/* Minimal /dev/shadowvm client: run 32-bit code that prints "Hi" and exits with 0. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>
#include "shadowvm.h"

static const unsigned char code[] = {
	0x66, 0xba, 0xf8, 0x03,	/* mov $0x3f8, %dx */
	0xb0, 'H', 0xee,	/* mov $'H', %al; out %al, (%dx) */
	0xb0, 'i', 0xee,	/* mov $'i', %al; out %al, (%dx) */
	0xb0, '\n', 0xee,	/* mov $'\n', %al; out %al, (%dx) */
	0x66, 0xba, 0xf4, 0x00,	/* mov $0xf4, %dx */
	0x31, 0xc0, 0xef,	/* xor %eax, %eax; out %eax, (%dx): exit status 0 */
	0xf4,			/* hlt */
};

static struct shadowvm_segment flat(__u16 selector, __u8 type, __u8 db)
{
	struct shadowvm_segment s = {
		.base = 0, .limit = 0xffffffff, .selector = selector, .type = type,
		.present = 1, .db = db, .s = 1, .g = 1,
	};
	return s;
}

int main(void)
{
	int fd = open("/dev/shadowvm", O_RDWR | O_CLOEXEC);
	if (fd < 0 || ioctl(fd, SHADOWVM_GET_API_VERSION, 0) != SHADOWVM_API_VERSION) {
		perror("/dev/shadowvm");
		return 1;
	}
	struct shadowvm_memory mem = { .size = 64 << 20, .flags = 0 };
	if (ioctl(fd, SHADOWVM_SET_MEMORY, &mem) < 0 || ioctl(fd, SHADOWVM_CREATE_VCPU, 0) < 0) {
		perror("setup");
		return 1;
	}
	unsigned char *ram = mmap(NULL, mem.size, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
				  SHADOWVM_MEMORY_MMAP_OFFSET);
	struct shadowvm_run *run = mmap(NULL, SHADOWVM_RUN_MMAP_SIZE, PROT_READ | PROT_WRITE,
					MAP_SHARED, fd, SHADOWVM_RUN_MMAP_OFFSET);
	if (ram == MAP_FAILED || run == MAP_FAILED) {
		perror("mmap");
		return 1;
	}
	memcpy(ram + 0x100000, code, sizeof(code));

	/* 32-bit protected mode, paging off, flat segments, as the launcher's --start protected
	 * (the launcher also writes a matching GDT and TSS into guest memory). */
	struct shadowvm_sregs sregs;
	memset(&sregs, 0, sizeof(sregs));
	sregs.cs = flat(0x10, 0xb, 1);
	sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = flat(0x18, 0x3, 1);
	sregs.tr.base = 0x1100;
	sregs.tr.limit = 0x67;
	sregs.tr.selector = 0x20;
	sregs.tr.type = 0xb;
	sregs.tr.present = 1;
	sregs.ldt.type = 0x2;
	sregs.ldt.unusable = 1;
	sregs.gdt.base = 0x1000;
	sregs.gdt.limit = 0x2f;
	sregs.cr0 = 0x11; /* PE | ET */
	struct shadowvm_regs regs;
	memset(&regs, 0, sizeof(regs));
	regs.rip = 0x100000;
	regs.rflags = SHADOWVM_RFLAGS_FIXED1;
	if (ioctl(fd, SHADOWVM_SET_SREGS, &sregs) < 0 || ioctl(fd, SHADOWVM_SET_REGS, &regs) < 0) {
		perror("set registers");
		return 1;
	}

	for (;;) {
		if (ioctl(fd, SHADOWVM_RUN, 0) < 0) {
			if (errno == EINTR)
				continue; /* a signal: handle it, then run again */
			perror("SHADOWVM_RUN");
			return 1;
		}
		struct shadowvm_exit_io *io = &run->exit.io;
		switch (run->exit_reason) {
		case SHADOWVM_EXIT_IO:
			if (io->direction == SHADOWVM_IO_IN)
				io->data = io->port == 0x3fd ? 0x60 : 0; /* completed by the next RUN */
			else if (io->port == 0x3f8)
				putchar((int)(io->data & 0xff));
			else if (io->port == 0xf4)
				return (int)io->data;
			break;
		case SHADOWVM_EXIT_INTR:
			break;
		case SHADOWVM_EXIT_HLT:
			return 0;
		default:
			fprintf(stderr, "unexpected exit reason %u\n", run->exit_reason);
			return 1;
		}
	}
}
