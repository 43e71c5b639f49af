/* Remote spore snapshots: spore layers recognised at Prepare and committed without data; spore directories materialised from the node cache. */
#ifndef SNAP_REMOTE_H
#define SNAP_REMOTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sl/error.h"
#include "snap_config.h"
#include "snap_store.h"

/* Labels containerd and CRI pass (reference/containerd_protocols.md 4.4). */
#define SNAP_LABEL_REF "containerd.io/snapshot.ref"
#define SNAP_LABEL_CRI_IMAGE_REF "containerd.io/snapshot/cri.image-ref"
#define SNAP_LABEL_CRI_MANIFEST "containerd.io/snapshot/cri.manifest-digest"
/* Ours, on remote snapshots: the spore image pinned by digest, and a marker. */
#define SNAP_LABEL_SPORE_IMAGE "containerd.io/snapshot/sporelet.image"
#define SNAP_LABEL_REMOTE "containerd.io/snapshot/remote"

struct snap_remote_opts {
	const char *spore_bin;  /* `spore`, which materialises a spore directory (spore pull) */
	const char *cache_dir;  /* the node cache spore pull fills and links from */
	const char *const *insecure_registries; /* host[:port] reached over plain HTTP */
	size_t ninsecure;
	const struct snap_registry *registries; /* mirrors, credentials, insecure per registry */
	size_t nregistries;
	const char *state_dir; /* private scratch (0700): credentials handed to spore pull */
	unsigned pull_timeout_s; /* a materialisation's bound */
};

struct snap_remote;

int snap_remote_new(struct snap_remote **out, const struct snap_remote_opts *o, sl_error_t *err);
void snap_remote_free(struct snap_remote *r);

/* Prepare of an unpack key: when labels say the layer (SNAP_LABEL_REF, the
 * chain ID) belongs to a spore image (CRI's image-ref + manifest-digest,
 * else the layers' sporelet.ref annotation) and the image's layers give
 * that chain ID over parent, a committed snapshot carrying the labels
 * containerd looks for exists afterwards (created, or already there), and
 * this returns 1: the caller answers ALREADY_EXISTS and containerd
 * downloads nothing. Returns 0 when the layer is not a spore's (the
 * ordinary path), -1 on errors worth failing the call for. */
int snap_remote_prepare(struct snap_remote *r, struct snap_store *st, const char *parent,
			const struct snap_label *labels, size_t nlabels, sl_error_t *err);

/* The spore image (registry/repository@digest) a snapshot on top of parent
 * would see, malloc'd into *image; NULL when parent is not a spore's layer. */
int snap_remote_image_of(struct snap_store *st, const char *parent, char **image, sl_error_t *err);

/* Materialises image's spore directory at dir (which must not exist): chunk
 * files hard-linked from the node cache, missing chunks fetched and
 * verified (spore pull), from the registry's mirrors first, then the
 * registry. Nothing is left at dir on failure; the error names the image
 * and its registry. */
int snap_remote_materialise(struct snap_remote *r, const char *image, const char *dir, sl_error_t *err);

struct oci_cache_stats;
/* Garbage-collects the node cache (oci_cache_gc: unreferenced chunks,
 * oldest first, until it is at most max_bytes; 0: every unreferenced one),
 * never while a materialisation is linking chunks. */
int snap_remote_cache_gc(struct snap_remote *r, uint64_t max_bytes, struct oci_cache_stats *st, sl_error_t *err);

#endif
