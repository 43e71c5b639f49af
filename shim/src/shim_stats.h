/* cgroup v2 metrics of a process (the pod's VMM) as io.containerd.cgroups.v2.Metrics. */
#ifndef SHIM_STATS_H
#define SHIM_STATS_H

#include <stdint.h>
#include <sys/types.h>
#include "sl/error.h"

/* Packs the metrics of pid's cgroup into a malloc'd buffer: the value of
 * an Any whose type URL is SHIM_STATS_TYPE_URL. */
#define SHIM_STATS_TYPE_URL "io.containerd.cgroups.v2.Metrics"
int shim_stats_collect(pid_t pid, const char *cgroup_root, uint8_t **out, size_t *out_len, sl_error_t *err);

#endif
