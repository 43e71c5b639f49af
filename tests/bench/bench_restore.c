/* bench-restore: restore latency to first guest output, spore (cold and pooled) vs QEMU. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "pool_proto.h"
#include "sl/file.h"
#include "qemu_peer.h"

#define GUEST_CMDLINE "mode=bench pulse_ms=1 hz=1000 warm_ms=100"
#define MEM_MIB 128

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double pct(double *v, int n, double p)
{
	qsort(v, (size_t)n, sizeof(double), cmp);
	int i = (int)(p * (n - 1) + 0.5);
	return v[i];
}

/* Waits (bounded) for the first byte on fd; returns its arrival time. */
static int first_byte(int fd, double *t, int timeout_ms)
{
	struct pollfd p = {fd, POLLIN, 0};
	int rc = poll(&p, 1, timeout_ms);
	if (rc <= 0)
		return -1;
	char c;
	*t = now_ms();
	return read(fd, &c, 1) == 1 ? 0 : -1;
}

static int run(char *const argv[], int quiet)
{
	pid_t pid = fork();
	if (pid == 0) {
		if (quiet) {
			int fd = open("/dev/null", O_WRONLY);
			dup2(fd, 1);
		}
		execv(argv[0], argv);
		_exit(127);
	}
	int ws;
	waitpid(pid, &ws, 0);
	return WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + WTERMSIG(ws);
}

/* jail: "--jail" (what runs as root anyway) or "--no-jail", for the jail's cost. */
static int cold_once(const char *spore, const char *dir, const char *verify, const char *jail, double *ms)
{
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0)
		return -1;
	double t0 = now_ms();
	pid_t pid = fork();
	if (pid == 0) {
		dup2(p[1], 1);
		execl(spore, spore, "resume", dir, "--for", "5s", "--verify", verify, jail, (char *)NULL);
		_exit(127);
	}
	close(p[1]);
	double t1 = 0;
	int rc = first_byte(p[0], &t1, 5000);
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	close(p[0]);
	*ms = t1 - t0;
	return rc;
}

static int pool_once(const char *sock, const char *dir, double *ms)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (strlen(sock) >= sizeof(sa.sun_path))
		return -1;
	memcpy(sa.sun_path, sock, strlen(sock) + 1);
	int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (s < 0 || connect(s, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		if (s >= 0)
			close(s);
		return -1;
	}
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0)
		return -1;
	sl_error_t err = NULL;
	double t0 = now_ms();
	/* A generous --for: the run ends when we hang up after the first byte
	 * (the worker watches its client), not on a timer that a busy host could
	 * outrun before the guest prints anything. */
	if (pool_send_request(s, dir, 10000, NULL, p[1], &err) < 0) {
		fprintf(stderr, "bench: %s\n", sl_error_msg(err));
		sl_error_free(&err);
		return -1;
	}
	close(p[1]);
	double t1 = 0;
	int rc = first_byte(p[0], &t1, 5000);
	*ms = t1 - t0;
	if (rc < 0) {
		/* Say why: the worker's reply ("error ...") if it sent one. */
		char why[600];
		struct timeval tv = {.tv_sec = 1};
		setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		ssize_t n = recv(s, why, sizeof(why) - 1, 0);
		why[n > 0 ? n : 0] = '\0';
		fprintf(stderr, "bench: pool worker said: %s\n", n > 0 ? why : "(nothing)");
	}
	/* Hang up: the worker ends its run, and the pool replaces it. */
	close(s);
	close(p[0]);
	return rc;
}

static int bench(const char *spore, const char *elf, const char *work, int n, int qn);

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: bench-restore SPORE_BIN TESTGUEST_ELF [N] [QEMU_N]\n");
		return 2;
	}
	const char *spore = argv[1], *elf = argv[2];
	int n = argc > 3 ? atoi(argv[3]) : 100, qn = argc > 4 ? atoi(argv[4]) : 50;
	char work[] = "/tmp/bench-restore.XXXXXX";
	if (!mkdtemp(work)) {
		perror("bench: mkdtemp");
		return 1;
	}
	/* Seals (what lets a restore skip re-hashing unchanged chunks) live
	 * with the run, not in the host's /var/lib/sporelet. */
	char state[sizeof(work) + 8];
	snprintf(state, sizeof(state), "%s/state", work);
	setenv("SPORE_STATE_DIR", state, 1);
	int rc = bench(spore, elf, work, n, qn);
	sl_error_t err = NULL;
	sl_remove_path(work, &err);
	sl_error_free(&err);
	return rc;
}

