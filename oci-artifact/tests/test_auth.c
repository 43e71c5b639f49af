/* Unit tests for WWW-Authenticate parsing, docker config.json credentials, token replies and base64 (oci/auth.h). */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "oci/auth.h"

/* ---------- challenges ---------- */

struct good_ch {
	const char *in;
	enum oci_auth_scheme scheme;
	const char *realm, *service, *scope;
};

static const struct good_ch good_chs[] = {
	{"Bearer realm=\"https://auth.docker.io/token\",service=\"registry.docker.io\","
	 "scope=\"repository:samalba/my-app:pull,push\"",
	 OCI_AUTH_BEARER, "https://auth.docker.io/token", "registry.docker.io", "repository:samalba/my-app:pull,push"},
	{"Basic realm=\"basic-realm\"", OCI_AUTH_BASIC, "basic-realm", "", ""},
	{"Basic realm=\"Registry Realm\"", OCI_AUTH_BASIC, "Registry Realm", "", ""},
	{"Basic realm=simple", OCI_AUTH_BASIC, "simple", "", ""},
	{"Basic", OCI_AUTH_BASIC, "", "", ""},
	{"BASIC realm=\"x\"", OCI_AUTH_BASIC, "x", "", ""},
	/* Case-insensitive scheme and names, whitespace around '=' and ','. */
	{"bearer REALM=\"http://localhost:5001/auth\" , Service = \"x\" ,\tscope=y", OCI_AUTH_BEARER,
	 "http://localhost:5001/auth", "x", "y"},
	{"  Bearer   realm=\"https://a/t\"  ", OCI_AUTH_BEARER, "https://a/t", "", ""},
	/* quoted-pair escapes. */
	{"Bearer realm=\"https://a/\\\"q\\\"\",service=\"a\\\\b\",scope=\"\\x\\y\"", OCI_AUTH_BEARER,
	 "https://a/\"q\"", "a\\b", "xy"},
	/* Several challenges: the first Bearer wins, else the first Basic. */
	{"Basic realm=\"r\", Bearer realm=\"https://a/t\",service=\"s\"", OCI_AUTH_BEARER, "https://a/t", "s", ""},
	{"Bearer realm=\"https://one/t\", Bearer realm=\"https://two/t\"", OCI_AUTH_BEARER, "https://one/t", "", ""},
	{"Bearer realm=\"https://x/t\", Basic realm=\"b\"", OCI_AUTH_BEARER, "https://x/t", "", ""},
	{"Negotiate, Basic realm=\"x\"", OCI_AUTH_BASIC, "x", "", ""},
	{"Negotiate abc==, Bearer realm=\"https://x/t\"", OCI_AUTH_BEARER, "https://x/t", "", ""},
	{"Basic realm=\"first\", Basic realm=\"second\"", OCI_AUTH_BASIC, "first", "", ""},
	/* RFC 7235 section 4.1's example. */
	{"Newauth realm=\"apps\", type=1, title=\"Login to \\\"apps\\\"\", Basic realm=\"simple\"", OCI_AUTH_BASIC,
	 "simple", "", ""},
	/* Unknown parameters (RFC 6750 error attributes) are ignored. */
	{"Bearer realm=\"https://ghcr.io/token\",service=\"ghcr.io\",scope=\"repository:o/r:pull\","
	 "error=\"insufficient_scope\"",
	 OCI_AUTH_BEARER, "https://ghcr.io/token", "ghcr.io", "repository:o/r:pull"},
	/* Empty list elements. */
	{", ,Bearer realm=\"https://x/t\",,service=s,", OCI_AUTH_BEARER, "https://x/t", "s", ""},
	{"Bearer realm=\"HTTPS://X/t\",scope=\"repository:a:pull repository:b:pull\"", OCI_AUTH_BEARER, "HTTPS://X/t",
	 "", "repository:a:pull repository:b:pull"},
	{"Bearer realm=\"https://x/t\",scope=\"\"", OCI_AUTH_BEARER, "https://x/t", "", ""},
};

