/* Unit tests for sha256 hashing and the strict "sha256:<hex>" parser. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "sl/digest.h"
#include "sl/file.h"
#include "test_util.h"

#define ABC_HEX "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
#define EMPTY_HEX "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

static void test_sha256_known_vectors(void **state)
{
	sl_digest d;
	char s[SL_DIGEST_STRLEN];
	char h[SL_DIGEST_HEXLEN + 1];

	(void)state;
	sl_sha256("abc", 3, &d);
	sl_digest_format(&d, s);
	assert_string_equal(s, "sha256:" ABC_HEX);
	sl_digest_hex(&d, h);
	assert_string_equal(h, ABC_HEX);

	sl_sha256(NULL, 0, &d);
	sl_digest_hex(&d, h);
	assert_string_equal(h, EMPTY_HEX);
}

static void test_streaming_matches_oneshot(void **state)
{
	static const char msg[] = "the quick brown fox jumps over the lazy dog";
	sl_digest a, b;
	sl_sha256_ctx *c;

	(void)state;
	sl_sha256(msg, sizeof(msg) - 1, &a);
	c = sl_sha256_new();
	assert_non_null(c);
	for (size_t i = 0; i < sizeof(msg) - 1; i += 5)
		sl_sha256_update(c, msg + i,
				 sizeof(msg) - 1 - i < 5 ? sizeof(msg) - 1 - i : 5);
	sl_sha256_update(c, NULL, 0);
	sl_sha256_final(c, &b);
	assert_true(sl_digest_equal(&a, &b));
	b.b[31] ^= 1;
	assert_false(sl_digest_equal(&a, &b));
}

static void test_parse_roundtrip(void **state)
{
	sl_error_t err = NULL;
	sl_digest d, e;
	char s[SL_DIGEST_STRLEN];

	(void)state;
	assert_int_equal(sl_digest_parse("sha256:" ABC_HEX, &d, &err), 0);
	assert_null(err);
	sl_digest_format(&d, s);
	assert_string_equal(s, "sha256:" ABC_HEX);
	sl_sha256("abc", 3, &e);
	assert_true(sl_digest_equal(&d, &e));

	assert_int_equal(sl_digest_parse_hex(ABC_HEX, &e, &err), 0);
	assert_true(sl_digest_equal(&d, &e));
}

static void expect_parse_fail(const char *in, bool hex_only)
{
	sl_error_t err = NULL;
	sl_digest d;
	int r;

	memset(&d, 0xa5, sizeof(d));
	r = hex_only ? sl_digest_parse_hex(in, &d, &err)
		     : sl_digest_parse(in, &d, &err);
	assert_int_equal(r, -1);
	assert_non_null(err);
	assert_int_equal(err->code, SL_E_INVALID);
	/* Short inputs are named verbatim so the user can see what was wrong. */
	if (in && strlen(in) < 70)
		assert_non_null(strstr(sl_error_msg(err), in));
	/* A failed parse must not leave a half-written digest behind. */
	for (size_t i = 0; i < sizeof(d.b); i++)
		assert_int_equal(d.b[i], 0xa5);
	sl_error_free(&err);
}

static void test_parse_rejects(void **state)
{
	char upper[] = "sha256:" ABC_HEX;

	(void)state;
	upper[10] = 'A';
	expect_parse_fail(upper, false);
	expect_parse_fail("sha256:" "BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD", false);
	expect_parse_fail("sha256:" "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015a", false);
	expect_parse_fail("sha256:" ABC_HEX "0", false);
	expect_parse_fail("sha256:" ABC_HEX "\n", false);
	expect_parse_fail("sha512:" ABC_HEX, false);
	expect_parse_fail("SHA256:" ABC_HEX, false);
	expect_parse_fail("sha256" ABC_HEX, false);
	expect_parse_fail(" sha256:" ABC_HEX, false);
	expect_parse_fail(ABC_HEX, false);
	expect_parse_fail("sha256:", false);
	expect_parse_fail("", false);
	expect_parse_fail(NULL, false);
	expect_parse_fail("sha256:" "ga7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", false);
	expect_parse_fail("sha256:" ABC_HEX, true);
	expect_parse_fail("BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD", true);
	expect_parse_fail("ba78", true);
}

static void test_parse_error_truncates_long_input(void **state)
{
	char big[5000];
	sl_error_t err = NULL;
	sl_digest d;

	(void)state;
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	assert_int_equal(sl_digest_parse(big, &d, &err), -1);
	assert_true(strlen(sl_error_msg(err)) < 300);
	assert_non_null(strstr(sl_error_msg(err), "xxxxxxxx..."));
	sl_error_free(&err);
}

static void test_sha256_fd_matches_buffer(void **state)
{
	/* 2.5 MiB: crosses the 1 MiB read block boundary twice. */
	const size_t n = 5 * 512 * 1024 + 123;
	_cleanup_free_ unsigned char *buf = malloc(n);
	struct scratch s;
	sl_error_t err = NULL;
	sl_digest a, b;
	uint64_t size = 0;
	int fd;

	(void)state;
	assert_non_null(buf);
	for (size_t i = 0; i < n; i++)
		buf[i] = (unsigned char)(i * 131 + (i >> 9));
	assert_int_equal(scratch_make(&s), 0);
	assert_int_equal(sl_write_atomic(s.fd, "blob", buf, n, 0644, &err), 0);

	fd = openat(s.fd, "blob", O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(sl_sha256_fd(fd, &a, &size, &err), 0);
	assert_int_equal(size, n);
	sl_sha256(buf, n, &b);
	assert_true(sl_digest_equal(&a, &b));

	/* Hashing starts at the current offset. */
	assert_int_equal(lseek(fd, 1000, SEEK_SET), 1000);
	assert_int_equal(sl_sha256_fd(fd, &a, NULL, &err), 0);
	sl_sha256(buf + 1000, n - 1000, &b);
	assert_true(sl_digest_equal(&a, &b));
	close(fd);

	assert_int_equal(sl_sha256_fd(-1, &a, &size, &err), -1);
	assert_int_equal(err->code, SL_E_IO);
	assert_int_equal(err->sys_errno, EBADF);
	sl_error_free(&err);
	scratch_drop(&s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sha256_known_vectors),
		cmocka_unit_test(test_streaming_matches_oneshot),
		cmocka_unit_test(test_parse_roundtrip),
		cmocka_unit_test(test_parse_rejects),
		cmocka_unit_test(test_parse_error_truncates_long_input),
		cmocka_unit_test(test_sha256_fd_matches_buffer),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
