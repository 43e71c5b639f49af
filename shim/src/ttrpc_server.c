/* ttrpc server: accepts connections, reads frames, runs each call on its own thread (docs/ttrpc.md). */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "ttrpc_int.h"
#include "sl/time.h"

/* Concurrency model: one detached reader thread per connection, one
 * detached worker thread per call in flight. All bookkeeping (counts,
 * the connection list, reference counts) is under the server's one mutex;
 * each connection has a write mutex so responses go out whole. The server
 * and each connection are freed by whoever drops the last reference, so a
 * handler that outlives a bounded shutdown never touches freed memory. */

struct handler {
	char *service;
	char *method;
	ttrpc_handler_fn fn;
	void *user;
};

struct ttrpc_server {
	pthread_mutex_t mu;
	pthread_cond_t cv; /* a thread ended */
	struct ttrpc_server_opts opts;

	struct handler *handlers; /* immutable once started */
	size_t n_handlers;

	int cancel_fd; /* eventfd, readable from shutdown on */
	int listen_fd;
	bool started;
	bool accepting; /* accept_thread is joinable */
	pthread_t accept_thread;

	/* under mu */
	uint64_t refused_reported; /* CLOCK_MONOTONIC ms of the last report; 0: none */
	unsigned refused_unreported;
	bool shutting_down;
	bool released;    /* ttrpc_server_free ran: the last thread frees */
	unsigned threads; /* reader and worker threads alive */
	unsigned inflight;
	struct ttrpc_conn *conns;
	unsigned n_conns;
};

struct ttrpc_conn {
	struct ttrpc_server *srv;
	struct ttrpc_conn *prev, *next;
	int fd;
	pthread_mutex_t wmu; /* one response frame at a time */
	struct ucred cred;
	/* under srv->mu */
	unsigned refs;    /* the reader + each call */
	unsigned calls;   /* calls in flight */
	bool reader_done; /* no more requests will be read */
};

struct job {
	struct ttrpc_conn *conn;
	const struct handler *h;
	struct ttrpc_request *req;
	uint32_t stream;
};

/* ---- lifetime -------------------------------------------------------------- */

static void server_destroy(struct ttrpc_server *s)
{
	for (size_t i = 0; i < s->n_handlers; i++) {
		free(s->handlers[i].service);
		free(s->handlers[i].method);
	}
	free(s->handlers);
	if (s->cancel_fd >= 0)
		close(s->cancel_fd);
	if (s->listen_fd >= 0)
		close(s->listen_fd);
	pthread_cond_destroy(&s->cv);
	pthread_mutex_destroy(&s->mu);
	free(s);
}

/* The last thing a server thread does: after the unlock it touches nothing
 * of the server, which the owner may then free. */
static void thread_exit(struct ttrpc_server *s)
{
	pthread_mutex_lock(&s->mu);
	s->threads--;
	bool last = s->released && s->threads == 0;
	pthread_cond_broadcast(&s->cv);
	pthread_mutex_unlock(&s->mu);
	if (last)
		server_destroy(s);
}

/* Under s->mu. */
static void conn_unref_locked(struct ttrpc_conn *c)
{
	if (--c->refs)
		return;
	struct ttrpc_server *s = c->srv;
	if (c->prev)
		c->prev->next = c->next;
	else
		s->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	s->n_conns--;
	close(c->fd);
	pthread_mutex_destroy(&c->wmu);
	free(c);
}

int ttrpc_server_new(const struct ttrpc_server_opts *opts, struct ttrpc_server **out,
		     sl_error_t *err)
{
	struct ttrpc_server *s = calloc(1, sizeof(*s));
	if (!s)
		return sl_error_set(err, SL_E_NOMEM, "ttrpc server: out of memory");
	if (opts)
		s->opts = *opts;
	if (!s->opts.max_conns)
		s->opts.max_conns = TTRPC_DEFAULT_MAX_CONNS;
	if (!s->opts.max_calls_per_conn)
		s->opts.max_calls_per_conn = TTRPC_DEFAULT_MAX_CALLS_PER_CONN;
	s->listen_fd = -1;
	s->cancel_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (s->cancel_fd < 0) {
		int e = errno;
		free(s);
		return sl_error_errno(err, e, "ttrpc server: eventfd");
	}
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&s->cv, &ca);
	pthread_condattr_destroy(&ca);
	pthread_mutex_init(&s->mu, NULL);
	*out = s;
	return 0;
}

/* ---- registration ----------------------------------------------------------- */

