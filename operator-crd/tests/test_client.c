/* Unit tests of the operator's pure client parts: watch lines and events, kubeconfig, base64, backoff, lease rules, queue, HTTP request lines. */
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

#include "sl/json.h"
#include "sl/time.h"
#include "sop_backoff.h"
#include "sop_httpd.h"
#include "sop_kubeconfig.h"
#include "sop_lease.h"
#include "sop_queue.h"
#include "sop_watch.h"

/* ---- watch ---------------------------------------------------------------- */

static void test_watch_events(void **st)
{
	(void)st;
	struct sop_watch_event ev;
	sl_error_t err = NULL;
	const char *added = "{\"type\":\"ADDED\",\"object\":{\"kind\":\"Pod\",\"metadata\":{\"name\":\"p\",\"namespace\":\"n\",\"resourceVersion\":\"17\"}}}";
	assert_int_equal(sop_watch_event_parse(added, strlen(added), &ev, &err), 0);
	assert_int_equal(ev.type, SOP_EV_ADDED);
	assert_string_equal(ev.resource_version, "17");
	assert_string_equal(json_string_value(json_object_get(json_object_get(ev.object, "metadata"), "name")), "p");
	sop_watch_event_clear(&ev);

	const char *bm = "{\"type\":\"BOOKMARK\",\"object\":{\"kind\":\"Pod\",\"metadata\":{\"resourceVersion\":\"99\"}}}";
	assert_int_equal(sop_watch_event_parse(bm, strlen(bm), &ev, &err), 0);
	assert_int_equal(ev.type, SOP_EV_BOOKMARK);
	assert_string_equal(ev.resource_version, "99");
	sop_watch_event_clear(&ev);

	const char *gone = "{\"type\":\"ERROR\",\"object\":{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"status\":\"Failure\","
			   "\"message\":\"too old resource version: 5 (20)\",\"reason\":\"Expired\",\"code\":410}}";
	assert_int_equal(sop_watch_event_parse(gone, strlen(gone), &ev, &err), 0);
	assert_int_equal(ev.type, SOP_EV_ERROR);
	assert_int_equal(ev.code, 410);
	assert_string_equal(ev.message, "too old resource version: 5 (20)");
	sop_watch_event_clear(&ev);

	static const char *bad[] = {
		"not json",
		"[1,2]",
		"{\"type\":\"ADDED\"}",
		"{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"name\":\"p\"}}}",
		"{\"type\":\"MODIFIED\",\"object\":{\"metadata\":{\"resourceVersion\":\"1\"}}}",
		"{\"type\":\"SOMETHING\",\"object\":{\"metadata\":{\"name\":\"p\",\"resourceVersion\":\"1\"}}}",
		"{\"type\":\"ERROR\",\"object\":{\"code\":\"410\"}}",
		"{\"object\":{\"metadata\":{\"name\":\"p\",\"resourceVersion\":\"1\"}}}",
		"{\"type\":\"ADDED\",\"type\":\"DELETED\",\"object\":{\"metadata\":{\"name\":\"p\",\"resourceVersion\":\"1\"}}}",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (sop_watch_event_parse(bad[i], strlen(bad[i]), &ev, &err) == 0)
			fail_msg("accepted: %s", bad[i]);
		assert_non_null(err);
		sl_error_free(&err);
	}
}

struct lines {
	char got[8][64];
	int n;
};

static int collect(void *arg, const char *line, size_t len, sl_error_t *err)
{
	(void)err;
	struct lines *l = arg;
	if (l->n < 8)
		snprintf(l->got[l->n++], 64, "%.*s", (int)len, line);
	return 0;
}

