/* Unit tests for the spore manifest v1: round trip, every validation rule, limits. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "sl/json.h"
#include "sl/spore_manifest.h"
#include "test_util.h"

#define GEN_ID "0123456789abcdef0123456789abcdef"
#define GEN_PARENT "fedcba9876543210fedcba9876543210"

static char **names(int n, ...)
{
	va_list ap;
	char **v = calloc((size_t)n + 1, sizeof(char *));

	assert_non_null(v);
	va_start(ap, n);
	for (int i = 0; i < n; i++)
		v[i] = strdup(va_arg(ap, const char *));
	va_end(ap);
	return v;
}

static void digest_of(const char *s, sl_digest *d)
{
	sl_sha256(s, strlen(s), d);
}

/* A valid manifest: vcpus vCPUs, mem_mib MiB, nchunks chunks at indices
 * 0, 3, 6, ... (all within memory). */
static void make(struct spore_manifest *m, unsigned vcpus, uint64_t mem_mib, size_t nchunks, bool parent)
{
	memset(m, 0, sizeof(*m));
	m->version = SPORE_FORMAT_VERSION;
	strcpy(m->created, "2026-01-02T03:04:05Z");
	strcpy(m->arch, "x86_64");
	strcpy(m->hypervisor, "kvm");
	strcpy(m->cpu_vendor, "GenuineIntel");
	m->tsc_khz = 2445426;
	m->features = names(3, "fpu", "sse2", "x2apic");
	m->nfeatures = 3;
	m->kvm_caps = names(2, "irqchip", "xsave");
	m->ncaps = 2;
	m->vcpus = vcpus;
	m->mem_mib = mem_mib;
	strcpy(m->vm_state.path, "spore/vm.state");
	digest_of("vm", &m->vm_state.digest);
	m->vm_state.size = 4152;
	for (unsigned i = 0; i < vcpus; i++) {
		char s[32];
		snprintf(m->vcpu_state[i].path, sizeof(m->vcpu_state[i].path), "spore/vcpu-%u.state", i);
		snprintf(s, sizeof(s), "vcpu%u", i);
		digest_of(s, &m->vcpu_state[i].digest);
		m->vcpu_state[i].size = 7008 + i;
	}
	m->chunks = calloc(nchunks ? nchunks : 1, sizeof(*m->chunks));
	assert_non_null(m->chunks);
	for (size_t i = 0; i < nchunks; i++) {
		char s[32];
		snprintf(s, sizeof(s), "chunk%zu", i);
		m->chunks[i].index = nchunks * 3 <= (mem_mib / 2) ? i * 3 : i;
		digest_of(s, &m->chunks[i].digest);
	}
	m->nchunks = nchunks;
	if (parent) {
		m->has_parent = true;
		digest_of("parent manifest", &m->parent);
		strcpy(m->gen_parent, GEN_PARENT);
	}
	strcpy(m->gen_id, GEN_ID);
	m->gen_counter = 3;
	m->depth = 2;
}

/* Makes m a Linux machine with a vsock device and ndisks disks (disk k:
 * 4 MiB + 512 bytes, 3 chunk slots, chunks at 0 and 2; odd ones read-only). */
static void make_linux(struct spore_manifest *m, size_t ndisks)
{
	m->platform = SPORE_PLATFORM_LINUX;
	m->vsock_cid = 3;
	for (size_t k = 0; k < ndisks; k++) {
		struct spore_disk *d = &m->disks[k];
		d->size = (4u << 20) + 512;
		d->read_only = k % 2;
		d->chunks = calloc(2, sizeof(*d->chunks));
		assert_non_null(d->chunks);
		for (size_t i = 0; i < 2; i++) {
			char s[32];
			snprintf(s, sizeof(s), "disk%zu-%zu", k, i);
			d->chunks[i].index = 2 * i;
			digest_of(s, &d->chunks[i].digest);
		}
		d->nchunks = 2;
	}
	m->ndisks = ndisks;
}

static char *write_ok(const struct spore_manifest *m, size_t *len)
{
	sl_error_t err = NULL;
	char *buf = NULL;

	if (spore_manifest_write(m, &buf, len, &err) < 0)
		fail_msg("write failed: %s", sl_error_msg(err));
	assert_non_null(buf);
	assert_int_equal(strlen(buf), *len);
	return buf;
}

static void parse_ok(const char *buf, size_t len, struct spore_manifest *m)
{
	sl_error_t err = NULL;

	if (spore_manifest_parse(buf, len, m, &err) < 0)
		fail_msg("parse failed: %s\n%s", sl_error_msg(err), buf);
	assert_null(err);
}

