/* The containerd task service (containerd.task.v2.Task and v3): containers of one pod in one forked VM. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "containerd/events/task.pb-c.h"
#include "containerd/task/v2/shim.pb-c.h"
#include "shim_events.h"
#include "shim_int.h"
#include "shim_mount.h"
#include "shim_pool.h"
#include "shim_stats.h"
#include "sl/digest.h"
#include "sl/file.h"
#include "sl/log.h"
#include "ttrpc.h"

#define SHIM_VERSION_STRING "sporelet-shim-v2"
#define EXIT_VM_LOST 255 /* the VM (or its agent) went away under a process */

/* ---- helpers ----------------------------------------------------------- */

static Google__Protobuf__Timestamp *ts_of(Google__Protobuf__Timestamp *t, const struct timespec *ts)
{
	*t = (Google__Protobuf__Timestamp)GOOGLE__PROTOBUF__TIMESTAMP__INIT;
	t->seconds = ts->tv_sec;
	t->nanos = (int32_t)ts->tv_nsec;
	return t;
}

static pid_t task_pid(struct shim *s)
{
	return s->vm && !s->vm_gone ? s->vm->pid : getpid();
}

static struct shim_container *find_container(struct shim *s, const char *id)
{
	for (struct shim_container *c = s->containers; c; c = c->next)
		if (!strcmp(c->id, id))
			return c;
	return NULL;
}

/* The process (init for exec_id "") of container id, or an error result. */
static struct shim_process *find_process(struct shim *s, const char *id, const char *exec_id,
					 struct ttrpc_result *res)
{
	struct shim_container *c = find_container(s, id);
	if (!c) {
		ttrpc_result_error(res, TTRPC_NOT_FOUND, "container %s: not found", id);
		return NULL;
	}
	if (!exec_id || !exec_id[0])
		return &c->init;
	for (struct shim_process *p = c->execs; p; p = p->next)
		if (!strcmp(p->exec_id, exec_id))
			return p;
	ttrpc_result_error(res, TTRPC_NOT_FOUND, "container %s: exec %s: not found", id, exec_id);
	return NULL;
}

static char *dup_or_null(const char *s)
{
	return s && s[0] ? strdup(s) : NULL;
}

static void process_clear(struct shim_process *p)
{
	shim_process_spec_free(&p->spec);
	free(p->stdin_path);
	free(p->stdout_path);
	free(p->stderr_path);
}

static bool id_ok(const char *id, struct ttrpc_result *res)
{
	if (!id || !id[0] || strlen(id) >= SHIM_ID_MAX || strchr(id, '/')) {
		ttrpc_result_error(res, TTRPC_INVALID_ARGUMENT, "invalid container id");
		return false;
	}
	return true;
}

/* ---- the pod's VM ------------------------------------------------------ */

static void *vm_watch(void *arg)
{
	struct shim *s = arg;
	struct shim_vm *vm = s->vm;
	struct pollfd p = {vm->pidfd, POLLIN, 0};
	while (poll(&p, 1, -1) < 0 && errno == EINTR)
		;
	pthread_mutex_lock(&s->lock);
	bool expected = s->vm_gone;
	s->vm_gone = true;
	shim_vm_reap(vm);
	int st = vm->wait_status;
	/* Sandbox placeholders end with their VM; guest processes end on
	 * their own when their agent connections drop. */
	struct shim_container *sandboxes[64];
	int n = 0;
	for (struct shim_container *c = s->containers; c; c = c->next) {
		if (c->init.placeholder && c->init.st == SP_RUNNING && n < 64) {
			c->init.st = SP_STOPPED;
			c->init.exit_status = EXIT_VM_LOST;
			clock_gettime(CLOCK_REALTIME, &c->init.exited_at);
			sandboxes[n++] = c;
		}
	}
	pthread_cond_broadcast(&s->changed);
	pthread_mutex_unlock(&s->lock);
	if (!expected)
		sl_err("the pod's VM exited", "pid=%d status=%d signal=%d", (int)vm->pid,
		       WIFEXITED(st) ? WEXITSTATUS(st) : -1, WIFSIGNALED(st) ? WTERMSIG(st) : 0);
	pthread_mutex_lock(&s->order);
	for (int i = 0; i < n; i++) {
		Containerd__Events__TaskExit ev = CONTAINERD__EVENTS__TASK_EXIT__INIT;
		Google__Protobuf__Timestamp t;
		ev.container_id = ev.id = sandboxes[i]->id;
		ev.pid = (uint32_t)vm->pid;
		ev.exit_status = EXIT_VM_LOST;
		ev.exited_at = ts_of(&t, &sandboxes[i]->init.exited_at);
		shim_events_publish(s->events, "/tasks/exit", &ev.base);
	}
	pthread_mutex_unlock(&s->order);
	return NULL;
}

/* `spore pull REF --out DIR` for a pod annotation naming an image. */
static int pull_spore(struct shim *s, const char *ref, char *dir, size_t cap, sl_error_t *err)
{
	static unsigned seq;
	if ((size_t)snprintf(dir, cap, "%s/pulled-%u", s->run_dir, __atomic_add_fetch(&seq, 1, __ATOMIC_RELAXED)) >=
	    cap)
		return sl_error_set(err, SL_E_INVALID, "run directory path too long");
	pid_t pid = fork();
	if (pid < 0)
		return sl_error_sys(err, "pull %s: fork", ref);
	if (pid == 0) {
		int nul = open("/dev/null", O_RDWR);
		dup2(nul, 0);
		dup2(nul, 1);
		execl(s->cfg.spore_bin, s->cfg.spore_bin, "pull", ref, "--out", dir, (char *)NULL);
		_exit(127);
	}
	int st;
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		return sl_error_set(err, SL_E_NOT_FOUND, "pod spore %s: `spore pull` failed (status %d)", ref,
				    WIFEXITED(st) ? WEXITSTATUS(st) : -1);
	return 0;
}

/* A spore's identity: the digest of its manifest (the same image unpacked
 * for two containers lives at two paths). */
static int spore_digest(const char *dir, char out[SL_DIGEST_STRLEN], sl_error_t *err)
{
	char path[PATH_MAX + 32];
	snprintf(path, sizeof(path), "%s/spore/manifest.json", dir);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return sl_error_sys(err, "%s", path);
	sl_digest d;
	uint64_t size;
	int rc = sl_sha256_fd(fd, &d, &size, err);
	close(fd);
	if (rc == 0)
		sl_digest_format(&d, out);
	return rc;
}

/* Resumes the pod's VM from spore_dir unless it runs already (from the
 * same spore: a pod is one VM). */
