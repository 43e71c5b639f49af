/* The opt-in VMM jail (--jail): no new privileges, an optional unprivileged uid, no capabilities, a seccomp allowlist. */
#include <errno.h>
#include <grp.h>
#include <linux/sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <seccomp.h>
#include <sys/capability.h>

#include "cli.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#endif

int cli_parse_jail_uid(const char *s, struct cli_jail_opts *o, sl_error_t *err)
{
	char *end;
	errno = 0;
	unsigned long u = strtoul(s, &end, 10);
	if (end == s || errno || u == 0 || u >= 0xffffffffUL || (*end && *end != ':') || s[0] == '-' || s[0] == '+' ||
	    s[0] == ' ')
		return sl_error_set(err, SL_E_INVALID, "--jail-uid %s: want UID[:GID], 1..4294967294 (not root)", s);
	unsigned long g = u;
	if (*end == ':') {
		const char *gs = end + 1;
		errno = 0;
		g = strtoul(gs, &end, 10);
		if (end == gs || errno || *end || g == 0 || g >= 0xffffffffUL || gs[0] == '-' || gs[0] == '+' ||
		    gs[0] == ' ')
			return sl_error_set(err, SL_E_INVALID, "--jail-uid %s: want UID[:GID], GID 1..4294967294 (not root)", s);
	}
	o->uid = (uid_t)u;
	o->gid = (gid_t)g;
	o->set_uid = true;
	return 0;
}

/* Syscalls the VMM makes once its guest runs (vCPU and device threads, the
 * run loop, the control socket, capture, teardown), found by tracing
 * jailed runs and by reading drive.c, control.c, agent_job.c, vmm/src.
 * Names libseccomp does not know on this architecture are skipped. */
static const char *const jail_allow[] = {
	/* I/O on descriptors opened before the jail, and KVM */
	"read", "write", "readv", "writev", "pread64", "pwrite64", "preadv", "pwritev", "lseek", "close",
	"close_range", "ioctl", "fcntl", "dup", "dup2", "dup3", "fstat", "fstatfs", "newfstatat", "statx",
	/* waiting */
	"poll", "ppoll", "select", "pselect6", "epoll_create1", "epoll_ctl", "epoll_wait", "epoll_pwait",
	"epoll_pwait2", "timerfd_create", "timerfd_settime", "timerfd_gettime", "signalfd4", "eventfd2", "pipe2",
	"futex", "clock_gettime", "clock_getres", "clock_nanosleep", "nanosleep", "gettimeofday", "time",
	"sched_yield", "sched_getaffinity",
	/* signals (vCPU kicks are tgkill to our own threads, below) */
	"rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "rt_sigtimedwait", "rt_sigpending", "sigaltstack",
	/* memory */
	"mmap", "munmap", "mprotect", "madvise", "brk", "mremap", "msync", "mincore",
	/* threads (clone only with CLONE_THREAD, below) and process identity */
	"set_robust_list", "get_robust_list", "rseq", "exit", "exit_group", "gettid", "getpid", "getppid",
	"getuid", "geteuid", "getgid", "getegid", "getresuid", "getresgid", "getgroups", "getrandom", "getrusage", "uname",
	"prctl", "capget",
	/* Unix sockets (socket and socketpair only for AF_UNIX, below) */
	"accept", "accept4", "connect", "bind", "listen", "recvmsg", "sendmsg", "recvfrom", "sendto", "recvmmsg",
	"sendmmsg", "shutdown", "getsockopt", "setsockopt", "getsockname", "getpeername",
	/* capture (writes a spore), the control socket's and vsock directory's removal */
	"openat", "openat2", "open", "mkdir", "mkdirat", "unlink", "unlinkat", "rmdir", "rename", "renameat", "renameat2",
	"linkat", "fsync", "fdatasync", "syncfs", "sync_file_range", "ftruncate", "fallocate", "copy_file_range", "fchmod", "fadvise64",
	"getdents64", "readlink", "readlinkat", "access", "faccessat", "faccessat2", "umask", "getcwd",
};

static int add_rule(scmp_filter_ctx ctx, uint32_t action, const char *name, unsigned n,
		    const struct scmp_arg_cmp *cmp, sl_error_t *err)
{
	int nr = seccomp_syscall_resolve_name(name);
	if (nr == __NR_SCMP_ERROR)
		return 0; /* not a syscall on this architecture */
	int rc = seccomp_rule_add_array(ctx, action, nr, n, cmp);
	if (rc < 0)
		return sl_error_errno(err, -rc, "jail: seccomp rule for %s", name);
	return 0;
}

static void seccomp_freep(scmp_filter_ctx *c)
{
	if (*c)
		seccomp_release(*c);
}

