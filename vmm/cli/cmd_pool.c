/* spore pool: pre-started VMM processes, each taking one restore request. */
#include <errno.h>
#include <stdarg.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"
#include "pool_proto.h"
#include "sl/log.h"

static void reply(int conn, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void reply(int conn, const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n > 0)
		send(conn, buf, (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf) - 1, MSG_NOSIGNAL);
}

/* A worker: VM created ahead of time; serves exactly one request. */
static int worker(int lfd, const struct vmm_machine *m, const struct vmm_restore_opts *ropts)
{
	sl_error_t err = NULL;
	struct vmm_vm *vm = NULL;
	struct vmm_console none = {.fd = -1};
	if (vmm_create(m, &none, &vm, &err) < 0)
		return cli_fail(&err);
	int conn = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	close(lfd);
	if (conn < 0) {
		vmm_destroy(vm);
		return EXIT_SPORE_FAILED;
	}
	uint64_t t0 = cli_now_ns();
	struct pool_request req;
	int rrc = pool_recv_request(conn, &req, &err);
	/* The socket is created 0600, but a pool started by root in a directory
	 * others can reach must still serve only its own user (and root). The
	 * request is read first so the refusal reaches a client that is still
	 * sending rather than breaking its pipe. */
	struct ucred cred;
	socklen_t clen = sizeof(cred);
	if (getsockopt(conn, SOL_SOCKET, SO_PEERCRED, &cred, &clen) < 0 ||
	    (cred.uid != 0 && cred.uid != geteuid())) {
		sl_error_free(&err);
		sl_error_set(&err, SL_E_INVALID, "pool serves uid %u only", (unsigned)geteuid());
		if (rrc == 0 && req.console_fd >= 0)
			close(req.console_fd);
		rrc = -1;
	}
	if (rrc < 0) {
		reply(conn, "error %s\n", sl_error_msg(err));
		vmm_destroy(vm);
		return cli_fail(&err);
	}
	struct vmm_console con = {.fd = req.console_fd, .prefix = req.prefix[0] ? req.prefix : NULL};
	struct vmm_restore_stats rs;
	struct vmm_spore *sp = NULL;
	rrc = vmm_set_console(vm, &con, &err);
	if (rrc == 0)
		rrc = vmm_spore_open(req.dir, &sp, &err);
	if (rrc == 0)
		rrc = vmm_restore(vm, sp, ropts, &rs, &err);
	vmm_spore_close(sp);
	if (rrc < 0) {
		reply(conn, "error %s\n", sl_error_msg(err));
		vmm_destroy(vm);
		sl_error_free(&err);
		return EXIT_SPORE_FAILED;
	}
	struct drive_opts o = {.report_fd = -1, .ready_fd = -1, .for_ms = req.for_ms, .launch_ns = t0,
			       .restore_ns = cli_now_ns() - t0, .client_fd = conn};
	cli_log_restored(vm, req.dir, &o, &rs);
	reply(conn, "ok restore_us=%llu\n", (unsigned long long)(o.restore_ns / 1000));
	int status = cli_drive(vm, &o);
	vmm_destroy(vm);
	reply(conn, "exit %d\n", status);
	close(conn);
	if (req.console_fd >= 0)
		close(req.console_fd);
	return status;
}

static volatile sig_atomic_t stopping;
static void on_stop(int sig)
{
	(void)sig;
	stopping = 1;
}

