/* Offline tests of the registry client: URL, header, error-body, range, backoff and scope helpers; client setup. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "oci/ref.h"
#include "oci/registry.h"
#include "registry_int.h"

static void test_backoff(void **state)
{
	(void)state;
	assert_int_equal(reg_backoff_ms(1), 100);
	assert_int_equal(reg_backoff_ms(2), 200);
	assert_int_equal(reg_backoff_ms(3), 400);
	assert_int_equal(reg_backoff_ms(6), 3200);
	assert_int_equal(reg_backoff_ms(7), 5000);
	assert_int_equal(reg_backoff_ms(1000), 5000);
}

static void test_retry_after(void **state)
{
	time_t now = 1700000000;

	(void)state;
	assert_int_equal(reg_retry_after_ms(NULL, now), -1);
	assert_int_equal(reg_retry_after_ms("", now), -1);
	assert_int_equal(reg_retry_after_ms("0", now), 0);
	assert_int_equal(reg_retry_after_ms(" 2 ", now), 2000);
	assert_int_equal(reg_retry_after_ms("30", now), 30000);
	assert_int_equal(reg_retry_after_ms("31", now), 30000);
	assert_int_equal(reg_retry_after_ms("99999999999999999999", now), 30000);
	assert_int_equal(reg_retry_after_ms("2x", now), -1);
	assert_int_equal(reg_retry_after_ms("-1", now), -1);
	/* HTTP-date: 1700000005 is Tue, 14 Nov 2023 22:13:25 GMT */
	assert_int_equal(reg_retry_after_ms("Tue, 14 Nov 2023 22:13:25 GMT", now), 5000);
	assert_int_equal(reg_retry_after_ms("Tue, 14 Nov 2023 22:13:15 GMT", now), 0);
	assert_int_equal(reg_retry_after_ms("soon", now), -1);
}

static void test_error_summary(void **state)
{
	char out[400];
	const char *one = "{\"errors\":[{\"code\":\"MANIFEST_BLOB_UNKNOWN\",\"message\":\"blob unknown to registry\","
			  "\"detail\":\"sha256:x\"}]}\n";
	const char *many = "{\"errors\":[{\"code\":\"A\",\"message\":\"a\"},{\"code\":\"B\"},{\"message\":\"c\"},"
			   "{\"code\":\"D\",\"message\":\"d\"},{\"code\":\"E\",\"message\":\"e\"}]}";
	const char *ctl = "{\"errors\":[{\"code\":\"X\",\"message\":\"line1\\nline2\\u001b[31m\"}]}";

	(void)state;
	reg_error_summary(one, strlen(one), out, sizeof(out));
	assert_string_equal(out, "MANIFEST_BLOB_UNKNOWN: blob unknown to registry");
	reg_error_summary(many, strlen(many), out, sizeof(out));
	assert_string_equal(out, "A: a; B; c (+2 more)");
	reg_error_summary(ctl, strlen(ctl), out, sizeof(out));
	assert_string_equal(out, "X: line1 line2 [31m");
	reg_error_summary("404 page not found\n", 19, out, sizeof(out));
	assert_string_equal(out, "404 page not found");
	reg_error_summary("  <html>\r\n<body>", 16, out, sizeof(out));
	assert_string_equal(out, "<html>");
	reg_error_summary("", 0, out, sizeof(out));
	assert_string_equal(out, "");
	reg_error_summary(NULL, 0, out, sizeof(out));
	assert_string_equal(out, "");
	/* bounded by cap */
	reg_error_summary(one, strlen(one), out, 10);
	assert_string_equal(out, "MANIFEST_");
	/* a JSON body without errors: its first line */
	reg_error_summary("{\"x\":1}", 7, out, sizeof(out));
	assert_string_equal(out, "{\"x\":1}");
	/* long non-JSON first line is cut at 200 bytes */
	{
		char big[1000];

		memset(big, 'a', sizeof(big));
		reg_error_summary(big, sizeof(big), out, sizeof(out));
		assert_int_equal(strlen(out), 200);
	}
}