static void assert_same(const struct spore_manifest *a, const struct spore_manifest *b)
{
	assert_int_equal(a->version, b->version);
	assert_string_equal(a->created, b->created);
	assert_string_equal(a->arch, b->arch);
	assert_string_equal(a->hypervisor, b->hypervisor);
	assert_string_equal(a->cpu_vendor, b->cpu_vendor);
	assert_int_equal(a->tsc_khz, b->tsc_khz);
	assert_int_equal(a->nfeatures, b->nfeatures);
	for (size_t i = 0; i < a->nfeatures; i++)
		assert_string_equal(a->features[i], b->features[i]);
	assert_int_equal(a->ncaps, b->ncaps);
	for (size_t i = 0; i < a->ncaps; i++)
		assert_string_equal(a->kvm_caps[i], b->kvm_caps[i]);
	assert_int_equal(a->vcpus, b->vcpus);
	assert_int_equal(a->mem_mib, b->mem_mib);
	assert_string_equal(a->vm_state.path, b->vm_state.path);
	assert_true(sl_digest_equal(&a->vm_state.digest, &b->vm_state.digest));
	assert_int_equal(a->vm_state.size, b->vm_state.size);
	for (unsigned i = 0; i < a->vcpus; i++) {
		assert_string_equal(a->vcpu_state[i].path, b->vcpu_state[i].path);
		assert_true(sl_digest_equal(&a->vcpu_state[i].digest, &b->vcpu_state[i].digest));
		assert_int_equal(a->vcpu_state[i].size, b->vcpu_state[i].size);
	}
	assert_int_equal(a->nchunks, b->nchunks);
	for (size_t i = 0; i < a->nchunks; i++) {
		assert_int_equal(a->chunks[i].index, b->chunks[i].index);
		assert_true(sl_digest_equal(&a->chunks[i].digest, &b->chunks[i].digest));
	}
	assert_int_equal(a->platform, b->platform);
	assert_int_equal(a->vsock_cid, b->vsock_cid);
	assert_int_equal(a->ndisks, b->ndisks);
	for (size_t k = 0; k < a->ndisks; k++) {
		assert_int_equal(a->disks[k].size, b->disks[k].size);
		assert_int_equal(a->disks[k].read_only, b->disks[k].read_only);
		assert_int_equal(a->disks[k].nchunks, b->disks[k].nchunks);
		for (size_t i = 0; i < a->disks[k].nchunks; i++) {
			assert_int_equal(a->disks[k].chunks[i].index, b->disks[k].chunks[i].index);
			assert_true(sl_digest_equal(&a->disks[k].chunks[i].digest, &b->disks[k].chunks[i].digest));
		}
	}
	assert_int_equal(a->has_parent, b->has_parent);
	if (a->has_parent)
		assert_true(sl_digest_equal(&a->parent, &b->parent));
	assert_string_equal(a->gen_id, b->gen_id);
	assert_string_equal(a->gen_parent, b->gen_parent);
	assert_int_equal(a->gen_counter, b->gen_counter);
	assert_int_equal(a->depth, b->depth);
}

/* write -> parse gives the same manifest, and writing that again gives
 * byte-identical JSON (the manifest digest is stable). */
static void round_trip(struct spore_manifest *m)
{
	struct spore_manifest back;
	size_t len1, len2;
	_cleanup_free_ char *a = write_ok(m, &len1);
	_cleanup_free_ char *b = NULL;

	parse_ok(a, len1, &back);
	assert_same(m, &back);
	b = write_ok(&back, &len2);
	assert_int_equal(len1, len2);
	assert_memory_equal(a, b, len1);
	spore_manifest_free(&back);
	spore_manifest_free(m);
}

static void test_round_trip(void **state)
{
	struct spore_manifest m;

	(void)state;
	make(&m, 2, 128, 3, true);
	round_trip(&m);
	make(&m, 1, 2, 0, false); /* smallest machine, no chunks, no parent */
	round_trip(&m);
	make(&m, SPORE_MAX_VCPUS, SPORE_MAX_MEM_MIB, SPORE_MAX_MEM_MIB / 2, true); /* largest */
	round_trip(&m);
	make(&m, 2, 256, 2, true); /* Linux machines, with and without disks */
	make_linux(&m, 0);
	round_trip(&m);
	make(&m, 2, 256, 2, true);
	make_linux(&m, SPORE_MAX_DISKS);
	round_trip(&m);
}

