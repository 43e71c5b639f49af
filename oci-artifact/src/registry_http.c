/* Registry client engine: libcurl requests, Basic/Bearer auth, redirects, retries and the parallel transfer loop. */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "oci/auth.h"
#include "oci/ref.h"
#include "registry_int.h"

#define USER_AGENT "sporelet-oci/1"

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static CURLcode global_rc = CURLE_FAILED_INIT;

static void global_init(void)
{
	global_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

int reg_global_init(sl_error_t *err)
{
	pthread_once(&global_once, global_init);
	if (global_rc != CURLE_OK)
		return sl_error_set(err, SL_E_IO, "libcurl init: %s", curl_easy_strerror(global_rc));
	return 0;
}

uint64_t reg_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t reg_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void sleep_ms(uint64_t ms)
{
	struct timespec ts = { .tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

void reg_progress(struct oci_client *c, enum oci_event ev, const sl_digest *blob, uint64_t done, uint64_t total,
		  const char *msg)
{
	struct oci_progress p = { .event = ev, .blob = blob, .done = done, .total = total, .msg = msg };

	if (c->opts.progress)
		c->opts.progress(c->opts.progress_arg, &p);
}

char *reg_url(struct oci_client *c, const char *fmt, ...)
{
	va_list ap;
	char *tail = NULL, *out = NULL;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&tail, fmt, ap);
	va_end(ap);
	if (n < 0)
		return NULL;
	if (asprintf(&out, "%s/v2/%s/%s", c->base, c->repo, tail) < 0)
		out = NULL;
	free(tail);
	return out;
}

void reg_req(struct job *j, const char *method, char *url)
{
	struct req *r = &j->r;

	free(r->url);
	r->method = method;
	r->url = url;
	r->what[0] = '\0';
	r->accept = r->content_type = NULL;
	r->range[0] = r->content_range[0] = '\0';
	r->follow = false;
	r->body = BODY_NONE;
	r->mem = NULL;
	r->segs = NULL;
	r->nsegs = 0;
	r->body_off = r->body_len = 0;
	r->sink = SINK_DISCARD;
	r->mem_max = 0;
	r->fresh = true;
}

const char *reg_hdr(struct job *j, const char *name)
{
	struct curl_header *h;

	if (!j->eh || curl_easy_header(j->eh, name, 0, CURLH_HEADER, -1, &h) != CURLHE_OK)
		return NULL;
	return h->value;
}

int reg_error(struct job *j, sl_error_t *err, int code, const char *fmt, ...)
{
	va_list ap;
	char *msg = NULL;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&msg, fmt, ap);
	va_end(ap);
	if (n < 0)
		return sl_error_set(err, SL_E_NOMEM, "out of memory");
	sl_error_set(err, code, "registry %s: %s: %s", j->c->registry, j->r.what, msg);
	free(msg);
	return -1;
}

static bool have_creds(const struct oci_client *c)
{
	if (c->opts.creds)
		return c->opts.creds->present;
	return c->creds_loaded && c->creds.present;
}

/* 401/403: say what to fix, not just the status. */
static int auth_fail(struct job *j, sl_error_t *err, const char *what)
{
	struct oci_client *c = j->c;
	char sum[320];

	reg_error_summary(j->r.buf, j->r.len, sum, sizeof(sum));
	return reg_error(j, err, SL_E_INVALID,
			 "%s (%ld%s%s); %s %s in $DOCKER_CONFIG/config.json (default ~/.docker/config.json)", what,
			 j->r.status, sum[0] ? " " : "", sum,
			 have_creds(c) ? "check the credentials for" : "no credentials found for", c->registry);
}

enum step reg_http_error(struct job *j, sl_error_t *err)
{
	struct req *r = &j->r;
	long st = r->status;
	char sum[400];
	int code = SL_E_INVALID;
	enum step step = STEP_FAIL;

	if (!r->foreign && st == 401)
		return auth_fail(j, err, "authentication failed"), STEP_FAIL;
	if (!r->foreign && st == 403)
		return auth_fail(j, err, "access denied"), STEP_FAIL;
	reg_error_summary(r->buf, r->len, sum, sizeof(sum));
	if (st == 404)
		code = SL_E_NOT_FOUND;
	else if (st == 413)
		code = SL_E_LIMIT;
	else if (st == 408 || st == 429 || st >= 500) {
		code = SL_E_IO;
		step = STEP_RETRY;
	} else if (st == 400 && strstr(sum, "DIGEST_INVALID"))
		code = SL_E_INTEGRITY;
	if (st < 400)
		reg_error(j, err, code, "unexpected status %ld%s%s", st, sum[0] ? " " : "", sum);
	else
		reg_error(j, err, code, "%ld%s%s", st, sum[0] ? " " : "", sum);
	return step;
}

int reg_check_dcd(struct job *j, const sl_digest *want, sl_error_t *err)
{
	const char *v = reg_hdr(j, "Docker-Content-Digest");
	char w[SL_DIGEST_STRLEN];
	sl_digest got;

	/* Other algorithms cannot be checked here; the bytes are checked anyway. */
	if (!v || strncmp(v, "sha256:", 7) != 0)
		return 0;
	sl_digest_format(want, w);
	if (sl_digest_parse(v, &got, NULL) < 0)
		return reg_error(j, err, SL_E_INTEGRITY, "bad Docker-Content-Digest \"%.80s\"", v);
	if (!sl_digest_equal(&got, want))
		return reg_error(j, err, SL_E_INTEGRITY, "Docker-Content-Digest %s, expected %s", v, w);
	return 0;
}

/* ---- credentials and tokens ---- */

static int creds_get(struct oci_client *c, const struct oci_creds **out, sl_error_t *err)
{
	if (c->opts.creds) {
		*out = c->opts.creds;
		return 0;
	}
	if (!c->creds_loaded) {
		if (oci_creds_load(c->registry, &c->creds, err) < 0)
			return sl_error_wrap(err, "registry %s: credentials", c->registry);
		c->creds_loaded = true;
	}
	*out = &c->creds;
	return 0;
}

static void secret_free(char *s)
{
	if (s) {
		explicit_bzero(s, strlen(s));
		free(s);
	}
}

/* "Authorization: Basic base64(user:password)" */
static char *basic_line(const struct oci_creds *cr)
{
	char plain[sizeof(cr->username) + sizeof(cr->password) + 1];
	char b64[(sizeof(plain) / 3 + 1) * 4 + 1];
	char *line = NULL;
	int n = snprintf(plain, sizeof(plain), "%s:%s", cr->username, cr->password);
	int m = n < 0 ? -1 : oci_base64_encode(plain, (size_t)n, b64, sizeof(b64));

	if (m >= 0 && asprintf(&line, "Authorization: Basic %.*s", m, b64) < 0)
		line = NULL;
	explicit_bzero(plain, sizeof(plain));
	explicit_bzero(b64, sizeof(b64));
	return line;
}

static void set_auth(struct oci_client *c, char *line, enum oci_auth_scheme scheme)
{
	secret_free(c->auth_header);
	c->auth_header = line;
	c->scheme = scheme;
	c->auth_gen++;
}

struct membuf {
	char *p;
	size_t len, cap, max;
	bool over;
};

static int membuf_add(struct membuf *b, const char *p, size_t n)
{
	if (n > b->max - b->len) {
		b->over = true;
		n = b->max - b->len;
	}
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 1024;
		char *q;

		while (cap < b->len + n + 1)
			cap *= 2;
		q = realloc(b->p, cap);
		if (!q)
			return -1;
		b->p = q;
		b->cap = cap;
	}
	memcpy(b->p + b->len, p, n);
	b->len += n;
	b->p[b->len] = '\0';
	return 0;
}

