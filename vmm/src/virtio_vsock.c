/* Virtio socket device (id 19): guest AF_VSOCK streams to host Unix sockets, served by one I/O thread per device. */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "sl/sock.h"
#include "virtio_vsock.h"

/* Threads and locking. Every piece of mutable device state is protected by
 * the transport lock, so there is one lock and no ordering to get wrong.
 * The transport's callbacks (notify, reset) run on vCPU threads with that
 * lock held; they only set flags and kick the I/O thread through an
 * eventfd. The I/O thread does all the work: it takes the lock, runs the
 * queues (pop, handle, push, never keeping a chain across an unlock, so
 * virtio_mmio_save never sees one in flight), computes what to wait for,
 * drops the lock, polls, retakes it and handles what poll reported. Only
 * the I/O thread creates or frees connections and touches host sockets, so
 * a poll result can never refer to a connection freed under it. A new
 * device leaves the rings alone until the driver resets or kicks it, or
 * virtio_vsock_restored is called (see `armed`). Pause is a flag checked
 * each time the lock is taken: once virtio_vsock_pause has set it (under
 * the lock) the thread cannot be inside the guest's memory, and it does
 * not enter it again until resumed.
 *
 * Flow control (section 5.10.6.3). Host -> guest: a host socket is read
 * only when the guest has credit (buf_alloc - (tx_cnt - fwd_cnt), from the
 * last header it sent on that connection) and an rx buffer is posted, and
 * then straight into the guest's buffer, never more than the credit; at
 * zero credit the device asks once with CREDIT_REQUEST. Guest -> host: each
 * connection advertises VIRTIO_VSOCK_BUF_ALLOC; a packet is written to the
 * host socket directly, and what the socket cannot take yet is kept in a
 * ring of that size (allocated the first time it is needed), flushed when
 * poll says writable. fwd_cnt counts bytes written to the host socket, so
 * a guest honouring its credit cannot overflow the ring; one that does not
 * is reset. The guest learns the new fwd_cnt from every packet we send on
 * the connection, and from a CREDIT_UPDATE once half its view of the
 * buffer is used.
 *
 * Connections: host clients connect to uds_path and send "CONNECT <port>\n";
 * the guest's answer to our OP_REQUEST decides between "OK <local port>\n"
 * and a close. Guest connections to host port P go to the Unix socket
 * "<uds_path>_<P>" (Firecracker's convention). Shutdown is half-close in
 * both directions; once neither side can send any more and the guest's
 * data reached the host socket, the device closes the host socket and
 * sends OP_RST, which ends the connection for the guest gracefully (Linux
 * waits for exactly that after its own SHUTDOWN). */

#define HDR_BYTES ((uint32_t)sizeof(struct virtio_vsock_hdr))
#define CONFIG_BYTES 8u
#define RST_QUEUE 64u     /* RSTs owed for packets that match no connection */
#define TX_BUDGET 128u    /* tx packets per round before the lock is dropped */
#define RX_BUDGET 128u    /* rx packets per round */
#define ACCEPT_BUDGET 16u /* host clients accepted per round */
#define EVENT_ACK_MS 1000u
#define ACCEPT_BACKOFF_MS 100u
#define REFUSED_REPORT_MS 1000u /* at most one refusal report per second */
#define NPOLL (2u + VIRTIO_VSOCK_MAX_CONNS)
/* uds_path leaves room for "_<port>" (guest-initiated connections). */
#define SUN_PATH_BYTES sizeof(((struct sockaddr_un *)0)->sun_path)
#define UDS_PATH_MAX (SUN_PATH_BYTES - sizeof("_4294967295"))
#define POLL_WAKE (-1)
#define POLL_LISTEN (-2)

_Static_assert((VIRTIO_VSOCK_BUF_ALLOC & (VIRTIO_VSOCK_BUF_ALLOC - 1)) == 0,
	       "ring offsets come from the wrapping 32-bit stream counters");
_Static_assert(VIRTIO_VSOCK_MAX_PKT <= VIRTQ_CHAIN_MAX_BYTES - 44u, "a full packet fits in one chain");

enum conn_state {
	CONN_FREE = 0,
	CONN_LINE,         /* host client accepted; reading "CONNECT <port>\n" */
	CONN_REQUEST,      /* host-initiated; OP_REQUEST not yet given to the guest */
	CONN_REQUEST_SENT, /* host-initiated; waiting for the guest's OP_RESPONSE or OP_RST */
	CONN_OPEN,         /* established, possibly half-closed */
	CONN_RST,          /* host socket closed; OP_RST owed to the guest, then the slot is free */
};

struct vsock_conn {
	enum conn_state state;
	int fd;
	uint32_t local_port; /* host side of the pair */
	uint32_t peer_port;  /* guest side */
	uint64_t deadline;   /* ms on the monotonic clock; 0: none */

	/* Guest -> host: rx_cnt bytes received, fwd_cnt of them written to the
	 * host socket; the rest sit in buf at (stream offset % BUF_ALLOC). */
	uint32_t rx_cnt, fwd_cnt, last_fwd_sent;
	uint8_t *buf;
	/* Host -> guest: tx_cnt bytes sent; the guest's buffer as it last said. */
	uint32_t tx_cnt, peer_buf_alloc, peer_fwd_cnt;

	uint32_t guest_shut; /* VIRTIO_VSOCK_SHUTDOWN_F_* received */
	bool host_readable;  /* poll reported input or hangup, not yet found drained */
	bool host_eof;       /* the host socket hit EOF; SHUTDOWN(SEND) was sent */
	bool shut_wr;        /* shutdown(SHUT_WR) done */
	bool send_response;  /* guest-initiated: OP_RESPONSE owed */
	bool send_credit_update;
	bool credit_requested; /* CREDIT_REQUEST sent, no credit from the guest since */
	uint8_t line_len;
	char line[VIRTIO_VSOCK_LINE_MAX];
};

struct vsock_rst {
	uint64_t src_cid;
	uint32_t src_port, dst_port;
};

enum start_gate { GATE_WAIT, GATE_GO, GATE_ABORT };

struct virtio_vsock {
	struct virtio_mmio *t;
	uint64_t cid;
	uint8_t config[CONFIG_BYTES];
	char path[UDS_PATH_MAX + 1];
	dev_t sock_dev;
	ino_t sock_ino;
	int listen_fd, wake_fd;
	unsigned timeout_ms;
	bool threaded;
	bool thread_started; /* virtio_vsock_start */
	void (*refused)(void *arg, const char *path, uint32_t uid, unsigned more);
	void *refused_arg;
	pthread_t thread;
	/* The thread waits here until the transport is registered (or not). */
	pthread_mutex_t gate_lock;
	pthread_cond_t gate_cond;
	enum start_gate gate;

