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
#include <time.h>
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

#define NODE_NBINARIES 4
#define SHIM_NAME "containerd-shim-spore-v2"
#define NODE_BINARY_MAX (512u << 20)
#define SHIM_CONFIG_MAX (1u << 20)
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

/* What install made, for uninstall: directories, shim configs written, and
 * symlinks (path, target: removed only while they still point there). */
struct record {
	struct strlist dirs, files, lpath, ltarget;
};

static void record_free(struct record *r)
{
	strlist_free(&r->dirs);
	strlist_free(&r->files);
	strlist_free(&r->lpath);
	strlist_free(&r->ltarget);
}

static int record_add_link(struct record *r, const char *path, const char *target, sl_error_t *err)
{
	for (size_t i = 0; i < r->lpath.n; i++)
		if (strcmp(r->lpath.v[i], path) == 0 && strcmp(r->ltarget.v[i], target) == 0)
			return 0;
	if (r->lpath.n == RECORD_MAX_DIRS)
		return sl_error_set(err, SL_E_LIMIT, "more than %d links to record", RECORD_MAX_DIRS);
	char *p = strdup(path), *t = strdup(target);

	if (!p || !t) {
		free(p);
		free(t);
		return sl_error_set(err, SL_E_NOMEM, "out of memory");
	}
	r->lpath.v[r->lpath.n++] = p;
	r->ltarget.v[r->ltarget.n++] = t;
	return 0;
}

void node_record_free(struct node_record *rec)
{
	for (size_t i = 0; i < rec->ncreated; i++)
		free(rec->created_dirs[i]);
	for (size_t i = 0; i < rec->nfiles; i++)
		free(rec->files[i]);
	for (size_t i = 0; i < rec->nlinks; i++) {
		free(rec->link_paths[i]);
		free(rec->link_targets[i]);
	}
	free(rec->created_dirs);
	free(rec->files);
	free(rec->link_paths);
	free(rec->link_targets);
	memset(rec, 0, sizeof(*rec));
}

/* One host path of the record; "/" is never a thing install made. */
static int record_path(json_t *v, const char *what, size_t i, char **out, sl_error_t *err)
{
	const char *s = json_string_value(v);

	if (!s || check_host_path(what, s, err) < 0 || strcmp(s, "/") == 0) {
		sl_error_free(err);
		return sl_error_set(err, SL_E_INVALID, RECORD_NAME ": %s[%zu] is not a host path", what, i);
	}
	if (!(*out = strdup(s)))
		return sl_error_set(err, SL_E_NOMEM, "out of memory");
	return 0;
}

/* An optional array (absent: none) of at most RECORD_MAX_DIRS entries. */
static int record_array(json_t *j, const char *key, bool required, json_t **arr, sl_error_t *err)
{
	*arr = json_object_get(j, key);
	if (!*arr && !required)
		return 0;
	if (!*arr || !json_is_array(*arr))
		return sl_error_set(err, SL_E_INVALID, RECORD_NAME ": %s must be an array", key);
	if (json_array_size(*arr) > RECORD_MAX_DIRS)
		return sl_error_set(err, SL_E_LIMIT, RECORD_NAME ": more than %d %s", RECORD_MAX_DIRS, key);
	return 0;
}

