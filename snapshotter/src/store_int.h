/* Private pieces of the snapshot store shared by store.c, store_meta.c, store_fs.c and the tests. */
#ifndef SNAP_STORE_INT_H
#define SNAP_STORE_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sqlite3.h>

#include "snap_store.h"

/* ---- test hooks ----------------------------------------------------------
 * The crash test kills a child process at every numbered step of every
 * operation. The hook is compiled in only for the test build of the
 * library (SNAP_STORE_TEST_HOOKS, target snapstore-testhooks); production
 * builds have no hook and no global. */
#ifdef SNAP_STORE_TEST_HOOKS
extern void (*snap_store_test_hook)(const char *point);
#define SNAP_CRASH_POINT(point)                                                                                        \
	do {                                                                                                           \
		if (snap_store_test_hook)                                                                              \
			snap_store_test_hook(point);                                                                   \
	} while (0)
#else
#define SNAP_CRASH_POINT(point)                                                                                        \
	do {                                                                                                           \
	} while (0)
#endif

/* Keys come from containerd (clients choose them): shown through sl_show in
 * error messages so a hostile key can neither flood nor corrupt a log line. */
#define SNAP_SHOW(var, s)                                                                                              \
	char var[SL_SHOW_BUF];                                                                                         \
	sl_show((s), SIZE_MAX, var)

/* ---- metadata (store_meta.c) ------------------------------------------ */

/* Bumped on any schema change; a database with another version is refused
 * (SL_E_UNSUPPORTED) rather than guessed at. */
#define SNAP_SCHEMA_VERSION 1
/* PRAGMA application_id: "SPST". Tells our database from any other SQLite
 * file that happens to sit at root/metadata.db. */
#define SNAP_APPLICATION_ID 0x53505354

enum snap_stmt_id {
	ST_BEGIN_READ,
	ST_BEGIN_WRITE,
	ST_COMMIT,
	ST_ROLLBACK,
	ST_GET,
	ST_ID_EXISTS,
	ST_CHAIN,
	ST_HAS_CHILD,
	ST_INSERT,
	ST_COMMIT_ROW,
	ST_TOUCH,
	ST_DELETE,
	ST_LABELS_CLEAR,
	ST_LABEL_PUT,
	ST_LABEL_DEL,
	ST_LABELS_GET,
	ST_WALK,
	ST_COUNT,
};

struct snap_meta {
	sqlite3 *db;
	sqlite3_stmt *st[ST_COUNT];
	bool in_tx;
};

/* One row of the snapshots table. */
struct snap_row {
	int64_t id;        /* the directory name under root/snapshots; never reused */
	int64_t parent_id; /* 0: no parent */
	enum snap_kind kind;
	int64_t created_ns;
	int64_t updated_ns;
	int64_t size; /* usage measured at commit (0 until then) */
	int64_t inodes;
	char *name;
	char *parent; /* the parent's name, NULL if none */
};

int snap_meta_open(struct snap_meta *m, const char *path, sl_error_t *err);
void snap_meta_close(struct snap_meta *m);

/* Transactions. begin_write takes SQLite's write lock at once (BEGIN
 * IMMEDIATE) so a transaction that read state never fails to upgrade. */
int snap_meta_begin(struct snap_meta *m, bool write, sl_error_t *err);
int snap_meta_commit(struct snap_meta *m, sl_error_t *err);
/* Rolls back the open transaction, if any. Never fails: SQLite rolls back a
 * transaction whose ROLLBACK fails when the connection closes. */
void snap_meta_rollback(struct snap_meta *m);

/* *found false (and 0 returned) when there is no snapshot called name. */
int snap_meta_lookup(struct snap_meta *m, const char *name, struct snap_row *row, bool *found, sl_error_t *err);
/* The same, but a missing name is SL_E_NOT_FOUND (naming it). */
int snap_meta_get(struct snap_meta *m, const char *name, struct snap_row *row, sl_error_t *err);
int snap_meta_id_exists(struct snap_meta *m, int64_t id, bool *exists, sl_error_t *err);
/* ids of id and its ancestors, nearest first. */
int snap_meta_chain(struct snap_meta *m, int64_t id, int64_t **ids, size_t *n, sl_error_t *err);
int snap_meta_has_children(struct snap_meta *m, int64_t id, bool *has, sl_error_t *err);
int snap_meta_insert(struct snap_meta *m, const char *name, enum snap_kind kind, int64_t parent_id, int64_t now_ns,
		     int64_t *id, sl_error_t *err);
/* Active -> committed under a new name: new created/updated times, usage kept. */
int snap_meta_commit_row(struct snap_meta *m, int64_t id, const char *name, int64_t now_ns,
			 const struct snap_usage *u, sl_error_t *err);
