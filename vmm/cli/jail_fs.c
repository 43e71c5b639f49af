/* The jail's file system: a private mount namespace whose root is an empty tmpfs showing only the bound directories. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "cli.h"

/* Threads of this process: /proc/self/task's entries. */
static int thread_count(sl_error_t *err)
{
	DIR *d = opendir("/proc/self/task");
	if (!d)
		return sl_error_sys(err, "jail: list /proc/self/task");
	int n = 0;
	for (struct dirent *e; (e = readdir(d));)
		n += e->d_name[0] != '.';
	closedir(d);
	return n;
}

int cli_jail_unshare(sl_error_t *err)
{
	int threads = thread_count(err);
	if (threads < 0)
		return -1;
	if (threads != 1)
		return sl_error_set(err, SL_E_INVALID,
				    "jail: the mount namespace must be entered before any thread starts (%d running)",
				    threads);
	/* Only the calling thread moves to the new namespace: the threads a
	 * VMM starts later (vsock I/O, agent job, vCPUs) must all be created
	 * after this, so they share it. */
	if (unshare(CLONE_NEWNS) < 0) {
		if (errno == EPERM)
			return sl_error_set(err, SL_E_INVALID,
					    "--jail needs root (CAP_SYS_ADMIN) for its private mount namespace; "
					    "give --jail-uid to run the guest as an unprivileged user");
		return sl_error_sys(err, "jail: unshare the mount namespace");
	}
	/* Nothing we mount leaks to the host; what the host mounts until the
	 * jail is entered still reaches us: a pool worker enters the
	 * namespace long before it learns which spore to restore, and
	 * containerd mounts a pod's rootfs in between. */
	if (mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL) < 0)
		return sl_error_sys(err, "jail: make the mount namespace a receiver");
	return 0;
}

/* Absolute and lexically clean ("." and empty components dropped); ".." is
 * refused, as lexical nesting checks cannot follow it. */
static int clean_path(const char *in, char *out, size_t cap, sl_error_t *err)
{
	char tmp[PATH_MAX];
	if (in[0] == '/') {
		if (strlen(in) >= sizeof(tmp))
			return sl_error_set(err, SL_E_INVALID, "--jail: path too long: %.80s...", in);
		strcpy(tmp, in);
	} else {
		char cwd[PATH_MAX];
		if (!getcwd(cwd, sizeof(cwd)))
			return sl_error_sys(err, "--jail: getcwd");
		if ((size_t)snprintf(tmp, sizeof(tmp), "%s/%s", cwd, in) >= sizeof(tmp))
			return sl_error_set(err, SL_E_INVALID, "--jail: path too long: %.80s...", in);
	}
	size_t n = 0;
	for (char *save = NULL, *c = strtok_r(tmp, "/", &save); c; c = strtok_r(NULL, "/", &save)) {
		if (!strcmp(c, "."))
			continue;
		if (!strcmp(c, ".."))
			return sl_error_set(err, SL_E_INVALID,
					    "--jail: %s: give the path without \"..\" (the jail binds directories by path)",
					    in);
		size_t l = strlen(c);
		if (n + 1 + l + 1 > cap)
			return sl_error_set(err, SL_E_INVALID, "--jail: path too long: %.80s...", in);
		out[n++] = '/';
		memcpy(out + n, c, l);
		n += l;
	}
	out[n] = '\0';
	return 0;
}

/* a is b or a directory above it */
static bool covers(const char *a, const char *b)
{
	size_t l = strlen(a);
	return !strncmp(a, b, l) && (b[l] == '\0' || b[l] == '/');
}

int cli_jail_view_add(struct cli_jail_view *v, const char *path, bool parent_of, bool rw, const char *what,
		      sl_error_t *err)
{
	char p[PATH_MAX];
	if (clean_path(path, p, sizeof(p), err) < 0)
		return -1;
	if (parent_of) {
		char *slash = strrchr(p, '/');
		if (!slash || slash == p)
			p[1] = '\0'; /* "/x": its directory is / */
		else
			*slash = '\0';
	}
	if (!p[0] || !strcmp(p, "/") || !p[1])
		return sl_error_set(err, SL_E_INVALID,
				    "--jail: %s %s would show the whole file system inside the jail: "
				    "put it in a directory of its own",
				    what, path);
	/* One bind per subtree: a directory inside one already shown needs
	 * nothing more (except write access, which the outer one then gets). */
	for (unsigned i = 0; i < v->n; i++) {
		if (covers(v->b[i].path, p)) {
			v->b[i].rw |= rw;
			return 0;
		}
	}
	for (unsigned i = 0; i < v->n;) {
		if (covers(p, v->b[i].path)) {
			rw |= v->b[i].rw;
			v->b[i] = v->b[--v->n];
		} else {
			i++;
		}
	}
	if (v->n == CLI_JAIL_MAX_BINDS)
		return sl_error_set(err, SL_E_LIMIT, "--jail: more than %d directories to show", CLI_JAIL_MAX_BINDS);
	snprintf(v->b[v->n].path, sizeof(v->b[v->n].path), "%s", p);
	v->b[v->n].rw = rw;
	v->b[v->n].what = what;
	v->n++;
	return 0;
}

