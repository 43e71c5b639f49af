/* The run loop shared by run and resume: events, timers, signals, capture. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "cli.h"
#include "sl/log.h"

static int arm(int tfd, uint64_t ms)
{
	struct itimerspec its = {.it_value = {.tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000}};
	if (!ms)
		its.it_value.tv_nsec = 1;
	return timerfd_settime(tfd, 0, &its, NULL);
}

static int capture(struct vmm_vm *vm, const char *dir)
{
	sl_error_t err = NULL;
	struct vmm_capture_stats st;
	if (vmm_pause(vm, &err) < 0 || vmm_capture(vm, dir, &st, &err) < 0)
		return cli_fail(&err);
	sl_info("captured", "dir=%s ms=%.2f chunks_written=%llu chunks_reused=%llu zero_chunks=%llu mib_hashed=%llu",
		dir, st.total_ns / 1e6, (unsigned long long)st.chunks_written,
		(unsigned long long)st.chunks_reused, (unsigned long long)st.zero_chunks,
		(unsigned long long)(st.bytes_hashed >> 20));
	return 0;
}

static void report(const struct drive_opts *o, uint64_t first_output_ns, int status)
{
	if (o->report_fd < 0)
		return;
	char line[256];
	int n = snprintf(line, sizeof(line),
			 "{\"pid\":%d,\"restore_ms\":%.3f,\"first_output_ms\":%.3f,\"status\":%d}\n", getpid(),
			 o->restore_ns / 1e6, first_output_ns ? (first_output_ns - o->launch_ns) / 1e6 : -1.0,
			 status);
	ssize_t w = write(o->report_fd, line, (size_t)n);
	(void)w;
}

#define DRIVE_POWEROFF_GRACE_S 10

static void announce_ready(struct drive_opts *o)
{
	if (o->ready_fd < 0)
		return;
	char line[64];
	int n = snprintf(line, sizeof(line), "ready restore_ms=%.3f\n", o->restore_ns / 1e6);
	ssize_t w = write(o->ready_fd, line, (size_t)n);
	(void)w; /* a reader that went away wanted nothing more */
	close(o->ready_fd);
	o->ready_fd = -1;
}

/* The agent job moved on: capture at READY, a command's end, a failure.
 * Returns the run's final status, or -1 to go on. */
static int job_event(struct vmm_vm *vm, struct drive_opts *o, int grace_fd, int *cmd_status)
{
	sl_error_t err = NULL;
	int st;
	switch (agent_job_poll(o->job, &st, &err)) {
	case AGENT_JOB_RUNNING:
		return -1;
	case AGENT_JOB_READY: {
		/* Only with --capture-on ready: the agent answered and the warm-up
		 * command (if any) ended. A failed warm-up is not captured. */
		uint64_t ready, gen;
		agent_job_times(o->job, &ready, &gen);
		sl_info("agent ready", "ms_after_launch=%.2f", (ready - o->launch_ns) / 1e6);
		if (o->job_has_command && st != 0) {
			sl_err("not captured: the warm-up command failed", "status=%d", st);
			return st;
		}
		return capture(vm, o->capture_dir);
	}
	case AGENT_JOB_DONE: {
		uint64_t ready, gen;
		agent_job_times(o->job, &ready, &gen);
		sl_info("agent ready", "ms_after_launch=%.2f", (ready - o->launch_ns) / 1e6);
		if (gen)
			sl_info("new generation applied", "ms_after_launch=%.2f", (gen - o->launch_ns) / 1e6);
		announce_ready(o);
		if (!o->job_has_command)
			return -1;
		*cmd_status = st;
		arm(grace_fd, DRIVE_POWEROFF_GRACE_S * 1000);
		return -1;
	}
	case AGENT_JOB_FAILED:
		return cli_fail(&err);
	}
	return -1;
}

static int reopen_source(void *vm, sl_error_t *err)
{
	return vmm_reopen_source(vm, err);
}

/* What the jail shows: the spore (read-only: its chunks are what a capture
 * links), the sockets' directories (the control socket and the vsock
 * directory are removed at the end; guest-initiated vsock connections go to
 * <vsock>_<port> beside it), where --capture writes, and --jail-bind. */
