/* A spore as an OCI image: manifest decode (spore push and oras push shapes), encode, config, chunk tables. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "oci/image.h"
#include "sl/json.h"

#define WHAT "image manifest"
#define CWHAT "image config"

/* Per chunk table entry: 64 hex, '@', up to 20 digits, ','. */
#define CHUNK_ENTRY_MAX (SL_DIGEST_HEXLEN + 1 + 20 + 1)

void spore_image_free(struct spore_image *img)
{
	if (!img)
		return;
	for (size_t i = 0; i < img->nlayers; i++)
		free(img->layers[i].chunks);
	free(img->layers);
	memset(img, 0, sizeof(*img));
}

/* Same rules as tar entry paths: what `oras pull` writes to disk must stay
 * inside its output directory. */
static const char *title_problem(const char *p)
{
	const char *c = p;

	if (!*p)
		return "empty";
	if (*p == '/')
		return "absolute path";
	if (strchr(p, '\\'))
		return "backslash";
	for (const char *s = p; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return "control character";
	for (;;) {
		const char *e = strchr(c, '/');
		size_t n = e ? (size_t)(e - c) : strlen(c);

		if (n == 0)
			return "empty path component";
		if (n == 2 && c[0] == '.' && c[1] == '.')
			return "\"..\" component";
		if (n == 1 && c[0] == '.')
			return "\".\" component";
		if (!e)
			return NULL;
		c = e + 1;
	}
}

static int copy_field(char *dst, size_t cap, const char *src, const char *what, const char *field,
		      sl_error_t *err)
{
	size_t n = strlen(src);

	if (n == 0 || n >= cap)
		return sl_error_set(err, SL_E_INVALID, "%s: %s must be 1..%zu bytes", what, field, cap - 1);
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)src[i] < 0x20 || src[i] == 0x7f)
			return sl_error_set(err, SL_E_INVALID, "%s: %s has a control character", what, field);
	memcpy(dst, src, n + 1);
	return 0;
}

/* An OCI descriptor: mediaType, sha256 digest, size; annotations (optional)
 * must map strings to strings. */
static int parse_desc(json_t *o, const char *what, char mt[128], sl_digest *d, uint64_t *size, json_t **ann,
		      sl_error_t *err)
{
	const char *s, *ds;
	const char *key;
	json_t *v;

	if (!json_is_object(o))
		return sl_error_set(err, SL_E_INVALID, "%s: not an object", what);
	if (sl_json_get_str(o, "mediaType", what, &s, err) < 0 || copy_field(mt, 128, s, what, "mediaType", err) < 0)
		return -1;
	if (sl_json_get_str(o, "digest", what, &ds, err) < 0)
		return -1;
	if (sl_digest_parse(ds, d, err) < 0)
		return sl_error_wrap(err, "%s: digest", what);
	if (sl_json_get_u64(o, "size", what, size, err) < 0)
		return -1;
	*ann = json_object_get(o, "annotations");
	if (*ann) {
		if (!json_is_object(*ann))
			return sl_error_set(err, SL_E_INVALID, "%s: annotations must be an object", what);
		json_object_foreach(*ann, key, v)
			if (!json_is_string(v))
				return sl_error_set(err, SL_E_INVALID, "%s: annotation \"%.64s\" must be a string",
						    what, key);
	}
	return 0;
}

static const char *ann_get(json_t *ann, const char *key)
{
	return ann ? json_string_value(json_object_get(ann, key)) : NULL;
}

static int cmp_digest(const void *a, const void *b)
{
	return memcmp(a, b, SL_DIGEST_LEN);
}

static int cmp_loc(const void *a, const void *b)
{
	return memcmp(&((const struct oci_chunk_loc *)a)->digest, &((const struct oci_chunk_loc *)b)->digest,
		      SL_DIGEST_LEN);
}

/* "<hex>@<offset>,..." -> entries sorted by digest. Each chunk must lie in
 * the layer, start on a tar block, and appear once. */
