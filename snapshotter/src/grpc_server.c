/* gRPC server over nghttp2: one thread per connection drives HTTP/2, one worker thread per call runs its handler. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <nghttp2/nghttp2.h>

#include "grpc_int.h"
#include "snap_grpc.h"
#include "sl/sock.h"
#include "sl/time.h"

#define MAX_METHODS 64
#define READ_CHUNK (64u << 10)

struct method {
	char path[160];
	snap_grpc_fn fn;
	bool streaming;
	void *user;
};

struct conn;

/* One call: shared by its connection thread and its worker (refcounted). */
struct snap_grpc_call_state {
	atomic_int refs;
	atomic_bool cancelled;
	struct conn *conn;
	int32_t stream_id;
	struct snap_grpc_call_state *next; /* the connection's open calls */
	/* request, filled by the connection thread */
	char path[256];
	char ns[256];
	bool has_ns;
	int64_t timeout_ms;
	bool content_type_ok, seen_content_type;
	bool too_large;
	bool over_budget; /* SNAP_GRPC_MAX_BUFFERED would have been exceeded */
	uint8_t *body;
	size_t body_len, body_cap;
	const struct method *m;
	/* response, touched only by the connection thread */
	uint8_t *out;
	size_t out_len, out_off, out_cap;
	bool headers_sent, done, closed;
	int code;
	char *message;
};

enum item_kind { ITEM_MSG, ITEM_DONE };

struct item {
	struct item *next;
	enum item_kind kind;
	struct snap_grpc_call_state *cs;
	uint8_t *data;
	size_t len;
	int code;
	char *message;
};

struct conn {
	struct snap_grpc_server *s;
	struct conn *next;
	atomic_int refs;
	int fd, efd;
	pthread_t thread;
	nghttp2_session *session;
	pthread_mutex_t qlock;
	struct item *qhead, *qtail;
	bool dead;     /* under qlock: nothing more is accepted from workers */
	bool goaway;   /* under qlock: the server asked it to wind down */
	struct snap_grpc_call_state *calls;
	uint8_t *wbuf; /* bytes nghttp2 produced that the socket did not take yet */
	size_t wlen, woff;
};

struct snap_grpc_server {
	struct method methods[MAX_METHODS];
	size_t nmethods;
	int lfd;
	pthread_t accept_thread;
	bool started;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct conn *conns;
	unsigned nconns;
	atomic_int inflight;
	atomic_bool stopping;
	atomic_size_t buffered; /* body_cap of every call alive (SNAP_GRPC_MAX_BUFFERED) */
	void (*refused)(void *arg, uid_t uid, unsigned more);
	void *refused_arg;
	uint64_t refused_reported; /* accept thread only: ms of the last report, 0: none */
	unsigned refused_unreported;
};

/* ---- reference counts --------------------------------------------------- */

static void conn_unref(struct conn *c)
{
	if (atomic_fetch_sub(&c->refs, 1) != 1)
		return;
	struct item *it = c->qhead;
	while (it) {
		struct item *n = it->next;
		free(it->data);
		free(it->message);
		free(it);
		it = n;
	}
	pthread_mutex_destroy(&c->qlock);
	free(c->wbuf);
	free(c);
}

static void cs_unref(struct snap_grpc_call_state *cs)
{
	if (atomic_fetch_sub(&cs->refs, 1) != 1)
		return;
	/* The server outlives its calls (shutdown waits for every one). */
	atomic_fetch_sub(&cs->conn->s->buffered, cs->body_cap);
	conn_unref(cs->conn);
	free(cs->body);
	free(cs->out);
	free(cs->message);
	free(cs);
}

/* ---- worker side ----------------------------------------------------------- */

/* Queues it for the connection thread. The item holds a reference on its
 * call (the stream may close, and drop the connection's reference, before
 * the item is looked at); drain_queue releases it. */
static bool post(struct conn *c, struct item *it)
{
	atomic_fetch_add(&it->cs->refs, 1);
	pthread_mutex_lock(&c->qlock);
	bool ok = !c->dead;
	if (ok) {
		if (c->qtail)
			c->qtail->next = it;
		else
			c->qhead = it;
		c->qtail = it;
	}
	pthread_mutex_unlock(&c->qlock);
	if (ok) {
		uint64_t one = 1;
		ssize_t w = write(c->efd, &one, sizeof(one));
		(void)w;
	} else {
		cs_unref(it->cs);
	}
	return ok;
}

