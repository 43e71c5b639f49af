/* Informer-style caches: the objects of one resource as last listed and watched, keyed "namespace/name". */
#ifndef SOP_CACHE_H
#define SOP_CACHE_H

#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include "sop_watch.h"

struct sop_cache {
	pthread_mutex_t lock;
	json_t *objs;   /* {"ns/name": object}; objects are never modified in place */
	bool synced;    /* a list has completed */
};

void sop_cache_init(struct sop_cache *c);
void sop_cache_destroy(struct sop_cache *c);
/* Replaces everything with a fresh list (items is borrowed). */
void sop_cache_replace(struct sop_cache *c, json_t *items);
/* Applies ADDED/MODIFIED/DELETED (BOOKMARK changes nothing). An event
 * older than the cached object (by resourceVersion, when both are
 * integers, as the API server's are in practice) is ignored. */
void sop_cache_apply(struct sop_cache *c, const struct sop_watch_event *ev);
/* A deep copy of the object at key, or NULL. */
json_t *sop_cache_get(struct sop_cache *c, const char *key);
/* Deep copies of the objects in namespace ns whose label `label` equals value. */
json_t *sop_cache_select(struct sop_cache *c, const char *ns, const char *label, const char *value);
/* The keys of all objects (a JSON array of strings). */
json_t *sop_cache_keys(struct sop_cache *c);
bool sop_cache_synced(struct sop_cache *c);
size_t sop_cache_len(struct sop_cache *c);

#endif
