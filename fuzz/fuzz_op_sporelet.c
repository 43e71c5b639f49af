/* libFuzzer target: the Sporelet object parser and the reconcile core over API server JSON ({"sporelet":..., "pods":[...]}). */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "sl/json.h"
#include "sop_reconcile.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	sl_error_t err = NULL;
	json_t *j = NULL;
	if (sl_json_parse((const char *)data, size, "fuzz", &j, &err) < 0) {
		sl_error_free(&err);
		return 0;
	}
	json_t *obj = json_object_get(j, "sporelet");
	json_t *pods = json_object_get(j, "pods");
	struct sop_sporelet s;
	if (sop_sporelet_parse(obj ? obj : j, &s, &err) == 0) {
		if (s.replicas < 0 || s.replicas > SOP_MAX_REPLICAS || !s.spore || !s.name)
			__builtin_trap();
		/* Keep the work per input bounded: the replica count is the loop. */
		if (s.replicas > 64)
			json_object_set_new(json_object_get(obj ? obj : j, "spec"), "replicas", json_integer(64));
	} else if (!err || strlen(sl_error_msg(err)) > 2048) {
		__builtin_trap();
	}
	sl_error_free(&err);
	static const enum sop_resolve_state states[] = { SOP_RESOLVE_PINNED, SOP_RESOLVE_OK, SOP_RESOLVE_FAILED,
							 SOP_RESOLVE_DISABLED };
	struct sop_reconcile_in in = {
		.sporelet = obj ? obj : j, .pods = json_is_array(pods) ? pods : NULL,
		.resolve = states[size % 4],
		.digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
		.resolve_message = "fuzz", .now = "2026-01-01T00:00:00Z",
	};
	json_t *empty = json_array();
	if (!in.pods)
		in.pods = empty;
	struct sop_reconcile_out out;
	if (sop_reconcile(&in, &out, &err) == 0) {
		if (!out.create || !out.remove || !out.status)
			__builtin_trap();
		sop_reconcile_out_free(&out);
	}
	sl_error_free(&err);
	json_decref(empty);
	json_decref(j);
	return 0;
}
