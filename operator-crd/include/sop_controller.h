/* The controller: caches fed by list+watch, a work queue, reconcile with API writes, leader election, health and metrics. */
#ifndef SOP_CONTROLLER_H
#define SOP_CONTROLLER_H

#include <stdbool.h>
#include "sl/error.h"
#include "sop_kube.h"
#include "sop_lease.h"

struct sop_controller_opts {
	const char *namespace_;     /* watch only this namespace; NULL or "": all */
	bool leader_elect;
	struct sop_elector_opts lease;
	const char *http_addr;      /* "host:port" for /healthz, /readyz, /metrics; NULL: none */
	bool resolve;               /* resolve tags in spec.spore to digests */
	bool registry_insecure;     /* plain HTTP to non-loopback registries */
	const char *registry_ca;    /* extra CA bundle for registries */
	unsigned resolve_ttl_s;     /* a resolved tag is looked up again after this (300) */
	unsigned resync_s;          /* every Sporelet is reconciled at least this often (300) */
	unsigned watch_timeout_s;   /* timeoutSeconds of each watch request (300) */
	const char *runtime_class;  /* the pods' runtimeClassName; NULL: "sporelet" */
};

/* Runs until *stop becomes true (the caller's SIGTERM handler sets it):
 * then stops the watches, finishes the reconcile in progress, releases the
 * lease, and returns 0. -1 only when it cannot start (bad options, the
 * listen address taken). */
int sop_controller_run(struct sop_kube *k, const struct sop_controller_opts *o, volatile int *stop,
		       sl_error_t *err);

#endif
