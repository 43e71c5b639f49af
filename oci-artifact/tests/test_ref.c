/* Unit tests for image reference parsing, formatting and the registry host rules (oci/ref.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "oci/ref.h"

#define HEX "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
#define DIG "sha256:" HEX

struct good {
	const char *in;
	const char *registry, *repository, *tag;
	bool digest;
	const char *formatted;
};

static const struct good goods[] = {
	{"alpine", "docker.io", "library/alpine", "", false, "docker.io/library/alpine"},
	{"alpine:3.19", "docker.io", "library/alpine", "3.19", false, "docker.io/library/alpine:3.19"},
	{"docker.io/alpine", "docker.io", "library/alpine", "", false, "docker.io/library/alpine"},
	{"docker.io/library/alpine", "docker.io", "library/alpine", "", false, "docker.io/library/alpine"},
	{"index.docker.io/alpine", "docker.io", "library/alpine", "", false, "docker.io/library/alpine"},
	{"Docker.IO/alpine", "docker.io", "library/alpine", "", false, "docker.io/library/alpine"},
	{"samalba/my-app", "docker.io", "samalba/my-app", "", false, "docker.io/samalba/my-app"},
	{"localhost/foo", "localhost", "foo", "", false, "localhost/foo"},
	{"localhost", "docker.io", "library/localhost", "", false, "docker.io/library/localhost"},
	/* Docker reads a lone "name:port" as name + tag, and so do we. */
	{"localhost:5000", "docker.io", "library/localhost", "5000", false, "docker.io/library/localhost:5000"},
	{"localhost:5000/a/b:tag@" DIG, "localhost:5000", "a/b", "tag", true,
	 "localhost:5000/a/b:tag@" DIG},
	{"localhost:5000/a/b@" DIG, "localhost:5000", "a/b", "", true, "localhost:5000/a/b@" DIG},
	{"[::1]:5000/x", "[::1]:5000", "x", "", false, "[::1]:5000/x"},
	{"[::1]/x:y", "[::1]", "x", "y", false, "[::1]/x:y"},
	{"[2001:DB8::1]:443/x", "[2001:db8::1]:443", "x", "", false, "[2001:db8::1]:443/x"},
	{"[::ffff:127.0.0.1]:5000/x", "[::ffff:127.0.0.1]:5000", "x", "", false, "[::ffff:127.0.0.1]:5000/x"},
	{"127.0.0.1:5000/spores/app:v1", "127.0.0.1:5000", "spores/app", "v1", false,
	 "127.0.0.1:5000/spores/app:v1"},
	{"ghcr.io/org/team/app:latest", "ghcr.io", "org/team/app", "latest", false, "ghcr.io/org/team/app:latest"},
	{"my-registry.example.com:65535/a", "my-registry.example.com:65535", "a", "", false,
	 "my-registry.example.com:65535/a"},
	{"reg:1/a", "reg:1", "a", "", false, "reg:1/a"},
	{"a.b/x.y_z__w---v/0", "a.b", "x.y_z__w---v/0", "", false, "a.b/x.y_z__w---v/0"},
	{"foo/bar:_Tag.1-x", "docker.io", "foo/bar", "_Tag.1-x", false, "docker.io/foo/bar:_Tag.1-x"},
	{"foo@" DIG, "docker.io", "library/foo", "", true, "docker.io/library/foo@" DIG},
};

static void check_good(const struct good *g)
{
	sl_error_t err = NULL;
	struct oci_ref r, r2;
	char out[600];
	int n;

	if (oci_ref_parse(g->in, &r, &err) < 0)
		fail_msg("%s: %s", g->in, sl_error_msg(err));
	assert_null(err);
	assert_string_equal(r.registry, g->registry);
	assert_string_equal(r.repository, g->repository);
	assert_string_equal(r.tag, g->tag);
	assert_int_equal(r.has_digest, g->digest);
	if (g->digest) {
		char d[SL_DIGEST_STRLEN];

		sl_digest_format(&r.digest, d);
		assert_string_equal(d, DIG);
	}
	n = oci_ref_format(&r, out, sizeof(out));
	assert_int_equal(n, (int)strlen(g->formatted));
	assert_string_equal(out, g->formatted);

	/* Round trip: the formatted form parses to the same reference. */
	assert_int_equal(oci_ref_parse(out, &r2, &err), 0);
	assert_string_equal(r2.registry, r.registry);
	assert_string_equal(r2.repository, r.repository);
	assert_string_equal(r2.tag, r.tag);
	assert_int_equal(r2.has_digest, r.has_digest);
	assert_memory_equal(r2.digest.b, r.digest.b, SL_DIGEST_LEN);
}

static void test_good(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(goods) / sizeof(goods[0]); i++)
		check_good(&goods[i]);
}

struct bad {
	const char *in;
	const char *msg; /* substring of the error */
};

