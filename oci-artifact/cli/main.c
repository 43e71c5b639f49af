/* spore-oci: spore push, pull and cache; `spore` hands these commands over. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ocli.h"
#include "sl/log.h"

static const char usage[] =
	"usage: spore push DIR REF [options]    push a spore directory as an OCI image\n"
	"       spore pull REF --out DIR [options]  pull a spore into the node cache and DIR\n"
	"       spore cache ls|verify|gc|fetch ...  the node-local chunk cache\n"
	"Run 'spore <command> --help' for a command's options.\n";

int main(int argc, char **argv)
{
	const char *lvl = getenv("SPORE_LOG");
	sl_log_init("spore", lvl ? sl_log_level_parse(lvl) : SL_LOG_INFO, 2);
	if (argc < 2) {
		fputs(usage, stderr);
		return EXIT_SPORE_FAILED;
	}
	const char *cmd = argv[1];
	if (!strcmp(cmd, "push"))
		return cmd_push(argc - 1, argv + 1);
	if (!strcmp(cmd, "pull"))
		return cmd_pull(argc - 1, argv + 1);
	if (!strcmp(cmd, "cache"))
		return cmd_cache(argc - 1, argv + 1);
	if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
		fputs(usage, stdout);
		return 0;
	}
	fprintf(stderr, "spore: unknown command \"%s\"\n\n%s", cmd, usage);
	return EXIT_SPORE_FAILED;
}
