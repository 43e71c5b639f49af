/* Planning `spore push`: tar layers described as segments over the spore's files, parent layer reuse, digests. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "oci/image.h"
#include "oci/tar.h"
#include "sl/file.h"

#define HASH_BLOCK (1u << 20)
#define HASH_THREADS_MAX 8
/* Tar bytes one chunk takes in a layer: header, data (2 MiB is 512-aligned). */
#define CHUNK_TAR_BYTES ((uint64_t)OCI_TAR_BLOCK + SPORE_CHUNK_SIZE)
/* Spore files are read-only (docs/spore-format.md section 1). */
#define FILE_MODE 0444

/* What a file segment's bytes must hash to, for the error that names it. */
struct seg_check {
	sl_digest want;
	char path[96];
	bool is_chunk;
};

/* One layer to hash: its blob and a check per segment (fd segments only). */
struct hash_job {
	struct spore_push_blob *blob;
	struct seg_check *checks;
	int rc;
	sl_error_t err;
};

struct hash_pool {
	struct hash_job *jobs;
	size_t njobs;
	size_t next; /* atomically claimed */
};

static const uint8_t zeros[64 << 10];

void spore_push_plan_free(struct spore_push_plan *plan)
{
	if (!plan)
		return;
	spore_image_free(&plan->img);
	for (size_t i = 0; i < plan->nblobs; i++) {
		free(plan->blobs[i].segs);
		free(plan->blobs[i].mem);
	}
	free(plan->blobs);
	free(plan->config_json);
	for (size_t i = 0; i < plan->nfds; i++)
		if (plan->fds[i] >= 0)
			close(plan->fds[i]);
	free(plan->fds);
	memset(plan, 0, sizeof(*plan));
}

/* One pass over a layer's bytes: the layer digest and, for every file in
 * it, the file's own digest (so each byte is read and hashed once). */
static void hash_job_run(struct hash_job *j, uint8_t *buf)
{
	struct spore_push_blob *b = j->blob;
	sl_sha256_ctx *c = sl_sha256_new();
	uint64_t total = 0;

	if (!c) {
		j->rc = sl_error_set(&j->err, SL_E_NOMEM, "hashing: out of memory");
		return;
	}
	for (size_t i = 0; i < b->nsegs; i++) {
		const struct oci_seg *s = &b->segs[i];

		if (s->mem) {
			sl_sha256_update(c, s->mem, s->len);
		} else if (s->fd >= 0) {
			sl_sha256_ctx *fc = sl_sha256_new();
			sl_digest got;

			if (!fc) {
				j->rc = sl_error_set(&j->err, SL_E_NOMEM, "hashing: out of memory");
				break;
			}
			for (uint64_t done = 0; done < s->len && j->rc == 0;) {
				size_t k = s->len - done < HASH_BLOCK ? (size_t)(s->len - done) : HASH_BLOCK;

				if (sl_pread_all(s->fd, buf, k, (off_t)(s->off + done), &j->err) < 0) {
					j->rc = sl_error_wrap(&j->err, "%s", j->checks[i].path);
					break;
				}
				sl_sha256_update(c, buf, k);
				sl_sha256_update(fc, buf, k);
				done += k;
			}
			sl_sha256_final(fc, &got);
			if (j->rc)
				break;
			if (!sl_digest_equal(&got, &j->checks[i].want)) {
				j->rc = sl_error_set(&j->err, SL_E_INTEGRITY,
						     j->checks[i].is_chunk
							     ? "%s: content does not match its name"
							     : "%s: content does not match the spore manifest",
						     j->checks[i].path);
				break;
			}
		} else {
			for (uint64_t done = 0; done < s->len;) {
				size_t k = s->len - done < sizeof(zeros) ? (size_t)(s->len - done) : sizeof(zeros);

				sl_sha256_update(c, zeros, k);
				done += k;
			}
		}
		total += s->len;
	}
	sl_sha256_final(c, &b->digest);
	b->size = total;
}

static void *hash_worker(void *arg)
{
	struct hash_pool *p = arg;
	uint8_t *buf = malloc(HASH_BLOCK);

	for (;;) {
		size_t i = __atomic_fetch_add(&p->next, 1, __ATOMIC_RELAXED);

		if (i >= p->njobs)
			break;
		if (!buf)
			p->jobs[i].rc = sl_error_set(&p->jobs[i].err, SL_E_NOMEM, "hashing: out of memory");
		else
			hash_job_run(&p->jobs[i], buf);
	}
	free(buf);
	return NULL;
}

