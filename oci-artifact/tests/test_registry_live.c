/* Registry client against a live registry (SPORE_TEST_REGISTRY=host:port, loopback); skips (77) without one. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "oci/registry.h"
#include "sl/digest.h"

/* Environment:
 *   SPORE_TEST_REGISTRY       host:port of a registry (no auth, or the auth below)
 *   SPORE_TEST_REGISTRY_AUTH  "user:password" if it wants credentials
 *   SPORE_TEST_REGISTRY_CA    CA file, for a TLS registry (non-loopback host)
 * Repositories are named per run, so nothing is skipped by earlier runs. */
static const char *g_host, *g_ca;
static struct oci_creds g_creds;
static char g_run[64];

struct events {
	unsigned start, bytes, done, skip, mount, retry;
	char last_retry[512];
};

static void on_progress(void *arg, const struct oci_progress *p)
{
	struct events *e = arg;

	switch (p->event) {
	case OCI_EV_START: e->start++; break;
	case OCI_EV_BYTES: e->bytes++; break;
	case OCI_EV_DONE: e->done++; break;
	case OCI_EV_SKIP: e->skip++; break;
	case OCI_EV_MOUNT: e->mount++; break;
	case OCI_EV_RETRY:
		e->retry++;
		snprintf(e->last_retry, sizeof(e->last_retry), "%s", p->msg ? p->msg : "");
		break;
	}
}

static struct oci_client *client(const char *repo, struct oci_client_opts *o, struct events *ev)
{
	struct oci_client_opts def = { 0 };
	struct oci_ref ref = { 0 };
	struct oci_client *c = NULL;
	sl_error_t err = NULL;

	if (!o)
		o = &def;
	if (!o->creds)
		o->creds = &g_creds;
	if (!o->ca_file)
		o->ca_file = g_ca;
	if (ev) {
		o->progress = on_progress;
		o->progress_arg = ev;
	}
	snprintf(ref.registry, sizeof(ref.registry), "%s", g_host);
	snprintf(ref.repository, sizeof(ref.repository), "spore-test/%s/%s", g_run, repo);
	if (oci_client_new(&ref, o, &c, &err) < 0)
		fail_msg("client: %s", sl_error_msg(err));
	return c;
}

static void repo_name(char *out, size_t cap, const char *repo)
{
	snprintf(out, cap, "spore-test/%s/%s", g_run, repo);
}

static void fill(void *buf, size_t n, unsigned seed)
{
	uint64_t x = 0x9e3779b97f4a7c15ull * (seed + 1);
	unsigned char *p = buf;

	for (size_t i = 0; i < n; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		p[i] = (unsigned char)x;
	}
}

struct blob {
	char *data;
	size_t len;
	sl_digest d;
	struct oci_seg seg;
};

static void blob_make(struct blob *b, size_t len, unsigned seed)
{
	b->data = malloc(len ? len : 1);
	assert_non_null(b->data);
	b->len = len;
	fill(b->data, len, seed);
	sl_sha256(b->data, len, &b->d);
	b->seg = (struct oci_seg){ .mem = b->data, .fd = -1, .len = len };
}

static void upload(struct oci_client *c, struct blob *b, size_t n, const char *mount_from, struct oci_upload *res)
{
	struct oci_upload *u = calloc(n, sizeof(*u));
	sl_error_t err = NULL;

	assert_non_null(u);
	for (size_t i = 0; i < n; i++) {
		u[i].digest = b[i].d;
		u[i].size = b[i].len;
		u[i].segs = &b[i].seg;
		u[i].nsegs = 1;
		u[i].mount_from = mount_from;
	}
	if (oci_upload_many(c, u, n, &err) < 0)
		fail_msg("upload: %s", sl_error_msg(err));
	if (res)
		memcpy(res, u, n * sizeof(*u));
	free(u);
}

static int tmpfd(void)
{
	char path[] = "/tmp/spore-reg-live-XXXXXX";
	int fd = mkstemp(path);

	assert_true(fd >= 0);
	unlink(path);
	return fd;
}

static void assert_fd_bytes(int fd, uint64_t off, const void *want, size_t n)
{
	char *got = malloc(n ? n : 1);

	assert_non_null(got);
	assert_int_equal(pread(fd, got, n, (off_t)off), (ssize_t)n);
	assert_memory_equal(got, want, n);
	free(got);
}

