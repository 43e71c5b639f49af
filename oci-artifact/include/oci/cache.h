/* The node-local chunk cache: verified, read-only, content-addressed files
 * that spore directories hard-link (so every VM mapping a chunk shares one
 * page-cache copy), safe under concurrent pullers and crashes. */
#ifndef OCI_CACHE_H
#define OCI_CACHE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include "sl/digest.h"
#include "sl/error.h"

struct oci_cache;

/* $SPORE_CACHE_DIR, else /var/lib/sporelet/cache for root, else
 * $XDG_CACHE_HOME/sporelet or ~/.cache/sporelet. out needs 4096 bytes. */
int oci_cache_default_dir(char *out, size_t cap, sl_error_t *err);

/* Opens (creating, mode 0700) dir with chunks/sha256/ and tmp/. Temp files
 * are O_TMPFILE where the filesystem has it (they vanish with a crashed
 * writer); leftovers of the named fallback older than a minute are removed. */
int oci_cache_open(const char *dir, struct oci_cache **out, sl_error_t *err);
void oci_cache_close(struct oci_cache *c);
int oci_cache_dirfd(const struct oci_cache *c);

/* Is a good entry for d there? A non-regular file, a file of the wrong size
 * (size != 0 means "must be this size") or one not read-only is removed and
 * reported absent (never used). Contents are trusted: they were verified on
 * the way in (oci_cache_verify re-checks). */
int oci_cache_has(struct oci_cache *c, const sl_digest *d, uint64_t size, bool *present, sl_error_t *err);

/* A chunk being written. */
struct oci_cache_tmp {
	int fd;
	char name[64]; /* named fallback; "" for O_TMPFILE */
};
int oci_cache_tmp_open(struct oci_cache *c, struct oci_cache_tmp *t, sl_error_t *err);
/* Hashes the temp file's content (the only trusted check), and if it is d:
 * fsync, mode 0444, linked into chunks/sha256/<hex> without replacing an
 * existing entry (a concurrent puller's identical chunk wins), fsync of the
 * directory. A mismatch is SL_E_INTEGRITY and nothing enters. Always
 * closes/removes the temp file. */
int oci_cache_tmp_commit(struct oci_cache *c, struct oci_cache_tmp *t, const sl_digest *d, sl_error_t *err);
void oci_cache_tmp_abort(struct oci_cache *c, struct oci_cache_tmp *t);

/* The caller hashed exactly the bytes it wrote to each temp file, as it
 * wrote them, and checked them against d (the registry client's fetches do):
 * commit without reading them back. */
#define OCI_CACHE_STREAM_VERIFIED 1u
/* The caller fsynced each temp file after its last write (the registry
 * client's writer threads do, with oci_fetch.sync): commit skips the batch
 * syncfs, which would also flush every other dirty file of the filesystem. */
#define OCI_CACHE_SYNCED 2u
/* oci_cache_tmp_commit for a batch: the same checks and guarantees, with one
 * syncfs for all data before any name is linked (none with OCI_CACHE_SYNCED)
 * and one directory fsync.
 * Every temp file is closed/removed, committed or not. */
int oci_cache_tmp_commit_many(struct oci_cache *c, struct oci_cache_tmp *t, const sl_digest *d, size_t n,
			      unsigned flags, sl_error_t *err);

/* Hard-links the entry for d to dirfd/relpath (parents must exist). */
int oci_cache_link(struct oci_cache *c, const sl_digest *d, int dirfd, const char *relpath, sl_error_t *err);

/* Copies len bytes of src to dst for a writable file: FICLONE (XFS
 * reflink=1, btrfs) when it works, else copy_file_range, else read/write.
 * *reflinked says which happened. */
int oci_clone_file(int src_fd, int dst_fd, uint64_t len, bool *reflinked, sl_error_t *err);

struct oci_cache_entry {
	sl_digest digest;
	uint64_t size;
	nlink_t links; /* 1: only the cache holds it (unreferenced) */
	int64_t mtime; /* seconds */
};
/* Calls cb for every entry (in no particular order). */
int oci_cache_list(struct oci_cache *c, void (*cb)(const struct oci_cache_entry *e, void *arg), void *arg,
		   sl_error_t *err);

struct oci_cache_stats {
	uint64_t entries, bytes;
	uint64_t removed, removed_bytes; /* verify: bad entries; gc: collected */
};
/* Re-hashes every entry; removes any that does not match its name. */
int oci_cache_verify(struct oci_cache *c, struct oci_cache_stats *st, sl_error_t *err);
/* Garbage collection by reference: an entry with link count 1 is held by no
 * spore directory. Removes unreferenced entries, oldest first, until the
 * cache is at most max_bytes (0: remove every unreferenced entry).
 * Referenced entries are never removed. */
int oci_cache_gc(struct oci_cache *c, uint64_t max_bytes, struct oci_cache_stats *st, sl_error_t *err);

#endif
