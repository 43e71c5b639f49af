/* Registry client: lifecycle, manifests (GET/HEAD/PUT) and small blobs (HEAD, GET into memory). */
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "oci/image.h"
#include "oci/ref.h"
#include "oci/registry.h"
#include "registry_int.h"

/* 2.8 answers a manifest GET/HEAD without these with 404 MANIFEST_UNKNOWN. */
#define ACCEPT_MANIFESTS OCI_MT_MANIFEST ", " OCI_MT_INDEX
#define DEFAULT_PARALLEL 8
#define DEFAULT_RETRIES 5
#define DEFAULT_CHUNK (64ull << 20)

int oci_client_new(const struct oci_ref *ref, const struct oci_client_opts *opts, struct oci_client **out,
		   sl_error_t *err)
{
	struct oci_client *c;
	const char *host;
	bool plain;
	int n;

	*out = NULL;
	if (reg_global_init(err) < 0)
		return -1;
	if (!ref)
		return sl_error_set(err, SL_E_INVALID, "registry client: no reference");
	host = oci_registry_api_host(ref->registry);
	if (!host || !reg_host_ok(host))
		return sl_error_set(err, SL_E_INVALID, "registry \"%.255s\": not a host[:port]", ref->registry);
	if (!reg_repo_ok(ref->repository))
		return sl_error_set(err, SL_E_INVALID, "registry %s: repository \"%.255s\" is not valid", ref->registry,
				    ref->repository);
	c = calloc(1, sizeof(*c));
	if (!c)
		return sl_error_set(err, SL_E_NOMEM, "out of memory");
	snprintf(c->registry, sizeof(c->registry), "%s", ref->registry);
	snprintf(c->repo, sizeof(c->repo), "%s", ref->repository);
	/* TLS unless the registry is this machine or the user said otherwise. */
	plain = oci_registry_is_loopback(ref->registry) || (opts && opts->insecure);
	n = snprintf(c->base, sizeof(c->base), "%s://%s", plain ? "http" : "https", host);
	if (n < 0 || (size_t)n >= sizeof(c->base)) {
		free(c);
		return sl_error_set(err, SL_E_INVALID, "registry \"%.255s\": host too long", ref->registry);
	}
	if (opts)
		c->opts = *opts;
	if (!c->opts.parallel)
		c->opts.parallel = DEFAULT_PARALLEL;
	if (c->opts.parallel > REG_PARALLEL_MAX)
		c->opts.parallel = REG_PARALLEL_MAX;
	if (!c->opts.retries)
		c->opts.retries = DEFAULT_RETRIES;
	if (!c->opts.chunk_upload_bytes)
		c->opts.chunk_upload_bytes = DEFAULT_CHUNK;
	/* Own copies: the caller's opts need not outlive this call. */
	if (opts && opts->creds) {
		c->creds = *opts->creds;
		c->creds_loaded = true;
		c->opts.creds = NULL;
	}
	c->opts.ca_file = NULL;
	if (opts && opts->ca_file && !(c->opts.ca_file = strdup(opts->ca_file)))
		goto oom;

	c->pool = calloc(c->opts.parallel, sizeof(*c->pool));
	c->multi = curl_multi_init();
	c->share = curl_share_init();
	if (!c->pool || !c->multi || !c->share)
		goto oom;
	curl_multi_setopt(c->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
	curl_multi_setopt(c->multi, CURLMOPT_MAXCONNECTS, (long)c->opts.parallel + 4);
	curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
	curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
	*out = c;
	return 0;
oom:
	oci_client_free(c);
	return sl_error_set(err, SL_E_NOMEM, "out of memory");
}

void oci_client_free(struct oci_client *c)
{
	if (!c)
		return;
	reg_client_close(c);
	free((char *)c->opts.ca_file);
	free(c);
}

void oci_client_stats(const struct oci_client *c, struct oci_client_stats *st)
{
	*st = c->stats;
}

/* ---- one-request operations ---- */

enum simple_op { OP_MANIFEST_GET = 1, OP_MANIFEST_HEAD, OP_MANIFEST_PUT, OP_BLOB_HEAD, OP_BLOB_GET };

struct simple {
	enum simple_op op;
	const char *reference; /* manifests */
	bool is_digest;
	sl_digest ref_digest; /* reference as a digest, or the blob */
	/* PUT */
	const char *media_type;
	const char *body;
	size_t len;
	size_t max; /* GETs */
	/* results */
	char *out_body;
	size_t out_len;
	char out_media_type[128];
	sl_digest out_digest;
	bool exists;
	uint64_t size;
	int rc;
	sl_error_t err;
};

static int simple_begin(struct job *j, sl_error_t *err)
{
	struct simple *s = j->arg;
	struct req *r = &j->r;
	char d[SL_DIGEST_STRLEN];

	(void)err;
	switch (s->op) {
	case OP_MANIFEST_GET:
	case OP_MANIFEST_HEAD: {
		bool get = s->op == OP_MANIFEST_GET;

		reg_req(j, get ? "GET" : "HEAD", reg_url(j->c, "manifests/%s", s->reference));
		snprintf(r->what, sizeof(r->what), "%s manifest %s", r->method, s->reference);
		r->accept = ACCEPT_MANIFESTS;
		r->follow = true;
		if (get) {
			r->sink = SINK_MEM;
			r->mem_max = OCI_MANIFEST_MAX;
		}
		return 0;
	}
	case OP_MANIFEST_PUT:
		reg_req(j, "PUT", reg_url(j->c, "manifests/%s", s->reference));
		snprintf(r->what, sizeof(r->what), "PUT manifest %s", s->reference);
		r->content_type = s->media_type;
		r->body = BODY_MEM;
		r->mem = s->body;
		r->body_len = s->len;
		return 0;
	case OP_BLOB_HEAD:
	case OP_BLOB_GET: {
		bool get = s->op == OP_BLOB_GET;

		sl_digest_format(&s->ref_digest, d);
		reg_req(j, get ? "GET" : "HEAD", reg_url(j->c, "blobs/%s", d));
		snprintf(r->what, sizeof(r->what), "%s blob %s", r->method, d);
		r->follow = true;
		if (get) {
			r->sink = SINK_MEM;
			r->mem_max = s->max;
		}
		return 0;
	}
	}
	return -1;
}

/* Takes the body out of the request buffer (NUL-terminated). */
static char *take_body(struct req *r)
{
	char *b = r->buf;

	if (!b)
		return calloc(1, 1);
	r->buf = NULL;
	r->cap = 0;
	return b;
}

static enum step manifest_got(struct job *j, struct simple *s, sl_error_t *err)
{
	struct req *r = &j->r;
	const char *ct = reg_hdr(j, "Content-Type");
	const char *mt = NULL, *chosen;
	char ctbase[256] = "";
	char have[SL_DIGEST_STRLEN];
	json_error_t jerr;
	json_t *root;
	sl_digest d;

	sl_sha256(r->buf ? r->buf : "", r->len, &d);
	if (s->is_digest && !sl_digest_equal(&d, &s->ref_digest)) {
		sl_digest_format(&d, have);
		reg_error(j, err, SL_E_INTEGRITY, "the manifest's digest is %s", have);
		return STEP_RETRY;
	}
	if (reg_check_dcd(j, &d, err) < 0)
		return STEP_RETRY;
	if (ct)
		reg_media_type_base(ct, ctbase, sizeof(ctbase));
	root = json_loadb(r->buf ? r->buf : "", r->len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root) {
		reg_error(j, err, SL_E_INVALID, "manifest is not JSON: %s", jerr.text);
		return STEP_FAIL;
	}
	if (json_is_object(root))
		mt = json_string_value(json_object_get(root, "mediaType"));
	if (ctbase[0] && mt && strcasecmp(ctbase, mt) != 0) {
		reg_error(j, err, SL_E_INVALID, "Content-Type %.127s but mediaType %.127s", ctbase, mt);
		json_decref(root);
		return STEP_FAIL;
	}
	chosen = ctbase[0] ? ctbase : mt ? mt : "";
	if (strlen(chosen) >= sizeof(s->out_media_type) || !reg_header_safe(chosen)) {
		reg_error(j, err, SL_E_INVALID, "bad manifest media type \"%.60s\"", chosen);
		json_decref(root);
		return STEP_FAIL;
	}
	memcpy(s->out_media_type, chosen, strlen(chosen) + 1);
	json_decref(root);
	s->out_digest = d;
	s->out_len = r->len;
	s->out_body = take_body(r);
	if (!s->out_body)
		return sl_error_set(err, SL_E_NOMEM, "out of memory"), STEP_FAIL;
	return STEP_DONE;
}

static enum step simple_response(struct job *j, sl_error_t *err)
{
	struct simple *s = j->arg;
	struct req *r = &j->r;
	long st = r->status;

	switch (s->op) {
	case OP_MANIFEST_GET:
		if (st != 200)
			return reg_http_error(j, err);
		return manifest_got(j, s, err);
	case OP_MANIFEST_HEAD:
		if (st == 404) {
			s->exists = false;
			return STEP_DONE;
		}
		if (st != 200)
			return reg_http_error(j, err);
		s->exists = true;
		if (s->is_digest) {
			if (reg_check_dcd(j, &s->ref_digest, err) < 0)
				return STEP_FAIL;
			s->out_digest = s->ref_digest;
		} else {
			const char *v = reg_hdr(j, "Docker-Content-Digest");

			if (v && !strncmp(v, "sha256:", 7) && sl_digest_parse(v, &s->out_digest, NULL) < 0) {
				reg_error(j, err, SL_E_INTEGRITY, "bad Docker-Content-Digest \"%.80s\"", v);
				return STEP_FAIL;
			}
		}
		return STEP_DONE;
	case OP_MANIFEST_PUT:
		if (st != 201)
			return reg_http_error(j, err);
		return reg_check_dcd(j, &s->out_digest, err) < 0 ? STEP_FAIL : STEP_DONE;
	case OP_BLOB_HEAD:
		if (st == 404) {
			s->exists = false;
			return STEP_DONE;
		}
		if (st != 200)
			return reg_http_error(j, err);
		s->exists = true;
		{
			curl_off_t cl = -1;

			curl_easy_getinfo(j->eh, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl);
			s->size = cl > 0 ? (uint64_t)cl : 0;
		}
		return reg_check_dcd(j, &s->ref_digest, err) < 0 ? STEP_FAIL : STEP_DONE;
	case OP_BLOB_GET: {
		sl_digest d;

		if (st != 200)
			return reg_http_error(j, err);
		sl_sha256(r->buf ? r->buf : "", r->len, &d);
		if (!sl_digest_equal(&d, &s->ref_digest)) {
			char have[SL_DIGEST_STRLEN];

			sl_digest_format(&d, have);
			reg_error(j, err, SL_E_INTEGRITY, "%zu bytes with digest %s", r->len, have);
			return STEP_RETRY;
		}
		s->out_len = r->len;
		s->out_body = take_body(r);
		if (!s->out_body)
			return sl_error_set(err, SL_E_NOMEM, "out of memory"), STEP_FAIL;
		return STEP_DONE;
	}
	}
	return STEP_FAIL;
}

static void simple_finish(struct job *j, int rc, sl_error_t err)
{
	struct simple *s = j->arg;

	s->rc = rc;
	s->err = err;
}

static const struct job_ops simple_ops = {
	.begin = simple_begin,
	.response = simple_response,
	.finish = simple_finish,
};

static void simple_init(void *ctx, size_t i, struct job *j)
{
	struct simple *s = ctx;

	(void)i;
	j->ops = &simple_ops;
	j->arg = s;
	j->push = s->op == OP_MANIFEST_PUT;
}

static int simple_run(struct oci_client *c, struct simple *s, sl_error_t *err)
{
	s->rc = -1;
	s->err = NULL;
	reg_run(c, 1, simple_init, s);
	if (s->rc < 0) {
		sl_error_free(err);
		*err = s->err ? s->err : NULL;
		if (!*err)
			sl_error_set(err, SL_E_IO, "registry %s: request not run", c->registry);
		return -1;
	}
	sl_error_free(&s->err);
	return 0;
}

int oci_manifest_get(struct oci_client *c, const char *reference, char **body, size_t *len,
		     char media_type[128], sl_digest *digest, sl_error_t *err)
{
	struct simple s = { .op = OP_MANIFEST_GET, .reference = reference };

	*body = NULL;
	*len = 0;
	if (reg_check_reference(reference, &s.is_digest, &s.ref_digest, err) < 0)
		return sl_error_wrap(err, "registry %s", c->registry);
	if (simple_run(c, &s, err) < 0)
		return -1;
	*body = s.out_body;
	*len = s.out_len;
	memcpy(media_type, s.out_media_type, sizeof(s.out_media_type));
	*digest = s.out_digest;
	return 0;
}

int oci_manifest_head(struct oci_client *c, const char *reference, bool *exists, sl_digest *digest,
		      sl_error_t *err)
{
	struct simple s = { .op = OP_MANIFEST_HEAD, .reference = reference };

	*exists = false;
	memset(digest, 0, sizeof(*digest));
	if (reg_check_reference(reference, &s.is_digest, &s.ref_digest, err) < 0)
		return sl_error_wrap(err, "registry %s", c->registry);
	if (simple_run(c, &s, err) < 0)
		return -1;
	*exists = s.exists;
	if (s.exists)
		*digest = s.out_digest;
	return 0;
}

int oci_manifest_put(struct oci_client *c, const char *reference, const char *media_type, const char *body,
		     size_t len, sl_digest *digest, sl_error_t *err)
{
	struct simple s = { .op = OP_MANIFEST_PUT, .reference = reference, .media_type = media_type,
			    .body = body, .len = len };

	if (reg_check_reference(reference, &s.is_digest, &s.ref_digest, err) < 0)
		return sl_error_wrap(err, "registry %s", c->registry);
	if (!media_type || !*media_type || strlen(media_type) >= 128 || !reg_header_safe(media_type))
		return sl_error_set(err, SL_E_INVALID, "registry %s: PUT manifest %s: bad media type", c->registry,
				    reference);
	if (!body && len)
		return sl_error_set(err, SL_E_INVALID, "registry %s: PUT manifest %s: no body", c->registry, reference);
	if (len > OCI_MANIFEST_MAX)
		return sl_error_set(err, SL_E_LIMIT, "registry %s: PUT manifest %s: %zu bytes, more than the %u registries accept",
				    c->registry, reference, len, OCI_MANIFEST_MAX);
	sl_sha256(body ? body : "", len, &s.out_digest);
	if (s.is_digest && !sl_digest_equal(&s.out_digest, &s.ref_digest))
		return sl_error_set(err, SL_E_INVALID, "registry %s: PUT manifest %s: the body has another digest",
				    c->registry, reference);
	if (simple_run(c, &s, err) < 0)
		return -1;
	if (digest)
		*digest = s.out_digest;
	return 0;
}

int oci_blob_exists(struct oci_client *c, const sl_digest *d, bool *exists, uint64_t *size, sl_error_t *err)
{
	struct simple s = { .op = OP_BLOB_HEAD, .ref_digest = *d };

	*exists = false;
	if (size)
		*size = 0;
	if (simple_run(c, &s, err) < 0)
		return -1;
	*exists = s.exists;
	if (size)
		*size = s.size;
	return 0;
}

int oci_blob_get(struct oci_client *c, const sl_digest *d, size_t max, char **buf, size_t *len, sl_error_t *err)
{
	struct simple s = { .op = OP_BLOB_GET, .ref_digest = *d, .max = max };
	*buf = NULL;
	*len = 0;
	if (simple_run(c, &s, err) < 0)
		return -1;
	*buf = s.out_body;
	*len = s.out_len;
	return 0;
}
