/* Unit tests for oci/image.h: manifest encode/decode (both shapes), chunk tables, config, push planning. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "oci/image.h"
#include "oci/tar.h"
#include "sl/file.h"
#include "sl/json.h"

#define CHUNK_TAR (512u + SPORE_CHUNK_SIZE)
#define GEN_ID "0123456789abcdef0123456789abcdef"

/* ---- helpers ---- */

static void digest_of(const char *s, sl_digest *d)
{
	sl_sha256(s, strlen(s), d);
}

static char *dstr(const sl_digest *d) /* static buffers, rotating */
{
	static char buf[8][SL_DIGEST_STRLEN];
	static int k;
	char *s = buf[k++ & 7];

	sl_digest_format(d, s);
	return s;
}

static char *dhex(const sl_digest *d)
{
	static char buf[8][SL_DIGEST_HEXLEN + 1];
	static int k;
	char *s = buf[k++ & 7];

	sl_digest_hex(d, s);
	return s;
}

static void decode_ok(const char *json, size_t len, struct spore_image *img)
{
	sl_error_t err = NULL;

	if (spore_image_decode(json, len, img, &err) < 0)
		fail_msg("decode failed: %s\n%s", sl_error_msg(err), json);
}

static char *encode_ok(const struct spore_image *img, size_t *len)
{
	sl_error_t err = NULL;
	char *j = NULL;

	if (spore_image_encode(img, &j, len, &err) < 0)
		fail_msg("encode failed: %s", sl_error_msg(err));
	assert_int_equal(strlen(j), *len);
	return j;
}

static void assert_same_image(const struct spore_image *a, const struct spore_image *b)
{
	assert_int_equal(a->shape, b->shape);
	assert_string_equal(a->artifact_type, b->artifact_type);
	assert_string_equal(a->config_media_type, b->config_media_type);
	assert_true(sl_digest_equal(&a->config_digest, &b->config_digest));
	assert_int_equal(a->config_size, b->config_size);
	assert_int_equal(a->has_spore_manifest, b->has_spore_manifest);
	if (a->has_spore_manifest)
		assert_true(sl_digest_equal(&a->spore_manifest, &b->spore_manifest));
	assert_int_equal(a->has_parent, b->has_parent);
	if (a->has_parent)
		assert_true(sl_digest_equal(&a->parent, &b->parent));
	assert_int_equal(a->nlayers, b->nlayers);
	for (size_t i = 0; i < a->nlayers; i++) {
		const struct oci_layer *x = &a->layers[i], *y = &b->layers[i];

		assert_string_equal(x->media_type, y->media_type);
		assert_true(sl_digest_equal(&x->digest, &y->digest));
		assert_int_equal(x->size, y->size);
		assert_string_equal(x->title, y->title);
		assert_int_equal(x->nchunks, y->nchunks);
		for (size_t k = 0; k < x->nchunks; k++) {
			assert_true(sl_digest_equal(&x->chunks[k].digest, &y->chunks[k].digest));
			assert_int_equal(x->chunks[k].offset, y->chunks[k].offset);
		}
	}
}

static int cmp_loc(const void *a, const void *b)
{
	return memcmp(a, b, SL_DIGEST_LEN);
}

/* A hand-made TAR-shaped image: meta layer and two chunk layers. */
static void make_image(struct spore_image *img, bool parent)
{
	memset(img, 0, sizeof(*img));
	img->shape = SPORE_SHAPE_TAR;
	strcpy(img->artifact_type, SPORE_ARTIFACT_TYPE);
	strcpy(img->config_media_type, OCI_MT_CONFIG);
	digest_of("config", &img->config_digest);
	img->config_size = 345;
	img->has_spore_manifest = true;
	digest_of("spore manifest", &img->spore_manifest);
	if (parent) {
		img->has_parent = true;
		digest_of("parent manifest", &img->parent);
	}
	img->nlayers = 3;
	img->layers = calloc(3, sizeof(*img->layers));
	assert_non_null(img->layers);
	for (size_t i = 0; i < 3; i++) {
		struct oci_layer *l = &img->layers[i];
		char s[32];

		strcpy(l->media_type, OCI_MT_LAYER_TAR);
		snprintf(s, sizeof(s), "layer%zu", i);
		digest_of(s, &l->digest);
		if (i == 0) {
			strcpy(l->title, SPORE_META_TITLE);
			l->size = 12800;
			continue;
		}
		l->nchunks = i == 1 ? 3 : 1;
		l->size = l->nchunks * CHUNK_TAR + 1024;
		l->chunks = calloc(l->nchunks, sizeof(*l->chunks));
		assert_non_null(l->chunks);
		for (size_t k = 0; k < l->nchunks; k++) {
			snprintf(s, sizeof(s), "chunk%zu.%zu", i, k);
			digest_of(s, &l->chunks[k].digest);
		}
		qsort(l->chunks, l->nchunks, sizeof(*l->chunks), cmp_loc);
		for (size_t k = 0; k < l->nchunks; k++)
			l->chunks[k].offset = 512 + k * CHUNK_TAR;
		snprintf(l->title, sizeof(l->title), "chunks-%.12s.tar", dhex(&l->chunks[0].digest));
	}
}

/* ---- encode / decode ---- */

static void test_round_trip(void **state)
{
	struct spore_image img, back, again;
	size_t l1, l2;
	char *a, *b;

	(void)state;
	for (int parent = 0; parent < 2; parent++) {
		make_image(&img, parent);
		a = encode_ok(&img, &l1);
		decode_ok(a, l1, &back);
		assert_same_image(&img, &back);
		b = encode_ok(&back, &l2);
		assert_int_equal(l1, l2);
		assert_memory_equal(a, b, l1);
		decode_ok(b, l2, &again);
		assert_same_image(&img, &again);
		spore_image_free(&again);
		spore_image_free(&back);
		spore_image_free(&img);
		free(a);
		free(b);
	}
}

/* The exact bytes: compact, fixed key order, annotations sorted. */
static void test_encode_exact(void **state)
{
	struct spore_image img;
	struct oci_layer layers[2];
	struct oci_chunk_loc loc;
	char want[2048];
	size_t len;
	char *j;

	(void)state;
	memset(&img, 0, sizeof(img));
	memset(layers, 0, sizeof(layers));
	img.shape = SPORE_SHAPE_TAR;
	strcpy(img.artifact_type, SPORE_ARTIFACT_TYPE);
	strcpy(img.config_media_type, OCI_MT_CONFIG);
	digest_of("c", &img.config_digest);
	img.config_size = 7;
	img.has_spore_manifest = true;
	digest_of("m", &img.spore_manifest);
	img.has_parent = true;
	digest_of("p", &img.parent);
	strcpy(layers[0].media_type, OCI_MT_LAYER_TAR);
	strcpy(layers[0].title, SPORE_META_TITLE);
	digest_of("l0", &layers[0].digest);
	layers[0].size = 3072;
	strcpy(layers[1].media_type, OCI_MT_LAYER_TAR);
	strcpy(layers[1].title, "chunks-x.tar");
	digest_of("l1", &layers[1].digest);
	layers[1].size = CHUNK_TAR + 1024;
	digest_of("k", &loc.digest);
	loc.offset = 512;
	layers[1].chunks = &loc;
	layers[1].nchunks = 1;
	img.layers = layers;
	img.nlayers = 2;
	snprintf(want, sizeof(want),
		 "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\","
		 "\"artifactType\":\"application/vnd.sporelet.spore.v1\","
		 "\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"%s\",\"size\":7},"
		 "\"layers\":["
		 "{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar\",\"digest\":\"%s\",\"size\":3072,"
		 "\"annotations\":{\"org.opencontainers.image.title\":\"spore-meta.tar\"}},"
		 "{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar\",\"digest\":\"%s\",\"size\":2098688,"
		 "\"annotations\":{\"ai.sporelet.spore.chunks\":\"%s@512\",\"org.opencontainers.image.title\":"
		 "\"chunks-x.tar\"}}],"
		 "\"annotations\":{\"ai.sporelet.spore.manifest\":\"%s\",\"ai.sporelet.spore.parent\":\"%s\","
		 "\"ai.sporelet.spore.version\":\"1\"}}",
		 dstr(&img.config_digest), dstr(&layers[0].digest), dstr(&layers[1].digest), dhex(&loc.digest),
		 dstr(&img.spore_manifest), dstr(&img.parent));
	j = encode_ok(&img, &len);
	assert_string_equal(j, want);
	free(j);
}

