/* Unit tests of the List filter language (filter.c) and the snapshotter's config reader (config.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "filter.h"
#include "snap_config.h"

static struct snap_label labels[] = {
	{"containerd.io/snapshot.ref", "sha256:abc"},
	{"containerd.io/snapshot/cri.image-ref", "reg/spores/app:v1"},
	{"a.b", "c"},
};
static const struct snap_info committed = {.name = "k8s.io/3/sha256:abc", .parent = "k8s.io/2/sha256:p",
					   .kind = SNAP_KIND_COMMITTED, .labels = labels, .nlabels = 3};
static const struct snap_info active = {.name = "k8s.io/4/extract-1 sha256:def", .kind = SNAP_KIND_ACTIVE};

/* Parses the NUL-free strings in exprs (NULL-terminated) and matches info. */
static int match(const struct snap_info *info, const char **exprs)
{
	size_t n = 0;
	while (exprs[n])
		n++;
	sl_error_t err = NULL;
	struct snap_filter *f = NULL;
	if (snap_filter_parse(&f, (char *const *)exprs, n, &err) < 0) {
		print_error("parse: %s\n", sl_error_msg(err));
		sl_error_free(&err);
		return -1;
	}
	int m = snap_filter_match(f, info);
	snap_filter_free(f);
	return m;
}

#define M(info, ...) match(info, (const char *[]){__VA_ARGS__, NULL})

static void test_containerd_remote_lookup(void **state)
{
	(void)state;
	/* The exact filter containerd's metadata layer sends after ALREADY_EXISTS. */
	assert_int_equal(M(&committed, "labels.\"containerd.io/snapshot.ref\"==sha256:abc,parent==\"k8s.io/2/sha256:p\""), 1);
	assert_int_equal(M(&committed, "labels.\"containerd.io/snapshot.ref\"==sha256:abc,parent==\"other\""), 0);
	assert_int_equal(M(&active, "labels.\"containerd.io/snapshot.ref\"==sha256:abc"), 0);
}

static void test_fields_and_operators(void **state)
{
	(void)state;
	assert_int_equal(M(&committed, "kind==committed"), 1);
	assert_int_equal(M(&active, "kind==committed"), 0);
	assert_int_equal(M(&active, "kind==active"), 1);
	assert_int_equal(M(&committed, "name==k8s.io/3/sha256:abc"), 1);
	assert_int_equal(M(&committed, "name!=k8s.io/3/sha256:abc"), 0);
	assert_int_equal(M(&active, "parent!=x"), 1);          /* absent compares as "" */
	assert_int_equal(M(&active, "labels.nothere!=x"), 1);
	assert_int_equal(M(&active, "labels.nothere!=\"\""), 0);
	assert_int_equal(M(&committed, "labels.a.b==c"), 1);   /* the path after labels is one key */
	assert_int_equal(M(&committed, "labels.\"a.b\""), 1);  /* presence */
	assert_int_equal(M(&active, "labels.\"a.b\""), 0);
	assert_int_equal(M(&committed, "name~=/^k8s.io\\/[0-9]+\\//"), 1); /* inside /../ only the quote char may be escaped, as in containerd */
	assert_int_equal(M(&committed, "labels.\"containerd.io/snapshot/cri.image-ref\"~=\"spores/app\""), 1);
	assert_int_equal(M(&active, "name~=|^nope|"), 0);
}

static void test_and_or_empty(void **state)
{
	(void)state;
	assert_int_equal(M(&active, "kind==committed", "kind==active"), 1); /* strings: any */
	assert_int_equal(M(&active, "kind==active,name==x"), 0);            /* selectors: all */
	assert_int_equal(M(&active, ""), 1);
	assert_int_equal(match(&active, (const char *[]){NULL}), 1);
	assert_int_equal(M(&committed, " kind == committed , labels.a.b "), 1);
}

static void test_escapes(void **state)
{
	(void)state;
	struct snap_label l[] = {{"k", "A\xc3\xa9" "A\n\""}};
	struct snap_info i = {.name = "n", .kind = SNAP_KIND_ACTIVE, .labels = l, .nlabels = 1};
	assert_int_equal(M(&i, "labels.k==\"\\x41\\u00e9\\101\\n\\\"\""), 1);
}