static void test_challenge_good(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(good_chs) / sizeof(good_chs[0]); i++) {
		const struct good_ch *g = &good_chs[i];
		sl_error_t err = NULL;
		struct oci_challenge ch;

		if (oci_challenge_parse(g->in, &ch, &err) < 0)
			fail_msg("%s: %s", g->in, sl_error_msg(err));
		assert_null(err);
		assert_int_equal(ch.scheme, g->scheme);
		assert_string_equal(ch.realm, g->realm);
		assert_string_equal(ch.service, g->service);
		assert_string_equal(ch.scope, g->scope);
	}
}

struct bad_ch {
	const char *in;
	int code;
	const char *msg;
};

static const struct bad_ch bad_chs[] = {
	{"", SL_E_INVALID, "no challenge"},
	{"  , ", SL_E_INVALID, "no challenge"},
	{"Negotiate", SL_E_UNSUPPORTED, "unsupported authentication scheme \"Negotiate\""},
	{"Digest realm=\"x\", nonce=\"y\"", SL_E_UNSUPPORTED, "\"Digest\""},
	{"Bearer", SL_E_INVALID, "without a realm"},
	{"Bearer service=\"s\"", SL_E_INVALID, "without a realm"},
	{"Bearer abc==", SL_E_INVALID, "without a realm"},
	{"Bearer realm=\"ftp://x/t\"", SL_E_INVALID, "http:// or https://"},
	{"Bearer realm=\"https://\"", SL_E_INVALID, "http:// or https://"},
	{"Bearer realm=\"https:///t\"", SL_E_INVALID, "http:// or https://"},
	{"Bearer realm=\"/token\"", SL_E_INVALID, "http:// or https://"},
	{"Bearer realm=\"https://a b/t\"", SL_E_INVALID, "realm contains"},
	{"Bearer realm=\"https://x/t", SL_E_INVALID, "unterminated"},
	{"Bearer realm=\"https://x/t\\", SL_E_INVALID, "unterminated"},
	{"Bearer realm=\"https://x/t\" service=\"s\"", SL_E_INVALID, "expected ','"},
	{"Bearer realm=\"https://x/t\"ab", SL_E_INVALID, "expected ','"},
	/* "realm=" alone is a token68 (RFC 7235 allows trailing '='). */
	{"Bearer realm=", SL_E_INVALID, "without a realm"},
	{"Bearer realm=,service=x", SL_E_INVALID, "after the scheme"},
	{"Bearer service=s,realm=", SL_E_INVALID, "expected a token or quoted-string"},
	{"Bearer =x", SL_E_INVALID, "expected an auth-param name"},
	{"Bearer realm=\"https://x/t\",realm=\"https://y/t\"", SL_E_INVALID, "realm given twice"},
	{"Bearer realm=\"https://x/t\",SCOPE=a,scope=b", SL_E_INVALID, "scope given twice"},
	{"Bearer realm=\"https://x/t\r\n\"", SL_E_INVALID, "unterminated"},
	{"Bearer realm=\"https://x/t\"\r\n", SL_E_INVALID, "expected ','"},
	{"\"Bearer\"", SL_E_INVALID, "expected an authentication scheme"},
	{"Bearer/1 realm=x", SL_E_INVALID, "after the scheme"},
	{"Basic realm=\"\x01\"", SL_E_INVALID, "unterminated"},
	{"Basic realm=\"caf\xc3\xa9\"", SL_E_INVALID, "realm contains"},
	{"Bearer realm=\"https://x/t\",service=\"a\\\tb\"", SL_E_INVALID, "service contains"},
	/* A broken Bearer is not papered over by a good Basic. */
	{"Bearer realm=\"ftp://x\", Basic realm=\"b\"", SL_E_INVALID, "http:// or https://"},
	/* Syntax errors anywhere in the header count. */
	{"Basic realm=\"b\", Bearer realm=\"https://x/t\",scope=\"a", SL_E_INVALID, "unterminated"},
};

