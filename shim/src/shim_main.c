/* The shim binary's actions: start (one daemon per pod), delete (cleanup), and the daemon's life. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "containerd/task/v2/shim.pb-c.h"
#include "google/protobuf/any.pb-c.h"
#include "runtimeoptions/v1/api.pb-c.h"
#include "shim_events.h"
#include "shim_int.h"
#include "shim_mount.h"
#include "sl/digest.h"
#include "sl/file.h"
#include "sl/log.h"
#include "sl/sock.h"
#include "ttrpc.h"

/* containerd's own root for shim sockets (hard-coded there too). */
#define SHIM_SOCKET_DIR "/run/containerd/s"
/* Our file in the bundle: where the pod's private run directory is, so a
 * `delete` after a crashed daemon can remove it. */
#define SHIM_RUN_DIR_FILE "spore-run-dir"
#define SHIM_OPTIONS_MAX (64u << 10)

static const char usage[] =
	"usage: containerd-shim-spore-v2 -namespace NS -address ADDR -publish-binary BIN -id ID\n"
	"                                [-bundle DIR] [-debug] start|delete\n"
	"       containerd-shim-spore-v2 -v\n"
	"The containerd runtime v2 shim of Sporelet (runtime io.containerd.spore.v2):\n"
	"one VM per pod, resumed from a spore.\n";

int shim_parse_args(int argc, char **argv, struct shim_args *a)
{
	memset(a, 0, sizeof(*a));
	int i = 1;
	for (; i < argc && argv[i][0] == '-' && argv[i][1]; i++) {
		const char *f = argv[i] + 1 + (argv[i][1] == '-');
		const char *eq = strchr(f, '=');
		size_t fl = eq ? (size_t)(eq - f) : strlen(f);
		if ((fl == 5 && !strncmp(f, "debug", 5)) || (fl == 1 && f[0] == 'v') ||
		    (fl == 7 && !strncmp(f, "version", 7))) {
			if (f[0] == 'd')
				a->debug = !eq || strcmp(eq + 1, "false") != 0;
			else
				a->version = true;
			continue;
		}
		const char *val = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
		if (!val)
			goto bad;
		if (fl == 9 && !strncmp(f, "namespace", 9))
			a->ns = val;
		else if (fl == 7 && !strncmp(f, "address", 7))
			a->address = val;
		else if (fl == 14 && !strncmp(f, "publish-binary", 14))
			a->publish_binary = val;
		else if (fl == 2 && !strncmp(f, "id", 2))
			a->id = val;
		else if (fl == 6 && !strncmp(f, "bundle", 6))
			a->bundle = val;
		else if (fl == 6 && !strncmp(f, "socket", 6))
			; /* older containerd: ignored */
		else
			goto bad;
	}
	if (i < argc)
		a->action = argv[i++];
	if (i < argc)
		goto bad;
	if (a->version)
		return 0;
	if (!a->action || (strcmp(a->action, "start") && strcmp(a->action, "delete")) || !a->ns || !a->ns[0] ||
	    !a->id || !a->id[0])
		goto bad;
	if (strlen(a->id) >= SHIM_ID_MAX || strchr(a->id, '/') || strlen(a->ns) >= SHIM_ID_MAX || strchr(a->ns, '/'))
		goto bad;
	return 0;
bad:
	fputs(usage, stderr);
	return 2;
}

/* The runtime options containerd passes on start's stdin: an Any holding
 * runtimeoptions.v1.Options (CRI) whose config_path names our YAML file. */
