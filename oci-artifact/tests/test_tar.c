/* Unit tests for oci/tar.h: reproducible headers read back by the strict index reader, every rejected kind. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>

#include <cmocka.h>

#include "oci/tar.h"
#include "sl/file.h"

/* An archive being built in memory. */
struct arc {
	uint8_t *b;
	size_t len;
};

static void arc_put(struct arc *a, const void *p, size_t n)
{
	a->b = realloc(a->b, a->len + n);
	assert_non_null(a->b);
	if (p)
		memcpy(a->b + a->len, p, n);
	else
		memset(a->b + a->len, 0, n);
	a->len += n;
}

/* A file entry with bytes filled with c. */
static void arc_file(struct arc *a, const char *path, size_t size, char c)
{
	uint8_t hdr[OCI_TAR_BLOCK];
	sl_error_t err = NULL;
	uint8_t *data = malloc(size ? size : 1);

	assert_non_null(data);
	if (oci_tar_file_header(hdr, path, size, 0444, &err) < 0)
		fail_msg("header %s: %s", path, sl_error_msg(err));
	memset(data, c, size);
	arc_put(a, hdr, sizeof(hdr));
	arc_put(a, data, size);
	arc_put(a, NULL, oci_tar_padding(size));
	free(data);
}

static void arc_end(struct arc *a)
{
	arc_put(a, NULL, OCI_TAR_TRAILER);
}

/* Recomputes a header's checksum after a test edited it. */
static void fix_sum(uint8_t *h)
{
	unsigned sum = 0;

	memset(h + 148, ' ', 8);
	for (int i = 0; i < 512; i++)
		sum += h[i];
	snprintf((char *)h + 148, 8, "%06o", sum);
	h[155] = ' ';
}

/* A raw header (valid but for what the caller changes). */
static void raw_header(uint8_t h[OCI_TAR_BLOCK], const char *name, char type, uint64_t size)
{
	sl_error_t err = NULL;

	assert_int_equal(oci_tar_file_header(h, "placeholder", size, 0755, &err), 0);
	memset(h, 0, 100);
	memcpy(h, name, strnlen(name, 100));
	h[156] = (uint8_t)type;
	fix_sum(h);
}

static int index_mem(const struct arc *a, size_t max, struct oci_tar_entry **e, size_t *n, sl_error_t *err)
{
	struct oci_tar_mem m = { .data = a->b, .len = a->len };

	return oci_tar_index(oci_tar_read_mem, &m, a->len, max, e, n, err);
}

/* Indexing must fail with code and a message holding want. */
static void expect_reject_max(const struct arc *a, size_t max, int code, const char *want)
{
	struct oci_tar_entry *e = NULL;
	size_t n = 99;
	sl_error_t err = NULL;

	if (index_mem(a, max, &e, &n, &err) == 0)
		fail_msg("accepted an archive that should fail with \"%s\"", want);
	assert_non_null(err);
	assert_null(e);
	assert_int_equal(n, 0);
	if (err->code != code || !strstr(sl_error_msg(err), want))
		fail_msg("want code %d and \"%s\", got %d \"%s\"", code, want, err->code, sl_error_msg(err));
	sl_error_free(&err);
}

static void expect_reject(const struct arc *a, int code, const char *want)
{
	expect_reject_max(a, 64, code, want);
}

static void test_padding(void **state)
{
	(void)state;
	assert_int_equal(oci_tar_padding(0), 0);
	assert_int_equal(oci_tar_padding(1), 511);
	assert_int_equal(oci_tar_padding(511), 1);
	assert_int_equal(oci_tar_padding(512), 0);
	assert_int_equal(oci_tar_padding(2u << 20), 0);
	assert_int_equal(oci_tar_padding(4153), 512 - 4153 % 512);
}

static void test_header_fields(void **state)
{
	uint8_t h[OCI_TAR_BLOCK], h2[OCI_TAR_BLOCK];
	sl_error_t err = NULL;

	(void)state;
	assert_int_equal(oci_tar_file_header(h, "spore/vm.state", 4153, 0444, &err), 0);
	assert_string_equal((char *)h, "spore/vm.state");
	assert_string_equal((char *)h + 100, "0000444");
	assert_string_equal((char *)h + 108, "0000000");           /* uid */
	assert_string_equal((char *)h + 116, "0000000");           /* gid */
	assert_string_equal((char *)h + 124, "00000010071");       /* 4153 */
	assert_string_equal((char *)h + 136, "00000000000");       /* mtime 0 */
	assert_int_equal(h[156], '0');
	assert_memory_equal(h + 257, "ustar\0" "00", 8);
	assert_int_equal(h[265], 0); /* empty user name */
	assert_int_equal(h[297], 0); /* empty group name */
	assert_int_equal(h[155], ' ');
	/* reproducible: same input, same bytes */
	assert_int_equal(oci_tar_file_header(h2, "spore/vm.state", 4153, 0444, &err), 0);
	assert_memory_equal(h, h2, sizeof(h));
}

