/* Node labelling through the Kubernetes API: one JSON merge patch of metadata.labels with libcurl. */
#include <ctype.h>
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "node_int.h"
#include "sl/file.h"
#include "sl/json.h"
#include "sporelet_node.h"

#define TOKEN_MAX (64u << 10)
#define REPLY_MAX (64u << 10)

/* RFC 1123 subdomain (Node names, label key prefixes): lowercase letters,
 * digits, '-' and '.', alphanumeric at both ends. */
static bool dns_subdomain(const char *s, size_t n)
{
	if (n == 0 || n > 253 || !isalnum((unsigned char)s[0]) || !isalnum((unsigned char)s[n - 1]))
		return false;
	for (size_t i = 0; i < n; i++)
		if (!(islower((unsigned char)s[i]) || isdigit((unsigned char)s[i]) || s[i] == '-' || s[i] == '.'))
			return false;
	return true;
}

/* A label name or value: at most 63 of [A-Za-z0-9-_.], alphanumeric at
 * both ends (a value may also be empty). */
static bool label_part(const char *s, size_t n, bool may_be_empty)
{
	if (n == 0)
		return may_be_empty;
	if (n > 63 || !isalnum((unsigned char)s[0]) || !isalnum((unsigned char)s[n - 1]))
		return false;
	for (size_t i = 0; i < n; i++)
		if (!(isalnum((unsigned char)s[i]) || s[i] == '-' || s[i] == '_' || s[i] == '.'))
			return false;
	return true;
}

static bool label_key(const char *k)
{
	const char *slash = strchr(k, '/');

	if (!slash)
		return label_part(k, strlen(k), false);
	return dns_subdomain(k, (size_t)(slash - k)) && label_part(slash + 1, strlen(slash + 1), false);
}

static size_t collect(char *ptr, size_t size, size_t nmemb, void *ud)
{
	struct nbuf *b = ud;
	size_t n = size * nmemb;

	/* Only the start of an error reply is shown; the rest is dropped. */
	if (b->len < REPLY_MAX)
		nbuf_add(b, ptr, n < REPLY_MAX - b->len ? n : REPLY_MAX - b->len);
	return n;
}

static void curl_cleanupp(CURL **c)
{
	if (*c)
		curl_easy_cleanup(*c);
}

static void slist_freep(struct curl_slist **l)
{
	if (*l)
		curl_slist_free_all(*l);
}

int node_label(const struct node_label_opts *o, sl_error_t *err)
{
	__attribute__((cleanup(curl_cleanupp))) CURL *c = NULL;
	__attribute__((cleanup(slist_freep))) struct curl_slist *hdrs = NULL;
	_cleanup_free_ char *token = NULL, *body = NULL, *url = NULL, *auth = NULL;
	_cleanup_json_ json_t *patch = NULL;
	struct nbuf reply = {0};
	size_t tlen, blen;
	long status = 0;
	CURLcode cc;

	if (!o->node_name || !dns_subdomain(o->node_name, strlen(o->node_name)))
		return sl_error_set(err, SL_E_INVALID, "node name \"%s\": not a DNS subdomain name",
				    o->node_name ? o->node_name : "");
	if (!o->key || !label_key(o->key))
		return sl_error_set(err, SL_E_INVALID, "label key \"%s\": not a Kubernetes label key", o->key ? o->key : "");
	if (o->value && !label_part(o->value, strlen(o->value), true))
		return sl_error_set(err, SL_E_INVALID, "label value \"%s\": not a Kubernetes label value", o->value);
	if (!o->api_server || strncmp(o->api_server, "http", 4) != 0)
		return sl_error_set(err, SL_E_INVALID, "API server \"%s\": an http(s) URL is needed",
				    o->api_server ? o->api_server : "");
	if (sl_read_path(o->token_file, TOKEN_MAX, &token, &tlen, err) < 0)
		return sl_error_wrap(err, "service account token");
	while (tlen > 0 && isspace((unsigned char)token[tlen - 1]))
		token[--tlen] = '\0';
	if (tlen == 0 || strpbrk(token, "\r\n"))
		return sl_error_set(err, SL_E_INVALID, "service account token %s: empty or several lines", o->token_file);

	patch = json_pack("{s:{s:{s:o}}}", "metadata", "labels", o->key,
			  o->value ? json_string(o->value) : json_null());
	if (!patch || !(body = json_dumps(patch, JSON_COMPACT)))
		return sl_error_set(err, SL_E_NOMEM, "out of memory");
	blen = strlen(body);
	const char *base = o->api_server;
	size_t bl = strlen(base);

	while (bl > 0 && base[bl - 1] == '/')
		bl--;
	if (asprintf(&url, "%.*s/api/v1/nodes/%s", (int)bl, base, o->node_name) < 0 ||
	    asprintf(&auth, "Authorization: Bearer %s", token) < 0) {
		url = auth = NULL;
		return sl_error_set(err, SL_E_NOMEM, "out of memory");
	}
	if (!(c = curl_easy_init()))
		return sl_error_set(err, SL_E_NOMEM, "curl_easy_init failed");
	hdrs = curl_slist_append(hdrs, "Content-Type: application/merge-patch+json");
	hdrs = hdrs ? curl_slist_append(hdrs, "Accept: application/json") : NULL;
	hdrs = hdrs ? curl_slist_append(hdrs, auth) : NULL;
	if (!hdrs)
		return sl_error_set(err, SL_E_NOMEM, "out of memory");
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, "PATCH");
	curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)blen);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &reply);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "https,http");
	curl_easy_setopt(c, CURLOPT_TIMEOUT, o->timeout_s > 0 ? o->timeout_s : 30L);
	if (o->ca_file)
		curl_easy_setopt(c, CURLOPT_CAINFO, o->ca_file);
	cc = curl_easy_perform(c);
	if (cc != CURLE_OK) {
		nbuf_free(&reply);
		return sl_error_set(err, SL_E_IO, "PATCH %s: %s", url, curl_easy_strerror(cc));
	}
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	if (status == 404 && !o->value) {
		/* The node is gone: so is its label. */
		nbuf_free(&reply);
		return 0;
	}
	if (status < 200 || status > 299) {
		char show[SL_SHOW_BUF];

		sl_show(reply.p ? reply.p : "", reply.len, show);
		nbuf_free(&reply);
		return sl_error_set(err, status == 404 ? SL_E_NOT_FOUND : SL_E_IO, "PATCH %s: HTTP %ld: %s", url,
				    status, show);
	}
	nbuf_free(&reply);
	return 0;
}
