/* libFuzzer target: the List filter language (snapshotter/src/filter.c), parsed and matched against a fixed info. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "filter.h"

/* The input is split at NUL bytes into filter strings (containerd sends a
 * repeated string field); every accepted filter is matched against an info. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *buf = malloc(size + 1);
	if (!buf)
		return 0;
	memcpy(buf, data, size);
	buf[size] = '\0';
	char *exprs[SNAP_FILTER_MAX_EXPRS + 1];
	size_t n = 0;
	for (char *p = buf; p <= buf + size && n <= SNAP_FILTER_MAX_EXPRS; p += strlen(p) + 1)
		exprs[n++] = p;
	struct snap_label labels[] = {{"containerd.io/snapshot.ref", "sha256:abc"}, {"a.b", "c"}};
	struct snap_info info = {.name = "ns/1/sha256:abc", .parent = "ns/0/x", .kind = SNAP_KIND_COMMITTED,
				 .labels = labels, .nlabels = 2};
	sl_error_t err = NULL;
	struct snap_filter *f = NULL;
	if (snap_filter_parse(&f, exprs, n, &err) == 0) {
		if (err || !f)
			__builtin_trap();
		(void)snap_filter_match(f, &info);
		snap_filter_free(f);
	} else if (!err || f || strlen(sl_error_msg(err)) > 1024) {
		__builtin_trap();
	}
	sl_error_free(&err);
	free(buf);
	return 0;
}
