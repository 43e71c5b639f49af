/* Unit tests for the TLV state file container (vmm/src/state_file.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "state_file.h"

#define HDR 16u  /* magic u32, version u16, kind u16, nsec u32, reserved u32 */
#define SHDR 16u /* tag u32, reserved u32, len u64 */

/* ---- a raw builder, so tests can write what the writer never would ---- */

struct raw {
	uint8_t b[1024];
	size_t n;
};

static void raw_put(struct raw *r, const void *p, size_t n)
{
	assert_true(r->n + n <= sizeof(r->b));
	memcpy(r->b + r->n, p, n);
	r->n += n;
}

static void raw_header(struct raw *r, uint32_t magic, uint16_t version, uint16_t kind, uint32_t nsec,
		       uint32_t reserved)
{
	r->n = 0;
	raw_put(r, &magic, 4);
	raw_put(r, &version, 2);
	raw_put(r, &kind, 2);
	raw_put(r, &nsec, 4);
	raw_put(r, &reserved, 4);
}

static void raw_section(struct raw *r, uint32_t tag, uint32_t reserved, uint64_t len, const void *data,
			size_t datalen)
{
	static const uint8_t zero[8];
	raw_put(r, &tag, 4);
	raw_put(r, &reserved, 4);
	raw_put(r, &len, 8);
	if (datalen)
		raw_put(r, data, datalen);
	raw_put(r, zero, (8 - datalen % 8) % 8);
}

static void expect_fail(const uint8_t *buf, size_t len, uint16_t kind, int code, const char *needle)
{
	struct sf_file f;
	sl_error_t err = NULL;

	if (sf_parse(buf, len, kind, "t.state", &f, &err) == 0)
		fail_msg("accepted (want \"%s\")", needle);
	assert_non_null(err);
	if (err->code != code || !strstr(sl_error_msg(err), needle))
		fail_msg("got %s \"%s\", want %s containing \"%s\"", sl_error_code_name(err->code),
			 sl_error_msg(err), sl_error_code_name(code), needle);
	assert_non_null(strstr(sl_error_msg(err), "t.state"));
	sl_error_free(&err);
}

static uint8_t *finish(struct sf_writer *w, size_t *len)
{
	sl_error_t err = NULL;
	uint8_t *b = sf_finish(w, len, &err);

	if (!b)
		fail_msg("sf_finish: %s", sl_error_msg(err));
	return b;
}

/* ---- writer and parser ---- */

