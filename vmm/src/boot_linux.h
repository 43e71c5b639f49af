/* Linux bzImage boot through the 64-bit boot protocol: header parsing, memory layout, vCPU entry state. */
#ifndef VMM_BOOT_LINUX_H
#define VMM_BOOT_LINUX_H

#include <asm/bootparam.h>
#include <stdint.h>

#include "sl/error.h"

struct vmm_vm;

/* ---- guest physical layout of a Linux boot (all below 640 KiB) ----
 * GDT and page tables share the ELF boot's addresses (vmm_internal.h:
 * VMM_GDT_GPA, VMM_PML4_GPA, VMM_PDPT_GPA, VMM_PD_GPA); Linux needs four
 * page directories (4 GiB of 2 MiB pages), 0xb000..0xefff. */
#define VMM_BOOT_LINUX_ZERO_PAGE_GPA 0x7000ull /* struct boot_params */
#define VMM_BOOT_LINUX_PD_PAGES 4u
#define VMM_BOOT_LINUX_CMDLINE_GPA 0x20000ull
/* Our own cap, below the kernel's cmdline_size in practice (2047 for 6.1):
 * the buffer at 0x20000 must stay below 640 KiB. */
#define VMM_BOOT_LINUX_CMDLINE_MAX 0x10000u
#define VMM_BOOT_LINUX_MAX_RESERVED 32u

/* Used when the caller passes cmdline NULL:
 *  console=ttyS0  kernel console on COM1 (port 0x3f8), the VMM's serial.c;
 *  reboot=t       reboot by triple fault: KVM reports KVM_EXIT_SHUTDOWN and
 *                 the VMM stops. The VMM has no i8042, so reboot=k would
 *                 fall through to a jump to a BIOS reset vector that does
 *                 not exist;
 *  panic=-1       reboot at once on a panic (so a panic ends the VM instead
 *                 of hanging it);
 *  pci=off        no PCI: devices are virtio-mmio found through ACPI, and
 *                 probing an absent PCI bus costs time (ports 0xcf8/0xcfc). */
#define VMM_BOOT_LINUX_DEFAULT_CMDLINE "console=ttyS0 reboot=t panic=-1 pci=off"

/* e820 types (Linux arch/x86/include/asm/e820/types.h) */
enum {
	VMM_E820_RAM = 1,
	VMM_E820_RESERVED = 2,
	VMM_E820_ACPI = 3, /* ACPI tables, reclaimable after parsing */
	VMM_E820_NVS = 4,
};

/* A range the VMM keeps for itself (ACPI tables, device windows): left out
 * of RAM in the e820 map and never used for the kernel or the initrd. */
struct boot_linux_range {
	uint64_t gpa, len;
	uint32_t e820_type; /* VMM_E820_RESERVED, _ACPI or _NVS; 0 means RESERVED */
};

struct boot_linux_opts {
	uint64_t rsdp_gpa; /* 0: none; else passed as boot_params.acpi_rsdp_addr */
	const struct boot_linux_range *reserved;
	unsigned nreserved; /* <= VMM_BOOT_LINUX_MAX_RESERVED */
};

/* What a bzImage's setup header says (boot.rst field names). */
struct boot_linux_kernel {
	uint16_t version; /* boot protocol, 0x020f is 2.15 */
	unsigned setup_sects;
	uint64_t setup_size;   /* (setup_sects + 1) * 512: file offset of the payload */
	uint64_t payload_size; /* syssize * 16: the protected-mode kernel */
	uint8_t loadflags;
	uint16_t xloadflags;
	uint32_t kernel_alignment;
	uint8_t relocatable;
	uint64_t pref_address;
	uint32_t init_size;
	uint32_t cmdline_size;    /* max command line length, NUL excluded */
	uint32_t initrd_addr_max; /* highest address of the initrd's last byte */
	unsigned hdr_len;         /* bytes of setup header from 0x1f1 to copy */
	char kernel_version[128]; /* "" if the image has none */
};

/* Where things went. */
struct boot_linux_layout {
	uint64_t kernel_gpa;  /* load address of the protected-mode kernel */
	uint64_t kernel_span; /* bytes from kernel_gpa it may use (>= init_size) */
	uint64_t initrd_gpa, initrd_size; /* 0, 0 without an initrd */
	uint64_t entry;       /* kernel_gpa + 0x200: startup_64 */
	unsigned e820_entries;
};

/* Parses the setup header. img holds the file's first `avail` bytes (at
 * least min(file_size, 0x8000 + 0x200) are useful: the setup area is at most
 * 128 KiB; kernel_version is read only if it lies inside img). */
int vmm_boot_linux_parse(const uint8_t *img, size_t avail, uint64_t file_size,
			 struct boot_linux_kernel *k, sl_error_t *err);

/* Builds the e820 map for RAM [0, mem_size) and o's reserved ranges:
 * RAM below 640 KiB, reserved 640 KiB..1 MiB, RAM above, minus (and
 * listing) the reserved ranges; sorted, adjacent equal types merged. */
int vmm_boot_linux_e820(uint64_t mem_size, const struct boot_linux_opts *o, struct boot_e820_entry *table,
			unsigned max, unsigned *n, sl_error_t *err);

/* Chooses the kernel and initrd addresses (no memory touched). */
int vmm_boot_linux_place(const struct boot_linux_kernel *k, uint64_t mem_size, uint64_t initrd_size,
			 const struct boot_linux_opts *o, struct boot_linux_layout *l, sl_error_t *err);

/* Everything but the vCPUs: reads and checks the files, copies the kernel
 * and initrd into guest RAM, writes the zero page, command line, GDT and
 * identity page tables. Needs only vm->mem, vm->mem_size. */
int vmm_boot_linux_load(struct vmm_vm *vm, const char *kernel_path, const char *initrd_path, const char *cmdline,
			const struct boot_linux_opts *o, struct boot_linux_layout *l, sl_error_t *err);
/* The same from open files (regular files; the names only for messages):
 * the kernel's header is read first and checked before anything is placed
 * or copied; ifd -1 means no initrd. The files' offsets are not used. */
int vmm_boot_linux_load_fd(struct vmm_vm *vm, int kfd, const char *kernel_path, int ifd, const char *initrd_path,
			   const char *cmdline, const struct boot_linux_opts *o, struct boot_linux_layout *l,
			   sl_error_t *err);

/* vCPU 0 gets the 64-bit entry state (long mode, CS 0x10, DS/ES/SS 0x18,
 * RSI = zero page, RIP = l->entry, interrupts off); the others are left
 * KVM_MP_STATE_UNINITIALIZED for the kernel to start with INIT/SIPI. */
int vmm_boot_linux_setup_vcpus(struct vmm_vm *vm, const struct boot_linux_layout *l, sl_error_t *err);

/* load + setup_vcpus. cmdline NULL: VMM_BOOT_LINUX_DEFAULT_CMDLINE; o NULL:
 * no RSDP, no reserved ranges. */
int vmm_boot_linux(struct vmm_vm *vm, const char *kernel_path, const char *initrd_path, const char *cmdline,
		   const struct boot_linux_opts *o, sl_error_t *err);

#endif
