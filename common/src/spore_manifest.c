/* Spore manifest v1: strict JSON parsing and stable serialisation. */
#include <stdio.h>
#include <string.h>

#include "sl/file.h"
#include "sl/json.h"
#include "sl/spore_manifest.h"

#define W "manifest.json"

static int copy_str(char *dst, size_t cap, const char *src, const char *field, sl_error_t *err)
{
	size_t n = strlen(src);
	if (n >= cap)
		return sl_error_set(err, SL_E_INVALID, W ": field \"%s\" longer than %zu bytes", field, cap - 1);
	memcpy(dst, src, n + 1);
	return 0;
}

static bool is_hex32(const char *s)
{
	if (strlen(s) != 32)
		return false;
	for (; *s; s++)
		if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f')))
			return false;
	return true;
}

static int parse_names(json_t *arr, const char *field, char ***out, size_t *n, sl_error_t *err)
{
	size_t cnt = json_array_size(arr);
	if (cnt > 512)
		return sl_error_set(err, SL_E_LIMIT, W ": \"%s\" has %zu entries, the limit is 512", field, cnt);
	char **v = calloc(cnt + 1, sizeof(char *));
	if (!v)
		return sl_error_set(err, SL_E_NOMEM, "name list");
	*out = v;
	*n = 0;
	for (size_t i = 0; i < cnt; i++) {
		json_t *e = json_array_get(arr, i);
		if (!json_is_string(e) || json_string_length(e) == 0 || json_string_length(e) > 64)
			return sl_error_set(err, SL_E_INVALID, W ": \"%s\"[%zu] must be a short string", field, i);
		v[i] = strdup(json_string_value(e));
		if (!v[i])
			return sl_error_set(err, SL_E_NOMEM, "name list");
		(*n)++;
	}
	return 0;
}

static int parse_ref(json_t *o, const char *what, const char *want_path, struct spore_file_ref *r,
		     sl_error_t *err)
{
	const char *path, *digest;
	if (!json_is_object(o))
		return sl_error_set(err, SL_E_INVALID, W ": %s must be an object", what);
	if (sl_json_get_str(o, "path", W, &path, err) < 0 ||
	    sl_json_get_str(o, "digest", W, &digest, err) < 0 ||
	    sl_json_get_u64(o, "size", W, &r->size, err) < 0)
		return sl_error_wrap(err, "%s", what);
	if (strcmp(path, want_path) != 0)
		return sl_error_set(err, SL_E_INVALID, W ": %s path must be \"%s\", got \"%.64s\"", what,
				    want_path, path);
	strcpy(r->path, want_path);
	if (r->size > SPORE_STATE_MAX)
		return sl_error_set(err, SL_E_LIMIT, W ": %s is %llu bytes, the limit is %u", what,
				    (unsigned long long)r->size, SPORE_STATE_MAX);
	if (sl_digest_parse(digest, &r->digest, err) < 0)
		return sl_error_wrap(err, W ": %s digest", what);
	return 0;
}

/* A chunk table: objects {index, digest}, indexes strictly increasing
 * and below `slots`. */
static int parse_chunks(json_t *arr, uint64_t slots, const char *what, struct spore_chunk **out, size_t *nout,
			sl_error_t *err)
{
	size_t n = json_array_size(arr);
	if (n > slots)
		return sl_error_set(err, SL_E_INVALID, W ": %s has %zu chunks for %llu chunk slots", what, n,
				    (unsigned long long)slots);
	struct spore_chunk *v = calloc(n ? n : 1, sizeof(*v));
	if (!v)
		return sl_error_set(err, SL_E_NOMEM, "chunk table");
	*out = v;
	*nout = 0;
	for (size_t i = 0; i < n; i++) {
		json_t *c = json_array_get(arr, i);
		uint64_t idx;
		const char *d;
		if (!json_is_object(c))
			return sl_error_set(err, SL_E_INVALID, W ": %s[%zu] must be an object", what, i);
		if (sl_json_get_u64(c, "index", W, &idx, err) < 0 || sl_json_get_str(c, "digest", W, &d, err) < 0)
			return sl_error_wrap(err, "%s[%zu]", what, i);
		if (idx >= slots || (i > 0 && idx <= v[i - 1].index))
			return sl_error_set(err, SL_E_INVALID, W ": %s[%zu] index %llu out of order or beyond the end", what,
					    i, (unsigned long long)idx);
		v[i].index = idx;
		if (sl_digest_parse(d, &v[i].digest, err) < 0)
			return sl_error_wrap(err, W ": %s[%zu]", what, i);
		(*nout)++;
	}
	return 0;
}

