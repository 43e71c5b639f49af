/* The controller loop: informers for Sporelets and their Pods, the worker that reconciles and writes, and /metrics. */
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "sl/json.h"
#include "sl/log.h"
#include "sl/time.h"
#include "sop_backoff.h"
#include "sop_cache.h"
#include "sop_controller.h"
#include "sop_httpd.h"
#include "sop_queue.h"
#include "sop_reconcile.h"
#include "sop_resolve.h"

enum { RES_SPORELETS = 0, RES_PODS = 1 };
static const char *const res_names[] = { "sporelets", "pods" };

struct ctl;

struct informer {
	struct ctl *c;
	int res;
	char path[512];
	const char *selector;
	struct sop_cache *cache;
	pthread_t thread;
	bool started;
};

struct ctl {
	struct sop_kube *k;
	const struct sop_controller_opts *o;
	volatile int *stop;
	struct sop_cache sporelets, pods;
	struct sop_queue q;
	struct sop_resolver res;
	struct sop_elector el;
	struct informer inf[2];
	json_t *last_error; /* key -> message of the last failed write (worker thread only) */
	json_t *attempts;   /* key -> consecutive failures (worker thread only) */
	atomic_uint_fast64_t reconciles, reconcile_errors, pods_created, pods_deleted, status_updates,
		status_conflicts, watch_restarts[2], relists[2], watch_events[2];
	atomic_int leader;
};

static void enqueue(struct ctl *c, const char *key, uint32_t delay_ms)
{
	if (sop_queue_add(&c->q, key, delay_ms) < 0)
		sl_warn("queue add failed", "key=%s err=\"out of memory\"", key);
}

static void enqueue_all(struct ctl *c)
{
	json_t *keys = sop_cache_keys(&c->sporelets);
	size_t i;
	json_t *k;
	json_array_foreach(keys, i, k)
		enqueue(c, json_string_value(k), 0);
	json_decref(keys);
}

/* The Sporelet key an object's change concerns. */
static void enqueue_for(struct informer *inf, json_t *obj)
{
	char key[512];
	if (inf->res == RES_SPORELETS) {
		if (sop_object_key(obj, key, sizeof(key)) == 0)
			enqueue(inf->c, key, 0);
		return;
	}
	json_t *md = json_object_get(obj, "metadata");
	const char *ns = json_string_value(json_object_get(md, "namespace"));
	const char *owner = json_string_value(json_object_get(json_object_get(md, "labels"), SOP_LABEL_NAME));
	if (ns && owner && (size_t)snprintf(key, sizeof(key), "%s/%s", ns, owner) < sizeof(key))
		enqueue(inf->c, key, 0);
}

static int on_event(void *arg, const struct sop_watch_event *ev, sl_error_t *err)
{
	(void)err;
	struct informer *inf = arg;
	atomic_fetch_add(&inf->c->watch_events[inf->res], 1);
	if (ev->type == SOP_EV_BOOKMARK)
		return 0;
	sop_cache_apply(inf->cache, ev);
	enqueue_for(inf, ev->object);
	return 0;
}

static void nap(struct ctl *c, uint32_t ms)
{
	for (uint32_t t = 0; t < ms && !*c->stop; t += 50)
		usleep(50 * 1000);
}

