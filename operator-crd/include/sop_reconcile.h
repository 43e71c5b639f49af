/* The reconcile core: from a Sporelet and its Pods to the Pods to create and delete and the new status (no I/O). */
#ifndef SOP_RECONCILE_H
#define SOP_RECONCILE_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include "sl/error.h"
#include "sop_sporelet.h"

/* What the controller learned about spec.spore before reconciling. */
enum sop_resolve_state {
	SOP_RESOLVE_PINNED = 0, /* spec.spore carries its own digest */
	SOP_RESOLVE_OK,         /* a tag resolved to `digest` */
	SOP_RESOLVE_FAILED,     /* the registry lookup failed: `message` says why */
	SOP_RESOLVE_DISABLED,   /* resolution is off: pods use spec.spore as written */
};

struct sop_reconcile_in {
	json_t *sporelet;      /* the Sporelet object */
	json_t *pods;          /* array: Pods in its namespace (only those it controls are used) */
	enum sop_resolve_state resolve;
	const char *digest;    /* SOP_RESOLVE_OK: "sha256:<hex>" */
	const char *resolve_message; /* SOP_RESOLVE_FAILED: the error */
	const char *last_error;      /* the previous attempt's API error for this Sporelet, or NULL */
	const char *now;             /* RFC 3339 time for new lastTransitionTimes */
	const char *runtime_class;   /* the pods' runtimeClassName; NULL: SOP_RUNTIME_CLASS */
};

struct sop_reconcile_out {
	json_t *create;  /* array of Pod objects to POST, lowest index first */
	json_t *remove;  /* array of {"name","uid","reason","index"} to DELETE, in order */
	json_t *status;  /* the complete new status */
	bool status_changed; /* status differs from the object's current status */
	bool waiting;    /* a replica waits for a terminating pod to go: requeue */
};

/* Computes the actions for one Sporelet. An invalid spec is not an error:
 * the result has no actions and a status saying InvalidSpec. Returns -1 only
 * for malformed input (not a Sporelet object, pods not an array) or memory.
 * Free out with sop_reconcile_out_free. */
int sop_reconcile(const struct sop_reconcile_in *in, struct sop_reconcile_out *out, sl_error_t *err);
void sop_reconcile_out_free(struct sop_reconcile_out *out);

/* The Pod for replica index of s, with image (already pinned), the
 * template hash of s (sop_template_hash) and runtime_class (NULL:
 * SOP_RUNTIME_CLASS). Exposed for tests and docs. */
json_t *sop_pod_build(const struct sop_sporelet *s, int64_t index, const char *image, const char *hash,
		      const char *runtime_class, sl_error_t *err);

/* A 16-hex-digit hash of everything in s and image that shapes a Pod except
 * the replica count: pods whose sporelet.ai/template-hash differs are
 * outdated and are replaced one at a time. */
int sop_template_hash(const struct sop_sporelet *s, const char *image, char out[17], sl_error_t *err);

/* Pod helpers over API objects. */
bool sop_pod_ready(json_t *pod);      /* status.conditions Ready == "True" */
bool sop_pod_terminal(json_t *pod);   /* status.phase Failed or Succeeded */
bool sop_pod_deleting(json_t *pod);   /* metadata.deletionTimestamp set */
/* True when an ownerReference with controller: true names uid. */
bool sop_owned_by(json_t *obj, const char *uid);
/* The sporelet.ai/replica label as an index, or -1 when missing or malformed. */
int64_t sop_pod_index(json_t *pod);

/* Sets conditions[type] in the status object `status` (creating the array),
 * keeping lastTransitionTime when the status value is unchanged. */
int sop_condition_set(json_t *status, json_t *old_conditions, const char *type, const char *cstatus,
		      const char *reason, const char *message, int64_t generation, const char *now);

/* now as RFC 3339 UTC with second precision ("2026-01-02T03:04:05Z"). */
void sop_time_format(int64_t unix_s, char out[32]);

#endif
