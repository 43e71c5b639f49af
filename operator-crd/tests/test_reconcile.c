/* Unit tests of the reconcile core: pods to create and delete, their fields, the policies and the status. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "sl/json.h"
#include "sop_reconcile.h"

#define DIGEST "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define DIGEST2 "sha256:fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"
#define UID "11111111-2222-3333-4444-555555555555"

static json_t *J(const char *txt)
{
	json_error_t e;
	json_t *j = json_loads(txt, 0, &e);
	if (!j)
		fail_msg("bad test JSON: %s: %s", e.text, txt);
	return j;
}

/* A Sporelet with replicas n and spore ref; extra spec members merged in. */
static json_t *sporelet(int n, const char *spore, const char *extra_spec)
{
	json_t *o = json_pack("{s:s, s:s, s:{s:s, s:s, s:s, s:I, s:s}, s:{s:s, s:i}}", "apiVersion", SOP_API_VERSION,
			      "kind", "Sporelet", "metadata", "name", "app", "namespace", "ns1", "uid", UID, "generation",
			      (json_int_t)4, "resourceVersion", "100", "spec", "spore", spore, "replicas", n);
	if (extra_spec) {
		json_t *x = J(extra_spec);
		json_object_update(json_object_get(o, "spec"), x);
		json_decref(x);
	}
	return o;
}

static json_t *pod(const char *name, const char *index, const char *uid, bool ready, const char *phase)
{
	json_t *p = json_pack("{s:{s:s, s:s, s:s, s:s, s:{s:s, s:s}, s:[{s:s, s:s, s:s, s:s, s:b}]}, s:{s:s, s:[{s:s, s:s}]}}",
			      "metadata", "name", name, "namespace", "ns1", "uid", name, "creationTimestamp",
			      "2026-01-01T00:00:00Z", "labels", SOP_LABEL_NAME, "app", SOP_LABEL_REPLICA, index,
			      "ownerReferences", "apiVersion", SOP_API_VERSION, "kind", "Sporelet", "name", "app", "uid", uid,
			      "controller", 1, "status", "phase", phase ? phase : "Running", "conditions", "type", "Ready",
			      "status", ready ? "True" : "False");
	return p;
}

struct run {
	struct sop_reconcile_out out;
};

static void reconcile(json_t *s, json_t *pods, enum sop_resolve_state rs, const char *digest, const char *now,
		      struct sop_reconcile_out *out)
{
	struct sop_reconcile_in in = { .sporelet = s, .pods = pods, .resolve = rs, .digest = digest, .now = now };
	sl_error_t err = NULL;
	if (sop_reconcile(&in, out, &err) < 0)
		fail_msg("reconcile: %s", sl_error_msg(err));
}

static const char *cond(json_t *status, const char *type, const char *field)
{
	size_t i;
	json_t *c;
	json_array_foreach(json_object_get(status, "conditions"), i, c) {
		if (strcmp(json_string_value(json_object_get(c, "type")), type) == 0)
			return json_string_value(json_object_get(c, field));
	}
	return NULL;
}

static const char *sget(json_t *o, const char *path)
{
	/* "a.b.c" through objects; keys with dots are not used here. */
	char buf[256];
	snprintf(buf, sizeof(buf), "%s", path);
	json_t *cur = o;
	for (char *tok = strtok(buf, "."); tok && cur; tok = strtok(NULL, "."))
		cur = json_object_get(cur, tok);
	return json_string_value(cur);
}

static json_t *ann(json_t *p)
{
	return json_object_get(json_object_get(p, "metadata"), "annotations");
}

static json_t *labels(json_t *p)
{
	return json_object_get(json_object_get(p, "metadata"), "labels");
}

