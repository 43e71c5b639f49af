/* Reading a Sporelet object: field types, bounds and defaults, with errors naming the field. */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "oci/ref.h"
#include "sop_sporelet.h"

bool sop_dns_label_ok(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > 63)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'))
			return false;
	}
	return s[0] != '-' && s[n - 1] != '-';
}

int sop_object_key(json_t *obj, char *out, size_t cap)
{
	json_t *md = json_object_get(obj, "metadata");
	const char *ns = json_string_value(json_object_get(md, "namespace"));
	const char *name = json_string_value(json_object_get(md, "name"));
	if (!ns || !name)
		return -1;
	int n = snprintf(out, cap, "%s/%s", ns, name);
	return n < 0 || (size_t)n >= cap ? -1 : 0;
}

/* Optional member of type `type` (a json_is_* predicate); absent and null both mean "not set". */
static int opt_member(json_t *o, const char *key, const char *where, int (*is)(const json_t *),
		      const char *tname, json_t **out, sl_error_t *err)
{
	json_t *v = o ? json_object_get(o, key) : NULL;
	*out = NULL;
	if (!v || json_is_null(v))
		return 0;
	if (!is(v))
		return sl_error_set(err, SL_E_INVALID, "%s.%s: not %s", where, key, tname);
	*out = v;
	return 0;
}

static int is_obj(const json_t *j) { return json_is_object(j); }
static int is_arr(const json_t *j) { return json_is_array(j); }
static int is_str(const json_t *j) { return json_is_string(j); }

static int check_string_map(json_t *m, const char *where, sl_error_t *err)
{
	const char *k;
	json_t *v;
	if (!m)
		return 0;
	json_object_foreach(m, k, v) {
		if (!json_is_string(v))
			return sl_error_set(err, SL_E_INVALID, "%s[%s]: not a string", where, k);
	}
	return 0;
}

static int check_env(json_t *env, const char *where, sl_error_t *err)
{
	size_t i;
	json_t *e;
	if (!env)
		return 0;
	json_array_foreach(env, i, e) {
		if (!json_is_object(e) || !json_is_string(json_object_get(e, "name")) ||
		    !*json_string_value(json_object_get(e, "name")))
			return sl_error_set(err, SL_E_INVALID, "%s[%zu]: not an EnvVar with a name", where, i);
		json_t *v = json_object_get(e, "value");
		if (v && !json_is_string(v))
			return sl_error_set(err, SL_E_INVALID, "%s[%zu].value: not a string", where, i);
	}
	return 0;
}

static int check_fork_env(json_t *env, sl_error_t *err)
{
	size_t i, j;
	json_t *e, *x;
	if (!env)
		return 0;
	json_array_foreach(env, i, e) {
		const char *name = json_string_value(json_object_get(e, "name"));
		if (!json_is_object(e) || !name || !*name)
			return sl_error_set(err, SL_E_INVALID, "spec.fork.env[%zu]: needs a name", i);
		json_t *value = json_object_get(e, "value");
		json_t *values = json_object_get(e, "values");
		if ((value != NULL) == (values != NULL))
			return sl_error_set(err, SL_E_INVALID, "spec.fork.env[%zu] (%s): needs exactly one of value, values",
					    i, name);
		if (value && !json_is_string(value))
			return sl_error_set(err, SL_E_INVALID, "spec.fork.env[%zu].value: not a string", i);
		if (values) {
			if (!json_is_array(values) || json_array_size(values) == 0)
				return sl_error_set(err, SL_E_INVALID, "spec.fork.env[%zu].values: not a non-empty list", i);
			json_array_foreach(values, j, x) {
				if (!json_is_string(x))
					return sl_error_set(err, SL_E_INVALID, "spec.fork.env[%zu].values[%zu]: not a string",
							    i, j);
			}
		}
	}
	return 0;
}

/* Replaces every {index}, {name} and (when hostname is given) {hostname}
 * in pattern. */
