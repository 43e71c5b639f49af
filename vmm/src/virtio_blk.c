/* Virtio block device (id 2) backed by a raw image: read, write, flush, GET_ID, optional read-only. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "virtio.h"

/* Requests are served synchronously inside the QueueNotify handler, on the
 * vCPU thread that wrote the register, with the transport lock held. That
 * is acceptable for now: the guests we run do little disk I/O (a root
 * image read mostly once, through the page cache), a vCPU blocked in
 * pread behaves like one stalled on a slow MMIO write, and it gives the
 * capture rule for free: a paused VM has no request in flight. Going
 * asynchronous needs an I/O thread (or io_uring) per device fed from the
 * notify handler (ideally an ioeventfd, so the vCPU does not exit to us at
 * all), completion through virtio_mmio_lock/push/unlock and an irqfd, and
 * a drain step in capture that waits for (or re-queues by rewinding
 * last_avail_idx) every popped request before virtio_mmio_save. */

#define SECTOR 512u
#define HDR_BYTES 16u
#define CONFIG_BYTES 24u /* capacity, size_max, seg_max, geometry, blk_size */

struct virtio_blk_req_hdr {
	uint32_t type;
	uint32_t reserved;
	uint64_t sector;
};

struct virtio_blk {
	struct virtio_mmio *t;
	int fd;
	bool read_only;
	uint64_t capacity; /* sectors */
	uint8_t config[CONFIG_BYTES];
	char id[VIRTIO_BLK_ID_BYTES];
	struct virtq_chain chain;
	struct iovec iov[VIRTQ_MAX_SIZE];
	struct virtio_dev_ops ops; /* features depend on read_only */
};

static int rw_full(int fd, struct iovec *iov, int n, uint64_t off, bool write)
{
	while (n > 0) {
		ssize_t r = write ? pwritev(fd, iov, n, (off_t)off) : preadv(fd, iov, n, (off_t)off);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (r == 0)
			return -1; /* the image shrank under us */
		off += (uint64_t)r;
		while (n > 0 && (size_t)r >= iov->iov_len) {
			r -= (ssize_t)iov->iov_len;
			iov++;
			n--;
		}
		if (n > 0) {
			iov->iov_base = (uint8_t *)iov->iov_base + r;
			iov->iov_len -= (size_t)r;
		}
	}
	return 0;
}

static bool in_range(struct virtio_blk *b, uint64_t sector, uint64_t bytes)
{
	if (bytes % SECTOR)
		return false;
	return sector <= b->capacity && bytes / SECTOR <= b->capacity - sector;
}

/* Serves one request; returns the status byte and sets *written to the data
 * bytes written into the guest's buffers (status excluded). */
static uint8_t serve(struct virtio_blk *b, const struct virtq_chain *c, const struct virtio_blk_req_hdr *h,
		     uint64_t *written)
{
	uint64_t data_in = c->write_bytes - 1; /* writable bytes before the status byte */
	uint64_t data_out = c->read_bytes - HDR_BYTES;
	int n;
	*written = 0;
	switch (h->type) {
	case VIRTIO_BLK_T_IN:
		if (data_out || !in_range(b, h->sector, data_in))
			return VIRTIO_BLK_S_IOERR;
		n = virtq_chain_iov(c, true, 0, data_in, b->iov, VIRTQ_MAX_SIZE);
		if (n < 0)
			return VIRTIO_BLK_S_IOERR;
		*written = data_in; /* an upper bound if the read fails midway */
		return rw_full(b->fd, b->iov, n, h->sector * SECTOR, false) < 0 ? VIRTIO_BLK_S_IOERR
										 : VIRTIO_BLK_S_OK;
	case VIRTIO_BLK_T_OUT:
		/* Section 5.2.6.2: IOERR for writes to a VIRTIO_BLK_F_RO device. */
		if (b->read_only || data_in || !in_range(b, h->sector, data_out))
			return VIRTIO_BLK_S_IOERR;
		n = virtq_chain_iov(c, false, HDR_BYTES, data_out, b->iov, VIRTQ_MAX_SIZE);
		if (n < 0)
			return VIRTIO_BLK_S_IOERR;
		return rw_full(b->fd, b->iov, n, h->sector * SECTOR, true) < 0 ? VIRTIO_BLK_S_IOERR
										: VIRTIO_BLK_S_OK;
	case VIRTIO_BLK_T_FLUSH:
		return fdatasync(b->fd) < 0 ? VIRTIO_BLK_S_IOERR : VIRTIO_BLK_S_OK;
	case VIRTIO_BLK_T_GET_ID: {
		size_t k = data_in < VIRTIO_BLK_ID_BYTES ? (size_t)data_in : VIRTIO_BLK_ID_BYTES;
		*written = virtq_chain_write(c, 0, b->id, k);
		return VIRTIO_BLK_S_OK;
	}
	default:
		return VIRTIO_BLK_S_UNSUPP;
	}
}

