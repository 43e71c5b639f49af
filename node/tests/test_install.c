/* Scratch-root tests of sporelet-node install and uninstall (node.c): files, modes, atomic replace of a running binary, exact revert. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "sl/digest.h"
#include "sl/file.h"
#include "sporelet_node.h"

static char tmp[256];

static const char user_cfg[] =
	"version = 2\n"
	"[plugins.\"io.containerd.grpc.v1.cri\".containerd]\n"
	"  snapshotter = \"overlayfs\"\n"
	"[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\n"
	"  runtime_type = \"io.containerd.runc.v2\"\n";

static void put(const char *path, const void *buf, size_t len, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, buf, len), (ssize_t)len);
	assert_int_equal(fchmod(fd, mode), 0);
	close(fd);
}

static void mkdirs(const char *path)
{
	char p[512];

	snprintf(p, sizeof(p), "%s", path);
	for (char *s = p + 1; *s; s++)
		if (*s == '/') {
			*s = '\0';
			mkdir(p, 0755);
			*s = '/';
		}
	mkdir(p, 0755);
}

static char *slurp(const char *path, size_t *len)
{
	char *buf = NULL;
	sl_error_t err = NULL;

	if (sl_read_path(path, 1u << 28, &buf, len, &err) < 0)
		fail_msg("%s", sl_error_msg(err));
	return buf;
}

/* ---- a tree listing with content hashes ------------------------------- */

static char *listing;
static size_t listing_len, listing_cap;
static size_t listing_base;

static int list_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	char line[1024], hex[SL_DIGEST_HEXLEN + 1] = "-";
	(void)flag;
	(void)ftw;

	if (S_ISREG(st->st_mode)) {
		sl_digest d;
		uint64_t size;
		sl_error_t err = NULL;
		int fd = open(path, O_RDONLY | O_CLOEXEC);

		assert_true(fd >= 0);
		assert_int_equal(sl_sha256_fd(fd, &d, &size, &err), 0);
		close(fd);
		sl_digest_hex(&d, hex);
	} else if (S_ISLNK(st->st_mode)) {
		ssize_t n = readlink(path, hex, sizeof(hex) - 1);

		assert_true(n > 0);
		hex[n] = '\0';
	}
	int n = snprintf(line, sizeof(line), "%s %o %lld %s\n", path + listing_base, (unsigned)st->st_mode,
			 S_ISDIR(st->st_mode) ? 0LL : (long long)st->st_size, hex);

	if (listing_len + (size_t)n + 1 > listing_cap) {
		listing_cap = (listing_cap + (size_t)n + 1) * 2;
		listing = realloc(listing, listing_cap);
		assert_non_null(listing);
	}
	memcpy(listing + listing_len, line, (size_t)n + 1);
	listing_len += (size_t)n;
	return 0;
}

/* Every entry beneath dir: path, mode, size, sha256 (or link target). */
static char *tree(const char *dir)
{
	listing = NULL;
	listing_len = listing_cap = 0;
	listing_base = strlen(dir);
	assert_int_equal(nftw(dir, list_one, 16, FTW_PHYS), 0);
	if (!listing)
		return strdup("");
	return listing;
}

static void rm_rf(const char *dir)
{
	sl_error_t err = NULL;

	if (sl_remove_path(dir, &err) < 0)
		sl_error_free(&err);
}

/* ---- fixtures --------------------------------------------------------- */

