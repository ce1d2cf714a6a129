/* SPDX-License-Identifier: GPL-2.0 */
/*
 * What the initramfs's tiny tools (exit-device, bench-mark) need without a C library:
 * system calls, output, exit, number parsing and printing, and the entry point. Each tool
 * defines start_c(long *stack), which _start calls with the kernel's initial stack (argc,
 * then argv).
 */
#ifndef NOLIBC_H
#define NOLIBC_H

#define SYS_write 1
#define SYS_ioperm 173
#define SYS_exit_group 231

static inline long syscall3(long nr, long a, long b, long c)
{
	long ret;

	asm volatile("syscall"
		     : "=a"(ret)
		     : "a"(nr), "D"(a), "S"(b), "d"(c)
		     : "rcx", "r11", "memory");
	return ret;
}

/* Writes the string s to file descriptor fd. */
static inline void put(int fd, const char *s)
{
	long len = 0;

	while (s[len])
		len++;
	syscall3(SYS_write, fd, (long)s, len);
}

static inline __attribute__((noreturn)) void quit(int status)
{
	for (;;)
		syscall3(SYS_exit_group, status, 0, 0);
}

/* Parses a decimal or 0x-prefixed hexadecimal number below 2^32; -1 if it is not one. */
static inline long long parse(const char *s)
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

/* Writes v in decimal into buf (at least 21 bytes) and returns buf. */
static inline char *decimal(unsigned long long v, char *buf)
{
	char tmp[21];
	int n = 0, i = 0;

	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	while (n)
		buf[i++] = tmp[--n];
	buf[i] = 0;
	return buf;
}

static void start_c(long *stack) __attribute__((used));

/* The kernel starts us with argc at (%rsp); call start_c with it, the stack 16-byte aligned. */
asm(".globl _start\n"
    "_start:\n"
    "	mov %rsp, %rdi\n"
    "	and $-16, %rsp\n"
    "	call start_c\n"
    "	hlt\n");

#endif
