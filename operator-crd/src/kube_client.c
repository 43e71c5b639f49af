/* API verbs over the transport: one-shot requests with bounded bodies, paged lists, and streamed watches. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kube_int.h"
#include "sl/json.h"

struct body {
	char *buf;
	size_t len, cap, max;
	bool over;
};

static size_t body_write(char *data, size_t sz, size_t nm, void *arg)
{
	struct body *b = arg;
	size_t n = sz * nm;
	if (b->len + n > b->max) {
		b->over = true;
		return 0; /* curl fails the transfer: CURLE_WRITE_ERROR */
	}
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 8192;
		while (cap < b->len + n + 1)
			cap *= 2;
		char *nb = realloc(b->buf, cap);
		if (!nb)
			return 0;
		b->buf = nb;
		b->cap = cap;
	}
	memcpy(b->buf + b->len, data, n);
	b->len += n;
	b->buf[b->len] = 0;
	return n;
}

static int request_once(struct sop_kube *k, const char *method, const char *path, const char *content_type,
			const char *payload, long *status, struct body *resp, char **url_out, sl_error_t *err)
{
	struct kube_req r;
	*status = 0;
	/* A token file that cannot be read this instant (the kubelet swaps it)
	 * leaves the previous token in use. */
	sl_error_t terr = NULL;
	kube_token_refresh(k, false, &terr);
	sl_error_free(&terr);
	if (kube_req_init(k, &r, method, path, content_type, err) < 0) {
		kube_req_free(&r);
		return -1;
	}
	curl_easy_setopt(r.h, CURLOPT_TIMEOUT, (long)SOP_KUBE_TIMEOUT_S);
	curl_easy_setopt(r.h, CURLOPT_WRITEFUNCTION, body_write);
	curl_easy_setopt(r.h, CURLOPT_WRITEDATA, resp);
	if (payload) {
		curl_easy_setopt(r.h, CURLOPT_POSTFIELDS, payload);
		curl_easy_setopt(r.h, CURLOPT_POSTFIELDSIZE, (long)strlen(payload));
	}
	CURLcode cc = curl_easy_perform(r.h);
	if (cc != CURLE_OK) {
		int rc = resp->over ? sl_error_set(err, SL_E_LIMIT, "%s %s: response larger than %zu bytes", method,
						   r.url, resp->max)
				    : sl_error_set(err, SL_E_IO, "%s %s: %s", method, r.url,
						   r.errbuf[0] ? r.errbuf : curl_easy_strerror(cc));
		kube_count(k, 0);
		kube_req_free(&r);
		return rc;
	}
	curl_easy_getinfo(r.h, CURLINFO_RESPONSE_CODE, status);
	kube_count(k, *status);
	*url_out = sl_steal_ptr(r.url);
	kube_req_free(&r);
	return 0;
}

int sop_kube_request(struct sop_kube *k, const char *method, const char *path, const char *content_type,
		     json_t *body, long *status, json_t **out, sl_error_t *err)
{
	_cleanup_free_ char *payload = NULL;
	long st_local;
	if (!status)
		status = &st_local;
	if (out)
		*out = NULL;
	if (body && !(payload = json_dumps(body, JSON_COMPACT)))
		return sl_error_set(err, SL_E_NOMEM, "%s %s: out of memory", method, path);
	for (int attempt = 0;; attempt++) {
		struct body resp = { .max = SOP_KUBE_BODY_MAX };
		_cleanup_free_ char *url = NULL;
		if (request_once(k, method, path, content_type, payload, status, &resp, &url, err) < 0) {
			free(resp.buf);
			return -1;
		}
		if (*status == 401 && attempt == 0 && k->cfg.token_file) {
			/* A rotated token: read it again and repeat once. */
			sl_error_t terr = NULL;
			int trc = kube_token_refresh(k, true, &terr);
			sl_error_free(&terr);
			free(resp.buf);
			if (trc == 0)
				continue;
			return sl_error_set(err, SL_E_IO, "%s %s: 401 Unauthorized, and the token file cannot be read",
					    method, url);
		}
		if (*status < 200 || *status > 299) {
			int rc = kube_status_error(err, method, url, *status, resp.buf, resp.len);
			free(resp.buf);
			return rc;
		}
		if (out && resp.len) {
			if (sl_json_parse(resp.buf, resp.len, url, out, err) < 0) {
				free(resp.buf);
				return sl_error_wrap(err, "%s", method);
			}
		}
		free(resp.buf);
		return 0;
	}
}

int sop_kube_get(struct sop_kube *k, const char *path, long *status, json_t **out, sl_error_t *err)
{
	return sop_kube_request(k, "GET", path, NULL, NULL, status, out, err);
}

