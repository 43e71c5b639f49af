/* Boot dispatch: an ELF kernel (the test guest) or a Linux bzImage on its ACPI platform. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "acpi.h"
#include "boot_linux.h"
#include "vmm_internal.h"

/* The ACPI sleep/reset register: Linux powers off by writing SLP_EN|S5 and
 * reboots through the FADT reset register. Both end the VM: a power-off is
 * a normal exit (status 0), a reboot is reported like a triple fault. */
static void sleep_out(struct vmm_vm *vm, void *dev, uint16_t port, const uint8_t *data, unsigned size)
{
	uint16_t sp = (uint16_t)(uintptr_t)dev;
	switch (acpi_sleep_port_write(sp, port, data, size)) {
	case ACPI_SLEEP_POWEROFF:
		vmm_post_event(vm, VMM_EV_EXIT, 0, "ACPI power off");
		break;
	case ACPI_SLEEP_REBOOT:
		vmm_post_event(vm, VMM_EV_SHUTDOWN, 0, "guest asked for a reboot (ACPI reset)");
		break;
	case ACPI_SLEEP_UNSUPPORTED:
		vmm_post_event(vm, VMM_EV_ERROR, 0, "guest asked for an ACPI sleep state this VM does not offer");
		break;
	case ACPI_SLEEP_NONE:
		break;
	}
}

static void sleep_in(struct vmm_vm *vm, void *dev, uint16_t port, uint8_t *data, unsigned size)
{
	(void)vm;
	acpi_sleep_port_read((uint16_t)(uintptr_t)dev, port, data, size);
}

static const struct vmm_pio_ops sleep_ops = {.in = sleep_in, .out = sleep_out};

static int boot_linux_platform(struct vmm_vm *vm, const char *kernel, const char *initrd, const char *cmdline,
			       sl_error_t *err)
{
	struct acpi_config cfg = {.vcpus = vm->machine.vcpus};
	struct acpi_layout lay;
	uint8_t *buf = vmm_gpa(vm, ACPI_TABLES_GPA_DEFAULT, ACPI_TABLES_MAX_SIZE);
	if (!buf)
		return sl_error_set(err, SL_E_INVALID, "no room for ACPI tables at 0x%llx",
				    (unsigned long long)ACPI_TABLES_GPA_DEFAULT);
	if (acpi_build(&cfg, buf, ACPI_TABLES_MAX_SIZE, ACPI_TABLES_GPA_DEFAULT, &lay, err) < 0)
		return sl_error_wrap(err, "ACPI tables");
	if (vmm_pio_register(vm, lay.sleep_port, 1, &sleep_ops, (void *)(uintptr_t)lay.sleep_port, err) < 0)
		return sl_error_wrap(err, "ACPI sleep register");
	struct boot_linux_range acpi = {.gpa = ACPI_TABLES_GPA_DEFAULT, .len = lay.size, .e820_type = VMM_E820_ACPI};
	struct boot_linux_opts o = {.rsdp_gpa = lay.rsdp_gpa, .reserved = &acpi, .nreserved = 1};
	/* The user's words extend the defaults (console on our COM1, reboot by
	 * triple fault, no PCI); a later word of the same key wins in Linux. */
	char cl[VMM_CMDLINE_MAX];
	if ((size_t)snprintf(cl, sizeof(cl), "%s%s%s", VMM_BOOT_LINUX_DEFAULT_CMDLINE, cmdline && cmdline[0] ? " " : "",
			     cmdline ? cmdline : "") >= sizeof(cl))
		return sl_error_set(err, SL_E_LIMIT, "kernel command line longer than %u bytes", VMM_CMDLINE_MAX - 1);
	return vmm_boot_linux(vm, kernel, initrd, cl, &o, err);
}

int vmm_boot_kernel(struct vmm_vm *vm, const char *kernel, const char *initrd, const char *cmdline,
		    sl_error_t *err)
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
		if (initrd)
			return sl_error_set(err, SL_E_INVALID, "kernel %s is an ELF file: --initrd needs a Linux bzImage",
					    kernel);
		return vmm_boot_elf(vm, kernel, cmdline, err);
	}
	/* The boot protocol's "HdrS" signature at 0x202. */
	if (n >= 0x206 && !memcmp(hdr + 0x202, "HdrS", 4))
		return boot_linux_platform(vm, kernel, initrd, cmdline, err);
	return sl_error_set(err, SL_E_INVALID, "kernel %s: neither an ELF file nor a Linux bzImage", kernel);
}