static int ensure_vm(struct shim *s, const char *spore_dir, const char *hostname, const char *cgroup, sl_error_t *err)
{
	char digest[SL_DIGEST_STRLEN];
	if (spore_digest(spore_dir, digest, err) < 0)
		return -1;
	pthread_mutex_lock(&s->vm_lock);
	int rc = 0;
	if (s->vm) {
		if (strcmp(s->vm_spore_digest, digest) != 0)
			rc = sl_error_set(err, SL_E_INVALID,
					  "this pod already runs spore %s; one pod is one VM, so it cannot also run %s (%s)",
					  s->vm_spore_digest, digest, spore_dir);
		else if (s->vm_gone)
			rc = sl_error_set(err, SL_E_GUEST, "the pod's VM has exited");
		pthread_mutex_unlock(&s->vm_lock);
		return rc;
	}
	/* The node's warm pool, when configured: the VM costs only its
	 * restore. Whatever keeps the pool from serving it, the VMM is
	 * spawned as before (and the reason logged). */
	char pool_sock[108];
	const char *pool = NULL;
	if (s->cfg.pool_size) {
		sl_error_t perr = NULL;
		if (shim_pool_ensure(&s->cfg, pool_sock, sizeof(pool_sock), &perr) == 0) {
			pool = pool_sock;
		} else {
			char q[300];
			sl_warn("no warm pool: spawning the VMM", "err=%s", sl_log_quote(sl_error_msg(perr), q, sizeof(q)));
			sl_error_free(&perr);
		}
	}
	struct shim_vm_opts o = {.spore_bin = s->cfg.spore_bin,
				 .spore_dir = spore_dir,
				 .run_dir = s->run_dir,
				 .hostname = hostname,
				 .timeout_ms = s->cfg.ready_timeout_ms,
				 .console_fd = -1,
				 .cgroup = cgroup,
				 .pool_sock = pool,
				 .disk_dir = s->cfg.disk_dir[0] ? s->cfg.disk_dir : NULL,
				 .jail_uid = s->cfg.jail_uid[0] ? s->cfg.jail_uid : NULL};
	struct shim_vm *vm = NULL;
	rc = shim_vm_start(&o, &vm, err);
	if (rc == 0) {
		if (vm->pool_err[0]) {
			char q[300];
			sl_warn("the warm pool did not serve the VM: spawned `spore resume`", "pool=%s err=%s", pool,
				sl_log_quote(vm->pool_err, q, sizeof(q)));
		}
		sl_info("pod VM resumed", "spore=%s pid=%d pooled=%d restore_ms=%.3f cgroup=%s", spore_dir, (int)vm->pid,
			vm->pooled, vm->restore_ms, cgroup ? cgroup : "-");
		if (vm->cgroup_err[0]) {
			char q[300];
			sl_warn("the VM is not in the pod's cgroup", "err=%s", sl_log_quote(vm->cgroup_err, q, sizeof(q)));
		}
		pthread_mutex_lock(&s->lock);
		s->vm = vm;
		s->vm_gone = false;
		snprintf(s->vm_spore, sizeof(s->vm_spore), "%s", spore_dir);
		memcpy(s->vm_spore_digest, digest, sizeof(digest));
		pthread_mutex_unlock(&s->lock);
		if (pthread_create(&s->vm_watch, NULL, vm_watch, s) == 0)
			s->vm_watch_started = true;
	}
	pthread_mutex_unlock(&s->vm_lock);
	return rc;
}

/* Where this container's spore comes from: a checkpoint given to Create,
 * its root filesystem (a spore image), or the pod annotation. */
static int locate_spore(struct shim *s, struct shim_container *c, const char *checkpoint, char *dir, size_t cap,
			sl_error_t *err)
{
	struct stat st;
	char path[PATH_MAX + 32];
	if (checkpoint && checkpoint[0]) {
		snprintf(path, sizeof(path), "%s/spore/manifest.json", checkpoint);
		if (stat(path, &st) < 0)
			return sl_error_set(err, SL_E_INVALID, "checkpoint %s is not a spore directory", checkpoint);
		snprintf(dir, cap, "%s", checkpoint);
		return 0;
	}
	if (c->rootfs_mounted) {
		snprintf(path, sizeof(path), "%s/spore/manifest.json", c->rootfs);
		if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
			snprintf(dir, cap, "%s", c->rootfs);
			return 0;
		}
	}
	const char *ann = shim_spec_annotation(&c->spec, SHIM_SPORE_ANNOTATION);
	if (ann && ann[0]) {
		if (ann[0] == '/') {
			snprintf(path, sizeof(path), "%s/spore/manifest.json", ann);
			if (stat(path, &st) < 0)
				return sl_error_set(err, SL_E_INVALID, "annotation %s: %s is not a spore directory",
						    SHIM_SPORE_ANNOTATION, ann);
			snprintf(dir, cap, "%s", ann);
			return 0;
		}
		return pull_spore(s, ann, dir, cap, err);
	}
	const char *image = shim_spec_annotation(&c->spec, CRI_IMAGE_NAME);
	if (image)
		return sl_error_set(err, SL_E_INVALID,
				    "image %s is not a spore: its root filesystem has no spore/manifest.json (and the "
				    "pod has no %s annotation)",
				    image, SHIM_SPORE_ANNOTATION);
	return sl_error_set(err, SL_E_INVALID,
			    "container %s: its image is not a spore: the root filesystem has no spore/manifest.json "
			    "(and there is no %s annotation)",
			    c->id, SHIM_SPORE_ANNOTATION);
}

/* ---- process lifecycle ---------------------------------------------------- */

static void publish_exit(struct shim *s, struct shim_process *p)
{
	Containerd__Events__TaskExit ev = CONTAINERD__EVENTS__TASK_EXIT__INIT;
	Google__Protobuf__Timestamp t;
	ev.container_id = p->c->id;
	ev.id = p->exec_id[0] ? p->exec_id : p->c->id;
	ev.pid = (uint32_t)task_pid(s);
	ev.exit_status = p->exit_status;
	ev.exited_at = ts_of(&t, &p->exited_at);
	shim_events_publish(s->events, "/tasks/exit", &ev.base);
}

/* On the process's relay thread once it has ended. */
static void on_proc_exit(void *arg, struct shim_proc *proc)
{
	struct shim_process *p = arg;
	struct shim *s = p->s;
	uint32_t status = 0;
	struct timespec at;
	shim_proc_wait(proc, 0, &status, &at);
	pthread_mutex_lock(&s->order);
	pthread_mutex_lock(&s->lock);
	p->st = SP_STOPPED;
	p->exit_status = status;
	p->exited_at = at;
	pthread_cond_broadcast(&s->changed);
	pthread_mutex_unlock(&s->lock);
	sl_info("process exited", "container=%s exec=%s status=%u", p->c->id, p->exec_id, status);
	publish_exit(s, p);
	pthread_mutex_unlock(&s->order);
}

