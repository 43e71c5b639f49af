/* spore run and spore resume: boot a kernel or resume a spore, then drive it. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "cli.h"
#include "pool_proto.h"
#include "sl/log.h"

static const char run_usage[] =
	"usage: spore run --kernel FILE [--initrd FILE] [--cmdline S] [--mem MIB] [--vcpus N]\n"
	"                 [--disk FILE[:ro]]... [--vsock PATH] [--env K=V]... [--agent-timeout DURATION]\n"
	"                 [--virtio-cmdline]\n"
	"                 [--capture DIR --capture-on exit|ready|after:DURATION|SIGUSR1]\n"
	"                 [--for DURATION] [--control SOCKET] [--ready-fd N] [-- ARGS...]\n"
	"       spore run --from SPORE [--hostname NAME] [--env K=V]... [--vsock PATH] [--for DURATION]\n"
	"                 [--disk-dir DIR] [--jail | --no-jail] [--jail-uid UID[:GID]]\n"
	"                 [--jail-bind DIR]... [-- COMMAND...]\n"
	"Boots an x86_64 ELF kernel (the test guest; ARGS extend its command line)\n"
	"or a Linux bzImage (ARGS are a command the guest's agent runs; --cmdline\n"
	"extends the kernel's). The test guest with --vsock gets a vsock device and\n"
	"runs its agent: ARGS are then a command for it (built-ins, docs/testguest.md)\n"
	"and --cmdline is its command line. With --from, resumes a spore and runs\n"
	"COMMAND in it. The VMM is jailed before the guest runs, as for resume.\n"
	"A Linux guest's command line is console=ttyS0 reboot=t panic=-1 pci=off,\n"
	"then --cmdline (default: quiet). --capture-on ready captures a Linux guest\n"
	"once its agent answers and COMMAND (the warm-up), if any, exited 0.\n"
	"Exit status: the guest's (its command's), 0 after --for or a capture, 125\n"
	"when spore itself fails.\n";

static const char resume_usage[] =
	"usage: spore resume DIR [--for DURATION] [--prefix S] [--pool SOCKET]\n"
	"                   [--verify sealed|full] [--hostname NAME] [--env K=V]... [--vsock PATH]\n"
	"                   [--capture DIR --capture-on exit|ready|after:DURATION|SIGUSR1]\n"
	"                   [--control SOCKET] [--ready-fd N] [--parent-fd N] [--disk-dir DIR]\n"
	"                   [--jail [--jail-uid UID[:GID]]] [-- COMMAND...]\n"
	"Resumes the spore in DIR with a new generation id. With --pool, a\n"
	"pre-started VMM of a `spore pool` does the restore. --verify full hashes\n"
	"every chunk even when a seal shows it unchanged since it was last verified.\n"
	"A Linux spore's agent (or a test-guest spore's, if it has a vsock device)\n"
	"gets the new generation (fresh entropy, the clock, NAME as hostname, the\n"
	"K=V environment) and then runs COMMAND, if given.\n"
	"--control SOCKET serves pause, resume, capture DIR, stop and status\n"
	"(docs/control-protocol.md; `spore control SOCKET REQUEST`). --ready-fd N\n"
	"gets one line \"ready restore_ms=<ms>\" once the guest runs (and its agent,\n"
	"if any, answered), then is closed. --parent-fd N (the read end of a pipe\n"
	"whose write end the supervisor holds) stops the VM when the supervisor dies.\n"
	"--disk-dir DIR: where a Linux spore's private disk copies go when DIR of\n"
	"the spore takes no file (a read-only bind); on the node cache's filesystem\n"
	"their chunks are reflinked, not copied. Default: $TMPDIR, /var/tmp, /tmp.\n"
	"The jail (the default as root; --no-jail opts out, --jail insists): once\n"
	"the VM is restored and its sockets are open, and before the guest runs,\n"
	"the VMM's root becomes an empty read-only tmpfs showing only the spore\n"
	"(read-only), the directories of --vsock, --control and --capture and each\n"
	"--jail-bind DIR (writable; where control-socket captures may go); it sets\n"
	"no_new_privs, drops every capability and installs a seccomp allowlist\n"
	"(SECURITY.md); --jail-uid UID[:GID] also switches to that uid and gid.\n";

enum {
	OPT_CAPTURE = 1000, OPT_CAPTURE_ON, OPT_FOR, OPT_PREFIX, OPT_REPORT_FD, OPT_CMDLINE, OPT_INITRD, OPT_POOL,
	OPT_VERIFY, OPT_DISK, OPT_VSOCK, OPT_FROM, OPT_HOSTNAME, OPT_ENV, OPT_AGENT_TIMEOUT, OPT_VIRTIO_CMDLINE,
	OPT_CONTROL, OPT_READY_FD, OPT_PARENT_FD, OPT_DISK_DIR, OPT_JAIL, OPT_JAIL_UID, OPT_JAIL_BIND, OPT_NO_JAIL,
};

static int jail_opt(int c, struct cli_jail_opts *j, sl_error_t *err)
{
	switch (c) {
	case OPT_JAIL: j->enabled = j->asked = true; return 1;
	case OPT_NO_JAIL: j->refused = true; return 1;
	case OPT_JAIL_UID: return cli_parse_jail_uid(optarg, j, err) < 0 ? -1 : 1;
	case OPT_JAIL_BIND: return cli_parse_jail_bind(optarg, j, err) < 0 ? -1 : 1;
	}
	return 0;
}

static int check_jail(struct cli_jail_opts *j, struct drive_opts *o)
{
	sl_error_t err = NULL;
	if (cli_jail_settle(j, &err) < 0)
		return cli_fail(&err);
	o->jail = j->enabled ? j : NULL;
	return 0;
}

static int guest_opt(int c, struct cli_guest *g, sl_error_t *err)
{
	switch (c) {
	case OPT_VSOCK: g->vsock = optarg; return 1;
	case OPT_HOSTNAME:
		if (!optarg[0] || strlen(optarg) > 64)
			return sl_error_set(err, SL_E_INVALID, "--hostname must be 1..64 bytes");
		g->hostname = optarg;
		return 1;
	case OPT_ENV:
		if (g->nenv >= 64)
			return sl_error_set(err, SL_E_INVALID, "--env: at most 64");
		if (!strchr(optarg, '=') || optarg[0] == '=')
			return sl_error_set(err, SL_E_INVALID, "--env %s: want KEY=VALUE", optarg);
		g->env[g->nenv++] = optarg;
		return 1;
	case OPT_AGENT_TIMEOUT:
		if (cli_parse_duration_ms(optarg, &g->agent_timeout_ms, err) < 0)
			return -1;
		if (!g->agent_timeout_ms || g->agent_timeout_ms > 3600000)
			return sl_error_set(err, SL_E_INVALID, "--agent-timeout must be in (0, 1h]");
		return 1;
	}
	return 0;
}

static bool guest_opts_given(const struct cli_guest *g)
{
	return g->vsock || g->hostname || g->nenv || g->agent_timeout_ms;
}

/* An inherited descriptor named on the command line: 3..1024 and open. */
static int open_fd_opt(const char *arg, const char *what, int *out, sl_error_t *err)
{
	uint64_t fd;
	if (cli_parse_u64(arg, what, 3, 1024, &fd, err) < 0)
		return -1;
	if (fcntl((int)fd, F_GETFD) < 0)
		return sl_error_set(err, SL_E_INVALID, "%s %llu: not an open file descriptor", what,
				    (unsigned long long)fd);
	*out = (int)fd;
	return 0;
}

