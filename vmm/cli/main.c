/* spore: the command-line entry point; dispatches to subcommands. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
	"  version  print the version\n"
	"\n"
	"Run 'spore <command> --help' for a command's options.\n";

int main(int argc, char **argv)
{
	const char *lvl = getenv("SPORE_LOG");
	sl_log_init("spore", lvl ? sl_log_level_parse(lvl) : SL_LOG_INFO, 2);
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
	if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
		printf("spore %s (spore format v1, x86_64 KVM)\n", SPORELET_VERSION);
		return 0;
	}
	fprintf(stderr, "spore: unknown command \"%s\"\n\n%s", cmd, usage);
	return EXIT_SPORE_FAILED;
}
