/* Leader election over a coordination.k8s.io/v1 Lease, with optimistic concurrency on its resourceVersion. */
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "sl/json.h"
#include "sl/log.h"
#include "sl/time.h"
#include "sop_lease.h"

void sop_micro_time(char out[40])
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	struct tm tm;
	gmtime_r(&ts.tv_sec, &tm);
	char base[32];
	strftime(base, sizeof(base), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out, 40, "%.20s.%06uZ", base, (unsigned)(ts.tv_nsec / 1000) % 1000000u);
}

enum sop_lease_action sop_lease_decide(json_t *lease, const char *identity, int64_t now_ms, unsigned duration_s,
				       struct sop_lease_observed *obs)
{
	if (!lease)
		return SOP_LEASE_CREATE;
	json_t *spec = json_object_get(lease, "spec");
	const char *holder = json_string_value(json_object_get(spec, "holderIdentity"));
	const char *renew = json_string_value(json_object_get(spec, "renewTime"));
	json_t *dur = json_object_get(spec, "leaseDurationSeconds");
	if (json_is_integer(dur) && json_integer_value(dur) > 0 && json_integer_value(dur) < 86400)
		duration_s = (unsigned)json_integer_value(dur);
	if (!holder)
		holder = "";
	if (!renew)
		renew = "";
	if (strcmp(holder, identity) == 0)
		return SOP_LEASE_RENEW;
	if (!*holder)
		return SOP_LEASE_TAKE; /* released */
	if (strncmp(obs->holder, holder, sizeof(obs->holder)) != 0 ||
	    strncmp(obs->renew_time, renew, sizeof(obs->renew_time)) != 0) {
		snprintf(obs->holder, sizeof(obs->holder), "%s", holder);
		snprintf(obs->renew_time, sizeof(obs->renew_time), "%s", renew);
		obs->since_ms = now_ms;
		return SOP_LEASE_WAIT;
	}
	if (now_ms - obs->since_ms > (int64_t)duration_s * 1000)
		return SOP_LEASE_TAKE;
	return SOP_LEASE_WAIT;
}

json_t *sop_lease_build(json_t *lease, enum sop_lease_action action, const char *ns, const char *name,
			const char *identity, unsigned duration_s, const char *now)
{
	json_t *l;
	if (action == SOP_LEASE_CREATE || !lease) {
		l = json_pack("{s:s, s:s, s:{s:s, s:s}, s:{}}", "apiVersion", "coordination.k8s.io/v1", "kind", "Lease",
			      "metadata", "name", name, "namespace", ns, "spec");
	} else {
		l = json_deep_copy(lease);
	}
	if (!l)
		return NULL;
	json_t *spec = json_object_get(l, "spec");
	if (!json_is_object(spec)) {
		spec = json_object();
		json_object_set_new(l, "spec", spec);
	}
	const char *prev = json_string_value(json_object_get(spec, "holderIdentity"));
	json_int_t transitions = json_integer_value(json_object_get(spec, "leaseTransitions"));
	if (action != SOP_LEASE_RENEW) {
		/* A new holder (after another, or after a release): acquireTime now and one more transition. */
		if (action == SOP_LEASE_TAKE && (!prev || strcmp(prev, identity) != 0))
			transitions++;
		json_object_set_new(spec, "acquireTime", json_string(now));
	}
	json_object_set_new(spec, "holderIdentity", json_string(identity));
	json_object_set_new(spec, "leaseDurationSeconds", json_integer(duration_s));
	json_object_set_new(spec, "renewTime", json_string(now));
	json_object_set_new(spec, "leaseTransitions", json_integer(transitions));
	return l;
}

json_t *sop_lease_release(json_t *lease, const char *now)
{
	json_t *l = json_deep_copy(lease);
	json_t *spec = json_object_get(l, "spec");
	if (!json_is_object(spec)) {
		json_decref(l);
		return NULL;
	}
	json_object_set_new(spec, "holderIdentity", json_string(""));
	json_object_set_new(spec, "leaseDurationSeconds", json_integer(1));
	json_object_set_new(spec, "renewTime", json_string(now));
	return l;
}

static void set_leader(struct sop_elector *e, bool v)
{
	if ((e->leader != 0) == v)
		return;
	e->leader = v;
	if (v)
		e->transitions++;
	sl_info(v ? "became leader" : "lost leadership", "lease=%s/%s identity=%s", e->o.ns, e->o.name, e->o.identity);
	if (e->on_change)
		e->on_change(e->arg, v);
}

/* One attempt: 1 when we hold the lease afterwards, 0 when another
 * candidate holds it (or won the race to write it), -1 on an API error. */
