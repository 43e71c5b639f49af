/* libFuzzer target: the guest agent's frame and message decoders on arbitrary bytes. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "agent_proto.h"

/* Every message the decoder accepts must re-encode to exactly the bytes it
 * came from (the encoding is canonical), and every refusal must carry a
 * bounded explanation of the right kind. The input is decoded as a stream
 * of frames, as the agent and the host client see it. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t off = 0;
	while (off < size) {
		struct agent_msg m;
		size_t used = 0;
		sl_error_t err = NULL;
		int r = agent_frame_decode(data + off, size - off, &used, &m, &err);
		if (r == 0) {
			if (err)
				__builtin_trap();
			break;
		}
		if (r < 0) {
			if (!err || (err->code != SL_E_INVALID && err->code != SL_E_LIMIT && err->code != SL_E_NOMEM) ||
			    strlen(sl_error_msg(err)) > 512)
				__builtin_trap();
			sl_error_free(&err);
			break;
		}
		if (err || used < AGENT_HDR_SIZE || used > size - off)
			__builtin_trap();
		uint8_t *again = NULL;
		size_t n = 0;
		if (agent_msg_encode(&m, &again, &n, &err) < 0 || n != used || memcmp(again, data + off, n) != 0)
			__builtin_trap();
		/* and the re-encoded frame decodes to the same frame again */
		struct agent_msg m2;
		size_t used2 = 0;
		if (agent_frame_decode(again, n, &used2, &m2, &err) != 1 || used2 != n || m2.type != m.type)
			__builtin_trap();
		agent_msg_free(&m2);
		free(again);
		agent_msg_free(&m);
		off += used;
	}
	return 0;
}
