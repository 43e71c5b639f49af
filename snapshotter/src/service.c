/* containerd.services.snapshots.v1.Snapshots: requests decoded, the store asked, replies and gRPC codes encoded. */
#include <stdlib.h>
#include <string.h>

#include "containerd/services/snapshots/v1/snapshots.pb-c.h"
#include "filter.h"
#include "snap_remote.h"
#include "snap_service.h"

#define PFX "/containerd.services.snapshots.v1.Snapshots/"

typedef Containerd__Services__Snapshots__V1__Info Info;
typedef Containerd__Services__Snapshots__V1__Info__LabelsEntry InfoLabel;
typedef Containerd__Types__Mount Mount;

/* What every handler gets as its user pointer. */
struct snap_service {
	struct snap_store *store;
	struct snap_remote *remote; /* NULL: no remote snapshots */
};

#define STORE(user) (((struct snap_service *)(user))->store)

int snap_service_code(int sl_code)
{
	switch (sl_code) {
	case SL_E_OK: return SNAP_GRPC_OK;
	case SL_E_NOT_FOUND: return SNAP_GRPC_NOT_FOUND;
	case SL_E_EXISTS: return SNAP_GRPC_ALREADY_EXISTS;
	case SL_E_PRECONDITION: return SNAP_GRPC_FAILED_PRECONDITION;
	case SL_E_INVALID:
	case SL_E_LIMIT: return SNAP_GRPC_INVALID_ARGUMENT;
	case SL_E_UNSUPPORTED: return SNAP_GRPC_UNIMPLEMENTED;
	case SL_E_NOMEM: return SNAP_GRPC_RESOURCE_EXHAUSTED;
	default: return SNAP_GRPC_UNKNOWN;
	}
}

static void fail(struct snap_grpc_result *res, sl_error_t err)
{
	snap_grpc_error(res, snap_service_code(err ? err->code : SL_E_IO), "%s", sl_error_msg(err));
}

/* A request protobuf-c could not decode: answered, and the handler returns. */
#define MALFORMED(res, what)                                                           \
	do {                                                                             \
		snap_grpc_error((res), SNAP_GRPC_INVALID_ARGUMENT, "malformed %s", (what)); \
		return;                                                                  \
	} while (0)

/* Packs m into the result (unary replies). */
static void reply(struct snap_grpc_result *res, const ProtobufCMessage *m)
{
	size_t len = protobuf_c_message_get_packed_size(m);
	uint8_t *buf = malloc(len ? len : 1);
	if (!buf) {
		snap_grpc_error(res, SNAP_GRPC_RESOURCE_EXHAUSTED, "out of memory for a reply");
		return;
	}
	protobuf_c_message_pack(m, buf);
	res->code = SNAP_GRPC_OK;
	res->msg = buf;
	res->len = len;
}

static void reply_empty(struct snap_grpc_result *res)
{
	Google__Protobuf__Empty e = GOOGLE__PROTOBUF__EMPTY__INIT;
	reply(res, &e.base);
}

/* Request label maps (three generated entry types of one shape) as store labels. */
#define LABELS_IN(req, out)                                                                                 \
	do {                                                                                                \
		(out) = calloc((req)->n_labels ? (req)->n_labels : 1, sizeof(struct snap_label));         \
		for (size_t i_ = 0; (out) && i_ < (req)->n_labels; i_++) {                                 \
			(out)[i_].key = (req)->labels[i_]->key;                                             \
			(out)[i_].value = (req)->labels[i_]->value;                                         \
		}                                                                                           \
	} while (0)

static const char *opt_str(const char *s) { return s && *s ? s : NULL; }

/* ---- mounts ---------------------------------------------------------------- */

struct mounts_out {
	Mount *m;
	Mount **pm;
	size_t n;
};

static int mounts_out(struct mounts_out *o, const struct snap_mount *sm, size_t n)
{
	o->m = calloc(n ? n : 1, sizeof(*o->m));
	o->pm = calloc(n ? n : 1, sizeof(*o->pm));
	if (!o->m || !o->pm)
		return -1;
	for (size_t i = 0; i < n; i++) {
		containerd__types__mount__init(&o->m[i]);
		o->m[i].type = sm[i].type;
		o->m[i].source = sm[i].source;
		o->m[i].target = (char *)"";
		o->m[i].options = sm[i].options;
		o->m[i].n_options = sm[i].noptions;
		o->pm[i] = &o->m[i];
	}
	o->n = n;
	return 0;
}