/* Disk chunks are visited after memory chunks by each_chunk. */
static int count_chunk(const sl_digest *d, void *arg)
{
	(void)d;
	return ++*(int *)arg == 100 ? 7 : 0;
}

static void test_linux_machine(void **state)
{
	struct spore_manifest m, back;
	size_t len;
	int n = 0;

	(void)state;
	make(&m, 1, 64, 3, false);
	make_linux(&m, 2);
	assert_int_equal(spore_manifest_chunk_refs(&m), 7);
	assert_int_equal(spore_manifest_each_chunk(&m, count_chunk, &n), 0);
	assert_int_equal(n, 7);
	_cleanup_free_ char *buf = write_ok(&m, &len);
	assert_non_null(strstr(buf, "\"platform\": \"linux\""));
	assert_non_null(strstr(buf, "\"read_only\": true"));
	parse_ok(buf, len, &back);
	assert_same(&m, &back);
	struct spore_manifest c;
	sl_error_t err = NULL;
	assert_int_equal(spore_manifest_copy(&back, &c, &err), 0);
	spore_manifest_free(&back); /* the copy owns its disk chunk lists */
	assert_int_equal(c.disks[1].nchunks, 2);
	assert_int_equal(c.disks[1].chunks[1].index, 2);
	spore_manifest_free(&c);
	spore_manifest_free(&m);

	/* A bare machine's JSON has no platform words at all (older readers). */
	make(&m, 1, 64, 1, false);
	_cleanup_free_ char *bare = write_ok(&m, &len);
	assert_null(strstr(bare, "platform\": \""));
	assert_null(strstr(bare, "vsock_cid"));
	spore_manifest_free(&m);

	/* A bare machine with a vsock device (the test guest's agent) records
	 * the CID, still without platform words, and reads back the same. */
	make(&m, 1, 64, 1, false);
	m.vsock_cid = 3;
	_cleanup_free_ char *bare_vsock = write_ok(&m, &len);
	assert_null(strstr(bare_vsock, "platform\": \""));
	assert_non_null(strstr(bare_vsock, "\"vsock_cid\": 3"));
	struct spore_manifest back2;
	sl_error_t err2 = NULL;
	assert_int_equal(spore_manifest_parse(bare_vsock, len, &back2, &err2), 0);
	assert_int_equal(back2.platform, SPORE_PLATFORM_BARE);
	assert_int_equal(back2.vsock_cid, 3);
	spore_manifest_free(&back2);
	spore_manifest_free(&m);
}

static void test_round_trip_json_shape(void **state)
{
	struct spore_manifest m;
	_cleanup_json_ json_t *j = NULL;
	sl_error_t err = NULL;
	size_t len;
	_cleanup_free_ char *buf = NULL;

	(void)state;
	make(&m, 1, 64, 2, false);
	buf = write_ok(&m, &len);
	spore_manifest_free(&m);
	assert_int_equal(sl_json_parse(buf, len, "t", &j, &err), 0);
	assert_string_equal(json_string_value(json_object_get(j, "mediaType")), SPORE_MEDIA_TYPE);
	assert_int_equal(json_integer_value(json_object_get(j, "version")), 1);
	assert_true(json_is_null(json_object_get(j, "parent")));
	assert_true(json_is_null(json_object_get(json_object_get(j, "generation"), "parent")));
	json_t *mem = json_object_get(j, "memory");
	assert_int_equal(json_integer_value(json_object_get(mem, "chunk_size")), SPORE_CHUNK_SIZE);
	assert_int_equal(json_integer_value(json_object_get(mem, "size")), 64 << 20);
	assert_int_equal(json_array_size(json_object_get(j, "disks")), 0);
	/* Stable bytes: sorted keys, trailing newline. */
	assert_int_equal(buf[len - 1], '\n');
	assert_true(strstr(buf, "\"created\"") < strstr(buf, "\"disks\""));
}

/* ---- mutations of a valid manifest ---- */

/* Finds the parent of the last path component ("a.b[2].c"), creating
 * nothing; returns the container and the final key or index. */
static json_t *walk(json_t *root, const char *path, char *key, size_t *index, bool *is_index)
{
	char buf[128];
	char *save = NULL, *tok, *next;
	json_t *cur = root;

	snprintf(buf, sizeof(buf), "%s", path);
	tok = strtok_r(buf, ".", &save);
	while (tok) {
		next = strtok_r(NULL, ".", &save);
		char *br = strchr(tok, '[');
		if (br)
			*br = 0;
		if (!next && !br) {
			strcpy(key, tok);
			*is_index = false;
			return cur;
		}
		cur = json_object_get(cur, tok);
		assert_non_null(cur);
		while (br) {
			size_t i = strtoul(br + 1, NULL, 10);
			br = strchr(br + 1, '[');
			if (!next && !br) {
				*index = i;
				*is_index = true;
				return cur;
			}
			cur = json_array_get(cur, i);
			assert_non_null(cur);
		}
		tok = next;
	}
	fail_msg("bad path %s", path);
	return NULL;
}