static int parse_chunk_table(const char *s, uint64_t layer_size, const char *what, struct oci_layer *l,
			     sl_error_t *err)
{
	size_t n = 1, i = 0;
	const char *p = s;
	_cleanup_free_ struct oci_chunk_loc *v = NULL;

	if (!*s)
		return sl_error_set(err, SL_E_INVALID, "%s: chunk table is empty", what);
	for (const char *c = s; *c; c++)
		n += *c == ',';
	if (n > layer_size / SPORE_CHUNK_SIZE)
		return sl_error_set(err, SL_E_INVALID, "%s: chunk table has %zu entries, a %llu-byte layer holds %llu",
				    what, n, (unsigned long long)layer_size,
				    (unsigned long long)(layer_size / SPORE_CHUNK_SIZE));
	v = calloc(n, sizeof(*v));
	if (!v)
		return sl_error_set(err, SL_E_NOMEM, "%s: chunk table: out of memory", what);
	for (i = 0; i < n; i++) {
		char hex[SL_DIGEST_HEXLEN + 1];
		uint64_t off = 0;
		size_t nd = 0;
		sl_error_t e2 = NULL;

		if (strnlen(p, SL_DIGEST_HEXLEN + 1) < SL_DIGEST_HEXLEN + 1 || p[SL_DIGEST_HEXLEN] != '@')
			return sl_error_set(err, SL_E_INVALID, "%s: chunk table entry %zu: expected <64 hex>@<offset>",
					    what, i);
		memcpy(hex, p, SL_DIGEST_HEXLEN);
		hex[SL_DIGEST_HEXLEN] = 0;
		if (sl_digest_parse_hex(hex, &v[i].digest, &e2) < 0) {
			sl_error_free(&e2);
			return sl_error_set(err, SL_E_INVALID, "%s: chunk table entry %zu: bad digest \"%.64s\"", what,
					    i, hex);
		}
		p += SL_DIGEST_HEXLEN + 1;
		for (; *p >= '0' && *p <= '9'; p++, nd++) {
			uint64_t dgt = (uint64_t)(*p - '0');

			if (off > (UINT64_MAX - dgt) / 10)
				return sl_error_set(err, SL_E_INVALID, "%s: chunk table entry %zu: offset overflows",
						    what, i);
			off = off * 10 + dgt;
		}
		if (nd == 0 || (nd > 1 && p[-(ptrdiff_t)nd] == '0') || (*p != ',' && *p != 0) ||
		    (*p == ',' && i == n - 1))
			return sl_error_set(err, SL_E_INVALID, "%s: chunk table entry %zu (%.64s): bad offset", what,
					    i, hex);
		if (off % 512 != 0)
			return sl_error_set(err, SL_E_INVALID,
					    "%s: chunk %.64s: offset %llu is not a multiple of 512", what, hex,
					    (unsigned long long)off);
		if (off > layer_size - SPORE_CHUNK_SIZE)
			return sl_error_set(err, SL_E_INVALID,
					    "%s: chunk %.64s: offset %llu + 2 MiB runs past the layer (%llu bytes)",
					    what, hex, (unsigned long long)off, (unsigned long long)layer_size);
		v[i].offset = off;
		if (*p == ',')
			p++;
	}
	if (n > 1)
		qsort(v, n, sizeof(*v), cmp_loc);
	for (i = 1; i < n; i++)
		if (sl_digest_equal(&v[i - 1].digest, &v[i].digest)) {
			char hex[SL_DIGEST_HEXLEN + 1];

			sl_digest_hex(&v[i].digest, hex);
			return sl_error_set(err, SL_E_INVALID, "%s: chunk %s listed twice", what, hex);
		}
	l->chunks = sl_steal_ptr(v);
	l->nchunks = n;
	return 0;
}

enum files_kind { F_BAD, F_MANIFEST, F_VM, F_VCPU, F_CHUNK };

/* The spore paths a FILES-shaped image may carry. */
static enum files_kind files_kind(const char *t, unsigned *vcpu, sl_digest *chunk)
{
	static const char cpre[] = "chunks/sha256/";
	const char *s;
	unsigned n = 0;

