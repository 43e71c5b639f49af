/* Unit tests of the ttrpc codec: headers, envelopes (byte-exact), frame splitting, per-frame rules, addresses. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "containerd/events/task.pb-c.h"
#include "containerd/task/v2/shim.pb-c.h"
#include "ttrpc_int.h"

/* docs reference 1.2: Connect{id:"abc"} in namespace k8s.io on stream 1. */
static const uint8_t connect_frame[] = {
	0x00, 0x00, 0x00, 0x4f, 0x00, 0x00, 0x00, 0x01, 0x01, 0x00,
	0x0a, 0x17, 'c', 'o', 'n', 't', 'a', 'i', 'n', 'e', 'r', 'd', '.', 't', 'a', 's', 'k', '.',
	'v', '2', '.', 'T', 'a', 's', 'k',
	0x12, 0x07, 'C', 'o', 'n', 'n', 'e', 'c', 't',
	0x1a, 0x05, 0x0a, 0x03, 'a', 'b', 'c',
	0x2a, 0x24, 0x0a, 0x1a, 'c', 'o', 'n', 't', 'a', 'i', 'n', 'e', 'r', 'd', '-', 'n', 'a', 'm',
	'e', 's', 'p', 'a', 'c', 'e', '-', 't', 't', 'r', 'p', 'c',
	0x12, 0x06, 'k', '8', 's', '.', 'i', 'o',
};
static const uint8_t connect_reply[] = {
	0x00, 0x00, 0x00, 0x0a, 0x00, 0x00, 0x00, 0x01, 0x02, 0x00,
	0x0a, 0x00, 0x12, 0x06, 0x08, 0xd2, 0x09, 0x10, 0xae, 0x2c,
};
static const uint8_t not_found_body[] = {
	0x0a, 0x1a, 0x08, 0x05, 0x12, 0x16, 'c', 'o', 'n', 't', 'a', 'i', 'n', 'e', 'r', ' ', 'x',
	':', ' ', 'n', 'o', 't', ' ', 'f', 'o', 'u', 'n', 'd',
};

static void test_header_roundtrip(void **state)
{
	(void)state;
	struct ttrpc_frame_header h = { 0x004f0102, 0x80000001, 0x03, 0x05 }, d;
	uint8_t b[TTRPC_HEADER_LEN];
	ttrpc_header_encode(&h, b);
	const uint8_t want[] = { 0x00, 0x4f, 0x01, 0x02, 0x80, 0x00, 0x00, 0x01, 0x03, 0x05 };
	assert_memory_equal(b, want, sizeof(want));
	ttrpc_header_decode(b, &d);
	assert_int_equal(d.length, h.length);
	assert_int_equal(d.stream_id, h.stream_id);
	assert_int_equal(d.type, 3);
	assert_int_equal(d.flags, 5);
}

static void test_worked_example_request(void **state)
{
	(void)state;
	Containerd__Task__V2__ConnectRequest cr = CONTAINERD__TASK__V2__CONNECT_REQUEST__INIT;
	cr.id = "abc";
	uint8_t *payload, *body, *frame;
	size_t payload_len, body_len, frame_len;
	sl_error_t err = NULL;
	assert_int_equal(ttrpc_pack(&cr.base, &payload, &payload_len, &err), 0);
	struct ttrpc_kv md = { TTRPC_NAMESPACE_KEY, "k8s.io" };
	struct ttrpc_request req = { TTRPC_TASK_V2_SERVICE, "Connect", payload, payload_len, 0, &md, 1 };
	assert_int_equal(ttrpc_request_encode(&req, &body, &body_len, &err), 0);
	assert_int_equal(ttrpc_frame_encode(1, TTRPC_TYPE_REQUEST, 0, body, body_len, &frame,
					    &frame_len, &err), 0);
	assert_int_equal(frame_len, sizeof(connect_frame));
	assert_memory_equal(frame, connect_frame, sizeof(connect_frame));

	/* And back. */
	struct ttrpc_request *d;
	assert_int_equal(ttrpc_request_decode(connect_frame + 10, sizeof(connect_frame) - 10, &d, &err), 0);
	assert_string_equal(d->service, "containerd.task.v2.Task");
	assert_string_equal(d->method, "Connect");
	assert_string_equal(ttrpc_request_namespace(d), "k8s.io");
	assert_int_equal(d->timeout_nano, 0);
	Containerd__Task__V2__ConnectRequest *u =
		containerd__task__v2__connect_request__unpack(NULL, d->payload_len, d->payload);
	assert_non_null(u);
	assert_string_equal(u->id, "abc");
	containerd__task__v2__connect_request__free_unpacked(u, NULL);
	free(d);
	free(payload);
	free(body);
	free(frame);
}

