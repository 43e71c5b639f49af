/* Test guest agent: a ring-3 polled virtio-vsock driver and the agent protocol (docs/agent-protocol.md) with built-in commands. */
#include <stddef.h>
#include <stdint.h>

#include "agent.h"
#include "layout.h"

/*
 * Everything here runs in ring 3 on CPU 0, called from the main loop: the
 * page tables are user-accessible identity maps, so the device's MMIO page,
 * the IOAPIC and the rings are plain memory accesses (ring-0 code would be
 * emulated instruction by instruction on PVM hosts). The device interrupt
 * only wakes the halted CPU (TG_VEC_VIRTIO); all work happens here.
 *
 * There is no process model: the commands are built in (echo, exit, sleep,
 * cat, generation, env, hostname) and "processes" are records that end on
 * a timer (sleep), on STDIN_EOF (cat) or on SIGNAL. Contract and limits:
 * docs/testguest.md, "The agent".
 */

void *memset(void *d, int c, size_t n);
void *memcpy(void *d, const void *s, size_t n);

/* ---- limits ---- */
#define AGENT_PORT 1024u
#define NCONN 4u                      /* connections at once; more get RST */
#define NPROC 16u                     /* live sleep/cat processes, all connections */
#define MAX_FRAME (1u << 20)          /* protocol payload limit */
#define IN_CAP ((1u << 20) + (64u << 10)) /* whole frames are decoded in place */
#define OUT_CAP (192u << 10)
/* A frame is handled only with this much output room: the most one frame
 * can produce (64 KiB of echo/env output, the stored environment, an ERROR
 * and an EXIT, with frame headers), so handlers never run out of room. */
#define OUT_RESERVE (100u << 10)
#define ARGS_MAX (64u << 10)   /* argv + env bytes of an EXEC (E2BIG above) */
#define GENENV_MAX (16u << 10) /* stored GENERATION environment */
#define CHUNK (64u << 10)      /* STDOUT frame data */

/* ---- virtio-mmio and virtio-vsock ---- */
#define R_MAGIC 0x000
#define R_VERSION 0x004
#define R_DEVICE_ID 0x008
#define R_DEV_FEATURES 0x010
#define R_DEV_FEATURES_SEL 0x014
#define R_DRV_FEATURES 0x020
#define R_DRV_FEATURES_SEL 0x024
#define R_QUEUE_SEL 0x030
#define R_QUEUE_NUM_MAX 0x034
#define R_QUEUE_NUM 0x038
#define R_QUEUE_READY 0x044
#define R_QUEUE_NOTIFY 0x050
#define R_INT_STATUS 0x060
#define R_INT_ACK 0x064
#define R_STATUS 0x070
#define R_DESC_LO 0x080
#define R_DESC_HI 0x084
#define R_AVAIL_LO 0x090
#define R_AVAIL_HI 0x094
#define R_USED_LO 0x0a0
#define R_USED_HI 0x0a4
#define R_CONFIG 0x100

#define ST_ACK 1u
#define ST_DRIVER 2u
#define ST_DRIVER_OK 4u
#define ST_FEATURES_OK 8u

#define Q_RX 0u
#define Q_TX 1u
#define Q_EV 2u
#define RX_N 64u
#define TX_N 64u
#define EV_N 4u
#define PKT_BUF 4096u
#define HDR 44u
#define PKT_DATA (PKT_BUF - HDR)

#define HOST_CID 2u
#define TYPE_STREAM 1u
#define OP_REQUEST 1u
#define OP_RESPONSE 2u
#define OP_RST 3u
#define OP_SHUTDOWN 4u
#define OP_RW 5u
#define OP_CREDIT_UPDATE 6u
#define OP_CREDIT_REQUEST 7u
#define SHUT_RECEIVE 1u
#define SHUT_SEND 2u

#define IOAPIC 0xfec00000u

struct vhdr {
	uint64_t src_cid, dst_cid;
	uint32_t src_port, dst_port, len;
	uint16_t type, op;
	uint32_t flags, buf_alloc, fwd_cnt;
} __attribute__((packed));
_Static_assert(sizeof(struct vhdr) == HDR, "virtio-vsock header is 44 bytes");

struct vdesc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags, next;
};

struct vq {
	volatile struct vdesc *desc;
	volatile uint16_t *avail; /* flags, idx, ring[num] */
	volatile uint16_t *used;  /* flags, idx, then {u32 id, u32 len}[num] */
	uint16_t num, avail_idx, used_seen;
	uint8_t kick;             /* buffers were made available since the last notify */
};

/* ---- agent protocol ---- */
enum {
	M_HELLO = 0x01, M_READY = 0x02, M_ERROR = 0x03, M_EXEC = 0x10, M_STDIN = 0x11, M_STDIN_EOF = 0x12,
	M_STDOUT = 0x13, M_STDERR = 0x14, M_SIGNAL = 0x15, M_EXIT = 0x16, M_STARTED = 0x17, M_GENERATION = 0x20,
	M_SHUTDOWN = 0x21,
};
enum {
	E_PROTOCOL = 1, E_VERSION = 2, E_TOO_LARGE = 3, E_STATE = 4, E_EXEC = 5, E_NO_PROCESS = 6, E_BUSY = 7,
	E_GENERATION = 8, E_INTERNAL = 9,
};

static const char *type_name(uint32_t t)
{
	switch (t) {
	case M_HELLO: return "HELLO";
	case M_READY: return "READY";
	case M_ERROR: return "ERROR";
	case M_EXEC: return "EXEC";
	case M_STDIN: return "STDIN";
	case M_STDIN_EOF: return "STDIN_EOF";
	case M_STDOUT: return "STDOUT";
	case M_STDERR: return "STDERR";
	case M_SIGNAL: return "SIGNAL";
	case M_EXIT: return "EXIT";
	case M_STARTED: return "STARTED";
	case M_GENERATION: return "GENERATION";
	case M_SHUTDOWN: return "SHUTDOWN";
	}
	return NULL;
}

/* ---- state ---- */
enum { C_FREE, C_OPEN, C_SHUT /* our SHUTDOWN sent, the device's RST ends it */ };