/* Blobs: a small one goes up by POST+PUT, a 5 MiB one in 1 MiB PATCHes;
 * both read back byte-identical; the second push of each is a skip. */
static void test_upload_small_and_chunked(void **state)
{
	struct oci_client_opts o = { .chunk_upload_bytes = 1 << 20 };
	struct events ev = { 0 };
	struct oci_client *c;
	struct oci_client_stats st;
	struct oci_upload res[2];
	struct blob b[2];
	char *buf = NULL;
	size_t len = 0;
	sl_error_t err = NULL;
	bool exists = false;
	uint64_t size = 0;

	(void)state;
	c = client("upload", &o, &ev);
	blob_make(&b[0], 1000, 1);
	blob_make(&b[1], 5u << 20, 2);
	upload(c, b, 2, NULL, res);
	assert_false(res[0].skipped);
	assert_false(res[1].skipped);
	oci_client_stats(c, &st);
	assert_int_equal(st.blob_uploads, 2);
	assert_true(st.bytes_uploaded >= 1000 + (5u << 20));
	/* HEAD x2, POST x2, PUT small, 5 PATCH + PUT large (plus 401s and
	 * token requests with auth) */
	if (!g_creds.present)
		assert_int_equal(st.requests, 2 + 2 + 1 + 5 + 1);
	assert_int_equal(ev.done, 2);
	assert_int_equal(ev.start, 2);

	assert_int_equal(oci_blob_exists(c, &b[1].d, &exists, &size, &err), 0);
	assert_true(exists);
	assert_int_equal(size, 5u << 20);
	assert_int_equal(oci_blob_get(c, &b[0].d, 4096, &buf, &len, &err), 0);
	assert_int_equal(len, 1000);
	assert_memory_equal(buf, b[0].data, 1000);
	free(buf);
	/* too small a cap: SL_E_LIMIT, not retried */
	assert_int_equal(oci_blob_get(c, &b[0].d, 999, &buf, &len, &err), -1);
	assert_int_equal(err->code, SL_E_LIMIT);
	sl_error_free(&err);

	upload(c, b, 2, NULL, res);
	assert_true(res[0].skipped);
	assert_true(res[1].skipped);
	assert_int_equal(ev.skip, 2);
	oci_client_stats(c, &st);
	assert_int_equal(st.blob_uploads, 2);
	assert_int_equal(st.retries, 0);

	/* the whole large blob back through a fetch */
	int fd = tmpfd();
	struct oci_fetch f = { .blob = b[1].d, .want = b[1].d, .fd = fd, .dst_off = 7 };

	assert_int_equal(oci_fetch_many(c, &f, 1, &err), 0);
	assert_int_equal(f.rc, 0);
	assert_fd_bytes(fd, 7, b[1].data, b[1].len);
	close(fd);

	oci_client_free(c);
	free(b[0].data);
	free(b[1].data);
}

/* A blob built from memory, file and zero segments. */
static void test_upload_segments(void **state)
{
	struct oci_client_opts o = { .chunk_upload_bytes = 300000 };
	struct oci_client *c;
	char head[777], filedata[500000];
	int fd = tmpfd();
	struct oci_seg segs[3] = {
		{ .mem = head, .fd = -1, .len = sizeof(head) },
		{ .fd = fd, .off = 1000, .len = 400000 },
		{ .fd = -1, .len = 123456 },
	};
	size_t total = sizeof(head) + 400000 + 123456;
	char *all = calloc(1, total), *buf = NULL;
	size_t len = 0;
	struct oci_upload u = { 0 };
	sl_sha256_ctx *h = sl_sha256_new();
	sl_error_t err = NULL;

	(void)state;
	assert_non_null(all);
	fill(head, sizeof(head), 3);
	fill(filedata, sizeof(filedata), 4);
	assert_int_equal(pwrite(fd, filedata, sizeof(filedata), 0), (ssize_t)sizeof(filedata));
	memcpy(all, head, sizeof(head));
	memcpy(all + sizeof(head), filedata + 1000, 400000);
	sl_sha256_update(h, all, total);
	sl_sha256_final(h, &u.digest);
	u.size = total;
	u.segs = segs;
	u.nsegs = 3;

	c = client("segs", &o, NULL);
	for (int pass = 0; pass < 2; pass++) {
		/* both paths: PATCH chunks, then a plain PUT in another repo */
		if (pass == 1) {
			oci_client_free(c);
			o.chunk_upload_bytes = 0;
			c = client("segs2", &o, NULL);
		}
		assert_int_equal(oci_upload_many(c, &u, 1, &err), 0);
		assert_false(u.skipped);
		assert_int_equal(oci_blob_get(c, &u.digest, total, &buf, &len, &err), 0);
		assert_int_equal(len, total);
		assert_memory_equal(buf, all, total);
		free(buf);
	}
	oci_client_free(c);
	close(fd);
	free(all);
}

