/* CLI helpers: argument parsing (durations, numbers, capture triggers), errors and socket replies. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>

#include "sl/file.h"
#include "sl/log.h"

#include "cli.h"

uint64_t cli_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int cli_parse_duration_ms(const char *s, uint64_t *ms, sl_error_t *err)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (end == s || errno || v < 0)
		return sl_error_set(err, SL_E_INVALID, "bad duration \"%s\" (try 500ms, 2s, 1m)", s);
	double mul;
	if (!strcmp(end, "ms"))
		mul = 1;
	else if (!strcmp(end, "s") || !*end)
		mul = 1000;
	else if (!strcmp(end, "m"))
		mul = 60000;
	else if (!strcmp(end, "h"))
		mul = 3600000;
	else
		return sl_error_set(err, SL_E_INVALID, "bad duration unit in \"%s\" (ms, s, m or h)", s);
	double r = v * mul;
	if (r > 1e12)
		return sl_error_set(err, SL_E_INVALID, "duration \"%s\" too long", s);
	*ms = (uint64_t)r;
	return 0;
}

int cli_parse_u64(const char *s, const char *what, uint64_t min, uint64_t max, uint64_t *out, sl_error_t *err)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (end == s || *end || errno || s[0] == '-' || v < min || v > max)
		return sl_error_set(err, SL_E_INVALID, "%s must be an integer in %llu..%llu, got \"%s\"", what,
				    (unsigned long long)min, (unsigned long long)max, s);
	*out = v;
	return 0;
}

int cli_parse_capture_on(const char *s, struct drive_opts *o, sl_error_t *err)
{
	if (!strcmp(s, "exit")) {
		o->capture_on = CAP_EXIT;
		return 0;
	}
	if (!strcmp(s, "ready")) {
		o->capture_on = CAP_READY;
		return 0;
	}
	if (!strncmp(s, "after:", 6)) {
		o->capture_on = CAP_AFTER;
		return cli_parse_duration_ms(s + 6, &o->capture_after_ms, err);
	}
	static const struct {
		const char *name;
		int sig;
	} sigs[] = {{"SIGUSR1", SIGUSR1}, {"SIGUSR2", SIGUSR2}, {"SIGHUP", SIGHUP},
		    {"USR1", SIGUSR1},    {"USR2", SIGUSR2},    {"HUP", SIGHUP}};
	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
		if (!strcmp(s, sigs[i].name)) {
			o->capture_on = CAP_SIGNAL;
			o->capture_signal = sigs[i].sig;
			return 0;
		}
	}
	return sl_error_set(err, SL_E_INVALID,
			    "--capture-on must be exit, ready, after:DURATION or SIGUSR1/SIGUSR2/SIGHUP, got \"%s\"", s);
}

int cli_fail(sl_error_t *err)
{
	fprintf(stderr, "spore: %s\n", sl_error_msg(*err));
	sl_error_free(err);
	return EXIT_SPORE_FAILED;
}

int cli_usage(const char *fmt, ...)
{
	va_list ap;
	fputs("spore: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return EXIT_SPORE_FAILED;
}

int cli_write_file_atomic(const char *path, const void *buf, size_t len, sl_error_t *err)
{
	/* sl_write_atomic takes a path beneath a directory; split a user path. */
	char dir[4096];
	if (snprintf(dir, sizeof(dir), "%s", path) >= (int)sizeof(dir))
		return sl_error_set(err, SL_E_INVALID, "path too long: %s", path);
	char *slash = strrchr(dir, '/');
	const char *base = path;
	if (slash) {
		base = path + (slash - dir) + 1;
		if (slash == dir)
			slash[1] = 0;
		else
			*slash = 0;
	} else {
		strcpy(dir, ".");
	}
	if (!*base)
		return sl_error_set(err, SL_E_INVALID, "not a file path: %s", path);
	_cleanup_close_ int dfd = open(dir, O_DIRECTORY | O_RDONLY | O_CLOEXEC);
	if (dfd < 0)
		return sl_error_sys(err, "open %s", dir);
	return sl_write_atomic(dfd, base, buf, len, 0644, err);
}

