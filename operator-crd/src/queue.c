/* Work queue with due times: a small array (queues hold one entry per Sporelet), a mutex and a condition variable. */
#include <stdlib.h>
#include <string.h>

#include "sl/time.h"
#include "sop_queue.h"

void sop_queue_init(struct sop_queue *q)
{
	memset(q, 0, sizeof(*q));
	pthread_mutex_init(&q->lock, NULL);
	pthread_condattr_t a;
	pthread_condattr_init(&a);
	pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
	pthread_cond_init(&q->cond, &a);
	pthread_condattr_destroy(&a);
}

void sop_queue_destroy(struct sop_queue *q)
{
	for (size_t i = 0; i < q->n; i++)
		free(q->items[i].key);
	free(q->items);
	pthread_mutex_destroy(&q->lock);
	pthread_cond_destroy(&q->cond);
}

int sop_queue_add(struct sop_queue *q, const char *key, uint32_t delay_ms)
{
	int64_t due = sl_now_ms() + delay_ms;
	int rc = 0;
	pthread_mutex_lock(&q->lock);
	size_t i;
	for (i = 0; i < q->n; i++) {
		if (strcmp(q->items[i].key, key) == 0) {
			if (due < q->items[i].due_ms)
				q->items[i].due_ms = due;
			break;
		}
	}
	if (i == q->n) {
		if (q->n == q->cap) {
			size_t cap = q->cap ? q->cap * 2 : 16;
			struct sop_queue_item *ni = realloc(q->items, cap * sizeof(*ni));
			if (!ni) {
				rc = -1;
				goto out;
			}
			q->items = ni;
			q->cap = cap;
		}
		char *k = strdup(key);
		if (!k) {
			rc = -1;
			goto out;
		}
		q->items[q->n++] = (struct sop_queue_item){ .key = k, .due_ms = due };
	}
	pthread_cond_broadcast(&q->cond);
out:
	pthread_mutex_unlock(&q->lock);
	return rc;
}

char *sop_queue_pop(struct sop_queue *q, uint32_t timeout_ms)
{
	int64_t deadline = sl_now_ms() + timeout_ms;
	char *key = NULL;
	pthread_mutex_lock(&q->lock);
	while (!q->closed) {
		int64_t now = sl_now_ms();
		size_t best = q->n;
		for (size_t i = 0; i < q->n; i++) {
			if (best == q->n || q->items[i].due_ms < q->items[best].due_ms)
				best = i;
		}
		if (best < q->n && q->items[best].due_ms <= now) {
			key = q->items[best].key;
			q->items[best] = q->items[--q->n];
			break;
		}
		int64_t wake = deadline;
		if (best < q->n && q->items[best].due_ms < wake)
			wake = q->items[best].due_ms;
		if (now >= deadline)
			break;
		struct timespec ts;
		sl_deadline_ms(&ts, CLOCK_MONOTONIC, (unsigned long)(wake - now));
		pthread_cond_timedwait(&q->cond, &q->lock, &ts);
	}
	pthread_mutex_unlock(&q->lock);
	return key;
}

size_t sop_queue_len(struct sop_queue *q)
{
	pthread_mutex_lock(&q->lock);
	size_t n = q->n;
	pthread_mutex_unlock(&q->lock);
	return n;
}

void sop_queue_close(struct sop_queue *q)
{
	pthread_mutex_lock(&q->lock);
	q->closed = true;
	pthread_cond_broadcast(&q->cond);
	pthread_mutex_unlock(&q->lock);
}
