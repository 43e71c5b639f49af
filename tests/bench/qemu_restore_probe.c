/* qemu-restore-probe: prepares the QEMU restore peer once, restores it N times, prints p50/p99. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "qemu_peer.h"

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of sorted v[0..n-1]. */
static double percentile(const double *v, int n, double pct)
{
	int k = (int)(pct / 100.0 * n + 0.999999);
	if (k < 1)
		k = 1;
	if (k > n)
		k = n;
	return v[k - 1];
}

int main(int argc, char **argv)
{
	if (argc < 2 || argc > 5) {
		fprintf(stderr,
			"usage: %s TESTGUEST_ELF [RUNS=10] [MEM_MIB=128] [QEMU=qemu-system-x86_64]\n",
			argv[0]);
		return 2;
	}
	const char *elf = argv[1];
	int runs = argc > 2 ? atoi(argv[2]) : 10;
	unsigned mem = argc > 3 ? (unsigned)atoi(argv[3]) : 128;
	const char *qemu = argc > 4 ? argv[4] : "qemu-system-x86_64";
	if (runs < 1 || runs > 10000 || mem < 16) {
		fprintf(stderr, "bad RUNS or MEM_MIB\n");
		return 2;
	}
	char state[64];
	snprintf(state, sizeof(state), "/tmp/qemu-restore-probe-%d.state", (int)getpid());

	char err[1024];
	if (qemu_peer_prepare(qemu, elf, QEMU_PEER_CMDLINE, mem, state, err, sizeof(err)) < 0) {
		fprintf(stderr, "prepare: %s\n", err);
		unlink(state);
		return 1;
	}
	double *ms = calloc((size_t)runs, sizeof(double));
	if (!ms) {
		unlink(state);
		return 1;
	}
	int status = 0;
	for (int i = 0; i < runs; i++) {
		if (qemu_peer_restore_once(qemu, elf, mem, state, &ms[i], err, sizeof(err)) < 0) {
			fprintf(stderr, "restore %d: %s\n", i + 1, err);
			status = 1;
			break;
		}
		printf("restore %d: %.2f ms\n", i + 1, ms[i]);
		fflush(stdout);
	}
	if (!status) {
		qsort(ms, (size_t)runs, sizeof(double), cmp_double);
		printf("qemu restore (%d runs, %u MiB): p50 %.2f ms p99 %.2f ms min %.2f ms max %.2f ms\n",
		       runs, mem, percentile(ms, runs, 50), percentile(ms, runs, 99), ms[0],
		       ms[runs - 1]);
	}
	free(ms);
	unlink(state);
	return status;
}
