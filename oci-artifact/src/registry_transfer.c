/* Registry client bulk transfers: verified parallel blob/range downloads into fds (parts hashed and written by writer threads), and blob uploads (skip, mount, POST+PUT or PATCH chunks). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "oci/registry.h"
#include "registry_int.h"

/* ---- part writers ----
 *
 * A fetch split into parts (how a pull receives chunks) hands each finished
 * part to writer threads, which hash it, compare it with its digest and only
 * then write it. The transfer thread is left with receiving and one memcpy:
 * hashing (0.7 s of CPU per GiB) and writing (the disk) overlap with the
 * network instead of stalling every transfer on the multi handle.
 *
 * Buffers are PBUF_SIZE and aligned for O_DIRECT, allocated on first use and
 * kept by the client; there are at most parallel + writers + 2 of them. A
 * receiving job holds at most one, so one is always free or on its way back:
 * when none is free the transfer thread waits (backpressure down to TCP)
 * without ever waiting on itself. */

#define PBUF_SIZE (2u << 20) /* a part up to this size goes through the writers */
#define PBUF_ALIGN 4096      /* O_DIRECT: the strictest block size in use */
#define SINK_WRITERS 4       /* > cores on small hosts: a writer blocked on the disk is not hashing */

struct reg_pbuf {
	struct reg_pbuf *next;
	uint8_t *p;
	size_t len;
	struct job *j;
	const struct oci_fetch_part *pt;
};

struct reg_sink {
	pthread_mutex_t mu;
	pthread_cond_t work; /* queue not empty, or stop */
	pthread_cond_t idle; /* a buffer came back */
	struct reg_pbuf *free, *qhead, *qtail;
	size_t nbufs, maxbufs;
	pthread_t th[SINK_WRITERS];
	unsigned nth;
	bool stop;
};

/* pwrite all of q at offset at; 0 or an errno. An fd opened O_DIRECT refuses
 * (EINVAL) a buffer, offset or length its filesystem cannot take directly:
 * then O_DIRECT is dropped on that fd and the write goes through the page
 * cache instead. */
static int pwrite_all(int fd, const uint8_t *q, size_t left, uint64_t at)
{
	bool buffered = false;

	while (left) {
		ssize_t w = pwrite(fd, q, left, (off_t)at);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && errno == EINVAL && !buffered) {
			int fl = fcntl(fd, F_GETFL);

			buffered = true;
			if (fl >= 0 && (fl & O_DIRECT) && fcntl(fd, F_SETFL, fl & ~O_DIRECT) == 0)
				continue;
			errno = EINVAL;
		}
		if (w <= 0)
			return w < 0 ? errno : EIO;
		q += w;
		left -= (size_t)w;
		at += (uint64_t)w;
	}
	return 0;
}

/* The fd of part pt of j's fetch. */
static int part_fd(struct job *j, const struct oci_fetch_part *pt, sl_error_t *err)
{
	struct oci_fetch *f = j->arg;
	int fd;

	if (pt->fd >= 0)
		return pt->fd;
	fd = f->open_part(f->open_arg, pt, err);
	if (fd < 0)
		sl_error_wrap(err, "registry %s: %s", j->c->registry, j->r.what);
	return fd;
}

/* With f->sync: the part's bytes are all written, make them durable. */
static int part_sync(struct job *j, int fd, sl_error_t *err)
{
	struct oci_fetch *f = j->arg;

	if (f->sync && fsync(fd) < 0)
		return sl_error_sys(err, "registry %s: %s: fsync", j->c->registry, j->r.what);
	return 0;
}

/* One finished part: verify, then write. Runs on a writer thread; j->r.what
 * and the part stay put while the part is in flight (the job drains its
 * parts before it restarts or ends). */
static void pbuf_process(struct reg_pbuf *b, sl_error_t *err, bool *retry)
{
	const struct oci_fetch_part *pt = b->pt;
	sl_digest got;
	int e, fd;

	sl_sha256(b->p, b->len, &got);
	if (!sl_digest_equal(&got, &pt->want)) {
		char have[SL_DIGEST_STRLEN], want[SL_DIGEST_STRLEN];

		sl_digest_format(&got, have);
		sl_digest_format(&pt->want, want);
		*retry = true;
		reg_error(b->j, err, SL_E_INTEGRITY, "bytes %" PRIu64 "-%" PRIu64 " have digest %s, want %s", pt->offset,
			  pt->offset + pt->length - 1, have, want);
		return;
	}
	fd = part_fd(b->j, pt, err);
	if (fd < 0)
		return;
	e = pwrite_all(fd, b->p, b->len, pt->dst_off);
	if (e)
		sl_error_errno(err, e, "registry %s: %s: writing a part at offset %" PRIu64, b->j->c->registry,
			       b->j->r.what, pt->dst_off);
	else
		part_sync(b->j, fd, err);
}

