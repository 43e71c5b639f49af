/* containerd's filter language for List: parsing and matching snapshot infos. */
#ifndef SNAP_FILTER_H
#define SNAP_FILTER_H

#include <stdbool.h>
#include <stddef.h>

#include "sl/error.h"
#include "snap_store.h"

/* Caps on untrusted filter text (containerd sends one or two short filters). */
#define SNAP_FILTER_MAX_EXPRS 64
#define SNAP_FILTER_MAX_LEN 8192
#define SNAP_FILTER_MAX_SELECTORS 64

struct snap_filter;

/* Parses the filters of a ListSnapshotsRequest: each string is selectors
 * joined by ',' (all must match); the strings are alternatives (any may
 * match); no strings or an empty string match everything. A selector is
 * `fieldpath`, `fieldpath==value`, `fieldpath!=value` or
 * `fieldpath~=regex`; fields are `name`, `parent`, `kind`
 * (active|view|committed) and `labels.<key>` (quote keys holding '.':
 * labels."containerd.io/snapshot.ref"). Errors are SL_E_INVALID with the
 * position. */
int snap_filter_parse(struct snap_filter **out, char *const *exprs, size_t n, sl_error_t *err);
bool snap_filter_match(const struct snap_filter *f, const struct snap_info *info);
void snap_filter_free(struct snap_filter *f);

#endif