static int expand(const char *pattern, const char *name, const char *hostname, int64_t index, char *out,
		  size_t cap)
{
	size_t o = 0;
	char num[24];
	snprintf(num, sizeof(num), "%lld", (long long)index);
	for (const char *p = pattern; *p;) {
		const char *sub = NULL;
		if (strncmp(p, "{index}", 7) == 0) {
			sub = num;
			p += 7;
		} else if (strncmp(p, "{name}", 6) == 0) {
			sub = name;
			p += 6;
		} else if (hostname && strncmp(p, "{hostname}", 10) == 0) {
			sub = hostname;
			p += 10;
		}
		if (sub) {
			size_t n = strlen(sub);
			if (o + n >= cap)
				return -1;
			memcpy(out + o, sub, n);
			o += n;
		} else {
			if (o + 1 >= cap)
				return -1;
			out[o++] = *p++;
		}
	}
	out[o] = 0;
	return 0;
}

int sop_hostname(const struct sop_sporelet *s, int64_t index, char *out, size_t cap, sl_error_t *err)
{
	char show[SL_SHOW_BUF];
	if (!s->hostname_pattern)
		return sl_error_set(err, SL_E_INVALID, "spec.fork.hostnamePattern: not set");
	if (expand(s->hostname_pattern, s->name, NULL, index, out, cap) < 0 || !sop_dns_label_ok(out)) {
		sl_show(s->hostname_pattern, strlen(s->hostname_pattern), show);
		return sl_error_set(err, SL_E_INVALID,
				    "spec.fork.hostnamePattern \"%s\": replica %lld's hostname is not a DNS-1123 label "
				    "(1-63 of a-z, 0-9, '-')", show, (long long)index);
	}
	return 0;
}

/* Expands a fork env "value" pattern; exposed through the pod builder. */
int sop_expand_value(const char *pattern, const char *name, const char *hostname, int64_t index, char *out,
		     size_t cap);
int sop_expand_value(const char *pattern, const char *name, const char *hostname, int64_t index, char *out,
		     size_t cap)
{
	return expand(pattern, name, hostname ? hostname : "", index, out, cap);
}

int sop_pinned_image(const char *spore, const char *digest, char *out, size_t cap, sl_error_t *err)
{
	size_t n = strlen(spore);
	if (digest) {
		const char *at = strchr(spore, '@');
		if (at)
			n = (size_t)(at - spore);
		const char *slash = memrchr(spore, '/', n);
		const char *colon = memrchr(spore, ':', n);
		if (colon && (!slash || colon > slash))
			n = (size_t)(colon - spore); /* the tag goes; a registry port stays */
	}
	int w = digest ? snprintf(out, cap, "%.*s@%s", (int)n, spore, digest) : snprintf(out, cap, "%s", spore);
	if (w < 0 || (size_t)w >= cap)
		return sl_error_set(err, SL_E_LIMIT, "spec.spore: the image reference is too long");
	return 0;
}