/* Layers are independent: hash them on a few threads (a 3 GiB spore is
 * seconds of sha256 on one core). The first failing layer's error wins. */
static int hash_jobs(struct hash_job *jobs, size_t n, sl_error_t *err)
{
	struct hash_pool pool = { .jobs = jobs, .njobs = n };
	pthread_t th[HASH_THREADS_MAX];
	size_t nth = 0;
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	size_t want = cpus > 1 ? (size_t)cpus : 1;

	if (want > HASH_THREADS_MAX)
		want = HASH_THREADS_MAX;
	if (want > n)
		want = n;
	/* The calling thread is one of the workers. */
	for (; nth + 1 < want; nth++)
		if (pthread_create(&th[nth], NULL, hash_worker, &pool) != 0)
			break;
	hash_worker(&pool);
	for (size_t i = 0; i < nth; i++)
		pthread_join(th[i], NULL);
	for (size_t i = 0; i < n; i++)
		if (jobs[i].rc) {
			*err = sl_steal_ptr(jobs[i].err);
			for (size_t k = i + 1; k < n; k++)
				sl_error_free(&jobs[k].err);
			return -1;
		}
	return 0;
}

/* The plan keeps one descriptor per uploaded file open (segments refer to
 * fds), which for a large spore passes the usual soft limit of 1024: raise
 * the soft limit toward the hard one when needed, never lower it. */
static void ensure_nofile(size_t need)
{
	struct rlimit rl;
	rlim_t want = (rlim_t)need + 256;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= want)
		return;
	rl.rlim_cur = (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < want) ? rl.rlim_max : want;
	(void)setrlimit(RLIMIT_NOFILE, &rl); /* if refused, open() reports EMFILE */
}

/* Opens a spore file beneath dirfd (no symlinks), which must be a regular
 * file; its fd goes to plan->fds so the plan owns it. */
static int open_file(struct spore_push_plan *plan, int dirfd, const char *path, uint64_t *size, sl_error_t *err)
{
	struct stat st;
	int fd = sl_open_beneath(dirfd, path, O_RDONLY | O_NOFOLLOW, 0, err);

	if (fd < 0)
		return sl_error_wrap(err, "spore push");
	plan->fds[plan->nfds++] = fd;
	if (fstat(fd, &st) < 0)
		return sl_error_sys(err, "spore push: %s: fstat", path);
	if (!S_ISREG(st.st_mode))
		return sl_error_set(err, SL_E_INVALID, "spore push: %s: not a regular file", path);
	*size = (uint64_t)st.st_size;
	return fd;
}

static int cmp_digest(const void *a, const void *b)
{
	return memcmp(a, b, SL_DIGEST_LEN);
}

/* Appends one file entry (header, bytes, padding) to a layer being built. */
static int add_entry(struct spore_push_blob *b, uint8_t *hdr, struct seg_check *checks, const char *path, int fd,
		     uint64_t size, const sl_digest *want, bool is_chunk, sl_error_t *err)
{
	uint64_t pad = oci_tar_padding(size);

	if (oci_tar_file_header(hdr, path, size, FILE_MODE, err) < 0)
		return -1;
	b->segs[b->nsegs++] = (struct oci_seg){ .mem = hdr, .fd = -1, .len = OCI_TAR_BLOCK };
	checks[b->nsegs] = (struct seg_check){ .want = *want, .is_chunk = is_chunk };
	snprintf(checks[b->nsegs].path, sizeof(checks[b->nsegs].path), "%s", path);
	b->segs[b->nsegs++] = (struct oci_seg){ .fd = fd, .off = 0, .len = size };
	if (pad)
		b->segs[b->nsegs++] = (struct oci_seg){ .fd = -1, .len = pad };
	return 0;
}

static void add_trailer(struct spore_push_blob *b)
{
	b->segs[b->nsegs++] = (struct oci_seg){ .fd = -1, .len = OCI_TAR_TRAILER };
}