static void blk_notify(struct virtio_mmio *t, void *dev, unsigned queue)
{
	struct virtio_blk *b = dev;
	struct virtq_chain *c = &b->chain;
	while (virtio_mmio_pop(t, queue, c) == 1) {
		/* Without a header to answer or a status byte to answer in, the
		 * request cannot even be failed: the driver is broken. */
		if (c->read_bytes < HDR_BYTES || c->write_bytes < 1) {
			virtio_mmio_fail(t, "request %u has %llu readable and %llu writable bytes", c->head,
					 (unsigned long long)c->read_bytes, (unsigned long long)c->write_bytes);
			return;
		}
		struct virtio_blk_req_hdr h;
		virtq_chain_read(c, 0, &h, sizeof(h));
		uint64_t written;
		uint8_t status = serve(b, c, &h, &written);
		virtq_chain_write(c, c->write_bytes - 1, &status, 1);
		virtio_mmio_push(t, queue, c->head, (uint32_t)(written + 1));
	}
}

static void blk_config_read(void *dev, uint32_t off, uint8_t *data, unsigned size)
{
	struct virtio_blk *b = dev;
	memcpy(data, b->config + off, size); /* bounds checked by the transport */
}

static int image_size(int fd, const char *path, uint64_t *size, sl_error_t *err)
{
	struct stat st;
	if (fstat(fd, &st) < 0)
		return sl_error_sys(err, "stat %s", path);
	if (S_ISREG(st.st_mode)) {
		*size = (uint64_t)st.st_size;
		return 0;
	}
	if (S_ISBLK(st.st_mode)) {
		if (ioctl(fd, BLKGETSIZE64, size) < 0)
			return sl_error_sys(err, "BLKGETSIZE64 %s", path);
		return 0;
	}
	return sl_error_set(err, SL_E_INVALID, "%s is not a regular file or block device", path);
}

int virtio_blk_create(struct vmm_vm *vm, uint64_t base, uint32_t irq_gsi, const struct virtio_blk_opts *o,
		      struct virtio_blk **out, sl_error_t *err)
{
	const char *serial = o->serial ? o->serial : "spore-blk";
	if (!o->path)
		return sl_error_set(err, SL_E_INVALID, "virtio-blk: no image path");
	if (o->have_fd && o->fd < 0)
		return sl_error_set(err, SL_E_INVALID, "virtio-blk: %s: no open image", o->path);
	if (strlen(serial) > VIRTIO_BLK_ID_BYTES)
		return sl_error_set(err, SL_E_INVALID, "virtio-blk: serial \"%s\" longer than %u bytes", serial,
				    VIRTIO_BLK_ID_BYTES);
	struct virtio_blk *b = calloc(1, sizeof(*b));
	if (!b)
		return sl_error_set(err, SL_E_NOMEM, "virtio-blk");
	b->read_only = o->read_only;
	b->fd = o->have_fd ? fcntl(o->fd, F_DUPFD_CLOEXEC, 0)
			   : open(o->path, (o->read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC | O_NOCTTY);
	if (b->fd < 0) {
		sl_error_sys(err, "virtio-blk: open %s", o->path);
		goto fail;
	}
	/* Two writers on one image (say, two forks of a spore) would corrupt
	 * it silently: writers take the image exclusively, readers shared. */
	if (flock(b->fd, (o->read_only ? LOCK_SH : LOCK_EX) | LOCK_NB) < 0) {
		sl_error_sys(err, "virtio-blk: lock %s (in use by another VM?)", o->path);
		goto fail;
	}
	uint64_t size;
	if (image_size(b->fd, o->path, &size, err) < 0)
		goto fail;
	b->capacity = size / SECTOR; /* a trailing partial sector is not visible */
	memcpy(b->id, serial, strlen(serial)); /* zero-padded, no NUL at 20 bytes */

	uint32_t size_max = VIRTIO_BLK_SIZE_MAX, seg_max = VIRTIO_BLK_SEG_MAX;
	memcpy(b->config + 0, &b->capacity, 8);
	memcpy(b->config + 8, &size_max, 4);
	memcpy(b->config + 12, &seg_max, 4);

	/* The chain cap must admit the largest request the driver may build. */
	_Static_assert((uint64_t)VIRTIO_BLK_SEG_MAX * VIRTIO_BLK_SIZE_MAX + HDR_BYTES + 1 <= VIRTQ_CHAIN_MAX_BYTES,
		       "virtio-blk limits exceed the chain cap");
	b->ops = (struct virtio_dev_ops){
		.name = "virtio-blk",
		.device_id = VIRTIO_ID_BLK,
		.features = (1ull << VIRTIO_BLK_F_SIZE_MAX) | (1ull << VIRTIO_BLK_F_SEG_MAX) |
			    (1ull << VIRTIO_BLK_F_FLUSH) | (o->read_only ? 1ull << VIRTIO_BLK_F_RO : 0),
		.config_size = CONFIG_BYTES,
		.nqueues = 1,
		.queue_max = VIRTIO_BLK_QUEUE_SIZE,
		.config_read = blk_config_read,
		.notify = blk_notify,
	};
	if (virtio_mmio_register(vm, base, irq_gsi, &b->ops, b, &b->t, err) < 0)
		goto fail;
	*out = b;
	return 0;
fail:
	if (b->fd >= 0)
		close(b->fd);
	free(b);
	return -1;
}

struct virtio_mmio *virtio_blk_transport(struct virtio_blk *b)
{
	return b->t;
}

uint64_t virtio_blk_capacity(struct virtio_blk *b)
{
	return b->capacity;
}

int virtio_blk_fd(struct virtio_blk *b)
{
	return b->fd;
}

void virtio_blk_free(struct virtio_blk *b)
{
	if (!b)
		return;
	virtio_mmio_free(b->t);
	if (b->fd >= 0)
		close(b->fd);
	free(b);
}