/* A table written in any order decodes sorted; find_chunk finds every entry. */
static void test_find_chunk(void **state)
{
	struct spore_image img, back;
	size_t len, layer;
	uint64_t off;
	char *j;
	sl_digest none;

	(void)state;
	make_image(&img, false);
	j = encode_ok(&img, &len);
	decode_ok(j, len, &back);
	for (size_t i = 1; i < img.nlayers; i++)
		for (size_t k = 0; k < img.layers[i].nchunks; k++) {
			assert_int_equal(spore_image_find_chunk(&back, &img.layers[i].chunks[k].digest, &layer, &off), 0);
			assert_int_equal(layer, i);
			assert_int_equal(off, img.layers[i].chunks[k].offset);
		}
	digest_of("absent", &none);
	assert_int_equal(spore_image_find_chunk(&back, &none, &layer, &off), -1);
	spore_image_free(&back);
	free(j);

	/* reversed order in the annotation */
	{
		_cleanup_json_ json_t *root = NULL;
		sl_error_t err = NULL;
		char table[512];
		struct oci_layer *l = &img.layers[1];
		char *j2;

		j = encode_ok(&img, &len);
		assert_int_equal(sl_json_parse(j, len, "t", &root, &err), 0);
		snprintf(table, sizeof(table), "%s@%llu,%s@%llu,%s@%llu", dhex(&l->chunks[2].digest),
			 (unsigned long long)l->chunks[2].offset, dhex(&l->chunks[0].digest),
			 (unsigned long long)l->chunks[0].offset, dhex(&l->chunks[1].digest),
			 (unsigned long long)l->chunks[1].offset);
		json_object_set_new(json_object_get(json_array_get(json_object_get(root, "layers"), 1), "annotations"),
				    SPORE_ANN_CHUNKS, json_string(table));
		j2 = json_dumps(root, JSON_COMPACT);
		decode_ok(j2, strlen(j2), &back);
		assert_same_image(&img, &back);
		for (size_t k = 0; k < 3; k++) {
			assert_int_equal(spore_image_find_chunk(&back, &l->chunks[k].digest, &layer, &off), 0);
			assert_int_equal(off, l->chunks[k].offset);
		}
		spore_image_free(&back);
		free(j2);
		free(j);
	}
	spore_image_free(&img);
}

/* Replaces (or with NULL deletes) the value at a '/'-separated path of
 * object keys and array indices; keys may contain '.' but not '/'. */
static void json_set_path(json_t *root, const char *path, json_t *v)
{
	char buf[256], *save = NULL, *tok, *next;
	json_t *cur = root;

	snprintf(buf, sizeof(buf), "%s", path);
	tok = strtok_r(buf, "/", &save);
	while (tok) {
		next = strtok_r(NULL, "/", &save);
		if (!next) {
			if (json_is_array(cur)) {
				if (v)
					json_array_set_new(cur, (size_t)atoi(tok), v);
				else
					json_array_remove(cur, (size_t)atoi(tok));
			} else if (v)
				json_object_set_new(cur, tok, v);
			else
				json_object_del(cur, tok);
			return;
		}
		cur = json_is_array(cur) ? json_array_get(cur, (size_t)atoi(tok)) : json_object_get(cur, tok);
		assert_non_null(cur);
		tok = next;
	}
}

struct mutation {
	const char *path;
	const char *value; /* JSON text; NULL deletes */
	int code;
	const char *want; /* substring of the error */
};

static void expect_bad_json(const char *json, size_t len, int code, const char *want)
{
	struct spore_image img;
	sl_error_t err = NULL;

	if (spore_image_decode(json, len, &img, &err) == 0)
		fail_msg("accepted (want \"%s\"):\n%s", want, json);
	assert_null(img.layers);
	assert_int_equal(img.nlayers, 0);
	if (err->code != code || !strstr(sl_error_msg(err), want))
		fail_msg("want code %d \"%s\", got %d \"%s\"\n%s", code, want, err->code, sl_error_msg(err), json);
	sl_error_free(&err);
}

static void run_mutations(const char *base, const struct mutation *muts, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		_cleanup_json_ json_t *root = NULL;
		sl_error_t err = NULL;
		json_t *v = NULL;
		char *j;

		assert_int_equal(sl_json_parse(base, strlen(base), "t", &root, &err), 0);
		if (muts[i].value) {
			v = json_loads(muts[i].value, JSON_DECODE_ANY, NULL);
			if (!v)
				fail_msg("bad test value %s", muts[i].value);
		}
		json_set_path(root, muts[i].path, v);
		j = json_dumps(root, JSON_COMPACT);
		expect_bad_json(j, strlen(j), muts[i].code, muts[i].want);
		free(j);
	}
}