	if (strcmp(t, SPORE_MANIFEST_PATH) == 0)
		return F_MANIFEST;
	if (strcmp(t, "spore/vm.state") == 0)
		return F_VM;
	if (strncmp(t, "spore/vcpu-", 11) == 0) {
		s = t + 11;
		if (!(*s >= '0' && *s <= '9') || (s[0] == '0' && s[1] >= '0' && s[1] <= '9'))
			return F_BAD;
		for (; *s >= '0' && *s <= '9'; s++) {
			n = n * 10 + (unsigned)(*s - '0');
			if (n >= SPORE_MAX_VCPUS)
				return F_BAD;
		}
		if (strcmp(s, ".state") != 0)
			return F_BAD;
		*vcpu = n;
		return F_VCPU;
	}
	if (strncmp(t, cpre, sizeof(cpre) - 1) == 0) {
		sl_error_t e = NULL;

		if (sl_digest_parse_hex(t + sizeof(cpre) - 1, chunk, &e) < 0) {
			sl_error_free(&e);
			return F_BAD;
		}
		return F_CHUNK;
	}
	return F_BAD;
}

static int check_files_shape(struct spore_image *img, sl_error_t *err)
{
	bool have_manifest = false, have_vm = false;
	uint32_t vcpus = 0;
	_cleanup_free_ sl_digest *chunks = calloc(img->nlayers ? img->nlayers : 1, sizeof(sl_digest));
	size_t nchunks = 0;

	if (!chunks)
		return sl_error_set(err, SL_E_NOMEM, WHAT ": out of memory");
	for (size_t i = 0; i < img->nlayers; i++) {
		struct oci_layer *l = &img->layers[i];
		unsigned vcpu = 0;
		sl_digest d;

		if (!l->title[0])
			return sl_error_set(err, SL_E_INVALID,
					    WHAT ": layers[%zu]: no \"" OCI_ANN_TITLE "\" annotation (every spore "
						 "file must be named)", i);
		switch (files_kind(l->title, &vcpu, &d)) {
		case F_MANIFEST:
			if (have_manifest)
				goto dup;
			if (l->size > SPORE_MANIFEST_MAX)
				return sl_error_set(err, SL_E_LIMIT, WHAT ": layer \"%s\": %llu bytes, the limit is %u",
						    l->title, (unsigned long long)l->size, SPORE_MANIFEST_MAX);
			have_manifest = true;
			img->has_spore_manifest = true;
			img->spore_manifest = l->digest;
			break;
		case F_VM:
			if (have_vm)
				goto dup;
			have_vm = true;
			goto state_size;
		case F_VCPU:
			if (vcpus & (1u << vcpu))
				goto dup;
			vcpus |= 1u << vcpu;
		state_size:
			if (l->size > SPORE_STATE_MAX)
				return sl_error_set(err, SL_E_LIMIT, WHAT ": layer \"%s\": %llu bytes, the limit is %u",
						    l->title, (unsigned long long)l->size, SPORE_STATE_MAX);
			break;
		case F_CHUNK:
			/* Content-addressed: the file name is the digest of its
			 * bytes, and those bytes are this layer. */
			if (!sl_digest_equal(&d, &l->digest))
				return sl_error_set(err, SL_E_INVALID,
						    WHAT ": layer \"%s\": title does not match the layer digest",
						    l->title);
			if (l->size != SPORE_CHUNK_SIZE)
				return sl_error_set(err, SL_E_INVALID,
						    WHAT ": layer \"%s\": a chunk is %u bytes, not %llu", l->title,
						    SPORE_CHUNK_SIZE, (unsigned long long)l->size);
			chunks[nchunks++] = d;
			break;
		default:
			return sl_error_set(err, SL_E_INVALID,
					    WHAT ": layer \"%s\": not a spore file (spore/manifest.json, "
						 "spore/vm.state, spore/vcpu-<n>.state, chunks/sha256/<hex>)",
					    l->title);
		}
		continue;
	dup:
		return sl_error_set(err, SL_E_INVALID, WHAT ": layer \"%s\" appears twice", l->title);
	}
	if (nchunks > 1)
		qsort(chunks, nchunks, sizeof(*chunks), cmp_digest);
	for (size_t i = 1; i < nchunks; i++)
		if (sl_digest_equal(&chunks[i - 1], &chunks[i])) {
			char hex[SL_DIGEST_HEXLEN + 1];

			sl_digest_hex(&chunks[i], hex);
			return sl_error_set(err, SL_E_INVALID, WHAT ": layer \"chunks/sha256/%s\" appears twice", hex);
		}
	if (!have_manifest)
		return sl_error_set(err, SL_E_INVALID, WHAT ": no layer titled \"" SPORE_MANIFEST_PATH "\"");
	return 0;
}

