/* ttrpc client: unary calls from many threads over one connection, matched by stream id. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "ttrpc_int.h"
#include "sl/time.h"

/* A call waiting for its response. Lives on the caller's stack. */
struct pending {
	struct pending *next;
	uint32_t stream;
	unsigned gen; /* the connection it was sent on */
	bool done;
	struct ttrpc_response *resp;
	sl_error_t err; /* the response arrived but was unusable */
};

struct ttrpc_client {
	pthread_mutex_t mu;  /* everything below but fd writes */
	pthread_cond_t cv;   /* a response arrived or the connection ended */
	pthread_mutex_t wmu; /* one frame at a time; also held to swap fd */
	pthread_mutex_t rmu; /* one reconnect at a time */
	char *addr;          /* NULL: made from an fd, cannot redial */
	int flags;
	int fd;
	unsigned gen; /* bumped by every reconnect */
	bool closed;
	bool reader_joinable;
	pthread_t reader;
	uint32_t next_stream;
	struct pending *pending;
};

struct reader_arg {
	struct ttrpc_client *c;
	int fd;
	unsigned gen;
};

static void deliver(struct ttrpc_client *c, unsigned gen, const struct ttrpc_frame *f, int ev)
{
	struct ttrpc_response *resp = NULL;
	sl_error_t e = NULL;
	if (ev == TTRPC_READ_OVERSIZED)
		sl_error_set(&e, SL_E_LIMIT, "ttrpc response of %u bytes exceeds the %u-byte limit",
			     f->h.length, TTRPC_MESSAGE_LENGTH_MAX);
	else
		ttrpc_response_decode(f->data, f->h.length, &resp, &e);

	pthread_mutex_lock(&c->mu);
	struct pending *p = c->pending;
	while (p && !(p->stream == f->h.stream_id && p->gen == gen))
		p = p->next;
	if (p && !p->done) {
		p->done = true;
		p->resp = resp;
		p->err = e;
		resp = NULL;
		e = NULL;
		pthread_cond_broadcast(&c->cv);
	}
	pthread_mutex_unlock(&c->mu);
	/* Nobody waits any more (timed out): drop it. */
	free(resp);
	sl_error_free(&e);
}

static void *reader_main(void *arg)
{
	struct reader_arg a = *(struct reader_arg *)arg;
	free(arg);
	struct ttrpc_client *c = a.c;
	struct ttrpc_reader rd;
	ttrpc_reader_init(&rd);
	uint8_t buf[16384];
	bool fatal = false;
	while (!fatal) {
		ssize_t n = read(a.fd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		size_t off = 0;
		while (off < (size_t)n && !fatal) {
			struct ttrpc_frame f = { 0 };
			size_t used;
			sl_error_t e = NULL;
			int ev = ttrpc_reader_feed(&rd, buf + off, (size_t)n - off, &used, &f, &e);
			off += used;
			sl_error_free(&e);
			if (ev < 0) {
				fatal = true;
			} else if (ev != TTRPC_READ_NONE) {
				/* Only Response frames answer unary calls; Data and
				 * unknown types are skipped. */
				if (ev == TTRPC_READ_OVERSIZED || f.h.type == TTRPC_TYPE_RESPONSE)
					deliver(c, a.gen, &f, ev);
				free(f.data);
			}
		}
	}
	ttrpc_reader_release(&rd);
	pthread_mutex_lock(&c->mu);
	if (c->gen == a.gen) {
		c->closed = true;
		pthread_cond_broadcast(&c->cv);
	}
	pthread_mutex_unlock(&c->mu);
	return NULL;
}

/* Under wmu and mu. */
static int start_reader(struct ttrpc_client *c, sl_error_t *err)
{
	struct reader_arg *a = malloc(sizeof(*a));
	if (!a)
		return sl_error_set(err, SL_E_NOMEM, "ttrpc client: out of memory");
	*a = (struct reader_arg){ c, c->fd, c->gen };
	int r = pthread_create(&c->reader, NULL, reader_main, a);
	if (r != 0) {
		free(a);
		c->closed = true;
		return sl_error_errno(err, r, "ttrpc client: reader thread");
	}
	c->reader_joinable = true;
	return 0;
}

static int client_new(int fd, const char *addr, int flags, struct ttrpc_client **out,
		      sl_error_t *err)
{
	struct ttrpc_client *c = calloc(1, sizeof(*c));
	if (!c || (addr && !(c->addr = strdup(addr)))) {
		free(c);
		close(fd);
		return sl_error_set(err, SL_E_NOMEM, "ttrpc client: out of memory");
	}
	c->flags = flags;
	c->fd = fd;
	c->next_stream = 1;
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&c->cv, &ca);
	pthread_condattr_destroy(&ca);
	pthread_mutex_init(&c->mu, NULL);
	pthread_mutex_init(&c->wmu, NULL);
	pthread_mutex_init(&c->rmu, NULL);
	if (start_reader(c, err) < 0) {
		ttrpc_client_free(c);
		return -1;
	}
	*out = c;
	return 0;
}