/* Allocates a tar layer blob for nfiles entries: segments, headers, checks. */
static int new_tar_blob(struct spore_push_blob *b, struct hash_job *job, size_t nfiles, sl_error_t *err)
{
	size_t nsegs = 3 * nfiles + 1;

	snprintf(b->media_type, sizeof(b->media_type), "%s", OCI_MT_LAYER_TAR);
	b->segs = calloc(nsegs, sizeof(*b->segs));
	b->mem = calloc(nfiles ? nfiles : 1, OCI_TAR_BLOCK);
	job->checks = calloc(nsegs, sizeof(*job->checks));
	job->blob = b;
	if (!b->segs || !b->mem || !job->checks)
		return sl_error_set(err, SL_E_NOMEM, "spore push: out of memory");
	return 0;
}

static int plan_meta(struct spore_push_plan *plan, int dirfd, const struct spore_manifest *m,
		     const sl_digest *mdigest, struct spore_push_blob *b, struct hash_job *job, sl_error_t *err)
{
	size_t nfiles = 2 + m->vcpus;
	uint8_t *hdrs;
	uint64_t size;
	int fd;

	if (new_tar_blob(b, job, nfiles, err) < 0)
		return -1;
	hdrs = b->mem;
	fd = open_file(plan, dirfd, SPORE_MANIFEST_PATH, &size, err);
	/* Hashed again here: the bytes pushed must be the ones loaded. */
	if (fd < 0 || add_entry(b, hdrs, job->checks, SPORE_MANIFEST_PATH, fd, size, mdigest, false, err) < 0)
		return -1;
	for (unsigned i = 0; i <= m->vcpus; i++) {
		const struct spore_file_ref *r = i == 0 ? &m->vm_state : &m->vcpu_state[i - 1];

		fd = open_file(plan, dirfd, r->path, &size, err);
		if (fd < 0)
			return -1;
		if (size != r->size)
			return sl_error_set(err, SL_E_INTEGRITY, "spore push: %s: %llu bytes, the manifest says %llu",
					    r->path, (unsigned long long)size, (unsigned long long)r->size);
		if (add_entry(b, hdrs + (size_t)(i + 1) * OCI_TAR_BLOCK, job->checks, r->path, fd, size, &r->digest,
			      false, err) < 0)
			return -1;
	}
	add_trailer(b);
	return 0;
}

/* A new chunk layer holding chunks[0..n) (sorted by digest), and its
 * manifest descriptor with the chunk table. */
static int plan_chunk_layer(struct spore_push_plan *plan, int dirfd, const sl_digest *chunks, size_t n,
			    struct spore_push_blob *b, struct oci_layer *l, struct hash_job *job, sl_error_t *err)
{
	char hex[SL_DIGEST_HEXLEN + 1];

	if (new_tar_blob(b, job, n, err) < 0)
		return -1;
	l->chunks = calloc(n, sizeof(*l->chunks));
	if (!l->chunks)
		return sl_error_set(err, SL_E_NOMEM, "spore push: out of memory");
	for (size_t i = 0; i < n; i++) {
		char path[96];
		uint64_t size;
		int fd;

		spore_chunk_path(&chunks[i], path);
		fd = open_file(plan, dirfd, path, &size, err);
		if (fd < 0)
			return -1;
		if (size != SPORE_CHUNK_SIZE)
			return sl_error_set(err, SL_E_INTEGRITY, "spore push: %s: %llu bytes, a chunk is %u", path,
					    (unsigned long long)size, SPORE_CHUNK_SIZE);
		if (add_entry(b, (uint8_t *)b->mem + i * OCI_TAR_BLOCK, job->checks, path, fd, size, &chunks[i], true,
			      err) < 0)
			return -1;
		l->chunks[i].digest = chunks[i];
		l->chunks[i].offset = i * CHUNK_TAR_BYTES + OCI_TAR_BLOCK;
	}
	l->nchunks = n;
	add_trailer(b);
	sl_digest_hex(&chunks[0], hex);
	snprintf(l->media_type, sizeof(l->media_type), "%s", OCI_MT_LAYER_TAR);
	snprintf(l->title, sizeof(l->title), "chunks-%.12s.tar", hex);
	return 0;
}

/* Which chunk layers of the parent hold a chunk the child has; marks the
 * chunks they cover. Returns how many layers are reused. */
static size_t mark_reuse(const struct spore_image *parent, const sl_digest *uniq, size_t nu, bool *reuse,
			 bool *covered)
{
	size_t nreused = 0;

	for (size_t i = 0; i < parent->nlayers; i++) {
		const struct oci_layer *l = &parent->layers[i];

		reuse[i] = false;
		for (size_t k = 0; k < l->nchunks; k++) {
			const sl_digest *hit = bsearch(&l->chunks[k].digest, uniq, nu, sizeof(*uniq), cmp_digest);

			if (hit) {
				reuse[i] = true;
				covered[hit - uniq] = true;
			}
		}
		nreused += reuse[i];
	}
	return nreused;
}

