/* Safe file operations: atomic writes and symlink-proof access beneath a dir. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "sl/file.h"

#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1 << 0)
#endif

/* Keeps temp names below NAME_MAX even for long target names. */
#define TMP_BASE_MAX 200

static void closedirp(DIR **d)
{
	if (*d)
		closedir(*d);
}
#define _cleanup_closedir_ __attribute__((cleanup(closedirp)))

/* Untrusted paths are vetted before any syscall so the refusal does not
 * depend on what happens to exist on disk. */
static int check_relpath(const char *relpath, sl_error_t *err)
{
	const char *p;

	if (!relpath || !*relpath)
		return sl_error_set(err, SL_E_INVALID, "empty path");
	if (relpath[0] == '/')
		return sl_error_set(err, SL_E_INVALID,
				    "%s: absolute path not allowed", relpath);
	for (p = relpath; *p;) {
		size_t n = strcspn(p, "/");

		if (n == 2 && p[0] == '.' && p[1] == '.')
			return sl_error_set(err, SL_E_INVALID,
					    "%s: \"..\" not allowed in path",
					    relpath);
		p += n;
		while (*p == '/')
			p++;
	}
	return 0;
}

/* Splits relpath into a directory part (NULL when relpath has no '/') and
 * a final component, which must name something other than the start dir. */
static int split_path(const char *relpath, char **dir, const char **base,
		      char **copy, sl_error_t *err)
{
	char *c, *slash;
	size_t n;

	c = strdup(relpath);
	if (!c)
		return sl_error_set(err, SL_E_NOMEM, "%s: out of memory", relpath);
	n = strlen(c);
	while (n > 1 && c[n - 1] == '/')
		c[--n] = '\0';
	slash = strrchr(c, '/');
	if (slash) {
		*slash = '\0';
		*dir = c;
		*base = slash + 1;
	} else {
		*dir = NULL;
		*base = c;
	}
	*copy = c;
	if (!**base || strcmp(*base, ".") == 0) {
		free(c);
		*copy = NULL;
		return sl_error_set(err, SL_E_INVALID,
				    "%s: path does not name a file", relpath);
	}
	return 0;
}

static int escape_error(const char *relpath, sl_error_t *err)
{
	return sl_error_set(err, SL_E_INVALID,
			    "%s: path crosses a symlink or escapes", relpath);
}

static int open_error(const char *relpath, int e, sl_error_t *err)
{
	if (e == ENOENT)
		return sl_error_set(err, SL_E_NOT_FOUND, "%s: not found", relpath);
	return sl_error_errno(err, e, "open %s", relpath);
}

/* O_NOFOLLOW|O_DIRECTORY on a symlink yields ENOTDIR, which is also what a
 * plain file in the way yields; only a look at the entry tells them apart. */
static bool is_symlink_at(int dfd, const char *name)
{
	struct stat st;

	return fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
	       S_ISLNK(st.st_mode);
}

/* For kernels without openat2 (< 5.6): one component at a time, never
 * following a symlink. ".." was rejected up front, so it cannot escape. */
static int open_walk(int dirfd, const char *relpath, int flags, mode_t mode,
		     sl_error_t *err)
{
	_cleanup_free_ char *copy = strdup(relpath);
	_cleanup_close_ int cur = -1;
	char *p, *next, *last = NULL;
	int fd;

	if (!copy)
		return sl_error_set(err, SL_E_NOMEM, "%s: out of memory", relpath);

	for (p = copy; p; p = next) {
		next = strchr(p, '/');
		if (next) {
			*next++ = '\0';
			while (*next == '/')
				next++;
			if (!*next)
				next = NULL;
		}
		if (!*p || (strcmp(p, ".") == 0 && next))
			continue;
		if (!next) {
			last = p;
			break;
		}
		fd = openat(cur >= 0 ? cur : dirfd, p,
			    O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0) {
			int e = errno;

			if (e == ELOOP ||
			    (e == ENOTDIR && is_symlink_at(cur >= 0 ? cur : dirfd, p)))
				return escape_error(relpath, err);
			return open_error(relpath, e, err);
		}
		if (cur >= 0)
			close(cur);
		cur = fd;
	}
	if (!last)
		last = ".";

	fd = openat(cur >= 0 ? cur : dirfd, last, flags | O_NOFOLLOW | O_CLOEXEC,
		    mode);
	if (fd < 0) {
		int e = errno;

		if (e == ELOOP ||
		    (e == ENOTDIR && is_symlink_at(cur >= 0 ? cur : dirfd, last)))
			return escape_error(relpath, err);
		return open_error(relpath, e, err);
	}
	return fd;
}