static size_t tok_write(char *p, size_t sz, size_t nm, void *ud)
{
	struct membuf *b = ud;

	return membuf_add(b, p, sz * nm) < 0 ? 0 : sz * nm;
}

static bool curl_retryable(CURLcode cc)
{
	switch (cc) {
	case CURLE_UNSUPPORTED_PROTOCOL:
	case CURLE_URL_MALFORMAT:
	case CURLE_NOT_BUILT_IN:
	case CURLE_OUT_OF_MEMORY:
	case CURLE_BAD_FUNCTION_ARGUMENT:
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CERTPROBLEM:
	case CURLE_SSL_CIPHER:
	case CURLE_SSL_CACERT_BADFILE:
	case CURLE_SSL_ISSUER_ERROR:
	case CURLE_SSL_CRL_BADFILE:
	case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
	case CURLE_ABORTED_BY_CALLBACK:
	case CURLE_READ_ERROR:
	case CURLE_WRITE_ERROR:
	case CURLE_FILESIZE_EXCEEDED:
	case CURLE_TOO_MANY_REDIRECTS:
	case CURLE_LOGIN_DENIED:
		return false;
	default:
		return true;
	}
}

/* Options every request of the client carries. */
static CURLcode common_opts(struct oci_client *c, CURL *eh, char *errbuf)
{
	CURLcode e = CURLE_OK;

#define SET(opt, val)                                        \
	do {                                                 \
		if (e == CURLE_OK)                           \
			e = curl_easy_setopt(eh, opt, val);  \
	} while (0)
	SET(CURLOPT_PROTOCOLS_STR, "http,https");
	SET(CURLOPT_NOSIGNAL, 1L);
	SET(CURLOPT_SHARE, c->share);
	SET(CURLOPT_USERAGENT, USER_AGENT);
	SET(CURLOPT_ERRORBUFFER, errbuf);
	SET(CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
	SET(CURLOPT_CONNECTTIMEOUT_MS, 30000L);
	/* Stalls, not slow links: a transfer that moves nothing for 2 min. */
	SET(CURLOPT_LOW_SPEED_LIMIT, 1L);
	SET(CURLOPT_LOW_SPEED_TIME, 120L);
	SET(CURLOPT_TCP_KEEPALIVE, 1L);
	SET(CURLOPT_SSL_VERIFYPEER, 1L);
	SET(CURLOPT_SSL_VERIFYHOST, 2L);
	SET(CURLOPT_FOLLOWLOCATION, 0L);
	if (c->opts.ca_file)
		SET(CURLOPT_CAINFO, c->opts.ca_file);
#undef SET
	return e;
}

/* GET realm?service=&scope=... (Basic creds if any) -> the Bearer header. */
static int token_fetch(struct oci_client *c, struct job *j, sl_error_t *err)
{
	const struct oci_creds *cr = NULL;
	char *url = NULL, *basic = NULL, *tok = NULL, *line = NULL;
	struct curl_slist *hdrs = NULL;
	struct membuf b = { .max = REG_TOKEN_BODY_MAX };
	char errbuf[CURL_ERROR_SIZE], sum[320];
	CURLcode cc = CURLE_OK;
	long st = 0, expires = 60;
	unsigned attempt = 0;
	int rc = -1;

	if (creds_get(c, &cr, err) < 0)
		return -1;
	/* Credentials (and the token) never travel in clear to a remote host. */
	if (!reg_url_scheme_is(c->realm, "https") && !c->opts.insecure && !reg_url_is_loopback(c->realm))
		return reg_error(j, err, SL_E_INVALID, "token realm %.200s is not https", c->realm);
	url = reg_token_url(c->realm, c->service, c->scopes, c->nscopes);
	if (!url)
		goto oom;
	if (cr->present) {
		basic = basic_line(cr);
		if (!basic || !(hdrs = curl_slist_append(NULL, basic)))
			goto oom;
	}
	if (!c->tok && !(c->tok = curl_easy_init()))
		goto oom;
	for (;;) {
		curl_easy_reset(c->tok);
		b.len = 0;
		b.over = false;
		errbuf[0] = '\0';
		cc = common_opts(c, c->tok, errbuf);
		if (cc == CURLE_OK)
			cc = curl_easy_setopt(c->tok, CURLOPT_URL, url);
		if (cc == CURLE_OK)
			cc = curl_easy_setopt(c->tok, CURLOPT_HTTPHEADER, hdrs);
		if (cc == CURLE_OK)
			cc = curl_easy_setopt(c->tok, CURLOPT_WRITEFUNCTION, tok_write);
		if (cc == CURLE_OK)
			cc = curl_easy_setopt(c->tok, CURLOPT_WRITEDATA, &b);
		if (cc == CURLE_OK)
			cc = curl_easy_setopt(c->tok, CURLOPT_TIMEOUT_MS, 60000L);
		if (cc == CURLE_OK) {
			c->stats.requests++;
			cc = curl_easy_perform(c->tok);
		}
		st = 0;
		curl_easy_getinfo(c->tok, CURLINFO_RESPONSE_CODE, &st);
		if ((cc != CURLE_OK && curl_retryable(cc)) || (cc == CURLE_OK && (st == 408 || st == 429 || st >= 500))) {
			if (attempt < c->opts.retries) {
				uint64_t d = reg_backoff_ms(++attempt);
				struct curl_header *h;
				char msg[1024];

				if (cc == CURLE_OK &&
				    curl_easy_header(c->tok, "Retry-After", 0, CURLH_HEADER, -1, &h) == CURLHE_OK) {
					int64_t ra = reg_retry_after_ms(h->value, time(NULL));

					if (ra > (int64_t)d)
						d = (uint64_t)ra;
				}
				if (cc != CURLE_OK)
					snprintf(msg, sizeof(msg), "registry %s: token request: %s (retry %u of %u in %" PRIu64
						 " ms)", c->registry, errbuf[0] ? errbuf : curl_easy_strerror(cc), attempt,
						 c->opts.retries, d);
				else
					snprintf(msg, sizeof(msg), "registry %s: token request: %ld (retry %u of %u in %" PRIu64
						 " ms)", c->registry, st, attempt, c->opts.retries, d);
				c->stats.retries++;
				reg_progress(c, OCI_EV_RETRY, NULL, 0, 0, msg);
				sleep_ms(d);
				continue;
			}
		}
		break;
	}
	if (cc != CURLE_OK) {
		reg_error(j, err, SL_E_IO, "token request to %.200s: %s", c->realm,
			  errbuf[0] ? errbuf : curl_easy_strerror(cc));
		goto out;
	}
	reg_error_summary(b.p, b.len, sum, sizeof(sum));
	if (st == 401 || st == 403) {
		reg_error(j, err, SL_E_INVALID,
			  "authentication failed at token server %.200s (%ld%s%s); %s %s in $DOCKER_CONFIG/config.json "
			  "(default ~/.docker/config.json)",
			  c->realm, st, sum[0] ? " " : "", sum,
			  cr->present ? "check the credentials for" : "no credentials found for", c->registry);
		goto out;
	}
	if (st != 200) {
		reg_error(j, err, st == 404 ? SL_E_NOT_FOUND : SL_E_IO, "token request to %.200s: %ld%s%s", c->realm,
			  st, sum[0] ? " " : "", sum);
		goto out;
	}
	if (b.over) {
		reg_error(j, err, SL_E_LIMIT, "token reply larger than %u bytes", REG_TOKEN_BODY_MAX);
		goto out;
	}
	tok = malloc(REG_TOKEN_BODY_MAX);
	if (!tok)
		goto oom;
	if (oci_token_parse(b.p ? b.p : "", b.len, tok, REG_TOKEN_BODY_MAX, &expires, err) < 0) {
		sl_error_wrap(err, "registry %s: token from %.200s", c->registry, c->realm);
		goto out;
	}
	if (!tok[0] || !reg_header_safe(tok)) {
		reg_error(j, err, SL_E_INVALID, "token from %.200s has unsafe characters", c->realm);
		goto out;
	}
	if (asprintf(&line, "Authorization: Bearer %s", tok) < 0)
		goto oom;
	set_auth(c, line, OCI_AUTH_BEARER);
	if (expires < 60)
		expires = 60;
	c->token_expiry_ms = reg_now_ms() + (uint64_t)expires * 1000u;
	rc = 0;
	goto out;
oom:
	sl_error_set(err, SL_E_NOMEM, "out of memory");
out:
	if (b.p) {
		explicit_bzero(b.p, b.len);
		free(b.p);
	}
	if (tok) {
		explicit_bzero(tok, REG_TOKEN_BODY_MAX);
		free(tok);
	}
	curl_slist_free_all(hdrs);
	secret_free(basic);
	free(url);
	return rc;
}

static void scopes_clear(struct oci_client *c)
{
	for (size_t i = 0; i < c->nscopes; i++)
		free(c->scopes[i]);
	c->nscopes = 0;
}

/* What j's requests need beyond the challenge's scope: pushes ask for pull
 * and push at once, so one token serves the HEADs and the uploads. */
static int job_scopes(struct oci_client *c, struct job *j, const char *challenge)
{
	char s[600];
	int added = 0;

	/* A long-lived client collecting scopes: start over, keeping what now matters. */
	if (c->nscopes + 4 > REG_MAX_SCOPES)
		scopes_clear(c);
	added += reg_scopes_add(c->scopes, &c->nscopes, REG_MAX_SCOPES, challenge);
	if (j->push) {
		snprintf(s, sizeof(s), "repository:%s:pull,push", c->repo);
		added += reg_scopes_add(c->scopes, &c->nscopes, REG_MAX_SCOPES, s);
	}
	if (j->mount_from) {
		snprintf(s, sizeof(s), "repository:%s:pull", j->mount_from);
		added += reg_scopes_add(c->scopes, &c->nscopes, REG_MAX_SCOPES, s);
	}
	return added;
}

/* A 401 from the registry: 0 to send the request again with (new)
 * credentials, -1 to fail. Each request re-authenticates at most once. */
static int auth_on_401(struct job *j, sl_error_t *err)
{
	struct oci_client *c = j->c;
	struct req *r = &j->r;
	struct oci_challenge best, ch;
	struct curl_header *h;
	const struct oci_creds *cr = NULL;
	bool have = false;

	for (size_t i = 0;; i++) {
		sl_error_t e = NULL;

		if (curl_easy_header(j->eh, "WWW-Authenticate", i, CURLH_HEADER, -1, &h) != CURLHE_OK)
			break;
		if (oci_challenge_parse(h->value, &ch, &e) == 0 && ch.scheme != OCI_AUTH_NONE &&
		    (!have || (ch.scheme == OCI_AUTH_BEARER && best.scheme != OCI_AUTH_BEARER))) {
			best = ch;
			have = true;
		}
		sl_error_free(&e);
		if (i + 1 >= h->amount)
			break;
	}
	if (!have)
		return auth_fail(j, err, "authentication required but no usable WWW-Authenticate challenge");

	if (best.scheme == OCI_AUTH_BASIC) {
		/* Another request already switched to (Basic) credentials. */
		if (r->gen != c->auth_gen && c->scheme == OCI_AUTH_BASIC)
			return 0;
		if (r->reauthed || (r->sent_auth && r->sent_scheme == OCI_AUTH_BASIC))
			return auth_fail(j, err, "authentication failed");
		if (creds_get(c, &cr, err) < 0)
			return -1;
		if (!cr->present)
			return auth_fail(j, err, "authentication required");
		char *line = basic_line(cr);

		if (!line)
			return sl_error_set(err, SL_E_NOMEM, "out of memory");
		set_auth(c, line, OCI_AUTH_BASIC);
		r->reauthed = true;
		return 0;
	}

	bool moved = strcmp(c->realm, best.realm) != 0 || strcmp(c->service, best.service) != 0;
	int added = job_scopes(c, j, best.scope);

	/* Someone refreshed the token since this request left, asking for
	 * everything this one needs: just send it again. */
	if (r->gen != c->auth_gen && c->scheme == OCI_AUTH_BEARER && !added && !moved)
		return 0;
	if (r->reauthed)
		return auth_fail(j, err, "authentication failed");
	snprintf(c->realm, sizeof(c->realm), "%s", best.realm);
	snprintf(c->service, sizeof(c->service), "%s", best.service);
	r->reauthed = true;
	return token_fetch(c, j, err);
}

/* ---- requests ---- */

static CURL *pool_get(struct oci_client *c)
{
	if (c->npool)
		return c->pool[--c->npool];
	return curl_easy_init();
}

static void pool_put(struct oci_client *c, CURL *eh)
{
	if (c->npool < c->opts.parallel)
		c->pool[c->npool++] = eh;
	else
		curl_easy_cleanup(eh);
}

static int buf_add(struct req *r, const char *p, size_t n)
{
	if (r->len + n + 1 > r->cap) {
		size_t cap = r->cap ? r->cap : 4096;
		char *q;

		while (cap < r->len + n + 1)
			cap *= 2;
		q = realloc(r->buf, cap);
		if (!q)
			return -1;
		r->buf = q;
		r->cap = cap;
	}
	memcpy(r->buf + r->len, p, n);
	r->len += n;
	r->buf[r->len] = '\0';
	return 0;
}

static size_t write_cb(char *p, size_t sz, size_t nm, void *ud)
{
	struct job *j = ud;
	struct req *r = &j->r;
	size_t n = sz * nm;

	if (!r->got_first) {
		r->got_first = true;
		curl_easy_getinfo(j->eh, CURLINFO_RESPONSE_CODE, &r->status);
		r->body_ok = r->status >= 200 && r->status < 300;
		if (r->body_ok && r->sink == SINK_MEM) {
			curl_off_t cl = -1;

			curl_easy_getinfo(j->eh, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl);
			if (cl > 0 && (uint64_t)cl > r->mem_max) {
				reg_error(j, &r->cb_err, SL_E_LIMIT, "body of %" PRId64 " bytes, more than %zu allowed",
					  (int64_t)cl, r->mem_max);
				return 0;
			}
		}
		if (r->body_ok && r->sink == SINK_FETCH && j->ops->headers && j->ops->headers(j) < 0)
			return 0;
	}
	if (!r->body_ok) {
		/* An error page: keep its start for the message. */
		if (r->len < REG_ERRBODY_MAX)
			buf_add(r, p, n < REG_ERRBODY_MAX - r->len ? n : REG_ERRBODY_MAX - r->len);
		return n;
	}
	switch (r->sink) {
	case SINK_DISCARD:
		return n;
	case SINK_MEM:
		if (n > r->mem_max - r->len) {
			reg_error(j, &r->cb_err, SL_E_LIMIT, "body larger than %zu bytes", r->mem_max);
			return 0;
		}
		if (buf_add(r, p, n) < 0) {
			sl_error_set(&r->cb_err, SL_E_NOMEM, "out of memory");
			return 0;
		}
		j->c->stats.bytes_downloaded += n;
		return n;
	case SINK_FETCH:
		return j->ops->write(j, p, n);
	}
	return 0;
}

static size_t read_cb(char *buf, size_t sz, size_t nm, void *ud)
{
	struct job *j = ud;
	struct req *r = &j->r;
	uint64_t left = r->body_len - r->body_pos;
	size_t n = sz * nm;

	if (n > left)
		n = (size_t)left;
	if (!n)
		return 0;
	if (r->body == BODY_MEM) {
		memcpy(buf, (const char *)r->mem + r->body_off + r->body_pos, n);
	} else {
		sl_error_t e = NULL;

		if (oci_segs_read(r->segs, r->nsegs, r->body_off + r->body_pos, buf, n, &e) < 0) {
			sl_error_wrap(&e, "registry %s: %s: reading the blob", j->c->registry, r->what);
			sl_error_free(&r->cb_err);
			r->cb_err = e;
			r->cb_retry = false;
			return CURL_READFUNC_ABORT;
		}
		j->c->stats.bytes_uploaded += n;
	}
	r->body_pos += n;
	if (r->body == BODY_SEGS) {
		uint64_t done = r->body_off + r->body_pos;

		if (done - j->last_prog >= REG_PROGRESS_STEP || done == j->total || done < j->last_prog) {
			j->last_prog = done;
			reg_progress(j->c, OCI_EV_BYTES, j->blob, done, j->total, NULL);
		}
	}
	return n;
}

/* curl rewinds a body it has to send again (e.g. after a 100-continue refusal). */
static int seek_cb(void *ud, curl_off_t off, int origin)
{
	struct job *j = ud;

	if (origin != SEEK_SET || off < 0 || (uint64_t)off > j->r.body_len)
		return CURL_SEEKFUNC_FAIL;
	j->r.body_pos = (uint64_t)off;
	return CURL_SEEKFUNC_OK;
}

static int hdr_add(struct req *r, const char *name, const char *value)
{
	char line[1200];
	struct curl_slist *l;

	snprintf(line, sizeof(line), "%s: %s", name, value);
	l = curl_slist_append(r->hdrs, line);
	if (!l)
		return -1;
	r->hdrs = l;
	return 0;
}

/* Sends (or re-sends) j's request: a fresh one from r->url, else the
 * current attempt at r->cur_url (after a redirect or a 401). */
static int req_issue(struct job *j, sl_error_t *err)
{
	struct oci_client *c = j->c;
	struct req *r = &j->r;
	CURL *eh;
	CURLcode e;
	int bad = 0;

	if (!r->url)
		return sl_error_set(err, SL_E_NOMEM, "out of memory");
	if (r->fresh) {
		r->fresh = false;
		r->reauthed = false;
		r->redirects = 0;
		free(r->cur_url);
		r->cur_url = strdup(r->url);
		if (!r->cur_url)
			return sl_error_set(err, SL_E_NOMEM, "out of memory");
		r->foreign = !reg_same_origin(c->base, r->cur_url);
	}
	/* A token about to expire is renewed before, not after, a failure:
	 * long uploads outlive short-lived tokens. */
	if (!r->foreign && c->scheme == OCI_AUTH_BEARER && reg_now_ms() + REG_TOKEN_MARGIN_MS >= c->token_expiry_ms &&
	    token_fetch(c, j, err) < 0)
		return -1;

	r->status = 0;
	r->errbuf[0] = '\0';
	r->got_first = r->body_ok = false;
	r->len = 0;
	sl_error_free(&r->cb_err);
	r->cb_retry = r->cb_stop_ok = false;
	r->retry_after_ms = -1;
	r->body_pos = 0;
	curl_slist_free_all(r->hdrs);
	r->hdrs = NULL;

	if (!j->eh && !(j->eh = pool_get(c)))
		return sl_error_set(err, SL_E_NOMEM, "out of memory");
	eh = j->eh;
	curl_easy_reset(eh);

	if (r->accept)
		bad |= hdr_add(r, "Accept", r->accept);
	if (r->content_type)
		bad |= hdr_add(r, "Content-Type", r->content_type);
	else if (!strcmp(r->method, "POST"))
		bad |= hdr_add(r, "Content-Type", ""); /* no form type on an empty POST */
	if (r->range[0])
		bad |= hdr_add(r, "Range", r->range);
	if (r->content_range[0])
		bad |= hdr_add(r, "Content-Range", r->content_range);
	r->sent_auth = !r->foreign && c->auth_header;
	r->sent_scheme = c->scheme;
	r->gen = c->auth_gen;
	if (r->sent_auth) {
		struct curl_slist *l = curl_slist_append(r->hdrs, c->auth_header);

		if (l)
			r->hdrs = l;
		bad |= !l;
	}
	if (bad)
		return sl_error_set(err, SL_E_NOMEM, "out of memory");

	e = common_opts(c, eh, r->errbuf);
#define SET(opt, val)                                        \
	do {                                                 \
		if (e == CURLE_OK)                           \
			e = curl_easy_setopt(eh, opt, val);  \
	} while (0)
	SET(CURLOPT_PRIVATE, (void *)j);
	SET(CURLOPT_URL, r->cur_url);
	SET(CURLOPT_HTTPHEADER, r->hdrs);
	SET(CURLOPT_WRITEFUNCTION, write_cb);
	SET(CURLOPT_WRITEDATA, (void *)j);
	/* HTTP/2 multiplexing: wait for the first connection to say whether it
	 * multiplexes instead of opening one per transfer. */
	SET(CURLOPT_PIPEWAIT, 1L);
	/* 16 KiB receive buffers made a 1 GiB pull 65,000 recv and pwrite calls
	 * each; 512 KiB (libcurl's maximum) cuts that 32-fold. libcurl 7.88
	 * refuses the change on a reused handle that still holds an HTTP/2
	 * buffer: then the default stays, which is only slower. */
	if (e == CURLE_OK)
		curl_easy_setopt(eh, CURLOPT_BUFFERSIZE, 512L * 1024);
	if (!strcmp(r->method, "HEAD")) {
		SET(CURLOPT_NOBODY, 1L);
	} else if (!strcmp(r->method, "GET")) {
		SET(CURLOPT_HTTPGET, 1L);
	} else if (!strcmp(r->method, "POST")) {
		SET(CURLOPT_POST, 1L);
		SET(CURLOPT_POSTFIELDS, "");
		SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)0);
	} else {
		/* PUT and PATCH: a body of body_len bytes (maybe 0) from read_cb. */
		SET(CURLOPT_UPLOAD, 1L);
		SET(CURLOPT_INFILESIZE_LARGE, (curl_off_t)r->body_len);
		SET(CURLOPT_READFUNCTION, read_cb);
		SET(CURLOPT_READDATA, (void *)j);
		SET(CURLOPT_SEEKFUNCTION, seek_cb);
		SET(CURLOPT_SEEKDATA, (void *)j);
		if (strcmp(r->method, "PUT") != 0)
			SET(CURLOPT_CUSTOMREQUEST, r->method);
	}
