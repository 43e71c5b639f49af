/* libFuzzer target: the YAML configuration reader (sl_yaml_parse) on arbitrary input. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sl/yaml.h"

/* Accepted input gives a value; refused input a bounded explanation. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	sl_error_t err = NULL;
	json_t *j = NULL;
	if (sl_yaml_parse((const char *)data, size, "fuzz.yaml", &j, &err) == 0) {
		if (err || !j)
			__builtin_trap();
		char *s = json_dumps(j, JSON_ENCODE_ANY);
		free(s);
		json_decref(j);
	} else if (!err || j || strlen(sl_error_msg(err)) > 1024) {
		__builtin_trap();
	}
	sl_error_free(&err);
	return 0;
}