	/* Under the transport lock from here on. */
	bool stop, paused;
	/* The rings are ours to run: the driver reset or kicked us (a fresh
	 * boot), or virtio_vsock_restored said so. Until then a transport made
	 * live by virtio_mmio_load alone is left alone, so nothing reaches a
	 * restored guest before it is told its connections are gone. */
	bool armed;
	bool reset_pending;   /* the driver reset the device: drop what the guest knew */
	bool restore_pending; /* virtio_vsock_restored: the same, then the event */
	bool event_pending;   /* TRANSPORT_RESET not yet in an event buffer */
	bool event_ack_wait;  /* delivered; host requests wait for the driver to refill */
	uint64_t event_ack_deadline;
	bool rx_starved;      /* the rx queue came up empty: wait for a kick */
	bool again;           /* a budget ran out: poll without sleeping */
	uint64_t now;         /* ms, taken when the lock is */
	uint64_t accept_backoff_until;
	uint64_t refused_reported; /* ms of the last refusal report; 0: none yet */
	unsigned refused_unreported;
	unsigned nconns;
	unsigned rr; /* where the next rx scan starts, for fairness */
	uint32_t next_port;
	struct vsock_conn conns[VIRTIO_VSOCK_MAX_CONNS];
	struct vsock_rst rst[RST_QUEUE];
	unsigned rst_head, rst_len;

	/* The loop's own: only the thread running it uses them. */
	struct pollfd pfd[NPOLL];
	int pconn[NPOLL];
	struct virtq_chain chain;
	struct iovec iov[VIRTQ_MAX_SIZE];
};

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint32_t min_u32(uint32_t a, uint32_t b) { return a < b ? a : b; }

static void wake(struct virtio_vsock *v)
{
	uint64_t one = 1;
	/* Only fails when the counter is saturated, i.e. a wakeup is pending. */
	ssize_t r = write(v->wake_fd, &one, sizeof(one));
	(void)r;
}

/* ---- connection table ---- */

static struct vsock_conn *conn_alloc(struct virtio_vsock *v)
{
	for (unsigned i = 0; i < VIRTIO_VSOCK_MAX_CONNS; i++) {
		struct vsock_conn *c = &v->conns[i];
		if (c->state == CONN_FREE) {
			memset(c, 0, sizeof(*c));
			c->fd = -1;
			v->nconns++;
			return c;
		}
	}
	return NULL;
}

static void conn_free(struct virtio_vsock *v, struct vsock_conn *c)
{
	if (c->fd >= 0)
		close(c->fd);
	free(c->buf);
	memset(c, 0, sizeof(*c));
	c->fd = -1;
	v->nconns--;
}

/* The host side is gone or the guest broke the protocol: close the host
 * socket; the guest gets an OP_RST if it knows the connection. */
static void conn_reset(struct virtio_vsock *v, struct vsock_conn *c)
{
	if (c->state == CONN_LINE || c->state == CONN_REQUEST) {
		conn_free(v, c);
		return;
	}
	if (c->fd >= 0)
		close(c->fd);
	free(c->buf);
	c->fd = -1;
	c->buf = NULL;
	c->deadline = 0;
	c->state = CONN_RST;
}

/* Connections the guest can address: it knows the pair (or may guess it). */
static bool conn_has_ports(const struct vsock_conn *c)
{
	return c->state != CONN_FREE && c->state != CONN_LINE;
}

static struct vsock_conn *conn_find(struct virtio_vsock *v, uint32_t local_port, uint32_t peer_port)
{
	for (unsigned i = 0; i < VIRTIO_VSOCK_MAX_CONNS; i++) {
		struct vsock_conn *c = &v->conns[i];
		if (conn_has_ports(c) && c->local_port == local_port && c->peer_port == peer_port)
			return c;
	}
	return NULL;
}

static bool local_port_used(struct virtio_vsock *v, uint32_t port)
{
	for (unsigned i = 0; i < VIRTIO_VSOCK_MAX_CONNS; i++)
		if (conn_has_ports(&v->conns[i]) && v->conns[i].local_port == port)
			return true;
	return false;
}

/* Host ports of host-initiated connections: [2^30, 2^32 - 2], in turn,
 * skipping ports in use (at most MAX_CONNS, so this ends). */
static uint32_t pick_local_port(struct virtio_vsock *v)
{
	for (;;) {
		uint32_t p = v->next_port;
		v->next_port = p >= UINT32_MAX - 1 ? VIRTIO_VSOCK_LOCAL_PORT_BASE : p + 1;
		if (!local_port_used(v, p))
			return p;
	}
}

/* Drops every connection the guest knew (its side is gone: driver reset or
 * restore); host clients it never heard of keep waiting for it. */
static void drop_guest_conns(struct virtio_vsock *v)
{
	for (unsigned i = 0; i < VIRTIO_VSOCK_MAX_CONNS; i++) {
		struct vsock_conn *c = &v->conns[i];
		if (c->state == CONN_REQUEST_SENT || c->state == CONN_OPEN || c->state == CONN_RST)
			conn_free(v, c);
	}
	v->rst_len = 0;
}

static void queue_rst(struct virtio_vsock *v, const struct virtio_vsock_hdr *h)
{
	/* Never answer an RST (two devices, or a confused driver, would
	 * bounce them forever). process_tx keeps a slot free; if a future
	 * caller does not, the guest times out instead. */
	if (h->op == VIRTIO_VSOCK_OP_RST || v->rst_len == RST_QUEUE)
		return;
	v->rst[(v->rst_head + v->rst_len) % RST_QUEUE] =
		(struct vsock_rst){.src_cid = h->dst_cid, .src_port = h->dst_port, .dst_port = h->src_port};
	v->rst_len++;
}

/* ---- guest -> host ---- */

/* The guest's room for host data: its buf_alloc minus what is in flight. */
static uint32_t peer_credit(const struct vsock_conn *c)
{
	/* A guest claiming to have consumed more than we sent gets nothing:
	 * the subtraction wraps to a huge in_flight. */
	uint32_t in_flight = c->tx_cnt - c->peer_fwd_cnt;
	return in_flight >= c->peer_buf_alloc ? 0 : c->peer_buf_alloc - in_flight;
}


/* Bookkeeping after guest data moved or the guest shut down: half-close
 * the host socket once the guest's data is out, offer credit, finish. */