static int common_opt(int c, struct drive_opts *o, sl_error_t *err)
{
	switch (c) {
	case OPT_CAPTURE:
		o->capture_dir = optarg;
		return 0;
	case OPT_CAPTURE_ON:
		return cli_parse_capture_on(optarg, o, err);
	case OPT_FOR:
		if (cli_parse_duration_ms(optarg, &o->for_ms, err) < 0)
			return -1;
		if (!o->for_ms)
			return sl_error_set(err, SL_E_INVALID, "--for must be longer than 0");
		return 0;
	case OPT_REPORT_FD:
		return open_fd_opt(optarg, "--report-fd", &o->report_fd, err);
	case OPT_READY_FD:
		return open_fd_opt(optarg, "--ready-fd", &o->ready_fd, err);
	case OPT_CONTROL:
		o->control_path = optarg;
		return 0;
	case OPT_PARENT_FD:
		o->client_is_parent = true;
		return open_fd_opt(optarg, "--parent-fd", &o->client_fd, err);
	case OPT_DISK_DIR:
		return cli_parse_disk_dir(optarg, &o->disk_dir, err);
	}
	return sl_error_set(err, SL_E_INVALID, "unknown option");
}

static int check_capture(const struct drive_opts *o)
{
	if (o->capture_dir && !o->capture_on)
		return cli_usage("--capture needs --capture-on");
	if (!o->capture_dir && o->capture_on)
		return cli_usage("--capture-on needs --capture DIR");
	if (!o->capture_dir)
		return 0;
	/* Fail now, not after the guest has run and warmed for minutes. The
	 * capture itself checks again (something may appear meanwhile). */
	struct stat st;
	if (lstat(o->capture_dir, &st) == 0)
		return cli_usage("--capture %s: already exists; a spore is never written over", o->capture_dir);
	char parent[4096];
	snprintf(parent, sizeof(parent), "%s", o->capture_dir);
	char *slash = strrchr(parent, '/');
	if (slash == parent)
		slash[1] = '\0';
	else if (slash)
		*slash = '\0';
	else
		snprintf(parent, sizeof(parent), ".");
	if (stat(parent, &st) < 0 || !S_ISDIR(st.st_mode))
		return cli_usage("--capture %s: %s is not a directory", o->capture_dir, parent);
	if (access(parent, W_OK | X_OK) < 0)
		return cli_usage("--capture %s: cannot create entries in %s: %s", o->capture_dir, parent,
				 strerror(errno));
	return 0;
}

