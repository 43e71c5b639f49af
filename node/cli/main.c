/* sporelet-node: installs Sporelet on a node (binaries, containerd config), reverts it, labels the node. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sl/file.h"
#include "sporelet_node.h"

#define SA_DIR "/var/run/secrets/kubernetes.io/serviceaccount"

static void usage(FILE *f)
{
	fprintf(f,
		"usage: sporelet-node install   --root DIR --src DIR [--src DIR...] [options]\n"
		"       sporelet-node uninstall --root DIR [options]\n"
		"       sporelet-node config install|uninstall [--file CONFIG.TOML] [containerd options]\n"
		"       sporelet-node label|unlabel --node-name NAME [label options]\n"
		"\n"
		"install / uninstall options:\n"
		"  --root DIR                the node's / (default /; in a pod, the host's / mount)\n"
		"  --src DIR                 where spore, spore-oci, containerd-shim-spore-v2, spore-snapshotter are\n"
		"  --install-dir PATH        host path of the binaries (default /opt/sporelet/bin)\n"
		"  --containerd-config PATH  host path of containerd's config (default /etc/containerd/config.toml)\n"
		"  --restart-cmd CMD         run with /bin/sh -c when containerd's config changed\n"
		"  --shim-link-dir DIR       host dir on containerd's PATH: DIR/containerd-shim-spore-v2 -> the\n"
		"                            installed shim (containerd 1.6 finds shims on its PATH only)\n"
		"  --shim-config-src FILE    install FILE's bytes as the shim's YAML at --shim-config (0644)\n"
		"containerd options:\n"
		"  --runtime-name NAME       CRI runtime handler (default spore)\n"
		"  --runtime-type TYPE       default io.containerd.spore.v2\n"
		"  --runtime-snapshotter S   the runtime's snapshotter (default spore; \"\" for none)\n"
		"  --proxy-name NAME         [proxy_plugins.NAME] (default spore)\n"
		"  --snapshotter-socket PATH default /run/sporelet/snapshotter.sock\n"
		"  --shim-config PATH        the runtime's options.ConfigPath (default: none)\n"
		"  --cri-snapshotter NAME    also set the CRI plugin's global snapshotter (containerd 1.6 ignores\n"
		"                            the runtime's; NAME spore makes lazy pulls work there)\n"
		"label options:\n"
		"  --label KEY=VALUE         default sporelet.ai/runtime=true (unlabel: KEY)\n"
		"  --api-server URL          default https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT\n"
		"  --token-file FILE         default " SA_DIR "/token\n"
		"  --ca-file FILE            default " SA_DIR "/ca.crt\n"
		"\n"
		"install and uninstall print one line per file and `changed=yes|no` (containerd's\n"
		"config; containerd must be restarted only on yes). Exit status: 0 done, 1 error,\n"
		"2 bad usage, 3 the restart command failed. See docs/node-install.md.\n");
}

enum {
	OPT_ROOT = 256, OPT_SRC, OPT_INSTALL_DIR, OPT_CTRD_CONFIG, OPT_RESTART, OPT_RT_NAME, OPT_RT_TYPE,
	OPT_RT_SNAP, OPT_PROXY_NAME, OPT_SOCKET, OPT_SHIM_CONFIG, OPT_FILE, OPT_NODE, OPT_LABEL, OPT_API,
	OPT_TOKEN, OPT_CA, OPT_SHIM_LINK_DIR, OPT_SHIM_CONFIG_SRC, OPT_CRI_SNAP,
};

static const struct option longopts[] = {
	{"root", required_argument, NULL, OPT_ROOT},
	{"src", required_argument, NULL, OPT_SRC},
	{"install-dir", required_argument, NULL, OPT_INSTALL_DIR},
	{"containerd-config", required_argument, NULL, OPT_CTRD_CONFIG},
	{"restart-cmd", required_argument, NULL, OPT_RESTART},
	{"runtime-name", required_argument, NULL, OPT_RT_NAME},
	{"runtime-type", required_argument, NULL, OPT_RT_TYPE},
	{"runtime-snapshotter", required_argument, NULL, OPT_RT_SNAP},
	{"proxy-name", required_argument, NULL, OPT_PROXY_NAME},
	{"snapshotter-socket", required_argument, NULL, OPT_SOCKET},
	{"shim-config", required_argument, NULL, OPT_SHIM_CONFIG},
	{"shim-link-dir", required_argument, NULL, OPT_SHIM_LINK_DIR},
	{"shim-config-src", required_argument, NULL, OPT_SHIM_CONFIG_SRC},
	{"cri-snapshotter", required_argument, NULL, OPT_CRI_SNAP},
	{"file", required_argument, NULL, OPT_FILE},
	{"node-name", required_argument, NULL, OPT_NODE},
	{"label", required_argument, NULL, OPT_LABEL},
	{"api-server", required_argument, NULL, OPT_API},
	{"token-file", required_argument, NULL, OPT_TOKEN},
	{"ca-file", required_argument, NULL, OPT_CA},
	{"help", no_argument, NULL, 'h'},
	{NULL, 0, NULL, 0},
};

struct args {
	struct node_opts node;
	const char *restart_cmd;
	const char *file;
	struct node_label_opts label;
	char api_buf[512];
	char key_buf[512];
};

static int parse(int argc, char **argv, int first, struct args *a)
{
	int c;

	node_opts_default(&a->node);
	a->label.key = "sporelet.ai/runtime";
	a->label.value = "true";
	a->label.token_file = SA_DIR "/token";
	a->label.ca_file = SA_DIR "/ca.crt";
	a->label.node_name = getenv("NODE_NAME");
	const char *h = getenv("KUBERNETES_SERVICE_HOST"), *p = getenv("KUBERNETES_SERVICE_PORT");

	if (h && *h) {
		bool v6 = strchr(h, ':') != NULL;

		snprintf(a->api_buf, sizeof(a->api_buf), "https://%s%s%s:%s", v6 ? "[" : "", h, v6 ? "]" : "",
			 p && *p ? p : "443");
		a->label.api_server = a->api_buf;
	}
	optind = first;
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case OPT_ROOT: a->node.root = optarg; break;
		case OPT_SRC:
			if (a->node.nsrc == sizeof(a->node.src_dirs) / sizeof(a->node.src_dirs[0])) {
				fprintf(stderr, "sporelet-node: too many --src\n");
				return -1;
			}
			a->node.src_dirs[a->node.nsrc++] = optarg;
			break;
		case OPT_INSTALL_DIR: a->node.install_dir = optarg; break;
		case OPT_CTRD_CONFIG: a->node.containerd_config = optarg; break;
		case OPT_RESTART: a->restart_cmd = optarg; break;
		case OPT_RT_NAME: a->node.ctrd.runtime_name = optarg; break;
		case OPT_RT_TYPE: a->node.ctrd.runtime_type = optarg; break;
		case OPT_RT_SNAP: a->node.ctrd.snapshotter = optarg; break;
		case OPT_PROXY_NAME: a->node.ctrd.proxy_name = optarg; break;
		case OPT_SOCKET: a->node.ctrd.proxy_address = optarg; break;
		case OPT_SHIM_CONFIG: a->node.ctrd.shim_config = optarg; break;
		case OPT_SHIM_LINK_DIR: a->node.shim_link_dir = optarg; break;
		case OPT_SHIM_CONFIG_SRC: a->node.shim_config_src = optarg; break;
		case OPT_CRI_SNAP: a->node.ctrd.cri_snapshotter = optarg; break;
		case OPT_FILE: a->file = optarg; break;
		case OPT_NODE: a->label.node_name = optarg; break;
		case OPT_LABEL: {
			snprintf(a->key_buf, sizeof(a->key_buf), "%s", optarg);
			char *eq = strchr(a->key_buf, '=');

			a->label.key = a->key_buf;
			if (eq) {
				*eq = '\0';
				a->label.value = eq + 1;
			}
			break;
		}
		case OPT_API: a->label.api_server = optarg; break;
		case OPT_TOKEN: a->label.token_file = optarg; break;
		case OPT_CA: a->label.ca_file = *optarg ? optarg : NULL; break;
		case 'h': usage(stdout); exit(0);
		default: return -1;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "sporelet-node: unexpected argument %s\n", argv[optind]);
		return -1;
	}
	return 0;
}

static int fail(sl_error_t *err)
{
	fprintf(stderr, "sporelet-node: %s\n", sl_error_msg(*err));
	sl_error_free(err);
	return 1;
}

/* The restart command runs only when containerd's config changed: restarting
 * containerd for nothing would stop every node's image pulls and CRI calls. */
