/* A VM context without KVM (no VM, vCPU or event descriptors) over guarded fuzz RAM, for device and dispatch fuzzers. */
#ifndef FUZZ_VM_H
#define FUZZ_VM_H

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

#include "fuzz_ram.h"
#include "vmm_internal.h"

static inline struct vmm_vm *fuzz_vm_new(const struct fuzz_ram *ram, bool linux_platform)
{
	struct vmm_vm *vm = calloc(1, sizeof(*vm));
	if (!vm)
		abort();
	vm->kvm_fd = vm->vm_fd = vm->event_fd = -1;
	vm->mem = ram->mem;
	vm->mem_size = ram->size;
	vm->machine.vcpus = 1;
	vm->machine.platform = linux_platform ? VMM_PLATFORM_LINUX : VMM_PLATFORM_BARE;
	pthread_mutex_init(&vm->lock, NULL);
	return vm;
}

#endif
