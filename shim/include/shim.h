/* containerd-shim-spore-v2: the runtime v2 shim's entry points (start, delete, the daemon). */
#ifndef SHIM_H
#define SHIM_H

#include <stdbool.h>

/* The flags containerd passes (reference: shim invocation), then the action. */
struct shim_args {
	const char *ns;             /* -namespace */
	const char *address;        /* -address: containerd's gRPC socket */
	const char *publish_binary; /* -publish-binary (unused: events go over ttrpc) */
	const char *id;             /* -id */
	const char *bundle;         /* -bundle (delete); else the working directory */
	bool debug;                 /* -debug */
	const char *action;         /* "start", "delete", or NULL for -v/-info */
	bool version;               /* -v */
};

/* Parses argv the way Go's flag package does (-flag value, -flag=value,
 * --flag); returns 0, or prints usage to stderr and returns 2. */
int shim_parse_args(int argc, char **argv, struct shim_args *a);
/* `start`: prints the pod's shim address (and nothing else) on stdout,
 * starting the daemon if the pod has none yet. Returns the exit status. */
int shim_cmd_start(const struct shim_args *a);
/* `delete`: cleans up after a dead shim, prints a DeleteResponse. */
int shim_cmd_delete(const struct shim_args *a);

#endif