static void test_create_three_full_fields(void **st)
{
	(void)st;
	json_t *s = sporelet(3, "localhost:5000/spores/app@" DIGEST,
			     "{\"command\":[\"/bin/app\",\"--serve\"],"
			     "\"env\":[{\"name\":\"MODE\",\"value\":\"prod\"},{\"name\":\"SHARD\",\"value\":\"none\"}],"
			     "\"resources\":{\"limits\":{\"memory\":\"256Mi\"}},"
			     "\"fork\":{\"hostnamePattern\":\"{name}-host-{index}\","
			     "\"env\":[{\"name\":\"SHARD\",\"values\":[\"a\",\"b\"]},{\"name\":\"ID\",\"value\":\"r{index}@{hostname}\"}]},"
			     "\"template\":{\"labels\":{\"team\":\"x\",\"sporelet.ai/name\":\"evil\"},"
			     "\"annotations\":{\"note\":\"y\"},\"nodeSelector\":{\"sporelet.ai/node\":\"true\"},"
			     "\"tolerations\":[{\"key\":\"k\",\"operator\":\"Exists\"}],"
			     "\"affinity\":{\"nodeAffinity\":{}}}}");
	json_t *pods = json_array();
	struct sop_reconcile_out out;
	reconcile(s, pods, SOP_RESOLVE_PINNED, NULL, "2026-01-01T00:00:00Z", &out);
	assert_int_equal(json_array_size(out.create), 3);
	assert_int_equal(json_array_size(out.remove), 0);
	for (int i = 0; i < 3; i++) {
		json_t *p = json_array_get(out.create, (size_t)i);
		char name[32], idx[8], host[32];
		snprintf(name, sizeof(name), "app-%d", i);
		snprintf(idx, sizeof(idx), "%d", i);
		snprintf(host, sizeof(host), "app-host-%d", i);
		assert_string_equal(sget(p, "kind"), "Pod");
		assert_string_equal(sget(p, "metadata.name"), name);
		assert_string_equal(sget(p, "metadata.namespace"), "ns1");
		json_t *own = json_array_get(json_object_get(json_object_get(p, "metadata"), "ownerReferences"), 0);
		assert_string_equal(sget(own, "uid"), UID);
		assert_string_equal(sget(own, "kind"), "Sporelet");
		assert_string_equal(sget(own, "apiVersion"), "sporelet.ai/v1alpha1");
		assert_true(json_is_true(json_object_get(own, "controller")));
		assert_true(json_is_true(json_object_get(own, "blockOwnerDeletion")));
		assert_string_equal(json_string_value(json_object_get(labels(p), SOP_LABEL_NAME)), "app");
		assert_string_equal(json_string_value(json_object_get(labels(p), SOP_LABEL_REPLICA)), idx);
		assert_string_equal(json_string_value(json_object_get(labels(p), "team")), "x");
		assert_string_equal(json_string_value(json_object_get(ann(p), SOP_ANN_SPORE)),
				    "localhost:5000/spores/app@" DIGEST);
		assert_string_equal(json_string_value(json_object_get(ann(p), SOP_ANN_REPLICA)), idx);
		assert_string_equal(json_string_value(json_object_get(ann(p), SOP_ANN_GENERATION)), "4");
		assert_string_equal(json_string_value(json_object_get(ann(p), "note")), "y");
		assert_int_equal(strlen(json_string_value(json_object_get(ann(p), SOP_ANN_TEMPLATE_HASH))), 16);
		json_t *spec = json_object_get(p, "spec");
		assert_string_equal(sget(spec, "runtimeClassName"), "sporelet");
		assert_string_equal(sget(spec, "hostname"), host);
		assert_string_equal(json_string_value(json_object_get(json_object_get(spec, "nodeSelector"),
								      "sporelet.ai/node")), "true");
		assert_int_equal(json_array_size(json_object_get(spec, "tolerations")), 1);
		assert_non_null(json_object_get(json_object_get(spec, "affinity"), "nodeAffinity"));
		json_t *c = json_array_get(json_object_get(spec, "containers"), 0);
		assert_string_equal(sget(c, "image"), "localhost:5000/spores/app@" DIGEST);
		assert_string_equal(json_string_value(json_array_get(json_object_get(c, "command"), 1)), "--serve");
		assert_string_equal(sget(c, "resources.limits.memory"), "256Mi");
		/* MODE from spec.env; SHARD overridden by fork values (round robin); ID from the pattern. */
		json_t *env = json_object_get(c, "env");
		assert_int_equal(json_array_size(env), 3);
		const char *shard = NULL, *id = NULL, *mode = NULL;
		size_t k;
		json_t *e;
		json_array_foreach(env, k, e) {
			const char *n = sget(e, "name");
			if (!strcmp(n, "SHARD"))
				shard = sget(e, "value");
			if (!strcmp(n, "ID"))
				id = sget(e, "value");
			if (!strcmp(n, "MODE"))
				mode = sget(e, "value");
		}
		char rid[48];
		snprintf(rid, sizeof(rid), "r%d@app-host-%d", i, i);
		assert_string_equal(mode, "prod");
		assert_string_equal(shard, i % 2 ? "b" : "a");
		assert_string_equal(id, rid);
	}
	/* Status before any pod exists. */
	assert_int_equal(json_integer_value(json_object_get(out.status, "replicas")), 0);
	assert_int_equal(json_integer_value(json_object_get(out.status, "readyReplicas")), 0);
	assert_int_equal(json_integer_value(json_object_get(out.status, "observedGeneration")), 4);
	assert_string_equal(sget(out.status, "selector"), "sporelet.ai/name=app");
	assert_string_equal(sget(out.status, "resolvedDigest"), DIGEST);
	assert_string_equal(cond(out.status, "Ready", "status"), "False");
	assert_string_equal(cond(out.status, "Resolved", "reason"), "Pinned");
	assert_string_equal(cond(out.status, "Degraded", "status"), "False");
	assert_true(out.status_changed);
	sop_reconcile_out_free(&out);
	json_decref(s);
	json_decref(pods);
}

