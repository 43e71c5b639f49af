/* Unit tests for the snapshot store: containerd's snapshotter rules (its testsuite and metastore tests, ported), mounts, usage, persistence, and kill -9 at every step. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "sl/error.h"
#include "sl/file.h"
#include "snap_store.h"

/* From store_int.h: the crash hook of the test build of the library. */
extern void (*snap_store_test_hook)(const char *point);

#define ACTIVE SNAP_KIND_ACTIVE
#define VIEW SNAP_KIND_VIEW
#define COMMITTED SNAP_KIND_COMMITTED

/* One scratch directory per test: <dir>/root is the store's root. */
struct fx {
	char dir[64];
	char root[128];
	struct snap_store *s;
};

/* ---- helpers ---------------------------------------------------------- */

/* expr must pass &err as its error argument. */
#define OK(expr)                                                                                                       \
	do {                                                                                                           \
		sl_error_t err = NULL;                                                                                 \
		if ((expr) < 0)                                                                                        \
			fail_msg("%s:%d: %s: %s", __FILE__, __LINE__, #expr, sl_error_msg(err));                      \
		sl_error_free(&err);                                                                                   \
	} while (0)

/* expr fails with code, and its message contains needle (when not NULL). */
#define FAILS(want_, needle, expr)                                                                                      \
	do {                                                                                                           \
		sl_error_t err = NULL;                                                                                 \
		int r_ = (expr);                                                                                       \
		if (r_ != -1 || !err)                                                                                  \
			fail_msg("%s:%d: %s: succeeded, expected %s", __FILE__, __LINE__, #expr,                       \
				 sl_error_code_name(want_));                                                            \
		if (err->code != (want_))                                                                               \
			fail_msg("%s:%d: %s: got %s (%s), expected %s", __FILE__, __LINE__, #expr,                    \
				 sl_error_code_name(err->code), sl_error_msg(err), sl_error_code_name(want_));          \
		if ((needle) && !strstr(sl_error_msg(err), (needle) ? (needle) : ""))                                  \
			fail_msg("%s:%d: %s: message \"%s\" does not name \"%s\"", __FILE__, __LINE__, #expr,          \
				 sl_error_msg(err), (needle) ? (needle) : "");                                         \
		sl_error_free(&err);                                                                                   \
	} while (0)

#define LBL(...) ((struct snap_label[]){ __VA_ARGS__ })
#define NLBL(...) (sizeof((struct snap_label[]){ __VA_ARGS__ }) / sizeof(struct snap_label))
#define LABELS(...) LBL(__VA_ARGS__), NLBL(__VA_ARGS__)

static int64_t realtime_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void prepare(struct snap_store *s, const char *key, const char *parent)
{
	OK(snap_store_create(s, ACTIVE, key, parent, NULL, 0, NULL, NULL, &err));
}

static void view(struct snap_store *s, const char *key, const char *parent)
{
	OK(snap_store_create(s, VIEW, key, parent, NULL, 0, NULL, NULL, &err));
}

static void commit(struct snap_store *s, const char *name, const char *key)
{
	OK(snap_store_commit(s, name, key, NULL, 0, &err));
}

/* A committed snapshot name on parent, made the way containerd makes one. */
static void layer(struct snap_store *s, const char *name, const char *parent)
{
	char key[256];

	snprintf(key, sizeof(key), "extract-%s", name);
	prepare(s, key, parent);
	commit(s, name, key);
}

/* noinline: inlined at -O3, gcc 12 takes the returned string for a pointer
 * to the local p (a false -Wdangling-pointer). */
static __attribute__((noinline)) char *fs_path(struct snap_store *s, const char *key)
{
	char *p = NULL;

	OK(snap_store_fs_path(s, key, &p, &err));
	return p;
}

/* root/snapshots/<id> of key: fs_path without "/fs". */
static char *snap_dir(struct snap_store *s, const char *key)
{
	char *p = fs_path(s, key);
	size_t n = strlen(p);

	assert_true(n > 3 && strcmp(p + n - 3, "/fs") == 0);
	p[n - 3] = '\0';
	return p;
}

static void write_file(const char *dir, const char *name, const char *content)
{
	char path[PATH_MAX];
	FILE *fp;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fp = fopen(path, "w");
	assert_non_null(fp);
	fputs(content, fp);
	assert_int_equal(fclose(fp), 0);
}

static void write_in(struct snap_store *s, const char *key, const char *name, const char *content)
{
	char *p = fs_path(s, key);

	write_file(p, name, content);
	free(p);
}

static bool path_exists(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static bool path_exists(const char *fmt, ...)
{
	char path[PATH_MAX];
	struct stat st;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(path, sizeof(path), fmt, ap);
	va_end(ap);
	return lstat(path, &st) == 0;
}

static const char *label(const struct snap_info *i, const char *key)
{
	for (size_t k = 0; k < i->nlabels; k++)
		if (strcmp(i->labels[k].key, key) == 0)
			return i->labels[k].value;
	return NULL;
}

/* info's labels are exactly the n pairs given (key, value, key, value...). */
static void expect_labels(const struct snap_info *i, size_t n, ...)
{
	va_list ap;

	if (i->nlabels != n) {
		for (size_t k = 0; k < i->nlabels; k++)
			print_message("  have %s=%s\n", i->labels[k].key, i->labels[k].value);
		fail_msg("%s: %zu labels, expected %zu", i->name, i->nlabels, n);
	}
	va_start(ap, n);
	for (size_t k = 0; k < n; k++) {
		const char *key = va_arg(ap, const char *);
		const char *value = va_arg(ap, const char *);
		const char *got = label(i, key);

		if (!got || strcmp(got, value) != 0)
			fail_msg("%s: label %s is %s, expected %s", i->name, key, got ? got : "(absent)", value);
	}
	va_end(ap);
}

static void expect_stat(struct snap_store *s, const char *key, enum snap_kind kind, const char *parent)
{
	struct snap_info i;

	OK(snap_store_stat(s, key, &i, &err));
	assert_string_equal(i.name, key);
	assert_int_equal(i.kind, kind);
	if (parent)
		assert_string_equal(i.parent ? i.parent : "(none)", parent);
	else
		assert_null(i.parent);
	snap_info_clear(&i);
}

/* Entries of root/snapshots, sorted, joined by ' '. */
static char *dir_listing(const char *root)
{
	char path[PATH_MAX], *out = NULL, **names = NULL;
	size_t n = 0, len = 0;
	struct dirent *de;
	FILE *m;
	DIR *d;

	snprintf(path, sizeof(path), "%s/snapshots", root);
	d = opendir(path);
	assert_non_null(d);
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		names = realloc(names, (n + 1) * sizeof(*names));
		names[n++] = strdup(de->d_name);
	}
	closedir(d);
	for (size_t i = 0; i < n; i++)
		for (size_t j = i + 1; j < n; j++)
			if (strcmp(names[i], names[j]) > 0) {
				char *t = names[i];
				names[i] = names[j];
				names[j] = t;
			}
	m = open_memstream(&out, &len);
	for (size_t i = 0; i < n; i++) {
		fprintf(m, "%s%s", i ? " " : "", names[i]);
		free(names[i]);
	}
	fclose(m);
	free(names);
	return out;
}

static size_t dir_count(const char *root)
{
	char *l = dir_listing(root);
	size_t n = 0;

	if (*l) {
		n = 1;
		for (char *p = l; *p; p++)
			n += *p == ' ';
	}
	free(l);
	return n;
}

/* ---- collected walks -------------------------------------------------- */

struct infos {
	struct snap_info *v;
	size_t n;
	int stop_after; /* 0: never */
};

static int collect_fn(const struct snap_info *i, void *user)
{
	struct infos *c = user;
	struct snap_info *d;

	c->v = realloc(c->v, (c->n + 1) * sizeof(*c->v));
	d = &c->v[c->n++];
	*d = *i;
	d->name = strdup(i->name);
	d->parent = i->parent ? strdup(i->parent) : NULL;
	d->labels = calloc(i->nlabels + 1, sizeof(*d->labels));
	for (size_t k = 0; k < i->nlabels; k++) {
		d->labels[k].key = strdup(i->labels[k].key);
		d->labels[k].value = strdup(i->labels[k].value);
	}
	return c->stop_after && (int)c->n >= c->stop_after;
}

static void infos_free(struct infos *c)
{
	for (size_t i = 0; i < c->n; i++)
		snap_info_clear(&c->v[i]);
	free(c->v);
	memset(c, 0, sizeof(*c));
}

/* What a state is, times aside: every snapshot's name, kind, parent and
 * labels in walk order, and a committed one's usage. */
static char *signature(struct snap_store *s)
{
	struct infos c = { 0 };
	char *out = NULL;
	size_t len = 0;
	FILE *m;

	OK(snap_store_walk(s, collect_fn, &c, &err));
	m = open_memstream(&out, &len);
	for (size_t i = 0; i < c.n; i++) {
		struct snap_info *in = &c.v[i];

		fprintf(m, "%s|%d|%s|", in->name, in->kind, in->parent ? in->parent : "");
		for (size_t k = 0; k < in->nlabels; k++)
			fprintf(m, "%s=%s;", in->labels[k].key, in->labels[k].value);
		if (in->kind == COMMITTED) {
			struct snap_usage u;

			OK(snap_store_usage(s, in->name, &u, &err));
			fprintf(m, "|%lld/%lld", (long long)u.size, (long long)u.inodes);
		}
		fputc('\n', m);
	}
	fclose(m);
	infos_free(&c);
	return out;
}

/* What must hold after any crash and reopen: every row's directory is there
 * with fs (and work for active ones), every directory under snapshots/ is a
 * row's, every parent exists and is committed. Returns the number of
 * snapshots. */
static size_t check_invariants(struct snap_store *s, const char *root)
{
	struct infos c = { 0 };
	char **ids;
	size_t n;
	char *listing;

	OK(snap_store_walk(s, collect_fn, &c, &err));
	ids = calloc(c.n + 1, sizeof(*ids));
	for (size_t i = 0; i < c.n; i++) {
		struct snap_info *in = &c.v[i];
		char *dir = snap_dir(s, in->name);
		char prefix[PATH_MAX];

		ids[i] = strdup(strrchr(dir, '/') + 1);

		snprintf(prefix, sizeof(prefix), "%s/snapshots/", root);
		if (strncmp(dir, prefix, strlen(prefix)) != 0)
			fail_msg("%s: directory %s not under %s", in->name, dir, prefix);
		if (!path_exists("%s/fs", dir))
			fail_msg("%s: %s/fs missing", in->name, dir);
		if (in->kind == ACTIVE && !path_exists("%s/work", dir))
			fail_msg("%s: %s/work missing", in->name, dir);
		if (in->parent) {
			struct snap_info pi;

			OK(snap_store_stat(s, in->parent, &pi, &err));
			if (pi.kind != COMMITTED)
				fail_msg("%s: parent %s is not committed", in->name, in->parent);
			snap_info_clear(&pi);
		}
		free(dir);
	}
	/* The directories, exactly: sorted ids joined as dir_listing does. */
	for (size_t i = 0; i < c.n; i++)
		for (size_t j = i + 1; j < c.n; j++)
			if (strcmp(ids[i], ids[j]) > 0) {
				char *t = ids[i];
				ids[i] = ids[j];
				ids[j] = t;
			}
	{
		char *want = NULL;
		size_t len = 0;
		FILE *m = open_memstream(&want, &len);

		for (size_t i = 0; i < c.n; i++)
			fprintf(m, "%s%s", i ? " " : "", ids[i]);
		fclose(m);
		listing = dir_listing(root);
		if (strcmp(listing, want) != 0)
			fail_msg("snapshots/ holds [%s], rows own [%s]", listing, want);
		free(want);
		free(listing);
	}
	for (size_t i = 0; i < c.n; i++)
		free(ids[i]);
	free(ids);
	n = c.n;
	infos_free(&c);
	return n;
}

/* ---- fixture ---------------------------------------------------------- */

static int fx_setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	sl_error_t err = NULL;

	if (!f)
		return -1;
	snprintf(f->dir, sizeof(f->dir), "/tmp/snap-store-unit-XXXXXX");
	if (!mkdtemp(f->dir)) {
		free(f);
		return -1;
	}
	snprintf(f->root, sizeof(f->root), "%s/root", f->dir);
	if (snap_store_open(&f->s, f->root, &err) < 0) {
		fprintf(stderr, "snap_store_open: %s\n", sl_error_msg(err));
		sl_error_free(&err);
		sl_remove_path(f->dir, NULL);
		free(f);
		return -1;
	}
	*state = f;
	return 0;
}

