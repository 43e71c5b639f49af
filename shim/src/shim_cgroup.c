/* Creating the pod's cgroup, moving the VMM into it, and removing it again. */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "shim_cgroup.h"
#include "sl/file.h"

/* The mount point of a cgroup hierarchy from /proc/self/mountinfo: the
 * cgroup2 one (controller NULL), or the v1 one carrying controller. */
int shim_cgroup_mount(const char *controller, char *out, size_t cap)
{
	char *buf = NULL;
	size_t len = 0;
	sl_error_t err = NULL;
	if (sl_read_path("/proc/self/mountinfo", 1u << 20, &buf, &len, &err) < 0) {
		sl_error_free(&err);
		return -1;
	}
	int rc = -1;
	char *save = NULL;
	for (char *line = strtok_r(buf, "\n", &save); line && rc < 0; line = strtok_r(NULL, "\n", &save)) {
		char *dash = strstr(line, " - ");
		if (!dash)
			continue;
		char mnt[PATH_MAX], fstype[32], src[64], opts[512];
		if (sscanf(line, "%*s %*s %*s %*s %4095s", mnt) != 1 ||
		    sscanf(dash + 3, "%31s %63s %511s", fstype, src, opts) != 3)
			continue;
		bool match = false;
		if (!controller) {
			match = !strcmp(fstype, "cgroup2");
		} else if (!strcmp(fstype, "cgroup")) {
			char *o2 = NULL;
			for (char *o = strtok_r(opts, ",", &o2); o && !match; o = strtok_r(NULL, ",", &o2))
				match = !strcmp(o, controller);
		}
		if (match && strlen(mnt) < cap) {
			strcpy(out, mnt);
			rc = 0;
		}
	}
	free(buf);
	return rc;
}

/* Whether the unified hierarchy has the controllers the pod needs; on a
 * hybrid host it mounts with (say) only hugetlb, and the v1 hierarchies
 * count. One word at a time: "cpuset" is not "cpu". */
bool shim_cgroup_unified(char *root, size_t cap)
{
	if (shim_cgroup_mount(NULL, root, cap) < 0)
		return false;
	char p[PATH_MAX + 32], *buf = NULL;
	size_t len = 0;
	sl_error_t err = NULL;
	snprintf(p, sizeof(p), "%s/cgroup.controllers", root);
	if (sl_read_path(p, 4096, &buf, &len, &err) < 0) {
		sl_error_free(&err);
		return false;
	}
	bool found = false;
	char *save = NULL;
	for (char *w = strtok_r(buf, " \n", &save); w && !found; w = strtok_r(NULL, " \n", &save))
		found = !strcmp(w, "cpu") || !strcmp(w, "memory") || !strcmp(w, "pids");
	free(buf);
	return found;
}

/* mkdir -p of root + path, recording what it created (deepest last). */
static int make_dirs(const char *root, const char *path, struct shim_cgroup *cg, char *dir, size_t cap,
		     sl_error_t *err)
{
	if ((size_t)snprintf(dir, cap, "%s%s", root, path) >= cap)
		return sl_error_set(err, SL_E_INVALID, "cgroup path too long: %.100s", path);
	for (char *p = dir + strlen(root) + 1;; p++) {
		bool end = *p == '\0';
		if (*p == '/' || end) {
			char c = *p;
			*p = '\0';
			if (mkdir(dir, 0755) == 0) {
				if (cg->n < SHIM_CGROUP_MAX_DIRS)
					snprintf(cg->dirs[cg->n++], PATH_MAX, "%s", dir);
			} else if (errno != EEXIST) {
				int e = errno;
				*p = c;
				return sl_error_errno(err, e, "cgroup %s", dir);
			}
			*p = c;
			if (end)
				break;
		}
	}
	return 0;
}

static int join(const char *dir, pid_t pid, sl_error_t *err)
{
	char p[PATH_MAX + 32], v[32];
	snprintf(p, sizeof(p), "%s/cgroup.procs", dir);
	int fd = open(p, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return sl_error_sys(err, "cgroup %s", p);
	int n = snprintf(v, sizeof(v), "%d", (int)pid);
	int rc = write(fd, v, (size_t)n) == n ? 0 : sl_error_sys(err, "move pid %d into %s", (int)pid, dir);
	close(fd);
	return rc;
}

int shim_cgroup_place(pid_t pid, const char *path, struct shim_cgroup *cg, sl_error_t *err)
{
	if (path[0] != '/' || strstr(path, "..") || strchr(path, ':'))
		return sl_error_set(err, SL_E_INVALID,
				    "cgroup path %.100s: only the cgroupfs form (/a/b) is supported", path);
	char root[PATH_MAX], dir[PATH_MAX * 2];
	if (shim_cgroup_unified(root, sizeof(root))) {
		if (make_dirs(root, path, cg, dir, sizeof(dir), err) < 0)
			return -1;
		return join(dir, pid, err);
	}
	static const char *const ctls[] = {"cpu", "cpuacct", "memory", "pids"};
	char done[4][PATH_MAX];
	int ndone = 0, rc = 0;
	for (int i = 0; i < 4 && rc == 0; i++) {
		if (shim_cgroup_mount(ctls[i], root, sizeof(root)) < 0)
			continue;
		bool seen = false; /* cpu and cpuacct often share one hierarchy */
		for (int k = 0; k < ndone; k++)
			seen |= !strcmp(done[k], root);
		if (seen)
			continue;
		snprintf(done[ndone++], PATH_MAX, "%s", root);
		rc = make_dirs(root, path, cg, dir, sizeof(dir), err);
		if (rc == 0)
			rc = join(dir, pid, err);
	}
	return rc;
}

void shim_cgroup_remove(struct shim_cgroup *cg)
{
	/* Deepest first; a directory still in use (another pod) stays. */
	for (int i = cg->n - 1; i >= 0; i--)
		rmdir(cg->dirs[i]);
	cg->n = 0;
}