#undef SET
	if (e != CURLE_OK)
		return reg_error(j, err, SL_E_IO, "libcurl: %s", curl_easy_strerror(e));
	if (curl_multi_add_handle(c->multi, eh) != CURLM_OK)
		return reg_error(j, err, SL_E_IO, "libcurl: cannot add a transfer");
	c->stats.requests++;
	return 0;
}

/* ---- jobs ---- */

static void job_finish(struct job *j, int rc, sl_error_t err)
{
	j->done = true;
	j->waiting = false;
	j->ops->finish(j, rc, err);
	reg_job_release(j);
}

void reg_job_release(struct job *j)
{
	struct req *r = &j->r;

	if (j->eh) {
		pool_put(j->c, j->eh);
		j->eh = NULL;
	}
	free(r->url);
	free(r->cur_url);
	free(r->buf);
	curl_slist_free_all(r->hdrs);
	sl_error_free(&r->cb_err);
	r->url = r->cur_url = r->buf = NULL;
	r->hdrs = NULL;
	r->len = r->cap = 0;
	if (j->hash) {
		sl_digest junk;

		sl_sha256_final(j->hash, &junk);
		j->hash = NULL;
	}
}

static void job_begin(struct job *j)
{
	sl_error_t err = NULL;
	int rc;

	j->waiting = false;
	j->started = false;
	j->last_prog = 0;
	rc = j->ops->begin(j, &err);
	if (rc < 0)
		job_finish(j, -1, err);
	else if (rc > 0)
		job_finish(j, 0, NULL);
	else if (req_issue(j, &err) < 0)
		job_finish(j, -1, err);
}