static void test_bad_tar_manifests(void **state)
{
	struct spore_image img;
	size_t len;
	char *base;
	char dup[256], lead0[128], notmult[128], neg[128];

	(void)state;
	make_image(&img, true);
	base = encode_ok(&img, &len);
	{
		const char *h = dhex(&img.layers[2].chunks[0].digest);

		snprintf(dup, sizeof(dup), "\"%s@512,%s@2098176\"", h, h);
		snprintf(lead0, sizeof(lead0), "\"%s@0512\"", h);
		snprintf(notmult, sizeof(notmult), "\"%s@513\"", h);
		snprintf(neg, sizeof(neg), "\"%s@-512\"", h);
	}
	char past[128], upper[128], trailing[160], noat[128];
	{
		const char *h = dhex(&img.layers[2].chunks[0].digest);
		char H[65];

		snprintf(past, sizeof(past), "\"%s@2048\"", h); /* 2048 + 2 MiB > a 1-chunk layer */
		for (int i = 0; i < 64; i++)
			H[i] = (char)(h[i] >= 'a' && h[i] <= 'f' ? h[i] - 32 : h[i]);
		H[64] = 0;
		snprintf(upper, sizeof(upper), "\"%s@512\"", H);
		snprintf(trailing, sizeof(trailing), "\"%s@512,\"", h);
		snprintf(noat, sizeof(noat), "\"%s:512\"", h);
	}
	const struct mutation muts[] = {
		{ "schemaVersion", "1", SL_E_UNSUPPORTED, "schemaVersion 1" },
		{ "schemaVersion", "\"2\"", SL_E_INVALID, "schemaVersion" },
		{ "schemaVersion", NULL, SL_E_INVALID, "\"schemaVersion\" missing" },
		{ "mediaType", "\"" OCI_MT_INDEX "\"", SL_E_UNSUPPORTED, "mediaType" },
		{ "mediaType", "\"application/vnd.docker.distribution.manifest.v2+json\"", SL_E_UNSUPPORTED,
		  "mediaType" },
		{ "artifactType", "\"application/vnd.example\"", SL_E_UNSUPPORTED, "artifactType" },
		{ "config/mediaType", "\"application/vnd.example.config\"", SL_E_UNSUPPORTED, "config media type" },
		{ "config/digest", "\"sha256:abc\"", SL_E_INVALID, "config: digest" },
		{ "config/digest", "\"sha512:abc\"", SL_E_INVALID, "config: digest" },
		{ "config/size", "-1", SL_E_INVALID, "size" },
		{ "config", NULL, SL_E_INVALID, "\"config\" missing" },
		{ "layers", NULL, SL_E_INVALID, "\"layers\" missing" },
		{ "layers", "{}", SL_E_INVALID, "layers" },
		{ "layers/1/digest",
		  "\"sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855\"", SL_E_INVALID,
		  "layers[1]: digest" },
		{ "layers/1/size", "-5", SL_E_INVALID, "layers[1]" },
		{ "layers/1/size", "1.5", SL_E_INVALID, "layers[1]" },
		{ "layers/1/mediaType", "\"application/vnd.oci.image.layer.v1.tar+gzip\"", SL_E_UNSUPPORTED,
		  "tar+gzip" },
		{ "layers/1/mediaType", NULL, SL_E_INVALID, "\"mediaType\" missing" },
		{ "layers/1/annotations/org.opencontainers.image.title", "\"../x\"", SL_E_INVALID,
		  "unsafe title \"../x\"" },
		{ "layers/1/annotations/org.opencontainers.image.title", "\"/etc/x\"", SL_E_INVALID, "unsafe title" },
		{ "layers/1/annotations/org.opencontainers.image.title", "\"a//b\"", SL_E_INVALID, "unsafe title" },
		{ "layers/1/annotations/org.opencontainers.image.title", "\"a\\\\b\"", SL_E_INVALID, "unsafe title" },
		{ "layers/1/annotations/org.opencontainers.image.title", "3", SL_E_INVALID, "must be a string" },
		{ "layers/1/annotations", "[]", SL_E_INVALID, "annotations must be an object" },
		{ "layers/2/annotations/ai.sporelet.spore.chunks", "\"\"", SL_E_INVALID, "chunk table is empty" },
		{ "layers/2/annotations/ai.sporelet.spore.chunks", "\"zz@512\"", SL_E_INVALID, "entry 0" },
		{ "layers/2/annotations/ai.sporelet.spore.chunks", upper, SL_E_INVALID, "bad digest" },
		{ "layers/2/annotations/ai.sporelet.spore.chunks", notmult, SL_E_INVALID, "not a multiple of 512" },
		{ "layers/2/annotations/ai.sporelet.spore.chunks", past, SL_E_INVALID, "runs past the layer" },
		{ "layers/2/annotations/ai.sporelet.spore.chunks", lead0, SL_E_INVALID, "bad offset" },
		{ "layers/2/annotations/ai.sporelet.spore.chunks", neg, SL_E_INVALID, "bad offset" },
		{ "layers/2/annotations/ai.sporelet.spore.chunks", trailing, SL_E_INVALID, "chunk table" },
		{ "layers/2/annotations/ai.sporelet.spore.chunks", noat, SL_E_INVALID, "entry 0" },
		{ "layers/1/annotations/ai.sporelet.spore.chunks", dup, SL_E_INVALID, "listed twice" },
		{ "layers/2/annotations/ai.sporelet.spore.chunks", dup, SL_E_INVALID, "entries" },
		{ "layers/2/annotations/ai.sporelet.spore.chunks", NULL, SL_E_INVALID, "neither" },
		{ "layers/0/annotations/org.opencontainers.image.title", "\"meta.tar\"", SL_E_INVALID,
		  "layers[0] (\"meta.tar\"): neither" },
		{ "layers/0", NULL, SL_E_INVALID, "0 layers titled" },
		{ "layers/2/annotations", "{\"org.opencontainers.image.title\":\"spore-meta.tar\"}", SL_E_INVALID,
		  "2 layers titled" },
		{ "annotations/ai.sporelet.spore.version", "\"2\"", SL_E_UNSUPPORTED, "spore version" },
		{ "annotations/ai.sporelet.spore.version", NULL, SL_E_INVALID, "ai.sporelet.spore.version" },
		{ "annotations/ai.sporelet.spore.manifest", NULL, SL_E_INVALID, "ai.sporelet.spore.manifest" },
		{ "annotations/ai.sporelet.spore.manifest", "\"nope\"", SL_E_INVALID, "ai.sporelet.spore.manifest" },
		{ "annotations/ai.sporelet.spore.parent", "\"sha256:00\"", SL_E_INVALID, "ai.sporelet.spore.parent" },
		{ "annotations/ai.sporelet.spore.version", "1", SL_E_INVALID, "must be a string" },
	};
	run_mutations(base, muts, sizeof(muts) / sizeof(muts[0]));

	/* not JSON, not an object, duplicate keys, trailing bytes, too big */
	expect_bad_json("", 0, SL_E_INVALID, "invalid JSON");
	expect_bad_json("[]", 2, SL_E_INVALID, "not a JSON object");
	expect_bad_json("{\"schemaVersion\":2,\"schemaVersion\":2}", 37, SL_E_INVALID, "invalid JSON");
	{
		size_t big = OCI_MANIFEST_MAX + 1;
		char *b = malloc(big);

		assert_non_null(b);
		memset(b, ' ', big);
		b[0] = '{';
		b[big - 1] = '}';
		expect_bad_json(b, big, SL_E_LIMIT, "limit");
		free(b);
	}
	{
		char *t = malloc(len + 2);

		memcpy(t, base, len);
		memcpy(t + len, "{}", 2);
		expect_bad_json(t, len + 2, SL_E_INVALID, "invalid JSON");
		free(t);
	}

	/* no artifactType: still a spore by its config and annotations */
	{
		_cleanup_json_ json_t *root = NULL;
		sl_error_t err = NULL;
		struct spore_image back;
		char *j;

		assert_int_equal(sl_json_parse(base, len, "t", &root, &err), 0);
		json_object_del(root, "artifactType");
		json_object_del(root, "mediaType");
		j = json_dumps(root, JSON_COMPACT);
		decode_ok(j, strlen(j), &back);
		assert_string_equal(back.artifact_type, "");
		assert_int_equal(back.shape, SPORE_SHAPE_TAR);
		spore_image_free(&back);
		free(j);
	}
	free(base);
	spore_image_free(&img);
}

/* ---- the oras shape ---- */

/* What `oras push` (v1.3) writes: Go's json.Marshal of ocispec.Manifest,
 * compact, fields in struct order. */
static char *oras_manifest(const char *layer_mt, const char *extra_layer, const sl_digest *mf, uint64_t mf_size,
			   const sl_digest *chunk)
{
	char *j = malloc(8192);
	const char *mt = layer_mt ? layer_mt : OCI_MT_LAYER_TAR;
	sl_digest vm, vc;

	assert_non_null(j);
	digest_of("vm.state bytes", &vm);
	digest_of("vcpu-0.state bytes", &vc);
	snprintf(j, 8192,
		 "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\","
		 "\"artifactType\":\"application/vnd.sporelet.spore.v1\","
		 "\"config\":{\"mediaType\":\"application/vnd.oci.empty.v1+json\","
		 "\"digest\":\"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a\","
		 "\"size\":2,\"data\":\"e30=\"},"
		 "\"layers\":["
		 "{\"mediaType\":\"%s\",\"digest\":\"%s\",\"size\":%llu,"
		 "\"annotations\":{\"org.opencontainers.image.title\":\"spore/manifest.json\"}},"
		 "{\"mediaType\":\"%s\",\"digest\":\"%s\",\"size\":4152,"
		 "\"annotations\":{\"org.opencontainers.image.title\":\"spore/vm.state\"}},"
		 "{\"mediaType\":\"%s\",\"digest\":\"%s\",\"size\":7008,"
		 "\"annotations\":{\"org.opencontainers.image.title\":\"spore/vcpu-0.state\"}},"
		 "{\"mediaType\":\"%s\",\"digest\":\"%s\",\"size\":2097152,"
		 "\"annotations\":{\"org.opencontainers.image.title\":\"chunks/sha256/%s\"}}%s],"
		 "\"annotations\":{\"org.opencontainers.image.created\":\"2026-03-01T10:20:30Z\"}}",
		 mt, dstr(mf), (unsigned long long)mf_size, mt, dstr(&vm), mt, dstr(&vc), mt, dstr(chunk), dhex(chunk),
		 extra_layer ? extra_layer : "");
	return j;
}