/* Stops a process that never started or a placeholder, as Kill does. */
static void stop_unstarted(struct shim *s, struct shim_process *p, uint32_t status)
{
	p->st = SP_STOPPED;
	p->exit_status = status;
	clock_gettime(CLOCK_REALTIME, &p->exited_at);
	pthread_cond_broadcast(&s->changed);
}

/* ---- handlers ------------------------------------------------------------ */

static void h_create(const struct ttrpc_call *call, struct ttrpc_result *res, void *user)
{
	struct shim *s = user;
	Containerd__Task__V2__CreateTaskRequest *r = containerd__task__v2__create_task_request__unpack(
		NULL, call->payload_len, call->payload);
	if (!r) {
		ttrpc_result_error(res, TTRPC_INTERNAL, "Create: malformed request");
		return;
	}
	sl_error_t err = NULL;
	struct shim_container *c = NULL;
	if (!id_ok(r->id, res))
		goto out;
	c = calloc(1, sizeof(*c));
	if (!c) {
		ttrpc_result_error(res, TTRPC_RESOURCE_EXHAUSTED, "out of memory");
		goto out;
	}
	snprintf(c->id, sizeof(c->id), "%s", r->id);
	snprintf(c->bundle, sizeof(c->bundle), "%s", r->bundle);
	c->init.s = s;
	c->init.c = c;
	if (shim_spec_load(r->bundle, &c->spec, &err) < 0) {
		ttrpc_result_error(res, TTRPC_INVALID_ARGUMENT, "%s", sl_error_msg(err));
		goto out;
	}
	const char *type = shim_spec_annotation(&c->spec, CRI_CONTAINER_TYPE);
	c->sandbox = type && !strcmp(type, "sandbox");
	if (c->sandbox && c->spec.cgroups_path) {
		pthread_mutex_lock(&s->lock);
		snprintf(s->pod_cgroup, sizeof(s->pod_cgroup), "%s", c->spec.cgroups_path);
		pthread_mutex_unlock(&s->lock);
	}
	pthread_mutex_lock(&s->lock);
	bool exists = find_container(s, c->id) != NULL;
	pthread_mutex_unlock(&s->lock);
	if (exists) {
		ttrpc_result_error(res, TTRPC_ALREADY_EXISTS, "container %s: already exists", c->id);
		goto out;
	}
	if (r->n_rootfs) {
		struct shim_mount m[8];
		if (r->n_rootfs > 8) {
			ttrpc_result_error(res, TTRPC_INVALID_ARGUMENT, "container %s: more than 8 rootfs mounts", c->id);
			goto out;
		}
		for (size_t i = 0; i < r->n_rootfs; i++)
			m[i] = (struct shim_mount){r->rootfs[i]->type, r->rootfs[i]->source, r->rootfs[i]->options,
						   r->rootfs[i]->n_options};
		if ((size_t)snprintf(c->rootfs, sizeof(c->rootfs), "%s/rootfs", r->bundle) >= sizeof(c->rootfs)) {
			ttrpc_result_error(res, TTRPC_INVALID_ARGUMENT, "bundle path too long");
			goto out;
		}
		mkdir(c->rootfs, 0711);
		int mrc = shim_mount_rootfs(m, r->n_rootfs, c->rootfs, &err);
		if (mrc < 0) {
			ttrpc_result_error(res, TTRPC_INTERNAL, "container %s: %s", c->id, sl_error_msg(err));
			goto out;
		}
		c->rootfs_mounted = true;
	}
	/* A sandbox runs nothing and needs a VM only if the pod names its
	 * spore; every other container runs in the pod's VM. */
	char spore[PATH_MAX];
	bool want_vm = !c->sandbox || shim_spec_annotation(&c->spec, SHIM_SPORE_ANNOTATION);
	if (want_vm) {
		/* The guest's hostname: the spec's (CRI sets it for pods with
		 * their own network), else the pod's name, as in Kubernetes. */
		const char *host = c->spec.hostname ? c->spec.hostname : shim_spec_annotation(&c->spec, CRI_SANDBOX_NAME);
		if (host && (!host[0] || strlen(host) > 64))
			host = NULL;
		/* The pod's cgroup (the sandbox's) when CRI made one, else this
		 * container's: the VM outlives single containers. */
		pthread_mutex_lock(&s->lock);
		char cgroup[PATH_MAX] = "";
		snprintf(cgroup, sizeof(cgroup), "%s", s->pod_cgroup[0] ? s->pod_cgroup
						      : c->spec.cgroups_path ? c->spec.cgroups_path : "");
		pthread_mutex_unlock(&s->lock);
		if (locate_spore(s, c, r->checkpoint, spore, sizeof(spore), &err) < 0 ||
		    ensure_vm(s, spore, host, cgroup[0] ? cgroup : NULL, &err) < 0) {
			ttrpc_result_error(res, err->code == SL_E_INVALID ? TTRPC_FAILED_PRECONDITION : TTRPC_UNAVAILABLE,
					   "%s", sl_error_msg(err));
			goto out;
		}
	}
	c->init.placeholder = c->sandbox;
	c->init.spec = c->spec.process;
	memset(&c->spec.process, 0, sizeof(c->spec.process)); /* moved */
	c->init.stdin_path = dup_or_null(r->stdin);
	c->init.stdout_path = dup_or_null(r->stdout);
	c->init.stderr_path = dup_or_null(r->stderr);
	c->init.terminal = r->terminal;
	c->init.st = SP_CREATED;
	pthread_mutex_lock(&s->lock);
	if (find_container(s, c->id)) {
		pthread_mutex_unlock(&s->lock);
		ttrpc_result_error(res, TTRPC_ALREADY_EXISTS, "container %s: already exists", c->id);
		goto out;
	}
	c->next = s->containers;
	s->containers = c;
	uint32_t pid = (uint32_t)task_pid(s);
	pthread_mutex_unlock(&s->lock);

	Containerd__Events__TaskIO io = CONTAINERD__EVENTS__TASK_IO__INIT;
	io.stdin = r->stdin;
	io.stdout = r->stdout;
	io.stderr = r->stderr;
	io.terminal = r->terminal;
	Containerd__Events__TaskCreate ev = CONTAINERD__EVENTS__TASK_CREATE__INIT;
	ev.container_id = c->id;
	ev.bundle = c->bundle;
	ev.n_rootfs = r->n_rootfs;
	ev.rootfs = r->rootfs;
	ev.io = &io;
	ev.checkpoint = r->checkpoint;
	ev.pid = pid;
	shim_events_publish(s->events, "/tasks/create", &ev.base);
	sl_info("container created", "id=%s sandbox=%d pid=%u", c->id, c->sandbox, pid);
	Containerd__Task__V2__CreateTaskResponse resp = CONTAINERD__TASK__V2__CREATE_TASK_RESPONSE__INIT;
	resp.pid = pid;
	ttrpc_result_pack(res, &resp.base);
	c = NULL;
out:
	if (c) {
		if (c->rootfs_mounted) {
			sl_error_t e2 = NULL;
			shim_unmount_rootfs(c->rootfs, &e2);
			sl_error_free(&e2);
		}
		process_clear(&c->init);
		shim_spec_free(&c->spec);
		free(c);
	}
	sl_error_free(&err);
	containerd__task__v2__create_task_request__free_unpacked(r, NULL);
}

