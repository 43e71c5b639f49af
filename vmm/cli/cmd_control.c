/* spore control: send one request to a running VM's control socket and print the reply. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "cli.h"
#include "control_proto.h"

static const char control_usage[] =
	"usage: spore control SOCKET status|pause|resume|stop|capture DIR\n"
	"Sends one request to the control socket of a VM started with --control\n"
	"SOCKET and prints its reply. Exit status 0 when the VM answered ok, 1\n"
	"when it answered an error, 125 when it could not be asked.\n";

int cmd_control(int argc, char **argv)
{
	if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
		fputs(control_usage, stdout);
		return 0;
	}
	if (argc < 3 || argc > 4)
		return cli_usage("control: want SOCKET and a request\n%s", control_usage);
	struct control_request req = {0};
	const char *verb = argv[2];
	if (!strcmp(verb, "capture")) {
		if (argc != 4)
			return cli_usage("control: capture wants a directory");
		req.verb = CONTROL_CAPTURE;
		/* The VMM resolves nothing: it gets the absolute path. */
		if (argv[3][0] == '/') {
			snprintf(req.dir, sizeof(req.dir), "%s", argv[3]);
		} else {
			char cwd[2048];
			if (!getcwd(cwd, sizeof(cwd)))
				return cli_usage("control: getcwd: %s", strerror(errno));
			snprintf(req.dir, sizeof(req.dir), "%s/%s", strcmp(cwd, "/") ? cwd : "", argv[3]);
		}
	} else if (argc == 3) {
		static const char *const names[] = {"status", "pause", "resume", "stop"};
		static const enum control_verb verbs[] = {CONTROL_STATUS, CONTROL_PAUSE, CONTROL_RESUME, CONTROL_STOP};
		for (unsigned i = 0; i < 4; i++)
			if (!strcmp(verb, names[i]))
				req.verb = verbs[i];
	}
	char msg[CONTROL_MSG_MAX];
	int n = req.verb ? control_encode_request(msg, sizeof(msg), &req) : -1;
	if (n < 0)
		return cli_usage("control: not a request: %s%s%s (capture wants a directory without '.', '..' or "
				 "empty components)\n%s",
				 verb, argc == 4 ? " " : "", argc == 4 ? argv[3] : "", control_usage);
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (strlen(argv[1]) >= sizeof(sa.sun_path))
		return cli_usage("control: socket path too long");
	strcpy(sa.sun_path, argv[1]);
	_cleanup_close_ int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (s < 0 || connect(s, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		return cli_usage("control: connect to %s: %s", argv[1], strerror(errno));
	if (send(s, msg, (size_t)n, MSG_NOSIGNAL) != n)
		return cli_usage("control: send to %s: %s", argv[1], strerror(errno));
	char buf[CONTROL_MSG_MAX + 1];
	ssize_t r = recv(s, buf, CONTROL_MSG_MAX, 0);
	if (r <= 0)
		return cli_usage("control: %s closed without a reply", argv[1]);
	buf[r] = '\0';
	printf("%s\n", buf);
	return strncmp(buf, "ok", 2) == 0 && (buf[2] == '\0' || buf[2] == ' ') ? 0 : 1;
}
