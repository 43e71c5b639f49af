/* Fetching chunks into the node cache: locate, GET whole layers or Range GETs, verify, insert. */
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pull_plan.h"
#include "sl/log.h"
#include "sl/spore_manifest.h"

/* Chunks per fetch-and-commit round: what a killed pull keeps is whole
 * rounds, and each round costs one commit (links and a directory fsync).
 * 512 chunks is 1 GiB. */
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

/* A round's temp files. One thread creates them in the order their chunks
 * will arrive while the transfer runs; a writer that needs one first waits
 * for it (open_part). Creating a file cost 0.2-1.3 ms on ext4 (the more the
 * more files were deleted in the last minute: its inode allocator steps
 * around them), so 512 of them up front held the transfer back by
 * 120-660 ms; the writers creating them themselves was slower still. */
struct round_tmp {
	struct oci_cache *cache;
	struct oci_cache_tmp *ts;
	const struct oci_fetch_part *parts; /* parts[m] goes to ts[m] */
	const size_t *order;                /* parts in the order to create their files */
	size_t n;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool stop;
	sl_error_t err; /* the opener failed */
};

static int tmp_open_direct(struct oci_cache *cache, struct oci_cache_tmp *t, sl_error_t *err)
{
	if (oci_cache_tmp_open(cache, t, err) < 0)
		return -1;
	/* Read-only before the first byte: the writer's fsync then covers the
	 * mode the entry will have (commit's fchmod changes nothing). */
	if (fchmod(t->fd, 0444) < 0) {
		sl_error_sys(err, "cache: chmod temp file");
		oci_cache_tmp_abort(cache, t);
		return -1;
	}
	/* Bulk ingest bypasses the page cache where the filesystem allows:
	 * filling 1 GiB of fresh page cache cost 2-4 s of CPU on a VM whose
	 * free memory is handed back to the host (and it all had to go to the
	 * disk before the pull may finish anyway). The registry client writes
	 * from aligned buffers and falls back to buffered writes by itself. */
	int fl = fcntl(t->fd, F_GETFL);
	if (fl >= 0)
		(void)fcntl(t->fd, F_SETFL, fl | O_DIRECT);
	return 0;
}

static void *round_opener(void *arg)
{
	struct round_tmp *rt = arg;
	for (size_t i = 0; i < rt->n; i++) {
		struct oci_cache_tmp t;
		sl_error_t e = NULL;
		pthread_mutex_lock(&rt->mu);
		bool stop = rt->stop;
		pthread_mutex_unlock(&rt->mu);
		if (stop)
			break;
		int r = tmp_open_direct(rt->cache, &t, &e);
		pthread_mutex_lock(&rt->mu);
		if (r < 0)
			rt->err = e;
		else
			rt->ts[rt->order[i]] = t;
		pthread_cond_broadcast(&rt->cv);
		pthread_mutex_unlock(&rt->mu);
		if (r < 0)
			break;
	}
	return NULL;
}

/* oci_fetch open_part, on the registry client's writer threads. */
static int round_open(void *arg, const struct oci_fetch_part *pt, sl_error_t *err)
{
	struct round_tmp *rt = arg;
	struct oci_cache_tmp *t = &rt->ts[pt - rt->parts];
	pthread_mutex_lock(&rt->mu);
	while (t->fd < 0 && !rt->err)
		pthread_cond_wait(&rt->cv, &rt->mu);
	int fd = t->fd;
	if (fd < 0)
		sl_error_set(err, rt->err->code, "%s", sl_error_msg(rt->err));
	pthread_mutex_unlock(&rt->mu);
	return fd;
}

/* Fetches need[0..n) (sorted by layer and offset) into temp files and
 * commits them. A layer whose chunks are mostly needed comes in one GET,
 * split into chunks on the fly (per-request cost dominates 2 MiB Range GETs
 * on a registry); the others chunk by chunk. Every chunk is a part of its
 * fetch, so the registry client hashes and writes it off the transfer
 * thread. */