static int start_process(struct shim *s, struct shim_process *p, struct ttrpc_result *res, uint32_t *pid)
{
	sl_error_t err = NULL;
	if (p->placeholder) {
		p->st = SP_RUNNING;
		*pid = (uint32_t)task_pid(s);
		return 0;
	}
	struct shim_vm *vm = s->vm;
	if (!vm || s->vm_gone) {
		p->st = SP_CREATED;
		ttrpc_result_error(res, TTRPC_FAILED_PRECONDITION, "container %s: the pod's VM is not running", p->c->id);
		return -1;
	}
	struct shim_proc_opts o = {.vsock_path = vm->vsock_path,
				   .spec = &p->spec,
				   .stdin_path = p->stdin_path,
				   .stdout_path = p->stdout_path,
				   .stderr_path = p->stderr_path,
				   .timeout_ms = s->cfg.ready_timeout_ms,
				   .on_exit = on_proc_exit,
				   .arg = p};
	pthread_mutex_unlock(&s->lock);
	struct shim_proc *proc = NULL;
	int rc = shim_proc_start(&o, &proc, &err);
	pthread_mutex_lock(&s->lock);
	if (rc < 0) {
		/* It ends here with 127, the shell's "could not run" (Wait and
		 * Delete report it); no exit event: there was no start event. */
		stop_unstarted(s, p, 127);
		ttrpc_result_error(res, TTRPC_FAILED_PRECONDITION, "container %s: %s", p->c->id, sl_error_msg(err));
		sl_error_free(&err);
		return -1;
	}
	p->proc = proc;
	if (p->stdin_closed)
		shim_proc_close_stdin(proc);
	if (p->st == SP_STARTING)
		p->st = SP_RUNNING; /* unless it already ended (on_proc_exit waits for order) */
	*pid = (uint32_t)task_pid(s);
	return 0;
}

static void h_start(const struct ttrpc_call *call, struct ttrpc_result *res, void *user)
{
	struct shim *s = user;
	Containerd__Task__V2__StartRequest *r =
		containerd__task__v2__start_request__unpack(NULL, call->payload_len, call->payload);
	if (!r) {
		ttrpc_result_error(res, TTRPC_INTERNAL, "Start: malformed request");
		return;
	}
	/* order first: the start event goes out before the process's exit. */
	pthread_mutex_lock(&s->order);
	pthread_mutex_lock(&s->lock);
	struct shim_process *p = find_process(s, r->id, r->exec_id, res);
	uint32_t pid = 0;
	if (p && p->st != SP_CREATED) {
		ttrpc_result_error(res, TTRPC_FAILED_PRECONDITION, "container %s%s%s: already started", r->id,
				   r->exec_id[0] ? " exec " : "", r->exec_id);
		p = NULL;
	}
	if (p) {
		p->st = SP_STARTING;
		if (start_process(s, p, res, &pid) < 0)
			p = NULL;
	}
	pthread_mutex_unlock(&s->lock);
	if (p) {
		if (p->exec_id[0]) {
			Containerd__Events__TaskExecStarted ev = CONTAINERD__EVENTS__TASK_EXEC_STARTED__INIT;
			ev.container_id = r->id;
			ev.exec_id = r->exec_id;
			ev.pid = pid;
			shim_events_publish(s->events, "/tasks/exec-started", &ev.base);
		} else {
			Containerd__Events__TaskStart ev = CONTAINERD__EVENTS__TASK_START__INIT;
			ev.container_id = r->id;
			ev.pid = pid;
			shim_events_publish(s->events, "/tasks/start", &ev.base);
		}
		Containerd__Task__V2__StartResponse resp = CONTAINERD__TASK__V2__START_RESPONSE__INIT;
		resp.pid = pid;
		ttrpc_result_pack(res, &resp.base);
	}
	pthread_mutex_unlock(&s->order);
	containerd__task__v2__start_request__free_unpacked(r, NULL);
}

static void h_wait(const struct ttrpc_call *call, struct ttrpc_result *res, void *user)
{
	struct shim *s = user;
	Containerd__Task__V2__WaitRequest *r =
		containerd__task__v2__wait_request__unpack(NULL, call->payload_len, call->payload);
	if (!r) {
		ttrpc_result_error(res, TTRPC_INTERNAL, "Wait: malformed request");
		return;
	}
	pthread_mutex_lock(&s->lock);
	for (;;) {
		/* Looked up again after every wake-up: Delete may have freed it. */
		struct shim_process *p = find_process(s, r->id, r->exec_id, res);
		if (!p)
			break;
		if (p->st == SP_STOPPED) {
			Containerd__Task__V2__WaitResponse resp = CONTAINERD__TASK__V2__WAIT_RESPONSE__INIT;
			Google__Protobuf__Timestamp t;
			resp.exit_status = p->exit_status;
			resp.exited_at = ts_of(&t, &p->exited_at);
			ttrpc_result_pack(res, &resp.base);
			break;
		}
		if (ttrpc_call_cancelled(call)) {
			ttrpc_result_error(res, TTRPC_CANCELLED, "Wait: cancelled");
			break;
		}
		struct timespec dl;
		clock_gettime(CLOCK_REALTIME, &dl);
		dl.tv_sec += 1;
		pthread_cond_timedwait(&s->changed, &s->lock, &dl);
	}
	pthread_mutex_unlock(&s->lock);
	containerd__task__v2__wait_request__free_unpacked(r, NULL);
}

