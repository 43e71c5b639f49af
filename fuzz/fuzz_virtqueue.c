/* libFuzzer target: split-virtqueue parsing (pure functions, then through the virtio-mmio transport) over arbitrary guest memory. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "virtio.h"
#include "vmm_internal.h"

/* Input: 8 bytes of queue state, then the guest memory.
 *   [0]    log2 of the queue size (mod 9: 1..256)
 *   [1..2] last_avail_idx   [3..4] used_idx
 *   [5]    ring placement: bit 0 packs the rings, else page-aligned;
 *          bit 1 also drives the same memory through the transport
 *          (a virtio-rng behind virtio-mmio, registers written as the
 *          Linux driver does, then a save/load round trip)
 *   [6..7] pops to attempt (bounded)
 * Descriptors, ring entries and buffer addresses come from the memory
 * bytes, so every malformed shape (loops, wild indexes, out-of-range
 * buffers, write-then-read) is reachable. */

#define HDR 8u
#define MEM_MAX (1u << 20)

struct mem {
	uint8_t *base;
	uint64_t size;
};

static void *map(void *ctx, uint64_t gpa, uint64_t len)
{
	struct mem *m = ctx;
	if (gpa > m->size || len > m->size - gpa)
		return NULL;
	return m->base + gpa;
}

static void check_inside(const struct mem *m, const struct iovec *v)
{
	const uint8_t *p = v->iov_base;
	if (p < m->base || p > m->base + m->size || v->iov_len > (size_t)(m->base + m->size - p))
		__builtin_trap();
}

static void irq_nop(void *arg, uint32_t gsi, int level) { (void)arg, (void)gsi, (void)level; }
static void report_nop(void *arg, const char *dev, const char *msg)
{
	(void)arg, (void)dev;
	if (!msg[0])
		__builtin_trap(); /* every report names its problem */
}

static void wr(struct vmm_vm *vm, uint64_t off, uint32_t v)
{
	struct kvm_run run;
	memset(&run, 0, sizeof(run));
	run.mmio.phys_addr = VIRTIO_MMIO_BASE + off;
	run.mmio.len = 4;
	run.mmio.is_write = 1;
	memcpy(run.mmio.data, &v, 4);
	vmm_mmio_dispatch(vm, &run);
}

