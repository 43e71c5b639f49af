/* The API client's transport: configuration to curl options, bearer tokens that rotate, requests and their errors. */
#include <stdlib.h>
#include <string.h>

#include "kube_int.h"
#include "sl/file.h"
#include "sl/json.h"

int sop_kube_new(struct sop_kube_config *cfg, struct sop_kube **out, sl_error_t *err)
{
	struct sop_kube *k = calloc(1, sizeof(*k));
	if (!k)
		return sl_error_set(err, SL_E_NOMEM, "kube client: out of memory");
	k->cfg = *cfg;
	memset(cfg, 0, sizeof(*cfg));
	pthread_mutex_init(&k->lock, NULL);
	if (k->cfg.token && !(k->token = strdup(k->cfg.token))) {
		sop_kube_free(k);
		return sl_error_set(err, SL_E_NOMEM, "kube client: out of memory");
	}
	if (k->cfg.token_file && kube_token_refresh(k, true, err) < 0) {
		sop_kube_free(k);
		return -1;
	}
	*out = k;
	return 0;
}

void sop_kube_free(struct sop_kube *k)
{
	if (!k)
		return;
	sop_kube_config_free(&k->cfg);
	free(k->token);
	pthread_mutex_destroy(&k->lock);
	free(k);
}

const char *sop_kube_namespace(const struct sop_kube *k)
{
	return k->cfg.namespace_;
}

const char *sop_kube_server(const struct sop_kube *k)
{
	return k->cfg.server;
}

void sop_kube_stats(const struct sop_kube *k, struct sop_kube_stats *st)
{
	pthread_mutex_lock((pthread_mutex_t *)&k->lock);
	st->requests = k->requests;
	st->errors = k->errors;
	st->unauthorized = k->unauthorized;
	pthread_mutex_unlock((pthread_mutex_t *)&k->lock);
}

void kube_count(struct sop_kube *k, long status)
{
	pthread_mutex_lock(&k->lock);
	k->requests++;
	if (status < 200 || status > 299)
		k->errors++;
	if (status == 401)
		k->unauthorized++;
	pthread_mutex_unlock(&k->lock);
}

int kube_token_refresh(struct sop_kube *k, bool force, sl_error_t *err)
{
	if (!k->cfg.token_file)
		return 0;
	struct stat st;
	if (stat(k->cfg.token_file, &st) < 0)
		return sl_error_sys(err, "bearer token file %s", k->cfg.token_file);
	pthread_mutex_lock(&k->lock);
	/* Projected service account tokens are replaced by the kubelet (an
	 * atomic symlink swap), so a changed inode, size or mtime means new. */
	bool same = k->token && st.st_ino == k->token_st.st_ino && st.st_size == k->token_st.st_size &&
		    st.st_mtim.tv_sec == k->token_st.st_mtim.tv_sec && st.st_mtim.tv_nsec == k->token_st.st_mtim.tv_nsec;
	pthread_mutex_unlock(&k->lock);
	if (same && !force)
		return 0;
	char *buf = NULL;
	size_t len;
	if (sl_read_path(k->cfg.token_file, 64 * 1024, &buf, &len, err) < 0)
		return sl_error_wrap(err, "bearer token file");
	while (len && (buf[len - 1] == '\n' || buf[len - 1] == '\r' || buf[len - 1] == ' '))
		buf[--len] = 0;
	for (size_t i = 0; i < len; i++) {
		if ((unsigned char)buf[i] < 0x21 || (unsigned char)buf[i] > 0x7e) {
			free(buf);
			return sl_error_set(err, SL_E_INVALID, "bearer token file %s: not a printable token",
					    k->cfg.token_file);
		}
	}
	pthread_mutex_lock(&k->lock);
	free(k->token);
	k->token = buf;
	k->token_st = st;
	pthread_mutex_unlock(&k->lock);
	return 0;
}

void kube_req_free(struct kube_req *r)
{
	if (r->h)
		curl_easy_cleanup(r->h);
	curl_slist_free_all(r->headers);
	free(r->url);
	memset(r, 0, sizeof(*r));
}

static int add_header(struct kube_req *r, const char *fmt, const char *v, sl_error_t *err)
{
	char *line = NULL;
	if (asprintf(&line, fmt, v) < 0)
		return sl_error_set(err, SL_E_NOMEM, "request: out of memory");
	struct curl_slist *n = curl_slist_append(r->headers, line);
	free(line);
	if (!n)
		return sl_error_set(err, SL_E_NOMEM, "request: out of memory");
	r->headers = n;
	return 0;
}

