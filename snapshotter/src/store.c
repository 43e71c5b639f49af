/* The snapshot store's public functions: containerd's snapshot rules, with every change ordered so a crash leaves the old or the new state. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "store_int.h"

/* Crash safety, in short (docs/snapshotter.md, "The snapshot store"):
 * a snapshot exists when its row is committed in metadata.db, and its
 * directory root/snapshots/<id> is put in place (create) or taken away
 * (remove) by a rename made durable *inside* the SQLite transaction,
 * before COMMIT. So whatever instant a process dies at, the database holds
 * the old or the new state, and the directories differ from it at most by
 * directories no row owns (new-*, an orphan <id>, rm-<id>) or by one
 * rm-<id> whose removal did not commit. settle() and cleanup resolve both,
 * and open runs cleanup before anything else. */

#ifdef SNAP_STORE_TEST_HOOKS
void (*snap_store_test_hook)(const char *point);
#endif

struct snap_store {
	pthread_mutex_t mu; /* one connection, one lock: SQLite calls, directory changes and their order */
	struct snap_meta meta;
	struct snap_fs fs;
};

static void unlockp(pthread_mutex_t **mu)
{
	if (*mu)
		pthread_mutex_unlock(*mu);
}
/* unused: the variable exists only for its cleanup (clang warns otherwise). */
#define _cleanup_unlock_ __attribute__((cleanup(unlockp), unused))

static pthread_mutex_t *lock(struct snap_store *s)
{
	pthread_mutex_lock(&s->mu);
	return &s->mu;
}

static void rowp(struct snap_row *r)
{
	snap_row_clear(r);
}
#define _cleanup_row_ __attribute__((cleanup(rowp)))

/* Rolls back the transaction still open when the variable goes out of
 * scope: every early return of a writer undoes its half-made change. */
static void txp(struct snap_meta **m)
{
	if (*m)
		snap_meta_rollback(*m);
}
#define _cleanup_tx_ __attribute__((cleanup(txp)))

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static bool empty(const char *s)
{
	return !s || !*s;
}

/* containerd's labels.Validate: key and value together at most
 * SNAP_LABEL_MAX bytes. An empty key is refused too: bolt cannot store
 * one (containerd fails with an untyped error). */
static int check_label(const char *what, const char *key, const char *value, sl_error_t *err)
{
	SNAP_SHOW(shown, what);

	if (empty(key))
		return sl_error_set(err, SL_E_INVALID, "snapshot \"%s\": label with an empty key", shown);
	if (strlen(key) + (value ? strlen(value) : 0) > SNAP_LABEL_MAX) {
		/* containerd quotes the first 10 bytes of the key. */
		return sl_error_set(err, SL_E_INVALID,
				    "snapshot \"%s\": label key and value greater than maximum size (%d bytes), key: %.10s",
				    shown, SNAP_LABEL_MAX, key);
	}
	return 0;
}

static int check_labels(const char *what, const struct snap_label *labels, size_t n, sl_error_t *err)
{
	if (n && !labels)
		return sl_error_set(err, SL_E_INVALID, "labels: NULL with count %zu", n);
	for (size_t i = 0; i < n; i++)
		if (check_label(what, labels[i].key, labels[i].value, err) < 0)
			return -1;
	return 0;
}

static int fill_info(struct snap_store *s, const struct snap_row *row, struct snap_info *out, sl_error_t *err)
{
	memset(out, 0, sizeof(*out));
	out->name = strdup(row->name);
	out->parent = row->parent ? strdup(row->parent) : NULL;
	if (!out->name || (row->parent && !out->parent)) {
		snap_info_clear(out);
		return sl_error_set(err, SL_E_NOMEM, "snapshot info: out of memory");
	}
	out->kind = row->kind;
	out->created_ns = row->created_ns;
	out->updated_ns = row->updated_ns;
	if (snap_meta_labels_get(&s->meta, row->id, &out->labels, &out->nlabels, err) < 0) {
		snap_info_clear(out);
		return -1;
	}
	return 0;
}

