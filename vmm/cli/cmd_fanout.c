/* spore fanout: resume every child spore of a directory, in parallel, and report. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"
#include "sl/file.h"
#include "sl/json.h"
#include "sl/log.h"
#include "sl/spore_manifest.h"

#define FANOUT_MAX 1024

struct child {
	char name[256];
	pid_t pid;
	int report_fd;
	char report[512];
	size_t report_len;
	int status;
	uint64_t private_kib_max; /* whole process */
	uint64_t vmm_kib_max;     /* outside guest RAM: the VMM's own */
	uint64_t guest_kib_max;   /* guest RAM pages the guest wrote */
	double restore_ms, first_output_ms;
};

static int cmp_name(const void *a, const void *b)
{
	return strcmp(((const struct child *)a)->name, ((const struct child *)b)->name);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double pct(double *v, size_t n, double p)
{
	if (!n)
		return 0;
	qsort(v, n, sizeof(double), cmp_double);
	size_t i = (size_t)(p * (double)(n - 1) + 0.5);
	return v[i < n ? i : n - 1];
}

/* What every child runs after its restore (spores with an agent: Linux,
 * or the test guest with vsock): the command, with the child's name as its
 * guest's hostname. */
struct child_cmd {
	bool agent; /* the spore has a guest agent */
	char **argv; /* NULL: none */
	int argc;
};

static pid_t spawn(const char *dir, struct child *c, const char *for_arg, const char *verify_arg,
		   const struct child_cmd *cc)
{
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0)
		return -1;
	pid_t pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		/* dup2 clears close-on-exec on the copy, but dup2(3, 3) is a no-op
		 * (pipe2 returns 3 when fd 0 was closed): clear the flag then. */
		if (p[1] == 3)
			fcntl(3, F_SETFD, 0);
		else
			dup2(p[1], 3);
		char path[4096], prefix[300];
		snprintf(path, sizeof(path), "%s/%s", dir, c->name);
		snprintf(prefix, sizeof(prefix), "%s| ", c->name);
		char **args = calloc(20 + (size_t)cc->argc, sizeof(char *));
		int n = 0;
		if (!args)
			_exit(127);
		args[n++] = "spore";
		args[n++] = "resume";
		args[n++] = path;
		args[n++] = "--prefix";
		args[n++] = prefix;
		args[n++] = "--report-fd";
		args[n++] = "3";
		if (for_arg) {
			args[n++] = "--for";
			args[n++] = (char *)for_arg;
		}
		if (verify_arg) {
			args[n++] = "--verify";
			args[n++] = (char *)verify_arg;
		}
		if (cc->agent) {
			/* A hostname is at most 64 bytes; longer child names are cut. */
			static char host[65];
			snprintf(host, sizeof(host), "%.64s", c->name);
			args[n++] = "--hostname";
			args[n++] = host;
		}
		if (cc->argv) {
			args[n++] = "--";
			for (int i = 0; i < cc->argc; i++)
				args[n++] = cc->argv[i];
		}
		args[n] = NULL;
		execv("/proc/self/exe", args);
		_exit(127);
	}
	close(p[1]);
	c->report_fd = p[0];
	return pid;
}

/* Children of one fork share their chunk inodes: hashing them once here and
 * sealing them spares every child its own hash of the same bytes (20
 * children of a 66 MiB spore hashed 20 times over took 1.6 s to start on 2
 * cores). A child that fails here is still started: its own restore checks
 * again and reports the error in its place. */