static void h_kill(const struct ttrpc_call *call, struct ttrpc_result *res, void *user)
{
	struct shim *s = user;
	Containerd__Task__V2__KillRequest *r =
		containerd__task__v2__kill_request__unpack(NULL, call->payload_len, call->payload);
	if (!r) {
		ttrpc_result_error(res, TTRPC_INTERNAL, "Kill: malformed request");
		return;
	}
	if (r->signal < 1 || r->signal > 64) {
		ttrpc_result_error(res, TTRPC_INVALID_ARGUMENT, "Kill: signal %u out of range", r->signal);
		containerd__task__v2__kill_request__free_unpacked(r, NULL);
		return;
	}
	pthread_mutex_lock(&s->order);
	pthread_mutex_lock(&s->lock);
	struct shim_process *p = find_process(s, r->id, r->exec_id, res);
	struct shim_process *stopped[65];
	int nstopped = 0;
	if (p) {
		struct shim_process *targets[65];
		int n = 0;
		targets[n++] = p;
		if (r->all && !r->exec_id[0])
			for (struct shim_process *e = p->c->execs; e && n < 65; e = e->next)
				targets[n++] = e;
		for (int i = 0; i < n; i++) {
			struct shim_process *t = targets[i];
			sl_error_t err = NULL;
			if (t->st == SP_RUNNING && t->proc) {
				if (shim_proc_kill(t->proc, (int)r->signal, &err) < 0) {
					ttrpc_result_error(res, TTRPC_INTERNAL, "Kill: %s", sl_error_msg(err));
					sl_error_free(&err);
				}
			} else if (t->st == SP_RUNNING || t->st == SP_CREATED) {
				/* A placeholder, or a process never started: it ends here. */
				stop_unstarted(s, t, 128 + r->signal);
				stopped[nstopped++] = t;
			} else if (t == p && t->st == SP_STOPPED && !r->all) {
				ttrpc_result_error(res, TTRPC_NOT_FOUND, "container %s: process already finished", r->id);
			}
		}
	}
	pthread_mutex_unlock(&s->lock);
	for (int i = 0; i < nstopped; i++)
		publish_exit(s, stopped[i]);
	pthread_mutex_unlock(&s->order);
	containerd__task__v2__kill_request__free_unpacked(r, NULL);
}

static void free_container(struct shim_container *c)
{
	struct shim_process *e = c->execs;
	while (e) {
		struct shim_process *n = e->next;
		shim_proc_free(e->proc);
		process_clear(e);
		free(e);
		e = n;
	}
	shim_proc_free(c->init.proc);
	process_clear(&c->init);
	if (c->rootfs_mounted) {
		sl_error_t err = NULL;
		if (shim_unmount_rootfs(c->rootfs, &err) < 0) {
			char q[300];
			sl_warn("rootfs not unmounted", "err=%s", sl_log_quote(sl_error_msg(err), q, sizeof(q)));
			sl_error_free(&err);
		}
	}
	shim_spec_free(&c->spec);
	free(c);
}

static void h_delete(const struct ttrpc_call *call, struct ttrpc_result *res, void *user)
{
	struct shim *s = user;
	Containerd__Task__V2__DeleteRequest *r =
		containerd__task__v2__delete_request__unpack(NULL, call->payload_len, call->payload);
	if (!r) {
		ttrpc_result_error(res, TTRPC_INTERNAL, "Delete: malformed request");
		return;
	}
	pthread_mutex_lock(&s->lock);
	struct shim_process *p = find_process(s, r->id, r->exec_id, res);
	struct shim_container *gone = NULL;
	struct shim_process *gone_exec = NULL;
	uint32_t status = 0, pid = (uint32_t)task_pid(s);
	struct timespec at = {0};
	if (p && (p->st == SP_RUNNING || p->st == SP_STARTING)) {
		ttrpc_result_error(res, TTRPC_FAILED_PRECONDITION, "container %s%s%s: still running; kill it first",
				   r->id, r->exec_id[0] ? " exec " : "", r->exec_id);
		p = NULL;
	}
	if (p && !p->exec_id[0]) {
		for (struct shim_process *e = p->c->execs; e; e = e->next) {
			if (e->st == SP_RUNNING || e->st == SP_STARTING) {
				ttrpc_result_error(res, TTRPC_FAILED_PRECONDITION,
						   "container %s: exec %s still running", r->id, e->exec_id);
				p = NULL;
				break;
			}
		}
	}
	if (p) {
		if (p->st == SP_CREATED) /* never started: it ends now */
			stop_unstarted(s, p, p->exit_status);
		status = p->exit_status;
		at = p->exited_at;
		if (p->exec_id[0]) {
			struct shim_process **pp = &p->c->execs;
			while (*pp != p)
				pp = &(*pp)->next;
			*pp = p->next;
			gone_exec = p;
		} else {
			struct shim_container **cp = &s->containers;
			while (*cp != p->c)
				cp = &(*cp)->next;
			*cp = p->c->next;
			gone = p->c;
		}
		pthread_cond_broadcast(&s->changed);
	}
	bool last = gone && !s->containers;
	pthread_mutex_unlock(&s->lock);
	if (!gone && !gone_exec)
		goto out;
	Containerd__Events__TaskDelete ev = CONTAINERD__EVENTS__TASK_DELETE__INIT;
	Google__Protobuf__Timestamp t, t2;
	ev.container_id = r->id;
	ev.pid = pid;
	ev.exit_status = status;
	ev.exited_at = ts_of(&t, &at);
	ev.id = r->exec_id[0] ? r->exec_id : r->id;
	if (gone_exec) {
		shim_proc_free(gone_exec->proc);
		process_clear(gone_exec);
		free(gone_exec);
	} else {
		free_container(gone);
	}
	/* The pod's last container takes the VM with it. */
	if (last && s->vm) {
		pthread_mutex_lock(&s->lock);
		s->vm_gone = true;
		pthread_mutex_unlock(&s->lock);
		shim_vm_stop(s->vm, 2000);
	}
	shim_events_publish(s->events, "/tasks/delete", &ev.base);
	Containerd__Task__V2__DeleteResponse resp = CONTAINERD__TASK__V2__DELETE_RESPONSE__INIT;
	resp.pid = pid;
	resp.exit_status = status;
	resp.exited_at = ts_of(&t2, &at);
	ttrpc_result_pack(res, &resp.base);
out:
	containerd__task__v2__delete_request__free_unpacked(r, NULL);
}

