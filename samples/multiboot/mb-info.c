// SPDX-License-Identifier: GPL-2.0
/*
 * mb-info: what the Multiboot loader passes.  The runner (kernels.list) boots it with the
 * command line CMDLINE_ARGS and the modules mod-a.bin (with MOD_A_ARGS) and mod-b.txt,
 * which the Makefile builds; the contents checked here are the Makefile's recipes.
 */
#include "mb.h"

/* Must match the `append` and `module` lines of mb-info in kernels.list. */
#define CMDLINE_ARGS	"mbtest alpha=1 beta=\"two words\" gamma"
#define MOD_A_NAME	"mod-a.bin"
#define MOD_A_ARGS	"argsA x=1"
#define MOD_A_SIZE	5000u
#define MOD_B_NAME	"mod-b.txt"
#define MOD_B_TEXT	"shadowvm multiboot module B\n"

#define MIB		(1024u * 1024u)
#define RAM_MIB		128u		/* kernels.list runs every kernel with 128 MiB */

static const struct mb_info *mbi;

/* The file name of a path (after the last '/'). */
static const char *base_name(const char *path, size_t len, size_t *name_len)
{
	size_t start = 0;
	for (size_t i = 0; i < len; i++)
		if (path[i] == '/')
			start = i + 1;
	*name_len = len - start;
	return path + start;
}

/*
 * A Multiboot string "IMAGE ARGS" (GRUB and QEMU put the file's path first): checks that
 * the first word names `name` and the rest is `args`; prints it on a diagnostic line.
 */
static void check_named_string(const char *what, uint32_t addr, const char *name, const char *args)
{
	const char *s = (const char *)addr;
	if (!addr) {
		tap_ok(0, "%s: begins with the file name %s", what, name);
		tap_ok(0, "%s: arguments are as passed", what);
		return;
	}
	diag("%s: \"%s\"", what, s);
	size_t word = 0;
	while (s[word] && s[word] != ' ')
		word++;
	size_t nlen;
	const char *n = base_name(s, word, &nlen);
	tap_ok(nlen == strlen(name) && !memcmp(n, name, nlen), "%s: begins with the file name %s",
	       what, name);
	const char *rest = s[word] ? s + word + 1 : s + word;
	if (!tap_ok(!strcmp(rest, args), "%s: arguments are as passed", what))
		diag("expected \"%s\", seen \"%s\"", args, rest);
}

/* Does [start, end) overlap [a, b)? */
static int overlaps(uint64_t start, uint64_t end, uint64_t a, uint64_t b)
{
	return start < b && a < end;
}

static int mmap_valid;

/* Is [start, end) inside one usable (type 1) region of the memory map? */
static int in_usable_ram(uint64_t start, uint64_t end)
{
	if (!mmap_valid)
		return 0;
	for (uint32_t off = 0; off < mbi->mmap_length;) {
		const struct mb_mmap_entry *e = (const void *)(mbi->mmap_addr + off);
		if (e->type == 1 && e->addr <= start && end <= e->addr + e->len)
			return 1;
		off += e->size + 4;
	}
	return 0;
}

static void test_memory_map(void)
{
	int have = (mbi->flags & MBI_MMAP) && mbi->mmap_addr;
	uint32_t n = 0, bad = 0;
	uint64_t usable = 0;
	int low_ok = 0, high_ok = 0, hole_clean = 1;

	for (uint32_t off = 0; have && off < mbi->mmap_length; n++) {
		const struct mb_mmap_entry *e = (const void *)(mbi->mmap_addr + off);
		diag("mmap[%u]: size %u addr 0x%llx len 0x%llx type %u", n, e->size,
		     (unsigned long long)e->addr, (unsigned long long)e->len, e->type);
		if (e->size < 20 || off + e->size + 4 > mbi->mmap_length || n > 128) {
			bad++;
			break;
		}
		off += e->size + 4;
		if (e->type != 1)
			continue;
		uint64_t end = e->addr + e->len;
		usable += e->len;
		if (e->addr == 0 && e->len >= 512 * 1024 && end <= 640 * 1024)
			low_ok = 1;
		if (e->addr == MIB && e->len >= (RAM_MIB - 8) * MIB && end <= RAM_MIB * MIB)
			high_ok = 1;
		if (overlaps(e->addr, end, 640 * 1024, MIB))
			hole_clean = 0;
	}
	mmap_valid = have && !bad && n > 0;
	tap_ok(mmap_valid, "memory map: present and well-formed");
	tap_ok(low_ok, "memory map: usable RAM from 0, ending at or below 640 KiB");
	tap_ok(high_ok, "memory map: usable RAM from 1 MiB covering all but at most 8 MiB of the rest");
	tap_ok(mmap_valid && hole_clean, "memory map: nothing usable between 640 KiB and 1 MiB");
	diag("usable RAM in the map: %llu KiB", (unsigned long long)(usable >> 10));
	tap_ok(mmap_valid && usable <= RAM_MIB * MIB && usable >= (RAM_MIB - 8) * MIB,
	       "memory map: usable RAM adds up to the machine's (within 8 MiB)");
}

