/* libFuzzer target: ttrpc frame splitting, the server's per-frame rules and envelope decoding on arbitrary bytes. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ttrpc_int.h"

/* A decoded request must survive encode -> decode unchanged. */
static void check_request_roundtrip(const struct ttrpc_request *r)
{
	uint8_t *buf;
	size_t len;
	sl_error_t err = NULL;
	if (ttrpc_request_encode(r, &buf, &len, &err) < 0)
		__builtin_trap();
	struct ttrpc_request *d;
	if (ttrpc_request_decode(buf, len, &d, &err) < 0)
		__builtin_trap();
	if (strcmp(d->service, r->service) || strcmp(d->method, r->method) ||
	    d->payload_len != r->payload_len || d->timeout_nano != r->timeout_nano ||
	    d->n_metadata != r->n_metadata ||
	    (r->payload_len && memcmp(d->payload, r->payload, r->payload_len)))
		__builtin_trap();
	for (size_t i = 0; i < r->n_metadata; i++)
		if (strcmp(d->metadata[i].key, r->metadata[i].key) ||
		    strcmp(d->metadata[i].value, r->metadata[i].value))
			__builtin_trap();
	(void)ttrpc_request_namespace(d);
	free(d);
	free(buf);
}

/* The same for a Response, as the client decodes it. */
static void check_response(const uint8_t *data, size_t len)
{
	struct ttrpc_response *r;
	sl_error_t err = NULL;
	if (ttrpc_response_decode(data, len, &r, &err) < 0) {
		if (!err || err->code != SL_E_INVALID)
			__builtin_trap();
		sl_error_free(&err);
		return;
	}
	uint8_t *buf;
	size_t blen;
	if (ttrpc_response_encode(r, &buf, &blen, &err) < 0)
		__builtin_trap();
	struct ttrpc_response *d;
	if (ttrpc_response_decode(buf, blen, &d, &err) < 0)
		__builtin_trap();
	/* An OK status drops its message on encode, as the Go server does. */
	if (d->code != r->code || d->payload_len != r->payload_len ||
	    (r->payload_len && memcmp(d->payload, r->payload, r->payload_len)) ||
	    (r->code != TTRPC_OK && strcmp(d->message, r->message)))
		__builtin_trap();
	free(d);
	free(buf);
	free(r);
}

/* The input is a byte stream as a server connection reads it; its first
 * byte picks the read size, so frames also arrive split at odd places. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	size_t step = (size_t)data[0] + 1;
	data++;
	size--;
	struct ttrpc_reader rd;
	ttrpc_reader_init(&rd);
	uint32_t last = 0;
	for (size_t off = 0; off < size;) {
		size_t chunk = size - off < step ? size - off : step;
		size_t used;
		struct ttrpc_frame f = { 0 };
		sl_error_t err = NULL;
		int ev = ttrpc_reader_feed(&rd, data + off, chunk, &used, &f, &err);
		if (ev < 0 || used > chunk || (ev == TTRPC_READ_NONE && used != chunk))
			__builtin_trap();
		off += used;
		if (ev == TTRPC_READ_NONE)
			continue;
		if (ev == TTRPC_READ_FRAME && f.h.type == TTRPC_TYPE_RESPONSE)
			check_response(f.data, f.h.length);
		uint32_t before = last;
		struct ttrpc_verdict v;
		if (ttrpc_frame_verdict(&last, ev, &f, &v, &err) < 0)
			__builtin_trap();
		switch (v.action) {
		case TTRPC_ACT_DISPATCH:
			if (v.stream_id % 2 == 0 || v.stream_id <= before || last != v.stream_id)
				__builtin_trap();
			check_request_roundtrip(v.req);
			free(v.req);
			break;
		case TTRPC_ACT_REPLY:
			if (v.code == TTRPC_OK || strnlen(v.msg, sizeof(v.msg)) == sizeof(v.msg))
				__builtin_trap();
			break;
		case TTRPC_ACT_IGNORE:
			if (ev != TTRPC_READ_FRAME || f.h.type == TTRPC_TYPE_REQUEST)
				__builtin_trap();
			break;
		}
		free(f.data);
	}
	ttrpc_reader_release(&rd);
	return 0;
}
