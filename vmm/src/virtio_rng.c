/* Virtio entropy device (id 4): fills the guest's writable buffers from getrandom(2). */
#include <errno.h>
#include <stdlib.h>
#include <sys/random.h>

#include "virtio.h"

/* Per request cap: the Linux driver asks for a few dozen bytes at a time;
 * a bigger buffer gets partly filled (the used length says how much). */
#define RNG_MAX_PER_REQUEST (64u << 10)

struct virtio_rng {
	struct virtio_mmio *t;
	struct virtq_chain chain; /* one request at a time, under the transport lock */
};

static size_t fill(struct virtq_chain *c)
{
	size_t done = 0;
	for (unsigned i = c->nread; i < c->nread + c->nwrite && done < RNG_MAX_PER_REQUEST; i++) {
		size_t want = c->seg[i].iov_len;
		if (want > RNG_MAX_PER_REQUEST - done)
			want = RNG_MAX_PER_REQUEST - done;
		size_t got = 0;
		while (got < want) {
			ssize_t n = getrandom((char *)c->seg[i].iov_base + got, want - got, 0);
			if (n < 0) {
				if (errno == EINTR)
					continue;
				return done + got; /* report what was really written */
			}
			got += (size_t)n;
		}
		done += got;
	}
	return done;
}

static void rng_notify(struct virtio_mmio *t, void *dev, unsigned queue)
{
	struct virtio_rng *r = dev;
	while (virtio_mmio_pop(t, queue, &r->chain) == 1)
		virtio_mmio_push(t, queue, r->chain.head, (uint32_t)fill(&r->chain));
}

static const struct virtio_dev_ops rng_ops = {
	.name = "virtio-rng",
	.device_id = VIRTIO_ID_RNG,
	.features = 0,
	.config_size = 0,
	.nqueues = 1,
	.queue_max = 64,
	.notify = rng_notify,
};

int virtio_rng_create(struct vmm_vm *vm, uint64_t base, uint32_t irq_gsi, struct virtio_rng **out,
		      sl_error_t *err)
{
	struct virtio_rng *r = calloc(1, sizeof(*r));
	if (!r)
		return sl_error_set(err, SL_E_NOMEM, "virtio-rng");
	if (virtio_mmio_register(vm, base, irq_gsi, &rng_ops, r, &r->t, err) < 0) {
		free(r);
		return -1;
	}
	*out = r;
	return 0;
}

struct virtio_mmio *virtio_rng_transport(struct virtio_rng *r)
{
	return r->t;
}

void virtio_rng_free(struct virtio_rng *r)
{
	if (!r)
		return;
	virtio_mmio_free(r->t);
	free(r);
}
