/* Remote spore snapshots: spore layers recognised at Prepare and committed without data; spore directories materialised by spore pull. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "oci/auth.h"
#include "oci/cache.h"
#include "oci/image.h"
#include "oci/ref.h"
#include "oci/registry.h"
#include "sl/digest.h"
#include "sl/json.h"
#include "sl/time.h"
#include "snap_remote.h"

extern char **environ;

/* Resolved images, so the Prepare of each of an image's layers does not
 * fetch its manifest again: spore images with their chain IDs, and
 * ordinary images as "not a spore" (chain NULL), since CRI labels every
 * layer of every image it pulls through this snapshotter. By-digest
 * entries never go stale; by-tag entries are trusted for TAG_TTL_MS. */
#define RESOLVED_MAX 16
#define TAG_TTL_MS 30000
#define STDERR_MAX 2048 /* more than one read (512 bytes) */

struct resolved {
	char key[600];   /* the reference as asked */
	char image[600]; /* registry/repository@digest */
	sl_digest *chain; /* chain IDs, one per layer; NULL: not a spore */
	size_t n;
	uint64_t at_ms;
	bool used;
	bool by_digest;
};

struct snap_remote {
	char spore_bin[PATH_MAX];
	char cache_dir[PATH_MAX];
	char state_dir[PATH_MAX];
	char **insecure;
	size_t ninsecure;
	struct snap_registry *regs;
	size_t nregs;
	unsigned pull_timeout_s;
	pthread_mutex_t lock;
	/* Materialisations hold it shared, cache GC exclusive: a chunk just
	 * fetched is unreferenced until spore pull links it into the spore. */
	pthread_rwlock_t gc_lock;
	struct resolved cache[RESOLVED_MAX];
	size_t next; /* round-robin replacement */
};

int snap_remote_new(struct snap_remote **out, const struct snap_remote_opts *o, sl_error_t *err)
{
	if (!o->spore_bin || o->spore_bin[0] != '/' || strlen(o->spore_bin) >= PATH_MAX || !o->cache_dir ||
	    o->cache_dir[0] != '/' || strlen(o->cache_dir) >= PATH_MAX)
		return sl_error_set(err, SL_E_INVALID, "remote snapshots: spore and cache_dir must be absolute paths");
	if (o->nregistries && (!o->state_dir || o->state_dir[0] != '/' || strlen(o->state_dir) >= PATH_MAX - 64))
		return sl_error_set(err, SL_E_INVALID, "remote snapshots: registries need an absolute state_dir");
	struct snap_remote *r = calloc(1, sizeof(*r));
	if (!r || (o->ninsecure && !(r->insecure = calloc(o->ninsecure, sizeof(char *)))) ||
	    (o->nregistries && !(r->regs = calloc(o->nregistries, sizeof(*r->regs))))) {
		if (r)
			free(r->insecure);
		free(r);
		return sl_error_set(err, SL_E_NOMEM, "remote snapshots: out of memory");
	}
	if (o->nregistries)
		memcpy(r->regs, o->registries, o->nregistries * sizeof(*r->regs));
	r->nregs = o->nregistries;
	if (o->state_dir)
		snprintf(r->state_dir, sizeof(r->state_dir), "%s", o->state_dir);
	snprintf(r->spore_bin, sizeof(r->spore_bin), "%s", o->spore_bin);
	snprintf(r->cache_dir, sizeof(r->cache_dir), "%s", o->cache_dir);
	r->pull_timeout_s = o->pull_timeout_s ? o->pull_timeout_s : 600;
	for (size_t i = 0; i < o->ninsecure; i++, r->ninsecure++)
		if (!(r->insecure[i] = strdup(o->insecure_registries[i]))) {
			snap_remote_free(r);
			return sl_error_set(err, SL_E_NOMEM, "remote snapshots: out of memory");
		}
	pthread_mutex_init(&r->lock, NULL);
	pthread_rwlock_init(&r->gc_lock, NULL);
	*out = r;
	return 0;
}