int kube_req_init(struct sop_kube *k, struct kube_req *r, const char *method, const char *path,
		  const char *content_type, sl_error_t *err)
{
	memset(r, 0, sizeof(*r));
	if (asprintf(&r->url, "%s%s", k->cfg.server, path) < 0) {
		r->url = NULL;
		return sl_error_set(err, SL_E_NOMEM, "request: out of memory");
	}
	if (!(r->h = curl_easy_init()))
		return sl_error_set(err, SL_E_NOMEM, "%s %s: curl_easy_init failed", method, r->url);
	CURL *h = r->h;
	curl_easy_setopt(h, CURLOPT_URL, r->url);
	curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, r->errbuf);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 10L);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_USERAGENT, "sporelet-operator");
	if (strcmp(method, "HEAD") == 0)
		curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
	if (k->cfg.insecure) {
		curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 0L);
		curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L);
	} else if (k->cfg.ca_pem) {
		struct curl_blob b = { .data = k->cfg.ca_pem, .len = k->cfg.ca_pem_len, .flags = CURL_BLOB_COPY };
		curl_easy_setopt(h, CURLOPT_CAINFO_BLOB, &b);
	} else if (k->cfg.ca_file) {
		curl_easy_setopt(h, CURLOPT_CAINFO, k->cfg.ca_file);
	}
	if (k->cfg.client_cert_pem) {
		struct curl_blob c = { .data = k->cfg.client_cert_pem, .len = k->cfg.client_cert_pem_len,
				       .flags = CURL_BLOB_COPY };
		struct curl_blob key = { .data = k->cfg.client_key_pem, .len = k->cfg.client_key_pem_len,
					 .flags = CURL_BLOB_COPY };
		curl_easy_setopt(h, CURLOPT_SSLCERT_BLOB, &c);
		curl_easy_setopt(h, CURLOPT_SSLCERTTYPE, "PEM");
		if (k->cfg.client_key_pem)
			curl_easy_setopt(h, CURLOPT_SSLKEY_BLOB, &key);
		else
			curl_easy_setopt(h, CURLOPT_SSLKEY, k->cfg.client_key_file);
	} else if (k->cfg.client_cert_file) {
		curl_easy_setopt(h, CURLOPT_SSLCERT, k->cfg.client_cert_file);
		if (k->cfg.client_key_pem) {
			struct curl_blob key = { .data = k->cfg.client_key_pem, .len = k->cfg.client_key_pem_len,
						 .flags = CURL_BLOB_COPY };
			curl_easy_setopt(h, CURLOPT_SSLKEY_BLOB, &key);
		} else {
			curl_easy_setopt(h, CURLOPT_SSLKEY, k->cfg.client_key_file);
		}
	}
	if (add_header(r, "Accept: %s", "application/json", err) < 0)
		return -1;
	if (content_type && add_header(r, "Content-Type: %s", content_type, err) < 0)
		return -1;
	pthread_mutex_lock(&k->lock);
	int rc = k->token ? add_header(r, "Authorization: Bearer %s", k->token, err) : 0;
	pthread_mutex_unlock(&k->lock);
	if (rc < 0)
		return -1;
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, r->headers);
	return 0;
}

static const char *reason_phrase(long status)
{
	switch (status) {
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 409: return "Conflict";
	case 410: return "Gone";
	case 415: return "Unsupported Media Type";
	case 422: return "Unprocessable Entity";
	case 429: return "Too Many Requests";
	case 500: return "Internal Server Error";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	}
	return "";
}

int kube_status_error(sl_error_t *err, const char *method, const char *url, long status, const char *body,
		      size_t len)
{
	char show[SL_SHOW_BUF];
	int code = status == 404 ? SL_E_NOT_FOUND : (status == 409 || status == 410) ? SL_E_PRECONDITION : SL_E_IO;
	_cleanup_json_ json_t *st = NULL;
	sl_error_t perr = NULL;
	const char *msg = NULL, *reason = NULL;
	if (body && len && sl_json_parse(body, len, "Status", &st, &perr) == 0 && json_is_object(st)) {
		msg = json_string_value(json_object_get(st, "message"));
		reason = json_string_value(json_object_get(st, "reason"));
	}
	sl_error_free(&perr);
	if (status == 409 && reason && strcmp(reason, "AlreadyExists") == 0)
		code = SL_E_EXISTS;
	if (msg) {
		/* The API's own words, bounded and made printable. */
		char m[512];
		size_t n = strlen(msg), o = 0;
		for (size_t i = 0; i < n && o + 1 < sizeof(m); i++)
			m[o++] = (msg[i] >= 0x20 && msg[i] < 0x7f) ? msg[i] : '?';
		m[o] = 0;
		char rs[SL_SHOW_BUF];
		sl_show(reason ? reason : "no reason", reason ? strlen(reason) : 9, rs);
		return sl_error_set(err, code, "%s %s: %ld %s (%s): %s", method, url, status, reason_phrase(status), rs,
				    m);
	}
	sl_show(body ? body : "", body ? len : 0, show);
	return sl_error_set(err, code, "%s %s: %ld %s: %s", method, url, status, reason_phrase(status),
			    len ? show : "(empty body)");
}
