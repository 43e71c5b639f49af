/* The node-local chunk cache: verified read-only chunks shared by hard link, safe under crashes and concurrency. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/fs.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "oci/cache.h"
#include "sl/digest.h"
#include "sl/error.h"
#include "sl/file.h"

#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1 << 0)
#endif

/*
 * Layout under the cache directory (all mode 0700, owned by us):
 *
 *   chunks/sha256/<64 hex>   one verified chunk, mode 0444, named by its sha256
 *   tmp/                     chunks being written (O_TMPFILE, or the named
 *                            fallback "<pid>.<random>.tmp")
 *
 * Every operation goes through the three directory fds opened here, never
 * through string paths, so a rename of the cache directory or a symlink
 * planted on the way cannot redirect a write.
 */
struct oci_cache {
	int root_fd;
	int chunks_fd; /* chunks/sha256 */
	int tmp_fd;
	/* Set by the test hook or once O_TMPFILE turned out to be missing;
	 * read and written with relaxed atomics because pullers may share one
	 * handle between download threads. */
	bool no_tmpfile;
};

/* A named temp file untouched this long belongs to a dead writer: a live
 * one writes its 2 MiB in well under a second and commits right after. */
#define STALE_TMP_SECONDS 60
#define HASH_BLOCK (1024 * 1024)
#define COPY_BLOCK (128 * 1024)
/* Attempts at linking over an entry that keeps turning out bad (a hostile
 * or broken co-writer); past this the commit gives up instead of looping. */
#define LINK_TRIES 8

static void closedirp(DIR **d)
{
	if (*d)
		closedir(*d);
}
#define _cleanup_closedir_ __attribute__((cleanup(closedirp)))

/* The test hook and the runtime fallback share one flag. */
static bool tmpfile_disabled(const struct oci_cache *c)
{
	return __atomic_load_n(&c->no_tmpfile, __ATOMIC_RELAXED);
}

static void tmpfile_disable(struct oci_cache *c)
{
	__atomic_store_n(&c->no_tmpfile, true, __ATOMIC_RELAXED);
}

int oci_cache_default_dir(char *out, size_t cap, sl_error_t *err)
{
	const char *env = getenv("SPORE_CACHE_DIR");
	const char *xdg = getenv("XDG_CACHE_HOME");
	const char *home = getenv("HOME");
	int n;

	if (!out || cap == 0)
		return sl_error_set(err, SL_E_INVALID, "cache directory: no output buffer");
	/* Same precedence as the seal directory (vmm/cli/cli_util.c): an
	 * explicit setting, the system location for root, then the XDG rules,
	 * which ignore relative paths. */
	if (env && env[0])
		n = snprintf(out, cap, "%s", env);
	else if (geteuid() == 0)
		n = snprintf(out, cap, "/var/lib/sporelet/cache");
	else if (xdg && xdg[0] == '/')
		n = snprintf(out, cap, "%s/sporelet", xdg);
	else if (home && home[0] == '/')
		n = snprintf(out, cap, "%s/.cache/sporelet", home);
	else
		return sl_error_set(err, SL_E_NOT_FOUND,
				    "no cache directory: set SPORE_CACHE_DIR (XDG_CACHE_HOME and HOME are unset or relative)");
	if (n < 0 || (size_t)n >= cap) {
		out[0] = '\0';
		return sl_error_set(err, SL_E_LIMIT, "cache directory path is longer than %zu bytes", cap - 1);
	}
	return 0;
}

/* mkdir -p for a path the operator chose (so symlinks on it are theirs). */
static int mkdir_parents(const char *dir, sl_error_t *err)
{
	char path[PATH_MAX];

	if (snprintf(path, sizeof(path), "%s", dir) >= (int)sizeof(path))
		return sl_error_set(err, SL_E_LIMIT, "cache directory path too long");
	for (char *p = path + 1;; p++) {
		if (*p == '/' || *p == '\0') {
			char ch = *p;

			*p = '\0';
			if (mkdir(path, 0700) < 0 && errno != EEXIST)
				return sl_error_sys(err, "create cache directory %s", path);
			if (!ch)
				return 0;
			*p = ch;
		}
	}
}

/* has() trusts entry contents, so whoever can write these directories could
 * make a VM map anything: they must be ours and closed to everyone else. */
static int check_private_dir(int fd, const char *dir, const char *what, sl_error_t *err)
{
	struct stat st;

	if (fstat(fd, &st) < 0)
		return sl_error_sys(err, "stat cache directory %s%s", dir, what);
	if (st.st_uid != geteuid() || (st.st_mode & 022))
		return sl_error_set(err, SL_E_INVALID,
				    "cache directory %s%s must be owned by uid %u and not group/other-writable "
				    "(owner %u, mode %04o)",
				    dir, what, (unsigned)geteuid(), (unsigned)st.st_uid,
				    (unsigned)(st.st_mode & 07777));
	return 0;
}