/* Mount from another repository of the registry; a mount from a repository
 * without the blob falls back to an upload. */
static void test_mount(void **state)
{
	struct events ev = { 0 };
	struct oci_client *a, *b;
	struct oci_upload res[1];
	struct oci_client_stats st;
	struct blob x, y;
	char from[256];

	(void)state;
	blob_make(&x, 3000, 5);
	blob_make(&y, 3001, 6);
	a = client("mount-src", NULL, NULL);
	upload(a, &x, 1, NULL, NULL);
	b = client("mount-dst", NULL, &ev);
	repo_name(from, sizeof(from), "mount-src");
	upload(b, &x, 1, from, res);
	assert_true(res[0].mounted);
	assert_false(res[0].skipped);
	assert_int_equal(ev.mount, 1);
	oci_client_stats(b, &st);
	assert_int_equal(st.blob_uploads, 0);
	upload(b, &y, 1, from, res);
	assert_false(res[0].mounted);
	oci_client_stats(b, &st);
	assert_int_equal(st.blob_uploads, 1);
	oci_client_free(a);
	oci_client_free(b);
	free(x.data);
	free(y.data);
}

/* Manifest PUT by tag and digest, GET and HEAD both ways, byte-identical. */
static void test_manifest_round_trip(void **state)
{
	struct oci_client *c;
	struct blob cfg, layer;
	char *body = NULL, *got = NULL, mt[128], dstr[SL_DIGEST_STRLEN];
	size_t len = 0, glen = 0;
	sl_digest d, gd, hd;
	sl_error_t err = NULL;
	bool exists = true;
	int n;

	(void)state;
	c = client("manifest", NULL, NULL);
	blob_make(&cfg, 2, 7);
	memcpy(cfg.data, "{}", 2);
	sl_sha256(cfg.data, 2, &cfg.d);
	blob_make(&layer, 4096, 8);
	upload(c, &cfg, 1, NULL, NULL);
	upload(c, &layer, 1, NULL, NULL);
	{
		char cd[SL_DIGEST_STRLEN], ld[SL_DIGEST_STRLEN];

		sl_digest_format(&cfg.d, cd);
		sl_digest_format(&layer.d, ld);
		n = asprintf(&body,
			     "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\","
			     "\"artifactType\":\"application/vnd.sporelet.spore.v1\","
			     "\"config\":{\"mediaType\":\"application/vnd.oci.empty.v1+json\",\"digest\":\"%s\",\"size\":2},"
			     "\"layers\":[{\"mediaType\":\"application/vnd.sporelet.spore.file.v1\",\"digest\":\"%s\","
			     "\"size\":4096}]}",
			     cd, ld);
		assert_true(n > 0);
		len = (size_t)n;
	}
	assert_int_equal(oci_manifest_put(c, "v1", OCI_MT_MANIFEST, body, len, &d, &err), 0);
	sl_digest_format(&d, dstr);
	assert_int_equal(oci_manifest_put(c, dstr, OCI_MT_MANIFEST, body, len, &d, &err), 0);

	assert_int_equal(oci_manifest_get(c, "v1", &got, &glen, mt, &gd, &err), 0);
	assert_int_equal(glen, len);
	assert_memory_equal(got, body, len);
	assert_string_equal(mt, OCI_MT_MANIFEST);
	assert_true(sl_digest_equal(&gd, &d));
	free(got);
	assert_int_equal(oci_manifest_get(c, dstr, &got, &glen, mt, &gd, &err), 0);
	assert_memory_equal(got, body, len);
	free(got);

	assert_int_equal(oci_manifest_head(c, "v1", &exists, &hd, &err), 0);
	assert_true(exists);
	assert_true(sl_digest_equal(&hd, &d));
	assert_int_equal(oci_manifest_head(c, "nope", &exists, &hd, &err), 0);
	assert_false(exists);
	assert_int_equal(oci_manifest_get(c, "nope", &got, &glen, mt, &gd, &err), -1);
	assert_int_equal(err->code, SL_E_NOT_FOUND);
	assert_non_null(strstr(sl_error_msg(err), "MANIFEST_UNKNOWN"));
	sl_error_free(&err);

	/* a manifest naming a missing blob: the registry's error in the message */
	{
		char *bad = strdup(body);
		char *p = strstr(bad, "\"layers\"");

		assert_non_null(p);
		p = strstr(p, "sha256:") + 7;
		*p = *p == '0' ? '1' : '0';
		assert_int_equal(oci_manifest_put(c, "bad", OCI_MT_MANIFEST, bad, len, &d, &err), -1);
		assert_non_null(strstr(sl_error_msg(err), "PUT manifest bad: 400 MANIFEST_BLOB_UNKNOWN"));
		assert_int_equal(err->code, SL_E_INVALID);
		sl_error_free(&err);
		free(bad);
	}
	/* references that would leave the URL path are refused locally */
	assert_int_equal(oci_manifest_get(c, "../x", &got, &glen, mt, &gd, &err), -1);
	assert_int_equal(err->code, SL_E_INVALID);
	sl_error_free(&err);
	free(body);
	free(cfg.data);
	free(layer.data);
	oci_client_free(c);
}

