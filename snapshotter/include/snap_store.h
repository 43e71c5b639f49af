/* The snapshot store: containerd's snapshot kinds and rules, metadata in SQLite, contents in overlay-layout directories. */
#ifndef SNAP_STORE_H
#define SNAP_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sl/error.h"

/* The same numbers as containerd.services.snapshots.v1.Kind. */
enum snap_kind {
	SNAP_KIND_UNKNOWN = 0,
	SNAP_KIND_VIEW = 1,
	SNAP_KIND_ACTIVE = 2,
	SNAP_KIND_COMMITTED = 3,
};

/* containerd's limit (pkg/labels): a label's key and value together. */
#define SNAP_LABEL_MAX 4096

struct snap_label {
	char *key;
	char *value;
};

struct snap_info {
	char *name;   /* the key of an active or view snapshot, the name of a committed one */
	char *parent; /* the parent's name, or NULL */
	enum snap_kind kind;
	int64_t created_ns; /* unix time, ns */
	int64_t updated_ns;
	struct snap_label *labels;
	size_t nlabels;
};

/* A mount as containerd.types.Mount carries it. */
struct snap_mount {
	char *type;   /* "bind" or "overlay" */
	char *source;
	char **options;
	size_t noptions;
};

struct snap_usage {
	int64_t size;   /* bytes of the snapshot's own contents (not its parents') */
	int64_t inodes;
};

struct snap_store;

/* Opens (creating) the store under root: root/metadata.db and
 * root/snapshots/<id>/{fs,work}. A store left by a killed process opens to
 * a consistent state: every snapshot is either fully there or not there
 * (directories no row owns are removed by snap_store_cleanup, which open
 * also runs). One process per root (an exclusive lock on root/lock;
 * a second open fails with SL_E_EXISTS). The store is safe to use from
 * many threads. */
int snap_store_open(struct snap_store **out, const char *root, sl_error_t *err);
void snap_store_close(struct snap_store *s);

/* Errors use containerd's classes: SL_E_NOT_FOUND (no such key or parent),
 * SL_E_EXISTS (the key or name is taken), SL_E_PRECONDITION (wrong kind:
 * committing a view, removing a snapshot with children, ...),
 * SL_E_INVALID (empty key, bad kind, a parent that is not committed, a
 * label over SNAP_LABEL_MAX, an unknown update field), SL_E_IO. */

/* Prepare (kind ACTIVE) or View (kind VIEW) a snapshot named key on top of
 * parent (NULL or "" for none), with labels; *mounts receives how to mount
 * it (overlay with lowerdir/upperdir/workdir, or a bind of its fs when it
 * has no parent; a view of a single parent is a read-only bind of that
 * parent's fs, as containerd's overlay snapshotter does). */
int snap_store_create(struct snap_store *s, enum snap_kind kind, const char *key, const char *parent,
		      const struct snap_label *labels, size_t nlabels, struct snap_mount **mounts, size_t *nmounts,
		      sl_error_t *err);
/* The mounts of an active or view snapshot. */
int snap_store_mounts(struct snap_store *s, const char *key, struct snap_mount **mounts, size_t *nmounts,
		      sl_error_t *err);
/* Commits the active snapshot key as name (key is gone after); labels
 * replace key's. Its usage is measured and kept. */
int snap_store_commit(struct snap_store *s, const char *name, const char *key, const struct snap_label *labels,
		      size_t nlabels, sl_error_t *err);
/* A committed snapshot with no contents of its own (remote snapshots: the
 * spore layers, served from the node cache). */
int snap_store_add_committed(struct snap_store *s, const char *name, const char *parent,
			     const struct snap_label *labels, size_t nlabels, sl_error_t *err);
int snap_store_remove(struct snap_store *s, const char *key, sl_error_t *err);
int snap_store_stat(struct snap_store *s, const char *key, struct snap_info *out, sl_error_t *err);
/* containerd's Update: only labels change. paths are field-mask paths:
 * "labels" replaces all labels, "labels.<key>" sets (or, absent from
 * info, deletes) one; no paths means "labels". Anything else is
 * SL_E_INVALID. *out (if not NULL) receives the updated info. */
int snap_store_update(struct snap_store *s, const struct snap_info *info, const char *const *paths, size_t npaths,
		      struct snap_info *out, sl_error_t *err);
/* Calls fn for every snapshot (in name order), under a consistent read;
 * fn returns non-zero to stop the walk (then walk returns 0). fn must not
 * call back into the store. */
int snap_store_walk(struct snap_store *s, int (*fn)(const struct snap_info *info, void *user), void *user,
		    sl_error_t *err);
/* Committed: the usage measured at commit; active: measured now. */
int snap_store_usage(struct snap_store *s, const char *key, struct snap_usage *out, sl_error_t *err);
/* The directory holding a snapshot's own contents (root/snapshots/<id>/fs),
 * malloc'd into *path. */
int snap_store_fs_path(struct snap_store *s, const char *key, char **path, sl_error_t *err);
/* Removes directories that no snapshot owns. */
int snap_store_cleanup(struct snap_store *s, sl_error_t *err);

void snap_info_clear(struct snap_info *info);
void snap_mounts_free(struct snap_mount *mounts, size_t n);

#endif