static int resume_local(const char *dir, struct drive_opts *o, const char *prefix, enum vmm_verify verify,
			const struct cli_guest *g, char **command);

int cmd_run(int argc, char **argv)
{
	static const struct option opts[] = {
		{"kernel", required_argument, NULL, 'k'},   {"initrd", required_argument, NULL, OPT_INITRD},
		{"cmdline", required_argument, NULL, OPT_CMDLINE}, {"mem", required_argument, NULL, 'm'},
		{"vcpus", required_argument, NULL, 'c'},    {"capture", required_argument, NULL, OPT_CAPTURE},
		{"capture-on", required_argument, NULL, OPT_CAPTURE_ON}, {"for", required_argument, NULL, OPT_FOR},
		{"report-fd", required_argument, NULL, OPT_REPORT_FD},  {"disk", required_argument, NULL, OPT_DISK},
		{"vsock", required_argument, NULL, OPT_VSOCK}, {"from", required_argument, NULL, OPT_FROM},
		{"hostname", required_argument, NULL, OPT_HOSTNAME}, {"env", required_argument, NULL, OPT_ENV},
		{"agent-timeout", required_argument, NULL, OPT_AGENT_TIMEOUT},
		{"control", required_argument, NULL, OPT_CONTROL}, {"ready-fd", required_argument, NULL, OPT_READY_FD},
		{"parent-fd", required_argument, NULL, OPT_PARENT_FD}, {"disk-dir", required_argument, NULL, OPT_DISK_DIR},
		{"virtio-cmdline", no_argument, NULL, OPT_VIRTIO_CMDLINE}, {"help", no_argument, NULL, 'h'},
		{"jail", no_argument, NULL, OPT_JAIL}, {"jail-uid", required_argument, NULL, OPT_JAIL_UID},
		{"jail-bind", required_argument, NULL, OPT_JAIL_BIND}, {"no-jail", no_argument, NULL, OPT_NO_JAIL},
		{0}};
	struct drive_opts o = {.report_fd = -1, .ready_fd = -1, .client_fd = -1, .launch_ns = cli_now_ns()};
	const char *kernel = NULL, *cmdline = NULL, *initrd = NULL, *from = NULL;
	struct vmm_machine m = {.mem_mib = 128, .vcpus = 1};
	bool shape_given = false;
	struct cli_guest g = {0};
	struct cli_jail_opts jail = {0};
	sl_error_t err = NULL;
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
		int r;
		switch (c) {
		case 'k': kernel = optarg; break;
		case OPT_INITRD: initrd = optarg; break;
		case OPT_CMDLINE: cmdline = optarg; break;
		case OPT_FROM: from = optarg; break;
		case OPT_VIRTIO_CMDLINE:
			m.virtio_cmdline = true;
			shape_given = true;
			break;
		case OPT_DISK:
			if (cli_parse_disk(optarg, &m, &err) < 0)
				return cli_fail(&err);
			shape_given = true;
			break;
		case 'm':
		case 'c':
			if (cli_parse_machine_opt(c, optarg, &m, &err) < 0)
				return cli_fail(&err);
			shape_given = true;
			break;
		case 'h': fputs(run_usage, stdout); return 0;
		case '?': fputs(run_usage, stderr); return EXIT_SPORE_FAILED;
		default:
			r = guest_opt(c, &g, &err);
			if (r == 0)
				r = jail_opt(c, &jail, &err);
			if (r < 0 || (r == 0 && common_opt(c, &o, &err) < 0))
				return cli_fail(&err);
		}
	}
	if (check_capture(&o) || check_jail(&jail, &o))
		return EXIT_SPORE_FAILED;
	char **args = optind < argc ? argv + optind : NULL;
	if (from) {
		if (kernel || initrd || cmdline || shape_given)
			return cli_usage("run --from: the spore fixes the kernel and the machine; drop --kernel, "
					 "--initrd, --cmdline, --mem, --vcpus, --disk and --virtio-cmdline\n%s", run_usage);
		return resume_local(from, &o, NULL, VMM_VERIFY_SEALED, &g, args);
	}
	if (o.disk_dir)
		return cli_usage("run: --disk-dir is for a resumed spore's disks (run --from, resume)");
	if (!kernel)
		return cli_usage("run: --kernel is required\n%s", run_usage);
	if (vmm_kernel_platform(kernel, &m.platform, &err) < 0)
		return cli_fail(&err);
	_cleanup_free_ char *cl = NULL;
	struct cli_vsock vs = {.reaper_fd = -1};
	if (m.platform == VMM_PLATFORM_BARE && g.vsock) {
		/* The test guest with a vsock device runs its agent
		 * (docs/testguest.md): ARGS are a command for it, as for Linux,
		 * and --cmdline alone is the test kernel's command line. */
		if (m.ndisks || m.virtio_cmdline || initrd)
			return cli_usage("run: --disk, --initrd and --virtio-cmdline need a Linux kernel (%s is an ELF "
					 "test kernel)", kernel);
		if (g.hostname)
			return cli_usage("run: --hostname is for a resumed spore (a booted guest keeps its own)");
		if (cli_vsock_setup(g.vsock, &vs, &err) < 0)
			return cli_fail(&err);
		m.vsock_cid = CLI_VSOCK_CID;
		m.vsock_path = vs.path;
		cl = strdup(cmdline ? cmdline : ""); /* not Linux's "quiet" default */
		if (!cl) {
			cli_vsock_cleanup(&vs);
			return cli_usage("out of memory");
		}
	} else if (m.platform == VMM_PLATFORM_BARE) {
		if (m.ndisks || m.virtio_cmdline || guest_opts_given(&g))
			return cli_usage("run: --disk, --virtio-cmdline, --hostname, --env and --agent-timeout need a "
					 "Linux kernel or, for a test kernel, --vsock PATH (its agent) (%s is an ELF "
					 "test kernel)", kernel);
		/* ARGS after "--" extend the test kernel's command line. */
		size_t len = (cmdline ? strlen(cmdline) : 0) + 1;
		for (int i = optind; i < argc; i++)
			len += strlen(argv[i]) + 1;
		cl = malloc(len);
		if (!cl)
			return cli_usage("out of memory");
		strcpy(cl, cmdline ? cmdline : "");
		for (int i = optind; i < argc; i++) {
			if (cl[0])
				strcat(cl, " ");
			strcat(cl, argv[i]);
		}
		args = NULL;
	} else {
		if (g.hostname)
			return cli_usage("run: --hostname is for a resumed spore (a booted guest keeps its own)");
		if (cli_vsock_setup(g.vsock, &vs, &err) < 0)
			return cli_fail(&err);
		m.vsock_cid = CLI_VSOCK_CID;
		m.vsock_path = vs.path;
	}
	struct vmm_console con = {.fd = 1};
	struct vmm_vm *vm = NULL;
	if (o.jail && (cli_vsock_reaper(&vs, &err) < 0 || cli_jail_prepare(&err) < 0)) {
		cli_vsock_cleanup(&vs);
		return cli_fail(&err);
	}
	if (vmm_create(&m, &con, &vm, &err) < 0 ||
	    vmm_boot_kernel(vm, kernel, initrd, cl ? cl : cmdline ? cmdline : "quiet", &err) < 0) {
		vmm_destroy(vm);
		cli_vsock_cleanup(&vs);
		return cli_fail(&err);
	}
	o.own_dir = vs.made_dir ? vs.dir : NULL;
	int rc = cli_drive_guest(vm, &o, &g, m.vsock_cid ? vs.path : NULL, args, false, NULL);
	cli_vsock_cleanup(&vs);
	return rc;
}

