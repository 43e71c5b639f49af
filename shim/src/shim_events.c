/* The shim's event queue and its publisher thread (containerd.services.events.ttrpc.v1.Events/Forward). */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "containerd/services/events/ttrpc/v1/events.pb-c.h"
#include "containerd/types/event.pb-c.h"
#include "shim_events.h"
#include "sl/log.h"
#include "ttrpc.h"
#include "sl/time.h"

#define EVENTS_MAX_QUEUED 4096
#define EVENTS_ATTEMPTS 5
#define EVENTS_CALL_MS 5000

struct event {
	struct event *next;
	char topic[64];
	char type_url[128];
	struct timespec ts;
	uint8_t *data;
	size_t len;
};

struct shim_events {
	char *address;
	char *ns;
	struct ttrpc_client *client;
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct event *head, *tail;
	unsigned queued;
	bool stopping, busy;
};

static int forward(struct shim_events *e, const struct event *ev, sl_error_t *err)
{
	Google__Protobuf__Timestamp ts = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
	ts.seconds = ev->ts.tv_sec;
	ts.nanos = (int32_t)ev->ts.tv_nsec;
	Google__Protobuf__Any any = GOOGLE__PROTOBUF__ANY__INIT;
	any.type_url = (char *)ev->type_url;
	any.value.data = ev->data;
	any.value.len = ev->len;
	Containerd__Types__Envelope env = CONTAINERD__TYPES__ENVELOPE__INIT;
	env.timestamp = &ts;
	env.namespace_ = e->ns;
	env.topic = (char *)ev->topic;
	env.event = &any;
	Containerd__Services__Events__Ttrpc__V1__ForwardRequest req =
		CONTAINERD__SERVICES__EVENTS__TTRPC__V1__FORWARD_REQUEST__INIT;
	req.envelope = &env;
	uint8_t *buf = NULL;
	size_t len = 0;
	if (ttrpc_pack(&req.base, &buf, &len, err) < 0)
		return -1;
	if (!e->client && ttrpc_client_dial(e->address, 0, &e->client, err) < 0) {
		free(buf);
		return -1;
	}
	if (ttrpc_client_closed(e->client) && ttrpc_client_reconnect(e->client, err) < 0) {
		free(buf);
		return -1;
	}
	ttrpc_reply_t *reply = NULL;
	int rc = ttrpc_client_call(e->client, TTRPC_EVENTS_SERVICE, "Forward", buf, len, e->ns, EVENTS_CALL_MS,
				   &reply, err);
	free(buf);
	if (rc < 0)
		return -1;
	if (reply->code != TTRPC_OK)
		rc = sl_error_set(err, SL_E_IO, "containerd refused event %s: %s: %s", ev->topic,
				  ttrpc_code_name(reply->code), reply->message);
	free(reply);
	return rc;
}

static void *publisher(void *arg)
{
	struct shim_events *e = arg;
	pthread_mutex_lock(&e->lock);
	for (;;) {
		while (!e->head && !e->stopping)
			pthread_cond_wait(&e->cond, &e->lock);
		if (!e->head)
			break;
		struct event *ev = e->head;
		e->busy = true;
		pthread_mutex_unlock(&e->lock);
		int rc = -1;
		sl_error_t err = NULL;
		for (int attempt = 0; attempt < EVENTS_ATTEMPTS && rc < 0; attempt++) {
			if (attempt)
				usleep(100000u * (unsigned)attempt); /* linear back-off */
			sl_error_free(&err);
			rc = forward(e, ev, &err);
		}
		if (rc < 0) {
			char q[300];
			sl_err("event lost", "topic=%s err=%s", ev->topic, sl_log_quote(sl_error_msg(err), q, sizeof(q)));
		} else {
			sl_debug("event published", "topic=%s", ev->topic);
		}
		sl_error_free(&err);
		pthread_mutex_lock(&e->lock);
		e->head = ev->next;
		if (!e->head)
			e->tail = NULL;
		e->queued--;
		e->busy = false;
		pthread_cond_broadcast(&e->cond);
		free(ev->data);
		free(ev);
	}
	pthread_mutex_unlock(&e->lock);
	return NULL;
}

int shim_events_new(const char *address, const char *ns, struct shim_events **out, sl_error_t *err)
{
	struct shim_events *e = calloc(1, sizeof(*e));
	if (!e || !(e->ns = strdup(ns ? ns : "")) || !(e->address = strdup(address ? address : ""))) {
		if (e) {
			free(e->ns);
			free(e);
		}
		return sl_error_set(err, SL_E_NOMEM, "events: out of memory");
	}
	pthread_mutex_init(&e->lock, NULL);
	pthread_cond_init(&e->cond, NULL);
	if (e->address[0] && pthread_create(&e->thread, NULL, publisher, e) != 0) {
		free(e->address);
		free(e->ns);
		free(e);
		return sl_error_set(err, SL_E_NOMEM, "events: cannot start the publisher thread");
	}
	*out = e;
	return 0;
}

void shim_events_publish(struct shim_events *e, const char *topic, const ProtobufCMessage *msg)
{
	sl_info("event", "topic=%s type=%s", topic, msg->descriptor->name);
	if (!e->address[0])
		return;
	struct event *ev = calloc(1, sizeof(*ev));
	sl_error_t err = NULL;
	if (!ev || ttrpc_pack(msg, &ev->data, &ev->len, &err) < 0) {
		sl_err("event dropped", "topic=%s err=%s", topic, err ? sl_error_msg(err) : "out of memory");
		sl_error_free(&err);
		free(ev);
		return;
	}
	snprintf(ev->topic, sizeof(ev->topic), "%s", topic);
	/* The bare full name: containerd 1.6 accepts nothing else. */
	snprintf(ev->type_url, sizeof(ev->type_url), "%s", msg->descriptor->name);
	clock_gettime(CLOCK_REALTIME, &ev->ts);
	pthread_mutex_lock(&e->lock);
	if (e->queued >= EVENTS_MAX_QUEUED) {
		pthread_mutex_unlock(&e->lock);
		sl_err("event dropped: queue full", "topic=%s queued=%u", topic, EVENTS_MAX_QUEUED);
		free(ev->data);
		free(ev);
		return;
	}
	if (e->tail)
		e->tail->next = ev;
	else
		e->head = ev;
	e->tail = ev;
	e->queued++;
	pthread_cond_broadcast(&e->cond);
	pthread_mutex_unlock(&e->lock);
}

void shim_events_free(struct shim_events *e, unsigned timeout_ms)
{
	if (!e)
		return;
	if (e->address[0]) {
		struct timespec dl;
		sl_deadline_ms(&dl, CLOCK_REALTIME, timeout_ms);
		pthread_mutex_lock(&e->lock);
		int wr = 0;
		while ((e->head || e->busy) && wr != ETIMEDOUT)
			wr = pthread_cond_timedwait(&e->cond, &e->lock, &dl);
		/* What is left is dropped: its thread stops after the current one. */
		while (e->head && e->head->next) {
			struct event *n = e->head->next;
			e->head->next = n->next;
			free(n->data);
			free(n);
		}
		e->stopping = true;
		pthread_cond_broadcast(&e->cond);
		pthread_mutex_unlock(&e->lock);
		pthread_join(e->thread, NULL);
	}
	ttrpc_client_free(e->client);
	free(e->address);
	free(e->ns);
	free(e);
}