static int open_subdir(int root_fd, const char *dir, const char *rel, sl_error_t *err)
{
	_cleanup_close_ int fd = -1;
	char what[32];

	snprintf(what, sizeof(what), "/%s", rel);
	if (sl_mkdir_beneath(root_fd, rel, 0700, err) < 0)
		return sl_error_wrap(err, "cache directory %s", dir);
	fd = sl_open_beneath(root_fd, rel, O_RDONLY | O_DIRECTORY, 0, err);
	if (fd < 0)
		return sl_error_wrap(err, "cache directory %s", dir);
	if (check_private_dir(fd, dir, what, err) < 0)
		return -1;
	return sl_steal_fd(fd);
}

/* Removes whatever is at dfd/name: directories recursively, anything else
 * (symlinks included, never followed) by unlink. Gone already is fine. */
static int remove_entry(int dfd, const char *name, bool is_dir, sl_error_t *err)
{
	if (is_dir)
		return sl_remove_tree(dfd, name, err);
	if (unlinkat(dfd, name, 0) < 0 && errno != ENOENT)
		return sl_error_sys(err, "remove %s", name);
	return 0;
}

/* Removes named temp files whose writer died (see STALE_TMP_SECONDS).
 * O_TMPFILE files never show up here: the kernel frees them with their fd. */
