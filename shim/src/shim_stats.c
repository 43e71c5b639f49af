/* Reading a process's cgroup v2 files (pids, cpu.stat, memory.*) into containerd's metrics message. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cgroups/v2/metrics.pb-c.h"
#include "shim_stats.h"
#include "sl/file.h"
#include "ttrpc.h"

#define STATS_FILE_MAX (64u << 10)

/* "max" (no limit) reads as UINT64_MAX, as containerd's cgroups library has it. */
static int read_u64(const char *dir, const char *name, uint64_t *out)
{
	char path[PATH_MAX + 64];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	char *buf = NULL;
	size_t len = 0;
	sl_error_t err = NULL;
	if (sl_read_path(path, STATS_FILE_MAX, &buf, &len, &err) < 0) {
		sl_error_free(&err);
		return -1;
	}
	int rc = 0;
	if (!strncmp(buf, "max", 3))
		*out = UINT64_MAX;
	else
		rc = sscanf(buf, "%lu", out) == 1 ? 0 : -1;
	free(buf);
	return rc;
}

/* Calls set(key, value) for every "key value" line of a flat-keyed file. */
static void read_kv(const char *dir, const char *name, void (*set)(void *, const char *, uint64_t), void *arg)
{
	char path[PATH_MAX + 64];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	char *buf = NULL;
	size_t len = 0;
	sl_error_t err = NULL;
	if (sl_read_path(path, STATS_FILE_MAX, &buf, &len, &err) < 0) {
		sl_error_free(&err);
		return;
	}
	char *save = NULL;
	for (char *line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char key[64];
		unsigned long v;
		if (sscanf(line, "%63s %lu", key, &v) == 2)
			set(arg, key, v);
	}
	free(buf);
}

static void set_cpu(void *arg, const char *k, uint64_t v)
{
	Io__Containerd__Cgroups__V2__CPUStat *c = arg;
	if (!strcmp(k, "usage_usec"))
		c->usage_usec = v;
	else if (!strcmp(k, "user_usec"))
		c->user_usec = v;
	else if (!strcmp(k, "system_usec"))
		c->system_usec = v;
	else if (!strcmp(k, "nr_periods"))
		c->nr_periods = v;
	else if (!strcmp(k, "nr_throttled"))
		c->nr_throttled = v;
	else if (!strcmp(k, "throttled_usec"))
		c->throttled_usec = v;
}

#define MEM_FIELD(name) {#name, offsetof(Io__Containerd__Cgroups__V2__MemoryStat, name)}
static const struct {
	const char *key;
	size_t off;
} mem_fields[] = {
	MEM_FIELD(anon),	       MEM_FIELD(file),		      MEM_FIELD(kernel_stack),
	MEM_FIELD(slab),	       MEM_FIELD(sock),		      MEM_FIELD(shmem),
	MEM_FIELD(file_mapped),	       MEM_FIELD(file_dirty),	      MEM_FIELD(file_writeback),
	MEM_FIELD(anon_thp),	       MEM_FIELD(inactive_anon),      MEM_FIELD(active_anon),
	MEM_FIELD(inactive_file),      MEM_FIELD(active_file),	      MEM_FIELD(unevictable),
	MEM_FIELD(slab_reclaimable),   MEM_FIELD(slab_unreclaimable), MEM_FIELD(pgfault),
	MEM_FIELD(pgmajfault),	       MEM_FIELD(workingset_refault), MEM_FIELD(workingset_activate),
	MEM_FIELD(workingset_nodereclaim), MEM_FIELD(pgrefill),	      MEM_FIELD(pgscan),
	MEM_FIELD(pgsteal),	       MEM_FIELD(pgactivate),	      MEM_FIELD(pgdeactivate),
	MEM_FIELD(pglazyfree),	       MEM_FIELD(pglazyfreed),	      MEM_FIELD(thp_fault_alloc),
	MEM_FIELD(thp_collapse_alloc),
};

static void set_mem(void *arg, const char *k, uint64_t v)
{
	for (size_t i = 0; i < sizeof(mem_fields) / sizeof(mem_fields[0]); i++)
		if (!strcmp(k, mem_fields[i].key))
			*(uint64_t *)((char *)arg + mem_fields[i].off) = v;
}

int shim_stats_collect(pid_t pid, const char *cgroup_root, uint8_t **out, size_t *out_len, sl_error_t *err)
{
	char path[PATH_MAX], *buf = NULL;
	size_t len = 0;
	snprintf(path, sizeof(path), "/proc/%d/cgroup", (int)pid);
	if (sl_read_path(path, STATS_FILE_MAX, &buf, &len, err) < 0)
		return sl_error_wrap(err, "stats of pid %d", (int)pid);
	/* cgroup v2: the one line "0::/path". */
	char *line = strstr(buf, "0::/");
	if (!line || (line != buf && line[-1] != '\n')) {
		free(buf);
		return sl_error_set(err, SL_E_UNSUPPORTED, "stats of pid %d: not in a cgroup v2 hierarchy", (int)pid);
	}
	line += 3;
	line[strcspn(line, "\n")] = '\0';
	char dir[PATH_MAX];
	int n = snprintf(dir, sizeof(dir), "%s%s", cgroup_root ? cgroup_root : "/sys/fs/cgroup", line);
	free(buf);
	if (n < 0 || (size_t)n >= sizeof(dir))
		return sl_error_set(err, SL_E_INVALID, "stats of pid %d: cgroup path too long", (int)pid);

	Io__Containerd__Cgroups__V2__PidsStat pids = IO__CONTAINERD__CGROUPS__V2__PIDS_STAT__INIT;
	Io__Containerd__Cgroups__V2__CPUStat cpu = IO__CONTAINERD__CGROUPS__V2__CPUSTAT__INIT;
	Io__Containerd__Cgroups__V2__MemoryStat mem = IO__CONTAINERD__CGROUPS__V2__MEMORY_STAT__INIT;
	Io__Containerd__Cgroups__V2__Metrics m = IO__CONTAINERD__CGROUPS__V2__METRICS__INIT;
	uint64_t v;
	/* Controllers not enabled for the cgroup simply leave zeros. */
	if (read_u64(dir, "pids.current", &pids.current) == 0) {
		if (read_u64(dir, "pids.max", &v) == 0)
			pids.limit = v == UINT64_MAX ? 0 : v;
		m.pids = &pids;
	}
	read_kv(dir, "cpu.stat", set_cpu, &cpu);
	m.cpu = &cpu;
	if (read_u64(dir, "memory.current", &mem.usage) == 0) {
		read_u64(dir, "memory.max", &mem.usage_limit);
		read_u64(dir, "memory.swap.current", &mem.swap_usage);
		read_u64(dir, "memory.swap.max", &mem.swap_limit);
		read_kv(dir, "memory.stat", set_mem, &mem);
		m.memory = &mem;
	}
	return ttrpc_pack(&m.base, out, out_len, err);
}