static void mounts_out_free(struct mounts_out *o)
{
	free(o->m);
	free(o->pm);
}

/* ---- Prepare, View, Mounts --------------------------------------------------- */

typedef Containerd__Services__Snapshots__V1__PrepareSnapshotRequest PrepareReq;
typedef Containerd__Services__Snapshots__V1__ViewSnapshotRequest ViewReq;

/* Replies with mounts in the shape every mount-carrying reply has (field 1,
 * repeated Mount): Prepare, View and Mounts replies are the same message
 * on the wire, so one packer serves all three. */
static void reply_mounts(struct snap_grpc_result *res, const struct snap_mount *sm, size_t n)
{
	struct mounts_out o = {0};
	if (mounts_out(&o, sm, n) < 0) {
		mounts_out_free(&o);
		snap_grpc_error(res, SNAP_GRPC_RESOURCE_EXHAUSTED, "out of memory for a reply");
		return;
	}
	Containerd__Services__Snapshots__V1__MountsResponse r = CONTAINERD__SERVICES__SNAPSHOTS__V1__MOUNTS_RESPONSE__INIT;
	r.n_mounts = o.n;
	r.mounts = o.pm;
	reply(res, &r.base);
	mounts_out_free(&o);
}

/* A spore's layers are committed without data (remote snapshots); a
 * snapshot on top of them is the spore directory, materialised from the
 * node cache into the snapshot's own directory and bind-mounted read-only. */
#define SPORE_SUBDIR "spore"

static int spore_mount(struct snap_store *st, const char *key, struct snap_mount **out, size_t *n, sl_error_t *err)
{
	_cleanup_free_ char *fs = NULL;
	if (snap_store_fs_path(st, key, &fs, err) < 0)
		return -1;
	struct snap_mount *m = calloc(1, sizeof(*m));
	char **opts = calloc(2, sizeof(char *));
	if (!m || !opts || asprintf(&m->source, "%s/" SPORE_SUBDIR, fs) < 0) {
		free(m);
		free(opts);
		return sl_error_set(err, SL_E_NOMEM, "out of memory");
	}
	m->type = strdup("bind");
	opts[0] = strdup("ro");
	opts[1] = strdup("rbind");
	m->options = opts;
	m->noptions = 2;
	*out = m;
	*n = 1;
	if (!m->type || !opts[0] || !opts[1]) {
		snap_mounts_free(m, 1);
		return sl_error_set(err, SL_E_NOMEM, "out of memory");
	}
	return 0;
}

static void create(struct snap_service *sv, struct snap_grpc_result *res, enum snap_kind kind, const char *key,
		   const char *parent, struct snap_label *labels, size_t nlabels)
{
	_cleanup_error_ sl_error_t err = NULL;
	_cleanup_free_ char *image = NULL, *fs = NULL, *dir = NULL;
	struct snap_mount *sm = NULL;
	size_t n = 0;
	if (!labels) {
		snap_grpc_error(res, SNAP_GRPC_RESOURCE_EXHAUSTED, "out of memory");
		return;
	}
	if (sv->remote && kind == SNAP_KIND_ACTIVE) {
		int r = snap_remote_prepare(sv->remote, sv->store, opt_str(parent), labels, nlabels, &err);
		if (r < 0) {
			fail(res, err);
			return;
		}
		if (r == 1) {
			/* The remote-snapshot signal: containerd then finds the
			 * committed snapshot by its labels and fetches nothing. */
			snap_grpc_error(res, SNAP_GRPC_ALREADY_EXISTS, "%s: remote snapshot (spore layer)", key);
			return;
		}
	}
	if ((sv->remote && snap_remote_image_of(sv->store, opt_str(parent), &image, &err) < 0) ||
	    snap_store_create(sv->store, kind, key, opt_str(parent), labels, nlabels, &sm, &n, &err) < 0) {
		fail(res, err);
		return;
	}
	if (image) {
		snap_mounts_free(sm, n);
		sm = NULL;
		n = 0;
		if (snap_store_fs_path(sv->store, key, &fs, &err) < 0 || asprintf(&dir, "%s/" SPORE_SUBDIR, fs) < 0 ||
		    snap_remote_materialise(sv->remote, image, dir, &err) < 0 ||
		    spore_mount(sv->store, key, &sm, &n, &err) < 0) {
			/* Nothing half-made stays: the snapshot goes with what it held. */
			_cleanup_error_ sl_error_t rm = NULL;
			snap_store_remove(sv->store, key, &rm);
			snap_grpc_error(res, err && err->code == SL_E_IO ? SNAP_GRPC_UNAVAILABLE : snap_service_code(err ? err->code : SL_E_NOMEM),
					"%s", err ? sl_error_msg(err) : "out of memory");
			return;
		}
	}
	reply_mounts(res, sm, n);
	snap_mounts_free(sm, n);
}