int ttrpc_server_register(struct ttrpc_server *s, const char *service, const char *method,
			  ttrpc_handler_fn fn, void *user, sl_error_t *err)
{
	if (s->started)
		return sl_error_set(err, SL_E_INVALID,
				    "ttrpc register %s/%s: the server is already serving", service,
				    method);
	if (!service || !*service || !method || !*method || !fn)
		return sl_error_set(err, SL_E_INVALID,
				    "ttrpc register: service, method and handler are required");
	for (size_t i = 0; i < s->n_handlers; i++)
		if (!strcmp(s->handlers[i].service, service) && !strcmp(s->handlers[i].method, method))
			return sl_error_set(err, SL_E_INVALID, "ttrpc register %s/%s: already registered",
					    service, method);
	struct handler *nh = realloc(s->handlers, (s->n_handlers + 1) * sizeof(*nh));
	if (!nh)
		return sl_error_set(err, SL_E_NOMEM, "ttrpc register: out of memory");
	s->handlers = nh;
	struct handler h = { strdup(service), strdup(method), fn, user };
	if (!h.service || !h.method) {
		free(h.service);
		free(h.method);
		return sl_error_set(err, SL_E_NOMEM, "ttrpc register: out of memory");
	}
	s->handlers[s->n_handlers++] = h;
	return 0;
}

int ttrpc_server_register_service(struct ttrpc_server *s, const char *service,
				  const struct ttrpc_method *methods, size_t n, void *user,
				  sl_error_t *err)
{
	for (size_t i = 0; i < n; i++)
		if (ttrpc_server_register(s, service, methods[i].method, methods[i].fn, user, err) < 0)
			return -1;
	return 0;
}

int ttrpc_server_register_task(struct ttrpc_server *s, const struct ttrpc_method *methods,
			       size_t n, void *user, sl_error_t *err)
{
	/* containerd 2.0 tries v3 first and falls back to v2 on UNIMPLEMENTED;
	 * serving both skips the round trip and works with 1.x. */
	if (ttrpc_server_register_service(s, TTRPC_TASK_V2_SERVICE, methods, n, user, err) < 0)
		return -1;
	return ttrpc_server_register_service(s, TTRPC_TASK_V3_SERVICE, methods, n, user, err);
}

/* ---- results ---------------------------------------------------------------- */

void ttrpc_result_error(struct ttrpc_result *res, int code, const char *fmt, ...)
{
	free(res->message);
	free(res->payload);
	res->payload = NULL;
	res->payload_len = 0;
	res->code = code;
	va_list ap;
	va_start(ap, fmt);
	if (vasprintf(&res->message, fmt, ap) < 0)
		res->message = NULL; /* the code alone still reaches the caller */
	va_end(ap);
}

void ttrpc_result_pack(struct ttrpc_result *res, const ProtobufCMessage *msg)
{
	sl_error_t e = NULL;
	uint8_t *buf;
	size_t len;
	if (ttrpc_pack(msg, &buf, &len, &e) < 0) {
		ttrpc_result_error(res, TTRPC_INTERNAL, "%s", sl_error_msg(e));
		sl_error_free(&e);
		return;
	}
	free(res->message);
	free(res->payload);
	res->message = NULL;
	res->code = TTRPC_OK;
	res->payload = buf;
	res->payload_len = len;
}

bool ttrpc_call_cancelled(const struct ttrpc_call *call)
{
	struct ttrpc_conn *c = call->conn;
	pthread_mutex_lock(&c->srv->mu);
	bool r = c->srv->shutting_down || c->reader_done;
	pthread_mutex_unlock(&c->srv->mu);
	return r;
}

int ttrpc_server_cancel_fd(const struct ttrpc_server *s)
{
	return s->cancel_fd;
}

unsigned ttrpc_server_inflight(struct ttrpc_server *s)
{
	pthread_mutex_lock(&s->mu);
	unsigned n = s->inflight;
	pthread_mutex_unlock(&s->mu);
	return n;
}

/* ---- calls ------------------------------------------------------------------ */

/* Writes one response under the connection's write lock. A peer that went
 * away makes this fail; nobody is left to tell, so that is not an error. */
static void respond(struct ttrpc_conn *c, uint32_t stream, int code, const char *msg,
		    const uint8_t *payload, size_t payload_len)
{
	struct ttrpc_response r = { code, msg, payload, payload_len };
	sl_error_t e = NULL;
	pthread_mutex_lock(&c->wmu);
	if (ttrpc_send_response(c->fd, stream, &r, &e) < 0 && e->code == SL_E_LIMIT) {
		sl_error_free(&e);
		char m[128];
		snprintf(m, sizeof(m), "response of %zu bytes exceeds the %u-byte message limit",
			 payload_len, TTRPC_MESSAGE_LENGTH_MAX);
		struct ttrpc_response er = { TTRPC_RESOURCE_EXHAUSTED, m, NULL, 0 };
		ttrpc_send_response(c->fd, stream, &er, &e);
	}
	pthread_mutex_unlock(&c->wmu);
	sl_error_free(&e);
}

