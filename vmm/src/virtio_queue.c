/* Split virtqueues over guest memory: ring layout checks, chain parsing, used-ring publishing. */
#include <string.h>

#include "virtio.h"

/* Guest memory is shared with running vCPUs: every guest-owned field is
 * read exactly once into a local and only the local is validated and used,
 * so a guest rewriting a descriptor mid-parse cannot slip past a check. */

struct virtq_desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags;
	uint16_t next;
};
_Static_assert(sizeof(struct virtq_desc) == 16, "descriptor layout");

struct virtq_used_elem {
	uint32_t id;
	uint32_t len;
};

static uint64_t desc_bytes(uint16_t num) { return 16ull * num; }
static uint64_t avail_bytes(uint16_t num) { return 6ull + 2ull * num; } /* flags, idx, ring[num], used_event */
static uint64_t used_bytes(uint16_t num) { return 6ull + 8ull * num; }   /* flags, idx, ring[num], avail_event */

int virtq_check_layout(const struct virtq *q, uint16_t max, const struct virtio_gmem *m, sl_error_t *err)
{
	if (!q->num || (q->num & (q->num - 1)) || q->num > max || q->num > VIRTQ_MAX_SIZE)
		return sl_error_set(err, SL_E_GUEST, "queue size %u is not a power of two in [1, %u]", q->num,
				    max < VIRTQ_MAX_SIZE ? max : VIRTQ_MAX_SIZE);
	/* Section 2.7: descriptor table 16-, available ring 2-, used ring
	 * 4-aligned; the atomic index accesses below rely on it too. */
	if ((q->desc & 15) || (q->avail & 1) || (q->used & 3))
		return sl_error_set(err, SL_E_GUEST, "queue rings misaligned (desc 0x%llx avail 0x%llx used 0x%llx)",
				    (unsigned long long)q->desc, (unsigned long long)q->avail,
				    (unsigned long long)q->used);
	if (!m->map(m->ctx, q->desc, desc_bytes(q->num)))
		return sl_error_set(err, SL_E_GUEST, "descriptor table 0x%llx+%llu is outside guest RAM",
				    (unsigned long long)q->desc, (unsigned long long)desc_bytes(q->num));
	if (!m->map(m->ctx, q->avail, avail_bytes(q->num)))
		return sl_error_set(err, SL_E_GUEST, "available ring 0x%llx+%llu is outside guest RAM",
				    (unsigned long long)q->avail, (unsigned long long)avail_bytes(q->num));
	if (!m->map(m->ctx, q->used, used_bytes(q->num)))
		return sl_error_set(err, SL_E_GUEST, "used ring 0x%llx+%llu is outside guest RAM",
				    (unsigned long long)q->used, (unsigned long long)used_bytes(q->num));
	return 0;
}

int virtq_walk(const struct virtq *q, const struct virtio_gmem *m, uint16_t head, struct virtq_chain *c,
	       sl_error_t *err)
{
	c->head = head;
	c->nread = c->nwrite = 0;
	c->read_bytes = c->write_bytes = 0;
	if (!q->num || q->num > VIRTQ_MAX_SIZE)
		return sl_error_set(err, SL_E_GUEST, "queue size %u out of range", q->num);
	const uint8_t *table = m->map(m->ctx, q->desc, desc_bytes(q->num));
	if (!table)
		return sl_error_set(err, SL_E_GUEST, "descriptor table outside guest RAM");

	uint16_t idx = head;
	unsigned visited = 0;
	uint64_t total = 0;
	for (;;) {
		if (idx >= q->num)
			return sl_error_set(err, SL_E_GUEST, "descriptor index %u >= queue size %u (chain from %u)",
					    idx, q->num, head);
		/* Without indirect tables a chain can use each descriptor at most
		 * once, so more than num steps means the chain loops. */
		if (++visited > q->num)
			return sl_error_set(err, SL_E_GUEST, "descriptor chain from %u loops (more than %u descriptors)",
					    head, q->num);
		struct virtq_desc d;
		memcpy(&d, table + 16u * idx, sizeof(d));
		if (d.flags & VIRTQ_DESC_F_INDIRECT)
			return sl_error_set(err, SL_E_GUEST, "descriptor %u is indirect (VIRTIO_F_INDIRECT_DESC not offered)",
					    idx);
		if (d.len > VIRTQ_CHAIN_MAX_BYTES - total)
			return sl_error_set(err, SL_E_GUEST, "descriptor chain from %u exceeds %u bytes", head,
					    VIRTQ_CHAIN_MAX_BYTES);
		total += d.len;
		void *p = m->map(m->ctx, d.addr, d.len);
		if (!p)
			return sl_error_set(err, SL_E_GUEST, "descriptor %u buffer 0x%llx+%u is outside guest RAM", idx,
					    (unsigned long long)d.addr, d.len);
		struct iovec *s = &c->seg[c->nread + c->nwrite];
		s->iov_base = p;
		s->iov_len = d.len;
		if (d.flags & VIRTQ_DESC_F_WRITE) {
			c->nwrite++;
			c->write_bytes += d.len;
		} else {
			/* Section 2.7.4.2: readable descriptors come first. */
			if (c->nwrite)
				return sl_error_set(err, SL_E_GUEST,
						    "descriptor %u is device-readable after a device-writable one", idx);
			c->nread++;
			c->read_bytes += d.len;
		}
		if (!(d.flags & VIRTQ_DESC_F_NEXT))
			return 0;
		idx = d.next;
	}
}