/* The meta layer once, every other layer a chunk layer. */
static int check_tar_shape(const struct spore_image *img, sl_error_t *err)
{
	size_t meta = 0;

	for (size_t i = 0; i < img->nlayers; i++) {
		const struct oci_layer *l = &img->layers[i];

		if (strcmp(l->title, SPORE_META_TITLE) == 0 && !l->nchunks) {
			meta++;
			continue;
		}
		if (!l->nchunks)
			return sl_error_set(err, SL_E_INVALID,
					    WHAT ": layers[%zu] (\"%s\"): neither \"" SPORE_META_TITLE
						 "\" nor a chunk layer (annotation \"" SPORE_ANN_CHUNKS "\")",
					    i, l->title);
	}
	if (meta != 1)
		return sl_error_set(err, SL_E_INVALID, WHAT ": %zu layers titled \"" SPORE_META_TITLE "\", want 1",
				    meta);
	return 0;
}

static int parse_layer(json_t *o, size_t i, enum spore_image_shape shape, struct oci_layer *l, char *snapshot_ref,
		       sl_error_t *err)
{
	char what[48];
	json_t *ann;
	const char *title, *table, *why, *sref;

	snprintf(what, sizeof(what), WHAT ": layers[%zu]", i);
	if (parse_desc(o, what, l->media_type, &l->digest, &l->size, &ann, err) < 0)
		return -1;
	sref = ann_get(ann, SPORE_ANN_SNAPSHOT_REF);
	if (sref && !snapshot_ref[0] && copy_field(snapshot_ref, 512, sref, what, SPORE_ANN_SNAPSHOT_REF, err) < 0)
		return -1;
	title = ann_get(ann, OCI_ANN_TITLE);
	if (title) {
		if (strlen(title) >= sizeof(l->title))
			return sl_error_set(err, SL_E_INVALID, "%s: title \"%.64s...\" longer than %zu bytes", what,
					    title, sizeof(l->title) - 1);
		if ((why = title_problem(title)))
			return sl_error_set(err, SL_E_INVALID, "%s: unsafe title \"%s\": %s", what, title, why);
		strcpy(l->title, title);
	}
	table = ann_get(ann, SPORE_ANN_CHUNKS);
	if (shape == SPORE_SHAPE_TAR) {
		if (strcmp(l->media_type, OCI_MT_LAYER_TAR) != 0)
			return sl_error_set(err, SL_E_UNSUPPORTED, "%s (\"%s\"): media type \"%s\", want \"%s\"", what,
					    l->title, l->media_type, OCI_MT_LAYER_TAR);
		if (table && parse_chunk_table(table, l->size, what, l, err) < 0)
			return -1;
	}
	/* FILES: one raw file per layer; a chunk table means nothing there. */
	return 0;
}

static int parse_annotations(json_t *root, struct spore_image *img, sl_error_t *err)
{
	json_t *ann = json_object_get(root, "annotations"), *v;
	const char *key, *s;

	if (ann && !json_is_object(ann))
		return sl_error_set(err, SL_E_INVALID, WHAT ": annotations must be an object");
	json_object_foreach(ann, key, v)
		if (!json_is_string(v))
			return sl_error_set(err, SL_E_INVALID, WHAT ": annotation \"%.64s\" must be a string", key);
	if (img->shape != SPORE_SHAPE_TAR)
		return 0;
	s = ann_get(ann, SPORE_LABEL_VERSION);
	if (!s)
		return sl_error_set(err, SL_E_INVALID, WHAT ": annotation \"" SPORE_LABEL_VERSION "\" missing");
	if (strcmp(s, "1") != 0)
		return sl_error_set(err, SL_E_UNSUPPORTED, WHAT ": spore version \"%.32s\" (this build reads \"1\")",
				    s);
	s = ann_get(ann, SPORE_LABEL_MANIFEST);
	if (!s)
		return sl_error_set(err, SL_E_INVALID, WHAT ": annotation \"" SPORE_LABEL_MANIFEST "\" missing");
	if (sl_digest_parse(s, &img->spore_manifest, err) < 0)
		return sl_error_wrap(err, WHAT ": annotation \"" SPORE_LABEL_MANIFEST "\"");
	img->has_spore_manifest = true;
	s = ann_get(ann, SPORE_LABEL_PARENT);
	if (s) {
		if (sl_digest_parse(s, &img->parent, err) < 0)
			return sl_error_wrap(err, WHAT ": annotation \"" SPORE_LABEL_PARENT "\"");
		img->has_parent = true;
	}
	return 0;
}