static int fx_teardown(void **state)
{
	struct fx *f = *state;
	sl_error_t err = NULL;
	int r;

	snap_store_close(f->s);
	r = sl_remove_path(f->dir, &err);
	if (r < 0) {
		fprintf(stderr, "remove %s: %s\n", f->dir, sl_error_msg(err));
		sl_error_free(&err);
	}
	free(f);
	return r;
}

static void reopen(struct fx *f)
{
	snap_store_close(f->s);
	f->s = NULL;
	OK(snap_store_open(&f->s, f->root, &err));
}

/* ---- open, lock, schema ----------------------------------------------- */

static int64_t db_int(const char *root, const char *sql)
{
	char path[PATH_MAX];
	sqlite3 *db;
	sqlite3_stmt *st;
	int64_t v;

	snprintf(path, sizeof(path), "%s/metadata.db", root);
	assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	sqlite3_close(db);
	return v;
}

static void db_exec(const char *root, const char *sql)
{
	char path[PATH_MAX];
	sqlite3 *db;

	snprintf(path, sizeof(path), "%s/metadata.db", root);
	assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
}

static void test_open_layout(void **state)
{
	struct fx *f = *state;
	struct stat st;

	assert_true(path_exists("%s/metadata.db", f->root));
	assert_true(path_exists("%s/lock", f->root));
	assert_int_equal(stat(f->root, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0700);
	assert_true(path_exists("%s/snapshots", f->root));
	assert_int_equal(db_int(f->root, "PRAGMA user_version"), 1);
	assert_int_equal(db_int(f->root, "PRAGMA application_id"), 0x53505354);
	{
		char path[PATH_MAX];
		sqlite3 *db;
		sqlite3_stmt *st2;

		snprintf(path, sizeof(path), "%s/metadata.db", f->root);
		assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
		assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st2, NULL), SQLITE_OK);
		assert_int_equal(sqlite3_step(st2), SQLITE_ROW);
		assert_string_equal((const char *)sqlite3_column_text(st2, 0), "wal");
		sqlite3_finalize(st2);
		sqlite3_close(db);
	}
	assert_int_equal(dir_count(f->root), 0);
}

static void test_open_nested_root(void **state)
{
	struct fx *f = *state;
	struct snap_store *s2 = NULL;
	char root[PATH_MAX];

	/* Parents are made, like containerd's MkdirAll. */
	snprintf(root, sizeof(root), "%s/a/b/c", f->dir);
	OK(snap_store_open(&s2, root, &err));
	prepare(s2, "k", NULL);
	snap_store_close(s2);
	FAILS(SL_E_INVALID, NULL, snap_store_open(&s2, "", &err));
	assert_null(s2);

	/* A relative root still gives absolute mount paths. */
	{
		char cwd[PATH_MAX];
		struct snap_mount *m;
		size_t n;

		assert_non_null(getcwd(cwd, sizeof(cwd)));
		assert_int_equal(chdir(f->dir), 0);
		OK(snap_store_open(&s2, "rel/root", &err));
		assert_int_equal(chdir(cwd), 0);
		OK(snap_store_create(s2, ACTIVE, "k", NULL, NULL, 0, &m, &n, &err));
		snprintf(root, sizeof(root), "%s/rel/root/snapshots/", f->dir);
		assert_int_equal(strncmp(m[0].source, root, strlen(root)), 0);
		snap_mounts_free(m, n);
		snap_store_close(s2);
	}
}

static void test_second_open_locked(void **state)
{
	struct fx *f = *state;
	struct snap_store *s2 = NULL;

	FAILS(SL_E_EXISTS, "lock", snap_store_open(&s2, f->root, &err));
	assert_null(s2);
	/* Released on close. */
	snap_store_close(f->s);
	f->s = NULL;
	OK(snap_store_open(&s2, f->root, &err));
	FAILS(SL_E_EXISTS, NULL, snap_store_open(&f->s, f->root, &err));
	f->s = s2;
}

static void test_unknown_schema_version(void **state)
{
	struct fx *f = *state;
	char path[PATH_MAX];

	layer(f->s, "c1", NULL);
	snap_store_close(f->s);
	f->s = NULL;
	db_exec(f->root, "PRAGMA user_version = 99");
	FAILS(SL_E_UNSUPPORTED, "schema version 99", snap_store_open(&f->s, f->root, &err));
	assert_null(f->s);
	/* Fail closed: nothing was rewritten. */
	assert_int_equal(db_int(f->root, "PRAGMA user_version"), 99);
	assert_int_equal(db_int(f->root, "SELECT count(*) FROM snapshots"), 1);
	assert_int_equal(dir_count(f->root), 1);
	db_exec(f->root, "PRAGMA user_version = 1");
	OK(snap_store_open(&f->s, f->root, &err));
	expect_stat(f->s, "c1", COMMITTED, NULL);
	snap_store_close(f->s);
	f->s = NULL;

	/* Another program's SQLite file. */
	db_exec(f->root, "PRAGMA application_id = 7");
	FAILS(SL_E_UNSUPPORTED, "not a snapshot store", snap_store_open(&f->s, f->root, &err));
	db_exec(f->root, "PRAGMA application_id = 1397773140");
	/* A database with tables but no version: not ours either. */
	snprintf(path, sizeof(path), "%s/metadata.db", f->root);
	assert_int_equal(unlink(path), 0);
	unlink(strcat(strcpy((char[PATH_MAX]){ 0 }, path), "-wal"));
	unlink(strcat(strcpy((char[PATH_MAX]){ 0 }, path), "-shm"));
	db_exec(f->root, "CREATE TABLE t (x)");
	FAILS(SL_E_UNSUPPORTED, NULL, snap_store_open(&f->s, f->root, &err));
	/* Not a database at all. */
	assert_int_equal(unlink(path), 0);
	write_file(f->root, "metadata.db", "this is not an SQLite database, not even close to one......\n");
	FAILS(SL_E_IO, "metadata.db", snap_store_open(&f->s, f->root, &err));
	assert_null(f->s);
	/* And a fresh one again for the teardown. */
	assert_int_equal(unlink(path), 0);
	OK(snap_store_open(&f->s, f->root, &err));
}

/* ---- containerd's testsuite ------------------------------------------- */

/* checkSnapshotterBasic, without the mounts (test_mounts_real mounts). */
static void test_basic(void **state)
{
	struct fx *f = *state;
	struct infos c = { 0 };

	prepare(f->s, "preparing", NULL);
	write_in(f->s, "preparing", "foo", "foo\n");
	commit(f->s, "committed", "preparing");
	expect_stat(f->s, "committed", COMMITTED, NULL);
	FAILS(SL_E_NOT_FOUND, "preparing", snap_store_stat(f->s, "preparing", &(struct snap_info){ 0 }, &err));

	prepare(f->s, "nextlayer", "committed");
	expect_stat(f->s, "nextlayer", ACTIVE, "committed");
	commit(f->s, "committed-next", "nextlayer");
	expect_stat(f->s, "committed-next", COMMITTED, "committed");
	FAILS(SL_E_NOT_FOUND, NULL, snap_store_stat(f->s, "nextlayer", &(struct snap_info){ 0 }, &err));

	OK(snap_store_walk(f->s, collect_fn, &c, &err));
	assert_int_equal(c.n, 2);
	assert_string_equal(c.v[0].name, "committed");
	assert_string_equal(c.v[1].name, "committed-next");
	infos_free(&c);

	view(f->s, "nextnextlayer", "committed-next");
	OK(snap_store_remove(f->s, "nextnextlayer", &err));
	FAILS(SL_E_PRECONDITION, "committed", snap_store_remove(f->s, "committed", &err));
	OK(snap_store_remove(f->s, "committed-next", &err));
	OK(snap_store_remove(f->s, "committed", &err));
	assert_int_equal(check_invariants(f->s, f->root), 0);
}

/* checkSnapshotterStatActive, checkSnapshotterStatCommitted, checkSnapshotterTransitivity */
static void test_stat_and_transitivity(void **state)
{
	struct fx *f = *state;
	struct snap_info b, pb;

	prepare(f->s, "preparing", NULL);
	write_in(f->s, "preparing", "foo", "foo\n");
	expect_stat(f->s, "preparing", ACTIVE, NULL);
	commit(f->s, "snapA", "preparing");
	expect_stat(f->s, "snapA", COMMITTED, NULL);
	prepare(f->s, "next", "snapA");
	commit(f->s, "snapB", "next");
	OK(snap_store_stat(f->s, "snapB", &b, &err));
	assert_string_equal(b.parent, "snapA");
	OK(snap_store_stat(f->s, b.parent, &pb, &err));
	assert_null(pb.parent);
	snap_info_clear(&b);
	snap_info_clear(&pb);
}

/* checkSnapshotterPrepareView and metastore testCreateActiveExist: one
 * namespace for keys and names, whatever the kind. */