/* Sets (or with v == NULL removes) path in the JSON of a valid manifest. */
static void set(json_t *root, const char *path, json_t *v)
{
	char key[64];
	size_t idx = 0;
	bool is_index = false;
	json_t *c = walk(root, path, key, &idx, &is_index);

	if (is_index) {
		if (v)
			assert_int_equal(json_array_set_new(c, idx, v), 0);
		else
			assert_int_equal(json_array_remove(c, idx), 0);
	} else if (v) {
		assert_int_equal(json_object_set_new(c, key, v), 0);
	} else {
		assert_int_equal(json_object_del(c, key), 0);
	}
}

static json_t *valid_json(unsigned vcpus, uint64_t mem_mib, size_t nchunks)
{
	struct spore_manifest m;
	size_t len;
	json_t *j = NULL;
	sl_error_t err = NULL;

	make(&m, vcpus, mem_mib, nchunks, true);
	_cleanup_free_ char *buf = write_ok(&m, &len);
	spore_manifest_free(&m);
	assert_int_equal(sl_json_parse(buf, len, "t", &j, &err), 0);
	return j;
}

static void expect_reject_buf(const char *buf, size_t len, int code, const char *needle)
{
	struct spore_manifest m;
	sl_error_t err = NULL;

	memset(&m, 0xa5, sizeof(m));
	if (spore_manifest_parse(buf, len, &m, &err) == 0)
		fail_msg("accepted (want \"%s\"):\n%.2000s", needle, buf);
	assert_non_null(err);
	if (err->code != code || !strstr(sl_error_msg(err), needle))
		fail_msg("got %s \"%s\", want %s containing \"%s\"", sl_error_code_name(err->code),
			 sl_error_msg(err), sl_error_code_name(code), needle);
	/* A failed parse leaves nothing to free; freeing again is harmless. */
	assert_null(m.features);
	assert_null(m.kvm_caps);
	assert_null(m.chunks);
	spore_manifest_free(&m);
	sl_error_free(&err);
}

static void expect_reject(json_t *j, int code, const char *needle)
{
	_cleanup_free_ char *buf = json_dumps(j, JSON_SORT_KEYS);

	assert_non_null(buf);
	expect_reject_buf(buf, strlen(buf), code, needle);
}

/* Applies one change to a fresh valid manifest and expects a rejection. */
static void reject(const char *path, json_t *v, int code, const char *needle)
{
	_cleanup_json_ json_t *j = valid_json(2, 128, 3);

	set(j, path, v);
	expect_reject(j, code, needle);
}

static json_t *chunk(uint64_t index, const char *text)
{
	sl_digest d;
	char s[SL_DIGEST_STRLEN];

	digest_of(text, &d);
	sl_digest_format(&d, s);
	return json_pack("{s:I, s:s}", "index", (json_int_t)index, "digest", s);
}

static void test_reject_version(void **state)
{
	(void)state;
	reject("version", json_integer(2), SL_E_UNSUPPORTED, "unknown spore format version 2 (this build reads 1)");
	reject("version", json_integer(0), SL_E_UNSUPPORTED, "unknown spore format version 0");
	reject("version", json_string("1"), SL_E_INVALID, "manifest.json: field \"version\" must be");
	reject("version", NULL, SL_E_INVALID, "manifest.json: field \"version\" missing");
	reject("mediaType", json_string("application/json"), SL_E_INVALID, "mediaType is \"application/json\"");
	reject("mediaType", NULL, SL_E_INVALID, "field \"mediaType\" missing");
}

