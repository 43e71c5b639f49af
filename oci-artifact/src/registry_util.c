/* Pure helpers of the registry client (URLs, error bodies, ranges, backoff, scopes), unit-tested offline. */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "oci/ref.h"
#include "registry_int.h"

/* Retry k (1-based) waits 100 ms << (k-1), at most 5 s. */
uint64_t reg_backoff_ms(unsigned retry)
{
	uint64_t ms = REG_BACKOFF_FIRST_MS;

	for (unsigned i = 1; i < retry && ms < REG_BACKOFF_CAP_MS; i++)
		ms *= 2;
	return ms > REG_BACKOFF_CAP_MS ? REG_BACKOFF_CAP_MS : ms;
}

/* Retry-After is delta-seconds or an HTTP-date (RFC 9110 10.2.3). -1 when
 * absent or unparsable; capped so a hostile server cannot park us. */
int64_t reg_retry_after_ms(const char *v, time_t now)
{
	int64_t ms;

	if (!v)
		return -1;
	while (*v == ' ' || *v == '\t')
		v++;
	if (!*v)
		return -1;
	if (isdigit((unsigned char)*v)) {
		uint64_t s = 0;
		const char *p = v;

		for (; isdigit((unsigned char)*p); p++) {
			if (s < 100000)
				s = s * 10 + (uint64_t)(*p - '0');
		}
		while (*p == ' ' || *p == '\t')
			p++;
		if (*p)
			return -1;
		ms = (int64_t)s * 1000;
	} else {
		time_t t = curl_getdate(v, NULL);

		if (t == (time_t)-1)
			return -1;
		/* A date centuries ahead must not overflow the product. */
		if (t > now && (int64_t)(t - now) > REG_RETRY_AFTER_CAP_MS / 1000)
			return REG_RETRY_AFTER_CAP_MS;
		ms = t > now ? (int64_t)(t - now) * 1000 : 0;
	}
	return ms > REG_RETRY_AFTER_CAP_MS ? REG_RETRY_AFTER_CAP_MS : ms;
}

/* Appends s to out (bounded, NUL-terminated), turning control characters
 * into spaces: bodies are untrusted and end up in terminals and logs. */
static void append_clean(char *out, size_t cap, size_t *n, const char *s, size_t len)
{
	for (size_t i = 0; i < len && *n + 1 < cap; i++) {
		unsigned char ch = (unsigned char)s[i];

		out[(*n)++] = (ch < 0x20 || ch == 0x7f) ? ' ' : (char)ch;
	}
	out[*n] = '\0';
}

/* "CODE: message; CODE: message" from {"errors":[{"code","message"}]}, else
 * the first line of the body; "" for an empty body. */
void reg_error_summary(const char *body, size_t len, char *out, size_t cap)
{
	json_t *root = NULL, *errs;
	size_t n = 0;

	if (!cap)
		return;
	out[0] = '\0';
	if (!body || !len)
		return;
	root = json_loadb(body, len, 0, NULL);
	errs = root ? json_object_get(root, "errors") : NULL;
	if (json_is_array(errs) && json_array_size(errs) > 0) {
		size_t i, shown = 0;
		json_t *e;

		json_array_foreach(errs, i, e) {
			const char *code = json_string_value(json_object_get(e, "code"));
			const char *msg = json_string_value(json_object_get(e, "message"));

			if (!code && !msg)
				continue;
			if (shown == 3) {
				char more[48];

				snprintf(more, sizeof(more), " (+%zu more)", json_array_size(errs) - i);
				append_clean(out, cap, &n, more, strlen(more));
				break;
			}
			if (shown)
				append_clean(out, cap, &n, "; ", 2);
			if (code)
				append_clean(out, cap, &n, code, strnlen(code, 64));
			if (code && msg)
				append_clean(out, cap, &n, ": ", 2);
			if (msg)
				append_clean(out, cap, &n, msg, strnlen(msg, 200));
			shown++;
		}
	}
	json_decref(root);
	if (n)
		return;
	/* Not a distribution error: the first line says the most (proxies). */
	{
		size_t i = 0, end;

		while (i < len && isspace((unsigned char)body[i]))
			i++;
		end = i;
		while (end < len && body[end] != '\n' && body[end] != '\r' && end - i < 200)
			end++;
		append_clean(out, cap, &n, body + i, end - i);
		while (n && out[n - 1] == ' ')
			out[--n] = '\0';
	}
}

static const char *parse_u64(const char *p, uint64_t *out)
{
	uint64_t v = 0;

	if (!isdigit((unsigned char)*p))
		return NULL;
	for (; isdigit((unsigned char)*p); p++) {
		unsigned d = (unsigned)(*p - '0');

		if (v > (UINT64_MAX - d) / 10)
			return NULL;
		v = v * 10 + d;
	}
	*out = v;
	return p;
}