static int fetch_round(struct oci_client *client, struct oci_cache *cache, const struct spore_image *img,
		       struct need *need, size_t n, sl_error_t *err)
{
	struct oci_fetch *fs = calloc(n, sizeof(*fs));
	struct oci_fetch_part *parts = calloc(n, sizeof(*parts));
	struct oci_cache_tmp *ts = calloc(n, sizeof(*ts));
	sl_digest *ds = calloc(n, sizeof(*ds));
	size_t *order = calloc(n, sizeof(*order));
	struct round_tmp rt = {.cache = cache, .ts = ts, .parts = parts, .order = order, .n = n};
	pthread_t opener;
	bool opening = false;
	size_t nf = 0;
	int rc = -1;
	pthread_mutex_init(&rt.mu, NULL);
	pthread_cond_init(&rt.cv, NULL);
	if (!fs || !parts || !ts || !ds || !order) {
		sl_error_set(err, SL_E_NOMEM, "fetch table");
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		ts[i].fd = -1;
		ds[i] = need[i].d;
		parts[i].offset = need[i].src.offset;
		parts[i].length = SPORE_CHUNK_SIZE;
		parts[i].want = need[i].d;
		parts[i].fd = -1;
	}
	for (size_t i = 0; i < n;) {
		size_t l = need[i].layer, k = i + 1;
		while (k < n && l != SIZE_MAX && need[k].layer == l)
			k++;
		struct oci_fetch *f = &fs[nf++];
		memset(f, 0, sizeof(*f));
		f->fd = -1;
		f->open_part = round_open;
		f->open_arg = &rt;
		f->sync = true; /* each chunk durable as it lands, not one syncfs of everything at the end */
		if (l != SIZE_MAX && (k - i) * 2 >= img->layers[l].nchunks && k - i > 1) {
			f->blob = img->layers[l].digest;
			f->nparts = k - i;
		} else {
			/* One Range GET (tar) or the chunk's own blob (oras). */
			f->blob = need[i].src.blob;
			f->offset = need[i].src.offset;
			f->length = need[i].src.length;
			f->nparts = 1;
		}
		f->parts = &parts[i];
		i += f->nparts;
	}
	/* The k-th chunk of every fetch before the k+1-th of any: the
	 * fetches run side by side. */
	size_t no = 0;
	for (size_t k = 0; no < n; k++)
		for (size_t i = 0; i < nf; i++)
			if (k < fs[i].nparts)
				order[no++] = (size_t)(fs[i].parts - parts) + k;
	struct oci_client_stats st0, st1;
	oci_client_stats(client, &st0);
	if (pthread_create(&opener, NULL, round_opener, &rt) != 0) {
		/* No thread: all of them now. */
		for (size_t i = 0; i < n; i++)
			if (tmp_open_direct(cache, &ts[i], err) < 0)
				goto out;
	} else {
		opening = true;
	}
	uint64_t t0 = ocli_now_ns();
	int frc = oci_fetch_many(client, fs, nf, err);
	if (opening) {
		pthread_mutex_lock(&rt.mu);
		rt.stop = true;
		pthread_mutex_unlock(&rt.mu);
		pthread_join(opener, NULL);
		opening = false;
	}
	if (frc < 0)
		goto out;
	uint64_t t1 = ocli_now_ns();
	/* Every byte was hashed and checked against its chunk's digest before
	 * it was written, and fsynced after. */
	rc = oci_cache_tmp_commit_many(cache, ts, ds, n, OCI_CACHE_STREAM_VERIFIED | OCI_CACHE_SYNCED, err);
	oci_client_stats(client, &st1);
	/* part_wait: the transfers waited for hashing and the disk. */
	sl_debug("fetch round", "chunks=%zu requests=%zu fetch_ms=%.1f part_wait_ms=%.1f commit_ms=%.1f", n, nf,
		 (t1 - t0) / 1e6, (st1.part_wait_ns - st0.part_wait_ns) / 1e6, (ocli_now_ns() - t1) / 1e6);
out:
	/* commit_many closed them all; after a failure, whatever was opened. */
	for (size_t i = 0; ts && rc < 0 && i < n; i++)
		oci_cache_tmp_abort(cache, &ts[i]);
	sl_error_free(&rt.err);
	pthread_cond_destroy(&rt.cv);
	pthread_mutex_destroy(&rt.mu);
	free(order);
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
