/* Unit tests for the YAML configuration reader: types, structure, refusals. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sl/yaml.h"

static json_t *ok(const char *text)
{
	sl_error_t err = NULL;
	json_t *j = NULL;
	if (sl_yaml_parse(text, strlen(text), "cfg.yaml", &j, &err) < 0)
		fail_msg("parse failed: %s", sl_error_msg(err));
	return j;
}

static void refused(const char *text, int code, const char *needle)
{
	sl_error_t err = NULL;
	json_t *j = NULL;
	assert_int_equal(sl_yaml_parse(text, strlen(text), "cfg.yaml", &j, &err), -1);
	assert_null(j);
	assert_non_null(err);
	assert_int_equal(err->code, code);
	if (!strstr(sl_error_msg(err), needle) || !strstr(sl_error_msg(err), "cfg.yaml"))
		fail_msg("error \"%s\" lacks \"%s\"", sl_error_msg(err), needle);
	sl_error_free(&err);
}

static void test_types(void **state)
{
	(void)state;
	json_t *j = ok("spore: /usr/bin/spore\n"
		       "pool_size: 4\n"
		       "neg: -3\n"
		       "octal_looking: 0755\n"
		       "quoted_num: \"12\"\n"
		       "on: true\n"
		       "off: false\n"
		       "nothing: ~\n"
		       "empty:\n"
		       "list: [a, 2, {k: v}]\n"
		       "nested:\n  deeper:\n    - x\n    - y\n");
	assert_string_equal(json_string_value(json_object_get(j, "spore")), "/usr/bin/spore");
	assert_int_equal(json_integer_value(json_object_get(j, "pool_size")), 4);
	assert_int_equal(json_integer_value(json_object_get(j, "neg")), -3);
	/* leading zeros: not a number (one spelling per number) */
	assert_string_equal(json_string_value(json_object_get(j, "octal_looking")), "0755");
	assert_string_equal(json_string_value(json_object_get(j, "quoted_num")), "12");
	assert_true(json_is_true(json_object_get(j, "on")));
	assert_true(json_is_false(json_object_get(j, "off")));
	assert_true(json_is_null(json_object_get(j, "nothing")));
	assert_true(json_is_null(json_object_get(j, "empty")));
	json_t *l = json_object_get(j, "list");
	assert_int_equal(json_array_size(l), 3);
	assert_int_equal(json_integer_value(json_array_get(l, 1)), 2);
	assert_string_equal(json_string_value(json_object_get(json_array_get(l, 2), "k")), "v");
	json_t *d = json_object_get(json_object_get(j, "nested"), "deeper");
	assert_string_equal(json_string_value(json_array_get(d, 1)), "y");
	json_decref(j);
	j = ok("");
	assert_true(json_is_object(j) && json_object_size(j) == 0);
	json_decref(j);
	j = ok("# only a comment\n");
	assert_true(json_is_object(j));
	json_decref(j);
}

static void test_refusals(void **state)
{
	(void)state;
	refused("a: 1\na: 2\n", SL_E_INVALID, "line 2: duplicate key \"a\"");
	refused("a: &x 1\nb: *x\n", SL_E_INVALID, "anchors are not supported");
	refused("b: *x\n", SL_E_INVALID, "line 1");
	refused("a: !custom 1\n", SL_E_INVALID, "custom tags are not supported");
	refused("? [1, 2]\n: v\n", SL_E_INVALID, "mapping keys must be scalars");
	refused("a: 1\n---\nb: 2\n", SL_E_INVALID, "more than one document");
	refused("a: [1, 2\n", SL_E_INVALID, "line");
	refused("a: \"x\\0y\"\n", SL_E_INVALID, "NUL");
	/* depth and size caps */
	char deep[200] = "";
	for (int i = 0; i < 40; i++)
		strcat(deep, "[");
	refused(deep, SL_E_LIMIT, "nested deeper than 32");
	size_t big = SL_YAML_MAX_BYTES + 1;
	char *b = malloc(big + 1);
	memset(b, ' ', big);
	b[big] = '\0';
	refused(b, SL_E_LIMIT, "larger than");
	free(b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_types),
		cmocka_unit_test(test_refusals),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