int ttrpc_client_dial(const char *addr, int flags, struct ttrpc_client **out, sl_error_t *err)
{
	int fd;
	if (ttrpc_connect(addr, flags, &fd, err) < 0)
		return -1;
	return client_new(fd, addr, flags, out, err);
}

int ttrpc_client_from_fd(int fd, struct ttrpc_client **out, sl_error_t *err)
{
	return client_new(fd, NULL, 0, out, err);
}

bool ttrpc_client_closed(struct ttrpc_client *c)
{
	pthread_mutex_lock(&c->mu);
	bool r = c->closed;
	pthread_mutex_unlock(&c->mu);
	return r;
}

/* Under mu. */
static void unlink_pending(struct ttrpc_client *c, struct pending *p)
{
	for (struct pending **pp = &c->pending; *pp; pp = &(*pp)->next)
		if (*pp == p) {
			*pp = p->next;
			return;
		}
}

int ttrpc_client_call(struct ttrpc_client *c, const char *service, const char *method,
		      const uint8_t *req, size_t req_len, const char *ns, unsigned timeout_ms,
		      ttrpc_reply_t **reply, sl_error_t *err)
{
	*reply = NULL;
	struct ttrpc_kv md = { TTRPC_NAMESPACE_KEY, ns };
	struct ttrpc_request r = {
		.service = service,
		.method = method,
		.payload = req,
		.payload_len = req_len,
		.timeout_nano = (int64_t)timeout_ms * 1000000,
		.metadata = ns ? &md : NULL,
		.n_metadata = ns ? 1 : 0,
	};
	_cleanup_free_ uint8_t *body = NULL;
	size_t body_len;
	if (ttrpc_request_encode(&r, &body, &body_len, err) < 0)
		return sl_error_wrap(err, "ttrpc call %s/%s", service, method);
	if (body_len > TTRPC_MESSAGE_LENGTH_MAX)
		return sl_error_set(err, SL_E_LIMIT,
				    "ttrpc call %s/%s: request of %zu bytes exceeds the %u-byte limit",
				    service, method, body_len, TTRPC_MESSAGE_LENGTH_MAX);

	struct timespec deadline;
	sl_deadline_ms(&deadline, CLOCK_MONOTONIC, timeout_ms);

	struct pending p = { 0 };
	pthread_mutex_lock(&c->mu);
	if (c->closed) {
		pthread_mutex_unlock(&c->mu);
		return sl_error_errno(err, EPIPE, "ttrpc call %s/%s: connection closed", service,
				      method);
	}
	if (c->next_stream > UINT32_MAX - 2) {
		pthread_mutex_unlock(&c->mu);
		return sl_error_set(err, SL_E_LIMIT,
				    "ttrpc call %s/%s: stream ids exhausted on this connection",
				    service, method);
	}
	p.stream = c->next_stream;
	c->next_stream += 2;
	p.gen = c->gen;
	p.next = c->pending;
	c->pending = &p;
	pthread_mutex_unlock(&c->mu);

	_cleanup_free_ uint8_t *frame = NULL;
	size_t frame_len;
	int rc = ttrpc_frame_encode(p.stream, TTRPC_TYPE_REQUEST, 0, body, body_len, &frame,
				    &frame_len, err);
	if (rc == 0) {
		pthread_mutex_lock(&c->wmu);
		/* gen only changes under wmu: a reconnect since we took our
		 * stream id means this id belongs to the old connection. */
		if (c->gen != p.gen)
			rc = sl_error_errno(err, EPIPE, "connection replaced");
		else
			rc = ttrpc_write_all(c->fd, frame, frame_len, err);
		if (rc < 0 && c->gen == p.gen) {
			pthread_mutex_lock(&c->mu);
			c->closed = true;
			pthread_cond_broadcast(&c->cv);
			pthread_mutex_unlock(&c->mu);
			/* Wake the reader so a reconnect can join it. */
			shutdown(c->fd, SHUT_RDWR);
		}
		pthread_mutex_unlock(&c->wmu);
	}

	pthread_mutex_lock(&c->mu);
	int w = 0;
	while (rc == 0 && !p.done && !c->closed && c->gen == p.gen && w == 0)
		w = timeout_ms ? pthread_cond_timedwait(&c->cv, &c->mu, &deadline)
			       : pthread_cond_wait(&c->cv, &c->mu);
	unlink_pending(c, &p);
	pthread_mutex_unlock(&c->mu);

	if (rc < 0)
		return sl_error_wrap(err, "ttrpc call %s/%s", service, method);
	if (p.done) {
		if (p.err) {
			*err = p.err;
			return sl_error_wrap(err, "ttrpc call %s/%s", service, method);
		}
		*reply = p.resp;
		return 0;
	}
	if (w == ETIMEDOUT)
		return sl_error_errno(err, ETIMEDOUT, "ttrpc call %s/%s: no response within %u ms",
				      service, method, timeout_ms);
	return sl_error_errno(err, EPIPE, "ttrpc call %s/%s: connection closed", service, method);
}

