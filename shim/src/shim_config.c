/* Reading and checking the shim's YAML configuration. */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "shim_config.h"
#include "sl/file.h"
#include "sl/json.h"
#include "sl/yaml.h"

void shim_config_defaults(struct shim_config *c)
{
	memset(c, 0, sizeof(*c));
	sl_exe_sibling("spore", "/usr/local/bin/spore", c->spore_bin, sizeof(c->spore_bin));
	snprintf(c->state_dir, sizeof(c->state_dir), "/run/sporelet/shim");
	c->ready_timeout_ms = 30000;
	c->pool_size = 0;
	c->memory_mib = 256;
	c->vcpus = 1;
}

/* UID[:GID], each 1..4294967294: what `spore --jail-uid` takes. */
static bool jail_uid_ok(const char *s)
{
	for (int part = 0; part < 2; part++) {
		if (*s < '1' || *s > '9')
			return false;
		unsigned long long v = 0;
		while (*s >= '0' && *s <= '9' && v < 0xffffffffull)
			v = v * 10 + (unsigned)(*s++ - '0');
		if (v >= 0xffffffffull)
			return false;
		if (!*s)
			return true;
		if (*s++ != ':' || part)
			return false;
	}
	return false;
}

static int get_uint(json_t *v, const char *what, const char *key, long long min, long long max, long long *out,
		    sl_error_t *err)
{
	if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max)
		return sl_error_set(err, SL_E_INVALID, "%s: %s must be an integer in %lld..%lld", what, key, min, max);
	*out = json_integer_value(v);
	return 0;
}

int shim_config_parse(const char *buf, size_t len, const char *what, struct shim_config *c, sl_error_t *err)
{
	_cleanup_json_ json_t *j = NULL;
	if (sl_yaml_parse(buf, len, what, &j, err) < 0)
		return -1;
	if (!json_is_object(j))
		return sl_error_set(err, SL_E_INVALID, "%s: want a mapping of settings", what);
	struct shim_config n = *c;
	const char *key;
	json_t *v;
	json_object_foreach(j, key, v) {
		long long x = 0;
		int rc;
		if (!strcmp(key, "spore")) {
			rc = sl_json_abs_path(v, what, key, n.spore_bin, sizeof(n.spore_bin), err);
		} else if (!strcmp(key, "state_dir")) {
			/* Sockets live below it: leave room for "/<16 hex>/control". */
			rc = sl_json_abs_path(v, what, key, n.state_dir, 80, err);
		} else if (!strcmp(key, "disk_dir")) {
			rc = sl_json_abs_path(v, what, key, n.disk_dir, sizeof(n.disk_dir), err);
		} else if (!strcmp(key, "jail_uid")) {
			const char *u = json_string_value(v);
			rc = 0;
			if (!u || strlen(u) >= sizeof(n.jail_uid) || !jail_uid_ok(u))
				rc = sl_error_set(err, SL_E_INVALID,
						  "%s: jail_uid must be a string \"UID[:GID]\", each 1..4294967294 (not root)",
						  what);
			else
				snprintf(n.jail_uid, sizeof(n.jail_uid), "%s", u);
		} else if (!strcmp(key, "ready_timeout_ms")) {
			rc = get_uint(v, what, key, 100, 600000, &x, err);
			n.ready_timeout_ms = (int)x;
		} else if (!strcmp(key, "pool")) {
			rc = 0;
			if (!json_is_object(v))
				rc = sl_error_set(err, SL_E_INVALID, "%s: pool must be a mapping", what);
			const char *pk;
			json_t *pv;
			json_object_foreach(v, pk, pv) {
				if (rc < 0)
					break;
				if (!strcmp(pk, "size")) {
					rc = get_uint(pv, what, "pool.size", 0, 64, &x, err);
					n.pool_size = (unsigned)x;
				} else if (!strcmp(pk, "memory_mib")) {
					rc = get_uint(pv, what, "pool.memory_mib", 2, 3072, &x, err);
					if (rc == 0 && x % 2)
						rc = sl_error_set(err, SL_E_INVALID, "%s: pool.memory_mib must be even", what);
					n.memory_mib = (unsigned)x;
				} else if (!strcmp(pk, "vcpus")) {
					rc = get_uint(pv, what, "pool.vcpus", 1, 16, &x, err);
					n.vcpus = (unsigned)x;
				} else {
					rc = sl_error_set(err, SL_E_INVALID, "%s: unknown setting pool.%.100s", what, pk);
				}
			}
		} else {
			rc = sl_error_set(err, SL_E_INVALID, "%s: unknown setting %.100s", what, key);
		}
		if (rc < 0)
			return -1;
	}
	*c = n;
	return 0;
}

int shim_config_load(const char *path, struct shim_config *c, sl_error_t *err)
{
	char *buf = NULL;
	size_t len = 0;
	if (sl_read_path(path, SHIM_CONFIG_MAX_BYTES, &buf, &len, err) < 0)
		return sl_error_wrap(err, "shim configuration");
	int rc = shim_config_parse(buf, len, path, c, err);
	free(buf);
	return rc;
}