static void test_challenge_bad(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(bad_chs) / sizeof(bad_chs[0]); i++) {
		const struct bad_ch *b = &bad_chs[i];
		sl_error_t err = NULL;
		struct oci_challenge ch;

		memset(&ch, 0x5a, sizeof(ch));
		if (oci_challenge_parse(b->in, &ch, &err) == 0)
			fail_msg("accepted \"%s\"", b->in);
		assert_non_null(err);
		if (err->code != b->code || !strstr(sl_error_msg(err), b->msg))
			fail_msg("\"%s\": got %s \"%s\", want %s \"%s\"", b->in, sl_error_code_name(err->code),
				 sl_error_msg(err), sl_error_code_name(b->code), b->msg);
		assert_non_null(strstr(sl_error_msg(err), "WWW-Authenticate \""));
		assert_int_equal(ch.scheme, OCI_AUTH_NONE);
		assert_string_equal(ch.realm, "");
		sl_error_free(&err);
	}
}

/* Each field holds sizeof - 1 bytes; one more is refused. */
static void test_challenge_limits(void **state)
{
	static const struct {
		const char *name;
		size_t max;
	} f[] = {{"realm", 1023}, {"service", 255}, {"scope", 1023}};
	char buf[4096], val[2048];

	(void)state;
	for (size_t i = 0; i < 3; i++) {
		for (int extra = 0; extra <= 1; extra++) {
			sl_error_t err = NULL;
			struct oci_challenge ch;
			size_t n = f[i].max + (size_t)extra;
			int r;

			if (strcmp(f[i].name, "realm") == 0) {
				strcpy(val, "https://");
				memset(val + 8, 'r', n - 8);
			} else {
				memset(val, 'v', n);
			}
			val[n] = '\0';
			snprintf(buf, sizeof(buf), "Bearer %s%s=\"%s\"", strcmp(f[i].name, "realm") ? "realm=\"https://x/t\"," : "",
				 f[i].name, val);
			r = oci_challenge_parse(buf, &ch, &err);
			if (extra) {
				assert_int_equal(r, -1);
				assert_int_equal(err->code, SL_E_INVALID);
				assert_non_null(strstr(sl_error_msg(err), "is longer than"));
				assert_true(strlen(sl_error_msg(err)) < 300);
				sl_error_free(&err);
			} else {
				assert_int_equal(r, 0);
				if (strcmp(f[i].name, "realm") == 0)
					assert_int_equal(strlen(ch.realm), n);
				else if (strcmp(f[i].name, "service") == 0)
					assert_int_equal(strlen(ch.service), n);
				else
					assert_int_equal(strlen(ch.scope), n);
			}
		}
	}
}

static void test_challenge_null(void **state)
{
	sl_error_t err = NULL;
	struct oci_challenge ch;

	(void)state;
	assert_int_equal(oci_challenge_parse(NULL, &ch, &err), -1);
	assert_int_equal(err->code, SL_E_INVALID);
	sl_error_free(&err);
}

/* ---------- config.json ---------- */

/* base64("user:pass") etc., computed independently (coreutils base64). */
#define B64_USER_PASS "dXNlcjpwYXNz"         /* user:pass */
#define B64_COLON_PW "YWxpY2U6cDpbXTp4"     /* alice:p:[]:x */
#define B64_HUB "aHViOnNlY3JldA=="          /* hub:secret */
#define B64_NOCOLON "dXNlcnBhc3M="          /* userpass */
#define B64_EMPTYUSER "OnB3"                /* :pw */
#define B64_NUL "dQA6cA=="                  /* u\0:p */
#define B64_NEWLINE "dTpwCg=="              /* u:p\n */