static int parse(json_t *root, struct spore_manifest *m, sl_error_t *err)
{
	uint64_t version;
	const char *mt, *created, *s;
	if (!json_is_object(root))
		return sl_error_set(err, SL_E_INVALID, W ": not a JSON object");
	if (sl_json_get_u64(root, "version", W, &version, err) < 0)
		return -1;
	if (version != SPORE_FORMAT_VERSION)
		return sl_error_set(err, SL_E_UNSUPPORTED, W ": unknown spore format version %llu (this build reads %d)",
				    (unsigned long long)version, SPORE_FORMAT_VERSION);
	m->version = (unsigned)version;
	if (sl_json_get_str(root, "mediaType", W, &mt, err) < 0)
		return -1;
	if (strcmp(mt, SPORE_MEDIA_TYPE) != 0)
		return sl_error_set(err, SL_E_INVALID, W ": mediaType is \"%.64s\", want \"%s\"", mt, SPORE_MEDIA_TYPE);
	if (sl_json_get_str(root, "created", W, &created, err) < 0 ||
	    copy_str(m->created, sizeof(m->created), created, "created", err) < 0)
		return -1;

	json_t *p, *arr;
	if (sl_json_get_obj(root, "platform", W, &p, err) < 0)
		return -1;
	if (sl_json_get_str(p, "arch", W, &s, err) < 0 || copy_str(m->arch, sizeof(m->arch), s, "arch", err) < 0)
		return -1;
	if (strcmp(m->arch, "x86_64") != 0)
		return sl_error_set(err, SL_E_UNSUPPORTED, "platform contract not met: spore is for %.16s, host is x86_64", m->arch);
	if (sl_json_get_str(p, "hypervisor", W, &s, err) < 0 ||
	    copy_str(m->hypervisor, sizeof(m->hypervisor), s, "hypervisor", err) < 0)
		return -1;
	if (strcmp(m->hypervisor, "kvm") != 0)
		return sl_error_set(err, SL_E_UNSUPPORTED, "platform contract not met: spore needs hypervisor %s, host has kvm", m->hypervisor);
	uint64_t khz;
	if (sl_json_get_str(p, "cpu_vendor", W, &s, err) < 0 ||
	    copy_str(m->cpu_vendor, sizeof(m->cpu_vendor), s, "cpu_vendor", err) < 0 ||
	    sl_json_get_u64(p, "tsc_khz", W, &khz, err) < 0)
		return -1;
	if (khz == 0 || khz > 100000000)
		return sl_error_set(err, SL_E_INVALID, W ": tsc_khz %llu out of range", (unsigned long long)khz);
	m->tsc_khz = (uint32_t)khz;
	if (sl_json_get_arr(p, "features", W, &arr, err) < 0 ||
	    parse_names(arr, "features", &m->features, &m->nfeatures, err) < 0)
		return -1;
	if (sl_json_get_arr(p, "kvm_caps", W, &arr, err) < 0 ||
	    parse_names(arr, "kvm_caps", &m->kvm_caps, &m->ncaps, err) < 0)
		return -1;

	json_t *mach;
	uint64_t vcpus;
	if (sl_json_get_obj(root, "machine", W, &mach, err) < 0 ||
	    sl_json_get_u64(mach, "vcpus", W, &vcpus, err) < 0 ||
	    sl_json_get_u64(mach, "memory_mib", W, &m->mem_mib, err) < 0)
		return -1;
	if (vcpus < 1 || vcpus > SPORE_MAX_VCPUS)
		return sl_error_set(err, SL_E_INVALID, W ": machine.vcpus %llu not in 1..%d", (unsigned long long)vcpus, SPORE_MAX_VCPUS);
	m->vcpus = (unsigned)vcpus;
	/* "platform" and "vsock_cid" arrived with Linux guests; a spore
	 * without them is a bare (test guest) machine. A bare machine may
	 * have a vsock device too (the test guest's agent). */
	json_t *plat = json_object_get(mach, "platform");
	if (plat) {
		const char *pn = json_is_string(plat) ? json_string_value(plat) : "";
		if (!strcmp(pn, "bare"))
			m->platform = SPORE_PLATFORM_BARE;
		else if (!strcmp(pn, "linux"))
			m->platform = SPORE_PLATFORM_LINUX;
		else
			return sl_error_set(err, SL_E_UNSUPPORTED, W ": machine.platform must be \"bare\" or \"linux\"");
	}
	if (json_object_get(mach, "vsock_cid")) {
		uint64_t cid;
		if (sl_json_get_u64(mach, "vsock_cid", W, &cid, err) < 0)
			return -1;
		if (cid != 0 && (cid < 3 || cid > UINT32_MAX - 1))
			return sl_error_set(err, SL_E_INVALID, W ": machine.vsock_cid %llu must be 0, or 3..2^32-2",
					    (unsigned long long)cid);
		m->vsock_cid = (uint32_t)cid;
	}
	if (m->mem_mib < 2 || m->mem_mib > SPORE_MAX_MEM_MIB || m->mem_mib % 2)
		return sl_error_set(err, SL_E_INVALID, W ": machine.memory_mib %llu must be even, 2..%u",
				    (unsigned long long)m->mem_mib, SPORE_MAX_MEM_MIB);

	json_t *st, *vcs;
	if (sl_json_get_obj(root, "state", W, &st, err) < 0)
		return -1;
	json_t *vmref = json_object_get(st, "vm");
	if (!vmref)
		return sl_error_set(err, SL_E_INVALID, W ": field \"state.vm\" missing");
	if (parse_ref(vmref, "state.vm", "spore/vm.state", &m->vm_state, err) < 0)
		return -1;
	if (sl_json_get_arr(st, "vcpus", W, &vcs, err) < 0)
		return -1;
	if (json_array_size(vcs) != m->vcpus)
		return sl_error_set(err, SL_E_INVALID, W ": state.vcpus has %zu entries, machine has %u vcpus",
				    json_array_size(vcs), m->vcpus);
	for (unsigned i = 0; i < m->vcpus; i++) {
		char what[32], path[64];
		snprintf(what, sizeof(what), "state.vcpus[%u]", i);
		snprintf(path, sizeof(path), "spore/vcpu-%u.state", i);
		if (parse_ref(json_array_get(vcs, i), what, path, &m->vcpu_state[i], err) < 0)
			return -1;
	}

	json_t *mem, *chunks;
	uint64_t csz, msize;
	if (sl_json_get_obj(root, "memory", W, &mem, err) < 0 ||
	    sl_json_get_u64(mem, "chunk_size", W, &csz, err) < 0 ||
	    sl_json_get_u64(mem, "size", W, &msize, err) < 0 ||
	    sl_json_get_arr(mem, "chunks", W, &chunks, err) < 0)
		return -1;
	if (csz != SPORE_CHUNK_SIZE)
		return sl_error_set(err, SL_E_UNSUPPORTED, W ": memory.chunk_size %llu, this build reads %u",
				    (unsigned long long)csz, SPORE_CHUNK_SIZE);
	if (msize != m->mem_mib << 20)
		return sl_error_set(err, SL_E_INVALID, W ": memory.size %llu does not match machine.memory_mib",
				    (unsigned long long)msize);
	if (parse_chunks(chunks, msize / SPORE_CHUNK_SIZE, "memory.chunks", &m->chunks, &m->nchunks, err) < 0)
		return -1;
	json_t *disks;
	if (sl_json_get_arr(root, "disks", W, &disks, err) < 0)
		return -1;
	if (json_array_size(disks) > SPORE_MAX_DISKS)
		return sl_error_set(err, SL_E_LIMIT, W ": %zu disks, the limit is %d", json_array_size(disks),
				    SPORE_MAX_DISKS);
	if (json_array_size(disks) && m->platform != SPORE_PLATFORM_LINUX)
		return sl_error_set(err, SL_E_INVALID, W ": disks need machine.platform \"linux\"");
	for (size_t i = 0; i < json_array_size(disks); i++) {
		json_t *d = json_array_get(disks, i), *dch, *ro;
		struct spore_disk *dk = &m->disks[i];
		char what[48];
		snprintf(what, sizeof(what), "disks[%zu].chunks", i);
		if (!json_is_object(d))
			return sl_error_set(err, SL_E_INVALID, W ": disks[%zu] must be an object", i);
		if (sl_json_get_u64(d, "size", W, &dk->size, err) < 0 || sl_json_get_arr(d, "chunks", W, &dch, err) < 0)
			return sl_error_wrap(err, "disks[%zu]", i);
		ro = json_object_get(d, "read_only");
		if (!json_is_boolean(ro))
			return sl_error_set(err, SL_E_INVALID, W ": disks[%zu].read_only must be true or false", i);
		dk->read_only = json_is_true(ro);
		if (dk->size == 0 || dk->size % 512 || dk->size > SPORE_DISK_MAX_BYTES)
			return sl_error_set(err, SL_E_INVALID,
					    W ": disks[%zu].size %llu must be a non-zero multiple of 512 up to 1 TiB", i,
					    (unsigned long long)dk->size);
		m->ndisks++;
		if (parse_chunks(dch, (dk->size + SPORE_CHUNK_SIZE - 1) / SPORE_CHUNK_SIZE, what, &dk->chunks,
				 &dk->nchunks, err) < 0)
			return -1;
	}

	json_t *par = json_object_get(root, "parent");
	if (!par)
		return sl_error_set(err, SL_E_INVALID, W ": field \"parent\" missing");
	if (!json_is_null(par)) {
		const char *pd;
		if (!json_is_object(par) || sl_json_get_str(par, "digest", W, &pd, err) < 0)
			return sl_error_set(err, SL_E_INVALID, W ": parent must be null or {\"digest\": ...}");
		if (sl_digest_parse(pd, &m->parent, err) < 0)
			return sl_error_wrap(err, W ": parent.digest");
		m->has_parent = true;
	}
	json_t *gen;
	const char *gid, *gpar = NULL;
	if (sl_json_get_obj(root, "generation", W, &gen, err) < 0 ||
	    sl_json_get_str(gen, "id", W, &gid, err) < 0 ||
	    sl_json_get_u64(gen, "counter", W, &m->gen_counter, err) < 0 ||
	    sl_json_get_u64(gen, "depth", W, &m->depth, err) < 0)
		return -1;
	json_t *gp = json_object_get(gen, "parent");
	if (gp && !json_is_null(gp)) {
		if (!json_is_string(gp))
			return sl_error_set(err, SL_E_INVALID, W ": generation.parent must be a string or null");
		gpar = json_string_value(gp);
	}
	if (!is_hex32(gid) || (gpar && !is_hex32(gpar)))
		return sl_error_set(err, SL_E_INVALID, W ": generation ids must be 32 lowercase hex digits");
	strcpy(m->gen_id, gid);
	strcpy(m->gen_parent, gpar ? gpar : "");
	return 0;
}

