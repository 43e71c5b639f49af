/* libFuzzer target: the virtio-vsock device (vmm/src/virtio_vsock.c) driven by arbitrary guest packets and host-client bytes. */
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "virtio_vsock.h"
#include "vmm_internal.h"

/* The input is a list of commands for a guest driver and host clients;
 * the device runs without its thread (opts.no_thread) and is polled after
 * every command, so a run is deterministic. Command byte % 10:
 *   0 tx packet: f, op, sel, len16, flags, split, buf_alloc16, then by f:
 *     f&1 src_cid8, f&2 dst_cid8, f&4 type8, (sel&3)==3 ports 2x32,
 *     f&16 header len32 (else the payload length), f&32 fwd_cnt32 (else
 *     all received so far), f&64 flags32 (else flags%4); f&8 keeps op raw
 *     (else op%9); then up to 256 payload bytes (a pattern for the rest). sel&3: 0 the pair of the last
 *     REQUEST the device sent, 1 guest port 5000+(sel>>2&3) to host port
 *     1024 (listening), 2 to host port 1025 (nobody). split: descriptors
 *     (split%3)+1; if split&0x80, (split>>2&31) bytes cut off the chain.
 *   1 rx buffers: count8, size8 (size table; &8: header in its own descriptor)
 *   2 host client: b8; b&1 "CONNECT <port>\n" (port 1024, 5000 or port32),
 *     else b8%41 raw bytes
 *   3 host write: client8, len16 (up to 256 bytes from the input, then a pattern)
 *   4 host close: b8 (&8 shutdown(SHUT_WR), else close)
 *   5 host read: client8 (drain what is readable)
 *   6 host listener on port 1024: b8 (accept, write, drain or close one)
 *   7 driver: b8 (&1 full re-init, else reset only)
 *   8 capture: b8 (pause, save; &1 load it back; &2 restored; &4 resume
 *     now, else at the next 8 or at the end)
 *   9 event buffers: count8, size8
 * Invariants (trap): virtio_mmio_save succeeds between polls (no chain in
 * flight); every used rx buffer holds a well-formed packet for this guest
 * that fits the buffer; events are 4-byte TRANSPORT_RESETs; tx buffers
 * come back empty; every report names its problem; free unlinks the
 * socket. */

#define MEM_SIZE (1u << 20)
#define CID 3u
#define QN 16u
#define QDESC(q) (0x1000u + (q) * 0x3000u)
#define QAVAIL(q) (QDESC(q) + 0x1000u)
#define QUSED(q) (QDESC(q) + 0x2000u)
#define RXBUF(i) (0x20000u + (i) * 0x1100u) /* 16 x 4352 */
#define TXBUF 0x40000u                      /* up to 128 KiB */
#define EVBUF(i) (0x70000u + (i) * 16u)
#define HDR 44u
#define NCLI 8
#define MAX_CMDS 256
#define PAYLOAD_MAX 256 /* input bytes per payload; a pattern fills the rest */

struct in {
	const uint8_t *p;
	size_t n;
};

struct fz {
	struct vmm_vm *vm;
	struct virtio_vsock *v;
	struct virtio_mmio *t;
	bool live, paused;
	uint16_t avail[3], used_seen[3];
	uint32_t rx_size[QN]; /* writable bytes of the chain at head i; 0: not posted */
	bool ev_posted[QN];
	int cli[NCLI], acc[NCLI];
	uint32_t pair_g, pair_h; /* the last REQUEST the device sent */
	uint32_t rw_bytes;       /* RW payload the device sent on any pair */
};

static char dir[64], sock_path[96], listen_path[128];
static int listen_fd = -1;

static uint8_t u8(struct in *in)
{
	if (!in->n)
		return 0;
	in->n--;
	return *in->p++;
}
static uint16_t u16(struct in *in) { return (uint16_t)(u8(in) | u8(in) << 8); }
static uint32_t u32(struct in *in) { return (uint32_t)u16(in) | (uint32_t)u16(in) << 16; }

static uint8_t *g(struct fz *f, uint64_t gpa) { return f->vm->mem + gpa; }

static void wr(struct fz *f, uint64_t off, uint32_t v)
{
	struct kvm_run run;
	memset(&run, 0, sizeof(run));
	run.mmio.phys_addr = VIRTIO_MMIO_BASE + off;
	run.mmio.len = 4;
	run.mmio.is_write = 1;
	memcpy(run.mmio.data, &v, 4);
	vmm_mmio_dispatch(f->vm, &run);
}