static void conn_progress(struct virtio_vsock *v, struct vsock_conn *c)
{
	if (c->state != CONN_OPEN)
		return;
	uint32_t queued = c->rx_cnt - c->fwd_cnt;
	if (!queued && (c->guest_shut & VIRTIO_VSOCK_SHUTDOWN_F_SEND) && !c->shut_wr) {
		shutdown(c->fd, SHUT_WR); /* fails only if the peer is gone, which EOF/EPIPE will tell */
		c->shut_wr = true;
	}
	/* The guest's view of our free space: offer more once half is used. */
	uint32_t guest_view_used = c->rx_cnt - c->last_fwd_sent;
	if (!(c->guest_shut & VIRTIO_VSOCK_SHUTDOWN_F_SEND) && c->fwd_cnt != c->last_fwd_sent &&
	    guest_view_used >= VIRTIO_VSOCK_BUF_ALLOC / 2)
		c->send_credit_update = true;
	bool done = (c->guest_shut & VIRTIO_VSOCK_SHUTDOWN_F_SEND) &&
		    (c->host_eof || (c->guest_shut & VIRTIO_VSOCK_SHUTDOWN_F_RECEIVE));
	if (!done)
		return;
	if (!queued) {
		conn_reset(v, c);
		return;
	}
	if (!c->deadline) /* linger: give the host socket a bounded time to take the rest */
		c->deadline = v->now + v->timeout_ms;
}

static void conn_flush(struct virtio_vsock *v, struct vsock_conn *c)
{
	for (;;) {
		uint32_t queued = c->rx_cnt - c->fwd_cnt;
		if (!queued)
			break;
		uint32_t off = c->fwd_cnt % VIRTIO_VSOCK_BUF_ALLOC;
		uint32_t first = min_u32(queued, VIRTIO_VSOCK_BUF_ALLOC - off);
		struct iovec io[2] = {{c->buf + off, first}, {c->buf, queued - first}};
		struct msghdr m = {.msg_iov = io, .msg_iovlen = queued > first ? 2 : 1};
		ssize_t w = sendmsg(c->fd, &m, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				break;
			conn_reset(v, c);
			return;
		}
		c->fwd_cnt += (uint32_t)w;
	}
	conn_progress(v, c);
}

/* An OP_RW payload of `len` bytes (already checked against the chain). */
static void conn_from_guest(struct virtio_vsock *v, struct vsock_conn *c, const struct virtq_chain *ch, uint32_t len)
{
	if (!len)
		return;
	uint32_t queued = c->rx_cnt - c->fwd_cnt;
	if (len > VIRTIO_VSOCK_BUF_ALLOC - queued) {
		conn_reset(v, c); /* the guest ignored the credit we gave it */
		return;
	}
	uint32_t done = 0;
	if (!queued) {
		/* Straight from guest memory to the socket; only what it cannot
		 * take now is copied. With bytes queued, order says: queue. */
		int n = virtq_chain_iov(ch, false, HDR_BYTES, len, v->iov, VIRTQ_MAX_SIZE);
		if (n < 0) {
			conn_reset(v, c);
			return;
		}
		struct msghdr m = {.msg_iov = v->iov, .msg_iovlen = (size_t)n};
		ssize_t w;
		do
			w = sendmsg(c->fd, &m, MSG_DONTWAIT | MSG_NOSIGNAL);
		while (w < 0 && errno == EINTR);
		if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
			conn_reset(v, c);
			return;
		}
		done = w > 0 ? (uint32_t)w : 0;
	}
	if (done < len) {
		if (!c->buf && !(c->buf = malloc(VIRTIO_VSOCK_BUF_ALLOC))) {
			conn_reset(v, c);
			return;
		}
		uint32_t pos = c->rx_cnt + done;
		uint64_t src = HDR_BYTES + done;
		for (uint32_t left = len - done; left;) {
			uint32_t off = pos % VIRTIO_VSOCK_BUF_ALLOC;
			uint32_t k = min_u32(left, VIRTIO_VSOCK_BUF_ALLOC - off);
			virtq_chain_read(ch, src, c->buf + off, k);
			pos += k;
			src += k;
			left -= k;
		}
	}
	c->rx_cnt += len;
	c->fwd_cnt += done;
	conn_progress(v, c);
}

static void conn_established(struct virtio_vsock *v, struct vsock_conn *c)
{
	char line[24];
	int n = snprintf(line, sizeof(line), "OK %u\n", c->local_port);
	/* The client has read nothing from us yet, so its socket has room;
	 * a short write means it is gone. */
	ssize_t w = send(c->fd, line, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL);
	if (w != n) {
		conn_reset(v, c);
		return;
	}
	c->state = CONN_OPEN;
	c->deadline = 0;
	c->host_readable = false;
}

/* A guest connection to host port h->dst_port: "<uds_path>_<port>". */
static void guest_connect(struct virtio_vsock *v, const struct virtio_vsock_hdr *h)
{
	if (v->nconns == VIRTIO_VSOCK_MAX_CONNS) {
		queue_rst(v, h);
		return;
	}
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	/* virtio_vsock_create checked that every suffix fits. */
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s_%u", v->path, h->dst_port);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	/* A non-blocking Unix connect completes at once or fails (EAGAIN
	 * when the listener's backlog is full): no pending state. */
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		if (fd >= 0)
			close(fd);
		queue_rst(v, h);
		return;
	}
	struct vsock_conn *c = conn_alloc(v);
	c->state = CONN_OPEN;
	c->fd = fd;
	c->local_port = h->dst_port;
	c->peer_port = h->src_port;
	c->peer_buf_alloc = h->buf_alloc;
	c->peer_fwd_cnt = h->fwd_cnt;
	c->send_response = true;
}

