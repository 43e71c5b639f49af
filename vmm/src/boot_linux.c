/* Linux bzImage loading (64-bit boot protocol, Documentation/arch/x86/boot.rst) and its entry state. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

#include "boot_linux.h"
#include "sl/file.h"
#include "vmm_internal.h"

#define MIB (1ull << 20)
#define LOW_RAM_END 0xa0000ull /* 640 KiB: legacy VGA and BIOS area above */
#define HIGH_RAM_START 0x100000ull
#define PAGE 4096ull
#define GIB4 (4ull << 30)

/* Setup header offsets in the image (boot.rst "THE REAL-MODE KERNEL HEADER"). */
#define HDR_START 0x1f1u
#define OFF_SETUP_SECTS 0x1f1u
#define OFF_SYSSIZE 0x1f4u
#define OFF_BOOT_FLAG 0x1feu
#define OFF_JUMP 0x200u
#define OFF_HEADER 0x202u
#define OFF_VERSION 0x206u
#define OFF_KERNEL_VERSION 0x20eu
#define OFF_LOADFLAGS 0x211u
#define OFF_INITRD_ADDR_MAX 0x22cu
#define OFF_KERNEL_ALIGNMENT 0x230u
#define OFF_RELOCATABLE 0x234u
#define OFF_XLOADFLAGS 0x236u
#define OFF_CMDLINE_SIZE 0x238u
#define OFF_PREF_ADDRESS 0x258u
#define OFF_INIT_SIZE 0x260u
#define HDR_MIN_END 0x264u /* the header must reach past init_size */
#define PROTO_MIN 0x020cu  /* 2.12: xloadflags, XLF_KERNEL_64 */
#define PROTO_RSDP 0x020eu /* 2.14: acpi_rsdp_addr */
/* The setup area is at most 1 + 255 sectors; reading this much of the file
 * covers the header and the kernel_version string. */
#define HEAD_MAX (256u * 512u)

/* GDT layout the 64-bit entry requires: __BOOT_CS 0x10, __BOOT_DS 0x18. */
#define BOOT_CS 0x10
#define BOOT_DS 0x18
#define GDT_ENTRIES 4u

static uint16_t le16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t le32(const uint8_t *p) { return (uint32_t)le16(p) | (uint32_t)le16(p + 2) << 16; }
static uint64_t le64(const uint8_t *p) { return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32; }
static uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) & ~(a - 1); }
static uint64_t align_down(uint64_t v, uint64_t a) { return v & ~(a - 1); }
static bool overlaps(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
	return a < b + blen && b < a + alen;
}