static void h_prepare(const struct snap_grpc_call *call, struct snap_grpc_result *res, void *user)
{
	PrepareReq *q = containerd__services__snapshots__v1__prepare_snapshot_request__unpack(NULL, call->len, call->msg);
	if (!q)
		MALFORMED(res, "PrepareSnapshotRequest");
	_cleanup_free_ struct snap_label *labels = NULL;
	LABELS_IN(q, labels);
	create(user, res, SNAP_KIND_ACTIVE, q->key, q->parent, labels, q->n_labels);
	containerd__services__snapshots__v1__prepare_snapshot_request__free_unpacked(q, NULL);
}

static void h_view(const struct snap_grpc_call *call, struct snap_grpc_result *res, void *user)
{
	ViewReq *q = containerd__services__snapshots__v1__view_snapshot_request__unpack(NULL, call->len, call->msg);
	if (!q)
		MALFORMED(res, "ViewSnapshotRequest");
	_cleanup_free_ struct snap_label *labels = NULL;
	LABELS_IN(q, labels);
	create(user, res, SNAP_KIND_VIEW, q->key, q->parent, labels, q->n_labels);
	containerd__services__snapshots__v1__view_snapshot_request__free_unpacked(q, NULL);
}

static void h_mounts(const struct snap_grpc_call *call, struct snap_grpc_result *res, void *user)
{
	struct snap_service *sv = user;
	Containerd__Services__Snapshots__V1__MountsRequest *q =
		containerd__services__snapshots__v1__mounts_request__unpack(NULL, call->len, call->msg);
	if (!q)
		MALFORMED(res, "MountsRequest");
	_cleanup_error_ sl_error_t err = NULL;
	_cleanup_free_ char *image = NULL;
	struct snap_info info = {0};
	struct snap_mount *sm = NULL;
	size_t n = 0;
	int rc = 0;
	if (sv->remote) {
		rc = snap_store_stat(sv->store, q->key, &info, &err);
		if (rc == 0 && info.kind != SNAP_KIND_COMMITTED)
			rc = snap_remote_image_of(sv->store, info.parent, &image, &err);
	}
	if (rc == 0)
		rc = image ? spore_mount(sv->store, q->key, &sm, &n, &err) : snap_store_mounts(sv->store, q->key, &sm, &n, &err);
	if (rc < 0) {
		fail(res, err);
	} else {
		reply_mounts(res, sm, n);
		snap_mounts_free(sm, n);
	}
	snap_info_clear(&info);
	containerd__services__snapshots__v1__mounts_request__free_unpacked(q, NULL);
}

/* ---- Commit, Remove, Cleanup ------------------------------------------------- */

static void h_commit(const struct snap_grpc_call *call, struct snap_grpc_result *res, void *user)
{
	Containerd__Services__Snapshots__V1__CommitSnapshotRequest *q =
		containerd__services__snapshots__v1__commit_snapshot_request__unpack(NULL, call->len, call->msg);
	if (!q)
		MALFORMED(res, "CommitSnapshotRequest");
	_cleanup_error_ sl_error_t err = NULL;
	_cleanup_free_ struct snap_label *labels = NULL;
	LABELS_IN(q, labels);
	if (!labels)
		snap_grpc_error(res, SNAP_GRPC_RESOURCE_EXHAUSTED, "out of memory");
	else if (snap_store_commit(STORE(user), q->name, q->key, labels, q->n_labels, &err) < 0)
		fail(res, err);
	else
		reply_empty(res);
	containerd__services__snapshots__v1__commit_snapshot_request__free_unpacked(q, NULL);
}