static void test_oras_shape(void **state)
{
	sl_digest mf, chunk;
	struct spore_image img;
	sl_error_t err = NULL;
	size_t len;
	char *j, *enc = NULL;

	(void)state;
	digest_of("manifest bytes", &mf);
	digest_of("chunk bytes", &chunk);
	j = oras_manifest(NULL, NULL, &mf, 1234, &chunk);
	decode_ok(j, strlen(j), &img);
	assert_int_equal(img.shape, SPORE_SHAPE_FILES);
	assert_string_equal(img.artifact_type, SPORE_ARTIFACT_TYPE);
	assert_string_equal(img.config_media_type, OCI_MT_EMPTY);
	assert_int_equal(img.config_size, 2);
	assert_true(img.has_spore_manifest);
	assert_true(sl_digest_equal(&img.spore_manifest, &mf));
	assert_false(img.has_parent);
	assert_int_equal(img.nlayers, 4);
	assert_string_equal(img.layers[0].title, "spore/manifest.json");
	assert_int_equal(img.layers[0].size, 1234);
	assert_string_equal(img.layers[1].title, "spore/vm.state");
	assert_string_equal(img.layers[2].title, "spore/vcpu-0.state");
	assert_string_equal(img.layers[3].title + 14, dhex(&chunk));
	assert_true(sl_digest_equal(&img.layers[3].digest, &chunk));
	for (size_t i = 0; i < 4; i++) {
		assert_string_equal(img.layers[i].media_type, OCI_MT_LAYER_TAR);
		assert_int_equal(img.layers[i].nchunks, 0);
	}
	/* decode-only shape; its config is "{}" */
	assert_int_equal(spore_image_encode(&img, &enc, &len, &err), -1);
	assert_int_equal(err->code, SL_E_UNSUPPORTED);
	sl_error_free(&err);
	assert_int_equal(spore_config_check("{}", 2, &img, &err), 0);
	assert_int_equal(spore_config_check("{\"a\":1}", 7, &img, &err), -1);
	sl_error_free(&err);
	spore_image_free(&img);
	free(j);

	/* the recommended media type, and any other layer type */
	j = oras_manifest(SPORE_MT_FILE, NULL, &mf, 1234, &chunk);
	decode_ok(j, strlen(j), &img);
	assert_string_equal(img.layers[2].media_type, SPORE_MT_FILE);
	spore_image_free(&img);
	free(j);
	j = oras_manifest("application/octet-stream", NULL, &mf, 1234, &chunk);
	decode_ok(j, strlen(j), &img);
	spore_image_free(&img);

	/* `oras push --image-spec v1.0`: no artifactType, the type is the
	 * config's media type */
	{
		_cleanup_json_ json_t *root = NULL;
		char *k;

		assert_int_equal(sl_json_parse(j, strlen(j), "t", &root, &err), 0);
		json_object_del(root, "artifactType");
		json_object_set_new(json_object_get(root, "config"), "mediaType", json_string(SPORE_ARTIFACT_TYPE));
		k = json_dumps(root, JSON_COMPACT);
		decode_ok(k, strlen(k), &img);
		assert_int_equal(img.shape, SPORE_SHAPE_FILES);
		assert_string_equal(img.config_media_type, SPORE_ARTIFACT_TYPE);
		assert_true(img.has_spore_manifest);
		spore_image_free(&img);
		free(k);
	}
	free(j);
}

static void test_oras_rejects(void **state)
{
	sl_digest mf, chunk, other;
	char extra[512];
	char *j;

	(void)state;
	digest_of("manifest bytes", &mf);
	digest_of("chunk bytes", &chunk);
	digest_of("other bytes", &other);

	/* a chunk titled with another digest */
	snprintf(extra, sizeof(extra),
		 ",{\"mediaType\":\"x/y\",\"digest\":\"%s\",\"size\":2097152,"
		 "\"annotations\":{\"org.opencontainers.image.title\":\"chunks/sha256/%s\"}}",
		 dstr(&other), dhex(&chunk));
	j = oras_manifest(NULL, extra, &mf, 10, &chunk);
	expect_bad_json(j, strlen(j), SL_E_INVALID, "does not match the layer digest");
	free(j);

	const struct {
		const char *title;
		const char *want;
	} bad[] = {
		{ "notes.txt", "layer \"notes.txt\": not a spore file" },
		{ "spore/vcpu-01.state", "\"spore/vcpu-01.state\": not a spore file" },
		{ "spore/vcpu-16.state", "\"spore/vcpu-16.state\": not a spore file" },
		{ "spore/vcpu-.state", "not a spore file" },
		{ "spore/vcpu-1.stat", "not a spore file" },
		{ "spore/vm.state", "\"spore/vm.state\" appears twice" },
		{ "spore/manifest.json", "\"spore/manifest.json\" appears twice" },
		{ "spore", "not a spore file" },
		{ "../spore/vm.state", "unsafe title \"../spore/vm.state\"" },
		{ "chunks/sha256/ABC", "not a spore file" },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(extra, sizeof(extra),
			 ",{\"mediaType\":\"x/y\",\"digest\":\"%s\",\"size\":10,"
			 "\"annotations\":{\"org.opencontainers.image.title\":\"%s\"}}",
			 dstr(&other), bad[i].title);
		j = oras_manifest(NULL, extra, &mf, 10, &chunk);
		expect_bad_json(j, strlen(j), SL_E_INVALID, bad[i].want);
		free(j);
	}

	/* a layer without a title */
	snprintf(extra, sizeof(extra), ",{\"mediaType\":\"x/y\",\"digest\":\"%s\",\"size\":10}", dstr(&other));
	j = oras_manifest(NULL, extra, &mf, 10, &chunk);
	expect_bad_json(j, strlen(j), SL_E_INVALID, "layers[4]: no \"org.opencontainers.image.title\"");
	free(j);

	/* the same chunk twice */
	snprintf(extra, sizeof(extra),
		 ",{\"mediaType\":\"x/y\",\"digest\":\"%s\",\"size\":2097152,"
		 "\"annotations\":{\"org.opencontainers.image.title\":\"chunks/sha256/%s\"}}",
		 dstr(&chunk), dhex(&chunk));
	j = oras_manifest(NULL, extra, &mf, 10, &chunk);
	expect_bad_json(j, strlen(j), SL_E_INVALID, "appears twice");
	free(j);

	/* a chunk of the wrong size */
	snprintf(extra, sizeof(extra),
		 ",{\"mediaType\":\"x/y\",\"digest\":\"%s\",\"size\":4096,"
		 "\"annotations\":{\"org.opencontainers.image.title\":\"chunks/sha256/%s\"}}",
		 dstr(&other), dhex(&other));
	j = oras_manifest(NULL, extra, &mf, 10, &chunk);
	expect_bad_json(j, strlen(j), SL_E_INVALID, "a chunk is 2097152 bytes");
	free(j);

	/* a manifest too big to be one */
	j = oras_manifest(NULL, NULL, &mf, SPORE_MANIFEST_MAX + 1ull, &chunk);
	expect_bad_json(j, strlen(j), SL_E_LIMIT, "spore/manifest.json");
	free(j);

	/* no spore/manifest.json; no artifactType; a foreign artifactType */
	{
		_cleanup_json_ json_t *root = NULL;
		sl_error_t err = NULL;
		char *k;

		j = oras_manifest(NULL, NULL, &mf, 10, &chunk);
		assert_int_equal(sl_json_parse(j, strlen(j), "t", &root, &err), 0);
		json_array_remove(json_object_get(root, "layers"), 0);
		k = json_dumps(root, JSON_COMPACT);
		expect_bad_json(k, strlen(k), SL_E_INVALID, "no layer titled \"spore/manifest.json\"");
		free(k);
		json_object_del(root, "artifactType");
		k = json_dumps(root, JSON_COMPACT);
		expect_bad_json(k, strlen(k), SL_E_UNSUPPORTED, "not a spore");
		free(k);
		json_object_set_new(root, "artifactType", json_string("application/vnd.example+type"));
		k = json_dumps(root, JSON_COMPACT);
		expect_bad_json(k, strlen(k), SL_E_UNSUPPORTED, "artifactType");
		free(k);
		free(j);
	}
}