void snap_grpc_error(struct snap_grpc_result *res, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	free(res->message);
	res->message = NULL;
	if (vasprintf(&res->message, fmt, ap) < 0)
		res->message = NULL;
	va_end(ap);
	res->code = code;
	free(res->msg);
	res->msg = NULL;
	res->len = 0;
}

bool snap_grpc_cancelled(const struct snap_grpc_call *call)
{
	return atomic_load(&call->state->cancelled) || atomic_load(&call->state->conn->s->stopping);
}

int snap_grpc_send(const struct snap_grpc_call *call, const uint8_t *msg, size_t len, sl_error_t *err)
{
	struct snap_grpc_call_state *cs = call->state;
	if (len > SNAP_GRPC_MAX_MESSAGE)
		return sl_error_set(err, SL_E_LIMIT, "gRPC reply of %zu bytes exceeds %u", len, SNAP_GRPC_MAX_MESSAGE);
	if (snap_grpc_cancelled(call))
		return sl_error_set(err, SL_E_IO, "gRPC call %s cancelled", cs->path);
	struct item *it = calloc(1, sizeof(*it));
	uint8_t *d = malloc(len ? len : 1);
	if (!it || !d) {
		free(it);
		free(d);
		return sl_error_set(err, SL_E_NOMEM, "gRPC reply: out of memory");
	}
	memcpy(d, msg, len);
	*it = (struct item){.kind = ITEM_MSG, .cs = cs, .data = d, .len = len};
	if (!post(cs->conn, it)) {
		free(d);
		free(it);
		return sl_error_set(err, SL_E_IO, "gRPC call %s: connection closed", cs->path);
	}
	return 0;
}

static void *worker(void *arg)
{
	struct snap_grpc_call_state *cs = arg;
	struct snap_grpc_call call = {.path = cs->path,
				      .msg = cs->body + 5,
				      .len = cs->body_len - 5,
				      .ns = cs->has_ns ? cs->ns : NULL,
				      .timeout_ms = cs->timeout_ms,
				      .state = cs};
	struct snap_grpc_result res = {0};
	cs->m->fn(&call, &res, cs->m->user);
	struct item *it = calloc(1, sizeof(*it));
	if (it) {
		*it = (struct item){.kind = ITEM_DONE, .cs = cs, .data = res.msg, .len = res.len, .code = res.code,
				    .message = res.message};
		if (!post(cs->conn, it)) {
			free(res.msg);
			free(res.message);
			free(it);
		}
	} else {
		free(res.msg);
		free(res.message);
	}
	struct snap_grpc_server *s = cs->conn->s;
	cs_unref(cs);
	pthread_mutex_lock(&s->lock);
	atomic_fetch_sub(&s->inflight, 1);
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
	return NULL;
}

/* ---- connection side: responses ---------------------------------------------- */

static int append_out(struct snap_grpc_call_state *cs, const uint8_t *msg, size_t len)
{
	if (cs->out_off && cs->out_off == cs->out_len)
		cs->out_off = cs->out_len = 0;
	size_t need = cs->out_len + 5 + len;
	if (need > cs->out_cap) {
		size_t cap = cs->out_cap ? cs->out_cap : 4096;
		while (cap < need)
			cap *= 2;
		uint8_t *n = realloc(cs->out, cap);
		if (!n)
			return -1;
		cs->out = n;
		cs->out_cap = cap;
	}
	uint8_t *p = cs->out + cs->out_len;
	p[0] = 0; /* not compressed */
	p[1] = (uint8_t)(len >> 24);
	p[2] = (uint8_t)(len >> 16);
	p[3] = (uint8_t)(len >> 8);
	p[4] = (uint8_t)len;
	if (len)
		memcpy(p + 5, msg, len);
	cs->out_len = need;
	return 0;
}

#define NV(n, v) {(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), NGHTTP2_NV_FLAG_NONE}

static void submit_trailers(struct conn *c, struct snap_grpc_call_state *cs, bool with_headers);

