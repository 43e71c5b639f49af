/* spore-oci output: progress bars on a terminal, JSON event lines, or silence. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "ocli.h"

#define SHOWN 6 /* active transfers drawn under the total */

struct xfer {
	sl_digest blob;
	uint64_t done, total, t0;
	bool used;
};

struct ocli_out {
	bool json, tty;
	const char *verb;
	uint64_t total_bytes, total_blobs, done_bytes, done_blobs, t0, last_draw;
	struct xfer x[64];
	unsigned drawn; /* lines on screen */
};

struct ocli_out *ocli_out_new(bool json, const char *verb)
{
	struct ocli_out *o = calloc(1, sizeof(*o));
	if (!o)
		return NULL;
	o->json = json;
	o->tty = !json && isatty(2);
	o->verb = verb;
	o->t0 = ocli_now_ns();
	return o;
}

void ocli_out_total(struct ocli_out *o, uint64_t bytes, uint64_t blobs)
{
	if (o) {
		o->total_bytes = bytes;
		o->total_blobs = blobs;
	}
}

void ocli_event(struct ocli_out *o, const char *fmt, ...)
{
	if (!o || !o->json)
		return;
	va_list ap;
	va_start(ap, fmt);
	json_t *j = json_vpack_ex(NULL, 0, fmt, ap);
	va_end(ap);
	if (!j)
		return;
	char *s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(j);
	if (s) {
		printf("%s\n", s);
		fflush(stdout);
		free(s);
	}
}

static struct xfer *slot(struct ocli_out *o, const sl_digest *d, bool create)
{
	struct xfer *free_slot = NULL;
	for (unsigned i = 0; i < sizeof(o->x) / sizeof(o->x[0]); i++) {
		if (o->x[i].used && sl_digest_equal(&o->x[i].blob, d))
			return &o->x[i];
		if (!o->x[i].used && !free_slot)
			free_slot = &o->x[i];
	}
	if (create && free_slot) {
		memset(free_slot, 0, sizeof(*free_slot));
		free_slot->used = true;
		free_slot->blob = *d;
		free_slot->t0 = ocli_now_ns();
	}
	return create ? free_slot : NULL;
}

static void rate_eta(uint64_t done, uint64_t total, uint64_t t0, char *buf, size_t cap)
{
	double secs = (ocli_now_ns() - t0) / 1e9;
	double rate = secs > 0 ? done / secs : 0;
	if (rate > 0 && total > done)
		snprintf(buf, cap, "%7.1f MiB/s  ETA %4.0fs", rate / 1048576, (total - done) / rate);
	else
		snprintf(buf, cap, "%7.1f MiB/s", rate / 1048576);
}

static void draw(struct ocli_out *o, bool force)
{
	uint64_t now = ocli_now_ns();
	if (!o->tty || (!force && now - o->last_draw < 100000000ull))
		return;
	o->last_draw = now;
	for (unsigned i = 0; i < o->drawn; i++)
		fputs("\033[F\033[2K", stderr);
	o->drawn = 0;
	char re[64];
	unsigned shown = 0;
	for (unsigned i = 0; i < sizeof(o->x) / sizeof(o->x[0]) && shown < SHOWN; i++) {
		struct xfer *x = &o->x[i];
		if (!x->used)
			continue;
		char hex[SL_DIGEST_HEXLEN + 1];
		sl_digest_hex(&x->blob, hex);
		rate_eta(x->done, x->total, x->t0, re, sizeof(re));
		fprintf(stderr, "  %.12s  %8.1f / %8.1f MiB  %s\n", hex, x->done / 1048576.0, x->total / 1048576.0, re);
		shown++;
		o->drawn++;
	}
	rate_eta(o->done_bytes, o->total_bytes, o->t0, re, sizeof(re));
	fprintf(stderr, "%s: %llu/%llu blobs  %.1f / %.1f MiB  %s\n", o->verb, (unsigned long long)o->done_blobs,
		(unsigned long long)o->total_blobs, o->done_bytes / 1048576.0, o->total_bytes / 1048576.0, re);
	o->drawn++;
}

void ocli_progress(void *arg, const struct oci_progress *p)
{
	struct ocli_out *o = arg;
	if (!o)
		return;
	if (!p->blob) {
		/* Manifest and token requests: only their retries are news. */
		if (p->event == OCI_EV_RETRY)
			ocli_event(o, "{s:s, s:s}", "event", "retry", "msg", p->msg ? p->msg : "");
		return;
	}
	char dig[SL_DIGEST_STRLEN];
	sl_digest_format(p->blob, dig);
	struct xfer *x;
	switch (p->event) {
	case OCI_EV_START:
		x = slot(o, p->blob, true);
		if (x)
			x->total = p->total;
		ocli_event(o, "{s:s, s:s, s:I}", "event", strcmp(o->verb, "push") ? "fetch" : "upload", "digest", dig,
			   "size", (json_int_t)p->total);
		break;
	case OCI_EV_BYTES:
		x = slot(o, p->blob, false);
		if (x) {
			if (p->done > x->done)
				o->done_bytes += p->done - x->done;
			x->done = p->done;
		}
		break;
	case OCI_EV_DONE:
	case OCI_EV_SKIP:
	case OCI_EV_MOUNT:
		x = slot(o, p->blob, false);
		if (x) {
			if (p->event == OCI_EV_DONE && p->total > x->done)
				o->done_bytes += p->total - x->done;
			x->used = false;
		}
		o->done_blobs++;
		ocli_event(o, "{s:s, s:s, s:I}", "event",
			   p->event == OCI_EV_DONE ? "done" : p->event == OCI_EV_SKIP ? "skip" : "mount", "digest", dig,
			   "size", (json_int_t)p->total);
		break;
	case OCI_EV_RETRY:
		x = slot(o, p->blob, false);
		if (x) {
			o->done_bytes -= o->done_bytes >= x->done ? x->done : o->done_bytes;
			x->done = 0;
		}
		ocli_event(o, "{s:s, s:s, s:s}", "event", "retry", "digest", dig, "msg", p->msg ? p->msg : "");
		break;
	}
	draw(o, false);
}

void ocli_out_finish(struct ocli_out *o)
{
	if (!o || !o->tty)
		return;
	draw(o, true);
}

void ocli_out_free(struct ocli_out *o)
{
	free(o);
}
