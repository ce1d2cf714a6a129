// SPDX-License-Identifier: GPL-2.0
/*
 * fw-cfg: QEMU's firmware configuration device through its legacy I/O interface
 * (docs/specs/fw_cfg.rst in QEMU): a 16-bit selector at 0x510, an 8-bit data port at 0x511
 * that reads the selected item byte by byte and 0 past its end.
 *
 * What a Multiboot boot leaves in the kernel, initrd and command-line items is the
 * loader's business (QEMU hands its Multiboot option ROM the image and the information
 * structure there, and no command line); those are printed, not tested.
 */
#include "mb.h"

#define FW_CFG_SELECTOR		0x510
#define FW_CFG_DATA		0x511

#define FW_CFG_SIGNATURE	0x00
#define FW_CFG_ID		0x01
#define FW_CFG_UUID		0x02
#define FW_CFG_RAM_SIZE		0x03
#define FW_CFG_NB_CPUS		0x05
#define FW_CFG_KERNEL_ADDR	0x07
#define FW_CFG_KERNEL_SIZE	0x08
#define FW_CFG_KERNEL_CMDLINE	0x09
#define FW_CFG_INITRD_ADDR	0x0a
#define FW_CFG_INITRD_SIZE	0x0b
#define FW_CFG_MAX_CPUS		0x0f
#define FW_CFG_KERNEL_ENTRY	0x10
#define FW_CFG_CMDLINE_ADDR	0x13
#define FW_CFG_CMDLINE_SIZE	0x14
#define FW_CFG_CMDLINE_DATA	0x15
#define FW_CFG_SETUP_ADDR	0x16
#define FW_CFG_FILE_DIR		0x19
#define FW_CFG_FILE_FIRST	0x20
/* No item: well above the file slots QEMU allocates, below the write/arch bits. */
#define FW_CFG_UNUSED_KEY	0x3ffe

#define FW_CFG_ID_TRADITIONAL	(1u << 0)
#define FW_CFG_ID_DMA		(1u << 1)

#define RAM_MIB			128u	/* kernels.list runs every kernel with 128 MiB */

static void fw_select(uint16_t key)
{
	outw(FW_CFG_SELECTOR, key);
}

static void fw_read(void *buf, size_t n)
{
	uint8_t *p = buf;
	while (n--)
		*p++ = inb(FW_CFG_DATA);
}

/* Items are little-endian, except the file directory's fields. */
static uint64_t fw_read_le(uint16_t key, unsigned bytes)
{
	uint8_t b[8] = { 0 };
	fw_select(key);
	fw_read(b, bytes);
	uint64_t v = 0;
	for (int i = (int)bytes - 1; i >= 0; i--)
		v = (v << 8) | b[i];
	return v;
}

static uint32_t be32(const uint8_t *b)
{
	return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

/* Does b[0..n) hold a NUL? */
static int has_nul(const uint8_t *b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!b[i])
			return 1;
	return 0;
}

static void test_file_dir(void)
{
	uint8_t hdr[4];
	fw_select(FW_CFG_FILE_DIR);
	fw_read(hdr, sizeof(hdr));
	uint32_t count = be32(hdr), bad = 0;
	diag("file directory: %u files", count);
	/* Each entry: be32 size, be16 select, be16 reserved, char name[56]. */
	for (uint32_t i = 0; i < count && i < 1024; i++) {
		uint8_t e[64];
		fw_read(e, sizeof(e));
		uint16_t sel = (uint16_t)(e[4] << 8 | e[5]);
		int terminated = has_nul(e + 8, 56);
		diag("file 0x%04x %6u bytes %s", sel, be32(e), terminated ? (const char *)e + 8 : "(unterminated)");
		if (!terminated || sel < FW_CFG_FILE_FIRST || !e[8])
			bad++;
	}
	tap_ok(count < 1024 && !bad,
	       "file directory: entries have a file selector and a NUL-terminated name");
}

/* The items a Multiboot boot may or may not fill: printed for the record. */
static void print_boot_items(void)
{
	static const struct {
		uint16_t key;
		const char *name;
	} items[] = {
		{ FW_CFG_KERNEL_ADDR, "KERNEL_ADDR" },
		{ FW_CFG_KERNEL_SIZE, "KERNEL_SIZE" },
		{ FW_CFG_KERNEL_ENTRY, "KERNEL_ENTRY" },
		{ FW_CFG_KERNEL_CMDLINE, "KERNEL_CMDLINE" },
		{ FW_CFG_INITRD_ADDR, "INITRD_ADDR" },
		{ FW_CFG_INITRD_SIZE, "INITRD_SIZE" },
		{ FW_CFG_CMDLINE_ADDR, "CMDLINE_ADDR" },
		{ FW_CFG_CMDLINE_SIZE, "CMDLINE_SIZE" },
		{ FW_CFG_SETUP_ADDR, "SETUP_ADDR" },
	};
	for (unsigned i = 0; i < ARRAY_SIZE(items); i++)
		diag("%s (0x%02x): 0x%x", items[i].name, items[i].key,
		     (uint32_t)fw_read_le(items[i].key, 4));
	char cmdline[80];
	fw_select(FW_CFG_CMDLINE_DATA);
	fw_read(cmdline, sizeof(cmdline) - 1);
	cmdline[sizeof(cmdline) - 1] = 0;
	diag("CMDLINE_DATA (0x%02x): \"%s\"", FW_CFG_CMDLINE_DATA, cmdline);
	diag("kernel entry point (this image): 0x%x", (uint32_t)(uintptr_t)_start);
}

void kmain(void)
{
	tap_plan(9);

	char sig[9] = { 0 };
	fw_select(FW_CFG_SIGNATURE);
	fw_read(sig, 8);
	diag("signature \"%s\"", sig);
	tap_ok(!memcmp(sig, "QEMU", 4), "signature item reads \"QEMU\"");
	tap_ok(!memcmp(sig + 4, "\0\0\0\0", 4), "reads past the end of an item return 0");

	char again[4];
	fw_select(FW_CFG_SIGNATURE);
	fw_read(again, 2);
	fw_select(FW_CFG_SIGNATURE);
	fw_read(again, 4);
	tap_ok(!memcmp(again, "QEMU", 4), "writing the selector rewinds the item");

	uint8_t none[8];
	fw_select(FW_CFG_UNUSED_KEY);
	fw_read(none, sizeof(none));
	tap_ok(!memcmp(none, "\0\0\0\0\0\0\0\0", 8), "a selector with no item reads 0");

	uint32_t id = (uint32_t)fw_read_le(FW_CFG_ID, 4);
	diag("ID 0x%x (DMA interface %s)", id, id & FW_CFG_ID_DMA ? "present" : "absent");
	tap_ok(id & FW_CFG_ID_TRADITIONAL, "ID: the traditional interface (bit 0)");

	uint16_t cpus = (uint16_t)fw_read_le(FW_CFG_NB_CPUS, 2);
	uint16_t max_cpus = (uint16_t)fw_read_le(FW_CFG_MAX_CPUS, 2);
	diag("NB_CPUS %u, MAX_CPUS %u", cpus, max_cpus);
	tap_ok(cpus == 1, "NB_CPUS: 1");
	tap_ok(max_cpus >= cpus, "MAX_CPUS: at least NB_CPUS");

	uint64_t ram = fw_read_le(FW_CFG_RAM_SIZE, 8);
	diag("RAM_SIZE 0x%llx", (unsigned long long)ram);
	tap_ok(ram == (uint64_t)RAM_MIB << 20, "RAM_SIZE: %u MiB", RAM_MIB);

	test_file_dir();
	print_boot_items();
}