static void test_worked_example_reply(void **state)
{
	(void)state;
	Containerd__Task__V2__ConnectResponse cr = CONTAINERD__TASK__V2__CONNECT_RESPONSE__INIT;
	cr.shim_pid = 1234;
	cr.task_pid = 5678;
	uint8_t *payload, *body, *frame;
	size_t payload_len, body_len, frame_len;
	sl_error_t err = NULL;
	assert_int_equal(ttrpc_pack(&cr.base, &payload, &payload_len, &err), 0);
	struct ttrpc_response resp = { TTRPC_OK, NULL, payload, payload_len };
	assert_int_equal(ttrpc_response_encode(&resp, &body, &body_len, &err), 0);
	assert_int_equal(ttrpc_frame_encode(1, TTRPC_TYPE_RESPONSE, 0, body, body_len, &frame,
					    &frame_len, &err), 0);
	assert_int_equal(frame_len, sizeof(connect_reply));
	assert_memory_equal(frame, connect_reply, sizeof(connect_reply));
	free(payload);
	free(body);
	free(frame);

	/* OK with no payload is exactly the empty status. */
	struct ttrpc_response ok = { TTRPC_OK, "ignored for OK", NULL, 0 };
	assert_int_equal(ttrpc_response_encode(&ok, &body, &body_len, &err), 0);
	assert_int_equal(body_len, 2);
	assert_int_equal(body[0], 0x0a);
	assert_int_equal(body[1], 0x00);
	free(body);

	struct ttrpc_response nf = { TTRPC_NOT_FOUND, "container x: not found", NULL, 0 };
	assert_int_equal(ttrpc_response_encode(&nf, &body, &body_len, &err), 0);
	assert_int_equal(body_len, sizeof(not_found_body));
	assert_memory_equal(body, not_found_body, sizeof(not_found_body));
	free(body);

	struct ttrpc_response *d;
	assert_int_equal(ttrpc_response_decode(not_found_body, sizeof(not_found_body), &d, &err), 0);
	assert_int_equal(d->code, TTRPC_NOT_FOUND);
	assert_string_equal(d->message, "container x: not found");
	assert_int_equal(d->payload_len, 0);
	free(d);
	assert_int_equal(ttrpc_response_decode(connect_reply + 10, sizeof(connect_reply) - 10, &d, &err), 0);
	assert_int_equal(d->code, TTRPC_OK);
	assert_string_equal(d->message, "");
	assert_int_equal(d->payload_len, 6);
	assert_memory_equal(d->payload, connect_reply + 14, 6);
	free(d);
	/* A missing status reads as OK, as the Go client sees it. */
	assert_int_equal(ttrpc_response_decode(NULL, 0, &d, &err), 0);
	assert_int_equal(d->code, TTRPC_OK);
	free(d);
}

static void test_decode_rejects_garbage(void **state)
{
	(void)state;
	sl_error_t err = NULL;
	struct ttrpc_request *r;
	const uint8_t bad[] = { 0x0a, 0x7f, 'x' }; /* string longer than the buffer */
	assert_int_equal(ttrpc_request_decode(bad, sizeof(bad), &r, &err), -1);
	assert_int_equal(err->code, SL_E_INVALID);
	assert_non_null(strstr(sl_error_msg(err), "unmarshal request error"));
	sl_error_free(&err);
	struct ttrpc_response *p;
	assert_int_equal(ttrpc_response_decode(bad, sizeof(bad), &p, &err), -1);
	assert_int_equal(err->code, SL_E_INVALID);
	sl_error_free(&err);

	uint8_t *out;
	size_t out_len;
	assert_int_equal(ttrpc_frame_encode(1, 1, 0, NULL, TTRPC_MESSAGE_LENGTH_MAX + 1, &out,
					    &out_len, &err), -1);
	assert_int_equal(err->code, SL_E_LIMIT);
	sl_error_free(&err);
}

