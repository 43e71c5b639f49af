/* Unit tests for virtio-vsock: the test is the guest driver (fake VM memory) and the host clients (real Unix sockets). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "test_fake_vm.h"

#include "test_util.h"
#include "virtio_vsock.h"
#include "vmm_internal.h"

#define MEM_SIZE (4u << 20)
#define BASE VIRTIO_MMIO_BASE
#define GSI 7u
#define CID 3u
#define QN 16u                          /* queue size the test driver uses */
#define QDESC(q) (0x1000u + (q) * 0x3000u) /* then avail +0x1000, used +0x2000 */
#define QAVAIL(q) (QDESC(q) + 0x1000u)
#define QUSED(q) (QDESC(q) + 0x2000u)
#define NRX 16u
#define RXSZ 4096u /* one writable descriptor: header + 4052 payload bytes, like Linux's */
#define RXBUF(i) (0x100000u + (i) * 0x2000u)
#define NTX 8u /* tx slots of two descriptors each */
#define TXBUF(i) (0x200000u + (i) * 0x20000u)
#define NEV 4u
#define EVBUF(i) (0x380000u + (i) * 16u)
#define WAIT_MS 5000
#define QUIET_MS 200
#define HDR 44u
#define GBUF (256u << 10) /* what the test guest advertises, as Linux does */

static uint64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Bounded wait for a condition the device's thread makes true. */
#define WAIT_FOR(expr, ms)                                                                                   \
	({                                                                                                   \
		uint64_t end_ = mono_ms() + (ms);                                                            \
		bool ok_;                                                                                    \
		while (!(ok_ = (expr)) && mono_ms() < end_)                                                  \
			usleep(500);                                                                         \
		ok_;                                                                                         \
	})

struct gq {
	uint16_t avail_idx; /* the driver's next available index */
	uint16_t used_seen; /* used entries the driver consumed */
};

struct ctx {
	struct vmm_vm *vm;
	struct virtio_vsock *v;
	struct virtio_mmio *t;
	struct scratch dir;
	char path[96];
	struct gq q[3];
	unsigned tx_slot;
	int irqs;
	int reports;
	char report[256];
	/* refused clients, as the device reported them (its thread) */
	int refusals;
	uint32_t refused_uid;
	unsigned refused_more;
	char refused_path[96];
};

/* The guest's side of one connection. */
struct gconn {
	uint32_t gport, hport;
	uint32_t buf_alloc; /* advertised by the guest */
	uint32_t fwd_cnt;   /* bytes the guest consumed (all it received) */
	uint32_t tx_cnt;    /* bytes the guest sent */
	uint32_t peer_buf_alloc, peer_fwd_cnt; /* the device's, from its last packet */
};

struct pkt {
	struct virtio_vsock_hdr h;
	uint32_t used_len;
	uint8_t data[RXSZ];
};

static void hook_irq(void *arg, uint32_t gsi, int level)
{
	struct ctx *c = arg;
	(void)gsi;
	if (level)
		__atomic_add_fetch(&c->irqs, 1, __ATOMIC_RELAXED);
}

static void hook_report(void *arg, const char *device, const char *msg)
{
	struct ctx *c = arg;
	c->reports++;
	snprintf(c->report, sizeof(c->report), "%s: %s", device, msg);
}

static uint32_t rd(struct ctx *c, uint64_t off) { return (uint32_t)mmio_rd(c->vm, BASE + off, 4); }
static void wr(struct ctx *c, uint64_t off, uint32_t v) { mmio_wr(c->vm, BASE + off, v, 4); }
static uint8_t *g(struct ctx *c, uint64_t gpa) { return c->vm->mem + gpa; }

/* ---- the guest driver ---- */

static void set_desc(struct ctx *c, unsigned q, uint16_t i, uint64_t addr, uint32_t len, uint16_t flags,
		     uint16_t next)
{
	uint8_t *d = g(c, QDESC(q) + 16u * i);
	memcpy(d, &addr, 8);
	memcpy(d + 8, &len, 4);
	memcpy(d + 12, &flags, 2);
	memcpy(d + 14, &next, 2);
}

static void avail_add(struct ctx *c, unsigned q, uint16_t head)
{
	memcpy(g(c, QAVAIL(q) + 4 + 2u * (c->q[q].avail_idx % QN)), &head, 2);
	c->q[q].avail_idx++;
	__atomic_store_n((uint16_t *)g(c, QAVAIL(q) + 2), c->q[q].avail_idx, __ATOMIC_RELEASE);
}

static void kick(struct ctx *c, unsigned q) { wr(c, VIRTIO_MMIO_QUEUE_NOTIFY, q); }

static uint16_t used_idx(struct ctx *c, unsigned q)
{
	return __atomic_load_n((uint16_t *)g(c, QUSED(q) + 2), __ATOMIC_ACQUIRE);
}

static void used_elem(struct ctx *c, unsigned q, uint16_t i, uint32_t *id, uint32_t *len)
{
	memcpy(id, g(c, QUSED(q) + 4 + 8u * (i % QN)), 4);
	memcpy(len, g(c, QUSED(q) + 8 + 8u * (i % QN)), 4);
}

static void post_rx(struct ctx *c, uint16_t i)
{
	set_desc(c, VIRTIO_VSOCK_QUEUE_RX, i, RXBUF(i), RXSZ, VIRTQ_DESC_F_WRITE, 0);
	avail_add(c, VIRTIO_VSOCK_QUEUE_RX, i);
}

static void post_event(struct ctx *c, uint16_t i)
{
	set_desc(c, VIRTIO_VSOCK_QUEUE_EVENT, i, EVBUF(i), 4, VIRTQ_DESC_F_WRITE, 0);
	avail_add(c, VIRTIO_VSOCK_QUEUE_EVENT, i);
}

