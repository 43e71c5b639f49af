/* Jails itself with the VMM's own jail code (cli_jail_enter) and checks that each denial it promises happens. */
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
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
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

/* rc is the call's result: -1 with errno e. */
static void refused_with(long rc, int e, const char *what)
{
	int got = rc < 0 ? errno : 0;
	report(rc == -1 && got == e, what, got);
}

static int write_file(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return -1;
	ssize_t n = write(fd, text, strlen(text));
	close(fd);
	return n == (ssize_t)strlen(text) ? 0 : -1;
}

static bool no_caps(void)
{
	cap_t cur = cap_get_proc(), none = cap_init();
	bool ok = cur && none && cap_compare(cur, none) == 0;
	cap_free(cur);
	cap_free(none);
	return ok;
}

static int mount_count(void)
{
	FILE *f = fopen("/proc/self/mountinfo", "r");
	if (!f)
		return -1;
	int n = 0;
	for (int c; (c = fgetc(f)) != EOF;)
		n += c == '\n';
	fclose(f);
	return n;
}

static int probe(struct cli_jail_opts *jo, bool leak, const char *rw, const char *ro, const char *hidden);

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (geteuid() != 0) {
		printf("SKIP kvm-jail-probe: needs root (it checks that root's capabilities are dropped)\n");
		return 77;
	}
	struct cli_jail_opts o = {.enabled = true};
	sl_error_t err = NULL;
	bool leak = argc > 1 && !strcmp(argv[argc - 1], "--leak-dirfd");
	if (leak)
		argc--;
	if (argc > 2 || (argc == 2 && cli_parse_jail_uid(argv[1], &o, &err) < 0)) {
		fprintf(stderr, "usage: jail_probe [UID[:GID]] [--leak-dirfd]%s%s\n", err ? ": " : "",
			err ? sl_error_msg(err) : "");
		return 2;
	}
	/* The jail shows rw/ and ro/; hidden/ beside them is the host's. */
	char base[] = "/tmp/jail-probe-XXXXXX", rw[64], ro[64], hidden[64], path[128];
	if (!mkdtemp(base)) {
		perror("mkdtemp");
		return 1;
	}
	snprintf(rw, sizeof(rw), "%s/rw", base);
	snprintf(ro, sizeof(ro), "%s/ro", base);
	snprintf(hidden, sizeof(hidden), "%s/hidden", base);
	chmod(base, 0755);
	if (mkdir(rw, 0755) < 0 || mkdir(ro, 0755) < 0 || mkdir(hidden, 0755) < 0 ||
	    (o.set_uid && chown(rw, o.uid, o.gid) < 0)) {
		perror("mkdir");
		return 1;
	}
	snprintf(path, sizeof(path), "%s/file", ro);
	write_file(path, "ro");
	snprintf(path, sizeof(path), "%s/file", hidden);
	write_file(path, "hidden");
	/* The jail runs in a child: the parent then checks that the host saw
	 * none of it, and removes the directories. */
	int before = mount_count();
	fflush(stdout);
	pid_t child = fork();
	if (child < 0) {
		perror("fork");
		return 1;
	}
	if (child == 0)
		_exit(probe(&o, leak, rw, ro, hidden));
	int status = 0;
	waitpid(child, &status, 0);
	int after = mount_count();
	report(before > 0 && before == after, "the host's mount table is unchanged", 0);
	snprintf(path, sizeof(path), "%s/file", ro);
	unlink(path);
	snprintf(path, sizeof(path), "%s/file", hidden);
	unlink(path);
	rmdir(rw);
	rmdir(ro);
	rmdir(hidden);
	rmdir(base);
	bool child_ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
	report(child_ok, "the jailed child passed", 0);
	printf("%s\n", failures ? "FAIL" : "PASS");
	return failures ? 1 : 0;
}

