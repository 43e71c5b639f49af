/* spore pool: pre-started VMMs that each take one restore request. */
#include <stdio.h>

#include "cli.h"

int cmd_pool(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	return cli_usage("pool: not built yet");
}
