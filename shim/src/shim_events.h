/* Publishing task events to containerd (Events/Forward over ttrpc), in order, off the callers' threads. */
#ifndef SHIM_EVENTS_H
#define SHIM_EVENTS_H

#include <protobuf-c/protobuf-c.h>
#include "sl/error.h"

struct shim_events;

/* address: containerd's ttrpc socket ($TTRPC_ADDRESS); NULL or "" keeps
 * events local (logged only), as for a shim run without containerd. */
int shim_events_new(const char *address, const char *ns, struct shim_events **out, sl_error_t *err);
/* Queues one event; topic like "/tasks/exit", msg a containerd.events
 * message whose full name becomes the bare type URL. Events go out in the
 * order they were queued. */
void shim_events_publish(struct shim_events *e, const char *topic, const ProtobufCMessage *msg);
/* Waits up to timeout_ms for the queue to drain, then stops and frees. */
void shim_events_free(struct shim_events *e, unsigned timeout_ms);

#endif