/* Section 3.1.1 as Linux does it, three queues, then rx and event buffers. */
static void driver_init_rx(struct ctx *c, bool rx)
{
	wr(c, VIRTIO_MMIO_STATUS, 0);
	wr(c, VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE);
	wr(c, VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
	wr(c, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
	wr(c, VIRTIO_MMIO_DRIVER_FEATURES, 0); /* Linux knows no vsock bit but SEQPACKET */
	wr(c, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
	wr(c, VIRTIO_MMIO_DRIVER_FEATURES, 1); /* VERSION_1 */
	const uint32_t st = VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK;
	wr(c, VIRTIO_MMIO_STATUS, st);
	assert_true(rd(c, VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_FEATURES_OK);
	memset(g(c, QDESC(0)), 0, 3 * 0x3000u);
	memset(c->q, 0, sizeof(c->q));
	c->tx_slot = 0;
	for (unsigned q = 0; q < 3; q++) {
		wr(c, VIRTIO_MMIO_QUEUE_SEL, q);
		wr(c, VIRTIO_MMIO_QUEUE_NUM, QN);
		wr(c, VIRTIO_MMIO_QUEUE_DESC_LOW, QDESC(q));
		wr(c, VIRTIO_MMIO_QUEUE_DESC_HIGH, 0);
		wr(c, VIRTIO_MMIO_QUEUE_DRIVER_LOW, QAVAIL(q));
		wr(c, VIRTIO_MMIO_QUEUE_DRIVER_HIGH, 0);
		wr(c, VIRTIO_MMIO_QUEUE_DEVICE_LOW, QUSED(q));
		wr(c, VIRTIO_MMIO_QUEUE_DEVICE_HIGH, 0);
		wr(c, VIRTIO_MMIO_QUEUE_READY, 1);
		assert_int_equal(rd(c, VIRTIO_MMIO_QUEUE_READY), 1);
	}
	wr(c, VIRTIO_MMIO_STATUS, st | VIRTIO_STATUS_DRIVER_OK);
	assert_int_equal(rd(c, VIRTIO_MMIO_STATUS), st | VIRTIO_STATUS_DRIVER_OK);
	if (rx) {
		for (uint16_t i = 0; i < NRX; i++)
			post_rx(c, i);
		kick(c, VIRTIO_VSOCK_QUEUE_RX);
	}
	for (uint16_t i = 0; i < NEV; i++)
		post_event(c, i);
	kick(c, VIRTIO_VSOCK_QUEUE_EVENT);
}

static void driver_init(struct ctx *c) { driver_init_rx(c, true); }

/* Next rx packet within ms, its buffer handed straight back to the device. */
static bool rx_get(struct ctx *c, struct pkt *p, int ms)
{
	struct gq *q = &c->q[VIRTIO_VSOCK_QUEUE_RX];
	if (!WAIT_FOR(used_idx(c, VIRTIO_VSOCK_QUEUE_RX) != q->used_seen, ms))
		return false;
	uint32_t id, len;
	used_elem(c, VIRTIO_VSOCK_QUEUE_RX, q->used_seen++, &id, &len);
	assert_true(id < NRX);
	assert_true(len >= HDR && len <= RXSZ);
	memcpy(&p->h, g(c, RXBUF(id)), HDR);
	memcpy(p->data, g(c, RXBUF(id) + HDR), len - HDR);
	p->used_len = len;
	/* Every packet the device sends is well-formed and addressed to us. */
	assert_int_equal(p->h.len + HDR, len);
	assert_int_equal(p->h.dst_cid, CID);
	assert_int_equal(p->h.type, VIRTIO_VSOCK_TYPE_STREAM);
	memset(g(c, RXBUF(id)), 0xee, RXSZ);
	post_rx(c, (uint16_t)id);
	kick(c, VIRTIO_VSOCK_QUEUE_RX);
	return true;
}

static void rx_none(struct ctx *c, int ms)
{
	usleep((useconds_t)ms * 1000u);
	assert_int_equal(used_idx(c, VIRTIO_VSOCK_QUEUE_RX), c->q[VIRTIO_VSOCK_QUEUE_RX].used_seen);
}

/* Posts a tx chain: header + payload in one descriptor, or split in two,
 * or with the readable bytes cut to desc_len. Does not wait. */
static void tx_post(struct ctx *c, const struct virtio_vsock_hdr *h, const void *data, uint32_t len, bool split,
		    uint32_t desc_len)
{
	unsigned slot = c->tx_slot++ % NTX;
	uint16_t d0 = (uint16_t)(2 * slot), d1 = (uint16_t)(2 * slot + 1);
	uint64_t b = TXBUF(slot);
	assert_true(len <= 0x20000u - HDR);
	memcpy(g(c, b), h, HDR);
	if (len)
		memcpy(g(c, b + HDR), data, len);
	if (split) {
		set_desc(c, VIRTIO_VSOCK_QUEUE_TX, d0, b, HDR, VIRTQ_DESC_F_NEXT, d1);
		set_desc(c, VIRTIO_VSOCK_QUEUE_TX, d1, b + HDR, desc_len - HDR, 0, 0);
	} else {
		set_desc(c, VIRTIO_VSOCK_QUEUE_TX, d0, b, desc_len, 0, 0);
	}
	avail_add(c, VIRTIO_VSOCK_QUEUE_TX, d0);
	kick(c, VIRTIO_VSOCK_QUEUE_TX);
}

static bool tx_done(struct ctx *c)
{
	return used_idx(c, VIRTIO_VSOCK_QUEUE_TX) == c->q[VIRTIO_VSOCK_QUEUE_TX].avail_idx;
}

static void tx_send(struct ctx *c, const struct virtio_vsock_hdr *h, const void *data, uint32_t len, bool split)
{
	tx_post(c, h, data, len, split, HDR + len);
	assert_true(WAIT_FOR(tx_done(c), WAIT_MS));
	c->q[VIRTIO_VSOCK_QUEUE_TX].used_seen = used_idx(c, VIRTIO_VSOCK_QUEUE_TX);
}

static struct virtio_vsock_hdr mkhdr(const struct gconn *gc, uint16_t op, uint32_t flags, uint32_t len)
{
	return (struct virtio_vsock_hdr){
		.src_cid = CID,
		.dst_cid = VIRTIO_VSOCK_HOST_CID,
		.src_port = gc->gport,
		.dst_port = gc->hport,
		.len = len,
		.type = VIRTIO_VSOCK_TYPE_STREAM,
		.op = op,
		.flags = flags,
		.buf_alloc = gc->buf_alloc,
		.fwd_cnt = gc->fwd_cnt,
	};
}

static void gsend(struct ctx *c, struct gconn *gc, uint16_t op, uint32_t flags, const void *data, uint32_t len)
{
	struct virtio_vsock_hdr h = mkhdr(gc, op, flags, len);
	tx_send(c, &h, data, len, len > 0 && (gc->tx_cnt & 1)); /* alternate one and two descriptors */
	if (op == VIRTIO_VSOCK_OP_RW)
		gc->tx_cnt += len;
}

/* Next packet on gc's pair; RW payloads count as consumed at once. */
static bool grecv(struct ctx *c, struct gconn *gc, struct pkt *p, int ms)
{
	if (!rx_get(c, p, ms))
		return false;
	assert_int_equal(p->h.src_cid, VIRTIO_VSOCK_HOST_CID);
	assert_int_equal(p->h.src_port, gc->hport);
	assert_int_equal(p->h.dst_port, gc->gport);
	if (p->h.op != VIRTIO_VSOCK_OP_RST) {
		gc->peer_buf_alloc = p->h.buf_alloc;
		gc->peer_fwd_cnt = p->h.fwd_cnt;
	}
	if (p->h.op == VIRTIO_VSOCK_OP_RW)
		gc->fwd_cnt += p->h.len;
	return true;
}

static uint16_t grecv_op(struct ctx *c, struct gconn *gc)
{
	struct pkt p;
	assert_true(grecv(c, gc, &p, WAIT_MS));
	return p.h.op;
}

/* Collects n bytes of RW payload on gc (credit updates may come between). */
static void grecv_data(struct ctx *c, struct gconn *gc, uint8_t *out, size_t n)
{
	static struct pkt p;
	size_t got = 0;
	while (got < n) {
		assert_true(grecv(c, gc, &p, WAIT_MS));
		if (p.h.op == VIRTIO_VSOCK_OP_CREDIT_UPDATE)
			continue;
		assert_int_equal(p.h.op, VIRTIO_VSOCK_OP_RW);
		assert_true(p.h.len > 0 && p.h.len <= n - got);
		memcpy(out + got, p.data, p.h.len);
		got += p.h.len;
	}
}

static uint8_t pat(size_t i) { return (uint8_t)(i * 31u + 7u); }

/* ---- the host side ---- */

static int unix_connect(const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	return fd;
}

static int unix_listen(struct ctx *c, uint32_t port)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s_%u", c->path, port);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(fd, 8), 0);
	return fd;
}

static int accept_to(int lfd, int ms)
{
	struct pollfd p = {.fd = lfd, .events = POLLIN};
	assert_int_equal(poll(&p, 1, ms), 1);
	int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	assert_true(fd >= 0);
	return fd;
}

static void host_write(int fd, const void *buf, size_t n)
{
	assert_int_equal(send(fd, buf, n, MSG_NOSIGNAL), (ssize_t)n);
}

/* One read within ms: >0 bytes, 0 EOF, -1 timeout (or error). */
static ssize_t read_to(int fd, void *buf, size_t n, int ms)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};
	if (poll(&p, 1, ms) != 1)
		return -1;
	ssize_t r = read(fd, buf, n);
	if (r < 0 && errno == ECONNRESET)
		return 0;
	return r;
}

static void host_read_full(int fd, void *buf, size_t n)
{
	size_t got = 0;
	while (got < n) {
		ssize_t r = read_to(fd, (uint8_t *)buf + got, n - got, WAIT_MS);
		assert_true(r > 0);
		got += (size_t)r;
	}
}

static void host_expect_eof(int fd)
{
	char b[256];
	for (;;) { /* whatever was in flight, then EOF */
		ssize_t r = read_to(fd, b, sizeof(b), WAIT_MS);
		assert_true(r >= 0);
		if (r == 0)
			return;
	}
}

static void host_expect_quiet(int fd, int ms)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};
	assert_int_equal(poll(&p, 1, ms), 0);
}

/* The reply line, byte by byte as agent_client reads it. */
static void host_read_line(int fd, char *out, size_t max)
{
	size_t n = 0;
	for (;;) {
		assert_true(n + 1 < max);
		assert_int_equal(read_to(fd, &out[n], 1, WAIT_MS), 1);
		if (out[n++] == '\n')
			break;
	}
	out[n] = 0;
}