struct fx {
	char root[300], src[300], bin[400], cfg[400];
	struct node_opts o;
};

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	snprintf(tmp, sizeof(tmp), "/tmp/sporelet-node-test-XXXXXX");
	if (!mkdtemp(tmp))
		return -1;
	snprintf(f->root, sizeof(f->root), "%s/root", tmp);
	snprintf(f->src, sizeof(f->src), "%s/src", tmp);
	snprintf(f->bin, sizeof(f->bin), "%s/opt/sporelet/bin", f->root);
	snprintf(f->cfg, sizeof(f->cfg), "%s/etc/containerd/config.toml", f->root);
	mkdirs(f->root);
	mkdirs(f->src);
	/* spore is a real program (a copy of sleep) so a running copy can be
	 * replaced; the others are small scripts. */
	size_t len;
	char *sleep_bin = slurp("/bin/sleep", &len);
	char path[400];

	snprintf(path, sizeof(path), "%s/spore", f->src);
	put(path, sleep_bin, len, 0755);
	free(sleep_bin);
	for (size_t i = 1; node_binaries[i]; i++) {
		char body[128];

		snprintf(path, sizeof(path), "%s/%s", f->src, node_binaries[i]);
		snprintf(body, sizeof(body), "#!/bin/sh\necho %s v1\n", node_binaries[i]);
		put(path, body, strlen(body), 0700);
	}
	node_opts_default(&f->o);
	f->o.root = f->root;
	f->o.src_dirs[0] = f->src;
	f->o.nsrc = 1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	rm_rf(tmp);
	free(*state);
	return 0;
}

static void install_ok(struct fx *f, struct node_report *r)
{
	sl_error_t err = NULL;

	if (node_install(&f->o, r, &err) < 0)
		fail_msg("install: %s", sl_error_msg(err));
}

static void uninstall_ok(struct fx *f, struct node_report *r)
{
	sl_error_t err = NULL;

	if (node_uninstall(&f->o, r, &err) < 0)
		fail_msg("uninstall: %s", sl_error_msg(err));
}

static void check_installed(struct fx *f)
{
	for (size_t i = 0; node_binaries[i]; i++) {
		char a[600], b[600];
		size_t la, lb;
		struct stat st;

		snprintf(a, sizeof(a), "%s/%s", f->src, node_binaries[i]);
		snprintf(b, sizeof(b), "%s/%s", f->bin, node_binaries[i]);
		assert_int_equal(lstat(b, &st), 0);
		assert_true(S_ISREG(st.st_mode));
		assert_int_equal(st.st_mode & 07777, 0755);
		char *x = slurp(a, &la), *y = slurp(b, &lb);

		assert_int_equal(la, lb);
		assert_memory_equal(x, y, la);
		free(x);
		free(y);
	}
}

/* ---- tests ------------------------------------------------------------ */

/* A node with a config of its own and an /opt: install twice, then
 * uninstall leaves every file, mode and byte as it was. */