static void test_key_taken(void **state)
{
	struct fx *f = *state;
	size_t before;

	layer(f->s, "snapA", NULL);
	prepare(f->s, "newlayer", "snapA");
	view(f->s, "viewlayer", "snapA");
	before = dir_count(f->root);
	FAILS(SL_E_EXISTS, "newlayer", snap_store_create(f->s, VIEW, "newlayer", "snapA", NULL, 0, NULL, NULL, &err));
	FAILS(SL_E_EXISTS, "newlayer", snap_store_create(f->s, ACTIVE, "newlayer", "snapA", NULL, 0, NULL, NULL, &err));
	FAILS(SL_E_EXISTS, "viewlayer", snap_store_create(f->s, VIEW, "viewlayer", "snapA", NULL, 0, NULL, NULL, &err));
	FAILS(SL_E_EXISTS, "viewlayer", snap_store_create(f->s, ACTIVE, "viewlayer", NULL, NULL, 0, NULL, NULL, &err));
	FAILS(SL_E_EXISTS, "snapA", snap_store_create(f->s, ACTIVE, "snapA", NULL, NULL, 0, NULL, NULL, &err));
	FAILS(SL_E_EXISTS, "snapA", snap_store_create(f->s, VIEW, "snapA", "snapA", NULL, 0, NULL, NULL, &err));
	FAILS(SL_E_EXISTS, "snapA", snap_store_add_committed(f->s, "snapA", NULL, NULL, 0, &err));
	FAILS(SL_E_EXISTS, "newlayer", snap_store_add_committed(f->s, "newlayer", NULL, NULL, 0, &err));
	/* Failed creates leave no directory behind. */
	assert_int_equal(dir_count(f->root), before);
	expect_stat(f->s, "newlayer", ACTIVE, "snapA");
	expect_stat(f->s, "viewlayer", VIEW, "snapA");
	check_invariants(f->s, f->root);
}

/* metastore testCreateActiveNotExist, testCreateActiveFromActive; kinds. */
static void test_create_errors(void **state)
{
	struct fx *f = *state;
	struct snap_mount *m = (struct snap_mount *)1;
	size_t nm = 99;

	layer(f->s, "c1", NULL);
	prepare(f->s, "active-1", NULL);
	view(f->s, "view-1", "c1");
	FAILS(SL_E_NOT_FOUND, "does-not-exist",
	      snap_store_create(f->s, ACTIVE, "active-2", "does-not-exist", NULL, 0, &m, &nm, &err));
	assert_null(m);
	assert_int_equal(nm, 0);
	FAILS(SL_E_NOT_FOUND, "does-not-exist",
	      snap_store_create(f->s, VIEW, "view-2", "does-not-exist", NULL, 0, NULL, NULL, &err));
	/* containerd checks the parent before the key. */
	FAILS(SL_E_NOT_FOUND, NULL, snap_store_create(f->s, ACTIVE, "active-1", "nope", NULL, 0, NULL, NULL, &err));
	FAILS(SL_E_INVALID, "active-1", snap_store_create(f->s, ACTIVE, "active-1", "active-1", NULL, 0, NULL, NULL, &err));
	FAILS(SL_E_INVALID, "not a committed", snap_store_create(f->s, ACTIVE, "x", "active-1", NULL, 0, NULL, NULL, &err));
	FAILS(SL_E_INVALID, "view-1", snap_store_create(f->s, VIEW, "x", "view-1", NULL, 0, NULL, NULL, &err));
	FAILS(SL_E_INVALID, "kind", snap_store_create(f->s, COMMITTED, "x", NULL, NULL, 0, NULL, NULL, &err));
	FAILS(SL_E_INVALID, "kind", snap_store_create(f->s, SNAP_KIND_UNKNOWN, "x", NULL, NULL, 0, NULL, NULL, &err));
	FAILS(SL_E_INVALID, "kind", snap_store_create(f->s, (enum snap_kind)7, "x", NULL, NULL, 0, NULL, NULL, &err));
	FAILS(SL_E_INVALID, "empty", snap_store_create(f->s, ACTIVE, "", NULL, NULL, 0, NULL, NULL, &err));
	FAILS(SL_E_INVALID, "empty", snap_store_create(f->s, VIEW, NULL, NULL, NULL, 0, NULL, NULL, &err));
	FAILS(SL_E_NOT_FOUND, "x", snap_store_stat(f->s, "x", &(struct snap_info){ 0 }, &err));
	/* An empty parent means none. */
	OK(snap_store_create(f->s, ACTIVE, "no-parent", "", NULL, 0, &m, &nm, &err));
	assert_int_equal(nm, 1);
	assert_string_equal(m[0].type, "bind");
	snap_mounts_free(m, nm);
	expect_stat(f->s, "no-parent", ACTIVE, NULL);
	check_invariants(f->s, f->root);
}

/* metastore testCommit, testCommitExist, testCommitCommitted, testCommitViewFails */
static void test_commit_errors(void **state)
{
	struct fx *f = *state;
	char *before, *after;

	layer(f->s, "committed-1", NULL);
	prepare(f->s, "active-1", NULL);
	prepare(f->s, "active-2", "committed-1");
	view(f->s, "view-1", "committed-1");
	before = signature(f->s);

	FAILS(SL_E_NOT_FOUND, "missing", snap_store_commit(f->s, "new", "missing", NULL, 0, &err));
	/* Key missing comes first, even when the name is taken too. */
	FAILS(SL_E_NOT_FOUND, "missing", snap_store_commit(f->s, "committed-1", "missing", NULL, 0, &err));
	FAILS(SL_E_EXISTS, "committed-1", snap_store_commit(f->s, "committed-1", "active-1", NULL, 0, &err));
	FAILS(SL_E_EXISTS, "active-2", snap_store_commit(f->s, "active-2", "active-1", NULL, 0, &err));
	FAILS(SL_E_EXISTS, "view-1", snap_store_commit(f->s, "view-1", "active-1", NULL, 0, &err));
	FAILS(SL_E_EXISTS, "active-1", snap_store_commit(f->s, "active-1", "active-1", NULL, 0, &err));
	/* Name taken comes before the kind check (a view's commit to a taken
	 * name is ALREADY_EXISTS in containerd, not FAILED_PRECONDITION). */
	FAILS(SL_E_EXISTS, "committed-1", snap_store_commit(f->s, "committed-1", "view-1", NULL, 0, &err));
	FAILS(SL_E_PRECONDITION, "committed-1", snap_store_commit(f->s, "committed-3", "committed-1", NULL, 0, &err));
	FAILS(SL_E_PRECONDITION, "view-1", snap_store_commit(f->s, "committed-3", "view-1", NULL, 0, &err));
	FAILS(SL_E_INVALID, "empty", snap_store_commit(f->s, "", "active-1", NULL, 0, &err));
	FAILS(SL_E_INVALID, "empty", snap_store_commit(f->s, NULL, "active-1", NULL, 0, &err));
	after = signature(f->s);
	assert_string_equal(before, after);
	free(before);
	free(after);

	/* The id (so the directory and its contents) survives commit; the key
	 * is gone, the name is committed. */
	write_in(f->s, "active-1", "file", "content");
	{
		char *d1 = fs_path(f->s, "active-1"), *d2;

		commit(f->s, "committed-2", "active-1");
		d2 = fs_path(f->s, "committed-2");
		assert_string_equal(d1, d2);
		assert_true(path_exists("%s/file", d2));
		free(d1);
		free(d2);
	}
	FAILS(SL_E_NOT_FOUND, "active-1", snap_store_stat(f->s, "active-1", &(struct snap_info){ 0 }, &err));
	FAILS(SL_E_NOT_FOUND, "active-1", snap_store_mounts(f->s, "active-1", &(struct snap_mount *){ 0 },
							       &(size_t){ 0 }, &err));
	FAILS(SL_E_PRECONDITION, "committed-2",
	      snap_store_mounts(f->s, "committed-2", &(struct snap_mount *){ 0 }, &(size_t){ 0 }, &err));
	check_invariants(f->s, f->root);
}

/* checkRemove, checkRemoveIntermediateSnapshot, metastore testRemove,
 * testRemoveWithChildren, testRemoveNotExist */
static void test_remove(void **state)
{
	struct fx *f = *state;

	prepare(f->s, "committed-a", NULL);
	commit(f->s, "committed-1", "committed-a");
	prepare(f->s, "reuse-1", "committed-1");
	OK(snap_store_remove(f->s, "reuse-1", &err));
	view(f->s, "reuse-1", "committed-1");
	OK(snap_store_remove(f->s, "reuse-1", &err));
	prepare(f->s, "reuse-1", NULL);
	OK(snap_store_remove(f->s, "committed-1", &err));
	commit(f->s, "committed-1", "reuse-1");

	FAILS(SL_E_NOT_FOUND, "does-not-exist", snap_store_remove(f->s, "does-not-exist", &err));
	FAILS(SL_E_NOT_FOUND, NULL, snap_store_remove(f->s, "", &err));
	FAILS(SL_E_NOT_FOUND, "committed-a", snap_store_remove(f->s, "committed-a", &err));

	/* base <- inter <- top: the middle cannot go while top is there. */
	layer(f->s, "base", NULL);
	layer(f->s, "inter", "base");
	prepare(f->s, "top", "inter");
	view(f->s, "topview", "base");
	FAILS(SL_E_PRECONDITION, "inter", snap_store_remove(f->s, "inter", &err));
	FAILS(SL_E_PRECONDITION, "inter", snap_store_remove(f->s, "inter", &err));
	FAILS(SL_E_PRECONDITION, "base", snap_store_remove(f->s, "base", &err));
	expect_stat(f->s, "inter", COMMITTED, "base");
	OK(snap_store_remove(f->s, "top", &err));
	OK(snap_store_remove(f->s, "inter", &err));
	FAILS(SL_E_PRECONDITION, "base", snap_store_remove(f->s, "base", &err));
	OK(snap_store_remove(f->s, "topview", &err));
	OK(snap_store_remove(f->s, "base", &err));
	/* Directories go with their rows: no rm-* left behind. */
	assert_int_equal(check_invariants(f->s, f->root), 1);
	assert_int_equal(dir_count(f->root), 1);
}

