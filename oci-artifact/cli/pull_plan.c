/* Fetching chunks into the node cache: locate, Range GET or blob GET, verify, insert. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pull_plan.h"
#include "sl/spore_manifest.h"

int ocli_chunk_source(const struct spore_image *img, const sl_digest *d, struct oci_fetch *f, sl_error_t *err)
{
	memset(f, 0, sizeof(*f));
	f->want = *d;
	f->fd = -1;
	if (img->shape == SPORE_SHAPE_TAR) {
		size_t layer;
		uint64_t off;
		if (spore_image_find_chunk(img, d, &layer, &off) == 0) {
			f->blob = img->layers[layer].digest;
			f->offset = off;
			f->length = SPORE_CHUNK_SIZE;
			return 0;
		}
	} else {
		char path[96];
		spore_chunk_path(d, path);
		for (size_t i = 0; i < img->nlayers; i++) {
			if (!strcmp(img->layers[i].title, path)) {
				f->blob = img->layers[i].digest;
				f->length = 0;
				return 0;
			}
		}
	}
	char s[SL_DIGEST_STRLEN];
	sl_digest_format(d, s);
	return sl_error_set(err, SL_E_INVALID, "chunk %s is in no layer of the image", s);
}

int ocli_fetch_chunks(struct oci_client *client, struct oci_cache *cache, const struct spore_image *img,
		      const sl_digest *ds, size_t n, size_t *fetched, sl_error_t *err)
{
	*fetched = 0;
	struct oci_fetch *fs = calloc(n ? n : 1, sizeof(*fs));
	struct oci_cache_tmp *ts = calloc(n ? n : 1, sizeof(*ts));
	size_t nf = 0;
	int rc = -1;
	if (!fs || !ts) {
		sl_error_set(err, SL_E_NOMEM, "fetch table");
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		bool dup = false;
		for (size_t j = 0; j < nf && !dup; j++)
			dup = sl_digest_equal(&fs[j].want, &ds[i]);
		bool present;
		if (dup || oci_cache_has(cache, &ds[i], SPORE_CHUNK_SIZE, &present, err) < 0) {
			if (dup)
				continue;
			goto out;
		}
		if (present)
			continue;
		if (ocli_chunk_source(img, &ds[i], &fs[nf], err) < 0)
			goto out;
		ts[nf].fd = -1;
		if (oci_cache_tmp_open(cache, &ts[nf], err) < 0)
			goto out;
		fs[nf].fd = ts[nf].fd;
		nf++;
	}
	if (nf && oci_fetch_many(client, fs, nf, err) < 0)
		goto out;
	for (size_t i = 0; i < nf; i++) {
		if (oci_cache_tmp_commit(cache, &ts[i], &fs[i].want, err) < 0) {
			ts[i].fd = -1;
			goto out;
		}
		ts[i].fd = -1;
		(*fetched)++;
	}
	rc = 0;
out:
	for (size_t i = 0; ts && i < nf; i++) {
		if (ts[i].fd >= 0)
			oci_cache_tmp_abort(cache, &ts[i]);
		sl_error_free(&fs[i].err);
	}
	free(fs);
	free(ts);
	return rc;
}