static int copy_layer(struct oci_layer *dst, const struct oci_layer *src, sl_error_t *err)
{
	*dst = *src;
	dst->chunks = malloc(src->nchunks * sizeof(*src->chunks));
	if (!dst->chunks) {
		dst->nchunks = 0;
		return sl_error_set(err, SL_E_NOMEM, "spore push: out of memory");
	}
	memcpy(dst->chunks, src->chunks, src->nchunks * sizeof(*src->chunks));
	return 0;
}

static int plan(int dirfd, const struct spore_image *parent, const struct spore_push_opts *opts,
		struct spore_push_plan *p, struct spore_manifest *m, struct hash_job **jobsp, size_t *njobs,
		sl_error_t *err)
{
	uint64_t layer_bytes = opts && opts->layer_bytes ? opts->layer_bytes : SPORE_LAYER_BYTES_DEFAULT;
	unsigned max_layers = opts && opts->max_layers ? opts->max_layers : SPORE_MAX_LAYERS_DEFAULT;
	sl_digest mdigest;
	_cleanup_free_ sl_digest *uniq = NULL, *rest = NULL;
	_cleanup_free_ bool *covered = NULL, *reuse = NULL;
	size_t nu = 0, nrest = 0, nreused = 0, nnew, per_layer, li, bi;
	struct hash_job *jobs;
	struct spore_push_blob *cfg;

	if (spore_manifest_load(dirfd, m, &mdigest, err) < 0)
		return sl_error_wrap(err, "spore push");

	/* Each distinct chunk (of memory and disks) once, sorted:
	 * deterministic layers. */
	size_t nrefs;
	if (spore_manifest_chunk_digests(m, &uniq, &nrefs, err) < 0)
		return sl_error_wrap(err, "spore push");
	rest = malloc((nrefs ? nrefs : 1) * sizeof(*rest));
	covered = calloc(nrefs ? nrefs : 1, sizeof(*covered));
	if (parent && parent->shape == SPORE_SHAPE_TAR)
		reuse = calloc(parent->nlayers ? parent->nlayers : 1, sizeof(*reuse));
	if (!rest || !covered || (parent && parent->shape == SPORE_SHAPE_TAR && !reuse))
		return sl_error_set(err, SL_E_NOMEM, "spore push: out of memory");
	if (nrefs > 1)
		qsort(uniq, nrefs, sizeof(*uniq), cmp_digest);
	for (size_t i = 0; i < nrefs; i++)
		if (nu == 0 || !sl_digest_equal(&uniq[nu - 1], &uniq[i]))
			uniq[nu++] = uniq[i];

	per_layer = layer_bytes > OCI_TAR_TRAILER ? (layer_bytes - OCI_TAR_TRAILER) / CHUNK_TAR_BYTES : 0;
	if (per_layer == 0)
		per_layer = 1; /* a chunk never splits across layers */

	/* Only a spore-push-shaped parent has tar chunk layers to share. */
	if (reuse)
		nreused = mark_reuse(parent, uniq, nu, reuse, covered);
	for (size_t i = 0; i < nu; i++)
		if (!covered[i])
			rest[nrest++] = uniq[i];
	nnew = (nrest + per_layer - 1) / per_layer;
	if (nreused && 1 + nreused + nnew > max_layers) {
		/* Too many layers: drop the parent, pack everything afresh. */
		nreused = 0;
		memcpy(rest, uniq, nu * sizeof(*uniq));
		nrest = nu;
		nnew = (nrest + per_layer - 1) / per_layer;
	}
	if (1 + nnew > max_layers)
		return sl_error_set(err, SL_E_LIMIT,
				    "spore push: %zu chunks need %zu layers of at most %llu bytes, plus the meta "
				    "layer; the limit is %u layers",
				    nu, nnew, (unsigned long long)layer_bytes, max_layers);

	ensure_nofile(2 + m->vcpus + nrest);
	p->img.nlayers = 0;
	p->img.layers = calloc(1 + nreused + nnew, sizeof(*p->img.layers));
	p->blobs = calloc(2 + nreused + nnew, sizeof(*p->blobs));
	p->fds = malloc((2 + m->vcpus + nrest) * sizeof(*p->fds));
	*jobsp = jobs = calloc(1 + nnew, sizeof(*jobs));
	if (!p->img.layers || !p->blobs || !p->fds || !jobs)
		return sl_error_set(err, SL_E_NOMEM, "spore push: out of memory");
	*njobs = 1 + nnew;

	/* Layer 0: the meta layer. */
	p->nblobs = 1;
	if (plan_meta(p, dirfd, m, &mdigest, &p->blobs[0], &jobs[0], err) < 0)
		return -1;
	p->img.layers[0] = (struct oci_layer){ .media_type = OCI_MT_LAYER_TAR, .title = SPORE_META_TITLE };
	p->img.nlayers = 1;
	li = bi = 1;

	/* Then the parent's layers that are kept, in the parent's order. */
	for (size_t i = 0; nreused && i < parent->nlayers; i++) {
		if (!reuse[i])
			continue;
		if (copy_layer(&p->img.layers[li], &parent->layers[i], err) < 0)
			return -1;
		p->img.nlayers = ++li;
		snprintf(p->blobs[bi].media_type, sizeof(p->blobs[bi].media_type), "%s", parent->layers[i].media_type);
		p->blobs[bi].digest = parent->layers[i].digest;
		p->blobs[bi].size = parent->layers[i].size;
		p->blobs[bi].reused = true;
		p->nblobs = ++bi;
	}

	/* Then the new chunks, packed in digest order. */
	for (size_t j = 0; j < nnew; j++) {
		size_t first = j * per_layer, cnt = nrest - first < per_layer ? nrest - first : per_layer;

		p->nblobs = bi + 1;
		p->img.nlayers = li + 1;
		if (plan_chunk_layer(p, dirfd, rest + first, cnt, &p->blobs[bi], &p->img.layers[li], &jobs[1 + j],
				     err) < 0)
			return -1;
		li++;
		bi++;
	}

	if (hash_jobs(jobs, *njobs, err) < 0)
		return sl_error_wrap(err, "spore push");
	for (size_t j = 0; j < *njobs; j++) {
		struct spore_push_blob *b = jobs[j].blob;
		struct oci_layer *l = j == 0 ? &p->img.layers[0] : &p->img.layers[1 + nreused + (j - 1)];

		l->digest = b->digest;
		l->size = b->size;
	}

	p->img.shape = SPORE_SHAPE_TAR;
	snprintf(p->img.artifact_type, sizeof(p->img.artifact_type), "%s", SPORE_ARTIFACT_TYPE);
	snprintf(p->img.config_media_type, sizeof(p->img.config_media_type), "%s", OCI_MT_CONFIG);
	p->img.has_spore_manifest = true;
	p->img.spore_manifest = mdigest;
	p->img.has_parent = m->has_parent;
	if (m->has_parent)
		p->img.parent = m->parent;

	/* The config blob last: it lists the layer digests. */
	if (spore_config_encode(&p->img, m, &mdigest, &p->config_json, &p->config_len, err) < 0)
		return sl_error_wrap(err, "spore push");
	cfg = &p->blobs[bi];
	p->nblobs = bi + 1;
	snprintf(cfg->media_type, sizeof(cfg->media_type), "%s", OCI_MT_CONFIG);
	cfg->segs = calloc(1, sizeof(*cfg->segs));
	if (!cfg->segs)
		return sl_error_set(err, SL_E_NOMEM, "spore push: out of memory");
	cfg->segs[0] = (struct oci_seg){ .mem = p->config_json, .fd = -1, .len = p->config_len };
	cfg->nsegs = 1;
	sl_sha256(p->config_json, p->config_len, &cfg->digest);
	cfg->size = p->config_len;
	p->img.config_digest = cfg->digest;
	p->img.config_size = cfg->size;
	return 0;
}

int spore_push_plan(int dirfd, const struct spore_image *parent, const struct spore_push_opts *opts,
		    struct spore_push_plan *p, sl_error_t *err)
{
	struct spore_manifest m = { 0 };
	struct hash_job *jobs = NULL;
	size_t njobs = 0;
	int rc;

	memset(p, 0, sizeof(*p));
	rc = plan(dirfd, parent, opts, p, &m, &jobs, &njobs, err);
	for (size_t j = 0; j < njobs; j++)
		free(jobs[j].checks);
	free(jobs);
	spore_manifest_free(&m);
	if (rc < 0)
		spore_push_plan_free(p);
	return rc;
}
