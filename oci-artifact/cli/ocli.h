/* Shared declarations of spore-oci, the push/pull/cache commands of `spore`. */
#ifndef SPORE_OCLI_H
#define SPORE_OCLI_H

#include <stdbool.h>
#include <stdint.h>
#include "oci/cache.h"
#include "oci/image.h"
#include "oci/ref.h"
#include "oci/registry.h"
#include "sl/error.h"

#define EXIT_SPORE_FAILED 125

int cmd_push(int argc, char **argv);
int cmd_pull(int argc, char **argv);
int cmd_cache(int argc, char **argv);

int ocli_fail(sl_error_t *err);
int ocli_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
uint64_t ocli_now_ns(void);

/* What the user sees while blobs move: progress bars on a terminal, one JSON
 * object per line with --json, nothing otherwise. */
struct ocli_out;
struct ocli_out *ocli_out_new(bool json, const char *verb);
void ocli_out_free(struct ocli_out *o);
/* The registry client's progress callback (arg: struct ocli_out *). */
void ocli_progress(void *arg, const struct oci_progress *p);
/* Announces the total bytes about to move. */
void ocli_out_total(struct ocli_out *o, uint64_t bytes, uint64_t blobs);
/* A JSON event line (with --json) built from a jansson pack format. */
void ocli_event(struct ocli_out *o, const char *fmt, ...);
/* Clears the progress display before the final lines are printed. */
void ocli_out_finish(struct ocli_out *o);

/* Common registry options: --insecure-registry, --parallel N, --json. */
struct ocli_reg_opts {
	bool insecure;
	bool json;
	unsigned parallel;
};
/* Handles one of the common options; returns 1 if it was one, 0 if not, -1
 * on a bad value (err set). */
enum { OPT_INSECURE = 2000, OPT_JSON, OPT_PARALLEL };
int ocli_reg_opt(int c, const char *arg, struct ocli_reg_opts *o, sl_error_t *err);
int ocli_client(const struct oci_ref *ref, const struct ocli_reg_opts *o, struct ocli_out *out,
		struct oci_client **c, sl_error_t *err);
int ocli_open_cache(struct oci_cache **c, sl_error_t *err);

/* Images this node pushed or pulled, by spore manifest digest: how a child
 * spore finds its parent's layers to reuse (cache dir images/<hex>.json). */
int ocli_index_record(struct oci_cache *cache, const sl_digest *spore_manifest, const struct oci_ref *ref,
		      const sl_digest *manifest_digest, const char *manifest, size_t len, sl_error_t *err);
/* Finds the image of spore manifest d on registry; *json is malloc'd
 * (NULL if none). repository gets where it lives. */
int ocli_index_find(struct oci_cache *cache, const sl_digest *d, const char *registry, char repository[256],
		    char **json, size_t *len, sl_error_t *err);

/* Pulled images' metadata kept by manifest digest (cache dir
 * images/pinned/<hex>/): the manifest and the spore/ files (paths relative
 * to spore_fd, e.g. "spore/vm.state"), so `spore pull REF@digest` works
 * while the registry is unreachable and every chunk is cached. */
int ocli_pinned_record(struct oci_cache *cache, const struct oci_ref *ref, const sl_digest *digest,
		       const char *manifest, size_t len, int spore_fd, const char *const *files, size_t nfiles,
		       sl_error_t *err);
/* The record of digest pulled from ref's registry and repository, if any
 * (*manifest NULL if not): the manifest, checked against digest, and a
 * directory fd whose spore/ holds the files (unchecked: the caller checks
 * them against the manifest). */
int ocli_pinned_find(struct oci_cache *cache, const struct oci_ref *ref, const sl_digest *digest, char **manifest,
		     size_t *len, int *files_fd, sl_error_t *err);

#endif
