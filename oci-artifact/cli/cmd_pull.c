/* spore pull: an image from a registry into the node cache and a spore directory. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "oci/tar.h"
#include "ocli.h"
#include "pull_plan.h"
#include "sl/file.h"
#include "sl/log.h"
#include "sl/spore_manifest.h"

static const char usage[] =
	"usage: spore pull REF --out DIR [--insecure-registry] [--json] [--parallel N]\n"
	"Resolves REF to a manifest digest, fetches and verifies every chunk the\n"
	"node cache lacks, and writes the spore to DIR (which must not exist) with\n"
	"its chunks hard-linked from the cache. Prints the manifest digest.\n"
	"REF@sha256:... pulled before on this node also works while the registry is\n"
	"unreachable, from the cache's copy of its metadata, if every chunk is cached.\n";

#define META_MAX (64u << 20) /* spore/ files: manifest and state, a few MiB at most */
#define META_TITLE "spore-meta.tar"

/* Only these files may come out of an image: anything else (or any other
 * path) is refused, so an image cannot write outside spore/ and chunks/. */
static bool spore_meta_path(const char *p)
{
	if (!strcmp(p, SPORE_MANIFEST_PATH) || !strcmp(p, "spore/vm.state"))
		return true;
	unsigned n;
	int end = 0;
	return sscanf(p, "spore/vcpu-%u.state%n", &n, &end) == 1 && p[end] == '\0' && n < SPORE_MAX_VCPUS &&
	       (n == 0 || p[11] != '0');
}

/* <out>.tmp.<pid> directories of pulls that died (SIGKILL, power loss). */
static void remove_stale(const char *out)
{
	char parent[4096], base[256];
	const char *slash = strrchr(out, '/');
	if (slash) {
		snprintf(parent, sizeof(parent), "%.*s", (int)(slash - out) ? (int)(slash - out) : 1, out);
		snprintf(base, sizeof(base), "%s", slash + 1);
	} else {
		snprintf(parent, sizeof(parent), ".");
		snprintf(base, sizeof(base), "%s", out);
	}
	DIR *d = opendir(parent);
	if (!d)
		return;
	size_t bl = strlen(base);
	struct dirent *de;
	while ((de = readdir(d))) {
		if (strncmp(de->d_name, base, bl) || strncmp(de->d_name + bl, ".tmp.", 5))
			continue;
		char *end;
		long pid = strtol(de->d_name + bl + 5, &end, 10);
		if (*end || pid <= 0 || (kill((pid_t)pid, 0) == 0 || errno != ESRCH))
			continue;
		sl_error_t err = NULL;
		sl_remove_tree(dirfd(d), de->d_name, &err);
		sl_error_free(&err);
	}
	closedir(d);
}

/* Removes a directory tree given by any path (sl_remove_tree wants one
 * relative to a directory fd). */
static void remove_path(const char *path)
{
	char parent[4096];
	const char *slash = strrchr(path, '/'), *base = slash ? slash + 1 : path;
	snprintf(parent, sizeof(parent), "%.*s", slash ? (slash == path ? 1 : (int)(slash - path)) : 1,
		 slash ? path : ".");
	int pfd = open(parent, O_DIRECTORY | O_RDONLY | O_CLOEXEC);
	if (pfd < 0)
		return;
	sl_error_t err = NULL;
	sl_remove_tree(pfd, base, &err);
	sl_error_free(&err);
	close(pfd);
}

/* What is left to make the spore directory durable before it takes its
 * name: its directories. Its files were fsynced as they were written
 * (sl_write_atomic; the chunks by the cache). A syncfs here would also have
 * flushed every other dirty file of the filesystem (0.9-1 s with 1 GiB of
 * someone else's writes pending). */
static int sync_dirs(int tmpfd, sl_error_t *err)
{
	static const char *const dirs[] = {"chunks/sha256", "chunks", "spore"};
	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
		_cleanup_close_ int fd = openat(tmpfd, dirs[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0)
			return sl_error_sys(err, "open %s", dirs[i]);
		if (sl_fsync_dir(fd, err) < 0)
			return sl_error_wrap(err, "%s", dirs[i]);
	}
	return sl_fsync_dir(tmpfd, err);
}

