/* Shared helpers for the unit tests: scratch directories under /tmp. */
#ifndef SL_TEST_UTIL_H
#define SL_TEST_UTIL_H

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sl/error.h"
#include "sl/file.h"

struct scratch {
	char path[64];
	int fd;
};

/* Creates a fresh directory; tests fail loudly if the host cannot. */
static inline int scratch_make(struct scratch *s)
{
	snprintf(s->path, sizeof(s->path), "/tmp/sl-unit-XXXXXX");
	if (!mkdtemp(s->path))
		return -1;
	s->fd = open(s->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	return s->fd < 0 ? -1 : 0;
}

/* Uses sl_remove_tree itself: a leftover /tmp/sl-unit-* directory is then
 * a visible symptom of a removal bug (test_common_file checks it directly). */
static inline void scratch_drop(struct scratch *s)
{
	sl_error_t err = NULL;
	int parent;

	if (s->fd >= 0)
		close(s->fd);
	s->fd = -1;
	parent = open("/tmp", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (parent >= 0) {
		if (sl_remove_tree(parent, s->path + strlen("/tmp/"), &err) < 0) {
			fprintf(stderr, "cleanup of %s failed: %s\n", s->path,
				sl_error_msg(err));
			sl_error_free(&err);
		}
		close(parent);
	}
}

#endif