char *sop_kube_escape(const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t n = strlen(s);
	char *o = malloc(n * 3 + 1), *p = o;
	if (!o)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
		    c == '.' || c == '~') {
			*p++ = (char)c;
		} else {
			*p++ = '%';
			*p++ = hex[c >> 4];
			*p++ = hex[c & 15];
		}
	}
	*p = 0;
	return o;
}

int sop_kube_list(struct sop_kube *k, const char *path, const char *label_selector, long *status, json_t **items,
		  char *rv, size_t rv_cap, sl_error_t *err)
{
	_cleanup_free_ char *sel = label_selector ? sop_kube_escape(label_selector) : NULL;
	_cleanup_json_ json_t *all = json_array();
	_cleanup_free_ char *cont = NULL;
	*items = NULL;
	for (int page = 0; page < 100000; page++) {
		_cleanup_free_ char *url = NULL;
		_cleanup_free_ char *c = cont ? sop_kube_escape(cont) : NULL;
		if (asprintf(&url, "%s?limit=500%s%s%s%s", path, sel ? "&labelSelector=" : "", sel ? sel : "",
			     c ? "&continue=" : "", c ? c : "") < 0)
			return sl_error_set(err, SL_E_NOMEM, "list: out of memory");
		_cleanup_json_ json_t *list = NULL;
		if (sop_kube_get(k, url, status, &list, err) < 0)
			return -1;
		json_t *its = json_object_get(list, "items");
		json_t *md = json_object_get(list, "metadata");
		const char *lrv = json_string_value(json_object_get(md, "resourceVersion"));
		if (!json_is_object(list) || !(json_is_array(its) || json_is_null(its)) || !lrv)
			return sl_error_set(err, SL_E_INVALID, "GET %s%s: not a list with items and metadata.resourceVersion",
					    sop_kube_server(k), url);
		json_array_extend(all, its);
		if ((size_t)snprintf(rv, rv_cap, "%s", lrv) >= rv_cap)
			return sl_error_set(err, SL_E_LIMIT, "GET %s: resourceVersion too long", url);
		free(cont);
		cont = NULL;
		const char *next = json_string_value(json_object_get(md, "continue"));
		if (!next || !*next) {
			*items = sl_steal_ptr(all);
			return 0;
		}
		if (!(cont = strdup(next)))
			return sl_error_set(err, SL_E_NOMEM, "list: out of memory");
	}
	return sl_error_set(err, SL_E_LIMIT, "list %s: too many pages", path);
}

int sop_kube_create(struct sop_kube *k, const char *path, json_t *obj, long *status, json_t **out, sl_error_t *err)
{
	return sop_kube_request(k, "POST", path, "application/json", obj, status, out, err);
}

int sop_kube_update(struct sop_kube *k, const char *path, json_t *obj, long *status, json_t **out, sl_error_t *err)
{
	return sop_kube_request(k, "PUT", path, "application/json", obj, status, out, err);
}

int sop_kube_delete(struct sop_kube *k, const char *path, const char *uid, long *status, sl_error_t *err)
{
	_cleanup_json_ json_t *opts = json_pack("{s:s, s:s, s:s}", "kind", "DeleteOptions", "apiVersion", "v1",
						 "propagationPolicy", "Background");
	if (uid)
		json_object_set_new(opts, "preconditions", json_pack("{s:s}", "uid", uid));
	return sop_kube_request(k, "DELETE", path, "application/json", opts, status, NULL, err);
}

int sop_kube_merge_patch(struct sop_kube *k, const char *path, json_t *patch, long *status, json_t **out,
			 sl_error_t *err)
{
	return sop_kube_request(k, "PATCH", path, "application/merge-patch+json", patch, status, out, err);
}

/* ---- watch ---------------------------------------------------------------- */

struct watch_ctx {
	struct sop_kube *k;
	CURL *h;
	long status; /* 0 until the first body byte */
	struct sop_linebuf lb;
	struct body errbody; /* a non-200 answer's body */
	char *rv;
	size_t rv_cap;
	sop_watch_fn fn;
	void *arg;
	volatile int *stop;
	bool gone;
	sl_error_t err; /* why the write callback stopped the transfer */
};

static int watch_line(void *arg, const char *line, size_t len, sl_error_t *err)
{
	struct watch_ctx *w = arg;
	struct sop_watch_event ev;
	if (sop_watch_event_parse(line, len, &ev, err) < 0)
		return -1;
	int rc = 0;
	if (ev.type == SOP_EV_ERROR) {
		if (ev.code == 410) {
			w->gone = true;
			rc = -1; /* ends the stream; not an error for the caller */
		} else {
			rc = sl_error_set(err, SL_E_IO, "watch: ERROR event %ld: %s", ev.code,
					  ev.message ? ev.message : "(no message)");
		}
	} else {
		if (ev.resource_version && (size_t)snprintf(w->rv, w->rv_cap, "%s", ev.resource_version) >= w->rv_cap)
			rc = sl_error_set(err, SL_E_LIMIT, "watch: resourceVersion too long");
		else
			rc = w->fn(w->arg, &ev, err);
	}
	sop_watch_event_clear(&ev);
	return rc;
}

