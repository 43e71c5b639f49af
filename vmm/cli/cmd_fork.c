/* spore fork: child spores that share the parent's files by hard link. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "sl/file.h"
#include "sl/log.h"
#include "sl/spore_manifest.h"

/* Children never copy: a child that cannot share the parent's inodes would
 * not share its page cache either, so that is an error, not a fallback. */
static int link_file(int pfd, int cfd, const char *path, sl_error_t *err)
{
	if (linkat(pfd, path, cfd, path, 0) == 0 || errno == EEXIST)
		return 0;
	if (errno == EXDEV)
		return sl_error_set(err, SL_E_INVALID,
				    "fork: --out must be on the spore's filesystem (children hard-link its chunks)");
	return sl_error_sys(err, "fork: link %s", path);
}

struct link_ctx {
	int pfd, cfd;
	sl_error_t *err;
};

/* Memory and disk chunks alike; a chunk that two of them share is linked
 * once (EEXIST is fine). */
static int link_chunk(const sl_digest *d, void *arg)
{
	struct link_ctx *lc = arg;
	char path[96];
	spore_chunk_path(d, path);
	return link_file(lc->pfd, lc->cfd, path, lc->err) < 0 ? -1 : 0;
}

static int make_child(int pfd, const struct spore_manifest *pm, const sl_digest *pdig, int outfd,
		      const char *name, char gen_out[33], sl_error_t *err)
{
	char tmp[128];
	snprintf(tmp, sizeof(tmp), ".%s.tmp.%d", name, getpid());
	if (mkdirat(outfd, tmp, 0755) < 0)
		return sl_error_sys(err, "fork: mkdir %s", tmp);
	_cleanup_close_ int cfd = openat(outfd, tmp, O_DIRECTORY | O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (cfd < 0)
		return sl_error_sys(err, "fork: open %s", tmp);
	struct spore_manifest m;
	if (spore_manifest_copy(pm, &m, err) < 0)
		return -1;
	uint8_t id[16];
	int rc = -1;
	if (getrandom(id, sizeof(id), 0) != (ssize_t)sizeof(id)) {
		sl_error_sys(err, "getrandom");
		goto out;
	}
	for (int i = 0; i < 16; i++)
		snprintf(m.gen_id + 2 * i, 3, "%02x", id[i]);
	snprintf(m.gen_parent, sizeof(m.gen_parent), "%s", pm->gen_id);
	m.depth = pm->depth + 1;
	m.has_parent = true;
	m.parent = *pdig;
	if (sl_mkdir_beneath(cfd, "spore", 0755, err) < 0 || sl_mkdir_beneath(cfd, "chunks/sha256", 0755, err) < 0 ||
	    link_file(pfd, cfd, m.vm_state.path, err) < 0)
		goto out;
	for (unsigned i = 0; i < m.vcpus; i++)
		if (link_file(pfd, cfd, m.vcpu_state[i].path, err) < 0)
			goto out;
	struct link_ctx lc = {.pfd = pfd, .cfd = cfd, .err = err};
	if (spore_manifest_each_chunk(&m, link_chunk, &lc) != 0)
		goto out;
	char *buf;
	size_t len;
	if (spore_manifest_write(&m, &buf, &len, err) < 0)
		goto out;
	rc = sl_write_atomic(cfd, SPORE_MANIFEST_PATH, buf, len, 0444, err);
	free(buf);
	if (rc < 0)
		goto out;
	rc = -1;
	if (renameat(outfd, tmp, outfd, name) < 0) {
		sl_error_sys(err, "fork: rename %s to %s", tmp, name);
		goto out;
	}
	memcpy(gen_out, m.gen_id, 33);
	rc = 0;
out:
	spore_manifest_free(&m);
	if (rc < 0) {
		sl_error_t e2 = NULL;
		sl_remove_tree(outfd, tmp, &e2);
		sl_error_free(&e2);
	}
	return rc;
}

int cmd_fork(int argc, char **argv)
{
	static const struct option opts[] = {{"count", required_argument, NULL, 'n'},
					     {"out", required_argument, NULL, 'o'},
					     {"help", no_argument, NULL, 'h'},
					     {0}};
	static const char usage[] = "usage: spore fork DIR --count N --out DIR\n";
	uint64_t count = 0;
	const char *out = NULL;
	sl_error_t err = NULL;
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'n':
			if (cli_parse_u64(optarg, "--count", 1, 10000, &count, &err) < 0)
				return cli_fail(&err);
			break;
		case 'o': out = optarg; break;
		case 'h': fputs(usage, stdout); return 0;
		default: fputs(usage, stderr); return EXIT_SPORE_FAILED;
		}
	}
	if (optind != argc - 1 || !count || !out)
		return cli_usage("fork: need DIR, --count and --out\n%s", usage);
	uint64_t t0 = cli_now_ns();
	const char *dir = argv[optind];
	_cleanup_close_ int pfd = open(dir, O_DIRECTORY | O_RDONLY | O_CLOEXEC);
	if (pfd < 0) {
		sl_error_sys(&err, "open spore %s", dir);
		return cli_fail(&err);
	}
	struct spore_manifest pm;
	sl_digest pdig;
	if (spore_manifest_load(pfd, &pm, &pdig, &err) < 0) {
		sl_error_wrap(&err, "%s", dir);
		return cli_fail(&err);
	}
	if (mkdir(out, 0755) < 0 && errno != EEXIST) {
		spore_manifest_free(&pm);
		sl_error_sys(&err, "fork: mkdir %s", out);
		return cli_fail(&err);
	}
	_cleanup_close_ int outfd = open(out, O_DIRECTORY | O_RDONLY | O_CLOEXEC);
	if (outfd < 0) {
		spore_manifest_free(&pm);
		sl_error_sys(&err, "fork: --out %s is not a usable directory", out);
		return cli_fail(&err);
	}
	int width = count >= 1000 ? 4 : count >= 100 ? 3 : 2;
	int rc = 0;
	for (uint64_t i = 1; i <= count && rc == 0; i++) {
		char name[32], gen[33];
		snprintf(name, sizeof(name), "child-%0*llu", width, (unsigned long long)i);
		struct stat st;
		if (fstatat(outfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
			sl_error_set(&err, SL_E_INVALID, "fork: %s/%s already exists", out, name);
			rc = -1;
			break;
		}
		rc = make_child(pfd, &pm, &pdig, outfd, name, gen, &err);
		if (rc == 0)
			printf("%s/%s generation %s\n", out, name, gen);
	}
	spore_manifest_free(&pm);
	if (rc < 0)
		return cli_fail(&err);
	if (syncfs(outfd) < 0 || fsync(outfd) < 0) {
		sl_error_sys(&err, "fork: sync %s", out);
		return cli_fail(&err);
	}
	sl_info("forked", "spore=%s children=%llu out=%s ms=%.2f", dir, (unsigned long long)count, out,
		(cli_now_ns() - t0) / 1e6);
	return 0;
}