/* "bytes first-last/total" (total "*": UINT64_MAX). */
int reg_parse_content_range(const char *v, uint64_t *first, uint64_t *last, uint64_t *total)
{
	const char *p;

	if (!v || strncasecmp(v, "bytes ", 6) != 0)
		return -1;
	p = v + 6;
	while (*p == ' ')
		p++;
	if (!(p = parse_u64(p, first)) || *p++ != '-' || !(p = parse_u64(p, last)) || *p++ != '/')
		return -1;
	if (*p == '*') {
		*total = UINT64_MAX;
		p++;
	} else if (!(p = parse_u64(p, total)) || *total <= *last) {
		return -1;
	}
	while (*p == ' ')
		p++;
	if (*p || *first > *last)
		return -1;
	return 0;
}

/* The upload "Range: 0-<last>" header of distribution. */
int reg_parse_range(const char *v, uint64_t *first, uint64_t *last)
{
	const char *p = v;

	if (!p)
		return -1;
	if (strncasecmp(p, "bytes=", 6) == 0)
		p += 6;
	if (!(p = parse_u64(p, first)) || *p++ != '-' || !(p = parse_u64(p, last)) || *p)
		return -1;
	return *first <= *last ? 0 : -1;
}

/* url plus "?kv" or "&kv": Locations carry their own query (2.8's _state). */
char *reg_add_query(const char *url, const char *kv)
{
	const char *hash = strchr(url, '#');
	size_t head = hash ? (size_t)(hash - url) : strlen(url);
	bool has_q = memchr(url, '?', head) != NULL;
	char sep = has_q ? (head && url[head - 1] != '?' && url[head - 1] != '&' ? '&' : '\0') : '?';
	char *out = NULL;

	/* A fragment never reaches the server: drop it. */
	if (sep) {
		if (asprintf(&out, "%.*s%c%s", (int)head, url, sep, kv) < 0)
			return NULL;
	} else if (asprintf(&out, "%.*s%s", (int)head, url, kv) < 0) {
		return NULL;
	}
	return out;
}

/* location resolved against base (absolute or relative), http(s) only. */
char *reg_resolve(const char *base, const char *location, sl_error_t *err)
{
	CURLU *u = curl_url();
	char *tmp = NULL, *out = NULL;

	if (!u) {
		sl_error_set(err, SL_E_NOMEM, "out of memory");
		return NULL;
	}
	if (curl_url_set(u, CURLUPART_URL, base, 0) != CURLUE_OK ||
	    curl_url_set(u, CURLUPART_URL, location, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_URL, &tmp, 0) != CURLUE_OK) {
		sl_error_set(err, SL_E_INVALID, "bad Location \"%.200s\"", location);
		goto out;
	}
	if (!reg_url_scheme_is(tmp, "http") && !reg_url_scheme_is(tmp, "https")) {
		sl_error_set(err, SL_E_INVALID, "Location \"%.200s\" is not http(s)", location);
		goto out;
	}
	out = strdup(tmp);
	if (!out)
		sl_error_set(err, SL_E_NOMEM, "out of memory");
out:
	curl_free(tmp);
	curl_url_cleanup(u);
	return out;
}

struct origin {
	char *scheme, *host, *port;
};

static int origin_get(const char *url, struct origin *o)
{
	CURLU *u = curl_url();
	int rc = -1;

	memset(o, 0, sizeof(*o));
	if (!u)
		return -1;
	if (curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
	    curl_url_get(u, CURLUPART_SCHEME, &o->scheme, 0) == CURLUE_OK &&
	    curl_url_get(u, CURLUPART_HOST, &o->host, 0) == CURLUE_OK &&
	    curl_url_get(u, CURLUPART_PORT, &o->port, CURLU_DEFAULT_PORT) == CURLUE_OK)
		rc = 0;
	curl_url_cleanup(u);
	return rc;
}

static void origin_free(struct origin *o)
{
	curl_free(o->scheme);
	curl_free(o->host);
	curl_free(o->port);
}

/* Same scheme, host and port: the only place credentials may go. */
bool reg_same_origin(const char *a, const char *b)
{
	struct origin x, y;
	int ra = origin_get(a, &x), rb = origin_get(b, &y);
	bool same = false;

	if (ra == 0 && rb == 0)
		same = !strcasecmp(x.scheme, y.scheme) && !strcasecmp(x.host, y.host) && !strcmp(x.port, y.port);
	origin_free(&x);
	origin_free(&y);
	return same;
}

bool reg_url_is_loopback(const char *url)
{
	struct origin o;
	bool lo = false;

	if (origin_get(url, &o) == 0)
		lo = oci_registry_is_loopback(o.host);
	origin_free(&o);
	return lo;
}

bool reg_url_scheme_is(const char *url, const char *scheme)
{
	size_t n = strlen(scheme);

	return strncasecmp(url, scheme, n) == 0 && strncmp(url + n, "://", 3) == 0;
}

/* RFC 3986 percent-encoding of everything but unreserved characters.
 * Returns the length, or cap when it does not fit. */
size_t reg_pct_encode(const char *in, char *out, size_t cap)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t n = 0;

	for (; *in; in++) {
		unsigned char ch = (unsigned char)*in;

		if (isalnum(ch) || ch == '-' || ch == '.' || ch == '_' || ch == '~') {
			if (n + 1 >= cap)
				return cap;
			out[n++] = (char)ch;
		} else {
			if (n + 3 >= cap)
				return cap;
			out[n++] = '%';
			out[n++] = hex[ch >> 4];
			out[n++] = hex[ch & 15];
		}
	}
	if (n >= cap)
		return cap;
	out[n] = '\0';
	return n;
}