void snap_remote_free(struct snap_remote *r)
{
	if (!r)
		return;
	for (size_t i = 0; i < r->ninsecure; i++)
		free(r->insecure[i]);
	free(r->insecure);
	for (size_t i = 0; i < RESOLVED_MAX; i++)
		free(r->cache[i].chain);
	if (r->regs)
		explicit_bzero(r->regs, r->nregs * sizeof(*r->regs)); /* passwords */
	free(r->regs);
	pthread_mutex_destroy(&r->lock);
	pthread_rwlock_destroy(&r->gc_lock);
	free(r);
}

static const char *label(const struct snap_label *l, size_t n, const char *key)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(l[i].key, key))
			return l[i].value;
	return NULL;
}

static const struct snap_registry *reg_cfg(const struct snap_remote *r, const char *host)
{
	for (size_t i = 0; i < r->nregs; i++)
		if (!strcmp(r->regs[i].host, host))
			return &r->regs[i];
	return NULL;
}

static bool insecure(const struct snap_remote *r, const char *registry)
{
	const struct snap_registry *c = reg_cfg(r, registry);
	if (c && c->insecure)
		return true;
	for (size_t i = 0; i < r->ninsecure; i++)
		if (!strcmp(r->insecure[i], registry))
			return true;
	return false;
}

/* The hosts to ask for registry's content: its mirrors in order, then it. */
static size_t candidates(const struct snap_remote *r, const char *registry, const char *out[SNAP_CONFIG_MAX_MIRRORS + 1])
{
	const struct snap_registry *c = reg_cfg(r, registry);
	size_t n = 0;
	for (size_t i = 0; c && i < c->nmirrors; i++)
		out[n++] = c->mirrors[i];
	out[n++] = registry;
	return n;
}

/* Credentials from the snapshotter's config for host, if it has some (else
 * the client reads the docker-style config.json). */
static const struct oci_creds *creds_for(const struct snap_remote *r, const char *host, struct oci_creds *buf)
{
	const struct snap_registry *c = reg_cfg(r, host);
	if (!c || !c->has_auth)
		return NULL;
	buf->present = true;
	snprintf(buf->username, sizeof(buf->username), "%s", c->username);
	snprintf(buf->password, sizeof(buf->password), "%s", c->password);
	return buf;
}

/* containerd's chain IDs (identity.ChainID): the first layer's diff ID, then
 * sha256("<previous chain ID> <diff ID>"). A spore's layers are
 * uncompressed tars, so a diff ID is the layer's digest. */
static void chain_ids(const struct spore_image *img, sl_digest *out)
{
	for (size_t i = 0; i < img->nlayers; i++) {
		if (i == 0) {
			out[0] = img->layers[0].digest;
			continue;
		}
		char a[SL_DIGEST_STRLEN], b[SL_DIGEST_STRLEN], buf[2 * SL_DIGEST_STRLEN];
		sl_digest_format(&out[i - 1], a);
		sl_digest_format(&img->layers[i].digest, b);
		int n = snprintf(buf, sizeof(buf), "%s %s", a, b);
		sl_sha256(buf, (size_t)n, &out[i]);
	}
}

/* Keeps a resolved image (chain NULL: not a spore), taking chain. */
static void remember(struct snap_remote *r, const char *key, const char *image, sl_digest *chain, size_t n,
		     uint64_t now, bool by_digest)
{
	pthread_mutex_lock(&r->lock);
	struct resolved *e = &r->cache[r->next++ % RESOLVED_MAX];
	free(e->chain);
	snprintf(e->key, sizeof(e->key), "%s", key);
	snprintf(e->image, sizeof(e->image), "%s", image ? image : "");
	e->chain = chain;
	e->n = n;
	e->at_ms = now;
	e->used = true;
	e->by_digest = by_digest;
	pthread_mutex_unlock(&r->lock);
}

/* Looks ref up in the cache; on a miss fetches and decodes its manifest.
 * *spore is false (and nothing is kept) when ref is no spore image. The
 * returned copy of the chain is the caller's. */
