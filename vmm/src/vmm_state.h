/* Internal: vCPU and VM state save/load into state-file buffers. */
#ifndef VMM_STATE_H
#define VMM_STATE_H

#include "vmm_internal.h"

int vmm_vcpu_save(struct vmm_vm *vm, struct vmm_vcpu *v, uint8_t **out, size_t *len,
		  sl_error_t *err);
int vmm_vcpu_load(struct vmm_vm *vm, struct vmm_vcpu *v, const uint8_t *buf, size_t len,
		  const char *what, sl_error_t *err);
int vmm_vm_save(struct vmm_vm *vm, uint8_t **out, size_t *len, sl_error_t *err);
/* Loads the CPUID table first (and checks it against the host), then
 * irqchips, PIT, clock and device state. */
int vmm_vm_load_cpuid(struct vmm_vm *vm, const uint8_t *buf, size_t len, const char *what,
		      sl_error_t *err);
int vmm_vm_load(struct vmm_vm *vm, const uint8_t *buf, size_t len, const char *what,
		sl_error_t *err);

#endif