/* [A-Za-z0-9_][A-Za-z0-9._-]{0,127} */
bool reg_valid_tag(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > 128 || !(isalnum((unsigned char)s[0]) || s[0] == '_'))
		return false;
	for (size_t i = 1; i < n; i++) {
		unsigned char ch = (unsigned char)s[i];

		if (!(isalnum(ch) || ch == '_' || ch == '.' || ch == '-'))
			return false;
	}
	return true;
}

/* The host goes into URLs as is: nothing that could end or redirect it. */
bool reg_host_ok(const char *h)
{
	if (!*h)
		return false;
	for (; *h; h++) {
		unsigned char ch = (unsigned char)*h;

		if (!(isalnum(ch) || ch == '.' || ch == '-' || ch == ':' || ch == '[' || ch == ']' || ch == '_'))
			return false;
	}
	return true;
}

/* References are parsed strictly by oci_ref_parse; this only keeps
 * hand-built names from escaping the /v2/<name>/ path. */
bool reg_repo_ok(const char *r)
{
	if (!*r || *r == '/' || r[strlen(r) - 1] == '/' || strstr(r, "//") || strstr(r, ".."))
		return false;
	for (; *r; r++) {
		unsigned char ch = (unsigned char)*r;

		if (!(islower(ch) || isdigit(ch) || ch == '.' || ch == '_' || ch == '-' || ch == '/'))
			return false;
	}
	return true;
}

/* A manifest reference goes into the URL path: a tag or sha256 digest only. */
int reg_check_reference(const char *reference, bool *is_digest, sl_digest *d, sl_error_t *err)
{
	if (!reference)
		return sl_error_set(err, SL_E_INVALID, "no manifest reference");
	if (strchr(reference, ':')) {
		if (sl_digest_parse(reference, d, NULL) < 0)
			return sl_error_set(err, SL_E_INVALID, "manifest reference \"%.80s\": not a sha256 digest",
					    reference);
		*is_digest = true;
		return 0;
	}
	if (!reg_valid_tag(reference))
		return sl_error_set(err, SL_E_INVALID, "manifest reference \"%.80s\": not a valid tag", reference);
	*is_digest = false;
	return 0;
}

/* Values we put in header lines: printable ASCII only (no CR/LF injection). */
bool reg_header_safe(const char *s)
{
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;

		if (ch < 0x20 || ch >= 0x7f)
			return false;
	}
	return true;
}

/* Adds the space-separated scopes to the set (no duplicates). Returns how
 * many were added; scopes beyond cap or unsafe ones are dropped. */
int reg_scopes_add(char **set, size_t *n, size_t cap, const char *scopes)
{
	int added = 0;
	const char *p = scopes;

	while (p && *p) {
		const char *e;
		size_t len, i;

		while (*p == ' ')
			p++;
		e = p;
		while (*e && *e != ' ')
			e++;
		len = (size_t)(e - p);
		if (len && len < 512 && *n < cap) {
			for (i = 0; i < *n; i++) {
				if (strlen(set[i]) == len && !memcmp(set[i], p, len))
					break;
			}
			if (i == *n) {
				char *s = strndup(p, len);

				if (s && reg_header_safe(s)) {
					set[(*n)++] = s;
					added++;
				} else {
					free(s);
				}
			}
		}
		p = e;
	}
	return added;
}

/* realm?service=<svc>&scope=<s1>&scope=<s2> (docker token spec). */
char *reg_token_url(const char *realm, const char *service, char *const *scopes, size_t n)
{
	size_t cap = strlen(realm) + 16 + 3 * strlen(service) + 1;
	char *out, *p;
	bool first;

	for (size_t i = 0; i < n; i++)
		cap += 8 + 3 * strlen(scopes[i]);
	out = malloc(cap);
	if (!out)
		return NULL;
	p = out + sprintf(out, "%s", realm);
	first = !strchr(realm, '?');
	if (*service) {
		p += sprintf(p, "%sservice=", first ? "?" : "&");
		p += reg_pct_encode(service, p, cap - (size_t)(p - out));
		first = false;
	}
	for (size_t i = 0; i < n; i++) {
		p += sprintf(p, "%sscope=", first ? "?" : "&");
		p += reg_pct_encode(scopes[i], p, cap - (size_t)(p - out));
		first = false;
	}
	return out;
}

/* "application/x; charset=utf-8" -> "application/x" (lowercased, trimmed). */
void reg_media_type_base(const char *v, char *out, size_t cap)
{
	size_t n = 0;

	if (!cap)
		return;
	while (*v == ' ' || *v == '\t')
		v++;
	for (; *v && *v != ';' && n + 1 < cap; v++)
		out[n++] = (char)tolower((unsigned char)*v);
	while (n && (out[n - 1] == ' ' || out[n - 1] == '\t'))
		n--;
	out[n] = '\0';
}
