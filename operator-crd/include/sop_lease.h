/* Leader election with a coordination.k8s.io/v1 Lease: the decision rules (pure) and the elector thread. */
#ifndef SOP_LEASE_H
#define SOP_LEASE_H

#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include "sl/error.h"
#include "sop_kube.h"

/* What this candidate last saw of another holder's record, on its own
 * monotonic clock: expiry is judged by how long the record stayed
 * unchanged here, never by comparing the holder's clock with ours. */
struct sop_lease_observed {
	char holder[256];
	char renew_time[64];
	int64_t since_ms; /* when this record was first seen */
};

enum sop_lease_action {
	SOP_LEASE_WAIT = 0, /* another holder's lease is live */
	SOP_LEASE_CREATE,   /* no Lease object: create it, holding it */
	SOP_LEASE_TAKE,     /* free or expired: write ourselves as holder */
	SOP_LEASE_RENEW,    /* ours: write a new renewTime */
};

/* lease NULL means the object does not exist (404). */
enum sop_lease_action sop_lease_decide(json_t *lease, const char *identity, int64_t now_ms, unsigned duration_s,
				       struct sop_lease_observed *obs);

/* The Lease to write for action (CREATE, TAKE, RENEW), starting from lease
 * (NULL for CREATE); keeps metadata.resourceVersion so the write is
 * conditional. now: a MicroTime ("2026-01-02T03:04:05.000000Z"). */
json_t *sop_lease_build(json_t *lease, enum sop_lease_action action, const char *ns, const char *name,
			const char *identity, unsigned duration_s, const char *now);
/* The Lease that hands leadership back: holder "", duration 1 s. */
json_t *sop_lease_release(json_t *lease, const char *now);
void sop_micro_time(char out[40]);

struct sop_elector_opts {
	const char *ns, *name, *identity;
	unsigned duration_s;   /* leaseDurationSeconds (15) */
	unsigned renew_deadline_s; /* leadership is given up when renewals fail this long (10) */
	unsigned retry_s;      /* between attempts (2) */
};

struct sop_elector {
	struct sop_kube *k;
	struct sop_elector_opts o;
	char path[512];
	volatile int leader;     /* read by the controller */
	volatile int *stop;
	pthread_t thread;
	bool started;
	uint64_t transitions;    /* times we became leader */
	void (*on_change)(void *arg, bool leader);
	void *arg;
};

/* Starts the elector thread; it releases the lease when *stop becomes true. */
int sop_elector_start(struct sop_elector *e, struct sop_kube *k, const struct sop_elector_opts *o,
		      volatile int *stop, void (*on_change)(void *, bool), void *arg, sl_error_t *err);
void sop_elector_join(struct sop_elector *e);

#endif
