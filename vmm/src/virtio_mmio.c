/* Virtio-mmio transport (version 2, virtio 1.x section 4.2.2): registers, negotiation, queues, interrupts, state. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "virtio.h"
#include "vmm_internal.h"

/* Interrupt model: level-triggered. The line is high exactly while
 * InterruptStatus is non-zero: raised when a used buffer or a config change
 * sets a bit, lowered when InterruptACK (or a reset) clears the last one.
 * Linux's handler reads InterruptStatus, acks what it read, then scans the
 * rings, so nothing is lost; and unlike a raise-then-lower pulse, a pending
 * interrupt is visible in the IOAPIC's state at capture and can be
 * re-asserted from InterruptStatus after restore (virtio_mmio_sync_irq).
 * The same waveform also works if the guest programs the pin edge-triggered:
 * every 0 -> non-zero transition is a rising edge. ACPI should describe the
 * interrupt as Level, ActiveHigh. */

struct virtio_mmio {
	struct vmm_vm *vm;
	uint64_t base;
	uint32_t gsi;
	const struct virtio_dev_ops *ops;
	void *dev;
	pthread_mutex_t lock;
	struct virtio_mmio_hooks hooks;
	struct virtio_gmem gmem;

	uint64_t device_features;
	uint64_t driver_features;
	uint32_t status;
	uint32_t interrupt_status;
	uint32_t device_features_sel, driver_features_sel, queue_sel;
	uint32_t config_generation;
	struct virtq q[VIRTIO_MMIO_MAX_QUEUES];

	unsigned inflight; /* popped, not yet pushed */
	bool irq_level;    /* what we last drove the line to */
	char last_error[256];
};

#define STATUS_KNOWN                                                                                      \
	(VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_DRIVER_OK |                     \
	 VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_NEEDS_RESET | VIRTIO_STATUS_FAILED)

static void *gmem_map(void *ctx, uint64_t gpa, uint64_t len)
{
	return vmm_gpa(ctx, gpa, len);
}

static void report(struct virtio_mmio *t, const char *msg)
{
	snprintf(t->last_error, sizeof(t->last_error), "%s", msg);
	if (t->hooks.report)
		t->hooks.report(t->hooks.arg, t->ops->name, msg);
}

static void drive_irq(struct virtio_mmio *t, bool level)
{
	t->irq_level = level;
	if (t->hooks.irq) {
		t->hooks.irq(t->hooks.arg, t->gsi, level);
		return;
	}
	sl_error_t err = NULL;
	if (vmm_irq_line(t->vm, t->gsi, level, &err) < 0) {
		report(t, sl_error_msg(err));
		sl_error_free(&err);
	}
}

static void update_irq(struct virtio_mmio *t)
{
	bool want = t->interrupt_status != 0;
	if (want != t->irq_level)
		drive_irq(t, want);
}

static void fail_locked(struct virtio_mmio *t, const char *msg)
{
	/* Section 2.1.2: NEEDS_RESET, and a configuration change notification
	 * if the driver is live. Popped requests are abandoned: the driver must
	 * reset the device, which discards the rings anyway. */
	t->status |= VIRTIO_STATUS_NEEDS_RESET;
	t->inflight = 0;
	report(t, msg);
	if (t->status & VIRTIO_STATUS_DRIVER_OK) {
		t->interrupt_status |= VIRTIO_INT_CONFIG;
		update_irq(t);
	}
}

