/* libFuzzer target: the warm pool's request parser (restore, resume-agent) on arbitrary messages. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "pool_proto.h"

/* What the parser accepts must re-encode to exactly the same bytes, and
 * every refusal must carry a bounded explanation. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > POOL_MSG_MAX)
		return 0;
	struct pool_request req;
	memset(&req, 0xa5, sizeof(req));
	sl_error_t err = NULL;
	if (pool_parse_request((const char *)data, size, &req, &err) == 0) {
		if (err || strnlen(req.prefix, sizeof(req.prefix)) == sizeof(req.prefix) ||
		    strnlen(req.dir, sizeof(req.dir)) == sizeof(req.dir) || !req.dir[0])
			__builtin_trap();
		if (req.verb == POOL_RESUME_AGENT &&
		    (strnlen(req.hostname, sizeof(req.hostname)) == sizeof(req.hostname) || req.nenv > POOL_ENV_MAX ||
		     req.env[req.nenv] != NULL))
			__builtin_trap();
		for (unsigned i = 0; req.verb == POOL_RESUME_AGENT && i < req.nenv; i++)
			if (!strchr(req.env[i], '=') || req.env[i][0] == '=')
				__builtin_trap();
		char again[POOL_MSG_MAX];
		int n = req.verb == POOL_RESUME_AGENT
				? pool_encode_agent_request(again, sizeof(again), req.dir, req.for_ms, req.prefix,
							    req.hostname, req.env)
				: pool_encode_request(again, sizeof(again), req.dir, req.for_ms, req.prefix);
		if (n < 0 || (size_t)n != size || memcmp(again, data, size) != 0)
			__builtin_trap();
	} else if (!err || err->code != SL_E_INVALID || strlen(sl_error_msg(err)) > 512) {
		__builtin_trap();
	}
	sl_error_free(&err);
	return 0;
}
