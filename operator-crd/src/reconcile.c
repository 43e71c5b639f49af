/* Plans one Sporelet: which owned Pods to create and delete (scale, failures, duplicates, rollout) and its new status. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sl/json.h"
#include "sop_reconcile.h"

struct slot {
	json_t *pod; /* the kept pod of this index, or NULL */
};

struct plan {
	const struct sop_reconcile_in *in;
	struct sop_sporelet s;
	json_t *busy;   /* names held by terminating pods or pods deleted now: {name: true} */
	json_t *remove; /* [{name, uid, reason, index}] */
	int64_t live, ready, failed, terminating;
};

static const char *pod_name(json_t *pod)
{
	return json_string_value(json_object_get(json_object_get(pod, "metadata"), "name"));
}

static const char *pod_uid(json_t *pod)
{
	return json_string_value(json_object_get(json_object_get(pod, "metadata"), "uid"));
}

static const char *pod_created(json_t *pod)
{
	const char *t = json_string_value(json_object_get(json_object_get(pod, "metadata"), "creationTimestamp"));
	return t ? t : "";
}

static void plan_remove(struct plan *p, json_t *pod, int64_t index, const char *reason)
{
	const char *name = pod_name(pod), *uid = pod_uid(pod);
	json_t *r = json_pack("{s:s, s:s, s:I}", "name", name ? name : "", "reason", reason, "index", (json_int_t)index);
	if (uid)
		json_object_set_new(r, "uid", json_string(uid));
	json_array_append_new(p->remove, r);
	if (name)
		json_object_set_new(p->busy, name, json_true());
}

/* Which of two pods for one index stays: the Ready one, then the one with
 * the canonical name, then the older, then the lower name; deterministic,
 * so repeated reconciles agree. Returns true when a beats b. */
static bool keep_first(json_t *a, json_t *b, const char *canonical)
{
	bool ra = sop_pod_ready(a), rb = sop_pod_ready(b);
	if (ra != rb)
		return ra;
	const char *na = pod_name(a) ? pod_name(a) : "", *nb = pod_name(b) ? pod_name(b) : "";
	bool ca = strcmp(na, canonical) == 0, cb = strcmp(nb, canonical) == 0;
	if (ca != cb)
		return ca;
	int t = strcmp(pod_created(a), pod_created(b));
	if (t)
		return t < 0;
	return strcmp(na, nb) <= 0;
}

static int by_index_desc(const void *x, const void *y)
{
	json_int_t a = json_integer_value(json_object_get(*(json_t *const *)x, "index"));
	json_int_t b = json_integer_value(json_object_get(*(json_t *const *)y, "index"));
	return a < b ? 1 : a > b ? -1 : 0;
}

/* Highest index first: scale-down removes the newest replicas, as a StatefulSet does. */
static void sort_removes(json_t *arr)
{
	size_t n = json_array_size(arr);
	if (n < 2)
		return;
	json_t **v = calloc(n, sizeof(*v));
	if (!v)
		return;
	for (size_t i = 0; i < n; i++)
		v[i] = json_incref(json_array_get(arr, i));
	qsort(v, n, sizeof(*v), by_index_desc);
	json_array_clear(arr);
	for (size_t i = 0; i < n; i++)
		json_array_append_new(arr, v[i]);
	free(v);
}

static int set_conditions(json_t *status, json_t *old, const struct sop_sporelet *s, int64_t generation,
			  const char *now, const char *ready_st, const char *ready_reason, const char *ready_msg,
			  const char *res_st, const char *res_reason, const char *res_msg, const char *deg_st,
			  const char *deg_reason, const char *deg_msg)
{
	(void)s;
	json_t *oc = json_object_get(old, "conditions");
	if (sop_condition_set(status, oc, "Ready", ready_st, ready_reason, ready_msg, generation, now) < 0 ||
	    sop_condition_set(status, oc, "Resolved", res_st, res_reason, res_msg, generation, now) < 0 ||
	    sop_condition_set(status, oc, "Degraded", deg_st, deg_reason, deg_msg, generation, now) < 0)
		return -1;
	return 0;
}