int spore_manifest_parse(const char *buf, size_t len, struct spore_manifest *m, sl_error_t *err)
{
	memset(m, 0, sizeof(*m));
	if (len > SPORE_MANIFEST_MAX)
		return sl_error_set(err, SL_E_LIMIT, W ": %zu bytes, the limit is %u", len, SPORE_MANIFEST_MAX);
	_cleanup_json_ json_t *root = NULL;
	if (sl_json_parse(buf, len, W, &root, err) < 0)
		return -1;
	if (parse(root, m, err) < 0) {
		spore_manifest_free(m);
		return -1;
	}
	return 0;
}

static json_t *ref_json(const struct spore_file_ref *r)
{
	char d[SL_DIGEST_STRLEN];
	sl_digest_format(&r->digest, d);
	return json_pack("{s:s, s:s, s:I}", "path", r->path, "digest", d, "size", (json_int_t)r->size);
}

static json_t *names_json(char **v, size_t n)
{
	json_t *a = json_array();
	for (size_t i = 0; a && i < n; i++)
		json_array_append_new(a, json_string(v[i]));
	return a;
}

static json_t *chunks_json(const struct spore_chunk *c, size_t n)
{
	json_t *a = json_array();
	for (size_t i = 0; a && i < n; i++) {
		char d[SL_DIGEST_STRLEN];
		sl_digest_format(&c[i].digest, d);
		json_array_append_new(a, json_pack("{s:I, s:s}", "index", (json_int_t)c[i].index, "digest", d));
	}
	return a;
}