static void test_content_range(void **state)
{
	uint64_t a, b, t;

	(void)state;
	assert_int_equal(reg_parse_content_range("bytes 100-199/1000", &a, &b, &t), 0);
	assert_int_equal(a, 100);
	assert_int_equal(b, 199);
	assert_int_equal(t, 1000);
	assert_int_equal(reg_parse_content_range("bytes 0-0/*", &a, &b, &t), 0);
	assert_true(t == UINT64_MAX);
	assert_int_equal(reg_parse_content_range("Bytes 5-9/10", &a, &b, &t), 0);
	assert_int_equal(reg_parse_content_range("bytes 5-10/10", &a, &b, &t), -1); /* past the end */
	assert_int_equal(reg_parse_content_range("bytes 9-5/10", &a, &b, &t), -1);
	assert_int_equal(reg_parse_content_range("bytes */10", &a, &b, &t), -1);
	assert_int_equal(reg_parse_content_range("bytes 1-2", &a, &b, &t), -1);
	assert_int_equal(reg_parse_content_range("bytes=1-2/3", &a, &b, &t), -1);
	assert_int_equal(reg_parse_content_range("bytes 1-2/3x", &a, &b, &t), -1);
	assert_int_equal(reg_parse_content_range("bytes 1-99999999999999999999/3", &a, &b, &t), -1);
	assert_int_equal(reg_parse_content_range(NULL, &a, &b, &t), -1);

	assert_int_equal(reg_parse_range("0-1048575", &a, &b), 0);
	assert_int_equal(b, 1048575);
	assert_int_equal(reg_parse_range("bytes=0-5", &a, &b), 0);
	assert_int_equal(reg_parse_range("5-0", &a, &b), -1);
	assert_int_equal(reg_parse_range("0-", &a, &b), -1);
	assert_int_equal(reg_parse_range("0-5 ", &a, &b), -1);
}

static void test_add_query(void **state)
{
	char *s;

	(void)state;
	s = reg_add_query("http://h/v2/r/blobs/uploads/u?_state=abc%3D", "digest=sha256:00");
	assert_string_equal(s, "http://h/v2/r/blobs/uploads/u?_state=abc%3D&digest=sha256:00");
	free(s);
	s = reg_add_query("http://h/v2/r/blobs/uploads/u", "digest=d");
	assert_string_equal(s, "http://h/v2/r/blobs/uploads/u?digest=d");
	free(s);
	s = reg_add_query("http://h/u?", "digest=d");
	assert_string_equal(s, "http://h/u?digest=d");
	free(s);
	s = reg_add_query("http://h/u?a=1&", "digest=d");
	assert_string_equal(s, "http://h/u?a=1&digest=d");
	free(s);
	s = reg_add_query("http://h/u#frag", "digest=d");
	assert_string_equal(s, "http://h/u?digest=d");
	free(s);
}