/* ---- recovery ---------------------------------------------------------
 * Called with no transaction open, so the database says what committed. */

/* Brings the directories of one id in line with its row. */
static int settle(struct snap_store *s, int64_t id, sl_error_t *err)
{
	char live[SNAP_ID_NAME_MAX], rm[SNAP_ID_NAME_MAX];
	bool exists;

	snap_fs_id_name(id, "", live);
	snap_fs_id_name(id, SNAP_RM_PREFIX, rm);
	if (snap_meta_id_exists(&s->meta, id, &exists, err) < 0)
		return -1;
	if (!exists) {
		/* A create that did not commit, or a remove that did. */
		if (snap_fs_remove(&s->fs, live, err) < 0 || snap_fs_remove(&s->fs, rm, err) < 0)
			return -1;
		SNAP_CRASH_POINT("settle.removed");
		return 0;
	}
	if (snap_fs_exists(&s->fs, live))
		return snap_fs_remove(&s->fs, rm, err); /* unreachable with RENAME_NOREPLACE; the row's dir wins */
	if (snap_fs_exists(&s->fs, rm)) {
		/* A remove that renamed the directory but did not commit. */
		if (snap_fs_rename(&s->fs, rm, live, err) < 0)
			return -1;
		SNAP_CRASH_POINT("settle.restored");
	}
	return 0;
}

static int cleanup_locked(struct snap_store *s, sl_error_t *err)
{
	char **names = NULL;
	size_t n = 0;
	int64_t id;
	int r = 0;

	if (snap_fs_list(&s->fs, &names, &n, err) < 0)
		return -1;
	for (size_t i = 0; i < n && r == 0; i++) {
		SNAP_CRASH_POINT("cleanup.entry");
		if (snap_fs_parse_id(names[i], "", &id) || snap_fs_parse_id(names[i], SNAP_RM_PREFIX, &id))
			r = settle(s, id, err);
		else /* new-*: a create that never reached its rename; or a stranger */
			r = snap_fs_remove(&s->fs, names[i], err);
	}
	snap_fs_names_free(names, n);
	return r;
}

/* ---- open / close ----------------------------------------------------- */

int snap_store_open(struct snap_store **out, const char *root, sl_error_t *err)
{
	_cleanup_free_ char *db = NULL;
	struct snap_store *s;

	*out = NULL;
	s = calloc(1, sizeof(*s));
	if (!s)
		return sl_error_set(err, SL_E_NOMEM, "snapshot store: out of memory");
	pthread_mutex_init(&s->mu, NULL);
	if (snap_fs_open(&s->fs, root, err) < 0) {
		pthread_mutex_destroy(&s->mu);
		free(s);
		return -1;
	}
	if (asprintf(&db, "%s/metadata.db", s->fs.root) < 0) {
		db = NULL;
		sl_error_set(err, SL_E_NOMEM, "snapshot store: out of memory");
		goto fail;
	}
	if (snap_meta_open(&s->meta, db, err) < 0)
		goto fail;
	if (cleanup_locked(s, err) < 0) {
		sl_error_wrap(err, "%s: recovery", s->fs.root);
		goto fail;
	}
	*out = s;
	return 0;
fail:
	snap_store_close(s);
	return -1;
}

void snap_store_close(struct snap_store *s)
{
	if (!s)
		return;
	snap_meta_close(&s->meta);
	snap_fs_close(&s->fs);
	pthread_mutex_destroy(&s->mu);
	free(s);
}

/* ---- create ----------------------------------------------------------- */

/* Creates a snapshot of kind (ACTIVE, VIEW, or COMMITTED for
 * snap_store_add_committed) under s->mu. The checks come in containerd's
 * order (storage.CreateSnapshot): parent missing, parent not committed,
 * key taken. */