static void test_round_trip_vcpu(void **state)
{
	struct sf_writer w;
	struct sf_file f;
	const struct sf_section *s;
	sl_error_t err = NULL;
	size_t len;
	uint8_t regs[13], xsave[4096];
	uint64_t khz = 2445426;

	(void)state;
	for (size_t i = 0; i < sizeof(regs); i++)
		regs[i] = (uint8_t)(i + 1);
	for (size_t i = 0; i < sizeof(xsave); i++)
		xsave[i] = (uint8_t)(i * 7);
	sf_writer_init(&w, SF_KIND_VCPU);
	sf_add(&w, SF_REGS, regs, sizeof(regs));
	sf_add(&w, SF_SREGS, NULL, 0);
	sf_add(&w, SF_XSAVE, xsave, sizeof(xsave));
	sf_add(&w, SF_TSC_KHZ, &khz, sizeof(khz));
	_cleanup_free_ uint8_t *b = finish(&w, &len);
	assert_null(w.buf); /* ownership moved to the caller */
	assert_int_equal(len, HDR + (SHDR + 16) + SHDR + (SHDR + 4096) + (SHDR + 8));
	assert_int_equal(len % 8, 0);

	assert_int_equal(sf_parse(b, len, SF_KIND_VCPU, "vcpu-0.state", &f, &err), 0);
	assert_null(err);
	assert_int_equal(f.kind, SF_KIND_VCPU);
	assert_int_equal(f.nsec, 4);
	static const uint32_t tags[] = {SF_REGS, SF_SREGS, SF_XSAVE, SF_TSC_KHZ};
	static const uint64_t lens[] = {13, 0, 4096, 8};
	for (unsigned i = 0; i < 4; i++) {
		assert_int_equal(f.sec[i].tag, tags[i]);
		assert_int_equal(f.sec[i].len, lens[i]);
		assert_true(f.sec[i].data >= b && f.sec[i].data + f.sec[i].len <= b + len);
		assert_int_equal((f.sec[i].data - b) % 8, 0); /* every payload 8-byte aligned */
	}
	assert_memory_equal(f.sec[0].data, regs, sizeof(regs));
	assert_memory_equal(f.sec[2].data, xsave, sizeof(xsave));
	/* padding is zero */
	for (size_t i = 13; i < 16; i++)
		assert_int_equal(f.sec[0].data[i], 0);

	assert_int_equal(sf_get(&f, SF_XSAVE, sizeof(xsave), "vcpu-0.state", &s, &err), 0);
	assert_ptr_equal(s, &f.sec[2]);
	assert_int_equal(sf_get(&f, SF_REGS, 0, "vcpu-0.state", &s, &err), 0); /* 0: any size */
	assert_int_equal(s->len, 13);
	assert_int_equal(sf_get(&f, SF_TSC_KHZ, 8, "vcpu-0.state", &s, &err), 0);
	assert_memory_equal(s->data, &khz, 8);

	assert_int_equal(sf_get(&f, SF_REGS, 12, "vcpu-0.state", &s, &err), -1);
	assert_int_equal(err->code, SL_E_INVALID);
	assert_string_equal(sl_error_msg(err), "vcpu-0.state: section 1 is 13 bytes, want 12");
	sl_error_free(&err);
	assert_int_equal(sf_get(&f, SF_LAPIC, 0, "vcpu-0.state", &s, &err), -1);
	assert_int_equal(err->code, SL_E_INVALID);
	assert_string_equal(sl_error_msg(err), "vcpu-0.state: section 5 missing");
	sl_error_free(&err);

	/* the same bytes are not a VM state file */
	expect_fail(b, len, SF_KIND_VM, SL_E_INVALID, "wrong kind 1 (want 2)");
}

static void test_round_trip_vm(void **state)
{
	struct sf_writer w;
	struct sf_file f;
	sl_error_t err = NULL;
	size_t len;
	uint8_t cpuid[3 * 40], serial[9] = "serial!!";

	(void)state;
	memset(cpuid, 0x5a, sizeof(cpuid));
	sf_writer_init(&w, SF_KIND_VM);
	sf_add(&w, SF_PIC_MASTER, serial, 1);
	sf_add(&w, SF_CPUID, cpuid, sizeof(cpuid));
	sf_add(&w, SF_SERIAL, serial, sizeof(serial));
	sf_add(&w, SF_SPORE_DEV, serial, 8);
	_cleanup_free_ uint8_t *b = finish(&w, &len);
	assert_int_equal(sf_parse(b, len, SF_KIND_VM, "vm.state", &f, &err), 0);
	assert_int_equal(f.nsec, 4);
	assert_int_equal(f.sec[1].tag, SF_CPUID);
	assert_memory_equal(f.sec[1].data, cpuid, sizeof(cpuid));
	assert_int_equal(f.sec[2].len, 9);
	expect_fail(b, len, SF_KIND_VCPU, SL_E_INVALID, "wrong kind 2 (want 1)");

	/* no sections at all is structurally valid */
	sf_writer_init(&w, SF_KIND_VM);
	_cleanup_free_ uint8_t *e = finish(&w, &len);
	assert_int_equal(len, HDR);
	assert_int_equal(sf_parse(e, len, SF_KIND_VM, "vm.state", &f, &err), 0);
	assert_int_equal(f.nsec, 0);
}