/* One tx packet. False if the chain was malformed and the device failed. */
static bool handle_tx(struct virtio_vsock *v, const struct virtq_chain *ch)
{
	struct virtio_vsock_hdr h;
	if (ch->read_bytes < HDR_BYTES) {
		virtio_mmio_fail(v->t, "tx packet %u: %llu readable bytes, less than the %u-byte header", ch->head,
				 (unsigned long long)ch->read_bytes, HDR_BYTES);
		return false;
	}
	/* Read once: the guest may rewrite its buffer while we look. */
	virtq_chain_read(ch, 0, &h, sizeof(h));
	if (h.len > VIRTIO_VSOCK_MAX_PKT) {
		virtio_mmio_fail(v->t, "tx packet %u: payload length %u exceeds %u", ch->head, h.len,
				 VIRTIO_VSOCK_MAX_PKT);
		return false;
	}
	if (h.len > ch->read_bytes - HDR_BYTES) {
		virtio_mmio_fail(v->t, "tx packet %u: payload length %u, but %llu bytes follow the header", ch->head,
				 h.len, (unsigned long long)(ch->read_bytes - HDR_BYTES));
		return false;
	}
	/* Well-formed but not for us: a spoofed source, another CID (no
	 * sibling routing), a type we did not offer. Linux answers those with
	 * RST too, so a guest connect fails fast instead of timing out. */
	if (h.src_cid != v->cid || h.dst_cid != VIRTIO_VSOCK_HOST_CID || h.type != VIRTIO_VSOCK_TYPE_STREAM) {
		queue_rst(v, &h);
		return true;
	}
	struct vsock_conn *c = conn_find(v, h.dst_port, h.src_port);
	if (!c) {
		if (h.op == VIRTIO_VSOCK_OP_REQUEST)
			guest_connect(v, &h);
		else
			queue_rst(v, &h);
		return true;
	}
	if (c->state == CONN_REQUEST) { /* we have not told the guest this pair yet */
		queue_rst(v, &h);
		return true;
	}
	if (c->state == CONN_RST) { /* ours is on its way; theirs saves us sending it */
		if (h.op == VIRTIO_VSOCK_OP_RST)
			conn_free(v, c);
		return true;
	}
	c->peer_buf_alloc = h.buf_alloc;
	c->peer_fwd_cnt = h.fwd_cnt;
	/* Ask again only after credit came back: Linux answers a request at
	 * once, with no more room if its reader is slow, and clearing on any
	 * packet would ping-pong requests and updates until it reads. */
	if (peer_credit(c))
		c->credit_requested = false;
	bool open = c->state == CONN_OPEN;
	switch (h.op) {
	case VIRTIO_VSOCK_OP_RST:
		conn_free(v, c);
		break;
	case VIRTIO_VSOCK_OP_RESPONSE:
		if (c->state == CONN_REQUEST_SENT)
			conn_established(v, c);
		else
			conn_reset(v, c);
		break;
	case VIRTIO_VSOCK_OP_CREDIT_UPDATE: /* taken above */
		break;
	case VIRTIO_VSOCK_OP_CREDIT_REQUEST:
		if (open)
			c->send_credit_update = true;
		break;
	case VIRTIO_VSOCK_OP_RW:
		if (open && !(c->guest_shut & VIRTIO_VSOCK_SHUTDOWN_F_SEND))
			conn_from_guest(v, c, ch, h.len);
		else
			conn_reset(v, c);
		break;
	case VIRTIO_VSOCK_OP_SHUTDOWN:
		if (open) {
			c->guest_shut |= h.flags & (VIRTIO_VSOCK_SHUTDOWN_F_RECEIVE | VIRTIO_VSOCK_SHUTDOWN_F_SEND);
			conn_progress(v, c);
		} else {
			conn_reset(v, c);
		}
		break;
	default: /* REQUEST on a live pair, INVALID, unknown */
		conn_reset(v, c);
		break;
	}
	return true;
}

static void process_tx(struct virtio_vsock *v)
{
	for (unsigned n = 0; n < TX_BUDGET; n++) {
		/* A packet may owe an RST with no connection to carry it: take
		 * one only while there is room to remember the answer. The rest
		 * waits in the ring until rx buffers drain the queue. */
		if (v->rst_len == RST_QUEUE)
			return;
		if (virtio_mmio_pop(v->t, VIRTIO_VSOCK_QUEUE_TX, &v->chain) != 1)
			return;
		if (!handle_tx(v, &v->chain))
			return;
		virtio_mmio_push(v->t, VIRTIO_VSOCK_QUEUE_TX, v->chain.head, 0);
	}
	v->again = true;
}

/* ---- host -> guest ---- */

enum rx_kind { RX_NONE, RX_RST, RX_REQUEST, RX_RESPONSE, RX_DATA, RX_EOF, RX_CREDIT_UPDATE, RX_CREDIT_REQUEST };

/* Whether reading the host socket now yields data (1, *avail set), EOF (2),
 * nothing (0: drained) or an error (-1). Asked before an rx buffer is
 * taken, so a popped buffer always carries something. */
static int host_input(struct vsock_conn *c, uint32_t *avail)
{
	int n = 0;
	if (ioctl(c->fd, FIONREAD, &n) == 0 && n > 0) {
		*avail = (uint32_t)n;
		return 1;
	}
	char b;
	ssize_t r = recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
	if (r > 0) {
		*avail = 1;
		return 1;
	}
	if (r == 0)
		return 2;
	if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
		c->host_readable = false;
		return 0;
	}
	return -1;
}

static enum rx_kind conn_rx_kind(struct virtio_vsock *v, struct vsock_conn *c, uint32_t *avail)
{
	switch (c->state) {
	case CONN_RST:
		return RX_RST;
	case CONN_REQUEST:
		/* After a restore, not before the guest dropped its old sockets:
		 * its reset would take the new connection with them. */
		return v->event_pending || v->event_ack_wait ? RX_NONE : RX_REQUEST;
	case CONN_OPEN:
		break;
	default:
		return RX_NONE;
	}
	if (c->send_response)
		return RX_RESPONSE;
	if (c->host_readable && !c->host_eof && !(c->guest_shut & VIRTIO_VSOCK_SHUTDOWN_F_RECEIVE)) {
		if (peer_credit(c)) {
			switch (host_input(c, avail)) {
			case 1:
				return RX_DATA;
			case 2:
				return RX_EOF;
			case -1:
				conn_reset(v, c);
				return RX_RST;
			default:
				break;
			}
		} else if (!c->credit_requested) {
			return RX_CREDIT_REQUEST;
		}
	}
	return c->send_credit_update ? RX_CREDIT_UPDATE : RX_NONE;
}

