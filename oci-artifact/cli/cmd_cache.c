/* spore cache: list, verify, garbage-collect and fill the node-local chunk cache. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "ocli.h"
#include "pull_plan.h"
#include "sl/log.h"
#include "sl/spore_manifest.h"

static const char usage[] =
	"usage: spore cache ls [--json]\n"
	"       spore cache verify\n"
	"       spore cache gc [--max-mib N]\n"
	"       spore cache fetch REF CHUNK_DIGEST [--insecure-registry] [--json]\n"
	"The cache is $SPORE_CACHE_DIR, else /var/lib/sporelet/cache for root, else\n"
	"~/.cache/sporelet. gc removes chunks no spore directory links to (oldest\n"
	"first) until the cache is at most --max-mib (default: all of them).\n"
	"fetch puts one chunk of an image into the cache with one Range GET.\n";

static void print_entry(const struct oci_cache_entry *e, void *arg)
{
	bool json = *(bool *)arg;
	char d[SL_DIGEST_STRLEN];
	sl_digest_format(&e->digest, d);
	if (json)
		printf("{\"digest\":\"%s\",\"size\":%llu,\"links\":%llu,\"mtime\":%lld}\n", d,
		       (unsigned long long)e->size, (unsigned long long)e->links, (long long)e->mtime);
	else
		printf("%s %llu %llu\n", d, (unsigned long long)e->size, (unsigned long long)e->links);
}

static int cache_fetch(int argc, char **argv)
{
	static const struct option opts[] = {{"insecure-registry", no_argument, NULL, OPT_INSECURE},
					     {"json", no_argument, NULL, OPT_JSON},
					     {"parallel", required_argument, NULL, OPT_PARALLEL},
					     {0}};
	struct ocli_reg_opts ro = {0};
	sl_error_t err = NULL;
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		int r = ocli_reg_opt(c, optarg, &ro, &err);
		if (r < 0)
			return ocli_fail(&err);
		if (!r) {
			fputs(usage, stderr);
			return EXIT_SPORE_FAILED;
		}
	}
	if (optind != argc - 2)
		return ocli_usage("cache fetch: need REF and CHUNK_DIGEST\n%s", usage);
	struct oci_ref ref;
	sl_digest chunk;
	if (oci_ref_parse(argv[optind], &ref, &err) < 0 || sl_digest_parse(argv[optind + 1], &chunk, &err) < 0)
		return ocli_fail(&err);
	struct oci_cache *cache = NULL;
	struct oci_client *client = NULL;
	struct ocli_out *out = ocli_out_new(ro.json, "fetch");
	struct spore_image img = {0};
	bool have_img = false;
	char *body = NULL, mt[128], reference[OCI_REF_REFERENCE_MAX];
	size_t blen;
	sl_digest digest;
	int rc = EXIT_SPORE_FAILED;
	oci_ref_reference(&ref, reference);
	if (ocli_open_cache(&cache, &err) < 0 || ocli_client(&ref, &ro, out, &client, &err) < 0 ||
	    oci_manifest_get(client, reference, &body, &blen, mt, &digest, &err) < 0 ||
	    spore_image_decode(body, blen, &img, &err) < 0)
		goto out;
	have_img = true;
	struct oci_fetch where;
	size_t fetched;
	if (ocli_chunk_source(&img, &chunk, &where, &err) < 0 ||
	    ocli_fetch_chunks(client, cache, &img, &chunk, 1, &fetched, &err) < 0)
		goto out;
	char layer[SL_DIGEST_STRLEN];
	sl_digest_format(&where.blob, layer);
	ocli_out_finish(out);
	printf("layer=%s offset=%llu size=%llu\n", layer, (unsigned long long)where.offset,
	       (unsigned long long)(where.length ? where.length : SPORE_CHUNK_SIZE));
	sl_info("fetched", "chunk=%s layer=%s offset=%llu cached_before=%s", argv[optind + 1], layer,
		(unsigned long long)where.offset, fetched ? "no" : "yes");
	rc = 0;
out:
	if (rc != 0) {
		ocli_out_finish(out);
		sl_error_wrap(&err, "cache fetch %s", argv[optind]);
		rc = ocli_fail(&err);
	}
	free(body);
	if (have_img)
		spore_image_free(&img);
	oci_client_free(client);
	oci_cache_close(cache);
	ocli_out_free(out);
	return rc;
}

int cmd_cache(int argc, char **argv)
{
	if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
		fputs(usage, argc < 2 ? stderr : stdout);
		return argc < 2 ? EXIT_SPORE_FAILED : 0;
	}
	const char *sub = argv[1];
	if (!strcmp(sub, "fetch"))
		return cache_fetch(argc - 1, argv + 1);
	bool json = false;
	uint64_t max_mib = 0;
	for (int i = 2; i < argc; i++) {
		if (!strcmp(argv[i], "--json") && !strcmp(sub, "ls")) {
			json = true;
		} else if (!strcmp(argv[i], "--max-mib") && !strcmp(sub, "gc") && i + 1 < argc) {
			char *end;
			max_mib = strtoull(argv[++i], &end, 10);
			if (*end || argv[i][0] == '-' || !argv[i][0])
				return ocli_usage("--max-mib must be a number of MiB, got \"%.32s\"", argv[i]);
		} else {
			return ocli_usage("cache %s: unexpected argument \"%.64s\"\n%s", sub, argv[i], usage);
		}
	}
	sl_error_t err = NULL;
	struct oci_cache *cache = NULL;
	struct oci_cache_stats st = {0};
	int rc = 0;
	if (strcmp(sub, "ls") && strcmp(sub, "verify") && strcmp(sub, "gc"))
		return ocli_usage("cache: unknown subcommand \"%.32s\"\n%s", sub, usage);
	if (ocli_open_cache(&cache, &err) < 0)
		return ocli_fail(&err);
	if (!strcmp(sub, "ls")) {
		rc = oci_cache_list(cache, print_entry, &json, &err);
	} else if (!strcmp(sub, "verify")) {
		rc = oci_cache_verify(cache, &st, &err);
		if (rc == 0)
			printf("verified %llu chunks (%.1f MiB), removed %llu bad\n", (unsigned long long)st.entries,
			       st.bytes / 1048576.0, (unsigned long long)st.removed);
	} else {
		rc = oci_cache_gc(cache, max_mib << 20, &st, &err);
		if (rc == 0)
			printf("removed %llu chunks (%.1f MiB); %llu remain (%.1f MiB)\n", (unsigned long long)st.removed,
			       st.removed_bytes / 1048576.0, (unsigned long long)st.entries, st.bytes / 1048576.0);
	}
	oci_cache_close(cache);
	if (rc < 0) {
		sl_error_wrap(&err, "cache %s", sub);
		return ocli_fail(&err);
	}
	return 0;
}