static void h_remove(const struct snap_grpc_call *call, struct snap_grpc_result *res, void *user)
{
	Containerd__Services__Snapshots__V1__RemoveSnapshotRequest *q =
		containerd__services__snapshots__v1__remove_snapshot_request__unpack(NULL, call->len, call->msg);
	if (!q)
		MALFORMED(res, "RemoveSnapshotRequest");
	_cleanup_error_ sl_error_t err = NULL;
	if (snap_store_remove(STORE(user), q->key, &err) < 0)
		fail(res, err);
	else
		reply_empty(res);
	containerd__services__snapshots__v1__remove_snapshot_request__free_unpacked(q, NULL);
}

static void h_cleanup(const struct snap_grpc_call *call, struct snap_grpc_result *res, void *user)
{
	Containerd__Services__Snapshots__V1__CleanupRequest *q =
		containerd__services__snapshots__v1__cleanup_request__unpack(NULL, call->len, call->msg);
	if (!q)
		MALFORMED(res, "CleanupRequest");
	_cleanup_error_ sl_error_t err = NULL;
	if (snap_store_cleanup(STORE(user), &err) < 0)
		fail(res, err);
	else
		reply_empty(res);
	containerd__services__snapshots__v1__cleanup_request__free_unpacked(q, NULL);
}

/* ---- Info ------------------------------------------------------------------- */

/* An Info message pointing into a store info (valid while both live). */
struct info_out {
	Info info;
	Google__Protobuf__Timestamp created, updated;
	InfoLabel *labels;
	InfoLabel **plabels;
};

static int info_out(struct info_out *o, const struct snap_info *in)
{
	containerd__services__snapshots__v1__info__init(&o->info);
	google__protobuf__timestamp__init(&o->created);
	google__protobuf__timestamp__init(&o->updated);
	o->info.name = in->name ? in->name : (char *)"";
	o->info.parent = in->parent ? in->parent : (char *)"";
	o->info.kind = (Containerd__Services__Snapshots__V1__Kind)in->kind;
	o->created.seconds = in->created_ns / 1000000000;
	o->created.nanos = (int32_t)(in->created_ns % 1000000000);
	o->updated.seconds = in->updated_ns / 1000000000;
	o->updated.nanos = (int32_t)(in->updated_ns % 1000000000);
	o->info.created_at = &o->created;
	o->info.updated_at = &o->updated;
	o->labels = calloc(in->nlabels ? in->nlabels : 1, sizeof(*o->labels));
	o->plabels = calloc(in->nlabels ? in->nlabels : 1, sizeof(*o->plabels));
	if (!o->labels || !o->plabels)
		return -1;
	for (size_t i = 0; i < in->nlabels; i++) {
		containerd__services__snapshots__v1__info__labels_entry__init(&o->labels[i]);
		o->labels[i].key = in->labels[i].key;
		o->labels[i].value = in->labels[i].value;
		o->plabels[i] = &o->labels[i];
	}
	o->info.n_labels = in->nlabels;
	o->info.labels = o->plabels;
	return 0;
}

static void info_out_free(struct info_out *o)
{
	free(o->labels);
	free(o->plabels);
}

/* Stat and Update replies: both are `Info info = 1`. */
static void reply_info(struct snap_grpc_result *res, const struct snap_info *in)
{
	struct info_out o;
	if (info_out(&o, in) < 0) {
		info_out_free(&o);
		snap_grpc_error(res, SNAP_GRPC_RESOURCE_EXHAUSTED, "out of memory for a reply");
		return;
	}
	Containerd__Services__Snapshots__V1__StatSnapshotResponse r =
		CONTAINERD__SERVICES__SNAPSHOTS__V1__STAT_SNAPSHOT_RESPONSE__INIT;
	r.info = &o.info;
	reply(res, &r.base);
	info_out_free(&o);
}

static void h_stat(const struct snap_grpc_call *call, struct snap_grpc_result *res, void *user)
{
	Containerd__Services__Snapshots__V1__StatSnapshotRequest *q =
		containerd__services__snapshots__v1__stat_snapshot_request__unpack(NULL, call->len, call->msg);
	if (!q)
		MALFORMED(res, "StatSnapshotRequest");
	_cleanup_error_ sl_error_t err = NULL;
	struct snap_info info = {0};
	if (snap_store_stat(STORE(user), q->key, &info, &err) < 0)
		fail(res, err);
	else
		reply_info(res, &info);
	snap_info_clear(&info);
	containerd__services__snapshots__v1__stat_snapshot_request__free_unpacked(q, NULL);
}

