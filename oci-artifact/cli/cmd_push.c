/* spore push: a spore directory to a registry, reusing its parent's layers. */
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "ocli.h"
#include "sl/log.h"
#include "sl/spore_manifest.h"

static const char usage[] =
	"usage: spore push DIR REF [--parent REF] [--insecure-registry] [--json] [--parallel N]\n"
	"                  [--layer-mib N] [--max-layers N]\n"
	"Pushes the spore in DIR as an OCI image and prints its manifest digest.\n"
	"A child spore reuses its parent's layers: found by the parent's spore\n"
	"manifest digest among the images this node pushed or pulled, or named with\n"
	"--parent. Plain HTTP only for loopback registries or --insecure-registry.\n";

enum { OPT_PARENT = 3000, OPT_LAYER_MIB, OPT_MAX_LAYERS };

/* The parent's image: by --parent, else from this node's image index. */
static int find_parent(const struct spore_manifest *m, const char *parent_ref, const struct oci_ref *ref,
		       const struct ocli_reg_opts *ro, struct oci_cache *cache, struct spore_image *parent,
		       bool *have, char mount_from[256], sl_error_t *err)
{
	*have = false;
	mount_from[0] = '\0';
	_cleanup_free_ char *json = NULL;
	size_t len = 0;
	char repo[256] = "";
	if (parent_ref) {
		struct oci_ref pr;
		if (oci_ref_parse(parent_ref, &pr, err) < 0)
			return sl_error_wrap(err, "--parent");
		if (strcmp(pr.registry, ref->registry) != 0)
			return sl_error_set(err, SL_E_INVALID, "--parent %s: must be on %s (layers are reused by reference)",
					    parent_ref, ref->registry);
		struct oci_client *pc = NULL;
		char reference[OCI_REF_REFERENCE_MAX], mt[128];
		sl_digest d;
		oci_ref_reference(&pr, reference);
		int rc = ocli_client(&pr, ro, NULL, &pc, err);
		if (rc == 0)
			rc = oci_manifest_get(pc, reference, &json, &len, mt, &d, err);
		oci_client_free(pc);
		if (rc < 0)
			return sl_error_wrap(err, "--parent %s", parent_ref);
		snprintf(repo, sizeof(repo), "%s", pr.repository);
	} else if (m->has_parent) {
		if (ocli_index_find(cache, &m->parent, ref->registry, repo, &json, &len, err) < 0)
			return -1;
		if (!json)
			return 0; /* an unknown parent: push every layer */
	} else {
		return 0;
	}
	if (spore_image_decode(json, len, parent, err) < 0)
		return sl_error_wrap(err, "parent image");
	if (parent->shape != SPORE_SHAPE_TAR) {
		spore_image_free(parent);
		return 0; /* oras-shaped parents have no chunk layers to share */
	}
	*have = true;
	if (strcmp(repo, ref->repository) != 0)
		snprintf(mount_from, 256, "%s", repo);
	return 0;
}

