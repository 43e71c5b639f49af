/* Private to the registry client (registry*.c): the client, request and job types shared by its files. */
#ifndef OCI_REGISTRY_INT_H
#define OCI_REGISTRY_INT_H

#include <curl/curl.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "oci/registry.h"

#define REG_MAX_SCOPES 16
#define REG_ERRBODY_MAX (16u << 10) /* kept of a non-2xx body, for the message */
#define REG_TOKEN_BODY_MAX (64u << 10)
#define REG_MAX_REDIRECTS 8
#define REG_PARALLEL_MAX 64
#define REG_TOKEN_MARGIN_MS 10000 /* refresh a token this long before it expires */
#define REG_RETRY_AFTER_CAP_MS 30000
#define REG_BACKOFF_FIRST_MS 100
#define REG_BACKOFF_CAP_MS 5000
#define REG_PROGRESS_STEP (1u << 20) /* OCI_EV_BYTES at most once per MiB */

struct oci_client {
	char registry[256]; /* as in the reference: messages, credentials */
	char repo[256];
	char base[300]; /* "https://host[:port]" */
	struct oci_client_opts opts; /* defaults applied */

	/* credentials: opts.creds, else loaded on the first 401 */
	struct oci_creds creds;
	bool creds_loaded;

	/* auth state: the header every same-origin request carries */
	enum oci_auth_scheme scheme;
	char *auth_header; /* "Authorization: Basic|Bearer ..." (secret) */
	uint64_t token_expiry_ms; /* monotonic; Bearer only */
	unsigned auth_gen;        /* bumped whenever auth_header changes */
	bool probed; /* a request has come back: the auth scheme is known */
	char realm[1024], service[256]; /* of the last Bearer challenge */
	char *scopes[REG_MAX_SCOPES]; /* what the token was (or will be) asked for */
	size_t nscopes;

	CURLM *multi; /* owns the connection cache: keep-alive across calls */
	CURLSH *share; /* DNS and TLS sessions, also for the token handle */
	CURL *tok;     /* token requests (blocking, outside the multi) */
	CURL **pool;   /* idle easy handles */
	size_t npool;

	struct oci_client_stats stats;
	struct reg_sink *sink; /* part writers (registry_transfer.c), started on first use */
};

enum req_body { BODY_NONE = 0, BODY_MEM, BODY_SEGS };
enum req_sink { SINK_DISCARD = 0, SINK_MEM, SINK_FETCH };

/* One HTTP exchange as the job describes it, plus the state of its current
 * attempt (redirects and 401 re-sends are attempts of the same request). */
struct req {
	/* set by the job (reg_req) */
	const char *method; /* GET HEAD POST PUT PATCH */
	char *url;          /* owned; absolute */
	char what[192];     /* "GET blob sha256:..." for messages */
	const char *accept, *content_type;
	char range[64], content_range[64]; /* header lines or "" */
	bool follow; /* GET/HEAD: follow redirects (without auth off-origin) */
	enum req_body body;
	const void *mem;
	const struct oci_seg *segs;
	size_t nsegs;
	uint64_t body_off, body_len; /* BODY_SEGS: window of the segments */
	enum req_sink sink;
	size_t mem_max; /* SINK_MEM: more is SL_E_LIMIT */
	bool fresh;     /* not sent yet */

	/* current attempt */
	char *cur_url;
	bool foreign; /* cur_url is not the registry's origin: no Authorization */
	unsigned redirects;
	bool reauthed; /* a 401 already led to new credentials once */
	unsigned gen;  /* c->auth_gen when sent */
	bool sent_auth;
	enum oci_auth_scheme sent_scheme;
	struct curl_slist *hdrs;
	uint64_t body_pos;

	/* response */
	long status;
	char errbuf[CURL_ERROR_SIZE];
	bool got_first, body_ok;
	char *buf; /* SINK_MEM body, or a non-2xx body (bounded) */
	size_t len, cap;
	sl_error_t cb_err; /* a callback stopped the transfer */
	bool cb_retry;     /* ... and a retry may help */
	bool cb_stop_ok;   /* ... because it had all it wanted */
	int64_t retry_after_ms;
};

enum step { STEP_NEXT, STEP_DONE, STEP_RETRY, STEP_FAIL };

struct job;
struct job_ops {
	/* (Re)starts the job: sets j->r via reg_req. 0: send it; 1: done
	 * without a request; -1: failed (no retry). */
	int (*begin)(struct job *j, sl_error_t *err);
	/* The request finished with a status that is not a redirect, 401, 408,
	 * 429 or 5xx. STEP_NEXT after setting the next request. */
	enum step (*response)(struct job *j, sl_error_t *err);
	/* SINK_FETCH: first bytes of a 2xx (headers known), then the bytes. */
	int (*headers)(struct job *j);
	size_t (*write)(struct job *j, const char *p, size_t n);
	/* Final result; err is owned by the callee. */
	void (*finish)(struct job *j, int rc, sl_error_t err);
};

