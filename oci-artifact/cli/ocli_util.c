/* spore-oci helpers: errors, common registry options, the cache, the image index. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "ocli.h"
#include "sl/file.h"
#include "sl/json.h"

int ocli_fail(sl_error_t *err)
{
	fprintf(stderr, "spore: %s\n", *err ? sl_error_msg(*err) : "failed");
	sl_error_free(err);
	return EXIT_SPORE_FAILED;
}

int ocli_usage(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("spore: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	return EXIT_SPORE_FAILED;
}

uint64_t ocli_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int ocli_reg_opt(int c, const char *arg, struct ocli_reg_opts *o, sl_error_t *err)
{
	switch (c) {
	case OPT_INSECURE:
		o->insecure = true;
		return 1;
	case OPT_JSON:
		o->json = true;
		return 1;
	case OPT_PARALLEL: {
		char *end;
		errno = 0;
		unsigned long v = strtoul(arg, &end, 10);
		if (end == arg || *end || errno || v < 1 || v > 64) {
			sl_error_set(err, SL_E_INVALID, "--parallel must be an integer in 1..64, got \"%.32s\"", arg);
			return -1;
		}
		o->parallel = (unsigned)v;
		return 1;
	}
	}
	return 0;
}

int ocli_client(const struct oci_ref *ref, const struct ocli_reg_opts *o, struct ocli_out *out,
		struct oci_client **c, sl_error_t *err)
{
	struct oci_client_opts co = {
		.insecure = o->insecure,
		.parallel = o->parallel,
		.progress = ocli_progress,
		.progress_arg = out,
	};
	return oci_client_new(ref, &co, c, err);
}

int ocli_open_cache(struct oci_cache **c, sl_error_t *err)
{
	char dir[4096];
	if (oci_cache_default_dir(dir, sizeof(dir), err) < 0)
		return -1;
	return oci_cache_open(dir, c, err);
}

static int index_dir(struct oci_cache *cache, int *fd, sl_error_t *err)
{
	int cfd = oci_cache_dirfd(cache);
	if (mkdirat(cfd, "images", 0700) < 0 && errno != EEXIST)
		return sl_error_sys(err, "cache: create images/");
	*fd = openat(cfd, "images", O_DIRECTORY | O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (*fd < 0)
		return sl_error_sys(err, "cache: open images/");
	return 0;
}

int ocli_index_record(struct oci_cache *cache, const sl_digest *spore_manifest, const struct oci_ref *ref,
		      const sl_digest *manifest_digest, const char *manifest, size_t len, sl_error_t *err)
{
	_cleanup_close_ int fd = -1;
	if (index_dir(cache, &fd, err) < 0)
		return -1;
	char hex[SL_DIGEST_HEXLEN + 1], dig[SL_DIGEST_STRLEN], name[SL_DIGEST_HEXLEN + 8];
	sl_digest_hex(spore_manifest, hex);
	sl_digest_format(manifest_digest, dig);
	snprintf(name, sizeof(name), "%s.json", hex);
	_cleanup_json_ json_t *o = json_pack("{s:s, s:s, s:s, s:s%}", "registry", ref->registry, "repository",
					     ref->repository, "digest", dig, "manifest", manifest, len);
	size_t n;
	_cleanup_free_ char *buf = o ? sl_json_dump(o, &n) : NULL;
	if (!buf)
		return sl_error_set(err, SL_E_NOMEM, "image index entry");
	return sl_write_atomic(fd, name, buf, n, 0600, err);
}

int ocli_index_find(struct oci_cache *cache, const sl_digest *d, const char *registry, char repository[256],
		    char **json, size_t *len, sl_error_t *err)
{
	*json = NULL;
	_cleanup_close_ int fd = -1;
	if (index_dir(cache, &fd, err) < 0)
		return -1;
	char hex[SL_DIGEST_HEXLEN + 1], name[SL_DIGEST_HEXLEN + 8];
	sl_digest_hex(d, hex);
	snprintf(name, sizeof(name), "%s.json", hex);
	_cleanup_free_ char *buf = NULL;
	size_t n;
	if (sl_read_beneath(fd, name, 8u << 20, &buf, &n, err) < 0) {
		if ((*err)->code == SL_E_NOT_FOUND) {
			sl_error_free(err);
			return 0;
		}
		return -1;
	}
	json_t *o = NULL;
	if (sl_json_parse(buf, n, "image index entry", &o, err) < 0)
		return -1;
	const char *reg, *repo, *man;
	int rc = 0;
	if (sl_json_get_str(o, "registry", "image index entry", &reg, err) < 0 ||
	    sl_json_get_str(o, "repository", "image index entry", &repo, err) < 0 ||
	    sl_json_get_str(o, "manifest", "image index entry", &man, err) < 0)
		rc = -1;
	else if (!strcmp(reg, registry) && strlen(repo) < 256) {
		snprintf(repository, 256, "%s", repo);
		*len = strlen(man);
		*json = strdup(man);
		if (!*json)
			rc = sl_error_set(err, SL_E_NOMEM, "image index entry");
	}
	json_decref(o);
	return rc;
}
