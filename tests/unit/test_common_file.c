/* Unit tests for safe file operations (openat2 path and, masked, fallback). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "sl/error.h"
#include "sl/file.h"
#include "test_util.h"

/* Set by --no-openat2: seccomp makes openat2 fail with ENOSYS, as on kernels
 * before 5.6, so the same tests exercise the component-walk fallback. */
static bool fallback_mode;

static int setup(void **state)
{
	struct scratch *s = calloc(1, sizeof(*s));

	if (!s || scratch_make(s) < 0)
		return -1;
	*state = s;
	return 0;
}

static int teardown(void **state)
{
	struct scratch *s = *state;
	struct stat st;

	scratch_drop(s);
	/* The scratch dir is removed by sl_remove_tree: check it worked. */
	if (stat(s->path, &st) == 0) {
		fprintf(stderr, "%s still exists after sl_remove_tree\n", s->path);
		free(s);
		return -1;
	}
	free(s);
	return 0;
}

static void put(int dfd, const char *name, const char *content)
{
	int fd = openat(dfd, name, O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0644);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, content, strlen(content)), (ssize_t)strlen(content));
	close(fd);
}

static char *slurp(int dfd, const char *name)
{
	char *buf = NULL;
	size_t len;
	sl_error_t err = NULL;

	if (sl_read_beneath(dfd, name, 1 << 20, &buf, &len, &err) < 0) {
		fail_msg("read %s: %s", name, sl_error_msg(err));
	}
	return buf;
}

static void expect_err(sl_error_t *err, int code, const char *needle)
{
	assert_non_null(*err);
	if ((*err)->code != code)
		fail_msg("expected %s, got %s: %s", sl_error_code_name(code),
			 sl_error_code_name((*err)->code), sl_error_msg(*err));
	if (needle && !strstr(sl_error_msg(*err), needle))
		fail_msg("message \"%s\" lacks \"%s\"", sl_error_msg(*err), needle);
	sl_error_free(err);
}