static void test_modules(void)
{
	const struct mb_module *mods = (const void *)mbi->mods_addr;
	int have = (mbi->flags & MBI_MODS) && mods;
	diag("mods_count %u, mods_addr 0x%x", mbi->mods_count, mbi->mods_addr);
	if (!tap_ok(have && mbi->mods_count == 2, "modules: two")) {
		bail_out("the modules are missing: boot with the modules kernels.list names");
	}
	uint64_t img_start = (uintptr_t)__image_start, img_end = (uintptr_t)__bss_end;
	int placed_ok = 1, aligned = 1;
	for (uint32_t i = 0; i < 2; i++) {
		const struct mb_module *m = &mods[i];
		diag("module %u: 0x%x-0x%x", i, m->mod_start, m->mod_end);
		if (m->mod_start & 0xfff)
			aligned = 0;
		if (m->mod_end < m->mod_start || overlaps(m->mod_start, m->mod_end, img_start, img_end) ||
		    !in_usable_ram(m->mod_start, m->mod_end))
			placed_ok = 0;
	}
	if (overlaps(mods[0].mod_start, mods[0].mod_end, mods[1].mod_start, mods[1].mod_end))
		placed_ok = 0;
	tap_ok(aligned, "modules: page-aligned (header flag 0)");
	tap_ok(placed_ok, "modules: in usable RAM, apart from the kernel and each other");

	const struct mb_module *a = &mods[0], *b = &mods[1];
	check_named_string("module 0 string", a->string, MOD_A_NAME, MOD_A_ARGS);
	uint32_t size = a->mod_end - a->mod_start, wrong = 0;
	const uint8_t *p = (const uint8_t *)a->mod_start;
	if (size == MOD_A_SIZE)
		for (uint32_t i = 0; i < size; i++)
			wrong += p[i] != (uint8_t)(i * 31 + 7);
	diag("module 0: %u bytes, crc32 0x%08x, first bytes %02x %02x %02x %02x", size,
	     crc32(p, size), p[0], p[1], p[2], p[3]);
	if (!tap_ok(size == MOD_A_SIZE && !wrong, "module 0: %u bytes of the expected pattern", MOD_A_SIZE))
		diag("%u wrong bytes", wrong);

	check_named_string("module 1 string", b->string, MOD_B_NAME, "");
	size = b->mod_end - b->mod_start;
	p = (const uint8_t *)b->mod_start;
	diag("module 1: %u bytes, crc32 0x%08x", size, crc32(p, size));
	tap_ok(size == strlen(MOD_B_TEXT) && !memcmp(p, MOD_B_TEXT, size), "module 1: the expected text");
}

void kmain(void)
{
	tap_plan(22);
	diag("eax 0x%x, ebx 0x%x", mb_magic, mb_info_addr);
	if (!tap_ok(mb_magic == MB_LOADER_MAGIC, "EAX holds the Multiboot magic 0x2badb002"))
		bail_out("not booted by a Multiboot loader");
	mbi = (const struct mb_info *)mb_info_addr;
	uint64_t img_start = (uintptr_t)__image_start, img_end = (uintptr_t)__bss_end;
	diag("image 0x%llx-0x%llx (bss from 0x%x), entry 0x%x", (unsigned long long)img_start,
	     (unsigned long long)img_end, (unsigned)(uintptr_t)__bss_start, (unsigned)(uintptr_t)_start);
	tap_ok(!bss_dirty_on_entry, "the loader zeroed .bss");
	tap_ok(mbi && !overlaps(mb_info_addr, mb_info_addr + sizeof(*mbi), img_start, img_end),
	       "EBX points to the information structure, outside the kernel");
	if (!mbi)
		bail_out("no information structure");

	diag("flags 0x%x, boot_device 0x%x, loader \"%s\"", mbi->flags, mbi->boot_device,
	     (mbi->flags & MBI_LOADER_NAME) && mbi->boot_loader_name ?
	     (const char *)mbi->boot_loader_name : "");
	uint32_t want = MBI_MEM | MBI_CMDLINE | MBI_MODS | MBI_MMAP;
	tap_ok((mbi->flags & want) == want, "flags: mem, cmdline, mods and mmap are valid");

	diag("mem_lower %u KiB, mem_upper %u KiB", mbi->mem_lower, mbi->mem_upper);
	tap_ok(mbi->mem_lower >= 512 && mbi->mem_lower <= 640, "mem_lower: 512 to 640 KiB");
	tap_ok(mbi->mem_upper >= (RAM_MIB - 8) * 1024 && mbi->mem_upper <= (RAM_MIB - 1) * 1024,
	       "mem_upper: the RAM above 1 MiB of a %u MiB machine (within 8 MiB)", RAM_MIB);

	test_memory_map();

	check_named_string("command line", (mbi->flags & MBI_CMDLINE) ? mbi->cmdline : 0, IMAGE_NAME,
			   CMDLINE_ARGS);
	test_modules();
}