static void test_tag_resolved_pins_and_keeps_port(void **st)
{
	(void)st;
	json_t *s = sporelet(1, "localhost:5000/spores/app:v1", NULL);
	json_t *pods = json_array();
	struct sop_reconcile_out out;
	reconcile(s, pods, SOP_RESOLVE_OK, DIGEST, "t0", &out);
	assert_int_equal(json_array_size(out.create), 1);
	json_t *c = json_array_get(json_object_get(json_object_get(json_array_get(out.create, 0), "spec"), "containers"), 0);
	assert_string_equal(sget(c, "image"), "localhost:5000/spores/app@" DIGEST);
	assert_string_equal(sget(out.status, "resolvedDigest"), DIGEST);
	assert_string_equal(cond(out.status, "Resolved", "status"), "True");
	assert_string_equal(cond(out.status, "Resolved", "reason"), "Resolved");
	sop_reconcile_out_free(&out);

	/* Disabled: the tag is used as written, Resolved Unknown. */
	reconcile(s, pods, SOP_RESOLVE_DISABLED, NULL, "t0", &out);
	c = json_array_get(json_object_get(json_object_get(json_array_get(out.create, 0), "spec"), "containers"), 0);
	assert_string_equal(sget(c, "image"), "localhost:5000/spores/app:v1");
	assert_string_equal(cond(out.status, "Resolved", "status"), "Unknown");
	assert_null(json_object_get(out.status, "resolvedDigest"));
	sop_reconcile_out_free(&out);
	json_decref(s);
	json_decref(pods);
}

static void test_resolve_failed_creates_nothing(void **st)
{
	(void)st;
	json_t *s = sporelet(3, "reg.example/spores/app:v1", NULL);
	json_t *pods = json_array();
	json_array_append_new(pods, pod("app-0", "0", UID, true, NULL));
	struct sop_reconcile_in in = { .sporelet = s, .pods = pods, .resolve = SOP_RESOLVE_FAILED,
				       .resolve_message = "registry reg.example: 503", .now = "t0" };
	struct sop_reconcile_out out;
	sl_error_t err = NULL;
	assert_int_equal(sop_reconcile(&in, &out, &err), 0);
	assert_int_equal(json_array_size(out.create), 0);
	assert_int_equal(json_array_size(out.remove), 0);
	assert_string_equal(cond(out.status, "Resolved", "status"), "False");
	assert_string_equal(cond(out.status, "Resolved", "message"), "registry reg.example: 503");
	assert_string_equal(cond(out.status, "Degraded", "status"), "True");
	assert_string_equal(cond(out.status, "Degraded", "reason"), "ResolveFailed");
	assert_int_equal(json_integer_value(json_object_get(out.status, "replicas")), 1);
	sop_reconcile_out_free(&out);
	json_decref(s);
	json_decref(pods);
}

static void test_replicas_zero(void **st)
{
	(void)st;
	json_t *s = sporelet(0, "r.io/a/b@" DIGEST, NULL);
	json_t *pods = json_array();
	struct sop_reconcile_out out;
	reconcile(s, pods, SOP_RESOLVE_PINNED, NULL, "t0", &out);
	assert_int_equal(json_array_size(out.create), 0);
	assert_int_equal(json_array_size(out.remove), 0);
	assert_string_equal(cond(out.status, "Ready", "status"), "True");
	assert_string_equal(cond(out.status, "Ready", "message"), "0 of 0 replicas ready");
	sop_reconcile_out_free(&out);

	json_array_append_new(pods, pod("app-0", "0", UID, true, NULL));
	json_array_append_new(pods, pod("app-1", "1", UID, true, NULL));
	reconcile(s, pods, SOP_RESOLVE_PINNED, NULL, "t0", &out);
	assert_int_equal(json_array_size(out.remove), 2);
	assert_string_equal(sget(json_array_get(out.remove, 0), "name"), "app-1");
	assert_string_equal(sget(json_array_get(out.remove, 1), "name"), "app-0");
	assert_string_equal(sget(json_array_get(out.remove, 0), "reason"), "ScaleDown");
	assert_string_equal(sget(json_array_get(out.remove, 0), "uid"), "app-1");
	assert_string_equal(cond(out.status, "Ready", "status"), "False"); /* 2 still there */
	sop_reconcile_out_free(&out);
	json_decref(s);
	json_decref(pods);
}