/* The directory holding path, fsynced: a rename there is durable. */
static int sync_parent(const char *path, sl_error_t *err)
{
	char parent[4096];
	const char *slash = strrchr(path, '/');
	snprintf(parent, sizeof(parent), "%.*s", slash ? (slash == path ? 1 : (int)(slash - path)) : 1,
		 slash ? path : ".");
	_cleanup_close_ int fd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return sl_error_sys(err, "open %s", parent);
	if (sl_fsync_dir(fd, err) < 0)
		return sl_error_wrap(err, "%s", parent);
	return 0;
}

static int write_meta_file(int dirfd, const char *path, const void *buf, size_t len, sl_error_t *err)
{
	if (!spore_meta_path(path))
		return sl_error_set(err, SL_E_INVALID, "image holds \"%.80s\": not a spore file (want %s, spore/vm.state "
				    "or spore/vcpu-<n>.state)", path, SPORE_MANIFEST_PATH);
	return sl_write_atomic(dirfd, path, buf, len, 0444, err);
}

/* spore-meta.tar: the spore/ files of a TAR-shaped image. */
static int meta_from_tar(struct oci_client *c, const struct spore_image *img, int dirfd, sl_error_t *err)
{
	const struct oci_layer *meta = NULL;
	for (size_t i = 0; i < img->nlayers && !meta; i++)
		if (!strcmp(img->layers[i].title, META_TITLE))
			meta = &img->layers[i];
	if (!meta)
		return sl_error_set(err, SL_E_INVALID, "image has no %s layer", META_TITLE);
	_cleanup_free_ char *buf = NULL;
	size_t len;
	if (oci_blob_get(c, &meta->digest, META_MAX, &buf, &len, err) < 0)
		return sl_error_wrap(err, "%s", META_TITLE);
	struct oci_tar_mem mem = {(const uint8_t *)buf, len};
	_cleanup_free_ struct oci_tar_entry *es = NULL;
	size_t n;
	if (oci_tar_index(oci_tar_read_mem, &mem, len, 64, &es, &n, err) < 0)
		return sl_error_wrap(err, "%s", META_TITLE);
	for (size_t i = 0; i < n; i++) {
		if (es[i].type == '5') {
			if (strcmp(es[i].path, "spore"))
				return sl_error_set(err, SL_E_INVALID, "%s: unexpected directory \"%s\"", META_TITLE,
						    es[i].path);
			continue;
		}
		if (write_meta_file(dirfd, es[i].path, buf + es[i].data_offset, es[i].size, err) < 0)
			return sl_error_wrap(err, "%s", META_TITLE);
	}
	return 0;
}

/* The oras shape: spore/ files are titled blobs of their own. */
static int meta_from_files(struct oci_client *c, const struct spore_image *img, int dirfd, sl_error_t *err)
{
	for (size_t i = 0; i < img->nlayers; i++) {
		const struct oci_layer *l = &img->layers[i];
		if (strncmp(l->title, "spore/", 6))
			continue;
		_cleanup_free_ char *buf = NULL;
		size_t len;
		if (oci_blob_get(c, &l->digest, META_MAX, &buf, &len, err) < 0 ||
		    write_meta_file(dirfd, l->title, buf, len, err) < 0)
			return sl_error_wrap(err, "%s", l->title);
	}
	return 0;
}

/* An offline pull's spore/ files: the node cache's copies (checked like
 * downloaded ones, below). */