/* A host client through CONNECT, REQUEST, RESPONSE, OK. */
static int host_open(struct ctx *c, uint32_t gport, uint32_t guest_buf, struct gconn *gc)
{
	int fd = unix_connect(c->path);
	char line[64];
	int n = snprintf(line, sizeof(line), "CONNECT %u\n", gport);
	host_write(fd, line, (size_t)n);
	struct pkt p;
	assert_true(rx_get(c, &p, WAIT_MS));
	assert_int_equal(p.h.op, VIRTIO_VSOCK_OP_REQUEST);
	assert_int_equal(p.h.src_cid, VIRTIO_VSOCK_HOST_CID);
	assert_int_equal(p.h.dst_port, gport);
	assert_true(p.h.src_port >= VIRTIO_VSOCK_LOCAL_PORT_BASE);
	assert_int_equal(p.h.buf_alloc, VIRTIO_VSOCK_BUF_ALLOC);
	assert_int_equal(p.h.fwd_cnt, 0);
	assert_int_equal(p.h.len, 0);
	*gc = (struct gconn){.gport = gport, .hport = p.h.src_port, .buf_alloc = guest_buf,
			     .peer_buf_alloc = p.h.buf_alloc};
	gsend(c, gc, VIRTIO_VSOCK_OP_RESPONSE, 0, NULL, 0);
	char want[32];
	snprintf(want, sizeof(want), "OK %u\n", gc->hport);
	host_read_line(fd, line, sizeof(line));
	assert_string_equal(line, want);
	return fd;
}

/* A guest connection to host port hport, accepted on lfd. */
static int guest_open(struct ctx *c, int lfd, uint32_t gport, uint32_t hport, struct gconn *gc)
{
	*gc = (struct gconn){.gport = gport, .hport = hport, .buf_alloc = GBUF};
	gsend(c, gc, VIRTIO_VSOCK_OP_REQUEST, 0, NULL, 0);
	struct pkt p;
	assert_true(grecv(c, gc, &p, WAIT_MS));
	assert_int_equal(p.h.op, VIRTIO_VSOCK_OP_RESPONSE);
	assert_int_equal(p.h.buf_alloc, VIRTIO_VSOCK_BUF_ALLOC);
	return accept_to(lfd, WAIT_MS);
}

/* ---- fixtures ---- */

static void set_hooks(struct ctx *c)
{
	struct virtio_mmio_hooks h = {.irq = hook_irq, .report = hook_report, .arg = c};
	virtio_mmio_set_hooks(c->t, &h);
}

static void hook_refused(void *arg, const char *path, uint32_t uid, unsigned more)
{
	struct ctx *c = arg;
	snprintf(c->refused_path, sizeof(c->refused_path), "%s", path);
	c->refused_uid = uid;
	c->refused_more = more;
	__atomic_add_fetch(&c->refusals, 1, __ATOMIC_RELEASE);
}

static struct ctx *ctx_new(unsigned timeout_ms)
{
	struct ctx *c = calloc(1, sizeof(*c));
	sl_error_t err = NULL;
	assert_non_null(c);
	assert_int_equal(scratch_make(&c->dir), 0);
	snprintf(c->path, sizeof(c->path), "%s/vm.sock", c->dir.path);
	c->vm = fake_vm(MEM_SIZE);
	struct virtio_vsock_opts o = {.guest_cid = CID, .uds_path = c->path, .timeout_ms = timeout_ms,
				      .refused = hook_refused, .refused_arg = c};
	assert_int_equal(virtio_vsock_create(c->vm, BASE, GSI, &o, &c->v, &err), 0);
	assert_int_equal(virtio_vsock_start(c->v, &err), 0);
	assert_null(err);
	c->t = virtio_vsock_transport(c->v);
	set_hooks(c);
	return c;
}

static int setup(void **state)
{
	*state = ctx_new(0);
	return 0;
}

static int setup_short(void **state)
{
	*state = ctx_new(300);
	return 0;
}

static int teardown(void **state)
{
	struct ctx *c = *state;
	virtio_vsock_free(c->v);
	free_vm(c->vm);
	scratch_drop(&c->dir);
	free(c);
	return 0;
}

/* ---- probe ---- */

