/* ttrpc frame codec: headers, the Request/Response envelopes, frame splitting and the server's per-frame rules. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "google/rpc/status.pb-c.h"
#include "ttrpc/ttrpc.pb-c.h"
#include "ttrpc_int.h"

static const char *const code_names[] = {
	"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
	"ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
	"ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
	"UNAUTHENTICATED",
};

const char *ttrpc_code_name(int code)
{
	if (code < 0 || (size_t)code >= sizeof(code_names) / sizeof(code_names[0]))
		return "UNKNOWN_CODE";
	return code_names[code];
}

static void put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static uint32_t get_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

void ttrpc_header_encode(const struct ttrpc_frame_header *h, uint8_t out[TTRPC_HEADER_LEN])
{
	put_be32(out, h->length);
	put_be32(out + 4, h->stream_id);
	out[8] = h->type;
	out[9] = h->flags;
}

void ttrpc_header_decode(const uint8_t in[TTRPC_HEADER_LEN], struct ttrpc_frame_header *h)
{
	h->length = get_be32(in);
	h->stream_id = get_be32(in + 4);
	h->type = in[8];
	h->flags = in[9];
}

int ttrpc_frame_encode(uint32_t stream_id, uint8_t type, uint8_t flags, const uint8_t *data,
		       size_t len, uint8_t **out, size_t *out_len, sl_error_t *err)
{
	if (len > TTRPC_MESSAGE_LENGTH_MAX)
		return sl_error_set(err, SL_E_LIMIT,
				    "ttrpc frame: %zu bytes exceed the %u-byte message limit", len,
				    TTRPC_MESSAGE_LENGTH_MAX);
	uint8_t *buf = malloc(TTRPC_HEADER_LEN + len);
	if (!buf)
		return sl_error_set(err, SL_E_NOMEM, "ttrpc frame: out of memory");
	struct ttrpc_frame_header h = {
		.length = (uint32_t)len, .stream_id = stream_id, .type = type, .flags = flags
	};
	ttrpc_header_encode(&h, buf);
	if (len)
		memcpy(buf + TTRPC_HEADER_LEN, data, len);
	*out = buf;
	*out_len = TTRPC_HEADER_LEN + len;
	return 0;
}

int ttrpc_pack(const ProtobufCMessage *msg, uint8_t **out, size_t *out_len, sl_error_t *err)
{
	size_t n = protobuf_c_message_get_packed_size(msg);
	*out = NULL;
	*out_len = 0;
	if (n == 0)
		return 0;
	uint8_t *buf = malloc(n);
	if (!buf)
		return sl_error_set(err, SL_E_NOMEM, "pack %s: out of memory", msg->descriptor->name);
	size_t w = protobuf_c_message_pack(msg, buf);
	if (w != n) {
		free(buf);
		return sl_error_set(err, SL_E_INVALID, "pack %s: %zu of %zu bytes written",
				    msg->descriptor->name, w, n);
	}
	*out = buf;
	*out_len = n;
	return 0;
}

int ttrpc_request_encode(const struct ttrpc_request *req, uint8_t **out, size_t *out_len,
			 sl_error_t *err)
{
	Ttrpc__Request m = TTRPC__REQUEST__INIT;
	/* protobuf-c's structs are not const-correct; nothing is written. */
	m.service = (char *)(req->service ? req->service : "");
	m.method = (char *)(req->method ? req->method : "");
	m.payload.data = (uint8_t *)req->payload;
	m.payload.len = req->payload ? req->payload_len : 0;
	m.timeout_nano = req->timeout_nano;

	Ttrpc__KeyValue *kvs = NULL, **ptrs = NULL;
	if (req->n_metadata) {
		kvs = calloc(req->n_metadata, sizeof(*kvs));
		ptrs = calloc(req->n_metadata, sizeof(*ptrs));
		if (!kvs || !ptrs) {
			free(kvs);
			free(ptrs);
			return sl_error_set(err, SL_E_NOMEM, "ttrpc request: out of memory");
		}
		for (size_t i = 0; i < req->n_metadata; i++) {
			Ttrpc__KeyValue kv = TTRPC__KEY_VALUE__INIT;
			kv.key = (char *)req->metadata[i].key;
			kv.value = (char *)req->metadata[i].value;
			kvs[i] = kv;
			ptrs[i] = &kvs[i];
		}
		m.n_metadata = req->n_metadata;
		m.metadata = ptrs;
	}
	int r = ttrpc_pack(&m.base, out, out_len, err);
	free(kvs);
	free(ptrs);
	return r;
}

/* Copies a string into the block at *p and advances it. */
static const char *put_str(char **p, const char *s)
{
	size_t n = strlen(s) + 1;
	memcpy(*p, s, n);
	const char *r = *p;
	*p += n;
	return r;
}