int cli_parse_machine_opt(int opt, const char *arg, struct vmm_machine *m, sl_error_t *err)
{
	uint64_t v = 0;
	if (opt == 'm') {
		if (cli_parse_u64(arg, "--mem", 2, VMM_MAX_MEM_MIB, &v, err) < 0)
			return -1;
		/* Guest RAM is whole 2 MiB chunks. */
		if (v % 2)
			return sl_error_set(err, SL_E_INVALID, "--mem must be an even number of MiB, got %llu",
					    (unsigned long long)v);
		m->mem_mib = v;
	} else {
		if (cli_parse_u64(arg, "--vcpus", 1, VMM_MAX_VCPUS, &v, err) < 0)
			return -1;
		m->vcpus = (unsigned)v;
	}
	return 0;
}

int cli_parse_verify(const char *s, enum vmm_verify *v, sl_error_t *err)
{
	if (!strcmp(s, "sealed"))
		*v = VMM_VERIFY_SEALED;
	else if (!strcmp(s, "full"))
		*v = VMM_VERIFY_FULL;
	else
		return sl_error_set(err, SL_E_INVALID, "--verify: want sealed or full, got \"%.64s\"", s);
	return 0;
}

int cli_parse_disk_dir(const char *arg, const char **out, sl_error_t *err)
{
	struct stat st;
	if (arg[0] != '/')
		return sl_error_set(err, SL_E_INVALID, "--disk-dir %.200s: want an absolute path", arg);
	if (stat(arg, &st) < 0)
		return sl_error_sys(err, "--disk-dir %.200s", arg);
	if (!S_ISDIR(st.st_mode))
		return sl_error_set(err, SL_E_INVALID, "--disk-dir %.200s: not a directory", arg);
	*out = arg;
	return 0;
}

void cli_verify_init(struct cli_verify *cv, enum vmm_verify v)
{
	cv->opts.verify = v;
	cv->opts.seal_dir = NULL;
	const char *state = getenv("SPORE_STATE_DIR"), *xdg = getenv("XDG_STATE_HOME"), *home = getenv("HOME");
	int n;
	if (state && state[0])
		n = snprintf(cv->seal_dir, sizeof(cv->seal_dir), "%s/seals", state);
	else if (geteuid() == 0)
		n = snprintf(cv->seal_dir, sizeof(cv->seal_dir), "/var/lib/sporelet/seals");
	else if (xdg && xdg[0] == '/')
		n = snprintf(cv->seal_dir, sizeof(cv->seal_dir), "%s/sporelet/seals", xdg);
	else if (home && home[0] == '/')
		n = snprintf(cv->seal_dir, sizeof(cv->seal_dir), "%s/.local/state/sporelet/seals", home);
	else
		return; /* nowhere private to keep seals: hash every chunk */
	if (n > 0 && (size_t)n < sizeof(cv->seal_dir))
		cv->opts.seal_dir = cv->seal_dir;
}

void cli_log_restored(struct vmm_vm *vm, const char *dir, const struct drive_opts *o,
		      const struct vmm_restore_stats *rs)
{
	uint64_t counter;
	char id[33];
	vmm_generation(vm, &counter, id);
	/* Whether disks shared the cache's extents or cost their size in bytes. */
	if (rs->disk_bytes_shared || rs->disk_bytes_copied)
		sl_info("disks ready", "dir=%s in=%s shared_mib=%.1f copied_mib=%.1f reflink=%s", dir,
			rs->disk_where ? rs->disk_where : "?",
			rs->disk_bytes_shared / 1048576.0, rs->disk_bytes_copied / 1048576.0,
			rs->disk_bytes_copied ? (rs->disk_bytes_shared ? "partly" : "no") : "yes");
	sl_debug("restored",
		 "dir=%s ms=%.3f manifest_ms=%.3f files_ms=%.3f chunks_ms=%.3f load_ms=%.3f chunks=%llu "
		 "chunks_hashed=%llu chunks_sealed=%llu generation=%llu id=%s",
		 dir, o->restore_ns / 1e6, rs->manifest_ns / 1e6, rs->files_ns / 1e6, rs->chunks_ns / 1e6,
		 rs->load_ns / 1e6, (unsigned long long)rs->chunks, (unsigned long long)rs->chunks_hashed,
		 (unsigned long long)rs->chunks_sealed, (unsigned long long)counter, id);
}

void cli_reply(int fd, const char *fmt, ...)
{
	char buf[4096];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(buf))
		n = sizeof(buf) - 1;
	if (send(fd, buf, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
		sl_debug("reply not sent", "err=%s", strerror(errno));
}