static void test_resolve_and_origin(void **state)
{
	sl_error_t err = NULL;
	char *s;

	(void)state;
	s = reg_resolve("http://127.0.0.1:5000/v2/r/blobs/uploads/", "/v2/r/blobs/uploads/x?_state=a%2Bb", &err);
	assert_non_null(s);
	assert_string_equal(s, "http://127.0.0.1:5000/v2/r/blobs/uploads/x?_state=a%2Bb");
	free(s);
	s = reg_resolve("https://reg.example/v2/r/blobs/sha256:1", "https://s3.example/b/k?X-Amz=1", &err);
	assert_string_equal(s, "https://s3.example/b/k?X-Amz=1");
	free(s);
	s = reg_resolve("https://reg.example/v2/r/blobs/uploads/", "x?y=1", &err);
	assert_string_equal(s, "https://reg.example/v2/r/blobs/uploads/x?y=1");
	free(s);
	s = reg_resolve("https://reg.example/v2/", "ftp://reg.example/x", &err);
	assert_null(s);
	assert_int_equal(err->code, SL_E_INVALID);
	sl_error_free(&err);
	s = reg_resolve("https://reg.example/v2/", "file:///etc/passwd", &err);
	assert_null(s);
	sl_error_free(&err);

	assert_true(reg_same_origin("https://reg.example", "https://REG.example:443/v2/x"));
	assert_true(reg_same_origin("http://127.0.0.1:5000", "http://127.0.0.1:5000/v2/x?y"));
	assert_false(reg_same_origin("http://127.0.0.1:5000", "http://127.0.0.1:5001/v2/x"));
	assert_false(reg_same_origin("https://reg.example", "http://reg.example/v2/x"));
	assert_false(reg_same_origin("https://reg.example", "https://s3.example/x"));
	assert_false(reg_same_origin("https://reg.example", "https://reg.example.evil/x"));
	assert_false(reg_same_origin("https://reg.example", "not a url"));

	assert_true(reg_url_is_loopback("http://127.0.0.1:9/token"));
	assert_true(reg_url_is_loopback("http://localhost/token"));
	assert_true(reg_url_is_loopback("http://[::1]:80/token"));
	assert_false(reg_url_is_loopback("http://auth.example/token"));
	assert_true(reg_url_scheme_is("HTTPS://x", "https"));
	assert_false(reg_url_scheme_is("https:x", "https"));
}

static void test_encode_and_token_url(void **state)
{
	char out[64];
	char *scopes[] = { "repository:a/b:pull,push", "repository:c:pull" };
	char *u;

	(void)state;
	assert_int_equal(reg_pct_encode("a/b c:d", out, sizeof(out)), 13);
	assert_string_equal(out, "a%2Fb%20c%3Ad");
	assert_int_equal(reg_pct_encode("abc", out, 3), 3); /* does not fit */
	u = reg_token_url("https://auth.example/token", "registry.example", scopes, 2);
	assert_string_equal(u, "https://auth.example/token?service=registry.example"
			       "&scope=repository%3Aa%2Fb%3Apull%2Cpush&scope=repository%3Ac%3Apull");
	free(u);
	u = reg_token_url("https://auth.example/token?x=1", "", scopes, 1);
	assert_string_equal(u, "https://auth.example/token?x=1&scope=repository%3Aa%2Fb%3Apull%2Cpush");
	free(u);
	u = reg_token_url("https://auth.example/token", "", NULL, 0);
	assert_string_equal(u, "https://auth.example/token");
	free(u);
}

static void test_scopes(void **state)
{
	char *set[4] = { 0 };
	size_t n = 0;

	(void)state;
	assert_int_equal(reg_scopes_add(set, &n, 4, "repository:a:pull"), 1);
	assert_int_equal(reg_scopes_add(set, &n, 4, "repository:a:pull"), 0);
	assert_int_equal(reg_scopes_add(set, &n, 4, "  repository:a:pull,push   repository:b:pull "), 2);
	assert_int_equal(n, 3);
	assert_string_equal(set[1], "repository:a:pull,push");
	assert_int_equal(reg_scopes_add(set, &n, 4, "x y z"), 1); /* full */
	assert_int_equal(n, 4);
	assert_int_equal(reg_scopes_add(set, &n, 4, ""), 0);
	assert_int_equal(reg_scopes_add(set, &n, 4, NULL), 0);
	for (size_t i = 0; i < n; i++)
		free(set[i]);
	n = 0;
	assert_int_equal(reg_scopes_add(set, &n, 4, "bad\x01scope"), 0);
}

