/* Informer caches: list results and watch events applied under a lock; readers get deep copies (jansson reference counts are not atomic). */
#include <stdlib.h>
#include <string.h>

#include "sop_cache.h"
#include "sop_sporelet.h"

void sop_cache_init(struct sop_cache *c)
{
	memset(c, 0, sizeof(*c));
	pthread_mutex_init(&c->lock, NULL);
	c->objs = json_object();
}

void sop_cache_destroy(struct sop_cache *c)
{
	json_decref(c->objs);
	pthread_mutex_destroy(&c->lock);
}

void sop_cache_replace(struct sop_cache *c, json_t *items)
{
	json_t *fresh = json_object();
	size_t i;
	json_t *o;
	json_array_foreach(items, i, o) {
		char key[512];
		if (sop_object_key(o, key, sizeof(key)) == 0)
			json_object_set_new(fresh, key, json_deep_copy(o));
	}
	pthread_mutex_lock(&c->lock);
	json_decref(c->objs);
	c->objs = fresh;
	c->synced = true;
	pthread_mutex_unlock(&c->lock);
}

static long long rv_num(json_t *o)
{
	const char *rv = json_string_value(json_object_get(json_object_get(o, "metadata"), "resourceVersion"));
	if (!rv || !*rv || strlen(rv) > 18)
		return -1;
	long long n = 0;
	for (const char *p = rv; *p; p++) {
		if (*p < '0' || *p > '9')
			return -1;
		n = n * 10 + (*p - '0');
	}
	return n;
}

void sop_cache_apply(struct sop_cache *c, const struct sop_watch_event *ev)
{
	char key[512];
	if (ev->type == SOP_EV_BOOKMARK || ev->type == SOP_EV_ERROR || sop_object_key(ev->object, key, sizeof(key)) < 0)
		return;
	json_t *copy = ev->type == SOP_EV_DELETED ? NULL : json_deep_copy(ev->object);
	pthread_mutex_lock(&c->lock);
	json_t *cur = json_object_get(c->objs, key);
	long long have = cur ? rv_num(cur) : -1, got = rv_num(ev->object);
	/* resourceVersions are opaque by contract; numeric comparison only
	 * guards against replays after a relist, and only when both parse. */
	bool stale = cur && have >= 0 && got >= 0 && got < have;
	if (!stale) {
		if (ev->type == SOP_EV_DELETED)
			json_object_del(c->objs, key);
		else
			json_object_set(c->objs, key, copy);
	}
	pthread_mutex_unlock(&c->lock);
	json_decref(copy);
}

json_t *sop_cache_get(struct sop_cache *c, const char *key)
{
	pthread_mutex_lock(&c->lock);
	json_t *o = json_object_get(c->objs, key);
	json_t *copy = o ? json_deep_copy(o) : NULL;
	pthread_mutex_unlock(&c->lock);
	return copy;
}

json_t *sop_cache_select(struct sop_cache *c, const char *ns, const char *label, const char *value)
{
	json_t *out = json_array();
	const char *k;
	json_t *o;
	pthread_mutex_lock(&c->lock);
	json_object_foreach(c->objs, k, o) {
		json_t *md = json_object_get(o, "metadata");
		const char *ons = json_string_value(json_object_get(md, "namespace"));
		const char *v = json_string_value(json_object_get(json_object_get(md, "labels"), label));
		if (ons && v && strcmp(ons, ns) == 0 && strcmp(v, value) == 0)
			json_array_append_new(out, json_deep_copy(o));
	}
	pthread_mutex_unlock(&c->lock);
	return out;
}

json_t *sop_cache_keys(struct sop_cache *c)
{
	json_t *out = json_array();
	const char *k;
	json_t *o;
	pthread_mutex_lock(&c->lock);
	json_object_foreach(c->objs, k, o)
		json_array_append_new(out, json_string(k));
	pthread_mutex_unlock(&c->lock);
	return out;
}

bool sop_cache_synced(struct sop_cache *c)
{
	pthread_mutex_lock(&c->lock);
	bool s = c->synced;
	pthread_mutex_unlock(&c->lock);
	return s;
}

size_t sop_cache_len(struct sop_cache *c)
{
	pthread_mutex_lock(&c->lock);
	size_t n = json_object_size(c->objs);
	pthread_mutex_unlock(&c->lock);
	return n;
}
