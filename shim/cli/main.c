/* containerd-shim-spore-v2: the thin command-line entry of the shim library. */
#include <stdio.h>
#include <string.h>

#include "shim.h"
#include "sl/log.h"

int main(int argc, char **argv)
{
	struct shim_args a;
	int rc = shim_parse_args(argc, argv, &a);
	if (rc)
		return rc;
	if (a.version) {
		printf("containerd-shim-spore-v2 %s (runtime io.containerd.spore.v2)\n", SPORELET_VERSION);
		return 0;
	}
	/* stdout belongs to the protocol (the address, a DeleteResponse):
	 * logs of start and delete go to stderr, which containerd keeps. */
	sl_log_init("containerd-shim-spore-v2", a.debug ? SL_LOG_DEBUG : SL_LOG_WARN, 2);
	if (!strcmp(a.action, "start"))
		return shim_cmd_start(&a);
	return shim_cmd_delete(&a);
}