static size_t watch_write(char *data, size_t sz, size_t nm, void *arg)
{
	struct watch_ctx *w = arg;
	size_t n = sz * nm;
	if (!w->status)
		curl_easy_getinfo(w->h, CURLINFO_RESPONSE_CODE, &w->status);
	if (w->status != 200)
		return body_write(data, sz, nm, &w->errbody);
	if (sop_linebuf_feed(&w->lb, data, n, watch_line, w, &w->err) < 0)
		return 0;
	return n;
}

static int watch_progress(void *arg, curl_off_t a, curl_off_t b, curl_off_t c, curl_off_t d)
{
	(void)a, (void)b, (void)c, (void)d;
	struct watch_ctx *w = arg;
	return w->stop && *w->stop ? 1 : 0;
}

int sop_kube_watch(struct sop_kube *k, const char *path, const char *label_selector, char *rv, size_t rv_cap,
		   unsigned timeout_s, sop_watch_fn fn, void *arg, volatile int *stop, enum sop_watch_end *end,
		   long *status, sl_error_t *err)
{
	_cleanup_free_ char *sel = label_selector ? sop_kube_escape(label_selector) : NULL;
	_cleanup_free_ char *erv = sop_kube_escape(rv);
	_cleanup_free_ char *url = NULL;
	*status = 0;
	*end = SOP_WATCH_CLOSED;
	if (asprintf(&url, "%s?watch=1&resourceVersion=%s&allowWatchBookmarks=true&timeoutSeconds=%u%s%s", path,
		     erv ? erv : "", timeout_s, sel ? "&labelSelector=" : "", sel ? sel : "") < 0)
		return sl_error_set(err, SL_E_NOMEM, "watch: out of memory");
	sl_error_t terr = NULL;
	kube_token_refresh(k, false, &terr);
	sl_error_free(&terr);
	struct kube_req r;
	if (kube_req_init(k, &r, "GET", url, NULL, err) < 0) {
		kube_req_free(&r);
		return -1;
	}
	struct watch_ctx w = { .k = k, .h = r.h, .rv = rv, .rv_cap = rv_cap, .fn = fn, .arg = arg, .stop = stop,
			       .errbody = { .max = 64 * 1024 } };
	sop_linebuf_init(&w.lb, SOP_WATCH_LINE_MAX);
	/* The server ends the watch after timeoutSeconds; a little more here
	 * catches a silently dead connection without cutting a live one. */
	curl_easy_setopt(r.h, CURLOPT_TIMEOUT, (long)timeout_s + 30);
	curl_easy_setopt(r.h, CURLOPT_WRITEFUNCTION, watch_write);
	curl_easy_setopt(r.h, CURLOPT_WRITEDATA, &w);
	curl_easy_setopt(r.h, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(r.h, CURLOPT_XFERINFOFUNCTION, watch_progress);
	curl_easy_setopt(r.h, CURLOPT_XFERINFODATA, &w);
	CURLcode cc = curl_easy_perform(r.h);
	if (!w.status)
		curl_easy_getinfo(r.h, CURLINFO_RESPONSE_CODE, &w.status);
	*status = w.status;
	kube_count(k, w.status ? w.status : 0);
	int rc = 0;
	if (stop && *stop) {
		*end = SOP_WATCH_STOPPED;
	} else if (w.gone || w.status == 410) {
		*end = SOP_WATCH_GONE;
	} else if (w.err) {
		rc = sl_error_set(err, w.err->code, "GET %s: %s", r.url, sl_error_msg(w.err));
	} else if (w.status && w.status != 200) {
		if (w.status == 401) {
			sl_error_t terr = NULL;
			kube_token_refresh(k, true, &terr); /* the next watch uses a rotated token */
			sl_error_free(&terr);
		}
		rc = kube_status_error(err, "GET", r.url, w.status, w.errbody.buf, w.errbody.len);
	} else if (cc != CURLE_OK && cc != CURLE_OPERATION_TIMEDOUT) {
		rc = sl_error_set(err, SL_E_IO, "GET %s: %s", r.url, r.errbuf[0] ? r.errbuf : curl_easy_strerror(cc));
	} else if (sop_linebuf_pending(&w.lb)) {
		rc = sl_error_set(err, SL_E_IO, "GET %s: the stream ended inside an event (%zu bytes)", r.url,
				  sop_linebuf_pending(&w.lb));
	}
	sl_error_free(&w.err);
	sop_linebuf_free(&w.lb);
	free(w.errbody.buf);
	kube_req_free(&r);
	return rc;
}
