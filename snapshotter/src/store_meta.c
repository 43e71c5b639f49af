/* The snapshot store's metadata in SQLite: schema and its version, transactions, and one prepared statement per query. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store_int.h"

/* Journal mode: WAL with synchronous=FULL. Both WAL and the rollback
 * journal are atomic across a kill -9 or a power cut (the store's crash
 * safety needs only that a COMMIT is all or nothing, and durable once
 * sqlite3_step returns). With synchronous=FULL a WAL commit costs one
 * fsync (of the WAL), where the rollback journal costs at least three
 * (journal, database, journal header); containerd issues a Prepare,
 * Commit and Remove per image layer, so commits are the hot path. WAL's
 * extra files (-wal, -shm) stay inside root, which one process owns. */
static const char *const pragmas[] = {
	"PRAGMA journal_mode = WAL",
	"PRAGMA synchronous = FULL",
	"PRAGMA foreign_keys = ON",
	/* One process owns root (the lock file); this covers only a stray
	 * reader such as the sqlite3 shell. */
	"PRAGMA busy_timeout = 5000",
};

/* Version 1. AUTOINCREMENT so an id is never handed out twice: a
 * directory named by a removed snapshot's id (an interrupted removal) can
 * then never be mistaken for a newer snapshot's. name is a key (active,
 * view) or a name (committed): containerd gives both one namespace. */
static const char schema_v1[] =
	"CREATE TABLE snapshots ("
	" id INTEGER PRIMARY KEY AUTOINCREMENT,"
	" name TEXT NOT NULL UNIQUE,"
	" parent_id INTEGER REFERENCES snapshots(id),"
	" kind INTEGER NOT NULL CHECK (kind IN (1, 2, 3)),"
	" created_ns INTEGER NOT NULL,"
	" updated_ns INTEGER NOT NULL,"
	" size INTEGER NOT NULL DEFAULT 0,"
	" inodes INTEGER NOT NULL DEFAULT 0"
	");"
	"CREATE INDEX snapshots_parent ON snapshots(parent_id);"
	"CREATE TABLE labels ("
	" snapshot_id INTEGER NOT NULL REFERENCES snapshots(id) ON DELETE CASCADE,"
	" key TEXT NOT NULL,"
	" value TEXT NOT NULL,"
	" PRIMARY KEY (snapshot_id, key)"
	") WITHOUT ROWID;";

#define ROW_COLS "s.id, s.kind, s.parent_id, p.name, s.created_ns, s.updated_ns, s.size, s.inodes, s.name"
#define ROW_FROM " FROM snapshots s LEFT JOIN snapshots p ON p.id = s.parent_id"

static const char *const stmt_sql[ST_COUNT] = {
	[ST_BEGIN_READ] = "BEGIN",
	[ST_BEGIN_WRITE] = "BEGIN IMMEDIATE",
	[ST_COMMIT] = "COMMIT",
	[ST_ROLLBACK] = "ROLLBACK",
	[ST_GET] = "SELECT " ROW_COLS ROW_FROM " WHERE s.name = ?1",
	[ST_ID_EXISTS] = "SELECT 1 FROM snapshots WHERE id = ?1",
	[ST_CHAIN] = "WITH RECURSIVE chain(id, parent_id, depth) AS ("
		     " SELECT id, parent_id, 0 FROM snapshots WHERE id = ?1"
		     " UNION ALL"
		     " SELECT s.id, s.parent_id, c.depth + 1 FROM snapshots s JOIN chain c ON s.id = c.parent_id)"
		     " SELECT id FROM chain ORDER BY depth",
	[ST_HAS_CHILD] = "SELECT 1 FROM snapshots WHERE parent_id = ?1 LIMIT 1",
	[ST_INSERT] = "INSERT INTO snapshots (name, kind, parent_id, created_ns, updated_ns)"
		      " VALUES (?1, ?2, ?3, ?4, ?4)",
	[ST_COMMIT_ROW] = "UPDATE snapshots SET name = ?2, kind = 3, created_ns = ?3, updated_ns = ?3,"
			  " size = ?4, inodes = ?5 WHERE id = ?1",
	[ST_TOUCH] = "UPDATE snapshots SET updated_ns = ?2 WHERE id = ?1",
	[ST_DELETE] = "DELETE FROM snapshots WHERE id = ?1",
	[ST_LABELS_CLEAR] = "DELETE FROM labels WHERE snapshot_id = ?1",
	[ST_LABEL_PUT] = "INSERT OR REPLACE INTO labels (snapshot_id, key, value) VALUES (?1, ?2, ?3)",
	[ST_LABEL_DEL] = "DELETE FROM labels WHERE snapshot_id = ?1 AND key = ?2",
	[ST_LABELS_GET] = "SELECT key, value FROM labels WHERE snapshot_id = ?1 ORDER BY key",
	[ST_WALK] = "SELECT " ROW_COLS ROW_FROM " ORDER BY s.name",
};