static int decode(json_t *root, struct spore_image *img, sl_error_t *err)
{
	json_t *config, *layers, *jv, *ann;
	const char *mt, *at = NULL;
	uint64_t version;

	if (!json_is_object(root))
		return sl_error_set(err, SL_E_INVALID, WHAT ": not a JSON object");
	jv = json_object_get(root, "schemaVersion");
	if (!jv)
		return sl_error_set(err, SL_E_INVALID, WHAT ": field \"schemaVersion\" missing");
	if (!json_is_integer(jv))
		return sl_error_set(err, SL_E_INVALID, WHAT ": field \"schemaVersion\" must be an integer");
	version = (uint64_t)json_integer_value(jv);
	if (version != 2)
		return sl_error_set(err, SL_E_UNSUPPORTED, WHAT ": schemaVersion %lld (want 2)",
				    (long long)json_integer_value(jv));
	mt = NULL;
	if (sl_json_get_str_opt(root, "mediaType", WHAT, &mt, err) < 0)
		return -1;
	if (mt && strcmp(mt, OCI_MT_MANIFEST) != 0)
		return sl_error_set(err, SL_E_UNSUPPORTED, WHAT ": mediaType \"%.128s\" (want \"%s\")", mt,
				    OCI_MT_MANIFEST);
	if (sl_json_get_str_opt(root, "artifactType", WHAT, &at, err) < 0)
		return -1;

	if (sl_json_get_obj(root, "config", WHAT, &config, err) < 0)
		return -1;
	if (parse_desc(config, WHAT ": config", img->config_media_type, &img->config_digest, &img->config_size,
		       &ann, err) < 0)
		return -1;
	if (strcmp(img->config_media_type, OCI_MT_CONFIG) == 0)
		img->shape = SPORE_SHAPE_TAR;
	else if (strcmp(img->config_media_type, OCI_MT_EMPTY) == 0 ||
		 /* `oras push --image-spec v1.0`: the artifact type moves to
		  * the config media type, for registries without OCI 1.1. */
		 strcmp(img->config_media_type, SPORE_ARTIFACT_TYPE) == 0)
		img->shape = SPORE_SHAPE_FILES;
	else
		return sl_error_set(err, SL_E_UNSUPPORTED,
				    WHAT ": config media type \"%s\" (want \"%s\", \"%s\" or \"%s\")",
				    img->config_media_type, OCI_MT_CONFIG, OCI_MT_EMPTY, SPORE_ARTIFACT_TYPE);

	if (at) {
		if (copy_field(img->artifact_type, sizeof(img->artifact_type), at, WHAT, "artifactType", err) < 0)
			return -1;
		if (strcmp(at, SPORE_ARTIFACT_TYPE) != 0)
			return sl_error_set(err, SL_E_UNSUPPORTED, WHAT ": artifactType \"%s\" is not a spore (\"%s\")",
					    img->artifact_type, SPORE_ARTIFACT_TYPE);
	} else if (img->shape != SPORE_SHAPE_TAR && strcmp(img->config_media_type, SPORE_ARTIFACT_TYPE) != 0) {
		/* An image config with the spore annotations is recognisable
		 * without artifactType (tools that copy images may drop it);
		 * an empty config carries nothing to go by. */
		return sl_error_set(err, SL_E_UNSUPPORTED,
				    WHAT ": no artifactType and an empty config: not a spore (push with "
					 "--artifact-type " SPORE_ARTIFACT_TYPE ")");
	}
	if (parse_annotations(root, img, err) < 0)
		return -1;

	if (sl_json_get_arr(root, "layers", WHAT, &layers, err) < 0)
		return -1;
	img->layers = calloc(json_array_size(layers) ? json_array_size(layers) : 1, sizeof(*img->layers));
	if (!img->layers)
		return sl_error_set(err, SL_E_NOMEM, WHAT ": out of memory");
	for (size_t i = 0; i < json_array_size(layers); i++) {
		if (parse_layer(json_array_get(layers, i), i, img->shape, &img->layers[i], img->snapshot_ref, err) < 0)
			return -1;
		img->nlayers++;
	}
	return img->shape == SPORE_SHAPE_TAR ? check_tar_shape(img, err) : check_files_shape(img, err);
}