static void test_truncated(void **state)
{
	struct sf_writer w;
	size_t len;
	uint8_t data[40] = {1, 2, 3};

	(void)state;
	sf_writer_init(&w, SF_KIND_VCPU);
	sf_add(&w, SF_REGS, data, 20);
	sf_add(&w, SF_MSRS, data, 40);
	_cleanup_free_ uint8_t *b = finish(&w, &len);
	/* every strict prefix is refused, with no read past its end (ASan) */
	for (size_t n = 0; n < len; n++) {
		struct sf_file f;
		sl_error_t err = NULL;
		_cleanup_free_ uint8_t *copy = malloc(n ? n : 1);
		memcpy(copy, b, n);
		assert_int_equal(sf_parse(copy, n, SF_KIND_VCPU, "t.state", &f, &err), -1);
		assert_non_null(err);
		assert_int_equal(err->code, SL_E_INVALID);
		sl_error_free(&err);
	}
	expect_fail(b, 0, SF_KIND_VCPU, SL_E_INVALID, "truncated header (0 bytes)");
	expect_fail(b, HDR - 1, SF_KIND_VCPU, SL_E_INVALID, "truncated header (15 bytes)");
	expect_fail(b, HDR, SF_KIND_VCPU, SL_E_INVALID, "section 0 header truncated");
	expect_fail(b, HDR + SHDR + 8, SF_KIND_VCPU, SL_E_INVALID, "section 0 (tag 1) out of bounds");
	expect_fail(b, HDR + SHDR + 24, SF_KIND_VCPU, SL_E_INVALID, "section 1 header truncated");
	expect_fail(b, len - 8, SF_KIND_VCPU, SL_E_INVALID, "section 1 (tag 6) out of bounds");
}

static void test_bad_header(void **state)
{
	struct raw r;

	(void)state;
	raw_header(&r, 0x54535054, 1, SF_KIND_VCPU, 0, 0);
	expect_fail(r.b, r.n, SF_KIND_VCPU, SL_E_INVALID, "not a spore state file (bad magic)");
	raw_header(&r, 0x53505354, 1, SF_KIND_VCPU, 0, 0); /* byte-swapped */
	expect_fail(r.b, r.n, SF_KIND_VCPU, SL_E_INVALID, "bad magic");
	raw_header(&r, SF_MAGIC, 2, SF_KIND_VCPU, 0, 0);
	expect_fail(r.b, r.n, SF_KIND_VCPU, SL_E_UNSUPPORTED, "unknown state file version 2");
	raw_header(&r, SF_MAGIC, 0, SF_KIND_VCPU, 0, 0);
	expect_fail(r.b, r.n, SF_KIND_VCPU, SL_E_UNSUPPORTED, "unknown state file version 0");
	raw_header(&r, SF_MAGIC, 1, 3, 0, 0);
	expect_fail(r.b, r.n, SF_KIND_VCPU, SL_E_INVALID, "wrong kind 3");
	raw_header(&r, SF_MAGIC, 1, SF_KIND_VCPU, 0, 1); /* reserved must be zero */
	expect_fail(r.b, r.n, SF_KIND_VCPU, SL_E_INVALID, "t.state");
	raw_header(&r, SF_MAGIC, 1, SF_KIND_VCPU, SF_MAX_SECTIONS + 1, 0);
	expect_fail(r.b, r.n, SF_KIND_VCPU, SL_E_LIMIT, "65 sections, the limit is 64");
	raw_header(&r, SF_MAGIC, 1, SF_KIND_VCPU, UINT32_MAX, 0);
	expect_fail(r.b, r.n, SF_KIND_VCPU, SL_E_LIMIT, "sections, the limit is 64");
	raw_header(&r, SF_MAGIC, 1, SF_KIND_VCPU, 2, 0); /* says 2, has 1 */
	raw_section(&r, SF_REGS, 0, 8, "12345678", 8);
	expect_fail(r.b, r.n, SF_KIND_VCPU, SL_E_INVALID, "section 1 header truncated");
}