static void t_install_twice_uninstall_exact(void **state)
{
	struct fx *f = *state;
	struct node_report r;
	char dir[400];
	struct stat st;

	snprintf(dir, sizeof(dir), "%s/etc/containerd", f->root);
	mkdirs(dir);
	put(f->cfg, user_cfg, strlen(user_cfg), 0640);
	snprintf(dir, sizeof(dir), "%s/opt/other", f->root);
	mkdirs(dir);
	char *before = tree(f->root);

	install_ok(f, &r);
	for (size_t i = 0; node_binaries[i]; i++)
		assert_int_equal(r.binaries[i], NODE_CREATED);
	assert_int_equal(r.config, NODE_UPDATED);
	assert_true(r.config_changed);
	check_installed(f);
	assert_int_equal(stat(f->cfg, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0640); /* the config keeps its mode */
	size_t len;
	char *cfg = slurp(f->cfg, &len);

	assert_non_null(strstr(cfg, "[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.spore]"));
	assert_non_null(strstr(cfg, "[proxy_plugins.spore]"));
	free(cfg);
	char *after1 = tree(f->root);

	install_ok(f, &r);
	for (size_t i = 0; node_binaries[i]; i++)
		assert_int_equal(r.binaries[i], NODE_UNCHANGED);
	assert_int_equal(r.config, NODE_UNCHANGED);
	assert_false(r.config_changed);
	char *after2 = tree(f->root);

	assert_string_equal(after1, after2);

	uninstall_ok(f, &r);
	for (size_t i = 0; node_binaries[i]; i++)
		assert_int_equal(r.binaries[i], NODE_REMOVED);
	assert_int_equal(r.config, NODE_UPDATED);
	assert_true(r.config_changed);
	char *back = tree(f->root);

	assert_string_equal(before, back);
	uninstall_ok(f, &r);
	assert_false(r.config_changed);
	for (size_t i = 0; node_binaries[i]; i++)
		assert_int_equal(r.binaries[i], NODE_UNCHANGED);
	free(before);
	free(after1);
	free(after2);
	free(back);
}

/* An empty root: install makes /opt/sporelet/bin and /etc/containerd
 * (config created); uninstall takes all of it away again. */
static void t_empty_root(void **state)
{
	struct fx *f = *state;
	struct node_report r;
	char *before = tree(f->root);

	install_ok(f, &r);
	assert_int_equal(r.config, NODE_CREATED);
	check_installed(f);
	size_t len;
	char *cfg = slurp(f->cfg, &len);

	assert_non_null(strstr(cfg, "[created the file]"));
	free(cfg);
	uninstall_ok(f, &r);
	assert_int_equal(r.config, NODE_REMOVED);
	char *back = tree(f->root);

	assert_string_equal(before, back);
	free(before);
	free(back);
}

/* The old spore is running while install replaces it: rename over it
 * works where writing into it gives ETXTBSY ("text file busy"). */
static void t_replace_running_binary(void **state)
{
	struct fx *f = *state;
	struct node_report r;
	char spore[600], src[600];

	install_ok(f, &r);
	snprintf(spore, sizeof(spore), "%s/spore", f->bin);
	pid_t pid = fork();

	assert_true(pid >= 0);
	if (pid == 0) {
		execl(spore, "spore", "60", (char *)NULL);
		_exit(127);
	}
	/* wait until the child runs the binary (its exe is our file) */
	for (int i = 0; i < 500; i++) {
		char exe[64], target[600];
		ssize_t n;

		snprintf(exe, sizeof(exe), "/proc/%d/exe", (int)pid);
		n = readlink(exe, target, sizeof(target) - 1);
		if (n > 0) {
			target[n] = '\0';
			if (strcmp(target, spore) == 0)
				break;
		}
		usleep(10000);
	}
	/* What a plain copy over the file would run into. */
	int fd = open(spore, O_WRONLY | O_CLOEXEC);

	assert_int_equal(fd, -1);
	assert_int_equal(errno, ETXTBSY);

	/* a new spore: the same program with bytes appended */
	size_t len;
	char *bin = slurp("/bin/sleep", &len);

	snprintf(src, sizeof(src), "%s/spore", f->src);
	bin = realloc(bin, len + 16);
	memcpy(bin + len, "sporelet-node v2", 16);
	put(src, bin, len + 16, 0755);
	free(bin);

	install_ok(f, &r);
	assert_int_equal(r.binaries[0], NODE_UPDATED);
	for (size_t i = 1; node_binaries[i]; i++)
		assert_int_equal(r.binaries[i], NODE_UNCHANGED);
	check_installed(f);
	/* the old process is still running its (now unlinked) binary */
	int status;

	assert_int_equal(waitpid(pid, &status, WNOHANG), 0);
	assert_int_equal(kill(pid, SIGKILL), 0);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	/* no temp file left in the install dir */
	DIR *d = opendir(f->bin);
	struct dirent *e;
	size_t n = 0;

	assert_non_null(d);
	while ((e = readdir(d)))
		if (e->d_name[0] != '.' || strcmp(e->d_name, ".sporelet-node.json") == 0)
			n++;
		else if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
			fail_msg("left in the install dir: %s", e->d_name);
	closedir(d);
	assert_int_equal(n, 5);
}

/* Refusals happen before anything on the node changes. */
static void t_refusals_change_nothing(void **state)
{
	struct fx *f = *state;
	struct node_report r;
	sl_error_t err = NULL;
	char dir[400], path[600];

	snprintf(dir, sizeof(dir), "%s/etc/containerd", f->root);
	mkdirs(dir);
	put(f->cfg, "version = 1\n", 12, 0644);
	char *before = tree(f->root);

	assert_int_equal(node_install(&f->o, &r, &err), -1);
	assert_non_null(strstr(sl_error_msg(err), "version 1"));
	sl_error_free(&err);
	char *after = tree(f->root);

	assert_string_equal(before, after);
	free(after);

	/* a symlinked config.toml */
	unlink(f->cfg);
	assert_int_equal(symlink("/elsewhere/config.toml", f->cfg), 0);
	free(before);
	before = tree(f->root);
	assert_int_equal(node_install(&f->o, &r, &err), -1);
	assert_non_null(strstr(sl_error_msg(err), "is a symlink"));
	sl_error_free(&err);
	after = tree(f->root);
	assert_string_equal(before, after);
	free(after);
	unlink(f->cfg);

	/* a missing source binary */
	snprintf(path, sizeof(path), "%s/spore-snapshotter", f->src);
	unlink(path);
	free(before);
	before = tree(f->root);
	assert_int_equal(node_install(&f->o, &r, &err), -1);
	assert_non_null(strstr(sl_error_msg(err), "spore-snapshotter: not found in the source directories"));
	sl_error_free(&err);
	after = tree(f->root);
	assert_string_equal(before, after);
	free(before);
	free(after);

	/* bad paths */
	f->o.install_dir = "opt/x";
	assert_int_equal(node_install(&f->o, &r, &err), -1);
	assert_non_null(strstr(sl_error_msg(err), "--install-dir"));
	sl_error_free(&err);
	f->o.install_dir = "/opt/../x";
	assert_int_equal(node_install(&f->o, &r, &err), -1);
	assert_non_null(strstr(sl_error_msg(err), "\"..\""));
	sl_error_free(&err);
}

/* A host symlink (/etc/containerd -> /data/containerd) resolves inside the
 * root, as it would on the node, not on the installer's filesystem. */
static void t_host_symlink_in_root(void **state)
{
	struct fx *f = *state;
	struct node_report r;
	char dir[400], link[400], real[600];

	snprintf(dir, sizeof(dir), "%s/data/containerd", f->root);
	mkdirs(dir);
	snprintf(link, sizeof(link), "%s/etc", f->root);
	mkdirs(link);
	snprintf(link, sizeof(link), "%s/etc/containerd", f->root);
	assert_int_equal(symlink("/data/containerd", link), 0);
	snprintf(real, sizeof(real), "%s/config.toml", dir);
	put(real, user_cfg, strlen(user_cfg), 0644);
	install_ok(f, &r);
	assert_int_equal(r.config, NODE_UPDATED);
	size_t len;
	char *cfg = slurp(real, &len);

	assert_non_null(strstr(cfg, "[proxy_plugins.spore]"));
	free(cfg);
	uninstall_ok(f, &r);
	cfg = slurp(real, &len);
	assert_string_equal(cfg, user_cfg);
	free(cfg);
}

/* --shim-link-dir and --shim-config-src: the link to the installed shim and
 * the shim's YAML are made, left alone when right, replaced when the YAML
 * changes, refused over someone else's file, and taken away again by
 * uninstall (the tree as it was, including a /usr/local/bin that existed
 * and an /etc/sporelet that did not). */
static void t_shim_link_and_config(void **state)
{
	struct fx *f = *state;
	struct node_report r;
	sl_error_t err = NULL;
	char dir[400], yaml[400], link[600], cfg[600], target[PATH_MAX];
	const char *y1 = "spore: /opt/sporelet/bin/spore\nstate_dir: /run/sporelet/shim\n";
	const char *y2 = "spore: /opt/sporelet/bin/spore\ndisk_dir: /var/lib/sporelet/disks\n";
	struct stat st;
	size_t len;

	snprintf(dir, sizeof(dir), "%s/usr/local/bin", f->root);
	mkdirs(dir);
	snprintf(link, sizeof(link), "%s/other-tool", dir);
	put(link, "x", 1, 0755);
	snprintf(yaml, sizeof(yaml), "%s/shim.yaml", f->src);
	put(yaml, y1, strlen(y1), 0600);
	snprintf(link, sizeof(link), "%s/usr/local/bin/containerd-shim-spore-v2", f->root);
	snprintf(cfg, sizeof(cfg), "%s/etc/sporelet/shim.yaml", f->root);
	f->o.shim_link_dir = "/usr/local/bin";
	f->o.shim_config_src = yaml;
	f->o.ctrd.shim_config = "/etc/sporelet/shim.yaml";
	char *before = tree(f->root);

	install_ok(f, &r);
	assert_int_equal(r.shim_link, NODE_CREATED);
	assert_int_equal(r.shim_config, NODE_CREATED);
	ssize_t n = readlink(link, target, sizeof(target) - 1);

	assert_true(n > 0);
	target[n] = '\0';
	/* a host path: the link is followed on the node, not in the pod */
	assert_string_equal(target, "/opt/sporelet/bin/containerd-shim-spore-v2");
	assert_int_equal(stat(cfg, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0644);
	char *got = slurp(cfg, &len);

	assert_string_equal(got, y1);
	free(got);
	got = slurp(f->cfg, &len);
	assert_non_null(strstr(got, "ConfigPath = \"/etc/sporelet/shim.yaml\""));
	free(got);
	char rec[600];

	snprintf(rec, sizeof(rec), "%s/.sporelet-node.json", f->bin);
	got = slurp(rec, &len);
	assert_non_null(strstr(got, "\"/usr/local/bin/containerd-shim-spore-v2\""));
	assert_non_null(strstr(got, "\"/etc/sporelet/shim.yaml\""));
	assert_non_null(strstr(got, "\"/etc/sporelet\""));
	assert_null(strstr(got, "\"/usr/local/bin\""));   /* it existed */
	free(got);

	/* again: nothing changes */
	char *after1 = tree(f->root);

	install_ok(f, &r);
	assert_int_equal(r.shim_link, NODE_UNCHANGED);
	assert_int_equal(r.shim_config, NODE_UNCHANGED);
	assert_false(r.config_changed);
	char *after2 = tree(f->root);

	assert_string_equal(after1, after2);
	free(after1);
	free(after2);

	/* a new YAML replaces ours (no containerd restart: the shim reads it per pod) */
	put(yaml, y2, strlen(y2), 0600);
	install_ok(f, &r);
	assert_int_equal(r.shim_config, NODE_UPDATED);
	assert_false(r.config_changed);
	got = slurp(cfg, &len);
	assert_string_equal(got, y2);
	free(got);

	/* another install dir: our old link is replaced, atomically */
	f->o.install_dir = "/opt/sporelet2/bin";
	install_ok(f, &r);
	assert_int_equal(r.shim_link, NODE_UPDATED);
	n = readlink(link, target, sizeof(target) - 1);
	assert_true(n > 0);
	target[n] = '\0';
	assert_string_equal(target, "/opt/sporelet2/bin/containerd-shim-spore-v2");
	/* the shim config went into the new record too; the old install dir
	 * (binaries, the directories it made) goes with its own uninstall */
	uninstall_ok(f, &r);
	assert_int_equal(r.shim_link, NODE_REMOVED);
	assert_int_equal(r.shim_config, NODE_REMOVED);
	f->o.install_dir = "/opt/sporelet/bin";
	uninstall_ok(f, &r);
	assert_int_equal(r.binaries[0], NODE_REMOVED);
	assert_int_equal(r.shim_link, NODE_UNCHANGED);
	char *back = tree(f->root);

	assert_string_equal(before, back);
	free(back);

	/* someone else's shim at the link path (a file, or a symlink elsewhere)
	 * and someone else's shim.yaml are refused before anything changes */
	put(link, "theirs", 6, 0755);
	free(before);
	before = tree(f->root);
	assert_int_equal(node_install(&f->o, &r, &err), -1);
	assert_non_null(strstr(sl_error_msg(err), "is not a symlink made by sporelet-node"));
	sl_error_free(&err);
	after1 = tree(f->root);
	assert_string_equal(before, after1);
	free(after1);
	unlink(link);
	assert_int_equal(symlink("/usr/bin/their-shim", link), 0);
	assert_int_equal(node_install(&f->o, &r, &err), -1);
	assert_non_null(strstr(sl_error_msg(err), "is a symlink to /usr/bin/their-shim, not made by sporelet-node"));
	sl_error_free(&err);
	unlink(link);
	snprintf(dir, sizeof(dir), "%s/etc/sporelet", f->root);
	mkdirs(dir);
	put(cfg, "theirs: 1\n", 10, 0644);
	free(before);
	before = tree(f->root);
	assert_int_equal(node_install(&f->o, &r, &err), -1);
	assert_non_null(strstr(sl_error_msg(err), "was not written by sporelet-node"));
	sl_error_free(&err);
	after1 = tree(f->root);
	assert_string_equal(before, after1);
	free(after1);
	unlink(cfg);

	/* uninstall leaves a link that was replaced by someone else since */
	install_ok(f, &r);
	unlink(link);
	assert_int_equal(symlink("/usr/bin/their-shim", link), 0);
	uninstall_ok(f, &r);
	assert_int_equal(r.shim_link, NODE_UNCHANGED);
	assert_int_equal(lstat(link, &st), 0);
	assert_true(S_ISLNK(st.st_mode));
	unlink(link);

	/* --shim-config-src without --shim-config */
	f->o.ctrd.shim_config = NULL;
	assert_int_equal(node_install(&f->o, &r, &err), -1);
	assert_non_null(strstr(sl_error_msg(err), "--shim-config-src needs --shim-config"));
	sl_error_free(&err);
	free(before);
}

/* The record of created directories is checked like any input. */
static void t_record_parse(void **state)
{
	(void)state;
	struct node_record rec;
	sl_error_t err = NULL;
	const char *good = "{\"created_dirs\": [\"/opt/sporelet\", \"/opt/sporelet/bin\"]}";
	const char *bad[] = {
		"[]", "{}", "{\"created_dirs\": [1]}", "{\"created_dirs\": [\"relative\"]}",
		"{\"created_dirs\": [\"/\"]}", "{\"created_dirs\": [\"/a/../b\"]}", "{\"created_dirs\": \"/x\"}",
		"{\"created_dirs\": [], \"files\": [\"x\"]}", "{\"created_dirs\": [], \"files\": {}}",
		"{\"created_dirs\": [], \"links\": [\"/a\"]}", "{\"created_dirs\": [], \"links\": [{\"path\": \"/a\"}]}",
		"{\"created_dirs\": [], \"links\": [{\"path\": \"/a\", \"target\": \"b\"}]}",
	};
	const char *full = "{\"created_dirs\": [], \"files\": [\"/etc/sporelet/shim.yaml\"], "
			   "\"links\": [{\"path\": \"/usr/local/bin/s\", \"target\": \"/opt/s\"}]}";

	assert_int_equal(node_record_parse(full, strlen(full), &rec, &err), 0);
	assert_int_equal(rec.nfiles, 1);
	assert_int_equal(rec.nlinks, 1);
	assert_string_equal(rec.files[0], "/etc/sporelet/shim.yaml");
	assert_string_equal(rec.link_targets[0], "/opt/s");
	node_record_free(&rec);

	assert_int_equal(node_record_parse(good, strlen(good), &rec, &err), 0);
	assert_int_equal(rec.ncreated, 2);
	assert_string_equal(rec.created_dirs[1], "/opt/sporelet/bin");
	node_record_free(&rec);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (node_record_parse(bad[i], strlen(bad[i]), &rec, &err) == 0)
			fail_msg("accepted %s", bad[i]);
		sl_error_free(&err);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(t_install_twice_uninstall_exact, setup, teardown),
		cmocka_unit_test_setup_teardown(t_empty_root, setup, teardown),
		cmocka_unit_test_setup_teardown(t_replace_running_binary, setup, teardown),
		cmocka_unit_test_setup_teardown(t_refusals_change_nothing, setup, teardown),
		cmocka_unit_test_setup_teardown(t_host_symlink_in_root, setup, teardown),
		cmocka_unit_test_setup_teardown(t_shim_link_and_config, setup, teardown),
		cmocka_unit_test(t_record_parse),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