/* A statement borrowed from m->st, reset (and its bindings cleared) when
 * the borrowing variable goes out of scope, so no early return leaves it
 * holding a read lock. */
static void stmt_resetp(sqlite3_stmt **st)
{
	if (*st) {
		sqlite3_reset(*st);
		sqlite3_clear_bindings(*st);
	}
}
#define _cleanup_stmt_ __attribute__((cleanup(stmt_resetp)))

static int db_error(struct snap_meta *m, sl_error_t *err, int rc, const char *what)
{
	const char *msg = m->db ? sqlite3_errmsg(m->db) : sqlite3_errstr(rc);
	int sys = m->db ? sqlite3_system_errno(m->db) : 0;

	if ((rc & 0xff) == SQLITE_NOMEM)
		return sl_error_set(err, SL_E_NOMEM, "metadata: %s: out of memory", what);
	if (sys)
		return sl_error_errno(err, sys, "metadata: %s: %s", what, msg);
	return sl_error_set(err, SL_E_IO, "metadata: %s: %s", what, msg);
}

static int bind_text(struct snap_meta *m, sqlite3_stmt *st, int i, const char *s, sl_error_t *err)
{
	int rc = sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC);

	return rc == SQLITE_OK ? 0 : db_error(m, err, rc, "bind");
}

static int bind_i64(struct snap_meta *m, sqlite3_stmt *st, int i, int64_t v, sl_error_t *err)
{
	int rc = sqlite3_bind_int64(st, i, v);

	return rc == SQLITE_OK ? 0 : db_error(m, err, rc, "bind");
}

/* Runs a statement that returns no rows. */
static int step_done(struct snap_meta *m, sqlite3_stmt *st, const char *what, sl_error_t *err)
{
	int rc = sqlite3_step(st);

	return rc == SQLITE_DONE ? 0 : db_error(m, err, rc, what);
}

/* Steps a query: 1 for a row, 0 at the end, -1 with *err set. */
static int step_row(struct snap_meta *m, sqlite3_stmt *st, const char *what, sl_error_t *err)
{
	int rc = sqlite3_step(st);

	if (rc == SQLITE_ROW)
		return 1;
	if (rc == SQLITE_DONE)
		return 0;
	return db_error(m, err, rc, what);
}

static int exec(struct snap_meta *m, const char *sql, sl_error_t *err)
{
	int rc = sqlite3_exec(m->db, sql, NULL, NULL, NULL);

	return rc == SQLITE_OK ? 0 : db_error(m, err, rc, sql);
}

/* The single integer a PRAGMA or count query returns. */
static int query_int(struct snap_meta *m, const char *sql, int64_t *out, sl_error_t *err)
{
	sqlite3_stmt *st = NULL;
	int rc = sqlite3_prepare_v2(m->db, sql, -1, &st, NULL);

	if (rc != SQLITE_OK)
		return db_error(m, err, rc, sql);
	rc = sqlite3_step(st);
	if (rc != SQLITE_ROW) {
		db_error(m, err, rc, sql);
		sqlite3_finalize(st);
		return -1;
	}
	*out = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return 0;
}

