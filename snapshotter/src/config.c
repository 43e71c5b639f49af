/* spore-snapshotter's settings: defaults and the YAML config file. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sl/file.h"
#include "sl/json.h"
#include "sl/log.h"
#include "sl/yaml.h"
#include "snap_config.h"

void snap_config_defaults(struct snap_config *c)
{
	memset(c, 0, sizeof(*c));
	snprintf(c->root, sizeof(c->root), "/var/lib/sporelet/snapshotter");
	snprintf(c->address, sizeof(c->address), "/run/sporelet/snapshotter.sock");
	snprintf(c->log_level, sizeof(c->log_level), "info");
	snprintf(c->cache_dir, sizeof(c->cache_dir), "/var/lib/sporelet/cache");
	c->pull_timeout_s = 600;
	/* spore is installed next to spore-snapshotter. */
	sl_exe_sibling("spore", "/usr/local/bin/spore", c->spore_bin, sizeof(c->spore_bin));
}

static bool host_ok(const char *h, size_t len, size_t cap)
{
	return len > 0 && len < cap && !strpbrk(h, "/ \t@");
}

static int parse_registry(const char *host, json_t *v, const char *what, struct snap_registry *r, sl_error_t *err)
{
	memset(r, 0, sizeof(*r));
	if (!host_ok(host, strlen(host), sizeof(r->host)))
		return sl_error_set(err, SL_E_INVALID, "%s: registries: \"%.64s\" is not a host[:port]", what, host);
	snprintf(r->host, sizeof(r->host), "%s", host);
	if (!json_is_object(v))
		return sl_error_set(err, SL_E_INVALID, "%s: registries.%s must be a mapping", what, host);
	const char *k;
	json_t *e;
	json_object_foreach(v, k, e) {
		if (!strcmp(k, "mirrors")) {
			size_t i;
			json_t *m;
			if (!json_is_array(e) || json_array_size(e) > SNAP_CONFIG_MAX_MIRRORS)
				return sl_error_set(err, SL_E_INVALID, "%s: registries.%s.mirrors must be a list of at most %d hosts",
						    what, host, SNAP_CONFIG_MAX_MIRRORS);
			json_array_foreach(e, i, m) {
				if (!json_is_string(m) || !host_ok(json_string_value(m), json_string_length(m), 256))
					return sl_error_set(err, SL_E_INVALID, "%s: registries.%s.mirrors[%zu] must be a host[:port]",
							    what, host, i);
				snprintf(r->mirrors[r->nmirrors++], 256, "%s", json_string_value(m));
			}
		} else if (!strcmp(k, "insecure")) {
			if (!json_is_boolean(e))
				return sl_error_set(err, SL_E_INVALID, "%s: registries.%s.insecure must be true or false", what,
						    host);
			r->insecure = json_is_true(e);
		} else if (!strcmp(k, "username") || !strcmp(k, "password")) {
			char *dst = k[0] == 'u' ? r->username : r->password;
			size_t cap = k[0] == 'u' ? sizeof(r->username) : sizeof(r->password);
			if (!json_is_string(e) || json_string_length(e) == 0 || json_string_length(e) >= cap ||
			    memchr(json_string_value(e), '\0', json_string_length(e)))
				return sl_error_set(err, SL_E_INVALID, "%s: registries.%s.%s must be a string of 1..%zu bytes",
						    what, host, k, cap - 1);
			snprintf(dst, cap, "%s", json_string_value(e));
		} else {
			return sl_error_set(err, SL_E_INVALID, "%s: unknown setting registries.%s.%.64s", what, host, k);
		}
	}
	if (!r->username[0] != !r->password[0])
		return sl_error_set(err, SL_E_INVALID, "%s: registries.%s: username and password go together", what, host);
	r->has_auth = r->username[0] != '\0';
	return 0;
}

static int parse_registries(json_t *v, const char *what, struct snap_config *n, sl_error_t *err)
{
	if (!json_is_object(v) || json_object_size(v) > SNAP_CONFIG_MAX_REGISTRIES)
		return sl_error_set(err, SL_E_INVALID, "%s: registries must be a mapping of at most %d hosts", what,
				    SNAP_CONFIG_MAX_REGISTRIES);
	const char *host;
	json_t *e;
	n->nregistries = 0;
	json_object_foreach(v, host, e) {
		if (parse_registry(host, e, what, &n->registries[n->nregistries], err) < 0)
			return -1;
		n->nregistries++;
	}
	return 0;
}