/* Fills the popped rx chain for connection c; returns the bytes written. */
static uint32_t fill_conn(struct virtio_vsock *v, struct vsock_conn *c, enum rx_kind k, uint32_t avail)
{
	const struct virtq_chain *ch = &v->chain;
	struct virtio_vsock_hdr h = {
		.src_cid = VIRTIO_VSOCK_HOST_CID,
		.dst_cid = v->cid,
		.src_port = c->local_port,
		.dst_port = c->peer_port,
		.type = VIRTIO_VSOCK_TYPE_STREAM,
		.buf_alloc = VIRTIO_VSOCK_BUF_ALLOC,
		.fwd_cnt = c->fwd_cnt,
	};
	bool drop = false;
	switch (k) {
	case RX_RST:
		h.op = VIRTIO_VSOCK_OP_RST;
		drop = true;
		break;
	case RX_REQUEST:
		h.op = VIRTIO_VSOCK_OP_REQUEST;
		c->state = CONN_REQUEST_SENT;
		c->deadline = v->now + v->timeout_ms;
		break;
	case RX_RESPONSE:
		h.op = VIRTIO_VSOCK_OP_RESPONSE;
		c->send_response = false;
		break;
	case RX_DATA: {
		uint64_t space = ch->write_bytes - HDR_BYTES;
		uint32_t want = min_u32(min_u32(avail, peer_credit(c)), VIRTIO_VSOCK_MAX_PKT);
		if (space < want)
			want = (uint32_t)space;
		h.op = VIRTIO_VSOCK_OP_CREDIT_UPDATE; /* what a buffer too small for data carries */
		if (!want)
			break;
		int n = virtq_chain_iov(ch, true, HDR_BYTES, want, v->iov, VIRTQ_MAX_SIZE);
		ssize_t r;
		do
			r = n < 0 ? -1 : readv(c->fd, v->iov, n);
		while (r < 0 && errno == EINTR);
		if (r > 0) {
			h.op = VIRTIO_VSOCK_OP_RW;
			h.len = (uint32_t)r;
			c->tx_cnt += (uint32_t)r;
		} else if (r == 0) {
			goto eof;
		} else if (errno == EAGAIN || errno == EWOULDBLOCK) {
			c->host_readable = false;
		} else {
			h.op = VIRTIO_VSOCK_OP_RST;
			drop = true;
		}
		break;
	}
	case RX_EOF:
	eof:
		/* Only SEND: the host may still read (a half-close), and a RECEIVE
		 * flag would make the guest's writes fail with EPIPE. */
		h.op = VIRTIO_VSOCK_OP_SHUTDOWN;
		h.flags = VIRTIO_VSOCK_SHUTDOWN_F_SEND;
		c->host_eof = true;
		break;
	case RX_CREDIT_UPDATE:
		h.op = VIRTIO_VSOCK_OP_CREDIT_UPDATE;
		break;
	case RX_CREDIT_REQUEST:
		h.op = VIRTIO_VSOCK_OP_CREDIT_REQUEST;
		c->credit_requested = true;
		break;
	case RX_NONE:
		break;
	}
	if (h.op == VIRTIO_VSOCK_OP_RST) {
		h.buf_alloc = 0;
		h.fwd_cnt = 0;
	}
	virtq_chain_write(ch, 0, &h, HDR_BYTES);
	if (drop) {
		conn_free(v, c);
	} else {
		/* Every packet tells the guest our fwd_cnt. */
		c->last_fwd_sent = c->fwd_cnt;
		c->send_credit_update = false;
		if (c->host_eof)
			conn_progress(v, c); /* may finish the connection: its RST goes next */
	}
	return HDR_BYTES + h.len;
}

static uint32_t fill_rst(struct virtio_vsock *v)
{
	struct vsock_rst e = v->rst[v->rst_head];
	v->rst_head = (v->rst_head + 1) % RST_QUEUE;
	v->rst_len--;
	struct virtio_vsock_hdr h = {
		.src_cid = e.src_cid,
		.dst_cid = v->cid,
		.src_port = e.src_port,
		.dst_port = e.dst_port,
		.type = VIRTIO_VSOCK_TYPE_STREAM,
		.op = VIRTIO_VSOCK_OP_RST,
	};
	virtq_chain_write(&v->chain, 0, &h, HDR_BYTES);
	return HDR_BYTES;
}

static void deliver_rx(struct virtio_vsock *v)
{
	for (unsigned budget = 0;; budget++) {
		if (v->rx_starved)
			return;
		if (budget == RX_BUDGET) {
			v->again = true;
			return;
		}
		struct vsock_conn *c = NULL;
		enum rx_kind k = RX_NONE;
		uint32_t avail = 0;
		if (!v->rst_len) {
			for (unsigned i = 0; i < VIRTIO_VSOCK_MAX_CONNS && k == RX_NONE; i++) {
				unsigned idx = (v->rr + i) % VIRTIO_VSOCK_MAX_CONNS;
				if (v->conns[idx].state == CONN_FREE)
					continue;
				k = conn_rx_kind(v, &v->conns[idx], &avail);
				if (k != RX_NONE) {
					c = &v->conns[idx];
					v->rr = idx + 1;
				}
			}
			if (k == RX_NONE)
				return;
		}
		int r = virtio_mmio_pop(v->t, VIRTIO_VSOCK_QUEUE_RX, &v->chain);
		if (r == 0)
			v->rx_starved = true; /* what we picked is still owed; the kick brings us back */
		if (r != 1)
			return;
		if (v->chain.write_bytes < HDR_BYTES) {
			virtio_mmio_fail(v->t, "rx buffer %u: %llu writable bytes, less than the %u-byte header",
					 v->chain.head, (unsigned long long)v->chain.write_bytes, HDR_BYTES);
			return;
		}
		uint32_t used = c ? fill_conn(v, c, k, avail) : fill_rst(v);
		virtio_mmio_push(v->t, VIRTIO_VSOCK_QUEUE_RX, v->chain.head, used);
	}
}

static void deliver_event(struct virtio_vsock *v)
{
	if (virtio_mmio_pop(v->t, VIRTIO_VSOCK_QUEUE_EVENT, &v->chain) != 1)
		return;
	if (v->chain.write_bytes < 4) {
		virtio_mmio_fail(v->t, "event buffer %u: %llu writable bytes, less than the 4-byte event",
				 v->chain.head, (unsigned long long)v->chain.write_bytes);
		return;
	}
	uint32_t id = VIRTIO_VSOCK_EVENT_TRANSPORT_RESET;
	virtq_chain_write(&v->chain, 0, &id, sizeof(id));
	virtio_mmio_push(v->t, VIRTIO_VSOCK_QUEUE_EVENT, v->chain.head, sizeof(id));
	v->event_pending = false;
	/* Linux resets its sockets, then re-posts the buffer and kicks: that
	 * kick is the acknowledgement (bounded, for drivers that never do). */
	v->event_ack_wait = true;
	v->event_ack_deadline = v->now + EVENT_ACK_MS;
}

/* ---- host clients ---- */