static void *sink_main(void *arg)
{
	struct reg_sink *s = arg;

	pthread_mutex_lock(&s->mu);
	for (;;) {
		struct reg_pbuf *b;
		struct job *j;
		sl_error_t err = NULL;
		bool retry = false;

		while (!s->qhead && !s->stop)
			pthread_cond_wait(&s->work, &s->mu);
		if (!s->qhead)
			break;
		b = s->qhead;
		s->qhead = b->next;
		if (!s->qhead)
			s->qtail = NULL;
		pthread_mutex_unlock(&s->mu);
		pbuf_process(b, &err, &retry);
		pthread_mutex_lock(&s->mu);
		j = b->j;
		if (err && !j->async_err) {
			j->async_err = err;
			j->async_retry = retry;
			err = NULL;
		}
		sl_error_free(&err);
		j->inflight--;
		b->j = NULL;
		b->next = s->free;
		s->free = b;
		pthread_cond_broadcast(&s->idle);
	}
	pthread_mutex_unlock(&s->mu);
	return NULL;
}

/* The client's writers, started on first use; NULL if none could start
 * (then parts are written inline, as before). */
static struct reg_sink *sink_get_writers(struct oci_client *c)
{
	struct reg_sink *s = c->sink;

	if (s)
		return s->nth ? s : NULL;
	s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	c->sink = s;
	pthread_mutex_init(&s->mu, NULL);
	pthread_cond_init(&s->work, NULL);
	pthread_cond_init(&s->idle, NULL);
	s->maxbufs = c->opts.parallel + SINK_WRITERS + 2;
	while (s->nth < SINK_WRITERS && pthread_create(&s->th[s->nth], NULL, sink_main, s) == 0)
		s->nth++;
	return s->nth ? s : NULL;
}

void reg_sink_free(struct oci_client *c)
{
	struct reg_sink *s = c->sink;

	if (!s)
		return;
	pthread_mutex_lock(&s->mu);
	s->stop = true;
	pthread_cond_broadcast(&s->work);
	pthread_mutex_unlock(&s->mu);
	for (unsigned i = 0; i < s->nth; i++)
		pthread_join(s->th[i], NULL);
	while (s->free) {
		struct reg_pbuf *b = s->free;

		s->free = b->next;
		free(b->p);
		free(b);
	}
	pthread_cond_destroy(&s->idle);
	pthread_cond_destroy(&s->work);
	pthread_mutex_destroy(&s->mu);
	free(s);
	c->sink = NULL;
}

/* A free buffer, waiting for one when all maxbufs are out (the time goes
 * to stats.part_wait_ns); NULL: out of memory with none allocated. */
static struct reg_pbuf *pbuf_take(struct oci_client *c)
{
	struct reg_sink *s = c->sink;
	struct reg_pbuf *b = NULL;
	uint64_t t0 = 0;

	pthread_mutex_lock(&s->mu);
	for (;;) {
		if (s->free) {
			b = s->free;
			s->free = b->next;
			break;
		}
		if (s->nbufs < s->maxbufs) {
			b = calloc(1, sizeof(*b));
			if (b && !(b->p = aligned_alloc(PBUF_ALIGN, PBUF_SIZE))) {
				free(b);
				b = NULL;
			}
			if (b) {
				s->nbufs++;
				break;
			}
			if (!s->nbufs)
				break;
			s->maxbufs = s->nbufs; /* make do with what there is */
		}
		t0 = t0 ? t0 : reg_now_ns();
		pthread_cond_wait(&s->idle, &s->mu);
	}
	pthread_mutex_unlock(&s->mu);
	if (t0)
		c->stats.part_wait_ns += reg_now_ns() - t0;
	if (b)
		b->next = NULL;
	return b;
}

/* Waits until none of j's parts is with the writers and gives back the one
 * it was filling; then j->async_err is the attempt's writer failure, if any. */
