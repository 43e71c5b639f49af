/* Local socket hygiene: checks of a socket's directories and of a connected peer's uid. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sl/sock.h"

/* path's directory into out ("." for a bare name, "/" for "/name"). */
static int dir_of(const char *path, char *out, size_t cap, const char *what, sl_error_t *err)
{
	const char *slash = strrchr(path, '/');
	size_t n = !slash ? 1 : slash == path ? 1 : (size_t)(slash - path);
	if (n >= cap)
		return sl_error_set(err, SL_E_INVALID, "%s %s: path too long", what, path);
	if (!slash)
		memcpy(out, ".", 2);
	else if (slash == path)
		memcpy(out, "/", 2);
	else {
		memcpy(out, path, n);
		out[n] = '\0';
	}
	return 0;
}

int sl_sock_dir_check(const char *path, const char *what, sl_error_t *err)
{
	char dir[PATH_MAX], real[PATH_MAX];
	if (dir_of(path, dir, sizeof(dir), what, err) < 0)
		return -1;
	if (!realpath(dir, real)) {
		if (errno == ENOENT || errno == ENOTDIR)
			return sl_error_set(err, SL_E_NOT_FOUND, "%s %s: directory %s does not exist", what, path,
					    dir);
		return sl_error_sys(err, "%s %s: directory %s", what, path, dir);
	}
	uid_t me = geteuid();
	/* From the socket's directory up to /: a writable ancestor lets its
	 * owner rename the whole subtree away and put another in its place. */
	for (;;) {
		struct stat st;
		if (lstat(real, &st) < 0)
			return sl_error_sys(err, "%s %s: directory %s", what, path, real);
		if (!S_ISDIR(st.st_mode))
			return sl_error_set(err, SL_E_INVALID, "%s %s: %s is not a directory", what, path, real);
		if (st.st_uid != 0 && st.st_uid != me)
			return sl_error_set(err, SL_E_INVALID,
					    "%s %s: directory %s belongs to uid %u, not to root or uid %u: "
					    "its owner could replace the socket",
					    what, path, real, (unsigned)st.st_uid, (unsigned)me);
		if ((st.st_mode & (S_IWGRP | S_IWOTH)) && !(st.st_mode & S_ISVTX))
			return sl_error_set(err, SL_E_INVALID,
					    "%s %s: directory %s is writable by %s (mode %04o) and not sticky: "
					    "others could replace the socket",
					    what, path, real, (st.st_mode & S_IWOTH) ? "others" : "its group",
					    (unsigned)(st.st_mode & 07777));
		if (!strcmp(real, "/"))
			return 0;
		char *slash = strrchr(real, '/');
		if (slash == real)
			slash[1] = '\0';
		else
			*slash = '\0';
	}
}

int sl_sock_dir_make(const char *path, mode_t mode, const char *what, sl_error_t *err)
{
	char dir[PATH_MAX];
	if (dir_of(path, dir, sizeof(dir), what, err) < 0)
		return -1;
	for (char *p = dir + 1;; p++) {
		if (*p != '/' && *p != '\0')
			continue;
		char c = *p;
		*p = '\0';
		if (mkdir(dir, mode) == 0) {
			/* The umask may have taken bits away (0711 under umask 077). */
			if (chmod(dir, mode) < 0)
				return sl_error_sys(err, "%s %s: chmod %s", what, path, dir);
		} else if (errno != EEXIST) {
			return sl_error_sys(err, "%s %s: mkdir %s", what, path, dir);
		}
		*p = c;
		if (c == '\0')
			break;
	}
	return sl_sock_dir_check(path, what, err);
}

int sl_sock_peer_uid(int fd, uid_t *uid, sl_error_t *err)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
		return sl_error_sys(err, "SO_PEERCRED");
	if (len != sizeof(cred))
		return sl_error_set(err, SL_E_IO, "SO_PEERCRED: %u bytes", (unsigned)len);
	*uid = cred.uid;
	return 0;
}

bool sl_sock_peer_allowed(int fd, uid_t owner, uid_t *uid)
{
	sl_error_t err = NULL;
	*uid = (uid_t)-1;
	if (sl_sock_peer_uid(fd, uid, &err) < 0) {
		sl_error_free(&err);
		*uid = (uid_t)-1;
		return false;
	}
	return *uid == 0 || *uid == owner;
}