int cmd_push(int argc, char **argv)
{
	static const struct option opts[] = {{"parent", required_argument, NULL, OPT_PARENT},
					     {"insecure-registry", no_argument, NULL, OPT_INSECURE},
					     {"json", no_argument, NULL, OPT_JSON},
					     {"parallel", required_argument, NULL, OPT_PARALLEL},
					     {"layer-mib", required_argument, NULL, OPT_LAYER_MIB},
					     {"max-layers", required_argument, NULL, OPT_MAX_LAYERS},
					     {"help", no_argument, NULL, 'h'},
					     {0}};
	struct ocli_reg_opts ro = {0};
	struct spore_push_opts po = {0};
	const char *parent_ref = NULL;
	sl_error_t err = NULL;
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		int r = ocli_reg_opt(c, optarg, &ro, &err);
		if (r < 0)
			return ocli_fail(&err);
		if (r)
			continue;
		char *end;
		unsigned long v;
		switch (c) {
		case OPT_PARENT: parent_ref = optarg; break;
		case OPT_LAYER_MIB:
			v = strtoul(optarg, &end, 10);
			if (end == optarg || *end || v < 2 || v > 65536)
				return ocli_usage("--layer-mib must be an integer in 2..65536, got \"%.32s\"", optarg);
			po.layer_bytes = (uint64_t)v << 20;
			break;
		case OPT_MAX_LAYERS:
			v = strtoul(optarg, &end, 10);
			if (end == optarg || *end || v < 2 || v > 10000)
				return ocli_usage("--max-layers must be an integer in 2..10000, got \"%.32s\"", optarg);
			po.max_layers = (unsigned)v;
			break;
		case 'h': fputs(usage, stdout); return 0;
		default: fputs(usage, stderr); return EXIT_SPORE_FAILED;
		}
	}
	if (optind != argc - 2)
		return ocli_usage("push: need DIR and REF\n%s", usage);
	const char *dir = argv[optind], *refs = argv[optind + 1];
	struct oci_ref ref;
	if (oci_ref_parse(refs, &ref, &err) < 0)
		return ocli_fail(&err);
	if (ref.has_digest)
		return ocli_usage("push: %s: push to a tag; the digest is computed and printed", refs);
	if (!ref.tag[0])
		snprintf(ref.tag, sizeof(ref.tag), "latest");
	uint64_t t0 = ocli_now_ns();
	_cleanup_close_ int dirfd = open(dir, O_DIRECTORY | O_RDONLY | O_CLOEXEC);
	if (dirfd < 0) {
		sl_error_sys(&err, "push: open %s", dir);
		return ocli_fail(&err);
	}
	struct spore_manifest m;
	sl_digest mdig;
	if (spore_manifest_load(dirfd, &m, &mdig, &err) < 0) {
		sl_error_wrap(&err, "push: %s", dir);
		return ocli_fail(&err);
	}
	struct oci_cache *cache = NULL;
	struct oci_client *client = NULL;
	struct ocli_out *out = ocli_out_new(ro.json, "push");
	struct spore_image parent = {0};
	struct spore_push_plan plan = {0};
	struct oci_upload *ups = NULL;
	char *mjson = NULL;
	size_t mlen = 0;
	bool have_parent = false;
	char mount_from[256] = "";
	int rc = EXIT_SPORE_FAILED;
	if (ocli_open_cache(&cache, &err) < 0 ||
	    find_parent(&m, parent_ref, &ref, &ro, cache, &parent, &have_parent, mount_from, &err) < 0 ||
	    spore_push_plan(dirfd, have_parent ? &parent : NULL, &po, &plan, &err) < 0 ||
	    ocli_client(&ref, &ro, out, &client, &err) < 0)
		goto out;
	ups = calloc(plan.nblobs, sizeof(*ups));
	if (!ups) {
		sl_error_set(&err, SL_E_NOMEM, "upload table");
		goto out;
	}
	uint64_t total = 0;
	for (size_t i = 0; i < plan.nblobs; i++) {
		const struct spore_push_blob *b = &plan.blobs[i];
		ups[i].digest = b->digest;
		ups[i].size = b->size;
		ups[i].segs = b->segs;
		ups[i].nsegs = b->nsegs;
		ups[i].mount_from = b->reused && mount_from[0] ? mount_from : NULL;
		total += b->size;
	}
	ocli_out_total(out, total, plan.nblobs);
	if (oci_upload_many(client, ups, plan.nblobs, &err) < 0)
		goto out;
	/* Where it lives, for snapshotters asked by clients without CRI's labels. */
	if (oci_ref_format(&ref, plan.img.snapshot_ref, sizeof(plan.img.snapshot_ref)) < 0) {
		sl_error_set(&err, SL_E_INVALID, "push: %s: reference too long for the layer annotation", refs);
		goto out;
	}
	if (spore_image_encode(&plan.img, &mjson, &mlen, &err) < 0)
		goto out;
	sl_digest digest;
	if (oci_manifest_put(client, ref.tag, OCI_MT_MANIFEST, mjson, mlen, &digest, &err) < 0)
		goto out;
	/* Best effort: a failed index entry only means a child pushes in full. */
	sl_error_t ierr = NULL;
	if (ocli_index_record(cache, &mdig, &ref, &digest, mjson, mlen, &ierr) < 0)
		sl_warn("image index not updated", "error=\"%s\"", sl_error_msg(ierr));
	sl_error_free(&ierr);
	struct oci_client_stats st;
	oci_client_stats(client, &st);
	size_t skipped = 0, mounted = 0;
	for (size_t i = 0; i < plan.nblobs; i++) {
		skipped += ups[i].skipped;
		mounted += ups[i].mounted;
	}
	char ds[SL_DIGEST_STRLEN];
	sl_digest_format(&digest, ds);
	ocli_out_finish(out);
	ocli_event(out, "{s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:f}", "event", "pushed", "digest", ds, "ref",
		   refs, "layers", (json_int_t)plan.img.nlayers, "blobs_uploaded", (json_int_t)st.blob_uploads,
		   "bytes_uploaded", (json_int_t)st.bytes_uploaded, "blobs_skipped", (json_int_t)skipped,
		   "blobs_mounted", (json_int_t)mounted, "ms", (ocli_now_ns() - t0) / 1e6);
	if (!ro.json)
		printf("%s\n", ds);
	sl_info("pushed", "ref=%s digest=%s layers=%zu blobs_uploaded=%llu bytes_uploaded=%llu skipped=%zu "
			  "mounted=%zu parent_layers=%s ms=%.1f",
		refs, ds, plan.img.nlayers, (unsigned long long)st.blob_uploads,
		(unsigned long long)st.bytes_uploaded, skipped, mounted, have_parent ? "reused" : "none",
		(ocli_now_ns() - t0) / 1e6);
	rc = 0;
out:
	if (rc != 0) {
		ocli_out_finish(out);
		sl_error_wrap(&err, "push %s", refs);
		rc = ocli_fail(&err);
	}
	free(mjson);
	for (size_t i = 0; ups && i < plan.nblobs; i++)
		sl_error_free(&ups[i].err);
	free(ups);
	spore_push_plan_free(&plan);
	if (have_parent)
		spore_image_free(&parent);
	oci_client_free(client);
	oci_cache_close(cache);
	ocli_out_free(out);
	spore_manifest_free(&m);
	return rc;
}
