/* Node install and uninstall: binaries copied atomically, containerd's config edited, beneath a root directory. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "node_int.h"
#include "sl/file.h"
#include "sl/json.h"
#include "sporelet_node.h"

/* spore-oci goes with spore: `spore pull` (the shim's and the snapshotter's
 * way to fetch a spore image) execs it from spore's own directory. */
const char *const node_binaries[] = {
	"spore", "spore-oci", "containerd-shim-spore-v2", "spore-snapshotter", NULL,
};

#define NODE_BINARY_MAX (512u << 20)
#define RECORD_NAME ".sporelet-node.json"
#define RECORD_MAX (64u << 10)
#define RECORD_MAX_DIRS 64

void node_opts_default(struct node_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->root = "/";
	o->install_dir = "/opt/sporelet/bin";
	o->containerd_config = "/etc/containerd/config.toml";
	node_ctrd_opts_default(&o->ctrd);
}

const char *node_file_state_name(enum node_file_state s)
{
	switch (s) {
	case NODE_UPDATED: return "updated";
	case NODE_CREATED: return "created";
	case NODE_REMOVED: return "removed";
	default: return "unchanged";
	}
}

/* Host paths: absolute, no "." or ".." parts, no empty parts but a trailing
 * slash, so the record of created directories is in one canonical form. */
static int check_host_path(const char *what, const char *p, sl_error_t *err)
{
	if (!p || p[0] != '/' || strlen(p) >= PATH_MAX)
		return sl_error_set(err, SL_E_INVALID, "%s \"%s\": an absolute path is needed", what, p ? p : "");
	for (const char *c = p + 1; *c;) {
		size_t n = strcspn(c, "/");

		if (n == 0 || (n == 1 && c[0] == '.') || (n == 2 && c[0] == '.' && c[1] == '.'))
			return sl_error_set(err, SL_E_INVALID, "%s \"%s\": empty, \".\" or \"..\" path parts are not allowed",
					    what, p);
		c += n;
		if (*c == '/')
			c++;
	}
	return 0;
}

/* Opens host path p beneath rootfd as if rootfd were "/": a symlink on the
 * host (say /etc/containerd -> /data/containerd) resolves inside the root,
 * never to the installer's own filesystem. Without openat2 (Linux < 5.6),
 * symlinks are refused instead. */
static int open_in_root(int rootfd, const char *p, int flags, sl_error_t *err)
{
	struct open_how how = {
		.flags = (uint64_t)(unsigned int)(flags | O_CLOEXEC),
		.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
	};
	const char *rel = p;
	int fd;

	while (*rel == '/')
		rel++;
	if (!*rel)
		rel = ".";
	for (int tries = 0; tries < 8; tries++) {
		fd = (int)syscall(SYS_openat2, rootfd, rel, &how, sizeof(how));
		if (fd >= 0)
			return fd;
		if (errno != EAGAIN)
			break;
	}
	if (errno == ENOSYS)
		return sl_open_beneath(rootfd, rel, flags, 0, err);
	if (errno == ENOENT)
		return sl_error_set(err, SL_E_NOT_FOUND, "%s: not found", p);
	return sl_error_sys(err, "open %s", p);
}

struct strlist {
	char *v[RECORD_MAX_DIRS];
	size_t n;
};

static void strlist_free(struct strlist *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i]);
	l->n = 0;
}

static int strlist_add(struct strlist *l, const char *s, sl_error_t *err)
{
	for (size_t i = 0; i < l->n; i++)
		if (strcmp(l->v[i], s) == 0)
			return 0;
	if (l->n == RECORD_MAX_DIRS)
		return sl_error_set(err, SL_E_LIMIT, "more than %d created directories to record", RECORD_MAX_DIRS);
	if (!(l->v[l->n] = strdup(s)))
		return sl_error_set(err, SL_E_NOMEM, "out of memory");
	l->n++;
	return 0;
}

/* mkdir -p of host directory dir beneath root; directories it made are
 * added to created (so uninstall can take them away again). */