/* Temp files are dot-named; any ".tmp." entry left means a leak. */
static int count_temp_files(int dfd)
{
	int fd = openat(dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d = fdopendir(fd);
	struct dirent *de;
	int n = 0;

	assert_non_null(d);
	while ((de = readdir(d)))
		if (strstr(de->d_name, ".tmp."))
			n++;
	closedir(d);
	return n;
}

static void test_openat2_mode(void **state)
{
	struct open_how_min { uint64_t flags, mode, resolve; } how = { 0, 0, 0 };
	long r;

	(void)state;
	r = syscall(SYS_openat2, AT_FDCWD, ".", &how, sizeof(how));
	if (fallback_mode) {
		assert_int_equal(r, -1);
		assert_int_equal(errno, ENOSYS);
	} else if (r >= 0) {
		close((int)r);
	}
}

static void test_open_beneath_ok(void **state)
{
	struct scratch *s = *state;
	sl_error_t err = NULL;
	char buf[16] = { 0 };
	int fd;

	assert_int_equal(mkdirat(s->fd, "a", 0755), 0);
	put(s->fd, "a/f.txt", "hello");
	fd = sl_open_beneath(s->fd, "a/f.txt", O_RDONLY, 0, &err);
	assert_true(fd >= 0);
	assert_null(err);
	assert_int_equal(read(fd, buf, sizeof(buf)), 5);
	assert_string_equal(buf, "hello");
	/* Library fds must not leak into exec'd children. */
	assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
	close(fd);

	fd = sl_open_beneath(s->fd, "./a//f.txt", O_RDONLY, 0, &err);
	assert_true(fd >= 0);
	close(fd);

	fd = sl_open_beneath(s->fd, "a/new", O_CREAT | O_WRONLY | O_EXCL, 0600, &err);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(faccessat(s->fd, "a/new", F_OK, 0), 0);

	fd = sl_open_beneath(s->fd, "a", O_RDONLY | O_DIRECTORY, 0, &err);
	assert_true(fd >= 0);
	close(fd);
}

static void test_open_beneath_refuses(void **state)
{
	struct scratch *s = *state;
	sl_error_t err = NULL;

	assert_int_equal(mkdirat(s->fd, "d", 0755), 0);
	put(s->fd, "d/inside", "x");
	assert_int_equal(symlinkat("/etc", s->fd, "etclink"), 0);
	assert_int_equal(symlinkat("d/inside", s->fd, "lastlink"), 0);
	assert_int_equal(symlinkat("inside", s->fd, "d/rel"), 0);
	assert_int_equal(symlinkat("d", s->fd, "dlink"), 0);

	assert_int_equal(sl_open_beneath(s->fd, "../x", O_RDONLY, 0, &err), -1);
	expect_err(&err, SL_E_INVALID, "../x");
	assert_int_equal(sl_open_beneath(s->fd, "d/../d/inside", O_RDONLY, 0, &err), -1);
	expect_err(&err, SL_E_INVALID, NULL);
	assert_int_equal(sl_open_beneath(s->fd, "d/..", O_RDONLY, 0, &err), -1);
	expect_err(&err, SL_E_INVALID, NULL);
	assert_int_equal(sl_open_beneath(s->fd, "/etc/passwd", O_RDONLY, 0, &err), -1);
	expect_err(&err, SL_E_INVALID, "/etc/passwd");
	assert_int_equal(sl_open_beneath(s->fd, "", O_RDONLY, 0, &err), -1);
	expect_err(&err, SL_E_INVALID, NULL);

	/* Symlink component pointing outside. */
	assert_int_equal(sl_open_beneath(s->fd, "etclink/passwd", O_RDONLY, 0, &err), -1);
	expect_err(&err, SL_E_INVALID, "symlink");
	/* Even a symlink that stays inside is refused, as a component... */
	assert_int_equal(sl_open_beneath(s->fd, "dlink/inside", O_RDONLY, 0, &err), -1);
	expect_err(&err, SL_E_INVALID, "symlink");
	/* ...and as the final component. */
	assert_int_equal(sl_open_beneath(s->fd, "lastlink", O_RDONLY, 0, &err), -1);
	expect_err(&err, SL_E_INVALID, "symlink");
	assert_int_equal(sl_open_beneath(s->fd, "d/rel", O_RDONLY, 0, &err), -1);
	expect_err(&err, SL_E_INVALID, "symlink");
	/* O_CREAT must not create through a symlink either. */
	assert_int_equal(sl_open_beneath(s->fd, "etclink/sl-unit-should-not-exist",
					 O_CREAT | O_WRONLY, 0600, &err), -1);
	expect_err(&err, SL_E_INVALID, NULL);

	assert_int_equal(sl_open_beneath(s->fd, "d/missing", O_RDONLY, 0, &err), -1);
	expect_err(&err, SL_E_NOT_FOUND, "d/missing");
	assert_int_equal(sl_open_beneath(s->fd, "nodir/x", O_RDONLY, 0, &err), -1);
	expect_err(&err, SL_E_NOT_FOUND, NULL);
	/* A regular file used as a directory is an I/O error, not an escape. */
	assert_int_equal(sl_open_beneath(s->fd, "d/inside/x", O_RDONLY, 0, &err), -1);
	expect_err(&err, SL_E_IO, NULL);
}

static void test_write_atomic_replaces(void **state)
{
	struct scratch *s = *state;
	sl_error_t err = NULL;
	struct stat st;
	char *got;

	assert_int_equal(sl_write_atomic(s->fd, "cfg", "one", 3, 0640, &err), 0);
	got = slurp(s->fd, "cfg");
	assert_string_equal(got, "one");
	free(got);
	assert_int_equal(fstatat(s->fd, "cfg", &st, 0), 0);
	assert_int_equal(st.st_mode & 07777, 0640);

	assert_int_equal(sl_write_atomic(s->fd, "cfg", "second", 6, 0600, &err), 0);
	got = slurp(s->fd, "cfg");
	assert_string_equal(got, "second");
	free(got);
	assert_int_equal(fstatat(s->fd, "cfg", &st, 0), 0);
	assert_int_equal(st.st_mode & 07777, 0600);

	/* Empty content is a valid file. */
	assert_int_equal(sl_write_atomic(s->fd, "empty", "", 0, 0644, &err), 0);
	assert_int_equal(fstatat(s->fd, "empty", &st, 0), 0);
	assert_int_equal(st.st_size, 0);

	assert_int_equal(mkdirat(s->fd, "sub", 0755), 0);
	assert_int_equal(sl_write_atomic(s->fd, "sub/nested", "n", 1, 0644, &err), 0);
	got = slurp(s->fd, "sub/nested");
	assert_string_equal(got, "n");
	free(got);

	assert_int_equal(count_temp_files(s->fd), 0);
	{
		int sub = openat(s->fd, "sub", O_RDONLY | O_DIRECTORY);

		assert_int_equal(count_temp_files(sub), 0);
		close(sub);
	}
}

static void test_write_atomic_failures_leave_nothing(void **state)
{
	struct scratch *s = *state;
	sl_error_t err = NULL;
	char *got;

	/* Target is a directory: rename fails after the temp was written. */
	assert_int_equal(mkdirat(s->fd, "isdir", 0755), 0);
	assert_int_equal(sl_write_atomic(s->fd, "isdir", "x", 1, 0644, &err), -1);
	expect_err(&err, SL_E_IO, "isdir");
	assert_int_equal(count_temp_files(s->fd), 0);

	assert_int_equal(sl_write_atomic(s->fd, "missing/f", "x", 1, 0644, &err), -1);
	expect_err(&err, SL_E_NOT_FOUND, NULL);
	assert_int_equal(sl_write_atomic(s->fd, "../f", "x", 1, 0644, &err), -1);
	expect_err(&err, SL_E_INVALID, NULL);
	assert_int_equal(sl_write_atomic(s->fd, "/tmp/f", "x", 1, 0644, &err), -1);
	expect_err(&err, SL_E_INVALID, NULL);
	assert_int_equal(sl_write_atomic(s->fd, ".", "x", 1, 0644, &err), -1);
	expect_err(&err, SL_E_INVALID, NULL);

	/* Directory part crossing a symlink out of the tree is refused. */
	assert_int_equal(symlinkat("/tmp", s->fd, "tmplink"), 0);
	assert_int_equal(sl_write_atomic(s->fd, "tmplink/sl-unit-escape", "x", 1,
					 0644, &err), -1);
	expect_err(&err, SL_E_INVALID, NULL);
	assert_int_equal(access("/tmp/sl-unit-escape", F_OK), -1);

	/* A failed write leaves the old content alone. */
	assert_int_equal(sl_write_atomic(s->fd, "keep", "old", 3, 0644, &err), 0);
	assert_int_equal(sl_write_atomic(-1, "keep", "new", 3, 0644, &err), -1);
	expect_err(&err, SL_E_IO, NULL);
	got = slurp(s->fd, "keep");
	assert_string_equal(got, "old");
	free(got);
	assert_int_equal(count_temp_files(s->fd), 0);
}

static void test_write_atomic_once_keeps_existing(void **state)
{
	struct scratch *s = *state;
	sl_error_t err = NULL;
	char *got;

	assert_int_equal(sl_write_atomic_once(s->fd, "blob", "first", 5, 0444, &err), 0);
	got = slurp(s->fd, "blob");
	assert_string_equal(got, "first");
	free(got);
	assert_int_equal(sl_write_atomic_once(s->fd, "blob", "other", 5, 0444, &err), 0);
	assert_null(err);
	got = slurp(s->fd, "blob");
	assert_string_equal(got, "first");
	free(got);
	assert_int_equal(count_temp_files(s->fd), 0);

	assert_int_equal(sl_write_atomic_once(s->fd, "../blob", "x", 1, 0444, &err), -1);
	expect_err(&err, SL_E_INVALID, NULL);
}

/* Forked writers racing on one name: exactly one content wins, intact. */
static void test_write_atomic_once_concurrent(void **state)
{
	struct scratch *s = *state;
	char content[8][64];
	char *got;
	int ok = 0;

	for (int i = 0; i < 8; i++) {
		memset(content[i], 'a' + i, sizeof(content[i]) - 1);
		content[i][63] = '\0';
	}
	for (int i = 0; i < 8; i++) {
		pid_t pid = fork();

		assert_true(pid >= 0);
		if (pid == 0) {
			sl_error_t err = NULL;

			_exit(sl_write_atomic_once(s->fd, "race", content[i], 63,
						   0644, &err) == 0 ? 0 : 1);
		}
	}
	for (int i = 0; i < 8; i++) {
		int st;

		assert_true(wait(&st) > 0);
		if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
			ok++;
	}
	assert_int_equal(ok, 8);
	got = slurp(s->fd, "race");
	assert_int_equal(strlen(got), 63);
	assert_int_equal(strspn(got, (char[]){ got[0], 0 }), 63);
	free(got);
	assert_int_equal(count_temp_files(s->fd), 0);
}

static void test_read_beneath(void **state)
{
	struct scratch *s = *state;
	sl_error_t err = NULL;
	char *buf = NULL;
	size_t len = 99;

	put(s->fd, "ten", "0123456789");
	assert_int_equal(sl_read_beneath(s->fd, "ten", 10, &buf, &len, &err), 0);
	assert_int_equal(len, 10);
	assert_int_equal(buf[10], '\0');
	assert_string_equal(buf, "0123456789");
	free(buf);
	buf = NULL;

	assert_int_equal(sl_read_beneath(s->fd, "ten", 9, &buf, &len, &err), -1);
	assert_null(buf);
	assert_int_equal(err->code, SL_E_LIMIT);
	assert_non_null(strstr(sl_error_msg(err), "10"));
	assert_non_null(strstr(sl_error_msg(err), "9"));
	sl_error_free(&err);

	put(s->fd, "empty", "");
	assert_int_equal(sl_read_beneath(s->fd, "empty", 0, &buf, &len, &err), 0);
	assert_int_equal(len, 0);
	assert_string_equal(buf, "");
	free(buf);
	buf = NULL;

	/* A FIFO must be refused without blocking on open. */
	assert_int_equal(mkfifoat(s->fd, "fifo", 0600), 0);
	assert_int_equal(sl_read_beneath(s->fd, "fifo", 100, &buf, &len, &err), -1);
	expect_err(&err, SL_E_INVALID, "fifo");
	assert_int_equal(mkdirat(s->fd, "dir", 0755), 0);
	assert_int_equal(sl_read_beneath(s->fd, "dir", 100, &buf, &len, &err), -1);
	expect_err(&err, SL_E_INVALID, "dir");
	assert_int_equal(symlinkat("ten", s->fd, "tenlink"), 0);
	assert_int_equal(sl_read_beneath(s->fd, "tenlink", 100, &buf, &len, &err), -1);
	expect_err(&err, SL_E_INVALID, NULL);
	assert_int_equal(sl_read_beneath(s->fd, "nope", 100, &buf, &len, &err), -1);
	expect_err(&err, SL_E_NOT_FOUND, "nope");
	assert_null(buf);
}

static void test_read_path(void **state)
{
	struct scratch *s = *state;
	sl_error_t err = NULL;
	char path[128];
	char *buf = NULL;
	size_t len;

	put(s->fd, "p", "abc");
	snprintf(path, sizeof(path), "%s/p", s->path);
	assert_int_equal(sl_read_path(path, 3, &buf, &len, &err), 0);
	assert_int_equal(len, 3);
	assert_string_equal(buf, "abc");
	free(buf);
	buf = NULL;
	assert_int_equal(sl_read_path(path, 2, &buf, &len, &err), -1);
	expect_err(&err, SL_E_LIMIT, NULL);
	assert_int_equal(sl_read_path(s->path, 100, &buf, &len, &err), -1);
	expect_err(&err, SL_E_INVALID, NULL);
	snprintf(path, sizeof(path), "%s/none", s->path);
	assert_int_equal(sl_read_path(path, 100, &buf, &len, &err), -1);
	expect_err(&err, SL_E_NOT_FOUND, NULL);
	assert_null(buf);
	/* Procfs reports size 0 for files with content: the read loop must
	 * still pick the content up and respect the cap. */
	assert_int_equal(sl_read_path("/proc/self/status", 1 << 20, &buf, &len, &err), 0);
	assert_true(len > 0);
	assert_non_null(strstr(buf, "Pid:"));
	free(buf);
	buf = NULL;
	assert_int_equal(sl_read_path("/proc/self/status", 16, &buf, &len, &err), -1);
	expect_err(&err, SL_E_LIMIT, NULL);
}

static void test_mkdir_beneath(void **state)
{
	struct scratch *s = *state;
	sl_error_t err = NULL;
	struct stat st;

	assert_int_equal(sl_mkdir_beneath(s->fd, "x/y/z", 0755, &err), 0);
	assert_int_equal(fstatat(s->fd, "x/y/z", &st, AT_SYMLINK_NOFOLLOW), 0);
	assert_true(S_ISDIR(st.st_mode));
	/* Idempotent. */
	assert_int_equal(sl_mkdir_beneath(s->fd, "x/y/z/", 0755, &err), 0);
	assert_int_equal(sl_mkdir_beneath(s->fd, "x", 0755, &err), 0);

	assert_int_equal(symlinkat("/tmp", s->fd, "out"), 0);
	assert_int_equal(sl_mkdir_beneath(s->fd, "out/sl-unit-nope", 0755, &err), -1);
	expect_err(&err, SL_E_INVALID, "symlink");
	assert_int_equal(access("/tmp/sl-unit-nope", F_OK), -1);
	assert_int_equal(symlinkat("x", s->fd, "xl"), 0);
	assert_int_equal(sl_mkdir_beneath(s->fd, "xl", 0755, &err), -1);
	expect_err(&err, SL_E_INVALID, NULL);

	put(s->fd, "file", "f");
	assert_int_equal(sl_mkdir_beneath(s->fd, "file/sub", 0755, &err), -1);
	expect_err(&err, SL_E_INVALID, "not a directory");
	assert_int_equal(sl_mkdir_beneath(s->fd, "x/../../esc", 0755, &err), -1);
	expect_err(&err, SL_E_INVALID, NULL);
	assert_int_equal(sl_mkdir_beneath(s->fd, "/abs", 0755, &err), -1);
	expect_err(&err, SL_E_INVALID, NULL);
}

static void test_remove_tree(void **state)
{
	struct scratch *s = *state;
	struct scratch outside;
	sl_error_t err = NULL;
	struct stat st;

	assert_int_equal(scratch_make(&outside), 0);
	put(outside.fd, "precious", "keep me");

	assert_int_equal(sl_mkdir_beneath(s->fd, "t/a/b/c", 0755, &err), 0);
	put(s->fd, "t/f1", "1");
	put(s->fd, "t/a/f2", "2");
	put(s->fd, "t/a/b/c/f3", "3");
	for (int i = 0; i < 300; i++) {
		char name[32];

		snprintf(name, sizeof(name), "t/a/many%03d", i);
		put(s->fd, name, "m");
	}
	assert_int_equal(mkfifoat(s->fd, "t/a/fifo", 0600), 0);
	/* Symlinks to outside dirs/files must be unlinked, never followed. */
	assert_int_equal(symlinkat(outside.path, s->fd, "t/a/out"), 0);
	{
		char target[128];

		snprintf(target, sizeof(target), "%s/precious", outside.path);
		assert_int_equal(symlinkat(target, s->fd, "t/b-precious"), 0);
	}

	assert_int_equal(sl_remove_tree(s->fd, "t", &err), 0);
	assert_null(err);
	assert_int_equal(fstatat(s->fd, "t", &st, AT_SYMLINK_NOFOLLOW), -1);
	assert_int_equal(errno, ENOENT);
	assert_int_equal(fstatat(outside.fd, "precious", &st, 0), 0);

	/* A symlink given as the tree root is itself removed, not followed. */
	assert_int_equal(symlinkat(outside.path, s->fd, "rootlink"), 0);
	assert_int_equal(sl_remove_tree(s->fd, "rootlink", &err), 0);
	assert_int_equal(fstatat(s->fd, "rootlink", &st, AT_SYMLINK_NOFOLLOW), -1);
	assert_int_equal(fstatat(outside.fd, "precious", &st, 0), 0);

	/* Single file, missing path, missing parent. */
	put(s->fd, "single", "s");
	assert_int_equal(sl_remove_tree(s->fd, "single", &err), 0);
	assert_int_equal(faccessat(s->fd, "single", F_OK, 0), -1);
	assert_int_equal(sl_remove_tree(s->fd, "single", &err), 0);
	assert_int_equal(sl_remove_tree(s->fd, "no/such/thing", &err), 0);
	assert_null(err);

	/* sl_remove_path: an absolute path is a tree beneath /. */
	{
		char abs[256];
		snprintf(abs, sizeof(abs), "%s/absdir", s->path);
		assert_int_equal(mkdirat(s->fd, "absdir", 0700), 0);
		put(s->fd, "absdir/f", "x");
		assert_int_equal(sl_remove_path(abs, &err), 0);
		assert_null(err);
		assert_int_equal(faccessat(s->fd, "absdir", F_OK, 0), -1);
		assert_int_equal(sl_remove_path(abs, &err), 0); /* gone: not an error */
		assert_int_equal(sl_remove_path("/", &err), -1);
		expect_err(&err, SL_E_INVALID, NULL);
	}

	assert_int_equal(sl_remove_tree(s->fd, "../x", &err), -1);
	expect_err(&err, SL_E_INVALID, NULL);
	assert_int_equal(sl_remove_tree(s->fd, ".", &err), -1);
	expect_err(&err, SL_E_INVALID, NULL);
	/* Parent path through a symlink is refused, not treated as missing. */
	assert_int_equal(symlinkat(outside.path, s->fd, "ol"), 0);
	assert_int_equal(sl_remove_tree(s->fd, "ol/precious", &err), -1);
	expect_err(&err, SL_E_INVALID, NULL);
	assert_int_equal(fstatat(outside.fd, "precious", &st, 0), 0);

	scratch_drop(&outside);
}

static void test_write_all_pread_all(void **state)
{
	struct scratch *s = *state;
	sl_error_t err = NULL;
	char buf[8] = { 0 };
	int fd;

	fd = openat(s->fd, "rw", O_CREAT | O_RDWR | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(sl_write_all(fd, "abcdefgh", 8, &err), 0);
	assert_int_equal(sl_pread_all(fd, buf, 4, 2, &err), 0);
	assert_memory_equal(buf, "cdef", 4);
	assert_int_equal(sl_pread_all(fd, buf, 8, 4, &err), -1);
	expect_err(&err, SL_E_IO, "end of file");
	assert_int_equal(sl_fsync_dir(s->fd, &err), 0);
	close(fd);
	assert_int_equal(sl_write_all(fd, "x", 1, &err), -1);
	assert_int_equal(err->sys_errno, EBADF);
	sl_error_free(&err);
}

/* Makes openat2 look absent (ENOSYS), as on kernels older than 5.6. */
static int mask_openat2(void)
{
#if defined(__x86_64__)
	const unsigned int arch = AUDIT_ARCH_X86_64;
#elif defined(__aarch64__)
	const unsigned int arch = AUDIT_ARCH_AARCH64;
#else
	const unsigned int arch = 0;
	return -1;
#endif
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, arch, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_openat2, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = { .len = sizeof(f) / sizeof(f[0]), .filter = f };

	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return -1;
	return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_openat2_mode),
		cmocka_unit_test_setup_teardown(test_open_beneath_ok, setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_beneath_refuses, setup, teardown),
		cmocka_unit_test_setup_teardown(test_write_atomic_replaces, setup, teardown),
		cmocka_unit_test_setup_teardown(test_write_atomic_failures_leave_nothing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_write_atomic_once_keeps_existing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_write_atomic_once_concurrent, setup, teardown),
		cmocka_unit_test_setup_teardown(test_read_beneath, setup, teardown),
		cmocka_unit_test_setup_teardown(test_read_path, setup, teardown),
		cmocka_unit_test_setup_teardown(test_mkdir_beneath, setup, teardown),
		cmocka_unit_test_setup_teardown(test_remove_tree, setup, teardown),
		cmocka_unit_test_setup_teardown(test_write_all_pread_all, setup, teardown),
	};

	if (argc > 1 && strcmp(argv[1], "--no-openat2") == 0) {
		if (mask_openat2() < 0) {
			perror("seccomp");
			return 1;
		}
		fallback_mode = true;
		return cmocka_run_group_tests_name("file (openat2 masked)", tests,
						   NULL, NULL);
	}
	return cmocka_run_group_tests_name("file", tests, NULL, NULL);
}
