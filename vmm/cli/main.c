/* spore: the command-line entry point; dispatches to subcommands. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "sl/log.h"

static const char usage[] =
	"usage: spore <command> [options]\n"
	"\n"
	"commands:\n"
	"  run      boot a kernel, optionally capture it as a spore\n"
	"  resume   resume a spore\n"
	"  fork     make N child spores that share the parent's chunks\n"
	"  fanout   resume every child of a fork at once\n"
	"  inspect  describe a spore (--json for machine output)\n"
	"  pool     keep pre-started VMMs that each take one restore request\n"
	"  control  pause, resume, capture, stop or ask a running VM (--control)\n"
	"  push     push a spore to an OCI registry\n"
	"  pull     pull a spore from an OCI registry into the node cache\n"
	"  cache    list, verify, garbage-collect the node-local chunk cache\n"
	"  version  print the version\n"
	"\n"
	"Run 'spore <command> --help' for a command's options.\n";

/* push, pull and cache live in spore-oci, installed next to spore: the
 * registry client's libcurl and TLS stack would otherwise load in every
 * restore (docs/performance.md). $SPORE_OCI overrides the location. */
static int exec_oci(char **argv)
{
	char path[PATH_MAX];
	const char *env = getenv("SPORE_OCI");
	if (env && env[0]) {
		snprintf(path, sizeof(path), "%s", env);
	} else {
		ssize_t n = readlink("/proc/self/exe", path, sizeof(path) - 16);
		if (n <= 0) {
			perror("spore: readlink /proc/self/exe");
			return EXIT_SPORE_FAILED;
		}
		path[n] = '\0';
		char *slash = strrchr(path, '/');
		snprintf(slash ? slash + 1 : path, sizeof(path) - (size_t)(slash ? slash + 1 - path : 0), "spore-oci");
	}
	argv[0] = path;
	execv(path, argv);
	fprintf(stderr, "spore: cannot run %s: %s\n", path, strerror(errno));
	return EXIT_SPORE_FAILED;
}

/* The VMM library's security notices (vsock clients refused for their uid). */
static void log_notice(const char *msg, const char *path)
{
	char q[300];
	sl_warn(msg, "socket=%s", sl_log_quote(path, q, sizeof(q)));
}

int main(int argc, char **argv)
{
	const char *lvl = getenv("SPORE_LOG");
	sl_log_init("spore", lvl ? sl_log_level_parse(lvl) : SL_LOG_INFO, 2);
	vmm_set_notice(log_notice);
	if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
		fputs(usage, argc < 2 ? stderr : stdout);
		return argc < 2 ? EXIT_SPORE_FAILED : 0;
	}
	const char *cmd = argv[1];
	argc--;
	argv++;
	if (!strcmp(cmd, "run"))
		return cmd_run(argc, argv);
	if (!strcmp(cmd, "resume"))
		return cmd_resume(argc, argv);
	if (!strcmp(cmd, "fork"))
		return cmd_fork(argc, argv);
	if (!strcmp(cmd, "fanout"))
		return cmd_fanout(argc, argv);
	if (!strcmp(cmd, "inspect"))
		return cmd_inspect(argc, argv);
	if (!strcmp(cmd, "pool"))
		return cmd_pool(argc, argv);
	if (!strcmp(cmd, "control"))
		return cmd_control(argc, argv);
	if (!strcmp(cmd, "push") || !strcmp(cmd, "pull") || !strcmp(cmd, "cache"))
		return exec_oci(argv - 1);
	if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
		printf("spore %s (spore format v1, x86_64 KVM)\n", SPORELET_VERSION);
		return 0;
	}
	fprintf(stderr, "spore: unknown command \"%s\"\n\n%s", cmd, usage);
	return EXIT_SPORE_FAILED;
}
