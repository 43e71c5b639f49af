/* qemu-fork-peer: bench-fork peer, private memory of N QEMUs restoring one warmed testguest at once. */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "qemu_peer.h"

#define START_TIMEOUT_MS 60000 /* all N restored and printing, from the first start */
#define SAMPLE_MS 100
#define MAX_CHILDREN 256
/* Added to CMDLINE when it has no pulse_ms=: QEMU has no spore device, so a
 * restored demo guest prints nothing by itself (the spore children announce
 * their new generation); a pulse every 10 ms (one tick at the default 100 Hz)
 * gives the first-output signal that the restore is complete and running. */
#define PULSE_ARG "pulse_ms=10"

struct child {
	struct qemu_peer_proc p;
	long anon_kb_max, rss_kb_max;
};

static volatile sig_atomic_t stop_sig;

static void on_signal(int sig)
{
	stop_sig = sig;
}

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void logf_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logf_(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("qemu-fork-peer: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

/* Parses a whole decimal argument in [lo, hi]. */
static bool parse_num(const char *s, long lo, long hi, long *out)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < lo || v > hi)
		return false;
	*out = v;
	return true;
}

/* Reads Anonymous: and Rss: (kB) from /proc/PID/smaps_rollup. */
static int read_rollup(pid_t pid, long *anon_kb, long *rss_kb, char *err, size_t errlen)
{
	char path[64], line[256];
	snprintf(path, sizeof(path), "/proc/%d/smaps_rollup", (int)pid);
	FILE *f = fopen(path, "re");
	if (!f) {
		snprintf(err, errlen, "open %s: %s", path, strerror(errno));
		return -1;
	}
	*anon_kb = *rss_kb = -1;
	while (fgets(line, sizeof(line), f)) {
		long v;
		if (sscanf(line, "Rss: %ld kB", &v) == 1)
			*rss_kb = v;
		else if (sscanf(line, "Anonymous: %ld kB", &v) == 1)
			*anon_kb = v;
	}
	fclose(f);
	if (*anon_kb < 0 || *rss_kb < 0) {
		snprintf(err, errlen, "%s has no Rss:/Anonymous: lines", path);
		return -1;
	}
	return 0;
}

static int sample_all(struct child *c, int n, char *err, size_t errlen)
{
	for (int i = 0; i < n; i++) {
		long anon, rss;
		char e[256];
		if (read_rollup(c[i].p.pid, &anon, &rss, e, sizeof(e)) < 0) {
			snprintf(err, errlen, "child %d (pid %d): %s", i, (int)c[i].p.pid, e);
			return -1;
		}
		if (anon > c[i].anon_kb_max)
			c[i].anon_kb_max = anon;
		if (rss > c[i].rss_kb_max)
			c[i].rss_kb_max = rss;
	}
	return 0;
}

/* Drains every child's serial output (so no guest blocks on a full pipe) until
 * the monotonic time `until`; with `all_output`, returns as soon as every child
 * has printed, and fails if `until` comes first. Any child exiting is a failure. */
