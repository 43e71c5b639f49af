/* Watch stream framing (bounded line buffer) and event parsing. */
#include <stdlib.h>
#include <string.h>

#include "sl/json.h"
#include "sop_watch.h"

const char *sop_watch_type_name(enum sop_watch_type t)
{
	switch (t) {
	case SOP_EV_ADDED: return "ADDED";
	case SOP_EV_MODIFIED: return "MODIFIED";
	case SOP_EV_DELETED: return "DELETED";
	case SOP_EV_BOOKMARK: return "BOOKMARK";
	case SOP_EV_ERROR: return "ERROR";
	}
	return "?";
}

void sop_watch_event_clear(struct sop_watch_event *ev)
{
	json_decref(ev->object);
	memset(ev, 0, sizeof(*ev));
}

int sop_watch_event_parse(const char *line, size_t len, struct sop_watch_event *ev, sl_error_t *err)
{
	char show[SL_SHOW_BUF];
	memset(ev, 0, sizeof(*ev));
	_cleanup_json_ json_t *j = NULL;
	if (sl_json_parse(line, len, "watch event", &j, err) < 0)
		return -1;
	if (!json_is_object(j))
		return sl_error_set(err, SL_E_INVALID, "watch event: not a JSON object");
	const char *type = json_string_value(json_object_get(j, "type"));
	json_t *obj = json_object_get(j, "object");
	if (!type)
		return sl_error_set(err, SL_E_INVALID, "watch event: no type");
	if (!json_is_object(obj))
		return sl_error_set(err, SL_E_INVALID, "watch event %s: object missing or not an object",
				    (sl_show(type, strlen(type), show), show));
	if (strcmp(type, "ADDED") == 0)
		ev->type = SOP_EV_ADDED;
	else if (strcmp(type, "MODIFIED") == 0)
		ev->type = SOP_EV_MODIFIED;
	else if (strcmp(type, "DELETED") == 0)
		ev->type = SOP_EV_DELETED;
	else if (strcmp(type, "BOOKMARK") == 0)
		ev->type = SOP_EV_BOOKMARK;
	else if (strcmp(type, "ERROR") == 0)
		ev->type = SOP_EV_ERROR;
	else {
		sl_show(type, strlen(type), show);
		return sl_error_set(err, SL_E_INVALID, "watch event: unknown type \"%s\"", show);
	}
	if (ev->type == SOP_EV_ERROR) {
		/* A metav1.Status: {"kind":"Status","code":410,"reason":"Expired","message":...} */
		json_t *code = json_object_get(obj, "code");
		if (!json_is_integer(code))
			return sl_error_set(err, SL_E_INVALID, "watch event ERROR: the Status has no integer code");
		ev->code = (long)json_integer_value(code);
		ev->message = json_string_value(json_object_get(obj, "message"));
	} else {
		json_t *md = json_object_get(obj, "metadata");
		ev->resource_version = json_string_value(json_object_get(md, "resourceVersion"));
		if (!ev->resource_version || !*ev->resource_version)
			return sl_error_set(err, SL_E_INVALID, "watch event %s: object without metadata.resourceVersion",
					    type);
		if (ev->type != SOP_EV_BOOKMARK &&
		    (!json_is_string(json_object_get(md, "name")) || !json_is_object(md)))
			return sl_error_set(err, SL_E_INVALID, "watch event %s: object without metadata.name", type);
	}
	ev->object = json_incref(obj);
	return 0;
}

void sop_linebuf_init(struct sop_linebuf *lb, size_t max)
{
	memset(lb, 0, sizeof(*lb));
	lb->max = max ? max : SOP_WATCH_LINE_MAX;
}

void sop_linebuf_free(struct sop_linebuf *lb)
{
	free(lb->buf);
	memset(lb, 0, sizeof(*lb));
}

size_t sop_linebuf_pending(const struct sop_linebuf *lb)
{
	return lb->len;
}

static int emit(const char *line, size_t len, sop_line_fn fn, void *arg, sl_error_t *err)
{
	if (len && line[len - 1] == '\r')
		len--;
	if (!len)
		return 0;
	return fn(arg, line, len, err);
}

static int append(struct sop_linebuf *lb, const char *data, size_t n, sl_error_t *err)
{
	if (lb->len + n > lb->max)
		return sl_error_set(err, SL_E_LIMIT, "watch stream: an event line longer than %zu bytes", lb->max);
	if (lb->len + n > lb->cap) {
		size_t cap = lb->cap ? lb->cap : 4096;
		while (cap < lb->len + n)
			cap *= 2;
		if (cap > lb->max)
			cap = lb->max;
		char *nb = realloc(lb->buf, cap);
		if (!nb)
			return sl_error_set(err, SL_E_NOMEM, "watch stream: out of memory");
		lb->buf = nb;
		lb->cap = cap;
	}
	memcpy(lb->buf + lb->len, data, n);
	lb->len += n;
	return 0;
}

int sop_linebuf_feed(struct sop_linebuf *lb, const char *data, size_t n, sop_line_fn fn, void *arg, sl_error_t *err)
{
	while (n) {
		const char *nl = memchr(data, '\n', n);
		if (!nl)
			return append(lb, data, n, err);
		size_t part = (size_t)(nl - data);
		if (lb->len) {
			/* Finish the held line; the bound covers the whole line. */
			if (append(lb, data, part, err) < 0)
				return -1;
			size_t len = lb->len;
			lb->len = 0;
			if (emit(lb->buf, len, fn, arg, err) < 0)
				return -1;
		} else {
			if (part > lb->max)
				return sl_error_set(err, SL_E_LIMIT, "watch stream: an event line longer than %zu bytes",
						    lb->max);
			if (emit(data, part, fn, arg, err) < 0)
				return -1;
		}
		data = nl + 1;
		n -= part + 1;
	}
	return 0;
}
