/* Jails itself with the VMM's own jail code (cli_jail_apply) and checks that each denial it promises happens. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/capability.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"

static int failures;

static void report(bool ok, const char *what, int e)
{
	printf("%s %s%s%s\n", ok ? "ok  " : "FAIL", what, e ? ": " : "", e ? strerror(e) : "");
	if (!ok)
		failures++;
}

/* rc is the call's result: a denial is -1 with errno EPERM. */
static void denied(long rc, const char *what)
{
	int e = rc < 0 ? errno : 0;
	report(rc == -1 && e == EPERM, what, rc < 0 ? e : 0);
}

static void allowed(long rc, const char *what)
{
	report(rc >= 0, what, rc < 0 ? errno : 0);
}

static void *thread_main(void *arg)
{
	*(int *)arg = 42;
	return NULL;
}

static bool no_caps(void)
{
	cap_t cur = cap_get_proc(), none = cap_init();
	bool ok = cur && none && cap_compare(cur, none) == 0;
	cap_free(cur);
	cap_free(none);
	return ok;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (geteuid() != 0) {
		printf("SKIP kvm-jail-probe: needs root (it checks that root's capabilities are dropped)\n");
		return 77;
	}
	struct cli_jail_opts o = {.enabled = true};
	sl_error_t err = NULL;
	if (argc > 2 || (argc == 2 && cli_parse_jail_uid(argv[1], &o, &err) < 0)) {
		fprintf(stderr, "usage: jail_probe [UID[:GID]]%s%s\n", err ? ": " : "", err ? sl_error_msg(err) : "");
		return 2;
	}
	/* Before the jail, the calls below are possible: the denials after it
	 * are the jail's, not this host's. */
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	report(s >= 0, "before the jail: socket(AF_INET) works", s < 0 ? errno : 0);
	if (s >= 0)
		close(s);
	report(prctl(PR_CAPBSET_READ, CAP_SYS_ADMIN) == 1, "before the jail: CAP_SYS_ADMIN in the bounding set", 0);
	report(!no_caps(), "before the jail: capabilities held", 0);

	if (cli_jail_apply(&o, &err) < 0) {
		printf("FAIL cli_jail_apply: %s\n", sl_error_msg(err));
		return 1;
	}

	report(prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 1, "no_new_privs set", 0);
	report(no_caps(), "capget: no permitted, effective or inheritable capabilities", 0);
	report(prctl(PR_CAPBSET_READ, CAP_SYS_ADMIN) == 0 && prctl(PR_CAPBSET_READ, CAP_CHOWN) == 0,
	       "bounding set empty (CAP_SYS_ADMIN, CAP_CHOWN)", 0);
	report(prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_IS_SET, CAP_NET_ADMIN, 0, 0) == 0, "no ambient capabilities", 0);
	if (o.set_uid) {
		uid_t r, e, sv;
		gid_t gr, ge, gs;
		getresuid(&r, &e, &sv);
		getresgid(&gr, &ge, &gs);
		report(r == o.uid && e == o.uid && sv == o.uid && gr == o.gid && ge == o.gid && gs == o.gid,
		       "runs as the --jail-uid uid and gid (real, effective, saved)", 0);
		report(getgroups(0, NULL) == 0, "no supplementary groups", 0);
		denied(setuid(0), "setuid(0)");
		denied(setgid(0), "setgid(0)");
	}

	char *const args[] = {"true", NULL};
	char *const env[] = {NULL};
	denied(execve("/bin/true", args, env), "execve(/bin/true)");
	denied(syscall(SYS_execveat, AT_FDCWD, "/bin/true", args, env, 0), "execveat(/bin/true)");
	denied(ptrace(PTRACE_TRACEME, 0, NULL, NULL), "ptrace(PTRACE_TRACEME)");
	denied(socket(AF_INET, SOCK_STREAM, 0), "socket(AF_INET, SOCK_STREAM)");
	denied(socket(AF_INET6, SOCK_DGRAM, 0), "socket(AF_INET6, SOCK_DGRAM)");
	denied(socket(AF_NETLINK, SOCK_RAW, 0), "socket(AF_NETLINK, SOCK_RAW)");
	denied(socket(AF_PACKET, SOCK_RAW, 0), "socket(AF_PACKET, SOCK_RAW)");
	int sv[2];
	denied(socketpair(AF_INET, SOCK_STREAM, 0, sv), "socketpair(AF_INET)");
	denied(mount("none", "/tmp", "tmpfs", 0, NULL), "mount(tmpfs)");
	denied(umount2("/proc", MNT_DETACH), "umount2(/proc)");
	denied(unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)");
	denied(unshare(CLONE_NEWUSER), "unshare(CLONE_NEWUSER)");
	denied(setns(0, 0), "setns");
	denied(chroot("/"), "chroot(/)");
	pid_t pid = fork(); /* a clone without CLONE_THREAD */
	if (pid == 0)
		_exit(0);
	if (pid > 0)
		waitpid(pid, NULL, 0);
	denied(pid, "fork (clone without CLONE_THREAD)");
	denied(kill(1, 0), "kill(1, 0)");
	denied(syscall(SYS_tgkill, 1, 1, 0), "tgkill of another process");
	denied(syscall(SYS_bpf, 0, NULL, 0), "bpf");
	denied(syscall(SYS_keyctl, 0, 0, 0, 0, 0), "keyctl");
	denied(syscall(SYS_add_key, "user", "x", "y", 1, 0), "add_key");
	denied(syscall(SYS_init_module, NULL, 0, ""), "init_module");
	denied(syscall(SYS_kexec_load, 0, 0, NULL, 0), "kexec_load");
	denied(syscall(SYS_open_by_handle_at, AT_FDCWD, NULL, 0), "open_by_handle_at");
	denied(syscall(SYS_perf_event_open, NULL, 0, -1, -1, 0), "perf_event_open");
	denied(syscall(SYS_process_vm_readv, 1, NULL, 0, NULL, 0, 0), "process_vm_readv");
	denied(syscall(SYS_setresuid, 0, 0, 0), "setresuid(0, 0, 0)");
	denied(syscall(SYS_capset, NULL, NULL), "capset");

	/* What the VMM needs keeps working. */
	s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	allowed(s, "socket(AF_UNIX, SOCK_SEQPACKET)");
	if (s >= 0)
		close(s);
	int sp = socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv);
	allowed(sp, "socketpair(AF_UNIX)");
	if (sp == 0) {
		allowed(write(sv[0], "x", 1) == 1 ? 0 : -1, "write on a Unix socket");
		char c;
		allowed(read(sv[1], &c, 1) == 1 && c == 'x' ? 0 : -1, "read on a Unix socket");
		close(sv[0]);
		close(sv[1]);
	}
	int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
	allowed(fd, "open(/proc/self/status) (openat is allowed: capture writes spores)");
	if (fd >= 0)
		close(fd);
	pthread_t t;
	int v = 0, rc = pthread_create(&t, NULL, thread_main, &v);
	if (rc == 0)
		pthread_join(t, NULL);
	report(rc == 0 && v == 42, "pthread_create (a clone with CLONE_THREAD)", rc);
	printf("%s: %d check(s) failed\n", failures ? "FAIL" : "PASS", failures);
	return failures ? 1 : 0;
}
