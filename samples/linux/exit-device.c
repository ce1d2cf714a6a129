// SPDX-License-Identifier: GPL-2.0
/*
 * exit-device CODE: ends the machine through the exit device, a 32-bit write of CODE to
 * I/O port 0xf4 (QEMU's isa-debug-exit at iobase 0xf4, iosize 4: QEMU exits with status
 * CODE * 2 + 1; shadowvm-run --exit-device qemu gives the same). Needs CAP_SYS_RAWIO
 * (init has it). If the write returns, no exit device is there: it says so and fails.
 *
 * No C library: a static binary of a few kilobytes in the initramfs.
 */
#define EXIT_PORT 0xf4

#define SYS_write 1
#define SYS_ioperm 173
#define SYS_exit_group 231

static long syscall3(long nr, long a, long b, long c)
{
	long ret;

	asm volatile("syscall"
		     : "=a"(ret)
		     : "a"(nr), "D"(a), "S"(b), "d"(c)
		     : "rcx", "r11", "memory");
	return ret;
}

static void say(const char *s)
{
	long len = 0;

	while (s[len])
		len++;
	syscall3(SYS_write, 2, (long)s, len);
}

static __attribute__((noreturn)) void quit(int status)
{
	for (;;)
		syscall3(SYS_exit_group, status, 0, 0);
}

/* Parses a decimal or 0x-prefixed hexadecimal number below 2^32; -1 if it is not one. */
static long long parse(const char *s)
{
	unsigned long long v = 0;
	int base = 10;

	if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
		base = 16;
		s += 2;
	}
	if (!*s)
		return -1;
	for (; *s; s++) {
		int d;

		if (*s >= '0' && *s <= '9')
			d = *s - '0';
		else if (base == 16 && *s >= 'a' && *s <= 'f')
			d = *s - 'a' + 10;
		else if (base == 16 && *s >= 'A' && *s <= 'F')
			d = *s - 'A' + 10;
		else
			return -1;
		v = v * base + d;
		if (v > 0xffffffffULL)
			return -1;
	}
	return (long long)v;
}

__attribute__((used)) static void start_c(long *stack)
{
	long argc = stack[0];
	char **argv = (char **)(stack + 1);
	long long code = argc == 2 ? parse(argv[1]) : -1;

	if (code < 0) {
		say("usage: exit-device CODE   (0 <= CODE < 2^32; written to port 0xf4)\n");
		quit(2);
	}
	if (syscall3(SYS_ioperm, EXIT_PORT, 4, 1) != 0) {
		say("exit-device: ioperm(0xf4) failed (needs CAP_SYS_RAWIO)\n");
		quit(1);
	}
	asm volatile("outl %0, %1" : : "a"((unsigned int)code), "Nd"((unsigned short)EXIT_PORT));
	say("exit-device: the write to port 0xf4 returned: no exit device\n");
	quit(1);
}

/* The kernel starts us with argc at (%rsp); call start_c with it, the stack 16-byte aligned. */
asm(".globl _start\n"
    "_start:\n"
    "	mov %rsp, %rdi\n"
    "	and $-16, %rsp\n"
    "	call start_c\n"
    "	hlt\n");