static void test_header_rejects(void **state)
{
	uint8_t h[OCI_TAR_BLOCK];
	char longp[101];
	sl_error_t err = NULL;
	const char *bad[] = { "/abs", "a/../b", "..", "a//b", "", "a/", "./a" };

	(void)state;
	memset(longp, 'a', 100);
	longp[100] = 0;
	assert_int_equal(oci_tar_file_header(h, longp, 1, 0444, &err), -1);
	assert_int_equal(err->code, SL_E_INVALID);
	sl_error_free(&err);
	longp[99] = 0; /* 99 bytes fit */
	assert_int_equal(oci_tar_file_header(h, longp, 1, 0444, &err), 0);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (oci_tar_file_header(h, bad[i], 1, 0444, &err) == 0)
			fail_msg("accepted path \"%s\"", bad[i]);
		assert_int_equal(err->code, SL_E_INVALID);
		sl_error_free(&err);
	}
	assert_int_equal(oci_tar_file_header(h, "big", 1ull << 33, 0444, &err), -1);
	sl_error_free(&err);
}

static void test_round_trip(void **state)
{
	struct arc a = { 0 };
	struct oci_tar_entry *e = NULL;
	size_t n = 0;
	sl_error_t err = NULL;
	uint8_t dir[OCI_TAR_BLOCK];

	(void)state;
	raw_header(dir, "spore/", '5', 0);
	arc_put(&a, dir, sizeof(dir));
	arc_file(&a, "spore/manifest.json", 1000, 'm');
	arc_file(&a, "spore/vm.state", 512, 'v');
	arc_file(&a, "empty", 0, 0);
	arc_file(&a, "chunks/sha256/ab", 2u << 20, 'c');
	arc_end(&a);

	if (index_mem(&a, 16, &e, &n, &err) < 0)
		fail_msg("%s", sl_error_msg(err));
	assert_int_equal(n, 5);
	assert_string_equal(e[0].path, "spore");
	assert_int_equal(e[0].type, '5');
	assert_string_equal(e[1].path, "spore/manifest.json");
	assert_int_equal(e[1].type, '0');
	assert_int_equal(e[1].size, 1000);
	assert_int_equal(e[1].mode, 0444);
	assert_int_equal(e[1].data_offset, 1024);
	assert_int_equal(a.b[e[1].data_offset], 'm');
	assert_int_equal(a.b[e[1].data_offset + 999], 'm');
	assert_string_equal(e[2].path, "spore/vm.state");
	assert_int_equal(e[2].data_offset, 1024 + 1024 + 512);
	assert_int_equal(a.b[e[2].data_offset], 'v');
	assert_string_equal(e[3].path, "empty");
	assert_int_equal(e[3].size, 0);
	assert_string_equal(e[4].path, "chunks/sha256/ab");
	assert_int_equal(e[4].data_offset % 512, 0);
	assert_int_equal(e[4].size, 2u << 20);
	assert_int_equal(a.b[e[4].data_offset + (2u << 20) - 1], 'c');
	free(e);

	/* the same through a file descriptor */
	{
		char path[] = "/tmp/oci-tar-XXXXXX";
		int fd = mkstemp(path);

		assert_true(fd >= 0);
		unlink(path);
		assert_int_equal(sl_write_all(fd, a.b, a.len, &err), 0);
		assert_int_equal(oci_tar_index(oci_tar_read_fd, &fd, a.len, 16, &e, &n, &err), 0);
		assert_int_equal(n, 5);
		assert_string_equal(e[4].path, "chunks/sha256/ab");
		free(e);
		/* a declared size that cuts the end marker off */
		assert_int_equal(oci_tar_index(oci_tar_read_fd, &fd, a.len - 1024, 16, &e, &n, &err), -1);
		assert_non_null(strstr(sl_error_msg(err), "end marker missing"));
		sl_error_free(&err);
		/* a file shorter than the declared size: the read fails, no crash */
		assert_int_equal(ftruncate(fd, 2048), 0);
		assert_int_equal(oci_tar_index(oci_tar_read_fd, &fd, a.len, 16, &e, &n, &err), -1);
		assert_int_equal(err->code, SL_E_IO);
		sl_error_free(&err);
		close(fd);
	}
	free(a.b);
}

