/* The Pod of one Sporelet replica, its template hash, and predicates over Pod objects. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sl/digest.h"
#include "sl/json.h"
#include "sop_reconcile.h"

int sop_expand_value(const char *pattern, const char *name, const char *hostname, int64_t index, char *out,
		     size_t cap);

bool sop_pod_ready(json_t *pod)
{
	json_t *conds = json_object_get(json_object_get(pod, "status"), "conditions");
	size_t i;
	json_t *c;
	json_array_foreach(conds, i, c) {
		const char *t = json_string_value(json_object_get(c, "type"));
		const char *st = json_string_value(json_object_get(c, "status"));
		if (t && st && strcmp(t, "Ready") == 0)
			return strcmp(st, "True") == 0;
	}
	return false;
}

bool sop_pod_terminal(json_t *pod)
{
	const char *phase = json_string_value(json_object_get(json_object_get(pod, "status"), "phase"));
	return phase && (strcmp(phase, "Failed") == 0 || strcmp(phase, "Succeeded") == 0);
}

bool sop_pod_deleting(json_t *pod)
{
	json_t *dt = json_object_get(json_object_get(pod, "metadata"), "deletionTimestamp");
	return dt && !json_is_null(dt);
}

bool sop_owned_by(json_t *obj, const char *uid)
{
	json_t *refs = json_object_get(json_object_get(obj, "metadata"), "ownerReferences");
	size_t i;
	json_t *r;
	json_array_foreach(refs, i, r) {
		const char *u = json_string_value(json_object_get(r, "uid"));
		if (json_is_true(json_object_get(r, "controller")) && u && strcmp(u, uid) == 0)
			return true;
	}
	return false;
}

int64_t sop_pod_index(json_t *pod)
{
	const char *v = json_string_value(json_object_get(json_object_get(json_object_get(pod, "metadata"), "labels"),
							  SOP_LABEL_REPLICA));
	if (!v || !*v || strlen(v) > 9)
		return -1;
	/* Canonical decimal only: "01" is not replica 1, so one index has one spelling. */
	if (v[0] == '0' && v[1])
		return -1;
	int64_t n = 0;
	for (const char *p = v; *p; p++) {
		if (*p < '0' || *p > '9')
			return -1;
		n = n * 10 + (*p - '0');
	}
	return n;
}

/* A deep copy of v, or a fresh empty container when v is NULL. */
static json_t *copy_or(json_t *v, json_t *fresh)
{
	if (!v)
		return fresh;
	json_decref(fresh);
	return json_deep_copy(v);
}

int sop_template_hash(const struct sop_sporelet *s, const char *image, char out[17], sl_error_t *err)
{
	/* Only what reaches the Pod; replicas is left out so scaling never
	 * replaces pods. Keys are dumped sorted, so the hash is stable. */
	json_t *h = json_pack("{s:s, s:O?, s:O?, s:O?, s:s?, s:O?, s:O?, s:O?, s:O?, s:O?, s:O?}", "image", image,
			      "command", s->command, "env", s->env, "resources", s->resources, "hostnamePattern",
			      s->hostname_pattern, "forkEnv", s->fork_env, "labels", s->labels, "annotations",
			      s->annotations, "nodeSelector", s->node_selector, "tolerations", s->tolerations,
			      "affinity", s->affinity);
	if (!h)
		return sl_error_set(err, SL_E_NOMEM, "template hash: out of memory");
	size_t len;
	char *txt = sl_json_dump(h, &len);
	json_decref(h);
	if (!txt)
		return sl_error_set(err, SL_E_NOMEM, "template hash: out of memory");
	sl_digest d;
	sl_sha256(txt, len, &d);
	free(txt);
	char hex[SL_DIGEST_HEXLEN + 1];
	sl_digest_hex(&d, hex);
	memcpy(out, hex, 16);
	out[16] = 0;
	return 0;
}

/* spec.env, then spec.fork.env for this replica: a later entry with the
 * same name replaces an earlier one, as the user wrote the fork list to
 * override per replica. {hostname} in a value is the replica's. */