int snap_meta_touch(struct snap_meta *m, int64_t id, int64_t now_ns, sl_error_t *err);
int snap_meta_delete(struct snap_meta *m, int64_t id, sl_error_t *err);
/* Replaces all labels of id. Labels with an empty value are not stored
 * (containerd's boltutil.WriteLabels drops them); a repeated key keeps the
 * last value. */
int snap_meta_labels_replace(struct snap_meta *m, int64_t id, const struct snap_label *labels, size_t n,
			     sl_error_t *err);
/* Sets one label; NULL or "" value deletes it. */
int snap_meta_label_set(struct snap_meta *m, int64_t id, const char *key, const char *value, sl_error_t *err);
int snap_meta_labels_get(struct snap_meta *m, int64_t id, struct snap_label **labels, size_t *n, sl_error_t *err);
/* Every row in name order (bytewise, as bolt orders its keys). fn returns
 * 1 to stop, -1 for an error it recorded itself (walk then returns -1 and
 * leaves *err alone); the row is cleared after fn returns. */
int snap_meta_walk(struct snap_meta *m, int (*fn)(struct snap_row *row, void *user), void *user, sl_error_t *err);

void snap_row_clear(struct snap_row *row);
void snap_labels_free(struct snap_label *labels, size_t n);

/* ---- directories and mounts (store_fs.c) ----------------------------- */

/* root/snapshots/<id>/{fs,work}: committed snapshots keep the id they were
 * prepared with, so commit touches no directory. Temp and removal names
 * start with a letter and so never parse as ids. */
#define SNAP_TMP_PREFIX "new-"
#define SNAP_RM_PREFIX "rm-"
/* "new-" + 6 random characters + NUL. */
#define SNAP_TMP_NAME_MAX 16
/* Enough for "rm-" and any int64. */
#define SNAP_ID_NAME_MAX 32

struct snap_fs {
	char *root; /* absolute, symlinks resolved: mounts need absolute paths */
	int root_fd;
	int snaps_fd; /* root/snapshots */
	int lock_fd;
	bool index_off; /* add "index=off" to overlay mounts (as containerd 1.6 does when the kernel knows it) */
};

/* Creates root (and its parents) and root/snapshots, and takes the lock
 * (SL_E_EXISTS when another open store holds it). */
int snap_fs_open(struct snap_fs *f, const char *root, sl_error_t *err);
void snap_fs_close(struct snap_fs *f);

/* Makes root/snapshots/new-XXXXXX with fs (0755) and, for active
 * snapshots, work (0711); fs takes the owner of parent_id's fs (0: none),
 * as containerd's overlay snapshotter does. Everything is fsynced, so a
 * rename of the temp directory never becomes durable before its contents. */
int snap_fs_prepare(struct snap_fs *f, bool with_work, int64_t parent_id, char tmpname[SNAP_TMP_NAME_MAX],
		    sl_error_t *err);
/* rename(2) within root/snapshots without replacing anything, then fsync of
 * root/snapshots so the rename is durable before the caller's COMMIT. */
int snap_fs_rename(struct snap_fs *f, const char *from, const char *to, sl_error_t *err);
/* Removes root/snapshots/<name> (a tree); missing is not an error. */
int snap_fs_remove(struct snap_fs *f, const char *name, sl_error_t *err);
bool snap_fs_exists(struct snap_fs *f, const char *name);
void snap_fs_id_name(int64_t id, const char *prefix, char out[SNAP_ID_NAME_MAX]);
/* Parses a canonical decimal id (no sign, no leading zero) after prefix. */
bool snap_fs_parse_id(const char *name, const char *prefix, int64_t *id);
/* Names of the entries of root/snapshots, malloc'd. */
int snap_fs_list(struct snap_fs *f, char ***names, size_t *n, sl_error_t *err);
void snap_fs_names_free(char **names, size_t n);

/* root/snapshots/<id>/<sub>, malloc'd. */
char *snap_fs_path(const struct snap_fs *f, int64_t id, const char *sub);
/* containerd's fs.DiskUsage of root/snapshots/<id>/fs: st_blocks * 512
 * summed over every inode (hard links counted once), and the inode count;
 * symlinks are not followed. */
int snap_fs_usage(const struct snap_fs *f, int64_t id, struct snap_usage *u, sl_error_t *err);
/* The mounts of snapshot id of kind given its parents' ids (nearest first),
 * exactly as containerd 1.6's overlay snapshotter builds them. */
int snap_fs_mounts(const struct snap_fs *f, enum snap_kind kind, int64_t id, const int64_t *parents, size_t nparents,
		   struct snap_mount **out, size_t *nout, sl_error_t *err);

#endif
