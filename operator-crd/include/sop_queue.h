/* The work queue: keys ("namespace/name") deduplicated, each ready at a time, popped by the worker. */
#ifndef SOP_QUEUE_H
#define SOP_QUEUE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct sop_queue_item {
	char *key;
	int64_t due_ms; /* monotonic */
};

struct sop_queue {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct sop_queue_item *items;
	size_t n, cap;
	bool closed;
};

void sop_queue_init(struct sop_queue *q);
void sop_queue_destroy(struct sop_queue *q);
/* Adds key, due after delay_ms; a key already queued keeps the earlier of
 * the two times (so an event never waits behind a backoff). 0 or -1 (memory). */
int sop_queue_add(struct sop_queue *q, const char *key, uint32_t delay_ms);
/* The next due key (malloc'd) or NULL after timeout_ms or when closed. */
char *sop_queue_pop(struct sop_queue *q, uint32_t timeout_ms);
size_t sop_queue_len(struct sop_queue *q);
void sop_queue_close(struct sop_queue *q);

#endif