static int resolve(struct snap_remote *r, const struct oci_ref *ref, bool *spore, char image[600], sl_digest **chain,
		   size_t *n, sl_error_t *err)
{
	char key[600];
	if (oci_ref_format(ref, key, sizeof(key)) < 0)
		return sl_error_set(err, SL_E_INVALID, "image reference too long");
	*spore = false;
	uint64_t now = sl_now_ms();
	pthread_mutex_lock(&r->lock);
	for (size_t i = 0; i < RESOLVED_MAX; i++) {
		struct resolved *e = &r->cache[i];
		if (!e->used || strcmp(e->key, key) || (!e->by_digest && now - e->at_ms > TAG_TTL_MS))
			continue;
		if (!e->chain) {
			pthread_mutex_unlock(&r->lock);
			return 0; /* known to be an ordinary image */
		}
		*chain = malloc(e->n * sizeof(sl_digest));
		if (*chain) {
			memcpy(*chain, e->chain, e->n * sizeof(sl_digest));
			*n = e->n;
			memcpy(image, e->image, sizeof(e->image));
			*spore = true;
		}
		pthread_mutex_unlock(&r->lock);
		return *chain ? 0 : sl_error_set(err, SL_E_NOMEM, "out of memory");
	}
	pthread_mutex_unlock(&r->lock);

	_cleanup_free_ char *body = NULL;
	size_t len = 0;
	char mt[128] = "", reference[OCI_REF_REFERENCE_MAX];
	sl_digest digest;
	oci_ref_reference(ref, reference);
	const char *hosts[SNAP_CONFIG_MAX_MIRRORS + 1];
	size_t nh = candidates(r, ref->registry, hosts);
	int rc = -1;
	for (size_t h = 0; h < nh && rc < 0; h++) {
		struct oci_ref at = *ref;
		struct oci_creds cb;
		snprintf(at.registry, sizeof(at.registry), "%s", hosts[h]);
		struct oci_client_opts co = {.insecure = insecure(r, hosts[h]), .parallel = 1, .retries = 2,
					     .creds = creds_for(r, hosts[h], &cb)};
		struct oci_client *c = NULL;
		if (*err)
			sl_error_free(err); /* the previous mirror's */
		rc = oci_client_new(&at, &co, &c, err);
		if (rc == 0)
			rc = oci_manifest_get(c, reference, &body, &len, mt, &digest, err);
		oci_client_free(c);
		explicit_bzero(&cb, sizeof(cb));
	}
	if (rc < 0)
		return sl_error_wrap(err, "resolving %s", key);
	/* A mirror's answer is as good as the registry's only when pinned. */
	if (ref->has_digest && !sl_digest_equal(&digest, &ref->digest))
		return sl_error_set(err, SL_E_INTEGRITY, "resolving %s: the manifest's digest does not match", key);
	struct spore_image img = {0};
	_cleanup_error_ sl_error_t why = NULL;
	if (strcmp(mt, OCI_MT_MANIFEST) != 0 || spore_image_decode(body, len, &img, &why) < 0 ||
	    img.shape != SPORE_SHAPE_TAR || img.nlayers == 0) {
		spore_image_free(&img);
		remember(r, key, NULL, NULL, 0, now, ref->has_digest);
		return 0; /* an ordinary image (or an index): containerd unpacks it */
	}
	sl_digest *ids = malloc(img.nlayers * sizeof(sl_digest)), *keep = malloc(img.nlayers * sizeof(sl_digest));
	if (!ids || !keep) {
		free(ids);
		free(keep);
		spore_image_free(&img);
		return sl_error_set(err, SL_E_NOMEM, "out of memory");
	}
	chain_ids(&img, ids);
	memcpy(keep, ids, img.nlayers * sizeof(sl_digest));
	*n = img.nlayers;
	spore_image_free(&img);
	char dig[SL_DIGEST_STRLEN];
	sl_digest_format(&digest, dig);
	snprintf(image, 600, "%.255s/%.255s@%s", ref->registry, ref->repository, dig);

	remember(r, key, image, keep, *n, now, ref->has_digest);
	*chain = ids;
	*spore = true;
	return 0;
}

struct find_arg {
	const char *chain, *parent;
	bool found;
};

static int find_committed(const struct snap_info *i, void *user)
{
	struct find_arg *a = user;
	const char *ref = label(i->labels, i->nlabels, SNAP_LABEL_REF);
	if (i->kind == SNAP_KIND_COMMITTED && ref && !strcmp(ref, a->chain) &&
	    !strcmp(i->parent ? i->parent : "", a->parent ? a->parent : "") &&
	    label(i->labels, i->nlabels, SNAP_LABEL_SPORE_IMAGE))
		a->found = true;
	return a->found;
}