static void test_scale_down_highest_first(void **st)
{
	(void)st;
	json_t *s = sporelet(1, "r.io/a/b@" DIGEST, NULL);
	json_t *pods = json_array();
	json_array_append_new(pods, pod("app-1", "1", UID, true, NULL));
	json_array_append_new(pods, pod("app-0", "0", UID, true, NULL));
	json_array_append_new(pods, pod("app-2", "2", UID, false, NULL));
	struct sop_reconcile_out out;
	reconcile(s, pods, SOP_RESOLVE_PINNED, NULL, "t0", &out);
	assert_int_equal(json_array_size(out.create), 0);
	assert_int_equal(json_array_size(out.remove), 2);
	assert_string_equal(sget(json_array_get(out.remove, 0), "name"), "app-2");
	assert_string_equal(sget(json_array_get(out.remove, 1), "name"), "app-1");
	assert_int_equal(json_integer_value(json_object_get(out.status, "replicas")), 3);
	assert_int_equal(json_integer_value(json_object_get(out.status, "readyReplicas")), 2);
	sop_reconcile_out_free(&out);
	json_decref(s);
	json_decref(pods);
}

static void test_gap_filled(void **st)
{
	(void)st;
	json_t *s = sporelet(4, "r.io/a/b@" DIGEST, NULL);
	json_t *pods = json_array();
	json_array_append_new(pods, pod("app-0", "0", UID, true, NULL));
	json_array_append_new(pods, pod("app-2", "2", UID, true, NULL));
	struct sop_reconcile_out out;
	reconcile(s, pods, SOP_RESOLVE_PINNED, NULL, "t0", &out);
	assert_int_equal(json_array_size(out.create), 2);
	assert_string_equal(sget(json_array_get(out.create, 0), "metadata.name"), "app-1");
	assert_string_equal(sget(json_array_get(out.create, 1), "metadata.name"), "app-3");
	assert_int_equal(json_array_size(out.remove), 0);
	sop_reconcile_out_free(&out);
	json_decref(s);
	json_decref(pods);
}

static void test_duplicates_of_an_index(void **st)
{
	(void)st;
	json_t *s = sporelet(2, "r.io/a/b@" DIGEST, NULL);
	json_t *pods = json_array();
	json_array_append_new(pods, pod("app-0", "0", UID, true, NULL));
	json_array_append_new(pods, pod("app-1", "1", UID, false, NULL));
	json_array_append_new(pods, pod("app-1-extra", "1", UID, true, NULL));
	json_array_append_new(pods, pod("app-0-extra", "0", UID, true, NULL));
	struct sop_reconcile_out out;
	reconcile(s, pods, SOP_RESOLVE_PINNED, NULL, "t0", &out);
	assert_int_equal(json_array_size(out.create), 0);
	assert_int_equal(json_array_size(out.remove), 2);
	/* Index 1: the Ready one stays although its name is not canonical. Index 0: both Ready, the canonical stays. */
	assert_string_equal(sget(json_array_get(out.remove, 0), "name"), "app-1");
	assert_string_equal(sget(json_array_get(out.remove, 0), "reason"), "Duplicate");
	assert_string_equal(sget(json_array_get(out.remove, 1), "name"), "app-0-extra");
	sop_reconcile_out_free(&out);
	/* Same answer whatever the order of the list. */
	json_t *rev = json_array();
	for (size_t i = json_array_size(pods); i-- > 0;)
		json_array_append(rev, json_array_get(pods, i));
	reconcile(s, rev, SOP_RESOLVE_PINNED, NULL, "t0", &out);
	assert_int_equal(json_array_size(out.remove), 2);
	assert_string_equal(sget(json_array_get(out.remove, 0), "name"), "app-1");
	assert_string_equal(sget(json_array_get(out.remove, 1), "name"), "app-0-extra");
	sop_reconcile_out_free(&out);
	json_decref(rev);
	json_decref(s);
	json_decref(pods);
}

static void test_deleting_pods_not_counted(void **st)
{
	(void)st;
	json_t *s = sporelet(2, "r.io/a/b@" DIGEST, NULL);
	json_t *pods = json_array();
	json_array_append_new(pods, pod("app-0", "0", UID, true, NULL));
	json_t *p1 = pod("app-1", "1", UID, true, NULL);
	json_object_set_new(json_object_get(p1, "metadata"), "deletionTimestamp", json_string("2026-01-01T00:00:10Z"));
	json_array_append_new(pods, p1);
	struct sop_reconcile_out out;
	reconcile(s, pods, SOP_RESOLVE_PINNED, NULL, "t0", &out);
	/* Not a replica, but its name is taken: wait rather than collide. */
	assert_int_equal(json_array_size(out.create), 0);
	assert_int_equal(json_array_size(out.remove), 0);
	assert_true(out.waiting);
	assert_int_equal(json_integer_value(json_object_get(out.status, "replicas")), 1);
	assert_int_equal(json_integer_value(json_object_get(out.status, "readyReplicas")), 1);
	assert_string_equal(cond(out.status, "Ready", "status"), "False");
	sop_reconcile_out_free(&out);
	json_decref(s);
	json_decref(pods);
}