/* "CONNECT <port>\n": 1 to 10 digits, at most UINT32_MAX. n counts the newline. */
static bool parse_connect(const char *s, size_t n, uint32_t *port)
{
	static const char pfx[] = "CONNECT ";
	const size_t p = sizeof(pfx) - 1;
	if (n < p + 2 || n - 1 - p > 10 || memcmp(s, pfx, p) != 0 || s[n - 1] != '\n')
		return false;
	uint64_t val = 0;
	for (size_t i = p; i < n - 1; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		val = val * 10 + (uint64_t)(s[i] - '0');
	}
	if (val > UINT32_MAX)
		return false;
	*port = (uint32_t)val;
	return true;
}

/* A CONNECT line we will not serve: say why (best effort), then close. */
static void conn_line_error(struct virtio_vsock *v, struct vsock_conn *c, const char *why)
{
	char line[96];
	int n = snprintf(line, sizeof(line), "ERROR %s\n", why);
	ssize_t w = send(c->fd, line, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL);
	(void)w;
	conn_free(v, c);
}

static void conn_read_line(struct virtio_vsock *v, struct vsock_conn *c)
{
	char *p = c->line + c->line_len;
	size_t room = VIRTIO_VSOCK_LINE_MAX - c->line_len;
	/* Peek, then consume only up to the newline: what follows is already
	 * the client's stream, for the guest. */
	ssize_t n = recv(c->fd, p, room, MSG_PEEK | MSG_DONTWAIT);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		return;
	if (n <= 0) { /* hung up before a whole line */
		conn_free(v, c);
		return;
	}
	char *nl = memchr(p, '\n', (size_t)n);
	size_t take = nl ? (size_t)(nl - p) + 1 : (size_t)n;
	if (recv(c->fd, p, take, MSG_DONTWAIT) != (ssize_t)take) {
		conn_free(v, c);
		return;
	}
	c->line_len = (uint8_t)(c->line_len + take);
	if (!nl) {
		if (c->line_len == VIRTIO_VSOCK_LINE_MAX) /* no newline where one must be */
			conn_line_error(v, c, "CONNECT line longer than 32 bytes");
		return;
	}
	uint32_t port;
	if (!parse_connect(c->line, c->line_len, &port)) {
		conn_line_error(v, c, "malformed CONNECT line: want \"CONNECT <port>\", port 0..4294967295");
		return;
	}
	c->local_port = pick_local_port(v);
	c->peer_port = port;
	c->state = CONN_REQUEST;
	c->deadline = v->now + v->timeout_ms;
}

/* A client whose uid may not own the guest: one line it can read (if it
 * reads before it sees the close), then closed, before any of its bytes
 * are read and before it takes a connection slot, so refused clients can
 * neither reach the guest nor crowd out the ones that may. */
static void refuse(struct virtio_vsock *v, int fd, uid_t uid)
{
	char line[80];
	int n = snprintf(line, sizeof(line), "ERROR vsock socket serves uid %u and root only\n", (unsigned)geteuid());
	ssize_t w = send(fd, line, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL);
	(void)w; /* best effort: the close is the refusal */
	close(fd);
	/* Reported at most once a second: refusals cost a local user nothing,
	 * and the report runs under the device lock. */
	if (!v->refused)
		return;
	if (v->refused_reported && v->now < v->refused_reported + REFUSED_REPORT_MS) {
		v->refused_unreported++;
		return;
	}
	v->refused(v->refused_arg, v->path, (uint32_t)uid, v->refused_unreported);
	v->refused_reported = v->now ? v->now : 1;
	v->refused_unreported = 0;
}

static void accept_clients(struct virtio_vsock *v)
{
	for (unsigned i = 0; i < ACCEPT_BUDGET; i++) {
		int fd = accept4(v->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			/* Out of descriptors or memory: the listener stays readable,
			 * so look away for a moment instead of spinning. */
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
				v->accept_backoff_until = v->now + ACCEPT_BACKOFF_MS;
			return;
		}
		/* geteuid() now, not at creation: `spore --jail-uid` switches
		 * uid after the socket exists. */
		uid_t uid;
		if (!sl_sock_peer_allowed(fd, geteuid(), &uid)) {
			refuse(v, fd, uid);
			continue;
		}
		struct vsock_conn *c = v->nconns < VIRTIO_VSOCK_MAX_CONNS ? conn_alloc(v) : NULL;
		if (!c) {
			close(fd); /* full: an immediate EOF beats a hang */
			continue;
		}
		c->state = CONN_LINE;
		c->fd = fd;
		c->deadline = v->now + v->timeout_ms;
	}
}

/* ---- the loop ---- */

static void expire(struct virtio_vsock *v)
{
	for (unsigned i = 0; i < VIRTIO_VSOCK_MAX_CONNS; i++) {
		struct vsock_conn *c = &v->conns[i];
		if (c->state == CONN_FREE || !c->deadline || v->now < c->deadline)
			continue;
		/* Unanswered request, or linger over: reset (free if the guest
		 * never heard of it). */
		conn_reset(v, c);
	}
	if (v->event_ack_wait && v->now >= v->event_ack_deadline)
		v->event_ack_wait = false;
}

static void vsock_work(struct virtio_vsock *v)
{
	v->again = false;
	if (v->reset_pending || v->restore_pending) {
		drop_guest_conns(v);
		if (v->restore_pending)
			v->event_pending = true;
		v->reset_pending = v->restore_pending = false;
	}
	expire(v);
	if (v->event_pending)
		deliver_event(v);
	process_tx(v);
	deliver_rx(v);
}

static unsigned build_poll(struct virtio_vsock *v, int *timeout)
{
	unsigned n = 0;
	v->pfd[n] = (struct pollfd){.fd = v->wake_fd, .events = POLLIN};
	v->pconn[n++] = POLL_WAKE;
	*timeout = -1;
	if (v->paused)
		return n; /* no deadlines either: they resume with the device */
	uint64_t next = UINT64_MAX;
	if (v->now >= v->accept_backoff_until) {
		v->pfd[n] = (struct pollfd){.fd = v->listen_fd, .events = POLLIN};
		v->pconn[n++] = POLL_LISTEN;
	} else {
		next = v->accept_backoff_until;
	}
	for (unsigned i = 0; i < VIRTIO_VSOCK_MAX_CONNS; i++) {
		struct vsock_conn *c = &v->conns[i];
		short ev = 0;
		if (c->state == CONN_LINE) {
			ev = POLLIN;
		} else if (c->state == CONN_OPEN) {
			/* Input is sticky (host_readable) until a read finds none,
			 * so a socket we cannot drain yet is not polled at all. */
			if (!c->host_readable && !c->host_eof && !(c->guest_shut & VIRTIO_VSOCK_SHUTDOWN_F_RECEIVE))
				ev |= POLLIN;
			if (c->rx_cnt != c->fwd_cnt)
				ev |= POLLOUT;
		}
		if (c->state != CONN_FREE && c->deadline && c->deadline < next)
			next = c->deadline;
		if (ev) {
			v->pfd[n] = (struct pollfd){.fd = c->fd, .events = ev};
			v->pconn[n++] = (int)i;
		}
	}
	if (v->event_ack_wait && v->event_ack_deadline < next)
		next = v->event_ack_deadline;
	if (v->again)
		*timeout = 0;
	else if (next != UINT64_MAX)
		*timeout = next <= v->now ? 0 : (int)(next - v->now > INT_MAX ? INT_MAX : next - v->now);
	return n;
}