/* Hands the restore to a pool worker; our stdout becomes the guest console. */
static int resume_pooled(const char *path, const char *dir, const struct drive_opts *o, const char *prefix)
{
	sl_error_t err = NULL;
	char abs[4096];
	if (!realpath(dir, abs)) {
		sl_error_sys(&err, "resume: %s", dir);
		return cli_fail(&err);
	}
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof(sa.sun_path))
		return cli_usage("resume: pool socket path too long");
	strcpy(sa.sun_path, path);
	_cleanup_close_ int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (s < 0 || connect(s, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		sl_error_sys(&err, "resume: connect to pool %s", path);
		return cli_fail(&err);
	}
	if (pool_send_request(s, abs, o->for_ms, prefix, 1, &err) < 0)
		return cli_fail(&err);
	for (;;) {
		char buf[600];
		ssize_t n = recv(s, buf, sizeof(buf) - 1, 0);
		if (n <= 0)
			return cli_usage("resume: pool worker went away without an exit status");
		buf[n] = 0;
		int status;
		if (!strncmp(buf, "error ", 6))
			return cli_usage("%.*s", (int)strcspn(buf + 6, "\n"), buf + 6);
		if (sscanf(buf, "exit %d", &status) == 1)
			return status;
	}
}

int cmd_resume(int argc, char **argv)
{
	static const struct option opts[] = {
		{"capture", required_argument, NULL, OPT_CAPTURE}, {"capture-on", required_argument, NULL, OPT_CAPTURE_ON},
		{"for", required_argument, NULL, OPT_FOR},         {"prefix", required_argument, NULL, OPT_PREFIX},
		{"report-fd", required_argument, NULL, OPT_REPORT_FD}, {"pool", required_argument, NULL, OPT_POOL},
		{"verify", required_argument, NULL, OPT_VERIFY}, {"vsock", required_argument, NULL, OPT_VSOCK},
		{"hostname", required_argument, NULL, OPT_HOSTNAME}, {"env", required_argument, NULL, OPT_ENV},
		{"agent-timeout", required_argument, NULL, OPT_AGENT_TIMEOUT}, {"control", required_argument, NULL, OPT_CONTROL},
		{"ready-fd", required_argument, NULL, OPT_READY_FD}, {"parent-fd", required_argument, NULL, OPT_PARENT_FD},
		{"disk-dir", required_argument, NULL, OPT_DISK_DIR}, {"help", no_argument, NULL, 'h'},
		{"jail", no_argument, NULL, OPT_JAIL}, {"jail-uid", required_argument, NULL, OPT_JAIL_UID},
		{"jail-bind", required_argument, NULL, OPT_JAIL_BIND}, {"no-jail", no_argument, NULL, OPT_NO_JAIL}, {0}};
	enum vmm_verify verify = VMM_VERIFY_SEALED;
	struct cli_guest g = {0};
	struct drive_opts o = {.report_fd = -1, .ready_fd = -1, .client_fd = -1, .launch_ns = cli_now_ns()};
	struct cli_jail_opts jail = {0};
	const char *prefix = NULL, *pool = NULL;
	sl_error_t err = NULL;
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case OPT_PREFIX: prefix = optarg; break;
		case OPT_POOL: pool = optarg; break;
		case OPT_VERIFY:
			if (cli_parse_verify(optarg, &verify, &err) < 0)
				return cli_fail(&err);
			break;
		case 'h': fputs(resume_usage, stdout); return 0;
		case '?': fputs(resume_usage, stderr); return EXIT_SPORE_FAILED;
		default: {
			int r = guest_opt(c, &g, &err);
			if (r == 0)
				r = jail_opt(c, &jail, &err);
			if (r < 0 || (r == 0 && common_opt(c, &o, &err) < 0))
				return cli_fail(&err);
		}
		}
	}
	/* GNU getopt moves DIR in front of "--": DIR, then the command. */
	bool dashdash = optind > 0 && optind < argc && !strcmp(argv[optind - 1], "--");
	if (optind >= argc || (optind + 1 < argc && !dashdash))
		return cli_usage("resume: exactly one spore directory expected (a command goes after --)\n%s",
				 resume_usage);
	if (check_capture(&o))
		return EXIT_SPORE_FAILED;
	const char *dir = argv[optind];
	if (pool) {
		if (o.capture_dir || o.report_fd >= 0 || verify != VMM_VERIFY_SEALED || o.control_path || o.ready_fd >= 0 ||
		    o.client_fd >= 0 || o.disk_dir || jail.asked || jail.set_uid || jail.nbinds)
			return cli_usage("resume: --pool does not take --capture, --report-fd, --verify, --control, "
					 "--ready-fd, --disk-dir or --jail (the pool's own --verify applies; pools serve test-guest spores, which have no disks)");
		if (optind + 1 < argc || guest_opts_given(&g))
			return cli_usage("resume: --pool is for test-guest spores (no command, --hostname, --env, --vsock)");
		return resume_pooled(pool, dir, &o, prefix);
	}
	if (check_jail(&jail, &o))
		return EXIT_SPORE_FAILED;
	return resume_local(dir, &o, prefix, verify, &g, optind + 1 < argc ? argv + optind + 1 : NULL);
}