static void job_drain(struct job *j)
{
	struct reg_sink *s = j->c->sink;

	if (!s)
		return;
	pthread_mutex_lock(&s->mu);
	while (j->inflight)
		pthread_cond_wait(&s->idle, &s->mu);
	if (j->pbuf) {
		j->pbuf->next = s->free;
		s->free = j->pbuf;
		j->pbuf = NULL;
		pthread_cond_broadcast(&s->idle);
	}
	pthread_mutex_unlock(&s->mu);
}

/* Moves a writer failure of j's current attempt into *err. */
static bool job_async_failed(struct job *j, sl_error_t *err, bool *retry)
{
	struct reg_sink *s = j->c->sink;
	bool failed;

	if (!s || !j->async)
		return false;
	pthread_mutex_lock(&s->mu);
	failed = j->async_err != NULL;
	if (failed) {
		sl_error_free(err);
		*err = j->async_err;
		*retry = j->async_retry;
		j->async_err = NULL;
	}
	pthread_mutex_unlock(&s->mu);
	return failed;
}

/* Ends an attempt's writer work: drained, any failure dropped. */
static void job_async_reset(struct job *j)
{
	job_drain(j);
	sl_error_free(&j->async_err);
	j->async_retry = false;
}

static void pbuf_submit(struct job *j, const struct oci_fetch_part *pt)
{
	struct reg_sink *s = j->c->sink;
	struct reg_pbuf *b = j->pbuf;

	b->len = pt->length;
	b->pt = pt;
	b->j = j;
	b->next = NULL;
	j->pbuf = NULL;
	pthread_mutex_lock(&s->mu);
	j->inflight++;
	if (s->qtail)
		s->qtail->next = b;
	else
		s->qhead = b;
	s->qtail = b;
	pthread_cond_signal(&s->work);
	pthread_mutex_unlock(&s->mu);
}

/* ---- downloads ---- */

static int fetch_begin(struct job *j, sl_error_t *err)
{
	struct oci_fetch *f = j->arg;
	struct oci_client *c = j->c;
	struct req *r = &j->r;
	char d[SL_DIGEST_STRLEN];

	sl_digest_format(&f->blob, d);
	if (!f->length && f->offset)
		return sl_error_set(err, SL_E_INVALID, "registry %s: fetch of %s: offset %" PRIu64 " without a length",
				    c->registry, d, f->offset);
	if ((f->fd < 0 && !f->nparts) || f->offset > UINT64_MAX - f->length ||
	    f->dst_off > (uint64_t)INT64_MAX - f->length)
		return sl_error_set(err, SL_E_INVALID, "registry %s: fetch of %s: bad fd or range", c->registry, d);
	for (size_t i = 0; i < f->nparts; i++) {
		const struct oci_fetch_part *pt = &f->parts[i];
		uint64_t lo = f->length ? f->offset : 0, hi = f->length ? f->offset + f->length : UINT64_MAX;

		if ((pt->fd < 0 && !f->open_part) || !pt->length || pt->offset < lo || pt->offset > hi - pt->length ||
		    (i && pt->offset < f->parts[i - 1].offset + f->parts[i - 1].length) ||
		    pt->dst_off > (uint64_t)INT64_MAX - pt->length)
			return sl_error_set(err, SL_E_INVALID, "registry %s: fetch of %s: bad part %zu", c->registry,
					    d, i);
	}
	if (j->phash) {
		sl_digest junk;

		sl_sha256_final(j->phash, &junk);
		j->phash = NULL;
	}
	/* A retry must not race the writers of the attempt before it: they
	 * write into the same fds. */
	job_async_reset(j);
	j->async = false;
	if (f->nparts) {
		bool small = true;

		for (size_t i = 0; i < f->nparts && small; i++)
			small = f->parts[i].length <= PBUF_SIZE;
		j->async = small && sink_get_writers(c);
	}
	j->part = 0;
	if (j->hash) {
		sl_digest junk;

		sl_sha256_final(j->hash, &junk);
	}
	j->hash = sl_sha256_new();
	if (!j->hash)
		return sl_error_set(err, SL_E_NOMEM, "out of memory");
	j->pos = 0;
	j->wlen = 0; /* a retry rewrites the range from its start */
	j->skip = 0;
	j->limit = f->length ? f->length : UINT64_MAX;
	j->stop_at_limit = false;
	j->blob = &f->blob;
	j->total = f->length;
	reg_req(j, "GET", reg_url(c, "blobs/%s", d));
	r->follow = true;
	r->sink = SINK_FETCH;
	if (f->length) {
		snprintf(r->range, sizeof(r->range), "bytes=%" PRIu64 "-%" PRIu64, f->offset, f->offset + f->length - 1);
		snprintf(r->what, sizeof(r->what), "GET blob %s bytes %" PRIu64 "-%" PRIu64, d, f->offset,
			 f->offset + f->length - 1);
	} else {
		snprintf(r->what, sizeof(r->what), "GET blob %s", d);
	}
	return 0;
}

