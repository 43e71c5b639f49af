/* KVM plumbing: open /dev/kvm, check capabilities, create the VM, its RAM slot and irqchip. */
#include <errno.h>
#include <fcntl.h>
#include <sys/ioctl.h>

#include "vmm_internal.h"

/* The capabilities a spore needs from the host; recorded in the platform
 * contract and checked again before a restore. */
const struct vmm_kvm_cap vmm_required_caps[] = {
	{KVM_CAP_IRQCHIP, "irqchip"},
	{KVM_CAP_PIT2, "pit2"},
	{KVM_CAP_PIT_STATE2, "pit-state2"},
	{KVM_CAP_USER_MEMORY, "user-memory"},
	{KVM_CAP_SET_TSS_ADDR, "set-tss-addr"},
	{KVM_CAP_EXT_CPUID, "ext-cpuid"},
	{KVM_CAP_MP_STATE, "mp-state"},
	{KVM_CAP_XSAVE, "xsave"},
	{KVM_CAP_XCRS, "xcrs"},
	{KVM_CAP_VCPU_EVENTS, "vcpu-events"},
	{KVM_CAP_DEBUGREGS, "debugregs"},
	{KVM_CAP_ADJUST_CLOCK, "adjust-clock"},
	{KVM_CAP_IMMEDIATE_EXIT, "immediate-exit"},
	{KVM_CAP_GET_TSC_KHZ, "get-tsc-khz"},
};
const unsigned vmm_required_ncaps = sizeof(vmm_required_caps) / sizeof(vmm_required_caps[0]);

int vmm_kvm_open(int *kvm_fd, sl_error_t *err)
{
	int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return sl_error_sys(err, "open /dev/kvm");
	int version = ioctl(fd, KVM_GET_API_VERSION, 0);
	if (version != KVM_API_VERSION) {
		close(fd);
		return sl_error_set(err, SL_E_UNSUPPORTED, "/dev/kvm: API version %d, need %d",
				    version, KVM_API_VERSION);
	}
	*kvm_fd = fd;
	return 0;
}

int vmm_kvm_check_caps(int kvm_fd, sl_error_t *err)
{
	for (unsigned i = 0; i < vmm_required_ncaps; i++) {
		if (ioctl(kvm_fd, KVM_CHECK_EXTENSION, vmm_required_caps[i].cap) <= 0)
			return sl_error_set(err, SL_E_UNSUPPORTED,
					    "platform contract not met: KVM lacks capability %s",
					    vmm_required_caps[i].name);
	}
	return 0;
}

int vmm_kvm_create_vm(struct vmm_vm *vm, sl_error_t *err)
{
	vm->vm_fd = ioctl(vm->kvm_fd, KVM_CREATE_VM, 0);
	if (vm->vm_fd < 0)
		return sl_error_sys(err, "KVM_CREATE_VM");
	/* Intel needs a 3-page TSS region and an identity-map page below 4 GiB
	 * that the guest never uses; put them just under the LAPIC/IOAPIC hole. */
	if (ioctl(vm->vm_fd, KVM_SET_TSS_ADDR, 0xfffbd000ul) < 0)
		return sl_error_sys(err, "KVM_SET_TSS_ADDR");
	uint64_t ident = 0xfffbc000ull;
	if (ioctl(vm->vm_fd, KVM_SET_IDENTITY_MAP_ADDR, &ident) < 0 && errno != EINVAL)
		return sl_error_sys(err, "KVM_SET_IDENTITY_MAP_ADDR");
	return 0;
}

int vmm_kvm_create_irqchip(struct vmm_vm *vm, sl_error_t *err)
{
	if (ioctl(vm->vm_fd, KVM_CREATE_IRQCHIP, 0) < 0)
		return sl_error_sys(err, "KVM_CREATE_IRQCHIP");
	struct kvm_pit_config pit = {.flags = KVM_PIT_SPEAKER_DUMMY};
	if (ioctl(vm->vm_fd, KVM_CREATE_PIT2, &pit) < 0)
		return sl_error_sys(err, "KVM_CREATE_PIT2");
	return 0;
}

int vmm_kvm_set_memory(struct vmm_vm *vm, sl_error_t *err)
{
	struct kvm_userspace_memory_region r = {
		.slot = 0,
		.flags = 0,
		.guest_phys_addr = 0,
		.memory_size = vm->mem_size,
		.userspace_addr = (uintptr_t)vm->mem,
	};
	if (ioctl(vm->vm_fd, KVM_SET_USER_MEMORY_REGION, &r) < 0)
		return sl_error_sys(err, "KVM_SET_USER_MEMORY_REGION (%llu MiB)",
				    (unsigned long long)(vm->mem_size >> 20));
	return 0;
}