static void *informer_main(void *arg)
{
	struct informer *inf = arg;
	struct ctl *c = inf->c;
	const char *what = res_names[inf->res];
	struct sop_backoff bo;
	sop_backoff_init(&bo, 200, 30000, (uint64_t)sl_now_ms() ^ ((uint64_t)getpid() << 20) ^ (uint64_t)inf->res);
	char rv[128] = "";
	bool need_list = true;
	while (!*c->stop) {
		sl_error_t err = NULL;
		long status = 0;
		if (need_list) {
			json_t *items = NULL;
			if (sop_kube_list(c->k, inf->path, inf->selector, &status, &items, rv, sizeof(rv), &err) < 0) {
				uint32_t d = sop_backoff_next(&bo);
				sl_warn("list failed", "resource=%s status=%ld retry_ms=%u err=\"%s\"", what, status, d,
					sl_error_msg(err));
				sl_error_free(&err);
				nap(c, d);
				continue;
			}
			/* Keys that vanished while we were not watching need a reconcile too. */
			json_t *before = sop_cache_keys(inf->cache);
			sop_cache_replace(inf->cache, items);
			size_t i;
			json_t *o;
			json_array_foreach(items, i, o)
				enqueue_for(inf, o);
			if (inf->res == RES_SPORELETS) {
				json_array_foreach(before, i, o)
					enqueue(c, json_string_value(o), 0);
			}
			json_decref(before);
			sl_info("listed", "resource=%s items=%zu resourceVersion=%s", what, json_array_size(items), rv);
			json_decref(items);
			atomic_fetch_add(&c->relists[inf->res], 1);
			need_list = false;
		}
		enum sop_watch_end end;
		int rc = sop_kube_watch(c->k, inf->path, inf->selector, rv, sizeof(rv), c->o->watch_timeout_s, on_event,
					inf, c->stop, &end, &status, &err);
		if (rc == 0 && end == SOP_WATCH_STOPPED)
			break;
		atomic_fetch_add(&c->watch_restarts[inf->res], 1);
		if (rc == 0 && end == SOP_WATCH_CLOSED) {
			sop_backoff_reset(&bo);
			continue; /* resume from the last resourceVersion */
		}
		if (rc == 0 && end == SOP_WATCH_GONE) {
			sl_info("watch expired (410 Gone), listing again", "resource=%s resourceVersion=%s", what, rv);
			need_list = true;
			continue;
		}
		uint32_t d = sop_backoff_next(&bo);
		if (status == 401)
			sl_err("watch unauthorized (401): token rejected", "resource=%s retry_ms=%u err=\"%s\"", what, d,
			       sl_error_msg(err));
		else
			sl_warn("watch failed", "resource=%s status=%ld retry_ms=%u err=\"%s\"", what, status, d,
				sl_error_msg(err));
		sl_error_free(&err);
		/* After an error the stream may have lost events: list again. */
		need_list = true;
		nap(c, d);
	}
	return NULL;
}

static void on_leader(void *arg, bool leader)
{
	struct ctl *c = arg;
	atomic_store(&c->leader, leader ? 1 : 0);
	if (leader)
		enqueue_all(c);
}

/* ---- metrics and health ------------------------------------------------------ */