static int build_env(const struct sop_sporelet *s, int64_t index, const char *hostname, json_t *env,
		     sl_error_t *err)
{
	size_t i;
	json_t *e;
	json_array_foreach(s->env, i, e)
		json_array_append_new(env, json_deep_copy(e));
	json_array_foreach(s->fork_env, i, e) {
		const char *name = json_string_value(json_object_get(e, "name"));
		json_t *values = json_object_get(e, "values");
		char buf[4096];
		const char *val;
		if (values) {
			val = json_string_value(json_array_get(values, (size_t)index % json_array_size(values)));
		} else {
			if (sop_expand_value(json_string_value(json_object_get(e, "value")), s->name, hostname, index,
					     buf, sizeof(buf)) < 0)
				return sl_error_set(err, SL_E_LIMIT, "spec.fork.env[%zu] (%s): value longer than %zu bytes",
						    i, name, sizeof(buf) - 1);
			val = buf;
		}
		size_t j;
		json_t *prev;
		json_array_foreach(env, j, prev) {
			const char *pn = json_string_value(json_object_get(prev, "name"));
			if (pn && strcmp(pn, name) == 0) {
				json_array_remove(env, j);
				break;
			}
		}
		json_array_append_new(env, json_pack("{s:s, s:s}", "name", name, "value", val));
	}
	return 0;
}

json_t *sop_pod_build(const struct sop_sporelet *s, int64_t index, const char *image, const char *hash,
		      const char *runtime_class, sl_error_t *err)
{
	char name[96], idx[24], gen[24], host[128];
	snprintf(name, sizeof(name), "%s-%lld", s->name, (long long)index);
	snprintf(idx, sizeof(idx), "%lld", (long long)index);
	snprintf(gen, sizeof(gen), "%lld", (long long)s->generation);

	_cleanup_json_ json_t *labels = copy_or(s->labels, json_object());
	_cleanup_json_ json_t *ann = copy_or(s->annotations, json_object());
	/* Ours win over the template's: the selector and the shim depend on them. */
	json_object_set_new(labels, SOP_LABEL_NAME, json_string(s->name));
	json_object_set_new(labels, SOP_LABEL_REPLICA, json_string(idx));
	json_object_set_new(ann, SOP_ANN_SPORE, json_string(image));
	json_object_set_new(ann, SOP_ANN_REPLICA, json_string(idx));
	json_object_set_new(ann, SOP_ANN_GENERATION, json_string(gen));
	json_object_set_new(ann, SOP_ANN_TEMPLATE_HASH, json_string(hash));

	/* Without a pattern the pod's hostname is its name (Kubernetes' rule). */
	if (s->hostname_pattern) {
		if (sop_hostname(s, index, host, sizeof(host), err) < 0)
			return NULL;
	} else {
		snprintf(host, sizeof(host), "%s", name);
	}
	_cleanup_json_ json_t *env = json_array();
	if (build_env(s, index, host, env, err) < 0)
		return NULL;
	json_t *container = json_pack("{s:s, s:s}", "name", SOP_CONTAINER_NAME, "image", image);
	if (s->command)
		json_object_set_new(container, "command", json_deep_copy(s->command));
	if (json_array_size(env))
		json_object_set(container, "env", env);
	if (s->resources)
		json_object_set_new(container, "resources", json_deep_copy(s->resources));

	json_t *spec = json_pack("{s:s, s:s, s:[o]}", "runtimeClassName",
				 runtime_class ? runtime_class : SOP_RUNTIME_CLASS, "restartPolicy", "Always",
				 "containers", container);
	if (s->hostname_pattern)
		json_object_set_new(spec, "hostname", json_string(host));
	if (s->node_selector)
		json_object_set_new(spec, "nodeSelector", json_deep_copy(s->node_selector));
	if (s->tolerations)
		json_object_set_new(spec, "tolerations", json_deep_copy(s->tolerations));
	if (s->affinity)
		json_object_set_new(spec, "affinity", json_deep_copy(s->affinity));

	json_t *owner = json_pack("{s:s, s:s, s:s, s:s, s:b, s:b}", "apiVersion", SOP_API_VERSION, "kind", SOP_KIND,
				  "name", s->name, "uid", s->uid, "controller", 1, "blockOwnerDeletion", 1);
	json_t *pod = json_pack("{s:s, s:s, s:{s:s, s:s, s:O, s:O, s:[o]}, s:o}", "apiVersion", "v1", "kind", "Pod",
				"metadata", "name", name, "namespace", s->namespace_, "labels", labels, "annotations",
				ann, "ownerReferences", owner, "spec", spec);
	if (!pod)
		sl_error_set(err, SL_E_NOMEM, "pod %s: out of memory", name);
	return pod;
}
