/* Status conditions (Ready, Resolved, Degraded) with stable lastTransitionTime, and time formatting. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "sop_reconcile.h"

void sop_time_format(int64_t unix_s, char out[32])
{
	time_t t = (time_t)unix_s;
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static json_t *find_condition(json_t *conds, const char *type)
{
	size_t i;
	json_t *c;
	json_array_foreach(conds, i, c) {
		const char *t = json_string_value(json_object_get(c, "type"));
		if (t && strcmp(t, type) == 0)
			return c;
	}
	return NULL;
}

int sop_condition_set(json_t *status, json_t *old_conditions, const char *type, const char *cstatus,
		      const char *reason, const char *message, int64_t generation, const char *now)
{
	json_t *conds = json_object_get(status, "conditions");
	if (!conds) {
		conds = json_array();
		json_object_set_new(status, "conditions", conds);
	}
	/* Kubernetes API conventions: lastTransitionTime is when status last
	 * changed, so a reason or message change alone keeps it. */
	json_t *old = find_condition(old_conditions, type);
	const char *ltt = now;
	if (old) {
		const char *os = json_string_value(json_object_get(old, "status"));
		const char *ot = json_string_value(json_object_get(old, "lastTransitionTime"));
		if (os && ot && strcmp(os, cstatus) == 0)
			ltt = ot;
	}
	json_t *c = json_pack("{s:s, s:s, s:s, s:s, s:s, s:I}", "type", type, "status", cstatus, "reason", reason,
			      "message", message ? message : "", "lastTransitionTime", ltt, "observedGeneration",
			      (json_int_t)generation);
	if (!c)
		return -1;
	json_t *mine = find_condition(conds, type);
	if (mine) {
		json_object_update(mine, c);
		json_decref(c);
		return 0;
	}
	return json_array_append_new(conds, c);
}
