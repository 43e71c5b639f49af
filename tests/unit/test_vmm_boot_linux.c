/* Unit tests for the Linux bzImage loader (vmm/src/boot_linux.c): header, e820, placement, zero page. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "boot_linux.h"
#include "test_util.h"
#include "vmm_internal.h"

#define MIB (1ull << 20)

/* ---- a synthetic bzImage ---- */

struct fake_kernel {
	unsigned setup_sects;
	uint16_t version;
	uint8_t loadflags;
	uint16_t xloadflags;
	uint32_t kernel_alignment;
	uint8_t relocatable;
	uint64_t pref_address;
	uint32_t init_size;
	uint32_t cmdline_size;
	uint32_t initrd_addr_max;
	uint32_t payload; /* bytes, a multiple of 16 */
	uint32_t syssize_override; /* 0: payload / 16 */
	const char *magic;
};

static struct fake_kernel fk_default(void)
{
	return (struct fake_kernel){.setup_sects = 7, .version = 0x020f, .loadflags = 0x01, .xloadflags = 0x7f,
				    .kernel_alignment = 2 << 20, .relocatable = 1, .pref_address = 16 * MIB,
				    .init_size = 24 << 20, .cmdline_size = 2047, .initrd_addr_max = 0x7fffffff,
				    .payload = 64 * 1024, .magic = "HdrS"};
}

static void put16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }
static void put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static void put64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }

static uint8_t payload_byte(size_t i) { return (uint8_t)(i * 7 + 3); }

static uint8_t *fk_build(const struct fake_kernel *f, size_t *len)
{
	unsigned ss = f->setup_sects ? f->setup_sects : 4;
	size_t setup = (ss + 1u) * 512u;
	*len = setup + f->payload;
	uint8_t *b = calloc(1, *len);
	assert_non_null(b);
	b[0x1f1] = (uint8_t)f->setup_sects;
	put32(b + 0x1f4, f->syssize_override ? f->syssize_override : f->payload / 16);
	put16(b + 0x1fe, 0xaa55);
	b[0x200] = 0xeb;
	b[0x201] = 0x6a; /* header ends at 0x26c, as in 6.1 */
	memcpy(b + 0x202, f->magic, 4);
	put16(b + 0x206, f->version);
	put16(b + 0x20e, 0x300); /* kernel_version at 0x500 */
	strcpy((char *)b + 0x500, "6.1.0-test (unit@test) #1");
	b[0x211] = f->loadflags;
	put32(b + 0x22c, f->initrd_addr_max);
	put32(b + 0x230, f->kernel_alignment);
	b[0x234] = f->relocatable;
	put16(b + 0x236, f->xloadflags);
	put32(b + 0x238, f->cmdline_size);
	put64(b + 0x258, f->pref_address);
	put32(b + 0x260, f->init_size);
	for (size_t i = 0; i < f->payload; i++)
		b[setup + i] = payload_byte(i);
	return b;
}

/* ---- a VM with only RAM (no KVM) ---- */

static struct vmm_vm *fake_vm(uint64_t mib)
{
	struct vmm_vm *vm = calloc(1, sizeof(*vm));
	assert_non_null(vm);
	vm->machine.mem_mib = mib;
	vm->machine.vcpus = 1;
	vm->mem_size = mib << 20;
	vm->mem = calloc(1, vm->mem_size);
	assert_non_null(vm->mem);
	return vm;
}

static void fake_vm_free(struct vmm_vm *vm)
{
	free(vm->mem);
	free(vm);
}

struct files {
	struct scratch s;
	char kernel[128], initrd[128];
};