static void *worker_main(void *arg)
{
	struct job *j = arg;
	struct ttrpc_conn *c = j->conn;
	struct ttrpc_server *s = c->srv;
	struct ttrpc_call call = {
		.service = j->req->service,
		.method = j->req->method,
		.payload = j->req->payload,
		.payload_len = j->req->payload_len,
		.ns = ttrpc_request_namespace(j->req),
		.timeout_nano = j->req->timeout_nano,
		.metadata = j->req->metadata,
		.n_metadata = j->req->n_metadata,
		.stream_id = j->stream,
		.peer_pid = c->cred.pid,
		.peer_uid = c->cred.uid,
		.peer_gid = c->cred.gid,
		.conn = c,
	};
	struct ttrpc_result res = { 0 };
	j->h->fn(&call, &res, j->h->user);
	respond(c, call.stream_id, res.code, res.message, res.code == TTRPC_OK ? res.payload : NULL,
		res.code == TTRPC_OK ? res.payload_len : 0);
	free(res.message);
	free(res.payload);
	free(j->req);
	free(j);

	pthread_mutex_lock(&s->mu);
	c->calls--;
	s->inflight--;
	conn_unref_locked(c);
	pthread_mutex_unlock(&s->mu);
	thread_exit(s);
	return NULL;
}

static const struct handler *lookup(struct ttrpc_server *s, const struct ttrpc_request *req,
				    bool *service_known)
{
	*service_known = false;
	for (size_t i = 0; i < s->n_handlers; i++) {
		if (strcmp(s->handlers[i].service, req->service))
			continue;
		*service_known = true;
		if (!strcmp(s->handlers[i].method, req->method))
			return &s->handlers[i];
	}
	return NULL;
}

/* Takes ownership of req. */
static void dispatch(struct ttrpc_conn *c, uint32_t stream, struct ttrpc_request *req)
{
	struct ttrpc_server *s = c->srv;
	char m[256];
	bool known;
	const struct handler *h = lookup(s, req, &known);
	if (!h) {
		snprintf(m, sizeof(m), "%s %s", known ? "method" : "service",
			 known ? req->method : req->service);
		free(req);
		respond(c, stream, TTRPC_UNIMPLEMENTED, m, NULL, 0);
		return;
	}
	struct job *j = malloc(sizeof(*j));
	if (!j) {
		free(req);
		respond(c, stream, TTRPC_RESOURCE_EXHAUSTED, "out of memory", NULL, 0);
		return;
	}
	*j = (struct job){ c, h, req, stream };

	pthread_mutex_lock(&s->mu);
	int code = TTRPC_OK;
	if (s->shutting_down) {
		code = TTRPC_UNAVAILABLE;
		snprintf(m, sizeof(m), "ttrpc: server is shutting down");
	} else if (c->calls >= s->opts.max_calls_per_conn) {
		code = TTRPC_RESOURCE_EXHAUSTED;
		snprintf(m, sizeof(m), "ttrpc: %u calls already in flight on this connection",
			 c->calls);
	} else {
		c->calls++;
		c->refs++;
		s->inflight++;
		s->threads++;
	}
	pthread_mutex_unlock(&s->mu);
	if (code == TTRPC_OK) {
		pthread_attr_t a;
		pthread_t t;
		pthread_attr_init(&a);
		pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
		int r = pthread_create(&t, &a, worker_main, j);
		pthread_attr_destroy(&a);
		if (r == 0)
			return;
		pthread_mutex_lock(&s->mu);
		c->calls--;
		c->refs--; /* the reader still holds one */
		s->inflight--;
		s->threads--;
		pthread_cond_broadcast(&s->cv);
		pthread_mutex_unlock(&s->mu);
		code = TTRPC_RESOURCE_EXHAUSTED;
		snprintf(m, sizeof(m), "ttrpc: cannot start a call thread: %s", strerror(r));
	}
	free(j->req);
	free(j);
	respond(c, stream, code, m, NULL, 0);
}

/* ---- connections ------------------------------------------------------------- */

