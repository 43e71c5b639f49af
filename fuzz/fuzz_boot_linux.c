/* libFuzzer target: the Linux bzImage/initrd loader (vmm_boot_linux_load_fd) on a file's bytes, into guarded guest RAM. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "boot_linux.h"
#include "fuzz_ram.h"
#include "vmm_internal.h"

/* Input: 11 bytes of machine and boot options, then the kernel file.
 *   [0]     guest RAM: 2, 16 or 128 MiB (byte % 3); one fixed mapping
 *           holds the largest, RAM ends at its guard page
 *   [1]     bit 0 an initrd; bit 1 one reserved range (as the ACPI tables
 *           are); bit 2 an RSDP address (the range's start)
 *   [2..3]  initrd size: (v & 0xfff) << (v >> 12), 1 byte .. 128 MiB; its
 *           first 4 KiB a known pattern, the rest zeros
 *   [4..7]  reserved range start (4 KiB-aligned)   [8..9] its pages - 1
 *   [10]    command line length / 16
 * Both files are memfds, read by the same code as `spore run --kernel
 * --initrd`. Checked on every input:
 *  - a refusal writes no guest memory and says what was wrong;
 *  - an accepted image parses (vmm_boot_linux_parse) to the same header;
 *  - the kernel (init_size span) and initrd lie in RAM at or above 1 MiB,
 *    inside RAM entries of the e820 map, apart from each other and from
 *    the reserved range; the initrd below initrd_addr_max and 4 GiB;
 *  - the only bytes written are the kernel payload, the initrd, the zero
 *    page, the command line, the GDT and the page tables, and they hold
 *    the file's bytes, the pattern, the command line, and a zero page whose
 *    setup header is the file's but for the loader's own fields. */

#define HDR 11u
#define MIB (1ull << 20)
#define CAP (128 * MIB)
#define PATTERN 4096u
#define NAME_K "fuzz-bzImage"
#define NAME_I "fuzz-initrd"
#define HEAD_MAX (256u * 512u)

static struct fuzz_ram ram;
static struct vmm_vm *vm;
static int kfd, ifd;
static uint8_t pattern[PATTERN];
static char cmdline[4096];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc, (void)argv;
	fuzz_ram_init(&ram, CAP);
	vm = calloc(1, sizeof(*vm));
	kfd = memfd_create("fuzz-kernel", MFD_CLOEXEC);
	ifd = memfd_create("fuzz-initrd", MFD_CLOEXEC);
	if (!vm || kfd < 0 || ifd < 0)
		abort();
	vm->kvm_fd = vm->vm_fd = vm->event_fd = -1;
	for (unsigned i = 0; i < PATTERN; i++)
		pattern[i] = (uint8_t)(i * 131 + 7) | 1; /* never zero: zeros are what unwritten RAM holds */
	for (unsigned i = 0; i < sizeof(cmdline) - 1; i++)
		cmdline[i] = (char)('a' + i % 26);
	return 0;
}

static void put_file(int fd, const uint8_t *p, size_t n, uint64_t size)
{
	if (ftruncate(fd, 0) < 0 || (n && pwrite(fd, p, n, 0) != (ssize_t)n) || ftruncate(fd, (off_t)size) < 0)
		abort();
}

static bool overlaps(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
	return a < b + blen && b < a + alen;
}

/* [a, a+len) lies inside one e820 entry of type t. */
static bool in_e820(const struct boot_params *bp, uint64_t a, uint64_t len, uint32_t t)
{
	for (unsigned i = 0; i < bp->e820_entries; i++) {
		const struct boot_e820_entry *e = &bp->e820_table[i];
		if (e->type == t && a >= e->addr && a - e->addr < e->size && len <= e->size - (a - e->addr))
			return true;
	}
	return false;
}