static int record_parse_into(json_t *j, struct node_record *rec, sl_error_t *err)
{
	json_t *dirs, *files, *links, *v;
	size_t i;

	if (record_array(j, "created_dirs", true, &dirs, err) < 0 || record_array(j, "files", false, &files, err) < 0 ||
	    record_array(j, "links", false, &links, err) < 0)
		return -1;
	rec->created_dirs = calloc(json_array_size(dirs) + 1, sizeof(char *));
	rec->files = calloc(json_array_size(files) + 1, sizeof(char *));
	rec->link_paths = calloc(json_array_size(links) + 1, sizeof(char *));
	rec->link_targets = calloc(json_array_size(links) + 1, sizeof(char *));
	if (!rec->created_dirs || !rec->files || !rec->link_paths || !rec->link_targets)
		return sl_error_set(err, SL_E_NOMEM, "out of memory");
	json_array_foreach(dirs, i, v) {
		if (record_path(v, "created_dirs", i, &rec->created_dirs[rec->ncreated], err) < 0)
			return -1;
		rec->ncreated++;
	}
	json_array_foreach(files, i, v) {
		if (record_path(v, "files", i, &rec->files[rec->nfiles], err) < 0)
			return -1;
		rec->nfiles++;
	}
	json_array_foreach(links, i, v) {
		if (!json_is_object(v))
			return sl_error_set(err, SL_E_INVALID, RECORD_NAME ": links[%zu] is not an object", i);
		if (record_path(json_object_get(v, "path"), "links.path", i, &rec->link_paths[rec->nlinks], err) < 0)
			return -1;
		if (record_path(json_object_get(v, "target"), "links.target", i, &rec->link_targets[rec->nlinks], err) < 0) {
			free(rec->link_paths[rec->nlinks]);
			rec->link_paths[rec->nlinks] = NULL;
			return -1;
		}
		rec->nlinks++;
	}
	return 0;
}

int node_record_parse(const char *buf, size_t len, struct node_record *rec, sl_error_t *err)
{
	_cleanup_json_ json_t *j = NULL;

	memset(rec, 0, sizeof(*rec));
	if (len > RECORD_MAX)
		return sl_error_set(err, SL_E_LIMIT, RECORD_NAME ": larger than %u bytes", RECORD_MAX);
	if (sl_json_parse(buf, len, RECORD_NAME, &j, err) < 0)
		return -1;
	if (!json_is_object(j))
		return sl_error_set(err, SL_E_INVALID, RECORD_NAME ": not a JSON object");
	if (record_parse_into(j, rec, err) < 0) {
		node_record_free(rec);
		return -1;
	}
	return 0;
}

static int read_record(int instfd, struct record *r, sl_error_t *err)
{
	_cleanup_free_ char *buf = NULL;
	size_t len;
	struct node_record rec;
	int rc = 0;

	if (sl_read_beneath(instfd, RECORD_NAME, RECORD_MAX, &buf, &len, err) < 0) {
		if ((*err)->code == SL_E_NOT_FOUND) {
			sl_error_free(err);
			return 0;
		}
		return -1;
	}
	if (node_record_parse(buf, len, &rec, err) < 0)
		return -1;
	for (size_t i = 0; rc == 0 && i < rec.ncreated; i++)
		rc = strlist_add(&r->dirs, rec.created_dirs[i], err);
	for (size_t i = 0; rc == 0 && i < rec.nfiles; i++)
		rc = strlist_add(&r->files, rec.files[i], err);
	for (size_t i = 0; rc == 0 && i < rec.nlinks; i++)
		rc = record_add_link(r, rec.link_paths[i], rec.link_targets[i], err);
	node_record_free(&rec);
	return rc;
}

static int json_strings(json_t *j, const char *key, const struct strlist *l)
{
	json_t *a = json_array();

	if (!a || json_object_set_new(j, key, a) < 0)
		return -1;
	for (size_t i = 0; i < l->n; i++)
		if (json_array_append_new(a, json_string(l->v[i])) < 0)
			return -1;
	return 0;
}

static int write_record(int instfd, const struct record *r, sl_error_t *err)
{
	_cleanup_json_ json_t *j = json_object();
	json_t *links = json_array();
	_cleanup_free_ char *text = NULL;
	size_t len;

	if (!j || !links || json_object_set_new(j, "links", links) < 0 || json_strings(j, "created_dirs", &r->dirs) < 0 ||
	    json_strings(j, "files", &r->files) < 0)
		return sl_error_set(err, SL_E_NOMEM, "out of memory");
	for (size_t i = 0; i < r->lpath.n; i++)
		if (json_array_append_new(links, json_pack("{s:s,s:s}", "path", r->lpath.v[i], "target", r->ltarget.v[i])) < 0)
			return sl_error_set(err, SL_E_NOMEM, "out of memory");
	text = sl_json_dump(j, &len);
	if (!text)
		return sl_error_set(err, SL_E_NOMEM, "out of memory");
	return sl_write_atomic(instfd, RECORD_NAME, text, len, 0644, err);
}

