/* A Kubernetes API client over libcurl: get, list, watch, create, delete, patch, update, with errors that carry the URL, status code and the API's Status message. */
#ifndef SOP_KUBE_H
#define SOP_KUBE_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include "sl/error.h"
#include "sop_kubeconfig.h"
#include "sop_watch.h"

struct sop_kube;

/* Takes over cfg's contents (cfg is zeroed). */
int sop_kube_new(struct sop_kube_config *cfg, struct sop_kube **out, sl_error_t *err);
void sop_kube_free(struct sop_kube *k);
const char *sop_kube_namespace(const struct sop_kube *k);
const char *sop_kube_server(const struct sop_kube *k);

/* Counters for /metrics (monotonic, thread-safe reads). */
struct sop_kube_stats {
	uint64_t requests, errors, unauthorized;
};
void sop_kube_stats(const struct sop_kube *k, struct sop_kube_stats *st);

/* Every call: 0 on a 2xx answer; -1 with *err otherwise. *status is the
 * HTTP status (0 when no answer came: connection, TLS, timeout). On 401 the
 * token file is read again and the request repeated once. *out (if given)
 * gets the decoded JSON body of a 2xx answer. Error codes: SL_E_NOT_FOUND
 * for 404, SL_E_EXISTS for 409 AlreadyExists, SL_E_PRECONDITION for other
 * 409s and 410, SL_E_IO otherwise. */
int sop_kube_request(struct sop_kube *k, const char *method, const char *path, const char *content_type,
		     json_t *body, long *status, json_t **out, sl_error_t *err);

int sop_kube_get(struct sop_kube *k, const char *path, long *status, json_t **out, sl_error_t *err);
/* A whole list (following metadata.continue in pages of 500); *items is
 * the items array and rv the list's resourceVersion (for the watch). */
int sop_kube_list(struct sop_kube *k, const char *path, const char *label_selector, long *status, json_t **items,
		  char *rv, size_t rv_cap, sl_error_t *err);
int sop_kube_create(struct sop_kube *k, const char *path, json_t *obj, long *status, json_t **out, sl_error_t *err);
/* PUT: the object carries metadata.resourceVersion, so a stale write gets 409. */
int sop_kube_update(struct sop_kube *k, const char *path, json_t *obj, long *status, json_t **out, sl_error_t *err);
/* DELETE with DeleteOptions: preconditions.uid (if uid), propagationPolicy Background. */
int sop_kube_delete(struct sop_kube *k, const char *path, const char *uid, long *status, sl_error_t *err);
/* PATCH with application/merge-patch+json. */
int sop_kube_merge_patch(struct sop_kube *k, const char *path, json_t *patch, long *status, json_t **out,
			 sl_error_t *err);

/* Called per ADDED, MODIFIED, DELETED and BOOKMARK event; -1 stops the watch with that error. */
typedef int (*sop_watch_fn)(void *arg, const struct sop_watch_event *ev, sl_error_t *err);

enum sop_watch_end {
	SOP_WATCH_CLOSED = 0, /* the server ended the stream (timeoutSeconds): watch again from rv */
	SOP_WATCH_GONE,       /* 410: rv is too old; list again */
	SOP_WATCH_STOPPED,    /* *stop became true */
};

/* GET path?watch=1&resourceVersion=rv&allowWatchBookmarks=true&timeoutSeconds=t
 * [&labelSelector=...], streaming events to fn. rv (rv_cap bytes) is
 * updated to every event's resourceVersion, so the next watch resumes
 * there. Returns 0 with *end set, or -1 with *err (and *status as above). */
int sop_kube_watch(struct sop_kube *k, const char *path, const char *label_selector, char *rv, size_t rv_cap,
		   unsigned timeout_s, sop_watch_fn fn, void *arg, volatile int *stop, enum sop_watch_end *end,
		   long *status, sl_error_t *err);

/* "%"-escapes a query value (label selectors contain '=' and ','). free() it. */
char *sop_kube_escape(const char *s);

#endif
