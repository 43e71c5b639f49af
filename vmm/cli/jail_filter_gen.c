/* Build tool: compiles the VMM jail's seccomp allowlist (libseccomp) into a BPF program, written as a C header. */
#include <errno.h>
#include <linux/kvm.h>
#include <linux/sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <seccomp.h>

/* tgkill is allowed only towards the VMM's own pid, known at run time: the
 * program compares with this value, which jail.c replaces by getpid()
 * before loading it. It is above any pid (at most 2^22) and unlike every
 * other constant the filter compares with. */
#define JAIL_PID_PLACEHOLDER 0x7ffffff0u

/* Syscalls the VMM makes once its guest runs (vCPU and device threads, the
 * run loop, the control socket, capture, teardown), found by tracing
 * jailed runs and by reading drive.c, control.c, agent_job.c, vmm/src.
 * Names libseccomp does not know on this architecture are skipped. */
static const char *const jail_allow[] = {
	/* I/O on descriptors opened before the jail, and KVM */
	"read", "write", "readv", "writev", "pread64", "pwrite64", "preadv", "pwritev", "lseek", "close",
	"close_range", "fcntl", "dup", "dup2", "dup3", "fstat", "fstatfs", "newfstatat", "statx",
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

/* ioctl requests the VMM makes once its guest runs: running and signalling
 * vCPUs, the state a capture reads and a resume after a pause writes, and
 * two harmless queries (bytes pending on a vsock connection; glibc's isatty).
 * Creating VMs, vCPUs or memory slots and everything on other kinds of
 * descriptors (TIOCSTI on a terminal, for one) is refused. */
static const unsigned long jail_ioctls[] = {
	KVM_RUN, KVM_IRQ_LINE, KVM_CHECK_EXTENSION, KVM_GET_VCPU_MMAP_SIZE, KVM_GET_MSR_INDEX_LIST,
	KVM_GET_REGS, KVM_SET_REGS, KVM_GET_SREGS, KVM_SET_SREGS, KVM_GET_FPU, KVM_SET_FPU,
	KVM_GET_LAPIC, KVM_SET_LAPIC, KVM_GET_MSRS, KVM_SET_MSRS, KVM_GET_MP_STATE, KVM_SET_MP_STATE,
	KVM_GET_VCPU_EVENTS, KVM_SET_VCPU_EVENTS, KVM_GET_DEBUGREGS, KVM_SET_DEBUGREGS,
	KVM_GET_XSAVE, KVM_GET_XSAVE2, KVM_SET_XSAVE, KVM_GET_XCRS, KVM_SET_XCRS,
	KVM_GET_IRQCHIP, KVM_SET_IRQCHIP, KVM_GET_PIT2, KVM_SET_PIT2, KVM_GET_CLOCK, KVM_SET_CLOCK,
	KVM_KVMCLOCK_CTRL, KVM_GET_TSC_KHZ, KVM_GET_CPUID2,
	FIONREAD, TCGETS,
};

static void die(const char *what, int rc)
{
	fprintf(stderr, "jail_filter_gen: %s: %s\n", what, strerror(rc < 0 ? -rc : rc));
	exit(1);
}

static void add_rule(scmp_filter_ctx ctx, uint32_t action, const char *name, unsigned n, const struct scmp_arg_cmp *cmp)
{
	int nr = seccomp_syscall_resolve_name(name);
	if (nr == __NR_SCMP_ERROR)
		return; /* not a syscall on this architecture */
	int rc = seccomp_rule_add_array(ctx, action, nr, n, cmp);
	if (rc < 0)
		die(name, rc);
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: jail_filter_gen OUT.h\n");
		return 2;
	}
	/* EPERM, not a kill: a denied call fails like any refused call, the
	 * VMM reports it, and sanitizer builds can still print their reports. */
	scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ERRNO(EPERM));
	if (!ctx)
		die("seccomp_init", ENOMEM);
	for (size_t i = 0; i < sizeof(jail_allow) / sizeof(jail_allow[0]); i++)
		add_rule(ctx, SCMP_ACT_ALLOW, jail_allow[i], 0, NULL);
	/* The kernel reads the request as 32 bits: compare those only. */
	for (size_t i = 0; i < sizeof(jail_ioctls) / sizeof(jail_ioctls[0]); i++) {
		struct scmp_arg_cmp req = SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffu, jail_ioctls[i]);
		add_rule(ctx, SCMP_ACT_ALLOW, "ioctl", 1, &req);
	}
	struct scmp_arg_cmp unix_only = SCMP_A0(SCMP_CMP_EQ, AF_UNIX);
	add_rule(ctx, SCMP_ACT_ALLOW, "socket", 1, &unix_only);
	add_rule(ctx, SCMP_ACT_ALLOW, "socketpair", 1, &unix_only);
	/* Threads only: a clone without CLONE_THREAD would be a new process. */
	struct scmp_arg_cmp thread = SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD, CLONE_THREAD);
	add_rule(ctx, SCMP_ACT_ALLOW, "clone", 1, &thread);
	/* clone3 passes its flags in memory, which a filter cannot read:
	 * ENOSYS makes glibc fall back to clone, which is checked above. */
	add_rule(ctx, SCMP_ACT_ERRNO(ENOSYS), "clone3", 0, NULL);
	/* Signals to our own threads only (pthread_kill kicks vCPUs). */
	struct scmp_arg_cmp self = SCMP_A0(SCMP_CMP_EQ, JAIL_PID_PLACEHOLDER);
	add_rule(ctx, SCMP_ACT_ALLOW, "tgkill", 1, &self);

	FILE *bpf = tmpfile();
	if (!bpf)
		die("tmpfile", errno);
	int rc = seccomp_export_bpf(ctx, fileno(bpf));
	if (rc < 0)
		die("seccomp_export_bpf", rc);
	seccomp_release(ctx);
	rewind(bpf);

	char tmp[4096];
	snprintf(tmp, sizeof(tmp), "%s.tmp", argv[1]);
	FILE *out = fopen(tmp, "w");
	if (!out)
		die(tmp, errno);
	fprintf(out, "/* The VMM jail's seccomp program (x86_64), made by jail_filter_gen at build time: do not edit. */\n"
		     "#define JAIL_PID_PLACEHOLDER 0x%xu\n"
		     "static const struct sock_filter jail_filter[] = {\n",
		JAIL_PID_PLACEHOLDER);
	struct {
		uint16_t code;
		uint8_t jt, jf;
		uint32_t k;
	} ins;
	unsigned n = 0, placeholders = 0;
	while (fread(&ins, sizeof(ins), 1, bpf) == 1) {
		fprintf(out, "\t{0x%04x, %u, %u, 0x%08xu},\n", ins.code, ins.jt, ins.jf, ins.k);
		placeholders += ins.k == JAIL_PID_PLACEHOLDER;
		n++;
	}
	fprintf(out, "};\n");
	if (!n || placeholders != 1 || fflush(out) || fsync(fileno(out)) || fclose(out)) {
		fprintf(stderr, "jail_filter_gen: %u instructions, %u placeholders (want 1), or a write failed\n", n,
			placeholders);
		return 1;
	}
	if (rename(tmp, argv[1]) < 0)
		die(argv[1], errno);
	return 0;
}