static void test_linebuf(void **st)
{
	(void)st;
	struct sop_linebuf lb;
	struct lines l = { .n = 0 };
	sl_error_t err = NULL;
	sop_linebuf_init(&lb, 16);
	/* A line split over three feeds, CRLF, empty lines skipped. */
	assert_int_equal(sop_linebuf_feed(&lb, "ab", 2, collect, &l, &err), 0);
	assert_int_equal(sop_linebuf_feed(&lb, "c", 1, collect, &l, &err), 0);
	assert_int_equal(sop_linebuf_pending(&lb), 3);
	assert_int_equal(sop_linebuf_feed(&lb, "d\r\n\n\nxyz\nq", 10, collect, &l, &err), 0);
	assert_int_equal(l.n, 2);
	assert_string_equal(l.got[0], "abcd");
	assert_string_equal(l.got[1], "xyz");
	assert_int_equal(sop_linebuf_pending(&lb), 1);
	/* Exactly the limit is fine; one more byte is refused, whether held or in one piece. */
	assert_int_equal(sop_linebuf_feed(&lb, "123456789012345\n", 16, collect, &l, &err), 0);
	assert_string_equal(l.got[2], "q123456789012345");
	assert_int_equal(sop_linebuf_feed(&lb, "12345678901234567\n", 18, collect, &l, &err), -1);
	assert_int_equal(err->code, SL_E_LIMIT);
	sl_error_free(&err);
	sop_linebuf_free(&lb);
	sop_linebuf_init(&lb, 16);
	assert_int_equal(sop_linebuf_feed(&lb, "1234567890", 10, collect, &l, &err), 0);
	assert_int_equal(sop_linebuf_feed(&lb, "1234567", 7, collect, &l, &err), -1);
	sl_error_free(&err);
	sop_linebuf_free(&lb);
}

/* ---- kubeconfig ------------------------------------------------------------ */

static const char kc[] =
	"apiVersion: v1\n"
	"kind: Config\n"
	"current-context: dev\n"
	"clusters:\n"
	"- name: c1\n"
	"  cluster:\n"
	"    server: https://10.0.0.1:6443/\n"
	"    certificate-authority-data: LS0tLS1CRUdJTg==\n"
	"- name: c2\n"
	"  cluster:\n"
	"    server: http://127.0.0.1:8080\n"
	"    insecure-skip-tls-verify: true\n"
	"    certificate-authority: ca/ca.crt\n"
	"users:\n"
	"- name: u1\n"
	"  user:\n"
	"    token: abc.def\n"
	"- name: u2\n"
	"  user:\n"
	"    client-certificate: certs/client.crt\n"
	"    client-key-data: a2V5\n"
	"- name: u3\n"
	"  user:\n"
	"    exec:\n"
	"      command: aws\n"
	"contexts:\n"
	"- name: dev\n"
	"  context:\n"
	"    cluster: c1\n"
	"    user: u1\n"
	"    namespace: team\n"
	"- name: other\n"
	"  context:\n"
	"    cluster: c2\n"
	"    user: u2\n"
	"- name: plugin\n"
	"  context:\n"
	"    cluster: c2\n"
	"    user: u3\n"
	"- name: nocluster\n"
	"  context:\n"
	"    cluster: missing\n"
	"    user: u1\n";

static void test_kubeconfig(void **st)
{
	(void)st;
	struct sop_kube_config c;
	sl_error_t err = NULL;
	assert_int_equal(sop_kubeconfig_parse(kc, strlen(kc), "/etc/kube", NULL, &c, &err), 0);
	assert_string_equal(c.server, "https://10.0.0.1:6443");
	assert_string_equal(c.context, "dev");
	assert_string_equal(c.namespace_, "team");
	assert_string_equal(c.token, "abc.def");
	assert_int_equal(c.ca_pem_len, 10);
	assert_memory_equal(c.ca_pem, "-----BEGIN", 10);
	assert_false(c.insecure);
	assert_null(c.ca_file);
	sop_kube_config_free(&c);

	assert_int_equal(sop_kubeconfig_parse(kc, strlen(kc), "/etc/kube", "other", &c, &err), 0);
	assert_string_equal(c.server, "http://127.0.0.1:8080");
	assert_true(c.insecure);
	assert_string_equal(c.ca_file, "/etc/kube/ca/ca.crt");
	assert_string_equal(c.client_cert_file, "/etc/kube/certs/client.crt");
	assert_string_equal(c.client_key_pem, "key");
	assert_null(c.token);
	assert_string_equal(c.namespace_, "default");
	sop_kube_config_free(&c);

	assert_int_equal(sop_kubeconfig_parse(kc, strlen(kc), "/etc/kube", "plugin", &c, &err), -1);
	assert_int_equal(err->code, SL_E_UNSUPPORTED);
	sl_error_free(&err);
	assert_int_equal(sop_kubeconfig_parse(kc, strlen(kc), "/etc/kube", "nocluster", &c, &err), -1);
	assert_non_null(strstr(sl_error_msg(err), "missing"));
	sl_error_free(&err);
	assert_int_equal(sop_kubeconfig_parse(kc, strlen(kc), "/etc/kube", "nope", &c, &err), -1);
	assert_non_null(strstr(sl_error_msg(err), "contexts"));
	sl_error_free(&err);

	static const char *bad[] = {
		"current-context: x\n",
		"- a\n- b\n",
		"current-context: a\ncontexts:\n- name: a\n  context: {cluster: c}\nclusters:\n- name: c\n  cluster: {server: ftp://x}\n",
		"current-context: a\ncontexts:\n- name: a\n  context: {cluster: c}\nclusters:\n- name: c\n  cluster: {server: https://x, certificate-authority-data: \"!!\"}\n",
		"current-context: a\ncontexts:\n- name: a\n  context: {cluster: c, user: u}\nclusters:\n- name: c\n  cluster: {server: https://x}\nusers:\n- name: u\n  user: {client-certificate: a.crt}\n",
		"current-context: a\ncontexts:\n- name: a\n  context: {cluster: c}\nclusters:\n- name: c\n  cluster: {server: https://x, insecure-skip-tls-verify: \"yes\"}\n",
		"current-context: a\ncontexts: {a: b}\n",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (sop_kubeconfig_parse(bad[i], strlen(bad[i]), "/", NULL, &c, &err) == 0)
			fail_msg("accepted kubeconfig %zu", i);
		sl_error_free(&err);
	}
}