static void job_step(struct job *j, enum step step, sl_error_t err)
{
	struct oci_client *c = j->c;

	switch (step) {
	case STEP_NEXT:
		if (req_issue(j, &err) < 0)
			job_finish(j, -1, err);
		return;
	case STEP_DONE:
		sl_error_free(&err);
		job_finish(j, 0, NULL);
		return;
	case STEP_RETRY:
		if (j->attempt < c->opts.retries) {
			uint64_t d = reg_backoff_ms(++j->attempt);
			char msg[1024];

			if (j->r.retry_after_ms > (int64_t)d)
				d = (uint64_t)j->r.retry_after_ms;
			c->stats.retries++;
			snprintf(msg, sizeof(msg), "%s (retry %u of %u in %" PRIu64 " ms)", sl_error_msg(err), j->attempt,
				 c->opts.retries, d);
			reg_progress(c, OCI_EV_RETRY, j->blob, 0, j->total, msg);
			sl_error_free(&err);
			j->waiting = true;
			j->wake_ms = reg_now_ms() + d;
			return;
		}
		if (j->attempt) {
			sl_error_t e2 = NULL;

			sl_error_set(&e2, err ? err->code : SL_E_IO, "%s (gave up after %u %s)", sl_error_msg(err),
				     j->attempt, j->attempt == 1 ? "retry" : "retries");
			sl_error_free(&err);
			err = e2;
		}
		job_finish(j, -1, err);
		return;
	case STEP_FAIL:
		job_finish(j, -1, err);
		return;
	}
}

