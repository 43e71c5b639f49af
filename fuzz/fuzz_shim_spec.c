/* libFuzzer target: the shim's OCI runtime spec reader (config.json and Exec's process JSON). */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "shim_spec.h"

/* Both readers on every input: accepted documents give well-formed
 * lists; refusals carry a bounded explanation. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	sl_error_t err = NULL;
	struct shim_spec s;
	if (shim_spec_parse((const char *)data, size, "config.json", &s, &err) == 0) {
		if (err || !s.process.argv || !s.process.argv[0] || !s.process.argv[0][0] || !s.process.env ||
		    !s.process.cwd || s.process.cwd[0] != '/')
			__builtin_trap();
		for (size_t i = 0; i < s.nannotations; i++)
			if (shim_spec_annotation(&s, s.annotations[i].key) == NULL)
				__builtin_trap();
		shim_spec_free(&s);
	} else if (!err || strlen(sl_error_msg(err)) > 1024) {
		__builtin_trap();
	}
	sl_error_free(&err);
	struct shim_process_spec p;
	if (shim_process_parse((const char *)data, size, "process", &p, &err) == 0) {
		for (size_t i = 0; p.env[i]; i++)
			if (!strchr(p.env[i], '=') || p.env[i][0] == '=')
				__builtin_trap();
		shim_process_spec_free(&p);
	} else if (!err) {
		__builtin_trap();
	}
	sl_error_free(&err);
	return 0;
}
