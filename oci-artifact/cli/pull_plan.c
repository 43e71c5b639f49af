/* Fetching chunks into the node cache: locate, GET whole layers or Range GETs, verify, insert. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pull_plan.h"
#include "sl/log.h"
#include "sl/spore_manifest.h"

/* Chunks per fetch-and-commit round: what a killed pull keeps is whole
 * rounds, and each round costs one syncfs. 512 chunks is 1 GiB. */
#define ROUND_CHUNKS 512

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

/* One chunk still to fetch. */
struct need {
	sl_digest d;
	struct oci_fetch src; /* where it is */
	size_t layer;         /* TAR: its layer; else SIZE_MAX */
};

static int cmp_need(const void *a, const void *b)
{
	const struct need *x = a, *y = b;
	if (x->layer != y->layer)
		return x->layer < y->layer ? -1 : 1;
	return x->src.offset < y->src.offset ? -1 : x->src.offset > y->src.offset;
}

static size_t layer_of(const struct spore_image *img, const sl_digest *blob)
{
	for (size_t i = 0; i < img->nlayers; i++)
		if (sl_digest_equal(&img->layers[i].digest, blob))
			return i;
	return SIZE_MAX;
}

/* Fetches need[0..n) (sorted by layer and offset) into temp files and
 * commits them. A layer whose chunks are mostly needed comes in one GET,
 * split into chunks on the fly (per-request cost dominates 2 MiB Range GETs
 * on a registry); the others chunk by chunk. */
static int fetch_round(struct oci_client *client, struct oci_cache *cache, const struct spore_image *img,
		       struct need *need, size_t n, sl_error_t *err)
{
	struct oci_fetch *fs = calloc(n, sizeof(*fs));
	struct oci_fetch_part *parts = calloc(n, sizeof(*parts));
	struct oci_cache_tmp *ts = calloc(n, sizeof(*ts));
	sl_digest *ds = calloc(n, sizeof(*ds));
	size_t nf = 0, nt = 0;
	int rc = -1;
	if (!fs || !parts || !ts || !ds) {
		sl_error_set(err, SL_E_NOMEM, "fetch table");
		goto out;
	}
	for (size_t i = 0; i < n; i++)
		ts[i].fd = -1;
	for (size_t i = 0; i < n; i++) {
		if (oci_cache_tmp_open(cache, &ts[i], err) < 0)
			goto out;
		ds[i] = need[i].d;
		nt++;
	}
	for (size_t i = 0; i < n;) {
		size_t l = need[i].layer, k = i;
		while (k < n && l != SIZE_MAX && need[k].layer == l)
			k++;
		if (l != SIZE_MAX && (k - i) * 2 >= img->layers[l].nchunks && k - i > 1) {
			struct oci_fetch *f = &fs[nf++];
			memset(f, 0, sizeof(*f));
			f->blob = img->layers[l].digest;
			f->fd = -1;
			f->parts = &parts[i];
			f->nparts = k - i;
			for (size_t m = i; m < k; m++) {
				parts[m].offset = need[m].src.offset;
				parts[m].length = SPORE_CHUNK_SIZE;
				parts[m].want = need[m].d;
				parts[m].fd = ts[m].fd;
				parts[m].dst_off = 0;
			}
			i = k;
		} else {
			fs[nf] = need[i].src;
			fs[nf].fd = ts[i].fd;
			fs[nf].dst_off = 0;
			nf++;
			i++;
		}
	}
	uint64_t t0 = ocli_now_ns();
	if (oci_fetch_many(client, fs, nf, err) < 0)
		goto out;
	uint64_t t1 = ocli_now_ns();
	/* Every byte was hashed and checked against its digest as it arrived
	 * (whole blobs, ranges and parts alike). */
	rc = oci_cache_tmp_commit_many(cache, ts, ds, n, OCI_CACHE_STREAM_VERIFIED, err);
	nt = 0;
	sl_debug("fetch round", "chunks=%zu requests=%zu fetch_ms=%.1f commit_ms=%.1f", n, nf, (t1 - t0) / 1e6,
		 (ocli_now_ns() - t1) / 1e6);
out:
	for (size_t i = 0; ts && i < nt; i++)
		oci_cache_tmp_abort(cache, &ts[i]);
	for (size_t i = 0; fs && i < nf; i++)
		sl_error_free(&fs[i].err);
	free(fs);
	free(parts);
	free(ts);
	free(ds);
	return rc;
}

int ocli_fetch_chunks(struct oci_client *client, struct oci_cache *cache, const struct spore_image *img,
		      const sl_digest *ds, size_t n, size_t *fetched, sl_error_t *err)
{
	*fetched = 0;
	struct need *need = calloc(n ? n : 1, sizeof(*need));
	size_t nn = 0;
	int rc = -1;
	if (!need)
		return sl_error_set(err, SL_E_NOMEM, "fetch table");
	for (size_t i = 0; i < n; i++) {
		bool dup = false, present;
		for (size_t j = 0; j < nn && !dup; j++)
			dup = sl_digest_equal(&need[j].d, &ds[i]);
		if (dup)
			continue;
		if (oci_cache_has(cache, &ds[i], SPORE_CHUNK_SIZE, &present, err) < 0)
			goto out;
		if (present)
			continue;
		need[nn].d = ds[i];
		if (ocli_chunk_source(img, &ds[i], &need[nn].src, err) < 0)
			goto out;
		need[nn].layer = img->shape == SPORE_SHAPE_TAR ? layer_of(img, &need[nn].src.blob) : SIZE_MAX;
		nn++;
	}
	if (nn > 1)
		qsort(need, nn, sizeof(*need), cmp_need);
	uint64_t t0 = ocli_now_ns();
	for (size_t i = 0; i < nn; i += ROUND_CHUNKS) {
		size_t k = nn - i < ROUND_CHUNKS ? nn - i : ROUND_CHUNKS;
		if (fetch_round(client, cache, img, need + i, k, err) < 0)
			goto out;
		*fetched += k;
	}
	sl_debug("chunks fetched", "n=%zu ms=%.1f", nn, (ocli_now_ns() - t0) / 1e6);
	rc = 0;
out:
	free(need);
	return rc;
}