int sl_open_beneath(int dirfd, const char *relpath, int flags, mode_t mode,
		    sl_error_t *err)
{
	struct open_how how = {
		.flags = (uint64_t)(unsigned int)(flags | O_CLOEXEC),
		.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
			   RESOLVE_NO_MAGICLINKS,
	};
	int fd;

	if (check_relpath(relpath, err) < 0)
		return -1;
	/* openat2 insists on mode 0 unless a file may be created. */
	if ((flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE)
		how.mode = mode;

	/* EAGAIN means the kernel saw a concurrent rename it could not rule
	 * out; retrying is what the man page prescribes. */
	for (int tries = 0; tries < 8; tries++) {
		fd = (int)syscall(SYS_openat2, dirfd, relpath, &how, sizeof(how));
		if (fd >= 0)
			return fd;
		if (errno != EAGAIN)
			break;
	}
	switch (errno) {
	case ENOSYS:
		return open_walk(dirfd, relpath, flags, how.mode, err);
	case ELOOP:
	case EXDEV:
		return escape_error(relpath, err);
	default:
		return open_error(relpath, errno, err);
	}
}

/* Opens the directory part of relpath into *dfd, or borrows dirfd when
 * there is none. *owned receives the fd to close, or -1. */
static int open_parent(int dirfd, const char *relpath, const char *dir,
		       int *owned, int *dfd, sl_error_t *err)
{
	*owned = -1;
	*dfd = dirfd;
	if (!dir || !*dir)
		return 0;
	*owned = sl_open_beneath(dirfd, dir, O_RDONLY | O_DIRECTORY, 0, err);
	if (*owned < 0)
		return sl_error_wrap(err, "%s", relpath);
	*dfd = *owned;
	return 0;
}

void sl_exe_sibling(const char *name, const char *fallback, char *out, size_t cap)
{
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	char *slash = NULL;
	if (n > 0) {
		self[n] = '\0';
		slash = strrchr(self, '/');
	}
	if (slash) {
		*slash = '\0';
		snprintf(out, cap, "%.4000s/%s", self, name);
	} else {
		snprintf(out, cap, "%s", fallback);
	}
}

int sl_fsync_dir(int dirfd, sl_error_t *err)
{
	/* Some filesystems cannot sync directories and say EINVAL; there is
	 * nothing more durable we could do there. */
	if (fsync(dirfd) < 0 && errno != EINVAL)
		return sl_error_sys(err, "fsync directory");
	return 0;
}

int sl_write_all(int fd, const void *buf, size_t len, sl_error_t *err)
{
	const char *p = buf;

	while (len > 0) {
		ssize_t n = write(fd, p, len);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return sl_error_sys(err, "write");
		}
		if (n == 0)
			return sl_error_errno(err, EIO, "write made no progress");
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int sl_pread_all(int fd, void *buf, size_t len, off_t off, sl_error_t *err)
{
	char *p = buf;

	while (len > 0) {
		ssize_t n = pread(fd, p, len, off);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return sl_error_sys(err, "read at offset %lld",
					    (long long)off);
		}
		if (n == 0)
			return sl_error_set(err, SL_E_IO,
					    "read at offset %lld: unexpected end of file",
					    (long long)off);
		p += n;
		off += n;
		len -= (size_t)n;
	}
	return 0;
}

/* A temp file that unlinks itself when it goes out of scope unless the
 * rename succeeded (name[0] cleared). */
struct tmpfile {
	int dfd;
	char name[NAME_MAX + 1];
};

static void tmpfile_cleanup(struct tmpfile *t)
{
	if (t->name[0]) {
		int saved = errno;

		unlinkat(t->dfd, t->name, 0);
		errno = saved;
	}
}
#define _cleanup_tmpfile_ __attribute__((cleanup(tmpfile_cleanup)))

static uint32_t tmp_random(void)
{
	static uint32_t counter;
	uint32_t r;

	if (getrandom(&r, sizeof(r), GRND_NONBLOCK) == (ssize_t)sizeof(r))
		return r;
	/* No entropy yet (early boot): uniqueness, not secrecy, is needed,
	 * and O_EXCL catches any collision. */
	return (uint32_t)time(NULL) ^ (uint32_t)getpid() ^ ++counter * 2654435761u;
}

/* Creates a fully written, synced temp file next to base, with its final
 * mode, so the only step left is to give it its name. */
static int write_temp(int dfd, const char *relpath, const char *base,
		      const void *buf, size_t len, mode_t mode,
		      struct tmpfile *t, sl_error_t *err)
{
	_cleanup_close_ int fd = -1;

	t->dfd = dfd;
	for (int tries = 0; fd < 0; tries++) {
		snprintf(t->name, sizeof(t->name), ".%.*s.tmp.%d.%08x",
			 TMP_BASE_MAX, base, (int)getpid(), tmp_random());
		/* 0600 until complete: nobody should read a half-written file
		 * and fchmod below sets the exact mode, free of the umask. */
		fd = openat(dfd, t->name,
			    O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC | O_NOFOLLOW,
			    0600);
		if (fd < 0) {
			if (errno == EEXIST && tries < 16)
				continue;
			t->name[0] = '\0';
			return sl_error_sys(err, "%s: create temp file", relpath);
		}
	}
	if (sl_write_all(fd, buf, len, err) < 0)
		return sl_error_wrap(err, "%s: temp file", relpath);
	if (fsync(fd) < 0)
		return sl_error_sys(err, "%s: fsync temp file", relpath);
	if (fchmod(fd, mode) < 0)
		return sl_error_sys(err, "%s: chmod temp file", relpath);
	/* close can report deferred write errors (e.g. NFS). */
	if (close(sl_steal_fd(fd)) < 0)
		return sl_error_sys(err, "%s: close temp file", relpath);
	return 0;
}

int sl_write_atomic(int dirfd, const char *relpath, const void *buf, size_t len,
		    mode_t mode, sl_error_t *err)
{
	_cleanup_free_ char *copy = NULL;
	_cleanup_close_ int owned = -1;
	_cleanup_tmpfile_ struct tmpfile t = { .dfd = -1 };
	char *dir;
	const char *base;
	int dfd;

	if (check_relpath(relpath, err) < 0 ||
	    split_path(relpath, &dir, &base, &copy, err) < 0)
		return -1;
	if (open_parent(dirfd, relpath, dir, &owned, &dfd, err) < 0)
		return -1;
	if (write_temp(dfd, relpath, base, buf, len, mode, &t, err) < 0)
		return -1;
	if (renameat(dfd, t.name, dfd, base) < 0)
		return sl_error_sys(err, "%s: rename into place", relpath);
	t.name[0] = '\0';
	if (sl_fsync_dir(dfd, err) < 0)
		return sl_error_wrap(err, "%s", relpath);
	return 0;
}

int sl_write_atomic_once(int dirfd, const char *relpath, const void *buf,
			 size_t len, mode_t mode, sl_error_t *err)
{
	_cleanup_free_ char *copy = NULL;
	_cleanup_close_ int owned = -1;
	_cleanup_tmpfile_ struct tmpfile t = { .dfd = -1 };
	struct stat st;
	char *dir;
	const char *base;
	int dfd;

	if (check_relpath(relpath, err) < 0 ||
	    split_path(relpath, &dir, &base, &copy, err) < 0)
		return -1;
	if (open_parent(dirfd, relpath, dir, &owned, &dfd, err) < 0)
		return -1;
	/* Cheap early exit for the common "blob already stored" case; the
	 * no-replace rename below is what actually guarantees the contract. */
	if (fstatat(dfd, base, &st, AT_SYMLINK_NOFOLLOW) == 0)
		return 0;
	if (write_temp(dfd, relpath, base, buf, len, mode, &t, err) < 0)
		return -1;

	if (renameat2(dfd, t.name, dfd, base, RENAME_NOREPLACE) < 0) {
		if (errno == EEXIST)
			return 0; /* the temp file is removed by its cleanup */
		if (errno != EINVAL && errno != ENOSYS)
			return sl_error_sys(err, "%s: rename into place", relpath);
		/* Filesystem without RENAME_NOREPLACE: link(2) never replaces
		 * either; the temp name is then dropped by the cleanup. */
		if (linkat(dfd, t.name, dfd, base, 0) < 0) {
			if (errno == EEXIST)
				return 0;
			return sl_error_sys(err, "%s: link into place", relpath);
		}
	} else {
		t.name[0] = '\0';
	}
	if (sl_fsync_dir(dfd, err) < 0)
		return sl_error_wrap(err, "%s", relpath);
	return 0;
}

/* Reads fd to EOF, failing once more than max bytes show up (the file may
 * grow after fstat, so the size seen there is only a first guess). */
static int read_capped(int fd, const char *name, size_t max, size_t hint,
		       char **out, size_t *len_out, sl_error_t *err)
{
	_cleanup_free_ char *b = NULL;
	size_t alloc, total = 0, limit_alloc;

	if (max > SIZE_MAX - 2)
		max = SIZE_MAX - 2;
	/* Data, one probe byte to detect growth past max, and the NUL. */
	limit_alloc = max + 2;
	/* procfs and friends report size 0, so never start from nothing. */
	alloc = hint < 4096 ? 4096 : hint + 2;
	if (alloc > limit_alloc)
		alloc = limit_alloc;
	b = malloc(alloc);
	if (!b)
		return sl_error_set(err, SL_E_NOMEM, "%s: out of memory", name);

	for (;;) {
		ssize_t n;

		if (total + 1 >= alloc) {
			size_t nalloc;
			char *nb;

			nalloc = alloc > limit_alloc / 2 ? limit_alloc : alloc * 2;
			nb = realloc(b, nalloc);
			if (!nb)
				return sl_error_set(err, SL_E_NOMEM,
						    "%s: out of memory", name);
			b = nb;
			alloc = nalloc;
		}
		n = read(fd, b + total, alloc - 1 - total);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return sl_error_sys(err, "read %s", name);
		}
		if (n == 0)
			break;
		total += (size_t)n;
		if (total > max)
			return sl_error_set(err, SL_E_LIMIT,
					    "%s: file exceeds the %zu byte cap",
					    name, max);
	}
	b[total] = '\0';
	*out = sl_steal_ptr(b);
	if (len_out)
		*len_out = total;
	return 0;
}