static void test_failed_pod_replaced(void **st)
{
	(void)st;
	json_t *s = sporelet(3, "r.io/a/b@" DIGEST, NULL);
	json_t *pods = json_array();
	json_array_append_new(pods, pod("app-0", "0", UID, true, NULL));
	json_array_append_new(pods, pod("app-1", "1", UID, false, "Failed"));
	json_array_append_new(pods, pod("app-2", "2", UID, true, NULL));
	struct sop_reconcile_out out;
	reconcile(s, pods, SOP_RESOLVE_PINNED, NULL, "t0", &out);
	assert_int_equal(json_array_size(out.remove), 1);
	assert_string_equal(sget(json_array_get(out.remove, 0), "name"), "app-1");
	assert_string_equal(sget(json_array_get(out.remove, 0), "reason"), "Failed");
	/* The new app-1 comes once the failed one is gone (same name). */
	assert_int_equal(json_array_size(out.create), 0);
	assert_true(out.waiting);
	assert_string_equal(cond(out.status, "Degraded", "status"), "True");
	assert_string_equal(cond(out.status, "Degraded", "reason"), "PodsFailed");
	assert_int_equal(json_integer_value(json_object_get(out.status, "replicas")), 2);
	sop_reconcile_out_free(&out);
	/* After it is gone: created again. */
	json_array_remove(pods, 1);
	reconcile(s, pods, SOP_RESOLVE_PINNED, NULL, "t0", &out);
	assert_int_equal(json_array_size(out.create), 1);
	assert_string_equal(sget(json_array_get(out.create, 0), "metadata.name"), "app-1");
	assert_string_equal(cond(out.status, "Degraded", "status"), "False");
	sop_reconcile_out_free(&out);
	json_decref(s);
	json_decref(pods);
}

/* Pods made by a first reconcile, all Ready. */
static json_t *pods_from(json_t *s, enum sop_resolve_state rs, const char *digest)
{
	struct sop_reconcile_out out;
	json_t *none = json_array();
	reconcile(s, none, rs, digest, "t0", &out);
	json_decref(none);
	json_t *pods = json_array();
	size_t i;
	json_t *p;
	json_array_foreach(out.create, i, p) {
		json_t *c = json_deep_copy(p);
		json_object_set_new(json_object_get(c, "metadata"), "uid", json_sprintf("uid-%zu", i));
		json_object_set_new(c, "status", J("{\"phase\":\"Running\",\"conditions\":[{\"type\":\"Ready\",\"status\":\"True\"}]}"));
		json_array_append_new(pods, c);
	}
	sop_reconcile_out_free(&out);
	return pods;
}

static void test_rollout_one_at_a_time(void **st)
{
	(void)st;
	json_t *s = sporelet(3, "r.io/a/b:v1", NULL);
	json_t *pods = pods_from(s, SOP_RESOLVE_OK, DIGEST);
	struct sop_reconcile_out out;
	/* Same digest: nothing to do, and Ready. */
	reconcile(s, pods, SOP_RESOLVE_OK, DIGEST, "t1", &out);
	assert_int_equal(json_array_size(out.create) + json_array_size(out.remove), 0);
	assert_string_equal(cond(out.status, "Ready", "status"), "True");
	sop_reconcile_out_free(&out);
	/* The tag moved: the highest index goes first, one pod only. */
	reconcile(s, pods, SOP_RESOLVE_OK, DIGEST2, "t1", &out);
	assert_int_equal(json_array_size(out.create), 0);
	assert_int_equal(json_array_size(out.remove), 1);
	assert_string_equal(sget(json_array_get(out.remove, 0), "name"), "app-2");
	assert_string_equal(sget(json_array_get(out.remove, 0), "reason"), "Outdated");
	sop_reconcile_out_free(&out);
	/* While a replica is not Ready, no further replacement. */
	json_t *p0 = json_array_get(pods, 0);
	json_object_set_new(p0, "status", J("{\"phase\":\"Running\",\"conditions\":[{\"type\":\"Ready\",\"status\":\"False\"}]}"));
	reconcile(s, pods, SOP_RESOLVE_OK, DIGEST2, "t1", &out);
	assert_int_equal(json_array_size(out.remove), 0);
	sop_reconcile_out_free(&out);
	/* Scaling alone never marks pods outdated. */
	json_object_set_new(p0, "status", J("{\"phase\":\"Running\",\"conditions\":[{\"type\":\"Ready\",\"status\":\"True\"}]}"));
	json_object_set_new(json_object_get(s, "spec"), "replicas", json_integer(5));
	reconcile(s, pods, SOP_RESOLVE_OK, DIGEST, "t1", &out);
	assert_int_equal(json_array_size(out.create), 2);
	assert_int_equal(json_array_size(out.remove), 0);
	sop_reconcile_out_free(&out);
	json_decref(s);
	json_decref(pods);
}