static ssize_t read_out(nghttp2_session *session, int32_t stream_id, uint8_t *buf, size_t length, uint32_t *flags,
			nghttp2_data_source *source, void *user)
{
	(void)session;
	(void)stream_id;
	struct conn *c = user;
	struct snap_grpc_call_state *cs = source->ptr;
	size_t avail = cs->out_len - cs->out_off;
	if (avail) {
		size_t n = avail < length ? avail : length;
		memcpy(buf, cs->out + cs->out_off, n);
		cs->out_off += n;
		return (ssize_t)n;
	}
	if (!cs->done)
		return NGHTTP2_ERR_DEFERRED;
	/* Everything sent: the status goes in trailers. */
	*flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
	submit_trailers(c, cs, false);
	return 0;
}

/* grpc-message is percent-encoded (PROTOCOL-HTTP2.md): printable ASCII
 * except '%' stays, everything else is %XX. */
static void pct_encode(const char *in, char *out, size_t cap)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t n = 0;
	for (const unsigned char *p = (const unsigned char *)(in ? in : ""); *p && n + 4 < cap; p++) {
		if (*p >= 0x20 && *p <= 0x7e && *p != '%') {
			out[n++] = (char)*p;
		} else {
			out[n++] = '%';
			out[n++] = hex[*p >> 4];
			out[n++] = hex[*p & 15];
		}
	}
	out[n] = '\0';
}

static void submit_trailers(struct conn *c, struct snap_grpc_call_state *cs, bool with_headers)
{
	char status[16], msg[1024];
	snprintf(status, sizeof(status), "%d", cs->code);
	pct_encode(cs->message, msg, sizeof(msg));
	if (with_headers) {
		/* Trailers-Only: one HEADERS frame ends the call. */
		nghttp2_nv nva[] = {NV(":status", "200"), NV("content-type", "application/grpc"),
				    NV("grpc-status", status), NV("grpc-message", msg)};
		nghttp2_submit_response(c->session, cs->stream_id, nva, cs->message ? 4 : 3, NULL);
		cs->headers_sent = true;
	} else {
		nghttp2_nv nva[] = {NV("grpc-status", status), NV("grpc-message", msg)};
		nghttp2_submit_trailer(c->session, cs->stream_id, nva, cs->message ? 2 : 1);
	}
}

static void start_response(struct conn *c, struct snap_grpc_call_state *cs)
{
	nghttp2_nv nva[] = {NV(":status", "200"), NV("content-type", "application/grpc")};
	nghttp2_data_provider dp = {.source.ptr = cs, .read_callback = read_out};
	nghttp2_submit_response(c->session, cs->stream_id, nva, 2, &dp);
	cs->headers_sent = true;
}

static void finish_call(struct conn *c, struct snap_grpc_call_state *cs, int code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void finish_call(struct conn *c, struct snap_grpc_call_state *cs, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	free(cs->message);
	if (vasprintf(&cs->message, fmt, ap) < 0)
		cs->message = NULL;
	va_end(ap);
	cs->code = code;
	cs->done = true;
	submit_trailers(c, cs, true);
}

/* Work handed back by workers: reply messages, then the end of the call. */
static void drain_queue(struct conn *c)
{
	uint64_t v;
	ssize_t r = read(c->efd, &v, sizeof(v));
	(void)r;
	pthread_mutex_lock(&c->qlock);
	struct item *it = c->qhead;
	c->qhead = c->qtail = NULL;
	pthread_mutex_unlock(&c->qlock);
	while (it) {
		struct item *next = it->next;
		struct snap_grpc_call_state *cs = it->cs;
		if (!cs->closed) {
			if (it->kind == ITEM_MSG) {
				if (append_out(cs, it->data, it->len) == 0) {
					if (!cs->headers_sent)
						start_response(c, cs);
					else
						nghttp2_session_resume_data(c->session, cs->stream_id);
				}
			} else {
				cs->code = it->code;
				cs->message = it->message;
				it->message = NULL;
				/* A unary OK carries its one reply message. */
				bool reply = it->code == SNAP_GRPC_OK && !cs->m->streaming;
				if (reply && append_out(cs, it->data ? it->data : (const uint8_t *)"", it->len) < 0) {
					cs->code = SNAP_GRPC_RESOURCE_EXHAUSTED;
					free(cs->message);
					cs->message = strdup("out of memory");
				}
				cs->done = true;
				if (!cs->headers_sent && cs->out_len == cs->out_off)
					submit_trailers(c, cs, true);
				else if (!cs->headers_sent)
					start_response(c, cs);
				else
					nghttp2_session_resume_data(c->session, cs->stream_id);
			}
		}
		free(it->data);
		free(it->message);
		free(it);
		cs_unref(cs);
		it = next;
	}
}

/* ---- connection side: requests ------------------------------------------------- */

static int on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame, void *user)
{
	struct conn *c = user;
	if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0;
	struct snap_grpc_call_state *cs = calloc(1, sizeof(*cs));
	if (!cs)
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	atomic_init(&cs->refs, 1); /* the connection's */
	atomic_fetch_add(&c->refs, 1);
	cs->conn = c;
	cs->stream_id = frame->hd.stream_id;
	cs->next = c->calls;
	c->calls = cs;
	nghttp2_session_set_stream_user_data(session, frame->hd.stream_id, cs);
	return 0;
}