static int report(const struct args *a, const struct node_report *r)
{
	for (size_t i = 0; node_binaries[i]; i++)
		printf("binary %s/%s %s\n", a->node.install_dir, node_binaries[i], node_file_state_name(r->binaries[i]));
	if (a->node.shim_link_dir && *a->node.shim_link_dir)
		printf("shim-link %s/containerd-shim-spore-v2 %s\n", a->node.shim_link_dir, node_file_state_name(r->shim_link));
	if (a->node.ctrd.shim_config && *a->node.ctrd.shim_config)
		printf("shim-config %s %s\n", a->node.ctrd.shim_config, node_file_state_name(r->shim_config));
	printf("containerd-config %s %s\n", a->node.containerd_config, node_file_state_name(r->config));
	printf("changed=%s\n", r->config_changed ? "yes" : "no");
	fflush(stdout);
	if (r->config_changed && a->restart_cmd) {
		int st = system(a->restart_cmd);

		if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
			fprintf(stderr, "sporelet-node: restart command failed (status %d): %s\n", st, a->restart_cmd);
			return 3;
		}
		printf("restarted=yes\n");
	}
	return 0;
}

/* The config edit alone, on a file (or none), printed to stdout: a dry run
 * of what install or uninstall would write. `changed=` goes to stderr. */
