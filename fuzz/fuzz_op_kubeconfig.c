/* libFuzzer target: the operator's kubeconfig reader (YAML, contexts, clusters, users, base64 data). */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "sop_kubeconfig.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	sl_error_t err = NULL;
	struct sop_kube_config c;
	if (sop_kubeconfig_parse((const char *)data, size, "/etc/kube", NULL, &c, &err) == 0) {
		if (err || !c.server || !c.namespace_ || !c.context)
			__builtin_trap();
		if (strncmp(c.server, "http://", 7) != 0 && strncmp(c.server, "https://", 8) != 0)
			__builtin_trap();
		sop_kube_config_free(&c);
	} else if (!err || strlen(sl_error_msg(err)) > 2048) {
		__builtin_trap();
	}
	sl_error_free(&err);
	return 0;
}