static void handle_poll(struct virtio_vsock *v, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		short re = v->pfd[i].revents;
		if (!re)
			continue;
		if (v->pconn[i] == POLL_WAKE) {
			uint64_t cnt;
			ssize_t r = read(v->wake_fd, &cnt, sizeof(cnt));
			(void)r;
			continue;
		}
		if (v->paused) /* paused while we slept: level-triggered, it keeps */
			continue;
		if (v->pconn[i] == POLL_LISTEN) {
			accept_clients(v);
			continue;
		}
		struct vsock_conn *c = &v->conns[v->pconn[i]];
		if (c->state == CONN_LINE) {
			conn_read_line(v, c);
		} else if (c->state == CONN_OPEN) {
			if ((v->pfd[i].events & POLLIN) && (re & (POLLIN | POLLHUP | POLLERR)))
				c->host_readable = true;
			if (c->rx_cnt != c->fwd_cnt && (re & (POLLOUT | POLLHUP | POLLERR)))
				conn_flush(v, c);
		}
	}
}

/* One round: queue work, wait for host sockets, handle them. The next
 * round's work delivers what this one made ready. */
static void vsock_round(struct virtio_vsock *v, int max_wait_ms)
{
	int timeout;
	virtio_mmio_lock(v->t);
	v->now = now_ms();
	if (!v->paused && v->armed)
		vsock_work(v);
	unsigned n = build_poll(v, &timeout);
	virtio_mmio_unlock(v->t);
	if (max_wait_ms >= 0 && (timeout < 0 || timeout > max_wait_ms))
		timeout = max_wait_ms;
	int r = poll(v->pfd, n, timeout);
	virtio_mmio_lock(v->t);
	v->now = now_ms();
	if (r > 0)
		handle_poll(v, n);
	virtio_mmio_unlock(v->t);
}

static void *vsock_thread(void *arg)
{
	struct virtio_vsock *v = arg;
	/* Named by itself (prctl): naming another thread goes through /proc,
	 * which a jailed VMM does not have. */
	pthread_setname_np(pthread_self(), "vsock-io");
	pthread_mutex_lock(&v->gate_lock);
	while (v->gate == GATE_WAIT)
		pthread_cond_wait(&v->gate_cond, &v->gate_lock);
	bool go = v->gate == GATE_GO;
	pthread_mutex_unlock(&v->gate_lock);
	while (go) {
		virtio_mmio_lock(v->t);
		bool stop = v->stop;
		virtio_mmio_unlock(v->t);
		if (stop)
			break;
		vsock_round(v, -1);
	}
	return NULL;
}

void virtio_vsock_poll(struct virtio_vsock *v, int timeout_ms)
{
	if (!v->threaded)
		vsock_round(v, timeout_ms);
}

/* ---- transport callbacks (vCPU threads, transport lock held) ---- */

static void vsock_notify(struct virtio_mmio *t, void *dev, unsigned queue)
{
	struct virtio_vsock *v = dev;
	(void)t;
	v->armed = true;
	if (queue == VIRTIO_VSOCK_QUEUE_RX)
		v->rx_starved = false;
	else if (queue == VIRTIO_VSOCK_QUEUE_EVENT)
		v->event_ack_wait = false;
	wake(v);
}

static void vsock_reset(void *dev)
{
	struct virtio_vsock *v = dev;
	/* The driver's sockets are gone with it; the I/O thread drops ours
	 * before it looks at the (new) rings again. */
	v->reset_pending = true;
	v->armed = true;
	v->restore_pending = v->event_pending = v->event_ack_wait = false;
	v->rx_starved = false;
	wake(v);
}

static void vsock_config_read(void *dev, uint32_t off, uint8_t *data, unsigned size)
{
	struct virtio_vsock *v = dev;
	memcpy(data, v->config + off, size); /* bounds checked by the transport */
}

static const struct virtio_dev_ops vsock_ops = {
	.name = "virtio-vsock",
	.device_id = VIRTIO_ID_VSOCK,
	.features = 1ull << VIRTIO_VSOCK_F_STREAM,
	.config_size = CONFIG_BYTES,
	.nqueues = 3,
	.queue_max = VIRTIO_VSOCK_QUEUE_SIZE,
	.config_read = vsock_config_read,
	.notify = vsock_notify,
	.reset = vsock_reset,
};

/* ---- lifecycle ---- */