static void handle_frame(struct ttrpc_conn *c, uint32_t *last_stream, int ev,
			 struct ttrpc_frame *f, sl_error_t *err, bool *fatal)
{
	struct ttrpc_verdict v;
	int r = ttrpc_frame_verdict(last_stream, ev, f, &v, err);
	free(f->data);
	f->data = NULL;
	if (r < 0) {
		*fatal = true;
		return;
	}
	switch (v.action) {
	case TTRPC_ACT_IGNORE:
		break;
	case TTRPC_ACT_REPLY:
		respond(c, v.stream_id, v.code, v.msg, NULL, 0);
		break;
	case TTRPC_ACT_DISPATCH:
		dispatch(c, v.stream_id, v.req);
		break;
	}
}

#define READ_CHUNK (64u << 10)

static void *reader_main(void *arg)
{
	struct ttrpc_conn *c = arg;
	struct ttrpc_server *s = c->srv;
	struct ttrpc_reader rd;
	uint32_t last_stream = 0;
	uint8_t *buf = malloc(READ_CHUNK);
	ttrpc_reader_init(&rd);
	bool fatal = buf == NULL;
	while (!fatal) {
		ssize_t n = read(c->fd, buf, READ_CHUNK);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break; /* EOF, shutdown or a reset: the connection ends */
		size_t off = 0;
		while (off < (size_t)n && !fatal) {
			struct ttrpc_frame f = { 0 };
			size_t used;
			sl_error_t e = NULL;
			int ev = ttrpc_reader_feed(&rd, buf + off, (size_t)n - off, &used, &f, &e);
			off += used;
			if (ev < 0)
				fatal = true;
			else if (ev != TTRPC_READ_NONE)
				handle_frame(c, &last_stream, ev, &f, &e, &fatal);
			sl_error_free(&e);
		}
	}
	free(buf);
	ttrpc_reader_release(&rd);

	pthread_mutex_lock(&s->mu);
	c->reader_done = true;
	conn_unref_locked(c);
	pthread_mutex_unlock(&s->mu);
	thread_exit(s);
	return NULL;
}

/* At most one report a second: a local user can connect as often as it
 * likes, and each report is a log line. */
static void report_refusal(struct ttrpc_server *s, const struct ucred *cred)
{
	if (!s->opts.refused)
		return;
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	uint64_t now = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u + 1;
	pthread_mutex_lock(&s->mu);
	bool report = !s->refused_reported || now >= s->refused_reported + 1000;
	unsigned more = s->refused_unreported;
	if (report) {
		s->refused_reported = now;
		s->refused_unreported = 0;
	} else {
		s->refused_unreported++;
	}
	pthread_mutex_unlock(&s->mu);
	if (report)
		s->opts.refused(s->opts.refused_arg, cred->uid, cred->pid, more);
}

/* Takes ownership of fd in every case. */
static int serve_conn(struct ttrpc_server *s, int fd, sl_error_t *err)
{
	struct ucred cred = { 0 };
	socklen_t cl = sizeof(cred);
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) < 0) {
		int e = errno;
		close(fd);
		return sl_error_errno(err, e, "ttrpc: SO_PEERCRED");
	}
	if (s->opts.require_peer_uid && cred.uid != s->opts.peer_uid && !(s->opts.allow_root && cred.uid == 0)) {
		close(fd);
		report_refusal(s, &cred);
		return sl_error_set(err, SL_E_INVALID,
				    "ttrpc: peer pid %d has uid %u, only uid %u may connect",
				    (int)cred.pid, (unsigned)cred.uid, (unsigned)s->opts.peer_uid);
	}
	struct ttrpc_conn *c = calloc(1, sizeof(*c));
	if (!c) {
		close(fd);
		return sl_error_set(err, SL_E_NOMEM, "ttrpc: out of memory");
	}
	c->srv = s;
	c->fd = fd;
	c->cred = cred;
	c->refs = 1; /* the reader's */
	pthread_mutex_init(&c->wmu, NULL);

	pthread_mutex_lock(&s->mu);
	if (s->shutting_down || s->n_conns >= s->opts.max_conns) {
		bool down = s->shutting_down;
		unsigned n = s->n_conns;
		pthread_mutex_unlock(&s->mu);
		pthread_mutex_destroy(&c->wmu);
		free(c);
		close(fd);
		if (down)
			return sl_error_set(err, SL_E_INVALID, "ttrpc: server is shutting down");
		return sl_error_set(err, SL_E_LIMIT, "ttrpc: %u connections already open (cap)", n);
	}
	c->next = s->conns;
	if (s->conns)
		s->conns->prev = c;
	s->conns = c;
	s->n_conns++;
	s->threads++;
	pthread_mutex_unlock(&s->mu);

	pthread_attr_t a;
	pthread_t t;
	pthread_attr_init(&a);
	pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
	int r = pthread_create(&t, &a, reader_main, c);
	pthread_attr_destroy(&a);
	if (r != 0) {
		pthread_mutex_lock(&s->mu);
		s->threads--;
		conn_unref_locked(c); /* closes fd */
		pthread_cond_broadcast(&s->cv);
		pthread_mutex_unlock(&s->mu);
		return sl_error_errno(err, r, "ttrpc: reader thread");
	}
	return 0;
}

