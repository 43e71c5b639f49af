/* Strict reading of the OCI runtime spec fields the shim needs (config.json, exec process). */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "shim_spec.h"
#include "sl/file.h"
#include "sl/json.h"

static char *dup_str(const char *s, const char *what, const char *field, sl_error_t *err)
{
	size_t n = strlen(s);
	if (n > SHIM_SPEC_MAX_STR) {
		sl_error_set(err, SL_E_LIMIT, "%s: %s longer than %u bytes", what, field, SHIM_SPEC_MAX_STR);
		return NULL;
	}
	char *d = strdup(s);
	if (!d)
		sl_error_set(err, SL_E_NOMEM, "%s: out of memory", what);
	return d;
}

static void free_list(char **l)
{
	for (size_t i = 0; l && l[i]; i++)
		free(l[i]);
	free(l);
}

/* A JSON array of strings into a NULL-terminated list; env entries must be
 * KEY=VALUE with a non-empty KEY. */
static int str_list(json_t *arr, const char *what, const char *field, bool env, size_t min, char ***out,
		    sl_error_t *err)
{
	size_t n = json_array_size(arr);
	if (n < min || n > SHIM_SPEC_MAX_LIST)
		return sl_error_set(err, SL_E_INVALID, "%s: %s must have %zu..%u entries, has %zu", what, field, min,
				    SHIM_SPEC_MAX_LIST, n);
	char **l = calloc(n + 1, sizeof(char *));
	if (!l)
		return sl_error_set(err, SL_E_NOMEM, "%s: out of memory", what);
	for (size_t i = 0; i < n; i++) {
		json_t *v = json_array_get(arr, i);
		if (!json_is_string(v)) {
			free_list(l);
			return sl_error_set(err, SL_E_INVALID, "%s: %s[%zu] is not a string", what, field, i);
		}
		const char *s = json_string_value(v);
		if (strlen(s) != json_string_length(v)) {
			free_list(l);
			return sl_error_set(err, SL_E_INVALID, "%s: %s[%zu] contains a NUL byte", what, field, i);
		}
		if (env && (s[0] == '=' || !strchr(s, '='))) {
			free_list(l);
			return sl_error_set(err, SL_E_INVALID, "%s: %s[%zu] is not KEY=VALUE", what, field, i);
		}
		if (!(l[i] = dup_str(s, what, field, err))) {
			free_list(l);
			return -1;
		}
	}
	*out = l;
	return 0;
}

static int get_u32(json_t *o, const char *key, const char *what, uint32_t *out, sl_error_t *err)
{
	uint64_t v = 0;
	if (sl_json_get_u64_opt(o, key, what, &v, err) < 0)
		return -1;
	if (v > UINT32_MAX)
		return sl_error_set(err, SL_E_INVALID, "%s: %s out of range", what, key);
	*out = (uint32_t)v;
	return 0;
}

static int process_from(json_t *p, const char *what, struct shim_process_spec *out, sl_error_t *err)
{
	struct shim_process_spec ps = {0};
	json_t *args = NULL, *env = NULL, *user = NULL;
	const char *cwd = "/";
	if (!json_is_object(p))
		return sl_error_set(err, SL_E_INVALID, "%s: process is not an object", what);
	if (sl_json_get_arr(p, "args", what, &args, err) < 0 || str_list(args, what, "process.args", false, 1, &ps.argv, err) < 0)
		goto fail;
	if (!ps.argv[0][0]) {
		sl_error_set(err, SL_E_INVALID, "%s: process.args[0] is empty", what);
		goto fail;
	}
	json_t *e = json_object_get(p, "env");
	if (e && !json_is_null(e)) {
		if (sl_json_get_arr(p, "env", what, &env, err) < 0 ||
		    str_list(env, what, "process.env", true, 0, &ps.env, err) < 0)
			goto fail;
	} else if (!(ps.env = calloc(1, sizeof(char *)))) {
		sl_error_set(err, SL_E_NOMEM, "%s: out of memory", what);
		goto fail;
	}
	if (sl_json_get_str_opt(p, "cwd", what, &cwd, err) < 0)
		goto fail;
	if (cwd[0] != '/') {
		sl_error_set(err, SL_E_INVALID, "%s: process.cwd must be absolute", what);
		goto fail;
	}
	if (!(ps.cwd = dup_str(cwd, what, "process.cwd", err)))
		goto fail;
	json_t *t = json_object_get(p, "terminal");
	if (t && !json_is_boolean(t)) {
		sl_error_set(err, SL_E_INVALID, "%s: process.terminal is not a boolean", what);
		goto fail;
	}
	ps.terminal = t && json_is_true(t);
	json_t *u = json_object_get(p, "user");
	if (u) {
		if (sl_json_get_obj(p, "user", what, &user, err) < 0 || get_u32(user, "uid", what, &ps.uid, err) < 0 ||
		    get_u32(user, "gid", what, &ps.gid, err) < 0)
			goto fail;
	}
	*out = ps;
	return 0;
fail:
	shim_process_spec_free(&ps);
	return -1;
}