int spore_image_decode(const char *json, size_t len, struct spore_image *img, sl_error_t *err)
{
	_cleanup_json_ json_t *root = NULL;

	memset(img, 0, sizeof(*img));
	if (len > OCI_MANIFEST_MAX)
		return sl_error_set(err, SL_E_LIMIT, WHAT ": %zu bytes, the limit is %u", len, OCI_MANIFEST_MAX);
	if (sl_json_parse(json, len, WHAT, &root, err) < 0)
		return -1;
	if (decode(root, img, err) < 0) {
		spore_image_free(img);
		return -1;
	}
	return 0;
}

/* ---- encoding ---- */

static json_t *digest_json(const sl_digest *d)
{
	char s[SL_DIGEST_STRLEN];

	sl_digest_format(d, s);
	return json_string(s);
}

/* json_object_set_new that remembers a failure instead of leaking. */
static void set(json_t *o, const char *key, json_t *v, bool *ok)
{
	if (!v || json_object_set_new(o, key, v) < 0)
		*ok = false;
}

static json_t *chunk_table_json(const struct oci_layer *l)
{
	_cleanup_free_ char *s = malloc(l->nchunks * CHUNK_ENTRY_MAX + 1);
	size_t at = 0;

	if (!s)
		return NULL;
	for (size_t i = 0; i < l->nchunks; i++) {
		char hex[SL_DIGEST_HEXLEN + 1];

		sl_digest_hex(&l->chunks[i].digest, hex);
		at += (size_t)snprintf(s + at, CHUNK_ENTRY_MAX + 1, "%s%s@%llu", i ? "," : "", hex,
				       (unsigned long long)l->chunks[i].offset);
	}
	s[at] = 0;
	return json_string(s);
}

/* Descriptor keys in the order the OCI spec lists them (and Go writes them). */
static json_t *desc_json(const char *mt, const sl_digest *d, uint64_t size, bool *ok)
{
	json_t *o = json_object();

	if (!o) {
		*ok = false;
		return NULL;
	}
	set(o, "mediaType", json_string(mt), ok);
	set(o, "digest", digest_json(d), ok);
	set(o, "size", json_integer((json_int_t)size), ok);
	return o;
}

