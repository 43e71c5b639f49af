/* libFuzzer target: the control socket's request parser on arbitrary messages. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "control_proto.h"

/* What the parser accepts must re-encode to exactly the same bytes, and
 * every refusal must carry a bounded explanation. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > CONTROL_MSG_MAX + 16)
		return 0;
	struct control_request req;
	memset(&req, 0xa5, sizeof(req));
	sl_error_t err = NULL;
	if (control_parse_request((const char *)data, size, &req, &err) == 0) {
		if (err)
			__builtin_trap();
		char again[CONTROL_MSG_MAX + 1];
		int n = control_encode_request(again, sizeof(again), &req);
		if (n < 0 || (size_t)n != size || memcmp(again, data, size) != 0)
			__builtin_trap();
	} else if (!err || err->code != SL_E_INVALID || strlen(sl_error_msg(err)) > 512) {
		__builtin_trap();
	}
	sl_error_free(&err);
	return 0;
}