static int mkdirs_in_root(int rootfd, const char *dir, struct strlist *created, sl_error_t *err)
{
	char path[PATH_MAX];
	size_t n = strlen(dir);

	while (n > 1 && dir[n - 1] == '/')
		n--;
	for (size_t i = 1; i <= n; i++) {
		if (i < n && dir[i] != '/')
			continue;
		snprintf(path, sizeof(path), "%.*s", (int)i, dir);
		sl_error_t e = NULL;
		int fd = open_in_root(rootfd, path, O_RDONLY | O_DIRECTORY, &e);

		if (fd >= 0) {
			close(fd);
			continue;
		}
		if (e->code != SL_E_NOT_FOUND) {
			*err = e;
			return -1;
		}
		sl_error_free(&e);
		char *slash = strrchr(path, '/');
		const char *name = slash + 1;
		char parent[PATH_MAX];

		snprintf(parent, sizeof(parent), "%.*s", (int)(slash - path), path);
		_cleanup_close_ int pfd = open_in_root(rootfd, parent[0] ? parent : "/", O_RDONLY | O_DIRECTORY, err);

		if (pfd < 0)
			return -1;
		if (mkdirat(pfd, name, 0755) < 0) {
			/* made by someone else meanwhile: not ours to remove */
			if (errno != EEXIST)
				return sl_error_sys(err, "mkdir %s", path);
		} else if (strlist_add(created, path, err) < 0) {
			return -1;
		}
	}
	return 0;
}

/* ---- the install record --------------------------------------------- */

void node_record_free(struct node_record *rec)
{
	for (size_t i = 0; i < rec->ncreated; i++)
		free(rec->created_dirs[i]);
	free(rec->created_dirs);
	rec->created_dirs = NULL;
	rec->ncreated = 0;
}

int node_record_parse(const char *buf, size_t len, struct node_record *rec, sl_error_t *err)
{
	_cleanup_json_ json_t *j = NULL;
	json_t *dirs, *v;
	size_t i;

	rec->created_dirs = NULL;
	rec->ncreated = 0;
	if (len > RECORD_MAX)
		return sl_error_set(err, SL_E_LIMIT, RECORD_NAME ": larger than %u bytes", RECORD_MAX);
	if (sl_json_parse(buf, len, RECORD_NAME, &j, err) < 0)
		return -1;
	if (!json_is_object(j))
		return sl_error_set(err, SL_E_INVALID, RECORD_NAME ": not a JSON object");
	if (sl_json_get_arr(j, "created_dirs", RECORD_NAME, &dirs, err) < 0)
		return -1;
	if (json_array_size(dirs) > RECORD_MAX_DIRS)
		return sl_error_set(err, SL_E_LIMIT, RECORD_NAME ": more than %d created_dirs", RECORD_MAX_DIRS);
	rec->created_dirs = calloc(json_array_size(dirs) + 1, sizeof(char *));
	if (!rec->created_dirs)
		return sl_error_set(err, SL_E_NOMEM, "out of memory");
	json_array_foreach(dirs, i, v) {
		const char *s = json_string_value(v);

		if (!s || check_host_path(RECORD_NAME ": created_dirs entry", s, err) < 0 || strcmp(s, "/") == 0) {
			if (!*err)
				sl_error_set(err, SL_E_INVALID, RECORD_NAME ": created_dirs[%zu] is not a directory path", i);
			node_record_free(rec);
			return -1;
		}
		if (!(rec->created_dirs[rec->ncreated] = strdup(s))) {
			node_record_free(rec);
			return sl_error_set(err, SL_E_NOMEM, "out of memory");
		}
		rec->ncreated++;
	}
	return 0;
}

static int read_record(int instfd, struct strlist *l, sl_error_t *err)
{
	_cleanup_free_ char *buf = NULL;
	size_t len;
	struct node_record rec;

	if (sl_read_beneath(instfd, RECORD_NAME, RECORD_MAX, &buf, &len, err) < 0) {
		if ((*err)->code == SL_E_NOT_FOUND) {
			sl_error_free(err);
			return 0;
		}
		return -1;
	}
	if (node_record_parse(buf, len, &rec, err) < 0)
		return -1;
	for (size_t i = 0; i < rec.ncreated; i++)
		if (strlist_add(l, rec.created_dirs[i], err) < 0) {
			node_record_free(&rec);
			return -1;
		}
	node_record_free(&rec);
	return 0;
}

static int write_record(int instfd, const struct strlist *l, sl_error_t *err)
{
	_cleanup_json_ json_t *j = json_object();
	json_t *a = json_array();
	_cleanup_free_ char *text = NULL;
	size_t len;

	if (!j || !a || json_object_set_new(j, "created_dirs", a) < 0)
		return sl_error_set(err, SL_E_NOMEM, "out of memory");
	for (size_t i = 0; i < l->n; i++)
		if (json_array_append_new(a, json_string(l->v[i])) < 0)
			return sl_error_set(err, SL_E_NOMEM, "out of memory");
	text = sl_json_dump(j, &len);
	if (!text)
		return sl_error_set(err, SL_E_NOMEM, "out of memory");
	return sl_write_atomic(instfd, RECORD_NAME, text, len, 0644, err);
}