/* Whole and ranged fetches, 50 in parallel, into one file at offsets. */
static void test_fetch_parallel_and_ranges(void **state)
{
	enum { N = 50 };
	struct oci_client_opts o = { .parallel = 8 };
	struct events ev = { 0 };
	struct oci_client *c;
	struct blob b[N];
	struct oci_fetch f[N + 3];
	struct oci_client_stats st;
	uint64_t off = 0, offs[N];
	sl_error_t err = NULL;
	int fd = tmpfd();

	(void)state;
	c = client("fetch", &o, &ev);
	for (unsigned i = 0; i < N; i++)
		blob_make(&b[i], 10000 + i * 7919, 100 + i);
	upload(c, b, N, NULL, NULL);
	memset(f, 0, sizeof(f));
	for (unsigned i = 0; i < N; i++) {
		f[i].blob = f[i].want = b[i].d;
		f[i].fd = fd;
		f[i].dst_off = offs[i] = off;
		off += b[i].len;
	}
	/* three ranges of blob 7 */
	for (unsigned k = 0; k < 3; k++) {
		struct oci_fetch *r = &f[N + k];
		uint64_t ro = k == 0 ? 0 : k == 1 ? 1234 : b[7].len - 100, rl = k == 2 ? 100 : 4321;

		r->blob = b[7].d;
		r->offset = ro;
		r->length = rl;
		sl_sha256(b[7].data + ro, rl, &r->want);
		r->fd = fd;
		r->dst_off = off;
		off += rl;
	}
	oci_client_stats(c, &st);
	uint64_t before = st.bytes_downloaded;

	memset(&ev, 0, sizeof(ev));
	assert_int_equal(oci_fetch_many(c, f, N + 3, &err), 0);
	for (unsigned i = 0; i < N; i++) {
		assert_int_equal(f[i].rc, 0);
		assert_fd_bytes(fd, offs[i], b[i].data, b[i].len);
	}
	assert_fd_bytes(fd, f[N].dst_off, b[7].data, 4321);
	assert_fd_bytes(fd, f[N + 1].dst_off, b[7].data + 1234, 4321);
	assert_fd_bytes(fd, f[N + 2].dst_off, b[7].data + b[7].len - 100, 100);
	assert_int_equal(ev.done, N + 3);
	oci_client_stats(c, &st);
	assert_int_equal(st.bytes_downloaded - before, off);
	assert_int_equal(st.retries, 0);
	close(fd);
	for (unsigned i = 0; i < N; i++)
		free(b[i].data);
	oci_client_free(c);
}

/* Bytes that do not hash to `want` fail with SL_E_INTEGRITY after the
 * retries; the others of the batch still succeed. Missing blobs: NOT_FOUND. */