static void through_transport(const struct virtq *q, uint8_t *mem, uint64_t mem_size)
{
	struct vmm_vm *vm = calloc(1, sizeof(*vm));
	struct virtio_rng *r = NULL;
	sl_error_t err = NULL;
	if (!vm)
		return;
	vm->mem = mem;
	vm->mem_size = mem_size;
	vm->vm_fd = -1;
	if (virtio_rng_create(vm, VIRTIO_MMIO_BASE, VIRTIO_MMIO_GSI_BASE, &r, &err) < 0)
		__builtin_trap();
	struct virtio_mmio *t = virtio_rng_transport(r);
	struct virtio_mmio_hooks h = {.irq = irq_nop, .report = report_nop};
	virtio_mmio_set_hooks(t, &h);
	const uint32_t st = VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK;
	wr(vm, VIRTIO_MMIO_STATUS, 0);
	wr(vm, VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
	wr(vm, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
	wr(vm, VIRTIO_MMIO_DRIVER_FEATURES, 1);
	wr(vm, VIRTIO_MMIO_STATUS, st);
	wr(vm, VIRTIO_MMIO_QUEUE_SEL, 0);
	wr(vm, VIRTIO_MMIO_QUEUE_NUM, q->num);
	wr(vm, VIRTIO_MMIO_QUEUE_DESC_LOW, (uint32_t)q->desc);
	wr(vm, VIRTIO_MMIO_QUEUE_DRIVER_LOW, (uint32_t)q->avail);
	wr(vm, VIRTIO_MMIO_QUEUE_DEVICE_LOW, (uint32_t)q->used);
	wr(vm, VIRTIO_MMIO_QUEUE_READY, 1);
	wr(vm, VIRTIO_MMIO_STATUS, st | VIRTIO_STATUS_DRIVER_OK); /* processes the ring */
	wr(vm, VIRTIO_MMIO_QUEUE_NOTIFY, 0);
	wr(vm, VIRTIO_MMIO_INTERRUPT_ACK, 3);
	struct virtio_mmio_state_v1 s;
	if (virtio_mmio_save(t, &s, &err) < 0) /* synchronous device: never in flight */
		__builtin_trap();
	if (virtio_mmio_load(t, &s, &err) < 0) /* what we saved must load */
		__builtin_trap();
	virtio_rng_free(r);
	free(vm);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < HDR || size - HDR > MEM_MAX)
		return 0;
	struct virtq q = {0};
	q.num = (uint16_t)(1u << (data[0] % 9));
	memcpy(&q.last_avail_idx, data + 1, 2);
	memcpy(&q.used_idx, data + 3, 2);
	uint16_t pops;
	memcpy(&pops, data + 6, 2);
	pops %= 2u * VIRTQ_MAX_SIZE + 1;

	q.desc = 0;
	if (data[5] & 1) {
		q.avail = 16ull * q.num;
		q.used = (q.avail + 6 + 2ull * q.num + 3) & ~3ull;
	} else {
		q.avail = 4096;
		q.used = 8192;
	}
	q.ready = true;

	/* Guest RAM is page-aligned in the VMM; an aligned copy keeps the
	 * ring accesses aligned here too (libFuzzer's buffer is not). */
	struct mem m = {.size = size - HDR};
	m.base = aligned_alloc(4096, (m.size + 4095) & ~(size_t)4095);
	if (!m.base)
		return 0;
	memcpy(m.base, data + HDR, m.size);
	struct virtio_gmem gm = {.map = map, .ctx = &m};

	static struct virtq_chain c;
	static struct iovec iov[VIRTQ_MAX_SIZE];
	sl_error_t err = NULL;
	if (virtq_check_layout(&q, VIRTQ_MAX_SIZE, &gm, &err) < 0) {
		if (!err || err->code != SL_E_GUEST)
			__builtin_trap();
		sl_error_free(&err);
		goto out;
	}
	for (unsigned i = 0; i < pops; i++) {
		int r = virtq_pop(&q, &gm, &c, &err);
		if (r < 0) {
			if (!err || err->code != SL_E_GUEST || !sl_error_msg(err)[0])
				__builtin_trap();
			sl_error_free(&err);
			break;
		}
		if (err)
			__builtin_trap();
		if (r == 0)
			break;
		if (c.head >= q.num || c.nread + c.nwrite > q.num ||
		    c.read_bytes + c.write_bytes > VIRTQ_CHAIN_MAX_BYTES)
			__builtin_trap();
		uint64_t rsum = 0, wsum = 0;
		for (unsigned k = 0; k < c.nread + c.nwrite; k++) {
			check_inside(&m, &c.seg[k]);
			*(k < c.nread ? &rsum : &wsum) += c.seg[k].iov_len;
		}
		if (rsum != c.read_bytes || wsum != c.write_bytes)
			__builtin_trap();
		/* What a device does with a chain: read a header, fill the rest. */
		uint8_t hdr[16];
		size_t got = virtq_chain_read(&c, 0, hdr, sizeof(hdr));
		if (got != (c.read_bytes < 16 ? c.read_bytes : 16))
			__builtin_trap();
		int n = virtq_chain_iov(&c, true, c.write_bytes / 3, c.write_bytes / 2, iov, VIRTQ_MAX_SIZE);
		if (n < 0)
			__builtin_trap();
		for (int k = 0; k < n; k++) {
			check_inside(&m, &iov[k]);
			memset(iov[k].iov_base, 0xa5, iov[k].iov_len);
		}
		if (c.write_bytes)
			virtq_chain_write(&c, c.write_bytes - 1, hdr, 1);
		if (virtq_push(&q, &gm, c.head, (uint32_t)c.write_bytes, &err) < 0)
			__builtin_trap(); /* the layout was checked: push cannot fail */
		(void)virtq_wants_interrupt(&q, &gm);
	}
	/* Any head, walked directly. */
	if (m.size >= 2) {
		uint16_t head;
		memcpy(&head, m.base + m.size - 2, 2);
		if (virtq_walk(&q, &gm, head, &c, &err) < 0)
			sl_error_free(&err);
	}
	if (data[5] & 2) {
		memcpy(m.base, data + HDR, m.size); /* undo what the pass above wrote */
		through_transport(&q, m.base, m.size);
	}
out:
	free(m.base);
	return 0;
}