int ttrpc_server_serve_fd(struct ttrpc_server *s, int fd, sl_error_t *err)
{
	s->started = true;
	return serve_conn(s, fd, err);
}

static void *accept_main(void *arg)
{
	struct ttrpc_server *s = arg;
	struct pollfd p[2] = { { s->listen_fd, POLLIN, 0 }, { s->cancel_fd, POLLIN, 0 } };
	for (;;) {
		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (p[1].revents)
			break;
		if (!p[0].revents)
			continue;
		int fd = accept4(s->listen_fd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0) {
			/* Out of fds or memory: back off instead of spinning, and
			 * keep the listener (the condition may pass). */
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
				poll(&p[1], 1, 100);
			continue;
		}
		/* A refused peer (wrong uid, too many connections) is closed:
		 * the library does not log, and the server goes on. */
		sl_error_t e = NULL;
		serve_conn(s, fd, &e);
		sl_error_free(&e);
	}
	return NULL;
}

int ttrpc_server_start(struct ttrpc_server *s, int listen_fd, sl_error_t *err)
{
	if (s->accepting || s->shutting_down) {
		close(listen_fd);
		return sl_error_set(err, SL_E_INVALID, "ttrpc server: already started or shut down");
	}
	s->listen_fd = listen_fd;
	s->started = true;
	int r = pthread_create(&s->accept_thread, NULL, accept_main, s);
	if (r != 0)
		return sl_error_errno(err, r, "ttrpc server: accept thread");
	s->accepting = true;
	return 0;
}

/* ---- shutdown ---------------------------------------------------------------- */

int ttrpc_server_shutdown(struct ttrpc_server *s, unsigned timeout_ms, sl_error_t *err)
{
	pthread_mutex_lock(&s->mu);
	if (!s->shutting_down) {
		s->shutting_down = true;
		/* Adding 1 to a fresh eventfd cannot fail. */
		eventfd_write(s->cancel_fd, 1);
	}
	pthread_mutex_unlock(&s->mu);

	if (s->accepting) {
		pthread_join(s->accept_thread, NULL);
		s->accepting = false;
	}
	if (s->listen_fd >= 0) {
		close(s->listen_fd);
		s->listen_fd = -1;
	}

	struct timespec deadline;
	sl_deadline_ms(&deadline, CLOCK_MONOTONIC, timeout_ms);

	pthread_mutex_lock(&s->mu);
	/* Stop reading: readers see EOF and end, while calls in flight can
	 * still write their responses. */
	for (struct ttrpc_conn *c = s->conns; c; c = c->next)
		shutdown(c->fd, SHUT_RD);
	int r = 0;
	while (s->threads > 0 && r == 0)
		r = pthread_cond_timedwait(&s->cv, &s->mu, &deadline);
	unsigned left = s->inflight, threads = s->threads;
	if (threads > 0) {
		/* Unblock writers stuck on peers that stopped reading and tell
		 * the peers we are gone; the handlers keep their references. */
		for (struct ttrpc_conn *c = s->conns; c; c = c->next)
			shutdown(c->fd, SHUT_RDWR);
	}
	pthread_mutex_unlock(&s->mu);
	if (threads > 0)
		return sl_error_set(err, SL_E_LIMIT,
				    "ttrpc server shutdown: %u call(s) still running after %u ms", left,
				    timeout_ms);
	return 0;
}

void ttrpc_server_free(struct ttrpc_server *s)
{
	if (!s)
		return;
	pthread_mutex_lock(&s->mu);
	bool down = s->shutting_down;
	pthread_mutex_unlock(&s->mu);
	/* After an explicit shutdown (even one that timed out) there is
	 * nothing left to wait for here: late handlers free the server. */
	if (s->started && !down) {
		sl_error_t e = NULL;
		ttrpc_server_shutdown(s, 5000, &e);
		sl_error_free(&e);
	}
	pthread_mutex_lock(&s->mu);
	s->released = true;
	bool now = s->threads == 0;
	pthread_mutex_unlock(&s->mu);
	if (now)
		server_destroy(s);
}
