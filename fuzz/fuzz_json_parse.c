/* libFuzzer target: sl_json_parse, every getter, and the dump round trip. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sl/json.h"

/* Each getter either succeeds with no error or fails with one set. */
static void check_result(int r, sl_error_t *err)
{
	if ((r == 0) != (*err == NULL))
		__builtin_trap();
	if (r < 0 && (*err)->code != SL_E_INVALID)
		__builtin_trap();
	sl_error_free(err);
}

static void poke_getters(json_t *o, const char *key)
{
	sl_error_t err = NULL;
	json_t *j;
	const char *s;
	uint64_t u;
	bool b;

	check_result(sl_json_get_obj(o, key, "fuzz.json", &j, &err), &err);
	check_result(sl_json_get_arr(o, key, "fuzz.json", &j, &err), &err);
	check_result(sl_json_get_str(o, key, "fuzz.json", &s, &err), &err);
	check_result(sl_json_get_u64(o, key, "fuzz.json", &u, &err), &err);
	check_result(sl_json_get_bool(o, key, "fuzz.json", &b, &err), &err);
	check_result(sl_json_get_str_opt(o, key, "fuzz.json", &s, &err), &err);
	check_result(sl_json_get_u64_opt(o, key, "fuzz.json", &u, &err), &err);
}

static void walk(json_t *v, int depth)
{
	const char *key;
	json_t *child;
	size_t i;

	/* The getters are what matters; bound the walk on deep inputs. */
	if (depth > 64)
		return;
	if (json_is_object(v)) {
		poke_getters(v, "missing-key");
		json_object_foreach(v, key, child) {
			poke_getters(v, key);
			walk(child, depth + 1);
		}
	} else if (json_is_array(v)) {
		poke_getters(v, "not-an-object");
		json_array_foreach(v, i, child)
			walk(child, depth + 1);
	}
}

/* Dumps are what digests are taken over, so they must reparse to the same
 * bytes: dump(parse(dump(x))) == dump(x). */
static void check_dump(json_t *j)
{
	_cleanup_json_ json_t *back = NULL;
	_cleanup_free_ char *a = NULL;
	_cleanup_free_ char *b = NULL;
	sl_error_t err = NULL;
	size_t alen = 0, blen = 0;

	a = sl_json_dump(j, &alen);
	if (!a)
		return;
	if (alen != strlen(a) || alen == 0 || a[alen - 1] != '\n')
		__builtin_trap();
	if (sl_json_parse(a, alen, "dump", &back, &err) < 0)
		__builtin_trap();
	b = sl_json_dump(back, &blen);
	if (!b || blen != alen || memcmp(a, b, alen) != 0)
		__builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	_cleanup_json_ json_t *j = NULL;
	sl_error_t err = NULL;

	if (sl_json_parse((const char *)data, size, "fuzz.json", &j, &err) < 0) {
		if (!err || err->code != SL_E_INVALID || j)
			__builtin_trap();
		sl_error_free(&err);
		return 0;
	}
	walk(j, 0);
	check_dump(j);
	return 0;
}
