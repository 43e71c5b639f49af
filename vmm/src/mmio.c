/* MMIO bus: devices register a guest-physical range; exits are dispatched here. */
#include <string.h>
#include <sys/ioctl.h>

#include "vmm_internal.h"

int vmm_mmio_register(struct vmm_vm *vm, uint64_t base, uint64_t len, const struct vmm_mmio_ops *ops, void *dev,
		      sl_error_t *err)
{
	if (!len || base + len < base)
		return sl_error_set(err, SL_E_INVALID, "MMIO range 0x%llx+%llu is empty or wraps",
				    (unsigned long long)base, (unsigned long long)len);
	/* RAM is a memory slot: KVM never exits for it, so a device there
	 * would silently never see an access. */
	if (base < vm->mem_size)
		return sl_error_set(err, SL_E_INVALID, "MMIO range 0x%llx+%llu overlaps guest RAM",
				    (unsigned long long)base, (unsigned long long)len);
	if (vm->nmmio == VMM_MMIO_MAX)
		return sl_error_set(err, SL_E_LIMIT, "too many MMIO devices");
	for (unsigned i = 0; i < vm->nmmio; i++) {
		const struct vmm_mmio_range *r = &vm->mmio[i];
		if (base < r->base + r->len && r->base < base + len)
			return sl_error_set(err, SL_E_INVALID, "MMIO range 0x%llx+%llu overlaps 0x%llx+%llu",
					    (unsigned long long)base, (unsigned long long)len,
					    (unsigned long long)r->base, (unsigned long long)r->len);
	}
	vm->mmio[vm->nmmio++] = (struct vmm_mmio_range){base, len, ops, dev};
	return 0;
}

void vmm_mmio_dispatch(struct vmm_vm *vm, struct kvm_run *run)
{
	uint64_t addr = run->mmio.phys_addr;
	unsigned size = run->mmio.len;
	const struct vmm_mmio_range *hit = NULL;
	for (unsigned i = 0; i < vm->nmmio && !hit; i++)
		if (addr >= vm->mmio[i].base && addr - vm->mmio[i].base < vm->mmio[i].len)
			hit = &vm->mmio[i];
	if (size > sizeof(run->mmio.data))
		size = sizeof(run->mmio.data);
	if (!hit || (hit->len - (addr - hit->base)) < size) {
		if (!run->mmio.is_write)
			memset(run->mmio.data, 0xff, sizeof(run->mmio.data));
		return;
	}
	if (run->mmio.is_write) {
		if (hit->ops->write)
			hit->ops->write(vm, hit->dev, addr - hit->base, run->mmio.data, size);
	} else if (hit->ops->read) {
		hit->ops->read(vm, hit->dev, addr - hit->base, run->mmio.data, size);
	} else {
		memset(run->mmio.data, 0xff, sizeof(run->mmio.data));
	}
}

int vmm_irq_line(struct vmm_vm *vm, uint32_t gsi, int level, sl_error_t *err)
{
	struct kvm_irq_level l = {.irq = gsi, .level = level ? 1 : 0};
	if (ioctl(vm->vm_fd, KVM_IRQ_LINE, &l) < 0)
		return sl_error_sys(err, "KVM_IRQ_LINE gsi %u", gsi);
	return 0;
}
