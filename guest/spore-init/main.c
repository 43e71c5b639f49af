/* spore-init: PID 1 of Linux guests (mounts, modules, root switch) that runs the guest agent. */
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"
#include "agent_proto.h"
#include "pid1.h"
#include "sl/log.h"

#define LISTEN_RETRIES 100 /* x 100 ms: the vsock transport may still be probing */

static void usage(FILE *f)
{
	fprintf(f, "usage: spore-init [--listen vsock|vsock:PORT|unix:PATH] [--no-privileged]\n"
		   "                  [--fork-dir DIR] [--log-level debug|info|warn|error]\n"
		   "As PID 1 it also mounts, loads %s and switches root (spore.root=).\n",
		PID1_MODULES_LIST);
}

static void read_cmdline(char *buf, size_t sz)
{
	buf[0] = 0;
	int fd = open("/proc/cmdline", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	ssize_t n = read(fd, buf, sz - 1);
	buf[n > 0 ? n : 0] = 0;
	close(fd);
}

int main(int argc, char **argv)
{
	struct agent_config cfg = {.listen = "vsock", .privileged = true, .fork_dir = "/etc/spore/fork.d"};
	int level = SL_LOG_INFO;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (strcmp(a, "--listen") == 0 && v) {
			cfg.listen = v;
			i++;
		} else if (strcmp(a, "--fork-dir") == 0 && v) {
			cfg.fork_dir = v;
			i++;
		} else if (strcmp(a, "--log-level") == 0 && v && sl_log_level_parse(v) >= 0) {
			level = sl_log_level_parse(v);
			i++;
		} else if (strcmp(a, "--no-privileged") == 0) {
			cfg.privileged = false;
		} else if (strcmp(a, "--help") == 0) {
			usage(stdout);
			return 0;
		} else if (getpid() != 1) {
			/* The kernel passes unknown command line words to init;
			 * only a non-PID-1 run refuses them. */
			usage(stderr);
			return 2;
		}
	}
	sl_log_init("spore-init", level, 2);
	bool pid1 = getpid() == 1;
	_cleanup_error_ sl_error_t err = NULL;
	if (pid1) {
		char cmdline[4096];
		if (pid1_early_mounts(&err) < 0 || pid1_load_modules(PID1_MODULES_LIST, &err) < 0) {
			sl_err("init failed", "error=\"%s\"", sl_error_msg(err));
			pid1_poweroff();
		}
		read_cmdline(cmdline, sizeof(cmdline));
		if (pid1_switch_root(cmdline, &err) < 0) {
			sl_err("root switch failed", "error=\"%s\"", sl_error_msg(err));
			pid1_poweroff();
		}
	}
	int rc = -1;
	for (int tries = 0; tries < (pid1 ? LISTEN_RETRIES : 1); tries++) {
		sl_error_free(&err);
		rc = agent_run(&cfg, &err);
		if (rc == 0 || !pid1)
			break;
		nanosleep(&(struct timespec){0, 100 * 1000 * 1000}, NULL);
	}
	if (rc < 0)
		sl_err("agent failed", "error=\"%s\"", sl_error_msg(err));
	if (pid1)
		pid1_poweroff();
	return rc < 0 ? 1 : 0;
}
