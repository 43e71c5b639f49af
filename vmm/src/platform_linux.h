/* The Linux platform's devices (private to the VMM): creation, ACPI, generation, state. */
#ifndef VMM_PLATFORM_LINUX_H
#define VMM_PLATFORM_LINUX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "acpi.h"
#include "sl/error.h"
#include "state_file.h"

struct vmm_vm;

/* Creates the power-off port and the virtio devices vm->machine asks for
 * (rng, vsock, disks) at their fixed slots. A bare machine with a vsock CID
 * gets only the vsock device, in slot 0, saved and restored the same way. On failure the caller's
 * vmm_destroy frees what was made. */
int vmm_linux_create(struct vmm_vm *vm, sl_error_t *err);
void vmm_linux_free(struct vmm_vm *vm);

/* Writes the ACPI tables describing this machine into buf (guest memory at
 * gpa) and publishes the current generation id in the VMGenID buffer. */
int vmm_linux_build_acpi(struct vmm_vm *vm, uint8_t *buf, size_t cap, uint64_t gpa, struct acpi_layout *lay,
			 sl_error_t *err);
/* Copies vm->sdev.id into the VMGenID buffer; with notify, pulses the GED
 * so the guest kernel rereads it (after a restore). */
void vmm_linux_publish_generation(struct vmm_vm *vm, bool notify);

/* Devices with their own I/O threads stop touching guest memory (capture)
 * and start again. */
/* The devices' own threads, as the VM starts. */
int vmm_linux_start_io(struct vmm_vm *vm, sl_error_t *err);
void vmm_linux_pause_io(struct vmm_vm *vm);
void vmm_linux_resume_io(struct vmm_vm *vm);

/* Device state in vm.state: SF_PLATFORM and one SF_VIRTIO_FIRST + slot per
 * device. A bare machine writes and accepts none. */
int vmm_linux_save(struct vmm_vm *vm, struct sf_writer *w, sl_error_t *err);
int vmm_linux_load(struct vmm_vm *vm, const struct sf_file *f, const char *what, sl_error_t *err);
/* After the irqchip and devices are loaded: re-raise pending device
 * interrupts, tell the guest its vsock connections are gone. */
int vmm_linux_restored(struct vmm_vm *vm, sl_error_t *err);

/* The words "virtio_mmio.device=4K@0xd0000000:5 ..." describing slots
 * [0, nslots), space-separated, into buf. Returns the length, or -1 if it
 * does not fit. */
int vmm_linux_virtio_cmdline(unsigned nslots, char *buf, size_t cap);
unsigned vmm_linux_nslots(struct vmm_vm *vm);

/* Where the vsock device sits (the test guest learns it from its boot
 * info); false if the machine has none. */
bool vmm_linux_vsock_slot(struct vmm_vm *vm, uint64_t *base, uint32_t *gsi);

unsigned vmm_linux_ndisks(struct vmm_vm *vm);
int vmm_linux_disk_fd(struct vmm_vm *vm, unsigned disk); /* -1 if none */

#endif