/* grpc-timeout: 1..8 digits and a unit H M S m u n. */
static int64_t parse_timeout(const uint8_t *v, size_t n)
{
	if (n < 2 || n > 9)
		return 0;
	int64_t x = 0;
	for (size_t i = 0; i + 1 < n; i++) {
		if (v[i] < '0' || v[i] > '9')
			return 0;
		x = x * 10 + (v[i] - '0');
	}
	switch (v[n - 1]) {
	case 'H': return x * 3600000;
	case 'M': return x * 60000;
	case 'S': return x * 1000;
	case 'm': return x;
	case 'u': return x / 1000 ? x / 1000 : 1;
	case 'n': return x / 1000000 ? x / 1000000 : 1;
	}
	return 0;
}

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name, size_t namelen,
		     const uint8_t *value, size_t valuelen, uint8_t flags, void *user)
{
	(void)flags;
	(void)user;
	if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0;
	struct snap_grpc_call_state *cs = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
	if (!cs)
		return 0;
#define IS(s) (namelen == sizeof(s) - 1 && !memcmp(name, s, namelen))
	if (IS(":path")) {
		size_t n = valuelen < sizeof(cs->path) - 1 ? valuelen : sizeof(cs->path) - 1;
		memcpy(cs->path, value, n);
		cs->path[n] = '\0';
	} else if (IS("content-type")) {
		cs->seen_content_type = true;
		cs->content_type_ok = valuelen >= 16 && !memcmp(value, "application/grpc", 16) &&
				      (valuelen == 16 || value[16] == '+' || value[16] == ';');
	} else if (IS("grpc-timeout")) {
		cs->timeout_ms = parse_timeout(value, valuelen);
	} else if (IS("containerd-namespace")) {
		size_t n = valuelen < sizeof(cs->ns) - 1 ? valuelen : sizeof(cs->ns) - 1;
		memcpy(cs->ns, value, n);
		cs->ns[n] = '\0';
		cs->has_ns = true;
	}
#undef IS
	return 0;
}

static int on_data_chunk(nghttp2_session *session, uint8_t flags, int32_t stream_id, const uint8_t *data, size_t len,
			 void *user)
{
	(void)flags;
	(void)user;
	struct snap_grpc_call_state *cs = nghttp2_session_get_stream_user_data(session, stream_id);
	if (!cs || cs->too_large)
		return 0;
	struct snap_grpc_server *s = cs->conn->s;
	bool too_big = cs->body_len + len > (size_t)SNAP_GRPC_MAX_MESSAGE + 5, over = false;
	size_t cap = cs->body_cap;
	if (!too_big && cs->body_len + len > cap) {
		cap = cap ? cap : 1024;
		while (cap < cs->body_len + len)
			cap *= 2;
		if (cap > (size_t)SNAP_GRPC_MAX_MESSAGE + 5)
			cap = (size_t)SNAP_GRPC_MAX_MESSAGE + 5;
		/* Reserve the growth before allocating it. */
		size_t grow = cap - cs->body_cap;
		if (atomic_fetch_add(&s->buffered, grow) + grow > SNAP_GRPC_MAX_BUFFERED) {
			atomic_fetch_sub(&s->buffered, grow);
			over = true;
		}
	}
	if (too_big || over) {
		/* Read on and drop (flow control keeps the connection going). */
		cs->too_large = true;
		cs->over_budget = over;
		atomic_fetch_sub(&s->buffered, cs->body_cap);
		free(cs->body);
		cs->body = NULL;
		cs->body_len = cs->body_cap = 0;
		return 0;
	}
	if (cap != cs->body_cap) {
		uint8_t *n = realloc(cs->body, cap);
		if (!n) {
			atomic_fetch_sub(&s->buffered, cap - cs->body_cap);
			return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
		}
		cs->body = n;
		cs->body_cap = cap;
	}
	memcpy(cs->body + cs->body_len, data, len);
	cs->body_len += len;
	return 0;
}