int spore_image_encode(const struct spore_image *img, char **json, size_t *len, sl_error_t *err)
{
	_cleanup_json_ json_t *root = json_object(), *layers = json_array(), *ann = json_object();
	bool ok = root && layers && ann;
	char *out;

	*json = NULL;
	*len = 0;
	if (img->shape != SPORE_SHAPE_TAR)
		return sl_error_set(err, SL_E_UNSUPPORTED, WHAT ": only the spore push shape is encoded");
	if (img->config_size > INT64_MAX)
		return sl_error_set(err, SL_E_INVALID, WHAT ": config size out of range");
	for (size_t i = 0; ok && i < img->nlayers; i++) {
		const struct oci_layer *l = &img->layers[i];
		json_t *d, *la;

		if (l->size > INT64_MAX)
			return sl_error_set(err, SL_E_INVALID, WHAT ": layers[%zu]: size out of range", i);
		d = desc_json(l->media_type, &l->digest, l->size, &ok);
		if (json_array_append_new(layers, d) < 0 || !(la = json_object())) {
			ok = false;
			break;
		}
		/* Annotation keys sorted, so the bytes are stable. */
		if (l->nchunks)
			set(la, SPORE_ANN_CHUNKS, chunk_table_json(l), &ok);
		if (img->snapshot_ref[0])
			set(la, SPORE_ANN_SNAPSHOT_REF, json_string(img->snapshot_ref), &ok);
		if (l->title[0])
			set(la, OCI_ANN_TITLE, json_string(l->title), &ok);
		if (json_object_size(la))
			set(d, "annotations", la, &ok);
		else
			json_decref(la);
	}
	if (img->has_spore_manifest)
		set(ann, SPORE_LABEL_MANIFEST, digest_json(&img->spore_manifest), &ok);
	if (img->has_parent)
		set(ann, SPORE_LABEL_PARENT, digest_json(&img->parent), &ok);
	set(ann, SPORE_LABEL_VERSION, json_string("1"), &ok);

	set(root, "schemaVersion", json_integer(2), &ok);
	set(root, "mediaType", json_string(OCI_MT_MANIFEST), &ok);
	if (img->artifact_type[0])
		set(root, "artifactType", json_string(img->artifact_type), &ok);
	set(root, "config", desc_json(img->config_media_type, &img->config_digest, img->config_size, &ok), &ok);
	set(root, "layers", json_incref(layers), &ok);
	set(root, "annotations", json_incref(ann), &ok);
	if (!ok || !(out = json_dumps(root, JSON_COMPACT)))
		return sl_error_set(err, SL_E_NOMEM, WHAT ": encoding: out of memory");
	*len = strlen(out);
	if (*len > OCI_MANIFEST_MAX) {
		free(out);
		return sl_error_set(err, SL_E_LIMIT, WHAT ": %zu bytes encoded, the limit is %u", *len,
				    OCI_MANIFEST_MAX);
	}
	*json = out;
	return 0;
}

/* ---- image config ---- */

int spore_config_encode(const struct spore_image *img, const struct spore_manifest *m,
			const sl_digest *spore_manifest_digest, char **json, size_t *len, sl_error_t *err)
{
	_cleanup_json_ json_t *root = json_object(), *diff = json_array(), *labels = json_object();
	json_t *rootfs = json_object(), *cfg = json_object();
	const sl_digest *md = spore_manifest_digest ? spore_manifest_digest
						    : img->has_spore_manifest ? &img->spore_manifest : NULL;
	bool ok = root && diff && labels;

	*json = NULL;
	*len = 0;
	set(root, "rootfs", rootfs, &ok);
	set(root, "config", cfg, &ok);
	if (!ok)
		return sl_error_set(err, SL_E_NOMEM, CWHAT ": out of memory");
	for (size_t i = 0; i < img->nlayers; i++)
		if (json_array_append_new(diff, digest_json(&img->layers[i].digest)) < 0)
			ok = false;
	if (md)
		set(labels, SPORE_LABEL_MANIFEST, digest_json(md), &ok);
	set(labels, SPORE_LABEL_VERSION, json_string("1"), &ok);
	if (m ? m->has_parent : img->has_parent)
		set(labels, SPORE_LABEL_PARENT, digest_json(m ? &m->parent : &img->parent), &ok);
	set(root, "architecture", json_string("amd64"), &ok);
	set(root, "os", json_string("linux"), &ok);
	if (m && m->created[0])
		set(root, "created", json_string(m->created), &ok);
	set(rootfs, "type", json_string("layers"), &ok);
	set(rootfs, "diff_ids", json_incref(diff), &ok);
	set(cfg, "Labels", json_incref(labels), &ok);
	if (!ok || !(*json = json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS)))
		return sl_error_set(err, SL_E_NOMEM, CWHAT ": out of memory");
	*len = strlen(*json);
	return 0;
}