static int clean_stale_tmp(struct oci_cache *c, sl_error_t *err)
{
	_cleanup_closedir_ DIR *d = NULL;
	struct timespec now;
	int fd;

	fd = openat(c->tmp_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return sl_error_sys(err, "open cache tmp directory");
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return sl_error_sys(err, "open cache tmp directory");
	}
	clock_gettime(CLOCK_REALTIME, &now);
	for (;;) {
		struct dirent *de;
		struct stat st;

		errno = 0;
		de = readdir(d);
		if (!de) {
			if (errno)
				return sl_error_sys(err, "read cache tmp directory");
			return 0;
		}
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (fstatat(c->tmp_fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue; /* removed by a concurrent open */
		if (now.tv_sec - st.st_mtim.tv_sec <= STALE_TMP_SECONDS)
			continue;
		if (remove_entry(c->tmp_fd, de->d_name, S_ISDIR(st.st_mode), err) < 0)
			return sl_error_wrap(err, "cache tmp directory");
	}
}

int oci_cache_open(const char *dir, struct oci_cache **out, sl_error_t *err)
{
	struct oci_cache *c;
	const char *hook;

	*out = NULL;
	if (!dir || !dir[0])
		return sl_error_set(err, SL_E_INVALID, "empty cache directory path");
	if (mkdir_parents(dir, err) < 0)
		return -1;
	c = calloc(1, sizeof(*c));
	if (!c)
		return sl_error_set(err, SL_E_NOMEM, "cache: out of memory");
	c->chunks_fd = c->tmp_fd = -1;
	c->root_fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (c->root_fd < 0) {
		sl_error_sys(err, "open cache directory %s", dir);
		goto fail;
	}
	if (check_private_dir(c->root_fd, dir, "", err) < 0)
		goto fail;
	c->chunks_fd = open_subdir(c->root_fd, dir, "chunks/sha256", err);
	if (c->chunks_fd < 0)
		goto fail;
	c->tmp_fd = open_subdir(c->root_fd, dir, "tmp", err);
	if (c->tmp_fd < 0)
		goto fail;
	/* Test hook (documented in docs/node-cache.md): forces the named
	 * fallback so tests cover it on filesystems that have O_TMPFILE. */
	hook = getenv("SPORE_CACHE_NO_TMPFILE");
	c->no_tmpfile = hook && !strcmp(hook, "1");
	if (clean_stale_tmp(c, err) < 0) {
		sl_error_wrap(err, "cache %s", dir);
		goto fail;
	}
	*out = c;
	return 0;
fail:
	oci_cache_close(c);
	return -1;
}

void oci_cache_close(struct oci_cache *c)
{
	if (!c)
		return;
	if (c->root_fd >= 0)
		close(c->root_fd);
	if (c->chunks_fd >= 0)
		close(c->chunks_fd);
	if (c->tmp_fd >= 0)
		close(c->tmp_fd);
	free(c);
}

int oci_cache_dirfd(const struct oci_cache *c)
{
	return c->root_fd;
}

/* Decides whether st describes a usable entry: a regular, read-only file of
 * the expected size (0: any size). */
static bool entry_good(const struct stat *st, uint64_t size)
{
	return S_ISREG(st->st_mode) && !(st->st_mode & 0222) &&
	       (size == 0 || (uint64_t)st->st_size == size);
}

/* Looks at the entry named hex; a bad one is removed. *st_out gets the
 * good entry's stat. */
static int check_entry(struct oci_cache *c, const char *hex, uint64_t size, bool *good,
		       struct stat *st_out, sl_error_t *err)
{
	struct stat st;

	*good = false;
	if (fstatat(c->chunks_fd, hex, &st, AT_SYMLINK_NOFOLLOW) < 0) {
		if (errno == ENOENT)
			return 0;
		return sl_error_sys(err, "cache: stat chunk %s", hex);
	}
	if (!entry_good(&st, size)) {
		/* Never used, so never trusted: a symlink could point anywhere,
		 * a FIFO would hang a reader, and a writable file may have
		 * changed since it was verified. */
		if (remove_entry(c->chunks_fd, hex, S_ISDIR(st.st_mode), err) < 0)
			return sl_error_wrap(err, "cache: remove bad chunk entry");
		return 0;
	}
	*good = true;
	if (st_out)
		*st_out = st;
	return 0;
}

int oci_cache_has(struct oci_cache *c, const sl_digest *d, uint64_t size, bool *present, sl_error_t *err)
{
	char hex[SL_DIGEST_HEXLEN + 1];

	sl_digest_hex(d, hex);
	return check_entry(c, hex, size, present, NULL, err);
}

static uint64_t tmp_random(void)
{
	static uint64_t counter;
	uint64_t r;

	if (getrandom(&r, sizeof(r), GRND_NONBLOCK) == (ssize_t)sizeof(r))
		return r;
	/* No entropy yet (early boot): uniqueness, not secrecy, is needed,
	 * and O_EXCL catches any collision. */
	return (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32) ^
	       __atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED) * 0x9e3779b97f4a7c15ull;
}

static void tmp_name(char name[64])
{
	snprintf(name, 64, "%d.%016" PRIx64 ".tmp", (int)getpid(), tmp_random());
}

int oci_cache_tmp_open(struct oci_cache *c, struct oci_cache_tmp *t, sl_error_t *err)
{
	t->fd = -1;
	t->name[0] = '\0';
	if (!tmpfile_disabled(c)) {
		/* O_RDWR: commit reads the bytes back to hash them. No O_EXCL:
		 * that would forbid the linkat that gives the file its name. */
		t->fd = openat(c->tmp_fd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
		if (t->fd >= 0)
			return 0;
		/* EISDIR: a kernel that predates O_TMPFILE saw O_DIRECTORY. */
		if (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL)
			return sl_error_sys(err, "cache: create temp file");
		tmpfile_disable(c);
	}
	for (int tries = 0;; tries++) {
		tmp_name(t->name);
		t->fd = openat(c->tmp_fd, t->name, O_CREAT | O_EXCL | O_RDWR | O_NOFOLLOW | O_CLOEXEC, 0600);
		if (t->fd >= 0)
			return 0;
		if (errno != EEXIST || tries >= 16) {
			t->name[0] = '\0';
			return sl_error_sys(err, "cache: create temp file");
		}
	}
}

void oci_cache_tmp_abort(struct oci_cache *c, struct oci_cache_tmp *t)
{
	int saved = errno;

	if (t->name[0])
		unlinkat(c->tmp_fd, t->name, 0);
	t->name[0] = '\0';
	if (t->fd >= 0)
		close(t->fd);
	t->fd = -1;
	errno = saved;
}

/* The caller's digest is a claim; this hash of the bytes actually in the
 * file is the check. pread from 0 leaves the caller's offset irrelevant; an
 * aligned buffer serves a temp file the caller switched to O_DIRECT. */
static int hash_fd(int fd, sl_digest *out, uint64_t *size, sl_error_t *err)
{
	_cleanup_free_ unsigned char *buf = aligned_alloc(4096, HASH_BLOCK);
	sl_sha256_ctx *h = sl_sha256_new();
	uint64_t off = 0;

	if (!buf || !h) {
		sl_sha256_final(h, out);
		return sl_error_set(err, SL_E_NOMEM, "cache: out of memory");
	}
	for (;;) {
		ssize_t n = pread(fd, buf, HASH_BLOCK, (off_t)off);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			sl_sha256_final(h, out);
			return sl_error_sys(err, "cache: read back temp file");
		}
		if (n == 0)
			break;
		sl_sha256_update(h, buf, (size_t)n);
		off += (uint64_t)n;
	}
	sl_sha256_final(h, out);
	*size = off;
	return 0;
}

/* Gives an O_TMPFILE file a name. /proc/self/fd works unprivileged;
 * AT_EMPTY_PATH is the way without /proc (it needs CAP_DAC_READ_SEARCH). */
static int link_fd(int fd, int dfd, const char *name)
{
	char proc[64];
	int e;

	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
	if (linkat(AT_FDCWD, proc, dfd, name, AT_SYMLINK_FOLLOW) == 0)
		return 0;
	e = errno;
	if (e == ENOENT && access("/proc/self/fd", F_OK) < 0) {
		if (linkat(fd, "", dfd, name, AT_EMPTY_PATH) == 0)
			return 0;
		e = errno;
	}
	errno = e;
	return -1;
}

/* Puts the verified temp file at chunks/sha256/hex unless an entry is
 * there already. Returns 1 if it linked, 0 on EEXIST, -1 on error. */
static int link_noreplace(struct oci_cache *c, struct oci_cache_tmp *t, const char *hex, sl_error_t *err)
{
	if (!t->name[0]) {
		/* link(2) never replaces: EEXIST if a concurrent puller won. */
		if (link_fd(t->fd, c->chunks_fd, hex) == 0)
			return 1;
		if (errno == EEXIST)
			return 0;
		return sl_error_sys(err, "cache: link chunk %s", hex);
	}
	if (renameat2(c->tmp_fd, t->name, c->chunks_fd, hex, RENAME_NOREPLACE) == 0) {
		t->name[0] = '\0';
		return 1;
	}
	if (errno == EEXIST)
		return 0;
	if (errno != EINVAL && errno != ENOSYS)
		return sl_error_sys(err, "cache: rename chunk %s into place", hex);
	/* No RENAME_NOREPLACE on this filesystem: link(2) never replaces
	 * either, and the temp name is dropped by the caller. */
	if (linkat(c->tmp_fd, t->name, c->chunks_fd, hex, 0) == 0)
		return 1;
	if (errno == EEXIST)
		return 0;
	return sl_error_sys(err, "cache: link chunk %s", hex);
}

/* Atomically replaces a bad non-directory entry with the verified temp
 * file: readers see either the old entry or ours, never nothing. */
static int link_replace(struct oci_cache *c, struct oci_cache_tmp *t, const char *hex, sl_error_t *err)
{
	char name[64];

	if (t->name[0]) {
		if (renameat(c->tmp_fd, t->name, c->chunks_fd, hex) < 0)
			return sl_error_sys(err, "cache: replace chunk %s", hex);
		t->name[0] = '\0';
		return 0;
	}
	/* An O_TMPFILE file cannot be renamed: give it a fresh name first. */
	for (int tries = 0;; tries++) {
		tmp_name(name);
		if (link_fd(t->fd, c->tmp_fd, name) == 0)
			break;
		if (errno != EEXIST || tries >= 16)
			return sl_error_sys(err, "cache: link temp file");
	}
	if (renameat(c->tmp_fd, name, c->chunks_fd, hex) < 0) {
		int e = errno;

		unlinkat(c->tmp_fd, name, 0);
		return sl_error_errno(err, e, "cache: replace chunk %s", hex);
	}
	return 0;
}

static int commit_link(struct oci_cache *c, struct oci_cache_tmp *t, const char *hex, uint64_t size,
		       sl_error_t *err)
{
	for (int tries = 0; tries < LINK_TRIES; tries++) {
		sl_error_t lerr = NULL;
		struct stat st;
		int r = link_noreplace(c, t, hex, err);

		if (r != 0)
			return r < 0 ? -1 : 0;
		/* Someone got there first. A concurrent puller's entry is as
		 * good as ours (it was verified too); anything else goes. */
		if (fstatat(c->chunks_fd, hex, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			if (errno == ENOENT)
				continue; /* removed meanwhile: try again */
			return sl_error_sys(err, "cache: stat chunk %s", hex);
		}
		/* Exact size, not entry_good's "0 means any": the empty chunk
		 * is a real (if useless) entry. */
		if (S_ISREG(st.st_mode) && !(st.st_mode & 0222) && (uint64_t)st.st_size == size)
			return 0;
		if (S_ISDIR(st.st_mode)) {
			/* rename(2) cannot put a file over a directory. */
			if (sl_remove_tree(c->chunks_fd, hex, err) < 0)
				return sl_error_wrap(err, "cache: remove bad chunk entry");
			continue;
		}
		if (link_replace(c, t, hex, &lerr) == 0)
			return 0;
		/* EISDIR/ENOTEMPTY: a directory appeared since the stat. */
		if (lerr && (lerr->sys_errno == EISDIR || lerr->sys_errno == ENOTEMPTY)) {
			sl_error_free(&lerr);
			continue;
		}
		if (err) {
			sl_error_free(err);
			*err = sl_steal_ptr(lerr);
		}
		sl_error_free(&lerr);
		return -1;
	}
	return sl_error_set(err, SL_E_IO, "cache: chunk %s: entry keeps changing under us, gave up", hex);
}

int oci_cache_tmp_commit(struct oci_cache *c, struct oci_cache_tmp *t, const sl_digest *d, sl_error_t *err)
{
	char hex[SL_DIGEST_HEXLEN + 1], want[SL_DIGEST_STRLEN], got[SL_DIGEST_STRLEN];
	sl_digest actual;
	uint64_t size = 0;
	int r = -1;

	sl_digest_hex(d, hex);
	if (t->fd < 0) {
		sl_error_set(err, SL_E_INVALID, "cache: commit of a closed temp file");
		goto out;
	}
	if (hash_fd(t->fd, &actual, &size, err) < 0)
		goto out;
	if (!sl_digest_equal(&actual, d)) {
		sl_digest_format(d, want);
		sl_digest_format(&actual, got);
		sl_error_set(err, SL_E_INTEGRITY, "cache: chunk content is %s, expected %s (%" PRIu64 " bytes)",
			     got, want, size);
		goto out;
	}
	/* Data before name: after a crash a name never points at bytes that
	 * did not reach the disk. 0444 before the name too, so no reader sees
	 * a writable entry (has() would throw it away). */
	if (fsync(t->fd) < 0) {
		sl_error_sys(err, "cache: fsync chunk %s", hex);
		goto out;
	}
	if (fchmod(t->fd, 0444) < 0) {
		sl_error_sys(err, "cache: chmod chunk %s", hex);
		goto out;
	}
	if (commit_link(c, t, hex, size, err) < 0)
		goto out;
	if (sl_fsync_dir(c->chunks_fd, err) < 0) {
		sl_error_wrap(err, "cache: chunk %s", hex);
		goto out;
	}
	r = 0;
out:
	oci_cache_tmp_abort(c, t);
	return r;
}

int oci_cache_tmp_commit_many(struct oci_cache *c, struct oci_cache_tmp *t, const sl_digest *d, size_t n,
			      unsigned flags, sl_error_t *err)
{
	char hex[SL_DIGEST_HEXLEN + 1], want[SL_DIGEST_STRLEN], got[SL_DIGEST_STRLEN];
	_cleanup_free_ uint64_t *sizes = calloc(n ? n : 1, sizeof(*sizes));
	size_t i;
	int r = -1;

	if (!sizes) {
		sl_error_set(err, SL_E_NOMEM, "cache: out of memory");
		goto out;
	}
	for (i = 0; i < n; i++) {
		sl_digest actual;
		struct stat st;

		sl_digest_hex(&d[i], hex);
		if (t[i].fd < 0) {
			sl_error_set(err, SL_E_INVALID, "cache: commit of a closed temp file");
			goto out;
		}
		if (flags & OCI_CACHE_STREAM_VERIFIED) {
			if (fstat(t[i].fd, &st) < 0) {
				sl_error_sys(err, "cache: stat chunk %s", hex);
				goto out;
			}
			sizes[i] = (uint64_t)st.st_size;
		} else {
			if (hash_fd(t[i].fd, &actual, &sizes[i], err) < 0)
				goto out;
			if (!sl_digest_equal(&actual, &d[i])) {
				sl_digest_format(&d[i], want);
				sl_digest_format(&actual, got);
				sl_error_set(err, SL_E_INTEGRITY,
					     "cache: chunk content is %s, expected %s (%" PRIu64 " bytes)", got, want,
					     sizes[i]);
				goto out;
			}
		}
		if (fchmod(t[i].fd, 0444) < 0) {
			sl_error_sys(err, "cache: chmod chunk %s", hex);
			goto out;
		}
	}
	/* Data before names, as in oci_cache_tmp_commit, but one syncfs for the
	 * batch instead of an fsync per chunk: 512 chunks took 2.5 s of fsyncs
	 * here. Unless the caller synced each file already, off this path. */
	if (n && !(flags & OCI_CACHE_SYNCED) && syncfs(t[0].fd) < 0) {
		sl_error_sys(err, "cache: syncfs");
		goto out;
	}
	for (i = 0; i < n; i++) {
		sl_digest_hex(&d[i], hex);
		if (commit_link(c, &t[i], hex, sizes[i], err) < 0)
			goto out;
	}
	if (n && sl_fsync_dir(c->chunks_fd, err) < 0) {
		sl_error_wrap(err, "cache: chunks directory");
		goto out;
	}
	r = 0;
out:
	for (i = 0; i < n; i++)
		oci_cache_tmp_abort(c, &t[i]);
	return r;
}

/* The inode now in the spore is what a VM will map, so that is what gets
 * checked (checking the cache entry first would leave a window). A bad one
 * is unlinked on both sides and reported missing, so the puller fetches it
 * again. */
static int check_linked(struct oci_cache *c, const char *hex, int dfd, const char *base, const char *relpath,
			sl_error_t *err)
{
	struct stat st;
	bool good;

	if (fstatat(dfd, base, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return sl_error_sys(err, "cache: stat %s", relpath);
	if (entry_good(&st, 0))
		return 0;
	if (unlinkat(dfd, base, 0) < 0 && errno != ENOENT)
		return sl_error_sys(err, "cache: remove bad link %s", relpath);
	if (check_entry(c, hex, 0, &good, NULL, err) < 0)
		return -1;
	return sl_error_set(err, SL_E_NOT_FOUND,
			    "cache: chunk %s is not in the cache (a bad entry was removed)", hex);
}

int oci_cache_link(struct oci_cache *c, const sl_digest *d, int dirfd, const char *relpath, sl_error_t *err)
{
	char hex[SL_DIGEST_HEXLEN + 1], parent[PATH_MAX];
	_cleanup_close_ int pfd = -1;
	const char *base = relpath, *slash;
	int dfd = dirfd;

	sl_digest_hex(d, hex);
	if (!relpath || !relpath[0] || relpath[0] == '/')
		return sl_error_set(err, SL_E_INVALID, "cache: link path must be relative and not empty");
	/* The parents are resolved beneath dirfd with no symlink allowed, so
	 * a link can only land inside the spore directory. */
	slash = strrchr(relpath, '/');
	if (slash) {
		size_t n = (size_t)(slash - relpath);

		if (n >= sizeof(parent))
			return sl_error_set(err, SL_E_LIMIT, "cache: link path too long");
		memcpy(parent, relpath, n);
		parent[n] = '\0';
		base = slash + 1;
		if (!base[0] || !strcmp(base, ".") || !strcmp(base, ".."))
			return sl_error_set(err, SL_E_INVALID, "cache: %s does not name a file", relpath);
		if (n > 0) {
			pfd = sl_open_beneath(dirfd, parent, O_PATH | O_DIRECTORY, 0, err);
			if (pfd < 0)
				return sl_error_wrap(err, "cache: link chunk %s", hex);
			dfd = pfd;
		}
	} else if (!strcmp(base, ".") || !strcmp(base, "..")) {
		return sl_error_set(err, SL_E_INVALID, "cache: %s does not name a file", relpath);
	}
	/* flags 0: a symlink in the cache is linked as itself, never
	 * followed; the check below then throws it out. */
	if (linkat(c->chunks_fd, hex, dfd, base, 0) == 0)
		return check_linked(c, hex, dfd, base, relpath, err);
	switch (errno) {
	case EXDEV:
		return sl_error_set(err, SL_E_UNSUPPORTED,
				    "cache: cannot hard-link chunk %s to %s: the spore directory must be on "
				    "the same filesystem as the chunk cache, so that every VM maps one "
				    "page-cache copy of each chunk (move the spore directory or set "
				    "SPORE_CACHE_DIR)",
				    hex, relpath);
	case ENOENT:
		return sl_error_set(err, SL_E_NOT_FOUND, "cache: chunk %s is not in the cache", hex);
	case EEXIST: {
		struct stat a, b;

		/* Linking again what is already linked is not an error. */
		if (fstatat(c->chunks_fd, hex, &a, AT_SYMLINK_NOFOLLOW) == 0 &&
		    fstatat(dfd, base, &b, AT_SYMLINK_NOFOLLOW) == 0 && a.st_dev == b.st_dev &&
		    a.st_ino == b.st_ino)
			return 0;
		errno = EEXIST;
		return sl_error_sys(err, "cache: link chunk %s to %s", hex, relpath);
	}
	case EMLINK:
		return sl_error_sys(err, "cache: link chunk %s to %s (the filesystem's link-count limit)", hex,
				    relpath);
	default:
		return sl_error_sys(err, "cache: link chunk %s to %s", hex, relpath);
	}
}

static bool clone_unsupported(int e)
{
	return e == EOPNOTSUPP || e == EINVAL || e == EXDEV || e == ENOTTY;
}

/* read/write copy of [off, len): the last resort, works everywhere. */
static int copy_rw(int src, int dst, uint64_t off, uint64_t len, sl_error_t *err)
{
	_cleanup_free_ char *buf = malloc(COPY_BLOCK);

	if (!buf)
		return sl_error_set(err, SL_E_NOMEM, "copy: out of memory");
	while (off < len) {
		size_t want = len - off < COPY_BLOCK ? (size_t)(len - off) : COPY_BLOCK;
		ssize_t n = pread(src, buf, want, (off_t)off);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return sl_error_sys(err, "copy: read at offset %" PRIu64, off);
		}
		if (n == 0)
			return sl_error_set(err, SL_E_IO, "copy: source ends at %" PRIu64 " of %" PRIu64 " bytes",
					    off, len);
		for (ssize_t done = 0; done < n;) {
			ssize_t w = pwrite(dst, buf + done, (size_t)(n - done), (off_t)(off + (uint64_t)done));

			if (w < 0) {
				if (errno == EINTR)
					continue;
				return sl_error_sys(err, "copy: write at offset %" PRIu64, off + (uint64_t)done);
			}
			done += w;
		}
		off += (uint64_t)n;
	}
	return 0;
}

int oci_clone_file(int src_fd, int dst_fd, uint64_t len, bool *reflinked, sl_error_t *err)
{
	struct stat st;
	uint64_t off = 0;
	int r;

	*reflinked = false;
	if (fstat(src_fd, &st) < 0)
		return sl_error_sys(err, "clone: stat source");
	if ((uint64_t)st.st_size < len)
		return sl_error_set(err, SL_E_INVALID, "clone: source has %lld bytes, %" PRIu64 " wanted",
				    (long long)st.st_size, len);
	/* A reflink shares the extents: no data is copied and the copy's
	 * writes unshare only the blocks they touch. FICLONE takes the whole
	 * file; a prefix needs FICLONERANGE (block-aligned unless at EOF). */
	if ((uint64_t)st.st_size == len) {
		r = ioctl(dst_fd, FICLONE, src_fd);
	} else {
		struct file_clone_range fcr = { .src_fd = src_fd, .src_length = len };

		r = ioctl(dst_fd, FICLONERANGE, &fcr);
	}
	if (r == 0) {
		if (ftruncate(dst_fd, (off_t)len) < 0)
			return sl_error_sys(err, "clone: truncate destination");
		*reflinked = true;
		return 0;
	}
	if (!clone_unsupported(errno))
		return sl_error_sys(err, "clone: FICLONE");

	/* In-kernel copy: no round trip through user space. */
	while (off < len) {
		loff_t in = (loff_t)off, outo = (loff_t)off;
		ssize_t n = copy_file_range(src_fd, &in, dst_fd, &outo, (size_t)(len - off), 0);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (clone_unsupported(errno) || errno == ENOSYS)
				break; /* finish with read/write from where we are */
			return sl_error_sys(err, "clone: copy_file_range at offset %" PRIu64, off);
		}
		if (n == 0)
			break; /* source shrank, or a filesystem that says 0: read/write decides */
		off += (uint64_t)n;
	}
	if (off < len && copy_rw(src_fd, dst_fd, off, len, err) < 0)
		return -1;
	if (fstat(dst_fd, &st) < 0)
		return sl_error_sys(err, "clone: stat destination");
	if ((uint64_t)st.st_size != len && ftruncate(dst_fd, (off_t)len) < 0)
		return sl_error_sys(err, "clone: truncate destination");
	return 0;
}

/* One pass over chunks/sha256. cb gets the name, its stat and whether the
 * name is a well-formed digest; it returns -1 to stop with *err set. */
typedef int (*scan_fn)(struct oci_cache *c, const char *name, const struct stat *st, const sl_digest *d,
		       void *arg, sl_error_t *err);

static int scan(struct oci_cache *c, scan_fn fn, void *arg, sl_error_t *err)
{
	_cleanup_closedir_ DIR *dir = NULL;
	int fd = openat(c->chunks_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd < 0)
		return sl_error_sys(err, "cache: open chunk directory");
	dir = fdopendir(fd);
	if (!dir) {
		close(fd);
		return sl_error_sys(err, "cache: open chunk directory");
	}
	for (;;) {
		struct dirent *de;
		struct stat st;
		sl_digest d;
		bool named;

		errno = 0;
		de = readdir(dir);
		if (!de) {
			if (errno)
				return sl_error_sys(err, "cache: read chunk directory");
			return 0;
		}
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (fstatat(c->chunks_fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			if (errno == ENOENT)
				continue; /* gone meanwhile (gc or has() elsewhere) */
			return sl_error_sys(err, "cache: stat %s", de->d_name);
		}
		named = sl_digest_parse_hex(de->d_name, &d, NULL) == 0;
		if (fn(c, de->d_name, &st, named ? &d : NULL, arg, err) < 0)
			return -1;
	}
}

struct list_arg {
	void (*cb)(const struct oci_cache_entry *e, void *arg);
	void *arg;
};

static int list_one(struct oci_cache *c, const char *name, const struct stat *st, const sl_digest *d, void *arg,
		    sl_error_t *err)
{
	struct list_arg *la = arg;
	struct oci_cache_entry e;

	(void)c;
	(void)name;
	(void)err;
	/* Listing reports, it does not judge: only names that could be
	 * entries, and only regular files (has() and verify clean the rest). */
	if (!d || !S_ISREG(st->st_mode))
		return 0;
	e.digest = *d;
	e.size = (uint64_t)st->st_size;
	e.links = st->st_nlink;
	e.mtime = (int64_t)st->st_mtim.tv_sec;
	la->cb(&e, la->arg);
	return 0;
}

int oci_cache_list(struct oci_cache *c, void (*cb)(const struct oci_cache_entry *e, void *arg), void *arg,
		   sl_error_t *err)
{
	struct list_arg la = { cb, arg };

	return scan(c, list_one, &la, err);
}

/* Unlinks name only if it is still the inode we judged: a concurrent
 * commit may have replaced a bad entry with a good one meanwhile. */
static int remove_if_same(struct oci_cache *c, const char *name, const struct stat *judged, sl_error_t *err)
{
	struct stat now;

	if (fstatat(c->chunks_fd, name, &now, AT_SYMLINK_NOFOLLOW) < 0)
		return errno == ENOENT ? 0 : sl_error_sys(err, "cache: stat %s", name);
	if (now.st_dev != judged->st_dev || now.st_ino != judged->st_ino)
		return 0;
	if (remove_entry(c->chunks_fd, name, S_ISDIR(now.st_mode), err) < 0)
		return sl_error_wrap(err, "cache");
	return 1;
}

static int verify_one(struct oci_cache *c, const char *name, const struct stat *st, const sl_digest *d,
		      void *arg, sl_error_t *err)
{
	struct oci_cache_stats *vs = arg;
	_cleanup_close_ int fd = -1;
	struct stat fst;
	sl_digest actual;
	uint64_t size;
	bool good = false;
	int r;

	/* chunks/sha256 holds nothing but entries, so anything else there
	 * (a stray name, a symlink, a writable file) is removed too. */
	if (d && entry_good(st, 0)) {
		/* O_NONBLOCK: harmless on a file, and a FIFO swapped in after
		 * the stat must not hang us. */
		fd = openat(c->chunks_fd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
		if (fd < 0) {
			if (errno == ENOENT)
				return 0;
			if (errno != ELOOP)
				return sl_error_sys(err, "cache: open chunk %s", name);
		} else {
			if (fstat(fd, &fst) < 0)
				return sl_error_sys(err, "cache: stat chunk %s", name);
			if (fst.st_dev != st->st_dev || fst.st_ino != st->st_ino)
				return 0; /* replaced since the scan: the new one is someone else's */
			if (sl_sha256_fd(fd, &actual, &size, err) < 0)
				return sl_error_wrap(err, "cache: chunk %s", name);
			good = sl_digest_equal(&actual, d) && size == (uint64_t)fst.st_size;
		}
	}
	if (good) {
		vs->entries++;
		vs->bytes += (uint64_t)st->st_size;
		return 0;
	}
	r = remove_if_same(c, name, st, err);
	if (r < 0)
		return -1;
	if (r > 0) {
		vs->removed++;
		vs->removed_bytes += S_ISREG(st->st_mode) ? (uint64_t)st->st_size : 0;
	}
	return 0;
}

int oci_cache_verify(struct oci_cache *c, struct oci_cache_stats *st, sl_error_t *err)
{
	memset(st, 0, sizeof(*st));
	return scan(c, verify_one, st, err);
}

struct gc_item {
	char hex[SL_DIGEST_HEXLEN + 1];
	int64_t mtime_sec;
	long mtime_nsec;
	uint64_t size;
};

struct gc_arg {
	struct gc_item *items;
	size_t n, cap;
	uint64_t entries, bytes;
};

static int gc_collect(struct oci_cache *c, const char *name, const struct stat *st, const sl_digest *d, void *arg,
		      sl_error_t *err)
{
	struct gc_arg *ga = arg;
	struct gc_item *it;

	(void)c;
	if (!d || !S_ISREG(st->st_mode))
		return 0;
	ga->entries++;
	ga->bytes += (uint64_t)st->st_size;
	if (st->st_nlink != 1)
		return 0; /* a spore directory holds it */
	if (ga->n == ga->cap) {
		size_t ncap = ga->cap ? ga->cap * 2 : 256;
		struct gc_item *ni = realloc(ga->items, ncap * sizeof(*ni));

		if (!ni)
			return sl_error_set(err, SL_E_NOMEM, "cache gc: out of memory");
		ga->items = ni;
		ga->cap = ncap;
	}
	it = &ga->items[ga->n++];
	memcpy(it->hex, name, sizeof(it->hex));
	it->mtime_sec = (int64_t)st->st_mtim.tv_sec;
	it->mtime_nsec = st->st_mtim.tv_nsec;
	it->size = (uint64_t)st->st_size;
	return 0;
}

static int gc_item_cmp(const void *a, const void *b)
{
	const struct gc_item *x = a, *y = b;

	if (x->mtime_sec != y->mtime_sec)
		return x->mtime_sec < y->mtime_sec ? -1 : 1;
	if (x->mtime_nsec != y->mtime_nsec)
		return x->mtime_nsec < y->mtime_nsec ? -1 : 1;
	return strcmp(x->hex, y->hex);
}

int oci_cache_gc(struct oci_cache *c, uint64_t max_bytes, struct oci_cache_stats *st, sl_error_t *err)
{
	struct gc_arg ga = { 0 };
	int r = -1;

	memset(st, 0, sizeof(*st));
	/* gc is also the periodic housekeeping: drop dead writers' temps. */
	if (clean_stale_tmp(c, err) < 0)
		return sl_error_wrap(err, "cache gc");
	if (scan(c, gc_collect, &ga, err) < 0)
		goto out;
	if (ga.n) /* qsort(NULL, 0) is undefined behaviour */
		qsort(ga.items, ga.n, sizeof(*ga.items), gc_item_cmp);
	st->entries = ga.entries;
	st->bytes = ga.bytes;
	for (size_t i = 0; i < ga.n; i++) {
		struct stat now;

		if (max_bytes && st->bytes <= max_bytes)
			break;
		/* Look again just before removing: a puller may have linked
		 * the entry into a spore since the scan. */
		if (fstatat(c->chunks_fd, ga.items[i].hex, &now, AT_SYMLINK_NOFOLLOW) < 0) {
			if (errno == ENOENT)
				continue;
			sl_error_sys(err, "cache gc: stat %s", ga.items[i].hex);
			goto out;
		}
		if (!S_ISREG(now.st_mode) || now.st_nlink != 1 || (uint64_t)now.st_size != ga.items[i].size)
			continue;
		if (unlinkat(c->chunks_fd, ga.items[i].hex, 0) < 0) {
			if (errno == ENOENT)
				continue;
			sl_error_sys(err, "cache gc: remove %s", ga.items[i].hex);
			goto out;
		}
		st->entries--;
		st->bytes -= ga.items[i].size;
		st->removed++;
		st->removed_bytes += ga.items[i].size;
	}
	if (st->removed && sl_fsync_dir(c->chunks_fd, err) < 0) {
		sl_error_wrap(err, "cache gc");
		goto out;
	}
	r = 0;
out:
	free(ga.items);
	return r;
}