static int cmd_config(int argc, char **argv, struct args *a)
{
	_cleanup_free_ char *in = NULL, *out = NULL;
	size_t inlen = 0, outlen = 0;
	bool exists = false, changed = false, remove = false;
	sl_error_t err = NULL;
	bool install;

	if (argc < 3 || (strcmp(argv[2], "install") != 0 && strcmp(argv[2], "uninstall") != 0)) {
		usage(stderr);
		return 2;
	}
	install = strcmp(argv[2], "install") == 0;
	if (parse(argc, argv, 3, a) < 0) {
		usage(stderr);
		return 2;
	}
	if (a->file) {
		if (sl_read_path(a->file, NODE_CONFIG_MAX, &in, &inlen, &err) < 0) {
			if (err->code != SL_E_NOT_FOUND)
				return fail(&err);
			sl_error_free(&err);
		} else {
			exists = true;
		}
	}
	if (install) {
		if (node_config_install(in, inlen, exists, &a->node.ctrd, &out, &outlen, &changed, &err) < 0)
			return fail(&err);
	} else if (exists) {
		if (node_config_uninstall(in, inlen, &out, &outlen, &remove, &changed, &err) < 0)
			return fail(&err);
	}
	if (out && !remove && fwrite(out, 1, outlen, stdout) != outlen) {
		fprintf(stderr, "sporelet-node: writing stdout failed\n");
		return 1;
	}
	fprintf(stderr, "changed=%s%s\n", changed ? "yes" : "no", remove ? " remove=yes" : "");
	return fflush(stdout) == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
	struct args a;
	struct node_report r;
	sl_error_t err = NULL;

	memset(&a, 0, sizeof(a));
	if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
		usage(argc < 2 ? stderr : stdout);
		return argc < 2 ? 2 : 0;
	}
	const char *cmd = argv[1];

	if (strcmp(cmd, "config") == 0)
		return cmd_config(argc, argv, &a);
	if (parse(argc, argv, 2, &a) < 0) {
		usage(stderr);
		return 2;
	}
	if (strcmp(cmd, "install") == 0) {
		if (node_install(&a.node, &r, &err) < 0)
			return fail(&err);
		return report(&a, &r);
	}
	if (strcmp(cmd, "uninstall") == 0) {
		if (node_uninstall(&a.node, &r, &err) < 0)
			return fail(&err);
		return report(&a, &r);
	}
	if (strcmp(cmd, "label") == 0 || strcmp(cmd, "unlabel") == 0) {
		if (strcmp(cmd, "unlabel") == 0)
			a.label.value = NULL;
		if (!a.label.api_server) {
			fprintf(stderr, "sporelet-node: no API server: --api-server, or run in a pod (KUBERNETES_SERVICE_HOST)\n");
			return 2;
		}
		if (node_label(&a.label, &err) < 0)
			return fail(&err);
		printf("node %s label %s %s\n", a.label.node_name, a.label.key, a.label.value ? "set" : "removed");
		return 0;
	}
	fprintf(stderr, "sporelet-node: unknown command %s\n", cmd);
	usage(stderr);
	return 2;
}
