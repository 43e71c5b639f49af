/* spore run and spore resume: boot a kernel or resume a spore, then drive it. */
#include <errno.h>
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
	"usage: spore run --kernel FILE [--cmdline S] [--mem MIB] [--vcpus N]\n"
	"                 [--capture DIR --capture-on exit|ready|after:DURATION|SIGUSR1]\n"
	"                 [--for DURATION] [-- ARGS...]\n"
	"Boots an x86_64 ELF kernel (the test guest). ARGS are appended to the\n"
	"kernel command line. Exit status: the guest's, 0 after --for or a\n"
	"capture, 125 when spore itself fails.\n";

static const char resume_usage[] =
	"usage: spore resume DIR [--for DURATION] [--prefix S] [--pool SOCKET]\n"
	"                   [--verify sealed|full]\n"
	"                   [--capture DIR --capture-on exit|ready|after:DURATION|SIGUSR1]\n"
	"Resumes the spore in DIR with a new generation id. With --pool, a\n"
	"pre-started VMM of a `spore pool` does the restore. --verify full hashes\n"
	"every chunk even when a seal shows it unchanged since it was last verified.\n";

enum { OPT_CAPTURE = 1000, OPT_CAPTURE_ON, OPT_FOR, OPT_PREFIX, OPT_REPORT_FD, OPT_CMDLINE, OPT_INITRD, OPT_POOL, OPT_VERIFY };

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
	case OPT_REPORT_FD: {
		uint64_t fd;
		if (cli_parse_u64(optarg, "--report-fd", 3, 1024, &fd, err) < 0)
			return -1;
		o->report_fd = (int)fd;
		return 0;
	}
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

int cmd_run(int argc, char **argv)
{
	static const struct option opts[] = {
		{"kernel", required_argument, NULL, 'k'},   {"initrd", required_argument, NULL, OPT_INITRD},
		{"cmdline", required_argument, NULL, OPT_CMDLINE}, {"mem", required_argument, NULL, 'm'},
		{"vcpus", required_argument, NULL, 'c'},    {"capture", required_argument, NULL, OPT_CAPTURE},
		{"capture-on", required_argument, NULL, OPT_CAPTURE_ON}, {"for", required_argument, NULL, OPT_FOR},
		{"report-fd", required_argument, NULL, OPT_REPORT_FD},  {"help", no_argument, NULL, 'h'},
		{0}};
	struct drive_opts o = {.report_fd = -1, .client_fd = -1, .launch_ns = cli_now_ns()};
	const char *kernel = NULL, *cmdline = "", *initrd = NULL;
	struct vmm_machine m = {.mem_mib = 128, .vcpus = 1};
	sl_error_t err = NULL;
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
		switch (c) {
		case 'k': kernel = optarg; break;
		case OPT_INITRD: initrd = optarg; break;
		case OPT_CMDLINE: cmdline = optarg; break;
		case 'm':
		case 'c':
			if (cli_parse_machine_opt(c, optarg, &m, &err) < 0)
				return cli_fail(&err);
			break;
		case 'h': fputs(run_usage, stdout); return 0;
		case '?': fputs(run_usage, stderr); return EXIT_SPORE_FAILED;
		default:
			if (common_opt(c, &o, &err) < 0)
				return cli_fail(&err);
		}
	}
	if (!kernel)
		return cli_usage("run: --kernel is required\n%s", run_usage);
	if (check_capture(&o))
		return EXIT_SPORE_FAILED;
	/* ARGS after "--" extend the kernel command line. */
	size_t len = strlen(cmdline) + 1;
	for (int i = optind; i < argc; i++)
		len += strlen(argv[i]) + 1;
	_cleanup_free_ char *cl = malloc(len);
	if (!cl)
		return cli_usage("out of memory");
	strcpy(cl, cmdline);
	for (int i = optind; i < argc; i++) {
		if (cl[0])
			strcat(cl, " ");
		strcat(cl, argv[i]);
	}
	struct vmm_console con = {.fd = 1};
	struct vmm_vm *vm = NULL;
	if (vmm_create(&m, &con, &vm, &err) < 0 || vmm_boot_kernel(vm, kernel, initrd, cl, &err) < 0) {
		vmm_destroy(vm);
		return cli_fail(&err);
	}
	int rc = cli_drive(vm, &o);
	vmm_destroy(vm);
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
		{"verify", required_argument, NULL, OPT_VERIFY}, {"help", no_argument, NULL, 'h'}, {0}};
	enum vmm_verify verify = VMM_VERIFY_SEALED;
	struct drive_opts o = {.report_fd = -1, .client_fd = -1, .launch_ns = cli_now_ns()};
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
		default:
			if (common_opt(c, &o, &err) < 0)
				return cli_fail(&err);
		}
	}
	if (optind != argc - 1)
		return cli_usage("resume: exactly one spore directory expected\n%s", resume_usage);
	if (check_capture(&o))
		return EXIT_SPORE_FAILED;
	const char *dir = argv[optind];
	if (pool) {
		if (o.capture_dir || o.report_fd >= 0 || verify != VMM_VERIFY_SEALED)
			return cli_usage("resume: --pool does not take --capture, --report-fd or --verify "
					 "(the pool's own --verify applies)");
		return resume_pooled(pool, dir, &o, prefix);
	}
	struct cli_verify cv;
	cli_verify_init(&cv, verify);
	struct vmm_spore *sp = NULL;
	if (vmm_spore_open(dir, &sp, &err) < 0)
		return cli_fail(&err);
	struct vmm_machine m;
	vmm_spore_shape(sp, &m);
	struct vmm_console con = {.fd = 1, .prefix = prefix};
	struct vmm_vm *vm = NULL;
	struct vmm_restore_stats rs;
	int rrc = vmm_create(&m, &con, &vm, &err);
	if (rrc == 0)
		rrc = vmm_restore(vm, sp, &cv.opts, &rs, &err);
	vmm_spore_close(sp);
	if (rrc < 0) {
		vmm_destroy(vm);
		return cli_fail(&err);
	}
	o.restore_ns = cli_now_ns() - o.launch_ns;
	cli_log_restored(vm, dir, &o, &rs);
	int rc = cli_drive(vm, &o);
	vmm_destroy(vm);
	return rc;
}