int sop_sporelet_parse(json_t *obj, struct sop_sporelet *s, sl_error_t *err)
{
	char show[SL_SHOW_BUF];
	memset(s, 0, sizeof(*s));
	if (!json_is_object(obj))
		return sl_error_set(err, SL_E_INVALID, "Sporelet: not a JSON object");
	const char *kind = json_string_value(json_object_get(obj, "kind"));
	if (kind && strcmp(kind, SOP_KIND) != 0) {
		sl_show(kind, strlen(kind), show);
		return sl_error_set(err, SL_E_INVALID, "Sporelet: kind is \"%s\"", show);
	}
	json_t *md = json_object_get(obj, "metadata");
	if (!json_is_object(md))
		return sl_error_set(err, SL_E_INVALID, "Sporelet: no metadata");
	s->namespace_ = json_string_value(json_object_get(md, "namespace"));
	s->name = json_string_value(json_object_get(md, "name"));
	s->uid = json_string_value(json_object_get(md, "uid"));
	s->resource_version = json_string_value(json_object_get(md, "resourceVersion"));
	if (!s->namespace_ || !*s->namespace_ || !s->name || !s->uid || !*s->uid)
		return sl_error_set(err, SL_E_INVALID, "Sporelet: metadata needs namespace, name and uid");
	if (!sop_dns_label_ok(s->name)) {
		sl_show(s->name, strlen(s->name), show);
		return sl_error_set(err, SL_E_INVALID, "metadata.name \"%s\": not a DNS-1123 label of at most %d bytes",
				    show, SOP_MAX_NAME);
	}
	json_t *gen = json_object_get(md, "generation");
	if (gen && !json_is_integer(gen))
		return sl_error_set(err, SL_E_INVALID, "metadata.generation: not an integer");
	s->generation = gen ? json_integer_value(gen) : 0;
	json_t *dt = json_object_get(md, "deletionTimestamp");
	s->deleting = dt && !json_is_null(dt);

	json_t *st = json_object_get(obj, "status");
	s->status = json_is_object(st) ? st : NULL;

	json_t *spec = json_object_get(obj, "spec");
	if (!json_is_object(spec))
		return sl_error_set(err, SL_E_INVALID, "spec: missing or not an object");
	json_t *spore = json_object_get(spec, "spore");
	if (!json_is_string(spore) || !*json_string_value(spore))
		return sl_error_set(err, SL_E_INVALID, "spec.spore: missing or not a string");
	s->spore = json_string_value(spore);
	struct oci_ref ref;
	sl_error_t rerr = NULL;
	if (oci_ref_parse(s->spore, &ref, &rerr) < 0) {
		int rc = sl_error_set(err, SL_E_INVALID, "spec.spore: %s", sl_error_msg(rerr));
		sl_error_free(&rerr);
		return rc;
	}
	s->spore_has_digest = ref.has_digest;
	if (ref.has_digest)
		sl_digest_format(&ref.digest, s->spore_digest);

	json_t *rep = json_object_get(spec, "replicas");
	if (!rep || json_is_null(rep))
		s->replicas = 1;
	else if (!json_is_integer(rep))
		return sl_error_set(err, SL_E_INVALID, "spec.replicas: not an integer");
	else
		s->replicas = json_integer_value(rep);
	if (s->replicas < 0 || s->replicas > SOP_MAX_REPLICAS)
		return sl_error_set(err, SL_E_INVALID, "spec.replicas: %lld is outside 0..%d", (long long)s->replicas,
				    SOP_MAX_REPLICAS);

	if (opt_member(spec, "command", "spec", is_arr, "a list", &s->command, err) < 0 ||
	    opt_member(spec, "env", "spec", is_arr, "a list", &s->env, err) < 0 ||
	    opt_member(spec, "resources", "spec", is_obj, "an object", &s->resources, err) < 0)
		return -1;
	size_t i;
	json_t *x;
	if (s->command) {
		json_array_foreach(s->command, i, x) {
			if (!json_is_string(x))
				return sl_error_set(err, SL_E_INVALID, "spec.command[%zu]: not a string", i);
		}
	}
	if (check_env(s->env, "spec.env", err) < 0)
		return -1;

	json_t *fork, *tmpl, *hp;
	if (opt_member(spec, "fork", "spec", is_obj, "an object", &fork, err) < 0 ||
	    opt_member(fork, "hostnamePattern", "spec.fork", is_str, "a string", &hp, err) < 0 ||
	    opt_member(fork, "env", "spec.fork", is_arr, "a list", &s->fork_env, err) < 0 ||
	    check_fork_env(s->fork_env, err) < 0)
		return -1;
	s->hostname_pattern = hp ? json_string_value(hp) : NULL;
	if (s->hostname_pattern) {
		/* The widest index gives the longest name: check it and index 0. */
		char host[128];
		int64_t widest = s->replicas > 0 ? s->replicas - 1 : 0;
		if (sop_hostname(s, 0, host, sizeof(host), err) < 0 || sop_hostname(s, widest, host, sizeof(host), err) < 0)
			return -1;
	}

	if (opt_member(spec, "template", "spec", is_obj, "an object", &tmpl, err) < 0 ||
	    opt_member(tmpl, "labels", "spec.template", is_obj, "an object", &s->labels, err) < 0 ||
	    opt_member(tmpl, "annotations", "spec.template", is_obj, "an object", &s->annotations, err) < 0 ||
	    opt_member(tmpl, "nodeSelector", "spec.template", is_obj, "an object", &s->node_selector, err) < 0 ||
	    opt_member(tmpl, "tolerations", "spec.template", is_arr, "a list", &s->tolerations, err) < 0 ||
	    opt_member(tmpl, "affinity", "spec.template", is_obj, "an object", &s->affinity, err) < 0 ||
	    check_string_map(s->labels, "spec.template.labels", err) < 0 ||
	    check_string_map(s->annotations, "spec.template.annotations", err) < 0 ||
	    check_string_map(s->node_selector, "spec.template.nodeSelector", err) < 0)
		return -1;
	return 0;
}