/* Counts owned pods as they are now (before the planned actions). */
static void count_pods(const struct sop_reconcile_in *in, const char *uid, int64_t *live, int64_t *ready,
		       int64_t *failed, int64_t *terminating)
{
	size_t i;
	json_t *pod;
	*live = *ready = *failed = *terminating = 0;
	json_array_foreach(in->pods, i, pod) {
		if (!sop_owned_by(pod, uid))
			continue;
		if (sop_pod_deleting(pod))
			(*terminating)++;
		else if (sop_pod_terminal(pod))
			(*failed)++;
		else {
			(*live)++;
			if (sop_pod_ready(pod))
				(*ready)++;
		}
	}
}

static int invalid_status(const struct sop_reconcile_in *in, json_t *obj, const char *uid, const char *msg,
			  struct sop_reconcile_out *out, sl_error_t *err)
{
	json_t *md = json_object_get(obj, "metadata");
	json_t *old = json_object_get(obj, "status");
	int64_t gen = json_integer_value(json_object_get(md, "generation"));
	int64_t live, ready, failed, term;
	count_pods(in, uid, &live, &ready, &failed, &term);
	json_t *st = json_pack("{s:I, s:I, s:I}", "observedGeneration", (json_int_t)gen, "replicas", (json_int_t)live,
			       "readyReplicas", (json_int_t)ready);
	const char *name = json_string_value(json_object_get(md, "name"));
	if (name) {
		char sel[128];
		snprintf(sel, sizeof(sel), "%s=%s", SOP_LABEL_NAME, name);
		json_object_set_new(st, "selector", json_string(sel));
	}
	json_t *rd = json_object_get(old, "resolvedDigest");
	if (json_is_string(rd))
		json_object_set(st, "resolvedDigest", rd);
	out->status = st;
	if (set_conditions(st, old, NULL, gen, in->now, "False", "InvalidSpec", msg, "Unknown", "InvalidSpec", msg,
			   "True", "InvalidSpec", msg) < 0)
		return sl_error_set(err, SL_E_NOMEM, "status: out of memory");
	out->status_changed = !json_equal(st, old ? old : json_null());
	return 0;
}

void sop_reconcile_out_free(struct sop_reconcile_out *out)
{
	json_decref(out->create);
	json_decref(out->remove);
	json_decref(out->status);
	memset(out, 0, sizeof(*out));
}

