/* libFuzzer target: the request line of the operator's /healthz, /readyz, /metrics endpoint (anyone on the pod network). */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "sop_httpd.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char method[16], path[256];
	if (sop_http_request_line((const char *)data, size, method, sizeof(method), path, sizeof(path)) == 0) {
		/* Accepted: a method and a printable absolute path without its query, both inside the line. */
		if (!method[0] || strlen(method) >= sizeof(method) || path[0] != '/' || strlen(path) >= sizeof(path) ||
		    strchr(path, '?'))
			__builtin_trap();
		for (const char *p = path; *p; p++)
			if ((unsigned char)*p < 0x21 || (unsigned char)*p > 0x7e)
				__builtin_trap();
		if (!memchr(data, '\n', size))
			__builtin_trap();
	}
	return 0;
}