static int read_opened(int fd, const char *name, size_t max, char **buf,
		       size_t *len, sl_error_t *err)
{
	struct stat st;

	if (fstat(fd, &st) < 0)
		return sl_error_sys(err, "stat %s", name);
	if (!S_ISREG(st.st_mode))
		return sl_error_set(err, SL_E_INVALID,
				    "%s: not a regular file", name);
	if ((uint64_t)st.st_size > (uint64_t)max)
		return sl_error_set(err, SL_E_LIMIT,
				    "%s: file is %lld bytes, cap is %zu bytes",
				    name, (long long)st.st_size, max);
	return read_capped(fd, name, max, (size_t)st.st_size, buf, len, err);
}

/* O_NONBLOCK keeps a FIFO planted in place of a file from hanging the open
 * until a writer appears; it has no effect on regular files. */
#define READ_FLAGS (O_RDONLY | O_NONBLOCK | O_NOCTTY)

int sl_read_beneath(int dirfd, const char *relpath, size_t max, char **buf,
		    size_t *len, sl_error_t *err)
{
	_cleanup_close_ int fd = sl_open_beneath(dirfd, relpath, READ_FLAGS, 0, err);

	if (fd < 0)
		return -1;
	return read_opened(fd, relpath, max, buf, len, err);
}