struct good_cfg {
	const char *json, *registry;
	bool present;
	const char *user, *pass;
};

static const struct good_cfg good_cfgs[] = {
	{"{\"auths\":{\"localhost:5000\":{\"auth\":\"" B64_USER_PASS "\"}}}", "localhost:5000", true, "user", "pass"},
	{"{\"auths\":{\"https://ghcr.io\":{\"auth\":\"" B64_USER_PASS "\"}}}", "ghcr.io", true, "user", "pass"},
	{"{\"auths\":{\"https://index.docker.io/v1/\":{\"auth\":\"" B64_HUB "\"}}}", "docker.io", true, "hub",
	 "secret"},
	{"{\"auths\":{\"docker.io\":{\"auth\":\"" B64_USER_PASS "\"},"
	 "\"https://index.docker.io/v1/\":{\"auth\":\"" B64_HUB "\"}}}",
	 "docker.io", true, "user", "pass"},
	/* The v1 URL only stands for docker.io. */
	{"{\"auths\":{\"https://index.docker.io/v1/\":{\"auth\":\"" B64_HUB "\"}}}", "ghcr.io", false, "", ""},
	/* Exact key before https:// key. */
	{"{\"auths\":{\"https://r.io\":{\"auth\":\"" B64_HUB "\"},\"r.io\":{\"auth\":\"" B64_USER_PASS "\"}}}", "r.io",
	 true, "user", "pass"},
	/* The password keeps every ':' after the first. */
	{"{\"auths\":{\"r.io\":{\"auth\":\"" B64_COLON_PW "\"}}}", "r.io", true, "alice", "p:[]:x"},
	{"{\"auths\":{\"r.io\":{\"username\":\"bob\",\"password\":\"pw\"}}}", "r.io", true, "bob", "pw"},
	{"{\"auths\":{\"r.io\":{\"auth\":\"\",\"username\":\"bob\",\"password\":\"pw\"}}}", "r.io", true, "bob", "pw"},
	{"{\"auths\":{\"r.io\":{\"auth\":\"" B64_USER_PASS "\",\"username\":\"bob\",\"password\":\"pw\"}}}", "r.io",
	 true, "user", "pass"},
	/* No entry, or an entry without credentials: anonymous. */
	{"{}", "r.io", false, "", ""},
	{"{\"auths\":{}}", "r.io", false, "", ""},
	{"{\"auths\":{\"other.io\":{\"auth\":\"" B64_USER_PASS "\"}}}", "r.io", false, "", ""},
	{"{\"auths\":{\"r.io\":{}},\"credsStore\":\"desktop\"}", "r.io", false, "", ""},
	{"{\"auths\":{\"r.io\":{\"identitytoken\":\"abc\"}}}", "r.io", false, "", ""},
	{"{\"auths\":{\"r.io\":{\"username\":\"bob\"}}}", "r.io", false, "", ""},
	{"{\"credHelpers\":{\"r.io\":\"ecr-login\"}}", "r.io", false, "", ""},
	{"{\"auths\":{\"r.io\":{\"auth\":\"" B64_USER_PASS "\"}},\"credHelpers\":{\"r.io\":\"x\"},\"psFormat\":\"t\"}",
	 "r.io", true, "user", "pass"},
};

static void test_config_good(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(good_cfgs) / sizeof(good_cfgs[0]); i++) {
		const struct good_cfg *g = &good_cfgs[i];
		sl_error_t err = NULL;
		struct oci_creds c;

		memset(&c, 0x5a, sizeof(c));
		if (oci_creds_from_config(g->json, strlen(g->json), g->registry, &c, &err) < 0)
			fail_msg("%s: %s", g->json, sl_error_msg(err));
		if (c.present != g->present)
			fail_msg("%s: present %d", g->json, c.present);
		assert_string_equal(c.username, g->user);
		assert_string_equal(c.password, g->pass);
	}
}

