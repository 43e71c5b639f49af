/* Port I/O bus: devices register a port range; exits are dispatched here. */
#include <string.h>

#include "vmm_internal.h"

int vmm_pio_register(struct vmm_vm *vm, uint16_t base, uint16_t len,
		     const struct vmm_pio_ops *ops, void *dev, sl_error_t *err)
{
	if (vm->npio == VMM_PIO_MAX)
		return sl_error_set(err, SL_E_LIMIT, "too many port I/O devices");
	for (unsigned i = 0; i < vm->npio; i++) {
		struct vmm_pio_range *r = &vm->pio[i];
		if (base < r->base + r->len && r->base < base + len)
			return sl_error_set(err, SL_E_INVALID, "port range 0x%x+%u overlaps 0x%x+%u",
					    base, len, r->base, r->len);
	}
	vm->pio[vm->npio++] = (struct vmm_pio_range){base, len, ops, dev};
	return 0;
}

void vmm_pio_dispatch(struct vmm_vm *vm, struct kvm_run *run)
{
	uint8_t *data = (uint8_t *)run + run->io.data_offset;
	uint16_t port = run->io.port;
	unsigned size = run->io.size;
	const struct vmm_pio_range *hit = NULL;
	for (unsigned i = 0; i < vm->npio; i++)
		if (port >= vm->pio[i].base && port < vm->pio[i].base + vm->pio[i].len)
			hit = &vm->pio[i];
	/* `rep ins/outs` arrive as count > 1 with consecutive elements. */
	for (uint32_t n = 0; n < run->io.count; n++, data += size) {
		if (!hit) {
			/* Unclaimed ports behave like an empty ISA bus. */
			if (run->io.direction == KVM_EXIT_IO_IN)
				memset(data, 0xff, size);
			continue;
		}
		if (run->io.direction == KVM_EXIT_IO_IN) {
			if (hit->ops->in)
				hit->ops->in(vm, hit->dev, port, data, size);
			else
				memset(data, 0xff, size);
		} else if (hit->ops->out) {
			hit->ops->out(vm, hit->dev, port, data, size);
		}
	}
}