static int jail(struct vmm_vm *vm, const struct drive_opts *o, struct cli_jail_view *v, sl_error_t *err)
{
	const char *src = vmm_source_path(vm);
	if ((src && cli_jail_view_add(v, src, false, false, "the spore", err) < 0) ||
	    (o->vsock_path && cli_jail_view_add(v, o->vsock_path, true, true, "--vsock", err) < 0) ||
	    (o->control_path && cli_jail_view_add(v, o->control_path, true, true, "--control", err) < 0) ||
	    (o->capture_dir && cli_jail_view_add(v, o->capture_dir, true, true, "--capture", err) < 0))
		return -1;
	for (unsigned i = 0; i < o->jail->nbinds; i++)
		if (cli_jail_view_add(v, o->jail->binds[i], false, true, "--jail-bind", err) < 0)
			return -1;
	if (vmm_hold_host_files(vm, err) < 0)
		return -1;
	/* Running as --jail-uid, the VMM still reaches its own sockets by path
	 * (the agent job reconnects to the vsock socket; the control and vsock
	 * sockets are removed at the end): they, and a directory it made for
	 * them, become that user's. A directory the caller chose must let that
	 * user in (the shim makes its run directory 0711 for it). */
	if (o->jail->set_uid) {
		const struct cli_jail_opts *j = o->jail;
		const char *mine[] = {o->vsock_path, o->control_path, o->own_dir};
		for (size_t i = 0; i < sizeof(mine) / sizeof(mine[0]); i++)
			if (mine[i] && lchown(mine[i], j->uid, j->gid) < 0 && errno != ENOENT)
				return sl_error_sys(err, "jail: hand %s to uid %u", mine[i], (unsigned)j->uid);
	}
	return cli_jail_enter(o->jail, v, reopen_source, vm, err);
}

