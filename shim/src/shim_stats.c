/* Reading a process's cgroup v2 files (pids, cpu.stat, memory.*) into containerd's metrics message. */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cgroups/v2/metrics.pb-c.h"
#include "shim_cgroup.h"
#include "shim_stats.h"
#include "sl/file.h"
#include "ttrpc.h"

#define STATS_FILE_MAX (64u << 10)

/* "max" (no limit) reads as UINT64_MAX, as containerd's cgroups library has it. */
static int read_u64(const char *dir, const char *name, uint64_t *out)
{
	char path[PATH_MAX * 2 + 64];
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
	char path[PATH_MAX * 2 + 64];
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

/* cpuacct.stat: "user <ticks>", "system <ticks>". */
static void set_cpuacct(void *arg, const char *k, uint64_t v)
{
	uint64_t *t = arg;
	if (!strcmp(k, "user"))
		t[0] = v;
	else if (!strcmp(k, "system"))
		t[1] = v;
}

/* v1 cpu.stat: nr_periods, nr_throttled, throttled_time (ns). */
static void set_cpu_v1(void *arg, const char *k, uint64_t v)
{
	Io__Containerd__Cgroups__V2__CPUStat *c = arg;
	if (!strcmp(k, "nr_periods"))
		c->nr_periods = v;
	else if (!strcmp(k, "nr_throttled"))
		c->nr_throttled = v;
	else if (!strcmp(k, "throttled_time"))
		c->throttled_usec = v / 1000;
}

/* pid's path in the hierarchy named by key ("" for v2, else "memory" ...). */
static int cgroup_path(pid_t pid, const char *key, char *out, size_t cap)
{
	char path[64], *buf = NULL;
	size_t len = 0;
	sl_error_t err = NULL;
	snprintf(path, sizeof(path), "/proc/%d/cgroup", (int)pid);
	if (sl_read_path(path, STATS_FILE_MAX, &buf, &len, &err) < 0) {
		sl_error_free(&err);
		return -1;
	}
	int rc = -1;
	char *save = NULL;
	for (char *line = strtok_r(buf, "\n", &save); line && rc < 0; line = strtok_r(NULL, "\n", &save)) {
		char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
		if (!c2)
			continue;
		*c2 = '\0';
		bool match = !key[0] ? !strcmp(line, "0") && c1[1] == '\0' : false;
		if (key[0]) {
			char *o2 = NULL;
			for (char *o = strtok_r(c1 + 1, ",", &o2); o && !match; o = strtok_r(NULL, ",", &o2))
				match = !strcmp(o, key);
		}
		if (match && strlen(c2 + 1) < cap) {
			strcpy(out, c2 + 1);
			rc = 0;
		}
	}
	free(buf);
	return rc;
}

static int v1_dir(pid_t pid, const char *controller, char *dir, size_t cap)
{
	char mnt[PATH_MAX], rel[PATH_MAX];
	if (shim_cgroup_mount(controller, mnt, sizeof(mnt)) < 0 || cgroup_path(pid, controller, rel, sizeof(rel)) < 0)
		return -1;
	return (size_t)snprintf(dir, cap, "%s%s", mnt, rel) < cap ? 0 : -1;
}

/* cgroup v1 memory.stat names for the v2 message's fields. */
static void set_mem_v1(void *arg, const char *k, uint64_t v)
{
	static const struct {
		const char *v1, *v2;
	} names[] = {{"rss", "anon"},		    {"cache", "file"},		    {"mapped_file", "file_mapped"},
		     {"dirty", "file_dirty"},	    {"writeback", "file_writeback"}, {"shmem", "shmem"},
		     {"pgfault", "pgfault"},	    {"pgmajfault", "pgmajfault"},   {"inactive_anon", "inactive_anon"},
		     {"active_anon", "active_anon"}, {"inactive_file", "inactive_file"},
		     {"active_file", "active_file"}, {"unevictable", "unevictable"}, {"rss_huge", "anon_thp"}};
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (!strcmp(k, names[i].v1))
			set_mem(arg, names[i].v2, v);
}

int shim_stats_collect(pid_t pid, const char *cgroup_root, uint8_t **out, size_t *out_len, sl_error_t *err)
{
	Io__Containerd__Cgroups__V2__PidsStat pids = IO__CONTAINERD__CGROUPS__V2__PIDS_STAT__INIT;
	Io__Containerd__Cgroups__V2__CPUStat cpu = IO__CONTAINERD__CGROUPS__V2__CPUSTAT__INIT;
	Io__Containerd__Cgroups__V2__MemoryStat mem = IO__CONTAINERD__CGROUPS__V2__MEMORY_STAT__INIT;
	Io__Containerd__Cgroups__V2__Metrics m = IO__CONTAINERD__CGROUPS__V2__METRICS__INIT;
	char dir[PATH_MAX * 2], root[PATH_MAX], rel[PATH_MAX];
	uint64_t v;
	if (kill(pid, 0) < 0 && errno == ESRCH)
		return sl_error_set(err, SL_E_NOT_FOUND, "stats: process %d is gone", (int)pid);
	/* The unified hierarchy when it has controllers (a cgroup v2 host). */
	bool v2 = false;
	if (cgroup_root) {
		snprintf(root, sizeof(root), "%s", cgroup_root);
		v2 = true;
	} else {
		v2 = shim_cgroup_unified(root, sizeof(root));
	}
	if (v2) {
		if (cgroup_path(pid, "", rel, sizeof(rel)) < 0)
			return sl_error_set(err, SL_E_NOT_FOUND, "stats: pid %d has no cgroup v2 path", (int)pid);
		snprintf(dir, sizeof(dir), "%s%s", root, rel);
	}
	if (v2) {
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
	/* A cgroup v1 (or hybrid) host: the same numbers from the v1
	 * controllers, in the v2 message (CRI takes either type; this one
	 * keeps a single format for every host). */
	if (v1_dir(pid, "pids", dir, sizeof(dir)) == 0 && read_u64(dir, "pids.current", &pids.current) == 0) {
		if (read_u64(dir, "pids.max", &v) == 0)
			pids.limit = v == UINT64_MAX ? 0 : v;
		m.pids = &pids;
	}
	if (v1_dir(pid, "cpuacct", dir, sizeof(dir)) == 0 && read_u64(dir, "cpuacct.usage", &v) == 0) {
		cpu.usage_usec = v / 1000;
		struct cpuacct {
			uint64_t user, system;
		} t = {0, 0};
		read_kv(dir, "cpuacct.stat", set_cpuacct, &t);
		long hz = sysconf(_SC_CLK_TCK);
		cpu.user_usec = hz > 0 ? t.user * 1000000u / (uint64_t)hz : 0;
		cpu.system_usec = hz > 0 ? t.system * 1000000u / (uint64_t)hz : 0;
	}
	if (v1_dir(pid, "cpu", dir, sizeof(dir)) == 0)
		read_kv(dir, "cpu.stat", set_cpu_v1, &cpu);
	m.cpu = &cpu;
	if (v1_dir(pid, "memory", dir, sizeof(dir)) == 0 && read_u64(dir, "memory.usage_in_bytes", &mem.usage) == 0) {
		read_u64(dir, "memory.limit_in_bytes", &mem.usage_limit);
		read_kv(dir, "memory.stat", set_mem_v1, &mem);
		m.memory = &mem;
	}
	if (!m.pids && !m.memory && !cpu.usage_usec)
		return sl_error_set(err, SL_E_UNSUPPORTED, "stats of pid %d: no cgroup controller to read", (int)pid);
	return ttrpc_pack(&m.base, out, out_len, err);
}