int ttrpc_request_decode(const uint8_t *buf, size_t len, struct ttrpc_request **out,
			 sl_error_t *err)
{
	Ttrpc__Request *m = ttrpc__request__unpack(NULL, len, buf);
	if (!m)
		return sl_error_set(err, SL_E_INVALID,
				    "unmarshal request error: %zu bytes are not a ttrpc.Request", len);

	/* One block: the struct, the metadata array, then strings and payload,
	 * so the caller frees it with one free(). */
	size_t size = sizeof(struct ttrpc_request) + m->n_metadata * sizeof(struct ttrpc_kv);
	size += strlen(m->service) + 1 + strlen(m->method) + 1 + m->payload.len;
	for (size_t i = 0; i < m->n_metadata; i++)
		size += strlen(m->metadata[i]->key) + 1 + strlen(m->metadata[i]->value) + 1;
	struct ttrpc_request *r = malloc(size);
	if (!r) {
		ttrpc__request__free_unpacked(m, NULL);
		return sl_error_set(err, SL_E_NOMEM, "ttrpc request: out of memory");
	}
	struct ttrpc_kv *kv = (struct ttrpc_kv *)(r + 1);
	char *p = (char *)(kv + m->n_metadata);
	r->service = put_str(&p, m->service);
	r->method = put_str(&p, m->method);
	for (size_t i = 0; i < m->n_metadata; i++) {
		kv[i].key = put_str(&p, m->metadata[i]->key);
		kv[i].value = put_str(&p, m->metadata[i]->value);
	}
	r->metadata = kv;
	r->n_metadata = m->n_metadata;
	r->payload = (const uint8_t *)p;
	r->payload_len = m->payload.len;
	if (m->payload.len)
		memcpy(p, m->payload.data, m->payload.len);
	r->timeout_nano = m->timeout_nano;
	ttrpc__request__free_unpacked(m, NULL);
	*out = r;
	return 0;
}

int ttrpc_response_encode(const struct ttrpc_response *resp, uint8_t **out, size_t *out_len,
			  sl_error_t *err)
{
	Google__Rpc__Status st = GOOGLE__RPC__STATUS__INIT;
	Ttrpc__Response m = TTRPC__RESPONSE__INIT;
	st.code = resp->code;
	if (resp->code != TTRPC_OK && resp->message)
		st.message = (char *)resp->message;
	/* Always present, also for OK: the Go server sends an empty Status. */
	m.status = &st;
	m.payload.data = (uint8_t *)resp->payload;
	m.payload.len = resp->payload ? resp->payload_len : 0;
	return ttrpc_pack(&m.base, out, out_len, err);
}

int ttrpc_response_decode(const uint8_t *buf, size_t len, struct ttrpc_response **out,
			  sl_error_t *err)
{
	Ttrpc__Response *m = ttrpc__response__unpack(NULL, len, buf);
	if (!m)
		return sl_error_set(err, SL_E_INVALID, "ttrpc response: %zu bytes are not a ttrpc.Response",
				    len);
	/* A missing status is OK, as the Go client reads it. */
	const char *msg = m->status && m->status->message ? m->status->message : "";
	size_t mlen = strlen(msg) + 1;
	struct ttrpc_response *r = malloc(sizeof(*r) + mlen + m->payload.len);
	if (!r) {
		ttrpc__response__free_unpacked(m, NULL);
		return sl_error_set(err, SL_E_NOMEM, "ttrpc response: out of memory");
	}
	char *p = (char *)(r + 1);
	r->code = m->status ? m->status->code : TTRPC_OK;
	r->message = put_str(&p, msg);
	r->payload = (const uint8_t *)p;
	r->payload_len = m->payload.len;
	if (m->payload.len)
		memcpy(p, m->payload.data, m->payload.len);
	ttrpc__response__free_unpacked(m, NULL);
	*out = r;
	return 0;
}

const char *ttrpc_metadata_get(const struct ttrpc_kv *md, size_t n, const char *key)
{
	/* Exact match: senders lower-case keys, and the Go server does not fold
	 * received ones either. The first value wins, as in containerd. */
	for (size_t i = 0; i < n; i++)
		if (md[i].key && strcmp(md[i].key, key) == 0)
			return md[i].value;
	return NULL;
}

const char *ttrpc_request_namespace(const struct ttrpc_request *req)
{
	return ttrpc_metadata_get(req->metadata, req->n_metadata, TTRPC_NAMESPACE_KEY);
}

/* ---- frame reader ---------------------------------------------------------- */

void ttrpc_reader_init(struct ttrpc_reader *r)
{
	memset(r, 0, sizeof(*r));
}

void ttrpc_reader_release(struct ttrpc_reader *r)
{
	free(r->body);
	ttrpc_reader_init(r);
}