static void test_metadata(void **state)
{
	(void)state;
	struct ttrpc_kv md[] = {
		{ "traceparent", "x" },
		{ "Containerd-Namespace-Ttrpc", "wrong-case" },
		{ TTRPC_NAMESPACE_KEY, "first" },
		{ TTRPC_NAMESPACE_KEY, "second" },
	};
	assert_string_equal(ttrpc_metadata_get(md, 4, TTRPC_NAMESPACE_KEY), "first");
	assert_null(ttrpc_metadata_get(md, 1, TTRPC_NAMESPACE_KEY));
	struct ttrpc_request req = { "s", "m", NULL, 0, -5, md, 4 };
	uint8_t *body;
	size_t len;
	sl_error_t err = NULL;
	assert_int_equal(ttrpc_request_encode(&req, &body, &len, &err), 0);
	struct ttrpc_request *d;
	assert_int_equal(ttrpc_request_decode(body, len, &d, &err), 0);
	assert_int_equal(d->n_metadata, 4);
	assert_string_equal(d->metadata[3].value, "second");
	assert_string_equal(ttrpc_request_namespace(d), "first");
	assert_int_equal(d->timeout_nano, -5);
	assert_int_equal(d->payload_len, 0);
	free(d);
	free(body);
	assert_string_equal(ttrpc_code_name(12), "UNIMPLEMENTED");
	assert_string_equal(ttrpc_code_name(17), "UNKNOWN_CODE");
}

/* Feeds a stream in pieces of `step` bytes and collects the events. */
struct got {
	int ev;
	struct ttrpc_frame_header h;
	size_t len;
	uint8_t first;
};

static size_t feed_all(const uint8_t *buf, size_t len, size_t step, struct got *out, size_t max)
{
	struct ttrpc_reader r;
	ttrpc_reader_init(&r);
	size_t n = 0;
	for (size_t off = 0; off < len;) {
		size_t chunk = len - off < step ? len - off : step;
		size_t used;
		struct ttrpc_frame f = { 0 };
		sl_error_t err = NULL;
		int ev = ttrpc_reader_feed(&r, buf + off, chunk, &used, &f, &err);
		assert_true(ev >= 0);
		assert_true(used <= chunk);
		off += used;
		if (ev != TTRPC_READ_NONE) {
			assert_true(n < max);
			out[n].ev = ev;
			out[n].h = f.h;
			out[n].len = f.h.length;
			out[n].first = f.data ? f.data[0] : 0;
			if (ev == TTRPC_READ_OVERSIZED)
				assert_null(f.data);
			n++;
			free(f.data);
		} else {
			assert_int_equal(used, chunk);
		}
	}
	assert_true(ttrpc_reader_idle(&r));
	ttrpc_reader_release(&r);
	return n;
}

