/* The snapshot store's directories: root layout and lock, snapshot directories, disk usage, and overlay/bind mounts. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fts.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sl/file.h"
#include "store_int.h"

#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1 << 0)
#endif

/* containerd 1.6 (snapshots/overlay/overlay.go supportsIndex) adds
 * "index=off" to every overlay mount when the kernel has this parameter:
 * with the index on, a lower layer mounted by two overlays at once (any
 * two containers of one image) makes the second mount fail or copy-ups
 * misbehave. */
#define OVERLAY_INDEX_PARAM "/sys/module/overlay/parameters/index"

static void closedirp(DIR **d)
{
	if (*d)
		closedir(*d);
}
#define _cleanup_closedir_ __attribute__((cleanup(closedirp)))

/* mkdir -p for the root (containerd's os.MkdirAll): only the last
 * component gets mode; parents get 0755 like MkdirAll's callers use. */
static int mkdir_p(const char *path, mode_t mode, sl_error_t *err)
{
	_cleanup_free_ char *p = strdup(path);
	char *s;

	if (!p)
		return sl_error_set(err, SL_E_NOMEM, "%s: out of memory", path);
	for (s = p + 1; *s; s++) {
		if (*s != '/')
			continue;
		*s = '\0';
		if (mkdir(p, 0755) < 0 && errno != EEXIST)
			return sl_error_sys(err, "%s: mkdir %s", path, p);
		*s = '/';
	}
	if (mkdir(p, mode) < 0 && errno != EEXIST)
		return sl_error_sys(err, "%s: mkdir", path);
	return 0;
}

