/* Virtio 1.x over MMIO (transport version 2), split virtqueues, and the devices built on them. */
#ifndef VIRTIO_H
#define VIRTIO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "sl/error.h"

struct vmm_vm;

/* ---- device ids (virtio 1.x section 5) ---- */
#define VIRTIO_ID_BLK 2u
#define VIRTIO_ID_RNG 4u

/* ---- feature bits ---- */
#define VIRTIO_F_INDIRECT_DESC 28 /* never offered: indirect tables are rejected */
#define VIRTIO_F_VERSION_1 32     /* always offered: no legacy interface */

/* ---- device status bits ---- */
#define VIRTIO_STATUS_ACKNOWLEDGE 0x01u
#define VIRTIO_STATUS_DRIVER 0x02u
#define VIRTIO_STATUS_DRIVER_OK 0x04u
#define VIRTIO_STATUS_FEATURES_OK 0x08u
#define VIRTIO_STATUS_NEEDS_RESET 0x40u
#define VIRTIO_STATUS_FAILED 0x80u

/* ---- InterruptStatus bits ---- */
#define VIRTIO_INT_VRING 0x1u
#define VIRTIO_INT_CONFIG 0x2u

/* ---- MMIO register layout (section 4.2.2) ---- */
#define VIRTIO_MMIO_MAGIC_VALUE 0x000
#define VIRTIO_MMIO_VERSION 0x004
#define VIRTIO_MMIO_DEVICE_ID 0x008
#define VIRTIO_MMIO_VENDOR_ID 0x00c
#define VIRTIO_MMIO_DEVICE_FEATURES 0x010
#define VIRTIO_MMIO_DEVICE_FEATURES_SEL 0x014
#define VIRTIO_MMIO_DRIVER_FEATURES 0x020
#define VIRTIO_MMIO_DRIVER_FEATURES_SEL 0x024
#define VIRTIO_MMIO_QUEUE_SEL 0x030
#define VIRTIO_MMIO_QUEUE_NUM_MAX 0x034
#define VIRTIO_MMIO_QUEUE_NUM 0x038
#define VIRTIO_MMIO_QUEUE_READY 0x044
#define VIRTIO_MMIO_QUEUE_NOTIFY 0x050
#define VIRTIO_MMIO_INTERRUPT_STATUS 0x060
#define VIRTIO_MMIO_INTERRUPT_ACK 0x064
#define VIRTIO_MMIO_STATUS 0x070
#define VIRTIO_MMIO_QUEUE_DESC_LOW 0x080
#define VIRTIO_MMIO_QUEUE_DESC_HIGH 0x084
#define VIRTIO_MMIO_QUEUE_DRIVER_LOW 0x090
#define VIRTIO_MMIO_QUEUE_DRIVER_HIGH 0x094
#define VIRTIO_MMIO_QUEUE_DEVICE_LOW 0x0a0
#define VIRTIO_MMIO_QUEUE_DEVICE_HIGH 0x0a4
#define VIRTIO_MMIO_SHM_SEL 0x0ac
#define VIRTIO_MMIO_SHM_LEN_LOW 0x0b0
#define VIRTIO_MMIO_SHM_BASE_HIGH 0x0bc
#define VIRTIO_MMIO_CONFIG_GENERATION 0x0fc
#define VIRTIO_MMIO_CONFIG 0x100

#define VIRTIO_MMIO_MAGIC 0x74726976u /* "virt" */
#define VIRTIO_MMIO_VERSION_2 2u
#define VIRTIO_MMIO_VENDOR 0x524f5053u /* "SPOR", as the spore device */
#define VIRTIO_MMIO_SIZE 0x1000u       /* one page per device */
#define VIRTIO_MMIO_MAX_QUEUES 8u

/* Suggested machine layout (the integrator decides): device i at
 * VIRTIO_MMIO_BASE + i * VIRTIO_MMIO_SIZE on GSI VIRTIO_MMIO_GSI_BASE + i.
 * Above the 3 GiB RAM cap, below the IOAPIC/LAPIC at 0xfec00000. */
#define VIRTIO_MMIO_BASE 0xd0000000ull
#define VIRTIO_MMIO_GSI_BASE 5u