static int plan_run(struct plan *p, struct sop_reconcile_out *out, sl_error_t *err)
{
	const struct sop_reconcile_in *in = p->in;
	struct sop_sporelet *s = &p->s;
	char image[1024], hash[17] = "";
	const char *digest = NULL;
	bool have_image = true;

	switch (in->resolve) {
	case SOP_RESOLVE_PINNED:
		if (!s->spore_has_digest)
			return sl_error_set(err, SL_E_INVALID, "reconcile: resolve state pinned, but spec.spore has no digest");
		digest = s->spore_digest;
		break;
	case SOP_RESOLVE_OK:
		if (!in->digest)
			return sl_error_set(err, SL_E_INVALID, "reconcile: resolve state ok without a digest");
		digest = in->digest;
		break;
	case SOP_RESOLVE_FAILED:
		/* No pod gets an image we could not pin: existing pods stay,
		 * nothing new starts until the registry answers. */
		have_image = s->spore_has_digest;
		digest = have_image ? s->spore_digest : NULL;
		break;
	case SOP_RESOLVE_DISABLED:
		digest = s->spore_has_digest ? s->spore_digest : NULL;
		break;
	}
	if (have_image) {
		if (sop_pinned_image(s->spore, digest, image, sizeof(image), err) < 0 ||
		    sop_template_hash(s, image, hash, err) < 0)
			return -1;
	}

	struct slot *slots = calloc((size_t)s->replicas + 1, sizeof(*slots));
	if (!slots)
		return sl_error_set(err, SL_E_NOMEM, "reconcile: out of memory");

	size_t i;
	json_t *pod;
	json_array_foreach(in->pods, i, pod) {
		if (!json_is_object(pod) || !sop_owned_by(pod, s->uid))
			continue;
		int64_t idx = sop_pod_index(pod);
		const char *name = pod_name(pod);
		if (sop_pod_deleting(pod)) {
			/* Going away already: not a replica, but its name is taken until it is gone. */
			p->terminating++;
			if (name)
				json_object_set_new(p->busy, name, json_true());
			continue;
		}
		if (idx < 0) {
			plan_remove(p, pod, -1, "BadIndex");
			continue;
		}
		if (sop_pod_terminal(pod)) {
			p->failed++;
			plan_remove(p, pod, idx, "Failed");
			continue;
		}
		p->live++;
		if (sop_pod_ready(pod))
			p->ready++;
		if (idx >= s->replicas) {
			plan_remove(p, pod, idx, "ScaleDown");
			continue;
		}
		char canonical[96];
		snprintf(canonical, sizeof(canonical), "%s-%lld", s->name, (long long)idx);
		struct slot *sl = &slots[idx];
		if (!sl->pod) {
			sl->pod = pod;
		} else if (keep_first(pod, sl->pod, canonical)) {
			plan_remove(p, sl->pod, idx, "Duplicate");
			sl->pod = pod;
		} else {
			plan_remove(p, pod, idx, "Duplicate");
		}
	}

	int64_t missing = 0, kept_ready = 0, kept = 0;
	for (int64_t idx = 0; idx < s->replicas; idx++) {
		if (slots[idx].pod) {
			kept++;
			if (sop_pod_ready(slots[idx].pod))
				kept_ready++;
			continue;
		}
		missing++;
		if (!have_image)
			continue;
		char canonical[96];
		snprintf(canonical, sizeof(canonical), "%s-%lld", s->name, (long long)idx);
		if (json_object_get(p->busy, canonical)) {
			out->waiting = true; /* the old pod of that name must be gone first */
			continue;
		}
		json_t *np = sop_pod_build(s, idx, image, hash, in->runtime_class, err);
		if (!np) {
			free(slots);
			return -1;
		}
		json_array_append_new(out->create, np);
	}

	/* Rollout: one outdated pod at a time, only while every replica is
	 * there and Ready and nothing else is being created or deleted (at most
	 * one replica unavailable because of a spec change). */
	if (have_image && missing == 0 && kept_ready == s->replicas && json_array_size(p->remove) == 0 &&
	    p->terminating == 0) {
		for (int64_t idx = s->replicas - 1; idx >= 0; idx--) {
			json_t *ann = json_object_get(json_object_get(slots[idx].pod, "metadata"), "annotations");
			const char *h = json_string_value(json_object_get(ann, SOP_ANN_TEMPLATE_HASH));
			if (!h || strcmp(h, hash) != 0) {
				plan_remove(p, slots[idx].pod, idx, "Outdated");
				break;
			}
		}
	}
	free(slots);
	sort_removes(p->remove);
	out->remove = json_incref(p->remove);

	/* Status, from the pods as observed now. */
	json_t *old = s->status;
	char sel[128], msg[600];
	snprintf(sel, sizeof(sel), "%s=%s", SOP_LABEL_NAME, s->name);
	json_t *st = json_pack("{s:I, s:I, s:I, s:s}", "observedGeneration", (json_int_t)s->generation, "replicas",
			       (json_int_t)p->live, "readyReplicas", (json_int_t)p->ready, "selector", sel);
	out->status = st;
	if (digest)
		json_object_set_new(st, "resolvedDigest", json_string(digest));
	else if (json_is_string(json_object_get(old, "resolvedDigest")))
		json_object_set(st, "resolvedDigest", json_object_get(old, "resolvedDigest"));

	bool all_ready = kept_ready == s->replicas && p->live == s->replicas;
	char ready_msg[128];
	snprintf(ready_msg, sizeof(ready_msg), "%lld of %lld replicas ready", (long long)kept_ready,
		 (long long)s->replicas);

	const char *res_st, *res_reason;
	char res_msg[512];
	switch (in->resolve) {
	case SOP_RESOLVE_PINNED:
		res_st = "True", res_reason = "Pinned";
		snprintf(res_msg, sizeof(res_msg), "spec.spore names digest %s", digest);
		break;
	case SOP_RESOLVE_OK:
		res_st = "True", res_reason = "Resolved";
		snprintf(res_msg, sizeof(res_msg), "%s is %s", s->spore, digest);
		break;
	case SOP_RESOLVE_FAILED:
		res_st = "False", res_reason = "ResolveFailed";
		snprintf(res_msg, sizeof(res_msg), "%s", in->resolve_message ? in->resolve_message : "lookup failed");
		break;
	default:
		res_st = "Unknown", res_reason = "ResolutionDisabled";
		snprintf(res_msg, sizeof(res_msg), "tags are not resolved: pods use spec.spore as written");
		break;
	}

	const char *deg_st = "False", *deg_reason = "AsExpected";
	snprintf(msg, sizeof(msg), "no failed pods and no errors");
	if (in->resolve == SOP_RESOLVE_FAILED) {
		deg_st = "True", deg_reason = "ResolveFailed";
		snprintf(msg, sizeof(msg), "%s", res_msg);
	} else if (p->failed > 0) {
		deg_st = "True", deg_reason = "PodsFailed";
		snprintf(msg, sizeof(msg), "%lld pod(s) failed and are being replaced", (long long)p->failed);
	} else if (in->last_error) {
		deg_st = "True", deg_reason = "ReconcileError";
		snprintf(msg, sizeof(msg), "%s", in->last_error);
	}
	if (set_conditions(st, old, s, s->generation, in->now, all_ready ? "True" : "False",
			   all_ready ? "AllReplicasReady" : "ReplicasNotReady", ready_msg, res_st, res_reason, res_msg,
			   deg_st, deg_reason, msg) < 0)
		return sl_error_set(err, SL_E_NOMEM, "status: out of memory");
	out->status_changed = !json_equal(st, old ? old : json_null());
	return 0;
}