int virtq_pop(struct virtq *q, const struct virtio_gmem *m, struct virtq_chain *c, sl_error_t *err)
{
	if (!q->num || q->num > VIRTQ_MAX_SIZE)
		return sl_error_set(err, SL_E_GUEST, "queue size %u out of range", q->num);
	uint16_t *avail = m->map(m->ctx, q->avail, avail_bytes(q->num));
	if (!avail)
		return sl_error_set(err, SL_E_GUEST, "available ring outside guest RAM");
	/* Acquire: the ring entries and descriptors the driver wrote before
	 * bumping idx are visible once we see the new idx. */
	uint16_t aidx = __atomic_load_n(&avail[1], __ATOMIC_ACQUIRE);
	uint16_t pending = (uint16_t)(aidx - q->last_avail_idx);
	if (!pending)
		return 0;
	if (pending > q->num)
		return sl_error_set(err, SL_E_GUEST, "available index %u is %u ahead of %u in a queue of %u", aidx,
				    pending, q->last_avail_idx, q->num);
	uint16_t head = __atomic_load_n(&avail[2 + q->last_avail_idx % q->num], __ATOMIC_RELAXED);
	if (virtq_walk(q, m, head, c, err) < 0)
		return -1;
	q->last_avail_idx++;
	return 1;
}

int virtq_push(struct virtq *q, const struct virtio_gmem *m, uint16_t head, uint32_t len, sl_error_t *err)
{
	if (!q->num || q->num > VIRTQ_MAX_SIZE || head >= q->num)
		return sl_error_set(err, SL_E_GUEST, "used element %u for a queue of %u", head, q->num);
	uint8_t *used = m->map(m->ctx, q->used, used_bytes(q->num));
	if (!used)
		return sl_error_set(err, SL_E_GUEST, "used ring outside guest RAM");
	struct virtq_used_elem e = {.id = head, .len = len};
	memcpy(used + 4 + 8u * (q->used_idx % q->num), &e, sizeof(e));
	q->used_idx++;
	/* Release: the element (and the data written into the buffers) is
	 * visible before the index that hands it to the driver. */
	__atomic_store_n((uint16_t *)(used + 2), q->used_idx, __ATOMIC_RELEASE);
	return 0;
}

bool virtq_wants_interrupt(const struct virtq *q, const struct virtio_gmem *m)
{
	const uint16_t *avail = m->map(m->ctx, q->avail, avail_bytes(q->num));
	if (!avail)
		return true;
	/* Full barrier: our used-index store must be ordered before reading
	 * the driver's flag, or both sides can miss each other's update. */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	return !(__atomic_load_n(&avail[0], __ATOMIC_RELAXED) & VIRTQ_AVAIL_F_NO_INTERRUPT);
}

static size_t chain_copy(const struct iovec *seg, unsigned n, uint64_t off, uint8_t *buf, size_t len, bool to_chain)
{
	size_t done = 0;
	for (unsigned i = 0; i < n && done < len; i++) {
		if (off >= seg[i].iov_len) {
			off -= seg[i].iov_len;
			continue;
		}
		size_t k = seg[i].iov_len - off;
		if (k > len - done)
			k = len - done;
		if (to_chain)
			memcpy((uint8_t *)seg[i].iov_base + off, buf + done, k);
		else
			memcpy(buf + done, (const uint8_t *)seg[i].iov_base + off, k);
		done += k;
		off = 0;
	}
	return done;
}

size_t virtq_chain_read(const struct virtq_chain *c, uint64_t off, void *dst, size_t len)
{
	return chain_copy(c->seg, c->nread, off, dst, len, false);
}

size_t virtq_chain_write(const struct virtq_chain *c, uint64_t off, const void *src, size_t len)
{
	return chain_copy(c->seg + c->nread, c->nwrite, off, (uint8_t *)(uintptr_t)src, len, true);
}

int virtq_chain_iov(const struct virtq_chain *c, bool writable, uint64_t off, uint64_t len, struct iovec *out,
		    unsigned max)
{
	const struct iovec *seg = writable ? c->seg + c->nread : c->seg;
	unsigned n = writable ? c->nwrite : c->nread;
	uint64_t total = writable ? c->write_bytes : c->read_bytes;
	if (off > total || len > total - off)
		return -1;
	unsigned k = 0;
	for (unsigned i = 0; i < n && len; i++) {
		if (off >= seg[i].iov_len) {
			off -= seg[i].iov_len;
			continue;
		}
		size_t take = seg[i].iov_len - off;
		if (take > len)
			take = len;
		if (take) {
			if (k == max)
				return -1;
			out[k].iov_base = (uint8_t *)seg[i].iov_base + off;
			out[k].iov_len = take;
			k++;
		}
		len -= take;
		off = 0;
	}
	return (int)k;
}