/* baseTestSnapshots + checkUpdate */
static void test_update(void **state)
{
	struct fx *f = *state;
	static const struct {
		const char *name;
		enum snap_kind kind;
		const char *parent;
	} cases[] = {
		{ "c1", COMMITTED, NULL }, { "c2", COMMITTED, "c1" }, { "a1", ACTIVE, "c2" },
		{ "a2", ACTIVE, NULL },	   { "v1", VIEW, "c2" },      { "v2", VIEW, NULL },
	};
	struct snap_label root_label = { "containerd.io/gc.root", "2024-01-01T00:00:00Z" };
	int64_t t1 = realtime_ns(), t2;

	OK(snap_store_create(f->s, ACTIVE, "c1-a", NULL, &root_label, 1, NULL, NULL, &err));
	OK(snap_store_commit(f->s, "c1", "c1-a", &root_label, 1, &err));
	OK(snap_store_create(f->s, ACTIVE, "c2-a", "c1", &root_label, 1, NULL, NULL, &err));
	OK(snap_store_commit(f->s, "c2", "c2-a", &root_label, 1, &err));
	OK(snap_store_create(f->s, ACTIVE, "a1", "c2", &root_label, 1, NULL, NULL, &err));
	OK(snap_store_create(f->s, ACTIVE, "a2", NULL, &root_label, 1, NULL, NULL, &err));
	OK(snap_store_create(f->s, VIEW, "v1", "c2", &root_label, 1, NULL, NULL, &err));
	OK(snap_store_create(f->s, VIEW, "v2", NULL, &root_label, 1, NULL, NULL, &err));
	t2 = realtime_ns();

	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		struct snap_info st, up;
		int64_t created, u1, u2;

		OK(snap_store_stat(f->s, cases[c].name, &st, &err));
		assert_true(st.created_ns >= t1 && st.created_ns <= t2);
		assert_int_equal(st.created_ns, st.updated_ns);
		assert_int_equal(st.kind, cases[c].kind);
		if (cases[c].parent)
			assert_string_equal(st.parent, cases[c].parent);
		else
			assert_null(st.parent);
		created = st.created_ns;

		/* No paths: all labels replaced; parent, kind and times in
		 * info are ignored. */
		struct snap_info in = {
			.name = (char *)cases[c].name,
			.parent = "doesnotexist",
			.kind = VIEW,
			.created_ns = 1,
			.labels = LBL({ "l1", "v1" }, { "l2", "v2" }, { "l3", "v3" },
				      { "containerd.io/gc.root", "2024-01-01T00:00:00Z" }),
			.nlabels = 4,
		};
		u1 = realtime_ns();
		OK(snap_store_update(f->s, &in, NULL, 0, &up, &err));
		u2 = realtime_ns();
		assert_int_equal(up.created_ns, created);
		assert_true(up.updated_ns >= u1 && up.updated_ns <= u2);
		assert_int_equal(up.kind, cases[c].kind);
		assert_string_equal(up.name, cases[c].name);
		if (cases[c].parent)
			assert_string_equal(up.parent, cases[c].parent);
		else
			assert_null(up.parent);
		expect_labels(&up, 4, "l1", "v1", "l2", "v2", "l3", "v3", "containerd.io/gc.root",
			      "2024-01-01T00:00:00Z");
		snap_info_clear(&up);

		/* labels.l1 set, labels.l2 absent from info: deleted; l4 in
		 * info but not in the mask: ignored. */
		in.labels = LBL({ "l1", "updated" }, { "l4", "v4" });
		in.nlabels = 2;
		OK(snap_store_update(f->s, &in, (const char *const[]){ "labels.l1", "labels.l2" }, 2, &up, &err));
		expect_labels(&up, 3, "l1", "updated", "l3", "v3", "containerd.io/gc.root", "2024-01-01T00:00:00Z");
		snap_info_clear(&up);

		in.labels = LBL({ "l4", "v4" }, { "containerd.io/gc.root", "2024-01-01T00:00:00Z" });
		in.nlabels = 2;
		OK(snap_store_update(f->s, &in, (const char *const[]){ "labels" }, 1, NULL, &err));
		OK(snap_store_stat(f->s, cases[c].name, &up, &err));
		expect_labels(&up, 2, "l4", "v4", "containerd.io/gc.root", "2024-01-01T00:00:00Z");
		assert_int_equal(up.created_ns, created);
		snap_info_clear(&up);

		/* Immutable and unknown fields: invalid, and nothing changes
		 * (not even the labels a valid path in the same call set). */
		FAILS(SL_E_INVALID, "parent",
		      snap_store_update(f->s, &in, (const char *const[]){ "parent" }, 1, NULL, &err));
		in.labels = LBL({ "l5", "v5" });
		in.nlabels = 1;
		FAILS(SL_E_INVALID, "name",
		      snap_store_update(f->s, &in, (const char *const[]){ "labels.l5", "name" }, 2, NULL, &err));
		FAILS(SL_E_INVALID, "kind", snap_store_update(f->s, &in, (const char *const[]){ "kind" }, 1, NULL, &err));
		FAILS(SL_E_INVALID, "labelsx",
		      snap_store_update(f->s, &in, (const char *const[]){ "labelsx" }, 1, NULL, &err));
		OK(snap_store_stat(f->s, cases[c].name, &up, &err));
		expect_labels(&up, 2, "l4", "v4", "containerd.io/gc.root", "2024-01-01T00:00:00Z");
		snap_info_clear(&up);
		snap_info_clear(&st);
	}
	FAILS(SL_E_NOT_FOUND, "nope", snap_store_update(f->s, &(struct snap_info){ .name = "nope" }, NULL, 0, NULL, &err));
	FAILS(SL_E_INVALID, "empty", snap_store_update(f->s, &(struct snap_info){ .name = "" }, NULL, 0, NULL, &err));
	FAILS(SL_E_INVALID, NULL, snap_store_update(f->s, NULL, NULL, 0, NULL, &err));
}

static char *repeat(char c, size_t n)
{
	char *s = malloc(n + 1);

	memset(s, c, n);
	s[n] = '\0';
	return s;
}

static void test_labels(void **state)
{
	struct fx *f = *state;
	struct snap_info i;
	char *k10 = repeat('k', 10), *v4086 = repeat('v', 4086), *v4087 = repeat('v', 4087);
	struct snap_label at_max = { k10, v4086 }, over = { k10, v4087 };

	/* Round trip, in key order; an empty value is not stored (as
	 * containerd's WriteLabels drops it); of a repeated key the last wins. */
	OK(snap_store_create(f->s, ACTIVE, "a", NULL,
			     LABELS({ "zeta", "1" }, { "alpha", "2" }, { "empty", "" }, { "dup", "first" },
				    { "dup", "second" }, { "containerd.io/snapshot.ref", "sha256:abc" },
				    { "unicode", "gr\xc3\xbc\xc3\x9f" }),
			     NULL, NULL, &err));
	OK(snap_store_stat(f->s, "a", &i, &err));
	expect_labels(&i, 5, "zeta", "1", "alpha", "2", "dup", "second", "containerd.io/snapshot.ref", "sha256:abc",
		      "unicode", "gr\xc3\xbc\xc3\x9f");
	for (size_t k = 1; k < i.nlabels; k++)
		assert_true(strcmp(i.labels[k - 1].key, i.labels[k].key) < 0);
	snap_info_clear(&i);

	/* Commit replaces the labels (containerd: "do not inherit"). */
	OK(snap_store_commit(f->s, "c", "a", LABELS({ "new", "yes" }), &err));
	OK(snap_store_stat(f->s, "c", &i, &err));
	expect_labels(&i, 1, "new", "yes");
	snap_info_clear(&i);
	prepare(f->s, "b", NULL);
	commit(f->s, "c-nolabels", "b");
	OK(snap_store_stat(f->s, "c-nolabels", &i, &err));
	expect_labels(&i, 0);
	snap_info_clear(&i);

	/* Key plus value: 4096 bytes pass, 4097 do not, in every call. */
	OK(snap_store_create(f->s, VIEW, "max", NULL, &at_max, 1, NULL, NULL, &err));
	OK(snap_store_stat(f->s, "max", &i, &err));
	expect_labels(&i, 1, k10, v4086);
	snap_info_clear(&i);
	FAILS(SL_E_INVALID, "maximum size", snap_store_create(f->s, VIEW, "over", NULL, &over, 1, NULL, NULL, &err));
	FAILS(SL_E_INVALID, "over", snap_store_create(f->s, ACTIVE, "over", NULL, &over, 1, NULL, NULL, &err));
	FAILS(SL_E_NOT_FOUND, NULL, snap_store_stat(f->s, "over", &i, &err));
	prepare(f->s, "d", NULL);
	FAILS(SL_E_INVALID, "maximum size", snap_store_commit(f->s, "d-c", "d", &over, 1, &err));
	expect_stat(f->s, "d", ACTIVE, NULL);
	FAILS(SL_E_INVALID, "maximum size", snap_store_add_committed(f->s, "r", NULL, &over, 1, &err));
	FAILS(SL_E_INVALID, "maximum size",
	      snap_store_update(f->s, &(struct snap_info){ .name = "d", .labels = &over, .nlabels = 1 }, NULL, 0, NULL,
				&err));
	FAILS(SL_E_INVALID, "maximum size",
	      snap_store_update(f->s, &(struct snap_info){ .name = "d", .labels = &over, .nlabels = 1 },
				(const char *const[]){ "labels.kkkkkkkkkk" }, 1, NULL, &err));
	/* Not in the mask: not checked, not written. */
	OK(snap_store_update(f->s, &(struct snap_info){ .name = "d", .labels = &over, .nlabels = 1 },
			     (const char *const[]){ "labels.other" }, 1, NULL, &err));
	/* An empty key is refused (bolt cannot store one). */
	FAILS(SL_E_INVALID, "empty key",
	      snap_store_create(f->s, ACTIVE, "e", NULL, LABELS({ "", "v" }), NULL, NULL, &err));
	OK(snap_store_stat(f->s, "d", &i, &err));
	expect_labels(&i, 0);
	snap_info_clear(&i);
	check_invariants(f->s, f->root);
	free(k10);
	free(v4086);
	free(v4087);
}

