/* A spore as an OCI image: manifest and config encoding/decoding (both the
 * shape `spore push` writes and the one `oras push` writes), the per-layer
 * chunk table, and planning the layers of a push (reusing a parent's). */
#ifndef OCI_IMAGE_H
#define OCI_IMAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "sl/digest.h"
#include "sl/error.h"
#include "sl/spore_manifest.h"

#define OCI_MT_MANIFEST "application/vnd.oci.image.manifest.v1+json"
#define OCI_MT_INDEX "application/vnd.oci.image.index.v1+json"
#define OCI_MT_CONFIG "application/vnd.oci.image.config.v1+json"
#define OCI_MT_LAYER_TAR "application/vnd.oci.image.layer.v1.tar"
#define OCI_MT_EMPTY "application/vnd.oci.empty.v1+json"
#define SPORE_ARTIFACT_TYPE "application/vnd.sporelet.spore.v1"
/* oras shape: one raw spore file per layer, titled with its relative path. */
#define SPORE_MT_FILE "application/vnd.sporelet.spore.file.v1"

#define OCI_ANN_TITLE "org.opencontainers.image.title"
/* SPORE_SHAPE_TAR: title of the one layer holding spore/manifest.json and
 * the state files. */
#define SPORE_META_TITLE "spore-meta.tar"
#define OCI_ANN_CREATED "org.opencontainers.image.created"
/* On a chunk layer: "<hex>@<offset>,<hex>@<offset>,..." (offset of the
 * chunk's bytes in the tar; every chunk is SPORE_CHUNK_SIZE bytes). */
#define SPORE_ANN_CHUNKS "ai.sporelet.spore.chunks"
/* On every layer of a pushed spore: the reference it was pushed to
 * (registry/repository:tag). containerd hands layer annotations with the
 * containerd.io/snapshot/ prefix to the snapshotter as labels, so a client
 * without CRI's labels (ctr) still tells spore-snapshotter where the spore
 * lives (docs/spore-format.md). */
#define SPORE_ANN_SNAPSHOT_REF "containerd.io/snapshot/sporelet.ref"
/* On the image manifest and as config labels. */
#define SPORE_LABEL_MANIFEST "ai.sporelet.spore.manifest" /* spore manifest digest */
#define SPORE_LABEL_VERSION "ai.sporelet.spore.version"  /* "1" */
#define SPORE_LABEL_PARENT "ai.sporelet.spore.parent"    /* parent spore manifest digest, if any */

#define OCI_MANIFEST_MAX (4u << 20) /* what registries and oras accept */
#define SPORE_MAX_LAYERS_DEFAULT 127
#define SPORE_LAYER_BYTES_DEFAULT (256ull << 20)

enum spore_image_shape {
	SPORE_SHAPE_TAR = 1, /* spore push: image config, tar layers, chunk tables */
	SPORE_SHAPE_FILES,   /* oras push: empty config, one raw file per layer */
};

struct oci_chunk_loc {
	sl_digest digest;
	uint64_t offset; /* within the layer blob */
};

struct oci_layer {
	char media_type[128];
	sl_digest digest;
	uint64_t size;
	char title[256];
	struct oci_chunk_loc *chunks; /* SPORE_SHAPE_TAR chunk layers; sorted by digest */
	size_t nchunks;
};

struct spore_image {
	enum spore_image_shape shape;
	char artifact_type[128];
	char config_media_type[128];
	sl_digest config_digest;
	uint64_t config_size;
	bool has_spore_manifest; /* TAR: annotation SPORE_LABEL_MANIFEST; FILES: the
				  * digest of the spore/manifest.json layer */
	sl_digest spore_manifest; /* digest of spore/manifest.json */
	bool has_parent;  /* SPORE_SHAPE_TAR: annotation SPORE_LABEL_PARENT */
	sl_digest parent; /* parent spore's manifest digest */
	struct oci_layer *layers;
	size_t nlayers;
	/* SPORE_ANN_SNAPSHOT_REF: encoded on every layer when set; decoded
	 * from the first layer that has it. */
	char snapshot_ref[512];
};