static void test_foreign_and_bad_pods(void **st)
{
	(void)st;
	json_t *s = sporelet(1, "r.io/a/b@" DIGEST, NULL);
	json_t *pods = json_array();
	json_array_append_new(pods, pod("app-0", "0", "other-uid", true, NULL)); /* not ours */
	json_array_append_new(pods, pod("app-x", "01", UID, true, NULL));        /* not a canonical index */
	json_t *noowner = pod("app-5", "5", UID, true, NULL);
	json_object_del(json_object_get(noowner, "metadata"), "ownerReferences");
	json_array_append_new(pods, noowner);
	struct sop_reconcile_out out;
	reconcile(s, pods, SOP_RESOLVE_PINNED, NULL, "t0", &out);
	assert_int_equal(json_array_size(out.remove), 1);
	assert_string_equal(sget(json_array_get(out.remove, 0), "name"), "app-x");
	assert_string_equal(sget(json_array_get(out.remove, 0), "reason"), "BadIndex");
	/* app-0 of another owner holds the name: the create will get 409 and wait; we still ask. */
	assert_int_equal(json_array_size(out.create), 1);
	assert_int_equal(json_integer_value(json_object_get(out.status, "replicas")), 0);
	sop_reconcile_out_free(&out);
	json_decref(s);
	json_decref(pods);
}

static void test_conditions_keep_transition_time(void **st)
{
	(void)st;
	json_t *s = sporelet(2, "r.io/a/b@" DIGEST, NULL);
	json_t *pods = pods_from(s, SOP_RESOLVE_PINNED, NULL);
	json_object_set_new(json_array_get(pods, 1), "status",
			    J("{\"phase\":\"Running\",\"conditions\":[{\"type\":\"Ready\",\"status\":\"False\"}]}"));
	struct sop_reconcile_out out;
	reconcile(s, pods, SOP_RESOLVE_PINNED, NULL, "2026-01-01T00:00:00Z", &out);
	assert_true(out.status_changed);
	assert_string_equal(cond(out.status, "Ready", "status"), "False");
	json_object_set(s, "status", out.status);
	sop_reconcile_out_free(&out);

	/* Nothing changed: same status, old times, no write. */
	reconcile(s, pods, SOP_RESOLVE_PINNED, NULL, "2026-01-01T00:05:00Z", &out);
	assert_false(out.status_changed);
	assert_string_equal(cond(out.status, "Ready", "lastTransitionTime"), "2026-01-01T00:00:00Z");
	sop_reconcile_out_free(&out);

	/* Both Ready: Ready flips (new time); Resolved and Degraded keep theirs. */
	json_object_set_new(json_array_get(pods, 1), "status",
			    J("{\"phase\":\"Running\",\"conditions\":[{\"type\":\"Ready\",\"status\":\"True\"}]}"));
	reconcile(s, pods, SOP_RESOLVE_PINNED, NULL, "2026-01-01T00:10:00Z", &out);
	assert_true(out.status_changed);
	assert_string_equal(cond(out.status, "Ready", "status"), "True");
	assert_string_equal(cond(out.status, "Ready", "reason"), "AllReplicasReady");
	assert_string_equal(cond(out.status, "Ready", "lastTransitionTime"), "2026-01-01T00:10:00Z");
	assert_string_equal(cond(out.status, "Resolved", "lastTransitionTime"), "2026-01-01T00:00:00Z");
	assert_string_equal(cond(out.status, "Degraded", "lastTransitionTime"), "2026-01-01T00:00:00Z");
	assert_int_equal(json_integer_value(json_object_get(out.status, "readyReplicas")), 2);
	json_object_set(s, "status", out.status);
	sop_reconcile_out_free(&out);

	/* A new generation: observedGeneration follows, times stay. */
	json_object_set_new(json_object_get(s, "metadata"), "generation", json_integer(5));
	reconcile(s, pods, SOP_RESOLVE_PINNED, NULL, "2026-01-01T00:20:00Z", &out);
	assert_true(out.status_changed);
	assert_int_equal(json_integer_value(json_object_get(out.status, "observedGeneration")), 5);
	assert_string_equal(cond(out.status, "Ready", "lastTransitionTime"), "2026-01-01T00:10:00Z");
	sop_reconcile_out_free(&out);
	json_decref(s);
	json_decref(pods);
}

static void test_last_error_degrades(void **st)
{
	(void)st;
	json_t *s = sporelet(0, "r.io/a/b@" DIGEST, NULL);
	json_t *pods = json_array();
	struct sop_reconcile_in in = { .sporelet = s, .pods = pods, .resolve = SOP_RESOLVE_PINNED,
				       .last_error = "POST /api/v1/namespaces/ns1/pods: 403 Forbidden", .now = "t" };
	struct sop_reconcile_out out;
	sl_error_t err = NULL;
	assert_int_equal(sop_reconcile(&in, &out, &err), 0);
	assert_string_equal(cond(out.status, "Degraded", "reason"), "ReconcileError");
	assert_string_equal(cond(out.status, "Degraded", "message"), "POST /api/v1/namespaces/ns1/pods: 403 Forbidden");
	sop_reconcile_out_free(&out);
	json_decref(s);
	json_decref(pods);
}