static void test_reference_and_names(void **state)
{
	sl_error_t err = NULL;
	sl_digest d;
	bool is_digest;
	char tag[130];

	(void)state;
	assert_int_equal(reg_check_reference("v1", &is_digest, &d, &err), 0);
	assert_false(is_digest);
	assert_int_equal(reg_check_reference("sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
					     &is_digest, &d, &err),
			 0);
	assert_true(is_digest);
	assert_int_equal(reg_check_reference("sha256:E3B0", &is_digest, &d, &err), -1);
	sl_error_free(&err);
	assert_int_equal(reg_check_reference("../../x", &is_digest, &d, &err), -1);
	sl_error_free(&err);
	assert_int_equal(reg_check_reference("a?b", &is_digest, &d, &err), -1);
	sl_error_free(&err);
	assert_int_equal(reg_check_reference(".v1", &is_digest, &d, &err), -1);
	sl_error_free(&err);
	memset(tag, 'a', 128);
	tag[128] = '\0';
	assert_int_equal(reg_check_reference(tag, &is_digest, &d, &err), 0);
	tag[128] = 'a';
	tag[129] = '\0';
	assert_int_equal(reg_check_reference(tag, &is_digest, &d, &err), -1);
	sl_error_free(&err);

	assert_true(reg_repo_ok("spores/app"));
	assert_true(reg_repo_ok("a.b_c-d/e"));
	assert_false(reg_repo_ok(""));
	assert_false(reg_repo_ok("/a"));
	assert_false(reg_repo_ok("a/"));
	assert_false(reg_repo_ok("a//b"));
	assert_false(reg_repo_ok("a/../b"));
	assert_false(reg_repo_ok("A"));
	assert_false(reg_repo_ok("a?b"));
	assert_true(reg_host_ok("127.0.0.1:5000"));
	assert_true(reg_host_ok("[::1]:5000"));
	assert_false(reg_host_ok("a/b"));
	assert_false(reg_host_ok("a@b"));
	assert_false(reg_host_ok(""));

	assert_true(reg_header_safe("application/vnd.oci.image.manifest.v1+json"));
	assert_false(reg_header_safe("a\r\nX-Evil: 1"));
	assert_false(reg_header_safe("caf\xc3\xa9"));
}

static void test_media_type_base(void **state)
{
	char out[64];

	(void)state;
	reg_media_type_base("Application/JSON; charset=utf-8", out, sizeof(out));
	assert_string_equal(out, "application/json");
	reg_media_type_base("  application/vnd.oci.image.manifest.v1+json  ", out, sizeof(out));
	assert_string_equal(out, "application/vnd.oci.image.manifest.v1+json");
	reg_media_type_base("", out, sizeof(out));
	assert_string_equal(out, "");
	reg_media_type_base("abcdef", out, 4);
	assert_string_equal(out, "abc");
}

/* The scheme rule: http only for loopback or insecure; docker.io's API host. */
static void test_client_base(void **state)
{
	static const struct {
		const char *registry;
		bool insecure;
		const char *base;
	} cases[] = {
		{ "127.0.0.1:5000", false, "http://127.0.0.1:5000" },
		{ "localhost:5000", false, "http://localhost:5000" },
		{ "[::1]:5000", false, "http://[::1]:5000" },
		{ "ghcr.io", false, "https://ghcr.io" },
		{ "registry.example:5000", true, "http://registry.example:5000" },
		{ "docker.io", false, "https://registry-1.docker.io" },
		{ "127.0.0.1.nip.io", false, "https://127.0.0.1.nip.io" },
	};
	struct oci_creds creds = { .present = true, .username = "u", .password = "p" };

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct oci_client_opts o = { .insecure = cases[i].insecure, .creds = &creds, .ca_file = "/nonexistent" };
		struct oci_ref ref = { 0 };
		struct oci_client *c = NULL;
		struct oci_client_stats st;
		sl_error_t err = NULL;

		snprintf(ref.registry, sizeof(ref.registry), "%s", cases[i].registry);
		snprintf(ref.repository, sizeof(ref.repository), "spores/app");
		assert_int_equal(oci_client_new(&ref, &o, &c, &err), 0);
		assert_string_equal(c->base, cases[i].base);
		assert_int_equal(c->opts.parallel, 8);
		assert_int_equal(c->opts.retries, 5);
		assert_true(c->opts.chunk_upload_bytes == 64ull << 20);
		assert_true(c->creds.present); /* copied */
		assert_string_equal(c->opts.ca_file, "/nonexistent");
		assert_ptr_not_equal(c->opts.ca_file, o.ca_file);
		oci_client_stats(c, &st);
		assert_int_equal(st.requests, 0);
		oci_client_free(c);
	}
	{
		struct oci_client_opts o = { .parallel = 1000 };
		struct oci_ref ref = { .registry = "r.example", .repository = "a/../b" };
		struct oci_client *c = NULL;
		sl_error_t err = NULL;

		assert_int_equal(oci_client_new(&ref, &o, &c, &err), -1);
		assert_int_equal(err->code, SL_E_INVALID);
		assert_null(c);
		sl_error_free(&err);
		snprintf(ref.repository, sizeof(ref.repository), "ok");
		snprintf(ref.registry, sizeof(ref.registry), "evil.example/x?");
		assert_int_equal(oci_client_new(&ref, &o, &c, &err), -1);
		sl_error_free(&err);
		snprintf(ref.registry, sizeof(ref.registry), "r.example");
		assert_int_equal(oci_client_new(&ref, &o, &c, &err), 0);
		assert_int_equal(c->opts.parallel, REG_PARALLEL_MAX);
		oci_client_free(c);
	}
}