static int create_locked(struct snap_store *s, enum snap_kind kind, const char *key, const char *parent,
			 const struct snap_label *labels, size_t nlabels, struct snap_mount **mounts, size_t *nmounts,
			 sl_error_t *err)
{
	_cleanup_tx_ struct snap_meta *tx = NULL;
	_cleanup_row_ struct snap_row prow = { 0 }, taken = { 0 };
	_cleanup_free_ int64_t *chain = NULL;
	struct snap_mount *m = NULL;
	size_t nchain = 0, nm = 0;
	char tmp[SNAP_TMP_NAME_MAX], live[SNAP_ID_NAME_MAX];
	int64_t id;
	bool found;
	SNAP_SHOW(shown, key);

	if (snap_meta_begin(&s->meta, true, err) < 0)
		return -1;
	tx = &s->meta;
	if (!empty(parent)) {
		if (snap_meta_lookup(&s->meta, parent, &prow, &found, err) < 0)
			return -1;
		if (!found) {
			SNAP_SHOW(pshown, parent);
			return sl_error_set(err, SL_E_NOT_FOUND, "snapshot \"%s\": parent \"%s\" does not exist", shown,
					    pshown);
		}
		if (prow.kind != SNAP_KIND_COMMITTED) {
			SNAP_SHOW(pshown, parent);
			return sl_error_set(err, SL_E_INVALID,
					    "snapshot \"%s\": parent \"%s\" is not a committed snapshot", shown, pshown);
		}
	}
	if (snap_meta_lookup(&s->meta, key, &taken, &found, err) < 0)
		return -1;
	if (found)
		return sl_error_set(err, SL_E_EXISTS, "snapshot \"%s\": already exists", shown);
	if (prow.id && snap_meta_chain(&s->meta, prow.id, &chain, &nchain, err) < 0)
		return -1;

	/* The directory is made under a temp name: until the rename below,
	 * nothing can take it for a snapshot's. */
	if (snap_fs_prepare(&s->fs, kind == SNAP_KIND_ACTIVE, prow.id, tmp, err) < 0)
		return sl_error_wrap(err, "snapshot \"%s\"", shown);
	SNAP_CRASH_POINT("create.tmpdir");
	if (snap_meta_insert(&s->meta, key, kind, prow.id, now_ns(), &id, err) < 0 ||
	    snap_meta_labels_replace(&s->meta, id, labels, nlabels, err) < 0)
		goto drop_tmp;
	/* Mounts before COMMIT: once committed, the call must not fail. */
	if (mounts && snap_fs_mounts(&s->fs, kind, id, chain, nchain, &m, &nm, err) < 0)
		goto drop_tmp;
	SNAP_CRASH_POINT("create.inserted");
	snap_fs_id_name(id, "", live);
	if (snap_fs_rename(&s->fs, tmp, live, err) < 0) {
		snap_mounts_free(m, nm);
		snap_meta_rollback(&s->meta);
		tx = NULL;
		/* An orphan <id> left by an earlier failure: removing it lets
		 * the next create (which gets the same id) through. */
		sl_error_t ignored = NULL;
		settle(s, id, &ignored);
		snap_fs_remove(&s->fs, tmp, &ignored);
		sl_error_free(&ignored);
		return sl_error_wrap(err, "snapshot \"%s\"", shown);
	}
	SNAP_CRASH_POINT("create.renamed");
	if (snap_meta_commit(&s->meta, err) < 0) {
		snap_mounts_free(m, nm);
		snap_meta_rollback(&s->meta);
		tx = NULL;
		sl_error_t ignored = NULL;
		settle(s, id, &ignored);
		sl_error_free(&ignored);
		return sl_error_wrap(err, "snapshot \"%s\"", shown);
	}
	tx = NULL;
	SNAP_CRASH_POINT("create.committed");
	if (mounts) {
		*mounts = m;
		*nmounts = nm;
	}
	return 0;

drop_tmp:
	{
		sl_error_t ignored = NULL;

		snap_meta_rollback(&s->meta);
		tx = NULL;
		snap_fs_remove(&s->fs, tmp, &ignored);
		sl_error_free(&ignored);
	}
	return sl_error_wrap(err, "snapshot \"%s\"", shown);
}