static void irq_nop(void *arg, uint32_t gsi, int level) { (void)arg, (void)gsi, (void)level; }
static void report_check(void *arg, const char *dev, const char *msg)
{
	(void)arg, (void)dev;
	if (!msg[0])
		__builtin_trap();
}

static void set_desc(struct fz *f, unsigned q, uint16_t i, uint64_t addr, uint32_t len, uint16_t flags,
		     uint16_t next)
{
	uint8_t *d = g(f, QDESC(q) + 16u * i);
	memcpy(d, &addr, 8);
	memcpy(d + 8, &len, 4);
	memcpy(d + 12, &flags, 2);
	memcpy(d + 14, &next, 2);
}

static uint16_t used_idx(struct fz *f, unsigned q)
{
	uint16_t v;
	memcpy(&v, g(f, QUSED(q) + 2), 2);
	return v;
}

/* Room for one more chain: the driver never overfills a ring. */
static bool avail_room(struct fz *f, unsigned q) { return (uint16_t)(f->avail[q] - used_idx(f, q)) < QN; }

static void avail_add(struct fz *f, unsigned q, uint16_t head)
{
	memcpy(g(f, QAVAIL(q) + 4 + 2u * (f->avail[q] % QN)), &head, 2);
	f->avail[q]++;
	memcpy(g(f, QAVAIL(q) + 2), &f->avail[q], 2);
}