bool cli_jail_can_capture(const struct cli_jail_view *v, const char *dir, char *shown, size_t cap)
{
	char p[PATH_MAX];
	sl_error_t err = NULL;
	bool ok = false;
	if (clean_path(dir, p, sizeof(p), &err) == 0) {
		char *slash = strrchr(p, '/');
		if (slash && slash != p)
			*slash = '\0';
		for (unsigned i = 0; i < v->n && !ok; i++)
			ok = v->b[i].rw && covers(v->b[i].path, p);
	}
	sl_error_free(&err);
	if (ok)
		return true;
	size_t n = 0;
	shown[0] = '\0';
	for (unsigned i = 0; i < v->n && n < cap; i++)
		n += (size_t)snprintf(shown + n, cap - n, "%s%s%s", i ? ", " : "", v->b[i].path, v->b[i].rw ? "" : " (read-only)");
	return false;
}

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
}

/* mkdir -p of an absolute path inside the (new) root. */
static int make_dirs(const char *path, sl_error_t *err)
{
	char p[PATH_MAX];
	snprintf(p, sizeof(p), "%s", path);
	for (char *s = p + 1;; s++) {
		if (*s != '/' && *s != '\0')
			continue;
		char c = *s;
		*s = '\0';
		if (mkdir(p, 0755) < 0 && errno != EEXIST)
			return sl_error_sys(err, "jail: mkdir %s in the jail's root", p);
		if (!c)
			return 0;
		*s = c;
	}
}

static int mount_id(int dfd, const char *path, uint64_t *id, sl_error_t *err)
{
	struct statx sx;
	if (statx(dfd, path, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW, STATX_MNT_ID, &sx) < 0)
		return sl_error_sys(err, "jail: statx %s", path[0] ? path : "(descriptor)");
	if (!(sx.stx_mask & STATX_MNT_ID))
		return sl_error_set(err, SL_E_INVALID, "jail: the kernel reports no mount ids (Linux 5.8 or later needed)");
	*id = sx.stx_mnt_id;
	return 0;
}

/* Descriptors that are directories: after the change of root, each must be
 * on one of the jail's mounts, or ".." from it walks the host's tree. */
static int dir_fds(int *fds, unsigned cap, unsigned *n, sl_error_t *err)
{
	DIR *d = opendir("/proc/self/fd");
	if (!d)
		return sl_error_sys(err, "jail: list /proc/self/fd");
	int self = dirfd(d);
	*n = 0;
	int rc = 0;
	for (struct dirent *e; (e = readdir(d));) {
		if (e->d_name[0] == '.')
			continue;
		int fd = atoi(e->d_name);
		struct stat st;
		if (fd == self || fstat(fd, &st) < 0 || !S_ISDIR(st.st_mode))
			continue;
		if (*n == cap) {
			rc = sl_error_set(err, SL_E_LIMIT, "jail: more than %u directory descriptors open", cap);
			break;
		}
		fds[(*n)++] = fd;
	}
	closedir(d);
	return rc;
}