int snap_remote_prepare(struct snap_remote *r, struct snap_store *st, const char *parent,
			const struct snap_label *labels, size_t nlabels, sl_error_t *err)
{
	const char *chain_s = label(labels, nlabels, SNAP_LABEL_REF);
	const char *cri_ref = label(labels, nlabels, SNAP_LABEL_CRI_IMAGE_REF);
	const char *cri_man = label(labels, nlabels, SNAP_LABEL_CRI_MANIFEST);
	const char *hint = label(labels, nlabels, SPORE_ANN_SNAPSHOT_REF);
	sl_digest want;
	_cleanup_error_ sl_error_t ignore = NULL;
	if (!chain_s || sl_digest_parse(chain_s, &want, &ignore) < 0)
		return 0;
	struct oci_ref ref;
	if (cri_ref && cri_man) {
		/* CRI pins the manifest: pull exactly that. */
		if (oci_ref_parse(cri_ref, &ref, &ignore) < 0 || sl_digest_parse(cri_man, &ref.digest, &ignore) < 0)
			return 0;
		ref.has_digest = true;
	} else if (hint) {
		if (oci_ref_parse(hint, &ref, &ignore) < 0)
			return 0;
	} else {
		return 0;
	}
	if (parent && !*parent)
		parent = NULL;
	/* Already here (another namespace pulled it): no registry round trip. */
	struct find_arg fa = {.chain = chain_s, .parent = parent};
	if (snap_store_walk(st, find_committed, &fa, err) < 0)
		return -1;
	if (fa.found)
		return 1;
	bool spore = false;
	char image[600];
	_cleanup_free_ sl_digest *ids = NULL;
	size_t n = 0;
	/* A registry that cannot be asked is no reason to fail the pull: the
	 * ordinary path (containerd fetches and applies the layer) still works
	 * wherever the blobs can be had. */
	if (resolve(r, &ref, &spore, image, &ids, &n, &ignore) < 0 || !spore)
		return 0;
	size_t at = n;
	for (size_t i = 0; i < n; i++)
		if (sl_digest_equal(&ids[i], &want))
			at = i;
	if (at == n)
		return 0; /* not this image's layer (a stale hint): the ordinary path */
	if ((at == 0) != (parent == NULL))
		return 0;
	if (parent) {
		/* containerd names the parent snapshot; it must be the previous layer. */
		struct snap_info pi = {0};
		if (snap_store_stat(st, parent, &pi, err) < 0)
			return -1;
		const char *pref = label(pi.labels, pi.nlabels, SNAP_LABEL_REF);
		sl_digest pd;
		bool ok = pref && sl_digest_parse(pref, &pd, &ignore) == 0 && sl_digest_equal(&pd, &ids[at - 1]);
		snap_info_clear(&pi);
		if (!ok)
			return 0;
	}
	/* A name unique to (parent, chain): the same layer over another parent
	 * snapshot (another namespace's ordinary unpack) gets its own. */
	char buf[2048], hex[SL_DIGEST_HEXLEN + 1], name[64];
	sl_digest h;
	int bl = snprintf(buf, sizeof(buf), "%.1000s\n%s", parent ? parent : "", chain_s);
	sl_sha256(buf, (size_t)bl, &h);
	sl_digest_hex(&h, hex);
	snprintf(name, sizeof(name), "spore-%.32s", hex);
	struct snap_label out[] = {
		{(char *)SNAP_LABEL_REF, (char *)chain_s},
		{(char *)SNAP_LABEL_REMOTE, (char *)"spore"},
		{(char *)SNAP_LABEL_SPORE_IMAGE, image},
	};
	if (snap_store_add_committed(st, name, parent, out, 3, err) < 0) {
		if ((*err)->code != SL_E_EXISTS)
			return -1;
		sl_error_free(err); /* a concurrent Prepare of the same layer won */
	}
	return 1;
}

int snap_remote_image_of(struct snap_store *st, const char *parent, char **image, sl_error_t *err)
{
	*image = NULL;
	if (!parent || !*parent)
		return 0;
	struct snap_info pi = {0};
	if (snap_store_stat(st, parent, &pi, err) < 0)
		return -1;
	const char *img = label(pi.labels, pi.nlabels, SNAP_LABEL_SPORE_IMAGE);
	int rc = 0;
	if (img && !(*image = strdup(img)))
		rc = sl_error_set(err, SL_E_NOMEM, "out of memory");
	snap_info_clear(&pi);
	return rc;
}