static void test_reader(void **state)
{
	(void)state;
	/* frame 1: the worked example; frame 2: empty Data; frame 3: oversized
	 * (4 MiB + 1, discarded); frame 4: a 70000-byte body (grows twice). */
	size_t big = TTRPC_MESSAGE_LENGTH_MAX + 1, mid = 70000;
	size_t len = sizeof(connect_frame) + 10 + 10 + big + 10 + mid;
	uint8_t *s = calloc(1, len), *p = s;
	memcpy(p, connect_frame, sizeof(connect_frame));
	p += sizeof(connect_frame);
	struct ttrpc_frame_header h = { 0, 3, TTRPC_TYPE_DATA, TTRPC_FLAG_NO_DATA };
	ttrpc_header_encode(&h, p);
	p += 10;
	h = (struct ttrpc_frame_header){ (uint32_t)big, 5, TTRPC_TYPE_REQUEST, 0 };
	ttrpc_header_encode(&h, p);
	p += 10 + big;
	h = (struct ttrpc_frame_header){ (uint32_t)mid, 7, TTRPC_TYPE_REQUEST, 0 };
	ttrpc_header_encode(&h, p);
	p[10] = 0x42;

	size_t steps[] = { 1, 3, 10, 4096, 65536, len };
	for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
		if (steps[i] == 1 && len > 8000000)
			continue;
		struct got g[8];
		size_t n = feed_all(s, len, steps[i], g, 8);
		assert_int_equal(n, 4);
		assert_int_equal(g[0].ev, TTRPC_READ_FRAME);
		assert_int_equal(g[0].h.stream_id, 1);
		assert_int_equal(g[0].len, 0x4f);
		assert_int_equal(g[0].first, 0x0a);
		assert_int_equal(g[1].ev, TTRPC_READ_FRAME);
		assert_int_equal(g[1].len, 0);
		assert_int_equal(g[1].h.flags, TTRPC_FLAG_NO_DATA);
		assert_int_equal(g[2].ev, TTRPC_READ_OVERSIZED);
		assert_int_equal(g[2].h.stream_id, 5);
		assert_int_equal(g[2].len, big);
		assert_int_equal(g[3].ev, TTRPC_READ_FRAME);
		assert_int_equal(g[3].len, mid);
		assert_int_equal(g[3].first, 0x42);
	}
	free(s);
}

static int verdict_of(uint32_t *last, uint32_t stream, uint8_t type, const uint8_t *body,
		      size_t len, int ev, struct ttrpc_verdict *v)
{
	struct ttrpc_frame f = { { (uint32_t)len, stream, type, 0 }, (uint8_t *)body };
	sl_error_t err = NULL;
	assert_int_equal(ttrpc_frame_verdict(last, ev, &f, v, &err), 0);
	return v->action;
}

static void test_verdict(void **state)
{
	(void)state;
	uint32_t last = 0;
	struct ttrpc_verdict v;
	const uint8_t *body = connect_frame + 10;
	size_t blen = sizeof(connect_frame) - 10;

	assert_int_equal(verdict_of(&last, 2, TTRPC_TYPE_REQUEST, body, blen, TTRPC_READ_FRAME, &v),
			 TTRPC_ACT_REPLY);
	assert_int_equal(v.code, TTRPC_INVALID_ARGUMENT);
	assert_string_equal(v.msg, "StreamID must be odd for client initiated streams");
	assert_int_equal(v.stream_id, 2);

	assert_int_equal(verdict_of(&last, 3, TTRPC_TYPE_REQUEST, body, blen, TTRPC_READ_FRAME, &v),
			 TTRPC_ACT_DISPATCH);
	assert_string_equal(v.req->method, "Connect");
	free(v.req);
	assert_int_equal(last, 3);

	assert_int_equal(verdict_of(&last, 3, TTRPC_TYPE_REQUEST, body, blen, TTRPC_READ_FRAME, &v),
			 TTRPC_ACT_REPLY);
	assert_int_equal(v.code, TTRPC_INVALID_ARGUMENT);
	assert_string_equal(v.msg, "StreamID cannot be re-used and must increment");
	assert_int_equal(verdict_of(&last, 1, TTRPC_TYPE_REQUEST, body, blen, TTRPC_READ_FRAME, &v),
			 TTRPC_ACT_REPLY);

	assert_int_equal(verdict_of(&last, 9, TTRPC_TYPE_DATA, body, blen, TTRPC_READ_FRAME, &v),
			 TTRPC_ACT_IGNORE);
	assert_int_equal(verdict_of(&last, 9, 0x7f, body, blen, TTRPC_READ_FRAME, &v),
			 TTRPC_ACT_IGNORE);
	assert_int_equal(verdict_of(&last, 9, TTRPC_TYPE_RESPONSE, body, blen, TTRPC_READ_FRAME, &v),
			 TTRPC_ACT_IGNORE);

	assert_int_equal(verdict_of(&last, 11, TTRPC_TYPE_REQUEST, NULL, TTRPC_MESSAGE_LENGTH_MAX + 1,
				    TTRPC_READ_OVERSIZED, &v),
			 TTRPC_ACT_REPLY);
	assert_int_equal(v.code, TTRPC_RESOURCE_EXHAUSTED);
	assert_int_equal(v.stream_id, 11);
	assert_string_equal(v.msg, "message length 4194305 exceed maximum message size of 4194304");

	const uint8_t bad[] = { 0x0a, 0x7f };
	assert_int_equal(verdict_of(&last, 13, TTRPC_TYPE_REQUEST, bad, sizeof(bad), TTRPC_READ_FRAME, &v),
			 TTRPC_ACT_REPLY);
	assert_int_equal(v.code, TTRPC_INVALID_ARGUMENT);
	assert_non_null(strstr(v.msg, "unmarshal request error"));
	assert_int_equal(last, 13);
}

