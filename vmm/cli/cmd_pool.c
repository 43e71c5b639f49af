/* spore pool: pre-started VMM processes, each taking one restore or resume-agent request. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
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

/* What every worker of this pool shares. */
struct pool_cfg {
	struct vmm_machine m;
	const struct vmm_restore_opts *ropts;
	bool vsock;        /* machines with a vsock device: resume-agent requests */
	char dir[4096];    /* absolute: the socket's directory, where --vsock workers keep their sockets */
	int busy_fd;       /* write end: a worker sends its pid once it took a connection */
	struct cli_jail_opts jail; /* workers jail themselves after the restore */
};

/* A --vsock worker's private directory: its vsock and control sockets.
 * cmd_pool checked that they fit for any pid. */
static bool worker_paths(const struct pool_cfg *pc, pid_t pid, char *wdir, size_t wcap, char *vsock, char *control)
{
	return (size_t)snprintf(wdir, wcap, "%s/vm-%d", pc->dir, (int)pid) < wcap &&
	       snprintf(vsock, 108, "%s/vsock", wdir) < 108 && snprintf(control, 108, "%s/control", wdir) < 108;
}

/* Removes a worker's directory; the pool calls it for every worker it
 * reaps, so a killed worker leaves nothing either. */
static void worker_dir_remove(const struct pool_cfg *pc, pid_t pid)
{
	if (!pc->vsock)
		return;
	char wdir[4200], vsock[108], control[108];
	if (!worker_paths(pc, pid, wdir, sizeof(wdir), vsock, control))
		return;
	unlink(vsock);
	unlink(control);
	/* A jailed worker sees its directory as a mount point in a read-only
	 * root: the pool removes it when it reaps the worker. */
	if (rmdir(wdir) < 0 && errno != ENOENT && !(pid == getpid() && (errno == EBUSY || errno == EROFS)))
		sl_warn("pool: cannot remove a worker's directory", "dir=%s error=\"%s\"", wdir, strerror(errno));
}

/* A restored agent-capable spore, driven like `spore resume DIR --vsock
 * --control --ready-fd --parent-fd [--hostname] [--env]...`. */
static int serve_agent(const struct pool_cfg *pc, struct vmm_vm *vm, int conn, struct pool_request *req,
		       const char *wdir, const char *vsock, const char *control, uint64_t t0,
		       const struct vmm_restore_stats *rs)
{
	struct drive_opts o = {.report_fd = -1, .ready_fd = req->ready_fd, .client_fd = req->parent_fd,
			       .client_is_parent = true, .jail = pc->jail.enabled ? &pc->jail : NULL,
			       .own_dir = wdir, .for_ms = req->for_ms, .launch_ns = t0,
			       .restore_ns = cli_now_ns() - t0, .control_path = control};
	struct cli_guest g = {.vsock = vsock, .hostname = req->hostname[0] ? req->hostname : NULL, .nenv = req->nenv};
	memcpy(g.env, req->env, sizeof(char *) * (req->nenv + 1));
	cli_log_restored(vm, req->dir, &o, rs);
	cli_reply(conn, "ok restore_us=%llu pid=%d vsock=%s control=%s\n", (unsigned long long)(o.restore_ns / 1000),
	      (int)getpid(), vsock, control);
	int status = cli_drive_guest(vm, &o, &g, vsock, NULL, true, req->prefix[0] ? req->prefix : NULL);
	/* The supervisor may have closed the connection long ago: best effort. */
	cli_reply(conn, "exit %d\n", status);
	if (o.ready_fd >= 0)
		close(o.ready_fd);
	req->ready_fd = -1;
	return status;
}