static void expect_invalid(const char *spore, int replicas, const char *extra, const char *needle)
{
	json_t *s = sporelet(replicas, spore, extra);
	json_t *pods = json_array();
	json_array_append_new(pods, pod("app-0", "0", UID, true, NULL));
	struct sop_reconcile_out out;
	reconcile(s, pods, SOP_RESOLVE_DISABLED, NULL, "t", &out);
	assert_int_equal(json_array_size(out.create), 0);
	assert_int_equal(json_array_size(out.remove), 0);
	assert_string_equal(cond(out.status, "Degraded", "reason"), "InvalidSpec");
	assert_string_equal(cond(out.status, "Ready", "status"), "False");
	const char *msg = cond(out.status, "Degraded", "message");
	if (!strstr(msg, needle))
		fail_msg("message \"%s\" lacks \"%s\"", msg, needle);
	assert_int_equal(json_integer_value(json_object_get(out.status, "replicas")), 1);
	sop_reconcile_out_free(&out);
	json_decref(s);
	json_decref(pods);
}

static void test_invalid_specs(void **st)
{
	(void)st;
	expect_invalid("r.io/a/b@" DIGEST, -1, NULL, "spec.replicas");
	expect_invalid("r.io/a/b@" DIGEST, 10001, NULL, "spec.replicas");
	expect_invalid("R.io/A/B:v1", 1, NULL, "spec.spore");
	expect_invalid("r.io/a/b@sha256:12", 1, NULL, "spec.spore");
	expect_invalid("r.io/a/b:v1", 1, "{\"fork\":{\"hostnamePattern\":\"Bad_{index}\"}}", "hostnamePattern");
	expect_invalid("r.io/a/b:v1", 1, "{\"command\":[\"a\",1]}", "spec.command[1]");
	expect_invalid("r.io/a/b:v1", 1, "{\"fork\":{\"env\":[{\"name\":\"X\"}]}}", "spec.fork.env[0]");
	expect_invalid("r.io/a/b:v1", 1, "{\"fork\":{\"env\":[{\"name\":\"X\",\"values\":[]}]}}", "values");
	expect_invalid("r.io/a/b:v1", 1, "{\"template\":{\"labels\":{\"a\":1}}}", "spec.template.labels");
	expect_invalid("r.io/a/b:v1", 1, "{\"env\":[{\"value\":\"x\"}]}", "spec.env[0]");
	/* A pattern whose longest index overflows 63 bytes. */
	expect_invalid("r.io/a/b:v1", 100,
		       "{\"fork\":{\"hostnamePattern\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa{index}\"}}",
		       "hostnamePattern");
}

static void test_deleting_sporelet_and_bad_input(void **st)
{
	(void)st;
	json_t *s = sporelet(3, "r.io/a/b@" DIGEST, NULL);
	json_object_set_new(json_object_get(s, "metadata"), "deletionTimestamp", json_string("2026-01-01T00:00:00Z"));
	json_t *pods = json_array();
	struct sop_reconcile_out out;
	reconcile(s, pods, SOP_RESOLVE_PINNED, NULL, "t", &out);
	assert_int_equal(json_array_size(out.create) + json_array_size(out.remove), 0);
	assert_false(out.status_changed);
	sop_reconcile_out_free(&out);

	struct sop_reconcile_in in = { .sporelet = pods, .pods = pods, .now = "t" };
	sl_error_t err = NULL;
	assert_int_equal(sop_reconcile(&in, &out, &err), -1);
	sl_error_free(&err);
	in.sporelet = s;
	in.pods = s;
	assert_int_equal(sop_reconcile(&in, &out, &err), -1);
	sl_error_free(&err);
	json_object_del(json_object_get(s, "metadata"), "uid");
	in.pods = pods;
	assert_int_equal(sop_reconcile(&in, &out, &err), -1);
	sl_error_free(&err);
	json_decref(s);
	json_decref(pods);
}