static int read_options(struct shim_config *cfg, sl_error_t *err)
{
	uint8_t buf[SHIM_OPTIONS_MAX];
	size_t len = 0;
	struct stat st;
	/* A terminal or nothing at all: no options. */
	if (fstat(0, &st) < 0 || isatty(0))
		return 0;
	for (;;) {
		ssize_t n = read(0, buf + len, sizeof(buf) - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return sl_error_sys(err, "read runtime options");
		if (n == 0)
			break;
		len += (size_t)n;
		if (len == sizeof(buf))
			return sl_error_set(err, SL_E_LIMIT, "runtime options larger than %u bytes", SHIM_OPTIONS_MAX);
	}
	if (!len)
		return 0;
	Google__Protobuf__Any *any = google__protobuf__any__unpack(NULL, len, buf);
	if (!any)
		return sl_error_set(err, SL_E_INVALID, "runtime options: not a protobuf Any");
	int rc = 0;
	const char *t = any->type_url;
	const char *base = strrchr(t, '/') ? strrchr(t, '/') + 1 : t;
	if (!strcmp(base, "runtimeoptions.v1.Options")) {
		Runtimeoptions__V1__Options *o =
			runtimeoptions__v1__options__unpack(NULL, any->value.len, any->value.data);
		if (!o)
			rc = sl_error_set(err, SL_E_INVALID, "runtime options: malformed runtimeoptions.v1.Options");
		else if (o->config_path[0])
			rc = shim_config_load(o->config_path, cfg, err);
		if (o)
			runtimeoptions__v1__options__free_unpacked(o, NULL);
	} else if (t[0]) {
		rc = sl_error_set(err, SL_E_INVALID, "runtime options of type %.100s: want runtimeoptions.v1.Options", t);
	}
	google__protobuf__any__free_unpacked(any, NULL);
	return rc;
}

/* containerd's socket formula: sha256(<address>/<ns>/<group>) in hex. */
static void socket_path(const struct shim_args *a, const char *group, char *out, size_t cap)
{
	char in[PATH_MAX * 2];
	snprintf(in, sizeof(in), "%s/%s/%s", a->address ? a->address : "", a->ns, group);
	sl_digest d;
	sl_sha256(in, strlen(in), &d);
	char hex[SL_DIGEST_HEXLEN + 1];
	sl_digest_hex(&d, hex);
	snprintf(out, cap, "%s/%s", SHIM_SOCKET_DIR, hex);
}

static bool socket_alive(const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof(sa.sun_path))
		return false;
	memcpy(sa.sun_path, path, strlen(path) + 1);
	int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		return false;
	bool ok = connect(s, (struct sockaddr *)&sa, sizeof(sa)) == 0;
	close(s);
	return ok;
}

static int write_bundle_file(const char *bundle, const char *name, const char *text, sl_error_t *err)
{
	int dfd = open(bundle, O_DIRECTORY | O_RDONLY | O_CLOEXEC);
	if (dfd < 0)
		return sl_error_sys(err, "bundle %s", bundle);
	int rc = sl_write_atomic(dfd, name, text, strlen(text), 0644, err);
	close(dfd);
	return rc;
}

/* ---- the daemon ------------------------------------------------------------ */

static void log_refused(void *arg, uid_t uid, pid_t pid, unsigned more)
{
	(void)arg;
	char msg[64];
	snprintf(msg, sizeof(msg), "ttrpc: refused peer uid %u", (unsigned)uid);
	sl_warn(msg, "pid=%d serves_uid=%u refused_in_second_before=%u", (int)pid, (unsigned)geteuid(), more);
}

static int daemon_run(struct shim *s, int listen_fd)
{
	sl_error_t err = NULL;
	int status = 0;
	sigset_t mask;
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	signal(SIGPIPE, SIG_IGN); /* a FIFO reader going away is an error, not a death */
	int sfd = signalfd(-1, &mask, SFD_CLOEXEC);
	s->stop_fd = eventfd(0, EFD_CLOEXEC);
	/* containerd and the shim run as the same user, normally root; nobody
	 * else may call. */
	struct ttrpc_server_opts so = {.require_peer_uid = true, .peer_uid = geteuid(), .allow_root = true,
				       .refused = log_refused};
	if (sfd < 0 || s->stop_fd < 0 ||
	    shim_events_new(getenv("TTRPC_ADDRESS"), s->ns, &s->events, &err) < 0 ||
	    ttrpc_server_new(&so, &s->srv, &err) < 0 || shim_service_register(s, &err) < 0 ||
	    ttrpc_server_start(s->srv, listen_fd, &err) < 0) {
		char q[400];
		sl_err("shim cannot serve", "err=%s", sl_log_quote(err ? sl_error_msg(err) : strerror(errno), q, sizeof(q)));
		sl_error_free(&err);
		status = 1;
		goto out;
	}
	sl_info("shim serving", "socket=%s group=%s pid=%d", s->socket_path, s->group, (int)getpid());
	for (;;) {
		struct pollfd p[2] = {{sfd, POLLIN, 0}, {s->stop_fd, POLLIN, 0}};
		if (poll(p, 2, -1) < 0 && errno != EINTR)
			break;
		if (p[0].revents) {
			struct signalfd_siginfo si;
			if (read(sfd, &si, sizeof(si)) == sizeof(si))
				sl_info("shim stopping on a signal", "signal=%u", si.ssi_signo);
			break;
		}
		if (p[1].revents) {
			sl_info("shim stopping: its last container is gone", "%s", "");
			break;
		}
	}
	/* Stop taking calls first (answers in flight are still written). */
	if (ttrpc_server_shutdown(s->srv, 3000, &err) < 0)
		sl_error_free(&err);
out:
	unlink(s->socket_path);
	shim_service_teardown(s);
	shim_events_free(s->events, 3000);
	ttrpc_server_free(s->srv);
	if (sl_remove_path(s->run_dir, &err) < 0) {
		char q[300];
		sl_warn("run directory not removed", "err=%s", sl_log_quote(sl_error_msg(err), q, sizeof(q)));
		sl_error_free(&err);
	}
	if (sfd >= 0)
		close(sfd);
	return status;
}