/* ---- split virtqueue (section 2.7) ---- */
#define VIRTQ_DESC_F_NEXT 1u
#define VIRTQ_DESC_F_WRITE 2u
#define VIRTQ_DESC_F_INDIRECT 4u
#define VIRTQ_AVAIL_F_NO_INTERRUPT 1u

/* Largest queue any device offers; also bounds a chain's descriptor count,
 * since without indirect descriptors a chain cannot be longer than its queue. */
#define VIRTQ_MAX_SIZE 256u
/* Cap on the bytes one chain may describe (readable + writable). Devices
 * that need more must advertise smaller limits (virtio-blk does, through
 * seg_max and size_max). */
#define VIRTQ_CHAIN_MAX_BYTES (16u << 20)

/* Guest memory as the queue code sees it: map(ctx, gpa, len) returns a host
 * pointer to [gpa, gpa + len) or NULL if any of it is outside guest RAM.
 * The VMM passes vmm_gpa; the fuzzer and tests pass a plain buffer. */
struct virtio_gmem {
	void *(*map)(void *ctx, uint64_t gpa, uint64_t len);
	void *ctx;
};

/* Device-side state of one split virtqueue. The indexes are the device's
 * own copies: nothing is ever read back from the used ring. */
struct virtq {
	uint64_t desc, avail, used; /* guest-physical addresses */
	uint16_t num;               /* queue size (QueueNum) */
	bool ready;
	uint16_t last_avail_idx; /* next available-ring slot to consume */
	uint16_t used_idx;       /* next used-ring slot to fill */
};

/* One parsed descriptor chain: seg[0, nread) are the device-readable
 * buffers in order, seg[nread, nread + nwrite) the device-writable ones.
 * Pointers are into guest memory and valid while that mapping is. */
struct virtq_chain {
	uint16_t head;
	unsigned nread, nwrite;
	uint64_t read_bytes, write_bytes;
	struct iovec seg[VIRTQ_MAX_SIZE];
};

/* virtio_queue.c: pure functions over (struct virtq, struct virtio_gmem). */

/* Checks what QueueReady=1 (or a restore) must hold: num a power of two in
 * [1, max], the rings aligned as the spec requires and entirely in RAM. */
int virtq_check_layout(const struct virtq *q, uint16_t max, const struct virtio_gmem *m, sl_error_t *err);
/* Parses the chain starting at descriptor `head`. Rejects (SL_E_GUEST):
 * indexes >= num, more descriptors than num (a loop), buffers outside RAM,
 * more than VIRTQ_CHAIN_MAX_BYTES in total, a readable descriptor after a
 * writable one, and indirect descriptors (not offered). */
int virtq_walk(const struct virtq *q, const struct virtio_gmem *m, uint16_t head, struct virtq_chain *c,
	       sl_error_t *err);
/* Takes the next available chain: 1 with *c filled and last_avail_idx
 * advanced, 0 if the ring is empty, -1 (err set) if the ring or the chain
 * is malformed. q must have passed virtq_check_layout. */
int virtq_pop(struct virtq *q, const struct virtio_gmem *m, struct virtq_chain *c, sl_error_t *err);
/* Publishes a used element (head, bytes written) and advances used_idx. */
int virtq_push(struct virtq *q, const struct virtio_gmem *m, uint16_t head, uint32_t len, sl_error_t *err);
/* Whether the driver wants an interrupt for newly used buffers (it has not
 * set VIRTQ_AVAIL_F_NO_INTERRUPT; EVENT_IDX is not offered). */
bool virtq_wants_interrupt(const struct virtq *q, const struct virtio_gmem *m);
/* Copy out of the readable bytes / into the writable bytes of a chain, as
 * one stream starting at `off` (framing-agnostic, as the spec requires).
 * Return the bytes copied (less than len at the end of the stream). */
size_t virtq_chain_read(const struct virtq_chain *c, uint64_t off, void *dst, size_t len);
size_t virtq_chain_write(const struct virtq_chain *c, uint64_t off, const void *src, size_t len);
/* Fills out[] with the iovecs covering [off, off + len) of the readable
 * (writable == false) or writable stream; returns their count, or -1 if the
 * range is outside the stream. max must be >= VIRTQ_MAX_SIZE. */
int virtq_chain_iov(const struct virtq_chain *c, bool writable, uint64_t off, uint64_t len, struct iovec *out,
		    unsigned max);