static void fetch_started(struct job *j, uint64_t total)
{
	j->total = total;
	j->started = true;
	reg_progress(j->c, OCI_EV_START, j->blob, 0, total, NULL);
}

/* First bytes of a 2xx: decide what of the body is ours. */
static int fetch_headers(struct job *j)
{
	struct oci_fetch *f = j->arg;
	struct req *r = &j->r;
	curl_off_t cl = -1;

	curl_easy_getinfo(j->eh, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl);
	if (r->status == 206) {
		const char *cr = reg_hdr(j, "Content-Range");
		uint64_t first, last, total;

		if (!f->length) {
			reg_error(j, &r->cb_err, SL_E_INVALID, "206 to a request without Range");
			r->cb_retry = true;
			return -1;
		}
		if (!cr || reg_parse_content_range(cr, &first, &last, &total) < 0 || first != f->offset ||
		    last != f->offset + f->length - 1) {
			reg_error(j, &r->cb_err, SL_E_INTEGRITY, "206 with Content-Range \"%.80s\", asked for %s",
				  cr ? cr : "", r->range);
			r->cb_retry = true;
			return -1;
		}
	} else if (r->status == 200) {
		if (f->length) {
			/* The registry (or a proxy) ignored Range: take our window
			 * out of the whole blob and hang up once we have it. */
			j->skip = f->offset;
			j->stop_at_limit = true;
		} else if (cl >= 0) {
			j->limit = (uint64_t)cl;
		}
	} else {
		reg_error(j, &r->cb_err, SL_E_INVALID, "unexpected status %ld", r->status);
		r->cb_retry = false;
		return -1;
	}
	fetch_started(j, f->length ? f->length : cl >= 0 ? (uint64_t)cl : 0);
	return 0;
}

#define WBUF_SIZE (1u << 20)

/* pwrite all of buf at destination offset at. */
static int write_at(struct job *j, const uint8_t *q, size_t left, uint64_t at, sl_error_t *err)
{
	struct oci_fetch *f = j->arg;
	int e = pwrite_all(f->fd, q, left, f->dst_off + at);

	if (e)
		return sl_error_errno(err, e, "registry %s: %s: writing at offset %" PRIu64, j->c->registry, j->r.what,
				      f->dst_off + at);
	return 0;
}

/* Writes the buffered bytes, which end at j->pos. */
static int fetch_flush(struct job *j, sl_error_t *err)
{
	if (write_at(j, j->wbuf, j->wlen, j->pos - j->wlen, err) < 0)
		return -1;
	j->wlen = 0;
	return 0;
}

/* Writes the buffered bytes of part pt, which start at offset off of it. */
static int write_part(struct job *j, const struct oci_fetch_part *pt, uint64_t off, sl_error_t *err)
{
	int fd = part_fd(j, pt, err), e;

	if (fd < 0)
		return -1;
	e = pwrite_all(fd, j->wbuf, j->wlen, pt->dst_off + off);
	if (e)
		return sl_error_errno(err, e, "registry %s: %s: writing a part at offset %" PRIu64, j->c->registry,
				      j->r.what, pt->dst_off + off);
	j->wlen = 0;
	return 0;
}

/* Bytes [j->pos, j->pos + n) of the window, for a fetch split into parts:
 * each part's bytes are hashed and buffered to its fd; a finished part is
 * checked at once (a bad one makes the whole fetch retry). */