static void test_pinned_image_and_hash(void **st)
{
	(void)st;
	char out[256];
	sl_error_t err = NULL;
	assert_int_equal(sop_pinned_image("localhost:5000/a/b:v1", DIGEST, out, sizeof(out), &err), 0);
	assert_string_equal(out, "localhost:5000/a/b@" DIGEST);
	assert_int_equal(sop_pinned_image("localhost:5000/a/b", DIGEST, out, sizeof(out), &err), 0);
	assert_string_equal(out, "localhost:5000/a/b@" DIGEST);
	assert_int_equal(sop_pinned_image("a/b:v1@" DIGEST2, DIGEST, out, sizeof(out), &err), 0);
	assert_string_equal(out, "a/b@" DIGEST);
	assert_int_equal(sop_pinned_image("app", NULL, out, sizeof(out), &err), 0);
	assert_string_equal(out, "app");
	assert_int_equal(sop_pinned_image("a/b:v1", DIGEST, out, 10, &err), -1);
	sl_error_free(&err);

	json_t *a = sporelet(1, "r.io/a/b:v1", "{\"command\":[\"x\"]}");
	json_t *b = sporelet(7, "r.io/a/b:v1", "{\"command\":[\"x\"]}");
	json_t *c = sporelet(1, "r.io/a/b:v1", "{\"command\":[\"y\"]}");
	struct sop_sporelet sa, sb, sc;
	assert_int_equal(sop_sporelet_parse(a, &sa, &err), 0);
	assert_int_equal(sop_sporelet_parse(b, &sb, &err), 0);
	assert_int_equal(sop_sporelet_parse(c, &sc, &err), 0);
	char ha[17], hb[17], hc[17], hd[17];
	sop_template_hash(&sa, "img", ha, &err);
	sop_template_hash(&sb, "img", hb, &err);
	sop_template_hash(&sc, "img", hc, &err);
	sop_template_hash(&sa, "img2", hd, &err);
	assert_string_equal(ha, hb);
	assert_string_not_equal(ha, hc);
	assert_string_not_equal(ha, hd);
	json_decref(a);
	json_decref(b);
	json_decref(c);
}

/* {hostname} in a fork env value is the replica's hostname; without a
 * pattern it is the pod's name; the runtime class can be renamed. */
static void test_identity_and_runtime_class(void **st)
{
	(void)st;
	json_t *s = sporelet(1, "r.io/a/b@" DIGEST,
			     "{\"fork\":{\"hostnamePattern\":\"{name}-{index}\","
			     "\"env\":[{\"name\":\"WHO\",\"value\":\"{name}/{hostname}\"}]}}");
	json_object_set_new(json_object_get(s, "metadata"), "name", json_string("web-v2"));
	struct sop_reconcile_in in = { .sporelet = s, .pods = json_array(), .resolve = SOP_RESOLVE_PINNED,
				       .now = "2026-01-01T00:00:00Z", .runtime_class = "kata-spore" };
	struct sop_reconcile_out out;
	sl_error_t err = NULL;
	if (sop_reconcile(&in, &out, &err) < 0)
		fail_msg("reconcile: %s", sl_error_msg(err));
	json_t *p = json_array_get(out.create, 0);
	json_t *spec = json_object_get(p, "spec");
	assert_string_equal(sget(spec, "hostname"), "web-v2-0");
	assert_string_equal(sget(spec, "runtimeClassName"), "kata-spore");
	json_t *e = json_array_get(json_object_get(json_array_get(json_object_get(spec, "containers"), 0), "env"), 0);
	assert_string_equal(sget(e, "value"), "web-v2/web-v2-0");
	sop_reconcile_out_free(&out);
	json_decref(in.pods);
	json_decref(s);

	s = sporelet(1, "r.io/a/b@" DIGEST, "{\"fork\":{\"env\":[{\"name\":\"WHO\",\"value\":\"{hostname}\"}]}}");
	in = (struct sop_reconcile_in){ .sporelet = s, .pods = json_array(), .resolve = SOP_RESOLVE_PINNED,
					.now = "2026-01-01T00:00:00Z" };
	if (sop_reconcile(&in, &out, &err) < 0)
		fail_msg("reconcile: %s", sl_error_msg(err));
	spec = json_object_get(json_array_get(out.create, 0), "spec");
	assert_null(json_object_get(spec, "hostname"));
	assert_string_equal(sget(spec, "runtimeClassName"), "sporelet");
	e = json_array_get(json_object_get(json_array_get(json_object_get(spec, "containers"), 0), "env"), 0);
	assert_string_equal(sget(e, "value"), "app-0");
	sop_reconcile_out_free(&out);
	json_decref(in.pods);
	json_decref(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_create_three_full_fields),
		cmocka_unit_test(test_tag_resolved_pins_and_keeps_port),
		cmocka_unit_test(test_resolve_failed_creates_nothing),
		cmocka_unit_test(test_replicas_zero),
		cmocka_unit_test(test_scale_down_highest_first),
		cmocka_unit_test(test_gap_filled),
		cmocka_unit_test(test_duplicates_of_an_index),
		cmocka_unit_test(test_deleting_pods_not_counted),
		cmocka_unit_test(test_failed_pod_replaced),
		cmocka_unit_test(test_rollout_one_at_a_time),
		cmocka_unit_test(test_foreign_and_bad_pods),
		cmocka_unit_test(test_conditions_keep_transition_time),
		cmocka_unit_test(test_last_error_degrades),
		cmocka_unit_test(test_invalid_specs),
		cmocka_unit_test(test_deleting_sporelet_and_bad_input),
		cmocka_unit_test(test_pinned_image_and_hash),
		cmocka_unit_test(test_identity_and_runtime_class),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