struct job {
	struct oci_client *c;
	const struct job_ops *ops;
	void *arg;
	CURL *eh;
	struct req r;
	bool push;              /* token needs repository:<repo>:pull,push */
	const char *mount_from; /* token also needs repository:<from>:pull */
	unsigned attempt;       /* retries used */
	bool waiting, active, done;
	uint64_t wake_ms;
	const sl_digest *blob; /* for progress events */
	uint64_t total, last_prog;
	bool started; /* OCI_EV_START sent for this attempt */

	/* fetch */
	sl_sha256_ctx *hash;
	uint64_t pos, skip, limit; /* bytes kept, to drop first, to keep (UINT64_MAX: all) */
	bool stop_at_limit;
	uint8_t *wbuf; /* bytes not yet written: libcurl hands over 16 KiB at a time */
	size_t wlen;
	size_t part;          /* fetch parts: the one being received */
	sl_sha256_ctx *phash; /* its hash so far */
	/* fetch parts through the writers (registry_transfer.c): the part
	 * being received goes into pbuf; finished parts are hashed and written
	 * by the writer threads. inflight and async_err are guarded by the
	 * sink's lock. */
	bool async;
	struct reg_pbuf *pbuf;
	unsigned inflight;
	sl_error_t async_err; /* first failure of a writer for this attempt */
	bool async_retry;
	/* upload */
	int ustate;
	uint64_t up_off;
};

/* ---- registry_util.c: pure helpers ---- */
uint64_t reg_backoff_ms(unsigned retry);
int64_t reg_retry_after_ms(const char *value, time_t now);
void reg_error_summary(const char *body, size_t len, char *out, size_t cap);
int reg_parse_content_range(const char *v, uint64_t *first, uint64_t *last, uint64_t *total);
int reg_parse_range(const char *v, uint64_t *first, uint64_t *last);
char *reg_add_query(const char *url, const char *kv);
char *reg_resolve(const char *base, const char *location, sl_error_t *err);
bool reg_same_origin(const char *a, const char *b);
bool reg_url_is_loopback(const char *url);
bool reg_url_scheme_is(const char *url, const char *scheme);
size_t reg_pct_encode(const char *in, char *out, size_t cap);
bool reg_valid_tag(const char *s);
bool reg_host_ok(const char *h);
bool reg_repo_ok(const char *r);
int reg_check_reference(const char *reference, bool *is_digest, sl_digest *d, sl_error_t *err);
bool reg_header_safe(const char *s);
int reg_scopes_add(char **set, size_t *n, size_t cap, const char *scopes);
char *reg_token_url(const char *realm, const char *service, char *const *scopes, size_t n);
void reg_media_type_base(const char *v, char *out, size_t cap);

/* ---- registry_http.c: requests, auth, the transfer loop ---- */
int reg_global_init(sl_error_t *err);
uint64_t reg_now_ms(void);
uint64_t reg_now_ns(void);
/* Starts describing a new request of j (takes url). */
void reg_req(struct job *j, const char *method, char *url);
/* "base/v2/<repo>/<fmt...>", or NULL */
char *reg_url(struct oci_client *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A header of the last response of j's request, or NULL. */
const char *reg_hdr(struct job *j, const char *name);
/* The error for an unexpected status: code from the status and body,
 * message "registry R: WHAT: 400 CODE: message". Returns STEP_FAIL or
 * STEP_RETRY as the rules say. */
enum step reg_http_error(struct job *j, sl_error_t *err);
int reg_error(struct job *j, sl_error_t *err, int code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
void reg_progress(struct oci_client *c, enum oci_event ev, const sl_digest *blob, uint64_t done, uint64_t total,
		  const char *msg);
/* Checks a Docker-Content-Digest header against want (absent or not sha256: ok). */
int reg_check_dcd(struct job *j, const sl_digest *want, sl_error_t *err);
/* Runs n jobs, opts.parallel at a time, in as many recycled job slots:
 * init fills slot j (zeroed, c set) for job i; every job ends through
 * ops->finish. Memory stays O(parallel) however many jobs there are. */
typedef void (*reg_job_init)(void *ctx, size_t i, struct job *j);
void reg_run(struct oci_client *c, size_t n, reg_job_init init, void *ctx);
void reg_job_release(struct job *j);
void reg_client_close(struct oci_client *c);

/* ---- registry_transfer.c ---- */
/* Stops and frees the part writers (reg_client_close calls it). */
void reg_sink_free(struct oci_client *c);

#endif