static int parts_write(struct job *j, const uint8_t *p, size_t n, sl_error_t *err, bool *retry)
{
	struct oci_fetch *f = j->arg;
	uint64_t base = f->length ? f->offset : 0, at = base + j->pos;
	size_t i = 0;

	while (i < n && j->part < f->nparts) {
		const struct oci_fetch_part *pt = &f->parts[j->part];

		if (at < pt->offset) {
			uint64_t gap = pt->offset - at;
			size_t k = gap < n - i ? (size_t)gap : n - i;

			i += k;
			at += k;
			continue;
		}
		uint64_t into = at - pt->offset;
		size_t take = pt->length - into < n - i ? (size_t)(pt->length - into) : n - i;

		if (j->async) {
			if (!j->pbuf && !(j->pbuf = pbuf_take(j->c)))
				return sl_error_set(err, SL_E_NOMEM, "out of memory");
			memcpy(j->pbuf->p + into, p + i, take);
			i += take;
			at += take;
			if (into + take == pt->length) {
				pbuf_submit(j, pt);
				j->part++;
			}
			continue;
		}
		if (!j->phash && !(j->phash = sl_sha256_new()))
			return sl_error_set(err, SL_E_NOMEM, "out of memory");
		sl_sha256_update(j->phash, p + i, take);
		if (!j->wbuf && !(j->wbuf = aligned_alloc(PBUF_ALIGN, WBUF_SIZE)))
			return sl_error_set(err, SL_E_NOMEM, "out of memory");
		for (size_t done = 0; done < take;) {
			size_t room = WBUF_SIZE - j->wlen, k = take - done < room ? take - done : room;

			memcpy(j->wbuf + j->wlen, p + i + done, k);
			j->wlen += k;
			done += k;
			if (j->wlen == WBUF_SIZE || (into + done == pt->length && done == take)) {
				uint64_t end = into + done;

				if (write_part(j, pt, end - j->wlen, err) < 0)
					return -1;
			}
		}
		i += take;
		at += take;
		if (into + take == pt->length) {
			sl_digest got;

			sl_sha256_final(j->phash, &got);
			j->phash = NULL;
			if (!sl_digest_equal(&got, &pt->want)) {
				char have[SL_DIGEST_STRLEN], want[SL_DIGEST_STRLEN];

				sl_digest_format(&got, have);
				sl_digest_format(&pt->want, want);
				*retry = true;
				return reg_error(j, err, SL_E_INTEGRITY,
						 "bytes %" PRIu64 "-%" PRIu64 " have digest %s, want %s", pt->offset,
						 pt->offset + pt->length - 1, have, want);
			}
			if (f->sync) {
				int fd = part_fd(j, pt, err);

				if (fd < 0 || part_sync(j, fd, err) < 0)
					return -1;
			}
			j->part++;
		}
	}
	return 0;
}

static size_t fetch_write(struct job *j, const char *p, size_t n)
{
	struct oci_fetch *f = j->arg;
	struct req *r = &j->r;
	size_t in = n;

	j->c->stats.bytes_downloaded += n;
	if (j->skip) {
		size_t k = n < j->skip ? n : (size_t)j->skip;

		p += k;
		n -= k;
		j->skip -= k;
	}
	if (n > j->limit - j->pos) {
		if (!j->stop_at_limit) {
			reg_error(j, &r->cb_err, SL_E_INTEGRITY, "more than the %" PRIu64 " bytes asked for", j->limit);
			r->cb_retry = true;
			return 0;
		}
		n = (size_t)(j->limit - j->pos);
	}
	if (n && f->nparts) {
		bool retry = false;

		/* A writer found a bad part: stop now, not at the end. */
		if (job_async_failed(j, &r->cb_err, &retry)) {
			r->cb_retry = retry;
			return 0;
		}
		if (parts_write(j, (const uint8_t *)p, n, &r->cb_err, &retry) < 0) {
			r->cb_retry = retry;
			return 0;
		}
		j->pos += n;
	} else if (n) {
		if (!j->wbuf && !(j->wbuf = aligned_alloc(PBUF_ALIGN, WBUF_SIZE))) {
			sl_error_set(&r->cb_err, SL_E_NOMEM, "out of memory");
			r->cb_retry = false;
			return 0;
		}
		if (j->wlen + n > WBUF_SIZE && fetch_flush(j, &r->cb_err) < 0) {
			r->cb_retry = false;
			return 0;
		}
		if (n >= WBUF_SIZE) {
			/* Larger than the buffer (libcurl hands over at most
			 * 16 KiB, but nothing promises it): straight through. */
			if (write_at(j, (const uint8_t *)p, n, j->pos, &r->cb_err) < 0) {
				r->cb_retry = false;
				return 0;
			}
		} else {
			memcpy(j->wbuf + j->wlen, p, n);
			j->wlen += n;
		}
		sl_sha256_update(j->hash, p, n);
		j->pos += n;
	}
	if (n && j->pos - j->last_prog >= REG_PROGRESS_STEP) {
		j->last_prog = j->pos;
		reg_progress(j->c, OCI_EV_BYTES, j->blob, j->pos, j->total, NULL);
	}
	if (j->stop_at_limit && j->pos == j->limit) {
		r->cb_stop_ok = true; /* have it all; curl ends the transfer */
		return 0;
	}
	return in;
}