static void h_exec(const struct ttrpc_call *call, struct ttrpc_result *res, void *user)
{
	struct shim *s = user;
	Containerd__Task__V2__ExecProcessRequest *r =
		containerd__task__v2__exec_process_request__unpack(NULL, call->payload_len, call->payload);
	if (!r) {
		ttrpc_result_error(res, TTRPC_INTERNAL, "Exec: malformed request");
		return;
	}
	sl_error_t err = NULL;
	struct shim_process *e = calloc(1, sizeof(*e));
	if (!e) {
		ttrpc_result_error(res, TTRPC_RESOURCE_EXHAUSTED, "out of memory");
		goto out;
	}
	if (!r->exec_id[0] || strlen(r->exec_id) >= SHIM_ID_MAX) {
		ttrpc_result_error(res, TTRPC_INVALID_ARGUMENT, "Exec: invalid exec id");
		goto out;
	}
	if (!r->spec || shim_process_parse((const char *)r->spec->value.data, r->spec->value.len, "exec process spec",
					   &e->spec, &err) < 0) {
		ttrpc_result_error(res, TTRPC_INVALID_ARGUMENT, "Exec: %s", err ? sl_error_msg(err) : "no process spec");
		goto out;
	}
	snprintf(e->exec_id, sizeof(e->exec_id), "%s", r->exec_id);
	e->s = s;
	e->stdin_path = dup_or_null(r->stdin);
	e->stdout_path = dup_or_null(r->stdout);
	e->stderr_path = dup_or_null(r->stderr);
	e->terminal = r->terminal;
	e->st = SP_CREATED;
	pthread_mutex_lock(&s->lock);
	struct shim_container *c = find_container(s, r->id);
	if (!c) {
		ttrpc_result_error(res, TTRPC_NOT_FOUND, "container %s: not found", r->id);
	} else if (c->init.st != SP_RUNNING || c->init.placeholder) {
		ttrpc_result_error(res, TTRPC_FAILED_PRECONDITION, "container %s: not running a process to exec beside",
				   r->id);
		c = NULL;
	} else {
		for (struct shim_process *x = c->execs; x; x = x->next) {
			if (!strcmp(x->exec_id, r->exec_id)) {
				ttrpc_result_error(res, TTRPC_ALREADY_EXISTS, "container %s: exec %s already exists", r->id,
						   r->exec_id);
				c = NULL;
				break;
			}
		}
	}
	if (c) {
		e->c = c;
		e->next = c->execs;
		c->execs = e;
	}
	pthread_mutex_unlock(&s->lock);
	if (!c)
		goto out;
	Containerd__Events__TaskExecAdded ev = CONTAINERD__EVENTS__TASK_EXEC_ADDED__INIT;
	ev.container_id = r->id;
	ev.exec_id = r->exec_id;
	shim_events_publish(s->events, "/tasks/exec-added", &ev.base);
	Google__Protobuf__Empty empty = GOOGLE__PROTOBUF__EMPTY__INIT;
	ttrpc_result_pack(res, &empty.base);
	e = NULL;
out:
	if (e) {
		process_clear(e);
		free(e);
	}
	sl_error_free(&err);
	containerd__task__v2__exec_process_request__free_unpacked(r, NULL);
}

static Containerd__V1__Types__Status status_of(const struct shim *s, const struct shim_process *p)
{
	switch (p->st) {
	case SP_CREATED:
		return CONTAINERD__V1__TYPES__STATUS__CREATED;
	case SP_STARTING:
	case SP_RUNNING:
		return s->paused ? CONTAINERD__V1__TYPES__STATUS__PAUSED : CONTAINERD__V1__TYPES__STATUS__RUNNING;
	case SP_STOPPED:
		return CONTAINERD__V1__TYPES__STATUS__STOPPED;
	}
	return CONTAINERD__V1__TYPES__STATUS__UNKNOWN;
}

/* Answered from memory: containerd gives State 2 s. */
static void h_state(const struct ttrpc_call *call, struct ttrpc_result *res, void *user)
{
	struct shim *s = user;
	Containerd__Task__V2__StateRequest *r =
		containerd__task__v2__state_request__unpack(NULL, call->payload_len, call->payload);
	if (!r) {
		ttrpc_result_error(res, TTRPC_INTERNAL, "State: malformed request");
		return;
	}
	pthread_mutex_lock(&s->lock);
	struct shim_process *p = find_process(s, r->id, r->exec_id, res);
	if (p) {
		Containerd__Task__V2__StateResponse resp = CONTAINERD__TASK__V2__STATE_RESPONSE__INIT;
		Google__Protobuf__Timestamp t;
		resp.id = p->c->id;
		resp.bundle = p->c->bundle;
		resp.pid = (uint32_t)task_pid(s);
		resp.status = status_of(s, p);
		resp.stdin = p->stdin_path ? p->stdin_path : "";
		resp.stdout = p->stdout_path ? p->stdout_path : "";
		resp.stderr = p->stderr_path ? p->stderr_path : "";
		resp.terminal = p->terminal;
		resp.exit_status = p->exit_status;
		if (p->st == SP_STOPPED)
			resp.exited_at = ts_of(&t, &p->exited_at);
		resp.exec_id = p->exec_id;
		ttrpc_result_pack(res, &resp.base);
	}
	pthread_mutex_unlock(&s->lock);
	containerd__task__v2__state_request__free_unpacked(r, NULL);
}

static void h_pids(const struct ttrpc_call *call, struct ttrpc_result *res, void *user)
{
	struct shim *s = user;
	Containerd__Task__V2__PidsRequest *r =
		containerd__task__v2__pids_request__unpack(NULL, call->payload_len, call->payload);
	if (!r) {
		ttrpc_result_error(res, TTRPC_INTERNAL, "Pids: malformed request");
		return;
	}
	pthread_mutex_lock(&s->lock);
	struct shim_container *c = find_container(s, r->id);
	if (!c) {
		ttrpc_result_error(res, TTRPC_NOT_FOUND, "container %s: not found", r->id);
	} else {
		/* The VMM is the container's host process: containerd 2.0 takes
		 * an empty list for a leaked shim. */
		Containerd__V1__Types__ProcessInfo pi = CONTAINERD__V1__TYPES__PROCESS_INFO__INIT;
		Containerd__V1__Types__ProcessInfo *pis[1] = {&pi};
		pi.pid = (uint32_t)task_pid(s);
		Containerd__Task__V2__PidsResponse resp = CONTAINERD__TASK__V2__PIDS_RESPONSE__INIT;
		resp.n_processes = 1;
		resp.processes = pis;
		ttrpc_result_pack(res, &resp.base);
	}
	pthread_mutex_unlock(&s->lock);
	containerd__task__v2__pids_request__free_unpacked(r, NULL);
}

/* Pause and Resume act on the VM: every container of the pod. */
static void pause_resume(struct shim *s, const char *id, bool pause, struct ttrpc_result *res)
{
	pthread_mutex_lock(&s->lock);
	struct shim_container *c = find_container(s, id);
	struct shim_vm *vm = s->vm_gone ? NULL : s->vm;
	pthread_mutex_unlock(&s->lock);
	if (!c) {
		ttrpc_result_error(res, TTRPC_NOT_FOUND, "container %s: not found", id);
		return;
	}
	if (!vm) {
		ttrpc_result_error(res, TTRPC_FAILED_PRECONDITION, "container %s: the pod has no running VM", id);
		return;
	}
	sl_error_t err = NULL;
	if (shim_vm_request(vm, pause ? "pause" : "resume", NULL, 0, &err) < 0) {
		ttrpc_result_error(res, TTRPC_INTERNAL, "%s", sl_error_msg(err));
		sl_error_free(&err);
		return;
	}
	pthread_mutex_lock(&s->lock);
	s->paused = pause;
	pthread_mutex_unlock(&s->lock);
	if (pause) {
		Containerd__Events__TaskPaused ev = CONTAINERD__EVENTS__TASK_PAUSED__INIT;
		ev.container_id = (char *)id;
		shim_events_publish(s->events, "/tasks/paused", &ev.base);
	} else {
		Containerd__Events__TaskResumed ev = CONTAINERD__EVENTS__TASK_RESUMED__INIT;
		ev.container_id = (char *)id;
		shim_events_publish(s->events, "/tasks/resumed", &ev.base);
	}
	Google__Protobuf__Empty empty = GOOGLE__PROTOBUF__EMPTY__INIT;
	ttrpc_result_pack(res, &empty.base);
}