static int resume_local(const char *dir, struct drive_opts *o, const char *prefix, enum vmm_verify verify,
			const struct cli_guest *g, char **command)
{
	sl_error_t err = NULL;
	struct cli_verify cv;
	cli_verify_init(&cv, verify);
	cv.opts.disk_dir = o->disk_dir;
	struct vmm_spore *sp = NULL;
	if (vmm_spore_open(dir, &sp, &err) < 0)
		return cli_fail(&err);
	struct vmm_machine m = {0};
	vmm_spore_shape(sp, &m);
	struct cli_vsock vs = {.reaper_fd = -1};
	bool linux_guest = m.platform == VMM_PLATFORM_LINUX;
	/* A test-guest spore captured with a vsock device has the agent
	 * (docs/testguest.md): it is driven like a Linux one. */
	bool agent = linux_guest || m.vsock_cid;
	int rrc = 0;
	if (!agent && (command || guest_opts_given(g))) {
		vmm_spore_close(sp);
		return cli_usage("%s is a test-guest spore without a vsock device, so no agent to talk to: a COMMAND, "
				 "--hostname, --env, --vsock and --agent-timeout need a spore captured from "
				 "`spore run --vsock PATH` (or a Linux spore)", dir);
	}
	if (linux_guest && !m.vsock_cid) {
		vmm_spore_close(sp);
		return cli_usage("%s: this Linux spore has no vsock device, so no agent to talk to", dir);
	}
	if (agent) {
		rrc = cli_vsock_setup(g->vsock, &vs, &err);
		m.vsock_path = vs.path;
	}
	/* The jail's namespace, after the private vsock directory's reaper
	 * (which must stay outside it) and before any thread. */
	if (rrc == 0 && o->jail)
		rrc = cli_vsock_reaper(&vs, &err) < 0 ? -1 : cli_jail_prepare(&err);
	if (rrc == 0 && agent && m.ndisks)
		rrc = vmm_spore_disks(sp, &cv.opts, &m, &err);
	struct vmm_console con = {.fd = 1, .prefix = prefix};
	struct vmm_vm *vm = NULL;
	struct vmm_restore_stats rs;
	if (rrc == 0)
		rrc = vmm_create(&m, &con, &vm, &err);
	if (rrc == 0)
		rrc = vmm_restore(vm, sp, &cv.opts, &rs, &err);
	vmm_spore_close(sp);
	if (rrc < 0) {
		vmm_destroy(vm);
		cli_vsock_cleanup(&vs);
		return cli_fail(&err);
	}
	o->restore_ns = cli_now_ns() - o->launch_ns;
	o->disk_shared = rs.disk_bytes_shared;
	o->disk_copied = rs.disk_bytes_copied;
	cli_log_restored(vm, dir, o, &rs);
	o->own_dir = vs.made_dir ? vs.dir : NULL;
	int rc = cli_drive_guest(vm, o, g, agent ? vs.path : NULL, command, true, prefix);
	cli_vsock_cleanup(&vs);
	return rc;
}
