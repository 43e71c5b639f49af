/* The Sporelet custom resource (sporelet.ai/v1alpha1) as the operator reads it: parsing and checks. */
#ifndef SOP_SPORELET_H
#define SOP_SPORELET_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include "sl/error.h"

#define SOP_GROUP "sporelet.ai"
#define SOP_VERSION "v1alpha1"
#define SOP_API_VERSION "sporelet.ai/v1alpha1"
#define SOP_KIND "Sporelet"
#define SOP_PLURAL "sporelets"

/* Labels and annotations the operator puts on the Pods it owns. */
#define SOP_LABEL_NAME "sporelet.ai/name"
#define SOP_LABEL_REPLICA "sporelet.ai/replica"
#define SOP_ANN_SPORE "sporelet.ai/spore"
#define SOP_ANN_REPLICA "sporelet.ai/replica"
#define SOP_ANN_GENERATION "sporelet.ai/generation"
#define SOP_ANN_TEMPLATE_HASH "sporelet.ai/template-hash"
#define SOP_RUNTIME_CLASS "sporelet"
#define SOP_CONTAINER_NAME "spore"

/* Bounds on what a Sporelet may ask for; the CRD's schema states the same. */
#define SOP_MAX_REPLICAS 10000
#define SOP_MAX_NAME 63 /* metadata.name: a DNS-1123 label, so "<name>-<index>" stays a valid pod name */

/* A parsed Sporelet. Every pointer borrows from the JSON object passed to
 * sop_sporelet_parse, which must outlive this struct. Absent optional parts
 * are NULL. */
struct sop_sporelet {
	const char *namespace_, *name, *uid, *resource_version;
	int64_t generation;
	bool deleting; /* metadata.deletionTimestamp is set */
	const char *spore;        /* spec.spore as written */
	bool spore_has_digest;    /* "...@sha256:<hex>" */
	char spore_digest[72];    /* the digest in spec.spore, "" without one */
	int64_t replicas;         /* spec.replicas, default 1 */
	json_t *command;          /* array of strings */
	json_t *env;              /* array of EnvVar objects */
	json_t *resources;        /* ResourceRequirements object */
	const char *hostname_pattern; /* spec.fork.hostnamePattern */
	json_t *fork_env;         /* spec.fork.env: [{name, value} | {name, values[]}] */
	json_t *labels, *annotations, *node_selector, *tolerations, *affinity; /* spec.template.* */
	json_t *status;           /* the object's status, or NULL */
};

/* Reads and checks a Sporelet object (as the API server returns it). Errors
 * are SL_E_INVALID and name the field ("spec.replicas: ..."). */
int sop_sporelet_parse(json_t *obj, struct sop_sporelet *out, sl_error_t *err);

/* "<namespace>/<name>" of any object with metadata; -1 if missing or too long. */
int sop_object_key(json_t *obj, char *out, size_t cap);

/* DNS-1123 label: 1-63 of [a-z0-9-], starting and ending alphanumeric. */
bool sop_dns_label_ok(const char *s);

/* The hostname of replica index: hostnamePattern with every "{index}"
 * replaced by the index and every "{name}" by the Sporelet's name. -1 (with
 * *err) if the result is not a DNS-1123 label. */
int sop_hostname(const struct sop_sporelet *s, int64_t index, char *out, size_t cap, sl_error_t *err);

/* The image reference of the pods: spec.spore with its tag dropped and the
 * digest appended ("reg/repo@sha256:..."), or spec.spore unchanged when
 * digest is NULL. */
int sop_pinned_image(const char *spore, const char *digest, char *out, size_t cap, sl_error_t *err);

#endif