int snap_store_create(struct snap_store *s, enum snap_kind kind, const char *key, const char *parent,
		      const struct snap_label *labels, size_t nlabels, struct snap_mount **mounts, size_t *nmounts,
		      sl_error_t *err)
{
	SNAP_SHOW(shown, key);

	if (mounts)
		*mounts = NULL;
	if (nmounts)
		*nmounts = 0;
	if (kind != SNAP_KIND_ACTIVE && kind != SNAP_KIND_VIEW)
		return sl_error_set(err, SL_E_INVALID,
				    "snapshot \"%s\": kind %d invalid; only active and view snapshots can be created",
				    shown, (int)kind);
	if (empty(key))
		return sl_error_set(err, SL_E_INVALID, "snapshot key is empty");
	if (mounts && !nmounts)
		return sl_error_set(err, SL_E_INVALID, "snapshot \"%s\": mounts without a count", shown);
	if (check_labels(key, labels, nlabels, err) < 0)
		return -1;
	_cleanup_unlock_ pthread_mutex_t *mu = lock(s);
	return create_locked(s, kind, key, parent, labels, nlabels, mounts, nmounts, err);
}

int snap_store_add_committed(struct snap_store *s, const char *name, const char *parent,
			     const struct snap_label *labels, size_t nlabels, sl_error_t *err)
{
	if (empty(name))
		return sl_error_set(err, SL_E_INVALID, "snapshot name is empty");
	if (check_labels(name, labels, nlabels, err) < 0)
		return -1;
	_cleanup_unlock_ pthread_mutex_t *mu = lock(s);
	return create_locked(s, SNAP_KIND_COMMITTED, name, parent, labels, nlabels, NULL, NULL, err);
}

/* ---- commit ----------------------------------------------------------- */

static int commit_locked(struct snap_store *s, const char *name, const char *key, const struct snap_label *labels,
			 size_t nlabels, sl_error_t *err);

int snap_store_commit(struct snap_store *s, const char *name, const char *key, const struct snap_label *labels,
		      size_t nlabels, sl_error_t *err)
{
	SNAP_SHOW(kshown, key);

	if (empty(name))
		return sl_error_set(err, SL_E_INVALID, "commit of \"%s\": empty name", kshown);
	if (check_labels(name, labels, nlabels, err) < 0)
		return -1;
	_cleanup_unlock_ pthread_mutex_t *mu = lock(s);
	return commit_locked(s, name, key, labels, nlabels, err);
}

static int commit_locked(struct snap_store *s, const char *name, const char *key, const struct snap_label *labels,
			 size_t nlabels, sl_error_t *err)
{
	_cleanup_tx_ struct snap_meta *tx = NULL;
	_cleanup_row_ struct snap_row row = { 0 }, taken = { 0 };
	struct snap_usage u;
	bool found;
	SNAP_SHOW(kshown, key);
	SNAP_SHOW(nshown, name);

	if (snap_meta_begin(&s->meta, true, err) < 0)
		return -1;
	tx = &s->meta;
	/* containerd's order (overlay Commit, storage.CommitActive): key
	 * missing, then name taken (by anything, the key itself included),
	 * then key not active. */
	if (snap_meta_get(&s->meta, key ? key : "", &row, err) < 0)
		return -1;
	if (snap_meta_lookup(&s->meta, name, &taken, &found, err) < 0)
		return -1;
	if (found)
		return sl_error_set(err, SL_E_EXISTS, "commit of \"%s\": snapshot \"%s\" already exists", kshown,
				    nshown);
	if (row.kind != SNAP_KIND_ACTIVE)
		return sl_error_set(err, SL_E_PRECONDITION, "commit of \"%s\": snapshot is not active", kshown);
	/* Measured once, now: a committed snapshot's contents do not change,
	 * and CRI asks for every snapshot's usage every 10 s. */
	if (snap_fs_usage(&s->fs, row.id, &u, err) < 0)
		return sl_error_wrap(err, "commit of \"%s\"", kshown);
	SNAP_CRASH_POINT("commit.measured");
	/* The id (so the directory) stays: commit is one SQLite transaction. */
	if (snap_meta_commit_row(&s->meta, row.id, name, now_ns(), &u, err) < 0 ||
	    snap_meta_labels_replace(&s->meta, row.id, labels, nlabels, err) < 0)
		return sl_error_wrap(err, "commit of \"%s\"", kshown);
	SNAP_CRASH_POINT("commit.updated");
	if (snap_meta_commit(&s->meta, err) < 0)
		return sl_error_wrap(err, "commit of \"%s\"", kshown);
	tx = NULL;
	SNAP_CRASH_POINT("commit.committed");
	return 0;
}

