/* libsporelet-node: installs Sporelet on a node (binaries, containerd's configuration) and reverts it. */
#ifndef SPORELET_NODE_H
#define SPORELET_NODE_H

#include <stdbool.h>
#include <stddef.h>

#include "sl/error.h"

/* The largest containerd config.toml the editor reads (a real one is a few KiB). */
#define NODE_CONFIG_MAX (1u << 20)

/* What goes into containerd's configuration (docs/node-install.md). */
struct node_ctrd_opts {
	const char *runtime_name;   /* CRI runtime handler, "spore" */
	const char *runtime_type;   /* "io.containerd.spore.v2" */
	const char *snapshotter;    /* the runtime's snapshotter (containerd >= 1.7 honours it), "" for none */
	const char *proxy_name;     /* [proxy_plugins.<name>], "spore" */
	const char *proxy_address;  /* the snapshotter's socket (absolute) */
	const char *shim_config;    /* options.ConfigPath of the runtime, NULL or "" for none */
	const char *cri_snapshotter; /* the CRI plugin's global snapshotter (containerd 1.6 has no
				      * per-runtime one), NULL or "" to leave it alone */
};

/* Fills o with the defaults (handler spore, snapshotter spore, socket
 * /run/sporelet/snapshotter.sock, no shim config). */
void node_ctrd_opts_default(struct node_ctrd_opts *o);

/* The configuration edit as a pure function of the old file's bytes.
 *
 * node_config_install: in/len is the current config.toml (exists=false: there
 * is none). Any earlier sporelet-node edit in it is reverted first, then the
 * edit for o is applied, so running it on its own output gives the same bytes.
 * *out (malloc'd, NUL-terminated, *outlen bytes) is the new file; *changed
 * says whether it differs from in. Files it cannot edit safely (version 1 or
 * 3 configs, tables it would need that are defined by dotted keys or inline
 * tables, a [runtimes.<name>] or [proxy_plugins.<name>] of someone else,
 * invalid TOML as far as the scanner reads it) are refused with SL_E_INVALID
 * or SL_E_UNSUPPORTED naming the line.
 *
 * node_config_uninstall: removes every sporelet-node edit and gives back the
 * bytes the file had before the first install. *remove is set when the file
 * did not exist then (the caller deletes it). *changed is false when the file
 * holds no edit of ours. */
int node_config_install(const char *in, size_t len, bool exists,
			const struct node_ctrd_opts *o, char **out, size_t *outlen,
			bool *changed, sl_error_t *err);
int node_config_uninstall(const char *in, size_t len, char **out, size_t *outlen,
			  bool *remove, bool *changed, sl_error_t *err);

/* The binaries sporelet-node installs, in order (NULL-terminated). */
extern const char *const node_binaries[];

/* A node install or uninstall. Host paths are absolute paths on the node,
 * resolved beneath root (as if root were "/": symlinks on the host resolve
 * inside root). */
struct node_opts {
	const char *root;              /* "/" on a node; the host's / mount in a pod */
	const char *src_dirs[8];       /* where the binaries come from: first match wins */
	size_t nsrc;
	const char *install_dir;       /* "/opt/sporelet/bin" */
	const char *containerd_config; /* "/etc/containerd/config.toml" */
	const char *shim_link_dir;     /* host dir on containerd's PATH for a shim symlink, NULL: none */
	const char *shim_config_src;   /* file whose bytes install writes to ctrd.shim_config, NULL: none */
	struct node_ctrd_opts ctrd;
};

void node_opts_default(struct node_opts *o);

enum node_file_state { NODE_UNCHANGED = 0, NODE_UPDATED, NODE_CREATED, NODE_REMOVED };

/* What an install or uninstall did, for the command line's report. */
struct node_report {
	enum node_file_state binaries[8];   /* per node_binaries[] entry */
	enum node_file_state config;        /* containerd's config.toml */
	enum node_file_state shim_link;     /* <shim_link_dir>/containerd-shim-spore-v2 */
	enum node_file_state shim_config;   /* the shim's YAML (ctrd.shim_config) */
	bool config_changed;                /* containerd must be restarted */
};

const char *node_file_state_name(enum node_file_state s);

/* Installs the binaries (each copied to a temp file in the install dir,
 * fsynced, chmod 0755 and renamed over the old one, so a running old binary
 * never makes it fail; identical content is left alone), with shim_link_dir
 * a symlink <shim_link_dir>/containerd-shim-spore-v2 -> the installed shim
 * (containerd 1.6 looks for shims on its PATH only), with shim_config_src
 * the shim's YAML at ctrd.shim_config (0644, temp + fsync + rename), then
 * edits containerd's config.toml (temp + fsync + rename; its mode is kept).
 * A file or a foreign symlink where the link or the shim config goes is
 * refused, before anything changes. Directories it creates, the link and
 * the shim config are recorded in <install_dir>/.sporelet-node.json for
 * uninstall. */
int node_install(const struct node_opts *o, struct node_report *r, sl_error_t *err);

/* Reverts node_install: our config edits out (the user's bytes back, or the
 * file removed if we created it), our binaries, the recorded shim link (if
 * it is still our symlink) and shim config, and the directories we created
 * removed. Running it when nothing is installed changes nothing. */
int node_uninstall(const struct node_opts *o, struct node_report *r, sl_error_t *err);

/* The install record's parser (untrusted-ish host file; fuzzed): the
 * directories install created (host paths), the shim configs it wrote and
 * the symlinks it made (path and target), each list at most 64 long. */
struct node_record {
	char **created_dirs;
	size_t ncreated;
	char **files;
	size_t nfiles;
	char **link_paths, **link_targets;
	size_t nlinks;
};
int node_record_parse(const char *buf, size_t len, struct node_record *rec, sl_error_t *err);
void node_record_free(struct node_record *rec);

/* Labels (value non-NULL) or unlabels (value NULL) a Node through the API
 * server with a JSON merge patch of metadata.labels. api_server is the base
 * URL ("https://host:port"), token_file the bearer token, ca_file the CA
 * bundle (NULL: the system's). */
struct node_label_opts {
	const char *api_server;
	const char *token_file;
	const char *ca_file;
	const char *node_name;
	const char *key;
	const char *value;
};
int node_label(const struct node_label_opts *o, sl_error_t *err);

#endif
