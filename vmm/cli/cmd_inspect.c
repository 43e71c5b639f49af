/* spore inspect: describe a spore directory, as text or JSON. */
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "sl/file.h"
#include "sl/json.h"
#include "sl/spore_manifest.h"

int cmd_inspect(int argc, char **argv)
{
	static const struct option opts[] = {{"json", no_argument, NULL, 'j'}, {"help", no_argument, NULL, 'h'}, {0}};
	bool as_json = false;
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		if (c == 'j')
			as_json = true;
		else if (c == 'h') {
			puts("usage: spore inspect DIR [--json]");
			return 0;
		} else
			return cli_usage("usage: spore inspect DIR [--json]");
	}
	if (optind != argc - 1)
		return cli_usage("inspect: exactly one spore directory expected");
	const char *dir = argv[optind];
	sl_error_t err = NULL;
	_cleanup_close_ int dfd = open(dir, O_DIRECTORY | O_RDONLY | O_CLOEXEC);
	if (dfd < 0) {
		sl_error_sys(&err, "open spore %s", dir);
		return cli_fail(&err);
	}
	_cleanup_free_ char *raw = NULL;
	size_t rawlen;
	if (sl_read_beneath(dfd, SPORE_MANIFEST_PATH, SPORE_MANIFEST_MAX, &raw, &rawlen, &err) < 0)
		return cli_fail(&err);
	struct spore_manifest m;
	if (spore_manifest_parse(raw, rawlen, &m, &err) < 0) {
		sl_error_wrap(&err, "%s", dir);
		return cli_fail(&err);
	}
	sl_digest d;
	char ds[SL_DIGEST_STRLEN], ps[SL_DIGEST_STRLEN] = "";
	sl_sha256(raw, rawlen, &d);
	sl_digest_format(&d, ds);
	if (m.has_parent)
		sl_digest_format(&m.parent, ps);
	uint64_t slots = (m.mem_mib << 20) / SPORE_CHUNK_SIZE;
	if (as_json) {
		json_t *man = NULL;
		if (sl_json_parse(raw, rawlen, "manifest.json", &man, &err) < 0) {
			spore_manifest_free(&m);
			return cli_fail(&err);
		}
		_cleanup_json_ json_t *o = json_pack(
			"{s:s, s:s, s:{s:s, s:s?, s:I, s:I}, s:{s:I, s:I, s:I}, s:o}", "dir", dir, "manifest_digest", ds,
			"generation", "id", m.gen_id, "parent", m.gen_parent[0] ? m.gen_parent : NULL, "counter",
			(json_int_t)m.gen_counter, "depth", (json_int_t)m.depth, "memory", "chunk_slots",
			(json_int_t)slots, "stored_chunks", (json_int_t)m.nchunks, "zero_chunks",
			(json_int_t)(slots - m.nchunks), "manifest", man);
		char *s = o ? sl_json_dump(o, NULL) : NULL;
		if (s)
			fputs(s, stdout);
		free(s);
	} else {
		printf("spore:       %s\n", dir);
		printf("manifest:    %s\n", ds);
		printf("format:      v%u, created %s\n", m.version, m.created);
		printf("platform:    %s %s %s, tsc %u kHz, %zu cpu features, %zu kvm capabilities\n", m.arch,
		       m.hypervisor, m.cpu_vendor, m.tsc_khz, m.nfeatures, m.ncaps);
		printf("machine:     %u vcpus, %llu MiB\n", m.vcpus, (unsigned long long)m.mem_mib);
		printf("memory:      %llu chunks of 2 MiB: %zu stored (%zu MiB), %llu zero\n",
		       (unsigned long long)slots, m.nchunks, m.nchunks * 2, (unsigned long long)(slots - m.nchunks));
		printf("generation:  %s (parent %s), counter %llu, depth %llu\n", m.gen_id,
		       m.gen_parent[0] ? m.gen_parent : "none", (unsigned long long)m.gen_counter,
		       (unsigned long long)m.depth);
		printf("parent:      %s\n", m.has_parent ? ps : "none");
	}
	spore_manifest_free(&m);
	return 0;
}