static void test_base64(void **st)
{
	(void)st;
	static const struct { const char *in, *out; } ok[] = {
		{ "", "" }, { "Zg==", "f" }, { "Zm8=", "fo" }, { "Zm9v", "foo" }, { "Zm9vYg==", "foob" },
		{ "Zm9v\nYmFy", "foobar" }, { " Zm9vYmE= \n", "fooba" },
	};
	sl_error_t err = NULL;
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		char *o;
		size_t n;
		assert_int_equal(sop_base64_decode(ok[i].in, strlen(ok[i].in), &o, &n, &err), 0);
		assert_int_equal(n, strlen(ok[i].out));
		assert_memory_equal(o, ok[i].out, n);
		free(o);
	}
	static const char *bad[] = { "Zg", "Zg=", "Z===", "Zg==Zg==", "Zm9v!", "=Zg=" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char *o;
		size_t n;
		if (sop_base64_decode(bad[i], strlen(bad[i]), &o, &n, &err) == 0)
			fail_msg("accepted base64 \"%s\"", bad[i]);
		sl_error_free(&err);
	}
}

static void test_incluster(void **st)
{
	(void)st;
	char dir[] = "/tmp/sop-sa-XXXXXX";
	assert_non_null(mkdtemp(dir));
	char p[256];
	snprintf(p, sizeof(p), "%s/token", dir);
	FILE *f = fopen(p, "w");
	fputs("tok123\n", f);
	fclose(f);
	snprintf(p, sizeof(p), "%s/namespace", dir);
	f = fopen(p, "w");
	fputs("sporelet-system", f);
	fclose(f);
	struct sop_kube_config c;
	sl_error_t err = NULL;
	assert_int_equal(sop_incluster_load("10.96.0.1", "443", dir, &c, &err), 0);
	assert_string_equal(c.server, "https://10.96.0.1:443");
	assert_string_equal(c.namespace_, "sporelet-system");
	snprintf(p, sizeof(p), "%s/ca.crt", dir);
	assert_string_equal(c.ca_file, p);
	snprintf(p, sizeof(p), "%s/token", dir);
	assert_string_equal(c.token_file, p);
	sop_kube_config_free(&c);
	assert_int_equal(sop_incluster_load("fd00::1", "443", dir, &c, &err), 0);
	assert_string_equal(c.server, "https://[fd00::1]:443");
	sop_kube_config_free(&c);
	assert_int_equal(sop_incluster_load(NULL, "443", dir, &c, &err), -1);
	assert_non_null(strstr(sl_error_msg(err), "KUBERNETES_SERVICE_HOST"));
	sl_error_free(&err);
	unlink(p);
	assert_int_equal(sop_incluster_load("h", "1", dir, &c, &err), -1);
	sl_error_free(&err);
	snprintf(p, sizeof(p), "%s/namespace", dir);
	unlink(p);
	rmdir(dir);
}

