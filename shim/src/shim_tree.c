/* Moving a captured spore's tree to where containerd wants it: rename, or copy and remove across filesystems. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "shim_int.h"
#include "sl/file.h"

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
}

static int copy_file(int sdir, int ddir, const char *name, mode_t mode, sl_error_t *err)
{
	__attribute__((cleanup(close_fd))) int in = openat(sdir, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (in < 0)
		return sl_error_sys(err, "open %s", name);
	__attribute__((cleanup(close_fd))) int out =
		openat(ddir, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode & 07777);
	if (out < 0)
		return sl_error_sys(err, "create %s", name);
	for (;;) {
		ssize_t n = copy_file_range(in, NULL, out, NULL, 1 << 30, 0);
		if (n == 0)
			break;
		if (n < 0)
			return sl_error_sys(err, "copy %s", name);
	}
	if (fsync(out) < 0)
		return sl_error_sys(err, "fsync %s", name);
	return 0;
}

/* Copies the directory sdir into the existing, empty ddir: directories and
 * regular files only (a spore has nothing else), depth-limited. */
static int copy_dir(int sdir, int ddir, unsigned depth, sl_error_t *err)
{
	if (depth > 4)
		return sl_error_set(err, SL_E_INVALID, "spore tree deeper than 4 levels");
	int fd = dup(sdir);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	if (!d) {
		if (fd >= 0)
			close(fd);
		return sl_error_sys(err, "read a captured directory");
	}
	int rc = 0;
	for (struct dirent *e; rc == 0 && (e = readdir(d));) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		struct stat st;
		if (fstatat(sdir, e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			rc = sl_error_sys(err, "stat %s", e->d_name);
		} else if (S_ISDIR(st.st_mode)) {
			if (mkdirat(ddir, e->d_name, st.st_mode & 07777) < 0) {
				rc = sl_error_sys(err, "mkdir %s", e->d_name);
				break;
			}
			__attribute__((cleanup(close_fd))) int s2 = openat(sdir, e->d_name, O_DIRECTORY | O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
			__attribute__((cleanup(close_fd))) int d2 = openat(ddir, e->d_name, O_DIRECTORY | O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
			if (s2 < 0 || d2 < 0)
				rc = sl_error_sys(err, "open %s", e->d_name);
			else if (copy_dir(s2, d2, depth + 1, err) < 0 || sl_fsync_dir(d2, err) < 0)
				rc = -1;
		} else if (S_ISREG(st.st_mode)) {
			rc = copy_file(sdir, ddir, e->d_name, st.st_mode, err);
		} else {
			rc = sl_error_set(err, SL_E_INVALID, "%s: neither a file nor a directory", e->d_name);
		}
	}
	closedir(d);
	return rc;
}

int shim_move_entry(const char *from_dir, const char *to_dir, const char *name, sl_error_t *err)
{
	char from[PATH_MAX], to[PATH_MAX];
	if ((size_t)snprintf(from, sizeof(from), "%s/%s", from_dir, name) >= sizeof(from) ||
	    (size_t)snprintf(to, sizeof(to), "%s/%s", to_dir, name) >= sizeof(to))
		return sl_error_set(err, SL_E_INVALID, "path too long: %s/%s", to_dir, name);
	struct stat st;
	if (lstat(from, &st) < 0)
		return errno == ENOENT ? 0 : sl_error_sys(err, "stat %s", from);
	if (rename(from, to) == 0)
		return 0;
	if (errno != EXDEV)
		return sl_error_sys(err, "move %s to %s", from, to);
	/* Another filesystem: copy under a temporary name, then rename it in,
	 * so that `to` is never seen half-written. */
	char tmp[PATH_MAX + 16];
	snprintf(tmp, sizeof(tmp), "%s.tmp-%d", to, (int)getpid());
	if (!S_ISDIR(st.st_mode))
		return sl_error_set(err, SL_E_INVALID, "%s: not a directory", from);
	if (mkdir(tmp, st.st_mode & 07777) < 0)
		return sl_error_sys(err, "mkdir %s", tmp);
	__attribute__((cleanup(close_fd))) int s = open(from, O_DIRECTORY | O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	__attribute__((cleanup(close_fd))) int d = open(tmp, O_DIRECTORY | O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	int rc = s < 0 || d < 0 ? sl_error_sys(err, "open %s", s < 0 ? from : tmp) : 0;
	if (rc == 0 && (copy_dir(s, d, 0, err) < 0 || sl_fsync_dir(d, err) < 0))
		rc = -1;
	if (rc == 0 && rename(tmp, to) < 0)
		rc = sl_error_sys(err, "move %s to %s", tmp, to);
	sl_error_t e2 = NULL;
	if (rc < 0)
		sl_remove_path(tmp, &e2);
	else
		sl_remove_path(from, &e2);
	sl_error_free(&e2);
	return rc < 0 ? sl_error_wrap(err, "copy %s to %s", from, to_dir) : 0;
}