static void preverify(const char *dir, const struct child *cs, size_t n)
{
	struct cli_verify cv;
	cli_verify_init(&cv, VMM_VERIFY_SEALED);
	if (!cv.opts.seal_dir)
		return;
	for (size_t i = 0; i < n; i++) {
		char path[4096];
		snprintf(path, sizeof(path), "%s/%s", dir, cs[i].name);
		sl_error_t err = NULL;
		struct vmm_spore *sp = NULL;
		struct vmm_restore_stats st;
		if (vmm_spore_open(path, &sp, &err) == 0 && vmm_spore_verify(sp, &cv.opts, &st, &err) == 0)
			sl_debug("verified", "spore=%s chunks=%llu hashed=%llu sealed=%llu ms=%.2f", path,
				 (unsigned long long)st.chunks, (unsigned long long)st.chunks_hashed,
				 (unsigned long long)st.chunks_sealed, st.chunks_ns / 1e6);
		else
			sl_debug("verify failed", "spore=%s error=\"%s\"", path, sl_error_msg(err));
		vmm_spore_close(sp);
		sl_error_free(&err);
	}
}

static void sample(struct child *cs, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (cs[i].pid <= 0)
			continue;
		struct vmm_private_mem pm;
		sl_error_t err = NULL;
		if (vmm_private_mem(cs[i].pid, &pm, &err) == 0) {
			uint64_t own = pm.total_kib - pm.guest_kib;
			if (pm.total_kib > cs[i].private_kib_max)
				cs[i].private_kib_max = pm.total_kib;
			if (own > cs[i].vmm_kib_max)
				cs[i].vmm_kib_max = own;
			if (pm.guest_kib > cs[i].guest_kib_max)
				cs[i].guest_kib_max = pm.guest_kib;
		}
		sl_error_free(&err);
	}
}