static void test_addresses(void **state)
{
	(void)state;
	struct sockaddr_un sa;
	socklen_t len;
	sl_error_t err = NULL;
	assert_int_equal(ttrpc_sockaddr("unix:///run/x.sock", 0, &sa, &len, &err), 0);
	assert_string_equal(sa.sun_path, "/run/x.sock");
	assert_int_equal(ttrpc_sockaddr("/run/containerd/containerd.sock.ttrpc", 0, &sa, &len, &err), 0);
	assert_string_equal(sa.sun_path, "/run/containerd/containerd.sock.ttrpc");
	assert_int_equal(ttrpc_sockaddr("unix:///run/x.sock", TTRPC_ADDR_BARE_ABSTRACT, &sa, &len, &err), 0);
	assert_string_equal(sa.sun_path, "/run/x.sock");
	assert_int_equal(ttrpc_sockaddr("/containerd-shim/abc.sock", TTRPC_ADDR_BARE_ABSTRACT, &sa, &len,
				      &err), 0);
	assert_int_equal(sa.sun_path[0], 0);
	assert_memory_equal(sa.sun_path + 1, "/containerd-shim/abc.sock", 25);
	assert_int_equal(len, offsetof(struct sockaddr_un, sun_path) + 1 + 25);
	assert_int_equal(ttrpc_sockaddr("@name", 0, &sa, &len, &err), 0);
	assert_int_equal(sa.sun_path[0], 0);
	assert_memory_equal(sa.sun_path + 1, "name", 4);

	const char *bad[] = { "", "relative/path", "vsock://3:1024", "unix://", "@" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(ttrpc_sockaddr(bad[i], 0, &sa, &len, &err), -1);
		assert_non_null(err);
		sl_error_free(&err);
	}
	char longp[200];
	memset(longp, 'a', sizeof(longp));
	longp[0] = '/';
	longp[sizeof(longp) - 1] = 0;
	assert_int_equal(ttrpc_sockaddr(longp, 0, &sa, &len, &err), -1);
	assert_int_equal(err->code, SL_E_INVALID);
	sl_error_free(&err);
}

/* The generated types carry the upstream type URL names and tags. */
static void test_generated_event(void **state)
{
	(void)state;
	assert_string_equal(containerd__events__task_exit__descriptor.name, "containerd.events.TaskExit");
	assert_string_equal(containerd__task__v2__task__descriptor.name, "containerd.task.v2.Task");
	assert_int_equal(containerd__task__v2__task__descriptor.n_methods, 17);
	Containerd__Events__TaskExit ev = CONTAINERD__EVENTS__TASK_EXIT__INIT;
	ev.container_id = "c";
	ev.exit_status = 137;
	uint8_t *b;
	size_t n;
	sl_error_t err = NULL;
	assert_int_equal(ttrpc_pack(&ev.base, &b, &n, &err), 0);
	const uint8_t want[] = { 0x0a, 0x01, 'c', 0x20, 0x89, 0x01 };
	assert_int_equal(n, sizeof(want));
	assert_memory_equal(b, want, sizeof(want));
	free(b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_header_roundtrip),
		cmocka_unit_test(test_worked_example_request),
		cmocka_unit_test(test_worked_example_reply),
		cmocka_unit_test(test_decode_rejects_garbage),
		cmocka_unit_test(test_metadata),
		cmocka_unit_test(test_reader),
		cmocka_unit_test(test_verdict),
		cmocka_unit_test(test_addresses),
		cmocka_unit_test(test_generated_event),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