static void test_duplicate_and_unknown_tags(void **state)
{
	struct raw r;

	(void)state;
	raw_header(&r, SF_MAGIC, 1, SF_KIND_VCPU, 3, 0);
	raw_section(&r, SF_REGS, 0, 4, "abcd", 4);
	raw_section(&r, SF_SREGS, 0, 4, "abcd", 4);
	raw_section(&r, SF_REGS, 0, 4, "abcd", 4);
	expect_fail(r.b, r.n, SF_KIND_VCPU, SL_E_INVALID, "duplicate section tag 1");

	static const uint32_t bad_vcpu[] = {0, SF_TSC_KHZ + 1, SF_PIC_MASTER, SF_CPUID, SF_SERIAL, UINT32_MAX};
	for (size_t i = 0; i < sizeof(bad_vcpu) / sizeof(bad_vcpu[0]); i++) {
		char want[64];
		raw_header(&r, SF_MAGIC, 1, SF_KIND_VCPU, 1, 0);
		raw_section(&r, bad_vcpu[i], 0, 0, NULL, 0);
		snprintf(want, sizeof(want), "unknown section tag %u", bad_vcpu[i]);
		expect_fail(r.b, r.n, SF_KIND_VCPU, SL_E_UNSUPPORTED, want);
	}
	static const uint32_t bad_vm[] = {0, SF_REGS, SF_TSC_KHZ, SF_CPUID + 1, SF_SERIAL - 1, SF_PLATFORM + 1,
					  SF_VIRTIO_FIRST - 1, SF_VIRTIO_LAST + 1};
	for (size_t i = 0; i < sizeof(bad_vm) / sizeof(bad_vm[0]); i++) {
		char want[64];
		raw_header(&r, SF_MAGIC, 1, SF_KIND_VM, 1, 0);
		raw_section(&r, bad_vm[i], 0, 0, NULL, 0);
		snprintf(want, sizeof(want), "unknown section tag %u", bad_vm[i]);
		expect_fail(r.b, r.n, SF_KIND_VM, SL_E_UNSUPPORTED, want);
	}
	/* every known tag of each kind is accepted */
	for (uint32_t t = SF_REGS; t <= SF_TSC_KHZ; t++) {
		struct sf_file f;
		sl_error_t err = NULL;
		raw_header(&r, SF_MAGIC, 1, SF_KIND_VCPU, 1, 0);
		raw_section(&r, t, 0, 0, NULL, 0);
		assert_int_equal(sf_parse(r.b, r.n, SF_KIND_VCPU, "t.state", &f, &err), 0);
	}
	static const uint32_t good_vm[] = {SF_PIC_MASTER, SF_CPUID, SF_SERIAL, SF_SPORE_DEV, SF_PLATFORM,
					   SF_VIRTIO_FIRST, SF_VIRTIO_LAST};
	for (size_t i = 0; i < sizeof(good_vm) / sizeof(good_vm[0]); i++) {
		struct sf_file f;
		sl_error_t err = NULL;
		raw_header(&r, SF_MAGIC, 1, SF_KIND_VM, 1, 0);
		raw_section(&r, good_vm[i], 0, 0, NULL, 0);
		assert_int_equal(sf_parse(r.b, r.n, SF_KIND_VM, "vm.state", &f, &err), 0);
	}
	/* section header reserved field must be zero */
	raw_header(&r, SF_MAGIC, 1, SF_KIND_VCPU, 1, 0);
	raw_section(&r, SF_REGS, 7, 4, "abcd", 4);
	expect_fail(r.b, r.n, SF_KIND_VCPU, SL_E_INVALID, "section 0 (tag 1)");
}

static void test_trailing_bytes(void **state)
{
	struct raw r;
	struct sf_file f;
	sl_error_t err = NULL;

	(void)state;
	raw_header(&r, SF_MAGIC, 1, SF_KIND_VCPU, 1, 0);
	raw_section(&r, SF_REGS, 0, 4, "abcd", 4);
	assert_int_equal(sf_parse(r.b, r.n, SF_KIND_VCPU, "t.state", &f, &err), 0);
	raw_put(&r, "\0\0\0\0\0\0\0\0", 8);
	expect_fail(r.b, r.n, SF_KIND_VCPU, SL_E_INVALID, "8 trailing bytes");
	r.n -= 7;
	expect_fail(r.b, r.n, SF_KIND_VCPU, SL_E_INVALID, "1 trailing bytes");
	/* nsec 0 with a section after the header */
	raw_header(&r, SF_MAGIC, 1, SF_KIND_VCPU, 0, 0);
	raw_section(&r, SF_REGS, 0, 4, "abcd", 4);
	expect_fail(r.b, r.n, SF_KIND_VCPU, SL_E_INVALID, "24 trailing bytes");
}