/* "./" prefixes (tar -C dir .) are stripped; the root entry is skipped;
 * record padding after the end marker is ignored; prefix field joins. */
static void test_dot_prefix_and_prefix_field(void **state)
{
	struct arc a = { 0 };
	struct oci_tar_entry *e = NULL;
	size_t n = 0;
	sl_error_t err = NULL;
	uint8_t h[OCI_TAR_BLOCK];

	(void)state;
	raw_header(h, "./", '5', 0);
	arc_put(&a, h, sizeof(h));
	raw_header(h, "./spore/vm.state", '0', 3);
	arc_put(&a, h, sizeof(h));
	arc_put(&a, "abc", 3);
	arc_put(&a, NULL, 509);
	raw_header(h, "manifest.json", '0', 0);
	memcpy(h + 345, "spore", 5);
	fix_sum(h);
	arc_put(&a, h, sizeof(h));
	arc_end(&a);
	arc_put(&a, NULL, 8192); /* 10 KiB record padding */

	if (index_mem(&a, 16, &e, &n, &err) < 0)
		fail_msg("%s", sl_error_msg(err));
	assert_int_equal(n, 2);
	assert_string_equal(e[0].path, "spore/vm.state");
	assert_int_equal(e[0].mode, 0755);
	assert_string_equal(e[1].path, "spore/manifest.json");
	free(e);
	free(a.b);
}

static void test_empty_archive(void **state)
{
	struct arc a = { 0 };
	struct oci_tar_entry *e = NULL;
	size_t n = 7;
	sl_error_t err = NULL;

	(void)state;
	arc_end(&a);
	assert_int_equal(index_mem(&a, 0, &e, &n, &err), 0);
	assert_int_equal(n, 0);
	free(e);
	free(a.b);
}

/* One bad entry (after a good one) in an otherwise valid archive. */
static void reject_entry(const char *name, char type, uint64_t size, const char *want)
{
	struct arc a = { 0 };
	uint8_t h[OCI_TAR_BLOCK];

	arc_file(&a, "ok", 10, 'x');
	raw_header(h, name, type, size);
	arc_put(&a, h, sizeof(h));
	arc_put(&a, NULL, size + oci_tar_padding(size));
	arc_end(&a);
	expect_reject(&a, SL_E_INVALID, want);
	free(a.b);
}

static void test_reject_types(void **state)
{
	(void)state;
	reject_entry("hard", '1', 0, "\"hard\": hard link not allowed");
	reject_entry("sym", '2', 0, "\"sym\": symbolic link not allowed");
	reject_entry("chr", '3', 0, "\"chr\": character device not allowed");
	reject_entry("blk", '4', 0, "\"blk\": block device not allowed");
	reject_entry("fifo", '6', 0, "\"fifo\": FIFO not allowed");
	reject_entry("PaxHeaders/x", 'x', 512, "pax extended header not allowed");
	reject_entry("pax_global_header", 'g', 512, "pax global header not allowed");
	reject_entry("././@LongLink", 'L', 512, "GNU long name not allowed");
	reject_entry("././@LongLink", 'K', 512, "GNU long link name not allowed");
	reject_entry("weird", 'Z', 0, "\"weird\": unknown type 0x5a");
}

static void test_reject_paths(void **state)
{
	(void)state;
	reject_entry("/etc/passwd", '0', 1, "\"/etc/passwd\": absolute path");
	reject_entry("a/../../b", '0', 1, "\"a/../../b\": \"..\" component");
	reject_entry("..", '5', 0, "\"..\" component");
	reject_entry("a//b", '0', 1, "\"a//b\": empty path component");
	reject_entry("a/./b", '0', 1, "\".\" component");
	reject_entry("file/", '0', 1, "trailing '/' on a regular file");
	reject_entry("", '0', 1, "empty path");
	reject_entry("././", '5', 0, "\".\" component");
	reject_entry("bad\nname", '0', 1, "control character");
	reject_entry("dir", '5', 3, "directory with 3 bytes");
}

static void test_reject_duplicates(void **state)
{
	struct arc a = { 0 };
	uint8_t h[OCI_TAR_BLOCK];

	(void)state;
	arc_file(&a, "spore/vm.state", 10, 'x');
	arc_file(&a, "other", 10, 'x');
	arc_file(&a, "spore/vm.state", 20, 'y');
	arc_end(&a);
	expect_reject(&a, SL_E_INVALID, "\"spore/vm.state\" appears twice");
	free(a.b);

	/* "./x" and "x" are the same path */
	a = (struct arc){ 0 };
	arc_file(&a, "x", 1, 'x');
	raw_header(h, "./x", '0', 0);
	arc_put(&a, h, sizeof(h));
	arc_end(&a);
	expect_reject(&a, SL_E_INVALID, "\"x\" appears twice");
	free(a.b);
}