static void http_handler(void *arg, const char *path, int *status, const char **ctype, char **body)
{
	struct ctl *c = arg;
	*ctype = "text/plain; charset=utf-8";
	if (strcmp(path, "/healthz") == 0 || strcmp(path, "/livez") == 0) {
		*status = 200;
		*body = strdup("ok\n");
		return;
	}
	if (strcmp(path, "/readyz") == 0) {
		/* Ready once both caches are synced, leader or not: a standby is
		 * healthy and must not be restarted for waiting. */
		bool ok = sop_cache_synced(&c->sporelets) && sop_cache_synced(&c->pods);
		*status = ok ? 200 : 503;
		*body = strdup(ok ? "ok\n" : "caches not synced\n");
		return;
	}
	if (strcmp(path, "/metrics") != 0) {
		*status = 404;
		*body = strdup("not found\n");
		return;
	}
	struct sop_kube_stats ks;
	sop_kube_stats(c->k, &ks);
	char *b = NULL;
	size_t n = 0;
	FILE *f = open_memstream(&b, &n);
	if (!f) {
		*status = 500;
		return;
	}
#define COUNTER(name, help, v) \
	fprintf(f, "# HELP %s %s\n# TYPE %s counter\n%s %" PRIu64 "\n", name, help, name, name, (uint64_t)(v))
#define GAUGE(name, help, v) fprintf(f, "# HELP %s %s\n# TYPE %s gauge\n%s %" PRIu64 "\n", name, help, name, name, (uint64_t)(v))
	COUNTER("sporelet_operator_reconciles_total", "Reconciles of a Sporelet.", c->reconciles);
	COUNTER("sporelet_operator_reconcile_errors_total", "Reconciles that ended with an error.", c->reconcile_errors);
	COUNTER("sporelet_operator_pods_created_total", "Pods created.", c->pods_created);
	COUNTER("sporelet_operator_pods_deleted_total", "Pods deleted.", c->pods_deleted);
	COUNTER("sporelet_operator_status_updates_total", "Status subresource patches.", c->status_updates);
	COUNTER("sporelet_operator_status_conflicts_total", "Status patches refused with 409 and retried.",
		c->status_conflicts);
	GAUGE("sporelet_operator_queue_depth", "Keys waiting in the work queue.", sop_queue_len(&c->q));
	fprintf(f, "# HELP sporelet_operator_watch_restarts_total Watches that ended and were started again.\n"
		   "# TYPE sporelet_operator_watch_restarts_total counter\n");
	for (int r = 0; r < 2; r++)
		fprintf(f, "sporelet_operator_watch_restarts_total{resource=\"%s\"} %" PRIu64 "\n", res_names[r],
			(uint64_t)c->watch_restarts[r]);
	fprintf(f, "# HELP sporelet_operator_lists_total Full lists (the first, and after 410 Gone or errors).\n"
		   "# TYPE sporelet_operator_lists_total counter\n");
	for (int r = 0; r < 2; r++)
		fprintf(f, "sporelet_operator_lists_total{resource=\"%s\"} %" PRIu64 "\n", res_names[r],
			(uint64_t)c->relists[r]);
	fprintf(f, "# HELP sporelet_operator_watch_events_total Watch events received (bookmarks included).\n"
		   "# TYPE sporelet_operator_watch_events_total counter\n");
	for (int r = 0; r < 2; r++)
		fprintf(f, "sporelet_operator_watch_events_total{resource=\"%s\"} %" PRIu64 "\n", res_names[r],
			(uint64_t)c->watch_events[r]);
	GAUGE("sporelet_operator_leader", "1 while this instance holds the lease (always 1 without leader election).",
	      c->leader);
	GAUGE("sporelet_operator_cache_objects", "Sporelets in the cache.", sop_cache_len(&c->sporelets));
	COUNTER("sporelet_operator_api_requests_total", "Requests to the API server.", ks.requests);
	COUNTER("sporelet_operator_api_errors_total", "API requests without a 2xx answer.", ks.errors);
	COUNTER("sporelet_operator_api_unauthorized_total", "API answers 401 Unauthorized.", ks.unauthorized);
	pthread_mutex_lock(&c->res.lock);
	uint64_t lookups = c->res.lookups, failures = c->res.failures;
	pthread_mutex_unlock(&c->res.lock);
	COUNTER("sporelet_operator_resolve_lookups_total", "Registry lookups of spore tags.", lookups);
	COUNTER("sporelet_operator_resolve_failures_total", "Registry lookups that failed.", failures);
#undef COUNTER
#undef GAUGE
	fclose(f);
	*status = 200;
	*ctype = "text/plain; version=0.0.4; charset=utf-8";
	*body = b;
}

/* ---- the worker -------------------------------------------------------------- */

static void now_text(char out[32])
{
	sop_time_format((int64_t)time(NULL), out);
}

static void status_path(char *out, size_t cap, const char *ns, const char *name)
{
	snprintf(out, cap, "/apis/%s/%s/namespaces/%s/%s/%s/status", SOP_GROUP, SOP_VERSION, ns, SOP_PLURAL, name);
}

/* Writes the status with the object's resourceVersion as a precondition;
 * on 409 reads the object again, recomputes the status against it (same
 * pods, same resolution) and tries again. */