static const struct method *find_method(struct snap_grpc_server *s, const char *path)
{
	for (size_t i = 0; i < s->nmethods; i++)
		if (!strcmp(s->methods[i].path, path))
			return &s->methods[i];
	return NULL;
}

/* The whole request is in: check it and hand it to a worker. */
static void dispatch(struct conn *c, struct snap_grpc_call_state *cs)
{
	if (!cs->seen_content_type || !cs->content_type_ok) {
		/* Not gRPC at all: an HTTP answer (PROTOCOL-HTTP2.md says 415). */
		nghttp2_nv nva[] = {NV(":status", "415")};
		nghttp2_submit_response(c->session, cs->stream_id, nva, 1, NULL);
		cs->headers_sent = cs->done = true;
		return;
	}
	if (atomic_load(&c->s->stopping)) {
		finish_call(c, cs, SNAP_GRPC_UNAVAILABLE, "server shutting down");
		return;
	}
	cs->m = find_method(c->s, cs->path);
	if (!cs->m) {
		finish_call(c, cs, SNAP_GRPC_UNIMPLEMENTED, "unknown method %s", cs->path);
		return;
	}
	if (cs->over_budget) {
		finish_call(c, cs, SNAP_GRPC_RESOURCE_EXHAUSTED,
			    "requests in progress already hold %u MiB, the server's cap", SNAP_GRPC_MAX_BUFFERED >> 20);
		return;
	}
	if (cs->too_large) {
		finish_call(c, cs, SNAP_GRPC_RESOURCE_EXHAUSTED, "request message larger than %u bytes",
			    SNAP_GRPC_MAX_MESSAGE);
		return;
	}
	/* Unary and server-streaming requests carry exactly one message. */
	grpc_frame_verdict v = grpc_frame_check(cs->body, cs->body_len);
	if (v != GRPC_FRAME_OK) {
		finish_call(c, cs, v == GRPC_FRAME_COMPRESSED ? SNAP_GRPC_UNIMPLEMENTED : SNAP_GRPC_INTERNAL, "%s",
			    grpc_frame_verdict_text(v));
		return;
	}
	atomic_fetch_add(&cs->refs, 1); /* the worker's */
	atomic_fetch_add(&c->s->inflight, 1);
	pthread_t t;
	pthread_attr_t a;
	pthread_attr_init(&a);
	pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
	if (pthread_create(&t, &a, worker, cs) != 0) {
		atomic_fetch_sub(&c->s->inflight, 1);
		atomic_fetch_sub(&cs->refs, 1);
		finish_call(c, cs, SNAP_GRPC_RESOURCE_EXHAUSTED, "no thread for the call");
	}
	pthread_attr_destroy(&a);
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user)
{
	struct conn *c = user;
	if ((frame->hd.type != NGHTTP2_DATA && frame->hd.type != NGHTTP2_HEADERS) ||
	    !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
		return 0;
	struct snap_grpc_call_state *cs = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
	if (cs && !cs->m && !cs->done)
		dispatch(c, cs);
	return 0;
}

static int on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code, void *user)
{
	(void)error_code;
	struct conn *c = user;
	struct snap_grpc_call_state *cs = nghttp2_session_get_stream_user_data(session, stream_id);
	if (!cs)
		return 0;
	/* Closed before its end was sent: the client cancelled (RST_STREAM). */
	if (!cs->done)
		atomic_store(&cs->cancelled, true);
	cs->closed = true;
	nghttp2_session_set_stream_user_data(session, stream_id, NULL);
	for (struct snap_grpc_call_state **pp = &c->calls; *pp; pp = &(*pp)->next) {
		if (*pp == cs) {
			*pp = cs->next;
			break;
		}
	}
	cs_unref(cs);
	return 0;
}

/* ---- the connection thread ------------------------------------------------ */