/* checkWalk's snapshots (filters belong to the service, not the store). */
static void test_walk(void **state)
{
	struct fx *f = *state;
	struct infos c = { 0 };
	static const char *const order[] = { "B-upper", "a", "a-np", "a-np-wl", "a-wl", "p", "p-wl", "v", "v-wl",
					     "\xc3\xa9" };

	prepare(f->s, "a-np", NULL);
	layer(f->s, "p", NULL);
	prepare(f->s, "a", "p");
	view(f->s, "v", "p");
	OK(snap_store_create(f->s, ACTIVE, "p-wl-tmp", NULL, NULL, 0, NULL, NULL, &err));
	OK(snap_store_commit(f->s, "p-wl", "p-wl-tmp", LABELS({ "l", "1" }), &err));
	OK(snap_store_create(f->s, ACTIVE, "a-wl", "p-wl", LABELS({ "l", "2" }), NULL, NULL, &err));
	OK(snap_store_create(f->s, VIEW, "v-wl", "p-wl", LABELS({ "l", "3" }), NULL, NULL, &err));
	OK(snap_store_create(f->s, ACTIVE, "a-np-wl", NULL, LABELS({ "l", "2" }), NULL, NULL, &err));
	prepare(f->s, "\xc3\xa9", NULL);
	prepare(f->s, "B-upper", NULL);

	/* Bytewise name order, as bolt walks its keys. */
	OK(snap_store_walk(f->s, collect_fn, &c, &err));
	assert_int_equal(c.n, sizeof(order) / sizeof(order[0]));
	for (size_t i = 0; i < c.n; i++) {
		struct snap_info st;

		assert_string_equal(c.v[i].name, order[i]);
		/* Walk gives what Stat gives. */
		OK(snap_store_stat(f->s, c.v[i].name, &st, &err));
		assert_int_equal(st.kind, c.v[i].kind);
		assert_int_equal(st.created_ns, c.v[i].created_ns);
		assert_int_equal(st.updated_ns, c.v[i].updated_ns);
		assert_int_equal(st.nlabels, c.v[i].nlabels);
		if (st.parent)
			assert_string_equal(st.parent, c.v[i].parent);
		else
			assert_null(c.v[i].parent);
		snap_info_clear(&st);
	}
	assert_string_equal(label(&c.v[4], "l"), "2"); /* a-wl */
	assert_string_equal(c.v[4].parent, "p-wl");
	assert_int_equal(c.v[5].kind, COMMITTED); /* p */
	assert_int_equal(c.v[8].kind, VIEW);      /* v-wl */
	infos_free(&c);

	/* A non-zero return stops the walk, which still succeeds. */
	c.stop_after = 3;
	OK(snap_store_walk(f->s, collect_fn, &c, &err));
	assert_int_equal(c.n, 3);
	infos_free(&c);

	/* An empty store walks nothing. */
	snap_store_close(f->s);
	f->s = NULL;
	assert_int_equal(sl_remove_path(f->root, NULL), 0);
	OK(snap_store_open(&f->s, f->root, &err));
	OK(snap_store_walk(f->s, collect_fn, &c, &err));
	assert_int_equal(c.n, 0);
	infos_free(&c);
}

/* ---- mounts ----------------------------------------------------------- */

static bool index_off(void)
{
	return access("/sys/module/overlay/parameters/index", F_OK) == 0;
}

/* Both the mounts create returned and what Mounts returns now. */
static void check_mounts(struct snap_store *s, const char *key, struct snap_mount *created, size_t ncreated,
			 void (*check)(const struct snap_mount *m, size_t n, void *user), void *user)
{
	struct snap_mount *m;
	size_t n;

	check(created, ncreated, user);
	OK(snap_store_mounts(s, key, &m, &n, &err));
	check(m, n, user);
	snap_mounts_free(m, n);
	snap_mounts_free(created, ncreated);
}

struct want {
	const char *type, *source;
	const char *opts[6];
	size_t nopts;
};

static void check_want(const struct snap_mount *m, size_t n, void *user)
{
	const struct want *w = user;

	assert_int_equal(n, 1);
	assert_string_equal(m[0].type, w->type);
	assert_string_equal(m[0].source, w->source);
	if (m[0].noptions != w->nopts) {
		for (size_t i = 0; i < m[0].noptions; i++)
			print_message("  option %s\n", m[0].options[i]);
		fail_msg("%zu options, expected %zu", m[0].noptions, w->nopts);
	}
	for (size_t i = 0; i < w->nopts; i++)
		assert_string_equal(m[0].options[i], w->opts[i]);
}

static void test_mounts(void **state)
{
	struct fx *f = *state;
	struct snap_mount *m;
	size_t n;
	char *c1, *c2, *a, *ap, *app;
	char lower1[PATH_MAX], lower2[PATH_MAX], work[PATH_MAX], upper[PATH_MAX], fsd[PATH_MAX];
	bool idx = index_off();

	layer(f->s, "c1", NULL);
	layer(f->s, "c2", "c1");
	c1 = snap_dir(f->s, "c1");
	c2 = snap_dir(f->s, "c2");

	/* Active, no parent: a read-write bind of its own fs. */
	OK(snap_store_create(f->s, ACTIVE, "a", NULL, NULL, 0, &m, &n, &err));
	a = snap_dir(f->s, "a");
	snprintf(fsd, sizeof(fsd), "%s/fs", a);
	check_mounts(f->s, "a", m, n, check_want, &(struct want){ "bind", fsd, { "rw", "rbind" }, 2 });

	/* View, no parent: read-only bind of its own fs. */
	OK(snap_store_create(f->s, VIEW, "v", NULL, NULL, 0, &m, &n, &err));
	{
		char *v = snap_dir(f->s, "v");

		snprintf(fsd, sizeof(fsd), "%s/fs", v);
		check_mounts(f->s, "v", m, n, check_want, &(struct want){ "bind", fsd, { "ro", "rbind" }, 2 });
		/* containerd makes no work directory for views. */
		assert_false(path_exists("%s/work", v));
		free(v);
	}

	/* Active on one parent: overlay, upper and work its own. */
	OK(snap_store_create(f->s, ACTIVE, "ap", "c1", NULL, 0, &m, &n, &err));
	ap = snap_dir(f->s, "ap");
	snprintf(work, sizeof(work), "workdir=%s/work", ap);
	snprintf(upper, sizeof(upper), "upperdir=%s/fs", ap);
	snprintf(lower1, sizeof(lower1), "lowerdir=%s/fs", c1);
	if (idx)
		check_mounts(f->s, "ap", m, n, check_want,
			     &(struct want){ "overlay", "overlay", { "index=off", work, upper, lower1 }, 4 });
	else
		check_mounts(f->s, "ap", m, n, check_want,
			     &(struct want){ "overlay", "overlay", { work, upper, lower1 }, 3 });

	/* Active on two: lowerdir nearest parent first. */
	OK(snap_store_create(f->s, ACTIVE, "app", "c2", NULL, 0, &m, &n, &err));
	app = snap_dir(f->s, "app");
	snprintf(work, sizeof(work), "workdir=%s/work", app);
	snprintf(upper, sizeof(upper), "upperdir=%s/fs", app);
	snprintf(lower2, sizeof(lower2), "lowerdir=%s/fs:%s/fs", c2, c1);
	if (idx)
		check_mounts(f->s, "app", m, n, check_want,
			     &(struct want){ "overlay", "overlay", { "index=off", work, upper, lower2 }, 4 });
	else
		check_mounts(f->s, "app", m, n, check_want,
			     &(struct want){ "overlay", "overlay", { work, upper, lower2 }, 3 });

	/* View of one parent: read-only bind of the parent's fs. */
	OK(snap_store_create(f->s, VIEW, "v1", "c1", NULL, 0, &m, &n, &err));
	snprintf(fsd, sizeof(fsd), "%s/fs", c1);
	check_mounts(f->s, "v1", m, n, check_want, &(struct want){ "bind", fsd, { "ro", "rbind" }, 2 });

	/* View of two: overlay with lowerdirs only. */
	OK(snap_store_create(f->s, VIEW, "v2", "c2", NULL, 0, &m, &n, &err));
	if (idx)
		check_mounts(f->s, "v2", m, n, check_want,
			     &(struct want){ "overlay", "overlay", { "index=off", lower2 }, 2 });
	else
		check_mounts(f->s, "v2", m, n, check_want, &(struct want){ "overlay", "overlay", { lower2 }, 1 });

	FAILS(SL_E_PRECONDITION, "c1", snap_store_mounts(f->s, "c1", &m, &n, &err));
	assert_null(m);
	assert_int_equal(n, 0);
	FAILS(SL_E_NOT_FOUND, "nope", snap_store_mounts(f->s, "nope", &m, &n, &err));
	free(c1);
	free(c2);
	free(a);
	free(ap);
	free(app);
}

/* Mounts the snapshot store's mount as containerd's mount.All would. */
static int do_mount(const struct snap_mount *m, size_t n, const char *target)
{
	char data[8192] = "";
	bool ro = false;

	if (n != 1)
		return -1;
	for (size_t i = 0; i < m->noptions; i++) {
		if (strcmp(m->type, "bind") == 0) {
			ro |= strcmp(m->options[i], "ro") == 0;
			continue;
		}
		if (i)
			strcat(data, ",");
		strcat(data, m->options[i]);
	}
	if (strcmp(m->type, "bind") == 0) {
		if (mount(m->source, target, NULL, MS_BIND | MS_REC, NULL) < 0)
			return -1;
		if (ro && mount(NULL, target, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY, NULL) < 0)
			return -1;
		return 0;
	}
	return mount(m->source, target, m->type, 0, data);
}

static bool file_is(const char *dir, const char *name, const char *content)
{
	char path[PATH_MAX], buf[256] = "";
	FILE *fp;
	size_t n;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fp = fopen(path, "r");
	if (!fp)
		return false;
	n = fread(buf, 1, sizeof(buf) - 1, fp);
	fclose(fp);
	buf[n] = '\0';
	return strcmp(buf, content) == 0;
}

static bool write_fails_erofs(const char *dir)
{
	char path[PATH_MAX];
	int fd;

	snprintf(path, sizeof(path), "%s/testfile", dir);
	fd = open(path, O_WRONLY | O_CREAT, 0644);
	if (fd >= 0) {
		close(fd);
		return false;
	}
	return errno == EROFS;
}