static void test_bad_filters(void **state)
{
	(void)state;
	const char *bad[] = {
		"==x", "kind=x", "kind==", "kind==\"open", "labels.\"k\\q\"==x", "kind==x y", "name~=\"(\"",
		"labels.|k|==x", /* alternative quotes only around regex values */
		"name==/x/", "a,,b", "name~=/k8s\\.io/", ".kind",
		"name~=\"a++\"", "name~=\"(a{100}){100}\"", "name~=\"(a)\\\\1\"",
		"name~=\"a*b*c*d*e*f*g*h*i*j*k*l*m*n*o*p*q*\"",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		sl_error_t err = NULL;
		struct snap_filter *f = NULL;
		char *e[] = {(char *)bad[i]};
		if (snap_filter_parse(&f, e, 1, &err) == 0) {
			print_error("accepted bad filter %s\n", bad[i]);
			fail();
		}
		assert_null(f);
		assert_true(err->code == SL_E_INVALID);
		assert_non_null(strstr(sl_error_msg(err), "filter 0"));
		sl_error_free(&err);
	}
}

static void test_config(void **state)
{
	(void)state;
	struct snap_config c;
	snap_config_defaults(&c);
	sl_error_t err = NULL;
	const char *y = "root: /tmp/x\naddress: /run/s.sock\nlog_level: debug\n";
	assert_int_equal(snap_config_parse(y, strlen(y), "t.yaml", &c, &err), 0);
	assert_string_equal(c.root, "/tmp/x");
	assert_string_equal(c.address, "/run/s.sock");
	assert_string_equal(c.log_level, "debug");
	const char *r = "registries:\n  \"reg.example:5000\":\n    mirrors: [\"m1:5000\", \"m2\"]\n    insecure: true\n"
			"    username: u\n    password: p\ninsecure_registries: [\"127.0.0.2:80\"]\npull_timeout_s: 30\n"
			"cache_gc: {interval_s: 60, max_mib: 1024}\n";
	assert_int_equal(snap_config_parse(r, strlen(r), "t.yaml", &c, &err), 0);
	assert_int_equal(c.nregistries, 1);
	assert_string_equal(c.registries[0].host, "reg.example:5000");
	assert_int_equal(c.registries[0].nmirrors, 2);
	assert_string_equal(c.registries[0].mirrors[1], "m2");
	assert_true(c.registries[0].insecure && c.registries[0].has_auth);
	assert_string_equal(c.registries[0].password, "p");
	assert_int_equal(c.ninsecure, 1);
	assert_int_equal(c.pull_timeout_s, 30);
	assert_int_equal(c.gc_interval_s, 60);
	assert_int_equal(c.gc_max_mib, 1024);
	const char *bad[] = {"root: relative\n", "nope: 1\n", "log_level: loud\n", "- a\n", "address: 7\n",
			     "registries: {\"a/b\": {}}\n", "registries: {r: {username: u}}\n",
			     "registries: {r: {mirrors: [\"x y\"]}}\n", "registries: {r: {insecure: 1}}\n",
			     "registries: {r: {colour: red}}\n", "insecure_registries: [\"a/b\"]\n", "pull_timeout_s: 0\n",
			     "spore: bin/spore\n", "cache_gc: {interval_s: 0}\n", "cache_gc: {max_mib: -1}\n",
			     "cache_gc: {when: never}\n", "cache_gc: 5\n"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(snap_config_parse(bad[i], strlen(bad[i]), "t.yaml", &c, &err), -1);
		assert_non_null(strstr(sl_error_msg(err), "t.yaml"));
		sl_error_free(&err);
	}
	assert_string_equal(c.root, "/tmp/x"); /* unchanged by refused files */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_containerd_remote_lookup), cmocka_unit_test(test_fields_and_operators),
		cmocka_unit_test(test_and_or_empty),            cmocka_unit_test(test_escapes),
		cmocka_unit_test(test_bad_filters),             cmocka_unit_test(test_config),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