/* Reads what the child writes to fd (its stderr) until the end of the pipe,
 * keeping the last cap-1 bytes (the error is at the end), then reaps it.
 * At the deadline it is killed. Returns the wait status, -1 after a kill. */
static int wait_child(pid_t pid, int fd, unsigned timeout_s, char *tail, size_t cap)
{
	size_t have = 0;
	int status = 0;
	uint64_t deadline = sl_now_ms() + (uint64_t)timeout_s * 1000;
	for (;;) {
		uint64_t now = sl_now_ms();
		if (now >= deadline) {
			kill(pid, SIGKILL);
			while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
				;
			return -1;
		}
		struct pollfd p = {.fd = fd, .events = POLLIN};
		uint64_t left = deadline - now;
		if (poll(&p, 1, left > 1000 ? 1000 : (int)left) <= 0)
			continue;
		char buf[512];
		ssize_t k = read(fd, buf, sizeof(buf));
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			break;
		/* One read is shorter than the tail (cap > sizeof(buf)). */
		if (have + (size_t)k > cap - 1) {
			size_t drop = have + (size_t)k - (cap - 1);
			memmove(tail, tail + drop, have - drop);
			have -= drop;
		}
		memcpy(tail + have, buf, (size_t)k);
		have += (size_t)k;
		tail[have] = '\0';
	}
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	return status;
}

/* A private docker-style config dir holding host's credentials from our
 * config, for the spore pull child (never on its command line, which any
 * user can read). *dir is "" when there are none. */
static int auth_dir(const struct snap_remote *r, const char *host, char dir[PATH_MAX], sl_error_t *err)
{
	dir[0] = '\0';
	const struct snap_registry *c = reg_cfg(r, host);
	if (!c || !c->has_auth)
		return 0;
	char up[1400], b64[2000];
	int n = snprintf(up, sizeof(up), "%s:%s", c->username, c->password);
	int bl = oci_base64_encode(up, (size_t)n, b64, sizeof(b64));
	explicit_bzero(up, sizeof(up));
	if (bl < 0)
		return sl_error_set(err, SL_E_INVALID, "credentials for %s too long", host);
	snprintf(dir, PATH_MAX, "%.4000s/auth-XXXXXX", r->state_dir);
	if (!mkdtemp(dir)) {
		dir[0] = '\0';
		return sl_error_sys(err, "credentials for %s: mkdtemp in %s", host, r->state_dir);
	}
	char path[PATH_MAX + 16];
	snprintf(path, sizeof(path), "%s/config.json", dir);
	_cleanup_json_ json_t *j = json_pack("{s:{s:{s:s}}}", "auths", host, "auth", b64);
	explicit_bzero(b64, sizeof(b64));
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	int rc = fd < 0 || !j || json_dumpfd(j, fd, JSON_COMPACT) < 0 ? -1 : 0;
	if (fd >= 0)
		close(fd);
	if (rc < 0) {
		unlink(path);
		rmdir(dir);
		dir[0] = '\0';
		return sl_error_set(err, SL_E_IO, "credentials for %s: cannot write %s", host, path);
	}
	return 0;
}

static void auth_dir_remove(const char *dir)
{
	if (!dir[0])
		return;
	char path[PATH_MAX + 16];
	snprintf(path, sizeof(path), "%s/config.json", dir);
	unlink(path);
	rmdir(dir);
}