static void test_fetch_wrong_digest(void **state)
{
	struct oci_client_opts o = { .retries = 2 };
	struct events ev = { 0 };
	struct oci_client *c;
	struct oci_client_stats st;
	struct blob b, missing;
	struct oci_fetch f[3];
	sl_error_t err = NULL;
	int fd = tmpfd();

	(void)state;
	c = client("integrity", &o, &ev);
	blob_make(&b, 5000, 9);
	blob_make(&missing, 10, 10);
	upload(c, &b, 1, NULL, NULL);
	memset(f, 0, sizeof(f));
	f[0].blob = b.d;
	f[0].want = missing.d;
	f[0].fd = fd;
	f[1].blob = f[1].want = b.d;
	f[1].fd = fd;
	f[1].dst_off = 5000;
	f[2].blob = f[2].want = missing.d;
	f[2].fd = fd;
	assert_int_equal(oci_fetch_many(c, f, 3, &err), -1);
	assert_int_equal(f[0].rc, -1);
	assert_int_equal(f[0].err->code, SL_E_INTEGRITY);
	assert_non_null(strstr(sl_error_msg(f[0].err), "gave up after 2 retries"));
	assert_int_equal(f[1].rc, 0);
	assert_int_equal(f[2].rc, -1);
	assert_int_equal(f[2].err->code, SL_E_NOT_FOUND);
	assert_int_equal(err->code, SL_E_INTEGRITY);
	assert_non_null(strstr(sl_error_msg(err), "and 1 more failed"));
	oci_client_stats(c, &st);
	assert_int_equal(st.retries, 2);
	assert_int_equal(ev.retry, 2);
	sl_error_free(&err);
	sl_error_free(&f[0].err);
	sl_error_free(&f[2].err);
	/* bad arguments never reach the network */
	memset(f, 0, sizeof(f));
	f[0].blob = f[0].want = b.d;
	f[0].offset = 5;
	f[0].fd = fd;
	assert_int_equal(oci_fetch_many(c, f, 1, &err), -1);
	assert_int_equal(err->code, SL_E_INVALID);
	sl_error_free(&err);
	sl_error_free(&f[0].err);
	close(fd);
	free(b.data);
	free(missing.data);
	oci_client_free(c);
}

/* With credentials configured: wrong ones give a clear SL_E_INVALID. */
static void test_bad_credentials(void **state)
{
	struct oci_creds bad = { .present = true };
	struct oci_client_opts o = { .creds = &bad, .retries = 1 };
	struct oci_client *c;
	struct blob b;
	sl_error_t err = NULL;
	bool exists;

	(void)state;
	if (!g_creds.present)
		skip();
	snprintf(bad.username, sizeof(bad.username), "%s", g_creds.username);
	snprintf(bad.password, sizeof(bad.password), "not-%.900s", g_creds.password);
	blob_make(&b, 10, 11);
	c = client("badcreds", &o, NULL);
	assert_int_equal(oci_blob_exists(c, &b.d, &exists, NULL, &err), -1);
	assert_int_equal(err->code, SL_E_INVALID);
	assert_non_null(strstr(sl_error_msg(err), "authentication failed"));
	assert_non_null(strstr(sl_error_msg(err), "DOCKER_CONFIG"));
	sl_error_free(&err);
	oci_client_free(c);
	free(b.data);
}

int main(void)
{
	const char *auth = getenv("SPORE_TEST_REGISTRY_AUTH");
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_upload_small_and_chunked),
		cmocka_unit_test(test_upload_segments),
		cmocka_unit_test(test_mount),
		cmocka_unit_test(test_manifest_round_trip),
		cmocka_unit_test(test_fetch_parallel_and_ranges),
		cmocka_unit_test(test_fetch_wrong_digest),
		cmocka_unit_test(test_bad_credentials),
	};

	g_host = getenv("SPORE_TEST_REGISTRY");
	g_ca = getenv("SPORE_TEST_REGISTRY_CA");
	if (!g_host || !*g_host) {
		fprintf(stderr, "SPORE_TEST_REGISTRY not set: skipping the live registry tests\n");
		return 77;
	}
	if (auth && *auth) {
		const char *colon = strchr(auth, ':');

		if (!colon)
			return fprintf(stderr, "SPORE_TEST_REGISTRY_AUTH must be user:password\n"), 2;
		g_creds.present = true;
		snprintf(g_creds.username, sizeof(g_creds.username), "%.*s", (int)(colon - auth), auth);
		snprintf(g_creds.password, sizeof(g_creds.password), "%s", colon + 1);
	}
	snprintf(g_run, sizeof(g_run), "r%ld-%d", (long)time(NULL), (int)getpid());
	return cmocka_run_group_tests(tests, NULL, NULL);
}