int shim_cmd_start(const struct shim_args *a)
{
	sl_error_t err = NULL;
	struct shim_spec spec = {0};
	char bundle[PATH_MAX];
	if (!getcwd(bundle, sizeof(bundle))) {
		fprintf(stderr, "start: getcwd: %s\n", strerror(errno));
		return 1;
	}
	struct shim *s = calloc(1, sizeof(*s));
	if (!s) {
		fprintf(stderr, "start: out of memory\n");
		return 1;
	}
	shim_config_defaults(&s->cfg);
	if (read_options(&s->cfg, &err) < 0 || shim_spec_load(bundle, &spec, &err) < 0) {
		fprintf(stderr, "start: %s\n", sl_error_msg(err));
		sl_error_free(&err);
		free(s);
		return 1;
	}
	const char *sandbox = shim_spec_annotation(&spec, CRI_SANDBOX_ID);
	snprintf(s->group, sizeof(s->group), "%s", sandbox && sandbox[0] ? sandbox : a->id);
	snprintf(s->ns, sizeof(s->ns), "%s", a->ns);
	shim_spec_free(&spec);
	socket_path(a, s->group, s->socket_path, sizeof(s->socket_path));
	char address[PATH_MAX + 8];
	snprintf(address, sizeof(address), "unix://%s", s->socket_path);
	/* A pod's later containers join its running shim. */
	if (socket_alive(s->socket_path)) {
		int rc = write_bundle_file(bundle, "address", address, &err);
		if (rc < 0) {
			fprintf(stderr, "start: %s\n", sl_error_msg(err));
			sl_error_free(&err);
			free(s);
			return 1;
		}
		fputs(address, stdout);
		free(s);
		return 0;
	}
	/* A run directory private to this pod: sockets must fit in 108 bytes. */
	char hex[17];
	snprintf(hex, sizeof(hex), "%s", strrchr(s->socket_path, '/') + 1);
	int rootfd = open("/", O_DIRECTORY | O_RDONLY | O_CLOEXEC);
	int mrc = (size_t)snprintf(s->run_dir, sizeof(s->run_dir), "%s/%s", s->cfg.state_dir, hex) > 90
			  ? sl_error_set(&err, SL_E_INVALID, "path too long for sockets")
			  : sl_mkdir_beneath(rootfd, s->cfg.state_dir + 1, 0711, &err);
	if (rootfd >= 0)
		close(rootfd);
	if (mrc < 0) {
		fprintf(stderr, "start: state directory %s: %s\n", s->cfg.state_dir, sl_error_msg(err));
		sl_error_free(&err);
		free(s);
		return 1;
	}
	int lfd = -1;
	unlink(s->socket_path); /* not alive: left by a dead shim */
	/* The run directory holds the VM's vsock and control sockets: one left
	 * behind must still be ours alone (sl_sock_dir_check). */
	char probe[sizeof(s->run_dir) + 8];
	snprintf(probe, sizeof(probe), "%s/vsock", s->run_dir);
	/* With jail_uid the VMM, once it runs as that user, still reaches its
	 * sockets here by path: the directory lets others through (0711) but
	 * not list or write it, and the sockets become that user's alone. */
	mode_t run_mode = s->cfg.jail_uid[0] ? 0711 : 0700;
	if ((mkdir(s->run_dir, run_mode) < 0 && errno != EEXIST) || chmod(s->run_dir, run_mode) < 0 ||
	    sl_sock_dir_check(probe, "shim run directory", &err) < 0 || ttrpc_listen(address, 0, &lfd, &err) < 0 ||
	    write_bundle_file(bundle, SHIM_RUN_DIR_FILE, s->run_dir, &err) < 0 ||
	    write_bundle_file(bundle, "address", address, &err) < 0) {
		fprintf(stderr, "start: %s\n", err ? sl_error_msg(err) : strerror(errno));
		sl_error_free(&err);
		if (lfd >= 0) {
			close(lfd);
			unlink(s->socket_path);
		}
		rmdir(s->run_dir);
		free(s);
		return 1;
	}
	pid_t pid = fork();
	if (pid < 0) {
		fprintf(stderr, "start: fork: %s\n", strerror(errno));
		close(lfd);
		unlink(s->socket_path);
		free(s);
		return 1;
	}
	if (pid > 0) {
		close(lfd);
		fputs(address, stdout);
		free(s);
		return 0;
	}
	/* The daemon: detached, and holding none of containerd's pipes (start's
	 * output is read to its end). Logs go to the bundle's log FIFO. */
	setsid();
	int nul = open("/dev/null", O_RDWR | O_CLOEXEC);
	int log = open("log", O_WRONLY | O_NONBLOCK | O_CLOEXEC);
	if (log >= 0)
		fcntl(log, F_SETFL, fcntl(log, F_GETFL) & ~O_NONBLOCK);
	dup2(nul, 0);
	dup2(nul, 1);
	dup2(log >= 0 ? log : nul, 2);
	if (nul > 2)
		close(nul);
	if (log > 2)
		close(log);
	if (chdir("/") < 0)
		_exit(1);
	sl_log_init("containerd-shim-spore-v2", a->debug ? SL_LOG_DEBUG : SL_LOG_INFO, 2);
	int rc = daemon_run(s, lfd);
	free(s);
	exit(rc); /* not _exit: atexit work (leak checks in sanitizer builds) runs */
}