int snap_fs_open(struct snap_fs *f, const char *root, sl_error_t *err)
{
	memset(f, 0, sizeof(*f));
	f->root_fd = f->snaps_fd = f->lock_fd = -1;
	if (!root || !*root)
		return sl_error_set(err, SL_E_INVALID, "snapshot store: empty root");
	if (mkdir_p(root, 0700, err) < 0)
		goto fail;
	f->root = realpath(root, NULL);
	if (!f->root) {
		sl_error_sys(err, "%s: realpath", root);
		goto fail;
	}
	f->root_fd = open(f->root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (f->root_fd < 0) {
		sl_error_sys(err, "%s: open", f->root);
		goto fail;
	}
	/* flock, not fcntl locks: it belongs to the open file description, so
	 * a second open in the same process is refused too, and the kernel
	 * drops it when a killed owner's descriptors close. */
	f->lock_fd = openat(f->root_fd, "lock", O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (f->lock_fd < 0) {
		sl_error_sys(err, "%s/lock: open", f->root);
		goto fail;
	}
	if (flock(f->lock_fd, LOCK_EX | LOCK_NB) < 0) {
		if (errno == EWOULDBLOCK)
			sl_error_set(err, SL_E_EXISTS, "%s: snapshot store in use by another process (%s/lock is held)",
				     f->root, f->root);
		else
			sl_error_sys(err, "%s/lock: flock", f->root);
		goto fail;
	}
	if (mkdirat(f->root_fd, "snapshots", 0700) < 0 && errno != EEXIST) {
		sl_error_sys(err, "%s/snapshots: mkdir", f->root);
		goto fail;
	}
	f->snaps_fd = openat(f->root_fd, "snapshots", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (f->snaps_fd < 0) {
		sl_error_sys(err, "%s/snapshots: open", f->root);
		goto fail;
	}
	if (sl_fsync_dir(f->root_fd, err) < 0) {
		sl_error_wrap(err, "%s", f->root);
		goto fail;
	}
	f->index_off = access(OVERLAY_INDEX_PARAM, F_OK) == 0;
	return 0;
fail:
	snap_fs_close(f);
	return -1;
}

void snap_fs_close(struct snap_fs *f)
{
	if (f->snaps_fd >= 0)
		close(f->snaps_fd);
	if (f->lock_fd >= 0)
		close(f->lock_fd); /* drops the flock */
	if (f->root_fd >= 0)
		close(f->root_fd);
	free(f->root);
	f->root = NULL;
	f->root_fd = f->snaps_fd = f->lock_fd = -1;
}

static int make_dir(int dfd, const char *tmp, const char *name, mode_t mode, sl_error_t *err)
{
	if (mkdirat(dfd, name, mode) < 0)
		return sl_error_sys(err, "snapshots/%s/%s: mkdir", tmp, name);
	/* The mode must not depend on the process umask: containerd's
	 * testsuite (RootPermission) expects exactly 0755 on fs. */
	if (fchmodat(dfd, name, mode, 0) < 0)
		return sl_error_sys(err, "snapshots/%s/%s: chmod", tmp, name);
	return 0;
}

static int fill_tmp(struct snap_fs *f, const char *tmp, bool with_work, int64_t parent_id, sl_error_t *err)
{
	_cleanup_close_ int dfd = openat(f->snaps_fd, tmp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	struct stat st;

	if (dfd < 0)
		return sl_error_sys(err, "snapshots/%s: open", tmp);
	if (make_dir(dfd, tmp, "fs", 0755, err) < 0)
		return -1;
	if (with_work && make_dir(dfd, tmp, "work", 0711, err) < 0)
		return -1;
	if (parent_id) {
		/* The upper layer's root takes the parent's owner, or a
		 * container sees its root directory change hands
		 * (containerd's testsuite "Chown"). */
		char pfs[SNAP_ID_NAME_MAX + 4];

		snprintf(pfs, sizeof(pfs), "%lld/fs", (long long)parent_id);
		if (fstatat(f->snaps_fd, pfs, &st, AT_SYMLINK_NOFOLLOW) < 0)
			return sl_error_sys(err, "snapshots/%s: stat parent", pfs);
		if (fchownat(dfd, "fs", st.st_uid, st.st_gid, AT_SYMLINK_NOFOLLOW) < 0)
			return sl_error_sys(err, "snapshots/%s/fs: chown", tmp);
	}
	return sl_fsync_dir(dfd, err);
}

int snap_fs_prepare(struct snap_fs *f, bool with_work, int64_t parent_id, char tmpname[SNAP_TMP_NAME_MAX],
		    sl_error_t *err)
{
	static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789";
	unsigned char rnd[6];
	int tries;

	for (tries = 0;; tries++) {
		if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
			return sl_error_sys(err, "getrandom");
		memcpy(tmpname, SNAP_TMP_PREFIX, sizeof(SNAP_TMP_PREFIX) - 1);
		for (size_t i = 0; i < sizeof(rnd); i++)
			tmpname[sizeof(SNAP_TMP_PREFIX) - 1 + i] = alphabet[rnd[i] % (sizeof(alphabet) - 1)];
		tmpname[sizeof(SNAP_TMP_PREFIX) - 1 + sizeof(rnd)] = '\0';
		if (mkdirat(f->snaps_fd, tmpname, 0700) == 0)
			break;
		if (errno != EEXIST || tries >= 100)
			return sl_error_sys(err, "%s/snapshots/%s: mkdir", f->root, tmpname);
	}
	if (fill_tmp(f, tmpname, with_work, parent_id, err) < 0) {
		sl_error_t ignored = NULL;

		sl_error_wrap(err, "%s", f->root);
		snap_fs_remove(f, tmpname, &ignored);
		sl_error_free(&ignored);
		return -1;
	}
	return 0;
}

int snap_fs_rename(struct snap_fs *f, const char *from, const char *to, sl_error_t *err)
{
	if (renameat2(f->snaps_fd, from, f->snaps_fd, to, RENAME_NOREPLACE) < 0)
		return sl_error_sys(err, "%s/snapshots: rename %s to %s", f->root, from, to);
	if (sl_fsync_dir(f->snaps_fd, err) < 0)
		return sl_error_wrap(err, "%s/snapshots", f->root);
	return 0;
}

int snap_fs_remove(struct snap_fs *f, const char *name, sl_error_t *err)
{
	if (sl_remove_tree(f->snaps_fd, name, err) < 0)
		return sl_error_wrap(err, "%s/snapshots", f->root);
	return 0;
}

bool snap_fs_exists(struct snap_fs *f, const char *name)
{
	struct stat st;

	return fstatat(f->snaps_fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0;
}

void snap_fs_id_name(int64_t id, const char *prefix, char out[SNAP_ID_NAME_MAX])
{
	snprintf(out, SNAP_ID_NAME_MAX, "%s%lld", prefix, (long long)id);
}

bool snap_fs_parse_id(const char *name, const char *prefix, int64_t *id)
{
	size_t plen = strlen(prefix);
	const char *p = name + plen;
	int64_t v = 0;

	if (strncmp(name, prefix, plen) != 0 || *p < '1' || *p > '9')
		return false;
	for (; *p; p++) {
		if (*p < '0' || *p > '9' || v > (INT64_MAX - (*p - '0')) / 10)
			return false;
		v = v * 10 + (*p - '0');
	}
	*id = v;
	return true;
}

int snap_fs_list(struct snap_fs *f, char ***names, size_t *n, sl_error_t *err)
{
	_cleanup_closedir_ DIR *d = NULL;
	char **v = NULL, **nv;
	size_t len = 0, cap = 0;
	struct dirent *de;
	int fd = openat(f->snaps_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd < 0)
		return sl_error_sys(err, "%s/snapshots: open", f->root);
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return sl_error_sys(err, "%s/snapshots: opendir", f->root);
	}
	for (;;) {
		errno = 0;
		de = readdir(d);
		if (!de) {
			if (errno) {
				sl_error_sys(err, "%s/snapshots: readdir", f->root);
				goto fail;
			}
			break;
		}
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (len == cap) {
			cap = cap ? cap * 2 : 16;
			nv = reallocarray(v, cap, sizeof(*v));
			if (!nv)
				goto nomem;
			v = nv;
		}
		v[len] = strdup(de->d_name);
		if (!v[len])
			goto nomem;
		len++;
	}
	*names = v;
	*n = len;
	return 0;
nomem:
	sl_error_set(err, SL_E_NOMEM, "%s/snapshots: out of memory", f->root);
fail:
	snap_fs_names_free(v, len);
	return -1;
}

void snap_fs_names_free(char **names, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
}

char *snap_fs_path(const struct snap_fs *f, int64_t id, const char *sub)
{
	char *p;

	if (asprintf(&p, "%s/snapshots/%lld/%s", f->root, (long long)id, sub) < 0)
		return NULL;
	return p;
}

/* ---- usage ------------------------------------------------------------ */

struct linked {
	dev_t dev;
	ino_t ino;
	blkcnt_t blocks;
};

static int linked_cmp(const void *a, const void *b)
{
	const struct linked *x = a, *y = b;

	if (x->dev != y->dev)
		return x->dev < y->dev ? -1 : 1;
	if (x->ino != y->ino)
		return x->ino < y->ino ? -1 : 1;
	return 0;
}

static void ftsp(FTS **p)
{
	if (*p)
		fts_close(*p);
}
#define _cleanup_fts_ __attribute__((cleanup(ftsp)))

int snap_fs_usage(const struct snap_fs *f, int64_t id, struct snap_usage *u, sl_error_t *err)
{
	_cleanup_free_ char *path = snap_fs_path(f, id, "fs");
	_cleanup_free_ struct linked *links = NULL;
	_cleanup_fts_ FTS *fts = NULL;
	size_t nlinks = 0, cap = 0;
	int64_t size = 0, inodes = 0;
	FTSENT *e;

	if (!path)
		return sl_error_set(err, SL_E_NOMEM, "usage: out of memory");
	char *const argv[] = { path, NULL };
	/* fts, not a recursion of our own: it walks trees of any depth
	 * without running out of descriptors. FTS_PHYSICAL: lstat, like Go's
	 * filepath.Walk in containerd's fs.DiskUsage. */
	fts = fts_open(argv, FTS_PHYSICAL | FTS_NOCHDIR, NULL);
	if (!fts)
		return sl_error_sys(err, "%s: fts_open", path);
	for (;;) {
		errno = 0;
		e = fts_read(fts);
		if (!e)
			break;
		switch (e->fts_info) {
		case FTS_DP: /* the same directory again, after its contents */
			continue;
		case FTS_DNR:
		case FTS_ERR:
		case FTS_NS:
			if (e->fts_errno == ENOENT && e->fts_level == FTS_ROOTLEVEL)
				return sl_error_set(err, SL_E_NOT_FOUND, "%s: does not exist", path);
			return sl_error_errno(err, e->fts_errno, "%s: walk %s", path, e->fts_path);
		default:
			break;
		}
		/* Inodes with one link are seen once; directories cannot be
		 * hard-linked. Only the others need remembering, so a tree
		 * of ordinary files costs no memory. */
		if (S_ISDIR(e->fts_statp->st_mode) || e->fts_statp->st_nlink <= 1) {
			inodes++;
			size += (int64_t)e->fts_statp->st_blocks * 512;
			continue;
		}
		if (nlinks == cap) {
			size_t ncap = cap ? cap * 2 : 64;
			struct linked *nv = reallocarray(links, ncap, sizeof(*links));

			if (!nv)
				return sl_error_set(err, SL_E_NOMEM, "%s: out of memory", path);
			links = nv;
			cap = ncap;
		}
		links[nlinks++] = (struct linked){ e->fts_statp->st_dev, e->fts_statp->st_ino,
						   e->fts_statp->st_blocks };
	}
	if (errno)
		return sl_error_sys(err, "%s: walk", path);
	if (nlinks)
		qsort(links, nlinks, sizeof(*links), linked_cmp);
	for (size_t i = 0; i < nlinks; i++) {
		if (i > 0 && linked_cmp(&links[i - 1], &links[i]) == 0)
			continue;
		inodes++;
		size += (int64_t)links[i].blocks * 512;
	}
	u->size = size;
	u->inodes = inodes;
	return 0;
}

/* ---- mounts ----------------------------------------------------------- */

static void mount_clear(struct snap_mount *m)
{
	free(m->type);
	free(m->source);
	for (size_t i = 0; i < m->noptions; i++)
		free(m->options[i]);
	free(m->options);
}

void snap_mounts_free(struct snap_mount *mounts, size_t n)
{
	if (!mounts)
		return;
	for (size_t i = 0; i < n; i++)
		mount_clear(&mounts[i]);
	free(mounts);
}

struct mount_builder {
	struct snap_mount m;
	size_t cap;
	bool oom;
};

static void mb_opt(struct mount_builder *b, char *opt)
{
	if (!opt || b->oom) {
		free(opt);
		b->oom = true;
		return;
	}
	if (b->m.noptions == b->cap) {
		size_t ncap = b->cap ? b->cap * 2 : 4;
		char **nv = reallocarray(b->m.options, ncap, sizeof(char *));

		if (!nv) {
			free(opt);
			b->oom = true;
			return;
		}
		b->m.options = nv;
		b->cap = ncap;
	}
	b->m.options[b->m.noptions++] = opt;
}

static void mb_optf(struct mount_builder *b, const char *fmt, const char *arg)
{
	char *s;

	if (asprintf(&s, fmt, arg) < 0)
		s = NULL;
	mb_opt(b, s);
}

/* lowerdir=<p0>/fs:<p1>/fs:..., nearest parent first (overlayfs stacks
 * lowerdirs top to bottom in the order given). */
static char *lowerdir(const struct snap_fs *f, const int64_t *parents, size_t n)
{
	char *s = NULL;
	size_t len = 0;
	FILE *mf = open_memstream(&s, &len);

	if (!mf)
		return NULL;
	fputs("lowerdir=", mf);
	for (size_t i = 0; i < n; i++)
		fprintf(mf, "%s%s/snapshots/%lld/fs", i ? ":" : "", f->root, (long long)parents[i]);
	if (fclose(mf) != 0) {
		free(s);
		return NULL;
	}
	return s;
}

int snap_fs_mounts(const struct snap_fs *f, enum snap_kind kind, int64_t id, const int64_t *parents, size_t nparents,
		   struct snap_mount **out, size_t *nout, sl_error_t *err)
{
	struct mount_builder b = { 0 };

	*out = NULL;
	*nout = 0;
	if (nparents == 0 || (kind == SNAP_KIND_VIEW && nparents == 1)) {
		/* No parent: overlay needs at least one lowerdir, so a bind
		 * of the snapshot's own fs, rw for active and ro for a view.
		 * A view of one parent: that parent's fs, read-only. */
		b.m.type = strdup("bind");
		b.m.source = nparents ? snap_fs_path(f, parents[0], "fs") : snap_fs_path(f, id, "fs");
		mb_opt(&b, strdup(kind == SNAP_KIND_VIEW ? "ro" : "rw"));
		mb_opt(&b, strdup("rbind"));
	} else {
		b.m.type = strdup("overlay");
		b.m.source = strdup("overlay");
		if (f->index_off)
			mb_opt(&b, strdup("index=off"));
		if (kind == SNAP_KIND_ACTIVE) {
			_cleanup_free_ char *work = snap_fs_path(f, id, "work");
			_cleanup_free_ char *upper = snap_fs_path(f, id, "fs");

			if (!work || !upper) {
				b.oom = true;
			} else {
				mb_optf(&b, "workdir=%s", work);
				mb_optf(&b, "upperdir=%s", upper);
			}
		}
		mb_opt(&b, lowerdir(f, parents, nparents));
	}
	if (!b.oom && b.m.type && b.m.source)
		*out = malloc(sizeof(**out));
	if (!*out) {
		mount_clear(&b.m);
		return sl_error_set(err, SL_E_NOMEM, "mounts: out of memory");
	}
	**out = b.m;
	*nout = 1;
	return 0;
}