static const char *const bad_cfgs[] = {
	"",
	"{",
	"[]",
	"{\"auths\":[]}",
	"{\"auths\":{\"r.io\":\"x\"}}",
	"{\"auths\":{\"r.io\":{\"auth\":42}}}",
	"{\"auths\":{\"r.io\":{\"auth\":\"!!!!\"}}}",
	"{\"auths\":{\"r.io\":{\"auth\":\"dXNlcjpwYXNzd29yZA\"}}}",       /* unpadded */
	"{\"auths\":{\"r.io\":{\"auth\":\"dXNlcjpwYXNz\\n\"}}}",          /* newline */
	"{\"auths\":{\"r.io\":{\"auth\":\"dXNl cjpw\"}}}",               /* space */
	"{\"auths\":{\"r.io\":{\"auth\":\"dTpwYR==\"}}}",                /* nonzero pad bits */
	"{\"auths\":{\"r.io\":{\"auth\":\"dTp=cA==\"}}}",                /* '=' inside */
	"{\"auths\":{\"r.io\":{\"auth\":\"" B64_NOCOLON "\"}}}",
	"{\"auths\":{\"r.io\":{\"auth\":\"" B64_EMPTYUSER "\"}}}",
	"{\"auths\":{\"r.io\":{\"auth\":\"" B64_NUL "\"}}}",
	"{\"auths\":{\"r.io\":{\"auth\":\"" B64_NEWLINE "\"}}}",
	"{\"auths\":{\"r.io\":{\"username\":1,\"password\":\"x\"}}}",
	"{\"auths\":{\"r.io\":{\"username\":\"a\\nb\",\"password\":\"x\"}}}",
	"{\"auths\":{\"r.io\":{\"username\":\"a\",\"password\":\"x\\u0000y\"}}}",
	"{\"auths\":{\"r.io\":{}},\"auths\":{}}", /* duplicate key */
	"{\"auths\":{}} trailing",
};

static void test_config_bad(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(bad_cfgs) / sizeof(bad_cfgs[0]); i++) {
		sl_error_t err = NULL;
		struct oci_creds c;

		if (oci_creds_from_config(bad_cfgs[i], strlen(bad_cfgs[i]), "r.io", &c, &err) == 0)
			fail_msg("accepted %s", bad_cfgs[i]);
		assert_int_equal(err->code, SL_E_INVALID);
		assert_false(c.present);
		assert_string_equal(c.password, "");
		sl_error_free(&err);
	}
}

/* Errors never echo credentials. */
static void test_config_no_secret_in_errors(void **state)
{
	static const char json[] = "{\"auths\":{\"r.io\":{\"auth\":\"c2VjcmV0cGFzc3dvcmQ=\"}}}"; /* secretpassword */
	sl_error_t err = NULL;
	struct oci_creds c;

	(void)state;
	assert_int_equal(oci_creds_from_config(json, strlen(json), "r.io", &c, &err), -1);
	assert_null(strstr(sl_error_msg(err), "c2VjcmV0"));
	assert_null(strstr(sl_error_msg(err), "secret"));
	assert_non_null(strstr(sl_error_msg(err), "r.io"));
	sl_error_free(&err);
}