/* Writes what nghttp2 has to send; false when the connection broke. */
static bool flush(struct conn *c)
{
	for (;;) {
		if (c->woff < c->wlen) {
			ssize_t n = send(c->fd, c->wbuf + c->woff, c->wlen - c->woff, MSG_NOSIGNAL | MSG_DONTWAIT);
			if (n < 0 && (errno == EAGAIN || errno == EINTR))
				return true;
			if (n < 0)
				return false;
			c->woff += (size_t)n;
			continue;
		}
		const uint8_t *data;
		ssize_t n = nghttp2_session_mem_send(c->session, &data);
		if (n < 0)
			return false;
		if (n == 0)
			return true;
		if ((size_t)n > c->wlen || !c->wbuf) {
			uint8_t *nb = realloc(c->wbuf, (size_t)n);
			if (!nb)
				return false;
			c->wbuf = nb;
		}
		memcpy(c->wbuf, data, (size_t)n);
		c->wlen = (size_t)n;
		c->woff = 0;
	}
}

static void *conn_thread(void *arg)
{
	struct conn *c = arg;
	struct snap_grpc_server *s = c->s;
	uint8_t *buf = malloc(READ_CHUNK);
	nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, SNAP_GRPC_MAX_STREAMS},
				       {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1u << 20},
				       {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, 64u << 10}};
	/* The server preface (SETTINGS) goes out at once: grpc-go waits for it. */
	bool ok = buf && nghttp2_submit_settings(c->session, NGHTTP2_FLAG_NONE, iv, 3) == 0 && flush(c);
	bool goaway_sent = false;
	while (ok) {
		pthread_mutex_lock(&c->qlock);
		bool goaway = c->goaway;
		pthread_mutex_unlock(&c->qlock);
		if (goaway && !goaway_sent) {
			nghttp2_submit_goaway(c->session, NGHTTP2_FLAG_NONE,
					      nghttp2_session_get_last_proc_stream_id(c->session), NGHTTP2_NO_ERROR,
					      NULL, 0);
			goaway_sent = true;
		}
		if (!flush(c))
			break;
		if (!nghttp2_session_want_read(c->session) && !nghttp2_session_want_write(c->session) &&
		    c->woff == c->wlen)
			break;
		/* After GOAWAY, wait only for the calls still open. */
		if (goaway_sent && !c->calls && c->woff == c->wlen)
			break;
		struct pollfd p[2] = {{c->fd, POLLIN | (c->woff < c->wlen || nghttp2_session_want_write(c->session)
							       ? POLLOUT
							       : 0), 0},
				      {c->efd, POLLIN, 0}};
		if (poll(p, 2, 1000) < 0 && errno != EINTR)
			break;
		if (p[1].revents)
			drain_queue(c);
		if (p[0].revents & (POLLIN | POLLHUP | POLLERR)) {
			ssize_t n = recv(c->fd, buf, READ_CHUNK, MSG_DONTWAIT);
			if (n == 0)
				break;
			if (n < 0 && errno != EAGAIN && errno != EINTR)
				break;
			if (n > 0 && nghttp2_session_mem_recv(c->session, buf, (size_t)n) < 0)
				break; /* a protocol error: nghttp2 queued a GOAWAY; flush it */
		}
	}
	flush(c);
	/* The connection is gone: its calls are cancelled, workers' answers dropped. */
	pthread_mutex_lock(&c->qlock);
	c->dead = true;
	struct item *left = c->qhead;
	c->qhead = c->qtail = NULL;
	pthread_mutex_unlock(&c->qlock);
	while (left) { /* answers nobody will read: release their calls */
		struct item *n = left->next;
		struct snap_grpc_call_state *lcs = left->cs;
		free(left->data);
		free(left->message);
		free(left);
		cs_unref(lcs);
		left = n;
	}
	/* nghttp2_session_del runs no stream-close callbacks: release the
	 * connection's hold on its open calls here. */
	struct snap_grpc_call_state *cs = c->calls;
	c->calls = NULL;
	while (cs) {
		struct snap_grpc_call_state *next = cs->next;
		atomic_store(&cs->cancelled, true);
		cs->closed = true;
		cs_unref(cs);
		cs = next;
	}
	nghttp2_session_del(c->session);
	c->session = NULL;
	close(c->fd);
	close(c->efd);
	free(buf);
	pthread_mutex_lock(&s->lock);
	for (struct conn **pp = &s->conns; *pp; pp = &(*pp)->next) {
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	}
	s->nconns--;
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
	conn_unref(c);
	return NULL;
}

/* A server-side session whose callbacks parse requests into calls. */
static int new_session(struct conn *c)
{
	nghttp2_session_callbacks *cb;
	if (nghttp2_session_callbacks_new(&cb) != 0)
		return -1;
	nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
	nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
	nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
	int rc = nghttp2_session_server_new(&c->session, cb, c);
	nghttp2_session_callbacks_del(cb);
	return rc;
}