int ttrpc_client_reconnect(struct ttrpc_client *c, sl_error_t *err)
{
	if (!c->addr)
		return sl_error_set(err, SL_E_UNSUPPORTED,
				    "ttrpc reconnect: the client wraps a socket it cannot redial");
	pthread_mutex_lock(&c->rmu);
	if (!ttrpc_client_closed(c)) {
		pthread_mutex_unlock(&c->rmu);
		return 0;
	}
	/* closed was set by the reader on its way out, or by a failed write
	 * that shut the socket down under it, so this join is short. */
	if (c->reader_joinable) {
		pthread_join(c->reader, NULL);
		c->reader_joinable = false;
	}
	int fd;
	if (ttrpc_connect(c->addr, c->flags, &fd, err) < 0) {
		pthread_mutex_unlock(&c->rmu);
		return sl_error_wrap(err, "ttrpc reconnect");
	}
	pthread_mutex_lock(&c->wmu);
	pthread_mutex_lock(&c->mu);
	close(c->fd);
	c->fd = fd;
	c->gen++;
	c->closed = false;
	c->next_stream = 1;
	pthread_cond_broadcast(&c->cv); /* old-connection waiters give up */
	int r = start_reader(c, err);
	pthread_mutex_unlock(&c->mu);
	pthread_mutex_unlock(&c->wmu);
	pthread_mutex_unlock(&c->rmu);
	return r;
}

void ttrpc_client_free(struct ttrpc_client *c)
{
	if (!c)
		return;
	pthread_mutex_lock(&c->mu);
	c->closed = true;
	pthread_cond_broadcast(&c->cv);
	pthread_mutex_unlock(&c->mu);
	shutdown(c->fd, SHUT_RDWR);
	if (c->reader_joinable)
		pthread_join(c->reader, NULL);
	close(c->fd);
	pthread_cond_destroy(&c->cv);
	pthread_mutex_destroy(&c->mu);
	pthread_mutex_destroy(&c->wmu);
	pthread_mutex_destroy(&c->rmu);
	free(c->addr);
	free(c);
}