static int set_pragmas(struct snap_meta *m, const char *path, sl_error_t *err)
{
	sqlite3_stmt *st = NULL;
	const unsigned char *mode;
	int rc;

	for (size_t i = 0; i < sizeof(pragmas) / sizeof(pragmas[0]); i++) {
		rc = sqlite3_prepare_v2(m->db, pragmas[i], -1, &st, NULL);
		if (rc == SQLITE_OK) {
			rc = sqlite3_step(st);
			if (rc == SQLITE_ROW || rc == SQLITE_DONE)
				rc = SQLITE_OK;
		}
		/* journal_mode answers with the mode in force: a file system
		 * without shared memory support would leave it unchanged. */
		if (rc == SQLITE_OK && i == 0) {
			mode = sqlite3_column_text(st, 0);
			if (!mode || strcmp((const char *)mode, "wal") != 0) {
				sqlite3_finalize(st);
				return sl_error_set(err, SL_E_UNSUPPORTED, "%s: journal_mode WAL refused (got %s)",
						    path, mode ? (const char *)mode : "nothing");
			}
		}
		sqlite3_finalize(st);
		st = NULL;
		if (rc != SQLITE_OK) {
			db_error(m, err, rc, pragmas[i]);
			return sl_error_wrap(err, "%s", path);
		}
	}
	return 0;
}

/* Creates the schema in a fresh database, or checks an existing one is
 * ours and of the version this build reads. Fails closed: anything else is
 * SL_E_UNSUPPORTED and nothing is written. */
static int check_schema(struct snap_meta *m, const char *path, sl_error_t *err)
{
	int64_t version, app, tables;
	char sql[96];

	if (snap_meta_begin(m, true, err) < 0)
		return -1;
	if (query_int(m, "PRAGMA user_version", &version, err) < 0 ||
	    query_int(m, "PRAGMA application_id", &app, err) < 0 ||
	    query_int(m, "SELECT count(*) FROM sqlite_master", &tables, err) < 0)
		goto fail;
	if (version == 0 && app == 0 && tables == 0) {
		/* Schema, id and version in one transaction: a crash leaves
		 * either an empty database or a complete one. */
		snprintf(sql, sizeof(sql), "PRAGMA application_id = %d; PRAGMA user_version = %d",
			 SNAP_APPLICATION_ID, SNAP_SCHEMA_VERSION);
		if (exec(m, schema_v1, err) < 0 || exec(m, sql, err) < 0)
			goto fail;
		return snap_meta_commit(m, err);
	}
	if (app != SNAP_APPLICATION_ID) {
		sl_error_set(err, SL_E_UNSUPPORTED,
			     "%s: not a snapshot store database (application_id %lld, expected %d)", path,
			     (long long)app, SNAP_APPLICATION_ID);
		goto out;
	}
	if (version != SNAP_SCHEMA_VERSION) {
		sl_error_set(err, SL_E_UNSUPPORTED,
			     "%s: schema version %lld, this build reads version %d only; refusing to open", path,
			     (long long)version, SNAP_SCHEMA_VERSION);
		goto out;
	}
	return snap_meta_commit(m, err);
fail:
	sl_error_wrap(err, "%s", path);
out:
	snap_meta_rollback(m);
	return -1;
}

