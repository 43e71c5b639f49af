/* A strict YAML-to-JSON reader over libyaml's event parser, for configuration files. */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "sl/yaml.h"

struct yrd {
	yaml_parser_t p;
	const char *what;
	size_t nodes;
};

static int fail_at(struct yrd *r, const yaml_event_t *ev, sl_error_t *err, const char *msg)
{
	return sl_error_set(err, SL_E_INVALID, "%s: line %zu: %s", r->what, ev ? ev->start_mark.line + 1 : 0, msg);
}

static int next(struct yrd *r, yaml_event_t *ev, sl_error_t *err)
{
	if (!yaml_parser_parse(&r->p, ev)) {
		const char *prob = r->p.problem ? r->p.problem : "malformed YAML";
		return sl_error_set(err, SL_E_INVALID, "%s: line %zu: %s", r->what, r->p.problem_mark.line + 1, prob);
	}
	return 0;
}

static bool plain_int(const char *s, size_t n, json_int_t *out)
{
	size_t i = (n && (s[0] == '-' || s[0] == '+')) ? 1 : 0;
	if (i == n || n - i > 18)
		return false;
	/* One spelling per number: no leading zeros. */
	if (s[i] == '0' && n - i > 1)
		return false;
	json_int_t v = 0;
	for (size_t k = i; k < n; k++) {
		if (s[k] < '0' || s[k] > '9')
			return false;
		v = v * 10 + (s[k] - '0');
	}
	*out = s[0] == '-' ? -v : v;
	return true;
}

static json_t *scalar(const yaml_event_t *ev)
{
	const char *s = (const char *)ev->data.scalar.value;
	size_t n = ev->data.scalar.length;
	if (ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE) {
		json_int_t v;
		if (n == 0 || (n == 1 && s[0] == '~') || (n == 4 && !memcmp(s, "null", 4)))
			return json_null();
		if (n == 4 && !memcmp(s, "true", 4))
			return json_true();
		if (n == 5 && !memcmp(s, "false", 5))
			return json_false();
		if (plain_int(s, n, &v))
			return json_integer(v);
	}
	return json_stringn(s, n);
}

static int node(struct yrd *r, yaml_event_t *ev, int depth, json_t **out, sl_error_t *err);

static int check_props(struct yrd *r, const yaml_event_t *ev, const yaml_char_t *anchor, const yaml_char_t *tag,
		       sl_error_t *err)
{
	if (anchor)
		return fail_at(r, ev, err, "anchors are not supported");
	if (tag && strncmp((const char *)tag, "tag:yaml.org,2002:", 18) != 0)
		return fail_at(r, ev, err, "custom tags are not supported");
	if (++r->nodes > SL_YAML_MAX_NODES)
		return sl_error_set(err, SL_E_LIMIT, "%s: more than %d nodes", r->what, SL_YAML_MAX_NODES);
	return 0;
}