/* ---- remove ----------------------------------------------------------- */

int snap_store_remove(struct snap_store *s, const char *key, sl_error_t *err)
{
	_cleanup_unlock_ pthread_mutex_t *mu = lock(s); /* first: released after the rollback below */
	_cleanup_tx_ struct snap_meta *tx = NULL;
	_cleanup_row_ struct snap_row row = { 0 };
	char live[SNAP_ID_NAME_MAX], rm[SNAP_ID_NAME_MAX];
	sl_error_t ignored = NULL;
	bool children;
	SNAP_SHOW(shown, key);

	if (snap_meta_begin(&s->meta, true, err) < 0)
		return -1;
	tx = &s->meta;
	if (snap_meta_get(&s->meta, key ? key : "", &row, err) < 0)
		return -1;
	if (snap_meta_has_children(&s->meta, row.id, &children, err) < 0)
		return -1;
	if (children)
		return sl_error_set(err, SL_E_PRECONDITION, "snapshot \"%s\": cannot remove snapshot with child",
				    shown);
	if (snap_meta_delete(&s->meta, row.id, err) < 0)
		return sl_error_wrap(err, "snapshot \"%s\"", shown);
	SNAP_CRASH_POINT("remove.deleted");
	/* The directory leaves its id's name before COMMIT, so no committed
	 * state has a row without its directory or a directory named for a
	 * removed row, and a failed rename (EBUSY, ...) fails the remove. */
	snap_fs_id_name(row.id, "", live);
	snap_fs_id_name(row.id, SNAP_RM_PREFIX, rm);
	if (snap_fs_rename(&s->fs, live, rm, err) < 0)
		return sl_error_wrap(err, "snapshot \"%s\"", shown);
	SNAP_CRASH_POINT("remove.renamed");
	if (snap_meta_commit(&s->meta, err) < 0) {
		snap_meta_rollback(&s->meta);
		tx = NULL;
		settle(s, row.id, &ignored); /* renames it back: the row is still there */
		sl_error_free(&ignored);
		return sl_error_wrap(err, "snapshot \"%s\"", shown);
	}
	tx = NULL;
	SNAP_CRASH_POINT("remove.committed");
	/* The snapshot is gone; a directory that fails to go (it is left as
	 * rm-<id>) is retried by the next cleanup, as containerd leaves
	 * failed removals to its Cleanup. */
	snap_fs_remove(&s->fs, rm, &ignored);
	sl_error_free(&ignored);
	SNAP_CRASH_POINT("remove.done");
	return 0;
}

/* ---- reads ------------------------------------------------------------ */

int snap_store_stat(struct snap_store *s, const char *key, struct snap_info *out, sl_error_t *err)
{
	_cleanup_row_ struct snap_row row = { 0 };

	memset(out, 0, sizeof(*out));
	_cleanup_unlock_ pthread_mutex_t *mu = lock(s);
	if (snap_meta_get(&s->meta, key ? key : "", &row, err) < 0)
		return -1;
	return fill_info(s, &row, out, err);
}

