/* The VMM jail (--jail): its file system (jail_fs.c), no new privileges, an optional unprivileged uid, no capabilities, a seccomp allowlist. */
#include <errno.h>
#include <grp.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <unistd.h>

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

int cli_jail_settle(struct cli_jail_opts *o, sl_error_t *err)
{
	if (o->asked && o->refused)
		return sl_error_set(err, SL_E_INVALID, "--jail and --no-jail contradict each other");
	if ((o->set_uid || o->nbinds) && o->refused)
		return sl_error_set(err, SL_E_INVALID, "--jail-uid and --jail-bind need the jail (drop --no-jail)");
	if (!o->refused && geteuid() == 0)
		o->enabled = true;
	if ((o->set_uid || o->nbinds) && !o->enabled)
		return sl_error_set(err, SL_E_INVALID, "--jail-uid and --jail-bind need --jail (and root)");
	return 0;
}

int cli_parse_jail_bind(const char *s, struct cli_jail_opts *o, sl_error_t *err)
{
	struct stat st;
	if (s[0] != '/')
		return sl_error_set(err, SL_E_INVALID, "--jail-bind %s: want an absolute directory", s);
	if (stat(s, &st) < 0 || !S_ISDIR(st.st_mode))
		return sl_error_set(err, SL_E_INVALID, "--jail-bind %s: not a directory", s);
	if (o->nbinds == sizeof(o->binds) / sizeof(o->binds[0]))
		return sl_error_set(err, SL_E_LIMIT, "--jail-bind: at most %zu directories",
				    sizeof(o->binds) / sizeof(o->binds[0]));
	o->binds[o->nbinds++] = s;
	return 0;
}

/* The allowlist, compiled at build time (jail_filter_gen.c): loading it is
 * one system call, where building it with libseccomp at every start took
 * most of a millisecond. */
#include "jail_filter.h"

static int install_filter(sl_error_t *err)
{
	struct sock_filter prog[sizeof(jail_filter) / sizeof(jail_filter[0])];
	memcpy(prog, jail_filter, sizeof(prog));
	/* tgkill only to our own threads (pthread_kill kicks vCPUs). */
	unsigned patched = 0;
	for (size_t i = 0; i < sizeof(prog) / sizeof(prog[0]); i++)
		if (prog[i].k == JAIL_PID_PLACEHOLDER) {
			prog[i].k = (uint32_t)getpid();
			patched++;
		}
	if (patched != 1)
		return sl_error_set(err, SL_E_INVALID, "jail: the seccomp program has %u pid slots, want 1", patched);
	struct sock_fprog fp = {.len = (unsigned short)(sizeof(prog) / sizeof(prog[0])), .filter = prog};
	/* Every thread, the ones started before the jail too (the vsock
	 * device's, the agent job's). A thread that cannot be synchronised
	 * makes the call return its id. */
	long rc = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, &fp);
	if (rc < 0)
		return sl_error_sys(err, "jail: load the seccomp filter");
	if (rc > 0)
		return sl_error_set(err, SL_E_INVALID, "jail: thread %ld could not take the seccomp filter", rc);
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

int cli_jail_prepare_privileges(sl_error_t *err)
{
	/* Both are inherited by every thread started from now on, so they cost
	 * one call each here rather than one per thread later. The effective
	 * capabilities the jail's mounts need stay until cli_jail_enter. */
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return sl_error_sys(err, "jail: no_new_privs");
	return drop_bound(err);
}

int cli_jail_prepare(sl_error_t *err)
{
	if (cli_jail_unshare(err) < 0)
		return -1;
	return cli_jail_prepare_privileges(err);
}

static int jail_privileges(const struct cli_jail_opts *o, sl_error_t *err)
{
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

int cli_jail_enter(const struct cli_jail_opts *o, const struct cli_jail_view *v, cli_jail_reopen_fn reopen,
		   void *ctx, sl_error_t *err)
{
#if defined(__SANITIZE_ADDRESS__)
	/* LeakSanitizer's check at exit reads /proc and stops the world with
	 * ptrace, which the jail hides and refuses: sanitizer builds check
	 * for leaks here instead. */
	__lsan_do_leak_check();
#endif
	struct cli_jail_fs fs;
	if (cli_jail_mount(v, &fs, err) < 0)
		return -1;
	if (reopen && reopen(ctx, err) < 0)
		return -1;
	if (cli_jail_check_fds(&fs, err) < 0)
		return -1;
	return jail_privileges(o, err);
}
