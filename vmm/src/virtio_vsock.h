/* Virtio socket device (id 19): guest AF_VSOCK streams carried to host Unix sockets (Firecracker's convention). */
#ifndef VIRTIO_VSOCK_H
#define VIRTIO_VSOCK_H

#include <stdbool.h>
#include <stdint.h>

#include "sl/error.h"
#include "virtio.h"

struct vmm_vm;

#define VIRTIO_ID_VSOCK 19u

/* ---- wire format (virtio 1.2 section 5.10), little-endian ---- */
#define VIRTIO_VSOCK_F_STREAM 0 /* offered; a driver that knows no bits (Linux) gets streams anyway */

#define VIRTIO_VSOCK_QUEUE_RX 0u
#define VIRTIO_VSOCK_QUEUE_TX 1u
#define VIRTIO_VSOCK_QUEUE_EVENT 2u

#define VIRTIO_VSOCK_HOST_CID 2u
#define VIRTIO_VSOCK_TYPE_STREAM 1u

#define VIRTIO_VSOCK_OP_INVALID 0u
#define VIRTIO_VSOCK_OP_REQUEST 1u
#define VIRTIO_VSOCK_OP_RESPONSE 2u
#define VIRTIO_VSOCK_OP_RST 3u
#define VIRTIO_VSOCK_OP_SHUTDOWN 4u
#define VIRTIO_VSOCK_OP_RW 5u
#define VIRTIO_VSOCK_OP_CREDIT_UPDATE 6u
#define VIRTIO_VSOCK_OP_CREDIT_REQUEST 7u

#define VIRTIO_VSOCK_SHUTDOWN_F_RECEIVE 1u /* the sender will receive no more data */
#define VIRTIO_VSOCK_SHUTDOWN_F_SEND 2u    /* the sender will send no more data */

#define VIRTIO_VSOCK_EVENT_TRANSPORT_RESET 0u

struct virtio_vsock_hdr {
	uint64_t src_cid;
	uint64_t dst_cid;
	uint32_t src_port;
	uint32_t dst_port;
	uint32_t len; /* payload bytes after the header */
	uint16_t type;
	uint16_t op;
	uint32_t flags;
	uint32_t buf_alloc; /* the sender's receive buffer for this connection */
	uint32_t fwd_cnt;   /* payload bytes the sender has consumed from it */
} __attribute__((packed));
_Static_assert(sizeof(struct virtio_vsock_hdr) == 44, "virtio_vsock_hdr is 44 bytes on the wire");

/* ---- limits ---- */
#define VIRTIO_VSOCK_QUEUE_SIZE 128u
#define VIRTIO_VSOCK_MAX_CONNS 256u             /* per device, host clients still sending CONNECT included */
#define VIRTIO_VSOCK_BUF_ALLOC (128u << 10)     /* guest->host bytes buffered per connection (advertised) */
#define VIRTIO_VSOCK_MAX_PKT (64u << 10)        /* payload cap of one packet, either way (Linux's too) */
#define VIRTIO_VSOCK_LINE_MAX 32u               /* "CONNECT <port>\n", newline included */
#define VIRTIO_VSOCK_TIMEOUT_MS 5000u           /* default for opts.timeout_ms */
#define VIRTIO_VSOCK_LOCAL_PORT_BASE (1u << 30) /* host ports of host-initiated connections */

struct virtio_vsock_opts {
	uint64_t guest_cid;   /* 3 .. 0xfffffffe */
	const char *uds_path; /* host Unix socket of this VM; must not exist */
	/* Bounds, each on its own: the CONNECT line after accept, the guest's
	 * answer to a host-initiated request, and flushing guest data to a host
	 * socket after both sides closed. 0: VIRTIO_VSOCK_TIMEOUT_MS. */
	unsigned timeout_ms;
	/* Tests and the fuzzer: no I/O thread; the caller runs the device with
	 * virtio_vsock_poll on one thread, deterministically. */
	bool no_thread;
	/* Told about host clients refused for their uid (see below), for the
	 * program's log: on the I/O thread, with the device lock held, so it
	 * must only record or print. At most one call per second: `more` counts
	 * the refusals since the previous call that were not reported. NULL:
	 * refusals are silent. */
	void (*refused)(void *arg, const char *path, uint32_t uid, unsigned more);
	void *refused_arg;
};

struct virtio_vsock;

/* Registers the device, binds and listens on uds_path (mode 0600; fails
 * with a clear error if the path exists or is too long to also hold the
 * "_<port>" suffix of guest-initiated connections, or if its directory, or
 * one above it, could be changed by someone other than root and the VMM's
 * user: sl_sock_dir_check), starts the I/O thread.
 *
 * Whoever connects to uds_path owns the guest, so a host client is served
 * only if its SO_PEERCRED uid is 0 or the process's effective uid at the
 * time it connects (after `spore --jail-uid` that is the new uid; root,
 * the shim, is still served). Others are sent one line,
 * "ERROR vsock socket serves uid U and root only\n", and closed at once,
 * before anything they sent is read. */
int virtio_vsock_create(struct vmm_vm *vm, uint64_t base, uint32_t irq_gsi, const struct virtio_vsock_opts *o,
			struct virtio_vsock **out, sl_error_t *err);
/* Starts the device's I/O thread (unless no_thread); the VM calls it as it
 * starts. Until then host connections wait in the socket's backlog. */
int virtio_vsock_start(struct virtio_vsock *v, sl_error_t *err);
struct virtio_mmio *virtio_vsock_transport(struct virtio_vsock *v);
uint64_t virtio_vsock_cid(struct virtio_vsock *v);

/* Stops the device touching guest memory and queues (for capture: the VMM
 * pauses the vCPUs, then calls this, saves state and memory, then resumes).
 * On return no chain is held, so virtio_mmio_save succeeds. Host sockets
 * stay open; their data and new clients just wait. Idempotent. */
void virtio_vsock_pause(struct virtio_vsock *v);
void virtio_vsock_resume(struct virtio_vsock *v);

/* After a restore loaded the transport state (virtio_mmio_load): no host
 * connection of the captured guest survives, so the device tells the guest
 * with a VIRTIO_VSOCK_EVENT_TRANSPORT_RESET on the event queue (as soon as
 * the driver has an event buffer posted) and the guest drops its
 * connections (its listeners stay). Host clients that connect meanwhile are
 * held until the guest has handled the event. A new device does not touch
 * rings that virtio_mmio_load made live until this is called (or the
 * driver resets or kicks it), so no pause is needed around the load.
 * Cannot fail today. */
int virtio_vsock_restored(struct virtio_vsock *v, sl_error_t *err);

/* Stops the thread, closes every connection, unlinks uds_path (if it is
 * still the socket we bound) and frees the transport: call from VM
 * teardown, once no vCPU can reach it (see virtio_mmio_free). */
void virtio_vsock_free(struct virtio_vsock *v);

/* no_thread mode only: one round of the I/O loop on the calling thread
 * (queue work, then wait up to timeout_ms for host sockets, then handle
 * what they reported). */
void virtio_vsock_poll(struct virtio_vsock *v, int timeout_ms);

#endif