static void h_update(const struct snap_grpc_call *call, struct snap_grpc_result *res, void *user)
{
	Containerd__Services__Snapshots__V1__UpdateSnapshotRequest *q =
		containerd__services__snapshots__v1__update_snapshot_request__unpack(NULL, call->len, call->msg);
	if (!q)
		MALFORMED(res, "UpdateSnapshotRequest");
	_cleanup_error_ sl_error_t err = NULL;
	struct snap_info want = {0}, got = {0};
	_cleanup_free_ struct snap_label *labels = NULL;
	if (!q->info || !q->info->name || !*q->info->name) {
		snap_grpc_error(res, SNAP_GRPC_INVALID_ARGUMENT, "UpdateSnapshotRequest names no snapshot (info.name)");
		goto out;
	}
	LABELS_IN(q->info, labels);
	if (!labels) {
		snap_grpc_error(res, SNAP_GRPC_RESOURCE_EXHAUSTED, "out of memory");
		goto out;
	}
	want.name = q->info->name;
	want.labels = labels;
	want.nlabels = q->info->n_labels;
	size_t npaths = q->update_mask ? q->update_mask->n_paths : 0;
	const char *const *paths = q->update_mask ? (const char *const *)q->update_mask->paths : NULL;
	if (snap_store_update(STORE(user), &want, paths, npaths, &got, &err) < 0)
		fail(res, err);
	else
		reply_info(res, &got);
	snap_info_clear(&got);
out:
	containerd__services__snapshots__v1__update_snapshot_request__free_unpacked(q, NULL);
}

static void h_usage(const struct snap_grpc_call *call, struct snap_grpc_result *res, void *user)
{
	Containerd__Services__Snapshots__V1__UsageRequest *q =
		containerd__services__snapshots__v1__usage_request__unpack(NULL, call->len, call->msg);
	if (!q)
		MALFORMED(res, "UsageRequest");
	_cleanup_error_ sl_error_t err = NULL;
	struct snap_usage u = {0};
	if (snap_store_usage(STORE(user), q->key, &u, &err) < 0) {
		fail(res, err);
	} else {
		Containerd__Services__Snapshots__V1__UsageResponse r = CONTAINERD__SERVICES__SNAPSHOTS__V1__USAGE_RESPONSE__INIT;
		r.size = u.size;
		r.inodes = u.inodes;
		reply(res, &r.base);
	}
	containerd__services__snapshots__v1__usage_request__free_unpacked(q, NULL);
}

/* ---- List ------------------------------------------------------------------- */

struct list_acc {
	const struct snap_filter *filter;
	struct snap_info *v;
	size_t n, cap;
	bool nomem;
};

static char *dup_or_null(const char *s) { return s ? strdup(s) : NULL; }

/* Copies the matching infos out, so that replies go out with the store
 * unlocked (a slow reader must not hold up every other call). */
static int list_collect(const struct snap_info *in, void *user)
{
	struct list_acc *a = user;
	if (!snap_filter_match(a->filter, in))
		return 0;
	if (a->n == a->cap) {
		size_t cap = a->cap ? a->cap * 2 : 64;
		struct snap_info *v = realloc(a->v, cap * sizeof(*v));
		if (!v)
			goto nomem;
		a->v = v;
		a->cap = cap;
	}
	struct snap_info *o = &a->v[a->n];
	memset(o, 0, sizeof(*o));
	a->n++;
	o->kind = in->kind;
	o->created_ns = in->created_ns;
	o->updated_ns = in->updated_ns;
	o->name = dup_or_null(in->name);
	o->parent = dup_or_null(in->parent);
	if (in->nlabels && !(o->labels = calloc(in->nlabels, sizeof(*o->labels))))
		goto nomem;
	for (size_t i = 0; i < in->nlabels; i++, o->nlabels++)
		if (!(o->labels[i].key = strdup(in->labels[i].key)) ||
		    !(o->labels[i].value = strdup(in->labels[i].value))) {
			o->nlabels++;
			goto nomem;
		}
	if ((in->name && !o->name) || (in->parent && !o->parent))
		goto nomem;
	return 0;
nomem:
	a->nomem = true;
	return 1;
}

