/* YAML configuration files read into jansson trees (libyaml), so the JSON getters check them. */
#ifndef SL_YAML_H
#define SL_YAML_H

#include <jansson.h>
#include <stddef.h>
#include "sl/error.h"

#define SL_YAML_MAX_BYTES (1u << 20) /* a configuration file */
#define SL_YAML_MAX_DEPTH 32
#define SL_YAML_MAX_NODES 65536

/* Parses one YAML document into a JSON value: mappings become objects
 * (keys must be scalars; duplicate keys are refused), sequences arrays.
 * Plain scalars `true`/`false` become booleans, `null`, `~` and empty
 * become null, decimal integers become integers; every other scalar, and
 * every quoted one, is a string. Anchors, aliases, tags other than the
 * standard ones, and more than one document are refused (no alias
 * expansion: a small file stays small). Errors name `what` and the line. */
int sl_yaml_parse(const char *buf, size_t len, const char *what, json_t **out, sl_error_t *err);

#endif