int cmd_fanout(int argc, char **argv)
{
	static const struct option opts[] = {{"parallel", no_argument, NULL, 'p'},
					     {"for", required_argument, NULL, 'f'},
					     {"summary-json", required_argument, NULL, 'j'},
					     {"verify", required_argument, NULL, 'v'},
					     {"help", no_argument, NULL, 'h'},
					     {0}};
	static const char usage[] = "usage: spore fanout DIR [--parallel] [--for DURATION] [--summary-json FILE]\n"
				    "                   [--verify sealed|full] [-- COMMAND...]\n"
				    "Resumes every child spore in DIR (as made by spore fork). In Linux spores\n"
				    "each child's guest gets its name as hostname and runs COMMAND.\n";
	bool parallel = false;
	const char *for_arg = NULL, *summary = NULL, *verify_arg = NULL;
	enum vmm_verify verify = VMM_VERIFY_SEALED;
	sl_error_t err = NULL;
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		uint64_t ms;
		switch (c) {
		case 'p': parallel = true; break;
		case 'j': summary = optarg; break;
		case 'v':
			if (cli_parse_verify(optarg, &verify, &err) < 0)
				return cli_fail(&err);
			verify_arg = optarg;
			break;
		case 'f':
			if (cli_parse_duration_ms(optarg, &ms, &err) < 0)
				return cli_fail(&err);
			for_arg = optarg;
			break;
		case 'h': fputs(usage, stdout); return 0;
		default: fputs(usage, stderr); return EXIT_SPORE_FAILED;
		}
	}
	bool dashdash = optind > 0 && optind < argc && !strcmp(argv[optind - 1], "--");
	if (optind >= argc || (optind + 1 < argc && !dashdash))
		return cli_usage("fanout: exactly one directory expected (a command goes after --)\n%s", usage);
	const char *dir = argv[optind];
	struct child_cmd cc = {.argv = optind + 1 < argc ? argv + optind + 1 : NULL, .argc = argc - optind - 1};
	DIR *d = opendir(dir);
	if (!d) {
		sl_error_sys(&err, "fanout: open %s", dir);
		return cli_fail(&err);
	}
	_cleanup_free_ struct child *cs = calloc(FANOUT_MAX, sizeof(*cs));
	size_t n = 0;
	struct dirent *de;
	while (cs && (de = readdir(d)) && n < FANOUT_MAX) {
		if (de->d_name[0] == '.')
			continue;
		char mp[4096];
		struct stat st;
		snprintf(mp, sizeof(mp), "%s/%s/" SPORE_MANIFEST_PATH, dir, de->d_name);
		if (stat(mp, &st) < 0)
			continue;
		snprintf(cs[n].name, sizeof(cs[n].name), "%s", de->d_name);
		n++;
	}
	closedir(d);
	if (!n)
		return cli_usage("fanout: no child spores in %s", dir);
	qsort(cs, n, sizeof(*cs), cmp_name);

	/* Children of one fork share the platform: the first one tells. */
	char first[4096];
	snprintf(first, sizeof(first), "%s/%s", dir, cs[0].name);
	struct vmm_spore *sp = NULL;
	if (vmm_spore_open(first, &sp, &err) < 0)
		return cli_fail(&err);
	struct vmm_machine shape = {0};
	vmm_spore_shape(sp, &shape);
	vmm_spore_close(sp);
	/* A test-guest spore with a vsock device has an agent too. */
	cc.agent = shape.platform == VMM_PLATFORM_LINUX || shape.vsock_cid;
	if (cc.argv && !cc.agent)
		return cli_usage("fanout: %s holds test-guest spores without a vsock device; a COMMAND needs an "
				 "agent (a Linux spore, or a test guest run with --vsock)", dir);

	uint64_t t0 = cli_now_ns();
	if (verify == VMM_VERIFY_SEALED)
		preverify(dir, cs, n);
	size_t next = 0, running = 0, done = 0;
	while (done < n) {
		while (next < n && (parallel || running == 0)) {
			cs[next].pid = spawn(dir, &cs[next], for_arg, verify_arg, &cc);
			if (cs[next].pid < 0) {
				perror("spore: fanout: fork");
				return EXIT_SPORE_FAILED;
			}
			next++;
			running++;
		}
		struct pollfd pfds[FANOUT_MAX];
		size_t map[FANOUT_MAX], np = 0;
		for (size_t i = 0; i < n; i++)
			if (cs[i].pid > 0 && cs[i].report_fd >= 0) {
				pfds[np] = (struct pollfd){cs[i].report_fd, POLLIN, 0};
				map[np++] = i;
			}
		/* Sample private memory while children run; keep each one's peak. */
		poll(pfds, np, 50);
		sample(cs, n);
		for (size_t k = 0; k < np; k++) {
			struct child *ch = &cs[map[k]];
			if (!pfds[k].revents)
				continue;
			ssize_t r = read(ch->report_fd, ch->report + ch->report_len,
					 sizeof(ch->report) - 1 - ch->report_len);
			if (r > 0) {
				ch->report_len += (size_t)r;
				continue;
			}
			close(ch->report_fd);
			ch->report_fd = -1;
			int ws;
			waitpid(ch->pid, &ws, 0);
			ch->status = WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + WTERMSIG(ws);
			ch->pid = 0;
			running--;
			done++;
			ch->report[ch->report_len] = 0;
			json_t *j = json_loads(ch->report, 0, NULL);
			ch->restore_ms = ch->first_output_ms = -1;
			if (j) {
				ch->restore_ms = json_number_value(json_object_get(j, "restore_ms"));
				ch->first_output_ms = json_number_value(json_object_get(j, "first_output_ms"));
				json_decref(j);
			}
		}
	}
	double wall = (cli_now_ns() - t0) / 1e6;
	double rs[FANOUT_MAX], fo[FANOUT_MAX], pm[FANOUT_MAX];
	size_t nr = 0, nf = 0, failed = 0;
	double priv_sum = 0, priv_max = 0, own_sum = 0, own_max = 0, guest_sum = 0;
	for (size_t i = 0; i < n; i++) {
		if (cs[i].restore_ms >= 0)
			rs[nr++] = cs[i].restore_ms;
		if (cs[i].first_output_ms >= 0)
			fo[nf++] = cs[i].first_output_ms;
		pm[i] = cs[i].private_kib_max / 1024.0;
		priv_sum += pm[i];
		if (pm[i] > priv_max)
			priv_max = pm[i];
		double own = cs[i].vmm_kib_max / 1024.0;
		own_sum += own;
		if (own > own_max)
			own_max = own;
		guest_sum += cs[i].guest_kib_max / 1024.0;
		if (cs[i].status != 0)
			failed++;
	}
	uint64_t mem_mib = 0, stored_mib = 0;
	char mp[4096];
	snprintf(mp, sizeof(mp), "%s/%s", dir, cs[0].name);
	_cleanup_close_ int cfd = open(mp, O_DIRECTORY | O_RDONLY | O_CLOEXEC);
	struct spore_manifest m;
	if (cfd >= 0 && spore_manifest_load(cfd, &m, NULL, &err) == 0) {
		mem_mib = m.mem_mib;
		stored_mib = m.nchunks * 2;
		spore_manifest_free(&m);
	}
	sl_error_free(&err);
	fprintf(stderr,
		"\nfanout: %zu children (%s) in %.0f ms, %zu failed\n"
		"  restore, launch to guest running:  p50 %7.2f ms   p99 %7.2f ms\n"
		"  launch to first guest output:      p50 %7.2f ms   p99 %7.2f ms\n"
		"  spore memory %llu MiB, %llu MiB stored in chunk files shared by all children\n"
		"  private memory per child:          avg %7.2f MiB  max %7.2f MiB  (sum %.1f MiB vs %llu MiB if copied)\n"
		"    of which guest-written pages:    avg %7.2f MiB\n"
		"    of which the VMM's own:          avg %7.2f MiB  max %7.2f MiB\n",
		n, parallel ? "parallel" : "one at a time", wall, failed, pct(rs, nr, 0.5), pct(rs, nr, 0.99),
		pct(fo, nf, 0.5), pct(fo, nf, 0.99), (unsigned long long)mem_mib, (unsigned long long)stored_mib,
		priv_sum / (double)n, priv_max, priv_sum, (unsigned long long)(mem_mib * n), guest_sum / (double)n,
		own_sum / (double)n, own_max);
	if (summary) {
		json_t *per = json_array();
		for (size_t i = 0; per && i < n; i++)
			json_array_append_new(
				per, json_pack("{s:s, s:i, s:f, s:f, s:f, s:f, s:f}", "name", cs[i].name, "status",
					       cs[i].status, "restore_ms", cs[i].restore_ms, "first_output_ms",
					       cs[i].first_output_ms, "private_mib", pm[i], "guest_written_mib",
					       cs[i].guest_kib_max / 1024.0, "vmm_private_mib", cs[i].vmm_kib_max / 1024.0));
		_cleanup_json_ json_t *o = json_pack(
			"{s:i, s:b, s:f, s:i, s:f, s:f, s:f, s:f, s:I, s:I, s:f, s:f, s:f, s:f, s:f, s:f, s:o}",
			"children", (int)n,
			"parallel", parallel, "wall_ms", wall, "failed", (int)failed, "restore_p50_ms", pct(rs, nr, 0.5),
			"restore_p99_ms", pct(rs, nr, 0.99), "first_output_p50_ms", pct(fo, nf, 0.5),
			"first_output_p99_ms", pct(fo, nf, 0.99), "spore_mib", (json_int_t)mem_mib, "stored_mib",
			(json_int_t)stored_mib, "private_mib_avg", priv_sum / (double)n, "private_mib_max", priv_max,
			"private_mib_sum", priv_sum, "guest_written_mib_avg", guest_sum / (double)n, "vmm_private_mib_avg",
			own_sum / (double)n, "vmm_private_mib_max", own_max, "per_child", per);
		size_t len;
		_cleanup_free_ char *buf = o ? sl_json_dump(o, &len) : NULL;
		if (!buf || cli_write_file_atomic(summary, buf, len, &err) < 0) {
			if (!err)
				sl_error_set(&err, SL_E_NOMEM, "summary JSON");
			return cli_fail(&err);
		}
	}
	return failed ? 1 : 0;
}
