/* Unit tests for sl/sock.h: socket directory checks and the peer-uid rule (the uid parts need root). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "sl/sock.h"
#include "test_util.h"

#define NOBODY 65534u

static void expect_refused(const char *path, const char *want)
{
	sl_error_t err = NULL;
	assert_int_equal(sl_sock_dir_check(path, "test socket", &err), -1);
	assert_non_null(err);
	if (!strstr(sl_error_msg(err), want))
		fail_msg("error \"%s\" does not mention \"%s\"", sl_error_msg(err), want);
	sl_error_free(&err);
}

static void expect_ok(const char *path)
{
	sl_error_t err = NULL;
	if (sl_sock_dir_check(path, "test socket", &err) < 0)
		fail_msg("%s refused: %s", path, sl_error_msg(err));
}

static void test_dir_modes(void **state)
{
	(void)state;
	struct scratch s;
	assert_int_equal(scratch_make(&s), 0);
	char sock[128], sub[128], subsock[128], link[128], linksock[128];
	snprintf(sock, sizeof(sock), "%s/x.sock", s.path);
	snprintf(sub, sizeof(sub), "%s/sub", s.path);
	snprintf(subsock, sizeof(subsock), "%s/sub/x.sock", s.path);
	snprintf(link, sizeof(link), "%s/link", s.path);
	snprintf(linksock, sizeof(linksock), "%s/link/x.sock", s.path);

	expect_ok(sock); /* mkdtemp: 0700, under /tmp (sticky) */
	assert_int_equal(chmod(s.path, 0755), 0);
	expect_ok(sock);
	assert_int_equal(chmod(s.path, 0777), 0);
	expect_refused(sock, "writable by others (mode 0777) and not sticky");
	assert_int_equal(chmod(s.path, 0770), 0);
	expect_refused(sock, "writable by its group (mode 0770)");
	assert_int_equal(chmod(s.path, 01777), 0);
	expect_ok(sock); /* like /tmp */

	/* A private directory under a writable one is not private: the
	 * parent's users can rename it away. The error names the parent. */
	assert_int_equal(mkdir(sub, 0700), 0);
	assert_int_equal(chmod(s.path, 0777), 0);
	expect_refused(subsock, s.path);
	assert_int_equal(chmod(s.path, 0700), 0);
	expect_ok(subsock);

	/* Symlinks are followed: the directory it lands in is what counts. */
	assert_int_equal(symlink("sub", link), 0);
	expect_ok(linksock);
	assert_int_equal(chmod(sub, 0733), 0);
	expect_refused(linksock, "sub is writable by others");
	assert_int_equal(chmod(sub, 0700), 0);

	/* A bare name is in the working directory; "/x" in /. */
	expect_ok("/x.sock");

	sl_error_t err = NULL;
	snprintf(sock, sizeof(sock), "%s/nope/x.sock", s.path);
	assert_int_equal(sl_sock_dir_check(sock, "test socket", &err), -1);
	assert_int_equal(err->code, SL_E_NOT_FOUND);
	assert_non_null(strstr(sl_error_msg(err), "does not exist"));
	sl_error_free(&err);
	scratch_drop(&s);
}

static void test_dir_owner(void **state)
{
	(void)state;
	if (geteuid() != 0)
		skip(); /* chown needs root */
	struct scratch s;
	assert_int_equal(scratch_make(&s), 0);
	char sock[128];
	snprintf(sock, sizeof(sock), "%s/x.sock", s.path);
	assert_int_equal(chown(s.path, NOBODY, NOBODY), 0);
	expect_refused(sock, "belongs to uid 65534, not to root or uid 0");
	assert_int_equal(chown(s.path, 0, 0), 0);
	expect_ok(sock);
	scratch_drop(&s);
}

static void test_dir_make(void **state)
{
	(void)state;
	struct scratch s;
	assert_int_equal(scratch_make(&s), 0);
	char sock[160], d[160];
	snprintf(sock, sizeof(sock), "%s/a/b/x.sock", s.path);
	mode_t old = umask(077);
	sl_error_t err = NULL;
	assert_int_equal(sl_sock_dir_make(sock, 0711, "test socket", &err), 0);
	umask(old);
	struct stat st;
	snprintf(d, sizeof(d), "%s/a", s.path);
	assert_int_equal(stat(d, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0711);
	snprintf(d, sizeof(d), "%s/a/b", s.path);
	assert_int_equal(stat(d, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0711);
	/* Existing directories keep their mode, and are checked. */
	assert_int_equal(chmod(d, 0777), 0);
	assert_int_equal(sl_sock_dir_make(sock, 0700, "test socket", &err), -1);
	assert_non_null(strstr(sl_error_msg(err), "writable by others"));
	sl_error_free(&err);
	scratch_drop(&s);
}

static void test_peer_self(void **state)
{
	(void)state;
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	uid_t uid;
	assert_true(sl_sock_peer_allowed(sv[0], geteuid(), &uid));
	assert_int_equal(uid, geteuid());
	/* Not a socket: refused, uid unknown. */
	int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	assert_false(sl_sock_peer_allowed(fd, geteuid(), &uid));
	assert_int_equal(uid, (uid_t)-1);
	close(fd);
	close(sv[0]);
	close(sv[1]);
}

/* A child that becomes `as` and connects to path; the server side's fd. */
static int connect_as(int lfd, const struct sockaddr_un *sa, uid_t as, pid_t *child)
{
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		if (setresgid(as, as, as) < 0 || setresuid(as, as, as) < 0)
			_exit(2);
		int c = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (c < 0 || connect(c, (const struct sockaddr *)sa, sizeof(*sa)) < 0)
			_exit(3);
		char b;
		(void)!read(c, &b, 1); /* until the server closes */
		_exit(0);
	}
	*child = pid;
	return accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
}

static void test_peer_other_uid(void **state)
{
	(void)state;
	if (geteuid() != 0)
		skip(); /* needs to become another uid */
	struct scratch s;
	assert_int_equal(scratch_make(&s), 0);
	assert_int_equal(chmod(s.path, 0755), 0);
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%.64s/x.sock", s.path);
	int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_int_equal(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(chmod(sa.sun_path, 0666), 0); /* the file mode lets anyone in: the uid rule must not */
	assert_int_equal(listen(lfd, 4), 0);

	for (int round = 0; round < 2; round++) {
		pid_t child;
		int fd = connect_as(lfd, &sa, round ? NOBODY - 1 : NOBODY, &child);
		assert_true(fd >= 0);
		uid_t uid;
		assert_false(sl_sock_peer_allowed(fd, 0, &uid));
		assert_int_equal(uid, round ? NOBODY - 1 : NOBODY);
		/* A server that switched to uid 65534 serves 65534, not 65533. */
		assert_int_equal(sl_sock_peer_allowed(fd, NOBODY, &uid), round == 0);
		close(fd);
		int st;
		assert_int_equal(waitpid(child, &st, 0), child);
		assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	}
	/* Root is always served, whatever the server's uid. */
	pid_t child;
	int fd = connect_as(lfd, &sa, 0, &child);
	uid_t uid;
	assert_true(sl_sock_peer_allowed(fd, NOBODY, &uid));
	assert_int_equal(uid, 0);
	close(fd);
	waitpid(child, NULL, 0);
	close(lfd);
	scratch_drop(&s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_dir_modes),      cmocka_unit_test(test_dir_owner),
		cmocka_unit_test(test_dir_make),       cmocka_unit_test(test_peer_self),
		cmocka_unit_test(test_peer_other_uid),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
