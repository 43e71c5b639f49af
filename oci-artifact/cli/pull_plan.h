/* Fetching a spore's chunks into the cache: shared by pull and cache fetch. */
#ifndef SPORE_OCLI_PULL_PLAN_H
#define SPORE_OCLI_PULL_PLAN_H

#include "ocli.h"

/* Where chunk d comes from in img: a Range of a tar layer (TAR shape) or a
 * whole titled blob (FILES shape). */
int ocli_chunk_source(const struct spore_image *img, const sl_digest *d, struct oci_fetch *f, sl_error_t *err);

/* Fetches every chunk in ds[0..n) that the cache lacks (verified, inserted);
 * *fetched counts them. */
int ocli_fetch_chunks(struct oci_client *client, struct oci_cache *cache, const struct spore_image *img,
		      const sl_digest *ds, size_t n, size_t *fetched, sl_error_t *err);

#endif