static void test_probe_config(void **state)
{
	struct ctx *c = *state;
	assert_int_equal(rd(c, VIRTIO_MMIO_MAGIC_VALUE), VIRTIO_MMIO_MAGIC);
	assert_int_equal(rd(c, VIRTIO_MMIO_DEVICE_ID), VIRTIO_ID_VSOCK);
	wr(c, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
	assert_int_equal(rd(c, VIRTIO_MMIO_DEVICE_FEATURES), 1u << VIRTIO_VSOCK_F_STREAM);
	wr(c, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
	assert_int_equal(rd(c, VIRTIO_MMIO_DEVICE_FEATURES), 1); /* VERSION_1 */
	for (unsigned q = 0; q < 3; q++) {
		wr(c, VIRTIO_MMIO_QUEUE_SEL, q);
		assert_int_equal(rd(c, VIRTIO_MMIO_QUEUE_NUM_MAX), VIRTIO_VSOCK_QUEUE_SIZE);
	}
	wr(c, VIRTIO_MMIO_QUEUE_SEL, 3);
	assert_int_equal(rd(c, VIRTIO_MMIO_QUEUE_NUM_MAX), 0);
	/* le64 guest_cid: one 64-bit read, or two 32-bit halves as virtio_cread64 does. */
	assert_int_equal(mmio_rd(c->vm, BASE + VIRTIO_MMIO_CONFIG, 8), CID);
	assert_int_equal(mmio_rd(c->vm, BASE + VIRTIO_MMIO_CONFIG, 4), CID);
	assert_int_equal(mmio_rd(c->vm, BASE + VIRTIO_MMIO_CONFIG + 4, 4), 0);
	assert_int_equal(mmio_rd(c->vm, BASE + VIRTIO_MMIO_CONFIG + 8, 4), 0); /* past the config */
	assert_int_equal(virtio_vsock_cid(c->v), CID);
	/* The socket is the guest's root shell: owner only. */
	struct stat st;
	assert_int_equal(stat(c->path, &st), 0);
	assert_true(S_ISSOCK(st.st_mode));
	assert_int_equal(st.st_mode & 0777, 0600);
	/* F_STREAM may be accepted too. */
	const uint32_t pre = VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER;
	wr(c, VIRTIO_MMIO_STATUS, 0);
	wr(c, VIRTIO_MMIO_STATUS, pre);
	wr(c, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
	wr(c, VIRTIO_MMIO_DRIVER_FEATURES, 1u << VIRTIO_VSOCK_F_STREAM);
	wr(c, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
	wr(c, VIRTIO_MMIO_DRIVER_FEATURES, 1);
	wr(c, VIRTIO_MMIO_STATUS, pre | VIRTIO_STATUS_FEATURES_OK);
	assert_true(rd(c, VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_FEATURES_OK);
}

static void expect_create_error(struct vmm_vm *vm, uint64_t base, const struct virtio_vsock_opts *o, const char *msg)
{
	struct virtio_vsock *v = NULL;
	sl_error_t err = NULL;
	assert_int_equal(virtio_vsock_create(vm, base, GSI, o, &v, &err), -1);
	assert_non_null(err);
	if (!strstr(sl_error_msg(err), msg))
		fail_msg("error \"%s\" does not mention \"%s\"", sl_error_msg(err), msg);
	sl_error_free(&err);
}

static void test_create_errors(void **state)
{
	struct ctx *c = *state;
	char p[200];
	struct virtio_vsock_opts o = {.guest_cid = CID, .uds_path = p};
	const uint64_t base2 = BASE + VIRTIO_MMIO_SIZE;
	struct stat st;

	/* The path exists: our own socket, or a stray file. */
	o.uds_path = c->path;
	expect_create_error(c->vm, base2, &o, "already exists");
	snprintf(p, sizeof(p), "%s/file", c->dir.path);
	close(open(p, O_CREAT | O_WRONLY | O_CLOEXEC, 0600));
	o.uds_path = p;
	expect_create_error(c->vm, base2, &o, "already exists");
	unlink(p);

	/* Too long to hold "_<port>" as well. */
	snprintf(p, sizeof(p), "%s/%0100d", c->dir.path, 0);
	expect_create_error(c->vm, base2, &o, "fit");

	snprintf(p, sizeof(p), "%s/x.sock", c->dir.path);
	o.guest_cid = 2;
	expect_create_error(c->vm, base2, &o, "CID 2");
	o.guest_cid = 0xffffffffu;
	expect_create_error(c->vm, base2, &o, "CID");
	o.guest_cid = CID;
	o.uds_path = NULL;
	expect_create_error(c->vm, base2, &o, "path");
	o.uds_path = p;

	/* A directory others may write (here: the socket's parent), or that
	 * belongs to someone else: they could swap our socket for theirs. */
	char sub[128];
	snprintf(sub, sizeof(sub), "%s/open", c->dir.path);
	assert_int_equal(mkdir(sub, 0700), 0);
	assert_int_equal(chmod(sub, 0777), 0);
	snprintf(p, sizeof(p), "%s/x.sock", sub);
	expect_create_error(c->vm, base2, &o, "is writable by others (mode 0777) and not sticky");
	assert_int_equal(chmod(sub, 0770), 0);
	expect_create_error(c->vm, base2, &o, "is writable by its group");
	if (geteuid() == 0) {
		assert_int_equal(chmod(sub, 0755), 0);
		assert_int_equal(chown(sub, 65534, 65534), 0);
		expect_create_error(c->vm, base2, &o, "belongs to uid 65534, not to root or uid 0");
	}
	assert_int_equal(lstat(p, &st), -1); /* never bound */
	assert_int_equal(chmod(sub, 01777), 0); /* sticky, like /tmp: fine */
	assert_int_equal(chown(sub, geteuid(), getegid()), 0);
	struct virtio_vsock *v = NULL;
	sl_error_t err = NULL;
	/* (the bus keeps a range once registered: a third one for this) */
	assert_int_equal(virtio_vsock_create(c->vm, base2 + VIRTIO_MMIO_SIZE, GSI + 2, &o, &v, &err), 0);
	virtio_vsock_free(v);
	snprintf(p, sizeof(p), "%s/x.sock", c->dir.path);

	/* The bus refuses the range (it is taken): nothing is left behind,
	 * the waiting thread included (ASan/LSan would see it). */
	expect_create_error(c->vm, BASE, &o, "overlaps");
	assert_int_equal(lstat(p, &st), -1);
	assert_int_equal(errno, ENOENT);
	/* And in a writable place it works. */
	assert_int_equal(virtio_vsock_create(c->vm, base2, GSI + 1, &o, &v, &err), 0);
	assert_int_equal(virtio_vsock_start(v, &err), 0);
	virtio_vsock_free(v);
	assert_int_equal(lstat(p, &st), -1);
}

/* ---- host-initiated connections ---- */

static void test_host_connect_and_data(void **state)
{
	struct ctx *c = *state;
	struct gconn gc;
	static uint8_t buf[70000], got[70000];
	driver_init(c);
	int fd = host_open(c, 1024, GBUF, &gc);

	/* host -> guest */
	host_write(fd, "hello", 5);
	struct pkt p;
	assert_true(grecv(c, &gc, &p, WAIT_MS));
	assert_int_equal(p.h.op, VIRTIO_VSOCK_OP_RW);
	assert_int_equal(p.h.len, 5);
	assert_memory_equal(p.data, "hello", 5);
	assert_int_equal(p.h.buf_alloc, VIRTIO_VSOCK_BUF_ALLOC);
	assert_int_equal(p.h.fwd_cnt, 0);

	/* More than one rx buffer holds: split, in order, none over its buffer. */
	for (size_t i = 0; i < 10000; i++)
		buf[i] = pat(i);
	host_write(fd, buf, 10000);
	grecv_data(c, &gc, got, 10000);
	assert_memory_equal(got, buf, 10000);

	/* guest -> host, one and two descriptors */
	gsend(c, &gc, VIRTIO_VSOCK_OP_RW, 0, "world", 5);
	char w[8];
	host_read_full(fd, w, 5);
	assert_memory_equal(w, "world", 5);
	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = pat(i + 3);
	gsend(c, &gc, VIRTIO_VSOCK_OP_RW, 0, buf, 30000);
	gsend(c, &gc, VIRTIO_VSOCK_OP_RW, 0, buf + 30000, 30000);
	host_read_full(fd, got, 60000);
	assert_memory_equal(got, buf, 60000);

	/* The device reports what reached the host in its next packet. */
	host_write(fd, "x", 1);
	assert_true(grecv(c, &gc, &p, WAIT_MS));
	if (p.h.op == VIRTIO_VSOCK_OP_CREDIT_UPDATE) /* the half-buffer update may come first */
		assert_true(grecv(c, &gc, &p, WAIT_MS));
	assert_int_equal(p.h.op, VIRTIO_VSOCK_OP_RW);
	assert_int_equal(p.h.fwd_cnt, 60005);

	/* A CREDIT_REQUEST gets an exact CREDIT_UPDATE. */
	gsend(c, &gc, VIRTIO_VSOCK_OP_CREDIT_REQUEST, 0, NULL, 0);
	assert_true(grecv(c, &gc, &p, WAIT_MS));
	assert_int_equal(p.h.op, VIRTIO_VSOCK_OP_CREDIT_UPDATE);
	assert_int_equal(p.h.fwd_cnt, 60005);
	assert_int_equal(c->reports, 0);
	assert_true(__atomic_load_n(&c->irqs, __ATOMIC_RELAXED) > 0);
	close(fd);
}

static void test_host_connect_refused(void **state)
{
	struct ctx *c = *state;
	driver_init(c);
	int fd = unix_connect(c->path);
	host_write(fd, "CONNECT 1234\n", 13);
	struct pkt p;
	assert_true(rx_get(c, &p, WAIT_MS));
	assert_int_equal(p.h.op, VIRTIO_VSOCK_OP_REQUEST);
	/* No listener in the guest: it answers RST, the client sees EOF. */
	struct gconn gc = {.gport = 1234, .hport = p.h.src_port, .buf_alloc = GBUF};
	gsend(c, &gc, VIRTIO_VSOCK_OP_RST, 0, NULL, 0);
	host_expect_eof(fd);
	close(fd);
	rx_none(c, QUIET_MS); /* nothing owed back for an RST */

	/* Local ports are not reused while in use. */
	struct gconn a, b;
	int fa = host_open(c, 1, GBUF, &a), fb = host_open(c, 1, GBUF, &b);
	assert_int_not_equal(a.hport, b.hport);
	close(fa);
	close(fb);
}

/* A child that becomes uid `as`, connects, sends a CONNECT line and
 * collects everything it reads until EOF (or a reset) into out. */
static ssize_t connect_as(const char *path, uid_t as, char *out, size_t max)
{
	int pfd[2];
	assert_int_equal(pipe2(pfd, O_CLOEXEC), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(pfd[0]);
		if (setresgid(as, as, as) < 0 || setresuid(as, as, as) < 0)
			_exit(2);
		int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		struct sockaddr_un sa = {.sun_family = AF_UNIX};
		memcpy(sa.sun_path, path, strlen(path) + 1);
		if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
			_exit(3);
		/* The device may close before this arrives: EPIPE is fine. */
		ssize_t w = send(fd, "CONNECT 1024\n", 13, MSG_NOSIGNAL);
		(void)w;
		char b[256];
		ssize_t n;
		while ((n = read(fd, b, sizeof(b))) > 0)
			if (write(pfd[1], b, (size_t)n) != n)
				_exit(4);
		_exit(n == 0 || errno == ECONNRESET ? 0 : 5);
	}
	close(pfd[1]);
	size_t got = 0;
	ssize_t n;
	while (got < max && (n = read_to(pfd[0], out + got, max - got, WAIT_MS)) > 0)
		got += (size_t)n;
	close(pfd[0]);
	int st;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		fail_msg("client as uid %u: exit status %d", (unsigned)as, WIFEXITED(st) ? WEXITSTATUS(st) : -1);
	return (ssize_t)got;
}

/* Only root and the VMM's uid may reach the guest: even with the socket
 * opened up to everyone (mode 0666, directory 0755), another uid is
 * refused with one line and the guest never hears of it. */
static void test_peer_uid(void **state)
{
	struct ctx *c = *state;
	if (geteuid() != 0)
		skip(); /* needs root to become another uid */
	driver_init(c);
	assert_int_equal(chmod(c->dir.path, 0755), 0);
	/* First with the socket as created (0600): the kernel refuses. */
	char out[256];
	pid_t pid = fork();
	if (pid == 0) {
		if (setresuid(65534, 65534, 65534) < 0)
			_exit(2);
		int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		struct sockaddr_un sa = {.sun_family = AF_UNIX};
		memcpy(sa.sun_path, c->path, strlen(c->path) + 1);
		_exit(connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 && errno == EACCES ? 0 : 1);
	}
	int st;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);

	assert_int_equal(chmod(c->path, 0666), 0);
	ssize_t n = connect_as(c->path, 65534, out, sizeof(out) - 1);
	assert_true(n >= 0);
	out[n] = 0;
	assert_string_equal(out, "ERROR vsock socket serves uid 0 and root only\n");
	assert_true(WAIT_FOR(__atomic_load_n(&c->refusals, __ATOMIC_ACQUIRE) == 1, WAIT_MS));
	assert_int_equal(c->refused_uid, 65534);
	assert_int_equal(c->refused_more, 0);
	assert_string_equal(c->refused_path, c->path);
	rx_none(c, QUIET_MS); /* no OP_REQUEST reached the guest */

	/* Within the second, a refusal is counted, not reported; the next
	 * report carries the count. */
	n = connect_as(c->path, 65533, out, sizeof(out) - 1);
	assert_true(n > 0);
	usleep(1100 * 1000);
	n = connect_as(c->path, 65533, out, sizeof(out) - 1);
	assert_true(n > 0);
	assert_true(WAIT_FOR(__atomic_load_n(&c->refusals, __ATOMIC_ACQUIRE) == 2, WAIT_MS));
	assert_int_equal(c->refused_uid, 65533);
	assert_int_equal(c->refused_more, 1);

	/* Root still gets through, with the guest's answer. */
	struct gconn gc;
	int fd = host_open(c, 1024, GBUF, &gc);
	close(fd);
}

/* Short timeouts (300 ms): a silent client, an unanswered request. */
static void test_timeouts(void **state)
{
	struct ctx *c = *state;
	driver_init(c);
	int fd = unix_connect(c->path);
	uint64_t t0 = mono_ms();
	host_expect_eof(fd);
	assert_true(mono_ms() - t0 >= 250);
	close(fd);

	fd = unix_connect(c->path);
	host_write(fd, "CONNECT 9\n", 10);
	struct pkt p;
	assert_true(rx_get(c, &p, WAIT_MS));
	assert_int_equal(p.h.op, VIRTIO_VSOCK_OP_REQUEST);
	uint32_t hport = p.h.src_port;
	/* The guest never answers: the client is closed and the guest told. */
	host_expect_eof(fd);
	close(fd);
	assert_true(rx_get(c, &p, WAIT_MS));
	assert_int_equal(p.h.op, VIRTIO_VSOCK_OP_RST);
	assert_int_equal(p.h.src_port, hport);
	assert_int_equal(p.h.dst_port, 9);

	/* Before the driver is up, a request waits; past the timeout the client goes. */
	wr(c, VIRTIO_MMIO_STATUS, 0);
	fd = unix_connect(c->path);
	host_write(fd, "CONNECT 9\n", 10);
	host_expect_eof(fd);
	close(fd);
}

static void test_garbage_connect_lines(void **state)
{
	struct ctx *c = *state;
	static const char *bad[] = {
		"HELLO 5\n",
		"CONNECT abc\n",
		"CONNECT \n",
		"CONNECT 12 \n",
		"connect 5\n",
		"CONNECT 99999999999\n", /* 11 digits */
		"CONNECT 4294967296\n",  /* 2^32 */
		"CONNECT 5\r\n",
		"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", /* 40 bytes, no newline */
	};
	driver_init(c);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int fd = unix_connect(c->path);
		host_write(fd, bad[i], strlen(bad[i]));
		/* One line saying what was wrong, then EOF. */
		char line[128];
		host_read_line(fd, line, sizeof(line));
		assert_string_equal(line, strchr(bad[i], '\n')
						  ? "ERROR malformed CONNECT line: want \"CONNECT <port>\", port 0..4294967295\n"
						  : "ERROR CONNECT line longer than 32 bytes\n");
		host_expect_eof(fd);
		close(fd);
	}
	/* A client that hangs up mid-line costs nothing. */
	int fd = unix_connect(c->path);
	host_write(fd, "CONN", 4);
	close(fd);
	rx_none(c, QUIET_MS);

	/* A line in pieces is fine; bytes after the newline are the stream. */
	fd = unix_connect(c->path);
	host_write(fd, "CONNECT 7", 9);
	usleep(50000);
	host_write(fd, "7\nEXTRA", 7);
	struct pkt p;
	assert_true(rx_get(c, &p, WAIT_MS));
	assert_int_equal(p.h.op, VIRTIO_VSOCK_OP_REQUEST);
	assert_int_equal(p.h.dst_port, 77);
	struct gconn gc = {.gport = 77, .hport = p.h.src_port, .buf_alloc = GBUF};
	gsend(c, &gc, VIRTIO_VSOCK_OP_RESPONSE, 0, NULL, 0);
	char line[32];
	host_read_line(fd, line, sizeof(line));
	assert_true(strncmp(line, "OK ", 3) == 0);
	uint8_t got[5];
	grecv_data(c, &gc, got, 5);
	assert_memory_equal(got, "EXTRA", 5);
	close(fd);
}

/* ---- flow control ---- */

static void test_credit_host_to_guest(void **state)
{
	struct ctx *c = *state;
	struct gconn gc;
	static uint8_t buf[3000], got[3000];
	driver_init(c);
	int fd = host_open(c, 1024, 1000, &gc); /* the guest has room for 1000 bytes */
	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = pat(i);
	host_write(fd, buf, sizeof(buf));

	size_t total = 0;
	for (int round = 0; round < 3; round++) {
		/* Exactly the credit, then one CREDIT_REQUEST, then silence. */
		size_t limit = 1000u * (round + 1u);
		struct pkt p;
		while (total < limit) {
			assert_true(grecv(c, &gc, &p, WAIT_MS));
			assert_int_equal(p.h.op, VIRTIO_VSOCK_OP_RW);
			assert_true(total + p.h.len <= limit);
			memcpy(got + total, p.data, p.h.len);
			total += p.h.len;
		}
		if (round < 2) {
			assert_int_equal(grecv_op(c, &gc), VIRTIO_VSOCK_OP_CREDIT_REQUEST);
			rx_none(c, QUIET_MS);
			/* Linux answers at once, with no more room while its reader
			 * sleeps: that must not start a request/update ping-pong. */
			struct virtio_vsock_hdr h = mkhdr(&gc, VIRTIO_VSOCK_OP_CREDIT_UPDATE, 0, 0);
			h.fwd_cnt -= 1000;
			tx_send(c, &h, NULL, 0, false);
			rx_none(c, QUIET_MS);
			/* The guest read it all: an update opens the window again. */
			gsend(c, &gc, VIRTIO_VSOCK_OP_CREDIT_UPDATE, 0, NULL, 0);
		}
	}
	assert_memory_equal(got, buf, sizeof(buf));
	/* At most a last request (the device cannot know the socket is empty
	 * without credit to read with), then nothing. */
	struct pkt p;
	if (grecv(c, &gc, &p, QUIET_MS))
		assert_int_equal(p.h.op, VIRTIO_VSOCK_OP_CREDIT_REQUEST);
	rx_none(c, QUIET_MS);

	/* A guest that shrinks its buffer below what is in flight gets nothing,
	 * even with a fwd_cnt from the future. */
	gc.buf_alloc = 10;
	gc.fwd_cnt = 5000;
	gsend(c, &gc, VIRTIO_VSOCK_OP_CREDIT_UPDATE, 0, NULL, 0);
	host_write(fd, "more", 4);
	if (grecv(c, &gc, &p, QUIET_MS))
		assert_int_equal(p.h.op, VIRTIO_VSOCK_OP_CREDIT_REQUEST);
	rx_none(c, QUIET_MS);
	close(fd);
}

/* The guest sends within its credit while the host does not read: the
 * device holds what the socket refuses, up to its buffer, and no more
 * credit appears until the host reads. Returns when the guest is stuck. */
static void fill_until_stuck(struct ctx *c, struct gconn *gc)
{
	static uint8_t buf[32768];
	struct pkt p;
	for (int i = 0; i < 10000; i++) {
		while (grecv(c, gc, &p, 0))
			assert_int_equal(p.h.op, VIRTIO_VSOCK_OP_CREDIT_UPDATE);
		uint32_t credit = gc->peer_buf_alloc - (gc->tx_cnt - gc->peer_fwd_cnt);
		if (!credit) {
			if (!grecv(c, gc, &p, 300))
				return;
			assert_int_equal(p.h.op, VIRTIO_VSOCK_OP_CREDIT_UPDATE);
			continue;
		}
		uint32_t n = credit < sizeof(buf) ? credit : (uint32_t)sizeof(buf);
		for (uint32_t k = 0; k < n; k++)
			buf[k] = pat(gc->tx_cnt + k);
		gsend(c, gc, VIRTIO_VSOCK_OP_RW, 0, buf, n);
	}
	fail_msg("the guest never ran out of credit");
}

static void test_credit_guest_to_host(void **state)
{
	struct ctx *c = *state;
	struct gconn gc;
	driver_init(c);
	int fd = host_open(c, 1024, GBUF, &gc);

	fill_until_stuck(c, &gc);
	/* Stuck at exactly our buffer: the socket took some, we hold the rest. */
	assert_int_equal(gc.tx_cnt - gc.peer_fwd_cnt, VIRTIO_VSOCK_BUF_ALLOC);
	assert_true(gc.tx_cnt > VIRTIO_VSOCK_BUF_ALLOC);
	uint32_t total = gc.tx_cnt;

	/* Everything reaches the host, in order. */
	uint8_t *got = malloc(total);
	assert_non_null(got);
	host_read_full(fd, got, total);
	for (uint32_t i = 0; i < total; i++)
		if (got[i] != pat(i))
			fail_msg("byte %u is %u, want %u", i, got[i], pat(i));
	free(got);
	/* And the guest hears about the room. */
	struct pkt p;
	while (gc.tx_cnt - gc.peer_fwd_cnt > VIRTIO_VSOCK_BUF_ALLOC / 2) {
		assert_true(grecv(c, &gc, &p, WAIT_MS));
		assert_int_equal(p.h.op, VIRTIO_VSOCK_OP_CREDIT_UPDATE);
	}

	/* A guest that ignores its credit is reset; the host keeps what it got. */
	fill_until_stuck(c, &gc);
	gsend(c, &gc, VIRTIO_VSOCK_OP_RW, 0, "!", 1);
	do
		assert_true(grecv(c, &gc, &p, WAIT_MS));
	while (p.h.op == VIRTIO_VSOCK_OP_CREDIT_UPDATE);
	assert_int_equal(p.h.op, VIRTIO_VSOCK_OP_RST);
	host_expect_eof(fd);
	close(fd);
}

/* ---- guest-initiated connections ---- */

static void test_guest_connect(void **state)
{
	struct ctx *c = *state;
	struct gconn gc;
	driver_init(c);
	int lfd = unix_listen(c, 5000);
	int fd = guest_open(c, lfd, 40000, 5000, &gc);

	gsend(c, &gc, VIRTIO_VSOCK_OP_RW, 0, "ping", 4);
	char b[8];
	host_read_full(fd, b, 4);
	assert_memory_equal(b, "ping", 4);
	host_write(fd, "pong", 4);
	uint8_t got[4];
	grecv_data(c, &gc, got, 4);
	assert_memory_equal(got, "pong", 4);

	/* Nobody on port 5001: RST, from where the guest aimed. */
	struct gconn miss = {.gport = 40001, .hport = 5001, .buf_alloc = GBUF};
	gsend(c, &miss, VIRTIO_VSOCK_OP_REQUEST, 0, NULL, 0);
	struct pkt p;
	assert_true(grecv(c, &miss, &p, WAIT_MS));
	assert_int_equal(p.h.op, VIRTIO_VSOCK_OP_RST);
	assert_int_equal(p.h.src_cid, VIRTIO_VSOCK_HOST_CID);

	/* A second REQUEST on a live pair is a protocol error: reset. */
	gsend(c, &gc, VIRTIO_VSOCK_OP_REQUEST, 0, NULL, 0);
	assert_int_equal(grecv_op(c, &gc), VIRTIO_VSOCK_OP_RST);
	host_expect_eof(fd);
	close(fd);
	close(lfd);
}

/* ---- shutdown and reset ---- */

static void test_shutdown_and_rst(void **state)
{
	struct ctx *c = *state;
	struct gconn a, b, d, e, f;
	char buf[16];
	driver_init(c);

	/* Host half-closes: data, then SHUTDOWN(SEND); the guest still talks. */
	int fa = host_open(c, 10, GBUF, &a);
	host_write(fa, "abc", 3);
	shutdown(fa, SHUT_WR);
	uint8_t got[3];
	grecv_data(c, &a, got, 3);
	assert_memory_equal(got, "abc", 3);
	struct pkt p;
	assert_true(grecv(c, &a, &p, WAIT_MS));
	assert_int_equal(p.h.op, VIRTIO_VSOCK_OP_SHUTDOWN);
	assert_int_equal(p.h.flags, VIRTIO_VSOCK_SHUTDOWN_F_SEND);
	gsend(c, &a, VIRTIO_VSOCK_OP_RW, 0, "xyz", 3);
	host_read_full(fa, buf, 3);
	assert_memory_equal(buf, "xyz", 3);
	/* Guest half-closes too: host EOF, and both done means RST. */
	gsend(c, &a, VIRTIO_VSOCK_OP_SHUTDOWN, VIRTIO_VSOCK_SHUTDOWN_F_SEND, NULL, 0);
	host_expect_eof(fa);
	assert_int_equal(grecv_op(c, &a), VIRTIO_VSOCK_OP_RST);
	close(fa);

	/* Guest close(): SHUTDOWN(RECEIVE|SEND) -> host EOF, then RST to the guest. */
	int fb = host_open(c, 11, GBUF, &b);
	gsend(c, &b, VIRTIO_VSOCK_OP_RW, 0, "bye", 3);
	gsend(c, &b, VIRTIO_VSOCK_OP_SHUTDOWN, VIRTIO_VSOCK_SHUTDOWN_F_RECEIVE | VIRTIO_VSOCK_SHUTDOWN_F_SEND, NULL,
	      0);
	host_read_full(fb, buf, 3);
	assert_memory_equal(buf, "bye", 3);
	host_expect_eof(fb);
	assert_int_equal(grecv_op(c, &b), VIRTIO_VSOCK_OP_RST);
	close(fb);

	/* Guest RST: the host sees EOF, nothing goes back. */
	struct gconn r;
	int fr = host_open(c, 12, GBUF, &r);
	gsend(c, &r, VIRTIO_VSOCK_OP_RST, 0, NULL, 0);
	host_expect_eof(fr);
	close(fr);
	rx_none(c, QUIET_MS);

	/* Host close(): SHUTDOWN(SEND); a later guest write finds nobody: RST. */
	int fd_ = host_open(c, 13, GBUF, &d);
	close(fd_);
	assert_true(grecv(c, &d, &p, WAIT_MS));
	assert_int_equal(p.h.op, VIRTIO_VSOCK_OP_SHUTDOWN);
	assert_int_equal(p.h.flags, VIRTIO_VSOCK_SHUTDOWN_F_SEND);
	gsend(c, &d, VIRTIO_VSOCK_OP_RW, 0, "late", 4);
	assert_int_equal(grecv_op(c, &d), VIRTIO_VSOCK_OP_RST);

	/* Guest SHUTDOWN(RECEIVE): host data is no longer delivered, the
	 * guest's still is. */
	int fe = host_open(c, 14, GBUF, &e);
	gsend(c, &e, VIRTIO_VSOCK_OP_SHUTDOWN, VIRTIO_VSOCK_SHUTDOWN_F_RECEIVE, NULL, 0);
	host_write(fe, "unwanted", 8);
	rx_none(c, QUIET_MS);
	gsend(c, &e, VIRTIO_VSOCK_OP_RW, 0, "still", 5);
	host_read_full(fe, buf, 5);
	assert_memory_equal(buf, "still", 5);
	close(fe);

	/* Data after the guest's SHUTDOWN(SEND) is a protocol error. */
	int ff = host_open(c, 15, GBUF, &f);
	gsend(c, &f, VIRTIO_VSOCK_OP_SHUTDOWN, VIRTIO_VSOCK_SHUTDOWN_F_SEND, NULL, 0);
	host_expect_eof(ff);
	gsend(c, &f, VIRTIO_VSOCK_OP_RW, 0, "x", 1);
	assert_int_equal(grecv_op(c, &f), VIRTIO_VSOCK_OP_RST);
	close(ff);
	assert_int_equal(c->reports, 0);
}

/* ---- untrusted packets ---- */

static void expect_rst_for(struct ctx *c, const struct virtio_vsock_hdr *sent)
{
	struct pkt p;
	assert_true(rx_get(c, &p, WAIT_MS));
	assert_int_equal(p.h.op, VIRTIO_VSOCK_OP_RST);
	assert_int_equal(p.h.src_cid, sent->dst_cid);
	assert_int_equal(p.h.src_port, sent->dst_port);
	assert_int_equal(p.h.dst_port, sent->src_port);
	assert_int_equal(p.h.len, 0);
}

static void expect_failed(struct ctx *c, const char *msg)
{
	assert_true(WAIT_FOR(virtio_mmio_status(c->t) & VIRTIO_STATUS_NEEDS_RESET, WAIT_MS));
	if (!strstr(c->report, msg))
		fail_msg("report \"%s\" does not mention \"%s\"", c->report, msg);
}

static void test_malformed_packets(void **state)
{
	struct ctx *c = *state;
	struct gconn x;
	driver_init(c);
	int fx = host_open(c, 1024, GBUF, &x);
	struct virtio_vsock_hdr h;

	/* Well-formed but misaddressed or mistyped: answered with RST. */
	h = mkhdr(&x, VIRTIO_VSOCK_OP_RW, 0, 0);
	h.src_cid = CID + 1;
	tx_send(c, &h, NULL, 0, false);
	expect_rst_for(c, &h);
	h = mkhdr(&x, VIRTIO_VSOCK_OP_REQUEST, 0, 0);
	h.dst_cid = 7; /* a sibling VM: no such routing */
	tx_send(c, &h, NULL, 0, false);
	expect_rst_for(c, &h);
	h = mkhdr(&x, VIRTIO_VSOCK_OP_REQUEST, 0, 0);
	h.type = 2; /* SEQPACKET, not offered */
	tx_send(c, &h, NULL, 0, false);
	expect_rst_for(c, &h);
	struct gconn nobody = {.gport = 999, .hport = 888, .buf_alloc = GBUF};
	h = mkhdr(&nobody, 42, 0, 0); /* unknown op, unknown pair */
	tx_send(c, &h, NULL, 0, false);
	expect_rst_for(c, &h);
	h = mkhdr(&nobody, VIRTIO_VSOCK_OP_RW, 0, 3);
	tx_send(c, &h, "abc", 3, false);
	expect_rst_for(c, &h);
	h = mkhdr(&nobody, VIRTIO_VSOCK_OP_RST, 0, 0); /* never answer an RST */
	tx_send(c, &h, NULL, 0, false);
	rx_none(c, QUIET_MS);
	/* The connection the spoofed packets named is untouched. */
	gsend(c, &x, VIRTIO_VSOCK_OP_RW, 0, "ok", 2);
	char b[2];
	host_read_full(fx, b, 2);
	/* An unknown op on a live connection resets it. */
	h = mkhdr(&x, VIRTIO_VSOCK_OP_INVALID, 0, 0);
	tx_send(c, &h, NULL, 0, false);
	assert_int_equal(grecv_op(c, &x), VIRTIO_VSOCK_OP_RST);
	host_expect_eof(fx);
	close(fx);
	assert_int_equal(c->reports, 0);

	/* Malformed chains: the device needs a reset. */
	h = mkhdr(&nobody, VIRTIO_VSOCK_OP_RW, 0, 100);
	tx_post(c, &h, "0123456789", 10, true, HDR + 10); /* len beyond the chain */
	expect_failed(c, "payload length 100, but 10 bytes follow");

	driver_init(c);
	tx_post(c, &h, NULL, 0, false, 20);
	expect_failed(c, "less than the 44-byte header");

	driver_init(c);
	h = mkhdr(&nobody, VIRTIO_VSOCK_OP_RW, 0, VIRTIO_VSOCK_MAX_PKT + 1);
	tx_post(c, &h, NULL, 0, false, HDR + VIRTIO_VSOCK_MAX_PKT + 1);
	expect_failed(c, "exceeds 65536");

	/* An rx buffer too small for a header. */
	driver_init_rx(c, false);
	set_desc(c, VIRTIO_VSOCK_QUEUE_RX, 0, RXBUF(0), 10, VIRTQ_DESC_F_WRITE, 0);
	avail_add(c, VIRTIO_VSOCK_QUEUE_RX, 0);
	kick(c, VIRTIO_VSOCK_QUEUE_RX);
	h = mkhdr(&nobody, VIRTIO_VSOCK_OP_RW, 0, 0);
	tx_send(c, &h, NULL, 0, false); /* owes an RST */
	expect_failed(c, "rx buffer 0: 10 writable bytes");

	/* An event buffer too small for an event: a restore needs one. */
	driver_init(c);
	virtio_vsock_pause(c->v);
	sl_error_t err = NULL;
	/* Make the first posted event buffer 2 bytes, as if the guest had. */
	set_desc(c, VIRTIO_VSOCK_QUEUE_EVENT, 0, EVBUF(0), 2, VIRTQ_DESC_F_WRITE, 0);
	assert_int_equal(virtio_vsock_restored(c->v, &err), 0);
	virtio_vsock_resume(c->v);
	expect_failed(c, "event buffer 0: 2 writable bytes");

	/* After all that, a reset gives a working device. */
	driver_init(c);
	int fd = host_open(c, 1024, GBUF, &x);
	close(fd);
}

/* ---- pause, capture, restore ---- */

static void test_pause_resume(void **state)
{
	struct ctx *c = *state;
	struct gconn x;
	sl_error_t err = NULL;
	driver_init(c);
	int fx = host_open(c, 1024, GBUF, &x);

	virtio_vsock_pause(c->v);
	virtio_vsock_pause(c->v); /* idempotent */
	host_write(fx, "data", 4);
	struct virtio_vsock_hdr h = mkhdr(&x, VIRTIO_VSOCK_OP_RW, 0, 5);
	tx_post(c, &h, "guest", 5, false, HDR + 5);
	int fy = unix_connect(c->path);
	host_write(fy, "CONNECT 2048\n", 13);
	rx_none(c, QUIET_MS);
	assert_false(tx_done(c));
	host_expect_quiet(fx, 0);
	/* Nothing in flight: capture can save the transport. */
	struct virtio_mmio_state_v1 s;
	assert_int_equal(virtio_mmio_save(c->t, &s, &err), 0);
	assert_null(err);

	virtio_vsock_resume(c->v);
	assert_true(WAIT_FOR(tx_done(c), WAIT_MS));
	char b[5];
	host_read_full(fx, b, 5);
	assert_memory_equal(b, "guest", 5);
	/* The RW and the new REQUEST, in either order. */
	bool saw_rw = false, saw_req = false;
	while (!saw_rw || !saw_req) {
		struct pkt p;
		assert_true(rx_get(c, &p, WAIT_MS));
		if (p.h.op == VIRTIO_VSOCK_OP_RW) {
			assert_memory_equal(p.data, "data", 4);
			saw_rw = true;
		} else {
			assert_int_equal(p.h.op, VIRTIO_VSOCK_OP_REQUEST);
			assert_int_equal(p.h.dst_port, 2048);
			saw_req = true;
		}
	}
	close(fx);
	close(fy);
}

static void test_save_load_restored(void **state)
{
	struct ctx *c = *state;
	struct gconn x;
	sl_error_t err = NULL;
	driver_init(c);
	int fx = host_open(c, 1024, GBUF, &x);
	gsend(c, &x, VIRTIO_VSOCK_OP_RW, 0, "before", 6);
	char b[8];
	host_read_full(fx, b, 6);

	/* Capture: vCPUs parked (the test does nothing), device paused; the
	 * guest had just queued a packet the device has not taken yet. */
	virtio_vsock_pause(c->v);
	struct virtio_vsock_hdr pend = mkhdr(&x, VIRTIO_VSOCK_OP_RW, 0, 5);
	tx_post(c, &pend, "pend!", 5, false, HDR + 5);
	struct virtio_mmio_state_v1 s, s2;
	assert_int_equal(virtio_mmio_save(c->t, &s, &err), 0);

	/* Restore into another VM: same memory, a fresh device, in the order
	 * the machine does it (no pause: the device waits for restored). */
	struct ctx *r = calloc(1, sizeof(*r));
	assert_non_null(r);
	snprintf(r->path, sizeof(r->path), "%s/vm2.sock", c->dir.path);
	r->vm = fake_vm(MEM_SIZE);
	memcpy(r->vm->mem, c->vm->mem, MEM_SIZE);
	memcpy(r->q, c->q, sizeof(r->q));
	r->tx_slot = c->tx_slot;
	struct virtio_vsock_opts o = {.guest_cid = CID, .uds_path = r->path};
	assert_int_equal(virtio_vsock_create(r->vm, BASE, GSI, &o, &r->v, &err), 0);
	assert_int_equal(virtio_vsock_start(r->v, &err), 0);
	r->t = virtio_vsock_transport(r->v);
	set_hooks(r);
	/* A client connecting right away is held until the guest took the news. */
	int fy = unix_connect(r->path);
	host_write(fy, "CONNECT 1024\n", 13);
	assert_int_equal(virtio_mmio_load(r->t, &s, &err), 0);
	assert_null(err);
	/* Live rings, but nothing moves before virtio_vsock_restored. */
	usleep(QUIET_MS * 1000);
	assert_false(tx_done(r));
	assert_int_equal(used_idx(r, VIRTIO_VSOCK_QUEUE_RX), r->q[VIRTIO_VSOCK_QUEUE_RX].used_seen);
	assert_int_equal(used_idx(r, VIRTIO_VSOCK_QUEUE_EVENT), r->q[VIRTIO_VSOCK_QUEUE_EVENT].used_seen);
	assert_int_equal(virtio_mmio_save(r->t, &s2, &err), 0);
	assert_memory_equal(&s, &s2, sizeof(s));
	assert_int_equal(virtio_vsock_restored(r->v, &err), 0);

	/* TRANSPORT_RESET in the first posted event buffer. */
	assert_true(WAIT_FOR(used_idx(r, VIRTIO_VSOCK_QUEUE_EVENT) != r->q[VIRTIO_VSOCK_QUEUE_EVENT].used_seen,
			     WAIT_MS));
	uint32_t id, len, ev;
	used_elem(r, VIRTIO_VSOCK_QUEUE_EVENT, r->q[VIRTIO_VSOCK_QUEUE_EVENT].used_seen++, &id, &len);
	assert_int_equal(len, 4);
	memcpy(&ev, g(r, EVBUF(id)), 4);
	assert_int_equal(ev, VIRTIO_VSOCK_EVENT_TRANSPORT_RESET);
	/* The captured connection does not exist here: its packet gets RST. */
	assert_true(WAIT_FOR(tx_done(r), WAIT_MS));
	expect_rst_for(r, &pend);
	rx_none(r, QUIET_MS); /* the request waits for the driver's refill */
	post_event(r, (uint16_t)id);
	kick(r, VIRTIO_VSOCK_QUEUE_EVENT);
	struct pkt p;
	assert_true(rx_get(r, &p, WAIT_MS));
	assert_int_equal(p.h.op, VIRTIO_VSOCK_OP_REQUEST);
	assert_int_equal(p.h.dst_port, 1024);
	assert_int_equal(r->reports, 0);
	close(fy);
	virtio_vsock_free(r->v);
	free_vm(r->vm);
	free(r);

	/* The original, resumed, carries on where it was. */
	virtio_vsock_resume(c->v);
	host_read_full(fx, b, 5);
	assert_memory_equal(b, "pend!", 5);
	gsend(c, &x, VIRTIO_VSOCK_OP_RW, 0, "still", 5);
	host_read_full(fx, b, 5);
	assert_memory_equal(b, "still", 5);
	close(fx);
}

/* ---- lifecycle ---- */

static void test_driver_reset_drops_connections(void **state)
{
	struct ctx *c = *state;
	struct gconn x, y;
	driver_init(c);
	int fx = host_open(c, 1024, GBUF, &x);
	int lfd = unix_listen(c, 6000);
	int fy = guest_open(c, lfd, 50000, 6000, &y);
	int fl = unix_connect(c->path); /* still writing its line */
	host_write(fl, "CONN", 4);
	usleep(50000);

	wr(c, VIRTIO_MMIO_STATUS, 0);
	host_expect_eof(fx);
	host_expect_eof(fy);
	host_expect_quiet(fl, QUIET_MS); /* the guest never heard of it: it stays */
	driver_init(c);
	host_write(fl, "ECT 9\n", 6);
	struct pkt p;
	assert_true(rx_get(c, &p, WAIT_MS));
	assert_int_equal(p.h.op, VIRTIO_VSOCK_OP_REQUEST);
	assert_int_equal(p.h.dst_port, 9);
	close(fx);
	close(fy);
	close(fl);
	close(lfd);
}

static void test_free_with_open_connections(void **state)
{
	struct ctx *c = *state;
	struct gconn x;
	driver_init(c);
	int fx = host_open(c, 1024, GBUF, &x);
	gsend(c, &x, VIRTIO_VSOCK_OP_RW, 0, "hi", 2);
	int fl = unix_connect(c->path);
	host_write(fl, "CONNECT 5", 9);
	usleep(50000);
	virtio_vsock_free(c->v);
	c->v = NULL;
	struct stat st;
	assert_int_equal(lstat(c->path, &st), -1);
	assert_int_equal(errno, ENOENT);
	char b[2];
	host_read_full(fx, b, 2);
	host_expect_eof(fx);
	host_expect_eof(fl);
	close(fx);
	close(fl);
}

static void test_connection_limit(void **state)
{
	struct ctx *c = *state;
	static int fds[VIRTIO_VSOCK_MAX_CONNS];
	driver_init(c);
	int lfd = unix_listen(c, 7000);
	for (unsigned i = 0; i < VIRTIO_VSOCK_MAX_CONNS; i++)
		fds[i] = unix_connect(c->path);
	/* One more: accepted after the others, and closed at once. */
	int extra = unix_connect(c->path);
	host_expect_eof(extra);
	close(extra);
	/* The guest cannot open one either. */
	struct gconn y = {.gport = 60000, .hport = 7000, .buf_alloc = GBUF};
	gsend(c, &y, VIRTIO_VSOCK_OP_REQUEST, 0, NULL, 0);
	assert_int_equal(grecv_op(c, &y), VIRTIO_VSOCK_OP_RST);
	/* A slot freed is a slot usable. */
	close(fds[0]);
	fds[0] = -1;
	/* (Retried: the device may not have seen the hangup yet.) */
	assert_true(WAIT_FOR(({
				     int fz = unix_connect(c->path);
				     host_write(fz, "CONNECT 1\n", 10);
				     struct pkt p;
				     bool ok = rx_get(c, &p, 100);
				     if (ok)
					     assert_int_equal(p.h.op, VIRTIO_VSOCK_OP_REQUEST);
				     close(fz);
				     ok;
			     }),
			     WAIT_MS));
	for (unsigned i = 1; i < VIRTIO_VSOCK_MAX_CONNS; i++)
		close(fds[i]);
	close(lfd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_probe_config, setup, teardown),
		cmocka_unit_test_setup_teardown(test_create_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_host_connect_and_data, setup, teardown),
		cmocka_unit_test_setup_teardown(test_host_connect_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_peer_uid, setup, teardown),
		cmocka_unit_test_setup_teardown(test_timeouts, setup_short, teardown),
		cmocka_unit_test_setup_teardown(test_garbage_connect_lines, setup, teardown),
		cmocka_unit_test_setup_teardown(test_credit_host_to_guest, setup, teardown),
		cmocka_unit_test_setup_teardown(test_credit_guest_to_host, setup, teardown),
		cmocka_unit_test_setup_teardown(test_guest_connect, setup, teardown),
		cmocka_unit_test_setup_teardown(test_shutdown_and_rst, setup, teardown),
		cmocka_unit_test_setup_teardown(test_malformed_packets, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pause_resume, setup, teardown),
		cmocka_unit_test_setup_teardown(test_save_load_restored, setup, teardown),
		cmocka_unit_test_setup_teardown(test_driver_reset_drops_connections, setup, teardown),
		cmocka_unit_test_setup_teardown(test_free_with_open_connections, setup, teardown),
		cmocka_unit_test_setup_teardown(test_connection_limit, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