static void test_config_limits(void **state)
{
	char user[300], pass[1100], plain[1400], b64[2000], json[2200];
	sl_error_t err = NULL;
	struct oci_creds c;

	(void)state;
	for (int extra = 0; extra <= 1; extra++) {
		/* username 255 (+1), password 1023 */
		memset(user, 'u', 255 + (size_t)extra);
		user[255 + extra] = '\0';
		memset(pass, 'p', 1023);
		pass[1023] = '\0';
		snprintf(plain, sizeof(plain), "%s:%s", user, pass);
		assert_true(oci_base64_encode(plain, strlen(plain), b64, sizeof(b64)) > 0);
		snprintf(json, sizeof(json), "{\"auths\":{\"r.io\":{\"auth\":\"%s\"}}}", b64);
		if (!extra) {
			assert_int_equal(oci_creds_from_config(json, strlen(json), "r.io", &c, &err), 0);
			assert_true(c.present);
			assert_string_equal(c.username, user);
			assert_string_equal(c.password, pass);
		} else {
			assert_int_equal(oci_creds_from_config(json, strlen(json), "r.io", &c, &err), -1);
			sl_error_free(&err);
		}
		/* Same with the password one byte over. */
		memset(user, 'u', 10);
		user[10] = '\0';
		memset(pass, 'p', 1023 + (size_t)extra);
		pass[1023 + extra] = '\0';
		snprintf(json, sizeof(json), "{\"auths\":{\"r.io\":{\"username\":\"%s\",\"password\":\"%s\"}}}", user,
			 pass);
		assert_int_equal(oci_creds_from_config(json, strlen(json), "r.io", &c, &err), extra ? -1 : 0);
		if (extra)
			sl_error_free(&err);
		else
			assert_string_equal(c.password, pass);
	}
}

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	assert_int_equal(fputs(text, f) >= 0, 1);
	assert_int_equal(fclose(f), 0);
}

static void test_creds_load(void **state)
{
	char dir[] = "/tmp/oci-auth-XXXXXX", path[128], dotdir[128], missing[128];
	char *saved_home = getenv("HOME") ? strdup(getenv("HOME")) : NULL;
	char *saved_dc = getenv("DOCKER_CONFIG") ? strdup(getenv("DOCKER_CONFIG")) : NULL;
	sl_error_t err = NULL;
	struct oci_creds c;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/config.json", dir);
	snprintf(dotdir, sizeof(dotdir), "%s/.docker", dir);
	snprintf(missing, sizeof(missing), "%s/nope", dir);

	/* $DOCKER_CONFIG wins. */
	write_file(path, "{\"auths\":{\"localhost:5000\":{\"auth\":\"" B64_USER_PASS "\"}}}");
	setenv("DOCKER_CONFIG", dir, 1);
	setenv("HOME", missing, 1);
	assert_int_equal(oci_creds_load("localhost:5000", &c, &err), 0);
	assert_true(c.present);
	assert_string_equal(c.username, "user");
	assert_string_equal(c.password, "pass");
	assert_int_equal(oci_creds_load("other:5000", &c, &err), 0);
	assert_false(c.present);

	/* Malformed file: an error naming the path. */
	write_file(path, "{\"auths\":");
	assert_int_equal(oci_creds_load("localhost:5000", &c, &err), -1);
	assert_int_equal(err->code, SL_E_INVALID);
	assert_non_null(strstr(sl_error_msg(err), path));
	sl_error_free(&err);
	assert_int_equal(unlink(path), 0);

	/* Missing file, missing directory, a file where the dir should be. */
	assert_int_equal(oci_creds_load("localhost:5000", &c, &err), 0);
	assert_false(c.present);
	setenv("DOCKER_CONFIG", missing, 1);
	assert_int_equal(oci_creds_load("localhost:5000", &c, &err), 0);
	assert_false(c.present);

	/* $HOME/.docker/config.json when DOCKER_CONFIG is unset or empty. */
	assert_int_equal(mkdir(dotdir, 0700), 0);
	snprintf(path, sizeof(path), "%s/.docker/config.json", dir);
	write_file(path, "{\"auths\":{\"https://index.docker.io/v1/\":{\"auth\":\"" B64_HUB "\"}}}");
	setenv("HOME", dir, 1);
	setenv("DOCKER_CONFIG", "", 1);
	assert_int_equal(oci_creds_load("docker.io", &c, &err), 0);
	assert_true(c.present);
	assert_string_equal(c.username, "hub");
	unsetenv("DOCKER_CONFIG");
	assert_int_equal(oci_creds_load("docker.io", &c, &err), 0);
	assert_true(c.present);

	/* Neither variable: anonymous. */
	unsetenv("HOME");
	assert_int_equal(oci_creds_load("docker.io", &c, &err), 0);
	assert_false(c.present);

	assert_int_equal(unlink(path), 0);
	assert_int_equal(rmdir(dotdir), 0);
	assert_int_equal(rmdir(dir), 0);
	if (saved_home)
		setenv("HOME", saved_home, 1);
	if (saved_dc)
		setenv("DOCKER_CONFIG", saved_dc, 1);
	free(saved_home);
	free(saved_dc);
}