/* Local refusals need no network: bad references, oversized manifests,
 * a body that does not match the digest it is PUT under. */
static void test_local_refusals(void **state)
{
	struct oci_ref ref = { .registry = "127.0.0.1:1", .repository = "a" };
	struct oci_client *c = NULL;
	sl_error_t err = NULL;
	char *body = NULL, mt[128];
	size_t len;
	sl_digest d;
	bool exists;

	(void)state;
	assert_int_equal(oci_client_new(&ref, NULL, &c, &err), 0);
	assert_int_equal(oci_manifest_get(c, "a/b", &body, &len, mt, &d, &err), -1);
	assert_int_equal(err->code, SL_E_INVALID);
	sl_error_free(&err);
	assert_int_equal(oci_manifest_head(c, "sha256:zz", &exists, &d, &err), -1);
	sl_error_free(&err);
	assert_int_equal(oci_manifest_put(c, "v1", "bad\ntype", "{}", 2, &d, &err), -1);
	assert_int_equal(err->code, SL_E_INVALID);
	sl_error_free(&err);
	{
		size_t big = OCI_MANIFEST_MAX + 1;
		char *m = calloc(1, big);

		assert_int_equal(oci_manifest_put(c, "v1", OCI_MT_MANIFEST, m, big, &d, &err), -1);
		assert_int_equal(err->code, SL_E_LIMIT);
		sl_error_free(&err);
		free(m);
	}
	assert_int_equal(oci_manifest_put(c, "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
					  OCI_MT_MANIFEST, "{}", 2, &d, &err),
			 -1);
	assert_int_equal(err->code, SL_E_INVALID);
	sl_error_free(&err);
	{
		/* A mount source that is not a repository name is refused
		 * before any request. */
		struct oci_upload u = { .size = 10, .mount_from = "Not/A/Repo!" };

		assert_int_equal(oci_upload_many(c, &u, 1, &err), -1);
		assert_int_equal(u.rc, -1);
		assert_int_equal(u.err->code, SL_E_INVALID);
		sl_error_free(&u.err);
		sl_error_free(&err);
	}
	assert_int_equal(oci_fetch_many(c, NULL, 0, &err), 0);
	assert_int_equal(oci_upload_many(c, NULL, 0, &err), 0);
	oci_client_free(c);
	oci_client_free(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_backoff),
		cmocka_unit_test(test_retry_after),
		cmocka_unit_test(test_error_summary),
		cmocka_unit_test(test_content_range),
		cmocka_unit_test(test_add_query),
		cmocka_unit_test(test_resolve_and_origin),
		cmocka_unit_test(test_encode_and_token_url),
		cmocka_unit_test(test_scopes),
		cmocka_unit_test(test_reference_and_names),
		cmocka_unit_test(test_media_type_base),
		cmocka_unit_test(test_client_base),
		cmocka_unit_test(test_local_refusals),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