int shim_process_parse(const char *buf, size_t len, const char *what, struct shim_process_spec *out,
		       sl_error_t *err)
{
	_cleanup_json_ json_t *j = NULL;
	if (len > SHIM_SPEC_MAX_BYTES)
		return sl_error_set(err, SL_E_LIMIT, "%s: larger than %u bytes", what, SHIM_SPEC_MAX_BYTES);
	if (sl_json_parse(buf, len, what, &j, err) < 0)
		return -1;
	return process_from(j, what, out, err);
}

int shim_spec_parse(const char *buf, size_t len, const char *what, struct shim_spec *out, sl_error_t *err)
{
	_cleanup_json_ json_t *j = NULL;
	struct shim_spec s = {0};
	if (len > SHIM_SPEC_MAX_BYTES)
		return sl_error_set(err, SL_E_LIMIT, "%s: larger than %u bytes", what, SHIM_SPEC_MAX_BYTES);
	if (sl_json_parse(buf, len, what, &j, err) < 0)
		return -1;
	if (!json_is_object(j))
		return sl_error_set(err, SL_E_INVALID, "%s: not a JSON object", what);
	json_t *p = NULL, *ann = NULL;
	const char *host = NULL;
	if (sl_json_get_obj(j, "process", what, &p, err) < 0 || process_from(p, what, &s.process, err) < 0)
		return -1;
	if (sl_json_get_str_opt(j, "hostname", what, &host, err) < 0)
		goto fail;
	if (host && host[0]) {
		if (strlen(host) > 64) {
			sl_error_set(err, SL_E_INVALID, "%s: hostname longer than 64 bytes", what);
			goto fail;
		}
		if (!(s.hostname = strdup(host))) {
			sl_error_set(err, SL_E_NOMEM, "%s: out of memory", what);
			goto fail;
		}
	}
	json_t *lx = json_object_get(j, "linux");
	if (lx && json_is_object(lx)) {
		const char *cg = NULL;
		if (sl_json_get_str_opt(lx, "cgroupsPath", what, &cg, err) < 0)
			goto fail;
		if (cg && cg[0] && !(s.cgroups_path = dup_str(cg, what, "linux.cgroupsPath", err)))
			goto fail;
	}
	ann = json_object_get(j, "annotations");
	if (ann && !json_is_null(ann)) {
		if (!json_is_object(ann)) {
			sl_error_set(err, SL_E_INVALID, "%s: annotations is not an object", what);
			goto fail;
		}
		size_t n = json_object_size(ann);
		if (n > SHIM_SPEC_MAX_ANNOTATIONS) {
			sl_error_set(err, SL_E_LIMIT, "%s: more than %u annotations", what, SHIM_SPEC_MAX_ANNOTATIONS);
			goto fail;
		}
		s.annotations = calloc(n ? n : 1, sizeof(*s.annotations));
		if (!s.annotations) {
			sl_error_set(err, SL_E_NOMEM, "%s: out of memory", what);
			goto fail;
		}
		const char *k;
		json_t *v;
		json_object_foreach(ann, k, v) {
			if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v)) {
				sl_error_set(err, SL_E_INVALID, "%s: annotation %.100s is not a string", what, k);
				goto fail;
			}
			struct shim_annotation *a = &s.annotations[s.nannotations];
			a->key = dup_str(k, what, "annotation key", err);
			a->value = a->key ? dup_str(json_string_value(v), what, "annotation value", err) : NULL;
			if (a->key)
				s.nannotations++;
			if (!a->value)
				goto fail;
		}
	}
	*out = s;
	return 0;
fail:
	shim_spec_free(&s);
	return -1;
}

int shim_spec_load(const char *bundle, struct shim_spec *out, sl_error_t *err)
{
	char path[PATH_MAX];
	if ((size_t)snprintf(path, sizeof(path), "%s/config.json", bundle) >= sizeof(path))
		return sl_error_set(err, SL_E_INVALID, "bundle path too long: %.100s", bundle);
	char *buf = NULL;
	size_t len = 0;
	if (sl_read_path(path, SHIM_SPEC_MAX_BYTES, &buf, &len, err) < 0)
		return -1;
	int rc = shim_spec_parse(buf, len, path, out, err);
	free(buf);
	return rc;
}

const char *shim_spec_annotation(const struct shim_spec *s, const char *key)
{
	for (size_t i = 0; i < s->nannotations; i++)
		if (!strcmp(s->annotations[i].key, key))
			return s->annotations[i].value;
	return NULL;
}

void shim_process_spec_free(struct shim_process_spec *p)
{
	free_list(p->argv);
	free_list(p->env);
	free(p->cwd);
	memset(p, 0, sizeof(*p));
}

void shim_spec_free(struct shim_spec *s)
{
	shim_process_spec_free(&s->process);
	free(s->hostname);
	free(s->cgroups_path);
	for (size_t i = 0; i < s->nannotations; i++) {
		free(s->annotations[i].key);
		free(s->annotations[i].value);
	}
	free(s->annotations);
	memset(s, 0, sizeof(*s));
}
