/* JSON helpers over jansson: typed field access with precise errors. */
#ifndef SL_JSON_H
#define SL_JSON_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include "sl/error.h"

static inline void sl_json_decrefp(json_t **j) { if (*j) json_decref(*j); }
#define _cleanup_json_ __attribute__((cleanup(sl_json_decrefp)))

/* Parses buf (len bytes) as one JSON value; rejects duplicate object keys
 * and trailing data; what names the input in errors ("manifest.json"). */
int sl_json_parse(const char *buf, size_t len, const char *what, json_t **out,
		  sl_error_t *err);

/* Field getters: fail with SL_E_INVALID naming `what` and the key when the
 * key is missing or has the wrong type. The *_opt forms return 0 and leave
 * *out unchanged when the key is absent (but still fail on a wrong type). */
int sl_json_get_obj(json_t *o, const char *key, const char *what, json_t **out, sl_error_t *err);
int sl_json_get_arr(json_t *o, const char *key, const char *what, json_t **out, sl_error_t *err);
int sl_json_get_str(json_t *o, const char *key, const char *what, const char **out, sl_error_t *err);
int sl_json_get_u64(json_t *o, const char *key, const char *what, uint64_t *out, sl_error_t *err);
int sl_json_get_bool(json_t *o, const char *key, const char *what, bool *out, sl_error_t *err);
int sl_json_get_str_opt(json_t *o, const char *key, const char *what, const char **out, sl_error_t *err);
int sl_json_get_u64_opt(json_t *o, const char *key, const char *what, uint64_t *out, sl_error_t *err);
/* v (the value of setting key in what) as an absolute path shorter than cap. */
int sl_json_abs_path(json_t *v, const char *what, const char *key, char *out, size_t cap, sl_error_t *err);

/* Serialises with sorted keys and 2-space indent plus a trailing newline
 * (stable bytes, so digests of manifests are reproducible). free() it. */
char *sl_json_dump(json_t *j, size_t *len);

#endif