static int probe(struct cli_jail_opts *jo, bool leak, const char *rw, const char *ro, const char *hidden)
{
	struct cli_jail_opts o = *jo;
	sl_error_t err = NULL;
	char path[128];
	int sv[2];
	/* Before the jail, the calls below are possible: the denials after it
	 * are the jail's, not this host's. */
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	report(s >= 0, "before the jail: socket(AF_INET) works", s < 0 ? errno : 0);
	if (s >= 0)
		close(s);
	report(prctl(PR_CAPBSET_READ, CAP_SYS_ADMIN) == 1, "before the jail: CAP_SYS_ADMIN in the bounding set", 0);
	report(!no_caps(), "before the jail: capabilities held", 0);
	report(access("/etc/passwd", R_OK) == 0, "before the jail: /etc/passwd readable", 0);

	struct cli_jail_view *view = calloc(1, sizeof(*view));
	if (!view || cli_jail_prepare(&err) < 0 || cli_jail_view_add(view, rw, false, true, "rw", &err) < 0 ||
	    cli_jail_view_add(view, ro, false, false, "ro", &err) < 0) {
		printf("FAIL jail set-up: %s\n", err ? sl_error_msg(err) : "out of memory");
		return 1;
	}
	/* A view of / is refused: it would show everything. */
	sl_error_t e2 = NULL;
	report(cli_jail_view_add(view, "/x", true, true, "--control", &e2) < 0 && strstr(sl_error_msg(e2), "whole file system"),
	       "a socket directly in / is refused (its directory would be the whole file system)", 0);
	sl_error_free(&e2);
	/* A directory descriptor from before the jail would lead out of it. */
	int leaked = leak ? open(hidden, O_DIRECTORY | O_RDONLY) : -1;
	int rc = cli_jail_enter(&o, view, NULL, NULL, &err);
	if (leak) {
		bool ok = rc < 0 && strstr(sl_error_msg(err), "outside the jail");
		printf("%s a directory descriptor opened before the jail (fd %d) is refused: %s\n", ok ? "ok  " : "FAIL",
		       leaked, rc < 0 ? sl_error_msg(err) : "the jail was entered");
		printf("%s\n", ok ? "PASS" : "FAIL");
		return ok ? 0 : 1;
	}
	if (rc < 0) {
		printf("FAIL cli_jail_enter: %s\n", sl_error_msg(err));
		return 1;
	}

	/* The file system: only rw/ and ro/, at their own paths. */
	refused_with(open("/etc/passwd", O_RDONLY), ENOENT, "open(/etc/passwd): not in the jail");
	snprintf(path, sizeof(path), "%s/file", hidden);
	refused_with(open(path, O_RDONLY), ENOENT, "open of a file beside the shown directories");
	refused_with(open("/proc/self/status", O_RDONLY), ENOENT, "open(/proc/self/status): no /proc");
	refused_with(open("/dev/kvm", O_RDWR), ENOENT, "open(/dev/kvm): no /dev");
	snprintf(path, sizeof(path), "%s/file", ro);
	int fd = open(path, O_RDONLY);
	char buf[8] = "";
	report(fd >= 0 && read(fd, buf, sizeof(buf)) == 2 && !memcmp(buf, "ro", 2), "read a file in the read-only directory",
	       fd < 0 ? errno : 0);
	if (fd >= 0)
		close(fd);
	snprintf(path, sizeof(path), "%s/new", ro);
	refused_with(open(path, O_WRONLY | O_CREAT, 0644), EROFS, "create a file in the read-only directory");
	refused_with(mkdir("/new", 0755), EROFS, "mkdir in the jail's root");
	snprintf(path, sizeof(path), "%s/new", rw);
	allowed(write_file(path, "x"), "create a file in the writable directory");
	allowed(unlink(path), "remove it");
	snprintf(path, sizeof(path), "/../..%s", rw);
	allowed(access(path, F_OK), "\"..\" of / is / (the jail's)");
	refused_with(access("/../../etc/passwd", F_OK), ENOENT, "/../../etc/passwd: not in the jail");

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
	denied(socketpair(AF_INET, SOCK_STREAM, 0, sv), "socketpair(AF_INET)");
	denied(mount("none", rw, "tmpfs", 0, NULL), "mount(tmpfs)");
	denied(umount2(ro, MNT_DETACH), "umount2 of a shown directory");
	denied(syscall(SYS_pivot_root, ".", "."), "pivot_root");
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
	/* ioctl: only KVM's requests and two queries. */
	denied(ioctl(0, TIOCSTI, "x"), "ioctl(TIOCSTI) (typing into a terminal)");
	denied(ioctl(0, TIOCSCTTY, 0), "ioctl(TIOCSCTTY)");
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0) {
		int n = -1;
		allowed(ioctl(sv[0], FIONREAD, &n), "ioctl(FIONREAD) on a socket");
		close(sv[0]);
		close(sv[1]);
	}
	pthread_t t;
	int v = 0;
	rc = pthread_create(&t, NULL, thread_main, &v);
	if (rc == 0)
		pthread_join(t, NULL);
	report(rc == 0 && v == 42, "pthread_create (a clone with CLONE_THREAD)", rc);
	printf("%s: %d check(s) failed\n", failures ? "FAIL" : "PASS", failures);
	return failures ? 1 : 0;
}