static void h_pause(const struct ttrpc_call *call, struct ttrpc_result *res, void *user)
{
	Containerd__Task__V2__PauseRequest *r =
		containerd__task__v2__pause_request__unpack(NULL, call->payload_len, call->payload);
	if (!r) {
		ttrpc_result_error(res, TTRPC_INTERNAL, "Pause: malformed request");
		return;
	}
	pause_resume(user, r->id, true, res);
	containerd__task__v2__pause_request__free_unpacked(r, NULL);
}

static void h_resume(const struct ttrpc_call *call, struct ttrpc_result *res, void *user)
{
	Containerd__Task__V2__ResumeRequest *r =
		containerd__task__v2__resume_request__unpack(NULL, call->payload_len, call->payload);
	if (!r) {
		ttrpc_result_error(res, TTRPC_INTERNAL, "Resume: malformed request");
		return;
	}
	pause_resume(user, r->id, false, res);
	containerd__task__v2__resume_request__free_unpacked(r, NULL);
}

static void h_close_io(const struct ttrpc_call *call, struct ttrpc_result *res, void *user)
{
	struct shim *s = user;
	Containerd__Task__V2__CloseIORequest *r =
		containerd__task__v2__close_iorequest__unpack(NULL, call->payload_len, call->payload);
	if (!r) {
		ttrpc_result_error(res, TTRPC_INTERNAL, "CloseIO: malformed request");
		return;
	}
	pthread_mutex_lock(&s->lock);
	struct shim_process *p = find_process(s, r->id, r->exec_id, res);
	if (p) {
		if (r->stdin) {
			p->stdin_closed = true;
			if (p->proc)
				shim_proc_close_stdin(p->proc);
		}
		Google__Protobuf__Empty empty = GOOGLE__PROTOBUF__EMPTY__INIT;
		ttrpc_result_pack(res, &empty.base);
	}
	pthread_mutex_unlock(&s->lock);
	containerd__task__v2__close_iorequest__free_unpacked(r, NULL);
}

/* There is no pty in the guest (the agent relays pipes), so a terminal has
 * no size to set; accepted so that `ctr run -t` works. */
static void h_resize_pty(const struct ttrpc_call *call, struct ttrpc_result *res, void *user)
{
	struct shim *s = user;
	Containerd__Task__V2__ResizePtyRequest *r =
		containerd__task__v2__resize_pty_request__unpack(NULL, call->payload_len, call->payload);
	if (!r) {
		ttrpc_result_error(res, TTRPC_INTERNAL, "ResizePty: malformed request");
		return;
	}
	pthread_mutex_lock(&s->lock);
	if (find_process(s, r->id, r->exec_id, res)) {
		Google__Protobuf__Empty empty = GOOGLE__PROTOBUF__EMPTY__INIT;
		ttrpc_result_pack(res, &empty.base);
	}
	pthread_mutex_unlock(&s->lock);
	containerd__task__v2__resize_pty_request__free_unpacked(r, NULL);
}

static void h_stats(const struct ttrpc_call *call, struct ttrpc_result *res, void *user)
{
	struct shim *s = user;
	Containerd__Task__V2__StatsRequest *r =
		containerd__task__v2__stats_request__unpack(NULL, call->payload_len, call->payload);
	if (!r) {
		ttrpc_result_error(res, TTRPC_INTERNAL, "Stats: malformed request");
		return;
	}
	pthread_mutex_lock(&s->lock);
	bool found = find_container(s, r->id) != NULL;
	pid_t pid = task_pid(s);
	pthread_mutex_unlock(&s->lock);
	if (!found) {
		ttrpc_result_error(res, TTRPC_NOT_FOUND, "container %s: not found", r->id);
	} else {
		uint8_t *buf = NULL;
		size_t len = 0;
		sl_error_t err = NULL;
		if (shim_stats_collect(pid, s->cgroup_root, &buf, &len, &err) < 0) {
			ttrpc_result_error(res, TTRPC_INTERNAL, "%s", sl_error_msg(err));
			sl_error_free(&err);
		} else {
			Google__Protobuf__Any any = GOOGLE__PROTOBUF__ANY__INIT;
			any.type_url = SHIM_STATS_TYPE_URL;
			any.value.data = buf;
			any.value.len = len;
			Containerd__Task__V2__StatsResponse resp = CONTAINERD__TASK__V2__STATS_RESPONSE__INIT;
			resp.stats = &any;
			ttrpc_result_pack(res, &resp.base);
			free(buf);
		}
	}
	containerd__task__v2__stats_request__free_unpacked(r, NULL);
}

static void h_connect(const struct ttrpc_call *call, struct ttrpc_result *res, void *user)
{
	struct shim *s = user;
	Containerd__Task__V2__ConnectRequest *r =
		containerd__task__v2__connect_request__unpack(NULL, call->payload_len, call->payload);
	if (!r) {
		ttrpc_result_error(res, TTRPC_INTERNAL, "Connect: malformed request");
		return;
	}
	pthread_mutex_lock(&s->lock);
	Containerd__Task__V2__ConnectResponse resp = CONTAINERD__TASK__V2__CONNECT_RESPONSE__INIT;
	resp.shim_pid = (uint32_t)getpid();
	resp.task_pid = (uint32_t)task_pid(s);
	resp.version = SHIM_VERSION_STRING;
	ttrpc_result_pack(res, &resp.base);
	pthread_mutex_unlock(&s->lock);
	containerd__task__v2__connect_request__free_unpacked(r, NULL);
}

/* containerd sends Shutdown after every task delete: only the last one
 * ends the shim. */
static void h_shutdown(const struct ttrpc_call *call, struct ttrpc_result *res, void *user)
{
	struct shim *s = user;
	Containerd__Task__V2__ShutdownRequest *r =
		containerd__task__v2__shutdown_request__unpack(NULL, call->payload_len, call->payload);
	if (!r) {
		ttrpc_result_error(res, TTRPC_INTERNAL, "Shutdown: malformed request");
		return;
	}
	pthread_mutex_lock(&s->lock);
	bool empty_pod = !s->containers;
	pthread_mutex_unlock(&s->lock);
	if (empty_pod) {
		uint64_t one = 1;
		ssize_t w = write(s->stop_fd, &one, sizeof(one));
		(void)w;
	}
	Google__Protobuf__Empty empty = GOOGLE__PROTOBUF__EMPTY__INIT;
	ttrpc_result_pack(res, &empty.base);
	containerd__task__v2__shutdown_request__free_unpacked(r, NULL);
}