static void test_section_length_overflow(void **state)
{
	struct raw r;
	struct sf_file f;
	sl_error_t err = NULL;

	(void)state;
	/* lengths near 2^64: padding must not wrap them into range */
	static const uint64_t huge[] = {UINT64_MAX, UINT64_MAX - 3, UINT64_MAX - 7, (uint64_t)1 << 63,
					(uint64_t)SF_MAX_SIZE, 9};
	for (size_t i = 0; i < sizeof(huge) / sizeof(huge[0]); i++) {
		raw_header(&r, SF_MAGIC, 1, SF_KIND_VCPU, 1, 0);
		raw_section(&r, SF_REGS, 0, huge[i], "abcdefgh", 8);
		expect_fail(r.b, r.n, SF_KIND_VCPU, SL_E_INVALID, "section 0 (tag 1) out of bounds");
	}
	/* the length fits but its padding does not */
	raw_header(&r, SF_MAGIC, 1, SF_KIND_VCPU, 1, 0);
	raw_section(&r, SF_REGS, 0, 5, "abcde", 5);
	expect_fail(r.b, r.n - 3, SF_KIND_VCPU, SL_E_INVALID, "section 0 (tag 1) out of bounds");
	assert_int_equal(sf_parse(r.b, r.n, SF_KIND_VCPU, "t.state", &f, &err), 0);
	assert_int_equal(f.sec[0].len, 5);
	/* a length covering the next section's header is caught by that header */
	raw_header(&r, SF_MAGIC, 1, SF_KIND_VCPU, 2, 0);
	raw_section(&r, SF_REGS, 0, 8 + SHDR, "abcdefgh", 8);
	raw_section(&r, SF_SREGS, 0, 0, NULL, 0);
	expect_fail(r.b, r.n, SF_KIND_VCPU, SL_E_INVALID, "section 1 header truncated");
}

static void test_size_limits(void **state)
{
	struct sf_writer w;
	sl_error_t err = NULL;
	size_t len = 0;

	(void)state;
	/* parser: bigger than SF_MAX_SIZE */
	size_t big = SF_MAX_SIZE + 8;
	_cleanup_free_ uint8_t *b = calloc(1, big);
	struct raw r;
	raw_header(&r, SF_MAGIC, 1, SF_KIND_VCPU, 1, 0);
	memcpy(b, r.b, r.n);
	uint32_t tag = SF_XSAVE;
	uint64_t sl = big - HDR - SHDR;
	memcpy(b + HDR, &tag, 4);
	memcpy(b + HDR + 8, &sl, 8);
	expect_fail(b, big, SF_KIND_VCPU, SL_E_LIMIT, "the limit is 4194304");
	/* exactly SF_MAX_SIZE is fine */
	sl = SF_MAX_SIZE - HDR - SHDR;
	memcpy(b + HDR + 8, &sl, 8);
	{
		struct sf_file f;
		assert_int_equal(sf_parse(b, SF_MAX_SIZE, SF_KIND_VCPU, "t.state", &f, &err), 0);
		assert_int_equal(f.sec[0].len, sl);
	}

	/* writer: too big, too many sections */
	sf_writer_init(&w, SF_KIND_VCPU);
	sf_add(&w, SF_XSAVE, b, SF_MAX_SIZE);
	assert_null(sf_finish(&w, &len, &err));
	assert_int_equal(err->code, SL_E_LIMIT);
	assert_null(w.buf);
	sl_error_free(&err);
	sf_writer_init(&w, SF_KIND_VCPU);
	for (unsigned i = 0; i <= SF_MAX_SECTIONS; i++)
		sf_add(&w, SF_REGS, "x", 1);
	assert_null(sf_finish(&w, &len, &err));
	assert_int_equal(err->code, SL_E_LIMIT);
	sl_error_free(&err);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip_vcpu),
		cmocka_unit_test(test_round_trip_vm),
		cmocka_unit_test(test_truncated),
		cmocka_unit_test(test_bad_header),
		cmocka_unit_test(test_duplicate_and_unknown_tags),
		cmocka_unit_test(test_trailing_bytes),
		cmocka_unit_test(test_section_length_overflow),
		cmocka_unit_test(test_size_limits),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