/* ---- backoff, lease, queue, http ---------------------------------------------- */

static void test_backoff(void **st)
{
	(void)st;
	struct sop_backoff b;
	sop_backoff_init(&b, 100, 1000, 42);
	uint32_t want[] = { 100, 200, 400, 800, 1000, 1000 };
	for (size_t i = 0; i < 6; i++) {
		uint32_t c = sop_backoff_ceiling(&b);
		assert_int_equal(c, want[i]);
		uint32_t d = sop_backoff_next(&b);
		assert_true(d >= c / 2 && d <= c);
	}
	/* The jitter is spread: 200 draws at the cap are not all equal. */
	uint32_t lo = UINT32_MAX, hi = 0;
	for (int i = 0; i < 200; i++) {
		uint32_t d = sop_backoff_next(&b);
		lo = d < lo ? d : lo;
		hi = d > hi ? d : hi;
	}
	assert_true(lo >= 500 && hi <= 1000 && hi - lo > 300);
	sop_backoff_reset(&b);
	assert_int_equal(sop_backoff_ceiling(&b), 100);
	/* Two seeds, two sequences. */
	struct sop_backoff x, y;
	sop_backoff_init(&x, 1000, 60000, 1);
	sop_backoff_init(&y, 1000, 60000, 2);
	int same = 0;
	for (int i = 0; i < 10; i++)
		same += sop_backoff_next(&x) == sop_backoff_next(&y);
	assert_true(same < 10);
}

static void test_lease_rules(void **st)
{
	(void)st;
	struct sop_lease_observed obs = { .since_ms = 0 };
	assert_int_equal(sop_lease_decide(NULL, "me", 0, 15, &obs), SOP_LEASE_CREATE);
	json_t *mine = json_pack("{s:{s:s, s:s, s:i}}", "spec", "holderIdentity", "me", "renewTime", "t1",
				 "leaseDurationSeconds", 15);
	assert_int_equal(sop_lease_decide(mine, "me", 0, 15, &obs), SOP_LEASE_RENEW);
	json_t *freed = json_pack("{s:{s:s}}", "spec", "holderIdentity", "");
	assert_int_equal(sop_lease_decide(freed, "me", 0, 15, &obs), SOP_LEASE_TAKE);
	json_t *other = json_pack("{s:{s:s, s:s, s:i}}", "spec", "holderIdentity", "you", "renewTime", "t1",
				  "leaseDurationSeconds", 10);
	/* First sight starts our clock; the lease's own duration (10 s) counts, not ours. */
	assert_int_equal(sop_lease_decide(other, "me", 1000, 15, &obs), SOP_LEASE_WAIT);
	assert_int_equal(sop_lease_decide(other, "me", 10999, 15, &obs), SOP_LEASE_WAIT);
	assert_int_equal(sop_lease_decide(other, "me", 11001, 15, &obs), SOP_LEASE_TAKE);
	/* A renewal seen restarts the clock. */
	json_object_set_new(json_object_get(other, "spec"), "renewTime", json_string("t2"));
	assert_int_equal(sop_lease_decide(other, "me", 11002, 15, &obs), SOP_LEASE_WAIT);
	assert_int_equal(sop_lease_decide(other, "me", 20000, 15, &obs), SOP_LEASE_WAIT);

	/* Writes: a take by a new holder counts a transition and sets acquireTime; a renew does not. */
	json_object_set_new(other, "metadata", json_pack("{s:s}", "resourceVersion", "7"));
	json_t *taken = sop_lease_build(other, SOP_LEASE_TAKE, "ns", "l", "me", 15, "T");
	json_t *sp = json_object_get(taken, "spec");
	assert_string_equal(json_string_value(json_object_get(sp, "holderIdentity")), "me");
	assert_string_equal(json_string_value(json_object_get(sp, "acquireTime")), "T");
	assert_string_equal(json_string_value(json_object_get(sp, "renewTime")), "T");
	assert_int_equal(json_integer_value(json_object_get(sp, "leaseTransitions")), 1);
	assert_int_equal(json_integer_value(json_object_get(sp, "leaseDurationSeconds")), 15);
	assert_string_equal(json_string_value(json_object_get(json_object_get(taken, "metadata"), "resourceVersion")), "7");
	json_t *renewed = sop_lease_build(taken, SOP_LEASE_RENEW, "ns", "l", "me", 15, "T2");
	sp = json_object_get(renewed, "spec");
	assert_string_equal(json_string_value(json_object_get(sp, "acquireTime")), "T");
	assert_string_equal(json_string_value(json_object_get(sp, "renewTime")), "T2");
	assert_int_equal(json_integer_value(json_object_get(sp, "leaseTransitions")), 1);
	json_t *created = sop_lease_build(NULL, SOP_LEASE_CREATE, "ns", "l", "me", 15, "T");
	assert_string_equal(json_string_value(json_object_get(json_object_get(created, "metadata"), "namespace")), "ns");
	assert_int_equal(json_integer_value(json_object_get(json_object_get(created, "spec"), "leaseTransitions")), 0);
	json_t *rel = sop_lease_release(renewed, "T3");
	sp = json_object_get(rel, "spec");
	assert_string_equal(json_string_value(json_object_get(sp, "holderIdentity")), "");
	assert_int_equal(json_integer_value(json_object_get(sp, "leaseDurationSeconds")), 1);
	char mt[40];
	sop_micro_time(mt);
	assert_int_equal(strlen(mt), 27);
	assert_int_equal(mt[26], 'Z');
	json_decref(rel);
	json_decref(created);
	json_decref(renewed);
	json_decref(taken);
	json_decref(mine);
	json_decref(freed);
	json_decref(other);
}