int shim_cmd_delete(const struct shim_args *a)
{
	sl_error_t err = NULL;
	char bundle[PATH_MAX];
	if (a->bundle)
		snprintf(bundle, sizeof(bundle), "%s", a->bundle);
	else if (!getcwd(bundle, sizeof(bundle)))
		snprintf(bundle, sizeof(bundle), ".");
	char rootfs[PATH_MAX + 8];
	snprintf(rootfs, sizeof(rootfs), "%s/rootfs", bundle);
	if (shim_unmount_rootfs(rootfs, &err) < 0) {
		fprintf(stderr, "delete: %s\n", sl_error_msg(err));
		sl_error_free(&err);
	}
	/* A dead daemon's leftovers: its socket and its run directory (its
	 * VMM died with it: the VMM is killed when its shim dies). */
	char *addr = NULL, *run_dir = NULL;
	size_t len;
	int dfd = open(bundle, O_DIRECTORY | O_RDONLY | O_CLOEXEC);
	if (dfd >= 0 && sl_read_beneath(dfd, "address", 4096, &addr, &len, &err) == 0 &&
	    !strncmp(addr, "unix://", 7) && !socket_alive(addr + 7)) {
		unlink(addr + 7);
		if (sl_read_beneath(dfd, SHIM_RUN_DIR_FILE, 4096, &run_dir, &len, &err) == 0 && run_dir[0] == '/')
			sl_remove_path(run_dir, &err);
	}
	sl_error_free(&err);
	free(addr);
	free(run_dir);
	if (dfd >= 0)
		close(dfd);
	/* What runc and Kata answer for a shim that is gone: SIGKILL, now. */
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	Google__Protobuf__Timestamp t = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
	t.seconds = now.tv_sec;
	t.nanos = (int32_t)now.tv_nsec;
	Containerd__Task__V2__DeleteResponse resp = CONTAINERD__TASK__V2__DELETE_RESPONSE__INIT;
	resp.exit_status = 137;
	resp.exited_at = &t;
	uint8_t *buf = NULL;
	size_t n = 0;
	if (ttrpc_pack(&resp.base, &buf, &n, &err) < 0 || (n && fwrite(buf, 1, n, stdout) != n)) {
		fprintf(stderr, "delete: %s\n", err ? sl_error_msg(err) : "cannot write the response");
		sl_error_free(&err);
		free(buf);
		return 1;
	}
	free(buf);
	return 0;
}
