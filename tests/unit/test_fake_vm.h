/* Test helpers: a VM context with plain memory and no KVM, and MMIO accesses through the real bus dispatcher. */
#ifndef TEST_FAKE_VM_H
#define TEST_FAKE_VM_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vmm_internal.h"

/* Needs cmocka.h first (assert_non_null). */
static inline struct vmm_vm *fake_vm(uint64_t mem_size)
{
	struct vmm_vm *vm = calloc(1, sizeof(*vm));
	assert_non_null(vm);
	vm->mem = aligned_alloc(4096, mem_size);
	assert_non_null(vm->mem);
	memset(vm->mem, 0, mem_size);
	vm->mem_size = mem_size;
	vm->vm_fd = -1; /* any stray KVM ioctl fails instead of hitting fd 0 */
	return vm;
}

static inline void free_vm(struct vmm_vm *vm)
{
	free(vm->mem);
	free(vm);
}

/* As a vCPU's MMIO exit would reach the bus. */
static inline uint64_t mmio_rd(struct vmm_vm *vm, uint64_t addr, unsigned size)
{
	struct kvm_run run;
	memset(&run, 0, sizeof(run));
	run.mmio.phys_addr = addr;
	run.mmio.len = size;
	vmm_mmio_dispatch(vm, &run);
	uint64_t v = 0;
	memcpy(&v, run.mmio.data, size);
	return v;
}

static inline void mmio_wr(struct vmm_vm *vm, uint64_t addr, uint64_t v, unsigned size)
{
	struct kvm_run run;
	memset(&run, 0, sizeof(run));
	run.mmio.phys_addr = addr;
	run.mmio.len = size;
	run.mmio.is_write = 1;
	memcpy(run.mmio.data, &v, size);
	vmm_mmio_dispatch(vm, &run);
}

#endif