#define CHILD_CHECK(cond)                                                                                              \
	do {                                                                                                           \
		if (!(cond)) {                                                                                         \
			fprintf(stderr, "%s:%d: %s failed (errno %d)\n", __FILE__, __LINE__, #cond, errno);           \
			_exit(1);                                                                                      \
		}                                                                                                      \
	} while (0)

/* Creates, mounts and uses snapshots for real (checkSnapshotterBasic,
 * checkSnapshotterViewReadonly, checkRootPermission), in a child in its own
 * mount namespace so nothing leaks onto the host. */
static void mounts_real_child(struct fx *f)
{
	char mnt[PATH_MAX];
	struct snap_mount *m;
	size_t n;
	struct stat st;
	sl_error_t err = NULL;

	if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		_exit(77);
	snprintf(mnt, sizeof(mnt), "%s/mnt", f->dir);
	CHILD_CHECK(mkdir(mnt, 0755) == 0);

	CHILD_CHECK(snap_store_create(f->s, ACTIVE, "preparing", NULL, NULL, 0, &m, &n, &err) == 0);
	CHILD_CHECK(do_mount(m, n, mnt) == 0);
	snap_mounts_free(m, n);
	CHILD_CHECK(stat(mnt, &st) == 0 && (st.st_mode & 07777) == 0755);
	write_file(mnt, "foo", "foo\n");
	CHILD_CHECK(mkdir(strcat(strcpy((char[PATH_MAX]){ 0 }, mnt), "/a"), 0755) == 0);
	CHILD_CHECK(mkdir(strcat(strcpy((char[PATH_MAX]){ 0 }, mnt), "/a/b"), 0755) == 0);
	CHILD_CHECK(umount(mnt) == 0);
	CHILD_CHECK(snap_store_commit(f->s, "committed", "preparing", NULL, 0, &err) == 0);

	CHILD_CHECK(snap_store_create(f->s, ACTIVE, "next", "committed", NULL, 0, &m, &n, &err) == 0);
	CHILD_CHECK(strcmp(m[0].type, "overlay") == 0);
	if (do_mount(m, n, mnt) < 0) {
		fprintf(stderr, "overlay mount: %s\n", strerror(errno));
		_exit(errno == ENODEV ? 77 : 1);
	}
	snap_mounts_free(m, n);
	CHILD_CHECK(file_is(mnt, "foo", "foo\n"));
	write_file(mnt, "bar", "bar\n");
	write_file(mnt, "foo", "bar\n");
	CHILD_CHECK(rmdir(strcat(strcpy((char[PATH_MAX]){ 0 }, mnt), "/a/b")) == 0);
	CHILD_CHECK(umount(mnt) == 0);
	CHILD_CHECK(snap_store_commit(f->s, "committed-next", "next", NULL, 0, &err) == 0);

	/* A view of two layers: overlay with lowerdirs only, read-only. */
	CHILD_CHECK(snap_store_create(f->s, VIEW, "nextnext", "committed-next", NULL, 0, &m, &n, &err) == 0);
	CHILD_CHECK(do_mount(m, n, mnt) == 0);
	snap_mounts_free(m, n);
	CHILD_CHECK(file_is(mnt, "foo", "bar\n"));
	CHILD_CHECK(file_is(mnt, "bar", "bar\n"));
	CHILD_CHECK(path_exists("%s/a", mnt));
	CHILD_CHECK(!path_exists("%s/a/b", mnt));
	CHILD_CHECK(write_fails_erofs(mnt));
	CHILD_CHECK(umount(mnt) == 0);

	/* A view of one layer: read-only bind of its fs. */
	CHILD_CHECK(snap_store_create(f->s, VIEW, "v1", "committed", NULL, 0, &m, &n, &err) == 0);
	CHILD_CHECK(do_mount(m, n, mnt) == 0);
	snap_mounts_free(m, n);
	CHILD_CHECK(file_is(mnt, "foo", "foo\n"));
	CHILD_CHECK(path_exists("%s/a/b", mnt));
	CHILD_CHECK(write_fails_erofs(mnt));
	CHILD_CHECK(umount(mnt) == 0);
	/* The view did not change its parent. */
	CHILD_CHECK(snap_store_mounts(f->s, "v1", &m, &n, &err) == 0);
	CHILD_CHECK(do_mount(m, n, mnt) == 0 && umount(mnt) == 0);
	snap_mounts_free(m, n);
	_exit(0);
}

static void test_mounts_real(void **state)
{
	struct fx *f = *state;
	pid_t pid;
	int status;

	if (geteuid() != 0)
		skip();
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		mounts_real_child(f);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	if (WEXITSTATUS(status) == 77)
		skip();
	assert_int_equal(WEXITSTATUS(status), 0);
	/* The child's store calls happened on the shared files. */
	reopen(f);
	expect_stat(f->s, "committed-next", COMMITTED, "committed");
	expect_stat(f->s, "nextnext", VIEW, "committed-next");
	check_invariants(f->s, f->root);
}

/* ---- usage ------------------------------------------------------------ */

static int64_t blocks_of(const char *dir, const char *name)
{
	char path[PATH_MAX];
	struct stat st;

	snprintf(path, sizeof(path), "%s%s%s", dir, *name ? "/" : "", name);
	assert_int_equal(lstat(path, &st), 0);
	return (int64_t)st.st_blocks * 512;
}

static void expect_usage(struct snap_store *s, const char *key, int64_t size, int64_t inodes)
{
	struct snap_usage u;

	OK(snap_store_usage(s, key, &u, &err));
	if (u.size != size || u.inodes != inodes)
		fail_msg("usage of %s: %lld bytes %lld inodes, expected %lld bytes %lld inodes", key,
			 (long long)u.size, (long long)u.inodes, (long long)size, (long long)inodes);
}

static void test_usage(void **state)
{
	struct fx *f = *state;
	char *p, big[10000], path[PATH_MAX];
	int64_t expect;
	int fd;

	prepare(f->s, "a", NULL);
	p = fs_path(f->s, "a");
	expect_usage(f->s, "a", blocks_of(p, ""), 1);

	memset(big, 'x', sizeof(big));
	big[sizeof(big) - 1] = '\0';
	write_file(p, "data", big);
	snprintf(path, sizeof(path), "%s/data", p);
	assert_int_equal(link(path, strcat(strcpy((char[PATH_MAX]){ 0 }, p), "/data2")), 0);
	assert_int_equal(symlink("data", strcat(strcpy((char[PATH_MAX]){ 0 }, p), "/ln")), 0);
	assert_int_equal(mkdir(strcat(strcpy((char[PATH_MAX]){ 0 }, p), "/sub"), 0755), 0);
	/* A symlink out of the tree is not followed. */
	assert_int_equal(symlink("/usr", strcat(strcpy((char[PATH_MAX]){ 0 }, p), "/sub/usr")), 0);
	fd = open(strcat(strcpy((char[PATH_MAX]){ 0 }, p), "/sparse"), O_WRONLY | O_CREAT, 0644);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, "z", 1, 1 << 24), 1);
	close(fd);
	/* st_blocks, not st_size: the 16 MiB hole costs nothing. */
	assert_true(blocks_of(p, "sparse") < (1 << 20));
	/* Hard-linked data counted once; the directory, link, sub, its link. */
	expect = blocks_of(p, "") + blocks_of(p, "data") + blocks_of(p, "ln") + blocks_of(p, "sub") +
		 blocks_of(p, "sub/usr") + blocks_of(p, "sparse");
	assert_true(blocks_of(p, "data") >= 10000);
	expect_usage(f->s, "a", expect, 6);

	/* Committed: measured at commit and kept. */
	commit(f->s, "c", "a");
	expect_usage(f->s, "c", expect, 6);
	write_file(p, "later", "added after commit");
	expect_usage(f->s, "c", expect, 6);
	reopen(f);
	expect_usage(f->s, "c", expect, 6);

	/* Views and remote snapshots have nothing of their own. */
	view(f->s, "v", "c");
	expect_usage(f->s, "v", 0, 0);
	OK(snap_store_add_committed(f->s, "r", NULL, NULL, 0, &err));
	expect_usage(f->s, "r", 0, 0);
	FAILS(SL_E_NOT_FOUND, "nope", snap_store_usage(f->s, "nope", &(struct snap_usage){ 0 }, &err));

	/* Active: measured on every call. */
	prepare(f->s, "b", "c");
	free(p);
	p = fs_path(f->s, "b");
	expect_usage(f->s, "b", blocks_of(p, ""), 1);
	write_file(p, "one", "1");
	expect_usage(f->s, "b", blocks_of(p, "") + blocks_of(p, "one"), 2);
	free(p);
}

/* ---- persistence, recovery, cleanup ------------------------------------ */

static void test_reopen_persistence(void **state)
{
	struct fx *f = *state;
	struct snap_mount *m1, *m2;
	size_t n1, n2;
	char *before, *after, *d1, *d2;
	struct snap_info i1, i2;

	OK(snap_store_create(f->s, ACTIVE, "c1-a", NULL, LABELS({ "k", "v" }), NULL, NULL, &err));
	write_in(f->s, "c1-a", "f", "persist");
	OK(snap_store_commit(f->s, "c1", "c1-a", LABELS({ "c", "1" }, { "containerd.io/snapshot.ref", "x" }), &err));
	layer(f->s, "c2", "c1");
	OK(snap_store_add_committed(f->s, "r", "c2", LABELS({ "remote", "yes" }), &err));
	OK(snap_store_create(f->s, ACTIVE, "a", "r", LABELS({ "a", "1" }), NULL, NULL, &err));
	view(f->s, "v", "c2");
	prepare(f->s, "gone", NULL);
	OK(snap_store_remove(f->s, "gone", &err));
	before = signature(f->s);
	OK(snap_store_mounts(f->s, "a", &m1, &n1, &err));
	OK(snap_store_stat(f->s, "c1", &i1, &err));
	d1 = snap_dir(f->s, "a");

	reopen(f);
	after = signature(f->s);
	assert_string_equal(before, after);
	OK(snap_store_mounts(f->s, "a", &m2, &n2, &err));
	assert_int_equal(n1, n2);
	assert_string_equal(m1[0].type, m2[0].type);
	assert_int_equal(m1[0].noptions, m2[0].noptions);
	for (size_t i = 0; i < m1[0].noptions; i++)
		assert_string_equal(m1[0].options[i], m2[0].options[i]);
	OK(snap_store_stat(f->s, "c1", &i2, &err));
	assert_int_equal(i1.created_ns, i2.created_ns);
	assert_int_equal(i1.updated_ns, i2.updated_ns);
	d2 = fs_path(f->s, "c1");
	assert_true(file_is(d2, "f", "persist"));
	check_invariants(f->s, f->root);

	/* Ids are never reused, even after the newest snapshot is removed and
	 * the store reopened: a stale directory can never pass for a new one. */
	{
		char *last = snap_dir(f->s, "v"), *next;
		long long last_id = atoll(strrchr(last, '/') + 1);

		OK(snap_store_remove(f->s, "v", &err));
		reopen(f);
		prepare(f->s, "v-again", NULL);
		next = snap_dir(f->s, "v-again");
		assert_true(atoll(strrchr(next, '/') + 1) > last_id);
		free(last);
		free(next);
	}
	snap_mounts_free(m1, n1);
	snap_mounts_free(m2, n2);
	snap_info_clear(&i1);
	snap_info_clear(&i2);
	free(before);
	free(after);
	free(d1);
	free(d2);
}

static void make_tree(const char *root, const char *name, bool with_file)
{
	char path[PATH_MAX];

	snprintf(path, sizeof(path), "%s/snapshots/%s", root, name);
	assert_int_equal(mkdir(path, 0700), 0);
	strcat(path, "/fs");
	assert_int_equal(mkdir(path, 0755), 0);
	if (with_file)
		write_file(path, "file", "orphan");
}