/* ---- binaries --------------------------------------------------------- */

/* Temp files of an atomic write that crashed (".<name>.tmp.<pid>.<rand>",
 * sl_write_atomic's naming) are ours to remove: those of the binaries, and
 * of extra (a shim config's name, or NULL). */
static void remove_stale_temps(int dfd, const char *extra)
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
		for (size_t i = 0; node_binaries[i] || (extra && i == NODE_NBINARIES); i++) {
			char pfx[NAME_MAX + 1];

			snprintf(pfx, sizeof(pfx), ".%s.tmp.", node_binaries[i] ? node_binaries[i] : extra);
			if (strncmp(e->d_name, pfx, strlen(pfx)) == 0)
				unlinkat(dirfd(d), e->d_name, 0);
			if (!node_binaries[i])
				break;
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

static bool has_text(const char *s)
{
	return s && *s;
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
	if (has_text(o->shim_link_dir) && check_host_path("--shim-link-dir", o->shim_link_dir, err) < 0)
		return -1;
	if (has_text(o->shim_config_src)) {
		if (!has_text(o->ctrd.shim_config))
			return sl_error_set(err, SL_E_INVALID, "--shim-config-src needs --shim-config (where the file goes)");
		if (check_host_path("--shim-config", o->ctrd.shim_config, err) < 0)
			return -1;
		if (o->ctrd.shim_config[strlen(o->ctrd.shim_config) - 1] == '/')
			return sl_error_set(err, SL_E_INVALID, "--shim-config \"%s\": names a directory", o->ctrd.shim_config);
	}
	return 0;
}

/* dir + "/" + name for host paths, whatever trailing slashes dir has. */
static void host_join(const char *dir, const char *name, char *out, size_t cap)
{
	size_t n = strlen(dir);

	while (n > 1 && dir[n - 1] == '/')
		n--;
	snprintf(out, cap, "%.*s/%s", (int)(n == 1 ? 0 : n), dir, name);
}

/* Opens host directory p beneath root; -1 with no error when it does not exist. */
static int open_dir_opt(int rootfd, const char *p, sl_error_t *err)
{
	int fd = open_in_root(rootfd, p, O_RDONLY | O_DIRECTORY, err);

	if (fd < 0 && (*err)->code == SL_E_NOT_FOUND)
		sl_error_free(err);
	return fd;
}

/* The shim link at dfd/SHIM_NAME: *present and *same (it already points to
 * target). Anything there but a symlink to target or to a target the record
 * says install made (rec: this install dir's; prev: the one in the
 * directory the link points to) is someone else's, and refused. */
static bool record_has_link(const struct record *rec, const char *path, const char *target)
{
	for (size_t i = 0; i < rec->lpath.n; i++)
		if (strcmp(rec->lpath.v[i], path) == 0 && strcmp(rec->ltarget.v[i], target) == 0)
			return true;
	return false;
}

static int check_link(int dfd, const char *linkpath, const char *target, const struct record *rec,
		      const struct record *prev, bool *present, bool *same, sl_error_t *err)
{
	char cur[PATH_MAX];
	ssize_t n = dfd < 0 ? -1 : readlinkat(dfd, SHIM_NAME, cur, sizeof(cur) - 1);

	*present = *same = false;
	if (n < 0) {
		if (dfd < 0 || errno == ENOENT)
			return 0;
		if (errno == EINVAL)
			return sl_error_set(err, SL_E_EXISTS,
					    "%s exists and is not a symlink made by sporelet-node: remove it, or pass another --shim-link-dir",
					    linkpath);
		return sl_error_sys(err, "readlink %s", linkpath);
	}
	cur[n] = '\0';
	*present = true;
	*same = strcmp(cur, target) == 0;
	if (*same)
		return 0;
	if (record_has_link(rec, linkpath, cur) || record_has_link(prev, linkpath, cur))
		return 0;
	return sl_error_set(err, SL_E_EXISTS,
			    "%s is a symlink to %s, not made by sporelet-node: remove it, or pass another --shim-link-dir",
			    linkpath, cur);
}

/* When the shim link points into another install directory (the install
 * dir changed since), that directory's record: the link and the shim
 * config it lists are ours to replace. Unreadable or none: empty. */
static int read_prev_record(int rootfd, int linkfd, const char *target, struct record *prev, sl_error_t *err)
{
	char cur[PATH_MAX], odir[PATH_MAX];
	const char *obase;
	ssize_t n = linkfd < 0 ? -1 : readlinkat(linkfd, SHIM_NAME, cur, sizeof(cur) - 1);

	if (n <= 0)
		return 0;
	cur[n] = '\0';
	if (strcmp(cur, target) == 0 || check_host_path("link target", cur, err) < 0) {
		sl_error_free(err);
		return 0;
	}
	split_host_path(cur, odir, sizeof(odir), &obase);
	_cleanup_close_ int ofd = open_dir_opt(rootfd, odir, err);

	if (ofd < 0 || read_record(ofd, prev, err) < 0)
		sl_error_free(err);
	return 0;
}

/* Points dfd/SHIM_NAME at target atomically: a symlink under a temp name
 * renamed over it, so containerd never finds the name missing. */
static int make_link(int dfd, const char *linkpath, const char *target, sl_error_t *err)
{
	char tmpname[NAME_MAX + 1];
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	snprintf(tmpname, sizeof(tmpname), "." SHIM_NAME ".tmp.%d.%lx", (int)getpid(), (unsigned long)ts.tv_nsec);
	if (symlinkat(target, dfd, tmpname) < 0)
		return sl_error_sys(err, "symlink %s", linkpath);
	if (renameat(dfd, tmpname, dfd, SHIM_NAME) < 0) {
		sl_error_sys(err, "rename to %s", linkpath);
		unlinkat(dfd, tmpname, 0);
		return -1;
	}
	return sl_fsync_dir(dfd, err);
}

/* The shim config at dfd/base: absent, or a regular file the record says
 * install wrote; anything else is the administrator's and refused. */
static int check_shim_config(int dfd, const char *path, const char *base, const struct record *rec,
			     const struct record *prev, bool *present, sl_error_t *err)
{
	struct stat st;
	bool recorded = false;

	*present = false;
	if (dfd < 0)
		return 0;
	if (fstatat(dfd, base, &st, AT_SYMLINK_NOFOLLOW) < 0) {
		if (errno == ENOENT)
			return 0;
		return sl_error_sys(err, "stat %s", path);
	}
	*present = true;
	for (size_t i = 0; i < rec->files.n; i++)
		if (strcmp(rec->files.v[i], path) == 0)
			recorded = true;
	for (size_t i = 0; i < prev->files.n; i++)
		if (strcmp(prev->files.v[i], path) == 0)
			recorded = true;
	if (!recorded)
		return sl_error_set(err, SL_E_EXISTS,
				    "%s exists and was not written by sporelet-node: remove it (or pass another --shim-config) before installing with --shim-config-src",
				    path);
	if (!S_ISREG(st.st_mode))
		return sl_error_set(err, SL_E_INVALID, "%s is not a regular file", path);
	return 0;
}

int node_install(const struct node_opts *o, struct node_report *r, sl_error_t *err)
{
	_cleanup_close_ int rootfd = -1, instfd = -1, cfgfd = -1, linkfd = -1, shimfd = -1;
	char *bins[8] = {0};
	size_t lens[8] = {0};
	struct record rec = {0}, prev = {0};
	char cfgdir[PATH_MAX], shimdir[PATH_MAX], linkpath[PATH_MAX], target[PATH_MAX];
	const char *cfgbase, *shimbase = NULL;
	_cleanup_free_ char *old = NULL, *new = NULL, *shimcfg = NULL;
	size_t oldlen = 0, newlen = 0, shimlen = 0;
	bool exists = false, changed = false, link_present = false, link_same = false, shim_present = false;
	bool want_link, want_shim;
	mode_t mode = 0644;
	int rc = -1;

	memset(r, 0, sizeof(*r));
	if (check_opts(o, err) < 0)
		return -1;
	want_link = has_text(o->shim_link_dir);
	want_shim = has_text(o->shim_config_src);
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
	if (want_shim && sl_read_path(o->shim_config_src, SHIM_CONFIG_MAX, &shimcfg, &shimlen, err) < 0) {
		sl_error_wrap(err, "--shim-config-src");
		goto out;
	}
	/* The record of an earlier install says which link and shim config
	 * are ours to replace. */
	instfd = open_dir_opt(rootfd, o->install_dir, err);
	if (instfd < 0 && *err)
		goto out;
	if (instfd >= 0 && read_record(instfd, &rec, err) < 0)
		goto out;
	host_join(o->install_dir, SHIM_NAME, target, sizeof(target));
	if (want_link) {
		host_join(o->shim_link_dir, SHIM_NAME, linkpath, sizeof(linkpath));
		linkfd = open_dir_opt(rootfd, o->shim_link_dir, err);
		if (linkfd < 0 && *err)
			goto out;
		if (read_prev_record(rootfd, linkfd, target, &prev, err) < 0 ||
		    check_link(linkfd, linkpath, target, &rec, &prev, &link_present, &link_same, err) < 0)
			goto out;
	}
	if (want_shim) {
		split_host_path(o->ctrd.shim_config, shimdir, sizeof(shimdir), &shimbase);
		shimfd = open_dir_opt(rootfd, shimdir, err);
		if ((shimfd < 0 && *err) ||
		    check_shim_config(shimfd, o->ctrd.shim_config, shimbase, &rec, &prev, &shim_present, err) < 0)
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

	if (instfd < 0) {
		if (mkdirs_in_root(rootfd, o->install_dir, &rec.dirs, err) < 0)
			goto out;
		instfd = open_in_root(rootfd, o->install_dir, O_RDONLY | O_DIRECTORY, err);
		if (instfd < 0)
			goto out;
	}
	if (cfgfd < 0) {
		if (mkdirs_in_root(rootfd, cfgdir, &rec.dirs, err) < 0)
			goto out;
		cfgfd = open_in_root(rootfd, cfgdir, O_RDONLY | O_DIRECTORY, err);
		if (cfgfd < 0)
			goto out;
	}
	if (want_link) {
		if (linkfd < 0) {
			if (mkdirs_in_root(rootfd, o->shim_link_dir, &rec.dirs, err) < 0)
				goto out;
			linkfd = open_in_root(rootfd, o->shim_link_dir, O_RDONLY | O_DIRECTORY, err);
			if (linkfd < 0)
				goto out;
		}
		if (record_add_link(&rec, linkpath, target, err) < 0)
			goto out;
	}
	if (want_shim) {
		if (shimfd < 0) {
			if (mkdirs_in_root(rootfd, shimdir, &rec.dirs, err) < 0)
				goto out;
			shimfd = open_in_root(rootfd, shimdir, O_RDONLY | O_DIRECTORY, err);
			if (shimfd < 0)
				goto out;
		}
		if (strlist_add(&rec.files, o->ctrd.shim_config, err) < 0)
			goto out;
	}
	/* The record goes first: an install that dies half-way can still be
	 * uninstalled completely. */
	if (write_record(instfd, &rec, err) < 0)
		goto out;

	remove_stale_temps(instfd, NULL);
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
	if (want_link && !link_same) {
		remove_stale_temps(linkfd, NULL);
		if (make_link(linkfd, linkpath, target, err) < 0)
			goto out;
		r->shim_link = link_present ? NODE_UPDATED : NODE_CREATED;
	}
	if (want_shim && !same_file(shimfd, shimbase, shimcfg, shimlen, 0644)) {
		remove_stale_temps(shimfd, shimbase);
		if (sl_write_atomic(shimfd, shimbase, shimcfg, shimlen, 0644, err) < 0) {
			sl_error_wrap(err, "writing %s", o->ctrd.shim_config);
			goto out;
		}
		r->shim_config = shim_present ? NODE_UPDATED : NODE_CREATED;
	}

	/* containerd's config last: when containerd restarts for it, the
	 * binaries, the link and the shim config it names are in place. */
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
	record_free(&rec);
	record_free(&prev);
	return rc;
}

static int cmp_len_desc(const void *a, const void *b)
{
	size_t la = strlen(*(char *const *)a), lb = strlen(*(char *const *)b);

	return la < lb ? 1 : la > lb ? -1 : 0;
}

/* Removes host file path beneath root if keep() says it is still what
 * install made; a missing one is fine. */
static int remove_recorded(int rootfd, const char *path, const char *link_target, bool *removed, sl_error_t *err)
{
	char dir[PATH_MAX];
	const char *name;
	struct stat st;

	*removed = false;
	split_host_path(path, dir, sizeof(dir), &name);
	_cleanup_close_ int dfd = open_dir_opt(rootfd, dir, err);

	if (dfd < 0)
		return *err ? -1 : 0;
	if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return errno == ENOENT ? 0 : sl_error_sys(err, "stat %s", path);
	if (link_target) {
		char cur[PATH_MAX];
		ssize_t n = readlinkat(dfd, name, cur, sizeof(cur) - 1);

		/* replaced by someone since: theirs now */
		if (n < 0 || (size_t)n != strlen(link_target) || memcmp(cur, link_target, (size_t)n) != 0)
			return 0;
	} else if (!S_ISREG(st.st_mode)) {
		return 0;
	}
	if (unlinkat(dfd, name, 0) < 0)
		return errno == ENOENT ? 0 : sl_error_sys(err, "removing %s", path);
	*removed = true;
	return sl_fsync_dir(dfd, err);
}

int node_uninstall(const struct node_opts *o, struct node_report *r, sl_error_t *err)
{
	_cleanup_close_ int rootfd = -1, instfd = -1, cfgfd = -1;
	struct record rec = {0};
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
	if (read_record(instfd, &rec, err) < 0)
		goto out;
	/* The link before the shim it points to; each only while it is
	 * still what install made. */
	for (size_t i = 0; i < rec.lpath.n; i++) {
		bool removed;

		if (remove_recorded(rootfd, rec.lpath.v[i], rec.ltarget.v[i], &removed, err) < 0)
			goto out;
		if (removed)
			r->shim_link = NODE_REMOVED;
	}
	for (size_t i = 0; i < rec.files.n; i++) {
		bool removed;

		if (remove_recorded(rootfd, rec.files.v[i], NULL, &removed, err) < 0)
			goto out;
		if (removed)
			r->shim_config = NODE_REMOVED;
	}
	remove_stale_temps(instfd, NULL);
	for (size_t i = 0; node_binaries[i]; i++) {
		if (unlinkat(instfd, node_binaries[i], 0) == 0)
			r->binaries[i] = NODE_REMOVED;
		else if (errno != ENOENT) {
			sl_error_sys(err, "removing %s/%s", o->install_dir, node_binaries[i]);
			goto out;
		}
	}
	if (unlinkat(instfd, RECORD_NAME, 0) < 0 && errno != ENOENT) {
		sl_error_sys(err, "removing %s/%s", o->install_dir, RECORD_NAME);
		goto out;
	}
	if (sl_fsync_dir(instfd, err) < 0)
		goto out;
	/* Deepest first; a directory someone else put files in stays. */
	qsort(rec.dirs.v, rec.dirs.n, sizeof(rec.dirs.v[0]), cmp_len_desc);
	for (size_t i = 0; i < rec.dirs.n; i++) {
		char dir[PATH_MAX];
		const char *name;

		split_host_path(rec.dirs.v[i], dir, sizeof(dir), &name);
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
	record_free(&rec);
	return rc;
}
