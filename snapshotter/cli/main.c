/* spore-snapshotter: the containerd proxy snapshotter daemon (store + Snapshots service on a unix socket). */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "oci/cache.h"
#include "sl/log.h"
#include "sl/sock.h"
#include "sl/time.h"
#include "snap_config.h"
#include "snap_grpc.h"
#include "snap_remote.h"
#include "snap_service.h"
#include "snap_store.h"

static void usage(FILE *f)
{
	fprintf(f, "usage: spore-snapshotter [--config FILE] [--root DIR] [--address SOCKET] [--log-level LEVEL]\n"
		   "Serves containerd.services.snapshots.v1.Snapshots on SOCKET for containerd's\n"
		   "[proxy_plugins.<name>] (docs/snapshotter.md). Stops on SIGTERM or SIGINT.\n");
}

/* A listening socket at path; a stale socket file (nobody accepting) is replaced. */
static int listen_at(const char *path, sl_error_t *err)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof(sa.sun_path))
		return sl_error_set(err, SL_E_INVALID, "socket path %s is too long", path);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	/* Directories it needs are made 0700 (containerd is root); existing ones
	 * must not let anyone but root and us replace the socket. */
	if (sl_sock_dir_make(path, 0700, "snapshotter socket", err) < 0)
		return -1;
	int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (probe >= 0 && connect(probe, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
		close(probe);
		return sl_error_set(err, SL_E_EXISTS, "%s: another snapshotter is serving it", path);
	}
	if (probe >= 0)
		close(probe);
	if (unlink(path) < 0 && errno != ENOENT)
		return sl_error_sys(err, "removing stale socket %s", path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return sl_error_sys(err, "socket");
	mode_t old = umask(0077); /* containerd runs as root: nobody else may call */
	int rc = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
	umask(old);
	/* 0600 as documented (bind gave 0700); nobody can connect before listen. */
	if (rc < 0 || chmod(path, 0600) < 0 || listen(fd, 128) < 0) {
		sl_error_sys(err, "listening on %s", path);
		close(fd);
		return -1;
	}
	return fd;
}

/* Connections from uids other than root and ours (snap_grpc_server_on_refused). */
static void log_refused(void *arg, uid_t uid, unsigned more)
{
	(void)arg;
	char msg[64];
	snprintf(msg, sizeof(msg), "grpc: refused peer uid %u", (unsigned)uid);
	sl_warn(msg, "serves_uid=%u refused_in_second_before=%u", (unsigned)geteuid(), more);
}

/* The node cache's garbage collection, every interval_s (cache_gc in the config). */
struct gc_loop {
	struct snap_remote *remote;
	unsigned interval_s;
	uint64_t max_bytes;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool stop;
	pthread_t thread;
};

static void *gc_main(void *arg)
{
	struct gc_loop *g = arg;
	pthread_mutex_lock(&g->mu);
	while (!g->stop) {
		struct timespec dl;
		sl_deadline_ms(&dl, CLOCK_MONOTONIC, g->interval_s * 1000u);
		while (!g->stop && pthread_cond_timedwait(&g->cv, &g->mu, &dl) == 0)
			;
		if (g->stop)
			break;
		pthread_mutex_unlock(&g->mu);
		struct oci_cache_stats st;
		sl_error_t err = NULL;
		if (snap_remote_cache_gc(g->remote, g->max_bytes, &st, &err) < 0)
			sl_warn("cache gc failed", "error=\"%s\"", sl_error_msg(err));
		else
			sl_log(st.removed ? SL_LOG_INFO : SL_LOG_DEBUG, "cache gc",
			       "removed=%llu removed_mib=%.1f entries=%llu mib=%.1f", (unsigned long long)st.removed,
			       st.removed_bytes / 1048576.0, (unsigned long long)st.entries, st.bytes / 1048576.0);
		sl_error_free(&err);
		pthread_mutex_lock(&g->mu);
	}
	pthread_mutex_unlock(&g->mu);
	return NULL;
}

static int gc_start(struct gc_loop *g, struct snap_remote *r, const struct snap_config *cfg, sl_error_t *err)
{
	g->remote = r;
	g->interval_s = cfg->gc_interval_s;
	g->max_bytes = cfg->gc_max_mib << 20;
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&g->cv, &ca);
	pthread_condattr_destroy(&ca);
	pthread_mutex_init(&g->mu, NULL);
	if (pthread_create(&g->thread, NULL, gc_main, g) != 0)
		return sl_error_set(err, SL_E_NOMEM, "cannot start the cache gc thread");
	return 0;
}

