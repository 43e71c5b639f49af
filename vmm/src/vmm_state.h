/* Internal: vCPU and VM state save/load into state-file buffers. */
#ifndef VMM_STATE_H
#define VMM_STATE_H

#include "state_file.h"
#include "vmm_internal.h"

int vmm_vcpu_save(struct vmm_vm *vm, struct vmm_vcpu *v, uint8_t **out, size_t *len,
		  sl_error_t *err);
int vmm_vcpu_load(struct vmm_vm *vm, struct vmm_vcpu *v, const uint8_t *buf, size_t len,
		  const char *what, sl_error_t *err);
/* A vCPU state file decoded and checked, before KVM sees any of it: each
 * section exactly its structure's size, the XSAVE area within xsave_max
 * bytes (the host's), at most 1024 MSRs. Copies, aligned for the ioctls. */
struct vmm_vcpu_state {
	struct kvm_mp_state mp;
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	struct kvm_xcrs xcrs;
	struct kvm_debugregs dr;
	struct kvm_lapic_state lapic;
	struct kvm_vcpu_events ev;
	uint32_t tsc_khz;
	struct kvm_xsave *xsave; /* xsave_max bytes */
	struct kvm_msrs *msrs;
};
int vmm_vcpu_state_decode(const uint8_t *buf, size_t len, int xsave_max, const char *what,
			  struct vmm_vcpu_state *st, sl_error_t *err);
void vmm_vcpu_state_free(struct vmm_vcpu_state *st);
int vmm_vm_save(struct vmm_vm *vm, uint8_t **out, size_t *len, sl_error_t *err);
/* The VM state file decoded and checked against vm (its RAM) before KVM
 * or a device sees any of it. f keeps pointing into the buffer (the
 * platform's sections are read from it by vmm_linux_load). */
struct vmm_vm_state {
	struct sf_file f;
	struct kvm_irqchip chips[3];
	struct kvm_pit_state2 pit;
	struct kvm_clock_data clock;
	uint8_t serial[8];   /* struct serial_state_v1 */
	uint8_t spore_dev[40]; /* struct spore_dev_state_v1 */
};
int vmm_vm_state_decode(const struct vmm_vm *vm, const uint8_t *buf, size_t len, const char *what,
			struct vmm_vm_state *st, sl_error_t *err);
/* Loads the CPUID table first (and checks it against the host), then
 * irqchips, PIT, clock and device state. */
int vmm_vm_load_cpuid(struct vmm_vm *vm, const uint8_t *buf, size_t len, const char *what,
		      sl_error_t *err);
int vmm_vm_load(struct vmm_vm *vm, const uint8_t *buf, size_t len, const char *what,
		sl_error_t *err);

#endif