static int start_conn(struct snap_grpc_server *s, int fd)
{
	struct conn *c = calloc(1, sizeof(*c));
	if (!c)
		return -1;
	atomic_init(&c->refs, 1);
	c->s = s;
	c->fd = fd;
	c->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	pthread_mutex_init(&c->qlock, NULL);
	if (c->efd < 0 || new_session(c) != 0) {
		if (c->efd >= 0)
			close(c->efd);
		free(c);
		return -1;
	}
	int rc;
	pthread_mutex_lock(&s->lock);
	if (s->nconns >= SNAP_GRPC_MAX_CONNS || atomic_load(&s->stopping)) {
		pthread_mutex_unlock(&s->lock);
		nghttp2_session_del(c->session);
		close(c->efd);
		free(c);
		return -1;
	}
	c->next = s->conns;
	s->conns = c;
	s->nconns++;
	pthread_attr_t a;
	pthread_attr_init(&a);
	pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
	rc = pthread_create(&c->thread, &a, conn_thread, c);
	pthread_attr_destroy(&a);
	if (rc != 0) {
		s->conns = c->next;
		s->nconns--;
	}
	pthread_mutex_unlock(&s->lock);
	if (rc != 0) {
		nghttp2_session_del(c->session);
		close(c->efd);
		free(c);
		return -1;
	}
	return 0;
}

/* A peer whose uid may not call: what an HTTP/2 client can read (the
 * server preface, then GOAWAY with the reason as debug data), then the
 * close, before any of its bytes are read. */
static void refuse_conn(struct snap_grpc_server *s, int fd, uid_t uid)
{
	nghttp2_session_callbacks *cb = NULL;
	nghttp2_session *ss = NULL;
	if (nghttp2_session_callbacks_new(&cb) == 0 && nghttp2_session_server_new(&ss, cb, NULL) == 0) {
		char why[96];
		int n = snprintf(why, sizeof(why), "spore-snapshotter serves uid %u and root only", (unsigned)geteuid());
		nghttp2_submit_settings(ss, NGHTTP2_FLAG_NONE, NULL, 0);
		nghttp2_submit_goaway(ss, NGHTTP2_FLAG_NONE, 0, NGHTTP2_INADEQUATE_SECURITY, (const uint8_t *)why,
				      (size_t)n);
		const uint8_t *data;
		ssize_t k;
		/* Best effort and never blocking: the close is the refusal. */
		while ((k = nghttp2_session_mem_send(ss, &data)) > 0)
			if (send(fd, data, (size_t)k, MSG_NOSIGNAL | MSG_DONTWAIT) != k)
				break;
	}
	if (ss)
		nghttp2_session_del(ss);
	if (cb)
		nghttp2_session_callbacks_del(cb);
	close(fd);
	if (!s->refused)
		return;
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	uint64_t now = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u + 1;
	if (s->refused_reported && now < s->refused_reported + 1000) {
		s->refused_unreported++;
		return;
	}
	s->refused(s->refused_arg, uid, s->refused_unreported);
	s->refused_reported = now;
	s->refused_unreported = 0;
}

static void *accept_thread(void *arg)
{
	struct snap_grpc_server *s = arg;
	while (!atomic_load(&s->stopping)) {
		int fd = accept4(s->lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (atomic_load(&s->stopping))
				break;
			usleep(10000); /* EMFILE and friends: back off */
			continue;
		}
		uid_t uid;
		if (!sl_sock_peer_allowed(fd, geteuid(), &uid)) {
			refuse_conn(s, fd, uid);
			continue;
		}
		if (start_conn(s, fd) < 0)
			close(fd);
	}
	return NULL;
}

/* ---- the server ------------------------------------------------------------ */

int snap_grpc_server_new(struct snap_grpc_server **out, sl_error_t *err)
{
	struct snap_grpc_server *s = calloc(1, sizeof(*s));
	if (!s)
		return sl_error_set(err, SL_E_NOMEM, "gRPC server: out of memory");
	s->lfd = -1;
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->cond, NULL);
	*out = s;
	return 0;
}

void snap_grpc_server_on_refused(struct snap_grpc_server *s, void (*refused)(void *arg, uid_t uid, unsigned more),
				 void *arg)
{
	s->refused = refused;
	s->refused_arg = arg;
}