static bool is_redirect(long st)
{
	return st == 301 || st == 302 || st == 303 || st == 307 || st == 308;
}

static void req_done(struct job *j, CURLcode cc)
{
	struct oci_client *c = j->c;
	struct req *r = &j->r;
	sl_error_t err = NULL;
	enum step step;
	long st = 0;

	curl_multi_remove_handle(c->multi, j->eh);
	curl_easy_getinfo(j->eh, CURLINFO_RESPONSE_CODE, &st);
	r->status = st;
	c->probed = true;
	if (cc != CURLE_OK && !(r->cb_stop_ok && cc == CURLE_WRITE_ERROR)) {
		if (r->cb_err) {
			err = r->cb_err;
			r->cb_err = NULL;
			job_step(j, r->cb_retry ? STEP_RETRY : STEP_FAIL, err);
			return;
		}
		/* curl's own detail says more than its generic text for cc. */
		reg_error(j, &err, SL_E_IO, "%s", r->errbuf[0] ? r->errbuf : curl_easy_strerror(cc));
		job_step(j, curl_retryable(cc) ? STEP_RETRY : STEP_FAIL, err);
		return;
	}
	if (r->follow && is_redirect(st)) {
		const char *loc = reg_hdr(j, "Location");
		char *next;

		if (!loc) {
			reg_error(j, &err, SL_E_INVALID, "%ld redirect without a Location", st);
			job_step(j, STEP_FAIL, err);
			return;
		}
		if (++r->redirects > REG_MAX_REDIRECTS) {
			reg_error(j, &err, SL_E_INVALID, "more than %d redirects", REG_MAX_REDIRECTS);
			job_step(j, STEP_FAIL, err);
			return;
		}
		next = reg_resolve(r->cur_url, loc, &err);
		if (!next) {
			sl_error_wrap(&err, "registry %s: %s: redirect", c->registry, r->what);
			job_step(j, STEP_FAIL, err);
			return;
		}
		free(r->cur_url);
		r->cur_url = next;
		/* Blob storage elsewhere gets no registry credentials. */
		r->foreign = !reg_same_origin(c->base, next);
		job_step(j, STEP_NEXT, NULL);
		return;
	}
	if (st == 401 && !r->foreign) {
		if (auth_on_401(j, &err) < 0)
			job_step(j, STEP_FAIL, err);
		else
			job_step(j, STEP_NEXT, NULL);
		return;
	}
	if (st == 408 || st == 429 || st >= 500) {
		r->retry_after_ms = reg_retry_after_ms(reg_hdr(j, "Retry-After"), time(NULL));
		step = reg_http_error(j, &err);
		job_step(j, step, err);
		return;
	}
	step = j->ops->response(j, &err);
	job_step(j, step, err);
}