int snap_meta_open(struct snap_meta *m, const char *path, sl_error_t *err)
{
	int rc;

	memset(m, 0, sizeof(*m));
	/* NOMUTEX: the store serialises every use of the connection with its
	 * own mutex; SQLite's would only be a second lock. */
	rc = sqlite3_open_v2(path, &m->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
	if (rc != SQLITE_OK) {
		db_error(m, err, rc, "open");
		snap_meta_close(m);
		return sl_error_wrap(err, "%s", path);
	}
	sqlite3_extended_result_codes(m->db, 1);
	if (set_pragmas(m, path, err) < 0 || check_schema(m, path, err) < 0) {
		snap_meta_close(m);
		return -1;
	}
	for (int i = 0; i < ST_COUNT; i++) {
		rc = sqlite3_prepare_v3(m->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &m->st[i], NULL);
		if (rc != SQLITE_OK) {
			db_error(m, err, rc, "prepare");
			snap_meta_close(m);
			return sl_error_wrap(err, "%s", path);
		}
	}
	return 0;
}

void snap_meta_close(struct snap_meta *m)
{
	for (int i = 0; i < ST_COUNT; i++) {
		sqlite3_finalize(m->st[i]);
		m->st[i] = NULL;
	}
	if (m->db)
		sqlite3_close(m->db);
	m->db = NULL;
}

/* The statements are prepared once snap_meta_open succeeded; the schema
 * check runs before that, so transactions fall back to sqlite3_exec. */
static int run_tx_stmt(struct snap_meta *m, enum snap_stmt_id id, sl_error_t *err)
{
	_cleanup_stmt_ sqlite3_stmt *st = m->st[id];

	if (!st)
		return exec(m, stmt_sql[id], err);
	return step_done(m, st, stmt_sql[id], err);
}

int snap_meta_begin(struct snap_meta *m, bool write, sl_error_t *err)
{
	if (run_tx_stmt(m, write ? ST_BEGIN_WRITE : ST_BEGIN_READ, err) < 0)
		return -1;
	m->in_tx = true;
	return 0;
}

int snap_meta_commit(struct snap_meta *m, sl_error_t *err)
{
	if (run_tx_stmt(m, ST_COMMIT, err) < 0)
		return -1;
	m->in_tx = false;
	return 0;
}

void snap_meta_rollback(struct snap_meta *m)
{
	sl_error_t ignored = NULL;

	/* A failed COMMIT may already have rolled back; autocommit says. */
	if (m->in_tx && !sqlite3_get_autocommit(m->db))
		run_tx_stmt(m, ST_ROLLBACK, &ignored);
	sl_error_free(&ignored);
	m->in_tx = false;
}

static char *dup_col(sqlite3_stmt *st, int col)
{
	const unsigned char *t = sqlite3_column_text(st, col);

	return t ? strdup((const char *)t) : NULL;
}

/* Fills row from a statement selecting ROW_COLS. */
static int read_row(sqlite3_stmt *st, struct snap_row *row, sl_error_t *err)
{
	memset(row, 0, sizeof(*row));
	row->id = sqlite3_column_int64(st, 0);
	row->kind = (enum snap_kind)sqlite3_column_int(st, 1);
	row->parent_id = sqlite3_column_int64(st, 2);
	row->created_ns = sqlite3_column_int64(st, 4);
	row->updated_ns = sqlite3_column_int64(st, 5);
	row->size = sqlite3_column_int64(st, 6);
	row->inodes = sqlite3_column_int64(st, 7);
	row->name = dup_col(st, 8);
	if (!row->name)
		return sl_error_set(err, SL_E_NOMEM, "metadata: out of memory");
	if (sqlite3_column_type(st, 3) != SQLITE_NULL) {
		row->parent = dup_col(st, 3);
		if (!row->parent) {
			snap_row_clear(row);
			return sl_error_set(err, SL_E_NOMEM, "metadata: out of memory");
		}
	}
	return 0;
}

int snap_meta_lookup(struct snap_meta *m, const char *name, struct snap_row *row, bool *found, sl_error_t *err)
{
	_cleanup_stmt_ sqlite3_stmt *st = m->st[ST_GET];
	int r;

	*found = false;
	if (bind_text(m, st, 1, name, err) < 0)
		return -1;
	r = step_row(m, st, "get", err);
	if (r <= 0)
		return r;
	if (read_row(st, row, err) < 0)
		return -1;
	*found = true;
	return 0;
}

int snap_meta_get(struct snap_meta *m, const char *name, struct snap_row *row, sl_error_t *err)
{
	bool found;

	if (snap_meta_lookup(m, name, row, &found, err) < 0)
		return -1;
	if (!found) {
		SNAP_SHOW(shown, name);
		return sl_error_set(err, SL_E_NOT_FOUND, "snapshot \"%s\": does not exist", shown);
	}
	return 0;
}

int snap_meta_id_exists(struct snap_meta *m, int64_t id, bool *exists, sl_error_t *err)
{
	_cleanup_stmt_ sqlite3_stmt *st = m->st[ST_ID_EXISTS];
	int r;

	if (bind_i64(m, st, 1, id, err) < 0)
		return -1;
	r = step_row(m, st, "id lookup", err);
	if (r < 0)
		return -1;
	*exists = r == 1;
	return 0;
}

int snap_meta_chain(struct snap_meta *m, int64_t id, int64_t **ids, size_t *n, sl_error_t *err)
{
	_cleanup_stmt_ sqlite3_stmt *st = m->st[ST_CHAIN];
	_cleanup_free_ int64_t *v = NULL;
	size_t len = 0, cap = 0;
	int r;

	if (bind_i64(m, st, 1, id, err) < 0)
		return -1;
	while ((r = step_row(m, st, "parent chain", err)) == 1) {
		if (len == cap) {
			size_t ncap = cap ? cap * 2 : 8;
			int64_t *nv = reallocarray(v, ncap, sizeof(*v));

			if (!nv)
				return sl_error_set(err, SL_E_NOMEM, "metadata: out of memory");
			v = nv;
			cap = ncap;
		}
		v[len++] = sqlite3_column_int64(st, 0);
	}
	if (r < 0)
		return -1;
	*ids = sl_steal_ptr(v);
	*n = len;
	return 0;
}

int snap_meta_has_children(struct snap_meta *m, int64_t id, bool *has, sl_error_t *err)
{
	_cleanup_stmt_ sqlite3_stmt *st = m->st[ST_HAS_CHILD];
	int r;

	if (bind_i64(m, st, 1, id, err) < 0)
		return -1;
	r = step_row(m, st, "children", err);
	if (r < 0)
		return -1;
	*has = r == 1;
	return 0;
}

int snap_meta_insert(struct snap_meta *m, const char *name, enum snap_kind kind, int64_t parent_id, int64_t now_ns,
		     int64_t *id, sl_error_t *err)
{
	_cleanup_stmt_ sqlite3_stmt *st = m->st[ST_INSERT];
	int rc;

	if (bind_text(m, st, 1, name, err) < 0 || bind_i64(m, st, 2, kind, err) < 0 ||
	    bind_i64(m, st, 4, now_ns, err) < 0)
		return -1;
	rc = parent_id ? sqlite3_bind_int64(st, 3, parent_id) : sqlite3_bind_null(st, 3);
	if (rc != SQLITE_OK)
		return db_error(m, err, rc, "bind");
	if (step_done(m, st, "insert", err) < 0)
		return -1;
	*id = sqlite3_last_insert_rowid(m->db);
	return 0;
}

int snap_meta_commit_row(struct snap_meta *m, int64_t id, const char *name, int64_t now_ns,
			 const struct snap_usage *u, sl_error_t *err)
{
	_cleanup_stmt_ sqlite3_stmt *st = m->st[ST_COMMIT_ROW];

	if (bind_i64(m, st, 1, id, err) < 0 || bind_text(m, st, 2, name, err) < 0 ||
	    bind_i64(m, st, 3, now_ns, err) < 0 || bind_i64(m, st, 4, u->size, err) < 0 ||
	    bind_i64(m, st, 5, u->inodes, err) < 0)
		return -1;
	return step_done(m, st, "commit", err);
}

int snap_meta_touch(struct snap_meta *m, int64_t id, int64_t now_ns, sl_error_t *err)
{
	_cleanup_stmt_ sqlite3_stmt *st = m->st[ST_TOUCH];

	if (bind_i64(m, st, 1, id, err) < 0 || bind_i64(m, st, 2, now_ns, err) < 0)
		return -1;
	return step_done(m, st, "update", err);
}

int snap_meta_delete(struct snap_meta *m, int64_t id, sl_error_t *err)
{
	_cleanup_stmt_ sqlite3_stmt *st = m->st[ST_DELETE];

	if (bind_i64(m, st, 1, id, err) < 0)
		return -1;
	return step_done(m, st, "delete", err);
}

int snap_meta_label_set(struct snap_meta *m, int64_t id, const char *key, const char *value, sl_error_t *err)
{
	bool del = !value || !*value;
	_cleanup_stmt_ sqlite3_stmt *st = m->st[del ? ST_LABEL_DEL : ST_LABEL_PUT];

	if (bind_i64(m, st, 1, id, err) < 0 || bind_text(m, st, 2, key, err) < 0)
		return -1;
	if (!del && bind_text(m, st, 3, value, err) < 0)
		return -1;
	return step_done(m, st, "label", err);
}

int snap_meta_labels_replace(struct snap_meta *m, int64_t id, const struct snap_label *labels, size_t n,
			     sl_error_t *err)
{
	{
		_cleanup_stmt_ sqlite3_stmt *st = m->st[ST_LABELS_CLEAR];

		if (bind_i64(m, st, 1, id, err) < 0 || step_done(m, st, "labels", err) < 0)
			return -1;
	}
	/* In order, so that of a repeated key the last one stays (a set
	 * with an empty value deletes the earlier one, as a map would). */
	for (size_t i = 0; i < n; i++)
		if (snap_meta_label_set(m, id, labels[i].key, labels[i].value, err) < 0)
			return -1;
	return 0;
}

int snap_meta_labels_get(struct snap_meta *m, int64_t id, struct snap_label **labels, size_t *n, sl_error_t *err)
{
	_cleanup_stmt_ sqlite3_stmt *st = m->st[ST_LABELS_GET];
	struct snap_label *v = NULL;
	size_t len = 0, cap = 0;
	int r;

	*labels = NULL;
	*n = 0;
	if (bind_i64(m, st, 1, id, err) < 0)
		return -1;
	while ((r = step_row(m, st, "labels", err)) == 1) {
		if (len == cap) {
			size_t ncap = cap ? cap * 2 : 8;
			struct snap_label *nv = reallocarray(v, ncap, sizeof(*v));

			if (!nv)
				goto nomem;
			v = nv;
			cap = ncap;
		}
		v[len].key = dup_col(st, 0);
		v[len].value = dup_col(st, 1);
		len++;
		if (!v[len - 1].key || !v[len - 1].value)
			goto nomem;
	}
	if (r < 0) {
		snap_labels_free(v, len);
		return -1;
	}
	*labels = v;
	*n = len;
	return 0;
nomem:
	snap_labels_free(v, len);
	return sl_error_set(err, SL_E_NOMEM, "metadata: out of memory");
}

int snap_meta_walk(struct snap_meta *m, int (*fn)(struct snap_row *row, void *user), void *user, sl_error_t *err)
{
	_cleanup_stmt_ sqlite3_stmt *st = m->st[ST_WALK];
	struct snap_row row;
	int r, stop;

	while ((r = step_row(m, st, "walk", err)) == 1) {
		if (read_row(st, &row, err) < 0)
			return -1;
		stop = fn(&row, user);
		snap_row_clear(&row);
		if (stop < 0)
			return -1;
		if (stop)
			return 0;
	}
	return r < 0 ? -1 : 0;
}

void snap_row_clear(struct snap_row *row)
{
	free(row->name);
	free(row->parent);
	memset(row, 0, sizeof(*row));
}

void snap_labels_free(struct snap_label *labels, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(labels[i].key);
		free(labels[i].value);
	}
	free(labels);
}
