/* The spore device: guest exit and readiness ports, and the generation buffer. */
#include <string.h>
#include <sys/random.h>

#include "vmm_internal.h"

#define SDEV_BASE 0x5100
#define SDEV_MAGIC 0x524f5053u /* "SPOR" */

enum { SDEV_EXIT = 0x0, SDEV_READY = 0x4, SDEV_GEN_LO = 0x8, SDEV_GEN_HI = 0xc, SDEV_PRESENT = 0x10 };

/* Guest layout of the generation buffer (docs/testguest.md). */
struct gen_buf {
	uint64_t counter;
	uint8_t id[16];
	uint64_t seq;
};

void vmm_spore_dev_publish(struct vmm_vm *vm)
{
	struct vmm_spore_dev *d = &vm->sdev;
	if (!d->gen_gpa)
		return;
	struct gen_buf *g = vmm_gpa(vm, d->gen_gpa, sizeof(*g));
	if (!g)
		return;
	/* seq is written last so a guest reading seq == counter saw a whole
	 * update (the VMM normally writes while every vCPU is stopped). */
	__atomic_store_n(&g->seq, ~0ull, __ATOMIC_RELEASE);
	g->counter = d->counter;
	memcpy(g->id, d->id, sizeof(g->id));
	__atomic_store_n(&g->seq, d->counter, __ATOMIC_RELEASE);
}

int vmm_spore_dev_new_generation(struct vmm_vm *vm, sl_error_t *err)
{
	struct vmm_spore_dev *d = &vm->sdev;
	uint8_t id[16];
	if (getrandom(id, sizeof(id), 0) != (ssize_t)sizeof(id))
		return sl_error_sys(err, "getrandom for a generation id");
	d->counter++;
	memcpy(d->id, id, sizeof(id));
	vmm_spore_dev_publish(vm);
	return 0;
}

static uint32_t le32(const uint8_t *p, unsigned size)
{
	uint32_t v = 0;
	memcpy(&v, p, size > 4 ? 4 : size);
	return v;
}

static void sdev_out(struct vmm_vm *vm, void *dev, uint16_t port, const uint8_t *data, unsigned size)
{
	struct vmm_spore_dev *d = dev;
	uint32_t v = le32(data, size);
	switch (port - SDEV_BASE) {
	case SDEV_EXIT:
		vmm_post_event(vm, VMM_EV_EXIT, (int)(v & 0xff), "guest exit");
		break;
	case SDEV_READY:
		vmm_post_event(vm, VMM_EV_READY, 0, "guest ready");
		break;
	case SDEV_GEN_LO:
		d->gen_lo = v;
		break;
	case SDEV_GEN_HI: {
		uint64_t gpa = ((uint64_t)v << 32) | d->gen_lo;
		if ((gpa & 7) || !vmm_gpa(vm, gpa, sizeof(struct gen_buf))) {
			vmm_post_event(vm, VMM_EV_ERROR, 0,
				       "guest registered a bad generation buffer at 0x%llx",
				       (unsigned long long)gpa);
			break;
		}
		d->gen_gpa = gpa;
		vmm_spore_dev_publish(vm);
		break;
	}
	default:
		break;
	}
}

static void sdev_in(struct vmm_vm *vm, void *dev, uint16_t port, uint8_t *data, unsigned size)
{
	(void)vm;
	(void)dev;
	uint32_t v = port - SDEV_BASE == SDEV_PRESENT ? SDEV_MAGIC : 0xffffffffu;
	memcpy(data, &v, size > 4 ? 4 : size);
}

static const struct vmm_pio_ops sdev_ops = {.in = sdev_in, .out = sdev_out};

int vmm_spore_dev_init(struct vmm_vm *vm, sl_error_t *err)
{
	struct vmm_spore_dev *d = &vm->sdev;
	memset(d, 0, sizeof(*d));
	/* The first boot is generation 0 with its own random id. */
	if (getrandom(d->id, sizeof(d->id), 0) != (ssize_t)sizeof(d->id))
		return sl_error_sys(err, "getrandom for a generation id");
	return vmm_pio_register(vm, SDEV_BASE, 0x20, &sdev_ops, d, err);
}