/* ---- virtio_mmio.c: the transport ---- */
struct virtio_mmio;

/* What a device gives the transport (kvmtool-like). Callbacks run with the
 * transport's lock held, on the vCPU thread that did the MMIO access; they
 * may call virtio_mmio_pop/push/fail/driver_features but nothing else that
 * takes the lock (status, set_hooks, save, load, sync_irq, lock). */
struct virtio_dev_ops {
	const char *name;   /* for error messages */
	uint32_t device_id; /* VIRTIO_ID_* */
	uint64_t features;  /* device-specific bits; VIRTIO_F_VERSION_1 is added */
	uint32_t config_size;
	unsigned nqueues;   /* <= VIRTIO_MMIO_MAX_QUEUES */
	uint16_t queue_max; /* QueueNumMax of every queue; power of two <= VIRTQ_MAX_SIZE */
	/* Config space accesses, off + size <= config_size (checked). NULL
	 * config_read reads zeros; NULL config_write ignores writes. */
	void (*config_read)(void *dev, uint32_t off, uint8_t *data, unsigned size);
	void (*config_write)(void *dev, uint32_t off, const uint8_t *data, unsigned size);
	/* The driver notified `queue` (ready, DRIVER_OK, no NEEDS_RESET).
	 * Typically: while virtio_mmio_pop() == 1, handle and virtio_mmio_push(). */
	void (*notify)(struct virtio_mmio *t, void *dev, unsigned queue);
	/* The driver reset the device (Status <- 0). May be NULL. */
	void (*reset)(void *dev);
};

/* Host-side hooks. irq drives the interrupt line (default: vmm_irq_line);
 * report receives one message per guest error that set NEEDS_RESET or per
 * failed interrupt injection (default: none; the last message is kept,
 * see virtio_mmio_last_error). Tests inject both. Both run with the
 * transport lock held and must not call back into the transport. */
struct virtio_mmio_hooks {
	void (*irq)(void *arg, uint32_t gsi, int level);
	void (*report)(void *arg, const char *device, const char *msg);
	void *arg;
};

/* Creates the transport for `dev` and claims [base, base + VIRTIO_MMIO_SIZE)
 * on the VM's MMIO bus. The interrupt is level-triggered on `irq_gsi`. */
int virtio_mmio_register(struct vmm_vm *vm, uint64_t base, uint32_t irq_gsi, const struct virtio_dev_ops *ops,
			 void *dev, struct virtio_mmio **out, sl_error_t *err);
/* Frees the transport; only once no vCPU can reach it (the MMIO bus has no
 * unregister: call this from VM teardown, after the vCPUs are gone). */
void virtio_mmio_free(struct virtio_mmio *t);
void virtio_mmio_set_hooks(struct virtio_mmio *t, const struct virtio_mmio_hooks *h);
const char *virtio_mmio_last_error(struct virtio_mmio *t); /* "" if none */
uint32_t virtio_mmio_status(struct virtio_mmio *t);

/* For devices, with the lock held (i.e. inside callbacks, or between
 * virtio_mmio_lock/unlock for a device completing work on another thread). */
void virtio_mmio_lock(struct virtio_mmio *t);
void virtio_mmio_unlock(struct virtio_mmio *t);
/* 1: *c is the next request; 0: none (or the device needs a reset);
 * -1: malformed, the device is now NEEDS_RESET and the error reported. */
int virtio_mmio_pop(struct virtio_mmio *t, unsigned queue, struct virtq_chain *c);
/* Completes a popped request with `len` bytes written, and interrupts the
 * driver unless it asked not to be. */
void virtio_mmio_push(struct virtio_mmio *t, unsigned queue, uint16_t head, uint32_t len);
/* A device found a request it cannot make sense of: NEEDS_RESET, report,
 * and forget whatever requests were popped (the driver must reset). */