static void test_reject_platform(void **state)
{
	(void)state;
	reject("platform.arch", json_string("aarch64"), SL_E_UNSUPPORTED,
	       "platform contract not met: spore is for aarch64");
	reject("platform.hypervisor", json_string("xen"), SL_E_UNSUPPORTED,
	       "platform contract not met: spore needs hypervisor xen");
	reject("platform.tsc_khz", json_integer(0), SL_E_INVALID, "tsc_khz 0 out of range");
	reject("platform.tsc_khz", json_integer(100000001), SL_E_INVALID, "tsc_khz 100000001 out of range");
	reject("platform.tsc_khz", json_real(1.5), SL_E_INVALID, "field \"tsc_khz\" must be");
	reject("platform.cpu_vendor", json_string("VendorNameTooLong"), SL_E_INVALID,
	       "field \"cpu_vendor\" longer than 15 bytes");
	reject("platform.features[1]", json_integer(7), SL_E_INVALID, "\"features\"[1] must be a short string");
	reject("platform.features[0]", json_string(""), SL_E_INVALID, "\"features\"[0] must be a short string");
	reject("platform.kvm_caps", json_string("irqchip"), SL_E_INVALID, "field \"kvm_caps\" must be");
	reject("platform", NULL, SL_E_INVALID, "field \"platform\" missing");
}

static void test_reject_machine(void **state)
{
	(void)state;
	reject("machine.vcpus", json_integer(0), SL_E_INVALID, "machine.vcpus 0 not in 1..16");
	reject("machine.vcpus", json_integer(17), SL_E_INVALID, "machine.vcpus 17 not in 1..16");
	reject("machine.vcpus", json_integer(-1), SL_E_INVALID, "field \"vcpus\" must be");
	reject("machine.vcpus", json_string("2"), SL_E_INVALID, "field \"vcpus\" must be");
	/* machine and state disagree on the number of vCPUs */
	reject("machine.vcpus", json_integer(1), SL_E_INVALID, "state.vcpus has 2 entries, machine has 1 vcpus");
	reject("machine.memory_mib", json_integer(129), SL_E_INVALID, "machine.memory_mib 129 must be even");
	reject("machine.memory_mib", json_integer(0), SL_E_INVALID, "machine.memory_mib 0 must be even");
	reject("machine.memory_mib", json_integer(SPORE_MAX_MEM_MIB + 2), SL_E_INVALID, "machine.memory_mib 3074");
	reject("machine", NULL, SL_E_INVALID, "field \"machine\" missing");
}

static void test_reject_state(void **state)
{
	(void)state;
	reject("state.vcpus[0].path", json_string("spore/vcpu-1.state"), SL_E_INVALID,
	       "state.vcpus[0] path must be \"spore/vcpu-0.state\", got \"spore/vcpu-1.state\"");
	reject("state.vcpus[1].path", json_string("spore/../../etc/passwd"), SL_E_INVALID,
	       "state.vcpus[1] path must be \"spore/vcpu-1.state\"");
	reject("state.vcpus[0].path", json_string("/spore/vcpu-0.state"), SL_E_INVALID, "path must be");
	reject("state.vm.path", json_string("spore/vcpu-0.state"), SL_E_INVALID,
	       "state.vm path must be \"spore/vm.state\"");
	reject("state.vm.digest", json_string("md5:0123"), SL_E_INVALID, "state.vm digest");
	reject("state.vm.digest", json_string("sha256:ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789"),
	       SL_E_INVALID, "state.vm digest");
	reject("state.vcpus[1].size", json_string("1"), SL_E_INVALID, "state.vcpus[1]");
	reject("state.vcpus[1].size", json_integer(SPORE_STATE_MAX + 1), SL_E_LIMIT,
	       "state.vcpus[1] is 4194305 bytes, the limit is 4194304");
	reject("state.vm.size", json_integer(SPORE_STATE_MAX + 1), SL_E_LIMIT, "state.vm is 4194305 bytes");
	reject("state.vcpus[1]", NULL, SL_E_INVALID, "state.vcpus has 1 entries, machine has 2 vcpus");
	reject("state.vcpus[1]", json_string("spore/vcpu-1.state"), SL_E_INVALID, "state.vcpus[1] must be an object");
	reject("state.vm", NULL, SL_E_INVALID, "field \"state.vm\" missing");
	reject("state.vm.digest", NULL, SL_E_INVALID, "field \"digest\" missing");
}

