/* Kubernetes watch streams: newline-delimited JSON events, split into bounded lines and parsed. */
#ifndef SOP_WATCH_H
#define SOP_WATCH_H

#include <jansson.h>
#include <stddef.h>
#include "sl/error.h"

/* Longest event line accepted: one object (a Pod is a few KiB; the API
 * server's own request limit is 3 MiB), so a stream that never sends a
 * newline cannot grow memory without bound. */
#define SOP_WATCH_LINE_MAX (4u << 20)

enum sop_watch_type {
	SOP_EV_ADDED = 1,
	SOP_EV_MODIFIED,
	SOP_EV_DELETED,
	SOP_EV_BOOKMARK,
	SOP_EV_ERROR,
};

struct sop_watch_event {
	enum sop_watch_type type;
	json_t *object;              /* owned: the object (or the Status for ERROR) */
	const char *resource_version; /* borrowed from object's metadata; NULL if none */
	long code;                   /* ERROR: Status.code (410 for "too old resource version") */
	const char *message;         /* ERROR: Status.message, borrowed */
};

/* Parses one event line ({"type":..., "object":{...}}). ADDED, MODIFIED,
 * DELETED and BOOKMARK need object.metadata.resourceVersion; ERROR needs a
 * Status object. Free ev with sop_watch_event_clear. */
int sop_watch_event_parse(const char *line, size_t len, struct sop_watch_event *ev, sl_error_t *err);
void sop_watch_event_clear(struct sop_watch_event *ev);
const char *sop_watch_type_name(enum sop_watch_type t);

/* Accumulates stream bytes and hands out complete lines (without '\n';
 * a trailing '\r' is dropped, empty lines are skipped). */
struct sop_linebuf {
	char *buf;
	size_t len, cap, max;
};
/* Called per line; returning -1 (with *err set) stops the feed. */
typedef int (*sop_line_fn)(void *arg, const char *line, size_t len, sl_error_t *err);
void sop_linebuf_init(struct sop_linebuf *lb, size_t max);
/* Feeds n bytes; -1 with SL_E_LIMIT when a line would exceed max, or the callback's error. */
int sop_linebuf_feed(struct sop_linebuf *lb, const char *data, size_t n, sop_line_fn fn, void *arg, sl_error_t *err);
/* Bytes of an unfinished line still held (a stream that ends mid-line). */
size_t sop_linebuf_pending(const struct sop_linebuf *lb);
void sop_linebuf_free(struct sop_linebuf *lb);

#endif