/* A worker: VM created ahead of time; serves exactly one request. */
static int worker(int lfd, const struct pool_cfg *pc)
{
	sl_error_t err = NULL;
	struct vmm_vm *vm = NULL;
	struct vmm_console none = {.fd = -1};
	struct vmm_machine m = pc->m;
	char wdir[4200] = "", vsock[108] = "", control[108] = "";
	if (pc->vsock) {
		if (!worker_paths(pc, getpid(), wdir, sizeof(wdir), vsock, control))
			return cli_usage("pool: worker socket paths too long");
		/* One left by a killed worker whose pid we now have: stale. */
		if (mkdir(wdir, 0700) < 0 && errno == EEXIST)
			worker_dir_remove(pc, getpid());
		if (mkdir(wdir, 0700) < 0 && errno != EEXIST) {
			sl_error_sys(&err, "pool: create %s", wdir);
			return cli_fail(&err);
		}
		m.vsock_path = vsock;
	}
	int status = EXIT_SPORE_FAILED;
	/* Ahead of the request: what of the jail does not depend on it. */
	if (pc->jail.enabled && cli_jail_prepare_privileges(&err) < 0) {
		worker_dir_remove(pc, getpid());
		return cli_fail(&err);
	}
	if (vmm_create(&m, &none, &vm, &err) < 0) {
		worker_dir_remove(pc, getpid());
		return cli_fail(&err);
	}
	int conn = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	close(lfd);
	if (conn < 0)
		goto out;
	/* Taken: the pool forks a replacement now rather than when this VM
	 * ends (a pod's VM runs for as long as the pod). */
	pid_t me = getpid();
	ssize_t w = write(pc->busy_fd, &me, sizeof(me));
	(void)w; /* a pool that went away is not this request's problem */
	close(pc->busy_fd);
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
		if (rrc == 0)
			pool_request_close_fds(&req);
		rrc = -1;
	}
	if (rrc == 0 && pc->vsock != (req.verb == POOL_RESUME_AGENT)) {
		sl_error_set(&err, SL_E_INVALID,
			     pc->vsock ? "pool request: this pool's VMs have a vsock device (spore pool --vsock): "
					 "it serves resume-agent requests only"
				       : "pool request: resume-agent needs a pool started with --vsock");
		pool_request_close_fds(&req);
		rrc = -1;
	}
	if (rrc < 0) {
		cli_reply(conn, "error %s\n", sl_error_msg(err));
		cli_fail(&err);
		goto out;
	}
	struct vmm_console con = {.fd = req.console_fd, .prefix = req.prefix[0] ? req.prefix : NULL};
	struct vmm_restore_stats rs;
	struct vmm_spore *sp = NULL;
	/* Now, not ahead of the request: the namespace is a copy of the host's
	 * mounts at this moment, and the spore may have been mounted (a pod's
	 * rootfs) after this worker started. The created VM has no thread yet:
	 * its devices' start with it. */
	rrc = pc->jail.enabled ? cli_jail_unshare(&err) : 0;
	if (rrc == 0)
		rrc = vmm_set_console(vm, &con, &err);
	if (rrc == 0)
		rrc = vmm_spore_open(req.dir, &sp, &err);
	if (rrc == 0)
		rrc = vmm_restore(vm, sp, pc->ropts, &rs, &err);
	vmm_spore_close(sp);
	if (rrc < 0) {
		cli_reply(conn, "error %s\n", sl_error_msg(err));
		sl_error_free(&err);
		pool_request_close_fds(&req);
		goto out;
	}
	if (req.verb == POOL_RESUME_AGENT) {
		status = serve_agent(pc, vm, conn, &req, wdir, vsock, control, t0, &rs);
		vm = NULL; /* cli_drive_guest freed it */
	} else {
		struct drive_opts o = {.report_fd = -1, .ready_fd = -1, .for_ms = req.for_ms, .launch_ns = t0,
				       .restore_ns = cli_now_ns() - t0, .client_fd = conn,
				       .jail = pc->jail.enabled ? &pc->jail : NULL};
		cli_log_restored(vm, req.dir, &o, &rs);
		cli_reply(conn, "ok restore_us=%llu\n", (unsigned long long)(o.restore_ns / 1000));
		status = cli_drive(vm, &o);
		cli_reply(conn, "exit %d\n", status);
	}
	pool_request_close_fds(&req);
out:
	vmm_destroy(vm);
	if (conn >= 0)
		close(conn);
	worker_dir_remove(pc, getpid());
	return status;
}