int cli_jail_mount(const struct cli_jail_view *v, struct cli_jail_fs *fs, sl_error_t *err)
{
	memset(fs, 0, sizeof(*fs));
	char cwd[PATH_MAX];
	if (!getcwd(cwd, sizeof(cwd)))
		return sl_error_sys(err, "jail: getcwd");
	if (dir_fds(fs->dir_fds, CLI_JAIL_MAX_DIR_FDS, &fs->ndir_fds, err) < 0)
		return -1;

	/* Detached copies of what the jail shows, taken while the host's tree
	 * is still visible. Not recursive: mounts below a bound directory stay
	 * out. */
	int tree[CLI_JAIL_MAX_BINDS];
	for (unsigned i = 0; i < CLI_JAIL_MAX_BINDS; i++)
		tree[i] = -1;
	int rc = 0;
	for (unsigned i = 0; i < v->n && rc == 0; i++) {
		tree[i] = open_tree(AT_FDCWD, v->b[i].path, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
		if (tree[i] < 0) {
			rc = sl_error_sys(err, "jail: %s %s", v->b[i].what, v->b[i].path);
			break;
		}
		/* Private: from here on the host's mounts stay out. */
		struct mount_attr a = {.attr_set = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC |
						   (v->b[i].rw ? 0 : MOUNT_ATTR_RDONLY),
				       .propagation = MS_PRIVATE};
		if (mount_setattr(tree[i], "", AT_EMPTY_PATH, &a, sizeof(a)) < 0)
			rc = sl_error_sys(err, "jail: mount attributes of %s", v->b[i].path);
	}

	/* The new root: a small tmpfs, attached below the old root only long
	 * enough to pivot into it. */
	__attribute__((cleanup(close_fd))) int fsfd = -1;
	__attribute__((cleanup(close_fd))) int mfd = -1;
	if (rc == 0) {
		fsfd = fsopen("tmpfs", FSOPEN_CLOEXEC);
		if (fsfd < 0 || fsconfig(fsfd, FSCONFIG_SET_STRING, "size", "1m", 0) < 0 ||
		    fsconfig(fsfd, FSCONFIG_SET_STRING, "nr_inodes", "1024", 0) < 0 ||
		    fsconfig(fsfd, FSCONFIG_SET_STRING, "mode", "0755", 0) < 0 ||
		    fsconfig(fsfd, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0 ||
		    (mfd = fsmount(fsfd, FSMOUNT_CLOEXEC, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC)) < 0)
			rc = sl_error_sys(err, "jail: create the root tmpfs");
	}
	struct stat st;
	const char *at = stat("/tmp", &st) == 0 && S_ISDIR(st.st_mode) ? "/tmp" : "/";
	if (rc == 0 && move_mount(mfd, "", AT_FDCWD, at, MOVE_MOUNT_F_EMPTY_PATH) < 0)
		rc = sl_error_sys(err, "jail: attach the root tmpfs");
	/* pivot_root(".", "."): the old root ends up on top of the new one,
	 * where it is detached. An initramfs root cannot be pivoted (EINVAL):
	 * there the tmpfs is moved over / and becomes the root by chroot, as
	 * switch_root does; the old root stays below, out of reach without
	 * CAP_SYS_CHROOT (dropped) and chroot (refused by the filter). */
	if (rc == 0 && fchdir(mfd) < 0)
		rc = sl_error_sys(err, "jail: enter the root tmpfs");
	if (rc == 0 && syscall(SYS_pivot_root, ".", ".") == 0) {
		if (umount2(".", MNT_DETACH) < 0)
			rc = sl_error_sys(err, "jail: detach the old root");
	} else if (rc == 0 && errno == EINVAL) {
		if (mount(".", "/", NULL, MS_MOVE, NULL) < 0 || chroot(".") < 0)
			rc = sl_error_sys(err, "jail: move the root tmpfs over / (no pivot_root on this root)");
	} else if (rc == 0) {
		rc = sl_error_sys(err, "jail: pivot_root");
	}
	if (rc == 0 && chdir("/") < 0)
		rc = sl_error_sys(err, "jail: chdir /");
	for (unsigned i = 0; i < v->n && rc == 0; i++) {
		if (make_dirs(v->b[i].path, err) < 0)
			rc = -1;
		else if (move_mount(tree[i], "", AT_FDCWD, v->b[i].path, MOVE_MOUNT_F_EMPTY_PATH) < 0)
			rc = sl_error_sys(err, "jail: bind %s", v->b[i].path);
	}
	for (unsigned i = 0; i < CLI_JAIL_MAX_BINDS; i++)
		if (tree[i] >= 0)
			close(tree[i]);
	if (rc < 0)
		return -1;
	/* Relative paths given on the command line keep their meaning. */
	if (make_dirs(cwd, err) < 0 || chdir(cwd) < 0)
		return rc = sl_error_sys(err, "jail: chdir %s", cwd);
	struct mount_attr ro = {.attr_set = MOUNT_ATTR_RDONLY};
	if (mount_setattr(AT_FDCWD, "/", 0, &ro, sizeof(ro)) < 0)
		return sl_error_sys(err, "jail: make the jail's root read-only");
	if (mount_id(AT_FDCWD, "/", &fs->mnt_ids[0], err) < 0)
		return -1;
	fs->nmnt_ids = 1;
	for (unsigned i = 0; i < v->n; i++)
		if (mount_id(AT_FDCWD, v->b[i].path, &fs->mnt_ids[fs->nmnt_ids++], err) < 0)
			return -1;
	return 0;
}

int cli_jail_check_fds(const struct cli_jail_fs *fs, sl_error_t *err)
{
	for (unsigned i = 0; i < fs->ndir_fds; i++) {
		uint64_t id;
		int fd = fs->dir_fds[i];
		if (fcntl(fd, F_GETFD) < 0)
			continue; /* closed since */
		if (mount_id(fd, "", &id, err) < 0)
			return -1;
		bool inside = false;
		for (unsigned j = 0; j < fs->nmnt_ids && !inside; j++)
			inside = id == fs->mnt_ids[j];
		if (!inside)
			return sl_error_set(err, SL_E_INVALID,
					    "jail: descriptor %d is a directory outside the jail (opened before it; "
					    "\"..\" from it would reach the host's files)",
					    fd);
	}
	return 0;
}