int snap_store_mounts(struct snap_store *s, const char *key, struct snap_mount **mounts, size_t *nmounts,
		      sl_error_t *err)
{
	_cleanup_row_ struct snap_row row = { 0 };
	_cleanup_free_ int64_t *chain = NULL;
	size_t nchain = 0;
	SNAP_SHOW(shown, key);

	*mounts = NULL;
	*nmounts = 0;
	_cleanup_unlock_ pthread_mutex_t *mu = lock(s);
	if (snap_meta_get(&s->meta, key ? key : "", &row, err) < 0)
		return -1;
	if (row.kind != SNAP_KIND_ACTIVE && row.kind != SNAP_KIND_VIEW)
		return sl_error_set(err, SL_E_PRECONDITION, "snapshot \"%s\": not active or view", shown);
	if (row.parent_id && snap_meta_chain(&s->meta, row.parent_id, &chain, &nchain, err) < 0)
		return -1;
	return snap_fs_mounts(&s->fs, row.kind, row.id, chain, nchain, mounts, nmounts, err);
}

int snap_store_usage(struct snap_store *s, const char *key, struct snap_usage *out, sl_error_t *err)
{
	_cleanup_row_ struct snap_row row = { 0 };
	SNAP_SHOW(shown, key);

	memset(out, 0, sizeof(*out));
	{
		_cleanup_unlock_ pthread_mutex_t *mu = lock(s);

		if (snap_meta_get(&s->meta, key ? key : "", &row, err) < 0)
			return -1;
		if (row.kind != SNAP_KIND_ACTIVE) {
			/* Committed: measured at commit. View: nothing of its
			 * own (containerd returns the stored zeros too). */
			out->size = row.size;
			out->inodes = row.inodes;
			return 0;
		}
	}
	/* An active snapshot's tree can be large: walked without the lock
	 * (as containerd walks it outside its transaction), so Prepare and
	 * Commit of other layers do not wait. A concurrent remove shows as a
	 * missing directory. */
	if (snap_fs_usage(&s->fs, row.id, out, err) < 0)
		return sl_error_wrap(err, "usage of \"%s\"", shown);
	return 0;
}

int snap_store_fs_path(struct snap_store *s, const char *key, char **path, sl_error_t *err)
{
	_cleanup_row_ struct snap_row row = { 0 };

	*path = NULL;
	_cleanup_unlock_ pthread_mutex_t *mu = lock(s);
	if (snap_meta_get(&s->meta, key ? key : "", &row, err) < 0)
		return -1;
	*path = snap_fs_path(&s->fs, row.id, "fs");
	if (!*path)
		return sl_error_set(err, SL_E_NOMEM, "fs path: out of memory");
	return 0;
}

struct walk_ctx {
	struct snap_store *s;
	int (*fn)(const struct snap_info *info, void *user);
	void *user;
	sl_error_t *err;
};

static int walk_row(struct snap_row *row, void *user)
{
	struct walk_ctx *w = user;
	struct snap_info info;
	int r;

	if (fill_info(w->s, row, &info, w->err) < 0)
		return -1;
	r = w->fn(&info, w->user);
	snap_info_clear(&info);
	return r ? 1 : 0;
}

int snap_store_walk(struct snap_store *s, int (*fn)(const struct snap_info *info, void *user), void *user,
		    sl_error_t *err)
{
	_cleanup_unlock_ pthread_mutex_t *mu = lock(s); /* first: released after the rollback below */
	_cleanup_tx_ struct snap_meta *tx = NULL;
	struct walk_ctx w = { s, fn, user, err };

	/* One read transaction: every row and its labels from one state. */
	if (snap_meta_begin(&s->meta, false, err) < 0)
		return -1;
	tx = &s->meta;
	if (snap_meta_walk(&s->meta, walk_row, &w, err) < 0)
		return -1;
	if (snap_meta_commit(&s->meta, err) < 0)
		return -1;
	tx = NULL;
	return 0;
}

/* ---- update ----------------------------------------------------------- */

/* The value info gives for key: the last one, as decoding a protobuf map
 * keeps the last entry. NULL if absent. */