static int try_once(struct sop_elector *e, struct sop_lease_observed *obs, json_t **held)
{
	sl_error_t err = NULL;
	long status;
	json_t *lease = NULL;
	char now[40];
	if (sop_kube_get(e->k, e->path, &status, &lease, &err) < 0) {
		if (status != 404) {
			sl_warn("lease read failed", "err=\"%s\"", sl_error_msg(err));
			sl_error_free(&err);
			return -1;
		}
		sl_error_free(&err);
		lease = NULL;
	}
	enum sop_lease_action a = sop_lease_decide(lease, e->o.identity, sl_now_ms(), e->o.duration_s, obs);
	if (a == SOP_LEASE_WAIT) {
		json_decref(lease);
		return 0;
	}
	sop_micro_time(now);
	json_t *want = sop_lease_build(lease, a, e->o.ns, e->o.name, e->o.identity, e->o.duration_s, now);
	json_decref(lease);
	json_t *got = NULL;
	int rc;
	if (a == SOP_LEASE_CREATE) {
		char coll[512];
		snprintf(coll, sizeof(coll), "/apis/coordination.k8s.io/v1/namespaces/%s/leases", e->o.ns);
		rc = sop_kube_create(e->k, coll, want, &status, &got, &err);
	} else {
		rc = sop_kube_update(e->k, e->path, want, &status, &got, &err);
	}
	json_decref(want);
	if (rc < 0) {
		/* 409: someone else wrote first (their create or update won). */
		int lost = status == 409;
		if (lost)
			sl_debug("lease write lost a race", "err=\"%s\"", sl_error_msg(err));
		else
			sl_warn("lease write failed", "err=\"%s\"", sl_error_msg(err));
		sl_error_free(&err);
		return lost ? 0 : -1;
	}
	json_decref(*held);
	*held = got;
	return 1;
}

static void *elector_main(void *arg)
{
	struct sop_elector *e = arg;
	struct sop_lease_observed obs = { .since_ms = 0 };
	json_t *held = NULL;
	int64_t last_renew = 0;
	while (!*e->stop) {
		int64_t t0 = sl_now_ms();
		int r = try_once(e, &obs, &held);
		if (r == 1) {
			last_renew = t0;
			set_leader(e, true);
		} else if (r == 0) {
			/* Someone else holds it: whatever we believed, we are not leading. */
			set_leader(e, false);
			json_decref(held);
			held = NULL;
		} else if (e->leader && sl_now_ms() - last_renew > (int64_t)e->o.renew_deadline_s * 1000) {
			/* Renewals failed for the whole deadline: stop before the lease can expire under us. */
			set_leader(e, false);
		}
		for (unsigned i = 0; i < e->o.retry_s * 10 && !*e->stop; i++)
			usleep(100 * 1000);
	}
	if (e->leader && held) {
		/* Hand over at once instead of making the next leader wait out the lease. */
		char now[40];
		sop_micro_time(now);
		json_t *rel = sop_lease_release(held, now);
		sl_error_t err = NULL;
		long status;
		if (rel && sop_kube_update(e->k, e->path, rel, &status, NULL, &err) == 0)
			sl_info("lease released", "lease=%s/%s", e->o.ns, e->o.name);
		else
			sl_warn("lease release failed", "err=\"%s\"", err ? sl_error_msg(err) : "out of memory");
		sl_error_free(&err);
		json_decref(rel);
		set_leader(e, false);
	}
	json_decref(held);
	return NULL;
}

int sop_elector_start(struct sop_elector *e, struct sop_kube *k, const struct sop_elector_opts *o,
		      volatile int *stop, void (*on_change)(void *, bool), void *arg, sl_error_t *err)
{
	memset(e, 0, sizeof(*e));
	e->k = k;
	e->o = *o;
	if (!e->o.duration_s)
		e->o.duration_s = 15;
	if (!e->o.renew_deadline_s)
		e->o.renew_deadline_s = 10;
	if (!e->o.retry_s)
		e->o.retry_s = 2;
	if (e->o.renew_deadline_s >= e->o.duration_s)
		return sl_error_set(err, SL_E_INVALID, "leader election: the renew deadline (%us) must be shorter than "
				    "the lease duration (%us)", e->o.renew_deadline_s, e->o.duration_s);
	e->stop = stop;
	e->on_change = on_change;
	e->arg = arg;
	snprintf(e->path, sizeof(e->path), "/apis/coordination.k8s.io/v1/namespaces/%s/leases/%s", o->ns, o->name);
	if (pthread_create(&e->thread, NULL, elector_main, e) != 0)
		return sl_error_set(err, SL_E_IO, "leader election: cannot start its thread");
	e->started = true;
	return 0;
}

void sop_elector_join(struct sop_elector *e)
{
	if (e->started)
		pthread_join(e->thread, NULL);
	e->started = false;
}
