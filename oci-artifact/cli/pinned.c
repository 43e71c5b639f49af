/* The node cache's copies of pulled images' metadata by manifest digest, so a pinned pull works while the registry is unreachable. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "ocli.h"
#include "sl/file.h"
#include "sl/json.h"
#include "sl/spore_manifest.h"

/* <cache>/images/pinned/<manifest hex>/: image.json (registry, repository,
 * the manifest's bytes) and the spore/ files the pull wrote. Nothing in it
 * is trusted on the way out: the manifest is checked against the digest
 * asked for, the spore files against the manifest (docs/node-cache.md). */
#define PINNED_DIR "images/pinned"
#define PINNED_JSON "image.json"
#define PINNED_JSON_MAX (8u << 20)

static int pinned_dir(struct oci_cache *cache, bool create, int *fd, sl_error_t *err)
{
	int cfd = oci_cache_dirfd(cache);
	if (create && ((mkdirat(cfd, "images", 0700) < 0 && errno != EEXIST) ||
		       (mkdirat(cfd, PINNED_DIR, 0700) < 0 && errno != EEXIST)))
		return sl_error_sys(err, "cache: create %s/", PINNED_DIR);
	*fd = openat(cfd, PINNED_DIR, O_DIRECTORY | O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (*fd < 0)
		return sl_error_sys(err, "cache: open %s/", PINNED_DIR);
	return 0;
}

int ocli_pinned_record(struct oci_cache *cache, const struct oci_ref *ref, const sl_digest *digest,
		       const char *manifest, size_t len, int spore_fd, const char *const *files, size_t nfiles,
		       sl_error_t *err)
{
	_cleanup_close_ int dfd = -1;
	if (pinned_dir(cache, true, &dfd, err) < 0)
		return -1;
	char hex[SL_DIGEST_HEXLEN + 1], tmp[SL_DIGEST_HEXLEN + 32];
	sl_digest_hex(digest, hex);
	if (faccessat(dfd, hex, F_OK, AT_SYMLINK_NOFOLLOW) == 0)
		return 0; /* the same bytes: the manifest digest names them */
	snprintf(tmp, sizeof(tmp), ".tmp-%s-%d", hex, (int)getpid());
	sl_error_t ignore = NULL;
	sl_remove_tree(dfd, tmp, &ignore);
	sl_error_free(&ignore);
	if (mkdirat(dfd, tmp, 0700) < 0)
		return sl_error_sys(err, "cache: create %s/%s", PINNED_DIR, tmp);
	_cleanup_close_ int tfd = openat(dfd, tmp, O_DIRECTORY | O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	int rc = tfd < 0 || mkdirat(tfd, "spore", 0700) < 0 ? sl_error_sys(err, "cache: create %s/%s", PINNED_DIR, tmp)
							     : 0;
	_cleanup_json_ json_t *o = NULL;
	if (rc == 0) {
		o = json_pack("{s:s, s:s, s:s%}", "registry", ref->registry, "repository", ref->repository, "manifest",
			      manifest, len);
		size_t n = 0;
		_cleanup_free_ char *buf = o ? sl_json_dump(o, &n) : NULL;
		rc = buf ? sl_write_atomic(tfd, PINNED_JSON, buf, n, 0600, err)
			 : sl_error_set(err, SL_E_NOMEM, "out of memory");
	}
	for (size_t i = 0; i < nfiles && rc == 0; i++) {
		_cleanup_free_ char *buf = NULL;
		size_t n = 0;
		rc = sl_read_beneath(spore_fd, files[i], PINNED_JSON_MAX, &buf, &n, err);
		if (rc == 0)
			rc = sl_write_atomic(tfd, files[i], buf, n, 0400, err);
	}
	if (rc == 0) {
		_cleanup_close_ int sfd = openat(tfd, "spore", O_DIRECTORY | O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
		rc = sfd < 0 ? sl_error_sys(err, "cache: open %s/%s/spore", PINNED_DIR, tmp) : sl_fsync_dir(sfd, err);
	}
	if (rc == 0)
		rc = sl_fsync_dir(tfd, err);
	if (rc == 0 && renameat(dfd, tmp, dfd, hex) < 0 && errno != EEXIST && errno != ENOTEMPTY)
		rc = sl_error_sys(err, "cache: rename %s/%s", PINNED_DIR, tmp);
	/* Lost a race with another puller of the same image: theirs is as good. */
	if (faccessat(dfd, tmp, F_OK, AT_SYMLINK_NOFOLLOW) == 0) {
		sl_remove_tree(dfd, tmp, &ignore);
		sl_error_free(&ignore);
	}
	if (rc == 0)
		rc = sl_fsync_dir(dfd, err);
	return rc < 0 ? sl_error_wrap(err, "keeping the image's metadata for offline pulls") : 0;
}

int ocli_pinned_find(struct oci_cache *cache, const struct oci_ref *ref, const sl_digest *digest, char **manifest,
		     size_t *len, int *files_fd, sl_error_t *err)
{
	*manifest = NULL;
	*files_fd = -1;
	_cleanup_close_ int dfd = -1;
	if (pinned_dir(cache, false, &dfd, err) < 0) {
		if ((*err)->sys_errno == ENOENT) {
			sl_error_free(err);
			return 0;
		}
		return -1;
	}
	char hex[SL_DIGEST_HEXLEN + 1];
	sl_digest_hex(digest, hex);
	_cleanup_close_ int rfd = openat(dfd, hex, O_DIRECTORY | O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (rfd < 0) {
		if (errno == ENOENT)
			return 0;
		return sl_error_sys(err, "cache: open %s/%s", PINNED_DIR, hex);
	}
	_cleanup_free_ char *buf = NULL;
	size_t n = 0;
	if (sl_read_beneath(rfd, PINNED_JSON, PINNED_JSON_MAX, &buf, &n, err) < 0)
		return -1;
	_cleanup_json_ json_t *o = NULL;
	const char *reg, *repo, *man;
	if (sl_json_parse(buf, n, "cached image record", &o, err) < 0 ||
	    sl_json_get_str(o, "registry", "cached image record", &reg, err) < 0 ||
	    sl_json_get_str(o, "repository", "cached image record", &repo, err) < 0 ||
	    sl_json_get_str(o, "manifest", "cached image record", &man, err) < 0)
		return -1;
	/* Pulled from elsewhere: the same bytes, but not what this pull named. */
	if (strcmp(reg, ref->registry) || strcmp(repo, ref->repository))
		return 0;
	size_t ml = json_string_length(json_object_get(o, "manifest"));
	sl_digest got;
	sl_sha256(man, ml, &got);
	if (!sl_digest_equal(&got, digest))
		return sl_error_set(err, SL_E_INTEGRITY, "cached image record %s: the manifest does not match its digest",
				    hex);
	*manifest = malloc(ml + 1);
	if (!*manifest)
		return sl_error_set(err, SL_E_NOMEM, "out of memory");
	memcpy(*manifest, man, ml + 1);
	*len = ml;
	*files_fd = rfd;
	rfd = -1;
	return 0;
}