static int listen_on(struct virtio_vsock *v, const char *path, sl_error_t *err)
{
	struct stat st;
	if (lstat(path, &st) == 0)
		return sl_error_set(err, SL_E_INVALID,
				    "virtio-vsock: %s already exists (another VM's socket, or stale?)", path);
	if (errno != ENOENT)
		return sl_error_sys(err, "virtio-vsock: stat %s", path);
	/* The socket's mode keeps others from connecting; its directories must
	 * keep them from putting their own socket in its place. */
	if (sl_sock_dir_check(path, "virtio-vsock: socket", err) < 0)
		return -1;
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	memcpy(sa.sun_path, path, strlen(path) + 1);
	v->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (v->listen_fd < 0)
		return sl_error_sys(err, "virtio-vsock: socket");
	if (bind(v->listen_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		if (errno == EADDRINUSE)
			return sl_error_set(err, SL_E_INVALID, "virtio-vsock: %s already exists", path);
		return sl_error_sys(err, "virtio-vsock: bind %s", path);
	}
	/* Whoever reaches this socket owns the guest (docs/agent-protocol.md).
	 * Nobody can connect before listen(), so tightening here is race-free. */
	if (chmod(path, 0600) < 0 || stat(path, &st) < 0) {
		sl_error_sys(err, "virtio-vsock: chmod %s", path);
		unlink(path);
		return -1;
	}
	v->sock_dev = st.st_dev;
	v->sock_ino = st.st_ino;
	if (listen(v->listen_fd, 128) < 0) {
		sl_error_sys(err, "virtio-vsock: listen %s", path);
		unlink(path);
		return -1;
	}
	return 0;
}

/* Unlinks our socket, not whatever may have replaced it since. */
static void unlink_ours(struct virtio_vsock *v)
{
	struct stat st;
	if (v->path[0] && lstat(v->path, &st) == 0 && S_ISSOCK(st.st_mode) && st.st_dev == v->sock_dev &&
	    st.st_ino == v->sock_ino)
		unlink(v->path);
}

static void release(struct virtio_vsock *v)
{
	for (unsigned i = 0; i < VIRTIO_VSOCK_MAX_CONNS; i++)
		if (v->conns[i].state != CONN_FREE)
			conn_free(v, &v->conns[i]);
	if (v->listen_fd >= 0)
		close(v->listen_fd);
	if (v->wake_fd >= 0)
		close(v->wake_fd);
	pthread_cond_destroy(&v->gate_cond);
	pthread_mutex_destroy(&v->gate_lock);
	free(v);
}

static void open_gate(struct virtio_vsock *v, enum start_gate g)
{
	pthread_mutex_lock(&v->gate_lock);
	v->gate = g;
	pthread_cond_broadcast(&v->gate_cond);
	pthread_mutex_unlock(&v->gate_lock);
}

int virtio_vsock_create(struct vmm_vm *vm, uint64_t base, uint32_t irq_gsi, const struct virtio_vsock_opts *o,
			struct virtio_vsock **out, sl_error_t *err)
{
	if (!o || !o->uds_path || !o->uds_path[0])
		return sl_error_set(err, SL_E_INVALID, "virtio-vsock: no Unix socket path");
	if (o->guest_cid < 3 || o->guest_cid > 0xfffffffeull)
		return sl_error_set(err, SL_E_INVALID,
				    "virtio-vsock: guest CID %llu is reserved or out of range (3 .. %u)",
				    (unsigned long long)o->guest_cid, 0xfffffffeu);
	/* Room for "<path>_4294967295" too: every guest-initiated connection
	 * must be able to name its socket. */
	size_t len = strlen(o->uds_path);
	size_t max = UDS_PATH_MAX;
	if (len > max)
		return sl_error_set(err, SL_E_INVALID,
				    "virtio-vsock: socket path is %zu bytes, at most %zu fit with a "
				    "\"_<port>\" suffix: %s",
				    len, max, o->uds_path);

	struct virtio_vsock *v = calloc(1, sizeof(*v));
	if (!v)
		return sl_error_set(err, SL_E_NOMEM, "virtio-vsock");
	v->listen_fd = v->wake_fd = -1;
	for (unsigned i = 0; i < VIRTIO_VSOCK_MAX_CONNS; i++)
		v->conns[i].fd = -1;
	pthread_mutex_init(&v->gate_lock, NULL);
	pthread_cond_init(&v->gate_cond, NULL);
	v->cid = o->guest_cid;
	memcpy(v->config, &v->cid, CONFIG_BYTES); /* le64 guest_cid */
	v->timeout_ms = o->timeout_ms ? o->timeout_ms : VIRTIO_VSOCK_TIMEOUT_MS;
	v->next_port = VIRTIO_VSOCK_LOCAL_PORT_BASE;
	v->threaded = !o->no_thread;
	v->refused = o->refused;
	v->refused_arg = o->refused_arg;

	v->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (v->wake_fd < 0) {
		sl_error_sys(err, "virtio-vsock: eventfd");
		release(v);
		return -1;
	}
	if (listen_on(v, o->uds_path, err) < 0) {
		release(v);
		return -1;
	}
	memcpy(v->path, o->uds_path, len + 1);

	if (virtio_mmio_register(vm, base, irq_gsi, &vsock_ops, v, &v->t, err) < 0) {
		unlink_ours(v);
		release(v);
		return -1;
	}
	*out = v;
	return 0;
}

int virtio_vsock_start(struct virtio_vsock *v, sl_error_t *err)
{
	if (!v->threaded || v->thread_started)
		return 0;
	/* Started with the VM, not with the device: a VMM that jails itself
	 * between the two (vmm/cli/jail*.c) has every thread of its own start
	 * inside the jail's mount namespace. Host connections made before wait
	 * in the socket's backlog. */
	sigset_t all, old;
	sigfillset(&all);
	/* SIGSYS stays open: libpsx reaches every thread with it when the jail
	 * drops capabilities. */
	sigdelset(&all, SIGSYS);
	pthread_sigmask(SIG_BLOCK, &all, &old); /* process signals belong to other threads */
	int rc = pthread_create(&v->thread, NULL, vsock_thread, v);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0)
		return sl_error_errno(err, rc, "virtio-vsock: start the I/O thread");
	v->thread_started = true;
	open_gate(v, GATE_GO);
	return 0;
}

struct virtio_mmio *virtio_vsock_transport(struct virtio_vsock *v)
{
	return v->t;
}

uint64_t virtio_vsock_cid(struct virtio_vsock *v)
{
	return v->cid;
}

void virtio_vsock_pause(struct virtio_vsock *v)
{
	/* The thread touches guest memory only with this lock held and checks
	 * the flag each time it takes it: after this, it is out and stays out. */
	virtio_mmio_lock(v->t);
	v->paused = true;
	virtio_mmio_unlock(v->t);
}

void virtio_vsock_resume(struct virtio_vsock *v)
{
	virtio_mmio_lock(v->t);
	v->paused = false;
	virtio_mmio_unlock(v->t);
	wake(v);
}

int virtio_vsock_restored(struct virtio_vsock *v, sl_error_t *err)
{
	(void)err;
	/* A driver that was not running at capture has no sockets to drop,
	 * and no event buffers to take the news. */
	bool live = virtio_mmio_status(v->t) & VIRTIO_STATUS_DRIVER_OK;
	virtio_mmio_lock(v->t);
	v->restore_pending = live;
	v->reset_pending = !live;
	v->armed = true;
	v->rx_starved = false;
	virtio_mmio_unlock(v->t);
	wake(v);
	return 0;
}

void virtio_vsock_free(struct virtio_vsock *v)
{
	if (!v)
		return;
	if (v->thread_started) {
		virtio_mmio_lock(v->t);
		v->stop = true;
		virtio_mmio_unlock(v->t);
		wake(v);
		pthread_join(v->thread, NULL);
	}
	unlink_ours(v);
	virtio_mmio_free(v->t);
	release(v);
}