static enum step fetch_response(struct job *j, sl_error_t *err)
{
	struct oci_fetch *f = j->arg;
	struct req *r = &j->r;
	uint64_t expect;
	char have[SL_DIGEST_STRLEN], want[SL_DIGEST_STRLEN];
	sl_digest got;

	if (r->status != 200 && r->status != 206)
		return reg_http_error(j, err);
	if (!j->started)
		fetch_started(j, f->length);
	if (!f->nparts && j->wlen && fetch_flush(j, err) < 0)
		return STEP_FAIL;
	expect = f->length ? f->length : j->limit != UINT64_MAX ? j->limit : j->pos;
	if (j->pos != expect) {
		reg_error(j, err, SL_E_INTEGRITY, "truncated: %" PRIu64 " of %" PRIu64 " bytes", j->pos, expect);
		return STEP_RETRY;
	}
	sl_sha256_final(j->hash, &got);
	j->hash = NULL;
	if (f->nparts) {
		bool retry = false;

		/* Each part was checked as it completed (by the writers: wait for
		 * them); all must have. */
		job_drain(j);
		if (job_async_failed(j, err, &retry))
			return retry ? STEP_RETRY : STEP_FAIL;
		if (j->part != f->nparts) {
			reg_error(j, err, SL_E_INTEGRITY, "only %zu of %zu parts arrived", j->part, f->nparts);
			return STEP_RETRY;
		}
	} else if (!sl_digest_equal(&got, &f->want)) {
		sl_digest_format(&got, have);
		sl_digest_format(&f->want, want);
		reg_error(j, err, SL_E_INTEGRITY, "%" PRIu64 " bytes with digest %s, want %s", j->pos, have, want);
		return STEP_RETRY;
	}
	if (!f->nparts && part_sync(j, f->fd, err) < 0)
		return STEP_FAIL;
	if (j->pos != j->last_prog)
		reg_progress(j->c, OCI_EV_BYTES, j->blob, j->pos, j->total, NULL);
	reg_progress(j->c, OCI_EV_DONE, j->blob, j->pos, j->pos, NULL);
	return STEP_DONE;
}

static void fetch_finish(struct job *j, int rc, sl_error_t err)
{
	struct oci_fetch *f = j->arg;

	job_async_reset(j);
	f->rc = rc;
	f->err = err;
	free(j->wbuf);
	j->wbuf = NULL;
	j->wlen = 0;
	if (j->phash) {
		sl_digest junk;

		sl_sha256_final(j->phash, &junk);
		j->phash = NULL;
	}
}

static const struct job_ops fetch_ops = {
	.begin = fetch_begin,
	.response = fetch_response,
	.headers = fetch_headers,
	.write = fetch_write,
	.finish = fetch_finish,
};

static void fetch_init(void *ctx, size_t i, struct job *j)
{
	struct oci_fetch *f = ctx;

	j->ops = &fetch_ops;
	j->arg = &f[i];
}

/* *err for a batch: the first failure, and how many others there were. */
static int batch_error(const char *what, sl_error_t first, size_t failed, sl_error_t *err)
{
	if (!failed)
		return 0;
	if (failed > 1)
		return sl_error_set(err, first ? first->code : SL_E_IO, "%s (and %zu more failed %s)", sl_error_msg(first),
				    failed - 1, what);
	return sl_error_set(err, first ? first->code : SL_E_IO, "%s", sl_error_msg(first));
}

int oci_fetch_many(struct oci_client *c, struct oci_fetch *f, size_t n, sl_error_t *err)
{
	for (size_t i = 0; i < n; i++) {
		/* Result fields may hold anything on entry. */
		f[i].rc = -1;
		f[i].err = NULL;
	}
	reg_run(c, n, fetch_init, f);
	size_t failed = 0, first = n;

	for (size_t i = 0; i < n; i++) {
		if (f[i].rc < 0 && !failed++)
			first = i;
	}
	return batch_error("downloads", failed ? f[first].err : NULL, failed, err);
}

/* ---- uploads ---- */

enum { U_HEAD = 1, U_MOUNT, U_POST, U_PATCH, U_PUT };

