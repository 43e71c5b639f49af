/* spore-snapshotter's settings: defaults and the YAML config file. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
}

static int get_path(json_t *v, const char *what, const char *key, char *out, size_t cap, sl_error_t *err)
{
	if (!json_is_string(v) || json_string_value(v)[0] != '/' || json_string_length(v) >= cap)
		return sl_error_set(err, SL_E_INVALID, "%s: %s must be an absolute path shorter than %zu bytes", what, key,
				    cap);
	snprintf(out, cap, "%s", json_string_value(v));
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
			rc = get_path(v, what, key, n.root, sizeof(n.root), err);
		} else if (!strcmp(key, "address")) {
			rc = get_path(v, what, key, n.address, sizeof(n.address), err);
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