static int write_status(struct ctl *c, struct sop_reconcile_in *in, json_t *status, const char *ns, const char *name,
			sl_error_t *err)
{
	char path[768], getpath[768];
	status_path(path, sizeof(path), ns, name);
	snprintf(getpath, sizeof(getpath), "/apis/%s/%s/namespaces/%s/%s/%s", SOP_GROUP, SOP_VERSION, ns, SOP_PLURAL,
		 name);
	json_t *obj = json_incref(in->sporelet);
	json_t *st = json_incref(status);
	int rc = -1;
	for (int attempt = 0; attempt < 5; attempt++) {
		const char *rv = json_string_value(json_object_get(json_object_get(obj, "metadata"), "resourceVersion"));
		json_t *patch = json_pack("{s:{s:s?}, s:O}", "metadata", "resourceVersion", rv, "status", st);
		long code;
		sl_error_t perr = NULL;
		int prc = sop_kube_merge_patch(c->k, path, patch, &code, NULL, &perr);
		json_decref(patch);
		if (prc == 0) {
			atomic_fetch_add(&c->status_updates, 1);
			rc = 0;
			break;
		}
		if (code != 409) {
			*err = perr;
			break;
		}
		atomic_fetch_add(&c->status_conflicts, 1);
		sl_info("status conflict, reading the Sporelet again", "sporelet=%s/%s attempt=%d", ns, name, attempt + 1);
		sl_error_free(&perr);
		json_t *fresh = NULL;
		if (sop_kube_get(c->k, getpath, &code, &fresh, err) < 0) {
			if (code == 404) { /* deleted meanwhile: nothing to write */
				sl_error_free(err);
				rc = 0;
			}
			break;
		}
		struct sop_reconcile_in in2 = *in;
		in2.sporelet = fresh;
		struct sop_reconcile_out out2;
		if (sop_reconcile(&in2, &out2, err) < 0) {
			json_decref(fresh);
			break;
		}
		json_decref(obj);
		obj = fresh;
		json_decref(st);
		st = json_incref(out2.status);
		bool changed = out2.status_changed;
		sop_reconcile_out_free(&out2);
		if (!changed) {
			rc = 0;
			break;
		}
	}
	if (rc < 0 && !*err)
		sl_error_set(err, SL_E_PRECONDITION, "status of %s/%s: still conflicting after 5 attempts", ns, name);
	json_decref(obj);
	json_decref(st);
	return rc;
}

