/* Shared declarations of the spore CLI's subcommands. */
#ifndef SPORE_CLI_H
#define SPORE_CLI_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include "sl/error.h"
#include "vmm.h"

/* Exit status for every failure of spore itself (usage, I/O, a spore that
 * fails its checks); any other status is the guest's own. */
#define EXIT_SPORE_FAILED 125

int cmd_run(int argc, char **argv);
int cmd_resume(int argc, char **argv);
int cmd_fork(int argc, char **argv);
int cmd_fanout(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_pool(int argc, char **argv);
int cmd_control(int argc, char **argv);

/* "250ms", "2s", "1.5s", "3m"; a bare number is seconds. */
int cli_parse_duration_ms(const char *s, uint64_t *ms, sl_error_t *err);
int cli_parse_u64(const char *s, const char *what, uint64_t min, uint64_t max, uint64_t *out, sl_error_t *err);
/* Prints "spore: <msg>" to stderr and returns EXIT_SPORE_FAILED. */
int cli_fail(sl_error_t *err);
/* --mem (opt 'm') or --vcpus (opt 'c') into a machine shape. */
int cli_parse_machine_opt(int opt, const char *arg, struct vmm_machine *m, sl_error_t *err);
int cli_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- agent_job.c: the conversation with a Linux guest's agent ---- */
#define AGENT_JOB_BOOT_TIMEOUT_MS 120000
struct agent_job_opts {
	const char *vsock_path; /* the VM's vsock socket */
	char *const *argv;      /* a command to run, or NULL */
	char *const *env;       /* generation env and the command's env, or NULL */
	const char *hostname;   /* GENERATION hostname; NULL: unchanged */
	const char *prefix;     /* before every line of the command's output, or NULL */
	bool generation;        /* send GENERATION first (after a restore) */
	bool hold_at_ready;     /* after the command (if any) report READY and stop (capture) */
	bool shutdown_after;    /* power the guest off after the command */
	int timeout_ms;         /* for the agent to answer; <= 0: AGENT_JOB_BOOT_TIMEOUT_MS */
};
enum agent_job_state {
	AGENT_JOB_RUNNING = 0,
	AGENT_JOB_READY,  /* hold_at_ready: warm and ready; status: the command's (-1 without one) */
	AGENT_JOB_DONE,   /* status: the command's (-1 without one) */
	AGENT_JOB_FAILED, /* err says why */
};
struct agent_job;
int agent_job_start(const struct agent_job_opts *o, struct agent_job **out, sl_error_t *err);
int agent_job_fd(const struct agent_job *j); /* readable when the state changed */
enum agent_job_state agent_job_poll(struct agent_job *j, int *status, sl_error_t *err);
void agent_job_times(struct agent_job *j, uint64_t *ready_ns, uint64_t *gen_ns);
void agent_job_free(struct agent_job *j);

/* ---- linux_guest.c ---- */
/* --disk FILE[:ro|:rw] into the machine (checked to exist). */
int cli_parse_disk(const char *arg, struct vmm_machine *m, sl_error_t *err);
/* Where a VM's vsock socket goes: the user's path, or a fresh private
 * directory (0700) that cli_vsock_cleanup removes. */
struct cli_vsock {
	char path[108];
	char dir[96];
	bool made_dir;
	int reaper_fd; /* cli_vsock_reaper's pipe, or -1 */
};
int cli_vsock_setup(const char *user_path, struct cli_vsock *v, sl_error_t *err);
/* For a jailed VMM with a private directory: a small child, started before
 * the jail's namespace exists, removes the directory once the VMM has
 * ended (the jailed VMM cannot: it is a mount point there). Call it before
 * cli_jail_prepare. */
int cli_vsock_reaper(struct cli_vsock *v, sl_error_t *err);
void cli_vsock_cleanup(struct cli_vsock *v);
#define CLI_VSOCK_CID 3u

/* ---- control.c: the per-VM control socket (docs/control-protocol.md) ---- */
#define CONTROL_MAX_CLIENTS 4
struct pollfd;
struct cli_control;
struct cli_control_vm {
	struct vmm_vm *vm;
	bool paused; /* by a control request */
	uint64_t disk_shared, disk_copied; /* bytes of disk chunks reflinked / copied at restore */
	const struct cli_jail_view *jail;  /* what a jailed VMM sees, or NULL */
};
/* Binds PATH (mode 0600); a stale socket is replaced, a live one refused. */
int cli_control_open(const char *path, struct cli_control **out, sl_error_t *err);
void cli_control_close(struct cli_control *c); /* also removes the socket */
/* Fills p with the fds to poll (1 + CONTROL_MAX_CLIENTS); returns how many. */
int cli_control_pollfds(const struct cli_control *c, struct pollfd *p);
/* Serves what p reports; returns the run's exit status after "stop", else -1. */
int cli_control_service(struct cli_control *c, const struct pollfd *p, struct cli_control_vm *cv);

/* When and how a running VM ends. */
enum capture_on { CAP_NONE = 0, CAP_EXIT, CAP_READY, CAP_AFTER, CAP_SIGNAL };
struct drive_opts {
	const char *capture_dir;
	int capture_on;
	uint64_t capture_after_ms;
	int capture_signal;
	uint64_t for_ms;         /* 0: until the guest exits */
	int report_fd;           /* -1, or where to write one JSON line of timings */
	uint64_t launch_ns;      /* process start, for the report */
	uint64_t restore_ns;     /* restore duration, for the report */
	int client_fd;           /* >= 0: a pool client; the run ends when it hangs up */
	bool client_is_parent;   /* client_fd is --parent-fd: the supervisor's end of a pipe */
	struct agent_job *job;   /* Linux guests: readiness, commands, their status */
	bool job_has_command;    /* the run's status is the guest command's */
	const char *control_path;    /* --control PATH */
	struct cli_control *control; /* its socket while the VM runs */
	/* --ready-fd: one line "ready restore_ms=<ms>" once the vCPUs run and,
	 * with an agent, the agent answered (after a restore: the new
	 * generation applied); then closed. -1: none. */
	int ready_fd;
	/* the restore's disk chunks, reflinked / copied (status on the control socket) */
	uint64_t disk_shared, disk_copied;
	const char *disk_dir; /* --disk-dir (vmm_restore_opts.disk_dir) */
	const struct cli_jail_opts *jail; /* --jail: applied just before the vCPUs start, or NULL */
	const char *vsock_path;           /* the VM's vsock socket (its directory is shown in the jail) */
	const char *own_dir;              /* a directory the VMM made for its sockets (private vsock, pool worker) */
};
int cli_parse_capture_on(const char *s, struct drive_opts *o, sl_error_t *err);
/* What a guest's agent gets: run and resume options, a pool's resume-agent request. */
struct cli_guest {
	const char *vsock;
	const char *hostname;
	char *env[65];
	unsigned nenv;
	uint64_t agent_timeout_ms;
};
/* Runs a created (booted or restored) VM: with vsock_path (the guest has an
 * agent) an agent job waits for the agent, applies a new generation (after
 * a restore) and runs command, if any; o->control_path, if set, is served.
 * Frees the VM. */
int cli_drive_guest(struct vmm_vm *vm, struct drive_opts *o, const struct cli_guest *g, const char *vsock_path,
		    char **command, bool restored, const char *prefix);
/* Runs the VM until it ends per opts; returns the process exit status. */
int cli_drive(struct vmm_vm *vm, struct drive_opts *o);

uint64_t cli_now_ns(void);
/* --verify sealed|full, and where seals live: $SPORE_STATE_DIR/seals, else
 * /var/lib/sporelet/seals for root, else $XDG_STATE_HOME/sporelet/seals
 * (~/.local/state/sporelet/seals). */
struct cli_verify {
	struct vmm_restore_opts opts;
	char seal_dir[4096];
};
int cli_parse_verify(const char *s, enum vmm_verify *v, sl_error_t *err);
void cli_verify_init(struct cli_verify *cv, enum vmm_verify v);
/* --disk-dir DIR: an existing directory, absolute (the VMM may chdir). */
int cli_parse_disk_dir(const char *arg, const char **out, sl_error_t *err);
/* One debug line with where a restore's time went. */
void cli_log_restored(struct vmm_vm *vm, const char *dir, const struct drive_opts *o,
		      const struct vmm_restore_stats *rs);
/* ---- jail.c, jail_fs.c: the VMM jail (--jail, --jail-uid; SECURITY.md) ---- */
#define CLI_JAIL_MAX_BINDS 16
#define CLI_JAIL_MAX_DIR_FDS 64
struct cli_jail_opts {
	bool enabled;  /* --jail, or root without --no-jail */
	bool asked;    /* --jail given */
	bool refused;  /* --no-jail */
	bool set_uid;  /* --jail-uid given */
	uid_t uid;
	gid_t gid;
	const char *binds[8]; /* --jail-bind DIR: also shown, writable */
	unsigned nbinds;
};
/* --jail-uid UID[:GID] (GID defaults to UID; neither may be 0). */
int cli_parse_jail_uid(const char *s, struct cli_jail_opts *o, sl_error_t *err);
/* Whether the jail is on: by default as root (what the shim and the pool
 * run), off with --no-jail; contradictions and --jail-uid or --jail-bind
 * without the jail are errors. */
int cli_jail_settle(struct cli_jail_opts *o, sl_error_t *err);
/* --jail-bind DIR */
int cli_parse_jail_bind(const char *s, struct cli_jail_opts *o, sl_error_t *err);
/* What the jail's file system shows: directories at their own paths, each
 * read-only or writable. Nothing else exists inside (no /proc, /dev, /etc). */
struct cli_jail_view {
	unsigned n;
	struct {
		char path[PATH_MAX];
		bool rw;
		const char *what; /* for errors: "--control", "the spore", ... */
	} b[CLI_JAIL_MAX_BINDS];
};
/* Adds path (with parent_of, the directory that holds it). A directory
 * inside one already shown adds nothing; / is refused. */
int cli_jail_view_add(struct cli_jail_view *v, const char *path, bool parent_of, bool rw, const char *what,
		      sl_error_t *err);
/* Whether a capture into dir can be written: its directory is inside a
 * writable directory of v. If not, *shown gets the list of v's directories. */
bool cli_jail_can_capture(const struct cli_jail_view *v, const char *dir, char *shown, size_t cap);
/* The part of the jail that must come before any thread starts: a private
 * mount namespace (threads started earlier would stay outside it),
 * no_new_privs and an empty capability bounding set (inherited by the
 * threads started later). Fails unless the process has one thread. */
int cli_jail_prepare(sl_error_t *err);
int cli_jail_unshare(sl_error_t *err); /* jail_fs.c: the namespace alone */
int cli_jail_prepare_privileges(sl_error_t *err); /* no_new_privs and the bounding set alone */
/* Called once the jail's root is in place, before the directory check:
 * reopen by path what must stay reachable (the VMM's source spore). */
typedef int (*cli_jail_reopen_fn)(void *ctx, sl_error_t *err);
/* Jails the calling process, all of its threads, in this order: the root
 * becomes a read-only tmpfs holding only v's directories (pivot_root; the
 * old root detached), reopen(ctx) runs, every directory descriptor must be
 * inside the jail; o's uid and gid if set (no supplementary groups); no
 * capabilities; then a seccomp allowlist (denied calls fail with EPERM).
 * Needs cli_jail_prepare first. Call it once everything the
 * run needs is open and before the guest runs: nothing of it can be undone. */
int cli_jail_enter(const struct cli_jail_opts *o, const struct cli_jail_view *v, cli_jail_reopen_fn reopen,
		   void *ctx, sl_error_t *err);
/* jail_fs.c, the file-system half of cli_jail_enter */
struct cli_jail_fs {
	int dir_fds[CLI_JAIL_MAX_DIR_FDS]; /* directory descriptors open before the pivot */
	unsigned ndir_fds;
	uint64_t mnt_ids[1 + CLI_JAIL_MAX_BINDS]; /* the jail's root and its binds */
	unsigned nmnt_ids;
};
int cli_jail_mount(const struct cli_jail_view *v, struct cli_jail_fs *fs, sl_error_t *err);
int cli_jail_check_fds(const struct cli_jail_fs *fs, sl_error_t *err);

int cli_write_file_atomic(const char *path, const void *buf, size_t len, sl_error_t *err);
/* One text message (at most 4095 bytes) on a SOCK_SEQPACKET connection,
 * without blocking: a client that does not read its replies loses them,
 * never the VMM its progress. Pool and control sockets answer with it. */
void cli_reply(int fd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