/* ---- binaries --------------------------------------------------------- */

/* Temp files of an atomic write that crashed (".<name>.tmp.<pid>.<rand>",
 * sl_write_atomic's naming) are ours to remove. */
static void remove_stale_temps(int dfd)
{
	int fd = openat(dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	struct dirent *e;

	if (!d) {
		if (fd >= 0)
			close(fd);
		return;
	}
	while ((e = readdir(d))) {
		for (size_t i = 0; node_binaries[i]; i++) {
			char pfx[NAME_MAX + 1];

			snprintf(pfx, sizeof(pfx), ".%s.tmp.", node_binaries[i]);
			if (strncmp(e->d_name, pfx, strlen(pfx)) == 0)
				unlinkat(dirfd(d), e->d_name, 0);
		}
	}
	closedir(d);
}

static bool same_file(int dfd, const char *name, const char *buf, size_t len, mode_t mode)
{
	_cleanup_close_ int fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	struct stat st;
	char chunk[65536];
	size_t off = 0;

	if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || (size_t)st.st_size != len ||
	    (st.st_mode & 07777) != mode)
		return false;
	while (off < len) {
		ssize_t n = read(fd, chunk, sizeof(chunk));

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0 || (size_t)n > len - off || memcmp(chunk, buf + off, (size_t)n) != 0)
			return false;
		off += (size_t)n;
	}
	return true;
}

static int find_source(const struct node_opts *o, const char *name, char *out, size_t cap, sl_error_t *err)
{
	char dirs[1024] = "";
	size_t used = 0;

	for (size_t i = 0; i < o->nsrc; i++) {
		struct stat st;

		snprintf(out, cap, "%s/%s", o->src_dirs[i], name);
		if (stat(out, &st) == 0 && S_ISREG(st.st_mode))
			return 0;
		used += (size_t)snprintf(dirs + used, sizeof(dirs) - used, "%s%s", i ? ", " : "", o->src_dirs[i]);
		if (used >= sizeof(dirs))
			used = sizeof(dirs) - 1;
	}
	return sl_error_set(err, SL_E_NOT_FOUND, "%s: not found in the source directories (%s)", name,
			    o->nsrc ? dirs : "none given: --src");
}

/* ---- containerd's config ---------------------------------------------- */

/* Splits host path p into its directory and last part. */
static void split_host_path(const char *p, char *dir, size_t dcap, const char **base)
{
	const char *slash = strrchr(p, '/');

	snprintf(dir, dcap, "%.*s", (int)(slash - p), p);
	if (!dir[0])
		snprintf(dir, dcap, "/");
	*base = slash + 1;
}

/* Reads the config (exists=false when there is none). A symlink is refused:
 * replacing it by a file would cut the link to whatever it points to. */