static void test_reject_memory(void **state)
{
	(void)state;
	reject("memory.size", json_integer(64 << 20), SL_E_INVALID,
	       "memory.size 67108864 does not match machine.memory_mib");
	reject("memory.chunk_size", json_integer(4096), SL_E_UNSUPPORTED, "memory.chunk_size 4096");
	/* indices must strictly increase and stay below size / chunk_size */
	reject("memory.chunks[1]", chunk(0, "x"), SL_E_INVALID, "memory.chunks[1] index 0 out of order");
	reject("memory.chunks[1]", chunk(0, "x"), SL_E_INVALID, "out of order or beyond the end");
	reject("memory.chunks[2]", chunk(3, "x"), SL_E_INVALID, "memory.chunks[2] index 3 out of order");
	reject("memory.chunks[2]", chunk(64, "x"), SL_E_INVALID, "memory.chunks[2] index 64 out of order or beyond the end");
	reject("memory.chunks[0].digest", json_string("sha256:1234"), SL_E_INVALID, "memory.chunks[0]");
	reject("memory.chunks[0].digest", json_integer(1), SL_E_INVALID, "memory.chunks[0]");
	reject("memory.chunks[0].index", NULL, SL_E_INVALID, "memory.chunks[0]");
	reject("memory.chunks[0]", json_string("chunk"), SL_E_INVALID, "memory.chunks[0] must be an object");
	reject("memory.chunks", json_object(), SL_E_INVALID, "field \"chunks\" must be");
	/* disks only on the Linux platform, and well-formed */
	reject("disks", json_pack("[{}]"), SL_E_INVALID, "disks need machine.platform \"linux\"");
	reject("machine.platform", json_string("windows"), SL_E_UNSUPPORTED, "machine.platform must be");
	reject("machine.platform", json_integer(1), SL_E_UNSUPPORTED, "machine.platform must be");
	reject("machine.vsock_cid", json_integer(2), SL_E_INVALID, "machine.vsock_cid 2 must be 0, or 3..");
	reject("disks", NULL, SL_E_INVALID, "field \"disks\" missing");

	/* more chunks than slots */
	_cleanup_json_ json_t *j = valid_json(1, 4, 2); /* 2 slots */
	json_array_append_new(json_object_get(json_object_get(j, "memory"), "chunks"), chunk(2, "extra"));
	expect_reject(j, SL_E_INVALID, "3 chunks for 2 chunk slots");
}

/* A valid Linux manifest with two disks, one change, a rejection. */
static void reject_linux(const char *path, json_t *v, int code, const char *needle)
{
	struct spore_manifest m;
	size_t len;
	json_t *j = NULL;
	sl_error_t err = NULL;

	make(&m, 2, 128, 3, true);
	make_linux(&m, 2);
	_cleanup_free_ char *buf = write_ok(&m, &len);
	spore_manifest_free(&m);
	assert_int_equal(sl_json_parse(buf, len, "t", &j, &err), 0);
	set(j, path, v);
	expect_reject(j, code, needle);
	json_decref(j);
}

static void test_reject_disks(void **state)
{
	(void)state;
	reject_linux("machine.vsock_cid", json_integer(2), SL_E_INVALID, "machine.vsock_cid 2 must be 0, or 3..");
	reject_linux("machine.vsock_cid", json_integer(0xffffffffll), SL_E_INVALID, "machine.vsock_cid 4294967295");
	reject_linux("disks[0].size", json_integer(1000), SL_E_INVALID, "disks[0].size 1000 must be a non-zero multiple of 512");
	reject_linux("disks[1].size", json_integer(0), SL_E_INVALID, "disks[1].size 0");
	reject_linux("disks[0].size", json_integer((json_int_t)SPORE_DISK_MAX_BYTES + 512), SL_E_INVALID, "up to 1 TiB");
	reject_linux("disks[0].read_only", json_integer(0), SL_E_INVALID, "disks[0].read_only must be true or false");
	reject_linux("disks[0].read_only", NULL, SL_E_INVALID, "disks[0].read_only");
	reject_linux("disks[1].chunks[1]", chunk(3, "x"), SL_E_INVALID, "disks[1].chunks[1] index 3 out of order or beyond the end");
	reject_linux("disks[1].chunks[0]", chunk(2, "x"), SL_E_INVALID, "disks[1].chunks[1] index 2 out of order");
	reject_linux("disks[0].chunks[0].digest", json_string("sha256:00"), SL_E_INVALID, "disks[0].chunks[0]");
	reject_linux("disks[0].chunks", NULL, SL_E_INVALID, "disks[0]");
	reject_linux("disks[1]", json_string("disk"), SL_E_INVALID, "disks[1] must be an object");
	/* more disks than the device layout has room for */
	json_t *many = json_array();
	for (int i = 0; i <= SPORE_MAX_DISKS; i++)
		json_array_append_new(many, json_pack("{s:I, s:b, s:[]}", "size", (json_int_t)512, "read_only", 0, "chunks"));
	reject_linux("disks", many, SL_E_LIMIT, "9 disks, the limit is 8");
}