int snap_grpc_server_register(struct snap_grpc_server *s, const char *path, snap_grpc_fn fn, bool streaming,
			      void *user, sl_error_t *err)
{
	if (s->started)
		return sl_error_set(err, SL_E_INVALID, "gRPC: register %s after start", path);
	if (path[0] != '/' || strlen(path) >= sizeof(s->methods[0].path) || find_method(s, path))
		return sl_error_set(err, SL_E_INVALID, "gRPC: bad or duplicate method path %s", path);
	if (s->nmethods == MAX_METHODS)
		return sl_error_set(err, SL_E_LIMIT, "gRPC: more than %d methods", MAX_METHODS);
	struct method *m = &s->methods[s->nmethods++];
	snprintf(m->path, sizeof(m->path), "%s", path);
	m->fn = fn;
	m->streaming = streaming;
	m->user = user;
	return 0;
}

int snap_grpc_server_start(struct snap_grpc_server *s, int listen_fd, sl_error_t *err)
{
	s->lfd = listen_fd;
	s->started = true;
	if (pthread_create(&s->accept_thread, NULL, accept_thread, s) != 0) {
		s->started = false;
		return sl_error_set(err, SL_E_NOMEM, "gRPC: cannot start the accept thread");
	}
	return 0;
}

void snap_grpc_server_shutdown(struct snap_grpc_server *s, unsigned timeout_ms)
{
	if (atomic_exchange(&s->stopping, true))
		return;
	if (s->started) {
		shutdown(s->lfd, SHUT_RDWR);
		pthread_join(s->accept_thread, NULL);
	}
	if (s->lfd >= 0)
		close(s->lfd);
	s->lfd = -1;
	struct timespec dl;
	sl_deadline_ms(&dl, CLOCK_REALTIME, timeout_ms);
	pthread_mutex_lock(&s->lock);
	for (struct conn *c = s->conns; c; c = c->next) {
		pthread_mutex_lock(&c->qlock);
		c->goaway = true;
		pthread_mutex_unlock(&c->qlock);
		uint64_t one = 1;
		ssize_t w = write(c->efd, &one, sizeof(one));
		(void)w;
	}
	int wr = 0;
	while ((s->nconns || atomic_load(&s->inflight)) && wr != ETIMEDOUT)
		wr = pthread_cond_timedwait(&s->cond, &s->lock, &dl);
	/* Past the deadline: cut the connections; their threads end. */
	for (struct conn *c = s->conns; c; c = c->next)
		shutdown(c->fd, SHUT_RDWR);
	while (s->nconns || atomic_load(&s->inflight))
		pthread_cond_wait(&s->cond, &s->lock);
	pthread_mutex_unlock(&s->lock);
}

void snap_grpc_server_free(struct snap_grpc_server *s)
{
	if (!s)
		return;
	snap_grpc_server_shutdown(s, 5000);
	pthread_mutex_destroy(&s->lock);
	pthread_cond_destroy(&s->cond);
	free(s);
}

/* ---- fuzzing: the request path without sockets or threads -------------- */

void grpc_fuzz_session(const uint8_t *data, size_t len)
{
	struct snap_grpc_server srv = {.lfd = -1};
	pthread_mutex_init(&srv.lock, NULL);
	pthread_cond_init(&srv.cond, NULL);
	struct conn *c = calloc(1, sizeof(*c));
	if (!c)
		return;
	atomic_init(&c->refs, 1);
	c->s = &srv;
	c->fd = c->efd = -1;
	pthread_mutex_init(&c->qlock, NULL);
	if (new_session(c) == 0) {
		/* Two halves: a frame split across reads is the usual case. */
		size_t half = len / 2;
		if (nghttp2_session_mem_recv(c->session, data, half) >= 0)
			nghttp2_session_mem_recv(c->session, data + half, len - half);
		const uint8_t *out;
		while (nghttp2_session_mem_send(c->session, &out) > 0)
			;
		struct snap_grpc_call_state *cs = c->calls;
		c->calls = NULL;
		while (cs) {
			struct snap_grpc_call_state *next = cs->next;
			cs_unref(cs);
			cs = next;
		}
		nghttp2_session_del(c->session);
	}
	conn_unref(c);
	pthread_mutex_destroy(&srv.lock);
	pthread_cond_destroy(&srv.cond);
}