/* ---- image config ---- */

static char **names(const char *a)
{
	char **v = calloc(2, sizeof(char *));

	assert_non_null(v);
	v[0] = strdup(a);
	return v;
}

/* A valid spore manifest for vcpus vCPUs and mem_mib MiB (no chunks). */
static void make_manifest(struct spore_manifest *m, unsigned vcpus, uint64_t mem_mib)
{
	memset(m, 0, sizeof(*m));
	m->version = SPORE_FORMAT_VERSION;
	strcpy(m->created, "2026-01-02T03:04:05Z");
	strcpy(m->arch, "x86_64");
	strcpy(m->hypervisor, "kvm");
	strcpy(m->cpu_vendor, "GenuineIntel");
	m->tsc_khz = 2445426;
	m->features = names("fpu");
	m->nfeatures = 1;
	m->kvm_caps = names("irqchip");
	m->ncaps = 1;
	m->vcpus = vcpus;
	m->mem_mib = mem_mib;
	strcpy(m->vm_state.path, "spore/vm.state");
	for (unsigned i = 0; i < vcpus; i++)
		snprintf(m->vcpu_state[i].path, sizeof(m->vcpu_state[i].path), "spore/vcpu-%u.state", i);
	m->chunks = calloc(1, sizeof(*m->chunks));
	assert_non_null(m->chunks);
	strcpy(m->gen_id, GEN_ID);
	m->gen_counter = 1;
}

static void test_config(void **state)
{
	struct spore_image img;
	struct spore_manifest m;
	sl_digest md;
	_cleanup_json_ json_t *root = NULL;
	sl_error_t err = NULL;
	char *j = NULL;
	size_t len;
	json_t *diff, *labels;

	(void)state;
	make_image(&img, true);
	make_manifest(&m, 1, 64);
	m.has_parent = true;
	m.parent = img.parent;
	md = img.spore_manifest;
	assert_int_equal(spore_config_encode(&img, &m, &md, &j, &len, &err), 0);
	assert_int_equal(strlen(j), len);
	assert_int_equal(spore_config_check(j, len, &img, &err), 0);

	assert_int_equal(sl_json_parse(j, len, "t", &root, &err), 0);
	assert_string_equal(json_string_value(json_object_get(root, "architecture")), "amd64");
	assert_string_equal(json_string_value(json_object_get(root, "os")), "linux");
	assert_string_equal(json_string_value(json_object_get(root, "created")), "2026-01-02T03:04:05Z");
	assert_string_equal(json_string_value(json_object_get(json_object_get(root, "rootfs"), "type")), "layers");
	diff = json_object_get(json_object_get(root, "rootfs"), "diff_ids");
	assert_int_equal(json_array_size(diff), 3);
	for (size_t i = 0; i < 3; i++)
		assert_string_equal(json_string_value(json_array_get(diff, i)), dstr(&img.layers[i].digest));
	labels = json_object_get(json_object_get(root, "config"), "Labels");
	assert_string_equal(json_string_value(json_object_get(labels, SPORE_LABEL_MANIFEST)), dstr(&md));
	assert_string_equal(json_string_value(json_object_get(labels, SPORE_LABEL_VERSION)), "1");
	assert_string_equal(json_string_value(json_object_get(labels, SPORE_LABEL_PARENT)), dstr(&img.parent));
	/* compact and sorted: stable bytes */
	assert_non_null(strstr(j, "{\"architecture\":\"amd64\",\"config\":{\"Labels\":{"));

	/* mismatches */
	{
		const struct mutation muts[] = {
			{ "os", "\"windows\"", SL_E_UNSUPPORTED, "os \"windows\"" },
			{ "architecture", "\"arm64\"", SL_E_UNSUPPORTED, "architecture \"arm64\"" },
			{ "architecture", NULL, SL_E_INVALID, "architecture" },
			{ "rootfs/type", "\"foo\"", SL_E_INVALID, "rootfs.type" },
			{ "rootfs/diff_ids/2", NULL, SL_E_INVALID, "2 diff_ids for 3 layers" },
			{ "rootfs/diff_ids/0", "\"sha256:0000000000000000000000000000000000000000000000000000000000000000\"",
			  SL_E_INVALID, "diff_ids[0] is not the digest of layer 0" },
			{ "rootfs/diff_ids/1", "\"nope\"", SL_E_INVALID, "diff_ids[1]" },
			{ "rootfs/diff_ids/1", "5", SL_E_INVALID, "diff_ids[1] must be a string" },
			{ "config/Labels/ai.sporelet.spore.manifest", "\"sha256:00\"", SL_E_INVALID, "disagrees" },
			{ "config/Labels/ai.sporelet.spore.version", "\"7\"", SL_E_UNSUPPORTED, "version label" },
		};
		for (size_t i = 0; i < sizeof(muts) / sizeof(muts[0]); i++) {
			_cleanup_json_ json_t *r = json_deep_copy(root);
			json_t *v = muts[i].value ? json_loads(muts[i].value, JSON_DECODE_ANY, NULL) : NULL;
			char *k;

			json_set_path(r, muts[i].path, v);
			k = json_dumps(r, JSON_COMPACT);
			if (spore_config_check(k, strlen(k), &img, &err) == 0)
				fail_msg("config accepted: %s", k);
			if (err->code != muts[i].code || !strstr(sl_error_msg(err), muts[i].want))
				fail_msg("want %d \"%s\", got %d \"%s\"", muts[i].code, muts[i].want, err->code,
					 sl_error_msg(err));
			sl_error_free(&err);
			free(k);
		}
	}
	/* swapped diff_ids */
	{
		_cleanup_json_ json_t *r = json_deep_copy(root);
		json_t *d = json_object_get(json_object_get(r, "rootfs"), "diff_ids");
		json_t *first = json_incref(json_array_get(d, 0));
		char *k;

		json_array_set(d, 0, json_array_get(d, 1));
		json_array_set_new(d, 1, first);
		k = json_dumps(r, JSON_COMPACT);
		assert_int_equal(spore_config_check(k, strlen(k), &img, &err), -1);
		sl_error_free(&err);
		free(k);
	}
	assert_int_equal(spore_config_check("not json", 8, &img, &err), -1);
	assert_int_equal(err->code, SL_E_INVALID);
	sl_error_free(&err);
	free(j);
	spore_manifest_free(&m);
	spore_image_free(&img);
}

/* ---- push planning over a fake spore directory ---- */

struct scratch {
	char path[64];
	int fd;
};