static void gc_stop(struct gc_loop *g)
{
	pthread_mutex_lock(&g->mu);
	g->stop = true;
	pthread_cond_signal(&g->cv);
	pthread_mutex_unlock(&g->mu);
	pthread_join(g->thread, NULL);
	pthread_cond_destroy(&g->cv);
	pthread_mutex_destroy(&g->mu);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"config", required_argument, NULL, 'c'}, {"root", required_argument, NULL, 'r'},
		{"address", required_argument, NULL, 'a'}, {"log-level", required_argument, NULL, 'l'},
		{"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
	};
	const char *config = NULL, *root = NULL, *address = NULL, *level = NULL;
	for (int c; (c = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
		switch (c) {
		case 'c': config = optarg; break;
		case 'r': root = optarg; break;
		case 'a': address = optarg; break;
		case 'l': level = optarg; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "spore-snapshotter: unexpected argument %s\n", argv[optind]);
		usage(stderr);
		return 2;
	}
	sl_log_init("spore-snapshotter", SL_LOG_INFO, 2);
	_cleanup_error_ sl_error_t err = NULL;
	struct snap_config cfg;
	snap_config_defaults(&cfg);
	if (config && snap_config_load(config, &cfg, &err) < 0) {
		sl_err("bad configuration", "error=\"%s\"", sl_error_msg(err));
		return 2;
	}
	if (level)
		snprintf(cfg.log_level, sizeof(cfg.log_level), "%s", level);
	if ((root && (root[0] != '/' || strlen(root) >= sizeof(cfg.root))) ||
	    (address && (address[0] != '/' || strlen(address) >= sizeof(cfg.address)))) {
		fprintf(stderr, "spore-snapshotter: --root and --address take absolute paths (socket paths < %zu bytes)\n",
			sizeof(cfg.address));
		return 2;
	}
	if (root)
		snprintf(cfg.root, sizeof(cfg.root), "%s", root);
	if (address)
		snprintf(cfg.address, sizeof(cfg.address), "%s", address);
	int lv = sl_log_level_parse(cfg.log_level);
	if (lv < 0) {
		fprintf(stderr, "spore-snapshotter: unknown log level %s\n", cfg.log_level);
		return 2;
	}
	sl_log_init("spore-snapshotter", lv, 2);

	/* Signals are taken by sigwait below; every thread inherits the mask. */
	sigset_t stop;
	sigemptyset(&stop);
	sigaddset(&stop, SIGTERM);
	sigaddset(&stop, SIGINT);
	pthread_sigmask(SIG_BLOCK, &stop, NULL);
	signal(SIGPIPE, SIG_IGN);

	struct snap_store *store = NULL;
	struct snap_remote *remote = NULL;
	struct snap_service *svc = NULL;
	struct snap_grpc_server *srv = NULL;
	const char *insecure[SNAP_CONFIG_MAX_INSECURE];
	for (size_t i = 0; i < cfg.ninsecure; i++)
		insecure[i] = cfg.insecure[i];
	char state[PATH_MAX + 8];
	snprintf(state, sizeof(state), "%s/tmp", cfg.root);
	struct snap_remote_opts ro = {.spore_bin = cfg.spore_bin, .cache_dir = cfg.cache_dir,
				      .insecure_registries = insecure, .ninsecure = cfg.ninsecure,
				      .registries = cfg.registries, .nregistries = cfg.nregistries,
				      .state_dir = state, .pull_timeout_s = cfg.pull_timeout_s};
	int lfd = -1, rc = 1;
	bool bound = false; /* the socket file is ours to remove */
	/* root/tmp: scratch for credentials handed to spore pull, private. */
	if (snap_store_open(&store, cfg.root, &err) < 0 ||
	    ((mkdir(state, 0700) < 0 && errno != EEXIST) ? sl_error_sys(&err, "creating %s", state) : 0) < 0 ||
	    snap_remote_new(&remote, &ro, &err) < 0 ||
	    snap_service_new(&svc, store, remote, &err) < 0 || snap_grpc_server_new(&srv, &err) < 0 ||
	    (snap_grpc_server_on_refused(srv, log_refused, NULL), snap_service_register(srv, svc, &err) < 0) || (lfd = listen_at(cfg.address, &err)) < 0 ||
	    !(bound = true) || snap_grpc_server_start(srv, sl_steal_fd(lfd), &err) < 0) {
		sl_err("cannot serve", "error=\"%s\"", sl_error_msg(err));
		goto out;
	}
	struct gc_loop gc = {0};
	bool gc_on = cfg.gc_interval_s > 0;
	if (gc_on && gc_start(&gc, remote, &cfg, &err) < 0) {
		sl_err("cannot serve", "error=\"%s\"", sl_error_msg(err));
		gc_on = false;
		goto out;
	}
	char qroot[PATH_MAX + 8], qaddr[128];
	sl_info("serving", "address=%s root=%s", sl_log_quote(cfg.address, qaddr, sizeof(qaddr)),
		sl_log_quote(cfg.root, qroot, sizeof(qroot)));
	int sig = 0;
	sigwait(&stop, &sig);
	sl_info("stopping", "signal=%d", sig);
	rc = 0;
	if (gc_on)
		gc_stop(&gc);
out:
	if (srv) {
		snap_grpc_server_shutdown(srv, 5000);
		snap_grpc_server_free(srv);
	}
	if (lfd >= 0)
		close(lfd);
	if (bound)
		unlink(cfg.address);
	snap_service_free(svc);
	snap_remote_free(remote);
	if (store)
		snap_store_close(store);
	return rc;
}