/* A VM's size is fixed by its spore: resources are accepted (CRI sends
 * them on every update) and only logged. */
static void h_update(const struct ttrpc_call *call, struct ttrpc_result *res, void *user)
{
	struct shim *s = user;
	Containerd__Task__V2__UpdateTaskRequest *r =
		containerd__task__v2__update_task_request__unpack(NULL, call->payload_len, call->payload);
	if (!r) {
		ttrpc_result_error(res, TTRPC_INTERNAL, "Update: malformed request");
		return;
	}
	pthread_mutex_lock(&s->lock);
	bool found = find_container(s, r->id) != NULL;
	pthread_mutex_unlock(&s->lock);
	if (!found) {
		ttrpc_result_error(res, TTRPC_NOT_FOUND, "container %s: not found", r->id);
	} else {
		sl_info("resources update accepted, not applied: a VM's size is its spore's", "container=%s", r->id);
		Google__Protobuf__Empty empty = GOOGLE__PROTOBUF__EMPTY__INIT;
		ttrpc_result_pack(res, &empty.base);
	}
	containerd__task__v2__update_task_request__free_unpacked(r, NULL);
}

/* Captures the running pod into a spore at path: the path itself when it
 * does not exist, else into the (empty) directory containerd made. */
static void h_checkpoint(const struct ttrpc_call *call, struct ttrpc_result *res, void *user)
{
	struct shim *s = user;
	Containerd__Task__V2__CheckpointTaskRequest *r =
		containerd__task__v2__checkpoint_task_request__unpack(NULL, call->payload_len, call->payload);
	if (!r) {
		ttrpc_result_error(res, TTRPC_INTERNAL, "Checkpoint: malformed request");
		return;
	}
	sl_error_t err = NULL;
	pthread_mutex_lock(&s->lock);
	bool found = find_container(s, r->id) != NULL;
	struct shim_vm *vm = s->vm_gone ? NULL : s->vm;
	pthread_mutex_unlock(&s->lock);
	char target[PATH_MAX], req[PATH_MAX + 16], reply[256];
	struct stat st;
	bool into_dir = false;
	if (!found) {
		ttrpc_result_error(res, TTRPC_NOT_FOUND, "container %s: not found", r->id);
		goto out;
	}
	if (!vm) {
		ttrpc_result_error(res, TTRPC_FAILED_PRECONDITION, "container %s: the pod has no running VM", r->id);
		goto out;
	}
	if (r->path[0] != '/') {
		ttrpc_result_error(res, TTRPC_INVALID_ARGUMENT, "Checkpoint: path must be absolute");
		goto out;
	}
	if (stat(r->path, &st) == 0 && !S_ISDIR(st.st_mode)) {
		ttrpc_result_error(res, TTRPC_ALREADY_EXISTS, "Checkpoint: %s exists", r->path);
		goto out;
	}
	into_dir = stat(r->path, &st) == 0;
	if (!into_dir && mkdir(r->path, 0755) < 0) {
		sl_error_sys(&err, "Checkpoint: mkdir %s", r->path);
		ttrpc_result_error(res, TTRPC_INTERNAL, "%s", sl_error_msg(err));
		goto out;
	}
	/* The VMM is jailed: it writes only into the directories its jail
	 * shows, one of which holds its control socket. The spore is written
	 * there and then moved to where containerd wants it. */
	{
		char cdir[sizeof(vm->control_path)];
		snprintf(cdir, sizeof(cdir), "%s", vm->control_path);
		char *slash = strrchr(cdir, '/');
		if (slash)
			*slash = '\0';
		static unsigned seq;
		snprintf(target, sizeof(target), "%s/checkpoint-%u", cdir, __atomic_add_fetch(&seq, 1, __ATOMIC_RELAXED));
	}
	snprintf(req, sizeof(req), "capture %s", target);
	if (shim_vm_request(vm, req, reply, sizeof(reply), &err) < 0) {
		ttrpc_result_error(res, TTRPC_INTERNAL, "%s", sl_error_msg(err));
		if (!into_dir)
			rmdir(r->path);
		goto out;
	}
	{
		static const char *const entries[] = {"spore", "chunks"};
		for (int i = 0; i < 2; i++) {
			if (shim_move_entry(target, r->path, entries[i], &err) < 0) {
				ttrpc_result_error(res, TTRPC_INTERNAL, "Checkpoint: %s", sl_error_msg(err));
				sl_error_t e2 = NULL;
				sl_remove_path(target, &e2);
				sl_error_free(&e2);
				goto out;
			}
		}
		rmdir(target);
	}
	sl_info("pod captured", "container=%s path=%s %s", r->id, r->path, reply);
	Containerd__Events__TaskCheckpointed ev = CONTAINERD__EVENTS__TASK_CHECKPOINTED__INIT;
	ev.container_id = r->id;
	ev.checkpoint = r->path;
	shim_events_publish(s->events, "/tasks/checkpointed", &ev.base);
	Google__Protobuf__Empty empty = GOOGLE__PROTOBUF__EMPTY__INIT;
	ttrpc_result_pack(res, &empty.base);
out:
	sl_error_free(&err);
	containerd__task__v2__checkpoint_task_request__free_unpacked(r, NULL);
}

static const struct ttrpc_method task_methods[] = {
	{"State", h_state},	{"Create", h_create},	  {"Start", h_start},	    {"Delete", h_delete},
	{"Pids", h_pids},	{"Pause", h_pause},	  {"Resume", h_resume},	    {"Checkpoint", h_checkpoint},
	{"Kill", h_kill},	{"Exec", h_exec},	  {"ResizePty", h_resize_pty}, {"CloseIO", h_close_io},
	{"Update", h_update}, {"Wait", h_wait},	  {"Stats", h_stats},	    {"Connect", h_connect},
	{"Shutdown", h_shutdown},
};

int shim_service_register(struct shim *s, sl_error_t *err)
{
	return ttrpc_server_register_task(s->srv, task_methods, sizeof(task_methods) / sizeof(task_methods[0]), s,
					  err);
}

void shim_service_teardown(struct shim *s)
{
	pthread_mutex_lock(&s->lock);
	struct shim_container *c = s->containers;
	s->containers = NULL;
	s->vm_gone = true;
	pthread_cond_broadcast(&s->changed);
	pthread_mutex_unlock(&s->lock);
	while (c) {
		struct shim_container *n = c->next;
		free_container(c);
		c = n;
	}
	if (s->vm)
		shim_vm_stop(s->vm, 2000);
	if (s->vm_watch_started)
		pthread_join(s->vm_watch, NULL);
	shim_vm_free(s->vm);
	s->vm = NULL;
}
