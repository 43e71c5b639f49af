/* The parts of an OCI runtime spec (bundle config.json, exec process JSON) the shim uses. */
#ifndef SHIM_SPEC_H
#define SHIM_SPEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "sl/error.h"

/* Caps, matching what the guest agent accepts (docs/agent-protocol.md). */
#define SHIM_SPEC_MAX_BYTES (4u << 20) /* config.json */
#define SHIM_SPEC_MAX_LIST 4096        /* args, env entries */
#define SHIM_SPEC_MAX_STR 4096         /* one arg, env entry, cwd */
#define SHIM_SPEC_MAX_ANNOTATIONS 1024

/* An OCI "process": what the agent runs. Owned arrays of owned strings,
 * NULL-terminated. */
struct shim_process_spec {
	char **argv;
	char **env;
	char *cwd; /* absolute */
	uint32_t uid, gid;
	bool terminal;
};

struct shim_annotation {
	char *key, *value;
};

struct shim_spec {
	struct shim_process_spec process;
	char *hostname; /* NULL if absent */
	char *cgroups_path; /* linux.cgroupsPath, NULL if absent */
	struct shim_annotation *annotations;
	size_t nannotations;
};

/* Reads and checks <bundle>/config.json. */
int shim_spec_load(const char *bundle, struct shim_spec *out, sl_error_t *err);
/* Parses a spec document from memory (what names it in errors). */
int shim_spec_parse(const char *buf, size_t len, const char *what, struct shim_spec *out, sl_error_t *err);
/* Parses an OCI process object given as JSON text (Exec's spec). */
int shim_process_parse(const char *buf, size_t len, const char *what, struct shim_process_spec *out,
		       sl_error_t *err);
/* The annotation's value, or NULL. */
const char *shim_spec_annotation(const struct shim_spec *s, const char *key);

void shim_process_spec_free(struct shim_process_spec *p);
void shim_spec_free(struct shim_spec *s);

#endif
