/* libFuzzer target: spore_image_decode on arbitrary bytes (encode/decode stable for TAR shape), spore_config_check. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "oci/image.h"

static void same_or_trap(const struct spore_image *a, const struct spore_image *b)
{
	if (a->shape != b->shape || strcmp(a->artifact_type, b->artifact_type) ||
	    strcmp(a->config_media_type, b->config_media_type) ||
	    !sl_digest_equal(&a->config_digest, &b->config_digest) || a->config_size != b->config_size ||
	    a->has_spore_manifest != b->has_spore_manifest ||
	    !sl_digest_equal(&a->spore_manifest, &b->spore_manifest) || a->has_parent != b->has_parent ||
	    !sl_digest_equal(&a->parent, &b->parent) || a->nlayers != b->nlayers)
		__builtin_trap();
	for (size_t i = 0; i < a->nlayers; i++) {
		const struct oci_layer *x = &a->layers[i], *y = &b->layers[i];

		if (strcmp(x->media_type, y->media_type) || !sl_digest_equal(&x->digest, &y->digest) ||
		    x->size != y->size || strcmp(x->title, y->title) || x->nchunks != y->nchunks)
			__builtin_trap();
		for (size_t k = 0; k < x->nchunks; k++)
			if (!sl_digest_equal(&x->chunks[k].digest, &y->chunks[k].digest) ||
			    x->chunks[k].offset != y->chunks[k].offset)
				__builtin_trap();
	}
}

/* A fixed image for spore_config_check: meta layer and one chunk layer. */
static struct spore_image *fixed_image(void)
{
	static struct spore_image img;
	static struct oci_layer layers[2];
	static struct oci_chunk_loc loc;

	if (img.nlayers)
		return &img;
	img.shape = SPORE_SHAPE_TAR;
	strcpy(img.artifact_type, SPORE_ARTIFACT_TYPE);
	strcpy(img.config_media_type, OCI_MT_CONFIG);
	img.has_spore_manifest = true;
	sl_sha256("m", 1, &img.spore_manifest);
	for (int i = 0; i < 2; i++) {
		strcpy(layers[i].media_type, OCI_MT_LAYER_TAR);
		sl_sha256(i ? "1" : "0", 1, &layers[i].digest);
	}
	strcpy(layers[0].title, SPORE_META_TITLE);
	layers[0].size = 4096;
	sl_sha256("c", 1, &loc.digest);
	loc.offset = 512;
	layers[1].chunks = &loc;
	layers[1].nchunks = 1;
	layers[1].size = 512 + SPORE_CHUNK_SIZE + 1024;
	img.layers = layers;
	img.nlayers = 2;
	return &img;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct spore_image img, back;
	sl_error_t err = NULL;
	char *j1 = NULL, *j2 = NULL;
	size_t l1, l2, layer;
	uint64_t off;

	/* Whatever the bytes, checking them as a config must not crash. */
	if (spore_config_check((const char *)data, size, fixed_image(), &err) < 0) {
		if (!err || !sl_error_msg(err)[0])
			__builtin_trap();
		sl_error_free(&err);
	}

	if (spore_image_decode((const char *)data, size, &img, &err) < 0) {
		if (!err || !sl_error_msg(err)[0] || img.layers || img.nlayers)
			__builtin_trap();
		if (err->code != SL_E_INVALID && err->code != SL_E_UNSUPPORTED && err->code != SL_E_LIMIT)
			__builtin_trap();
		sl_error_free(&err);
		return 0;
	}
	for (size_t i = 0; i < img.nlayers; i++) {
		const struct oci_layer *l = &img.layers[i];

		for (size_t k = 0; k < l->nchunks; k++) {
			if (l->chunks[k].offset % 512 || l->size < SPORE_CHUNK_SIZE ||
			    l->chunks[k].offset > l->size - SPORE_CHUNK_SIZE)
				__builtin_trap();
			if (k && memcmp(&l->chunks[k - 1].digest, &l->chunks[k].digest, SL_DIGEST_LEN) >= 0)
				__builtin_trap();
			if (spore_image_find_chunk(&img, &l->chunks[k].digest, &layer, &off) < 0)
				__builtin_trap();
		}
	}
	if (img.shape == SPORE_SHAPE_TAR) {
		if (spore_image_encode(&img, &j1, &l1, &err) < 0)
			__builtin_trap();
		if (spore_image_decode(j1, l1, &back, &err) < 0)
			__builtin_trap();
		same_or_trap(&img, &back);
		if (spore_image_encode(&back, &j2, &l2, &err) < 0 || l1 != l2 || memcmp(j1, j2, l1) != 0)
			__builtin_trap();
		spore_image_free(&back);
		free(j1);
		free(j2);
	} else if (img.shape != SPORE_SHAPE_FILES || !img.has_spore_manifest) {
		__builtin_trap();
	}
	spore_image_free(&img);
	return 0;
}