struct conn {
	uint8_t state;
	uint8_t need_response, need_credit_update, credit_req_sent;
	uint8_t peer_eof; /* the host will send no more */
	uint8_t closing;  /* no more input: flush the output, then SHUTDOWN */
	uint8_t hello;
	uint32_t peer_port;
	uint32_t peer_buf_alloc, peer_fwd_cnt, tx_cnt; /* host credit */
	uint32_t fwd_cnt, last_fwd_sent;               /* ours: bytes consumed from in[] */
	uint8_t *in;
	uint32_t in_len;
	uint8_t *out; /* ring */
	uint32_t out_head, out_len;
	uint32_t stdin_off; /* bytes of the STDIN frame at in[] already given to cat */
};

enum { P_SLEEP = 1, P_CAT };
struct proc {
	uint8_t kind; /* 0: free */
	uint8_t conn;
	uint8_t stdin_open;
	uint32_t id;
	uint64_t deadline;
};

static struct {
	volatile uint8_t *mmio;
	uint64_t cid;
	struct vq rx, tx, ev;
	uint8_t *rxbuf, *txbuf;
	volatile uint32_t *evbuf;
	uint16_t tx_free[TX_N];
	uint32_t ntx_free;
	uint64_t virq_seen;
	struct conn c[NCONN];
	struct proc p[NPROC];
	/* RSTs owed for packets that match no connection (dropped when full:
	 * the host side then just times out). */
	struct vhdr rst[8];
	uint32_t nrst;
	char hostname[65];
	uint8_t genenv[GENENV_MAX]; /* a strlist payload: u32 count, then strs */
	uint32_t genenv_len;
	uint64_t prng;
} ag;

/* ---- small helpers (no libc) ---- */
static void move_down(uint8_t *d, const uint8_t *s, uint32_t n)
{
	/* d < s: a forward copy is safe for overlapping ranges. */
	for (uint32_t i = 0; i < n; i++)
		d[i] = s[i];
}

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint32_t slen(const char *s)
{
	uint32_t n = 0;
	while (s[n])
		n++;
	return n;
}

static int mem_eq(const void *a, const void *b, uint32_t n)
{
	const uint8_t *x = a, *y = b;
	for (uint32_t i = 0; i < n; i++)
		if (x[i] != y[i])
			return 0;
	return 1;
}

static int word_is(const uint8_t *s, uint32_t n, const char *w)
{
	return n == slen(w) && mem_eq(s, w, n);
}

static uint32_t min32(uint32_t a, uint32_t b)
{
	return a < b ? a : b;
}