/* Builds the value that starts with ev (consumed). */
static int node(struct yrd *r, yaml_event_t *ev, int depth, json_t **out, sl_error_t *err)
{
	if (depth > SL_YAML_MAX_DEPTH)
		return sl_error_set(err, SL_E_LIMIT, "%s: line %zu: nested deeper than %d", r->what,
				    ev->start_mark.line + 1, SL_YAML_MAX_DEPTH);
	switch (ev->type) {
	case YAML_ALIAS_EVENT:
		return fail_at(r, ev, err, "aliases are not supported");
	case YAML_SCALAR_EVENT:
		if (check_props(r, ev, ev->data.scalar.anchor, ev->data.scalar.tag, err) < 0)
			return -1;
		if (memchr(ev->data.scalar.value, 0, ev->data.scalar.length))
			return fail_at(r, ev, err, "a NUL byte in a value");
		*out = scalar(ev);
		return *out ? 0 : sl_error_set(err, SL_E_NOMEM, "%s: out of memory", r->what);
	case YAML_SEQUENCE_START_EVENT: {
		if (check_props(r, ev, ev->data.sequence_start.anchor, ev->data.sequence_start.tag, err) < 0)
			return -1;
		json_t *a = json_array();
		if (!a)
			return sl_error_set(err, SL_E_NOMEM, "%s: out of memory", r->what);
		for (;;) {
			yaml_event_t e;
			if (next(r, &e, err) < 0)
				break;
			if (e.type == YAML_SEQUENCE_END_EVENT) {
				yaml_event_delete(&e);
				*out = a;
				return 0;
			}
			json_t *v = NULL;
			int rc = node(r, &e, depth + 1, &v, err);
			yaml_event_delete(&e);
			if (rc < 0)
				break;
			json_array_append_new(a, v);
		}
		json_decref(a);
		return -1;
	}
	case YAML_MAPPING_START_EVENT: {
		if (check_props(r, ev, ev->data.mapping_start.anchor, ev->data.mapping_start.tag, err) < 0)
			return -1;
		json_t *o = json_object();
		if (!o)
			return sl_error_set(err, SL_E_NOMEM, "%s: out of memory", r->what);
		for (;;) {
			yaml_event_t k;
			if (next(r, &k, err) < 0)
				break;
			if (k.type == YAML_MAPPING_END_EVENT) {
				yaml_event_delete(&k);
				*out = o;
				return 0;
			}
			if (k.type != YAML_SCALAR_EVENT) {
				fail_at(r, &k, err, "mapping keys must be scalars");
				yaml_event_delete(&k);
				break;
			}
			char key[256];
			size_t kl = k.data.scalar.length;
			if (kl >= sizeof(key) || memchr(k.data.scalar.value, 0, kl) ||
			    check_props(r, &k, k.data.scalar.anchor, k.data.scalar.tag, err) < 0) {
				if (!*err)
					fail_at(r, &k, err, "a key longer than 255 bytes or with a NUL byte");
				yaml_event_delete(&k);
				break;
			}
			memcpy(key, k.data.scalar.value, kl);
			key[kl] = '\0';
			size_t line = k.start_mark.line + 1;
			yaml_event_delete(&k);
			if (json_object_get(o, key)) {
				sl_error_set(err, SL_E_INVALID, "%s: line %zu: duplicate key \"%.100s\"", r->what, line, key);
				break;
			}
			yaml_event_t v;
			if (next(r, &v, err) < 0)
				break;
			json_t *val = NULL;
			int rc = node(r, &v, depth + 1, &val, err);
			yaml_event_delete(&v);
			if (rc < 0)
				break;
			json_object_set_new(o, key, val);
		}
		json_decref(o);
		return -1;
	}
	default:
		return fail_at(r, ev, err, "unexpected YAML structure");
	}
}

int sl_yaml_parse(const char *buf, size_t len, const char *what, json_t **out, sl_error_t *err)
{
	if (len > SL_YAML_MAX_BYTES)
		return sl_error_set(err, SL_E_LIMIT, "%s: larger than %u bytes", what, SL_YAML_MAX_BYTES);
	struct yrd r = {.what = what};
	if (!yaml_parser_initialize(&r.p))
		return sl_error_set(err, SL_E_NOMEM, "%s: out of memory", what);
	yaml_parser_set_input_string(&r.p, (const unsigned char *)buf, len);
	json_t *doc = NULL;
	int rc = -1;
	yaml_event_t ev;
	/* STREAM-START, DOCUMENT-START, node, DOCUMENT-END, STREAM-END; an
	 * empty stream is an empty configuration (an empty object). */
	if (next(&r, &ev, err) < 0)
		goto out;
	yaml_event_delete(&ev);
	if (next(&r, &ev, err) < 0)
		goto out;
	if (ev.type == YAML_STREAM_END_EVENT) {
		yaml_event_delete(&ev);
		doc = json_object();
		rc = doc ? 0 : sl_error_set(err, SL_E_NOMEM, "%s: out of memory", what);
		goto out;
	}
	if (ev.type != YAML_DOCUMENT_START_EVENT) {
		fail_at(&r, &ev, err, "expected a document");
		yaml_event_delete(&ev);
		goto out;
	}
	yaml_event_delete(&ev);
	if (next(&r, &ev, err) < 0)
		goto out;
	int nrc = node(&r, &ev, 0, &doc, err);
	yaml_event_delete(&ev);
	if (nrc < 0)
		goto out;
	if (next(&r, &ev, err) < 0)
		goto out;
	yaml_event_delete(&ev); /* DOCUMENT-END */
	if (next(&r, &ev, err) < 0)
		goto out;
	if (ev.type != YAML_STREAM_END_EVENT) {
		fail_at(&r, &ev, err, "more than one document");
		yaml_event_delete(&ev);
		goto out;
	}
	yaml_event_delete(&ev);
	rc = 0;
out:
	yaml_parser_delete(&r.p);
	if (rc < 0) {
		json_decref(doc);
		return -1;
	}
	*out = doc;
	return 0;
}