bool ttrpc_reader_idle(const struct ttrpc_reader *r)
{
	return r->hdr_have == 0 && !r->in_body;
}

/* Bodies grow in steps of at most this much beyond what has arrived. */
#define READER_GROW_MIN (64u << 10)

int ttrpc_reader_feed(struct ttrpc_reader *r, const uint8_t *buf, size_t len, size_t *used,
		      struct ttrpc_frame *frame, sl_error_t *err)
{
	size_t off = 0;
	*used = 0;
	while (off < len) {
		if (!r->in_body) {
			size_t n = TTRPC_HEADER_LEN - r->hdr_have;
			if (n > len - off)
				n = len - off;
			memcpy(r->hdr + r->hdr_have, buf + off, n);
			r->hdr_have += n;
			off += n;
			if (r->hdr_have < TTRPC_HEADER_LEN)
				break;
			ttrpc_header_decode(r->hdr, &r->h);
			r->hdr_have = 0;
			r->in_body = true;
			r->body_have = 0;
		}
		bool oversized = r->h.length > TTRPC_MESSAGE_LENGTH_MAX;
		size_t want = r->h.length - r->body_have;
		size_t n = want < len - off ? want : len - off;
		if (!oversized && n) {
			if (r->body_have + n > r->body_cap) {
				size_t cap = r->body_have + n;
				if (cap < r->body_cap * 2)
					cap = r->body_cap * 2;
				if (cap < READER_GROW_MIN)
					cap = READER_GROW_MIN;
				if (cap > r->h.length)
					cap = r->h.length;
				uint8_t *nb = realloc(r->body, cap);
				if (!nb) {
					*used = off;
					return sl_error_set(err, SL_E_NOMEM, "ttrpc frame: out of memory");
				}
				r->body = nb;
				r->body_cap = cap;
			}
			memcpy(r->body + r->body_have, buf + off, n);
		}
		r->body_have += n;
		off += n;
		if (r->body_have < r->h.length)
			break;
		/* Frame complete. */
		frame->h = r->h;
		frame->data = oversized ? NULL : r->body;
		if (oversized)
			free(r->body);
		r->body = NULL;
		r->body_cap = 0;
		r->body_have = 0;
		r->in_body = false;
		*used = off;
		return oversized ? TTRPC_READ_OVERSIZED : TTRPC_READ_FRAME;
	}
	*used = off;
	return TTRPC_READ_NONE;
}

/* ---- the server's rules for one frame --------------------------------------- */

static void reply(struct ttrpc_verdict *v, uint32_t stream, int code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void reply(struct ttrpc_verdict *v, uint32_t stream, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(v->msg, sizeof(v->msg), fmt, ap);
	va_end(ap);
	v->action = TTRPC_ACT_REPLY;
	v->stream_id = stream;
	v->code = code;
}

int ttrpc_frame_verdict(uint32_t *last_stream, int event, const struct ttrpc_frame *f,
			struct ttrpc_verdict *v, sl_error_t *err)
{
	memset(v, 0, sizeof(*v));
	v->stream_id = f->h.stream_id;
	if (event == TTRPC_READ_OVERSIZED) {
		/* The Go server answers on the frame's stream whatever its type. */
		reply(v, f->h.stream_id, TTRPC_RESOURCE_EXHAUSTED,
		      "message length %" PRIu32 " exceed maximum message size of %u", f->h.length,
		      TTRPC_MESSAGE_LENGTH_MAX);
		return 0;
	}
	/* Data frames belong to streams, which no unary service has; Response
	 * and unknown types are ignored for forward compatibility. */
	if (f->h.type != TTRPC_TYPE_REQUEST)
		return 0;
	if (f->h.stream_id % 2 == 0) {
		reply(v, f->h.stream_id, TTRPC_INVALID_ARGUMENT,
		      "StreamID must be odd for client initiated streams");
		return 0;
	}
	if (f->h.stream_id <= *last_stream) {
		reply(v, f->h.stream_id, TTRPC_INVALID_ARGUMENT,
		      "StreamID cannot be re-used and must increment");
		return 0;
	}
	*last_stream = f->h.stream_id;
	sl_error_t derr = NULL;
	if (ttrpc_request_decode(f->data, f->h.length, &v->req, &derr) < 0) {
		if (derr->code == SL_E_NOMEM) {
			*err = derr;
			return -1;
		}
		/* As the Go server: the stream gets INVALID_ARGUMENT, the
		 * connection stays (framing is intact, only the envelope is bad). */
		reply(v, f->h.stream_id, TTRPC_INVALID_ARGUMENT, "%s", sl_error_msg(derr));
		sl_error_free(&derr);
		return 0;
	}
	v->action = TTRPC_ACT_DISPATCH;
	return 0;
}
