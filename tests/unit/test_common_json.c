/* Unit tests for JSON parsing, typed getters and their error messages. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "sl/json.h"

static json_t *parse_ok(const char *text)
{
	sl_error_t err = NULL;
	json_t *j = NULL;

	if (sl_json_parse(text, strlen(text), "test.json", &j, &err) < 0)
		fail_msg("parse failed: %s", sl_error_msg(err));
	return j;
}

static void expect_msg(sl_error_t *err, const char *want)
{
	assert_non_null(*err);
	assert_int_equal((*err)->code, SL_E_INVALID);
	assert_string_equal(sl_error_msg(*err), want);
	sl_error_free(err);
}

static void expect_parse_fail(const char *text, const char *needle)
{
	sl_error_t err = NULL;
	json_t *j = NULL;

	assert_int_equal(sl_json_parse(text, strlen(text), "manifest.json", &j, &err), -1);
	assert_null(j);
	assert_non_null(err);
	assert_int_equal(err->code, SL_E_INVALID);
	assert_non_null(strstr(sl_error_msg(err), "manifest.json"));
	assert_non_null(strstr(sl_error_msg(err), "line"));
	assert_non_null(strstr(sl_error_msg(err), "column"));
	if (needle && !strstr(sl_error_msg(err), needle))
		fail_msg("\"%s\" lacks \"%s\"", sl_error_msg(err), needle);
	sl_error_free(&err);
}

static void test_parse_accepts(void **state)
{
	_cleanup_json_ json_t *j = NULL;

	(void)state;
	j = parse_ok(" {\"a\": [1, 2], \"b\": {\"c\": true}}\n\t ");
	assert_true(json_is_object(j));
	assert_int_equal(json_array_size(json_object_get(j, "a")), 2);
}

static void test_parse_rejects(void **state)
{
	(void)state;
	expect_parse_fail("{\"a\": 1, \"a\": 2}", "duplicate");
	expect_parse_fail("{\"a\": {\"x\": 1, \"x\": 1}}", "duplicate");
	expect_parse_fail("{\"a\": 1} x", NULL);
	expect_parse_fail("{}{}", NULL);
	expect_parse_fail("{\"a\": 1,}", NULL);
	expect_parse_fail("", NULL);
	expect_parse_fail("{\"a\": \"\\u0000\"}", NULL);
	expect_parse_fail("{\"a\":\n  nope}", "line 2");
	{
		/* Bytes after an embedded NUL count as trailing data too. */
		sl_error_t err = NULL;
		json_t *j = NULL;

		assert_int_equal(sl_json_parse("{}\0{}", 5, "m", &j, &err), -1);
		assert_null(j);
		sl_error_free(&err);
	}
}

static void test_getters_success(void **state)
{
	_cleanup_json_ json_t *j = NULL;
	sl_error_t err = NULL;
	json_t *o = NULL, *a = NULL;
	const char *s = NULL;
	uint64_t u = 0;
	bool b = false;

	(void)state;
	j = parse_ok("{\"o\": {\"k\": 1}, \"a\": [], \"s\": \"str\", \"u\": 42,"
		     " \"zero\": 0, \"big\": 9223372036854775807, \"b\": true}");
	assert_int_equal(sl_json_get_obj(j, "o", "m", &o, &err), 0);
	assert_true(json_is_object(o));
	assert_int_equal(sl_json_get_arr(j, "a", "m", &a, &err), 0);
	assert_true(json_is_array(a));
	assert_int_equal(sl_json_get_str(j, "s", "m", &s, &err), 0);
	assert_string_equal(s, "str");
	assert_int_equal(sl_json_get_u64(j, "u", "m", &u, &err), 0);
	assert_int_equal(u, 42);
	assert_int_equal(sl_json_get_u64(j, "zero", "m", &u, &err), 0);
	assert_int_equal(u, 0);
	assert_int_equal(sl_json_get_u64(j, "big", "m", &u, &err), 0);
	assert_true(u == 9223372036854775807ULL);
	assert_int_equal(sl_json_get_bool(j, "b", "m", &b, &err), 0);
	assert_true(b);
	assert_null(err);
}