static void scratch_make(struct scratch *s)
{
	snprintf(s->path, sizeof(s->path), "/tmp/oci-image-XXXXXX");
	assert_non_null(mkdtemp(s->path));
	s->fd = open(s->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(s->fd >= 0);
}

static void scratch_drop(struct scratch *s)
{
	sl_error_t err = NULL;
	int parent = open("/tmp", O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	close(s->fd);
	assert_true(parent >= 0);
	if (sl_remove_tree(parent, s->path + 5, &err) < 0)
		fail_msg("cleanup of %s: %s", s->path, sl_error_msg(err));
	close(parent);
}

static void put_file(int dirfd, const char *path, const void *buf, size_t len)
{
	int fd = openat(dirfd, path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	sl_error_t err = NULL;

	assert_true(fd >= 0);
	assert_int_equal(sl_write_all(fd, buf, len, &err), 0);
	close(fd);
}

/* 2 MiB of pseudo-random bytes from a seed. */
static uint8_t *chunk_bytes(unsigned seed)
{
	uint8_t *b = malloc(SPORE_CHUNK_SIZE);
	uint64_t x = 0x9e3779b97f4a7c15ull * (seed + 1);

	assert_non_null(b);
	for (size_t i = 0; i < SPORE_CHUNK_SIZE; i += 8) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		memcpy(b + i, &x, 8);
	}
	return b;
}

static void chunk_digest(unsigned seed, sl_digest *d)
{
	uint8_t *b = chunk_bytes(seed);

	sl_sha256(b, SPORE_CHUNK_SIZE, d);
	free(b);
}

/* Writes a spore with 2 vCPUs whose memory slot i holds chunk seeds[i]
 * (a seed may repeat: one file, two slots). Returns the manifest digest. */
static void make_spore(int dirfd, const unsigned *seeds, size_t n, const sl_digest *parent, sl_digest *mdigest)
{
	struct spore_manifest m;
	sl_error_t err = NULL;
	char *buf;
	size_t len;
	static const char vm[] = "vm state bytes, not a real TLV file";

	assert_int_equal(mkdirat(dirfd, "spore", 0755), 0);
	assert_int_equal(mkdirat(dirfd, "chunks", 0755), 0);
	assert_int_equal(mkdirat(dirfd, "chunks/sha256", 0755), 0);
	make_manifest(&m, 2, 64);
	put_file(dirfd, "spore/vm.state", vm, sizeof(vm));
	sl_sha256(vm, sizeof(vm), &m.vm_state.digest);
	m.vm_state.size = sizeof(vm);
	for (unsigned i = 0; i < 2; i++) {
		char s[700];
		memset(s, 'a' + (int)i, sizeof(s)); /* not 512-aligned: padding */
		put_file(dirfd, m.vcpu_state[i].path, s, sizeof(s) - i);
		sl_sha256(s, sizeof(s) - i, &m.vcpu_state[i].digest);
		m.vcpu_state[i].size = sizeof(s) - i;
	}
	free(m.chunks);
	m.chunks = calloc(n ? n : 1, sizeof(*m.chunks));
	assert_non_null(m.chunks);
	for (size_t i = 0; i < n; i++) {
		uint8_t *b = chunk_bytes(seeds[i]);
		char path[96];

		m.chunks[i].index = i;
		sl_sha256(b, SPORE_CHUNK_SIZE, &m.chunks[i].digest);
		spore_chunk_path(&m.chunks[i].digest, path);
		if (faccessat(dirfd, path, F_OK, 0) != 0)
			put_file(dirfd, path, b, SPORE_CHUNK_SIZE);
		free(b);
	}
	m.nchunks = n;
	if (parent) {
		m.has_parent = true;
		m.parent = *parent;
	}
	assert_int_equal(spore_manifest_write(&m, &buf, &len, &err), 0);
	put_file(dirfd, SPORE_MANIFEST_PATH, buf, len);
	sl_sha256(buf, len, mdigest);
	free(buf);
	spore_manifest_free(&m);
}

/* Copies every byte of a blob out through its segments. */
static uint8_t *blob_bytes(const struct spore_push_blob *b)
{
	uint8_t *buf = malloc(b->size ? b->size : 1);
	sl_error_t err = NULL;

	assert_non_null(buf);
	if (oci_segs_read(b->segs, b->nsegs, 0, buf, b->size, &err) < 0)
		fail_msg("segs read: %s", sl_error_msg(err));
	return buf;
}

static void plan_ok(int dirfd, const struct spore_image *parent, uint64_t layer_bytes, unsigned max_layers,
		    struct spore_push_plan *p)
{
	struct spore_push_opts o = { .layer_bytes = layer_bytes, .max_layers = max_layers };
	sl_error_t err = NULL;

	if (spore_push_plan(dirfd, parent, &o, p, &err) < 0)
		fail_msg("plan: %s", sl_error_msg(err));
}

/* Everything a plan promises, checked from its segments. */
static void check_plan(const struct spore_push_plan *p, int dirfd, const sl_digest *mdigest)
{
	sl_error_t err = NULL;
	struct spore_manifest m;
	sl_digest d;
	uint64_t size;
	size_t layer;
	uint64_t off;

	assert_int_equal(p->nblobs, p->img.nlayers + 1);
	assert_int_equal(p->img.shape, SPORE_SHAPE_TAR);
	assert_string_equal(p->img.artifact_type, SPORE_ARTIFACT_TYPE);
	assert_true(p->img.has_spore_manifest);
	assert_true(sl_digest_equal(&p->img.spore_manifest, mdigest));

	/* every blob that is not reused hashes to its digest and size */
	for (size_t i = 0; i < p->nblobs; i++) {
		const struct spore_push_blob *b = &p->blobs[i];

		if (b->reused) {
			assert_int_equal(b->nsegs, 0);
			continue;
		}
		assert_int_equal(oci_segs_digest(b->segs, b->nsegs, &d, &size, &err), 0);
		assert_true(sl_digest_equal(&d, &b->digest));
		assert_int_equal(size, b->size);
	}
	for (size_t i = 0; i < p->img.nlayers; i++) {
		assert_true(sl_digest_equal(&p->img.layers[i].digest, &p->blobs[i].digest));
		assert_int_equal(p->img.layers[i].size, p->blobs[i].size);
		assert_string_equal(p->img.layers[i].media_type, OCI_MT_LAYER_TAR);
		assert_string_equal(p->blobs[i].media_type, OCI_MT_LAYER_TAR);
	}
	/* the config is last and matches the image */
	{
		const struct spore_push_blob *c = &p->blobs[p->nblobs - 1];

		assert_string_equal(c->media_type, OCI_MT_CONFIG);
		assert_true(sl_digest_equal(&c->digest, &p->img.config_digest));
		assert_int_equal(c->size, p->img.config_size);
		assert_int_equal(c->size, p->config_len);
		if (spore_config_check(p->config_json, p->config_len, &p->img, &err) < 0)
			fail_msg("config: %s", sl_error_msg(err));
	}

	/* the meta layer holds the spore's files, byte for byte */
	assert_string_equal(p->img.layers[0].title, SPORE_META_TITLE);
	assert_int_equal(p->img.layers[0].nchunks, 0);
	{
		uint8_t *t = blob_bytes(&p->blobs[0]);
		struct oci_tar_mem tm = { .data = t, .len = p->blobs[0].size };
		struct oci_tar_entry *e = NULL;
		size_t n = 0;
		const char *want[] = { SPORE_MANIFEST_PATH, "spore/vm.state", "spore/vcpu-0.state",
				       "spore/vcpu-1.state" };

		if (oci_tar_index(oci_tar_read_mem, &tm, tm.len, 16, &e, &n, &err) < 0)
			fail_msg("meta tar: %s", sl_error_msg(err));
		assert_int_equal(n, 4);
		for (size_t i = 0; i < n; i++) {
			char *f;
			size_t flen;

			assert_string_equal(e[i].path, want[i]);
			assert_int_equal(e[i].mode, 0444);
			assert_int_equal(sl_read_beneath(dirfd, want[i], 1 << 20, &f, &flen, &err), 0);
			assert_int_equal(flen, e[i].size);
			assert_memory_equal(f, t + e[i].data_offset, flen);
			free(f);
		}
		free(e);
		free(t);
	}

	/* chunk layers: named by their first chunk; tables point at the bytes */
	for (size_t i = 1; i < p->img.nlayers; i++) {
		const struct oci_layer *l = &p->img.layers[i];
		char title[64];

		assert_true(l->nchunks > 0);
		snprintf(title, sizeof(title), "chunks-%.12s.tar", dhex(&l->chunks[0].digest));
		assert_string_equal(l->title, title);
		if (p->blobs[i].reused)
			continue;
		assert_int_equal(l->size, l->nchunks * CHUNK_TAR + 1024);
		for (size_t k = 0; k < l->nchunks; k++) {
			uint8_t *c = malloc(SPORE_CHUNK_SIZE);

			if (k)
				assert_true(memcmp(&l->chunks[k - 1].digest, &l->chunks[k].digest, SL_DIGEST_LEN) < 0);
			assert_int_equal(oci_segs_read(p->blobs[i].segs, p->blobs[i].nsegs, l->chunks[k].offset, c,
						       SPORE_CHUNK_SIZE, &err),
					 0);
			sl_sha256(c, SPORE_CHUNK_SIZE, &d);
			assert_true(sl_digest_equal(&d, &l->chunks[k].digest));
			free(c);
		}
		/* and the layer is a valid tar whose entries agree with the table */
		{
			uint8_t *t = blob_bytes(&p->blobs[i]);
			struct oci_tar_mem tm = { .data = t, .len = p->blobs[i].size };
			struct oci_tar_entry *e = NULL;
			size_t n = 0;

			assert_int_equal(oci_tar_index(oci_tar_read_mem, &tm, tm.len, 1024, &e, &n, &err), 0);
			assert_int_equal(n, l->nchunks);
			for (size_t k = 0; k < n; k++) {
				char path[96];

				spore_chunk_path(&l->chunks[k].digest, path);
				assert_string_equal(e[k].path, path);
				assert_int_equal(e[k].data_offset, l->chunks[k].offset);
			}
			free(e);
			free(t);
		}
	}

	/* every chunk of the spore can be found */
	assert_int_equal(spore_manifest_load(dirfd, &m, &d, &err), 0);
	for (size_t i = 0; i < m.nchunks; i++)
		assert_int_equal(spore_image_find_chunk(&p->img, &m.chunks[i].digest, &layer, &off), 0);
	spore_manifest_free(&m);

	/* the manifest survives encode -> decode -> encode byte for byte */
	{
		struct spore_image back;
		size_t l1, l2;
		char *a = encode_ok(&p->img, &l1), *b;

		decode_ok(a, l1, &back);
		assert_same_image(&p->img, &back);
		b = encode_ok(&back, &l2);
		assert_int_equal(l1, l2);
		assert_memory_equal(a, b, l1);
		spore_image_free(&back);
		free(a);
		free(b);
	}
}

static size_t count_reused(const struct spore_push_plan *p)
{
	size_t n = 0;

	for (size_t i = 0; i < p->nblobs; i++)
		n += p->blobs[i].reused;
	return n;
}

static void test_plan_basic(void **state)
{
	struct scratch s;
	struct spore_push_plan p, p2;
	sl_digest md;
	const unsigned seeds[] = { 1, 2, 3, 4, 5, 1 }; /* slot 5 repeats slot 0 */

	(void)state;
	scratch_make(&s);
	make_spore(s.fd, seeds, 6, NULL, &md);

	/* two chunks per layer: 5 distinct chunks -> 3 chunk layers */
	plan_ok(s.fd, NULL, 2 * CHUNK_TAR + 1024, 0, &p);
	assert_int_equal(p.img.nlayers, 4);
	assert_int_equal(p.img.layers[1].nchunks, 2);
	assert_int_equal(p.img.layers[2].nchunks, 2);
	assert_int_equal(p.img.layers[3].nchunks, 1);
	assert_false(p.img.has_parent);
	assert_int_equal(count_reused(&p), 0);
	check_plan(&p, s.fd, &md);

	/* deterministic: planning again gives the same digests */
	plan_ok(s.fd, NULL, 2 * CHUNK_TAR + 1024, 0, &p2);
	for (size_t i = 0; i < p.nblobs; i++)
		assert_true(sl_digest_equal(&p.blobs[i].digest, &p2.blobs[i].digest));
	spore_push_plan_free(&p2);
	spore_push_plan_free(&p);

	/* defaults: one chunk layer */
	plan_ok(s.fd, NULL, 0, 0, &p);
	assert_int_equal(p.img.nlayers, 2);
	assert_int_equal(p.img.layers[1].nchunks, 5);
	check_plan(&p, s.fd, &md);
	spore_push_plan_free(&p);

	/* a layer size below one chunk still holds one chunk */
	plan_ok(s.fd, NULL, 1, 0, &p);
	assert_int_equal(p.img.nlayers, 6);
	check_plan(&p, s.fd, &md);
	spore_push_plan_free(&p);
	scratch_drop(&s);

	/* no chunks at all: the meta layer alone */
	scratch_make(&s);
	make_spore(s.fd, NULL, 0, NULL, &md);
	plan_ok(s.fd, NULL, 0, 0, &p);
	assert_int_equal(p.img.nlayers, 1);
	check_plan(&p, s.fd, &md);
	spore_push_plan_free(&p);
	scratch_drop(&s);
}

/* Which seed's chunk is this digest? */
static unsigned seed_of(const sl_digest *d, const unsigned *seeds, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		sl_digest x;

		chunk_digest(seeds[i], &x);
		if (sl_digest_equal(&x, d))
			return seeds[i];
	}
	fail_msg("unknown chunk");
	return 0;
}

static void test_plan_parent_reuse(void **state)
{
	struct scratch ps, cs;
	struct spore_push_plan pp, cp;
	struct spore_image parent;
	sl_digest pmd, cmd;
	const unsigned pseeds[] = { 1, 2, 3, 4, 5 };
	unsigned cseeds[3];
	uint64_t lb = 2 * CHUNK_TAR + 1024;
	sl_error_t err = NULL;
	char *j;
	size_t len, layer;
	uint64_t off;

	(void)state;
	scratch_make(&ps);
	make_spore(ps.fd, pseeds, 5, NULL, &pmd);
	plan_ok(ps.fd, NULL, lb, 0, &pp);
	assert_int_equal(pp.img.nlayers, 4);
	/* the child sees the parent as a pull would: decoded from JSON */
	j = encode_ok(&pp.img, &len);
	decode_ok(j, len, &parent);
	free(j);

	/* child: both chunks of parent layer 1, plus a new one */
	cseeds[0] = seed_of(&parent.layers[1].chunks[0].digest, pseeds, 5);
	cseeds[1] = seed_of(&parent.layers[1].chunks[1].digest, pseeds, 5);
	cseeds[2] = 9;
	scratch_make(&cs);
	make_spore(cs.fd, cseeds, 3, &pmd, &cmd);
	plan_ok(cs.fd, &parent, lb, 0, &cp);
	assert_int_equal(cp.img.nlayers, 3); /* meta, reused, delta */
	assert_int_equal(count_reused(&cp), 1);
	assert_true(cp.blobs[1].reused);
	assert_true(sl_digest_equal(&cp.blobs[1].digest, &parent.layers[1].digest));
	assert_int_equal(cp.blobs[1].size, parent.layers[1].size);
	assert_string_equal(cp.img.layers[1].title, parent.layers[1].title);
	assert_int_equal(cp.img.layers[2].nchunks, 1); /* only the new chunk */
	{
		sl_digest nine;

		chunk_digest(9, &nine);
		assert_true(sl_digest_equal(&cp.img.layers[2].chunks[0].digest, &nine));
		assert_int_equal(spore_image_find_chunk(&cp.img, &nine, &layer, &off), 0);
		assert_int_equal(layer, 2);
		assert_int_equal(off, 512);
	}
	assert_int_equal(spore_image_find_chunk(&cp.img, &parent.layers[1].chunks[1].digest, &layer, &off), 0);
	assert_int_equal(layer, 1);
	assert_int_equal(off, parent.layers[1].chunks[1].offset);
	assert_true(cp.img.has_parent);
	assert_true(sl_digest_equal(&cp.img.parent, &pmd));
	check_plan(&cp, cs.fd, &cmd);
	j = encode_ok(&cp.img, &len);
	assert_non_null(strstr(j, SPORE_LABEL_PARENT));
	assert_non_null(strstr(j, dstr(&pmd)));
	free(j);
	assert_non_null(strstr(cp.config_json, SPORE_LABEL_PARENT));
	spore_push_plan_free(&cp);
	scratch_drop(&cs);

	/* child: one chunk from each of parent layers 1 and 2, plus a new one.
	 * Reuse needs 1 + 2 + 1 = 4 layers. */
	cseeds[0] = seed_of(&parent.layers[1].chunks[0].digest, pseeds, 5);
	cseeds[1] = seed_of(&parent.layers[2].chunks[0].digest, pseeds, 5);
	cseeds[2] = 9;
	scratch_make(&cs);
	make_spore(cs.fd, cseeds, 3, &pmd, &cmd);
	plan_ok(cs.fd, &parent, lb, 4, &cp);
	assert_int_equal(cp.img.nlayers, 4);
	assert_int_equal(count_reused(&cp), 2);
	check_plan(&cp, cs.fd, &cmd);
	spore_push_plan_free(&cp);
	/* max 3 layers: the parent is dropped, 3 chunks repacked in 2 layers */
	plan_ok(cs.fd, &parent, lb, 3, &cp);
	assert_int_equal(cp.img.nlayers, 3);
	assert_int_equal(count_reused(&cp), 0);
	assert_int_equal(cp.img.layers[1].nchunks + cp.img.layers[2].nchunks, 3);
	check_plan(&cp, cs.fd, &cmd);
	spore_push_plan_free(&cp);
	/* max 2 layers: cannot fit at this layer size */
	{
		struct spore_push_opts o = { .layer_bytes = lb, .max_layers = 2 };

		assert_int_equal(spore_push_plan(cs.fd, &parent, &o, &cp, &err), -1);
		assert_int_equal(err->code, SL_E_LIMIT);
		assert_null(cp.blobs);
		sl_error_free(&err);
	}
	/* a FILES-shaped parent has no tar layers to share */
	{
		struct spore_image fp = parent;

		fp.shape = SPORE_SHAPE_FILES;
		plan_ok(cs.fd, &fp, lb, 0, &cp);
		assert_int_equal(count_reused(&cp), 0);
		spore_push_plan_free(&cp);
	}
	scratch_drop(&cs);

	spore_image_free(&parent);
	spore_push_plan_free(&pp);
	scratch_drop(&ps);
}

static void expect_plan_fails(int dirfd, int code, const char *want)
{
	struct spore_push_plan p;
	sl_error_t err = NULL;

	if (spore_push_plan(dirfd, NULL, NULL, &p, &err) == 0)
		fail_msg("plan succeeded, want \"%s\"", want);
	if (err->code != code || !strstr(sl_error_msg(err), want))
		fail_msg("want %d \"%s\", got %d \"%s\"", code, want, err->code, sl_error_msg(err));
	assert_null(p.blobs);
	assert_null(p.fds);
	sl_error_free(&err);
}

static void test_plan_integrity(void **state)
{
	struct scratch s;
	sl_digest md, d1;
	const unsigned seeds[] = { 1, 2 };
	char path[96];
	uint8_t *b;

	(void)state;
	/* a chunk whose bytes are not its name */
	scratch_make(&s);
	make_spore(s.fd, seeds, 2, NULL, &md);
	chunk_digest(1, &d1);
	spore_chunk_path(&d1, path);
	b = chunk_bytes(7);
	put_file(s.fd, path, b, SPORE_CHUNK_SIZE);
	free(b);
	expect_plan_fails(s.fd, SL_E_INTEGRITY, path);
	/* a chunk of the wrong size */
	put_file(s.fd, path, "short", 5);
	expect_plan_fails(s.fd, SL_E_INTEGRITY, path);
	/* a missing chunk */
	assert_int_equal(unlinkat(s.fd, path, 0), 0);
	expect_plan_fails(s.fd, SL_E_NOT_FOUND, "");
	/* a chunk that is a symlink (to a file with the right bytes) */
	b = chunk_bytes(1);
	put_file(s.fd, "elsewhere", b, SPORE_CHUNK_SIZE);
	free(b);
	{
		char target[128];

		snprintf(target, sizeof(target), "%s/elsewhere", s.path);
		assert_int_equal(symlinkat(target, s.fd, path), 0);
	}
	expect_plan_fails(s.fd, SL_E_INVALID, "");
	scratch_drop(&s);

	/* a state file changed after the manifest was written */
	scratch_make(&s);
	make_spore(s.fd, seeds, 2, NULL, &md);
	put_file(s.fd, "spore/vm.state", "vm state bytes, not a real TLV filX", 36);
	expect_plan_fails(s.fd, SL_E_INTEGRITY, "spore/vm.state");
	put_file(s.fd, "spore/vm.state", "short", 5);
	expect_plan_fails(s.fd, SL_E_INTEGRITY, "spore/vm.state");
	scratch_drop(&s);

	/* no spore here */
	scratch_make(&s);
	expect_plan_fails(s.fd, SL_E_NOT_FOUND, "");
	scratch_drop(&s);
}

/* The segment helpers on their own: memory, fd ranges, zeros. */
static void test_segs(void **state)
{
	char path[] = "/tmp/oci-segs-XXXXXX";
	int fd = mkstemp(path);
	sl_error_t err = NULL;
	uint8_t all[3 + 4 + 5], got[12];
	sl_digest d, want;
	uint64_t size;

	(void)state;
	assert_true(fd >= 0);
	unlink(path);
	assert_int_equal(sl_write_all(fd, "0123456789", 10, &err), 0);
	struct oci_seg segs[] = {
		{ .mem = "abc", .fd = -1, .len = 3 },
		{ .fd = fd, .off = 2, .len = 4 },
		{ .fd = -1, .len = 5 },
	};
	memcpy(all, "abc2345\0\0\0\0\0", 12);
	assert_int_equal(oci_segs_digest(segs, 3, &d, &size, &err), 0);
	sl_sha256(all, 12, &want);
	assert_true(sl_digest_equal(&d, &want));
	assert_int_equal(size, 12);
	for (size_t off = 0; off < 12; off++)
		for (size_t len = 0; off + len <= 12; len++) {
			memset(got, 0xee, sizeof(got));
			assert_int_equal(oci_segs_read(segs, 3, off, got, len, &err), 0);
			assert_memory_equal(got, all + off, len);
		}
	assert_int_equal(oci_segs_read(segs, 3, 10, got, 3, &err), -1);
	sl_error_free(&err);
	/* a file shorter than its segment */
	segs[1].len = 40;
	assert_int_equal(oci_segs_digest(segs, 3, &d, &size, &err), -1);
	sl_error_free(&err);
	close(fd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_encode_exact),
		cmocka_unit_test(test_find_chunk),
		cmocka_unit_test(test_bad_tar_manifests),
		cmocka_unit_test(test_oras_shape),
		cmocka_unit_test(test_oras_rejects),
		cmocka_unit_test(test_config),
		cmocka_unit_test(test_segs),
		cmocka_unit_test(test_plan_basic),
		cmocka_unit_test(test_plan_parent_reuse),
		cmocka_unit_test(test_plan_integrity),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