static void write_file(const char *path, const void *b, size_t len)
{
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(b, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
}

/* A copy of the test's scratch dir (the test's own frame is gone after a
 * failed assertion), dropped by teardown if the test did not get there. */
static struct scratch live_scratch;
static bool live;

static void files_drop(struct files *fs)
{
	scratch_drop(&fs->s);
	live = false;
}

static int teardown(void **state)
{
	(void)state;
	if (live)
		scratch_drop(&live_scratch);
	live = false;
	return 0;
}

static void files_make(struct files *fs, const struct fake_kernel *f, size_t initrd_len)
{
	assert_int_equal(scratch_make(&fs->s), 0);
	live_scratch = fs->s;
	live = true;
	snprintf(fs->kernel, sizeof(fs->kernel), "%s/bzImage", fs->s.path);
	snprintf(fs->initrd, sizeof(fs->initrd), "%s/initrd", fs->s.path);
	size_t len;
	uint8_t *b = fk_build(f, &len);
	write_file(fs->kernel, b, len);
	free(b);
	uint8_t *ird = malloc(initrd_len + 1);
	assert_non_null(ird);
	for (size_t i = 0; i < initrd_len; i++)
		ird[i] = (uint8_t)(i ^ 0x5a);
	write_file(fs->initrd, ird, initrd_len);
	free(ird);
}

static void expect_err(int rc, sl_error_t *err, int code, const char *needle)
{
	if (rc == 0)
		fail_msg("accepted (want \"%s\")", needle);
	assert_non_null(*err);
	if ((*err)->code != code || !strstr(sl_error_msg(*err), needle))
		fail_msg("got %s \"%s\", want %s containing \"%s\"", sl_error_code_name((*err)->code),
			 sl_error_msg(*err), sl_error_code_name(code), needle);
	sl_error_free(err);
}

/* ---- header parsing ---- */

static void test_parse_fields(void **state)
{
	(void)state;
	struct fake_kernel f = fk_default();
	size_t len;
	uint8_t *b = fk_build(&f, &len);
	struct boot_linux_kernel k;
	sl_error_t err = NULL;
	assert_int_equal(vmm_boot_linux_parse(b, len, len, &k, &err), 0);
	assert_int_equal(k.version, 0x020f);
	assert_int_equal(k.setup_sects, 7);
	assert_int_equal(k.setup_size, 8 * 512);
	assert_int_equal(k.payload_size, 64 * 1024);
	assert_int_equal(k.kernel_alignment, 2 << 20);
	assert_int_equal(k.relocatable, 1);
	assert_int_equal(k.pref_address, 16 * MIB);
	assert_int_equal(k.init_size, 24 << 20);
	assert_int_equal(k.cmdline_size, 2047);
	assert_int_equal(k.initrd_addr_max, 0x7fffffff);
	assert_int_equal(k.hdr_len, 0x26c - 0x1f1);
	assert_string_equal(k.kernel_version, "6.1.0-test (unit@test) #1");
	free(b);

	/* setup_sects 0 means 4 */
	f.setup_sects = 0;
	b = fk_build(&f, &len);
	assert_int_equal(vmm_boot_linux_parse(b, len, len, &k, &err), 0);
	assert_int_equal(k.setup_sects, 4);
	assert_int_equal(k.setup_size, 5 * 512);
	free(b);
}

static void expect_parse_fail(const struct fake_kernel *f, size_t cut, int code, const char *needle)
{
	size_t len;
	uint8_t *b = fk_build(f, &len);
	if (cut)
		len = cut;
	struct boot_linux_kernel k;
	sl_error_t err = NULL;
	expect_err(vmm_boot_linux_parse(b, len, len, &k, &err), &err, code, needle);
	free(b);
}

static void test_parse_rejects(void **state)
{
	(void)state;
	struct fake_kernel f = fk_default();
	expect_parse_fail(&f, 0x200, SL_E_INVALID, "too short");
	f.magic = "HdrX";
	expect_parse_fail(&f, 0, SL_E_INVALID, "not a bzImage: no \"HdrS\"");
	f = fk_default();
	f.version = 0x020b;
	expect_parse_fail(&f, 0, SL_E_UNSUPPORTED, "boot protocol 2.11 is too old");
	f = fk_default();
	f.loadflags = 0;
	expect_parse_fail(&f, 0, SL_E_UNSUPPORTED, "LOADED_HIGH");
	f = fk_default();
	f.xloadflags = 0x7e;
	expect_parse_fail(&f, 0, SL_E_UNSUPPORTED, "no 64-bit entry point");
	f = fk_default();
	f.syssize_override = 64 * 1024 / 16 + 1;
	expect_parse_fail(&f, 0, SL_E_INVALID, "runs past the end of the file");
	f = fk_default();
	f.kernel_alignment = 3 << 20;
	expect_parse_fail(&f, 0, SL_E_INVALID, "not a power of two");
	f = fk_default();
	f.setup_sects = 200; /* setup area larger than the whole file */
	size_t len;
	uint8_t *b = fk_build(&f, &len);
	struct boot_linux_kernel k;
	sl_error_t err = NULL;
	expect_err(vmm_boot_linux_parse(b, 4096, 4096, &k, &err), &err, SL_E_INVALID, "setup area of 200 sectors");
	free(b);
}

/* ---- e820 ---- */

static void expect_entry(const struct boot_e820_entry *e, uint64_t addr, uint64_t size, uint32_t type)
{
	if (e->addr != addr || e->size != size || e->type != type)
		fail_msg("e820 entry 0x%llx+0x%llx type %u, want 0x%llx+0x%llx type %u", (unsigned long long)e->addr,
			 (unsigned long long)e->size, e->type, (unsigned long long)addr, (unsigned long long)size,
			 type);
}

static void test_e820_plain(void **state)
{
	(void)state;
	struct boot_e820_entry t[16];
	unsigned n;
	sl_error_t err = NULL;
	assert_int_equal(vmm_boot_linux_e820(128 * MIB, NULL, t, 16, &n, &err), 0);
	assert_int_equal(n, 3);
	expect_entry(&t[0], 0, 0xa0000, VMM_E820_RAM);
	expect_entry(&t[1], 0xa0000, 0x60000, VMM_E820_RESERVED);
	expect_entry(&t[2], MIB, 127 * MIB, VMM_E820_RAM);
}

static void test_e820_reserved(void **state)
{
	(void)state;
	const struct boot_linux_range r[] = {
		{.gpa = 0xe0000, .len = 0x10000, .e820_type = VMM_E820_ACPI}, /* tables in the BIOS area */
		{.gpa = 120 * MIB, .len = 2 * MIB},                           /* type 0: reserved */
		{.gpa = 128 * MIB - 4096, .len = 4096, .e820_type = VMM_E820_NVS},
		{.gpa = 0xd0000000ull, .len = 0x1000, .e820_type = VMM_E820_RESERVED}, /* above RAM */
	};
	struct boot_linux_opts o = {.reserved = r, .nreserved = 4};
	struct boot_e820_entry t[16];
	unsigned n;
	sl_error_t err = NULL;
	assert_int_equal(vmm_boot_linux_e820(128 * MIB, &o, t, 16, &n, &err), 0);
	assert_int_equal(n, 9);
	expect_entry(&t[0], 0, 0xa0000, VMM_E820_RAM);
	expect_entry(&t[1], 0xa0000, 0x40000, VMM_E820_RESERVED);
	expect_entry(&t[2], 0xe0000, 0x10000, VMM_E820_ACPI);
	expect_entry(&t[3], 0xf0000, 0x10000, VMM_E820_RESERVED);
	expect_entry(&t[4], MIB, 119 * MIB, VMM_E820_RAM);
	expect_entry(&t[5], 120 * MIB, 2 * MIB, VMM_E820_RESERVED);
	expect_entry(&t[6], 122 * MIB, 6 * MIB - 4096, VMM_E820_RAM);
	expect_entry(&t[7], 128 * MIB - 4096, 4096, VMM_E820_NVS);
	expect_entry(&t[8], 0xd0000000ull, 0x1000, VMM_E820_RESERVED);

	/* not enough room */
	expect_err(vmm_boot_linux_e820(128 * MIB, &o, t, 5, &n, &err), &err, SL_E_LIMIT, "more than 5 entries");
}

static void test_e820_rejects(void **state)
{
	(void)state;
	struct boot_e820_entry t[16];
	unsigned n;
	sl_error_t err = NULL;
	struct boot_linux_range r[2] = {{.gpa = 100 * MIB, .len = 2 * MIB}, {.gpa = 101 * MIB, .len = MIB}};
	struct boot_linux_opts o = {.reserved = r, .nreserved = 2};
	expect_err(vmm_boot_linux_e820(128 * MIB, &o, t, 16, &n, &err), &err, SL_E_INVALID, "overlap");
	r[1] = (struct boot_linux_range){.gpa = 0x7800, .len = 0x100};
	expect_err(vmm_boot_linux_e820(128 * MIB, &o, t, 16, &n, &err), &err, SL_E_INVALID, "the zero page");
	r[1] = (struct boot_linux_range){.gpa = 0xe000, .len = 0x1000};
	expect_err(vmm_boot_linux_e820(128 * MIB, &o, t, 16, &n, &err), &err, SL_E_INVALID, "the page tables");
	r[1] = (struct boot_linux_range){.gpa = 0x20100, .len = 0x10};
	expect_err(vmm_boot_linux_e820(128 * MIB, &o, t, 16, &n, &err), &err, SL_E_INVALID, "the command line");
	r[1] = (struct boot_linux_range){.gpa = 200 * MIB, .len = 0};
	expect_err(vmm_boot_linux_e820(128 * MIB, &o, t, 16, &n, &err), &err, SL_E_INVALID, "empty or wraps");
	r[1] = (struct boot_linux_range){.gpa = 200 * MIB, .len = 4096, .e820_type = 1};
	expect_err(vmm_boot_linux_e820(128 * MIB, &o, t, 16, &n, &err), &err, SL_E_INVALID, "e820 type 1");
	o.nreserved = VMM_BOOT_LINUX_MAX_RESERVED + 1;
	expect_err(vmm_boot_linux_e820(128 * MIB, &o, t, 16, &n, &err), &err, SL_E_LIMIT, "reserved ranges");
	struct boot_linux_opts ro = {.rsdp_gpa = 128 * MIB - 20};
	expect_err(vmm_boot_linux_e820(128 * MIB, &ro, t, 16, &n, &err), &err, SL_E_INVALID, "RSDP");
}

/* ---- placement ---- */

static struct boot_linux_kernel parsed(const struct fake_kernel *f)
{
	size_t len;
	uint8_t *b = fk_build(f, &len);
	struct boot_linux_kernel k;
	sl_error_t err = NULL;
	if (vmm_boot_linux_parse(b, len, len, &k, &err) < 0)
		fail_msg("parse: %s", sl_error_msg(err));
	free(b);
	return k;
}

static void test_place(void **state)
{
	(void)state;
	struct fake_kernel f = fk_default();
	struct boot_linux_kernel k = parsed(&f);
	struct boot_linux_layout l;
	sl_error_t err = NULL;

	/* preferred address; initrd at the top of RAM, page aligned */
	assert_int_equal(vmm_boot_linux_place(&k, 128 * MIB, 3 * MIB + 123, NULL, &l, &err), 0);
	assert_int_equal(l.kernel_gpa, 16 * MIB);
	assert_int_equal(l.kernel_span, 24 * MIB);
	assert_int_equal(l.entry, 16 * MIB + 0x200);
	assert_int_equal(l.initrd_gpa % 4096, 0);
	assert_true(l.initrd_gpa + l.initrd_size <= 128 * MIB);
	assert_true(128 * MIB - (l.initrd_gpa + l.initrd_size) < 4096);

	/* initrd_addr_max below the top of RAM */
	k.initrd_addr_max = 64 * MIB - 1;
	assert_int_equal(vmm_boot_linux_place(&k, 128 * MIB, 3 * MIB + 123, NULL, &l, &err), 0);
	assert_true(l.initrd_gpa + l.initrd_size <= 64 * MIB);
	assert_true(l.initrd_gpa >= 40 * MIB);
	k.initrd_addr_max = 0x7fffffff;

	/* reserved ranges at the preferred address and at the top of RAM */
	const struct boot_linux_range r[] = {{.gpa = 17 * MIB, .len = 4096},
					     {.gpa = 124 * MIB, .len = 4 * MIB, .e820_type = VMM_E820_ACPI}};
	struct boot_linux_opts o = {.reserved = r, .nreserved = 2};
	assert_int_equal(vmm_boot_linux_place(&k, 128 * MIB, 3 * MIB + 123, &o, &l, &err), 0);
	assert_int_equal(l.kernel_gpa, 18 * MIB); /* next 2 MiB-aligned address past the hole */
	assert_true(l.initrd_gpa + l.initrd_size <= 124 * MIB);
	assert_int_equal(l.initrd_gpa % 4096, 0);

	/* initrd squeezed below the kernel when above is full */
	assert_int_equal(vmm_boot_linux_place(&k, 48 * MIB, 10 * MIB, NULL, &l, &err), 0);
	assert_int_equal(l.kernel_gpa, 16 * MIB);
	assert_true(l.initrd_gpa + l.initrd_size <= 16 * MIB);
	assert_true(l.initrd_gpa >= MIB);

	/* not relocatable: only the preferred address will do */
	k.relocatable = 0;
	expect_err(vmm_boot_linux_place(&k, 128 * MIB, 0, &o, &l, &err), &err, SL_E_LIMIT, "not relocatable");
	k.relocatable = 1;

	/* too small a VM for init_size */
	expect_err(vmm_boot_linux_place(&k, 16 * MIB, 0, NULL, &l, &err), &err, SL_E_LIMIT,
		   "kernel needs 24 MiB of contiguous RAM");
	/* initrd larger than what is left */
	expect_err(vmm_boot_linux_place(&k, 64 * MIB, 40 * MIB, NULL, &l, &err), &err, SL_E_LIMIT,
		   "initrd of 41943040 bytes does not fit");
}

/* ---- the whole load into a RAM-only VM ---- */

static void test_load(void **state)
{
	(void)state;
	struct fake_kernel f = fk_default();
	struct files fs;
	size_t ird_len = 3 * MIB + 123;
	files_make(&fs, &f, ird_len);
	struct vmm_vm *vm = fake_vm(128);
	const struct boot_linux_range r[] = {{.gpa = 0xe0000, .len = 0x2000, .e820_type = VMM_E820_ACPI}};
	struct boot_linux_opts o = {.rsdp_gpa = 0xe0000, .reserved = r, .nreserved = 1};
	struct boot_linux_layout l;
	sl_error_t err = NULL;
	const char *cl = "console=ttyS0 root=/dev/vda quiet";
	if (vmm_boot_linux_load(vm, fs.kernel, fs.initrd, cl, &o, &l, &err) < 0)
		fail_msg("load: %s", sl_error_msg(err));

	/* kernel payload at its load address */
	assert_int_equal(l.kernel_gpa, 16 * MIB);
	for (size_t i = 0; i < f.payload; i++)
		if (vm->mem[l.kernel_gpa + i] != payload_byte(i))
			fail_msg("payload byte %zu differs", i);
	/* initrd */
	assert_int_equal(l.initrd_size, ird_len);
	assert_int_equal(l.initrd_gpa % 4096, 0);
	assert_true(l.initrd_gpa >= l.kernel_gpa + l.kernel_span);
	for (size_t i = 0; i < ird_len; i += 4093)
		assert_int_equal(vm->mem[l.initrd_gpa + i], (uint8_t)(i ^ 0x5a));

	/* zero page */
	const struct boot_params *bp = (const struct boot_params *)(vm->mem + VMM_BOOT_LINUX_ZERO_PAGE_GPA);
	assert_memory_equal(vm->mem + VMM_BOOT_LINUX_ZERO_PAGE_GPA + 0x202, "HdrS", 4);
	assert_int_equal(bp->hdr.version, 0x020f);
	assert_int_equal(bp->hdr.type_of_loader, 0xff);
	assert_int_equal(bp->hdr.vid_mode, 0xffff);
	assert_int_equal(bp->hdr.loadflags & 1, 1);
	assert_int_equal(bp->hdr.init_size, 24 << 20);
	assert_int_equal(bp->hdr.cmd_line_ptr, VMM_BOOT_LINUX_CMDLINE_GPA);
	assert_int_equal(bp->ext_cmd_line_ptr, 0);
	assert_int_equal(bp->hdr.ramdisk_image, l.initrd_gpa);
	assert_int_equal(bp->hdr.ramdisk_size, ird_len);
	assert_int_equal(bp->ext_ramdisk_image, 0);
	assert_int_equal(bp->acpi_rsdp_addr, 0xe0000);
	assert_int_equal(bp->sentinel, 0);
	assert_string_equal((const char *)vm->mem + VMM_BOOT_LINUX_CMDLINE_GPA, cl);
	assert_int_equal(bp->e820_entries, 5);
	assert_int_equal(l.e820_entries, 5);
	expect_entry(&bp->e820_table[0], 0, 0xa0000, VMM_E820_RAM);
	expect_entry(&bp->e820_table[2], 0xe0000, 0x2000, VMM_E820_ACPI);
	expect_entry(&bp->e820_table[4], MIB, 127 * MIB, VMM_E820_RAM);

	/* GDT: __BOOT_CS 0x10 64-bit code, __BOOT_DS 0x18 data */
	uint64_t gdt[4];
	memcpy(gdt, vm->mem + VMM_GDT_GPA, sizeof(gdt));
	assert_int_equal(gdt[2], 0x00af9b000000ffffull);
	assert_int_equal(gdt[3], 0x00cf93000000ffffull);
	/* page tables: 4 GiB identity map of 2 MiB pages */
	uint64_t e;
	memcpy(&e, vm->mem + VMM_PML4_GPA, 8);
	assert_int_equal(e, VMM_PDPT_GPA | 3);
	memcpy(&e, vm->mem + VMM_PDPT_GPA + 3 * 8, 8);
	assert_int_equal(e, (VMM_PD_GPA + 3 * 4096) | 3);
	memcpy(&e, vm->mem + VMM_PD_GPA + 2047 * 8, 8);
	assert_int_equal(e, (2047ull << 21) | 0x83);
	assert_int_equal(l.entry, l.kernel_gpa + 0x200);

	/* NULL cmdline gives the default; no initrd leaves the fields zero */
	memset(vm->mem, 0, vm->mem_size);
	if (vmm_boot_linux_load(vm, fs.kernel, NULL, NULL, NULL, &l, &err) < 0)
		fail_msg("load: %s", sl_error_msg(err));
	assert_string_equal((const char *)vm->mem + VMM_BOOT_LINUX_CMDLINE_GPA, VMM_BOOT_LINUX_DEFAULT_CMDLINE);
	assert_int_equal(bp->hdr.ramdisk_image, 0);
	assert_int_equal(bp->hdr.ramdisk_size, 0);
	assert_int_equal(bp->acpi_rsdp_addr, 0);
	assert_int_equal(bp->e820_entries, 3);

	fake_vm_free(vm);
	files_drop(&fs);
}

static void test_load_rejects(void **state)
{
	(void)state;
	struct fake_kernel f = fk_default();
	f.cmdline_size = 16;
	struct files fs;
	files_make(&fs, &f, 4096);
	struct vmm_vm *vm = fake_vm(64);
	struct boot_linux_layout l;
	sl_error_t err = NULL;

	expect_err(vmm_boot_linux_load(vm, fs.kernel, NULL, "0123456789abcdefX", NULL, &l, &err), &err, SL_E_LIMIT,
		   "accepts at most 16");
	assert_int_equal(vmm_boot_linux_load(vm, fs.kernel, NULL, "0123456789abcdef", NULL, &l, &err), 0);

	char missing[160];
	snprintf(missing, sizeof(missing), "%s/nope", fs.s.path);
	expect_err(vmm_boot_linux_load(vm, missing, NULL, "", NULL, &l, &err), &err, SL_E_NOT_FOUND, "no such file");
	expect_err(vmm_boot_linux_load(vm, fs.s.path, NULL, "", NULL, &l, &err), &err, SL_E_INVALID,
		   "not a regular file");
	expect_err(vmm_boot_linux_load(vm, fs.kernel, missing, "", NULL, &l, &err), &err, SL_E_NOT_FOUND, "initrd");
	/* the initrd file given as kernel: not a bzImage */
	expect_err(vmm_boot_linux_load(vm, fs.initrd, NULL, "", NULL, &l, &err), &err, SL_E_INVALID,
		   "not a bzImage");

	/* an initrd bigger than RAM */
	char big[160];
	snprintf(big, sizeof(big), "%s/big", fs.s.path);
	FILE *bf = fopen(big, "wb");
	assert_non_null(bf);
	assert_int_equal(fclose(bf), 0);
	expect_err(vmm_boot_linux_load(vm, fs.kernel, big, "", NULL, &l, &err), &err, SL_E_INVALID, "is empty");
	assert_int_equal(truncate(big, 65 * MIB), 0);
	expect_err(vmm_boot_linux_load(vm, fs.kernel, big, "", NULL, &l, &err), &err, SL_E_LIMIT, "more than RAM");
	assert_int_equal(truncate(big, 40 * MIB), 0);
	expect_err(vmm_boot_linux_load(vm, fs.kernel, big, "", NULL, &l, &err), &err, SL_E_LIMIT, "does not fit");

	/* a kernel bigger than RAM */
	struct vmm_vm *tiny = fake_vm(20);
	expect_err(vmm_boot_linux_load(tiny, fs.kernel, NULL, "", NULL, &l, &err), &err, SL_E_LIMIT,
		   "kernel needs 24 MiB");
	fake_vm_free(tiny);
	fake_vm_free(vm);
	files_drop(&fs);
}

static void test_rsdp_old_protocol(void **state)
{
	(void)state;
	struct fake_kernel f = fk_default();
	f.version = 0x020c; /* 2.12: no acpi_rsdp_addr field */
	struct files fs;
	files_make(&fs, &f, 16);
	struct vmm_vm *vm = fake_vm(64);
	struct boot_linux_layout l;
	sl_error_t err = NULL;
	struct boot_linux_opts o = {.rsdp_gpa = 0x200000};
	expect_err(vmm_boot_linux_load(vm, fs.kernel, NULL, NULL, &o, &l, &err), &err, SL_E_UNSUPPORTED,
		   "has no acpi_rsdp_addr");
	o.rsdp_gpa = 0xf0000; /* where such a kernel scans */
	assert_int_equal(vmm_boot_linux_load(vm, fs.kernel, NULL, NULL, &o, &l, &err), 0);
	const struct boot_params *bp = (const struct boot_params *)(vm->mem + VMM_BOOT_LINUX_ZERO_PAGE_GPA);
	assert_int_equal(bp->acpi_rsdp_addr, 0); /* not a field of 2.12 */
	fake_vm_free(vm);
	files_drop(&fs);
}

/* ---- Debian's kernel (scripts/guest-kernel) ---- */

static void guest_kernel_path(char *out, size_t n)
{
	const char *env = getenv("SPORE_GUEST_KERNEL");
	if (env && *env) {
		snprintf(out, n, "%s", env);
		return;
	}
	/* The source path is absolute in CMake builds; the cache sits at
	 * <repo>/build/guest-kernel. */
	const char *me = __FILE__, *tail = strstr(me, "tests/unit/test_vmm_boot_linux.c");
	int root = tail ? (int)(tail - me) : 0;
	snprintf(out, n, "%.*sbuild/guest-kernel/vmlinuz", root, me);
}

static void test_debian_vmlinuz(void **state)
{
	(void)state;
	char path[512];
	guest_kernel_path(path, sizeof(path));
	struct stat st;
	if (stat(path, &st) < 0) {
		fprintf(stderr,
			"\n*** SKIPPED: no Debian guest kernel at %s\n"
			"*** get it with: scripts/guest-kernel   (or set SPORE_GUEST_KERNEL=/path/to/vmlinuz)\n\n",
			path);
		skip();
	}
	_cleanup_free_ char *img = NULL;
	size_t len;
	sl_error_t err = NULL;
	if (sl_read_path(path, 64 << 20, &img, &len, &err) < 0)
		fail_msg("%s", sl_error_msg(err));
	struct boot_linux_kernel k;
	if (vmm_boot_linux_parse((const uint8_t *)img, len, len, &k, &err) < 0)
		fail_msg("%s: %s", path, sl_error_msg(err));
	printf("%s: protocol %u.%02u, setup_sects %u, payload %llu bytes, file %zu bytes, init_size 0x%x, "
	       "pref 0x%llx, align 0x%x, cmdline_size %u, version \"%s\"\n",
	       path, k.version >> 8, k.version & 0xff, k.setup_sects, (unsigned long long)k.payload_size, len,
	       k.init_size, (unsigned long long)k.pref_address, k.kernel_alignment, k.cmdline_size,
	       k.kernel_version);
	assert_true(k.version >= 0x020f);
	assert_true(k.relocatable);
	assert_true(k.xloadflags & XLF_KERNEL_64);
	/* setup + payload is the whole image but a signature (a Debian kernel
	 * is signed for Secure Boot; the signature trails the payload). */
	assert_true(k.setup_size + k.payload_size <= len);
	assert_true(len - (k.setup_size + k.payload_size) < 16384);
	assert_true(k.init_size >= k.payload_size);
	/* `file` prints the same version string */
	char cmd[600];
	snprintf(cmd, sizeof(cmd), "file -b '%s' 2>/dev/null", path);
	FILE *p = popen(cmd, "r");
	char out[1024] = "";
	if (p) {
		if (!fgets(out, sizeof(out), p))
			out[0] = 0;
		pclose(p);
	}
	if (strstr(out, "version ")) {
		printf("file: %s", out);
		assert_non_null(strstr(out, k.kernel_version));
	} else {
		printf("`file` not available: version string not cross-checked\n");
	}

	/* and the loader takes it: a 256 MiB VM */
	struct vmm_vm *vm = fake_vm(256);
	struct boot_linux_layout l;
	if (vmm_boot_linux_load(vm, path, NULL, NULL, NULL, &l, &err) < 0)
		fail_msg("load %s: %s", path, sl_error_msg(err));
	assert_int_equal(l.kernel_gpa, k.pref_address);
	assert_memory_equal(vm->mem + l.kernel_gpa, img + k.setup_size, k.payload_size);
	fake_vm_free(vm);
}

/* ---- the vCPU entry state, on real KVM (skipped without /dev/kvm) ---- */

static void test_kvm_entry_state(void **state)
{
	(void)state;
	int kfd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kfd < 0) {
		fprintf(stderr, "\n*** SKIPPED: /dev/kvm unavailable: vCPU entry state not checked\n\n");
		skip();
	}
	close(kfd);
	struct fake_kernel f = fk_default();
	struct files fs;
	files_make(&fs, &f, 8192);
	/* startup_64 stand-in: reads the zero page through rsi and the
	 * command line through cmd_line_ptr, so running it checks long mode,
	 * the GDT, the identity map and rsi together. */
	static const uint8_t code[] = {
		0x8b, 0x86, 0x02, 0x02, 0x00, 0x00, /* mov eax, [rsi+0x202]  "HdrS" */
		0x66, 0xba, 0x10, 0x05,             /* mov dx, 0x510 */
		0xef,                               /* out dx, eax */
		0x8b, 0x8e, 0x28, 0x02, 0x00, 0x00, /* mov ecx, [rsi+0x228]  cmd_line_ptr */
		0x8b, 0x01,                         /* mov eax, [rcx] */
		0xef,                               /* out dx, eax */
		0xf4,                               /* hlt */
	};
	size_t klen;
	uint8_t *kimg = fk_build(&f, &klen);
	memcpy(kimg + (f.setup_sects + 1) * 512 + 0x200, code, sizeof(code));
	write_file(fs.kernel, kimg, klen);
	free(kimg);
	struct vmm_machine m = {.mem_mib = 128, .vcpus = 2};
	struct vmm_console con = {.fd = -1};
	struct vmm_vm *vm = NULL;
	sl_error_t err = NULL;
	if (vmm_create(&m, &con, &vm, &err) < 0)
		fail_msg("vmm_create: %s", sl_error_msg(err));
	if (vmm_boot_linux(vm, fs.kernel, fs.initrd, NULL, NULL, &err) < 0)
		fail_msg("vmm_boot_linux: %s", sl_error_msg(err));

	struct kvm_sregs sr;
	struct kvm_regs r;
	assert_int_equal(ioctl(vm->vcpus[0].fd, KVM_GET_SREGS, &sr), 0);
	assert_int_equal(ioctl(vm->vcpus[0].fd, KVM_GET_REGS, &r), 0);
	assert_int_equal(r.rip, 16 * MIB + 0x200);
	assert_int_equal(r.rsi, VMM_BOOT_LINUX_ZERO_PAGE_GPA);
	assert_int_equal(r.rflags & 0x200, 0); /* IF clear */
	assert_int_equal(sr.cs.selector, 0x10);
	assert_int_equal(sr.cs.l, 1);
	assert_int_equal(sr.ds.selector, 0x18);
	assert_int_equal(sr.ss.selector, 0x18);
	assert_int_equal(sr.es.selector, 0x18);
	assert_int_equal(sr.cr0 & 0x80000001u, 0x80000001u); /* PG | PE */
	assert_int_equal(sr.cr4 & 0x20, 0x20);                /* PAE */
	assert_int_equal(sr.efer & 0x500, 0x500);             /* LMA | LME */
	assert_int_equal(sr.cr3, VMM_PML4_GPA);
	assert_int_equal(sr.gdt.base, VMM_GDT_GPA);
	struct kvm_mp_state mp;
	assert_int_equal(ioctl(vm->vcpus[0].fd, KVM_GET_MP_STATE, &mp), 0);
	assert_int_equal(mp.mp_state, KVM_MP_STATE_RUNNABLE);
	assert_int_equal(ioctl(vm->vcpus[1].fd, KVM_GET_MP_STATE, &mp), 0);
	assert_int_equal(mp.mp_state, KVM_MP_STATE_UNINITIALIZED);

	/* run the BSP to the two port writes */
	static const char *const want[] = {"HdrS", "cons"};
	for (unsigned i = 0; i < 2; i++) {
		struct kvm_run *run = vm->vcpus[0].run;
		int rc;
		do
			rc = ioctl(vm->vcpus[0].fd, KVM_RUN, 0);
		while (rc < 0 && errno == EINTR);
		assert_int_equal(rc, 0);
		if (run->exit_reason != KVM_EXIT_IO)
			fail_msg("exit %u, want KVM_EXIT_IO", run->exit_reason);
		assert_int_equal(run->io.port, 0x510);
		assert_int_equal(run->io.size, 4);
		assert_memory_equal((uint8_t *)run + run->io.data_offset, want[i], 4);
	}
	vmm_destroy(vm);
	files_drop(&fs);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_parse_fields, teardown),
		cmocka_unit_test_teardown(test_parse_rejects, teardown),
		cmocka_unit_test_teardown(test_e820_plain, teardown),
		cmocka_unit_test_teardown(test_e820_reserved, teardown),
		cmocka_unit_test_teardown(test_e820_rejects, teardown),
		cmocka_unit_test_teardown(test_place, teardown),
		cmocka_unit_test_teardown(test_load, teardown),
		cmocka_unit_test_teardown(test_load_rejects, teardown),
		cmocka_unit_test_teardown(test_rsdp_old_protocol, teardown),
		cmocka_unit_test_teardown(test_debian_vmlinuz, teardown),
		cmocka_unit_test_teardown(test_kvm_entry_state, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