static const struct bad bads[] = {
	{"", "empty reference"},
	{"Foo", "repository component \"Foo\" must be lowercase"},
	{"docker.io/Foo/bar", "repository component \"Foo\" must be lowercase"},
	{"LOCALHOST/foo", "repository component \"LOCALHOST\" must be lowercase"},
	{"foo//bar", "empty repository component"},
	{"foo/", "empty repository component"},
	{"/foo", "empty repository component"},
	{"localhost:5000/", "empty repository component"},
	{"a..b", "repository component \"a..b\" must start and end"},
	{"a._b", "must start and end"},
	{"a___b", "must start and end"},
	{"-a", "must start and end"},
	{"a-", "must start and end"},
	{"_a", "must start and end"},
	{"a b", "may only contain"},
	{"a\tb", "may only contain"},
	{"foo:", "empty tag"},
	{"foo:-x", "must start with [A-Za-z0-9_]"},
	{"foo:.x", "must start with [A-Za-z0-9_]"},
	{"foo:a+b", "may only contain [A-Za-z0-9._-]"},
	{"foo:a:b", "may only contain"}, /* "foo:a" is then a component */
	{"foo@", "only sha256"},
	{"foo@sha512:" HEX HEX, "only sha256"},
	{"foo@sha256:" HEX "0", "64 lowercase hex"},
	{"foo@sha256:BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD", "64 lowercase hex"},
	{"foo@" DIG "@" DIG, "64 lowercase hex"},
	{"@" DIG, "missing repository name"},
	{":tag", "missing repository name"},
	{"localhost:0/a", "port must be a number from 1 to 65535"},
	{"localhost:65536/a", "port must be a number from 1 to 65535"},
	{"localhost:05000/a", "port must be"},
	{"localhost:/a", "port must be"},
	{"localhost:5x/a", "port must be"},
	{"localhost:123456/a", "port must be"},
	{"-bad.io/a", "host must be"},
	{"bad-.io/a", "host must be"},
	{"a..io/a", "host must be"},
	{".io/a", "host must be"},
	{"under_score.io/a", "host must be"},
	{":5000/a", "host must be"},
	{"[::1/x", "not a valid [IPv6]"},
	{"[]/x", "may only contain"}, /* no '.' or ':': not a registry */
	{"[]:5000/x", "not a valid [IPv6]"},
	{"[zz::1]/x", "not a valid [IPv6]"},
	{"[fe80::1%eth0]:5000/x", "not a valid [IPv6]"},
	{"[::1]x:5000/x", "unexpected text after ']'"},
	{"[::1]:0/x", "port must be"},
};

static void test_bad(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(bads) / sizeof(bads[0]); i++) {
		sl_error_t err = NULL;
		struct oci_ref r;

		memset(&r, 0x5a, sizeof(r));
		if (oci_ref_parse(bads[i].in, &r, &err) == 0)
			fail_msg("accepted bad reference \"%s\"", bads[i].in);
		assert_non_null(err);
		assert_int_equal(err->code, SL_E_INVALID);
		if (!strstr(sl_error_msg(err), bads[i].msg))
			fail_msg("\"%s\": message \"%s\" lacks \"%s\"", bads[i].in, sl_error_msg(err), bads[i].msg);
		assert_non_null(strstr(sl_error_msg(err), "reference \""));
		/* A failed parse leaves nothing half-filled behind. */
		assert_string_equal(r.registry, "");
		assert_false(r.has_digest);
		sl_error_free(&err);
	}
}

static void test_null(void **state)
{
	sl_error_t err = NULL;
	struct oci_ref r;

	(void)state;
	assert_int_equal(oci_ref_parse(NULL, &r, &err), -1);
	assert_int_equal(err->code, SL_E_INVALID);
	sl_error_free(&err);
}