int cmd_pool(int argc, char **argv)
{
	static const struct option opts[] = {{"size", required_argument, NULL, 'n'},
					     {"socket", required_argument, NULL, 's'},
					     {"mem", required_argument, NULL, 'm'},
					     {"vcpus", required_argument, NULL, 'c'},
					     {"verify", required_argument, NULL, 'v'},
					     {"help", no_argument, NULL, 'h'},
					     {0}};
	static const char usage[] =
		"usage: spore pool --size N --socket PATH [--mem MIB] [--vcpus N] [--verify sealed|full]\n"
		"Keeps N VMM processes with their VM, RAM slot and vCPUs created; each\n"
		"serves one restore request (spore resume --pool PATH DIR) and is replaced.\n"
		"Spores must have the pool's machine shape (default 128 MiB, 1 vcpu).\n";
	uint64_t size = 0;
	const char *path = NULL;
	struct vmm_machine m = {.mem_mib = 128, .vcpus = 1};
	enum vmm_verify verify = VMM_VERIFY_SEALED;
	sl_error_t err = NULL;
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'n':
			if (cli_parse_u64(optarg, "--size", 1, 256, &size, &err) < 0)
				return cli_fail(&err);
			break;
		case 's': path = optarg; break;
		case 'v':
			if (cli_parse_verify(optarg, &verify, &err) < 0)
				return cli_fail(&err);
			break;
		case 'm':
		case 'c':
			if (cli_parse_machine_opt(c, optarg, &m, &err) < 0)
				return cli_fail(&err);
			break;
		case 'h': fputs(usage, stdout); return 0;
		default: fputs(usage, stderr); return EXIT_SPORE_FAILED;
		}
	}
	if (!size || !path || optind != argc)
		return cli_usage("pool: --size and --socket are required\n%s", usage);
	struct cli_verify cv;
	cli_verify_init(&cv, verify);
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof(sa.sun_path))
		return cli_usage("pool: socket path longer than %zu bytes", sizeof(sa.sun_path) - 1);
	strcpy(sa.sun_path, path);
	int lfd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (lfd < 0) {
		sl_error_sys(&err, "pool: socket");
		return cli_fail(&err);
	}
	struct stat st;
	if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
		unlink(path); /* a stale socket from a previous pool */
	mode_t old = umask(077); /* the socket is private to its owner */
	int brc = bind(lfd, (struct sockaddr *)&sa, sizeof(sa));
	umask(old);
	if (brc < 0 || listen(lfd, 64) < 0) {
		sl_error_sys(&err, "pool: bind %s", path);
		return cli_fail(&err);
	}
	struct sigaction sact = {.sa_handler = on_stop};
	sigaction(SIGTERM, &sact, NULL);
	sigaction(SIGINT, &sact, NULL);
	pid_t *pids = calloc(size, sizeof(pid_t));
	if (!pids)
		return cli_usage("out of memory");
	sl_info("pool ready", "socket=%s size=%llu mem_mib=%llu vcpus=%u", path, (unsigned long long)size,
		(unsigned long long)m.mem_mib, m.vcpus);
	/* SIGTERM/SIGINT stay blocked across fork until a new worker has its
	 * default actions back: one arriving in between must kill it, not set a
	 * flag in its copy of the pool's handler (then stopping waited forever). */
	sigset_t stopsigs, oldmask;
	sigemptyset(&stopsigs);
	sigaddset(&stopsigs, SIGTERM);
	sigaddset(&stopsigs, SIGINT);
	while (!stopping) {
		for (uint64_t i = 0; i < size && !stopping; i++) {
			if (pids[i] > 0)
				continue;
			sigprocmask(SIG_BLOCK, &stopsigs, &oldmask);
			pid_t pid = fork();
			if (pid == 0) {
				signal(SIGTERM, SIG_DFL);
				signal(SIGINT, SIG_DFL);
				sigprocmask(SIG_SETMASK, &oldmask, NULL);
				_exit(worker(lfd, &m, &cv.opts));
			}
			sigprocmask(SIG_SETMASK, &oldmask, NULL);
			if (pid < 0) {
				sl_err("pool: fork failed", "errno=%d", errno);
				sleep(1);
				continue;
			}
			pids[i] = pid;
		}
		int ws;
		pid_t done = wait(&ws);
		for (uint64_t i = 0; done > 0 && i < size; i++)
			if (pids[i] == done)
				pids[i] = 0;
	}
	for (uint64_t i = 0; i < size; i++)
		if (pids[i] > 0)
			kill(pids[i], SIGTERM);
	for (uint64_t i = 0; i < size; i++)
		if (pids[i] > 0)
			waitpid(pids[i], NULL, 0);
	unlink(path);
	free(pids);
	return 0;
}
