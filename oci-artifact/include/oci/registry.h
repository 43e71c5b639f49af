/* OCI distribution client (libcurl): manifests, blobs, Range GETs, uploads,
 * auth (anonymous, Basic, Bearer), parallel transfers with retries. Every
 * byte it returns or writes has been checked against its digest. */
#ifndef OCI_REGISTRY_H
#define OCI_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "oci/auth.h"
#include "oci/image.h"
#include "oci/ref.h"
#include "sl/digest.h"
#include "sl/error.h"

struct oci_client;

enum oci_event {
	OCI_EV_START = 1, /* a transfer begins (total known) */
	OCI_EV_BYTES,     /* bytes moved (done grows) */
	OCI_EV_DONE,      /* verified and complete */
	OCI_EV_SKIP,      /* already present (upload) */
	OCI_EV_MOUNT,     /* mounted from another repository */
	OCI_EV_RETRY,     /* a retry after an error; msg says why */
};

struct oci_progress {
	enum oci_event event;
	const sl_digest *blob; /* the blob (for a Range GET: the layer) */
	uint64_t done, total;  /* this transfer */
	const char *msg;       /* OCI_EV_RETRY: the error */
};

struct oci_client_opts {
	bool insecure;      /* allow plain HTTP to a non-loopback registry */
	unsigned parallel;  /* concurrent transfers (0: 8) */
	unsigned retries;   /* attempts after the first (0: 5); backoff 100 ms doubling, max 5 s */
	uint64_t chunk_upload_bytes; /* blobs larger than this go up by PATCH chunks of this size (0: 64 MiB) */
	const struct oci_creds *creds; /* NULL: oci_creds_load() */
	const char *ca_file;           /* extra CA bundle, or NULL */
	void (*progress)(void *arg, const struct oci_progress *p);
	void *progress_arg;
};

/* One client per registry + repository. Chooses http:// only for loopback
 * registries or opts->insecure, https:// otherwise. */
int oci_client_new(const struct oci_ref *ref, const struct oci_client_opts *opts, struct oci_client **out,
		   sl_error_t *err);
void oci_client_free(struct oci_client *c);

/* Counters since creation, for tests and benchmarks. */
struct oci_client_stats {
	uint64_t requests;
	uint64_t blob_uploads;   /* blobs actually uploaded (not skipped, not mounted) */
	uint64_t bytes_uploaded; /* blob bytes sent */
	uint64_t bytes_downloaded;
	uint64_t retries;
	uint64_t part_wait_ns; /* downloads waited for the part writers (hashing or the disk slower than the network) */
};
void oci_client_stats(const struct oci_client *c, struct oci_client_stats *st);

/* GET a manifest by tag or digest with Accept: OCI manifest and index.
 * Checks: size <= OCI_MANIFEST_MAX, Content-Type equals the body's
 * mediaType when both are present, the body's digest equals reference when
 * it is a digest and equals Docker-Content-Digest when sent. *body is
 * malloc'd; *digest is the sha256 of the body. */
int oci_manifest_get(struct oci_client *c, const char *reference, char **body, size_t *len,
		     char media_type[128], sl_digest *digest, sl_error_t *err);
/* HEAD: *exists, and the digest when the registry says it. */
int oci_manifest_head(struct oci_client *c, const char *reference, bool *exists, sl_digest *digest,
		      sl_error_t *err);
/* PUT under reference (a tag or the body's digest); checks the registry's
 * Docker-Content-Digest when sent. */
int oci_manifest_put(struct oci_client *c, const char *reference, const char *media_type, const char *body,
		     size_t len, sl_digest *digest, sl_error_t *err);

int oci_blob_exists(struct oci_client *c, const sl_digest *d, bool *exists, uint64_t *size, sl_error_t *err);
/* A small blob (config) into memory, at most max bytes, verified. */
int oci_blob_get(struct oci_client *c, const sl_digest *d, size_t max, char **buf, size_t *len, sl_error_t *err);

/* One download: a whole blob or a byte range of it, into fd from its
 * current offset 0 on (pwrite at dst_off + i). The bytes must hash to want
 * (for a whole blob: the blob digest; for a range: e.g. the chunk digest). */
/* A piece of a fetched window with its own digest and destination: how one
 * GET of a tar layer becomes verified chunk files. Offsets are relative to
 * the blob; parts are sorted and do not overlap. fd -1: the fetch's
 * open_part gives it. */
struct oci_fetch_part {
	uint64_t offset, length;
	sl_digest want;
	int fd;
	uint64_t dst_off;
};

struct oci_fetch {
	sl_digest blob;
	uint64_t offset, length; /* length 0: the whole blob (offset must be 0) */
	sl_digest want;
	int fd;
	uint64_t dst_off;
	/* With parts: the window's bytes go to the parts (each hashed and
	 * checked against its own want; bytes between parts are dropped) and
	 * want/fd/dst_off above are unused. Parts of up to 2 MiB are hashed
	 * and written by writer threads, each only after it checked out. */
	const struct oci_fetch_part *parts;
	size_t nparts;
	/* For parts with fd -1: returns the part's fd (or -1 with *err set),
	 * called before each write of the part, possibly from a writer thread
	 * (so it must be thread-safe and return the same fd every time): the
	 * destination files are then created while the transfer runs. */
	int (*open_part)(void *arg, const struct oci_fetch_part *pt, sl_error_t *err);
	void *open_arg;
	/* fsync each destination once all its bytes are written (parts: on the
	 * writer threads, so the flushes overlap the transfer). */
	bool sync;
	/* result */
	int rc; /* 0 ok, -1 failed (err set) */
	sl_error_t err;
};
/* Destination fds may be O_DIRECT: writes of parts come from 4 KiB-aligned
 * buffers, and a write the filesystem refuses that way (EINVAL) is repeated
 * through the page cache after O_DIRECT is turned off on that fd. */
/* Runs all fetches, opts->parallel at a time, retrying each on connection
 * errors, 429 and 5xx (honouring Retry-After up to 30 s) and on truncated
 * or wrong bytes. Returns 0 if all succeeded, else -1 with *err naming the
 * first failure (every fetch's own rc/err is set). A failed fetch leaves
 * undefined bytes in its fd range: callers write to temp files. */
int oci_fetch_many(struct oci_client *c, struct oci_fetch *f, size_t n, sl_error_t *err);

/* One upload. Skipped if HEAD says the blob exists; mount_from (another
 * repository of the same registry) is tried first when given. Small blobs
 * go up by POST then PUT, large ones by POST, PATCH chunks (always to the
 * newest Location) and a final PUT. */
struct oci_upload {
	sl_digest digest;
	uint64_t size;
	const struct oci_seg *segs;
	size_t nsegs;
	const char *mount_from;
	/* results */
	bool skipped, mounted;
	int rc;
	sl_error_t err;
};
int oci_upload_many(struct oci_client *c, struct oci_upload *u, size_t n, sl_error_t *err);

#endif