/* The exact message for the brief's example, and the echo bound. */
static void test_messages(void **state)
{
	sl_error_t err = NULL;
	struct oci_ref r;
	char big[2000];

	(void)state;
	assert_int_equal(oci_ref_parse("ghcr.io/Foo/bar", &r, &err), -1);
	assert_string_equal(sl_error_msg(err),
			    "reference \"ghcr.io/Foo/bar\": repository component \"Foo\" must be lowercase");
	sl_error_free(&err);

	memset(big, 'A', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	assert_int_equal(oci_ref_parse(big, &r, &err), -1);
	assert_true(strlen(sl_error_msg(err)) < 300);
	assert_non_null(strstr(sl_error_msg(err), "..."));
	sl_error_free(&err);

	/* Control bytes never reach the message. */
	assert_int_equal(oci_ref_parse("a\x1b[2Jb", &r, &err), -1);
	assert_null(strchr(sl_error_msg(err), '\x1b'));
	sl_error_free(&err);
}

static void test_lengths(void **state)
{
	sl_error_t err = NULL;
	struct oci_ref r;
	char s[600], out[600];

	(void)state;
	/* "reg.io/" (7) + 248 = 255 bytes: the largest name. */
	strcpy(s, "reg.io/");
	memset(s + 7, 'a', 248);
	s[255] = '\0';
	assert_int_equal(oci_ref_parse(s, &r, &err), 0);
	assert_int_equal(strlen(r.repository), 248);
	s[255] = 'a';
	s[256] = '\0';
	assert_int_equal(oci_ref_parse(s, &r, &err), -1);
	assert_non_null(strstr(sl_error_msg(err), "longer than 255"));
	sl_error_free(&err);

	/* docker.io/library/ counts: 18 + 237 = 255 fits, 238 does not. */
	memset(s, 'b', 237);
	s[237] = '\0';
	assert_int_equal(oci_ref_parse(s, &r, &err), 0);
	assert_int_equal(strlen(r.repository), 8 + 237);
	memset(s, 'b', 238);
	s[238] = '\0';
	assert_int_equal(oci_ref_parse(s, &r, &err), -1);
	sl_error_free(&err);

	/* Tags: 128 is the limit. */
	strcpy(s, "x:");
	memset(s + 2, 'T', 128);
	s[130] = '\0';
	assert_int_equal(oci_ref_parse(s, &r, &err), 0);
	assert_int_equal(strlen(r.tag), 128);
	s[130] = 'T';
	s[131] = '\0';
	assert_int_equal(oci_ref_parse(s, &r, &err), -1);
	assert_non_null(strstr(sl_error_msg(err), "longer than 128"));
	sl_error_free(&err);

	/* Longest possible reference formats, and a short buffer is refused. */
	strcpy(s, "reg.io/");
	memset(s + 7, 'a', 248);
	s[255] = ':';
	memset(s + 256, 'T', 128);
	strcpy(s + 384, "@" DIG);
	assert_int_equal(oci_ref_parse(s, &r, &err), 0);
	assert_int_equal(oci_ref_format(&r, out, sizeof(out)), (int)strlen(s));
	assert_string_equal(out, s);
	assert_int_equal(oci_ref_format(&r, out, strlen(s)), -1);
	assert_int_equal(oci_ref_format(&r, out, strlen(s) + 1), (int)strlen(s));
	assert_int_equal(oci_ref_format(&r, out, 0), -1);

	/* Label of 63 ok, 64 not. */
	memset(s, 'h', 63);
	strcpy(s + 63, ".io/a");
	assert_int_equal(oci_ref_parse(s, &r, &err), 0);
	memset(s, 'h', 64);
	strcpy(s + 64, ".io/a");
	assert_int_equal(oci_ref_parse(s, &r, &err), -1);
	sl_error_free(&err);
}

static void test_reference(void **state)
{
	sl_error_t err = NULL;
	struct oci_ref r;
	char out[OCI_REF_REFERENCE_MAX];
	char s[200];

	(void)state;
	assert_int_equal(oci_ref_parse("a/b", &r, &err), 0);
	oci_ref_reference(&r, out);
	assert_string_equal(out, "latest");
	assert_int_equal(oci_ref_parse("a/b:v2", &r, &err), 0);
	oci_ref_reference(&r, out);
	assert_string_equal(out, "v2");
	assert_int_equal(oci_ref_parse("a/b:v2@" DIG, &r, &err), 0);
	oci_ref_reference(&r, out);
	assert_string_equal(out, DIG);

	/* A 128-byte tag fits the buffer. */
	strcpy(s, "a:");
	memset(s + 2, 'z', 128);
	s[130] = '\0';
	assert_int_equal(oci_ref_parse(s, &r, &err), 0);
	oci_ref_reference(&r, out);
	assert_string_equal(out, s + 2);
}

static void test_api_host(void **state)
{
	(void)state;
	assert_string_equal(oci_registry_api_host("docker.io"), OCI_DOCKER_HUB_API_HOST);
	assert_string_equal(oci_registry_api_host("index.docker.io"), OCI_DOCKER_HUB_API_HOST);
	assert_string_equal(oci_registry_api_host("localhost:5000"), "localhost:5000");
	assert_string_equal(oci_registry_api_host("ghcr.io"), "ghcr.io");
}

static void test_loopback(void **state)
{
	static const struct {
		const char *reg;
		bool loop;
	} t[] = {
		{"localhost", true},
		{"localhost:5000", true},
		{"LocalHost:5000", true},
		{"127.0.0.1", true},
		{"127.0.0.1:5000", true},
		{"127.1.2.3:80", true},
		{"[::1]", true},
		{"[::1]:5000", true},
		{"[0:0:0:0:0:0:0:1]:5000", true},
		{"docker.io", false},
		{"128.0.0.1:5000", false},
		{"10.0.0.1", false},
		{"localhost.example.com", false},
		{"127.0.0.1.nip.io:5000", false},
		{"localhost:bad", false},
		{"localhost:0", false},
		{"[::2]:5000", false},
		{"[::1]x", false},
		{"[::1", false},
		{"::1", false},
		{"", false},
		{NULL, false},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
		if (oci_registry_is_loopback(t[i].reg) != t[i].loop)
			fail_msg("is_loopback(%s) != %d", t[i].reg ? t[i].reg : "NULL", t[i].loop);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_good),	  cmocka_unit_test(test_bad),	    cmocka_unit_test(test_null),
		cmocka_unit_test(test_messages),  cmocka_unit_test(test_lengths),   cmocka_unit_test(test_reference),
		cmocka_unit_test(test_api_host),  cmocka_unit_test(test_loopback),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