int spore_manifest_write(const struct spore_manifest *m, char **buf, size_t *len, sl_error_t *err)
{
	_cleanup_json_ json_t *vcpus = json_array(), *chunks = chunks_json(m->chunks, m->nchunks),
			      *disks = json_array(), *machine = NULL;
	if (!vcpus || !chunks || !disks)
		return sl_error_set(err, SL_E_NOMEM, "manifest");
	for (unsigned i = 0; i < m->vcpus; i++)
		json_array_append_new(vcpus, ref_json(&m->vcpu_state[i]));
	for (size_t i = 0; i < m->ndisks; i++)
		json_array_append_new(disks, json_pack("{s:I, s:b, s:o}", "size", (json_int_t)m->disks[i].size,
						       "read_only", m->disks[i].read_only, "chunks",
						       chunks_json(m->disks[i].chunks, m->disks[i].nchunks)));
	/* A bare machine is written as before Linux guests existed, so its
	 * manifest (and digest) did not change with them. */
	machine = json_pack("{s:i, s:I}", "vcpus", (int)m->vcpus, "memory_mib", (json_int_t)m->mem_mib);
	if (machine && m->platform == SPORE_PLATFORM_LINUX) {
		json_object_set_new(machine, "platform", json_string("linux"));
		json_object_set_new(machine, "vsock_cid", json_integer(m->vsock_cid));
	} else if (machine && m->vsock_cid) {
		/* A test guest with a vsock device (its agent): the CID is the
		 * one device a restore must rebuild. */
		json_object_set_new(machine, "vsock_cid", json_integer(m->vsock_cid));
	}
	json_t *parent = json_null();
	if (m->has_parent) {
		char d[SL_DIGEST_STRLEN];
		sl_digest_format(&m->parent, d);
		json_decref(parent);
		parent = json_pack("{s:s}", "digest", d);
	}
	_cleanup_json_ json_t *root = json_pack(
		"{s:s, s:i, s:s,"
		" s:{s:s, s:s, s:s, s:I, s:o, s:o},"
		" s:O,"
		" s:{s:o, s:O},"
		" s:{s:I, s:I, s:O},"
		" s:O, s:o,"
		" s:{s:s, s:o, s:I, s:I}}",
		"mediaType", SPORE_MEDIA_TYPE, "version", (int)m->version, "created", m->created,
		"platform", "arch", m->arch, "hypervisor", m->hypervisor, "cpu_vendor", m->cpu_vendor,
		"tsc_khz", (json_int_t)m->tsc_khz, "features", names_json(m->features, m->nfeatures),
		"kvm_caps", names_json(m->kvm_caps, m->ncaps),
		"machine", machine,
		"state", "vm", ref_json(&m->vm_state), "vcpus", vcpus,
		"memory", "chunk_size", (json_int_t)SPORE_CHUNK_SIZE, "size", (json_int_t)(m->mem_mib << 20),
		"chunks", chunks,
		"disks", disks, "parent", parent,
		"generation", "id", m->gen_id, "parent", m->gen_parent[0] ? json_string(m->gen_parent) : json_null(),
		"counter", (json_int_t)m->gen_counter, "depth", (json_int_t)m->depth);
	if (!root)
		return sl_error_set(err, SL_E_NOMEM, "manifest JSON");
	*buf = sl_json_dump(root, len);
	if (!*buf)
		return sl_error_set(err, SL_E_NOMEM, "manifest JSON");
	return 0;
}