void virtio_mmio_fail(struct virtio_mmio *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
uint64_t virtio_mmio_driver_features(struct virtio_mmio *t);

/* ---- capture / restore ---- */
struct virtio_mmio_queue_state_v1 {
	uint64_t desc, avail, used;
	uint16_t num;
	uint16_t last_avail_idx;
	uint16_t used_idx;
	uint8_t ready;
	uint8_t pad0;
};

/* Fixed little-endian layout (x86_64), explicit padding, no pointers. */
struct virtio_mmio_state_v1 {
	uint32_t version; /* VIRTIO_MMIO_STATE_VERSION */
	uint32_t device_id;
	uint64_t device_features; /* what was offered: must match on load */
	uint64_t driver_features;
	uint32_t status;
	uint32_t interrupt_status;
	uint32_t device_features_sel;
	uint32_t driver_features_sel;
	uint32_t queue_sel;
	uint32_t config_generation;
	uint32_t nqueues;
	uint32_t pad0;
	struct virtio_mmio_queue_state_v1 queue[VIRTIO_MMIO_MAX_QUEUES];
};
#define VIRTIO_MMIO_STATE_VERSION 1u

/* Saves the transport. Refuses (SL_E_INVALID) if a request is in flight.
 * Requests complete synchronously inside the notify handler on the vCPU
 * thread that wrote QueueNotify, under the transport lock, so once every
 * vCPU is parked there is none: the check guards that invariant (and any
 * future asynchronous device, which must complete or re-queue first). */
int virtio_mmio_save(struct virtio_mmio *t, struct virtio_mmio_state_v1 *s, sl_error_t *err);
/* Validates s against this device and guest RAM (version, device id and
 * features, queue count, sizes power of two <= QueueNumMax, ring addresses
 * aligned and inside RAM, known status and interrupt bits) and only then
 * applies it. Does not touch the interrupt line: see virtio_mmio_sync_irq. */
int virtio_mmio_load(struct virtio_mmio *t, const struct virtio_mmio_state_v1 *s, sl_error_t *err);
/* Drives the interrupt line to the level InterruptStatus implies. Call after
 * restoring the irqchip: KVM's per-source line levels are not part of the
 * irqchip state, so a pending interrupt must be re-asserted. */
void virtio_mmio_sync_irq(struct virtio_mmio *t);

/* ---- virtio_rng.c (device id 4) ---- */
struct virtio_rng;
int virtio_rng_create(struct vmm_vm *vm, uint64_t base, uint32_t irq_gsi, struct virtio_rng **out,
		      sl_error_t *err);
struct virtio_mmio *virtio_rng_transport(struct virtio_rng *r);
void virtio_rng_free(struct virtio_rng *r);

/* ---- virtio_blk.c (device id 2) ---- */
#define VIRTIO_BLK_F_SIZE_MAX 1
#define VIRTIO_BLK_F_SEG_MAX 2
#define VIRTIO_BLK_F_RO 5
#define VIRTIO_BLK_F_FLUSH 9
#define VIRTIO_BLK_T_IN 0u
#define VIRTIO_BLK_T_OUT 1u
#define VIRTIO_BLK_T_FLUSH 4u
#define VIRTIO_BLK_T_GET_ID 8u
#define VIRTIO_BLK_S_OK 0u
#define VIRTIO_BLK_S_IOERR 1u
#define VIRTIO_BLK_S_UNSUPP 2u
#define VIRTIO_BLK_ID_BYTES 20u
#define VIRTIO_BLK_QUEUE_SIZE 128u
#define VIRTIO_BLK_SEG_MAX (VIRTIO_BLK_QUEUE_SIZE - 2u) /* header and status take two */
#define VIRTIO_BLK_SIZE_MAX (64u << 10)                  /* seg_max * size_max < VIRTQ_CHAIN_MAX_BYTES */

struct virtio_blk_opts {
	const char *path; /* raw image: a regular file or a block device */
	bool read_only;   /* offer VIRTIO_BLK_F_RO; the image is opened O_RDONLY */
	const char *serial; /* GET_ID answer, up to 20 bytes; NULL: "spore-blk" */
	bool have_fd;       /* use a duplicate of fd; path only names it in messages */
	int fd;
};
struct virtio_blk;
int virtio_blk_create(struct vmm_vm *vm, uint64_t base, uint32_t irq_gsi, const struct virtio_blk_opts *o,
		      struct virtio_blk **out, sl_error_t *err);
struct virtio_mmio *virtio_blk_transport(struct virtio_blk *b);
uint64_t virtio_blk_capacity(struct virtio_blk *b); /* 512-byte sectors */
int virtio_blk_fd(struct virtio_blk *b);            /* the image, for capture */
void virtio_blk_free(struct virtio_blk *b);

#endif