static void test_reject_structure(void **state)
{
	struct arc a = { 0 };
	uint8_t h[OCI_TAR_BLOCK];

	(void)state;
	/* size past the end */
	arc_file(&a, "ok", 10, 'x');
	raw_header(h, "big", '0', 1u << 20);
	arc_put(&a, h, sizeof(h));
	arc_put(&a, NULL, 4096);
	arc_end(&a);
	expect_reject(&a, SL_E_INVALID, "\"big\": 1048576 bytes run past the end");
	free(a.b);

	/* bad octal in the size field */
	a = (struct arc){ 0 };
	raw_header(h, "oct", '0', 0);
	memcpy(h + 124, "0000000009\0", 12);
	fix_sum(h);
	arc_put(&a, h, sizeof(h));
	arc_end(&a);
	expect_reject(&a, SL_E_INVALID, "\"oct\": bad octal size");
	free(a.b);

	/* base-256 size (GNU) */
	a = (struct arc){ 0 };
	raw_header(h, "b256", '0', 0);
	h[124] = 0x80;
	fix_sum(h);
	arc_put(&a, h, sizeof(h));
	arc_end(&a);
	expect_reject(&a, SL_E_INVALID, "\"b256\": bad octal size");
	free(a.b);

	/* bad mode */
	a = (struct arc){ 0 };
	raw_header(h, "mode", '0', 0);
	memcpy(h + 100, "07x7777", 8);
	fix_sum(h);
	arc_put(&a, h, sizeof(h));
	arc_end(&a);
	expect_reject(&a, SL_E_INVALID, "\"mode\": bad octal mode");
	free(a.b);

	/* bad checksum */
	a = (struct arc){ 0 };
	arc_file(&a, "sum", 10, 'x');
	a.b[0] = 'S';
	arc_end(&a);
	expect_reject(&a, SL_E_INVALID, "\"Sum\": checksum mismatch");
	free(a.b);

	/* not ustar (v7) */
	a = (struct arc){ 0 };
	raw_header(h, "v7", '0', 0);
	memset(h + 257, 0, 8);
	fix_sum(h);
	arc_put(&a, h, sizeof(h));
	arc_end(&a);
	expect_reject(&a, SL_E_INVALID, "\"v7\": not a ustar header");
	free(a.b);

	/* missing end marker, and a truncated one */
	a = (struct arc){ 0 };
	arc_file(&a, "x", 10, 'x');
	expect_reject(&a, SL_E_INVALID, "end marker missing");
	arc_put(&a, NULL, 512);
	expect_reject(&a, SL_E_INVALID, "end marker truncated");
	free(a.b);

	/* a zero block followed by more data */
	a = (struct arc){ 0 };
	arc_file(&a, "x", 10, 'x');
	arc_put(&a, NULL, 512);
	arc_file(&a, "y", 10, 'y');
	arc_end(&a);
	expect_reject(&a, SL_E_INVALID, "lone zero block");
	free(a.b);

	/* a short archive (not even one block) */
	a = (struct arc){ 0 };
	arc_put(&a, "abc", 3);
	expect_reject(&a, SL_E_INVALID, "end marker missing");
	free(a.b);
}

static void test_max_entries(void **state)
{
	struct arc a = { 0 };
	struct oci_tar_entry *e = NULL;
	size_t n = 0;
	sl_error_t err = NULL;

	(void)state;
	for (int i = 0; i < 5; i++) {
		char p[8];
		snprintf(p, sizeof(p), "f%d", i & 7);
		arc_file(&a, p, 1, 'x');
	}
	arc_end(&a);
	assert_int_equal(index_mem(&a, 5, &e, &n, &err), 0);
	assert_int_equal(n, 5);
	free(e);
	expect_reject_max(&a, 4, SL_E_LIMIT, "more than 4 entries");
	expect_reject_max(&a, 0, SL_E_LIMIT, "more than 0 entries");
	free(a.b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_padding),
		cmocka_unit_test(test_header_fields),
		cmocka_unit_test(test_header_rejects),
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_dot_prefix_and_prefix_field),
		cmocka_unit_test(test_empty_archive),
		cmocka_unit_test(test_reject_types),
		cmocka_unit_test(test_reject_paths),
		cmocka_unit_test(test_reject_duplicates),
		cmocka_unit_test(test_reject_structure),
		cmocka_unit_test(test_max_entries),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