static int pump(struct child *c, int n, double until, bool all_output, char *err, size_t errlen)
{
	struct pollfd pfd[MAX_CHILDREN];
	for (;;) {
		if (stop_sig) {
			snprintf(err, errlen, "interrupted by signal %d", (int)stop_sig);
			return -1;
		}
		int silent = 0, first_silent = -1;
		for (int i = 0; i < n; i++)
			if (c[i].p.first_output_ms < 0 && silent++ == 0)
				first_silent = i;
		if (all_output && !silent)
			return 0;
		double left = until - now_ms();
		if (left <= 0) {
			if (!all_output)
				return 0;
			snprintf(err, errlen,
				 "only %d of %d QEMUs printed guest output within %d ms of the start "
				 "(first silent: child %d, pid %d)",
				 n - silent, n, START_TIMEOUT_MS, first_silent,
				 (int)c[first_silent].p.pid);
			return -1;
		}
		for (int i = 0; i < n; i++)
			pfd[i] = (struct pollfd){.fd = c[i].p.out_fd, .events = POLLIN};
		int r = poll(pfd, (nfds_t)n, (int)left + 1);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			snprintf(err, errlen, "poll: %s", strerror(errno));
			return -1;
		}
		for (int i = 0; i < n && r > 0; i++) {
			if (!pfd[i].revents)
				continue;
			char e[768];
			if (qemu_peer_drain(&c[i].p, e, sizeof(e)) < 0) {
				snprintf(err, errlen, "child %d: %s", i, e);
				return -1;
			}
		}
	}
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	if (argc != 6) {
		fprintf(stderr,
			"usage: %s TESTGUEST_ELF MEM_MIB N SETTLE_MS CMDLINE\n"
			"  Saves one warmed testguest (booted with CMDLINE under QEMU) to a migration\n"
			"  file, restores it in N QEMUs at once, samples their Anonymous/Rss for\n"
			"  SETTLE_MS after all have printed, and prints one JSON line on stdout.\n"
			"  \"" PULSE_ARG "\" is added to CMDLINE unless it sets pulse_ms.\n"
			"  QEMU=binary overrides qemu-system-x86_64.\n",
			argv[0]);
		return 2;
	}
	const char *elf = argv[1];
	long mem_mib, n_long, settle_ms;
	if (!parse_num(argv[2], 16, 1 << 20, &mem_mib) ||
	    !parse_num(argv[3], 1, MAX_CHILDREN, &n_long) ||
	    !parse_num(argv[4], 0, 600000, &settle_ms)) {
		fprintf(stderr,
			"qemu-fork-peer: bad arguments: MEM_MIB must be 16..%d, N 1..%d, "
			"SETTLE_MS 0..600000\n",
			1 << 20, MAX_CHILDREN);
		return 2;
	}
	int n = (int)n_long;
	const char *qemu = getenv("QEMU") && *getenv("QEMU") ? getenv("QEMU") : "qemu-system-x86_64";

	char cmdline[4096];
	bool add_pulse = !strstr(argv[5], "pulse_ms=");
	if (snprintf(cmdline, sizeof(cmdline), "%s%s%s", argv[5], add_pulse ? " " : "",
		     add_pulse ? PULSE_ARG : "") >= (int)sizeof(cmdline)) {
		fprintf(stderr, "qemu-fork-peer: CMDLINE too long\n");
		return 2;
	}

	/* Without SA_RESTART: a signal ends the waits below and goes through the
	 * cleanup, so no QEMU outlives the tool. */
	struct sigaction sa = {.sa_handler = on_signal};
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);

	struct child *c = calloc((size_t)n, sizeof(*c));
	double *first = calloc((size_t)n, sizeof(double));
	if (!c || !first) {
		fprintf(stderr, "qemu-fork-peer: out of memory\n");
		return 1;
	}
	for (int i = 0; i < n; i++) {
		c[i].p.pid = -1;
		c[i].p.out_fd = c[i].p.err_fd = -1;
	}

	int status = 1, started = 0;
	char err[2048] = "", state[PATH_MAX];
	char dir[] = "/tmp/qemu-fork-peer-XXXXXX";
	if (!mkdtemp(dir)) {
		fprintf(stderr, "qemu-fork-peer: mkdtemp: %s\n", strerror(errno));
		goto out_free;
	}
	snprintf(state, sizeof(state), "%s/qemu.state", dir);

	double t0 = now_ms();
	logf_("preparing: %s, %ld MiB, cmdline \"%s\"%s", qemu, mem_mib, cmdline,
	      add_pulse ? " (" PULSE_ARG " added: the restored guest must print)" : "");
	if (qemu_peer_prepare(qemu, elf, cmdline, (unsigned)mem_mib, state, err, sizeof(err)) < 0) {
		fprintf(stderr, "qemu-fork-peer: preparing the migration state failed: %s\n", err);
		goto out_dir;
	}
	struct stat st;
	if (stat(state, &st) == 0)
		logf_("migration state saved in %.0f ms: %.1f MiB", now_ms() - t0,
		      (double)st.st_size / (1 << 20));
	if (stop_sig) {
		fprintf(stderr, "qemu-fork-peer: interrupted by signal %d\n", (int)stop_sig);
		goto out_dir;
	}

	double t_start = now_ms();
	for (; started < n; started++) {
		if (qemu_peer_start(qemu, elf, (unsigned)mem_mib, state, &c[started].p, err,
				    sizeof(err)) < 0) {
			fprintf(stderr, "qemu-fork-peer: starting restoring QEMU %d of %d failed: %s\n",
				started + 1, n, err);
			goto out_kids;
		}
	}
	logf_("started %d restoring QEMUs in %.0f ms; waiting for their guest output", n,
	      now_ms() - t_start);
	if (pump(c, n, t_start + START_TIMEOUT_MS, true, err, sizeof(err)) < 0) {
		fprintf(stderr, "qemu-fork-peer: waiting for the restored guests failed: %s\n", err);
		goto out_kids;
	}
	logf_("all %d printed %.0f ms after the first start; settling %ld ms, sampling every %d ms",
	      n, now_ms() - t_start, settle_ms, SAMPLE_MS);

	/* Samples at 0, 100, 200 ... ms into the window and at its end, draining
	 * serial output in between; each child keeps its maximum. */
	double t_settle = now_ms(), end = t_settle + (double)settle_ms;
	bool ok = sample_all(c, n, err, sizeof(err)) == 0;
	for (int k = 1; ok; k++) {
		double prev = t_settle + (double)(k - 1) * SAMPLE_MS;
		double next = t_settle + (double)k * SAMPLE_MS;
		if (prev >= end)
			break;
		double until = next < end ? next : end;
		ok = pump(c, n, until, false, err, sizeof(err)) == 0 &&
		     sample_all(c, n, err, sizeof(err)) == 0;
	}
	if (!ok) {
		fprintf(stderr, "qemu-fork-peer: sampling the restored QEMUs failed: %s\n", err);
		goto out_kids;
	}

	double anon_sum = 0, anon_max = 0, rss_sum = 0;
	for (int i = 0; i < n; i++) {
		double a = (double)c[i].anon_kb_max / 1024, r = (double)c[i].rss_kb_max / 1024;
		logf_("child %2d pid %d: first output %.1f ms, Anonymous max %.1f MiB, Rss max %.1f MiB",
		      i, (int)c[i].p.pid, c[i].p.first_output_ms, a, r);
		anon_sum += a;
		rss_sum += r;
		if (a > anon_max)
			anon_max = a;
		first[i] = c[i].p.first_output_ms;
	}
	qsort(first, (size_t)n, sizeof(double), cmp_double);
	/* nearest-rank median */
	double p50 = first[(n + 1) / 2 - 1];
	for (int i = 0; i < n; i++)
		qemu_peer_stop(&c[i].p);
	logf_("done in %.1f s", (now_ms() - t0) / 1e3);
	printf("{\"children\":%d,\"mem_mib\":%ld,\"private_mib_avg\":%.2f,\"private_mib_max\":%.2f,"
	       "\"rss_mib_avg\":%.2f,\"first_output_ms_p50\":%.2f}\n",
	       n, mem_mib, anon_sum / n, anon_max, rss_sum / n, p50);
	fflush(stdout);
	status = 0;
out_kids:
	for (int i = 0; i < started; i++)
		qemu_peer_stop(&c[i].p);
out_dir:
	unlink(state);
	if (rmdir(dir) < 0) /* the result stands; only say what is left behind */
		fprintf(stderr, "qemu-fork-peer: warning: removing %s: %s\n", dir, strerror(errno));
out_free:
	free(c);
	free(first);
	return status;
}