static volatile sig_atomic_t stopping;
static void on_stop(int sig)
{
	(void)sig;
	stopping = 1;
}
static void on_child(int sig)
{
	(void)sig; /* only to interrupt ppoll */
}

int cmd_pool(int argc, char **argv)
{
	static const struct option opts[] = {{"size", required_argument, NULL, 'n'},
					     {"socket", required_argument, NULL, 's'},
					     {"mem", required_argument, NULL, 'm'},
					     {"vcpus", required_argument, NULL, 'c'},
					     {"verify", required_argument, NULL, 'v'},
					     {"vsock", no_argument, NULL, 'V'},
					     {"pid-file", required_argument, NULL, 'p'},
					     {"jail", no_argument, NULL, 'J'},
					     {"no-jail", no_argument, NULL, 'N'},
					     {"jail-uid", required_argument, NULL, 'U'},
					     {"help", no_argument, NULL, 'h'},
					     {0}};
	static const char usage[] =
		"usage: spore pool --size N --socket PATH [--mem MIB] [--vcpus N] [--verify sealed|full]\n"
		"                  [--vsock] [--pid-file FILE] [--jail [--jail-uid UID[:GID]] | --no-jail]\n"
		"Keeps N VMM processes with their VM, RAM slot and vCPUs created; each\n"
		"serves one restore request (spore resume --pool PATH DIR) and is replaced.\n"
		"Spores must have the pool's machine shape (default 128 MiB, 1 vcpu).\n"
		"--vsock: the machines have a vsock device; they serve resume-agent requests\n"
		"for spores with an agent (the containerd shim's), each worker with its vsock\n"
		"and control sockets in a private directory vm-<pid> beside PATH.\n"
		"--pid-file FILE: the pool's pid, written once it listens, removed when it stops.\n"
		"Workers run jailed (as for spore resume: the default as root; --no-jail opts\n"
		"out): after the restore each shows only the spore and its own directory.\n"
		"docs/pool-protocol.md.\n";
	uint64_t size = 0;
	const char *path = NULL, *pid_file = NULL;
	struct pool_cfg pc = {.m = {.mem_mib = 128, .vcpus = 1}, .busy_fd = -1};
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
		case 'p': pid_file = optarg; break;
		case 'V': pc.vsock = true; break;
		case 'J': pc.jail.enabled = pc.jail.asked = true; break;
		case 'N': pc.jail.refused = true; break;
		case 'U':
			if (cli_parse_jail_uid(optarg, &pc.jail, &err) < 0)
				return cli_fail(&err);
			break;
		case 'v':
			if (cli_parse_verify(optarg, &verify, &err) < 0)
				return cli_fail(&err);
			break;
		case 'm':
		case 'c':
			if (cli_parse_machine_opt(c, optarg, &pc.m, &err) < 0)
				return cli_fail(&err);
			break;
		case 'h': fputs(usage, stdout); return 0;
		default: fputs(usage, stderr); return EXIT_SPORE_FAILED;
		}
	}
	if (!size || !path || optind != argc)
		return cli_usage("pool: --size and --socket are required\n%s", usage);
	if (cli_jail_settle(&pc.jail, &err) < 0)
		return cli_fail(&err);
	struct cli_verify cv;
	cli_verify_init(&cv, verify);
	pc.ropts = &cv.opts;
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof(sa.sun_path))
		return cli_usage("pool: socket path longer than %zu bytes", sizeof(sa.sun_path) - 1);
	strcpy(sa.sun_path, path);
	if (pc.vsock) {
		/* Replies name the worker's sockets: absolute paths, and they must
		 * fit a socket address for any pid (up to 7 digits). */
		char d[4096];
		snprintf(d, sizeof(d), "%s", path);
		char *slash = strrchr(d, '/');
		if (slash == d)
			d[1] = '\0';
		else if (slash)
			*slash = '\0';
		else
			snprintf(d, sizeof(d), ".");
		if (!realpath(d, pc.dir)) {
			sl_error_sys(&err, "pool: %s", d);
			return cli_fail(&err);
		}
		if (strlen(pc.dir) + strlen("/vm-4194304/control") >= sizeof(sa.sun_path))
			return cli_usage("pool: --vsock: %s is too long a directory for the workers' sockets "
					 "(%s/vm-<pid>/control must fit in %zu bytes)",
					 pc.dir, pc.dir, sizeof(sa.sun_path) - 1);
		pc.m.vsock_cid = CLI_VSOCK_CID;
	}
	int lfd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	int busy[2];
	if (lfd < 0 || pipe2(busy, O_CLOEXEC | O_NONBLOCK) < 0) {
		sl_error_sys(&err, "pool: socket");
		return cli_fail(&err);
	}
	pc.busy_fd = busy[1];
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
	if (pid_file) {
		char line[32];
		int n = snprintf(line, sizeof(line), "%d\n", (int)getpid());
		if (cli_write_file_atomic(pid_file, line, (size_t)n, &err) < 0) {
			unlink(path);
			return cli_fail(&err);
		}
	}
	/* SIGTERM, SIGINT and SIGCHLD are blocked except inside ppoll: none is
	 * lost between a check and the wait, and a new worker gets its default
	 * actions back before it unblocks them (one arriving in between must
	 * kill it, not set a flag in its copy of the pool's handler). */
	sigset_t sigs, oldmask;
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGCHLD);
	sigprocmask(SIG_BLOCK, &sigs, &oldmask);
	struct sigaction sact = {.sa_handler = on_stop};
	sigaction(SIGTERM, &sact, NULL);
	sigaction(SIGINT, &sact, NULL);
	struct sigaction cact = {.sa_handler = on_child, .sa_flags = SA_NOCLDSTOP};
	sigaction(SIGCHLD, &cact, NULL);
	pid_t *pids = calloc(size, sizeof(pid_t));
	if (!pids)
		return cli_usage("out of memory");
	sl_info("pool ready", "socket=%s size=%llu mem_mib=%llu vcpus=%u vsock=%d", path, (unsigned long long)size,
		(unsigned long long)pc.m.mem_mib, pc.m.vcpus, pc.vsock);
	while (!stopping) {
		for (uint64_t i = 0; i < size && !stopping; i++) {
			if (pids[i] > 0)
				continue;
			pid_t pid = fork();
			if (pid == 0) {
				signal(SIGTERM, SIG_DFL);
				signal(SIGINT, SIG_DFL);
				signal(SIGCHLD, SIG_DFL);
				sigprocmask(SIG_SETMASK, &oldmask, NULL);
				close(busy[0]);
				_exit(worker(lfd, &pc));
			}
			if (pid < 0) {
				sl_err("pool: fork failed", "errno=%d", errno);
				sleep(1);
				continue;
			}
			pids[i] = pid;
		}
		struct pollfd p = {busy[0], POLLIN, 0};
		ppoll(&p, 1, NULL, &oldmask);
		int ws;
		pid_t done;
		while ((done = waitpid(-1, &ws, WNOHANG)) > 0) {
			for (uint64_t i = 0; i < size; i++)
				if (pids[i] == done)
					pids[i] = 0;
			worker_dir_remove(&pc, done);
		}
		/* A worker that took a connection is no longer the pool's to
		 * count (nor to stop): it belongs to its client now. */
		pid_t taken;
		while (read(busy[0], &taken, sizeof(taken)) == sizeof(taken))
			for (uint64_t i = 0; i < size; i++)
				if (pids[i] == taken)
					pids[i] = 0;
	}
	/* Idle workers end with the pool; busy ones run on for their clients
	 * (a pod's VM outlives a pool restart) and clean up after themselves. */
	pid_t taken;
	while (read(busy[0], &taken, sizeof(taken)) == sizeof(taken))
		for (uint64_t i = 0; i < size; i++)
			if (pids[i] == taken)
				pids[i] = 0;
	for (uint64_t i = 0; i < size; i++)
		if (pids[i] > 0)
			kill(pids[i], SIGTERM);
	for (uint64_t i = 0; i < size; i++)
		if (pids[i] > 0) {
			waitpid(pids[i], NULL, 0);
			worker_dir_remove(&pc, pids[i]);
		}
	unlink(path);
	if (pid_file)
		unlink(pid_file);
	free(pids);
	return 0;
}
