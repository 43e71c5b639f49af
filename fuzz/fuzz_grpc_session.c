/* libFuzzer target: the gRPC server's request path (HTTP/2 frames, HPACK, gRPC framing) on arbitrary bytes. */
#include <stddef.h>
#include <stdint.h>

#include "grpc_int.h"

/* What a client sends on a fresh connection: the server side must neither
 * crash nor leak, whatever the frames say. Seeds are real grpcio calls. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > (1u << 20))
		return 0;
	grpc_fuzz_session(data, size);
	return 0;
}
