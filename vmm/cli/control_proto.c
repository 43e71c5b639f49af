/* Encoding and strict decoding of control socket requests. */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "control_proto.h"

static const char *const verbs[] = {
	[CONTROL_STATUS] = "status", [CONTROL_PAUSE] = "pause", [CONTROL_RESUME] = "resume",
	[CONTROL_CAPTURE] = "capture", [CONTROL_STOP] = "stop",
};

/* A capture directory: absolute, printable, no "." or ".." component and
 * no doubled or trailing slash, so a log line names it unambiguously. */
static bool good_dir(const char *d, size_t n)
{
	if (n < 2 || d[0] != '/' || d[n - 1] == '/')
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)d[i];
		if (c < 0x20 || c == 0x7f)
			return false;
		if (c == '/') {
			size_t j = i + 1, k = j;
			while (k < n && d[k] != '/')
				k++;
			size_t len = k - j;
			if (len == 0 || (len == 1 && d[j] == '.') || (len == 2 && d[j] == '.' && d[j + 1] == '.'))
				return false;
		}
	}
	return true;
}

int control_encode_request(char *buf, size_t cap, const struct control_request *req)
{
	if (req->verb < CONTROL_STATUS || req->verb > CONTROL_STOP)
		return -1;
	int n;
	if (req->verb == CONTROL_CAPTURE) {
		size_t dl = strnlen(req->dir, sizeof(req->dir));
		if (dl == sizeof(req->dir) || !good_dir(req->dir, dl))
			return -1;
		n = snprintf(buf, cap, "capture %s", req->dir);
	} else {
		n = snprintf(buf, cap, "%s", verbs[req->verb]);
	}
	if (n < 0 || (size_t)n >= cap || (size_t)n > CONTROL_MSG_MAX)
		return -1;
	return n;
}

int control_parse_request(const char *buf, size_t len, struct control_request *req, sl_error_t *err)
{
	if (len == 0 || len > CONTROL_MSG_MAX)
		return sl_error_set(err, SL_E_INVALID, "control request: empty or longer than %d bytes",
				    CONTROL_MSG_MAX);
	if (memchr(buf, 0, len))
		return sl_error_set(err, SL_E_INVALID, "control request: contains a NUL byte");
	for (int v = CONTROL_STATUS; v <= CONTROL_STOP; v++) {
		size_t vl = strlen(verbs[v]);
		if (v != CONTROL_CAPTURE && len == vl && !memcmp(buf, verbs[v], vl)) {
			req->verb = (enum control_verb)v;
			req->dir[0] = '\0';
			return 0;
		}
	}
	if (len > 8 && !memcmp(buf, "capture ", 8)) {
		const char *d = buf + 8;
		size_t dl = len - 8;
		if (!good_dir(d, dl))
			return sl_error_set(err, SL_E_INVALID,
					    "control request: capture wants an absolute directory without "
					    "'.', '..', empty components or control characters");
		req->verb = CONTROL_CAPTURE;
		memcpy(req->dir, d, dl);
		req->dir[dl] = '\0';
		return 0;
	}
	char shown[SL_SHOW_BUF];
	sl_show(buf, len, shown);
	return sl_error_set(err, SL_E_INVALID,
			    "control request \"%s\": want status, pause, resume, stop or capture DIR", shown);
}