static int send_infos(const struct snap_grpc_call *call, Info **pi, size_t n, sl_error_t *err)
{
	Containerd__Services__Snapshots__V1__ListSnapshotsResponse r =
		CONTAINERD__SERVICES__SNAPSHOTS__V1__LIST_SNAPSHOTS_RESPONSE__INIT;
	r.n_info = n;
	r.info = pi;
	size_t len = protobuf_c_message_get_packed_size(&r.base);
	_cleanup_free_ uint8_t *buf = malloc(len ? len : 1);
	if (!buf)
		return sl_error_set(err, SL_E_NOMEM, "out of memory for a List reply");
	protobuf_c_message_pack(&r.base, buf);
	return snap_grpc_send(call, buf, len, err);
}

static int list_send(const struct snap_grpc_call *call, const struct snap_info *v, size_t n, sl_error_t *err)
{
	struct info_out o[SNAP_LIST_BATCH];
	Info *pi[SNAP_LIST_BATCH];
	size_t made = 0;
	int rc = 0;
	for (; made < n && rc == 0; made++) {
		if (info_out(&o[made], &v[made]) < 0)
			rc = sl_error_set(err, SL_E_NOMEM, "out of memory for a List reply");
		pi[made] = &o[made].info;
	}
	if (rc == 0)
		rc = send_infos(call, pi, n, err);
	for (size_t i = 0; i < made; i++)
		info_out_free(&o[i]);
	return rc;
}

static void h_list(const struct snap_grpc_call *call, struct snap_grpc_result *res, void *user)
{
	Containerd__Services__Snapshots__V1__ListSnapshotsRequest *q =
		containerd__services__snapshots__v1__list_snapshots_request__unpack(NULL, call->len, call->msg);
	if (!q)
		MALFORMED(res, "ListSnapshotsRequest");
	_cleanup_error_ sl_error_t err = NULL;
	struct snap_filter *f = NULL;
	struct list_acc a = {0};
	if (snap_filter_parse(&f, q->filters, q->n_filters, &err) < 0) {
		fail(res, err);
		goto out;
	}
	a.filter = f;
	if (snap_store_walk(STORE(user), list_collect, &a, &err) < 0) {
		fail(res, err);
		goto out;
	}
	if (a.nomem) {
		snap_grpc_error(res, SNAP_GRPC_RESOURCE_EXHAUSTED, "out of memory listing snapshots");
		goto out;
	}
	for (size_t i = 0; i < a.n && !snap_grpc_cancelled(call); i += SNAP_LIST_BATCH) {
		size_t k = a.n - i < SNAP_LIST_BATCH ? a.n - i : SNAP_LIST_BATCH;
		if (list_send(call, a.v + i, k, &err) < 0) {
			fail(res, err);
			goto out;
		}
	}
	res->code = SNAP_GRPC_OK;
out:
	for (size_t i = 0; i < a.n; i++)
		snap_info_clear(&a.v[i]);
	free(a.v);
	snap_filter_free(f);
	containerd__services__snapshots__v1__list_snapshots_request__free_unpacked(q, NULL);
}

int snap_service_new(struct snap_service **out, struct snap_store *store, struct snap_remote *remote, sl_error_t *err)
{
	struct snap_service *sv = calloc(1, sizeof(*sv));
	if (!sv)
		return sl_error_set(err, SL_E_NOMEM, "out of memory");
	sv->store = store;
	sv->remote = remote;
	*out = sv;
	return 0;
}

void snap_service_free(struct snap_service *sv)
{
	free(sv);
}

int snap_service_register(struct snap_grpc_server *srv, struct snap_service *sv, sl_error_t *err)
{
	static const struct {
		const char *method;
		snap_grpc_fn fn;
		bool streaming;
	} methods[] = {
		{"Prepare", h_prepare, false}, {"View", h_view, false},     {"Mounts", h_mounts, false},
		{"Commit", h_commit, false},   {"Remove", h_remove, false}, {"Stat", h_stat, false},
		{"Update", h_update, false},   {"List", h_list, true},      {"Usage", h_usage, false},
		{"Cleanup", h_cleanup, false},
	};
	for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
		char path[96];
		snprintf(path, sizeof(path), PFX "%s", methods[i].method);
		if (snap_grpc_server_register(srv, path, methods[i].fn, methods[i].streaming, sv, err) < 0)
			return -1;
	}
	return 0;
}