/* Decodes an OCI image manifest (untrusted, at most OCI_MANIFEST_MAX):
 * schemaVersion 2, mediaType absent or OCI_MT_MANIFEST, artifactType
 * SPORE_ARTIFACT_TYPE (or config OCI_MT_CONFIG with the spore labels),
 * descriptors with valid sha256 digests and sizes, titles that are safe
 * relative paths, chunk tables well formed (offsets 512-aligned, inside the
 * layer). The shape comes from the config media type: OCI_MT_CONFIG ->
 * TAR, OCI_MT_EMPTY (or SPORE_ARTIFACT_TYPE: `oras push --image-spec v1.0`)
 * -> FILES. Errors name the field (SL_E_INVALID) or the unsupported type
 * (SL_E_UNSUPPORTED). */
int spore_image_decode(const char *json, size_t len, struct spore_image *img, sl_error_t *err);
/* Encodes img (shape TAR) as compact JSON with stable key order. */
int spore_image_encode(const struct spore_image *img, char **json, size_t *len, sl_error_t *err);
void spore_image_free(struct spore_image *img);

/* The image config of a spore (shape TAR): architecture amd64, os linux,
 * rootfs.type "layers", rootfs.diff_ids = the layer digests (uncompressed
 * tars: diff_id = digest), config.Labels with the SPORE_LABEL_* values. */
int spore_config_encode(const struct spore_image *img, const struct spore_manifest *m,
			const sl_digest *spore_manifest_digest, char **json, size_t *len, sl_error_t *err);
/* Checks a config blob (untrusted) against img: valid JSON, os/architecture
 * linux/amd64, diff_ids equal to the layer digests in order. */
int spore_config_check(const char *json, size_t len, const struct spore_image *img, sl_error_t *err);

/* Where a chunk's bytes are in an image (SPORE_SHAPE_TAR chunk tables): the
 * layer and offset. Returns 0, or -1 when no layer holds it. */
int spore_image_find_chunk(const struct spore_image *img, const sl_digest *chunk, size_t *layer,
			   uint64_t *offset);

/* ---- building a push ---- */

/* A piece of a blob's bytes: memory, a file range, or zeros. */
struct oci_seg {
	const void *mem; /* if non-NULL: mem[0..len) */
	int fd;          /* else if >= 0: pread(fd, off, len) */
	uint64_t off;
	uint64_t len; /* else: len zero bytes */
};

/* A blob to upload, as segments (so a tar layer is never written out). */
struct spore_push_blob {
	char media_type[128];
	sl_digest digest;
	uint64_t size;
	struct oci_seg *segs;
	size_t nsegs;
	void *mem; /* owned memory the segments point into (headers, JSON) */
	bool reused; /* a layer of the parent image: upload only if missing */
};

struct spore_push_opts {
	uint64_t layer_bytes; /* max bytes per new chunk layer (0: default) */
	unsigned max_layers;  /* 0: SPORE_MAX_LAYERS_DEFAULT */
};

struct spore_push_plan {
	struct spore_image img;       /* the manifest to push (layers filled in) */
	struct spore_push_blob *blobs; /* one per layer, then the config last */
	size_t nblobs;
	char *config_json;
	size_t config_len;
	int *fds; /* opened spore files, closed by spore_push_plan_free */
	size_t nfds;
};

/* Plans the push of the spore directory at dirfd: a meta layer (title
 * "spore-meta.tar": spore/manifest.json and the state files), the parent's
 * chunk layers reused when parent is given (a layer is reused if any of its
 * chunks is used; new chunks go to new delta layers of at most layer_bytes),
 * and if that would exceed max_layers, every chunk repacked into fresh
 * layers. Chunk layers are titled "chunks-<first 12 hex of digest>.tar".
 * Every file is hashed while planning: a chunk whose bytes do not match its
 * name is an error. Digests and sizes of every blob are computed. */
int spore_push_plan(int dirfd, const struct spore_image *parent, const struct spore_push_opts *opts,
		    struct spore_push_plan *plan, sl_error_t *err);
void spore_push_plan_free(struct spore_push_plan *plan);

/* sha256 over a segment list. */
int oci_segs_digest(const struct oci_seg *segs, size_t n, sl_digest *out, uint64_t *size, sl_error_t *err);
/* Copies bytes [off, off+len) of the concatenated segments into buf. */
int oci_segs_read(const struct oci_seg *segs, size_t n, uint64_t off, void *buf, size_t len, sl_error_t *err);

#endif