static void reconcile_key(struct ctl *c, const char *key)
{
	json_t *obj = sop_cache_get(&c->sporelets, key);
	if (!obj) {
		json_object_del(c->last_error, key);
		json_object_del(c->attempts, key);
		return; /* deleted: the garbage collector removes its pods */
	}
	atomic_fetch_add(&c->reconciles, 1);
	struct sop_sporelet s;
	sl_error_t perr = NULL;
	bool valid = sop_sporelet_parse(obj, &s, &perr) == 0;
	sl_error_free(&perr);
	const char *ns = json_string_value(json_object_get(json_object_get(obj, "metadata"), "namespace"));
	const char *name = json_string_value(json_object_get(json_object_get(obj, "metadata"), "name"));
	if (!ns || !name) {
		json_decref(obj);
		return;
	}

	char digest[SL_DIGEST_STRLEN] = "", now[32];
	char *resolve_msg = NULL;
	struct sop_reconcile_in in = { .sporelet = obj, .resolve = SOP_RESOLVE_DISABLED,
				       .runtime_class = c->o->runtime_class };
	if (valid && !s.deleting) {
		if (s.spore_has_digest) {
			in.resolve = SOP_RESOLVE_PINNED;
		} else if (c->o->resolve) {
			sl_error_t rerr = NULL;
			if (sop_resolve(&c->res, s.spore, digest, &rerr) == 0) {
				in.resolve = SOP_RESOLVE_OK;
				in.digest = digest;
			} else {
				in.resolve = SOP_RESOLVE_FAILED;
				resolve_msg = strdup(sl_error_msg(rerr));
				in.resolve_message = resolve_msg;
				sl_warn("spore resolution failed", "sporelet=%s err=\"%s\"", key, sl_error_msg(rerr));
			}
			sl_error_free(&rerr);
		}
	}
	json_t *pods = sop_cache_select(&c->pods, ns, SOP_LABEL_NAME, name);
	const char *prev_error = json_string_value(json_object_get(c->last_error, key));
	char *prev_copy = prev_error ? strdup(prev_error) : NULL;
	in.pods = pods;
	in.last_error = prev_copy;
	now_text(now);
	in.now = now;

	struct sop_reconcile_out out;
	sl_error_t err = NULL;
	char first_error[512] = "";
	int errors = 0;
	if (sop_reconcile(&in, &out, &err) < 0) {
		sl_err("reconcile failed", "sporelet=%s err=\"%s\"", key, sl_error_msg(err));
		snprintf(first_error, sizeof(first_error), "%s", sl_error_msg(err));
		sl_error_free(&err);
		errors++;
		memset(&out, 0, sizeof(out));
	} else {
		size_t i;
		json_t *r;
		json_array_foreach(out.remove, i, r) {
			const char *pname = json_string_value(json_object_get(r, "name"));
			const char *uid = json_string_value(json_object_get(r, "uid"));
			char path[768];
			long code;
			snprintf(path, sizeof(path), "/api/v1/namespaces/%s/pods/%s", ns, pname);
			if (sop_kube_delete(c->k, path, uid, &code, &err) == 0) {
				atomic_fetch_add(&c->pods_deleted, 1);
				sl_info("pod deleted", "sporelet=%s pod=%s reason=%s", key, pname,
					json_string_value(json_object_get(r, "reason")));
			} else if (code == 404 || code == 409) {
				/* Gone already, or the name now belongs to a newer pod (uid precondition). */
				sl_debug("pod delete skipped", "sporelet=%s pod=%s status=%ld", key, pname, code);
			} else {
				sl_warn("pod delete failed", "sporelet=%s pod=%s err=\"%s\"", key, pname, sl_error_msg(err));
				if (!errors++)
					snprintf(first_error, sizeof(first_error), "%s", sl_error_msg(err));
			}
			sl_error_free(&err);
		}
		json_t *pod;
		json_array_foreach(out.create, i, pod) {
			char path[512];
			long code;
			const char *pname = json_string_value(json_object_get(json_object_get(pod, "metadata"), "name"));
			snprintf(path, sizeof(path), "/api/v1/namespaces/%s/pods", ns);
			if (sop_kube_create(c->k, path, pod, &code, NULL, &err) == 0) {
				atomic_fetch_add(&c->pods_created, 1);
				sl_info("pod created", "sporelet=%s pod=%s image=%s", key, pname,
					json_string_value(json_object_get(json_object_get(pod, "metadata"), "annotations") ?
						json_object_get(json_object_get(json_object_get(pod, "metadata"), "annotations"),
								SOP_ANN_SPORE) : NULL));
			} else if (code == 409) {
				/* The name is still held (a terminating pod, or our cache lags): later. */
				out.waiting = true;
				sl_debug("pod exists", "sporelet=%s pod=%s", key, pname);
			} else {
				sl_warn("pod create failed", "sporelet=%s pod=%s status=%ld err=\"%s\"", key, pname, code,
					sl_error_msg(err));
				if (!errors++)
					snprintf(first_error, sizeof(first_error), "%s", sl_error_msg(err));
			}
			sl_error_free(&err);
		}
		if (out.status_changed) {
			if (write_status(c, &in, out.status, ns, name, &err) < 0) {
				sl_warn("status update failed", "sporelet=%s err=\"%s\"", key, sl_error_msg(err));
				if (!errors++)
					snprintf(first_error, sizeof(first_error), "%s", sl_error_msg(err));
			}
			sl_error_free(&err);
		}
	}

	bool failed = errors > 0 || in.resolve == SOP_RESOLVE_FAILED;
	if (errors)
		json_object_set_new(c->last_error, key, json_string(first_error));
	else
		json_object_del(c->last_error, key);
	if (failed) {
		atomic_fetch_add(&c->reconcile_errors, 1);
		json_int_t n = json_integer_value(json_object_get(c->attempts, key));
		json_object_set_new(c->attempts, key, json_integer(n + 1));
		/* Per-key exponential backoff: 500 ms doubling to 5 minutes. */
		uint32_t d = 500;
		for (json_int_t i = 0; i < n && d < 300000; i++)
			d *= 2;
		enqueue(c, key, d > 300000 ? 300000 : d);
	} else {
		json_object_del(c->attempts, key);
		if (prev_copy)
			enqueue(c, key, 0); /* write the status without the old error */
		else if (out.waiting)
			enqueue(c, key, 2000);
	}
	sop_reconcile_out_free(&out);
	free(prev_copy);
	free(resolve_msg);
	json_decref(pods);
	json_decref(obj);
}