static int up_begin(struct job *j, sl_error_t *err)
{
	struct oci_upload *u = j->arg;
	struct oci_client *c = j->c;
	struct req *r = &j->r;
	char d[SL_DIGEST_STRLEN];

	sl_digest_format(&u->digest, d);
	/* No segments: a blob only known by reference (a parent's layer), which
	 * must already be there or be mountable; checked after the HEAD. */
	if (u->mount_from && !reg_repo_ok(u->mount_from))
		return sl_error_set(err, SL_E_INVALID, "registry %s: upload of %s: bad mount repository \"%.255s\"",
				    c->registry, d, u->mount_from);
	u->skipped = u->mounted = false;
	j->blob = &u->digest;
	j->total = u->size;
	j->push = true;
	j->mount_from = u->mount_from;
	j->up_off = 0;
	j->ustate = U_HEAD;
	reg_req(j, "HEAD", reg_url(c, "blobs/%s", d));
	snprintf(r->what, sizeof(r->what), "HEAD blob %s", d);
	r->follow = true;
	return 0;
}

static void set_patch(struct job *j, char *url)
{
	struct oci_upload *u = j->arg;
	struct req *r = &j->r;
	uint64_t chunk = j->c->opts.chunk_upload_bytes;
	uint64_t n = u->size - j->up_off < chunk ? u->size - j->up_off : chunk;
	char d[SL_DIGEST_STRLEN];

	sl_digest_format(&u->digest, d);
	reg_req(j, "PATCH", url);
	snprintf(r->what, sizeof(r->what), "PATCH blob %s bytes %" PRIu64 "-%" PRIu64, d, j->up_off,
		 j->up_off + n - 1);
	r->content_type = "application/octet-stream";
	snprintf(r->content_range, sizeof(r->content_range), "%" PRIu64 "-%" PRIu64, j->up_off, j->up_off + n - 1);
	r->body = BODY_SEGS;
	r->segs = u->segs;
	r->nsegs = u->nsegs;
	r->body_off = j->up_off;
	r->body_len = n;
	j->ustate = U_PATCH;
}

/* Closes the session: PUT <location>[?&]digest=..., with the whole blob
 * when it was not PATCHed. */
static void set_put(struct job *j, char *url, bool body)
{
	struct oci_upload *u = j->arg;
	struct req *r = &j->r;
	char d[SL_DIGEST_STRLEN], kv[SL_DIGEST_STRLEN + 8];
	char *full;

	sl_digest_format(&u->digest, d);
	snprintf(kv, sizeof(kv), "digest=%s", d);
	full = url ? reg_add_query(url, kv) : NULL;
	free(url);
	reg_req(j, "PUT", full);
	snprintf(r->what, sizeof(r->what), "PUT blob %s", d);
	r->content_type = "application/octet-stream";
	if (body) {
		r->body = BODY_SEGS;
		r->segs = u->segs;
		r->nsegs = u->nsegs;
		r->body_off = 0;
		r->body_len = u->size;
	}
	j->ustate = U_PUT;
}

/* A lost session (purged, or cancelled by a stale Location) is worth a new
 * POST, although it is a 4xx. */
static enum step session_error(struct job *j, sl_error_t *err)
{
	struct req *r = &j->r;
	enum step step = reg_http_error(j, err);

	if (r->status == 416 ||
	    (r->status == 404 && r->buf && (strstr(r->buf, "BLOB_UPLOAD_UNKNOWN") || strstr(r->buf, "BLOB_UPLOAD_INVALID"))))
		return STEP_RETRY;
	return step;
}

static enum step up_response(struct job *j, sl_error_t *err)
{
	struct oci_upload *u = j->arg;
	struct oci_client *c = j->c;
	struct req *r = &j->r;
	long st = r->status;
	char d[SL_DIGEST_STRLEN];
	const char *loc;
	char *url;