/* ---------- token replies ---------- */

struct good_tok {
	const char *json, *token;
	long ttl;
};

static const struct good_tok good_toks[] = {
	{"{\"token\":\"abc.def-ghi_jkl\",\"expires_in\":300}", "abc.def-ghi_jkl", 300},
	{"{\"access_token\":\"x\"}", "x", 60},
	{"{\"token\":\"\",\"access_token\":\"y\",\"expires_in\":3600,\"issued_at\":\"2024-01-01T00:00:00Z\"}", "y",
	 3600},
	{"{\"token\":null,\"access_token\":\"y\"}", "y", 60},
	{"{\"token\":\"a\",\"access_token\":\"b\"}", "a", 60},
	{"{\"token\":\"a\",\"expires_in\":10}", "a", 60},
	{"{\"token\":\"a\",\"expires_in\":-5}", "a", 60},
	{"{\"token\":\"a\",\"expires_in\":60}", "a", 60},
	{"{\"token\":\"a\",\"expires_in\":86400}", "a", 86400},
	{"{\"token\":\"a\",\"expires_in\":1000000000000}", "a", 86400},
	{"{\"token\":\"a\",\"expires_in\":null}", "a", 60},
	{"{\"token\":\"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIifQ.c2ln+/==\"}", "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIifQ.c2ln+/==",
	 60},
};

static void test_token_good(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(good_toks) / sizeof(good_toks[0]); i++) {
		sl_error_t err = NULL;
		char tok[128];
		long ttl = 0;

		if (oci_token_parse(good_toks[i].json, strlen(good_toks[i].json), tok, sizeof(tok), &ttl, &err) < 0)
			fail_msg("%s: %s", good_toks[i].json, sl_error_msg(err));
		assert_string_equal(tok, good_toks[i].token);
		assert_int_equal(ttl, good_toks[i].ttl);
	}
}

static const char *const bad_toks[] = {
	"",
	"nope",
	"[]",
	"\"token\"",
	"{}",
	"{\"token\":\"\"}",
	"{\"token\":\"\",\"access_token\":\"\"}",
	"{\"token\":123}",
	"{\"token\":\"a\",\"access_token\":7}",
	"{\"token\":\"a b\"}",
	"{\"token\":\"a\\r\\nX-Evil: 1\"}",
	"{\"token\":\"caf\\u00e9\"}",
	"{\"token\":\"a\",\"expires_in\":\"300\"}",
	"{\"token\":\"a\",\"expires_in\":300.5}",
	"{\"token\":\"a\"}{}",
};

static void test_token_bad(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(bad_toks) / sizeof(bad_toks[0]); i++) {
		sl_error_t err = NULL;
		char tok[64];
		long ttl = 0;

		memset(tok, 'X', sizeof(tok));
		if (oci_token_parse(bad_toks[i], strlen(bad_toks[i]), tok, sizeof(tok), &ttl, &err) == 0)
			fail_msg("accepted %s", bad_toks[i]);
		assert_int_equal(err->code, SL_E_INVALID);
		assert_string_equal(tok, "");
		sl_error_free(&err);
	}
}