void virtio_mmio_fail(struct virtio_mmio *t, const char *fmt, ...)
{
	char msg[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fail_locked(t, msg);
}

static void reset_locked(struct virtio_mmio *t)
{
	t->driver_features = 0;
	t->status = 0;
	t->interrupt_status = 0;
	t->device_features_sel = t->driver_features_sel = t->queue_sel = 0;
	memset(t->q, 0, sizeof(t->q));
	t->inflight = 0;
	update_irq(t);
	if (t->ops->reset)
		t->ops->reset(t->dev);
}

static bool live(struct virtio_mmio *t)
{
	const uint32_t need = VIRTIO_STATUS_DRIVER_OK | VIRTIO_STATUS_FEATURES_OK;
	return (t->status & need) == need && !(t->status & (VIRTIO_STATUS_NEEDS_RESET | VIRTIO_STATUS_FAILED));
}

static struct virtq *sel_queue(struct virtio_mmio *t)
{
	return t->queue_sel < t->ops->nqueues ? &t->q[t->queue_sel] : NULL;
}

static uint32_t reg_read(struct virtio_mmio *t, uint64_t off)
{
	struct virtq *q = sel_queue(t);
	switch (off) {
	case VIRTIO_MMIO_MAGIC_VALUE:
		return VIRTIO_MMIO_MAGIC;
	case VIRTIO_MMIO_VERSION:
		return VIRTIO_MMIO_VERSION_2;
	case VIRTIO_MMIO_DEVICE_ID:
		return t->ops->device_id;
	case VIRTIO_MMIO_VENDOR_ID:
		return VIRTIO_MMIO_VENDOR;
	case VIRTIO_MMIO_DEVICE_FEATURES:
		return t->device_features_sel < 2 ? (uint32_t)(t->device_features >> (32 * t->device_features_sel))
						  : 0;
	case VIRTIO_MMIO_QUEUE_NUM_MAX:
		return q ? t->ops->queue_max : 0;
	case VIRTIO_MMIO_QUEUE_READY:
		return q ? q->ready : 0;
	case VIRTIO_MMIO_INTERRUPT_STATUS:
		return t->interrupt_status;
	case VIRTIO_MMIO_STATUS:
		return t->status;
	case VIRTIO_MMIO_CONFIG_GENERATION:
		return t->config_generation;
	default:
		/* No shared memory regions: length and base read as all ones. */
		if (off >= VIRTIO_MMIO_SHM_LEN_LOW && off <= VIRTIO_MMIO_SHM_BASE_HIGH)
			return 0xffffffffu;
		return 0;
	}
}

static void set_half(uint64_t *v, bool high, uint32_t x)
{
	if (high)
		*v = (*v & 0xffffffffull) | ((uint64_t)x << 32);
	else
		*v = (*v & ~0xffffffffull) | x;
}

static void write_status(struct virtio_mmio *t, uint32_t v)
{
	if (v == 0) {
		reset_locked(t);
		return;
	}
	/* Only the device sets NEEDS_RESET; undefined bits are dropped so every
	 * state a guest can reach is one virtio_mmio_load accepts. */
	uint32_t nv = v & STATUS_KNOWN & ~VIRTIO_STATUS_NEEDS_RESET;
	if ((nv & VIRTIO_STATUS_FEATURES_OK) && !(t->status & VIRTIO_STATUS_FEATURES_OK)) {
		/* Section 3.1.1: leaving FEATURES_OK clear tells the driver the
		 * subset is refused. No legacy interface: VERSION_1 is required. */
		uint64_t extra = t->driver_features & ~t->device_features;
		if (extra || !(t->driver_features & (1ull << VIRTIO_F_VERSION_1)))
			nv &= ~VIRTIO_STATUS_FEATURES_OK;
	}
	bool was_live = live(t);
	t->status = nv | (t->status & VIRTIO_STATUS_NEEDS_RESET);
	/* Section 2.1.2: no buffer is consumed before DRIVER_OK, so a kick
	 * that came earlier was ignored; look at every ready queue now so a
	 * driver that filled a ring before DRIVER_OK is not left waiting. */
	if (!was_live && live(t))
		for (unsigned i = 0; i < t->ops->nqueues; i++)
			if (t->q[i].ready && live(t))
				t->ops->notify(t, t->dev, i);
}

static void write_queue_ready(struct virtio_mmio *t, struct virtq *q, uint32_t v)
{
	if (!v) {
		q->ready = false;
		return;
	}
	if (q->ready)
		return;
	sl_error_t err = NULL;
	if (virtq_check_layout(q, t->ops->queue_max, &t->gmem, &err) < 0) {
		char msg[256];
		snprintf(msg, sizeof(msg), "queue %u: %s", t->queue_sel, sl_error_msg(err));
		sl_error_free(&err);
		fail_locked(t, msg);
		return;
	}
	/* Fresh rings start at index 0 on both sides. */
	q->last_avail_idx = q->used_idx = 0;
	q->ready = true;
}

static void reg_write(struct virtio_mmio *t, uint64_t off, uint32_t v)
{
	struct virtq *q = sel_queue(t);
	/* Queue layout registers are frozen while the queue is enabled. */
	struct virtq *qw = q && !q->ready ? q : NULL;
	switch (off) {
	case VIRTIO_MMIO_DEVICE_FEATURES_SEL:
		t->device_features_sel = v;
		break;
	case VIRTIO_MMIO_DRIVER_FEATURES:
		if (t->driver_features_sel < 2 && !(t->status & VIRTIO_STATUS_FEATURES_OK))
			set_half(&t->driver_features, t->driver_features_sel == 1, v);
		break;
	case VIRTIO_MMIO_DRIVER_FEATURES_SEL:
		t->driver_features_sel = v;
		break;
	case VIRTIO_MMIO_QUEUE_SEL:
		t->queue_sel = v;
		break;
	case VIRTIO_MMIO_QUEUE_NUM:
		if (qw) /* out-of-range sizes stay invalid instead of wrapping */
			qw->num = v > 0xffff ? 0xffff : (uint16_t)v;
		break;
	case VIRTIO_MMIO_QUEUE_READY:
		if (q)
			write_queue_ready(t, q, v);
		break;
	case VIRTIO_MMIO_QUEUE_NOTIFY:
		if (v < t->ops->nqueues && t->q[v].ready && live(t))
			t->ops->notify(t, t->dev, v);
		break;
	case VIRTIO_MMIO_INTERRUPT_ACK:
		t->interrupt_status &= ~v;
		update_irq(t);
		break;
	case VIRTIO_MMIO_STATUS:
		write_status(t, v);
		break;
	case VIRTIO_MMIO_QUEUE_DESC_LOW:
	case VIRTIO_MMIO_QUEUE_DESC_HIGH:
		if (qw)
			set_half(&qw->desc, off == VIRTIO_MMIO_QUEUE_DESC_HIGH, v);
		break;
	case VIRTIO_MMIO_QUEUE_DRIVER_LOW:
	case VIRTIO_MMIO_QUEUE_DRIVER_HIGH:
		if (qw)
			set_half(&qw->avail, off == VIRTIO_MMIO_QUEUE_DRIVER_HIGH, v);
		break;
	case VIRTIO_MMIO_QUEUE_DEVICE_LOW:
	case VIRTIO_MMIO_QUEUE_DEVICE_HIGH:
		if (qw)
			set_half(&qw->used, off == VIRTIO_MMIO_QUEUE_DEVICE_HIGH, v);
		break;
	default:
		break; /* read-only or unknown: ignored */
	}
}

static void mmio_read(struct vmm_vm *vm, void *dev, uint64_t off, uint8_t *data, unsigned size)
{
	struct virtio_mmio *t = dev;
	(void)vm;
	memset(data, 0, size);
	pthread_mutex_lock(&t->lock);
	if (off >= VIRTIO_MMIO_CONFIG) {
		uint64_t c = off - VIRTIO_MMIO_CONFIG;
		if (c < t->ops->config_size && size <= t->ops->config_size - c && t->ops->config_read)
			t->ops->config_read(t->dev, (uint32_t)c, data, size);
	} else if (size == 4 && !(off & 3)) {
		/* Section 4.2.2.2: registers take aligned 32-bit accesses only. */
		uint32_t v = reg_read(t, off);
		memcpy(data, &v, 4);
	}
	pthread_mutex_unlock(&t->lock);
}

static void mmio_write(struct vmm_vm *vm, void *dev, uint64_t off, const uint8_t *data, unsigned size)
{
	struct virtio_mmio *t = dev;
	(void)vm;
	pthread_mutex_lock(&t->lock);
	if (off >= VIRTIO_MMIO_CONFIG) {
		uint64_t c = off - VIRTIO_MMIO_CONFIG;
		if (c < t->ops->config_size && size <= t->ops->config_size - c && t->ops->config_write)
			t->ops->config_write(t->dev, (uint32_t)c, data, size);
	} else if (size == 4 && !(off & 3)) {
		uint32_t v;
		memcpy(&v, data, 4);
		reg_write(t, off, v);
	}
	pthread_mutex_unlock(&t->lock);
}

static const struct vmm_mmio_ops virtio_mmio_bus_ops = {.read = mmio_read, .write = mmio_write};

int virtio_mmio_register(struct vmm_vm *vm, uint64_t base, uint32_t irq_gsi, const struct virtio_dev_ops *ops,
			 void *dev, struct virtio_mmio **out, sl_error_t *err)
{
	const char *name = ops && ops->name ? ops->name : "virtio";
	if (!ops || ops->nqueues > VIRTIO_MMIO_MAX_QUEUES || (ops->nqueues && !ops->notify) ||
	    !ops->queue_max || (ops->queue_max & (ops->queue_max - 1)) || ops->queue_max > VIRTQ_MAX_SIZE ||
	    ops->config_size > VIRTIO_MMIO_SIZE - VIRTIO_MMIO_CONFIG)
		return sl_error_set(err, SL_E_INVALID, "%s: invalid virtio device description", name);
	struct virtio_mmio *t = calloc(1, sizeof(*t));
	if (!t)
		return sl_error_set(err, SL_E_NOMEM, "%s: virtio-mmio transport", name);
	t->vm = vm;
	t->base = base;
	t->gsi = irq_gsi;
	t->ops = ops;
	t->dev = dev;
	t->gmem = (struct virtio_gmem){.map = gmem_map, .ctx = vm};
	t->device_features = ops->features | (1ull << VIRTIO_F_VERSION_1);
	pthread_mutex_init(&t->lock, NULL);
	if (vmm_mmio_register(vm, base, VIRTIO_MMIO_SIZE, &virtio_mmio_bus_ops, t, err) < 0) {
		pthread_mutex_destroy(&t->lock);
		free(t);
		return sl_error_wrap(err, "%s: virtio-mmio at 0x%llx", name, (unsigned long long)base);
	}
	*out = t;
	return 0;
}

void virtio_mmio_free(struct virtio_mmio *t)
{
	if (!t)
		return;
	pthread_mutex_destroy(&t->lock);
	free(t);
}

void virtio_mmio_set_hooks(struct virtio_mmio *t, const struct virtio_mmio_hooks *h)
{
	pthread_mutex_lock(&t->lock);
	t->hooks = h ? *h : (struct virtio_mmio_hooks){0};
	pthread_mutex_unlock(&t->lock);
}

const char *virtio_mmio_last_error(struct virtio_mmio *t)
{
	return t->last_error;
}

uint32_t virtio_mmio_status(struct virtio_mmio *t)
{
	pthread_mutex_lock(&t->lock);
	uint32_t s = t->status;
	pthread_mutex_unlock(&t->lock);
	return s;
}

void virtio_mmio_lock(struct virtio_mmio *t) { pthread_mutex_lock(&t->lock); }
void virtio_mmio_unlock(struct virtio_mmio *t) { pthread_mutex_unlock(&t->lock); }

uint64_t virtio_mmio_driver_features(struct virtio_mmio *t)
{
	return t->driver_features;
}

int virtio_mmio_pop(struct virtio_mmio *t, unsigned queue, struct virtq_chain *c)
{
	if (queue >= t->ops->nqueues || !t->q[queue].ready || !live(t))
		return 0;
	sl_error_t err = NULL;
	int r = virtq_pop(&t->q[queue], &t->gmem, c, &err);
	if (r < 0) {
		char msg[256];
		snprintf(msg, sizeof(msg), "queue %u: %s", queue, sl_error_msg(err));
		sl_error_free(&err);
		fail_locked(t, msg);
		return -1;
	}
	if (r > 0)
		t->inflight++;
	return r;
}

void virtio_mmio_push(struct virtio_mmio *t, unsigned queue, uint16_t head, uint32_t len)
{
	/* A fail() in between abandoned the request: the rings are dead. */
	if (queue >= t->ops->nqueues || !t->inflight || (t->status & VIRTIO_STATUS_NEEDS_RESET))
		return;
	sl_error_t err = NULL;
	if (virtq_push(&t->q[queue], &t->gmem, head, len, &err) < 0) {
		char msg[256];
		snprintf(msg, sizeof(msg), "queue %u: %s", queue, sl_error_msg(err));
		sl_error_free(&err);
		fail_locked(t, msg);
		return;
	}
	t->inflight--;
	if (virtq_wants_interrupt(&t->q[queue], &t->gmem)) {
		t->interrupt_status |= VIRTIO_INT_VRING;
		update_irq(t);
	}
}

int virtio_mmio_save(struct virtio_mmio *t, struct virtio_mmio_state_v1 *s, sl_error_t *err)
{
	pthread_mutex_lock(&t->lock);
	if (t->inflight) {
		unsigned n = t->inflight;
		pthread_mutex_unlock(&t->lock);
		return sl_error_set(err, SL_E_INVALID, "%s: %u request(s) in flight; capture needs a quiesced device",
				    t->ops->name, n);
	}
	memset(s, 0, sizeof(*s));
	s->version = VIRTIO_MMIO_STATE_VERSION;
	s->device_id = t->ops->device_id;
	s->device_features = t->device_features;
	s->driver_features = t->driver_features;
	s->status = t->status;
	s->interrupt_status = t->interrupt_status;
	s->device_features_sel = t->device_features_sel;
	s->driver_features_sel = t->driver_features_sel;
	s->queue_sel = t->queue_sel;
	s->config_generation = t->config_generation;
	s->nqueues = t->ops->nqueues;
	for (unsigned i = 0; i < t->ops->nqueues; i++) {
		const struct virtq *q = &t->q[i];
		s->queue[i] = (struct virtio_mmio_queue_state_v1){
			.desc = q->desc,
			.avail = q->avail,
			.used = q->used,
			.num = q->num,
			.last_avail_idx = q->last_avail_idx,
			.used_idx = q->used_idx,
			.ready = q->ready,
		};
	}
	pthread_mutex_unlock(&t->lock);
	return 0;
}

static int check_state(struct virtio_mmio *t, const struct virtio_mmio_state_v1 *s, sl_error_t *err)
{
	const char *n = t->ops->name;
	if (s->version != VIRTIO_MMIO_STATE_VERSION)
		return sl_error_set(err, SL_E_UNSUPPORTED, "%s: virtio-mmio state version %u", n, s->version);
	if (s->device_id != t->ops->device_id)
		return sl_error_set(err, SL_E_INVALID, "%s: state is for device id %u, not %u", n, s->device_id,
				    t->ops->device_id);
	if (s->device_features != t->device_features)
		return sl_error_set(err, SL_E_INVALID, "%s: state offered features 0x%llx, this device 0x%llx", n,
				    (unsigned long long)s->device_features, (unsigned long long)t->device_features);
	/* Before FEATURES_OK the driver may have written anything; once it is
	 * set, the device accepted a subset of what it offered. */
	if ((s->status & VIRTIO_STATUS_FEATURES_OK) && (s->driver_features & ~s->device_features))
		return sl_error_set(err, SL_E_INVALID, "%s: accepted driver features 0x%llx were not offered", n,
				    (unsigned long long)s->driver_features);
	if (s->nqueues != t->ops->nqueues)
		return sl_error_set(err, SL_E_INVALID, "%s: state has %u queues, device %u", n, s->nqueues,
				    t->ops->nqueues);
	if ((s->status & ~STATUS_KNOWN) || (s->interrupt_status & ~(VIRTIO_INT_VRING | VIRTIO_INT_CONFIG)) ||
	    s->pad0)
		return sl_error_set(err, SL_E_INVALID, "%s: unknown status 0x%x or interrupt bits 0x%x", n, s->status,
				    s->interrupt_status);
	for (unsigned i = 0; i < VIRTIO_MMIO_MAX_QUEUES; i++) {
		const struct virtio_mmio_queue_state_v1 *qs = &s->queue[i];
		if (i >= s->nqueues) {
			static const struct virtio_mmio_queue_state_v1 zero;
			if (memcmp(qs, &zero, sizeof(zero)))
				return sl_error_set(err, SL_E_INVALID, "%s: state for absent queue %u", n, i);
			continue;
		}
		if (qs->ready > 1 || qs->pad0)
			return sl_error_set(err, SL_E_INVALID, "%s: queue %u: bad ready flag", n, i);
		/* A disabled queue's registers hold whatever the driver wrote;
		 * they are validated when it sets QueueReady, as live. */
		if (!qs->ready)
			continue;
		struct virtq q = {.desc = qs->desc, .avail = qs->avail, .used = qs->used, .num = qs->num};
		if (virtq_check_layout(&q, t->ops->queue_max, &t->gmem, err) < 0) {
			(*err)->code = SL_E_INVALID;
			return sl_error_wrap(err, "%s: queue %u", n, i);
		}
	}
	return 0;
}

int virtio_mmio_load(struct virtio_mmio *t, const struct virtio_mmio_state_v1 *s, sl_error_t *err)
{
	pthread_mutex_lock(&t->lock);
	if (check_state(t, s, err) < 0) {
		pthread_mutex_unlock(&t->lock);
		return -1;
	}
	t->driver_features = s->driver_features;
	t->status = s->status;
	t->interrupt_status = s->interrupt_status;
	t->device_features_sel = s->device_features_sel;
	t->driver_features_sel = s->driver_features_sel;
	t->queue_sel = s->queue_sel;
	t->config_generation = s->config_generation;
	memset(t->q, 0, sizeof(t->q));
	for (unsigned i = 0; i < s->nqueues; i++) {
		const struct virtio_mmio_queue_state_v1 *qs = &s->queue[i];
		t->q[i] = (struct virtq){
			.desc = qs->desc,
			.avail = qs->avail,
			.used = qs->used,
			.num = qs->num,
			.ready = qs->ready,
			.last_avail_idx = qs->last_avail_idx,
			.used_idx = qs->used_idx,
		};
	}
	t->inflight = 0;
	pthread_mutex_unlock(&t->lock);
	return 0;
}

void virtio_mmio_sync_irq(struct virtio_mmio *t)
{
	pthread_mutex_lock(&t->lock);
	drive_irq(t, t->interrupt_status != 0);
	pthread_mutex_unlock(&t->lock);
}
