/* JSON parsing, typed field access with precise errors, and stable dumps. */
#include <stdlib.h>
#include <string.h>

#include "sl/json.h"

static const char *name_of(const char *what)
{
	return what ? what : "JSON";
}

int sl_json_parse(const char *buf, size_t len, const char *what, json_t **out,
		  sl_error_t *err)
{
	json_error_t jerr;
	json_t *j;

	if (!buf) {
		buf = "";
		len = 0;
	}
	/* No JSON_DISABLE_EOF_CHECK: trailing bytes after the value are an
	 * error, so two concatenated documents can never pass as one. */
	j = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!j)
		return sl_error_set(err, SL_E_INVALID,
				    "%s: invalid JSON: %s (line %d, column %d)",
				    name_of(what), jerr.text, jerr.line,
				    jerr.column);
	*out = j;
	return 0;
}

/* Looks key up; *v is NULL when absent. Fails only when o is no object. */
static int lookup(json_t *o, const char *key, const char *what, json_t **v,
		  sl_error_t *err)
{
	if (!json_is_object(o))
		return sl_error_set(err, SL_E_INVALID,
				    "%s: expected an object holding field \"%s\"",
				    name_of(what), key);
	*v = json_object_get(o, key);
	return 0;
}

static int missing(const char *key, const char *what, sl_error_t *err)
{
	return sl_error_set(err, SL_E_INVALID, "%s: field \"%s\" missing",
			    name_of(what), key);
}

static int wrong_type(const char *key, const char *what, const char *type,
		      sl_error_t *err)
{
	return sl_error_set(err, SL_E_INVALID, "%s: field \"%s\" must be %s",
			    name_of(what), key, type);
}

int sl_json_get_obj(json_t *o, const char *key, const char *what, json_t **out,
		    sl_error_t *err)
{
	json_t *v;

	if (lookup(o, key, what, &v, err) < 0)
		return -1;
	if (!v)
		return missing(key, what, err);
	if (!json_is_object(v))
		return wrong_type(key, what, "an object", err);
	*out = v;
	return 0;
}

int sl_json_get_arr(json_t *o, const char *key, const char *what, json_t **out,
		    sl_error_t *err)
{
	json_t *v;

	if (lookup(o, key, what, &v, err) < 0)
		return -1;
	if (!v)
		return missing(key, what, err);
	if (!json_is_array(v))
		return wrong_type(key, what, "an array", err);
	*out = v;
	return 0;
}

static int str_value(json_t *v, const char *key, const char *what,
		     const char **out, sl_error_t *err)
{
	if (!json_is_string(v))
		return wrong_type(key, what, "a string", err);
	*out = json_string_value(v);
	return 0;
}

static int u64_value(json_t *v, const char *key, const char *what,
		     uint64_t *out, sl_error_t *err)
{
	json_int_t i;

	/* json_int_t is signed; sizes and counts must not wrap from -1. */
	if (!json_is_integer(v) || (i = json_integer_value(v)) < 0)
		return wrong_type(key, what, "an unsigned integer", err);
	*out = (uint64_t)i;
	return 0;
}

int sl_json_get_str(json_t *o, const char *key, const char *what,
		    const char **out, sl_error_t *err)
{
	json_t *v;

	if (lookup(o, key, what, &v, err) < 0)
		return -1;
	if (!v)
		return missing(key, what, err);
	return str_value(v, key, what, out, err);
}

int sl_json_get_u64(json_t *o, const char *key, const char *what, uint64_t *out,
		    sl_error_t *err)
{
	json_t *v;

	if (lookup(o, key, what, &v, err) < 0)
		return -1;
	if (!v)
		return missing(key, what, err);
	return u64_value(v, key, what, out, err);
}

int sl_json_get_bool(json_t *o, const char *key, const char *what, bool *out,
		     sl_error_t *err)
{
	json_t *v;

	if (lookup(o, key, what, &v, err) < 0)
		return -1;
	if (!v)
		return missing(key, what, err);
	if (!json_is_boolean(v))
		return wrong_type(key, what, "a boolean", err);
	*out = json_is_true(v);
	return 0;
}

int sl_json_get_str_opt(json_t *o, const char *key, const char *what,
			const char **out, sl_error_t *err)
{
	json_t *v;

	if (lookup(o, key, what, &v, err) < 0)
		return -1;
	if (!v)
		return 0;
	return str_value(v, key, what, out, err);
}

int sl_json_get_u64_opt(json_t *o, const char *key, const char *what,
			uint64_t *out, sl_error_t *err)
{
	json_t *v;

	if (lookup(o, key, what, &v, err) < 0)
		return -1;
	if (!v)
		return 0;
	return u64_value(v, key, what, out, err);
}

int sl_json_abs_path(json_t *v, const char *what, const char *key, char *out, size_t cap, sl_error_t *err)
{
	if (!json_is_string(v) || json_string_value(v)[0] != '/' || json_string_length(v) >= cap ||
	    strlen(json_string_value(v)) != json_string_length(v))
		return sl_error_set(err, SL_E_INVALID, "%s: %s must be an absolute path shorter than %zu bytes", what, key,
				    cap);
	memcpy(out, json_string_value(v), json_string_length(v) + 1);
	return 0;
}

char *sl_json_dump(json_t *j, size_t *len)
{
	char *s, *r;
	size_t n;

	if (!j)
		return NULL;
	s = json_dumps(j, JSON_SORT_KEYS | JSON_INDENT(2) | JSON_ENCODE_ANY);
	if (!s)
		return NULL;
	n = strlen(s);
	r = realloc(s, n + 2);
	if (!r) {
		free(s);
		return NULL;
	}
	r[n] = '\n';
	r[n + 1] = '\0';
	if (len)
		*len = n + 1;
	return r;
}
