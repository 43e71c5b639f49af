/* Unit tests for the node chunk cache: insertion, hostile entries, links, concurrency, gc, verify, reflinks. */
#include <errno.h>
#include <fcntl.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "oci/cache.h"
#include "sl/digest.h"
#include "sl/error.h"
#include "sl/file.h"

#define CHUNK 4096

/* One scratch directory per test: <path>/cache is the cache, <path>/spore
 * a spore directory on the same filesystem. */
struct fx {
	char path[64];
	int fd;
	char cache[128];
	struct oci_cache *c;
	int spore_fd;
	bool named; /* SPORE_CACHE_NO_TMPFILE=1: the named fallback */
};

static void must_ok(int r, sl_error_t *err)
{
	if (r < 0)
		fail_msg("unexpected error: %s", sl_error_msg(*err));
}

static int fx_setup(void **state, bool named)
{
	struct fx *f = calloc(1, sizeof(*f));
	sl_error_t err = NULL;

	if (!f)
		return -1;
	f->fd = f->spore_fd = -1;
	f->named = named;
	if (named)
		setenv("SPORE_CACHE_NO_TMPFILE", "1", 1);
	else
		unsetenv("SPORE_CACHE_NO_TMPFILE");
	snprintf(f->path, sizeof(f->path), "/tmp/oci-cache-unit-XXXXXX");
	if (!mkdtemp(f->path))
		goto fail;
	f->fd = open(f->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (f->fd < 0)
		goto fail;
	snprintf(f->cache, sizeof(f->cache), "%s/cache", f->path);
	if (oci_cache_open(f->cache, &f->c, &err) < 0) {
		fprintf(stderr, "oci_cache_open: %s\n", sl_error_msg(err));
		sl_error_free(&err);
		goto fail;
	}
	if (sl_mkdir_beneath(f->fd, "spore/chunks/sha256", 0755, &err) < 0)
		goto fail;
	f->spore_fd = openat(f->fd, "spore", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (f->spore_fd < 0)
		goto fail;
	*state = f;
	return 0;
fail:
	sl_error_free(&err);
	*state = f;
	return -1;
}

static int setup_tmpfile(void **state) { return fx_setup(state, false); }
static int setup_named(void **state) { return fx_setup(state, true); }

static int fx_teardown(void **state)
{
	struct fx *f = *state;
	sl_error_t err = NULL;
	int parent;

	unsetenv("SPORE_CACHE_NO_TMPFILE");
	if (!f)
		return 0;
	oci_cache_close(f->c);
	if (f->spore_fd >= 0)
		close(f->spore_fd);
	if (f->fd >= 0)
		close(f->fd);
	if (f->path[0] && strcmp(f->path + strlen(f->path) - 6, "XXXXXX") != 0) {
		parent = open("/tmp", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (parent >= 0) {
			if (sl_remove_tree(parent, f->path + strlen("/tmp/"), &err) < 0) {
				fprintf(stderr, "cleanup of %s failed: %s\n", f->path, sl_error_msg(err));
				sl_error_free(&err);
			}
			close(parent);
		}
	}
	free(f);
	return 0;
}

/* Deterministic content, different for every seed. */
static void fill(uint8_t *buf, size_t len, uint32_t seed)
{
	uint32_t x = seed * 2654435761u + 1;

	for (size_t i = 0; i < len; i++) {
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		buf[i] = (uint8_t)x;
	}
}

static int insert(struct oci_cache *c, const void *buf, size_t len, const sl_digest *claim, sl_error_t *err)
{
	struct oci_cache_tmp t;

	if (oci_cache_tmp_open(c, &t, err) < 0)
		return -1;
	if (sl_write_all(t.fd, buf, len, err) < 0) {
		oci_cache_tmp_abort(c, &t);
		return -1;
	}
	return oci_cache_tmp_commit(c, &t, claim, err);
}

/* Entries in dirfd/rel, "." and ".." not counted. */
static int count_dir(int dirfd, const char *rel)
{
	int fd = openat(dirfd, rel, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d;
	struct dirent *de;
	int n = 0;

	if (fd < 0)
		return -1;
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return -1;
	}
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			n++;
	closedir(d);
	return n;
}

static int chunks_fd(struct fx *f)
{
	int fd = openat(oci_cache_dirfd(f->c), "chunks/sha256", O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	assert_true(fd >= 0);
	return fd;
}

static void test_default_dir(void **state)
{
	char out[4096], small[8];
	sl_error_t err = NULL;
	char *saved_env = getenv("SPORE_CACHE_DIR") ? strdup(getenv("SPORE_CACHE_DIR")) : NULL;

	(void)state;
	setenv("SPORE_CACHE_DIR", "/srv/spore-cache", 1);
	must_ok(oci_cache_default_dir(out, sizeof(out), &err), &err);
	assert_string_equal(out, "/srv/spore-cache");
	assert_int_equal(oci_cache_default_dir(small, sizeof(small), &err), -1);
	assert_int_equal(err->code, SL_E_LIMIT);
	sl_error_free(&err);

	unsetenv("SPORE_CACHE_DIR");
	if (geteuid() == 0) {
		must_ok(oci_cache_default_dir(out, sizeof(out), &err), &err);
		assert_string_equal(out, "/var/lib/sporelet/cache");
	} else {
		char *saved_xdg = getenv("XDG_CACHE_HOME") ? strdup(getenv("XDG_CACHE_HOME")) : NULL;

		setenv("XDG_CACHE_HOME", "/xdg", 1);
		must_ok(oci_cache_default_dir(out, sizeof(out), &err), &err);
		assert_string_equal(out, "/xdg/sporelet");
		if (saved_xdg)
			setenv("XDG_CACHE_HOME", saved_xdg, 1);
		else
			unsetenv("XDG_CACHE_HOME");
		free(saved_xdg);
	}
	if (saved_env)
		setenv("SPORE_CACHE_DIR", saved_env, 1);
	free(saved_env);
}

static void test_open_layout_and_permissions(void **state)
{
	struct fx *f = *state;
	struct oci_cache *c2 = NULL;
	sl_error_t err = NULL;
	struct stat st;
	char nested[192];

	assert_int_equal(fstatat(f->fd, "cache", &st, 0), 0);
	assert_int_equal(st.st_mode & 07777, 0700);
	assert_int_equal(fstatat(f->fd, "cache/chunks/sha256", &st, 0), 0);
	assert_true(S_ISDIR(st.st_mode));
	assert_int_equal(st.st_mode & 07777, 0700);
	assert_int_equal(fstatat(f->fd, "cache/tmp", &st, 0), 0);
	assert_int_equal(st.st_mode & 07777, 0700);

	/* Missing parents are created. */
	snprintf(nested, sizeof(nested), "%s/a/b/cache", f->path);
	must_ok(oci_cache_open(nested, &c2, &err), &err);
	oci_cache_close(c2);

	/* Anyone who can write the cache could plant chunks: refused. */
	assert_int_equal(fchmodat(f->fd, "cache", 0777, 0), 0);
	assert_int_equal(oci_cache_open(f->cache, &c2, &err), -1);
	assert_int_equal(err->code, SL_E_INVALID);
	assert_null(c2);
	sl_error_free(&err);
	assert_int_equal(fchmodat(f->fd, "cache", 0700, 0), 0);
	assert_int_equal(fchmodat(f->fd, "cache/tmp", 0722, 0), 0);
	assert_int_equal(oci_cache_open(f->cache, &c2, &err), -1);
	assert_int_equal(err->code, SL_E_INVALID);
	sl_error_free(&err);
	assert_int_equal(fchmodat(f->fd, "cache/tmp", 0700, 0), 0);

	/* A symlink where chunks/ should be is refused, not followed. */
	assert_int_equal(renameat(f->fd, "cache/chunks", f->fd, "elsewhere"), 0);
	assert_int_equal(symlinkat("../elsewhere", f->fd, "cache/chunks"), 0);
	assert_int_equal(oci_cache_open(f->cache, &c2, &err), -1);
	sl_error_free(&err);
	assert_int_equal(unlinkat(f->fd, "cache/chunks", 0), 0);
	assert_int_equal(renameat(f->fd, "elsewhere", f->fd, "cache/chunks"), 0);
	must_ok(oci_cache_open(f->cache, &c2, &err), &err);
	oci_cache_close(c2);
}

/* Which temp-file flavour each fixture really gets. */
static void test_tmp_flavour(void **state)
{
	struct fx *f = *state;
	struct oci_cache_tmp t;
	sl_error_t err = NULL;

	must_ok(oci_cache_tmp_open(f->c, &t, &err), &err);
	assert_true(t.fd >= 0);
	if (f->named) {
		assert_true(t.name[0] != '\0');
		assert_int_equal(count_dir(f->fd, "cache/tmp"), 1);
		assert_non_null(strstr(t.name, ".tmp"));
	} else {
		/* O_TMPFILE: the file has no name at all. */
		assert_string_equal(t.name, "");
		assert_int_equal(count_dir(f->fd, "cache/tmp"), 0);
	}
	oci_cache_tmp_abort(f->c, &t);
	assert_int_equal(t.fd, -1);
	assert_int_equal(count_dir(f->fd, "cache/tmp"), 0);
	oci_cache_tmp_abort(f->c, &t); /* idempotent */
}

static void test_insert_good(void **state)
{
	struct fx *f = *state;
	uint8_t buf[CHUNK], back[CHUNK];
	char rel[128], hex[SL_DIGEST_HEXLEN + 1];
	sl_error_t err = NULL;
	sl_digest d;
	struct stat st;
	bool present = true;
	int fd;

	fill(buf, sizeof(buf), 1);
	sl_sha256(buf, sizeof(buf), &d);
	sl_digest_hex(&d, hex);
	must_ok(oci_cache_has(f->c, &d, CHUNK, &present, &err), &err);
	assert_false(present);

	must_ok(insert(f->c, buf, sizeof(buf), &d, &err), &err);
	must_ok(oci_cache_has(f->c, &d, CHUNK, &present, &err), &err);
	assert_true(present);
	must_ok(oci_cache_has(f->c, &d, 0, &present, &err), &err);
	assert_true(present);

	snprintf(rel, sizeof(rel), "cache/chunks/sha256/%s", hex);
	assert_int_equal(fstatat(f->fd, rel, &st, AT_SYMLINK_NOFOLLOW), 0);
	assert_true(S_ISREG(st.st_mode));
	assert_int_equal(st.st_mode & 07777, 0444);
	assert_int_equal(st.st_size, CHUNK);
	assert_int_equal(st.st_nlink, 1);
	fd = openat(f->fd, rel, O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	must_ok(sl_pread_all(fd, back, sizeof(back), 0, &err), &err);
	close(fd);
	assert_memory_equal(buf, back, sizeof(buf));
	assert_int_equal(count_dir(f->fd, "cache/tmp"), 0);
	assert_int_equal(count_dir(f->fd, "cache/chunks/sha256"), 1);

	/* Inserting it again is fine and changes nothing. */
	must_ok(insert(f->c, buf, sizeof(buf), &d, &err), &err);
	assert_int_equal(count_dir(f->fd, "cache/chunks/sha256"), 1);
	assert_int_equal(count_dir(f->fd, "cache/tmp"), 0);
}

static void test_insert_wrong_digest(void **state)
{
	struct fx *f = *state;
	uint8_t buf[CHUNK];
	sl_error_t err = NULL;
	sl_digest claim;
	bool present = true;

	fill(buf, sizeof(buf), 2);
	sl_sha256(buf, sizeof(buf), &claim);
	claim.b[0] ^= 0x80; /* the caller lies (or the registry did) */
	assert_int_equal(insert(f->c, buf, sizeof(buf), &claim, &err), -1);
	assert_int_equal(err->code, SL_E_INTEGRITY);
	sl_error_free(&err);
	assert_int_equal(count_dir(f->fd, "cache/tmp"), 0);
	assert_int_equal(count_dir(f->fd, "cache/chunks/sha256"), 0);
	must_ok(oci_cache_has(f->c, &claim, 0, &present, &err), &err);
	assert_false(present);

	/* Bytes written after the claim was computed are what count. */
	{
		struct oci_cache_tmp t;
		sl_digest good;

		sl_sha256(buf, sizeof(buf), &good);
		must_ok(oci_cache_tmp_open(f->c, &t, &err), &err);
		must_ok(sl_write_all(t.fd, buf, sizeof(buf), &err), &err);
		must_ok(sl_write_all(t.fd, "x", 1, &err), &err);
		assert_int_equal(oci_cache_tmp_commit(f->c, &t, &good, &err), -1);
		assert_int_equal(err->code, SL_E_INTEGRITY);
		assert_int_equal(t.fd, -1);
		sl_error_free(&err);
	}
	assert_int_equal(count_dir(f->fd, "cache/tmp"), 0);
	assert_int_equal(count_dir(f->fd, "cache/chunks/sha256"), 0);
}

static void plant_file(int dfd, const char *name, const void *buf, size_t len, mode_t mode)
{
	sl_error_t err = NULL;
	int fd = openat(dfd, name, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);

	assert_true(fd >= 0);
	must_ok(sl_write_all(fd, buf, len, &err), &err);
	assert_int_equal(fchmod(fd, mode), 0);
	close(fd);
}

static void test_has_removes_bad_entries(void **state)
{
	struct fx *f = *state;
	int cfd = chunks_fd(f);
	uint8_t buf[CHUNK];
	char hex[6][SL_DIGEST_HEXLEN + 1];
	sl_digest d[6];
	sl_error_t err = NULL;
	struct stat st;
	bool present;

	for (int i = 0; i < 6; i++) {
		fill(buf, sizeof(buf), 100 + (uint32_t)i);
		sl_sha256(buf, sizeof(buf), &d[i]);
		sl_digest_hex(&d[i], hex[i]);
	}
	/* 0: a symlink to a file with the right content. */
	fill(buf, sizeof(buf), 100);
	plant_file(f->fd, "target", buf, sizeof(buf), 0444);
	assert_int_equal(symlinkat("../../../target", cfd, hex[0]), 0);
	/* 1: a directory, not empty. */
	assert_int_equal(mkdirat(cfd, hex[1], 0700), 0);
	{
		int dfd = openat(cfd, hex[1], O_RDONLY | O_DIRECTORY | O_CLOEXEC);

		assert_true(dfd >= 0);
		plant_file(dfd, "inner", "x", 1, 0644);
		close(dfd);
	}
	/* 2: right content, wrong size for the caller's expectation. */
	fill(buf, sizeof(buf), 102);
	plant_file(cfd, hex[2], buf, 100, 0444);
	/* 3: right content but writable. */
	fill(buf, sizeof(buf), 103);
	plant_file(cfd, hex[3], buf, sizeof(buf), 0644);
	/* 4: a FIFO (a reader would hang). */
	assert_int_equal(mkfifoat(cfd, hex[4], 0444), 0);
	/* 5: a good entry planted by hand stays. */
	fill(buf, sizeof(buf), 105);
	plant_file(cfd, hex[5], buf, sizeof(buf), 0444);

	for (int i = 0; i < 5; i++) {
		present = true;
		must_ok(oci_cache_has(f->c, &d[i], CHUNK, &present, &err), &err);
		assert_false(present);
		assert_int_equal(fstatat(cfd, hex[i], &st, AT_SYMLINK_NOFOLLOW), -1);
		assert_int_equal(errno, ENOENT);
	}
	/* The symlink's target was not touched. */
	assert_int_equal(fstatat(f->fd, "target", &st, 0), 0);
	must_ok(oci_cache_has(f->c, &d[5], CHUNK, &present, &err), &err);
	assert_true(present);
	/* size 0: any size will do, but it still must be read-only. */
	must_ok(oci_cache_has(f->c, &d[5], 0, &present, &err), &err);
	assert_true(present);
	must_ok(oci_cache_has(f->c, &d[5], CHUNK + 1, &present, &err), &err);
	assert_false(present);
	assert_int_equal(count_dir(cfd, "."), 0);
	close(cfd);
}

/* A bad entry squatting on the name must not block a good insert. */
static void test_commit_replaces_bad_entry(void **state)
{
	struct fx *f = *state;
	int cfd = chunks_fd(f);
	uint8_t buf[CHUNK], back[CHUNK];
	char hex[SL_DIGEST_HEXLEN + 1];
	sl_error_t err = NULL;
	sl_digest d;
	struct stat st;
	int fd;

	for (int kind = 0; kind < 4; kind++) {
		fill(buf, sizeof(buf), 200 + (uint32_t)kind);
		sl_sha256(buf, sizeof(buf), &d);
		sl_digest_hex(&d, hex);
		switch (kind) {
		case 0: plant_file(cfd, hex, "garbage", 7, 0444); break;   /* wrong size */
		case 1: plant_file(cfd, hex, buf, sizeof(buf), 0644); break; /* writable */
		case 2: assert_int_equal(mkdirat(cfd, hex, 0700), 0); break;
		case 3: assert_int_equal(symlinkat("/etc/passwd", cfd, hex), 0); break;
		}
		must_ok(insert(f->c, buf, sizeof(buf), &d, &err), &err);
		assert_int_equal(fstatat(cfd, hex, &st, AT_SYMLINK_NOFOLLOW), 0);
		assert_true(S_ISREG(st.st_mode));
		assert_int_equal(st.st_mode & 07777, 0444);
		fd = openat(cfd, hex, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
		assert_true(fd >= 0);
		must_ok(sl_pread_all(fd, back, sizeof(back), 0, &err), &err);
		close(fd);
		assert_memory_equal(buf, back, sizeof(buf));
	}
	assert_int_equal(count_dir(f->fd, "cache/tmp"), 0);
	assert_int_equal(count_dir(cfd, "."), 4);
	close(cfd);
}

static void test_link_into_spore(void **state)
{
	struct fx *f = *state;
	int cfd = chunks_fd(f);
	uint8_t buf[CHUNK];
	char hex[SL_DIGEST_HEXLEN + 1], rel[128];
	sl_error_t err = NULL;
	sl_digest d, missing;
	struct stat a, b;

	fill(buf, sizeof(buf), 3);
	sl_sha256(buf, sizeof(buf), &d);
	sl_digest_hex(&d, hex);
	must_ok(insert(f->c, buf, sizeof(buf), &d, &err), &err);
	snprintf(rel, sizeof(rel), "chunks/sha256/%s", hex);
	must_ok(oci_cache_link(f->c, &d, f->spore_fd, rel, &err), &err);
	assert_int_equal(fstatat(cfd, hex, &a, AT_SYMLINK_NOFOLLOW), 0);
	assert_int_equal(fstatat(f->spore_fd, rel, &b, AT_SYMLINK_NOFOLLOW), 0);
	assert_int_equal(a.st_dev, b.st_dev);
	assert_int_equal(a.st_ino, b.st_ino);
	assert_int_equal(a.st_nlink, 2);
	/* Linking what is already linked is not an error. */
	must_ok(oci_cache_link(f->c, &d, f->spore_fd, rel, &err), &err);
	/* A different file in the way is. */
	must_ok(oci_cache_link(f->c, &d, f->spore_fd, "other", &err), &err);
	assert_int_equal(unlinkat(f->spore_fd, "other", 0), 0);
	plant_file(f->spore_fd, "other", "x", 1, 0444);
	assert_int_equal(oci_cache_link(f->c, &d, f->spore_fd, "other", &err), -1);
	assert_int_equal(err->sys_errno, EEXIST);
	sl_error_free(&err);

	/* Parents are resolved beneath the spore directory, no symlinks. */
	assert_int_equal(symlinkat("chunks", f->spore_fd, "via-link"), 0);
	assert_int_equal(oci_cache_link(f->c, &d, f->spore_fd, "via-link/x", &err), -1);
	assert_int_equal(err->code, SL_E_INVALID);
	sl_error_free(&err);
	assert_int_equal(oci_cache_link(f->c, &d, f->spore_fd, "../escape", &err), -1);
	sl_error_free(&err);
	assert_int_equal(oci_cache_link(f->c, &d, f->spore_fd, "/tmp/escape", &err), -1);
	sl_error_free(&err);

	/* An entry that is not there. */
	missing = d;
	missing.b[5] ^= 1;
	assert_int_equal(oci_cache_link(f->c, &missing, f->spore_fd, "m", &err), -1);
	assert_int_equal(err->code, SL_E_NOT_FOUND);
	sl_error_free(&err);

	/* A symlink or writable file planted in the cache is never followed
	 * or handed out: nothing lands in the spore, the entry is dropped. */
	sl_digest_hex(&missing, hex);
	for (int kind = 0; kind < 2; kind++) {
		if (kind == 0)
			assert_int_equal(symlinkat("/etc/passwd", cfd, hex), 0);
		else
			plant_file(cfd, hex, buf, sizeof(buf), 0644);
		assert_int_equal(oci_cache_link(f->c, &missing, f->spore_fd, "bad", &err), -1);
		assert_int_equal(err->code, SL_E_NOT_FOUND);
		sl_error_free(&err);
		assert_int_equal(fstatat(f->spore_fd, "bad", &b, AT_SYMLINK_NOFOLLOW), -1);
		assert_int_equal(fstatat(cfd, hex, &b, AT_SYMLINK_NOFOLLOW), -1);
	}

	/* Another filesystem: a clear refusal. /dev/shm is tmpfs on most hosts. */
	{
		struct stat shm;
		char dir[] = "/dev/shm/oci-cache-unit-XXXXXX";

		if (stat("/dev/shm", &shm) == 0 && shm.st_dev != a.st_dev && mkdtemp(dir)) {
			int xfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
			int r;

			assert_true(xfd >= 0);
			r = oci_cache_link(f->c, &d, xfd, "chunk", &err);
			close(xfd);
			rmdir(dir);
			assert_int_equal(r, -1);
			assert_int_equal(err->code, SL_E_UNSUPPORTED);
			assert_non_null(strstr(sl_error_msg(err), "same filesystem"));
			sl_error_free(&err);
		} else {
			fprintf(stderr, "note: no second filesystem at /dev/shm, EXDEV case not exercised\n");
		}
	}
	close(cfd);
}

#define RACE_PROCS 4
#define RACE_ROUNDS 4
#define RACE_CHUNKS 24
#define RACE_SIZE (64 * 1024)

/* One racing puller: its own cache handle (half of them on the named
 * fallback), the same chunks as everyone else, links into its own spore. */
static int racer(struct fx *f, int id, int start_fd)
{
	static uint8_t buf[RACE_SIZE];
	struct oci_cache *c = NULL;
	sl_error_t err = NULL;
	char spore[32], rel[160], hex[SL_DIGEST_HEXLEN + 1], go;
	int sfd;

	if (id % 2)
		setenv("SPORE_CACHE_NO_TMPFILE", "1", 1);
	else
		unsetenv("SPORE_CACHE_NO_TMPFILE");
	if (oci_cache_open(f->cache, &c, &err) < 0)
		goto fail;
	snprintf(spore, sizeof(spore), "racer-%d/chunks/sha256", id);
	if (sl_mkdir_beneath(f->fd, spore, 0755, &err) < 0)
		goto fail;
	sfd = openat(f->fd, spore, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (sfd < 0)
		return 2;
	/* Everyone starts at once: the parent closes the pipe. */
	if (read(start_fd, &go, 1) < 0)
		return 2;
	for (int r = 0; r < RACE_ROUNDS; r++) {
		for (int i = 0; i < RACE_CHUNKS; i++) {
			sl_digest d;
			bool present;

			fill(buf, sizeof(buf), (uint32_t)(1000 + r * RACE_CHUNKS + i));
			sl_sha256(buf, sizeof(buf), &d);
			/* No has() first: every process really commits, so the
			 * links collide. */
			if (insert(c, buf, sizeof(buf), &d, &err) < 0)
				goto fail;
			if (oci_cache_has(c, &d, RACE_SIZE, &present, &err) < 0)
				goto fail;
			if (!present) {
				fprintf(stderr, "racer %d: chunk %d absent after commit\n", id, i);
				return 1;
			}
			sl_digest_hex(&d, hex);
			snprintf(rel, sizeof(rel), "%s", hex);
			if (oci_cache_link(c, &d, sfd, rel, &err) < 0)
				goto fail;
		}
	}
	close(sfd);
	oci_cache_close(c);
	return 0;
fail:
	fprintf(stderr, "racer %d: %s\n", id, sl_error_msg(err));
	sl_error_free(&err);
	oci_cache_close(c);
	return 1;
}

static void test_concurrent_commits(void **state)
{
	struct fx *f = *state;
	pid_t pids[RACE_PROCS];
	int pfd[2];
	struct oci_cache_stats st;
	sl_error_t err = NULL;
	int cfd;

	assert_int_equal(pipe(pfd), 0);
	for (int i = 0; i < RACE_PROCS; i++) {
		pids[i] = fork();
		assert_true(pids[i] >= 0);
		if (pids[i] == 0) {
			close(pfd[1]);
			_exit(racer(f, i, pfd[0]));
		}
	}
	close(pfd[0]);
	close(pfd[1]);
	for (int i = 0; i < RACE_PROCS; i++) {
		int ws;

		assert_int_equal(waitpid(pids[i], &ws, 0), pids[i]);
		assert_true(WIFEXITED(ws));
		assert_int_equal(WEXITSTATUS(ws), 0);
	}
	/* One good entry per chunk, and every racer linked that same inode:
	 * no commit replaced a good entry. */
	cfd = chunks_fd(f);
	assert_int_equal(count_dir(cfd, "."), RACE_ROUNDS * RACE_CHUNKS);
	for (int r = 0; r < RACE_ROUNDS; r++) {
		for (int i = 0; i < RACE_CHUNKS; i++) {
			static uint8_t buf[RACE_SIZE];
			char hex[SL_DIGEST_HEXLEN + 1];
			struct stat s;
			sl_digest d;

			fill(buf, sizeof(buf), (uint32_t)(1000 + r * RACE_CHUNKS + i));
			sl_sha256(buf, sizeof(buf), &d);
			sl_digest_hex(&d, hex);
			assert_int_equal(fstatat(cfd, hex, &s, AT_SYMLINK_NOFOLLOW), 0);
			assert_true(S_ISREG(s.st_mode));
			assert_int_equal(s.st_mode & 07777, 0444);
			assert_int_equal(s.st_nlink, 1 + RACE_PROCS);
		}
	}
	close(cfd);
	assert_int_equal(count_dir(f->fd, "cache/tmp"), 0);
	must_ok(oci_cache_verify(f->c, &st, &err), &err);
	assert_int_equal(st.entries, RACE_ROUNDS * RACE_CHUNKS);
	assert_int_equal(st.removed, 0);
}

static void set_mtime(int dfd, const char *name, time_t t)
{
	struct timespec ts[2] = { { .tv_sec = t }, { .tv_sec = t } };

	assert_int_equal(utimensat(dfd, name, ts, AT_SYMLINK_NOFOLLOW), 0);
}

struct list_acc {
	int n;
	uint64_t bytes;
	int referenced;
};

static void list_cb(const struct oci_cache_entry *e, void *arg)
{
	struct list_acc *a = arg;

	a->n++;
	a->bytes += e->size;
	if (e->links > 1)
		a->referenced++;
}

static void test_gc(void **state)
{
	struct fx *f = *state;
	int cfd = chunks_fd(f);
	uint8_t buf[CHUNK];
	char hex[6][SL_DIGEST_HEXLEN + 1];
	sl_digest d[6];
	sl_error_t err = NULL;
	struct oci_cache_stats st;
	struct list_acc acc = { 0 };
	struct stat s;
	time_t base = time(NULL) - 10000;

	for (int i = 0; i < 6; i++) {
		fill(buf, sizeof(buf), 300 + (uint32_t)i);
		sl_sha256(buf, sizeof(buf), &d[i]);
		sl_digest_hex(&d[i], hex[i]);
		must_ok(insert(f->c, buf, sizeof(buf), &d[i], &err), &err);
		/* Entry i is the i-th oldest. */
		set_mtime(cfd, hex[i], base + i * 100);
	}
	/* The two oldest are used by a spore: never collectable. */
	must_ok(oci_cache_link(f->c, &d[0], f->spore_fd, hex[0], &err), &err);
	must_ok(oci_cache_link(f->c, &d[1], f->spore_fd, hex[1], &err), &err);
	/* Junk in the chunk directory is not an entry. */
	plant_file(cfd, "not-a-digest", "x", 1, 0444);

	must_ok(oci_cache_list(f->c, list_cb, &acc, &err), &err);
	assert_int_equal(acc.n, 6);
	assert_int_equal(acc.bytes, 6 * CHUNK);
	assert_int_equal(acc.referenced, 2);

	/* Under the limit: nothing to do. */
	must_ok(oci_cache_gc(f->c, 6 * CHUNK, &st, &err), &err);
	assert_int_equal(st.removed, 0);
	assert_int_equal(st.entries, 6);
	assert_int_equal(st.bytes, 6 * CHUNK);

	/* Down to 4 chunks: the two oldest unreferenced (2, 3) go. */
	must_ok(oci_cache_gc(f->c, 4 * CHUNK, &st, &err), &err);
	assert_int_equal(st.removed, 2);
	assert_int_equal(st.removed_bytes, 2 * CHUNK);
	assert_int_equal(st.entries, 4);
	assert_int_equal(st.bytes, 4 * CHUNK);
	assert_int_equal(fstatat(cfd, hex[2], &s, AT_SYMLINK_NOFOLLOW), -1);
	assert_int_equal(fstatat(cfd, hex[3], &s, AT_SYMLINK_NOFOLLOW), -1);
	for (int i = 0; i < 6; i++)
		if (i != 2 && i != 3)
			assert_int_equal(fstatat(cfd, hex[i], &s, AT_SYMLINK_NOFOLLOW), 0);

	/* A limit below what spores use: only unreferenced entries go. */
	must_ok(oci_cache_gc(f->c, 1, &st, &err), &err);
	assert_int_equal(st.removed, 2);
	assert_int_equal(st.entries, 2);
	assert_int_equal(st.bytes, 2 * CHUNK);
	assert_int_equal(fstatat(cfd, hex[0], &s, AT_SYMLINK_NOFOLLOW), 0);
	assert_int_equal(fstatat(cfd, hex[1], &s, AT_SYMLINK_NOFOLLOW), 0);

	/* The spore is deleted: 0 collects every unreferenced entry. */
	assert_int_equal(unlinkat(f->spore_fd, hex[0], 0), 0);
	must_ok(oci_cache_gc(f->c, 0, &st, &err), &err);
	assert_int_equal(st.removed, 1);
	assert_int_equal(st.entries, 1);
	assert_int_equal(fstatat(cfd, hex[1], &s, AT_SYMLINK_NOFOLLOW), 0);
	assert_int_equal(fstatat(f->spore_fd, hex[1], &s, AT_SYMLINK_NOFOLLOW), 0);
	/* gc leaves what is not an entry alone. */
	assert_int_equal(fstatat(cfd, "not-a-digest", &s, AT_SYMLINK_NOFOLLOW), 0);
	close(cfd);
}

static void test_verify(void **state)
{
	struct fx *f = *state;
	int cfd = chunks_fd(f);
	uint8_t buf[CHUNK], byte;
	char hex[3][SL_DIGEST_HEXLEN + 1];
	sl_digest d[3];
	sl_error_t err = NULL;
	struct oci_cache_stats st;
	bool present;
	int fd;

	for (int i = 0; i < 3; i++) {
		fill(buf, sizeof(buf), 400 + (uint32_t)i);
		sl_sha256(buf, sizeof(buf), &d[i]);
		sl_digest_hex(&d[i], hex[i]);
		must_ok(insert(f->c, buf, sizeof(buf), &d[i], &err), &err);
	}
	must_ok(oci_cache_verify(f->c, &st, &err), &err);
	assert_int_equal(st.entries, 3);
	assert_int_equal(st.bytes, 3 * CHUNK);
	assert_int_equal(st.removed, 0);

	/* Bit rot, or someone with write access: chmod +w, flip, chmod back.
	 * has() cannot see it (it trusts contents); verify must. */
	assert_int_equal(fchmodat(cfd, hex[1], 0644, 0), 0);
	fd = openat(cfd, hex[1], O_RDWR | O_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(pread(fd, &byte, 1, 1234), 1);
	byte ^= 0x01;
	assert_int_equal(pwrite(fd, &byte, 1, 1234), 1);
	close(fd);
	assert_int_equal(fchmodat(cfd, hex[1], 0444, 0), 0);
	must_ok(oci_cache_has(f->c, &d[1], CHUNK, &present, &err), &err);
	assert_true(present);

	/* A stray name in the chunk directory goes too. */
	plant_file(cfd, "stray", "y", 1, 0444);
	must_ok(oci_cache_verify(f->c, &st, &err), &err);
	assert_int_equal(st.entries, 2);
	assert_int_equal(st.bytes, 2 * CHUNK);
	assert_int_equal(st.removed, 2);
	assert_int_equal(st.removed_bytes, CHUNK + 1);
	must_ok(oci_cache_has(f->c, &d[1], CHUNK, &present, &err), &err);
	assert_false(present);
	must_ok(oci_cache_has(f->c, &d[0], CHUNK, &present, &err), &err);
	assert_true(present);
	must_ok(oci_cache_has(f->c, &d[2], CHUNK, &present, &err), &err);
	assert_true(present);
	close(cfd);
}

static void test_stale_named_tmp_removed(void **state)
{
	struct fx *f = *state;
	struct oci_cache *c2 = NULL;
	sl_error_t err = NULL;
	struct stat s;
	int tfd = openat(oci_cache_dirfd(f->c), "tmp", O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	assert_true(tfd >= 0);
	plant_file(tfd, "4242.00000000deadbeef.tmp", "partial", 7, 0600);
	set_mtime(tfd, "4242.00000000deadbeef.tmp", time(NULL) - 2 * 60);
	plant_file(tfd, "4243.00000000cafef00d.tmp", "writing", 7, 0600);
	must_ok(oci_cache_open(f->cache, &c2, &err), &err);
	oci_cache_close(c2);
	assert_int_equal(fstatat(tfd, "4242.00000000deadbeef.tmp", &s, AT_SYMLINK_NOFOLLOW), -1);
	assert_int_equal(errno, ENOENT);
	/* A live writer's file (recent) is left alone. */
	assert_int_equal(fstatat(tfd, "4243.00000000cafef00d.tmp", &s, AT_SYMLINK_NOFOLLOW), 0);
	close(tfd);
}

/* A puller killed mid-chunk: O_TMPFILE leaves nothing behind; the named
 * fallback leaves one file that the next open removes once it is stale. */
static void test_sigkill_leaves_nothing(void **state)
{
	struct fx *f = *state;
	struct oci_cache *c2 = NULL;
	sl_error_t err = NULL;
	int ws, tfd;
	pid_t pid = fork();

	assert_true(pid >= 0);
	if (pid == 0) {
		struct oci_cache_tmp t;
		uint8_t buf[CHUNK];

		fill(buf, sizeof(buf), 9);
		if (oci_cache_tmp_open(f->c, &t, &err) < 0 || sl_write_all(t.fd, buf, sizeof(buf), &err) < 0)
			_exit(1);
		raise(SIGKILL);
		_exit(2);
	}
	assert_int_equal(waitpid(pid, &ws, 0), pid);
	assert_true(WIFSIGNALED(ws));
	assert_int_equal(WTERMSIG(ws), SIGKILL);
	assert_int_equal(count_dir(f->fd, "cache/chunks/sha256"), 0);
	if (!f->named) {
		assert_int_equal(count_dir(f->fd, "cache/tmp"), 0);
		return;
	}
	assert_int_equal(count_dir(f->fd, "cache/tmp"), 1);
	/* Not stale yet: kept (its writer could be alive). */
	must_ok(oci_cache_open(f->cache, &c2, &err), &err);
	oci_cache_close(c2);
	assert_int_equal(count_dir(f->fd, "cache/tmp"), 1);
	/* A minute later it is. */
	tfd = openat(oci_cache_dirfd(f->c), "tmp", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(tfd >= 0);
	{
		DIR *d = fdopendir(dup(tfd));
		struct dirent *de;

		assert_non_null(d);
		while ((de = readdir(d)))
			if (de->d_name[0] != '.')
				set_mtime(tfd, de->d_name, time(NULL) - 61 - 1);
		closedir(d);
	}
	close(tfd);
	must_ok(oci_cache_open(f->cache, &c2, &err), &err);
	oci_cache_close(c2);
	assert_int_equal(count_dir(f->fd, "cache/tmp"), 0);
}

static void check_same_content(int a, int b, uint64_t len)
{
	sl_error_t err = NULL;
	uint8_t *x = malloc(len), *y = malloc(len);
	struct stat st;

	assert_non_null(x);
	assert_non_null(y);
	assert_int_equal(fstat(b, &st), 0);
	assert_int_equal(st.st_size, (off_t)len);
	must_ok(sl_pread_all(a, x, len, 0, &err), &err);
	must_ok(sl_pread_all(b, y, len, 0, &err), &err);
	assert_memory_equal(x, y, len);
	free(x);
	free(y);
}

/* On the scratch filesystem (ext4 or tmpfs here): no reflink, a real copy. */
static void clone_plain_in(const char *dir)
{
	char src[256], dst[256];
	uint8_t *buf;
	size_t len = 3 * 1024 * 1024 + 123;
	sl_error_t err = NULL;
	bool reflinked = true;
	int s, d;

	snprintf(src, sizeof(src), "%s/src", dir);
	snprintf(dst, sizeof(dst), "%s/dst", dir);
	buf = malloc(len);
	assert_non_null(buf);
	fill(buf, len, 7);
	s = open(src, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
	assert_true(s >= 0);
	must_ok(sl_write_all(s, buf, len, &err), &err);
	free(buf);
	d = open(dst, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
	assert_true(d >= 0);
	must_ok(oci_clone_file(s, d, len, &reflinked, &err), &err);
	assert_false(reflinked);
	check_same_content(s, d, len);
	/* A prefix, over a longer destination: exactly len bytes result. */
	must_ok(oci_clone_file(s, d, 4096 + 5, &reflinked, &err), &err);
	assert_false(reflinked);
	check_same_content(s, d, 4096 + 5);
	/* More than there is: refused. */
	assert_int_equal(oci_clone_file(s, d, len + 1, &reflinked, &err), -1);
	sl_error_free(&err);
	close(s);
	close(d);
	unlink(src);
	unlink(dst);
}

static void test_clone_no_reflink(void **state)
{
	struct fx *f = *state;
	char shm[] = "/dev/shm/oci-cache-unit-XXXXXX";

	clone_plain_in(f->path);
	if (mkdtemp(shm)) {
		clone_plain_in(shm);
		rmdir(shm);
	}
}

/* The XFS fixture: a loop-mounted reflink=1 filesystem, torn down in
 * every path by the teardown (which cmocka runs after failures too). */
struct xfs_fx {
	char dir[64];
	char img[96], mnt[96];
	char loop[64];
	bool mounted;
};

static int run(const char *cmd)
{
	char full[512];
	int r;

	snprintf(full, sizeof(full), "PATH=\"$PATH:/usr/sbin:/sbin\" %s >/dev/null 2>&1", cmd);
	r = system(full);
	return r == -1 ? -1 : (WIFEXITED(r) ? WEXITSTATUS(r) : 128);
}

static int xfs_setup(void **state)
{
	struct xfs_fx *x = calloc(1, sizeof(*x));

	if (!x)
		return -1;
	snprintf(x->dir, sizeof(x->dir), "/tmp/oci-cache-xfs-XXXXXX");
	if (!mkdtemp(x->dir)) {
		x->dir[0] = '\0';
		*state = x;
		return -1;
	}
	snprintf(x->img, sizeof(x->img), "%s/img", x->dir);
	snprintf(x->mnt, sizeof(x->mnt), "%s/mnt", x->dir);
	*state = x;
	return 0;
}

static int xfs_teardown(void **state)
{
	struct xfs_fx *x = *state;
	char cmd[160];

	if (!x)
		return 0;
	if (x->mounted && umount2(x->mnt, 0) < 0) {
		fprintf(stderr, "umount %s: %s (retrying lazily)\n", x->mnt, strerror(errno));
		umount2(x->mnt, MNT_DETACH);
	}
	if (x->loop[0]) {
		snprintf(cmd, sizeof(cmd), "losetup -d %s", x->loop);
		if (run(cmd) != 0)
			fprintf(stderr, "losetup -d %s failed\n", x->loop);
	}
	if (x->dir[0]) {
		unlink(x->img);
		rmdir(x->mnt);
		rmdir(x->dir);
	}
	free(x);
	return 0;
}

static bool extents_shared(int fd, uint64_t *first_physical)
{
	union {
		struct fiemap fm;
		char raw[sizeof(struct fiemap) + 32 * sizeof(struct fiemap_extent)];
	} u;

	memset(&u, 0, sizeof(u));
	u.fm.fm_length = FIEMAP_MAX_OFFSET;
	u.fm.fm_flags = FIEMAP_FLAG_SYNC;
	u.fm.fm_extent_count = 32;
	if (ioctl(fd, FS_IOC_FIEMAP, &u.fm) < 0 || u.fm.fm_mapped_extents == 0)
		return false;
	for (unsigned i = 0; i < u.fm.fm_mapped_extents; i++)
		if (!(u.fm.fm_extents[i].fe_flags & FIEMAP_EXTENT_SHARED))
			return false;
	*first_physical = u.fm.fm_extents[0].fe_physical;
	return true;
}

static void test_clone_reflink_xfs(void **state)
{
	struct xfs_fx *x = *state;
	char cmd[256], src[128], dst[128];
	size_t len = 4 * 1024 * 1024;
	uint8_t *buf;
	sl_error_t err = NULL;
	bool reflinked = false;
	uint64_t ps = 0, pd = 1;
	FILE *p;
	int fd, s, d;

	if (geteuid() != 0) {
		fprintf(stderr, "skip: the XFS reflink test needs root (mkfs, losetup, mount)\n");
		skip();
	}
	if (run("command -v mkfs.xfs") != 0 || run("command -v losetup") != 0) {
		fprintf(stderr, "skip: mkfs.xfs or losetup not installed\n");
		skip();
	}
	fd = open(x->img, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, 300 << 20), 0); /* sparse */
	close(fd);
	snprintf(cmd, sizeof(cmd), "mkfs.xfs -q -m reflink=1 %s", x->img);
	if (run(cmd) != 0) {
		fprintf(stderr, "skip: mkfs.xfs -m reflink=1 failed (too old for reflink?)\n");
		skip();
	}
	snprintf(cmd, sizeof(cmd), "PATH=\"$PATH:/usr/sbin:/sbin\" losetup --find --show %s 2>/dev/null", x->img);
	p = popen(cmd, "r");
	assert_non_null(p);
	if (!fgets(x->loop, sizeof(x->loop), p))
		x->loop[0] = '\0';
	pclose(p);
	x->loop[strcspn(x->loop, "\n")] = '\0';
	if (strncmp(x->loop, "/dev/", 5) != 0) {
		x->loop[0] = '\0';
		fprintf(stderr, "skip: losetup found no free loop device (container without /dev/loop*?)\n");
		skip();
	}
	assert_int_equal(mkdir(x->mnt, 0700), 0);
	if (mount(x->loop, x->mnt, "xfs", 0, NULL) < 0) {
		fprintf(stderr, "skip: cannot mount XFS on %s: %s\n", x->loop, strerror(errno));
		skip();
	}
	x->mounted = true;

	snprintf(src, sizeof(src), "%s/src", x->mnt);
	snprintf(dst, sizeof(dst), "%s/dst", x->mnt);
	buf = malloc(len);
	assert_non_null(buf);
	fill(buf, len, 11);
	s = open(src, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
	assert_true(s >= 0);
	must_ok(sl_write_all(s, buf, len, &err), &err);
	free(buf);
	assert_int_equal(fsync(s), 0);
	d = open(dst, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
	assert_true(d >= 0);
	must_ok(oci_clone_file(s, d, len, &reflinked, &err), &err);
	assert_true(reflinked);
	check_same_content(s, d, len);
	/* The proof that nothing was copied: both files map the same blocks,
	 * marked shared. */
	assert_true(extents_shared(s, &ps));
	assert_true(extents_shared(d, &pd));
	assert_int_equal(ps, pd);
	close(s);
	close(d);
	unlink(src);
	unlink(dst);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_default_dir),
		cmocka_unit_test_setup_teardown(test_open_layout_and_permissions, setup_tmpfile, fx_teardown),
		cmocka_unit_test_setup_teardown(test_tmp_flavour, setup_tmpfile, fx_teardown),
		cmocka_unit_test_setup_teardown(test_tmp_flavour, setup_named, fx_teardown),
		cmocka_unit_test_setup_teardown(test_insert_good, setup_tmpfile, fx_teardown),
		cmocka_unit_test_setup_teardown(test_insert_good, setup_named, fx_teardown),
		cmocka_unit_test_setup_teardown(test_insert_wrong_digest, setup_tmpfile, fx_teardown),
		cmocka_unit_test_setup_teardown(test_insert_wrong_digest, setup_named, fx_teardown),
		cmocka_unit_test_setup_teardown(test_has_removes_bad_entries, setup_tmpfile, fx_teardown),
		cmocka_unit_test_setup_teardown(test_commit_replaces_bad_entry, setup_tmpfile, fx_teardown),
		cmocka_unit_test_setup_teardown(test_commit_replaces_bad_entry, setup_named, fx_teardown),
		cmocka_unit_test_setup_teardown(test_link_into_spore, setup_tmpfile, fx_teardown),
		cmocka_unit_test_setup_teardown(test_concurrent_commits, setup_tmpfile, fx_teardown),
		cmocka_unit_test_setup_teardown(test_gc, setup_tmpfile, fx_teardown),
		cmocka_unit_test_setup_teardown(test_verify, setup_tmpfile, fx_teardown),
		cmocka_unit_test_setup_teardown(test_stale_named_tmp_removed, setup_named, fx_teardown),
		cmocka_unit_test_setup_teardown(test_sigkill_leaves_nothing, setup_tmpfile, fx_teardown),
		cmocka_unit_test_setup_teardown(test_sigkill_leaves_nothing, setup_named, fx_teardown),
		cmocka_unit_test_setup_teardown(test_clone_no_reflink, setup_tmpfile, fx_teardown),
		cmocka_unit_test_setup_teardown(test_clone_reflink_xfs, xfs_setup, xfs_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