static void driver_init(struct fz *f)
{
	const uint32_t st = VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK;
	wr(f, VIRTIO_MMIO_STATUS, 0);
	wr(f, VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
	wr(f, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
	wr(f, VIRTIO_MMIO_DRIVER_FEATURES, 1);
	wr(f, VIRTIO_MMIO_STATUS, st);
	memset(g(f, QDESC(0)), 0, 3 * 0x3000u);
	memset(f->avail, 0, sizeof(f->avail));
	memset(f->used_seen, 0, sizeof(f->used_seen));
	memset(f->rx_size, 0, sizeof(f->rx_size));
	memset(f->ev_posted, 0, sizeof(f->ev_posted));
	for (unsigned q = 0; q < 3; q++) {
		wr(f, VIRTIO_MMIO_QUEUE_SEL, q);
		wr(f, VIRTIO_MMIO_QUEUE_NUM, QN);
		wr(f, VIRTIO_MMIO_QUEUE_DESC_LOW, QDESC(q));
		wr(f, VIRTIO_MMIO_QUEUE_DRIVER_LOW, QAVAIL(q));
		wr(f, VIRTIO_MMIO_QUEUE_DEVICE_LOW, QUSED(q));
		wr(f, VIRTIO_MMIO_QUEUE_READY, 1);
	}
	wr(f, VIRTIO_MMIO_STATUS, st | VIRTIO_STATUS_DRIVER_OK);
	f->live = true;
	struct kvm_run run; /* the driver reads guest_cid, as Linux's probe does */
	memset(&run, 0, sizeof(run));
	run.mmio.phys_addr = VIRTIO_MMIO_BASE + VIRTIO_MMIO_CONFIG;
	run.mmio.len = 8;
	vmm_mmio_dispatch(f->vm, &run);
	uint64_t cid;
	memcpy(&cid, run.mmio.data, 8);
	if (cid != CID || virtio_vsock_cid(f->v) != CID)
		__builtin_trap();
}

static void check(struct fz *f)
{
	struct virtio_mmio_state_v1 s;
	sl_error_t err = NULL;
	if (virtio_mmio_save(f->t, &s, &err) < 0) /* a chain held across a poll */
		__builtin_trap();
	if (!f->live)
		return;
	for (; f->used_seen[0] != used_idx(f, 0); f->used_seen[0]++) {
		uint32_t id, len;
		memcpy(&id, g(f, QUSED(0) + 4 + 8u * (f->used_seen[0] % QN)), 4);
		memcpy(&len, g(f, QUSED(0) + 8 + 8u * (f->used_seen[0] % QN)), 4);
		if (id >= QN || !f->rx_size[id] || len < HDR || len > f->rx_size[id])
			__builtin_trap();
		struct virtio_vsock_hdr h; /* split buffers put exactly the header first */
		memcpy(&h, g(f, RXBUF(id / 2)), HDR);
		if (h.len + HDR != len || h.dst_cid != CID || h.type != VIRTIO_VSOCK_TYPE_STREAM || !h.op ||
		    h.op > VIRTIO_VSOCK_OP_CREDIT_REQUEST || (h.op != VIRTIO_VSOCK_OP_RW && h.len) ||
		    (h.op == VIRTIO_VSOCK_OP_RW && !h.len) || h.len > VIRTIO_VSOCK_MAX_PKT)
			__builtin_trap();
		if (h.op != VIRTIO_VSOCK_OP_RST && h.src_cid != VIRTIO_VSOCK_HOST_CID)
			__builtin_trap();
		if (h.op == VIRTIO_VSOCK_OP_REQUEST) {
			f->pair_g = h.dst_port;
			f->pair_h = h.src_port;
		}
		f->rw_bytes += h.len;
		f->rx_size[id] = 0;
	}
	for (; f->used_seen[1] != used_idx(f, 1); f->used_seen[1]++) {
		uint32_t len;
		memcpy(&len, g(f, QUSED(1) + 8 + 8u * (f->used_seen[1] % QN)), 4);
		if (len) /* tx buffers are read, never written */
			__builtin_trap();
	}
	for (; f->used_seen[2] != used_idx(f, 2); f->used_seen[2]++) {
		uint32_t id, len, ev;
		memcpy(&id, g(f, QUSED(2) + 4 + 8u * (f->used_seen[2] % QN)), 4);
		memcpy(&len, g(f, QUSED(2) + 8 + 8u * (f->used_seen[2] % QN)), 4);
		if (id >= QN || !f->ev_posted[id] || len != 4)
			__builtin_trap();
		memcpy(&ev, g(f, EVBUF(id)), 4);
		if (ev != VIRTIO_VSOCK_EVENT_TRANSPORT_RESET)
			__builtin_trap();
		f->ev_posted[id] = false;
	}
}

/* A host client needs three rounds before the guest sees its REQUEST
 * (accept, read the line, deliver): poll a few, like a device thread would. */
static void run(struct fz *f)
{
	for (int i = 0; i < 4; i++)
		virtio_vsock_poll(f->v, 0);
	check(f);
}

static void cmd_tx(struct fz *f, struct in *in)
{
	uint8_t fl = u8(in), op = u8(in), sel = u8(in), split;
	uint16_t len = u16(in);
	uint8_t flags8 = u8(in);
	split = u8(in);
	struct virtio_vsock_hdr h = {
		.src_cid = CID,
		.dst_cid = VIRTIO_VSOCK_HOST_CID,
		.type = VIRTIO_VSOCK_TYPE_STREAM,
		.op = (fl & 8) ? op : op % 9,
		.buf_alloc = (uint32_t)u16(in) << 4,
		.fwd_cnt = f->rw_bytes,
		.flags = flags8 % 4,
		.len = len,
	};
	if (fl & 1)
		h.src_cid = u8(in);
	if (fl & 2)
		h.dst_cid = u8(in);
	if (fl & 4)
		h.type = u8(in);
	switch (sel & 3) {
	case 0:
		h.src_port = f->pair_g;
		h.dst_port = f->pair_h;
		break;
	case 1:
		h.src_port = 5000u + (sel >> 2 & 3);
		h.dst_port = 1024;
		break;
	case 2:
		h.src_port = 5100;
		h.dst_port = 1025;
		break;
	default:
		h.src_port = u32(in);
		h.dst_port = u32(in);
		break;
	}
	if (fl & 16)
		h.len = u32(in);
	if (fl & 32)
		h.fwd_cnt = u32(in);
	if (fl & 64)
		h.flags = u32(in);
	if (!f->live || !avail_room(f, 1))
		return;
	memcpy(g(f, TXBUF), &h, HDR);
	size_t k = len < in->n ? len : in->n;
	k = k < PAYLOAD_MAX ? k : PAYLOAD_MAX;
	memcpy(g(f, TXBUF + HDR), in->p, k);
	memset(g(f, TXBUF + HDR + k), 0x5a, len - k);
	in->p += k;
	in->n -= k;
	uint32_t total = HDR + len;
	if (split & 0x80) {
		uint32_t cut = split >> 2 & 31;
		total = cut < total ? total - cut : 0;
	}
	unsigned nd = split % 3 + 1;
	uint32_t off = 0;
	for (unsigned i = 0; i < nd; i++) {
		uint32_t piece = i + 1 == nd ? total - off : (total - off) / 2;
		set_desc(f, 1, (uint16_t)i, TXBUF + off, piece, i + 1 < nd ? VIRTQ_DESC_F_NEXT : 0, (uint16_t)(i + 1));
		off += piece;
	}
	avail_add(f, 1, 0);
	wr(f, VIRTIO_MMIO_QUEUE_NOTIFY, 1);
}

static void cmd_rx(struct fz *f, struct in *in)
{
	static const uint32_t sizes[8] = {4096 + HDR, HDR, HDR + 1, 200, 10, 4096 + HDR, 1000, 0};
	unsigned count = u8(in) % 8 + 1;
	uint8_t ss = u8(in);
	uint32_t size = sizes[ss % 8];
	if (!size)
		size = u16(in) % 0x1100u;
	bool two = ss & 8;
	for (uint16_t head = 0; head < QN && count && f->live; head += 2) {
		if (f->rx_size[head] || !avail_room(f, 0))
			continue;
		if (two && size > HDR) { /* Linux's older layout: header, then data */
			uint32_t data = size - HDR > 0x900 ? 0x900 : size - HDR;
			set_desc(f, 0, head, RXBUF(head / 2), HDR, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT,
				 (uint16_t)(head + 1));
			set_desc(f, 0, (uint16_t)(head + 1), RXBUF(head / 2) + 0x800, data, VIRTQ_DESC_F_WRITE, 0);
			f->rx_size[head] = HDR + data;
		} else {
			set_desc(f, 0, head, RXBUF(head / 2), size, VIRTQ_DESC_F_WRITE, 0);
			f->rx_size[head] = size ? size : 1; /* 0-byte buffers are posted, and must fail */
		}
		avail_add(f, 0, head);
		count--;
	}
	if (f->live)
		wr(f, VIRTIO_MMIO_QUEUE_NOTIFY, 0);
}

static void cmd_event(struct fz *f, struct in *in)
{
	static const uint32_t sizes[4] = {4, 4, 2, 16};
	unsigned count = u8(in) % 4 + 1;
	uint32_t size = sizes[u8(in) % 4];
	for (uint16_t i = 0; i < QN && count && f->live; i++) {
		if (f->ev_posted[i] || !avail_room(f, 2))
			continue;
		set_desc(f, 2, i, EVBUF(i), size, VIRTQ_DESC_F_WRITE, 0);
		f->ev_posted[i] = true;
		avail_add(f, 2, i);
		count--;
	}
	if (f->live)
		wr(f, VIRTIO_MMIO_QUEUE_NOTIFY, 2);
}

static int unix_connect_nb(const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		close(fd);
		fd = -1;
	}
	return fd;
}

static void cmd_connect(struct fz *f, struct in *in)
{
	uint8_t b = u8(in);
	char line[64];
	size_t n;
	if (b & 1) {
		uint32_t port = (b & 2) ? 1024 : (b & 4) ? 5000 : u32(in);
		n = (size_t)snprintf(line, sizeof(line), "CONNECT %u\n", port);
	} else {
		n = u8(in) % 41;
		n = n < in->n ? n : in->n;
		memcpy(line, in->p, n);
		in->p += n;
		in->n -= n;
	}
	for (int i = 0; i < NCLI; i++) {
		if (f->cli[i] >= 0)
			continue;
		f->cli[i] = unix_connect_nb(sock_path);
		if (f->cli[i] >= 0 && n)
			(void)!send(f->cli[i], line, n, MSG_DONTWAIT | MSG_NOSIGNAL);
		return;
	}
}

static void send_some(int fd, struct in *in)
{
	static uint8_t buf[8192];
	size_t len = u16(in) % sizeof(buf);
	size_t k = len < in->n ? len : in->n;
	k = k < PAYLOAD_MAX ? k : PAYLOAD_MAX;
	memcpy(buf, in->p, k);
	memset(buf + k, 0xa5, len - k);
	in->p += k;
	in->n -= k;
	if (fd >= 0)
		(void)!send(fd, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL);
}

static void drain(int fd)
{
	static uint8_t buf[65536];
	for (int i = 0; fd >= 0 && i < 64; i++)
		if (recv(fd, buf, sizeof(buf), MSG_DONTWAIT) <= 0)
			return;
}

static void cmd_listener(struct fz *f, struct in *in)
{
	uint8_t b = u8(in);
	int i = (b >> 3) % NCLI;
	switch (b & 3) {
	case 0:
		if (f->acc[i] < 0)
			f->acc[i] = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		break;
	case 1:
		send_some(f->acc[i], in);
		break;
	case 2:
		drain(f->acc[i]);
		break;
	default:
		if (f->acc[i] >= 0)
			close(f->acc[i]);
		f->acc[i] = -1;
		break;
	}
}

static void cmd_capture(struct fz *f, struct in *in)
{
	uint8_t b = u8(in);
	sl_error_t err = NULL;
	if (f->paused) {
		virtio_vsock_resume(f->v);
		f->paused = false;
		return;
	}
	virtio_vsock_pause(f->v);
	f->paused = true;
	struct virtio_mmio_state_v1 s;
	if (virtio_mmio_save(f->t, &s, &err) < 0)
		__builtin_trap();
	if ((b & 1) && virtio_mmio_load(f->t, &s, &err) < 0) /* what we saved must load */
		__builtin_trap();
	if ((b & 2) && virtio_vsock_restored(f->v, &err) < 0)
		__builtin_trap();
	if (b & 4) {
		virtio_vsock_resume(f->v);
		f->paused = false;
	}
}

static void cleanup(void)
{
	if (listen_fd >= 0)
		close(listen_fd);
	unlink(listen_path);
	rmdir(dir);
}

static void setup_once(void)
{
	if (dir[0])
		return;
	atexit(cleanup);
	snprintf(dir, sizeof(dir), "/tmp/sl-fuzz-vsock-XXXXXX");
	if (!mkdtemp(dir))
		__builtin_trap();
	snprintf(sock_path, sizeof(sock_path), "%s/v", dir);
	snprintf(listen_path, sizeof(listen_path), "%s_1024", sock_path);
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", listen_path);
	listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (listen_fd < 0 || bind(listen_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(listen_fd, 64) < 0)
		__builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	setup_once();
	struct fz f = {0};
	struct in in = {data, size};
	sl_error_t err = NULL;
	for (int i = 0; i < NCLI; i++)
		f.cli[i] = f.acc[i] = -1;
	f.vm = calloc(1, sizeof(*f.vm));
	if (!f.vm)
		return 0;
	f.vm->mem = aligned_alloc(4096, MEM_SIZE);
	if (!f.vm->mem) {
		free(f.vm);
		return 0;
	}
	memset(f.vm->mem, 0, MEM_SIZE);
	f.vm->mem_size = MEM_SIZE;
	f.vm->vm_fd = -1;
	struct virtio_vsock_opts o = {.guest_cid = CID, .uds_path = sock_path, .no_thread = true};
	if (virtio_vsock_create(f.vm, VIRTIO_MMIO_BASE, VIRTIO_MMIO_GSI_BASE, &o, &f.v, &err) < 0)
		__builtin_trap(); /* a previous input left the socket behind */
	f.t = virtio_vsock_transport(f.v);
	struct virtio_mmio_hooks hk = {.irq = irq_nop, .report = report_check};
	virtio_mmio_set_hooks(f.t, &hk);
	driver_init(&f);

	for (int c = 0; c < MAX_CMDS && in.n; c++) {
		uint8_t op = u8(&in) % 10;
		int i;
		switch (op) {
		case 0:
			cmd_tx(&f, &in);
			break;
		case 1:
			cmd_rx(&f, &in);
			break;
		case 2:
			cmd_connect(&f, &in);
			break;
		case 3:
			i = u8(&in) % NCLI;
			send_some(f.cli[i], &in);
			break;
		case 4:
			i = u8(&in);
			if (f.cli[i % NCLI] >= 0) {
				if (i & 8) {
					shutdown(f.cli[i % NCLI], SHUT_WR);
				} else {
					close(f.cli[i % NCLI]);
					f.cli[i % NCLI] = -1;
				}
			}
			break;
		case 5:
			drain(f.cli[u8(&in) % NCLI]);
			break;
		case 6:
			cmd_listener(&f, &in);
			break;
		case 7:
			if (u8(&in) & 1) {
				driver_init(&f);
			} else {
				wr(&f, VIRTIO_MMIO_STATUS, 0);
				f.live = false;
			}
			break;
		case 8:
			cmd_capture(&f, &in);
			break;
		default:
			cmd_event(&f, &in);
			break;
		}
		run(&f);
	}
	if (f.paused)
		virtio_vsock_resume(f.v);
	run(&f);

	virtio_vsock_free(f.v);
	struct stat st;
	if (lstat(sock_path, &st) == 0)
		__builtin_trap();
	for (int i = 0; i < NCLI; i++) {
		if (f.cli[i] >= 0)
			close(f.cli[i]);
		if (f.acc[i] >= 0)
			close(f.acc[i]);
	}
	/* Connections the device made to the listener and we did not take. */
	for (int fd; (fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC)) >= 0;)
		close(fd);
	free(f.vm->mem);
	free(f.vm);
	return 0;
}