int sl_read_path(const char *path, size_t max, char **buf, size_t *len,
		 sl_error_t *err)
{
	_cleanup_close_ int fd = -1;

	if (!path || !*path)
		return sl_error_set(err, SL_E_INVALID, "empty path");
	fd = open(path, READ_FLAGS | O_CLOEXEC);
	if (fd < 0)
		return open_error(path, errno, err);
	return read_opened(fd, path, max, buf, len, err);
}

int sl_mkdir_beneath(int dirfd, const char *relpath, mode_t mode, sl_error_t *err)
{
	_cleanup_free_ char *copy = NULL;
	_cleanup_close_ int cur = -1;
	char *p, *next;

	if (check_relpath(relpath, err) < 0)
		return -1;
	copy = strdup(relpath);
	if (!copy)
		return sl_error_set(err, SL_E_NOMEM, "%s: out of memory", relpath);

	for (p = copy; p && *p; p = next) {
		int at = cur >= 0 ? cur : dirfd;
		int fd;

		next = strchr(p, '/');
		if (next) {
			*next++ = '\0';
			while (*next == '/')
				next++;
		}
		if (strcmp(p, ".") == 0)
			continue;
		if (mkdirat(at, p, mode) < 0 && errno != EEXIST)
			return sl_error_sys(err, "%s: mkdir %s", relpath, p);
		/* Whatever exists under that name must be a real directory:
		 * O_NOFOLLOW refuses a symlink planted there. */
		fd = openat(at, p, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0) {
			int e = errno;

			if (e == ELOOP || (e == ENOTDIR && is_symlink_at(at, p)))
				return escape_error(relpath, err);
			if (e == ENOTDIR)
				return sl_error_set(err, SL_E_INVALID,
						    "%s: %s exists and is not a directory",
						    relpath, p);
			return sl_error_errno(err, e, "%s: open %s", relpath, p);
		}
		if (cur >= 0)
			close(cur);
		cur = fd;
	}
	return 0;
}