static void test_reject_lineage(void **state)
{
	(void)state;
	reject("generation.id", json_string("0123456789abcdef0123456789abcde"), SL_E_INVALID,
	       "generation ids must be 32 lowercase hex digits");
	reject("generation.id", json_string("0123456789ABCDEF0123456789ABCDEF"), SL_E_INVALID,
	       "generation ids must be 32 lowercase hex digits");
	reject("generation.id", json_string("0123456789abcdef0123456789abcdefa"), SL_E_INVALID,
	       "generation ids must be 32 lowercase hex digits");
	reject("generation.id", json_string("g123456789abcdef0123456789abcdef"), SL_E_INVALID,
	       "generation ids must be 32 lowercase hex digits");
	reject("generation.parent", json_string("xyz"), SL_E_INVALID, "generation ids must be 32 lowercase hex digits");
	reject("generation.parent", json_integer(5), SL_E_INVALID, "generation.parent must be a string or null");
	reject("generation.counter", json_integer(-1), SL_E_INVALID, "field \"counter\" must be");
	reject("generation.depth", NULL, SL_E_INVALID, "field \"depth\" missing");
	reject("generation", NULL, SL_E_INVALID, "field \"generation\" missing");
	reject("parent", NULL, SL_E_INVALID, "field \"parent\" missing");
	reject("parent", json_string("sha256:00"), SL_E_INVALID, "parent must be null or");
	reject("parent.digest", json_string("sha256:00"), SL_E_INVALID, "parent.digest");
	reject("parent.digest", NULL, SL_E_INVALID, "parent must be null or {\"digest\": ...}");
	reject("created", NULL, SL_E_INVALID, "field \"created\" missing");
	reject("created", json_string("2026-01-02T03:04:05.123456789+00:00"), SL_E_INVALID,
	       "field \"created\" longer than 31 bytes");
}

static void test_reject_syntax(void **state)
{
	size_t len;
	struct spore_manifest m;

	(void)state;
	expect_reject_buf("[]", 2, SL_E_INVALID, "manifest.json: not a JSON object");
	expect_reject_buf("", 0, SL_E_INVALID, "manifest.json");
	expect_reject_buf("{\"version\": 1,", 14, SL_E_INVALID, "manifest.json");
	make(&m, 1, 8, 1, false);
	_cleanup_free_ char *buf = write_ok(&m, &len);
	spore_manifest_free(&m);
	for (size_t cut = 0; cut < len - 1; cut += 7) /* every truncation fails cleanly */
		expect_reject_buf(buf, cut, SL_E_INVALID, "manifest.json");
	_cleanup_free_ char *dup = malloc(len + 3);
	memcpy(dup, buf, len);
	memcpy(dup + len, "{}\n", 3);
	expect_reject_buf(dup, len + 3, SL_E_INVALID, "manifest.json");
	/* a duplicated key must not silently pick one of the values */
	char *v = strstr(buf, "\"version\": 1");
	assert_non_null(v);
	_cleanup_free_ char *twice = NULL;
	assert_true(asprintf(&twice, "%.*s\"version\": 1, %s", (int)(v - buf), buf, v) > 0);
	expect_reject_buf(twice, strlen(twice), SL_E_INVALID, "duplicate");
}

static void test_limits(void **state)
{
	(void)state;
	/* 512 names are fine, 513 are not */
	_cleanup_json_ json_t *ok = valid_json(1, 8, 1);
	_cleanup_json_ json_t *many = valid_json(1, 8, 1);
	json_t *f_ok = json_array(), *f_many = json_array();
	for (int i = 0; i < 513; i++) {
		char s[16];
		snprintf(s, sizeof(s), "f%d", i);
		if (i < 512)
			json_array_append_new(f_ok, json_string(s));
		json_array_append_new(f_many, json_string(s));
	}
	json_object_set_new(json_object_get(ok, "platform"), "features", f_ok);
	json_object_set_new(json_object_get(many, "platform"), "kvm_caps", f_many);
	{
		_cleanup_free_ char *buf = json_dumps(ok, 0);
		struct spore_manifest m;
		parse_ok(buf, strlen(buf), &m);
		assert_int_equal(m.nfeatures, 512);
		spore_manifest_free(&m);
	}
	expect_reject(many, SL_E_LIMIT, "\"kvm_caps\" has 513 entries, the limit is 512");

	/* names up to 64 bytes */
	char n64[66];
	memset(n64, 'a', 65);
	n64[65] = 0;
	reject("platform.features[0]", json_string(n64), SL_E_INVALID, "\"features\"[0] must be a short string");
	n64[64] = 0;
	{
		_cleanup_json_ json_t *j = valid_json(1, 8, 1);
		set(j, "platform.features[0]", json_string(n64));
		_cleanup_free_ char *buf = json_dumps(j, 0);
		struct spore_manifest m;
		parse_ok(buf, strlen(buf), &m);
		assert_string_equal(m.features[0], n64);
		spore_manifest_free(&m);
	}

	/* the whole document: SPORE_MANIFEST_MAX bytes */
	size_t big = SPORE_MANIFEST_MAX + 1;
	_cleanup_free_ char *huge = malloc(big);
	assert_non_null(huge);
	memset(huge, ' ', big);
	huge[0] = '{';
	huge[big - 1] = '}';
	expect_reject_buf(huge, big, SL_E_LIMIT, "manifest.json: 4194305 bytes, the limit is 4194304");
	expect_reject_buf(huge + 1, big - 1, SL_E_INVALID, "manifest.json"); /* at the limit: parsed, then invalid */
}