int sop_reconcile(const struct sop_reconcile_in *in, struct sop_reconcile_out *out, sl_error_t *err)
{
	memset(out, 0, sizeof(*out));
	if (!json_is_object(in->sporelet))
		return sl_error_set(err, SL_E_INVALID, "reconcile: the Sporelet is not an object");
	if (!json_is_array(in->pods))
		return sl_error_set(err, SL_E_INVALID, "reconcile: the pod list is not an array");
	if (!in->now)
		return sl_error_set(err, SL_E_INVALID, "reconcile: no time given");
	json_t *md = json_object_get(in->sporelet, "metadata");
	const char *uid = json_string_value(json_object_get(md, "uid"));
	if (!uid || !json_is_string(json_object_get(md, "name")) || !json_is_string(json_object_get(md, "namespace")))
		return sl_error_set(err, SL_E_INVALID, "reconcile: the Sporelet has no namespace, name or uid");

	out->create = json_array();
	out->remove = NULL;
	struct plan p = { .in = in, .busy = json_object(), .remove = json_array() };
	int rc;
	sl_error_t perr = NULL;
	if (sop_sporelet_parse(in->sporelet, &p.s, &perr) < 0) {
		out->remove = json_array();
		rc = invalid_status(in, in->sporelet, uid, sl_error_msg(perr), out, err);
		sl_error_free(&perr);
	} else if (p.s.deleting) {
		/* The garbage collector removes the pods; nothing to write. */
		out->remove = json_array();
		out->status = p.s.status ? json_deep_copy(p.s.status) : json_object();
		rc = 0;
	} else {
		rc = plan_run(&p, out, err);
	}
	json_decref(p.busy);
	json_decref(p.remove);
	if (rc < 0)
		sop_reconcile_out_free(out);
	return rc;
}