/* What open and cleanup do with directories no committed row accounts for. */
static void test_recovery_and_cleanup(void **state)
{
	struct fx *f = *state;
	char *adir, from[PATH_MAX], to[PATH_MAX], *listing;

	layer(f->s, "c1", NULL);
	prepare(f->s, "a", "c1");
	write_in(f->s, "a", "kept", "yes");
	adir = snap_dir(f->s, "a");
	snap_store_close(f->s);
	f->s = NULL;

	/* A create that never reached its rename, one that renamed but did
	 * not commit, a remove that committed but did not finish, a stranger. */
	make_tree(f->root, "new-abc123", true);
	make_tree(f->root, "9999", true);
	make_tree(f->root, "rm-9998", true);
	make_tree(f->root, "0042", false);
	write_file(f->root, "snapshots/junk", "junk");
	/* And a remove that renamed a's directory but did not commit: the
	 * row is still there, so the directory comes back. */
	snprintf(from, sizeof(from), "%s", adir);
	snprintf(to, sizeof(to), "%s/snapshots/rm-%s", f->root, strrchr(adir, '/') + 1);
	assert_int_equal(rename(from, to), 0);

	OK(snap_store_open(&f->s, f->root, &err));
	assert_int_equal(check_invariants(f->s, f->root), 2);
	write_in(f->s, "a", "probe", "x");
	{
		char *p = fs_path(f->s, "a");

		assert_true(file_is(p, "kept", "yes"));
		free(p);
	}
	expect_stat(f->s, "a", ACTIVE, "c1");

	/* Cleanup at run time: the same rules. */
	make_tree(f->root, "new-zzzzzz", true);
	make_tree(f->root, "777", false);
	OK(snap_store_cleanup(f->s, &err));
	assert_int_equal(check_invariants(f->s, f->root), 2);
	listing = dir_listing(f->root);
	assert_null(strstr(listing, "new-"));
	free(listing);
	free(adir);
}

/* ---- remote snapshots, paths, modes ------------------------------------ */

static void test_add_committed(void **state)
{
	struct fx *f = *state;
	struct snap_info i;
	struct snap_mount *m;
	size_t n;
	char *r1, *r2, lower[PATH_MAX];

	OK(snap_store_add_committed(f->s, "r1", NULL,
				    LABELS({ "containerd.io/snapshot.ref", "sha256:1" },
					   { "containerd.io/snapshot/remote", "remote snapshot" }),
				    &err));
	OK(snap_store_stat(f->s, "r1", &i, &err));
	assert_int_equal(i.kind, COMMITTED);
	assert_null(i.parent);
	assert_int_equal(i.created_ns, i.updated_ns);
	expect_labels(&i, 2, "containerd.io/snapshot.ref", "sha256:1", "containerd.io/snapshot/remote",
		      "remote snapshot");
	snap_info_clear(&i);
	OK(snap_store_add_committed(f->s, "r2", "r1", NULL, 0, &err));
	expect_stat(f->s, "r2", COMMITTED, "r1");
	r1 = snap_dir(f->s, "r1");
	r2 = snap_dir(f->s, "r2");
	assert_true(path_exists("%s/fs", r1));
	assert_false(path_exists("%s/work", r1));

	prepare(f->s, "act", NULL);
	FAILS(SL_E_INVALID, "empty", snap_store_add_committed(f->s, "", NULL, NULL, 0, &err));
	FAILS(SL_E_INVALID, "empty", snap_store_add_committed(f->s, NULL, NULL, NULL, 0, &err));
	FAILS(SL_E_EXISTS, "r1", snap_store_add_committed(f->s, "r1", NULL, NULL, 0, &err));
	FAILS(SL_E_NOT_FOUND, "nope", snap_store_add_committed(f->s, "r3", "nope", NULL, 0, &err));
	FAILS(SL_E_INVALID, "act", snap_store_add_committed(f->s, "r3", "act", NULL, 0, &err));

	OK(snap_store_create(f->s, ACTIVE, "top", "r2", NULL, 0, &m, &n, &err));
	snprintf(lower, sizeof(lower), "lowerdir=%s/fs:%s/fs", r2, r1);
	assert_string_equal(m[0].options[m[0].noptions - 1], lower);
	snap_mounts_free(m, n);
	FAILS(SL_E_PRECONDITION, "r1", snap_store_remove(f->s, "r1", &err));
	OK(snap_store_remove(f->s, "top", &err));
	OK(snap_store_remove(f->s, "r2", &err));
	OK(snap_store_remove(f->s, "r1", &err));
	assert_int_equal(check_invariants(f->s, f->root), 1);
	free(r1);
	free(r2);
}

static void test_fs_path(void **state)
{
	struct fx *f = *state;
	char prefix[PATH_MAX], *p;
	const char *id;

	layer(f->s, "c", NULL);
	prepare(f->s, "a", "c");
	view(f->s, "v", "c");
	snprintf(prefix, sizeof(prefix), "%s/snapshots/", f->root);
	for (int k = 0; k < 3; k++) {
		p = fs_path(f->s, (const char *[]){ "c", "a", "v" }[k]);
		assert_int_equal(strncmp(p, prefix, strlen(prefix)), 0);
		id = p + strlen(prefix);
		assert_true(id[0] >= '1' && id[0] <= '9');
		assert_string_equal(id + strspn(id, "0123456789"), "/fs");
		free(p);
	}
	FAILS(SL_E_NOT_FOUND, "nope", snap_store_fs_path(f->s, "nope", &p, &err));
	assert_null(p);
}

static void test_modes_and_owner(void **state)
{
	struct fx *f = *state;
	mode_t old = umask(077);
	char *d, *p;
	struct stat st;

	prepare(f->s, "a", NULL);
	view(f->s, "v", NULL);
	umask(old);
	d = snap_dir(f->s, "a");
	assert_int_equal(stat(d, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0700);
	assert_true(path_exists("%s/fs", d));
	assert_int_equal(stat(strcat(strcpy((char[PATH_MAX]){ 0 }, d), "/fs"), &st), 0);
	assert_int_equal(st.st_mode & 07777, 0755);
	assert_int_equal(stat(strcat(strcpy((char[PATH_MAX]){ 0 }, d), "/work"), &st), 0);
	assert_int_equal(st.st_mode & 07777, 0711);
	free(d);
	p = fs_path(f->s, "v");
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0755);
	free(p);

	/* checkChown: a child's upper directory takes its parent's owner. */
	layer(f->s, "c", NULL);
	p = fs_path(f->s, "c");
	if (chown(p, 1234, 4321) < 0) {
		free(p);
		skip();
	}
	free(p);
	prepare(f->s, "child", "c");
	p = fs_path(f->s, "child");
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_uid, 1234);
	assert_int_equal(st.st_gid, 4321);
	free(p);
}

/* ---- threads ---------------------------------------------------------- */

struct tctx {
	struct snap_store *s;
	int t;
	int errors;
};

static int count_fn(const struct snap_info *i, void *user)
{
	(void)i;
	(*(int *)user)++;
	return 0;
}

static void *thread_main(void *arg)
{
	struct tctx *c = arg;
	char a[64], name[64], v[64];
	struct snap_usage u;
	sl_error_t err = NULL;
	int n;

	for (int i = 0; i < 20; i++) {
		snprintf(a, sizeof(a), "t%d-%d-a", c->t, i);
		snprintf(name, sizeof(name), "t%d-%d-c", c->t, i);
		snprintf(v, sizeof(v), "t%d-%d-v", c->t, i);
		n = 0;
		if (snap_store_create(c->s, ACTIVE, a, NULL, NULL, 0, NULL, NULL, &err) < 0 ||
		    snap_store_commit(c->s, name, a, NULL, 0, &err) < 0 ||
		    snap_store_create(c->s, VIEW, v, name, NULL, 0, NULL, NULL, &err) < 0 ||
		    snap_store_usage(c->s, name, &u, &err) < 0 || snap_store_walk(c->s, count_fn, &n, &err) < 0 ||
		    snap_store_remove(c->s, v, &err) < 0 || (i % 4 && snap_store_remove(c->s, name, &err) < 0)) {
			fprintf(stderr, "thread %d: %s\n", c->t, sl_error_msg(err));
			sl_error_free(&err);
			c->errors++;
		}
		if (n < 2)
			c->errors++;
	}
	return NULL;
}

static void test_threads(void **state)
{
	struct fx *f = *state;
	pthread_t th[4];
	struct tctx c[4];

	for (int t = 0; t < 4; t++) {
		c[t] = (struct tctx){ f->s, t, 0 };
		assert_int_equal(pthread_create(&th[t], NULL, thread_main, &c[t]), 0);
	}
	for (int t = 0; t < 4; t++) {
		assert_int_equal(pthread_join(th[t], NULL), 0);
		assert_int_equal(c[t].errors, 0);
	}
	assert_int_equal(check_invariants(f->s, f->root), 4 * 5);
}

/* ---- kill -9 ---------------------------------------------------------- */

/* The crash workload: every kind of change, each op one call (op 0 also
 * writes a file into the new snapshot, which op 1 commits). */
#define NOPS 14

static int crash_op(struct snap_store *s, int i, sl_error_t *err)
{
	char *p;
	FILE *fp;

	switch (i) {
	case 0:
		if (snap_store_create(s, ACTIVE, "a1", NULL, LABELS({ "x", "1" }), NULL, NULL, err) < 0 ||
		    snap_store_fs_path(s, "a1", &p, err) < 0)
			return -1;
		strcat((p = realloc(p, strlen(p) + 8)), "/f");
		fp = fopen(p, "w");
		free(p);
		if (!fp || fputs("hello", fp) < 0 || fclose(fp) != 0)
			return sl_error_sys(err, "write");
		return 0;
	case 1:
		return snap_store_commit(s, "c1", "a1", LABELS({ "y", "2" }), err);
	case 2:
		return snap_store_create(s, ACTIVE, "a2", "c1", NULL, 0, NULL, NULL, err);
	case 3:
		return snap_store_commit(s, "c2", "a2", NULL, 0, err);
	case 4:
		return snap_store_create(s, VIEW, "v1", "c2", LABELS({ "v", "1" }), NULL, NULL, err);
	case 5:
		return snap_store_add_committed(s, "r1", "c2", LABELS({ "containerd.io/snapshot.ref", "sha256:r1" }),
						err);
	case 6:
		return snap_store_update(
			s, &(struct snap_info){ .name = "c1", .labels = LBL({ "z", "3" }, { "w", "4" }), .nlabels = 2 },
			NULL, 0, NULL, err);
	case 7:
		return snap_store_remove(s, "v1", err);
	case 8:
		return snap_store_create(s, ACTIVE, "a3", "r1", NULL, 0, NULL, NULL, err);
	case 9:
		return snap_store_remove(s, "a3", err);
	case 10:
		return snap_store_remove(s, "r1", err);
	case 11:
		return snap_store_create(s, ACTIVE, "a4", NULL, NULL, 0, NULL, NULL, err);
	case 12:
		return snap_store_remove(s, "c2", err);
	case 13:
		return snap_store_cleanup(s, err);
	}
	return sl_error_set(err, SL_E_INVALID, "no op %d", i);
}