static void test_getter_errors_name_key(void **state)
{
	_cleanup_json_ json_t *j = NULL;
	sl_error_t err = NULL;
	json_t *o = NULL;
	const char *s = NULL;
	uint64_t u = 7;
	bool b;

	(void)state;
	j = parse_ok("{\"vcpus\": -1, \"frac\": 1.5, \"text\": \"2\", \"flag\": 1,"
		     " \"n\": null, \"arr\": [1], \"obj\": {}}");
	assert_int_equal(sl_json_get_u64(j, "memory", "manifest.json", &u, &err), -1);
	expect_msg(&err, "manifest.json: field \"memory\" missing");
	assert_int_equal(sl_json_get_u64(j, "vcpus", "manifest.json", &u, &err), -1);
	expect_msg(&err, "manifest.json: field \"vcpus\" must be an unsigned integer");
	assert_int_equal(u, 7);
	assert_int_equal(sl_json_get_u64(j, "frac", "manifest.json", &u, &err), -1);
	expect_msg(&err, "manifest.json: field \"frac\" must be an unsigned integer");
	assert_int_equal(sl_json_get_u64(j, "text", "manifest.json", &u, &err), -1);
	expect_msg(&err, "manifest.json: field \"text\" must be an unsigned integer");
	assert_int_equal(sl_json_get_str(j, "vcpus", "cfg", &s, &err), -1);
	expect_msg(&err, "cfg: field \"vcpus\" must be a string");
	assert_int_equal(sl_json_get_str(j, "n", "cfg", &s, &err), -1);
	expect_msg(&err, "cfg: field \"n\" must be a string");
	assert_int_equal(sl_json_get_bool(j, "flag", "cfg", &b, &err), -1);
	expect_msg(&err, "cfg: field \"flag\" must be a boolean");
	assert_int_equal(sl_json_get_obj(j, "arr", "cfg", &o, &err), -1);
	expect_msg(&err, "cfg: field \"arr\" must be an object");
	assert_int_equal(sl_json_get_arr(j, "obj", "cfg", &o, &err), -1);
	expect_msg(&err, "cfg: field \"obj\" must be an array");
	assert_int_equal(sl_json_get_arr(j, "gone", "cfg", &o, &err), -1);
	expect_msg(&err, "cfg: field \"gone\" missing");

	/* Getters on a non-object fail rather than crash. */
	assert_int_equal(sl_json_get_u64(json_object_get(j, "arr"), "x", "cfg", &u, &err), -1);
	assert_non_null(strstr(sl_error_msg(err), "\"x\""));
	sl_error_free(&err);
	assert_int_equal(sl_json_get_str(NULL, "x", "cfg", &s, &err), -1);
	sl_error_free(&err);
}

static void test_optional_getters(void **state)
{
	_cleanup_json_ json_t *j = NULL;
	sl_error_t err = NULL;
	const char *s = "default";
	uint64_t u = 99;

	(void)state;
	j = parse_ok("{\"s\": \"v\", \"u\": 5, \"bad\": -3}");
	assert_int_equal(sl_json_get_str_opt(j, "absent", "m", &s, &err), 0);
	assert_string_equal(s, "default");
	assert_int_equal(sl_json_get_u64_opt(j, "absent", "m", &u, &err), 0);
	assert_int_equal(u, 99);
	assert_int_equal(sl_json_get_str_opt(j, "s", "m", &s, &err), 0);
	assert_string_equal(s, "v");
	assert_int_equal(sl_json_get_u64_opt(j, "u", "m", &u, &err), 0);
	assert_int_equal(u, 5);
	assert_int_equal(sl_json_get_u64_opt(j, "bad", "m", &u, &err), -1);
	expect_msg(&err, "m: field \"bad\" must be an unsigned integer");
	assert_int_equal(sl_json_get_str_opt(j, "u", "m", &s, &err), -1);
	expect_msg(&err, "m: field \"u\" must be a string");
}

static void test_dump_is_stable(void **state)
{
	_cleanup_json_ json_t *j = NULL;
	_cleanup_json_ json_t *back = NULL;
	_cleanup_free_ char *out = NULL;
	_cleanup_free_ char *out2 = NULL;
	sl_error_t err = NULL;
	size_t len = 0;

	(void)state;
	j = parse_ok("{\"zeta\": 1, \"alpha\": {\"y\": [1, 2], \"x\": \"s\"}}");
	out = sl_json_dump(j, &len);
	assert_non_null(out);
	assert_string_equal(out,
			    "{\n"
			    "  \"alpha\": {\n"
			    "    \"x\": \"s\",\n"
			    "    \"y\": [\n"
			    "      1,\n"
			    "      2\n"
			    "    ]\n"
			    "  },\n"
			    "  \"zeta\": 1\n"
			    "}\n");
	assert_int_equal(len, strlen(out));
	assert_int_equal(sl_json_parse(out, len, "dump", &back, &err), 0);
	out2 = sl_json_dump(back, NULL);
	assert_string_equal(out, out2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_accepts),
		cmocka_unit_test(test_parse_rejects),
		cmocka_unit_test(test_getters_success),
		cmocka_unit_test(test_getter_errors_name_key),
		cmocka_unit_test(test_optional_getters),
		cmocka_unit_test(test_dump_is_stable),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