/* One spore pull of image from host into dir. */
static int pull_from(struct snap_remote *r, const char *image, const struct oci_ref *ref, const char *host,
		     const char *dir, sl_error_t *err)
{
	char at[700], reference[OCI_REF_REFERENCE_MAX], adir[PATH_MAX];
	oci_ref_reference(ref, reference);
	snprintf(at, sizeof(at), "%s/%s@%s", host, ref->repository, reference);
	if (auth_dir(r, host, adir, err) < 0)
		return -1;
	int pfd[2];
	if (pipe2(pfd, O_CLOEXEC) < 0) {
		auth_dir_remove(adir);
		return sl_error_sys(err, "materialising spore %s: pipe", image);
	}
	char cache_env[PATH_MAX + 32], auth_env[PATH_MAX + 32];
	snprintf(cache_env, sizeof(cache_env), "SPORE_CACHE_DIR=%s", r->cache_dir);
	snprintf(auth_env, sizeof(auth_env), "DOCKER_CONFIG=%s", adir);
	size_t ne = 0;
	while (environ[ne])
		ne++;
	char **envp = calloc(ne + 3, sizeof(char *));
	if (!envp) {
		close(pfd[0]);
		close(pfd[1]);
		auth_dir_remove(adir);
		return sl_error_set(err, SL_E_NOMEM, "out of memory");
	}
	size_t k = 0;
	for (size_t i = 0; i < ne; i++)
		if (strncmp(environ[i], "SPORE_CACHE_DIR=", 16) != 0 && (!adir[0] || strncmp(environ[i], "DOCKER_CONFIG=", 14) != 0))
			envp[k++] = environ[i];
	envp[k++] = cache_env;
	if (adir[0])
		envp[k++] = auth_env;
	char *argv[] = {r->spore_bin, (char *)"pull", at, (char *)"--out", (char *)dir,
			insecure(r, host) ? (char *)"--insecure-registry" : NULL, NULL};
	posix_spawn_file_actions_t fa;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
	posix_spawn_file_actions_adddup2(&fa, pfd[1], 2);
	pid_t pid;
	int rc = posix_spawn(&pid, r->spore_bin, &fa, NULL, argv, envp);
	posix_spawn_file_actions_destroy(&fa);
	free(envp);
	close(pfd[1]);
	if (rc != 0) {
		close(pfd[0]);
		auth_dir_remove(adir);
		return sl_error_errno(err, rc, "materialising spore %s: cannot run %s", image, r->spore_bin);
	}
	char tail[STDERR_MAX] = "";
	int status = wait_child(pid, pfd[0], r->pull_timeout_s, tail, sizeof(tail));
	close(pfd[0]);
	auth_dir_remove(adir);
	if (status == -1)
		return sl_error_set(err, SL_E_IO, "materialising spore %s from registry %s: spore pull took over %u s",
				    image, host, r->pull_timeout_s);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		size_t l = strlen(tail);
		while (l && (tail[l - 1] == '\n' || tail[l - 1] == ' '))
			tail[--l] = '\0';
		const char *last = strrchr(tail, '\n');
		return sl_error_set(err, SL_E_IO, "materialising spore %s from registry %s: spore pull failed (%s %d): %s",
				    image, host, WIFEXITED(status) ? "exit" : "signal",
				    WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status), last ? last + 1 : tail);
	}
	return 0;
}

int snap_remote_materialise(struct snap_remote *r, const char *image, const char *dir, sl_error_t *err)
{
	struct oci_ref ref;
	if (oci_ref_parse(image, &ref, err) < 0)
		return sl_error_wrap(err, "materialising spore");
	if (!ref.has_digest)
		return sl_error_set(err, SL_E_INVALID, "materialising spore %s: not pinned by digest", image);
	const char *hosts[SNAP_CONFIG_MAX_MIRRORS + 1];
	size_t nh = candidates(r, ref.registry, hosts);
	/* Mirrors first; the error kept is the registry's own (the last). */
	int rc = -1;
	pthread_rwlock_rdlock(&r->gc_lock);
	for (size_t h = 0; h < nh && rc < 0; h++) {
		if (*err)
			sl_error_free(err);
		rc = pull_from(r, image, &ref, hosts[h], dir, err);
	}
	pthread_rwlock_unlock(&r->gc_lock);
	return rc;
}

int snap_remote_cache_gc(struct snap_remote *r, uint64_t max_bytes, struct oci_cache_stats *st, sl_error_t *err)
{
	struct oci_cache *c = NULL;
	pthread_rwlock_wrlock(&r->gc_lock);
	int rc = oci_cache_open(r->cache_dir, &c, err);
	if (rc == 0)
		rc = oci_cache_gc(c, max_bytes, st, err);
	oci_cache_close(c);
	pthread_rwlock_unlock(&r->gc_lock);
	return rc < 0 ? sl_error_wrap(err, "node cache %s", r->cache_dir) : 0;
}