static int hook_target, hook_count, hook_fd = -1;

static void crash_hook(const char *point)
{
	if (++hook_count == hook_target) {
		dprintf(hook_fd, "kill %s\n", point);
		kill(getpid(), SIGKILL);
	}
}

/* Runs the workload (or, with !workload, only an open: recovery) in a
 * child killed at its target-th crash point. Returns its wait status;
 * *out gets what it reported ("op N" before each op, "kill <point>"). */
static int run_child(const char *root, bool workload, int target, char **out)
{
	int p[2], status;
	pid_t pid;
	size_t len = 0;
	FILE *m;
	char buf[512];
	ssize_t r;

	assert_int_equal(pipe(p), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct snap_store *s = NULL;
		sl_error_t err = NULL;

		close(p[0]);
		hook_fd = p[1];
		hook_target = target;
		hook_count = 0;
		snap_store_test_hook = crash_hook;
		if (snap_store_open(&s, root, &err) < 0) {
			dprintf(p[1], "error open: %s\n", sl_error_msg(err));
			_exit(2);
		}
		for (int i = 0; workload && i < NOPS; i++) {
			dprintf(p[1], "op %d\n", i);
			if (crash_op(s, i, &err) < 0) {
				dprintf(p[1], "error op %d: %s\n", i, sl_error_msg(err));
				_exit(3);
			}
		}
		snap_store_close(s);
		_exit(0);
	}
	close(p[1]);
	m = open_memstream(out, &len);
	while ((r = read(p[0], buf, sizeof(buf))) > 0)
		fwrite(buf, 1, (size_t)r, m);
	fclose(m);
	close(p[0]);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	return status;
}

static const char *last_line_value(const char *out, const char *tag)
{
	static char v[128];
	const char *p = out, *hit = NULL;
	size_t tl = strlen(tag);

	for (; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
		if (strncmp(p, tag, tl) == 0 && p[tl] == ' ')
			hit = p + tl + 1;
	if (!hit)
		return NULL;
	snprintf(v, sizeof(v), "%.*s", (int)strcspn(hit, "\n"), hit);
	return v;
}

struct seen {
	char names[64][32];
	int n;
};

static void see(struct seen *s, const char *point)
{
	for (int i = 0; i < s->n; i++)
		if (strcmp(s->names[i], point) == 0)
			return;
	assert_true(s->n < 64);
	snprintf(s->names[s->n++], sizeof(s->names[0]), "%s", point);
}

static bool seen(const struct seen *s, const char *point)
{
	for (int i = 0; i < s->n; i++)
		if (strcmp(s->names[i], point) == 0)
			return true;
	return false;
}

/* Points after the COMMIT of their operation: a kill there must find the
 * operation done; anywhere else, not done. */
static bool after_commit(const char *point)
{
	static const char *const post[] = { "create.committed", "commit.committed", "remove.committed", "remove.done",
					    "update.committed" };

	for (size_t i = 0; i < sizeof(post) / sizeof(post[0]); i++)
		if (strcmp(point, post[i]) == 0)
			return true;
	return false;
}

/* kill -9 at every crash point of every operation, then again at every
 * point of the recovery that follows; after each, the store reopens to
 * exactly the state before or after the interrupted operation. */
static void test_crash_points(void **state)
{
	struct fx *f = *state;
	char root[PATH_MAX], *sig[NOPS + 1], *out, *now;
	struct snap_store *s;
	struct seen pts = { 0 }, rec = { 0 };
	int target, status, kills = 0;

	snap_store_test_hook = NULL;
	snprintf(root, sizeof(root), "%s/reference", f->dir);
	OK(snap_store_open(&s, root, &err));
	for (int i = 0; i < NOPS; i++) {
		sig[i] = signature(s);
		OK(crash_op(s, i, &err));
	}
	sig[NOPS] = signature(s);
	snap_store_close(s);

	for (target = 1;; target++) {
		const char *op, *point;
		int k;

		snprintf(root, sizeof(root), "%s/crash-%d", f->dir, target);
		status = run_child(root, true, target, &out);
		if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
			free(out);
			assert_int_equal(sl_remove_path(root, NULL), 0);
			break; /* every point of the workload has been a kill */
		}
		if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL)
			fail_msg("target %d: child status 0x%x:\n%s", target, status, out);
		op = last_line_value(out, "op");
		k = op ? atoi(op) : -1;
		point = last_line_value(out, "kill");
		assert_non_null(point);
		assert_true(k >= 0);
		see(&pts, point);
		char pointbuf[64];
		snprintf(pointbuf, sizeof(pointbuf), "%s", point);
		free(out);
		kills++;

		/* The next open recovers; kill it too, at each of its points. */
		for (int j = 1;; j++) {
			status = run_child(root, false, j, &out);
			if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
				free(out);
				break;
			}
			if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL)
				fail_msg("target %d, recovery %d: child status 0x%x:\n%s", target, j, status, out);
			see(&rec, last_line_value(out, "kill"));
			free(out);
		}

		OK(snap_store_open(&s, root, &err));
		check_invariants(s, root);
		now = signature(s);
		if (strcmp(now, sig[after_commit(pointbuf) ? k + 1 : k]) != 0)
			fail_msg("killed in op %d at %s: state\n%s\nexpected\n%s", k, pointbuf, now,
				 sig[after_commit(pointbuf) ? k + 1 : k]);
		free(now);
		/* The committed layer has its contents. */
		{
			char *p = NULL;
			sl_error_t err = NULL;

			if (snap_store_fs_path(s, "c1", &p, &err) == 0)
				assert_true(file_is(p, "f", "hello"));
			sl_error_free(&err);
			free(p);
		}
		snap_store_close(s);
		assert_int_equal(sl_remove_path(root, NULL), 0);
	}
	print_message("kill -9 at %d points of the workload\n", kills);
	{
		static const char *const want[] = { "create.tmpdir",	"create.inserted",  "create.renamed",
						    "create.committed", "commit.measured",  "commit.updated",
						    "commit.committed", "remove.deleted",   "remove.renamed",
						    "remove.committed", "remove.done",	    "update.written",
						    "update.committed", "cleanup.entry" };
		static const char *const want_rec[] = { "cleanup.entry", "settle.removed", "settle.restored" };

		for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
			if (!seen(&pts, want[i]))
				fail_msg("no kill at %s", want[i]);
		for (size_t i = 0; i < sizeof(want_rec) / sizeof(want_rec[0]); i++)
			if (!seen(&rec, want_rec[i]))
				fail_msg("no kill during recovery at %s", want_rec[i]);
	}
	assert_true(kills > 30);
	for (int i = 0; i <= NOPS; i++)
		free(sig[i]);
}

/* A child repeating create/commit/view/update/remove, killed after a random
 * delay, wherever it is (inside SQLite, between syscalls): 25 times on one
 * root, checked after each. */
static void random_child(const char *root, int it)
{
	struct snap_store *s = NULL;
	sl_error_t err = NULL;
	char a[64], c[64], v[64], a2[64];

	if (snap_store_open(&s, root, &err) < 0) {
		fprintf(stderr, "open: %s\n", sl_error_msg(err));
		_exit(2);
	}
	for (int r = 0; r < 100000; r++) {
		snprintf(a, sizeof(a), "%d-%d-a", it, r);
		snprintf(c, sizeof(c), "%d-%d-c", it, r);
		snprintf(v, sizeof(v), "%d-%d-v", it, r);
		snprintf(a2, sizeof(a2), "%d-%d-a2", it, r);
		if (snap_store_create(s, ACTIVE, a, NULL, LABELS({ "gen", "1" }), NULL, NULL, &err) < 0 ||
		    snap_store_commit(s, c, a, LABELS({ "gen", "2" }), &err) < 0 ||
		    snap_store_create(s, VIEW, v, c, LABELS({ "gen", "1" }), NULL, NULL, &err) < 0 ||
		    snap_store_create(s, ACTIVE, a2, c, LABELS({ "gen", "1" }), NULL, NULL, &err) < 0 ||
		    snap_store_update(s,
				      &(struct snap_info){ .name = c, .labels = LBL({ "upd", "yes" }), .nlabels = 1 },
				      (const char *const[]){ "labels.upd" }, 1, NULL, &err) < 0 ||
		    snap_store_remove(s, v, &err) < 0 || snap_store_remove(s, a2, &err) < 0 ||
		    (r % 3 && snap_store_remove(s, c, &err) < 0) || (r % 5 == 0 && snap_store_cleanup(s, &err) < 0)) {
			fprintf(stderr, "round %d: %s\n", r, sl_error_msg(err));
			_exit(3);
		}
	}
	_exit(0);
}

static void test_crash_random(void **state)
{
	struct fx *f = *state;
	unsigned seed = (unsigned)time(NULL) ^ (unsigned)getpid();
	struct infos c = { 0 };

	snap_store_close(f->s);
	f->s = NULL;
	print_message("seed %u\n", seed);
	srand(seed);
	for (int it = 0; it < 25; it++) {
		pid_t pid = fork();
		int status;

		assert_true(pid >= 0);
		if (pid == 0)
			random_child(f->root, it);
		usleep(2000 + (useconds_t)(rand() % 40000));
		kill(pid, SIGKILL);
		assert_int_equal(waitpid(pid, &status, 0), pid);
		if (!WIFSIGNALED(status))
			fail_msg("iteration %d: child exited 0x%x before the kill", it, status);

		OK(snap_store_open(&f->s, f->root, &err));
		check_invariants(f->s, f->root);
		/* Labels came with their rows, whole. */
		OK(snap_store_walk(f->s, collect_fn, &c, &err));
		for (size_t i = 0; i < c.n; i++) {
			const struct snap_info *in = &c.v[i];
			size_t nl = strlen(in->name);

			if (nl > 2 && strcmp(in->name + nl - 2, "-c") == 0) {
				assert_int_equal(in->kind, COMMITTED);
				assert_string_equal(label(in, "gen"), "2");
				assert_true(in->nlabels == 1 || (in->nlabels == 2 && label(in, "upd")));
			} else {
				assert_int_equal(in->nlabels, 1);
				assert_string_equal(label(in, "gen"), "1");
			}
		}
		infos_free(&c);
		snap_store_close(f->s);
		f->s = NULL;
	}
	OK(snap_store_open(&f->s, f->root, &err));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_open_layout, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_open_nested_root, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_second_open_locked, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_unknown_schema_version, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_basic, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_stat_and_transitivity, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_key_taken, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_create_errors, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_commit_errors, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_remove, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_update, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_labels, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_walk, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_mounts, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_mounts_real, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_usage, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_reopen_persistence, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_recovery_and_cleanup, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_add_committed, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_fs_path, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_modes_and_owner, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_threads, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_crash_points, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_crash_random, fx_setup, fx_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