static void test_copy(void **state)
{
	struct spore_manifest m, c;
	sl_error_t err = NULL;
	size_t l1, l2;

	(void)state;
	make(&m, 3, 256, 5, true);
	assert_int_equal(spore_manifest_copy(&m, &c, &err), 0);
	_cleanup_free_ char *a = write_ok(&m, &l1);
	spore_manifest_free(&m); /* the copy owns its own lists */
	_cleanup_free_ char *b = write_ok(&c, &l2);
	assert_int_equal(l1, l2);
	assert_memory_equal(a, b, l1);
	spore_manifest_free(&c);

	make(&m, 1, 2, 0, false);
	assert_int_equal(spore_manifest_copy(&m, &c, &err), 0);
	assert_int_equal(c.nchunks, 0);
	spore_manifest_free(&m);
	spore_manifest_free(&c);
}

static void test_chunk_path(void **state)
{
	sl_digest d;
	char path[96], hex[SL_DIGEST_HEXLEN + 1];

	(void)state;
	digest_of("abc", &d);
	spore_chunk_path(&d, path);
	sl_digest_hex(&d, hex);
	assert_string_equal(path, "chunks/sha256/ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
	assert_int_equal(strlen(path), strlen("chunks/sha256/") + 64);
	assert_string_equal(path + strlen("chunks/sha256/"), hex);
}

static void test_load(void **state)
{
	struct scratch s;
	struct spore_manifest m, got;
	sl_error_t err = NULL;
	sl_digest d, want;
	size_t len;

	(void)state;
	assert_int_equal(scratch_make(&s), 0);
	make(&m, 2, 64, 2, true);
	_cleanup_free_ char *buf = write_ok(&m, &len);
	assert_int_equal(mkdirat(s.fd, "spore", 0755), 0);
	assert_int_equal(sl_write_atomic(s.fd, SPORE_MANIFEST_PATH, buf, len, 0444, &err), 0);
	assert_int_equal(spore_manifest_load(s.fd, &got, &d, &err), 0);
	sl_sha256(buf, len, &want);
	assert_true(sl_digest_equal(&d, &want));
	assert_same(&m, &got);
	spore_manifest_free(&got);
	spore_manifest_free(&m);

	/* spore/manifest.json must not be reached through a symlink */
	assert_int_equal(renameat(s.fd, "spore", s.fd, "real"), 0);
	assert_int_equal(symlinkat("real", s.fd, "spore"), 0);
	assert_int_equal(spore_manifest_load(s.fd, &got, &d, &err), -1);
	assert_non_null(err);
	assert_non_null(strstr(sl_error_msg(err), "spore manifest"));
	sl_error_free(&err);
	assert_int_equal(unlinkat(s.fd, "spore", 0), 0);
	assert_int_equal(spore_manifest_load(s.fd, &got, &d, &err), -1);
	assert_int_equal(err->code, SL_E_NOT_FOUND);
	sl_error_free(&err);
	scratch_drop(&s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_round_trip_json_shape),
		cmocka_unit_test(test_reject_version),
		cmocka_unit_test(test_reject_platform),
		cmocka_unit_test(test_reject_machine),
		cmocka_unit_test(test_reject_state),
		cmocka_unit_test(test_reject_memory),
		cmocka_unit_test(test_reject_lineage),
		cmocka_unit_test(test_reject_disks),
		cmocka_unit_test(test_linux_machine),
		cmocka_unit_test(test_reject_syntax),
		cmocka_unit_test(test_limits),
		cmocka_unit_test(test_copy),
		cmocka_unit_test(test_chunk_path),
		cmocka_unit_test(test_load),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
