/* Unit tests for the error object: formatting, wrapping, codes, OOM fallback. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <wchar.h>

#include <cmocka.h>

#include "sl/error.h"

static void test_set_formats_and_returns_minus_one(void **state)
{
	sl_error_t err = NULL;

	(void)state;
	assert_int_equal(sl_error_set(&err, SL_E_INVALID, "bad %s %d", "thing", 7), -1);
	assert_non_null(err);
	assert_int_equal(err->code, SL_E_INVALID);
	assert_int_equal(err->sys_errno, 0);
	assert_string_equal(sl_error_msg(err), "bad thing 7");
	sl_error_free(&err);
	assert_null(err);
}

static void test_sys_appends_strerror_and_keeps_errno(void **state)
{
	sl_error_t err = NULL;
	char want[128];

	(void)state;
	errno = ENOENT;
	assert_int_equal(sl_error_sys(&err, "open %s", "x"), -1);
	assert_int_equal(errno, ENOENT);
	assert_int_equal(err->code, SL_E_IO);
	assert_int_equal(err->sys_errno, ENOENT);
	snprintf(want, sizeof(want), "open x: %s", strerror(ENOENT));
	assert_string_equal(sl_error_msg(err), want);
	sl_error_free(&err);
}

static void test_errno_explicit_and_negative(void **state)
{
	sl_error_t err = NULL;
	char want[128];

	(void)state;
	assert_int_equal(sl_error_errno(&err, EACCES, "ioctl"), -1);
	assert_int_equal(err->sys_errno, EACCES);
	snprintf(want, sizeof(want), "ioctl: %s", strerror(EACCES));
	assert_string_equal(sl_error_msg(err), want);
	sl_error_free(&err);

	assert_int_equal(sl_error_errno(&err, -EBUSY, "kvm"), -1);
	assert_int_equal(err->sys_errno, EBUSY);
	sl_error_free(&err);
}

static void test_wrap_prepends_context(void **state)
{
	sl_error_t err = NULL;

	(void)state;
	sl_error_set(&err, SL_E_NOT_FOUND, "chunk missing");
	assert_int_equal(sl_error_wrap(&err, "restore %s", "snap1"), -1);
	assert_int_equal(sl_error_wrap(&err, "spore"), -1);
	assert_string_equal(sl_error_msg(err), "spore: restore snap1: chunk missing");
	/* Wrapping keeps the original category. */
	assert_int_equal(err->code, SL_E_NOT_FOUND);
	sl_error_free(&err);
}

static void test_wrap_without_error_still_fails(void **state)
{
	sl_error_t err = NULL;

	(void)state;
	assert_int_equal(sl_error_wrap(&err, "ctx"), -1);
	assert_non_null(err);
	assert_non_null(sl_error_msg(err));
	sl_error_free(&err);
}

static void test_free_is_idempotent(void **state)
{
	sl_error_t err = NULL;

	(void)state;
	sl_error_free(&err);
	sl_error_free(NULL);
	assert_null(err);
	assert_string_equal(sl_error_msg(NULL), "no error");
}

static void test_cleanup_attribute(void **state)
{
	(void)state;
	{
		_cleanup_error_ sl_error_t err = NULL;
		_cleanup_free_ char *p = strdup("x");

		sl_error_set(&err, SL_E_IO, "leak check under ASan");
		assert_non_null(p);
	}
}

static void test_steal_helpers(void **state)
{
	_cleanup_free_ char *p = strdup("abc");
	_cleanup_close_ int fd = dup(0);
	char *q;
	int f;

	(void)state;
	q = sl_steal_ptr(p);
	assert_null(p);
	assert_string_equal(q, "abc");
	free(q);
	f = sl_steal_fd(fd);
	assert_int_equal(fd, -1);
	if (f >= 0)
		close(f);
}

static void test_code_names(void **state)
{
	(void)state;
	assert_string_equal(sl_error_code_name(SL_E_IO), "io");
	assert_string_equal(sl_error_code_name(SL_E_INVALID), "invalid");
	assert_string_equal(sl_error_code_name(SL_E_INTEGRITY), "integrity");
	assert_string_equal(sl_error_code_name(SL_E_UNSUPPORTED), "unsupported");
	assert_string_equal(sl_error_code_name(SL_E_NOT_FOUND), "not-found");
	assert_string_equal(sl_error_code_name(SL_E_KVM), "kvm");
	assert_string_equal(sl_error_code_name(SL_E_NOMEM), "nomem");
	assert_string_equal(sl_error_code_name(SL_E_GUEST), "guest");
	assert_string_equal(sl_error_code_name(SL_E_LIMIT), "limit");
	assert_non_null(sl_error_code_name(12345));
}

/* vasprintf fails on an unencodable wide character; that drives the same
 * path as an allocation failure without having to exhaust memory. */
static void test_format_failure_falls_back_to_static_oom(void **state)
{
	static const wchar_t bad[] = { 0x110000, 0 };
	sl_error_t err = NULL;

	(void)state;
	assert_int_equal(sl_error_set(&err, SL_E_IO, "%ls", bad), -1);
	assert_non_null(err);
	assert_int_equal(err->code, SL_E_NOMEM);
	assert_string_equal(sl_error_msg(err), "out of memory");
	/* Wrapping and freeing the static object must be harmless. */
	assert_int_equal(sl_error_wrap(&err, "ctx"), -1);
	assert_string_equal(sl_error_msg(err), "out of memory");
	sl_error_free(&err);
	assert_null(err);

	sl_error_set(&err, SL_E_IO, "real");
	assert_int_equal(sl_error_wrap(&err, "%ls", bad), -1);
	assert_int_equal(err->code, SL_E_NOMEM);
	sl_error_free(&err);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_set_formats_and_returns_minus_one),
		cmocka_unit_test(test_sys_appends_strerror_and_keeps_errno),
		cmocka_unit_test(test_errno_explicit_and_negative),
		cmocka_unit_test(test_wrap_prepends_context),
		cmocka_unit_test(test_wrap_without_error_still_fails),
		cmocka_unit_test(test_free_is_idempotent),
		cmocka_unit_test(test_cleanup_attribute),
		cmocka_unit_test(test_steal_helpers),
		cmocka_unit_test(test_code_names),
		cmocka_unit_test(test_format_failure_falls_back_to_static_oom),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