static int install_filter(sl_error_t *err)
{
	/* EPERM, not a kill: a denied call fails like any refused call, the
	 * VMM reports it, and sanitizer builds can still print their reports. */
	__attribute__((cleanup(seccomp_freep))) scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ERRNO(EPERM));
	if (!ctx)
		return sl_error_set(err, SL_E_NOMEM, "jail: seccomp_init failed");
	int rc;
	/* Every thread, the ones started before the jail too (the vsock
	 * device's, the agent job's); it also sets no_new_privs on them. */
	if ((rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_TSYNC, 1)) < 0)
		return sl_error_errno(err, -rc, "jail: seccomp thread sync");
	for (size_t i = 0; i < sizeof(jail_allow) / sizeof(jail_allow[0]); i++)
		if (add_rule(ctx, SCMP_ACT_ALLOW, jail_allow[i], 0, NULL, err) < 0)
			return -1;
	struct scmp_arg_cmp unix_only = SCMP_A0(SCMP_CMP_EQ, AF_UNIX);
	if (add_rule(ctx, SCMP_ACT_ALLOW, "socket", 1, &unix_only, err) < 0 ||
	    add_rule(ctx, SCMP_ACT_ALLOW, "socketpair", 1, &unix_only, err) < 0)
		return -1;
	/* Threads only: a clone without CLONE_THREAD would be a new process. */
	struct scmp_arg_cmp thread = SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD, CLONE_THREAD);
	if (add_rule(ctx, SCMP_ACT_ALLOW, "clone", 1, &thread, err) < 0)
		return -1;
	/* clone3 passes its flags in memory, which a filter cannot read:
	 * ENOSYS makes glibc fall back to clone, which is checked above. */
	if (add_rule(ctx, SCMP_ACT_ERRNO(ENOSYS), "clone3", 0, NULL, err) < 0)
		return -1;
	/* Signals to our own threads only (pthread_kill kicks vCPUs). */
	struct scmp_arg_cmp self = SCMP_A0(SCMP_CMP_EQ, (scmp_datum_t)getpid());
	if (add_rule(ctx, SCMP_ACT_ALLOW, "tgkill", 1, &self, err) < 0)
		return -1;
	if ((rc = seccomp_load(ctx)) < 0)
		return sl_error_errno(err, -rc, "jail: load the seccomp filter");
	return 0;
}

static void cap_freep(void *p)
{
	void **v = p;
	if (*v)
		cap_free(*v);
}

static int caps_held(void)
{
	__attribute__((cleanup(cap_freep))) cap_t cur = cap_get_proc();
	__attribute__((cleanup(cap_freep))) cap_t none = cap_init();
	if (!cur || !none)
		return -1;
	return cap_compare(cur, none) != 0;
}

/* Bounding set emptied, no inheritable or ambient capabilities: nothing can
 * come back through an exec (which the filter refuses anyway). Needs
 * CAP_SETPCAP; a process without capabilities has nothing to drop. */
static int drop_bound(sl_error_t *err)
{
	__attribute__((cleanup(cap_freep))) cap_iab_t iab = cap_iab_init();
	if (!iab)
		return sl_error_sys(err, "jail: cap_iab_init");
	for (cap_value_t c = 0; c < (cap_value_t)cap_max_bits(); c++)
		if (cap_iab_set_vector(iab, CAP_IAB_BOUND, c, CAP_SET) < 0)
			return sl_error_sys(err, "jail: cap_iab_set_vector");
	if (cap_iab_set_proc(iab) == 0)
		return 0;
	int e = errno;
	if (e == EPERM && caps_held() == 0)
		return 0;
	return sl_error_errno(err, e, "jail: empty the capability bounding set");
}

int cli_jail_apply(const struct cli_jail_opts *o, sl_error_t *err)
{
#if defined(__SANITIZE_ADDRESS__)
	/* LeakSanitizer's check at exit stops the world with ptrace, which the
	 * jail refuses: sanitizer builds check for leaks here instead. */
	__lsan_do_leak_check();
#endif
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return sl_error_sys(err, "jail: no_new_privs");
	if (drop_bound(err) < 0)
		return -1;
	if (o->set_uid) {
		/* glibc applies these to every thread of the process. */
		if (setgroups(0, NULL) < 0)
			return sl_error_sys(err, "jail: drop supplementary groups");
		if (setresgid(o->gid, o->gid, o->gid) < 0)
			return sl_error_sys(err, "jail: switch to gid %u", (unsigned)o->gid);
		if (setresuid(o->uid, o->uid, o->uid) < 0)
			return sl_error_sys(err, "jail: switch to uid %u", (unsigned)o->uid);
	}
	/* Every thread: libcap does this through libpsx (spore links it). */
	__attribute__((cleanup(cap_freep))) cap_t none = cap_init();
	if (!none)
		return sl_error_sys(err, "jail: cap_init");
	if (cap_set_proc(none) < 0)
		return sl_error_sys(err, "jail: drop all capabilities");
	return install_filter(err);
}