static void check_e820(const struct boot_params *bp, uint64_t mem_size)
{
	if (bp->e820_entries == 0 || bp->e820_entries > E820_MAX_ENTRIES_ZEROPAGE)
		__builtin_trap();
	uint64_t ram_bytes = 0;
	for (unsigned i = 0; i < bp->e820_entries; i++) {
		const struct boot_e820_entry *e = &bp->e820_table[i];
		if (e->size == 0 || e->addr + e->size < e->addr || e->type < 1 || e->type > 4)
			__builtin_trap();
		if (i && e->addr < bp->e820_table[i - 1].addr + bp->e820_table[i - 1].size)
			__builtin_trap(); /* unsorted or overlapping */
		if (e->type == 1) {
			if (e->addr + e->size > mem_size)
				__builtin_trap(); /* RAM that is not there */
			ram_bytes += e->size;
		}
	}
	if (ram_bytes > mem_size)
		__builtin_trap();
}

/* The setup header in the zero page is the file's, but for what the loader sets. */
static void check_zero_page(const struct boot_params *bp, const uint8_t *file, const struct boot_linux_kernel *k)
{
	static const struct {
		unsigned off, len;
	} own[] = {
		{0x1fa, 2}, /* vid_mode */
		{0x210, 1}, /* type_of_loader */
		{0x214, 4}, /* code32_start */
		{0x218, 4}, /* ramdisk_image */
		{0x21c, 4}, /* ramdisk_size */
		{0x228, 4}, /* cmd_line_ptr */
	};
	const uint8_t *zp = (const uint8_t *)bp;
	if (bp->sentinel != 0)
		__builtin_trap();
	for (unsigned off = 0x1f1; off < 0x1f1 + k->hdr_len; off++) {
		bool mine = false;
		for (size_t i = 0; i < sizeof(own) / sizeof(own[0]); i++)
			mine |= off >= own[i].off && off < own[i].off + own[i].len;
		if (!mine && zp[off] != file[off])
			__builtin_trap();
	}
	for (unsigned off = 0x1f1 + k->hdr_len; off < 0x1f1 + sizeof(struct setup_header); off++) {
		bool mine = false;
		for (size_t i = 0; i < sizeof(own) / sizeof(own[0]); i++)
			mine |= off >= own[i].off && off < own[i].off + own[i].len;
		if (!mine && zp[off] != 0)
			__builtin_trap(); /* header fields past the file's header stay zero */
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < HDR || size - HDR > (4u << 20))
		return 0;
	static const uint64_t mems[] = {2 * MIB, 16 * MIB, 128 * MIB};
	uint64_t mem_size = mems[data[0] % 3];
	bool with_initrd = data[1] & 1, with_reserved = data[1] & 2, with_rsdp = data[1] & 4;
	uint16_t iv = (uint16_t)(data[2] | data[3] << 8);
	uint64_t isize = (uint64_t)((iv & 0xfff) ? (iv & 0xfff) : 1) << (iv >> 12);
	uint32_t rgpa;
	memcpy(&rgpa, data + 4, 4);
	struct boot_linux_range r = {.gpa = rgpa & ~0xfffu,
				     .len = ((uint64_t)(data[8] | data[9] << 8) + 1) * FUZZ_PAGE,
				     .e820_type = VMM_E820_ACPI};
	struct boot_linux_opts o = {.rsdp_gpa = with_rsdp ? r.gpa : 0,
				    .reserved = with_reserved ? &r : NULL,
				    .nreserved = with_reserved ? 1 : 0};
	size_t clen = (size_t)data[10] * 16;
	char cl[sizeof(cmdline)];
	memcpy(cl, cmdline, clen);
	cl[clen] = 0;
	const uint8_t *kernel = data + HDR;
	size_t klen = size - HDR;

	fuzz_ram_reset(&ram, mem_size);
	vm->mem = ram.mem;
	vm->mem_size = mem_size;
	put_file(kfd, kernel, klen, klen);
	if (with_initrd)
		put_file(ifd, pattern, isize < PATTERN ? isize : PATTERN, isize);

	struct boot_linux_layout l;
	sl_error_t err = NULL;
	int rc = vmm_boot_linux_load_fd(vm, kfd, NAME_K, with_initrd ? ifd : -1, NAME_I, cl, &o, &l, &err);
	if (rc < 0) {
		if (!err || !sl_error_msg(err)[0])
			__builtin_trap();
		sl_error_free(&err);
		fuzz_ram_check(&ram, NULL, 0); /* refused before anything was copied */
		return 0;
	}

	struct boot_linux_kernel k;
	if (vmm_boot_linux_parse(kernel, klen < HEAD_MAX ? klen : HEAD_MAX, klen, &k, &err) < 0)
		__builtin_trap(); /* loaded what the parser refuses */
	if (clen > k.cmdline_size)
		__builtin_trap();

	/* Placement. */
	uint64_t span = l.kernel_span;
	if (l.kernel_gpa < VMM_LOW_RESERVED || l.kernel_gpa > mem_size || span > mem_size - l.kernel_gpa ||
	    span < k.init_size || span < k.payload_size || l.entry != l.kernel_gpa + 0x200)
		__builtin_trap();
	if (k.relocatable && l.kernel_gpa != k.pref_address && k.kernel_alignment > FUZZ_PAGE &&
	    l.kernel_gpa % k.kernel_alignment)
		__builtin_trap();
	if (!k.relocatable && l.kernel_gpa != k.pref_address)
		__builtin_trap();
	if (with_reserved && overlaps(l.kernel_gpa, span, r.gpa, r.len))
		__builtin_trap();
	if (with_initrd) {
		uint64_t top = (uint64_t)k.initrd_addr_max + 1;
		if (l.initrd_size != isize || l.initrd_gpa < VMM_LOW_RESERVED || l.initrd_gpa > mem_size ||
		    isize > mem_size - l.initrd_gpa || l.initrd_gpa + isize > top || l.initrd_gpa + isize > (4ull << 30) ||
		    l.initrd_gpa % FUZZ_PAGE || overlaps(l.initrd_gpa, isize, l.kernel_gpa, span) ||
		    (with_reserved && overlaps(l.initrd_gpa, isize, r.gpa, r.len)))
			__builtin_trap();
	} else if (l.initrd_gpa || l.initrd_size) {
		__builtin_trap();
	}

	/* What was written, and nothing else. */
	struct fuzz_range allowed[] = {
		{l.kernel_gpa, k.payload_size},
		{l.initrd_gpa, l.initrd_size},
		{VMM_BOOT_LINUX_ZERO_PAGE_GPA, FUZZ_PAGE},
		{VMM_BOOT_LINUX_CMDLINE_GPA, clen + 1},
		{VMM_GDT_GPA, 32},
		{VMM_PML4_GPA, VMM_PD_GPA + VMM_BOOT_LINUX_PD_PAGES * FUZZ_PAGE - VMM_PML4_GPA},
	};
	for (size_t i = 2; i < sizeof(allowed) / sizeof(allowed[0]); i++)
		if (allowed[i].gpa + allowed[i].len > 0xa0000 ||
		    (with_reserved && overlaps(allowed[i].gpa, allowed[i].len, r.gpa, r.len)))
			__builtin_trap(); /* boot structures stay in low RAM, out of reserved ranges */
	fuzz_ram_check(&ram, allowed, sizeof(allowed) / sizeof(allowed[0]));
	if (memcmp(ram.mem + l.kernel_gpa, kernel + k.setup_size, k.payload_size))
		__builtin_trap();
	if (with_initrd && memcmp(ram.mem + l.initrd_gpa, pattern, isize < PATTERN ? isize : PATTERN))
		__builtin_trap();
	if (memcmp(ram.mem + VMM_BOOT_LINUX_CMDLINE_GPA, cl, clen + 1))
		__builtin_trap();

	const struct boot_params *bp = (const struct boot_params *)(ram.mem + VMM_BOOT_LINUX_ZERO_PAGE_GPA);
	check_zero_page(bp, kernel, &k);
	if (bp->hdr.code32_start != l.kernel_gpa || bp->hdr.cmd_line_ptr != VMM_BOOT_LINUX_CMDLINE_GPA ||
	    bp->hdr.ramdisk_image != (uint32_t)l.initrd_gpa || bp->hdr.ramdisk_size != (uint32_t)l.initrd_size ||
	    bp->hdr.type_of_loader != 0xff)
		__builtin_trap();
	check_e820(bp, mem_size);
	if (!in_e820(bp, l.kernel_gpa, span, VMM_E820_RAM) ||
	    (with_initrd && !in_e820(bp, l.initrd_gpa, isize, VMM_E820_RAM)) ||
	    (with_reserved && !in_e820(bp, r.gpa, r.len, VMM_E820_ACPI)))
		__builtin_trap();
	return 0;
}
