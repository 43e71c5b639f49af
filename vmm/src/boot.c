/* Boot dispatch: an ELF kernel (the test guest) or a Linux bzImage on its ACPI platform. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "acpi.h"
#include "boot_linux.h"
#include "platform_linux.h"
#include "vmm_internal.h"

static int boot_linux_platform(struct vmm_vm *vm, const char *kernel, const char *initrd, const char *cmdline,
			       sl_error_t *err)
{
	struct acpi_layout lay;
	uint8_t *buf = vmm_gpa(vm, ACPI_TABLES_GPA_DEFAULT, ACPI_TABLES_MAX_SIZE);
	if (!buf)
		return sl_error_set(err, SL_E_INVALID, "no room for ACPI tables at 0x%llx",
				    (unsigned long long)ACPI_TABLES_GPA_DEFAULT);
	if (vmm_linux_build_acpi(vm, buf, ACPI_TABLES_MAX_SIZE, ACPI_TABLES_GPA_DEFAULT, &lay, err) < 0)
		return sl_error_wrap(err, "ACPI tables");
	struct boot_linux_range acpi = {.gpa = ACPI_TABLES_GPA_DEFAULT, .len = lay.size, .e820_type = VMM_E820_ACPI};
	struct boot_linux_opts o = {.rsdp_gpa = lay.rsdp_gpa, .reserved = &acpi, .nreserved = 1};
	/* The user's words extend the defaults (console on our COM1, reboot by
	 * triple fault, no PCI); a later word of the same key wins in Linux. */
	char devs[VMM_CMDLINE_MAX] = "";
	if (vm->machine.virtio_cmdline && vmm_linux_virtio_cmdline(vmm_linux_nslots(vm), devs, sizeof(devs)) < 0)
		return sl_error_set(err, SL_E_LIMIT, "virtio_mmio.device= words longer than %u bytes", VMM_CMDLINE_MAX - 1);
	char cl[VMM_CMDLINE_MAX];
	if ((size_t)snprintf(cl, sizeof(cl), "%s%s%s%s%s", VMM_BOOT_LINUX_DEFAULT_CMDLINE, devs[0] ? " " : "", devs,
			     cmdline && cmdline[0] ? " " : "", cmdline ? cmdline : "") >= sizeof(cl))
		return sl_error_set(err, SL_E_LIMIT, "kernel command line longer than %u bytes", VMM_CMDLINE_MAX - 1);
	return vmm_boot_linux(vm, kernel, initrd, cl, &o, err);
}

enum kernel_kind { KERNEL_ELF = 1, KERNEL_BZIMAGE };

static int kernel_kind(const char *kernel, enum kernel_kind *kind, sl_error_t *err)
{
	uint8_t hdr[0x208] = {0};
	int fd = open(kernel, O_RDONLY | O_CLOEXEC);
	if (fd < 0 && errno == ENOENT)
		return sl_error_set(err, SL_E_NOT_FOUND, "kernel %s: not found", kernel);
	if (fd < 0)
		return sl_error_sys(err, "kernel %s", kernel);
	ssize_t n = pread(fd, hdr, sizeof(hdr), 0);
	close(fd);
	if (n >= 4 && !memcmp(hdr, "\x7f" "ELF", 4)) {
		*kind = KERNEL_ELF;
		return 0;
	}
	/* The boot protocol's "HdrS" signature at 0x202. */
	if (n >= 0x206 && !memcmp(hdr + 0x202, "HdrS", 4)) {
		*kind = KERNEL_BZIMAGE;
		return 0;
	}
	return sl_error_set(err, SL_E_INVALID, "kernel %s: neither an ELF file nor a Linux bzImage", kernel);
}

int vmm_kernel_platform(const char *kernel, enum vmm_platform *out, sl_error_t *err)
{
	enum kernel_kind k;
	if (kernel_kind(kernel, &k, err) < 0)
		return -1;
	*out = k == KERNEL_ELF ? VMM_PLATFORM_BARE : VMM_PLATFORM_LINUX;
	return 0;
}

int vmm_boot_kernel(struct vmm_vm *vm, const char *kernel, const char *initrd, const char *cmdline,
		    sl_error_t *err)
{
	enum kernel_kind k;
	if (kernel_kind(kernel, &k, err) < 0)
		return -1;
	if (k == KERNEL_ELF) {
		if (initrd)
			return sl_error_set(err, SL_E_INVALID, "kernel %s is an ELF file: --initrd needs a Linux bzImage",
					    kernel);
		return vmm_boot_elf(vm, kernel, cmdline, err);
	}
	if (vm->machine.platform != VMM_PLATFORM_LINUX)
		return sl_error_set(err, SL_E_INVALID, "kernel %s is a Linux bzImage: the machine must be of the Linux platform",
				    kernel);
	return boot_linux_platform(vm, kernel, initrd, cmdline, err);
}