static int parse_cache_gc(json_t *v, const char *what, struct snap_config *n, sl_error_t *err)
{
	if (!json_is_object(v))
		return sl_error_set(err, SL_E_INVALID, "%s: cache_gc must be a mapping (interval_s, max_mib)", what);
	n->gc_interval_s = 300;
	n->gc_max_mib = 0;
	const char *k;
	json_t *e;
	json_object_foreach(v, k, e) {
		if (!strcmp(k, "interval_s")) {
			if (!json_is_integer(e) || json_integer_value(e) < 1 || json_integer_value(e) > 86400)
				return sl_error_set(err, SL_E_INVALID, "%s: cache_gc.interval_s must be an integer in 1..86400",
						    what);
			n->gc_interval_s = (unsigned)json_integer_value(e);
		} else if (!strcmp(k, "max_mib")) {
			if (!json_is_integer(e) || json_integer_value(e) < 0 || json_integer_value(e) > (1ll << 32))
				return sl_error_set(err, SL_E_INVALID, "%s: cache_gc.max_mib must be an integer in 0..%lld",
						    what, 1ll << 32);
			n->gc_max_mib = (uint64_t)json_integer_value(e);
		} else {
			return sl_error_set(err, SL_E_INVALID, "%s: unknown setting cache_gc.%.64s", what, k);
		}
	}
	return 0;
}

int snap_config_parse(const char *buf, size_t len, const char *what, struct snap_config *c, sl_error_t *err)
{
	_cleanup_json_ json_t *j = NULL;
	if (sl_yaml_parse(buf, len, what, &j, err) < 0)
		return -1;
	if (json_is_null(j))
		return 0; /* an empty file: the defaults */
	if (!json_is_object(j))
		return sl_error_set(err, SL_E_INVALID, "%s: want a mapping of settings", what);
	struct snap_config n = *c;
	const char *key;
	json_t *v;
	json_object_foreach(j, key, v) {
		int rc;
		if (!strcmp(key, "root")) {
			rc = sl_json_abs_path(v, what, key, n.root, sizeof(n.root), err);
		} else if (!strcmp(key, "address")) {
			rc = sl_json_abs_path(v, what, key, n.address, sizeof(n.address), err);
		} else if (!strcmp(key, "spore")) {
			rc = sl_json_abs_path(v, what, key, n.spore_bin, sizeof(n.spore_bin), err);
		} else if (!strcmp(key, "cache_dir")) {
			rc = sl_json_abs_path(v, what, key, n.cache_dir, sizeof(n.cache_dir), err);
		} else if (!strcmp(key, "pull_timeout_s")) {
			rc = 0;
			if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 86400)
				rc = sl_error_set(err, SL_E_INVALID, "%s: pull_timeout_s must be an integer in 1..86400", what);
			else
				n.pull_timeout_s = (unsigned)json_integer_value(v);
		} else if (!strcmp(key, "insecure_registries")) {
			rc = 0;
			size_t i;
			json_t *e;
			if (!json_is_array(v) || json_array_size(v) > SNAP_CONFIG_MAX_INSECURE)
				rc = sl_error_set(err, SL_E_INVALID, "%s: insecure_registries must be a list of at most %d hosts",
						  what, SNAP_CONFIG_MAX_INSECURE);
			n.ninsecure = 0;
			json_array_foreach(v, i, e) {
				if (rc < 0)
					break;
				if (!json_is_string(e) || json_string_length(e) == 0 ||
				    json_string_length(e) >= sizeof(n.insecure[0]) || strpbrk(json_string_value(e), "/ \t"))
					rc = sl_error_set(err, SL_E_INVALID, "%s: insecure_registries[%zu] must be a host[:port]",
							  what, i);
				else
					snprintf(n.insecure[n.ninsecure++], sizeof(n.insecure[0]), "%s", json_string_value(e));
			}
		} else if (!strcmp(key, "cache_gc")) {
			rc = parse_cache_gc(v, what, &n, err);
		} else if (!strcmp(key, "registries")) {
			rc = parse_registries(v, what, &n, err);
		} else if (!strcmp(key, "log_level")) {
			rc = 0;
			if (!json_is_string(v) || sl_log_level_parse(json_string_value(v)) < 0)
				rc = sl_error_set(err, SL_E_INVALID, "%s: log_level must be debug, info, warn or error", what);
			else
				snprintf(n.log_level, sizeof(n.log_level), "%s", json_string_value(v));
		} else {
			rc = sl_error_set(err, SL_E_INVALID, "%s: unknown setting %.100s", what, key);
		}
		if (rc < 0)
			return -1;
	}
	*c = n;
	return 0;
}

int snap_config_load(const char *path, struct snap_config *c, sl_error_t *err)
{
	char *buf = NULL;
	size_t len = 0;
	if (sl_read_path(path, 1u << 20, &buf, &len, err) < 0)
		return sl_error_wrap(err, "snapshotter configuration");
	int rc = snap_config_parse(buf, len, path, c, err);
	free(buf);
	return rc;
}