static int read_config(int dfd, const char *path, const char *base, char **buf, size_t *len,
		       bool *exists, mode_t *mode, sl_error_t *err)
{
	_cleanup_close_ int fd = openat(dfd, base, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
	struct stat st;

	*exists = false;
	*buf = NULL;
	*len = 0;
	*mode = 0644;
	if (fd < 0) {
		if (errno == ENOENT)
			return 0;
		if (errno == ELOOP)
			return sl_error_set(err, SL_E_UNSUPPORTED,
					    "%s is a symlink: sporelet-node replaces the file it edits, so point --containerd-config at the real file",
					    path);
		return sl_error_sys(err, "open %s", path);
	}
	if (fstat(fd, &st) < 0)
		return sl_error_sys(err, "stat %s", path);
	if (!S_ISREG(st.st_mode))
		return sl_error_set(err, SL_E_INVALID, "%s is not a regular file", path);
	if ((uint64_t)st.st_size > NODE_CONFIG_MAX)
		return sl_error_set(err, SL_E_LIMIT, "%s: larger than %u bytes", path, NODE_CONFIG_MAX);
	*buf = malloc((size_t)st.st_size + 1);
	if (!*buf)
		return sl_error_set(err, SL_E_NOMEM, "out of memory");
	if (sl_pread_all(fd, *buf, (size_t)st.st_size, 0, err) < 0) {
		free(*buf);
		*buf = NULL;
		return sl_error_wrap(err, "%s", path);
	}
	(*buf)[st.st_size] = '\0';
	*len = (size_t)st.st_size;
	*exists = true;
	*mode = st.st_mode & 07777;
	return 0;
}

static int check_opts(const struct node_opts *o, sl_error_t *err)
{
	if (!o->root || !*o->root)
		return sl_error_set(err, SL_E_INVALID, "--root: empty");
	if (check_host_path("--install-dir", o->install_dir, err) < 0 ||
	    check_host_path("--containerd-config", o->containerd_config, err) < 0)
		return -1;
	if (strcmp(o->install_dir, "/") == 0)
		return sl_error_set(err, SL_E_INVALID, "--install-dir: not the root directory");
	if (o->containerd_config[strlen(o->containerd_config) - 1] == '/')
		return sl_error_set(err, SL_E_INVALID, "--containerd-config \"%s\": names a directory", o->containerd_config);
	return 0;
}

int node_install(const struct node_opts *o, struct node_report *r, sl_error_t *err)
{
	_cleanup_close_ int rootfd = -1, instfd = -1, cfgfd = -1;
	char *bins[8] = {0};
	size_t lens[8] = {0};
	struct strlist created = {.n = 0};
	char cfgdir[PATH_MAX];
	const char *cfgbase;
	_cleanup_free_ char *old = NULL, *new = NULL;
	size_t oldlen = 0, newlen = 0;
	bool exists = false, changed = false;
	mode_t mode = 0644;
	int rc = -1;

	memset(r, 0, sizeof(*r));
	if (check_opts(o, err) < 0)
		return -1;
	rootfd = open(o->root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (rootfd < 0)
		return sl_error_sys(err, "--root %s", o->root);

	/* Everything is read before anything on the node changes. */
	for (size_t i = 0; node_binaries[i]; i++) {
		char src[PATH_MAX];

		if (find_source(o, node_binaries[i], src, sizeof(src), err) < 0 ||
		    sl_read_path(src, NODE_BINARY_MAX, &bins[i], &lens[i], err) < 0)
			goto out;
	}

	/* ... and so is containerd's config, whose edit is worked out (or
	 * refused) before the first binary is written. */
	split_host_path(o->containerd_config, cfgdir, sizeof(cfgdir), &cfgbase);
	cfgfd = open_in_root(rootfd, cfgdir, O_RDONLY | O_DIRECTORY, err);
	if (cfgfd < 0) {
		if ((*err)->code != SL_E_NOT_FOUND)
			goto out;
		sl_error_free(err);
	} else if (read_config(cfgfd, o->containerd_config, cfgbase, &old, &oldlen, &exists, &mode, err) < 0) {
		goto out;
	}
	if (node_config_install(old, oldlen, exists, &o->ctrd, &new, &newlen, &changed, err) < 0) {
		sl_error_wrap(err, "%s", o->containerd_config);
		goto out;
	}

	if (mkdirs_in_root(rootfd, o->install_dir, &created, err) < 0)
		goto out;
	instfd = open_in_root(rootfd, o->install_dir, O_RDONLY | O_DIRECTORY, err);
	if (instfd < 0)
		goto out;
	if (read_record(instfd, &created, err) < 0)
		goto out;
	if (cfgfd < 0) {
		if (mkdirs_in_root(rootfd, cfgdir, &created, err) < 0)
			goto out;
		cfgfd = open_in_root(rootfd, cfgdir, O_RDONLY | O_DIRECTORY, err);
		if (cfgfd < 0)
			goto out;
	}
	/* The record goes first: an install that dies half-way can still be
	 * uninstalled completely. */
	if (write_record(instfd, &created, err) < 0)
		goto out;

	remove_stale_temps(instfd);
	for (size_t i = 0; node_binaries[i]; i++) {
		struct stat st;
		bool existed = fstatat(instfd, node_binaries[i], &st, AT_SYMLINK_NOFOLLOW) == 0;

		if (same_file(instfd, node_binaries[i], bins[i], lens[i], 0755))
			continue;
		/* rename(2) swaps the directory entry only: a running copy of
		 * the old binary keeps its inode, so there is no ETXTBSY. */
		if (sl_write_atomic(instfd, node_binaries[i], bins[i], lens[i], 0755, err) < 0) {
			sl_error_wrap(err, "installing %s/%s", o->install_dir, node_binaries[i]);
			goto out;
		}
		r->binaries[i] = existed ? NODE_UPDATED : NODE_CREATED;
	}

	/* containerd's config last: when containerd restarts for it, the
	 * binaries it names are in place. */
	if (changed) {
		if (sl_write_atomic(cfgfd, cfgbase, new, newlen, mode, err) < 0) {
			sl_error_wrap(err, "writing %s", o->containerd_config);
			goto out;
		}
		r->config = exists ? NODE_UPDATED : NODE_CREATED;
		r->config_changed = true;
	}
	rc = 0;
out:
	for (size_t i = 0; i < 8; i++)
		free(bins[i]);
	strlist_free(&created);
	return rc;
}

static int cmp_len_desc(const void *a, const void *b)
{
	size_t la = strlen(*(char *const *)a), lb = strlen(*(char *const *)b);

	return la < lb ? 1 : la > lb ? -1 : 0;
}

int node_uninstall(const struct node_opts *o, struct node_report *r, sl_error_t *err)
{
	_cleanup_close_ int rootfd = -1, instfd = -1, cfgfd = -1;
	struct strlist created = {.n = 0};
	char cfgdir[PATH_MAX];
	const char *cfgbase;
	int rc = -1;

	memset(r, 0, sizeof(*r));
	if (check_opts(o, err) < 0)
		return -1;
	rootfd = open(o->root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (rootfd < 0)
		return sl_error_sys(err, "--root %s", o->root);

	/* containerd's config first: once it no longer names the runtime,
	 * the binaries can go. */
	split_host_path(o->containerd_config, cfgdir, sizeof(cfgdir), &cfgbase);
	cfgfd = open_in_root(rootfd, cfgdir, O_RDONLY | O_DIRECTORY, err);
	if (cfgfd < 0) {
		if ((*err)->code != SL_E_NOT_FOUND)
			goto out;
		sl_error_free(err);
	} else {
		_cleanup_free_ char *old = NULL, *new = NULL;
		size_t oldlen, newlen;
		bool exists, changed, remove;
		mode_t mode;

		if (read_config(cfgfd, o->containerd_config, cfgbase, &old, &oldlen, &exists, &mode, err) < 0)
			goto out;
		if (exists) {
			if (node_config_uninstall(old, oldlen, &new, &newlen, &remove, &changed, err) < 0) {
				sl_error_wrap(err, "%s", o->containerd_config);
				goto out;
			}
			if (remove) {
				if (unlinkat(cfgfd, cfgbase, 0) < 0 || sl_fsync_dir(cfgfd, err) < 0) {
					if (!*err)
						sl_error_sys(err, "removing %s", o->containerd_config);
					goto out;
				}
				r->config = NODE_REMOVED;
				r->config_changed = true;
			} else if (changed) {
				if (sl_write_atomic(cfgfd, cfgbase, new, newlen, mode, err) < 0) {
					sl_error_wrap(err, "writing %s", o->containerd_config);
					goto out;
				}
				r->config = NODE_UPDATED;
				r->config_changed = true;
			}
		}
	}

	instfd = open_in_root(rootfd, o->install_dir, O_RDONLY | O_DIRECTORY, err);
	if (instfd < 0) {
		if ((*err)->code != SL_E_NOT_FOUND)
			goto out;
		sl_error_free(err);
		rc = 0;
		goto out;
	}
	remove_stale_temps(instfd);
	for (size_t i = 0; node_binaries[i]; i++) {
		if (unlinkat(instfd, node_binaries[i], 0) == 0)
			r->binaries[i] = NODE_REMOVED;
		else if (errno != ENOENT) {
			sl_error_sys(err, "removing %s/%s", o->install_dir, node_binaries[i]);
			goto out;
		}
	}
	if (read_record(instfd, &created, err) < 0)
		goto out;
	if (unlinkat(instfd, RECORD_NAME, 0) < 0 && errno != ENOENT) {
		sl_error_sys(err, "removing %s/%s", o->install_dir, RECORD_NAME);
		goto out;
	}
	if (sl_fsync_dir(instfd, err) < 0)
		goto out;
	/* Deepest first; a directory someone else put files in stays. */
	qsort(created.v, created.n, sizeof(created.v[0]), cmp_len_desc);
	for (size_t i = 0; i < created.n; i++) {
		char dir[PATH_MAX];
		const char *name;

		split_host_path(created.v[i], dir, sizeof(dir), &name);
		sl_error_t e = NULL;
		_cleanup_close_ int pfd = open_in_root(rootfd, dir, O_RDONLY | O_DIRECTORY, &e);

		if (pfd < 0) {
			sl_error_free(&e);
			continue;
		}
		if (unlinkat(pfd, name, AT_REMOVEDIR) == 0)
			sl_fsync_dir(pfd, &e);
		sl_error_free(&e);
	}
	rc = 0;
out:
	strlist_free(&created);
	return rc;
}