int spore_manifest_load(int dirfd, struct spore_manifest *m, sl_digest *digest, sl_error_t *err)
{
	_cleanup_free_ char *buf = NULL;
	size_t len;
	memset(m, 0, sizeof(*m));
	if (sl_read_beneath(dirfd, SPORE_MANIFEST_PATH, SPORE_MANIFEST_MAX, &buf, &len, err) < 0)
		return sl_error_wrap(err, "spore manifest");
	if (digest)
		sl_sha256(buf, len, digest);
	return spore_manifest_parse(buf, len, m, err);
}

static void free_names(char **v, size_t n)
{
	if (!v)
		return;
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

void spore_manifest_free(struct spore_manifest *m)
{
	free_names(m->features, m->nfeatures);
	free_names(m->kvm_caps, m->ncaps);
	free(m->chunks);
	m->features = m->kvm_caps = NULL;
	m->chunks = NULL;
	m->nfeatures = m->ncaps = m->nchunks = 0;
	for (size_t i = 0; i < m->ndisks; i++) {
		free(m->disks[i].chunks);
		m->disks[i].chunks = NULL;
		m->disks[i].nchunks = 0;
	}
	m->ndisks = 0;
}

static char **dup_names(char **v, size_t n)
{
	char **o = calloc(n + 1, sizeof(char *));
	for (size_t i = 0; o && i < n; i++)
		if (!(o[i] = strdup(v[i]))) {
			free_names(o, i);
			return NULL;
		}
	return o;
}

int spore_manifest_copy(const struct spore_manifest *src, struct spore_manifest *dst, sl_error_t *err)
{
	*dst = *src;
	/* Nothing of src's may be freed through dst if a copy below fails. */
	for (size_t i = 0; i < src->ndisks; i++)
		dst->disks[i].chunks = NULL;
	dst->features = dup_names(src->features, src->nfeatures);
	dst->kvm_caps = dup_names(src->kvm_caps, src->ncaps);
	dst->chunks = malloc((src->nchunks ? src->nchunks : 1) * sizeof(*src->chunks));
	if (!dst->features || !dst->kvm_caps || !dst->chunks) {
		spore_manifest_free(dst);
		return sl_error_set(err, SL_E_NOMEM, "manifest copy");
	}
	memcpy(dst->chunks, src->chunks, src->nchunks * sizeof(*src->chunks));
	for (size_t i = 0; i < src->ndisks; i++) {
		size_t n = src->disks[i].nchunks;
		dst->disks[i].chunks = malloc((n ? n : 1) * sizeof(struct spore_chunk));
		if (!dst->disks[i].chunks) {
			dst->ndisks = i;
			spore_manifest_free(dst);
			return sl_error_set(err, SL_E_NOMEM, "manifest copy");
		}
		memcpy(dst->disks[i].chunks, src->disks[i].chunks, n * sizeof(struct spore_chunk));
	}
	return 0;
}

int spore_manifest_each_chunk(const struct spore_manifest *m, int (*fn)(const sl_digest *d, void *arg), void *arg)
{
	int r;
	for (size_t i = 0; i < m->nchunks; i++)
		if ((r = fn(&m->chunks[i].digest, arg)) != 0)
			return r;
	for (size_t k = 0; k < m->ndisks; k++)
		for (size_t i = 0; i < m->disks[k].nchunks; i++)
			if ((r = fn(&m->disks[k].chunks[i].digest, arg)) != 0)
				return r;
	return 0;
}

size_t spore_manifest_chunk_refs(const struct spore_manifest *m)
{
	size_t n = m->nchunks;
	for (size_t k = 0; k < m->ndisks; k++)
		n += m->disks[k].nchunks;
	return n;
}

struct digest_list {
	sl_digest *v;
	size_t n;
};

static int append_digest(const sl_digest *d, void *arg)
{
	struct digest_list *l = arg;
	l->v[l->n++] = *d;
	return 0;
}

int spore_manifest_chunk_digests(const struct spore_manifest *m, sl_digest **out, size_t *n, sl_error_t *err)
{
	size_t refs = spore_manifest_chunk_refs(m);
	struct digest_list l = {.v = malloc((refs ? refs : 1) * sizeof(sl_digest))};
	if (!l.v)
		return sl_error_set(err, SL_E_NOMEM, "chunk list");
	spore_manifest_each_chunk(m, append_digest, &l);
	*out = l.v;
	*n = l.n;
	return 0;
}

void spore_chunk_path(const sl_digest *d, char out[96])
{
	char hex[SL_DIGEST_HEXLEN + 1];
	sl_digest_hex(d, hex);
	snprintf(out, 96, "chunks/sha256/%s", hex);
}