int vmm_boot_linux_parse(const uint8_t *img, size_t avail, uint64_t file_size, struct boot_linux_kernel *k,
			 sl_error_t *err)
{
	memset(k, 0, sizeof(*k));
	if (avail > file_size)
		avail = (size_t)file_size;
	if (avail < HDR_MIN_END + 4)
		return sl_error_set(err, SL_E_INVALID, "not a bzImage: %llu bytes is too short for a setup header",
				    (unsigned long long)file_size);
	if (le16(img + OFF_BOOT_FLAG) != 0xaa55 || memcmp(img + OFF_HEADER, "HdrS", 4) != 0)
		return sl_error_set(err, SL_E_INVALID, "not a bzImage: no \"HdrS\" setup header");
	k->version = le16(img + OFF_VERSION);
	if (k->version < PROTO_MIN)
		return sl_error_set(err, SL_E_UNSUPPORTED,
				    "boot protocol %u.%02u is too old: 2.12 or later is needed for the 64-bit entry",
				    k->version >> 8, k->version & 0xff);
	/* The header's length is given by the short jump over it at 0x200. */
	unsigned hdr_end = OFF_HEADER + img[OFF_JUMP + 1];
	if (hdr_end < HDR_MIN_END)
		return sl_error_set(err, SL_E_INVALID, "setup header ends at 0x%x, before init_size (0x%x)", hdr_end,
				    HDR_MIN_END);
	k->hdr_len = hdr_end - HDR_START;
	if (k->hdr_len > sizeof(struct setup_header))
		k->hdr_len = sizeof(struct setup_header); /* fields newer than we know stay zero */
	if (k->hdr_len > avail - HDR_START)
		k->hdr_len = (unsigned)(avail - HDR_START); /* callers copy hdr_len bytes out of img */
	k->setup_sects = img[OFF_SETUP_SECTS] ? img[OFF_SETUP_SECTS] : 4; /* 0 means 4 (boot.rst) */
	k->setup_size = (k->setup_sects + 1ull) * 512;
	k->payload_size = (uint64_t)le32(img + OFF_SYSSIZE) * 16;
	k->loadflags = img[OFF_LOADFLAGS];
	k->xloadflags = le16(img + OFF_XLOADFLAGS);
	k->initrd_addr_max = le32(img + OFF_INITRD_ADDR_MAX);
	k->kernel_alignment = le32(img + OFF_KERNEL_ALIGNMENT);
	k->relocatable = img[OFF_RELOCATABLE];
	k->cmdline_size = le32(img + OFF_CMDLINE_SIZE);
	k->pref_address = le64(img + OFF_PREF_ADDRESS);
	k->init_size = le32(img + OFF_INIT_SIZE);

	if (k->setup_size > file_size)
		return sl_error_set(err, SL_E_INVALID, "setup area of %u sectors runs past the end of the file",
				    k->setup_sects);
	if (k->payload_size == 0)
		return sl_error_set(err, SL_E_INVALID, "syssize is 0: no protected-mode kernel");
	/* A signed kernel carries its signature after the payload, so the file
	 * may be longer than setup + syssize; never shorter. */
	if (k->payload_size > file_size - k->setup_size)
		return sl_error_set(err, SL_E_INVALID,
				    "protected-mode kernel of %llu bytes (syssize) runs past the end of the file (%llu bytes)",
				    (unsigned long long)k->payload_size, (unsigned long long)file_size);
	if (!(k->loadflags & LOADED_HIGH))
		return sl_error_set(err, SL_E_UNSUPPORTED, "not a bzImage: LOADED_HIGH is not set (a zImage)");
	if (!(k->xloadflags & XLF_KERNEL_64))
		return sl_error_set(err, SL_E_UNSUPPORTED,
				    "kernel has no 64-bit entry point (XLF_KERNEL_64 not set: a 32-bit kernel?)");
	if (k->relocatable && (k->kernel_alignment == 0 || (k->kernel_alignment & (k->kernel_alignment - 1))))
		return sl_error_set(err, SL_E_INVALID, "kernel_alignment 0x%x is not a power of two",
				    k->kernel_alignment);
	if (k->cmdline_size == 0)
		return sl_error_set(err, SL_E_INVALID, "cmdline_size is 0");

	/* Informational only: a missing or garbled version string is no error. */
	unsigned kv = le16(img + OFF_KERNEL_VERSION);
	if (kv) {
		size_t at = (size_t)OFF_JUMP + kv, lim = avail < k->setup_size ? avail : (size_t)k->setup_size;
		size_t n = 0;
		while (at + n < lim && n + 1 < sizeof(k->kernel_version) && img[at + n] >= 0x20 && img[at + n] < 0x7f)
			n++;
		if (at + n < lim && img[at + n] == 0)
			memcpy(k->kernel_version, img + at, n);
	}
	return 0;
}

static uint32_t range_type(const struct boot_linux_range *r)
{
	return r->e820_type ? r->e820_type : VMM_E820_RESERVED;
}

static const struct boot_linux_opts no_opts;