static void test_token_cap(void **state)
{
	sl_error_t err = NULL;
	char tok[8];
	long ttl;

	(void)state;
	assert_int_equal(oci_token_parse("{\"token\":\"1234567\"}", 19, tok, sizeof(tok), &ttl, &err), 0);
	assert_string_equal(tok, "1234567");
	assert_int_equal(oci_token_parse("{\"token\":\"12345678\"}", 20, tok, sizeof(tok), &ttl, &err), -1);
	assert_non_null(strstr(sl_error_msg(err), "longer than 7 bytes"));
	sl_error_free(&err);
	/* expires_in may be NULL. */
	assert_int_equal(oci_token_parse("{\"token\":\"t\"}", 13, tok, sizeof(tok), NULL, &err), 0);
}

/* ---------- base64 ---------- */

static void test_base64(void **state)
{
	static const struct {
		const char *in, *out;
	} v[] = {
		{"", ""},	  {"f", "Zg=="},	 {"fo", "Zm8="},	 {"foo", "Zm9v"},
		{"foob", "Zm9vYg=="}, {"fooba", "Zm9vYmE="}, {"foobar", "Zm9vYmFy"}, {"user:pass", B64_USER_PASS},
	};
	static const unsigned char bin[] = {0x00, 0xff, 0xfe, 0x3e, 0x3f};
	char out[32];

	(void)state;
	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		assert_int_equal(oci_base64_encode(v[i].in, strlen(v[i].in), out, sizeof(out)), (int)strlen(v[i].out));
		assert_string_equal(out, v[i].out);
		/* Exactly enough room, then one byte short. */
		assert_int_equal(oci_base64_encode(v[i].in, strlen(v[i].in), out, strlen(v[i].out) + 1),
				 (int)strlen(v[i].out));
		assert_int_equal(oci_base64_encode(v[i].in, strlen(v[i].in), out, strlen(v[i].out)), -1);
	}
	assert_int_equal(oci_base64_encode(bin, sizeof(bin), out, sizeof(out)), 8);
	assert_string_equal(out, "AP/+Pj8=");
}

/* What we encode, config.json decoding gives back (both directions agree). */
static void test_base64_roundtrip(void **state)
{
	char plain[200], b64[300], json[400];
	sl_error_t err = NULL;
	struct oci_creds c;

	(void)state;
	srand(1);
	for (int iter = 0; iter < 500; iter++) {
		size_t ul = 1 + (size_t)rand() % 20, pl = (size_t)rand() % 60;

		for (size_t i = 0; i < ul; i++)
			plain[i] = (char)('a' + rand() % 26);
		plain[ul] = ':';
		for (size_t i = 0; i < pl; i++)
			plain[ul + 1 + i] = (char)(0x20 + rand() % 95);
		plain[ul + 1 + pl] = '\0';
		assert_true(oci_base64_encode(plain, strlen(plain), b64, sizeof(b64)) > 0);
		snprintf(json, sizeof(json), "{\"auths\":{\"r.io\":{\"auth\":\"%s\"}}}", b64);
		if (oci_creds_from_config(json, strlen(json), "r.io", &c, &err) < 0)
			fail_msg("%s: %s", plain, sl_error_msg(err));
		assert_memory_equal(c.username, plain, ul);
		assert_int_equal(strlen(c.username), ul);
		assert_string_equal(c.password, plain + ul + 1);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_challenge_good),
		cmocka_unit_test(test_challenge_bad),
		cmocka_unit_test(test_challenge_limits),
		cmocka_unit_test(test_challenge_null),
		cmocka_unit_test(test_config_good),
		cmocka_unit_test(test_config_bad),
		cmocka_unit_test(test_config_no_secret_in_errors),
		cmocka_unit_test(test_config_limits),
		cmocka_unit_test(test_creds_load),
		cmocka_unit_test(test_token_good),
		cmocka_unit_test(test_token_bad),
		cmocka_unit_test(test_token_cap),
		cmocka_unit_test(test_base64),
		cmocka_unit_test(test_base64_roundtrip),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