int cli_drive(struct vmm_vm *vm, struct drive_opts *o)
{
	sigset_t mask;
	sigemptyset(&mask);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGTERM);
	if (o->capture_on == CAP_SIGNAL)
		sigaddset(&mask, o->capture_signal);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	int sfd = signalfd(-1, &mask, SFD_CLOEXEC);
	int for_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
	int cap_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
	/* After a guest command ends, the guest powers off (so its disks are
	 * synced); this bounds the wait. */
	int grace_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
	if (sfd < 0 || for_fd < 0 || cap_fd < 0 || grace_fd < 0) {
		perror("spore: signalfd/timerfd");
		return EXIT_SPORE_FAILED;
	}
	if (o->for_ms)
		arm(for_fd, o->for_ms);
	if (o->capture_on == CAP_AFTER)
		arm(cap_fd, o->capture_after_ms);

	sl_error_t err = NULL;
	/* Everything the run needs is open (the VM, its sockets, the control
	 * socket, the timers): the jail goes on before the guest runs. */
	uint64_t jail_ns = cli_now_ns();
	_cleanup_free_ struct cli_jail_view *view = NULL;
	if (o->jail && o->jail->enabled) {
		if (!(view = calloc(1, sizeof(*view))))
			sl_error_set(&err, SL_E_NOMEM, "jail view");
		if (!view || jail(vm, o, view, &err) < 0)
			return cli_fail(&err);
		sl_debug("jailed", "ms=%.3f", (cli_now_ns() - jail_ns) / 1e6);
	}
	uint64_t start_ns = cli_now_ns();
	if (vmm_start(vm, &err) < 0)
		return cli_fail(&err);
	if (!o->job)
		announce_ready(o);
	uint64_t first_output_ns = 0;
	int status = -1, cmd_status = -1;
	struct cli_control_vm cv = {.vm = vm, .disk_shared = o->disk_shared, .disk_copied = o->disk_copied, .jail = view};
	while (status < 0) {
		struct pollfd p[7 + 1 + CONTROL_MAX_CLIENTS] = {
			{vmm_event_fd(vm), POLLIN, 0}, {sfd, POLLIN, 0},	 {for_fd, POLLIN, 0},
			{cap_fd, POLLIN, 0},	       {grace_fd, POLLIN, 0}, {o->job ? agent_job_fd(o->job) : -1, POLLIN, 0},
			{o->client_fd, POLLRDHUP, 0}};
		int np = 7 + cli_control_pollfds(o->control, p + 7);
		if (poll(p, (nfds_t)np, -1) < 0) {
			if (errno == EINTR)
				continue;
			perror("spore: poll");
			status = EXIT_SPORE_FAILED;
			break;
		}
		if (p[0].revents) {
			struct vmm_event ev;
			for (vmm_next_event(vm, &ev); ev.kind != VMM_EV_NONE && status < 0; vmm_next_event(vm, &ev)) {
				switch (ev.kind) {
				case VMM_EV_OUTPUT:
					if (!first_output_ns) {
						first_output_ns = cli_now_ns();
						sl_debug("first output", "ms_after_start=%.3f",
							 (first_output_ns - start_ns) / 1e6);
					}
					break;
				case VMM_EV_EXIT:
					if (o->capture_on == CAP_EXIT && capture(vm, o->capture_dir) != 0)
						status = EXIT_SPORE_FAILED;
					else
						status = cmd_status >= 0 ? cmd_status : ev.code;
					break;
				case VMM_EV_READY:
					/* With an agent (the test guest with vsock),
					 * "ready" is the agent's READY (job_event). */
					if (o->capture_on == CAP_READY && !o->job)
						status = capture(vm, o->capture_dir);
					break;
				case VMM_EV_SHUTDOWN:
				case VMM_EV_ERROR:
					fprintf(stderr, "spore: guest failed: %s\n", ev.msg);
					status = EXIT_SPORE_FAILED;
					break;
				}
			}
		}
		if (status >= 0)
			break;
		if (p[1].revents) {
			struct signalfd_siginfo si;
			if (read(sfd, &si, sizeof(si)) == sizeof(si)) {
				if (o->capture_on == CAP_SIGNAL && (int)si.ssi_signo == o->capture_signal)
					status = capture(vm, o->capture_dir);
				else
					status = 128 + (int)si.ssi_signo;
			}
		}
		if (p[2].revents)
			status = 0; /* --for elapsed: a normal end */
		if (p[4].revents && status < 0) {
			sl_warn("guest did not power off after its command", "wait_s=%d", DRIVE_POWEROFF_GRACE_S);
			status = cmd_status;
		}
		if (p[5].revents && status < 0)
			status = job_event(vm, o, grace_fd, &cmd_status);
		/* A pool client that hung up (killed, or done with the guest):
		 * nobody is left to see the guest, so it ends like --for. */
		if (o->client_fd >= 0 && (p[6].revents & (POLLRDHUP | POLLHUP | POLLERR)) && status < 0) {
			if (o->client_is_parent)
				sl_warn("the supervisor went away (--parent-fd closed): stopping", "%s", "");
			else
				sl_info("pool client went away", "%s", "");
			status = 0;
		}
		if (p[3].revents && status < 0)
			status = capture(vm, o->capture_dir);
		if (status < 0)
			status = cli_control_service(o->control, p + 7, &cv);
	}
	vmm_pause(vm, &err);
	sl_error_free(&err);
	report(o, first_output_ns, status);
	close(sfd);
	close(for_fd);
	close(cap_fd);
	close(grace_fd);
	return status;
}

int cli_drive_guest(struct vmm_vm *vm, struct drive_opts *o, const struct cli_guest *g, const char *vsock_path,
		    char **command, bool restored, const char *prefix)
{
	sl_error_t err = NULL;
	struct agent_job *job = NULL;
	bool want_job = vsock_path && (command || restored || o->capture_on == CAP_READY);
	if (want_job) {
		struct agent_job_opts jo = {.vsock_path = vsock_path,
					    .argv = command,
					    .env = g->nenv ? (char *const *)g->env : NULL,
					    .hostname = g->hostname,
					    .prefix = prefix,
					    .generation = restored,
					    .hold_at_ready = o->capture_on == CAP_READY,
					    .shutdown_after = command != NULL,
					    .timeout_ms = (int)g->agent_timeout_ms};
		if (agent_job_start(&jo, &job, &err) < 0) {
			vmm_destroy(vm);
			return cli_fail(&err);
		}
		o->job = job;
		o->job_has_command = command != NULL;
	}
	o->vsock_path = vsock_path;
	if (o->control_path && cli_control_open(o->control_path, &o->control, &err) < 0) {
		agent_job_free(job);
		o->job = NULL;
		vmm_destroy(vm);
		return cli_fail(&err);
	}
	int rc = cli_drive(vm, o);
	cli_control_close(o->control);
	o->control = NULL;
	/* The job first: it may be blocked on the VM's socket. */
	agent_job_free(job);
	o->job = NULL;
	vmm_destroy(vm);
	return rc;
}