/* Ends every job not done yet: the loop itself failed. */
static void fail_rest(struct oci_client *c, struct job *slots, unsigned nslots, size_t next, size_t n,
		      reg_job_init init, void *ctx, const char *why)
{
	for (unsigned s = 0; s < nslots; s++) {
		struct job *j = &slots[s];
		sl_error_t err = NULL;

		if (!j->active || j->done)
			continue;
		if (j->eh && !j->waiting)
			curl_multi_remove_handle(c->multi, j->eh);
		sl_error_set(&err, SL_E_IO, "registry %s: %s", c->registry, why);
		job_finish(j, -1, err);
	}
	for (; next < n; next++) {
		struct job j = { .c = c };
		sl_error_t err = NULL;

		init(ctx, next, &j);
		sl_error_set(&err, SL_E_IO, "registry %s: %s", c->registry, why);
		job_finish(&j, -1, err);
	}
}

static bool live_jobs(const struct job *slots, unsigned nslots)
{
	for (unsigned s = 0; s < nslots; s++) {
		if (slots[s].active && !slots[s].done)
			return true;
	}
	return false;
}

void reg_run(struct oci_client *c, size_t n, reg_job_init init, void *ctx)
{
	unsigned nslots = n < c->opts.parallel ? (unsigned)n : c->opts.parallel;
	struct job *slots;
	size_t next = 0;

	if (!n)
		return;
	slots = calloc(nslots, sizeof(*slots));
	if (!slots) {
		fail_rest(c, NULL, 0, 0, n, init, ctx, "out of memory");
		return;
	}
	for (;;) {
		uint64_t now = reg_now_ms(), wait = 1000;
		bool again = true, live = false, finished = false;
		int running = 0, queued;
		CURLMsg *m;
		CURLMcode mc;

		/* Fill free slots and wake jobs whose backoff is over; a job can
		 * finish without a request (bad arguments), freeing its slot at
		 * once, so go round until nothing moves. */
		while (again) {
			again = false;
			for (unsigned s = 0; s < nslots; s++) {
				struct job *j = &slots[s];

				/* Until the first answer says whether (and how) the
				 * registry wants credentials, one request at a time:
				 * not `parallel` anonymous requests that all get 401. */
				if ((!j->active || j->done) && next < n && (c->probed || !live_jobs(slots, nslots))) {
					memset(j, 0, sizeof(*j));
					j->c = c;
					init(ctx, next++, j);
					j->active = true;
					job_begin(j);
					again = true;
				} else if (j->active && !j->done && j->waiting && j->wake_ms <= now) {
					job_begin(j);
					again = true;
				}
			}
		}
		for (unsigned s = 0; s < nslots; s++) {
			struct job *j = &slots[s];

			if (!j->active || j->done)
				continue;
			live = true;
			if (j->waiting)
				wait = j->wake_ms <= now ? 0 : j->wake_ms - now < wait ? j->wake_ms - now : wait;
		}
		if (!live)
			break;
		mc = curl_multi_perform(c->multi, &running);
		if (mc != CURLM_OK) {
			fail_rest(c, slots, nslots, next, n, init, ctx, curl_multi_strerror(mc));
			break;
		}
		while ((m = curl_multi_info_read(c->multi, &queued))) {
			char *priv = NULL;
			struct job *j;

			if (m->msg != CURLMSG_DONE)
				continue;
			curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, &priv);
			j = (struct job *)(void *)priv;
			if (j) {
				req_done(j, m->data.result);
				finished = true;
			}
		}
		if (finished)
			continue;
		mc = curl_multi_poll(c->multi, NULL, 0, (int)wait, NULL);
		if (mc != CURLM_OK) {
			fail_rest(c, slots, nslots, next, n, init, ctx, curl_multi_strerror(mc));
			break;
		}
	}
	free(slots);
}

void reg_client_close(struct oci_client *c)
{
	reg_sink_free(c);
	for (size_t i = 0; i < c->npool; i++)
		curl_easy_cleanup(c->pool[i]);
	free(c->pool);
	c->pool = NULL;
	c->npool = 0;
	if (c->tok)
		curl_easy_cleanup(c->tok);
	if (c->multi)
		curl_multi_cleanup(c->multi);
	if (c->share)
		curl_share_cleanup(c->share);
	scopes_clear(c);
	secret_free(c->auth_header);
	c->auth_header = NULL;
	explicit_bzero(&c->creds, sizeof(c->creds));
}