static int meta_from_record(int rfd, int dirfd, sl_error_t *err)
{
	_cleanup_close_ int sfd = openat(rfd, "spore", O_DIRECTORY | O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	DIR *d = sfd < 0 ? NULL : fdopendir(dup(sfd));
	if (!d)
		return sl_error_sys(err, "cached image record: spore/");
	struct dirent *de;
	int rc = 0;
	while (rc == 0 && (de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		char path[300];
		snprintf(path, sizeof(path), "spore/%.250s", de->d_name);
		_cleanup_free_ char *buf = NULL;
		size_t len;
		rc = sl_read_beneath(rfd, path, META_MAX, &buf, &len, err);
		if (rc == 0)
			rc = write_meta_file(dirfd, path, buf, len, err);
	}
	closedir(d);
	return rc < 0 ? sl_error_wrap(err, "cached image record") : 0;
}

/* Without the image's annotation naming spore/manifest.json's digest (oras
 * pushes), the titled layer's digest vouches for it. */
static int check_manifest_layer(const struct spore_image *img, const sl_digest *sdig, sl_error_t *err)
{
	for (size_t i = 0; i < img->nlayers; i++)
		if (!strcmp(img->layers[i].title, SPORE_MANIFEST_PATH))
			return sl_digest_equal(&img->layers[i].digest, sdig)
				       ? 0
				       : sl_error_set(err, SL_E_INTEGRITY, "cached %s does not match the image's layer",
						      SPORE_MANIFEST_PATH);
	return sl_error_set(err, SL_E_INTEGRITY, "nothing in the image vouches for the cached %s", SPORE_MANIFEST_PATH);
}

/* Keeps what an offline pull of this image needs (ocli_pinned_record). */
static void record_pinned(struct oci_cache *cache, const struct oci_ref *ref, const sl_digest *digest,
			  const char *body, size_t blen, const char *out_dir, const struct spore_manifest *m)
{
	const char *files[2 + SPORE_MAX_VCPUS];
	size_t n = 0;
	files[n++] = SPORE_MANIFEST_PATH;
	files[n++] = m->vm_state.path;
	for (unsigned i = 0; i < m->vcpus && i < SPORE_MAX_VCPUS; i++)
		files[n++] = m->vcpu_state[i].path;
	sl_error_t err = NULL;
	_cleanup_close_ int fd = open(out_dir, O_DIRECTORY | O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		sl_error_sys(&err, "open %s", out_dir);
	if (fd < 0 || ocli_pinned_record(cache, ref, digest, body, blen, fd, files, n, &err) < 0)
		sl_warn("image metadata not kept for offline pulls", "error=\"%s\"", sl_error_msg(err));
	sl_error_free(&err);
}

/* State files are checked now, not only at restore: a pulled spore is whole. */
static int check_state(int dirfd, const struct spore_file_ref *r, sl_error_t *err)
{
	_cleanup_free_ char *buf = NULL;
	size_t len;
	if (sl_read_beneath(dirfd, r->path, SPORE_STATE_MAX, &buf, &len, err) < 0)
		return sl_error_wrap(err, "image lacks %s", r->path);
	sl_digest d;
	sl_sha256(buf, len, &d);
	if (len != r->size || !sl_digest_equal(&d, &r->digest))
		return sl_error_set(err, SL_E_INTEGRITY, "%s does not match the spore manifest's digest", r->path);
	return 0;
}

int cmd_pull(int argc, char **argv)
{
	static const struct option opts[] = {{"out", required_argument, NULL, 'o'},
					     {"insecure-registry", no_argument, NULL, OPT_INSECURE},
					     {"json", no_argument, NULL, OPT_JSON},
					     {"parallel", required_argument, NULL, OPT_PARALLEL},
					     {"help", no_argument, NULL, 'h'},
					     {0}};
	struct ocli_reg_opts ro = {0};
	const char *out_dir = NULL;
	sl_error_t err = NULL;
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "ho:", opts, NULL)) != -1) {
		int r = ocli_reg_opt(c, optarg, &ro, &err);
		if (r < 0)
			return ocli_fail(&err);
		if (r)
			continue;
		switch (c) {
		case 'o': out_dir = optarg; break;
		case 'h': fputs(usage, stdout); return 0;
		default: fputs(usage, stderr); return EXIT_SPORE_FAILED;
		}
	}
	if (optind != argc - 1 || !out_dir)
		return ocli_usage("pull: need REF and --out DIR\n%s", usage);
	const char *refs = argv[optind];
	struct oci_ref ref;
	if (oci_ref_parse(refs, &ref, &err) < 0)
		return ocli_fail(&err);
	struct stat st;
	if (lstat(out_dir, &st) == 0)
		return ocli_usage("pull: --out %s already exists", out_dir);
	remove_stale(out_dir);
	uint64_t t0 = ocli_now_ns();
	char tmp[4200];
	snprintf(tmp, sizeof(tmp), "%s.tmp.%d", out_dir, (int)getpid());
	struct oci_cache *cache = NULL;
	struct oci_client *client = NULL;
	struct ocli_out *out = ocli_out_new(ro.json, "pull");
	struct spore_image img = {0};
	bool have_img = false, have_m = false, made_tmp = false;
	struct spore_manifest m;
	char *body = NULL;
	size_t blen = 0;
	sl_digest *ds = NULL;
	int tmpfd = -1, rc = EXIT_SPORE_FAILED, recfd = -1;
	char mt[128] = "", reference[OCI_REF_REFERENCE_MAX];
	sl_digest digest, sdig;
	oci_ref_reference(&ref, reference);
	if (ocli_open_cache(&cache, &err) < 0 || ocli_client(&ref, &ro, out, &client, &err) < 0)
		goto out;
	if (oci_manifest_get(client, reference, &body, &blen, mt, &digest, &err) < 0) {
		/* The registry did not answer (or failed): a pinned image this node
		 * pulled before is in the cache. Not for answers like 404 or 401:
		 * those are the registry's word. */
		sl_error_t ferr = NULL;
		if (err->code != SL_E_IO || !ref.has_digest ||
		    ocli_pinned_find(cache, &ref, &ref.digest, &body, &blen, &recfd, &ferr) < 0 || !body) {
			if (ferr)
				sl_warn("cached image record unusable", "error=\"%s\"", sl_error_msg(ferr));
			sl_error_free(&ferr);
			goto out;
		}
		sl_warn("registry unreachable: the node cache's copy of the image", "ref=%s error=\"%s\"", refs,
			sl_error_msg(err));
		sl_error_free(&err);
		digest = ref.digest;
		snprintf(mt, sizeof(mt), "%s", OCI_MT_MANIFEST);
	}
	bool offline = recfd >= 0;
	if (!strcmp(mt, OCI_MT_INDEX)) {
		sl_error_set(&err, SL_E_UNSUPPORTED, "%s is an image index; pull the spore's manifest digest", reference);
		goto out;
	}
	if (spore_image_decode(body, blen, &img, &err) < 0)
		goto out;
	have_img = true;
	/* Offline, the config was checked when the record was made. */
	if (img.shape == SPORE_SHAPE_TAR && !offline) {
		_cleanup_free_ char *cfg = NULL;
		size_t clen;
		if (oci_blob_get(client, &img.config_digest, 1u << 20, &cfg, &clen, &err) < 0 ||
		    spore_config_check(cfg, clen, &img, &err) < 0) {
			sl_error_wrap(&err, "image config");
			goto out;
		}
	}
	if (mkdir(tmp, 0755) < 0) {
		sl_error_sys(&err, "create %s", tmp);
		goto out;
	}
	made_tmp = true;
	tmpfd = open(tmp, O_DIRECTORY | O_RDONLY | O_CLOEXEC);
	if (tmpfd < 0 || mkdirat(tmpfd, "spore", 0755) < 0 || mkdirat(tmpfd, "chunks", 0755) < 0 ||
	    mkdirat(tmpfd, "chunks/sha256", 0755) < 0) {
		sl_error_sys(&err, "create %s", tmp);
		goto out;
	}
	if (offline ? meta_from_record(recfd, tmpfd, &err) < 0
		    : (img.shape == SPORE_SHAPE_TAR ? meta_from_tar : meta_from_files)(client, &img, tmpfd, &err) < 0)
		goto out;
	if (spore_manifest_load(tmpfd, &m, &sdig, &err) < 0) {
		sl_error_wrap(&err, "image's spore manifest");
		goto out;
	}
	have_m = true;
	if (img.has_spore_manifest && !sl_digest_equal(&sdig, &img.spore_manifest)) {
		sl_error_set(&err, SL_E_INTEGRITY, "spore/manifest.json does not match the image's %s annotation",
			     SPORE_LABEL_MANIFEST);
		goto out;
	}
	if (offline && !img.has_spore_manifest && check_manifest_layer(&img, &sdig, &err) < 0)
		goto out;
	if (check_state(tmpfd, &m.vm_state, &err) < 0)
		goto out;
	for (unsigned i = 0; i < m.vcpus; i++)
		if (check_state(tmpfd, &m.vcpu_state[i], &err) < 0)
			goto out;
	/* Memory and disk chunks alike. */
	size_t nrefs;
	if (spore_manifest_chunk_digests(&m, &ds, &nrefs, &err) < 0)
		goto out;
	ocli_out_total(out, (uint64_t)nrefs * SPORE_CHUNK_SIZE, nrefs);
	size_t fetched, distinct = 0;
	if (ocli_fetch_chunks(client, cache, &img, ds, nrefs, &fetched, &err) < 0) {
		if (offline)
			sl_error_wrap(&err, "the registry is unreachable and not every chunk is in the node cache");
		goto out;
	}
	for (size_t i = 0; i < nrefs; i++) {
		bool seen = false;
		for (size_t j = 0; j < i && !seen; j++)
			seen = sl_digest_equal(&ds[j], &ds[i]);
		distinct += !seen;
	}
	for (size_t i = 0; i < nrefs; i++) {
		char path[96];
		spore_chunk_path(&ds[i], path);
		if (faccessat(tmpfd, path, F_OK, AT_SYMLINK_NOFOLLOW) == 0)
			continue; /* a digest used at several indices */
		if (oci_cache_link(cache, &ds[i], tmpfd, path, &err) < 0) {
			/* A concurrent `spore cache gc` may collect a chunk between
			 * its fetch and this link (the cache takes no locks): fetch it
			 * again, once. */
			size_t again;
			if (err->code != SL_E_NOT_FOUND)
				goto out;
			sl_error_free(&err);
			if (ocli_fetch_chunks(client, cache, &img, &ds[i], 1, &again, &err) < 0 ||
			    oci_cache_link(cache, &ds[i], tmpfd, path, &err) < 0)
				goto out;
		}
	}
	if (sync_dirs(tmpfd, &err) < 0) {
		sl_error_wrap(&err, "sync %s", tmp);
		goto out;
	}
	if (rename(tmp, out_dir) < 0) {
		sl_error_sys(&err, "move %s into place as %s", tmp, out_dir);
		goto out;
	}
	made_tmp = false;
	if (sync_parent(out_dir, &err) < 0) {
		remove_path(out_dir); /* a failed pull leaves nothing behind */
		goto out;
	}
	sl_error_t ierr = NULL;
	if (ocli_index_record(cache, &sdig, &ref, &digest, body, blen, &ierr) < 0)
		sl_warn("image index not updated", "error=\"%s\"", sl_error_msg(ierr));
	sl_error_free(&ierr);
	if (!offline)
		record_pinned(cache, &ref, &digest, body, blen, out_dir, &m);
	struct oci_client_stats cs;
	oci_client_stats(client, &cs);
	char dstr[SL_DIGEST_STRLEN];
	sl_digest_format(&digest, dstr);
	ocli_out_finish(out);
	ocli_event(out, "{s:s, s:s, s:s, s:I, s:I, s:I, s:f}", "event", "pulled", "digest", dstr, "ref", refs,
		   "chunks_fetched", (json_int_t)fetched, "chunks_cached", (json_int_t)(distinct - fetched),
		   "bytes_downloaded", (json_int_t)cs.bytes_downloaded, "ms", (ocli_now_ns() - t0) / 1e6);
	if (!ro.json)
		printf("%s\n", dstr);
	sl_info("pulled", "ref=%s digest=%s chunks=%zu fetched=%zu bytes_downloaded=%llu offline=%d ms=%.1f", refs,
		dstr, nrefs, fetched, (unsigned long long)cs.bytes_downloaded, offline, (ocli_now_ns() - t0) / 1e6);
	rc = 0;
out:
	if (rc != 0) {
		ocli_out_finish(out);
		sl_error_wrap(&err, "pull %s", refs);
		rc = ocli_fail(&err);
	}
	if (tmpfd >= 0)
		close(tmpfd);
	if (recfd >= 0)
		close(recfd);
	if (made_tmp)
		remove_path(tmp);
	free(ds);
	free(body);
	if (have_m)
		spore_manifest_free(&m);
	if (have_img)
		spore_image_free(&img);
	oci_client_free(client);
	oci_cache_close(cache);
	ocli_out_free(out);
	return rc;
}