static const char *info_label(const struct snap_info *info, const char *key)
{
	for (size_t i = info->nlabels; i-- > 0;)
		if (info->labels[i].key && strcmp(info->labels[i].key, key) == 0)
			return info->labels[i].value ? info->labels[i].value : "";
	return NULL;
}

static int apply_path(struct snap_store *s, int64_t id, const struct snap_info *info, const char *path,
		      sl_error_t *err)
{
	static const char prefix[] = "labels.";
	SNAP_SHOW(shown, info->name);

	if (strcmp(path, "labels") == 0) {
		if (check_labels(info->name, info->labels, info->nlabels, err) < 0)
			return -1;
		return snap_meta_labels_replace(&s->meta, id, info->labels, info->nlabels, err);
	}
	if (strncmp(path, prefix, sizeof(prefix) - 1) == 0) {
		const char *key = path + sizeof(prefix) - 1;
		const char *value = info_label(info, key);

		/* Absent from info: deleted (containerd stores "" and
		 * WriteLabels drops empty values). */
		if (!empty(value) && check_label(info->name, key, value, err) < 0)
			return -1;
		return snap_meta_label_set(&s->meta, id, key, value, err);
	}
	SNAP_SHOW(pshown, path);
	return sl_error_set(err, SL_E_INVALID, "cannot update \"%s\" field on snapshot \"%s\"", pshown, shown);
}

static int update_locked(struct snap_store *s, const struct snap_info *info, const char *const *paths, size_t npaths,
			 struct snap_info *out, sl_error_t *err);

int snap_store_update(struct snap_store *s, const struct snap_info *info, const char *const *paths, size_t npaths,
		      struct snap_info *out, sl_error_t *err)
{
	static const char *const all[] = { "labels" };

	if (out)
		memset(out, 0, sizeof(*out));
	if (!info || empty(info->name))
		return sl_error_set(err, SL_E_INVALID, "update: empty snapshot name");
	if (info->nlabels && !info->labels)
		return sl_error_set(err, SL_E_INVALID, "update: labels NULL with count %zu", info->nlabels);
	if (npaths == 0)
		paths = all, npaths = 1;
	_cleanup_unlock_ pthread_mutex_t *mu = lock(s);
	return update_locked(s, info, paths, npaths, out, err);
}

static int update_locked(struct snap_store *s, const struct snap_info *info, const char *const *paths, size_t npaths,
			 struct snap_info *out, sl_error_t *err)
{
	_cleanup_tx_ struct snap_meta *tx = NULL;
	_cleanup_row_ struct snap_row row = { 0 }, updated = { 0 };

	if (snap_meta_begin(&s->meta, true, err) < 0)
		return -1;
	tx = &s->meta;
	if (snap_meta_get(&s->meta, info->name, &row, err) < 0)
		return -1;
	/* Only labels change: name, parent, kind and times in info are
	 * ignored, as containerd ignores them. */
	for (size_t i = 0; i < npaths; i++)
		if (apply_path(s, row.id, info, paths[i] ? paths[i] : "", err) < 0)
			return -1;
	if (snap_meta_touch(&s->meta, row.id, now_ns(), err) < 0)
		return -1;
	SNAP_CRASH_POINT("update.written");
	if (out && (snap_meta_get(&s->meta, info->name, &updated, err) < 0 || fill_info(s, &updated, out, err) < 0))
		return -1;
	if (snap_meta_commit(&s->meta, err) < 0) {
		if (out)
			snap_info_clear(out);
		return -1;
	}
	tx = NULL;
	SNAP_CRASH_POINT("update.committed");
	return 0;
}

/* ---- cleanup ---------------------------------------------------------- */

int snap_store_cleanup(struct snap_store *s, sl_error_t *err)
{
	_cleanup_unlock_ pthread_mutex_t *mu = lock(s);
	return cleanup_locked(s, err);
}

void snap_info_clear(struct snap_info *info)
{
	if (!info)
		return;
	free(info->name);
	free(info->parent);
	snap_labels_free(info->labels, info->nlabels);
	memset(info, 0, sizeof(*info));
}