static int remove_at(int dfd, const char *name, const char *relpath,
		     sl_error_t *err);

/* Empties the directory open at fd. Rescans until a pass removes nothing,
 * since readdir is not guaranteed stable while entries are being unlinked. */
static int remove_contents(int fd, const char *relpath, sl_error_t *err)
{
	_cleanup_closedir_ DIR *d = NULL;
	int dfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	bool removed;

	if (dfd < 0)
		return sl_error_sys(err, "%s: dup", relpath);
	d = fdopendir(dfd);
	if (!d) {
		close(dfd);
		return sl_error_sys(err, "%s: opendir", relpath);
	}
	do {
		struct dirent *de;

		removed = false;
		rewinddir(d);
		for (;;) {
			errno = 0;
			de = readdir(d);
			if (!de) {
				if (errno)
					return sl_error_sys(err, "%s: readdir", relpath);
				break;
			}
			if (strcmp(de->d_name, ".") == 0 ||
			    strcmp(de->d_name, "..") == 0)
				continue;
			if (remove_at(dirfd(d), de->d_name, relpath, err) < 0)
				return -1;
			removed = true;
		}
	} while (removed);
	return 0;
}

/* Removes one entry; directories recursively, anything else (including
 * symlinks, which are never followed) with a plain unlink. */
static int remove_at(int dfd, const char *name, const char *relpath,
		     sl_error_t *err)
{
	_cleanup_close_ int fd = -1;
	struct stat st;

	if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
		if (errno == ENOENT)
			return 0;
		return sl_error_sys(err, "%s: stat %s", relpath, name);
	}
	if (!S_ISDIR(st.st_mode)) {
		if (unlinkat(dfd, name, 0) < 0 && errno != ENOENT)
			return sl_error_sys(err, "%s: unlink %s", relpath, name);
		return 0;
	}
	fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT)
			return 0;
		return sl_error_sys(err, "%s: open %s", relpath, name);
	}
	if (remove_contents(fd, relpath, err) < 0)
		return -1;
	if (unlinkat(dfd, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
		return sl_error_sys(err, "%s: rmdir %s", relpath, name);
	return 0;
}

int sl_remove_tree(int dirfd, const char *relpath, sl_error_t *err)
{
	_cleanup_free_ char *copy = NULL;
	_cleanup_close_ int owned = -1;
	sl_error_t perr = NULL;
	char *dir;
	const char *base;
	int dfd;

	if (check_relpath(relpath, err) < 0 ||
	    split_path(relpath, &dir, &base, &copy, err) < 0)
		return -1;
	if (open_parent(dirfd, relpath, dir, &owned, &dfd, &perr) < 0) {
		/* A missing parent means the tree is already gone. */
		if (perr->code == SL_E_NOT_FOUND) {
			sl_error_free(&perr);
			return 0;
		}
		if (!err) {
			sl_error_free(&perr);
			return -1;
		}
		sl_error_free(err);
		*err = perr;
		return -1;
	}
	return remove_at(dfd, base, relpath, err);
}

int sl_remove_path(const char *path, sl_error_t *err)
{
	if (path[0] != '/')
		return sl_remove_tree(AT_FDCWD, path, err);
	/* sl_remove_tree takes paths beneath a directory: "/x" is "x" beneath /. */
	_cleanup_close_ int root = open("/", O_DIRECTORY | O_RDONLY | O_CLOEXEC);
	if (root < 0)
		return sl_error_sys(err, "open /");
	while (*path == '/')
		path++;
	if (!*path)
		return sl_error_set(err, SL_E_INVALID, "refusing to remove /");
	return sl_remove_tree(root, path, err);
}