	sl_digest_format(&u->digest, d);
	switch (j->ustate) {
	case U_HEAD:
		if (st == 200) {
			u->skipped = true;
			reg_progress(c, OCI_EV_SKIP, j->blob, u->size, u->size, NULL);
			return STEP_DONE;
		}
		if (st != 404)
			return reg_http_error(j, err);
		if (u->size && (!u->segs || !u->nsegs) && !u->mount_from) {
			reg_error(j, err, SL_E_NOT_FOUND,
				  "blob %s is not in the repository and this node has no bytes for it "
				  "(a parent's layer: push the parent to this repository first, or name it with --parent)",
				  d);
			return STEP_FAIL;
		}
		if (u->mount_from) {
			char from[3 * 256 + 1];

			reg_pct_encode(u->mount_from, from, sizeof(from));
			reg_req(j, "POST", reg_url(c, "blobs/uploads/?mount=%s&from=%s", d, from));
			snprintf(r->what, sizeof(r->what), "POST mount %s from %.100s", d, u->mount_from);
			j->ustate = U_MOUNT;
		} else {
			reg_req(j, "POST", reg_url(c, "blobs/uploads/"));
			snprintf(r->what, sizeof(r->what), "POST upload %s", d);
			j->ustate = U_POST;
		}
		return STEP_NEXT;
	case U_MOUNT:
		if (st == 201) {
			if (reg_check_dcd(j, &u->digest, err) < 0)
				return STEP_FAIL;
			u->mounted = true;
			reg_progress(c, OCI_EV_MOUNT, j->blob, u->size, u->size, NULL);
			return STEP_DONE;
		}
		/* 202: not mounted, but an upload session is open. */
		if (st == 202 && u->size && (!u->segs || !u->nsegs)) {
			reg_error(j, err, SL_E_NOT_FOUND,
				  "blob %s could not be mounted from %.100s and this node has no bytes for it", d,
				  u->mount_from);
			return STEP_FAIL;
		}
		/* fall through */
	case U_POST:
		if (st != 202)
			return reg_http_error(j, err);
		loc = reg_hdr(j, "Location");
		if (!loc) {
			reg_error(j, err, SL_E_INVALID, "202 without a Location");
			return STEP_FAIL;
		}
		url = reg_resolve(r->cur_url, loc, err);
		if (!url) {
			sl_error_wrap(err, "registry %s: %s", c->registry, r->what);
			return STEP_FAIL;
		}
		fetch_started(j, u->size);
		j->up_off = 0;
		if (u->size <= c->opts.chunk_upload_bytes)
			set_put(j, url, true);
		else
			set_patch(j, url);
		return STEP_NEXT;
	case U_PATCH: {
		uint64_t first, last, end = r->body_off + r->body_len - 1;
		const char *range = reg_hdr(j, "Range");

		if (st != 202)
			return session_error(j, err);
		/* 2.8 ignores Content-Range and appends: make sure it has exactly
		 * what we sent so far (a Range we cannot read proves nothing). */
		if (range && reg_parse_range(range, &first, &last) == 0 && (first != 0 || last != end)) {
			reg_error(j, err, SL_E_IO, "upload session has Range %.60s, expected 0-%" PRIu64, range, end);
			return STEP_RETRY;
		}
		/* Always the newest Location: it carries the session state. */
		loc = reg_hdr(j, "Location");
		url = loc ? reg_resolve(r->cur_url, loc, err) : strdup(r->cur_url);
		if (!url) {
			if (!*err)
				sl_error_set(err, SL_E_NOMEM, "out of memory");
			else
				sl_error_wrap(err, "registry %s: %s", c->registry, r->what);
			return STEP_FAIL;
		}
		j->up_off = end + 1;
		if (j->up_off < u->size)
			set_patch(j, url);
		else
			set_put(j, url, false);
		return STEP_NEXT;
	}
	case U_PUT:
		if (st != 201)
			return session_error(j, err);
		if (reg_check_dcd(j, &u->digest, err) < 0)
			return STEP_FAIL;
		c->stats.blob_uploads++;
		reg_progress(c, OCI_EV_DONE, j->blob, u->size, u->size, NULL);
		return STEP_DONE;
	}
	return STEP_FAIL;
}

static void up_finish(struct job *j, int rc, sl_error_t err)
{
	struct oci_upload *u = j->arg;

	u->rc = rc;
	u->err = err;
}

static const struct job_ops upload_ops = {
	.begin = up_begin,
	.response = up_response,
	.finish = up_finish,
};

static void upload_init(void *ctx, size_t i, struct job *j)
{
	struct oci_upload *u = ctx;

	j->ops = &upload_ops;
	j->arg = &u[i];
	j->push = true;
}

int oci_upload_many(struct oci_client *c, struct oci_upload *u, size_t n, sl_error_t *err)
{
	for (size_t i = 0; i < n; i++) {
		u[i].rc = -1;
		u[i].err = NULL;
		u[i].skipped = u[i].mounted = false;
	}
	reg_run(c, n, upload_init, u);
	size_t failed = 0, first = n;

	for (size_t i = 0; i < n; i++) {
		if (u[i].rc < 0 && !failed++)
			first = i;
	}
	return batch_error("uploads", failed ? u[first].err : NULL, failed, err);
}