static int check_opts(uint64_t mem_size, const struct boot_linux_opts *o, sl_error_t *err)
{
	if (o->nreserved > VMM_BOOT_LINUX_MAX_RESERVED)
		return sl_error_set(err, SL_E_LIMIT, "%u reserved ranges, the limit is %u", o->nreserved,
				    VMM_BOOT_LINUX_MAX_RESERVED);
	if (o->nreserved && !o->reserved)
		return sl_error_set(err, SL_E_INVALID, "%u reserved ranges but no array", o->nreserved);
	for (unsigned i = 0; i < o->nreserved; i++) {
		const struct boot_linux_range *r = &o->reserved[i];
		uint32_t t = range_type(r);
		if (r->len == 0 || r->gpa + r->len < r->gpa)
			return sl_error_set(err, SL_E_INVALID, "reserved range %u (0x%llx+0x%llx) is empty or wraps", i,
					    (unsigned long long)r->gpa, (unsigned long long)r->len);
		if (t != VMM_E820_RESERVED && t != VMM_E820_ACPI && t != VMM_E820_NVS)
			return sl_error_set(err, SL_E_INVALID, "reserved range %u has e820 type %u (want 2, 3 or 4)", i,
					    t);
		for (unsigned j = 0; j < i; j++)
			if (overlaps(r->gpa, r->len, o->reserved[j].gpa, o->reserved[j].len))
				return sl_error_set(err, SL_E_INVALID, "reserved ranges %u and %u overlap", j, i);
		/* Our own boot structures live at fixed addresses below 640 KiB. */
		static const struct {
			uint64_t gpa, len;
			const char *what;
		} fixed[] = {
			{VMM_GDT_GPA, GDT_ENTRIES * 8, "the GDT"},
			{VMM_BOOT_LINUX_ZERO_PAGE_GPA, PAGE, "the zero page"},
			{VMM_PML4_GPA, VMM_PD_GPA + VMM_BOOT_LINUX_PD_PAGES * PAGE - VMM_PML4_GPA, "the page tables"},
			{VMM_BOOT_LINUX_CMDLINE_GPA, VMM_BOOT_LINUX_CMDLINE_MAX, "the command line"},
		};
		for (size_t f = 0; f < sizeof(fixed) / sizeof(fixed[0]); f++)
			if (overlaps(r->gpa, r->len, fixed[f].gpa, fixed[f].len))
				return sl_error_set(err, SL_E_INVALID,
						    "reserved range %u (0x%llx+0x%llx) overlaps %s at 0x%llx", i,
						    (unsigned long long)r->gpa, (unsigned long long)r->len, fixed[f].what,
						    (unsigned long long)fixed[f].gpa);
	}
	/* RSDP v2 is 36 bytes; the VMM must have put it in RAM. */
	if (o->rsdp_gpa && (o->rsdp_gpa >= mem_size || mem_size - o->rsdp_gpa < 36))
		return sl_error_set(err, SL_E_INVALID, "RSDP at 0x%llx is not in RAM", (unsigned long long)o->rsdp_gpa);
	return 0;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

int vmm_boot_linux_e820(uint64_t mem_size, const struct boot_linux_opts *o, struct boot_e820_entry *table,
			unsigned max, unsigned *n, sl_error_t *err)
{
	if (!o)
		o = &no_opts;
	if (check_opts(mem_size, o, err) < 0)
		return -1;
	/* Cut the address space at every boundary, type each piece, merge. */
	uint64_t pts[4 + 2 * VMM_BOOT_LINUX_MAX_RESERVED];
	unsigned np = 0;
	pts[np++] = 0;
	pts[np++] = LOW_RAM_END;
	pts[np++] = HIGH_RAM_START;
	pts[np++] = mem_size;
	for (unsigned i = 0; i < o->nreserved; i++) {
		pts[np++] = o->reserved[i].gpa;
		pts[np++] = o->reserved[i].gpa + o->reserved[i].len;
	}
	qsort(pts, np, sizeof(pts[0]), cmp_u64);
	*n = 0;
	for (unsigned i = 0; i + 1 < np; i++) {
		uint64_t a = pts[i], b = pts[i + 1];
		if (a == b)
			continue;
		uint32_t type = 0;
		for (unsigned r = 0; r < o->nreserved && !type; r++)
			if (a >= o->reserved[r].gpa && a < o->reserved[r].gpa + o->reserved[r].len)
				type = range_type(&o->reserved[r]);
		if (!type && a < mem_size)
			type = a >= LOW_RAM_END && a < HIGH_RAM_START ? VMM_E820_RESERVED : VMM_E820_RAM;
		else if (!type && a < HIGH_RAM_START)
			type = VMM_E820_RESERVED; /* the legacy hole is reserved even in tiny VMs */
		if (!type)
			continue; /* above RAM and not reserved: nothing there */
		if (*n && table[*n - 1].type == type && table[*n - 1].addr + table[*n - 1].size == a) {
			table[*n - 1].size += b - a;
			continue;
		}
		if (*n == max)
			return sl_error_set(err, SL_E_LIMIT, "e820 map needs more than %u entries", max);
		table[*n].addr = a;
		table[*n].size = b - a;
		table[*n].type = type;
		(*n)++;
	}
	return 0;
}

/* The first reserved range overlapping [a, a+len), or NULL. */
static const struct boot_linux_range *reserved_hit(const struct boot_linux_opts *o, uint64_t a, uint64_t len)
{
	for (unsigned i = 0; i < o->nreserved; i++)
		if (overlaps(a, len, o->reserved[i].gpa, o->reserved[i].len))
			return &o->reserved[i];
	return NULL;
}

static int place_kernel(const struct boot_linux_kernel *k, uint64_t mem_size, const struct boot_linux_opts *o,
			struct boot_linux_layout *l, sl_error_t *err)
{
	uint64_t span = align_up(k->init_size > k->payload_size ? k->init_size : k->payload_size, PAGE);
	uint64_t align = k->kernel_alignment > PAGE ? k->kernel_alignment : PAGE;
	uint64_t pref = k->pref_address;
	l->kernel_span = span;
	/* The preferred address first: it is where the kernel was linked to
	 * run, so the decompressor need not relocate. */
	if (pref >= HIGH_RAM_START && (!k->relocatable || pref % align == 0) && pref < mem_size &&
	    span <= mem_size - pref && !reserved_hit(o, pref, span)) {
		l->kernel_gpa = pref;
		return 0;
	}
	if (!k->relocatable)
		return sl_error_set(err, SL_E_LIMIT,
				    "kernel is not relocatable and needs 0x%llx..0x%llx (init_size), which is not free RAM "
				    "(RAM is %llu MiB)",
				    (unsigned long long)pref, (unsigned long long)(pref + span),
				    (unsigned long long)(mem_size >> 20));
	for (uint64_t a = align_up(HIGH_RAM_START, align); a < mem_size && span <= mem_size - a;) {
		const struct boot_linux_range *r = reserved_hit(o, a, span);
		if (!r) {
			l->kernel_gpa = a;
			return 0;
		}
		a = align_up(r->gpa + r->len, align);
	}
	return sl_error_set(err, SL_E_LIMIT,
			    "kernel needs %llu MiB of contiguous RAM (init_size) at a 0x%llx-aligned address above 1 MiB; "
			    "RAM is %llu MiB",
			    (unsigned long long)((span + MIB - 1) >> 20), (unsigned long long)align,
			    (unsigned long long)(mem_size >> 20));
}

static int place_initrd(const struct boot_linux_kernel *k, uint64_t mem_size, uint64_t size,
			const struct boot_linux_opts *o, struct boot_linux_layout *l, sl_error_t *err)
{
	/* Highest first, as boot.rst advises, below initrd_addr_max (the last
	 * byte's address) and 4 GiB (what our page tables map; kernels that may
	 * take it higher copy it anyway). */
	uint64_t top = mem_size;
	if ((uint64_t)k->initrd_addr_max + 1 < top)
		top = (uint64_t)k->initrd_addr_max + 1;
	if (top > GIB4)
		top = GIB4;
	uint64_t a = size <= top ? align_down(top - size, PAGE) : 0;
	/* Each step moves below one obstacle; there are nreserved + 2 of them. */
	for (unsigned step = 0; size <= top && a >= HIGH_RAM_START && step <= o->nreserved + 2; step++) {
		uint64_t lo;
		const struct boot_linux_range *r = reserved_hit(o, a, size);
		if (r)
			lo = r->gpa;
		else if (overlaps(a, size, l->kernel_gpa, l->kernel_span))
			lo = l->kernel_gpa;
		else {
			l->initrd_gpa = a;
			l->initrd_size = size;
			return 0;
		}
		if (lo < size + HIGH_RAM_START)
			break;
		a = align_down(lo - size, PAGE);
	}
	return sl_error_set(err, SL_E_LIMIT,
			    "initrd of %llu bytes does not fit in free RAM below 0x%llx (kernel at 0x%llx+0x%llx, RAM is "
			    "%llu MiB)",
			    (unsigned long long)size, (unsigned long long)top, (unsigned long long)l->kernel_gpa,
			    (unsigned long long)l->kernel_span, (unsigned long long)(mem_size >> 20));
}

int vmm_boot_linux_place(const struct boot_linux_kernel *k, uint64_t mem_size, uint64_t initrd_size,
			 const struct boot_linux_opts *o, struct boot_linux_layout *l, sl_error_t *err)
{
	if (!o)
		o = &no_opts;
	memset(l, 0, sizeof(*l));
	if (check_opts(mem_size, o, err) < 0 || place_kernel(k, mem_size, o, l, err) < 0)
		return -1;
	l->entry = l->kernel_gpa + 0x200; /* startup_64, boot.rst "64-bit BOOT PROTOCOL" */
	if (initrd_size && place_initrd(k, mem_size, initrd_size, o, l, err) < 0)
		return -1;
	return 0;
}

static int open_file(const char *path, int *fd, sl_error_t *err)
{
	*fd = open(path, O_RDONLY | O_CLOEXEC);
	if (*fd < 0)
		return errno == ENOENT ? sl_error_set(err, SL_E_NOT_FOUND, "%s: no such file", path)
				       : sl_error_sys(err, "open %s", path);
	return 0;
}

/* The size of a regular file (the loader reads sizes it was told, so a
 * pipe or device is refused up front). */
static int regular_size(int fd, const char *name, uint64_t *size, sl_error_t *err)
{
	struct stat st;
	if (fstat(fd, &st) < 0)
		return sl_error_sys(err, "stat %s", name);
	if (!S_ISREG(st.st_mode))
		return sl_error_set(err, SL_E_INVALID, "%s: not a regular file", name);
	*size = (uint64_t)st.st_size;
	return 0;
}

static void write_tables(struct vmm_vm *vm)
{
	uint64_t *gdt = vmm_gpa(vm, VMM_GDT_GPA, GDT_ENTRIES * 8);
	gdt[0] = 0;
	gdt[1] = 0;
	gdt[BOOT_CS / 8] = 0x00af9b000000ffffull; /* 64-bit code, DPL 0, accessed */
	gdt[BOOT_DS / 8] = 0x00cf93000000ffffull; /* flat 4 GiB data, DPL 0, accessed */
	/* Identity map of the first 4 GiB with 2 MiB pages: boot.rst wants the
	 * kernel's init_size span, the zero page and the command line mapped. */
	uint64_t *pml4 = vmm_gpa(vm, VMM_PML4_GPA, PAGE);
	uint64_t *pdpt = vmm_gpa(vm, VMM_PDPT_GPA, PAGE);
	uint64_t *pd = vmm_gpa(vm, VMM_PD_GPA, VMM_BOOT_LINUX_PD_PAGES * PAGE);
	memset(pml4, 0, PAGE);
	memset(pdpt, 0, PAGE);
	pml4[0] = VMM_PDPT_GPA | 0x3; /* present, writable */
	for (uint64_t i = 0; i < VMM_BOOT_LINUX_PD_PAGES; i++)
		pdpt[i] = (VMM_PD_GPA + i * PAGE) | 0x3;
	for (uint64_t i = 0; i < VMM_BOOT_LINUX_PD_PAGES * 512; i++)
		pd[i] = (i << 21) | 0x83; /* 2 MiB page, present, writable */
}

int vmm_boot_linux_load_fd(struct vmm_vm *vm, int kfd, const char *kernel_path, int ifd, const char *initrd_path,
			   const char *cmdline, const struct boot_linux_opts *o, struct boot_linux_layout *l,
			   sl_error_t *err)
{
	if (!o)
		o = &no_opts;
	if (!cmdline)
		cmdline = VMM_BOOT_LINUX_DEFAULT_CMDLINE;
	memset(l, 0, sizeof(*l));
	if (check_opts(vm->mem_size, o, err) < 0)
		return -1;

	uint64_t ksize = 0;
	if (regular_size(kfd, kernel_path, &ksize, err) < 0)
		return sl_error_wrap(err, "kernel");
	size_t head_len = ksize < HEAD_MAX ? (size_t)ksize : HEAD_MAX;
	_cleanup_free_ uint8_t *head = malloc(head_len ? head_len : 1);
	if (!head)
		return sl_error_set(err, SL_E_NOMEM, "kernel header buffer");
	if (sl_pread_all(kfd, head, head_len, 0, err) < 0)
		return sl_error_wrap(err, "kernel %s", kernel_path);
	struct boot_linux_kernel k;
	if (vmm_boot_linux_parse(head, head_len, ksize, &k, err) < 0)
		return sl_error_wrap(err, "kernel %s", kernel_path);

	size_t clen = strlen(cmdline);
	if (clen > k.cmdline_size)
		return sl_error_set(err, SL_E_LIMIT, "command line is %zu bytes, kernel %s accepts at most %u", clen,
				    kernel_path, k.cmdline_size);
	if (clen >= VMM_BOOT_LINUX_CMDLINE_MAX)
		return sl_error_set(err, SL_E_LIMIT, "command line is %zu bytes, the limit is %u", clen,
				    VMM_BOOT_LINUX_CMDLINE_MAX - 1);
	/* Before 2.14 the kernel only finds the RSDP by scanning the BIOS area. */
	if (o->rsdp_gpa && k.version < PROTO_RSDP && (o->rsdp_gpa < 0xe0000 || o->rsdp_gpa >= 0x100000))
		return sl_error_set(err, SL_E_UNSUPPORTED,
				    "kernel %s: boot protocol %u.%02u has no acpi_rsdp_addr and the RSDP at 0x%llx is "
				    "outside the BIOS area 0xe0000-0xfffff it scans",
				    kernel_path, k.version >> 8, k.version & 0xff, (unsigned long long)o->rsdp_gpa);

	uint64_t isize = 0;
	if (ifd >= 0) {
		if (regular_size(ifd, initrd_path, &isize, err) < 0)
			return sl_error_wrap(err, "initrd");
		if (isize == 0)
			return sl_error_set(err, SL_E_INVALID, "initrd %s is empty", initrd_path);
		if (isize > vm->mem_size || isize > UINT32_MAX)
			return sl_error_set(err, SL_E_LIMIT, "initrd %s is %llu bytes, more than RAM (%llu MiB) or 4 GiB",
					    initrd_path, (unsigned long long)isize,
					    (unsigned long long)(vm->mem_size >> 20));
	}
	if (vmm_boot_linux_place(&k, vm->mem_size, isize, o, l, err) < 0)
		return sl_error_wrap(err, "kernel %s", kernel_path);

	/* Straight from the files into guest RAM; the rest of init_size is
	 * fresh zero memory already and the kernel clears its own BSS. */
	if (sl_pread_all(kfd, vmm_gpa(vm, l->kernel_gpa, k.payload_size), k.payload_size, (off_t)k.setup_size,
			 err) < 0)
		return sl_error_wrap(err, "kernel %s", kernel_path);
	if (ifd >= 0 && sl_pread_all(ifd, vmm_gpa(vm, l->initrd_gpa, isize), isize, 0, err) < 0)
		return sl_error_wrap(err, "initrd %s", initrd_path);

	struct boot_params *bp = vmm_gpa(vm, VMM_BOOT_LINUX_ZERO_PAGE_GPA, sizeof(*bp));
	memset(bp, 0, sizeof(*bp));
	/* Only the setup header is copied into a clean zero page (so the
	 * sentinel stays 0, boot.rst "Details of Header Fields"). */
	memcpy((uint8_t *)bp + HDR_START, head + HDR_START, k.hdr_len);
	bp->hdr.vid_mode = 0xffff;     /* "normal" */
	bp->hdr.type_of_loader = 0xff; /* undefined loader */
	bp->hdr.code32_start = (uint32_t)l->kernel_gpa;
	bp->hdr.cmd_line_ptr = (uint32_t)VMM_BOOT_LINUX_CMDLINE_GPA;
	bp->ext_cmd_line_ptr = 0;
	bp->hdr.ramdisk_image = (uint32_t)l->initrd_gpa;
	bp->hdr.ramdisk_size = (uint32_t)l->initrd_size;
	bp->ext_ramdisk_image = (uint32_t)(l->initrd_gpa >> 32);
	bp->ext_ramdisk_size = 0;
	if (k.version >= PROTO_RSDP)
		bp->acpi_rsdp_addr = o->rsdp_gpa;
	struct boot_e820_entry e820[E820_MAX_ENTRIES_ZEROPAGE];
	unsigned n;
	if (vmm_boot_linux_e820(vm->mem_size, o, e820, E820_MAX_ENTRIES_ZEROPAGE, &n, err) < 0)
		return -1;
	memcpy(bp->e820_table, e820, n * sizeof(e820[0]));
	bp->e820_entries = (uint8_t)n;
	l->e820_entries = n;

	char *cl = vmm_gpa(vm, VMM_BOOT_LINUX_CMDLINE_GPA, clen + 1);
	memcpy(cl, cmdline, clen);
	cl[clen] = 0;
	write_tables(vm);
	return 0;
}

int vmm_boot_linux_load(struct vmm_vm *vm, const char *kernel_path, const char *initrd_path, const char *cmdline,
			const struct boot_linux_opts *o, struct boot_linux_layout *l, sl_error_t *err)
{
	memset(l, 0, sizeof(*l));
	_cleanup_close_ int kfd = -1;
	_cleanup_close_ int ifd = -1;
	if (open_file(kernel_path, &kfd, err) < 0)
		return sl_error_wrap(err, "kernel");
	if (initrd_path && open_file(initrd_path, &ifd, err) < 0)
		return sl_error_wrap(err, "initrd");
	return vmm_boot_linux_load_fd(vm, kfd, kernel_path, ifd, initrd_path ? initrd_path : "(none)", cmdline, o, l,
				      err);
}

static void seg(struct kvm_segment *s, uint16_t sel, uint8_t type, bool code)
{
	*s = (struct kvm_segment){.base = 0, .limit = 0xfffff, .selector = sel, .type = type, .present = 1,
				  .dpl = 0, .db = code ? 0 : 1, .s = 1, .l = code ? 1 : 0, .g = 1};
}

static int setup_bsp(struct vmm_vcpu *v, const struct boot_linux_layout *l, sl_error_t *err)
{
	struct kvm_sregs sr;
	if (ioctl(v->fd, KVM_GET_SREGS, &sr) < 0)
		return sl_error_sys(err, "KVM_GET_SREGS");
	seg(&sr.cs, BOOT_CS, 0xb, true);
	seg(&sr.ds, BOOT_DS, 0x3, false);
	sr.es = sr.fs = sr.gs = sr.ss = sr.ds;
	sr.gdt.base = VMM_GDT_GPA;
	sr.gdt.limit = GDT_ENTRIES * 8 - 1;
	sr.idt.base = 0;
	sr.idt.limit = 0;
	sr.cr0 = 0x80000033ull; /* PG | NE | ET | MP | PE, as the ELF boot */
	sr.cr3 = VMM_PML4_GPA;
	sr.cr4 = 0x20;   /* PAE; the kernel sets the rest itself */
	sr.efer = 0x500; /* LMA | LME */
	if (ioctl(v->fd, KVM_SET_SREGS, &sr) < 0)
		return sl_error_sys(err, "KVM_SET_SREGS (vcpu %u)", v->index);
	/* rflags bit 1 is reserved-one; IF clear: interrupts off at entry. */
	struct kvm_regs r = {.rip = l->entry, .rsi = VMM_BOOT_LINUX_ZERO_PAGE_GPA, .rflags = 2};
	if (ioctl(v->fd, KVM_SET_REGS, &r) < 0)
		return sl_error_sys(err, "KVM_SET_REGS (vcpu %u)", v->index);
	struct kvm_fpu fpu = {.fcw = 0x37f, .mxcsr = 0x1f80};
	if (ioctl(v->fd, KVM_SET_FPU, &fpu) < 0)
		return sl_error_sys(err, "KVM_SET_FPU (vcpu %u)", v->index);
	/* LINT0 ExtINT, LINT1 NMI, as a PC BIOS leaves them (copied from
	 * boot_elf.c, whose helper is static). */
	struct kvm_lapic_state la;
	if (ioctl(v->fd, KVM_GET_LAPIC, &la) < 0)
		return sl_error_sys(err, "KVM_GET_LAPIC");
	uint32_t lint0, lint1;
	memcpy(&lint0, &la.regs[0x350], 4);
	memcpy(&lint1, &la.regs[0x360], 4);
	lint0 = (lint0 & ~0x700u) | 0x700u;
	lint1 = (lint1 & ~0x700u) | 0x400u;
	memcpy(&la.regs[0x350], &lint0, 4);
	memcpy(&la.regs[0x360], &lint1, 4);
	if (ioctl(v->fd, KVM_SET_LAPIC, &la) < 0)
		return sl_error_sys(err, "KVM_SET_LAPIC");
	struct kvm_mp_state mp = {.mp_state = KVM_MP_STATE_RUNNABLE};
	if (ioctl(v->fd, KVM_SET_MP_STATE, &mp) < 0)
		return sl_error_sys(err, "KVM_SET_MP_STATE (vcpu %u)", v->index);
	return 0;
}

int vmm_boot_linux_setup_vcpus(struct vmm_vm *vm, const struct boot_linux_layout *l, sl_error_t *err)
{
	if (vm->machine.vcpus == 0)
		return sl_error_set(err, SL_E_INVALID, "no vCPUs");
	if (setup_bsp(&vm->vcpus[0], l, err) < 0)
		return -1;
	/* Application processors wait in the in-kernel LAPIC for the
	 * kernel's INIT/SIPI (it finds them in the MADT). */
	for (unsigned i = 1; i < vm->machine.vcpus; i++) {
		struct kvm_mp_state mp = {.mp_state = KVM_MP_STATE_UNINITIALIZED};
		if (ioctl(vm->vcpus[i].fd, KVM_SET_MP_STATE, &mp) < 0)
			return sl_error_sys(err, "KVM_SET_MP_STATE (vcpu %u)", i);
	}
	return 0;
}

int vmm_boot_linux(struct vmm_vm *vm, const char *kernel_path, const char *initrd_path, const char *cmdline,
		   const struct boot_linux_opts *o, sl_error_t *err)
{
	struct boot_linux_layout l;
	if (vmm_boot_linux_load(vm, kernel_path, initrd_path, cmdline, o, &l, err) < 0)
		return -1;
	return vmm_boot_linux_setup_vcpus(vm, &l, err);
}