static void test_queue(void **st)
{
	(void)st;
	struct sop_queue q;
	sop_queue_init(&q);
	sop_queue_add(&q, "a/x", 0);
	sop_queue_add(&q, "a/y", 5000);
	sop_queue_add(&q, "a/x", 3000); /* keeps the earlier time */
	assert_int_equal(sop_queue_len(&q), 2);
	char *k = sop_queue_pop(&q, 100);
	assert_string_equal(k, "a/x");
	free(k);
	int64_t t0 = sl_now_ms();
	assert_null(sop_queue_pop(&q, 150)); /* a/y is not due */
	assert_true(sl_now_ms() - t0 >= 140);
	sop_queue_add(&q, "a/y", 0); /* an event moves it forward */
	k = sop_queue_pop(&q, 100);
	assert_string_equal(k, "a/y");
	free(k);
	sop_queue_add(&q, "b/z", 50);
	k = sop_queue_pop(&q, 1000);
	assert_string_equal(k, "b/z");
	free(k);
	sop_queue_close(&q);
	assert_null(sop_queue_pop(&q, 1000));
	sop_queue_destroy(&q);
}

static void test_http_request_line(void **st)
{
	(void)st;
	char m[16], p[64];
	const char *r = "GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n";
	assert_int_equal(sop_http_request_line(r, strlen(r), m, sizeof(m), p, sizeof(p)), 0);
	assert_string_equal(m, "GET");
	assert_string_equal(p, "/metrics");
	static const char *bad[] = { "GET /x\r\n", "GET x HTTP/1.1\r\n", "/x HTTP/1.1\r\n", "GET /x HTTP/2\r\n",
				     "GET /x HTTP/1.1", "TOOLONGMETHODNAMEXX /x HTTP/1.1\r\n" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(sop_http_request_line(bad[i], strlen(bad[i]), m, sizeof(m), p, sizeof(p)), -1);
	/* Methods are upper-case tokens: a NUL or a lower-case letter is refused. */
	static const char nul[] = "\0HEAD /readyz HTTP/1.1\n";
	assert_int_equal(sop_http_request_line(nul, sizeof(nul) - 1, m, sizeof(m), p, sizeof(p)), -1);
	r = "get /healthz HTTP/1.1\r\n";
	assert_int_equal(sop_http_request_line(r, strlen(r), m, sizeof(m), p, sizeof(p)), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_watch_events),  cmocka_unit_test(test_linebuf),
		cmocka_unit_test(test_kubeconfig),    cmocka_unit_test(test_base64),
		cmocka_unit_test(test_incluster),     cmocka_unit_test(test_backoff),
		cmocka_unit_test(test_lease_rules),   cmocka_unit_test(test_queue),
		cmocka_unit_test(test_http_request_line),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