static int bench(const char *spore, const char *elf, const char *work, int n, int qn)
{
	if (n < 2 || qn < 2 || n > 10000 || qn > 10000) {
		fprintf(stderr, "bench: N and QEMU_N must be 2..10000\n");
		return 2;
	}
	char dir[4096], sock[4096], qstate[4096], errbuf[512];
	snprintf(dir, sizeof(dir), "%s/spore", work);
	snprintf(sock, sizeof(sock), "%s/pool.sock", work);
	snprintf(qstate, sizeof(qstate), "%s/qemu.state", work);
	char mem[16];
	snprintf(mem, sizeof(mem), "%d", MEM_MIB);
	char *cap[] = {(char *)spore, "run", "--kernel", (char *)elf, "--mem", mem, "--capture", dir,
		       "--capture-on", "ready", "--cmdline", GUEST_CMDLINE, NULL};
	if (run(cap, 1) != 0) {
		fprintf(stderr, "bench: capture failed\n");
		return 1;
	}
	double *cold = calloc((size_t)n, sizeof(double)), *pool = calloc((size_t)n, sizeof(double));
	double *qemu = calloc((size_t)qn, sizeof(double));
	/* The first restore hashes every chunk and seals it; the others find
	 * the seals, as every restore after the first on a node does. The
	 * --verify full runs show what hashing every chunk every time costs. */
	int nf = n / 4 < 10 ? 10 : n / 4;
	double *full = calloc((size_t)nf, sizeof(double)), first = 0;
	/* Jailed and not, interleaved so that drift hits both alike. */
	double *bare = calloc((size_t)n, sizeof(double));
	const char *jail = geteuid() == 0 ? "--jail" : "--no-jail";
	if (geteuid() != 0)
		printf("bench: not root, so no jail: jail_ms is 0\n");
	for (int i = 0; i < n; i++)
		if (cold_once(spore, dir, "sealed", jail, &cold[i]) < 0 ||
		    cold_once(spore, dir, "sealed", "--no-jail", &bare[i]) < 0) {
			fprintf(stderr, "bench: cold restore %d produced no output\n", i);
			return 1;
		}
	first = cold[0];
	for (int i = 0; i < nf; i++)
		if (cold_once(spore, dir, "full", jail, &full[i]) < 0) {
			fprintf(stderr, "bench: cold restore (--verify full) %d produced no output\n", i);
			return 1;
		}

	pid_t pp = fork();
	if (pp == 0) {
		int fd = open("/dev/null", O_WRONLY);
		dup2(fd, 2);
		execl(spore, spore, "pool", "--size", "2", "--socket", sock, "--mem", mem, (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 100 && access(sock, F_OK) != 0; i++)
		usleep(20000);
	usleep(200000); /* let the workers create their VMs */
	for (int i = 0; i < n; i++) {
		if (pool_once(sock, dir, &pool[i]) < 0) {
			fprintf(stderr, "bench: pooled restore %d produced no output\n", i);
			kill(pp, SIGTERM);
			return 1;
		}
		usleep(20000); /* the pool replaces the worker it used */
	}
	kill(pp, SIGTERM);
	waitpid(pp, NULL, 0);

	const char *qemu_bin = getenv("QEMU") ? getenv("QEMU") : "qemu-system-x86_64";
	if (qemu_peer_prepare(qemu_bin, elf, GUEST_CMDLINE, MEM_MIB, qstate, errbuf, sizeof(errbuf)) < 0) {
		fprintf(stderr, "bench: QEMU peer: %s\n", errbuf);
		return 1;
	}
	for (int i = 0; i < qn; i++)
		if (qemu_peer_restore_once(qemu_bin, elf, MEM_MIB, qstate, &qemu[i], errbuf, sizeof(errbuf)) < 0) {
			fprintf(stderr, "bench: QEMU restore %d: %s\n", i, errbuf);
			return 1;
		}
	double c50 = pct(cold, n, 0.5), c99 = pct(cold, n, 0.99);
	double p50 = pct(pool, n, 0.5), p99 = pct(pool, n, 0.99);
	double q50 = pct(qemu, qn, 0.5), q99 = pct(qemu, qn, 0.99);
	double f50 = pct(full, nf, 0.5);
	double b50 = pct(bare, n, 0.5);
	printf("bench: restore of a %d MiB test-guest spore to first serial output, %d runs (QEMU %d)\n", MEM_MIB, n, qn);
	printf("bench:   spore cold (launch VMM)   p50 %7.2f ms  p99 %7.2f ms\n", c50, c99);
	printf("bench:   spore cold, --no-jail     p50 %7.2f ms  (the jail costs %.2f ms)\n", b50, c50 - b50);
	printf("bench:   spore cold, first (hash + seal)    %7.2f ms\n", first);
	printf("bench:   spore cold, --verify full p50 %7.2f ms  (%d runs)\n", f50, nf);
	printf("bench:   spore pooled              p50 %7.2f ms  p99 %7.2f ms\n", p50, p99);
	printf("bench:   QEMU -incoming            p50 %7.2f ms  p99 %7.2f ms\n", q50, q99);
	printf("RESULT cold_p50_ms=%.2f cold_p99_ms=%.2f pool_p50_ms=%.2f pool_p99_ms=%.2f qemu_p50_ms=%.2f "
	       "ratio_cold=%.1f ratio_pool=%.1f full_p50_ms=%.2f first_ms=%.2f nojail_p50_ms=%.2f jail_ms=%.2f\n",
	       c50, c99, p50, p99, q50, q50 / c50, q50 / p50, f50, first, b50, c50 - b50);
	free(full);
	free(bare);
	free(cold);
	free(pool);
	free(qemu);
	return 0;
}