static int start_informer(struct ctl *c, int res, sl_error_t *err)
{
	struct informer *inf = &c->inf[res];
	inf->c = c;
	inf->res = res;
	const char *ns = c->o->namespace_ && *c->o->namespace_ ? c->o->namespace_ : NULL;
	if (res == RES_SPORELETS) {
		inf->cache = &c->sporelets;
		if (ns)
			snprintf(inf->path, sizeof(inf->path), "/apis/%s/%s/namespaces/%s/%s", SOP_GROUP, SOP_VERSION, ns,
				 SOP_PLURAL);
		else
			snprintf(inf->path, sizeof(inf->path), "/apis/%s/%s/%s", SOP_GROUP, SOP_VERSION, SOP_PLURAL);
	} else {
		inf->cache = &c->pods;
		inf->selector = SOP_LABEL_NAME; /* only pods that carry the label: ours */
		if (ns)
			snprintf(inf->path, sizeof(inf->path), "/api/v1/namespaces/%s/pods", ns);
		else
			snprintf(inf->path, sizeof(inf->path), "/api/v1/pods");
	}
	if (pthread_create(&inf->thread, NULL, informer_main, inf) != 0)
		return sl_error_set(err, SL_E_IO, "cannot start the %s informer", res_names[res]);
	inf->started = true;
	return 0;
}

int sop_controller_run(struct sop_kube *k, const struct sop_controller_opts *o, volatile int *stop,
		       sl_error_t *err)
{
	struct ctl *c = calloc(1, sizeof(*c));
	if (!c)
		return sl_error_set(err, SL_E_NOMEM, "controller: out of memory");
	c->k = k;
	c->o = o;
	c->stop = stop;
	sop_cache_init(&c->sporelets);
	sop_cache_init(&c->pods);
	sop_queue_init(&c->q);
	sop_resolver_init(&c->res, o->registry_insecure, o->registry_ca, (o->resolve_ttl_s ? o->resolve_ttl_s : 300) * 1000u);
	c->last_error = json_object();
	c->attempts = json_object();
	atomic_store(&c->leader, o->leader_elect ? 0 : 1);

	int rc = 0;
	struct sop_httpd *httpd = NULL;
	if (o->http_addr) {
		char bound[80];
		rc = sop_httpd_start(o->http_addr, http_handler, c, &httpd, bound, err);
		if (rc == 0)
			sl_info("serving /healthz /readyz /metrics", "addr=%s", bound);
	}
	if (rc == 0)
		rc = start_informer(c, RES_SPORELETS, err);
	if (rc == 0)
		rc = start_informer(c, RES_PODS, err);
	if (rc == 0 && o->leader_elect)
		rc = sop_elector_start(&c->el, k, &o->lease, stop, on_leader, c, err);

	int64_t next_resync = sl_now_ms() + (int64_t)(o->resync_s ? o->resync_s : 300) * 1000;
	while (rc == 0 && !*stop) {
		if (sl_now_ms() >= next_resync) {
			enqueue_all(c);
			next_resync = sl_now_ms() + (int64_t)(o->resync_s ? o->resync_s : 300) * 1000;
		}
		char *key = sop_queue_pop(&c->q, 200);
		if (!key)
			continue;
		if (!atomic_load(&c->leader)) {
			free(key); /* a standby drops work; becoming leader enqueues everything */
			continue;
		}
		if (!sop_cache_synced(&c->sporelets) || !sop_cache_synced(&c->pods)) {
			enqueue(c, key, 200);
			free(key);
			continue;
		}
		reconcile_key(c, key);
		free(key);
	}

	sl_info("stopping", "reason=%s", rc == 0 ? "signal" : "start failed");
	*stop = 1;
	sop_queue_close(&c->q);
	for (int r = 0; r < 2; r++) {
		if (c->inf[r].started)
			pthread_join(c->inf[r].thread, NULL);
	}
	if (o->leader_elect)
		sop_elector_join(&c->el); /* releases the lease */
	sop_httpd_stop(httpd);
	json_decref(c->last_error);
	json_decref(c->attempts);
	sop_resolver_destroy(&c->res);
	sop_queue_destroy(&c->q);
	sop_cache_destroy(&c->sporelets);
	sop_cache_destroy(&c->pods);
	free(c);
	return rc;
}
