/* gRPC message framing (length-prefixed messages in DATA frames): strict checks of a request body. */
#include "grpc_int.h"
#include "snap_grpc.h"

grpc_frame_verdict grpc_frame_check(const uint8_t *body, size_t len)
{
	if (len < 5)
		return GRPC_FRAME_SHORT;
	if (body[0] == 1)
		return GRPC_FRAME_COMPRESSED;
	if (body[0] != 0)
		return GRPC_FRAME_BAD_FLAG;
	uint32_t n = (uint32_t)body[1] << 24 | (uint32_t)body[2] << 16 | (uint32_t)body[3] << 8 | body[4];
	if (n > SNAP_GRPC_MAX_MESSAGE)
		return GRPC_FRAME_TOO_LARGE;
	if (len - 5 < n)
		return GRPC_FRAME_SHORT;
	if (len - 5 > n)
		return GRPC_FRAME_TRAILING;
	return GRPC_FRAME_OK;
}

const char *grpc_frame_verdict_text(grpc_frame_verdict v)
{
	switch (v) {
	case GRPC_FRAME_OK: return "ok";
	case GRPC_FRAME_SHORT: return "request message truncated";
	case GRPC_FRAME_COMPRESSED: return "compressed request message: no compression is supported";
	case GRPC_FRAME_BAD_FLAG: return "request message with an unknown flag byte";
	case GRPC_FRAME_TRAILING: return "more than one request message for a unary or server-streaming call";
	case GRPC_FRAME_TOO_LARGE: return "request message larger than 16 MiB";
	}
	return "?";
}
