/* Verified-chunk seals: remember that an unchanged chunk inode already matched its digest. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/fs.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "vmm_internal.h"

/*
 * A seal is one small file in the seal directory, named after the chunk's
 * inode, whose whole content is the line seal_line() builds: the digest the
 * bytes matched plus what changes when the bytes change (size, mtime) or
 * when the inode is reused (birth time, generation).
 *
 * Why mtime and not ctime: ctime also moves on link(2), and `spore fork`
 * hard-links every chunk, which would void the seals of every spore it
 * forks from. Every write moves mtime forward; only the file's owner (or
 * root) may set it back to an arbitrary value. So seals are made and
 * trusted only for chunk files owned by the VMM's own user or root, who
 * are trusted anyway, and anyone else who writes a chunk leaves an mtime
 * that no longer matches its seal. The directory is private to the VMM's
 * user: whoever can write it could also ptrace the VMM.
 */

/* mkdir -p for a path the operator chose (so symlinks on it are theirs). */
static int mkdir_parents(const char *dir, sl_error_t *err)
{
	char path[PATH_MAX];
	if (snprintf(path, sizeof(path), "%s", dir) >= (int)sizeof(path))
		return sl_error_set(err, SL_E_LIMIT, "seal directory path too long");
	for (char *p = path + 1;; p++) {
		if (*p == '/' || *p == '\0') {
			char c = *p;
			*p = '\0';
			if (mkdir(path, 0700) < 0 && errno != EEXIST)
				return sl_error_sys(err, "create seal directory %s", path);
			if (!c)
				return 0;
			*p = c;
		}
	}
}

int vmm_seal_open(const char *dir, int *out_fd, sl_error_t *err)
{
	if (!dir[0])
		return sl_error_set(err, SL_E_INVALID, "empty seal directory path");
	if (mkdir_parents(dir, err) < 0)
		return -1;
	int fd = open(dir, O_DIRECTORY | O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return sl_error_sys(err, "open seal directory %s", dir);
	struct stat st;
	if (fstat(fd, &st) < 0) {
		close(fd);
		return sl_error_sys(err, "stat seal directory %s", dir);
	}
	/* A seal anyone else can plant would let them skip verification. */
	if (st.st_uid != geteuid() || (st.st_mode & 022)) {
		close(fd);
		return sl_error_set(err, SL_E_INVALID,
				    "seal directory %s must be owned by uid %u and not group/other-writable "
				    "(owner %u, mode %04o)",
				    dir, (unsigned)geteuid(), (unsigned)st.st_uid, (unsigned)(st.st_mode & 07777));
	}
	*out_fd = fd;
	return 0;
}

int vmm_seal_stat(int fd, struct vmm_seal_id *id, sl_error_t *err)
{
	struct statx sx;
	if (statx(fd, "", AT_EMPTY_PATH, STATX_BASIC_STATS | STATX_BTIME, &sx) < 0)
		return sl_error_sys(err, "statx");
	memset(id, 0, sizeof(*id));
	id->mode = sx.stx_mode;
	id->dev_major = sx.stx_dev_major;
	id->dev_minor = sx.stx_dev_minor;
	id->ino = sx.stx_ino;
	id->size = sx.stx_size;
	id->uid = sx.stx_uid;
	id->mtime = sx.stx_mtime;
	if (sx.stx_mask & STATX_BTIME)
		id->btime = sx.stx_btime;
	/* Not every filesystem has generations; then birth time tells reuse. */
	int gen = 0;
	if (ioctl(fd, FS_IOC_GETVERSION, &gen) == 0)
		id->generation = (uint32_t)gen;
	return 0;
}

static void seal_name(const struct vmm_seal_id *id, char name[64])
{
	snprintf(name, 64, "%x-%x-%" PRIx64, id->dev_major, id->dev_minor, (uint64_t)id->ino);
}

static int seal_line(const struct vmm_seal_id *id, const sl_digest *d, char *buf, size_t cap)
{
	char dig[SL_DIGEST_STRLEN];
	sl_digest_format(d, dig);
	return snprintf(buf, cap,
			"spore-seal 1 %s size=%" PRIu64 " uid=%" PRIu32 " gen=%" PRIu32 " mtime=%lld.%09u "
			"btime=%lld.%09u\n",
			dig, (uint64_t)id->size, id->uid, id->generation, (long long)id->mtime.tv_sec,
			id->mtime.tv_nsec, (long long)id->btime.tv_sec, id->btime.tv_nsec);
}

/* Only the owner and root can put an mtime back (see the top of the file). */
static bool owner_trusted(const struct vmm_seal_id *id)
{
	return id->uid == 0 || id->uid == (uint32_t)geteuid();
}

bool vmm_seal_check(int seal_fd, const struct vmm_seal_id *id, const sl_digest *d)
{
	if (seal_fd < 0 || !owner_trusted(id))
		return false;
	char name[64], want[256], got[257];
	seal_name(id, name);
	int n = seal_line(id, d, want, sizeof(want));
	int fd = openat(seal_fd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	if (fd < 0)
		return false;
	ssize_t r = read(fd, got, sizeof(got));
	close(fd);
	return r == n && memcmp(got, want, (size_t)n) == 0;
}

/* Timestamps are taken from a coarse clock; a write within the same tick as
 * the sealed mtime could leave mtime unchanged. Only seal files whose mtime
 * is at least two ticks old, so any later write gets a newer one. */
static bool mtime_settled(const struct vmm_seal_id *id)
{
	struct timespec res, now;
	if (clock_getres(CLOCK_REALTIME_COARSE, &res) < 0 || clock_gettime(CLOCK_REALTIME, &now) < 0)
		return false;
	int64_t tick = (int64_t)res.tv_sec * 1000000000 + res.tv_nsec;
	int64_t age = ((int64_t)now.tv_sec - id->mtime.tv_sec) * 1000000000 +
		      ((int64_t)now.tv_nsec - (int64_t)id->mtime.tv_nsec);
	return age > 2 * tick;
}

bool vmm_seal_record(int seal_fd, const struct vmm_seal_id *id, const sl_digest *d)
{
	if (seal_fd < 0 || !owner_trusted(id) || !mtime_settled(id))
		return false;
	char name[64], line[256];
	seal_name(id, name);
	int n = seal_line(id, d, line, sizeof(line));
	/* A seal is a cache entry: losing one in a crash only costs a re-hash,
	 * so it is not fsynced. Temp + rename still means a reader never sees a
	 * partial line under the final name (and a partial line never matches). */
	char tmp[96];
	snprintf(tmp, sizeof(tmp), ".%s.%d.tmp", name, (int)getpid());
	int fd = openat(seal_fd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return false;
	bool ok = write(fd, line, (size_t)n) == n;
	ok = close(fd) == 0 && ok;
	if (ok && renameat(seal_fd, tmp, seal_fd, name) == 0)
		return true;
	unlinkat(seal_fd, tmp, 0);
	return false;
}