/* A bounded message for ERROR frames and the log. */
struct sb {
	char b[1024];
	uint32_t n;
};
static void sb_sn(struct sb *s, const void *p, uint32_t n)
{
	const char *c = p;
	for (uint32_t i = 0; i < n && s->n < sizeof(s->b); i++)
		s->b[s->n++] = c[i] ? c[i] : '?';
}
static void sb_s(struct sb *s, const char *p)
{
	sb_sn(s, p, slen(p));
}
static void sb_u(struct sb *s, uint64_t v)
{
	char t[20];
	int k = 0;
	do {
		t[k++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	while (k)
		sb_sn(s, &t[--k], 1);
}

/* ---- MMIO ---- */
static inline uint32_t mr(uint32_t off)
{
	return *(volatile uint32_t *)(ag.mmio + off);
}
static inline void mw(uint32_t off, uint32_t v)
{
	*(volatile uint32_t *)(ag.mmio + off) = v;
}
static inline void barrier(void)
{
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
}

/* ---- virtqueues ---- */
static void vq_setup(struct vq *q, unsigned idx, uint16_t num, uint8_t *mem)
{
	q->num = num;
	q->desc = (volatile struct vdesc *)mem;
	q->avail = (volatile uint16_t *)(mem + 4096);
	q->used = (volatile uint16_t *)(mem + 8192);
	mw(R_QUEUE_SEL, idx);
	mw(R_QUEUE_NUM, num);
	uint64_t d = (uint64_t)(uintptr_t)q->desc, a = (uint64_t)(uintptr_t)q->avail,
		 u = (uint64_t)(uintptr_t)q->used;
	mw(R_DESC_LO, (uint32_t)d);
	mw(R_DESC_HI, (uint32_t)(d >> 32));
	mw(R_AVAIL_LO, (uint32_t)a);
	mw(R_AVAIL_HI, (uint32_t)(a >> 32));
	mw(R_USED_LO, (uint32_t)u);
	mw(R_USED_HI, (uint32_t)(u >> 32));
	mw(R_QUEUE_READY, 1);
}

static void vq_post(struct vq *q, uint16_t desc)
{
	q->avail[2 + q->avail_idx % q->num] = desc;
	barrier();
	q->avail_idx++;
	q->avail[1] = q->avail_idx;
	q->kick = 1;
}

/* Next used element: 1 with *id, *len; 0 if none. */
static int vq_used(struct vq *q, uint32_t *id, uint32_t *len)
{
	if (q->used[1] == q->used_seen)
		return 0;
	barrier();
	volatile uint32_t *e = (volatile uint32_t *)(q->used + 2) + 2u * (q->used_seen % q->num);
	*id = e[0];
	*len = e[1];
	q->used_seen++;
	return 1;
}

static void vq_kick(struct vq *q, unsigned idx)
{
	if (!q->kick)
		return;
	q->kick = 0;
	barrier();
	mw(R_QUEUE_NOTIFY, idx);
}

/* ---- packets to the device ---- */
static volatile uint8_t *tx_take(void)
{
	return ag.ntx_free ? ag.txbuf + (uint32_t)ag.tx_free[ag.ntx_free - 1] * PKT_BUF : NULL;
}

static void tx_send(const struct vhdr *h, const uint8_t *a, uint32_t an, const uint8_t *b, uint32_t bn)
{
	uint16_t d = ag.tx_free[--ag.ntx_free];
	uint8_t *buf = ag.txbuf + (uint32_t)d * PKT_BUF;
	memcpy(buf, h, HDR);
	if (an)
		memcpy(buf + HDR, a, an);
	if (bn)
		memcpy(buf + HDR + an, b, bn);
	ag.tx.desc[d].addr = (uint64_t)(uintptr_t)buf;
	ag.tx.desc[d].len = HDR + an + bn;
	ag.tx.desc[d].flags = 0;
	vq_post(&ag.tx, d);
}

static void conn_hdr(struct conn *c, struct vhdr *h, uint16_t op)
{
	*h = (struct vhdr){.src_cid = ag.cid, .dst_cid = HOST_CID, .src_port = AGENT_PORT, .dst_port = c->peer_port,
			   .type = TYPE_STREAM, .op = op, .buf_alloc = IN_CAP, .fwd_cnt = c->fwd_cnt};
	/* Every packet tells the host our fwd_cnt. */
	c->last_fwd_sent = c->fwd_cnt;
	c->need_credit_update = 0;
}

/* The host's room for our data: its buf_alloc minus what is in flight. */
static uint32_t peer_credit(const struct conn *c)
{
	uint32_t in_flight = c->tx_cnt - c->peer_fwd_cnt;
	return in_flight >= c->peer_buf_alloc ? 0 : c->peer_buf_alloc - in_flight;
}

static void owe_rst(const struct vhdr *in)
{
	if (in->op == OP_RST || ag.nrst == sizeof(ag.rst) / sizeof(ag.rst[0]))
		return;
	ag.rst[ag.nrst++] = (struct vhdr){.src_cid = ag.cid, .dst_cid = in->src_cid, .src_port = in->dst_port,
					  .dst_port = in->src_port, .type = TYPE_STREAM, .op = OP_RST};
}

/* ---- output (agent frames into a connection's ring) ---- */
static uint32_t out_free(const struct conn *c)
{
	return OUT_CAP - c->out_len;
}

static void out_put(struct conn *c, const void *p, uint32_t n)
{
	const uint8_t *s = p;
	for (uint32_t i = 0; i < n; i++)
		c->out[(c->out_head + c->out_len + i) % OUT_CAP] = s[i];
	c->out_len += n;
}

static void out_u32(struct conn *c, uint32_t v)
{
	uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
	out_put(c, b, 4);
}

static void out_hdr(struct conn *c, uint8_t type, uint32_t len)
{
	out_u32(c, len);
	uint8_t t[4] = {type, 0, 0, 0};
	out_put(c, t, 4);
}

static void send_u32s(struct conn *c, uint8_t type, uint32_t n, uint32_t a, uint32_t b, uint32_t d)
{
	out_hdr(c, type, 4 * n);
	uint32_t v[3] = {a, b, d};
	for (uint32_t i = 0; i < n; i++)
		out_u32(c, v[i]);
}

static void send_error(struct conn *c, uint32_t code, uint32_t id, int fatal, const struct sb *m)
{
	out_hdr(c, M_ERROR, 16 + m->n);
	out_u32(c, code);
	out_u32(c, id);
	out_u32(c, fatal ? 1 : 0);
	out_u32(c, m->n);
	out_put(c, m->b, m->n);
	if (fatal)
		c->closing = 1;
}

static void fatal(struct conn *c, uint32_t code, const char *a, const char *b)
{
	struct sb m = {.n = 0};
	sb_s(&m, a);
	sb_s(&m, b);
	send_error(c, code, 0, 1, &m);
}

/* Stream output of process id as STDOUT (stream 1) or STDERR frames. */
static void send_data(struct conn *c, uint32_t id, int stream, const void *p, uint32_t n)
{
	const uint8_t *d = p;
	while (n) {
		uint32_t k = min32(n, CHUNK);
		out_hdr(c, stream == 1 ? M_STDOUT : M_STDERR, 8 + k);
		out_u32(c, id);
		out_u32(c, k);
		out_put(c, d, k);
		d += k;
		n -= k;
	}
}

/* A built-in runs: STARTED before any of its output (no guest pids here). */
static void send_started(struct conn *c, uint32_t id)
{
	send_u32s(c, M_STARTED, 2, id, 0, 0);
}

static void send_exit(struct conn *c, uint32_t id, uint32_t kind, uint32_t value)
{
	send_u32s(c, M_EXIT, 3, id, kind, value);
}

/* ---- strict decoding of host frames (in place) ---- */
struct rd {
	const uint8_t *p, *end;
	const char *what;
};

static int rd_u32(struct rd *r, uint32_t *v)
{
	if (r->end - r->p < 4) {
		r->what = "truncated";
		return 0;
	}
	*v = le32(r->p);
	r->p += 4;
	return 1;
}

static int rd_bytes(struct rd *r, const uint8_t **d, uint32_t *n, uint32_t max)
{
	if (!rd_u32(r, n))
		return 0;
	if (*n > max) {
		r->what = "field too long";
		return 0;
	}
	if ((uint64_t)(r->end - r->p) < *n) {
		r->what = "truncated";
		return 0;
	}
	*d = r->p;
	r->p += *n;
	return 1;
}

static int rd_str(struct rd *r, const uint8_t **d, uint32_t *n, uint32_t max)
{
	if (!rd_bytes(r, d, n, max))
		return 0;
	for (uint32_t i = 0; i < *n; i++)
		if (!(*d)[i]) {
			r->what = "NUL inside a string";
			return 0;
		}
	return 1;
}

/* A decoded string list: where its first string starts, how many. */
struct slist {
	const uint8_t *p;
	uint32_t n, bytes; /* bytes: the strings' lengths summed */
};

static int rd_strlist(struct rd *r, struct slist *l, uint32_t min, int env)
{
	if (!rd_u32(r, &l->n))
		return 0;
	if (l->n < min || l->n > 4096) {
		r->what = "bad list length";
		return 0;
	}
	if ((uint64_t)(r->end - r->p) / 4 < l->n) {
		r->what = "truncated";
		return 0;
	}
	l->p = r->p;
	l->bytes = 0;
	for (uint32_t i = 0; i < l->n; i++) {
		const uint8_t *s;
		uint32_t n;
		if (!rd_str(r, &s, &n, MAX_FRAME))
			return 0;
		if (env) {
			uint32_t k = 0;
			while (k < n && s[k] != '=')
				k++;
			if (k == 0 || k == n) {
				r->what = "env entry is not KEY=VALUE";
				return 0;
			}
		}
		l->bytes += n;
	}
	return 1;
}

/* Iterates a list already checked by rd_strlist. */
static const uint8_t *sl_next(const uint8_t **it, uint32_t *n)
{
	*n = le32(*it);
	const uint8_t *s = *it + 4;
	*it = s + *n;
	return s;
}

struct msg {
	uint32_t type;
	uint32_t u[4]; /* the leading u32 fields, in wire order */
	const uint8_t *data;
	uint32_t data_len;
	struct slist argv, env;
	const uint8_t *entropy;
};

/* Decodes a payload by the same rules as agent_proto.c; NULL or what is
 * wrong with it. */
static const char *decode(uint32_t type, const uint8_t *p, uint32_t len, struct msg *m)
{
	struct rd r = {.p = p, .end = p + len, .what = "truncated"};
	int ok = 1;
	memset(m, 0, sizeof(*m));
	m->type = type;
	switch (type) {
	case M_HELLO:
	case M_READY:
		ok = rd_u32(&r, &m->u[0]);
		if (ok && type == M_READY && m->u[0] > 1)
			return "unknown READY reason";
		break;
	case M_ERROR:
		ok = rd_u32(&r, &m->u[0]) && rd_u32(&r, &m->u[1]) && rd_u32(&r, &m->u[2]) &&
		     rd_str(&r, &m->data, &m->data_len, 1024);
		if (ok && m->u[0] == 0)
			return "ERROR code 0";
		if (ok && (m->u[2] & ~1u))
			return "unknown ERROR flags";
		break;
	case M_EXEC:
		/* id, flags, uid, gid, cwd, argv, env */
		ok = rd_u32(&r, &m->u[0]) && rd_u32(&r, &m->u[1]) && rd_u32(&r, &m->u[2]) && rd_u32(&r, &m->u[3]) &&
		     rd_str(&r, &m->data, &m->data_len, 4096) && rd_strlist(&r, &m->argv, 1, 0) &&
		     rd_strlist(&r, &m->env, 0, 1);
		if (!ok)
			break;
		if (m->u[1] & ~1u)
			return "unknown EXEC flags";
		if (m->data_len && m->data[0] != '/')
			return "EXEC cwd is not absolute";
		if (le32(m->argv.p) == 0)
			return "EXEC argv[0] is empty";
		break;
	case M_STDIN:
	case M_STDOUT:
	case M_STDERR:
		ok = rd_u32(&r, &m->u[0]) && rd_bytes(&r, &m->data, &m->data_len, MAX_FRAME);
		if (ok && !m->data_len)
			return "empty data frame";
		break;
	case M_STDIN_EOF:
		ok = rd_u32(&r, &m->u[0]);
		break;
	case M_SIGNAL:
		ok = rd_u32(&r, &m->u[0]) && rd_u32(&r, &m->u[1]);
		if (ok && (m->u[1] == 0 || m->u[1] > 64))
			return "bad signal number";
		break;
	case M_EXIT:
		ok = rd_u32(&r, &m->u[0]) && rd_u32(&r, &m->u[1]) && rd_u32(&r, &m->u[2]);
		if (ok && m->u[1] == 0 && m->u[2] > 255)
			return "exit code above 255";
		if (ok && m->u[1] == 1 && (m->u[2] == 0 || m->u[2] > 64))
			return "bad signal number";
		if (ok && m->u[1] > 1)
			return "unknown EXIT kind";
		break;
	case M_STARTED:
		ok = rd_u32(&r, &m->u[0]) && rd_u32(&r, &m->u[1]);
		break;
	case M_GENERATION:
		/* entropy[32], u64 sec, u32 nsec, str hostname, strlist env */
		if (len < 32)
			return "truncated";
		m->entropy = p;
		r.p += 32;
		ok = rd_u32(&r, &m->u[0]) && rd_u32(&r, &m->u[1]) && rd_u32(&r, &m->u[2]) &&
		     rd_str(&r, &m->data, &m->data_len, 64) && rd_strlist(&r, &m->env, 0, 1);
		if (ok && m->u[2] >= 1000000000u)
			return "nanoseconds out of range";
		break;
	case M_SHUTDOWN:
		break;
	default:
		return "unknown type";
	}
	if (!ok)
		return r.what;
	if (r.p != r.end)
		return "trailing bytes";
	return NULL;
}

/* ---- processes ---- */
static struct proc *proc_find(unsigned conn, uint32_t id)
{
	for (unsigned i = 0; i < NPROC; i++)
		if (ag.p[i].kind && ag.p[i].conn == conn && ag.p[i].id == id)
			return &ag.p[i];
	return NULL;
}

static void conn_drop_procs(unsigned conn)
{
	for (unsigned i = 0; i < NPROC; i++)
		if (ag.p[i].kind && ag.p[i].conn == conn)
			ag.p[i].kind = 0;
}

/* ---- built-in commands ---- */
static void usage_exit(struct conn *c, uint32_t id, const char *msg)
{
	send_data(c, id, 2, msg, slen(msg));
	send_exit(c, id, 0, 2);
}

/* Whether env entry s (KEY=VALUE) has a key that a later entry of list l
 * (from position it on) sets again. */
static int key_set_in(const uint8_t *s, uint32_t n, const uint8_t *it, uint32_t count)
{
	uint32_t k = 0;
	while (k < n && s[k] != '=')
		k++;
	for (uint32_t i = 0; i < count; i++) {
		uint32_t m;
		const uint8_t *t = sl_next(&it, &m);
		if (m > k && t[k] == '=' && mem_eq(s, t, k))
			return 1;
	}
	return 0;
}

/* env: the GENERATION environment, overridden key by key by EXEC's (the
 * last setting of a key wins), one KEY=VALUE per line. */
static void cmd_env(struct conn *c, uint32_t id, const struct slist *xenv)
{
	static uint8_t buf[GENENV_MAX + ARGS_MAX + 8192];
	uint32_t n = 0;
	const uint8_t *it = ag.genenv + 4;
	uint32_t gcount = ag.genenv_len ? le32(ag.genenv) : 0;
	for (uint32_t i = 0; i < gcount; i++) {
		uint32_t m;
		const uint8_t *s = sl_next(&it, &m);
		if (key_set_in(s, m, xenv->p, xenv->n))
			continue;
		memcpy(buf + n, s, m);
		n += m;
		buf[n++] = '\n';
	}
	it = xenv->p;
	for (uint32_t i = 0; i < xenv->n; i++) {
		uint32_t m;
		const uint8_t *s = sl_next(&it, &m);
		if (key_set_in(s, m, it, xenv->n - i - 1))
			continue;
		memcpy(buf + n, s, m);
		n += m;
		buf[n++] = '\n';
	}
	send_data(c, id, 1, buf, n);
	send_exit(c, id, 0, 0);
}

static void exec(struct conn *c, unsigned ci, const struct msg *m)
{
	uint32_t id = m->u[0];
	struct sb e = {.n = 0};
	if (id == 0) {
		fatal(c, E_PROTOCOL, "EXEC: process id 0 is reserved", "");
		return;
	}
	if (proc_find(ci, id)) {
		sb_s(&e, "EXEC: process id ");
		sb_u(&e, id);
		sb_s(&e, " is in use");
		send_error(c, E_BUSY, id, 0, &e);
		return;
	}
	const uint8_t *it = m->argv.p;
	uint32_t n0;
	const uint8_t *a0 = sl_next(&it, &n0);
	if (m->argv.bytes + m->env.bytes > ARGS_MAX) {
		sb_s(&e, "EXEC ");
		sb_sn(&e, a0, min32(n0, 64));
		sb_s(&e, ": execve: Argument list too long (the test guest takes 64 KiB of argv and env)");
		send_error(c, E_EXEC, id, 0, &e);
		return;
	}
	uint32_t na;
	const uint8_t *a1 = m->argv.n > 1 ? sl_next(&it, &na) : NULL;
	if (!a1)
		na = 0;
	int oneshot = word_is(a0, n0, "echo") || word_is(a0, n0, "exit") || word_is(a0, n0, "generation") ||
		       word_is(a0, n0, "hostname") || word_is(a0, n0, "env");
	if (oneshot)
		send_started(c, id);
	if (word_is(a0, n0, "echo")) {
		static uint8_t buf[ARGS_MAX + 4096];
		uint32_t n = 0;
		const uint8_t *jt = m->argv.p;
		sl_next(&jt, &n0);
		for (uint32_t i = 1; i < m->argv.n; i++) {
			uint32_t k;
			const uint8_t *s = sl_next(&jt, &k);
			if (i > 1)
				buf[n++] = ' ';
			memcpy(buf + n, s, k);
			n += k;
		}
		buf[n++] = '\n';
		send_data(c, id, 1, buf, n);
		send_exit(c, id, 0, 0);
	} else if (word_is(a0, n0, "exit")) {
		uint64_t v = 0;
		if (m->argv.n > 2 || (a1 && tg_parse_dec((const char *)a1, na, 255, &v) < 0))
			usage_exit(c, id, "exit: usage: exit [STATUS 0..255]\n");
		else
			send_exit(c, id, 0, (uint32_t)v);
	} else if (word_is(a0, n0, "generation")) {
		static const char hex[] = "0123456789abcdef";
		uint8_t g[16];
		char line[33];
		tg_gen_id(g);
		for (int i = 0; i < 16; i++) {
			line[2 * i] = hex[g[i] >> 4];
			line[2 * i + 1] = hex[g[i] & 15];
		}
		line[32] = '\n';
		send_data(c, id, 1, line, 33);
		send_exit(c, id, 0, 0);
	} else if (word_is(a0, n0, "hostname")) {
		char line[66];
		uint32_t n = slen(ag.hostname);
		memcpy(line, ag.hostname, n);
		line[n] = '\n';
		send_data(c, id, 1, line, n + 1);
		send_exit(c, id, 0, 0);
	} else if (word_is(a0, n0, "env")) {
		cmd_env(c, id, &m->env);
	} else if (word_is(a0, n0, "sleep") || word_is(a0, n0, "cat")) {
		int sleep = a0[0] == 's';
		uint64_t ms = 0;
		struct proc *p = NULL;
		for (unsigned i = 0; i < NPROC && !p; i++)
			if (!ag.p[i].kind)
				p = &ag.p[i];
		if (!p) {
			sb_s(&e, "EXEC: ");
			sb_u(&e, NPROC);
			sb_s(&e, " processes already running");
			send_error(c, E_BUSY, id, 0, &e);
			return;
		}
		send_started(c, id);
		if (sleep && (m->argv.n != 2 || tg_parse_dec((const char *)a1, na, 3600000, &ms) < 0)) {
			usage_exit(c, id, "sleep: usage: sleep MS (0..3600000)\n");
			return;
		}
		if (!sleep && m->argv.n != 1) {
			usage_exit(c, id, "cat: usage: cat (copies stdin to stdout)\n");
			return;
		}
		if (!sleep && !(m->u[1] & 1)) { /* stdin is /dev/null */
			send_exit(c, id, 0, 0);
			return;
		}
		*p = (struct proc){.kind = sleep ? P_SLEEP : P_CAT, .conn = (uint8_t)ci, .id = id,
				   .stdin_open = (uint8_t)(m->u[1] & 1), .deadline = tg_now_ms() + ms};
	} else {
		sb_s(&e, "EXEC ");
		sb_sn(&e, a0, min32(n0, 64));
		sb_s(&e, ": execve: unknown command (the test guest's agent has built-ins only: echo, exit, sleep, "
			 "cat, generation, env, hostname)");
		send_error(c, E_EXEC, id, 0, &e);
	}
}

static void generation(struct conn *c, const struct msg *m)
{
	/* The env strlist is the tail of the payload: count, then entries. */
	uint32_t envlen = 4 + 4 * m->env.n + m->env.bytes;
	if (envlen > GENENV_MAX) {
		struct sb e = {.n = 0};
		sb_s(&e, "GENERATION: environment of ");
		sb_u(&e, envlen);
		sb_s(&e, " bytes, the test guest keeps 16384");
		send_error(c, E_GENERATION, 0, 0, &e);
		return;
	}
	memcpy(ag.genenv, m->env.p - 4, envlen);
	ag.genenv_len = envlen;
	if (m->data_len) {
		memcpy(ag.hostname, m->data, m->data_len);
		ag.hostname[m->data_len] = 0;
	}
	/* Forks diverge: the host's entropy goes into the guest's PRNG. */
	for (int i = 0; i < 32; i++)
		ag.prng = (ag.prng ^ m->entropy[i]) * 0x100000001b3ull;
	send_u32s(c, M_READY, 1, 1, 0, 0);
}

/* Handles one complete frame; 0 if it must be called again later (cat's
 * STDIN waiting for output room). */
static int handle(struct conn *c, unsigned ci, uint32_t type, const uint8_t *p, uint32_t len)
{
	struct msg m;
	const char *bad = decode(type, p, len, &m);
	struct sb e = {.n = 0};
	if (bad) {
		sb_s(&e, "agent ");
		sb_s(&e, type_name(type));
		sb_s(&e, ": ");
		sb_s(&e, bad);
		send_error(c, E_PROTOCOL, 0, 1, &e);
		return 1;
	}
	if (!c->hello && type != M_HELLO) {
		fatal(c, E_STATE, type_name(type), " before HELLO");
		return 1;
	}
	switch (type) {
	case M_HELLO:
		if (c->hello) {
			fatal(c, E_STATE, "second HELLO", "");
		} else if (m.u[0] != 1) {
			sb_s(&e, "protocol version ");
			sb_u(&e, m.u[0]);
			sb_s(&e, " not supported (agent speaks 1)");
			send_error(c, E_VERSION, 0, 1, &e);
		} else {
			c->hello = 1;
			send_u32s(c, M_HELLO, 1, 1, 0, 0);
			send_u32s(c, M_READY, 1, 0, 0, 0);
		}
		return 1;
	case M_EXEC:
		exec(c, ci, &m);
		return 1;
	case M_STDIN:
	case M_STDIN_EOF: {
		struct proc *pr = proc_find(ci, m.u[0]);
		if (!pr) {
			sb_s(&e, type_name(type));
			sb_s(&e, ": no process ");
			sb_u(&e, m.u[0]);
			send_error(c, E_NO_PROCESS, m.u[0], 0, &e);
		} else if (!pr->stdin_open) {
			sb_s(&e, type_name(type));
			sb_s(&e, ": stdin of process ");
			sb_u(&e, m.u[0]);
			sb_s(&e, " is closed");
			send_error(c, E_STATE, m.u[0], 0, &e);
		} else if (type == M_STDIN_EOF) {
			pr->stdin_open = 0;
			if (pr->kind == P_CAT) {
				send_exit(c, pr->id, 0, 0);
				pr->kind = 0;
			}
		} else if (pr->kind == P_CAT) {
			/* Copy as much as the output ring takes now. */
			uint32_t room = out_free(c) - 4096, k = min32(m.data_len - c->stdin_off, room);
			send_data(c, pr->id, 1, m.data + c->stdin_off, k);
			c->stdin_off += k;
			if (c->stdin_off < m.data_len)
				return 0;
			c->stdin_off = 0;
		} /* sleep with stdin: nobody reads it, the data is dropped */
		return 1;
	}
	case M_SIGNAL: {
		struct proc *pr = proc_find(ci, m.u[0]);
		if (!pr) {
			sb_s(&e, "SIGNAL: no process ");
			sb_u(&e, m.u[0]);
			send_error(c, E_NO_PROCESS, m.u[0], 0, &e);
		} else {
			/* Every signal ends a built-in, as the default action of
			 * most signals would. */
			send_exit(c, pr->id, 1, m.u[1]);
			pr->kind = 0;
		}
		return 1;
	}
	case M_GENERATION:
		generation(c, &m);
		return 1;
	case M_SHUTDOWN:
		tg_log("shutdown", "", 0);
		tg_poweroff();
	case M_ERROR:
		if (m.u[2] & 1)
			c->closing = 1; /* the host closes: no answer */
		return 1;
	default:
		fatal(c, E_PROTOCOL, type_name(type), " is not a host-to-guest message");
		return 1;
	}
}

static void consume(struct conn *c, uint32_t n)
{
	move_down(c->in, c->in + n, c->in_len - n);
	c->in_len -= n;
	c->fwd_cnt += n;
	/* Give the host its credit back early for big transfers (it would
	 * otherwise stall at zero and ask). */
	if (c->fwd_cnt - c->last_fwd_sent >= IN_CAP / 4)
		c->need_credit_update = 1;
}

/* Decodes and handles the complete frames waiting in c->in. */
static int conn_frames(struct conn *c, unsigned ci)
{
	int progress = 0;
	while (c->state == C_OPEN && !c->closing) {
		if (out_free(c) < OUT_RESERVE)
			break; /* the host is slow to read: stop reading it too */
		if (c->in_len < 8)
			break;
		/* The header alone decides, before any payload byte is waited for. */
		uint32_t len = le32(c->in);
		uint8_t type = c->in[4];
		if (!type_name(type) || c->in[5] || c->in[6] || c->in[7]) {
			struct sb e = {.n = 0};
			sb_s(&e, "agent frame: ");
			sb_s(&e, type_name(type) ? "nonzero flags or reserved bytes" : "unknown type");
			send_error(c, E_PROTOCOL, 0, 1, &e);
			return 1;
		}
		if (len > MAX_FRAME) {
			fatal(c, E_TOO_LARGE, "agent frame: payload too large", "");
			return 1;
		}
		if (c->in_len < 8 + len)
			break;
		if (!handle(c, ci, type, c->in + 8, len))
			return 1;
		consume(c, 8 + len);
		progress = 1;
	}
	/* The host's EOF (or a fatal error) ends the connection once what
	 * arrived before it was handled: its processes go with it. */
	if (c->state == C_OPEN && c->peer_eof && !c->closing && (c->in_len < 8 || c->in_len < 8 + le32(c->in))) {
		c->closing = 1;
		progress = 1;
	}
	if (c->closing)
		conn_drop_procs(ci);
	return progress;
}

/* ---- packets from the device ---- */
static void conn_free(unsigned ci)
{
	conn_drop_procs(ci);
	ag.c[ci].state = C_FREE;
}

static void rx_packet(const uint8_t *buf, uint32_t used)
{
	struct vhdr h;
	if (used < HDR)
		return; /* the device never does this */
	memcpy(&h, buf, HDR);
	if (h.len > used - HDR || h.dst_cid != ag.cid || h.src_cid != HOST_CID || h.type != TYPE_STREAM)
		return;
	unsigned ci = NCONN;
	for (unsigned i = 0; i < NCONN; i++)
		if (ag.c[i].state != C_FREE && ag.c[i].peer_port == h.src_port)
			ci = i;
	if (ci == NCONN || h.dst_port != AGENT_PORT) {
		if (h.op != OP_REQUEST || h.dst_port != AGENT_PORT) {
			owe_rst(&h);
			return;
		}
		for (unsigned i = 0; i < NCONN && ci == NCONN; i++)
			if (ag.c[i].state == C_FREE)
				ci = i;
		if (ci == NCONN) {
			owe_rst(&h); /* all connections busy */
			return;
		}
		struct conn *c = &ag.c[ci];
		uint8_t *in = c->in, *out = c->out;
		*c = (struct conn){.state = C_OPEN, .in = in, .out = out, .peer_port = h.src_port,
				   .peer_buf_alloc = h.buf_alloc, .peer_fwd_cnt = h.fwd_cnt, .need_response = 1};
		return;
	}
	struct conn *c = &ag.c[ci];
	if (h.op == OP_RST) {
		conn_free(ci);
		return;
	}
	c->peer_buf_alloc = h.buf_alloc;
	c->peer_fwd_cnt = h.fwd_cnt;
	if (peer_credit(c))
		c->credit_req_sent = 0;
	if (c->state == C_SHUT)
		return; /* waiting for the device's RST */
	switch (h.op) {
	case OP_RW:
		if (h.len > IN_CAP - c->in_len) {
			/* Beyond the credit we gave: the peer is broken. */
			owe_rst(&h);
			conn_free(ci);
			return;
		}
		if (!c->closing && !c->peer_eof) {
			memcpy(c->in + c->in_len, buf + HDR, h.len);
			c->in_len += h.len;
		} else {
			c->fwd_cnt += h.len; /* dropped unread, as a closing socket would */
		}
		break;
	case OP_SHUTDOWN:
		if (h.flags & SHUT_SEND)
			c->peer_eof = 1;
		if (h.flags & SHUT_RECEIVE) {
			c->closing = 1;
			c->out_len = 0; /* nobody reads it any more */
		}
		break;
	case OP_CREDIT_REQUEST:
		c->need_credit_update = 1;
		break;
	case OP_CREDIT_UPDATE:
		break;
	default: /* REQUEST on a live pair, RESPONSE, unknown */
		owe_rst(&h);
		conn_free(ci);
		break;
	}
}

/* ---- sending ---- */
static int conn_send(struct conn *c)
{
	int progress = 0;
	struct vhdr h;
	if (c->state != C_OPEN)
		return 0;
	if (c->need_response && tx_take()) {
		conn_hdr(c, &h, OP_RESPONSE);
		tx_send(&h, NULL, 0, NULL, 0);
		c->need_response = 0;
		progress = 1;
	}
	if (c->need_response)
		return progress;
	while (c->out_len && tx_take()) {
		uint32_t credit = peer_credit(c);
		uint32_t k = min32(min32(c->out_len, credit), PKT_DATA);
		if (!k) {
			if (!c->credit_req_sent) {
				conn_hdr(c, &h, OP_CREDIT_REQUEST);
				tx_send(&h, NULL, 0, NULL, 0);
				c->credit_req_sent = 1;
				progress = 1;
			}
			break;
		}
		uint32_t first = min32(k, OUT_CAP - c->out_head);
		conn_hdr(c, &h, OP_RW);
		h.len = k;
		tx_send(&h, c->out + c->out_head, first, c->out, k - first);
		c->out_head = (c->out_head + k) % OUT_CAP;
		c->out_len -= k;
		c->tx_cnt += k;
		progress = 1;
	}
	if (c->need_credit_update && tx_take()) {
		conn_hdr(c, &h, OP_CREDIT_UPDATE);
		tx_send(&h, NULL, 0, NULL, 0);
		progress = 1;
	}
	if (c->closing && !c->out_len && tx_take()) {
		/* Both directions: the device flushes our data to the host
		 * socket, closes it and answers with RST (docs/vsock.md). */
		conn_hdr(c, &h, OP_SHUTDOWN);
		h.flags = SHUT_RECEIVE | SHUT_SEND;
		tx_send(&h, NULL, 0, NULL, 0);
		c->state = C_SHUT;
		progress = 1;
	}
	return progress;
}

/* ---- set-up ---- */
static void ioapic_route(uint32_t gsi)
{
	volatile uint32_t *sel = (volatile uint32_t *)(uintptr_t)IOAPIC;
	volatile uint32_t *win = (volatile uint32_t *)(uintptr_t)(IOAPIC + 0x10);
	/* Edge-triggered on purpose: the line stays high until ring 3 gets
	 * round to acknowledging the device, and a level-triggered line would
	 * interrupt CPU 0 again after every EOI until then. */
	*sel = 0x10 + 2 * gsi + 1;
	*win = 0;              /* destination: APIC ID 0 (CPU 0, which runs the agent) */
	*sel = 0x10 + 2 * gsi;
	*win = TG_VEC_VIRTIO; /* fixed, physical, active high, edge, unmasked */
}

const char *tg_agent_init(uint64_t mmio, uint32_t gsi, uint64_t arena)
{
	ag.mmio = (volatile uint8_t *)(uintptr_t)mmio;
	if (mr(R_MAGIC) != 0x74726976u || mr(R_VERSION) != 2 || mr(R_DEVICE_ID) != 19)
		return "no virtio-mmio vsock device at the boot info's address";
	if (gsi >= 24)
		return "vsock interrupt pin beyond the IOAPIC";
	uint8_t *a = (uint8_t *)(uintptr_t)arena;
	mw(R_STATUS, 0);
	mw(R_STATUS, ST_ACK);
	mw(R_STATUS, ST_ACK | ST_DRIVER);
	mw(R_DEV_FEATURES_SEL, 1);
	if (!(mr(R_DEV_FEATURES) & 1)) /* VIRTIO_F_VERSION_1 */
		return "vsock device without VIRTIO_F_VERSION_1";
	mw(R_DEV_FEATURES_SEL, 0);
	uint32_t f0 = mr(R_DEV_FEATURES) & 1; /* VIRTIO_VSOCK_F_STREAM, if offered */
	mw(R_DRV_FEATURES_SEL, 0);
	mw(R_DRV_FEATURES, f0);
	mw(R_DRV_FEATURES_SEL, 1);
	mw(R_DRV_FEATURES, 1);
	mw(R_STATUS, ST_ACK | ST_DRIVER | ST_FEATURES_OK);
	if (!(mr(R_STATUS) & ST_FEATURES_OK))
		return "vsock device refused the features";
	ag.cid = (uint64_t)mr(R_CONFIG) | (uint64_t)mr(R_CONFIG + 4) << 32;
	static const uint16_t nums[3] = {RX_N, TX_N, EV_N};
	for (unsigned q = 0; q < 3; q++) {
		mw(R_QUEUE_SEL, q);
		if (mr(R_QUEUE_NUM_MAX) < nums[q])
			return "vsock queues too small";
	}
	/* Arena: three rings (3 pages each), rx and tx buffers, event
	 * buffers, then per connection its input and output buffers. */
	vq_setup(&ag.rx, Q_RX, RX_N, a);
	vq_setup(&ag.tx, Q_TX, TX_N, a + 3 * 4096);
	vq_setup(&ag.ev, Q_EV, EV_N, a + 6 * 4096);
	ag.evbuf = (volatile uint32_t *)(a + 9 * 4096);
	ag.rxbuf = a + (64u << 10);
	ag.txbuf = ag.rxbuf + RX_N * PKT_BUF;
	for (unsigned i = 0; i < NCONN; i++) {
		ag.c[i].in = a + (1u << 20) + i * (IN_CAP + OUT_CAP);
		ag.c[i].out = ag.c[i].in + IN_CAP;
	}
	_Static_assert((1u << 20) + NCONN * (IN_CAP + OUT_CAP) <= TG_AGENT_ARENA, "agent arena too small");
	for (uint16_t i = 0; i < RX_N; i++) {
		ag.rx.desc[i] = (struct vdesc){.addr = (uint64_t)(uintptr_t)(ag.rxbuf + (uint32_t)i * PKT_BUF),
					       .len = PKT_BUF, .flags = 2 /* device-writable */};
		vq_post(&ag.rx, i);
	}
	for (uint16_t i = 0; i < EV_N; i++) {
		ag.ev.desc[i] = (struct vdesc){.addr = (uint64_t)(uintptr_t)(ag.evbuf + 2 * i), .len = 8, .flags = 2};
		vq_post(&ag.ev, i);
	}
	for (uint16_t i = 0; i < TX_N; i++)
		ag.tx_free[i] = i;
	ag.ntx_free = TX_N;
	memcpy(ag.hostname, "testguest", 10);
	ag.prng = 0x5eed5eed5eedull;
	ioapic_route(gsi);
	mw(R_STATUS, ST_ACK | ST_DRIVER | ST_FEATURES_OK | ST_DRIVER_OK);
	vq_kick(&ag.rx, Q_RX);
	vq_kick(&ag.ev, Q_EV);
	ag.virq_seen = tg_virq_count();
	tg_log("listening port=", "1024 cid=", ag.cid);
	return NULL;
}

/* ---- the loop ---- */
int tg_agent_poll(void)
{
	int progress = 0;
	uint32_t id, len;
	/* Acknowledge only after an interrupt: then the line is low again and
	 * the next used buffer raises a new edge (no MMIO exit while idle). */
	uint64_t v = tg_virq_count();
	if (v != ag.virq_seen) {
		ag.virq_seen = v;
		uint32_t isr = mr(R_INT_STATUS);
		if (isr)
			mw(R_INT_ACK, isr);
	}
	while (vq_used(&ag.ev, &id, &len)) {
		/* VIRTIO_VSOCK_EVENT_TRANSPORT_RESET after a restore: the host
		 * connections are gone; the listener stays. */
		if (len >= 4 && id < EV_N && ag.evbuf[2 * id] == 0) {
			for (unsigned i = 0; i < NCONN; i++)
				if (ag.c[i].state != C_FREE)
					conn_free(i);
			ag.nrst = 0;
			tg_log("transport reset", "", 0);
		}
		if (id < EV_N)
			vq_post(&ag.ev, (uint16_t)id); /* the re-post is the device's acknowledgement */
		progress = 1;
	}
	while (vq_used(&ag.tx, &id, &len))
		if (id < TX_N && ag.ntx_free < TX_N)
			ag.tx_free[ag.ntx_free++] = (uint16_t)id;
	while (vq_used(&ag.rx, &id, &len)) {
		if (id < RX_N) {
			rx_packet(ag.rxbuf + id * PKT_BUF, len);
			vq_post(&ag.rx, (uint16_t)id);
		}
		progress = 1;
	}
	uint64_t now = tg_now_ms();
	for (unsigned i = 0; i < NPROC; i++) {
		struct proc *p = &ag.p[i];
		struct conn *c = &ag.c[p->conn];
		if (p->kind == P_SLEEP && now >= p->deadline && out_free(c) >= 64) {
			send_exit(c, p->id, 0, 0);
			p->kind = 0;
			progress = 1;
		}
	}
	for (unsigned i = 0; i < NCONN; i++)
		progress |= conn_frames(&ag.c[i], i);
	while (ag.nrst && tx_take()) {
		tx_send(&ag.rst[--ag.nrst], NULL, 0, NULL, 0);
		progress = 1;
	}
	for (unsigned i = 0; i < NCONN; i++)
		progress |= conn_send(&ag.c[i]);
	vq_kick(&ag.ev, Q_EV);
	vq_kick(&ag.rx, Q_RX);
	vq_kick(&ag.tx, Q_TX);
	return progress;
}