int spore_config_check(const char *json, size_t len, const struct spore_image *img, sl_error_t *err)
{
	_cleanup_json_ json_t *root = NULL;
	json_t *rootfs, *diff, *cfg, *labels;
	const char *s;

	if (len > OCI_MANIFEST_MAX)
		return sl_error_set(err, SL_E_LIMIT, CWHAT ": %zu bytes, the limit is %u", len, OCI_MANIFEST_MAX);
	if (sl_json_parse(json, len, CWHAT, &root, err) < 0)
		return -1;
	if (!json_is_object(root))
		return sl_error_set(err, SL_E_INVALID, CWHAT ": not a JSON object");
	if (img->shape == SPORE_SHAPE_FILES) {
		/* oras: the empty descriptor's blob, "{}". */
		if (json_object_size(root) != 0)
			return sl_error_set(err, SL_E_INVALID, CWHAT ": an empty config must be {}");
		return 0;
	}
	if (sl_json_get_str(root, "architecture", CWHAT, &s, err) < 0)
		return -1;
	if (strcmp(s, "amd64") != 0)
		return sl_error_set(err, SL_E_UNSUPPORTED, CWHAT ": architecture \"%.32s\" (want amd64)", s);
	if (sl_json_get_str(root, "os", CWHAT, &s, err) < 0)
		return -1;
	if (strcmp(s, "linux") != 0)
		return sl_error_set(err, SL_E_UNSUPPORTED, CWHAT ": os \"%.32s\" (want linux)", s);
	if (sl_json_get_obj(root, "rootfs", CWHAT, &rootfs, err) < 0 ||
	    sl_json_get_str(rootfs, "type", CWHAT ": rootfs", &s, err) < 0)
		return -1;
	if (strcmp(s, "layers") != 0)
		return sl_error_set(err, SL_E_INVALID, CWHAT ": rootfs.type \"%.32s\" (want layers)", s);
	if (sl_json_get_arr(rootfs, "diff_ids", CWHAT ": rootfs", &diff, err) < 0)
		return -1;
	if (json_array_size(diff) != img->nlayers)
		return sl_error_set(err, SL_E_INVALID, CWHAT ": %zu diff_ids for %zu layers", json_array_size(diff),
				    img->nlayers);
	for (size_t i = 0; i < img->nlayers; i++) {
		sl_digest d;
		const char *ds = json_string_value(json_array_get(diff, i));

		if (!ds)
			return sl_error_set(err, SL_E_INVALID, CWHAT ": diff_ids[%zu] must be a string", i);
		if (sl_digest_parse(ds, &d, err) < 0)
			return sl_error_wrap(err, CWHAT ": diff_ids[%zu]", i);
		/* Uncompressed tar layers: the diff_id is the layer digest. */
		if (!sl_digest_equal(&d, &img->layers[i].digest))
			return sl_error_set(err, SL_E_INVALID, CWHAT ": diff_ids[%zu] is not the digest of layer %zu",
					    i, i);
	}
	/* Labels are optional, but when present must agree with the manifest. */
	cfg = json_object_get(root, "config");
	labels = json_is_object(cfg) ? json_object_get(cfg, "Labels") : NULL;
	if (json_is_object(labels)) {
		const char *v = json_string_value(json_object_get(labels, SPORE_LABEL_VERSION));
		const char *md = json_string_value(json_object_get(labels, SPORE_LABEL_MANIFEST));
		sl_digest d;
		sl_error_t e2 = NULL;

		if (v && strcmp(v, "1") != 0)
			return sl_error_set(err, SL_E_UNSUPPORTED, CWHAT ": spore version label \"%.32s\"", v);
		if (md && img->has_spore_manifest &&
		    (sl_digest_parse(md, &d, &e2) < 0 || !sl_digest_equal(&d, &img->spore_manifest))) {
			sl_error_free(&e2);
			return sl_error_set(err, SL_E_INVALID,
					    CWHAT ": label \"" SPORE_LABEL_MANIFEST "\" disagrees with the manifest");
		}
	}
	return 0;
}

int spore_image_find_chunk(const struct spore_image *img, const sl_digest *chunk, size_t *layer,
			   uint64_t *offset)
{
	struct oci_chunk_loc key = { .digest = *chunk };

	for (size_t i = 0; i < img->nlayers; i++) {
		const struct oci_layer *l = &img->layers[i];
		const struct oci_chunk_loc *hit;

		if (!l->nchunks)
			continue;
		hit = bsearch(&key, l->chunks, l->nchunks, sizeof(*l->chunks), cmp_loc);
		if (hit) {
			*layer = i;
			*offset = hit->offset;
			return 0;
		}
	}
	return -1;
}
