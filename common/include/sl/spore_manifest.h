/* The spore manifest (spore/manifest.json), format v1: model, parser, writer. */
#ifndef SL_SPORE_MANIFEST_H
#define SL_SPORE_MANIFEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "sl/digest.h"
#include "sl/error.h"

#define SPORE_MEDIA_TYPE "application/vnd.sporelet.spore.manifest.v1+json"
#define SPORE_FORMAT_VERSION 1
#define SPORE_MANIFEST_PATH "spore/manifest.json"
#define SPORE_MANIFEST_MAX (4u << 20)
#define SPORE_CHUNK_SIZE (2u << 20)
#define SPORE_MAX_VCPUS 16
#define SPORE_MAX_MEM_MIB 3072u
#define SPORE_STATE_MAX (4u << 20)

struct spore_file_ref {
	char path[64]; /* relative to the spore directory */
	sl_digest digest;
	uint64_t size;
};

struct spore_chunk {
	uint64_t index; /* guest-physical offset / chunk size */
	sl_digest digest;
};

/* What the guest runs on: a bare machine (serial + spore device: the test
 * guest) or the Linux platform (ACPI, virtio-mmio devices). */
enum spore_platform { SPORE_PLATFORM_BARE = 0, SPORE_PLATFORM_LINUX = 1 };
#define SPORE_MAX_DISKS 8
#define SPORE_DISK_MAX_BYTES (1ull << 40)

/* A virtio-blk disk's content at capture, in 2 MiB chunks (the last one
 * zero-padded; all-zero chunks left out) stored like memory chunks. */
struct spore_disk {
	uint64_t size; /* bytes, a multiple of 512 */
	bool read_only;
	struct spore_chunk *chunks; /* strictly increasing index */
	size_t nchunks;
};

struct spore_manifest {
	unsigned version;
	char created[32]; /* RFC 3339 UTC */
	/* platform contract */
	char arch[16];
	char hypervisor[16];
	char cpu_vendor[16];
	uint32_t tsc_khz;
	char **features; /* CPU feature names, informational; state holds CPUID */
	size_t nfeatures;
	char **kvm_caps; /* KVM capabilities the restore needs */
	size_t ncaps;
	/* machine */
	unsigned vcpus;
	uint64_t mem_mib;
	enum spore_platform platform;
	uint32_t vsock_cid; /* 0 = no vsock device (either platform) */
	/* disks (Linux platform), in device order */
	struct spore_disk disks[SPORE_MAX_DISKS];
	size_t ndisks;
	/* state */
	struct spore_file_ref vm_state;
	struct spore_file_ref vcpu_state[SPORE_MAX_VCPUS];
	/* memory: non-zero chunks only, strictly increasing index */
	struct spore_chunk *chunks;
	size_t nchunks;
	/* lineage */
	bool has_parent;
	sl_digest parent; /* digest of the parent spore's manifest.json */
	char gen_id[33];  /* this spore's generation id (32 hex) */
	char gen_parent[33]; /* "" when none */
	uint64_t gen_counter; /* guest-visible counter at capture */
	uint64_t depth;       /* captures and forks since the first boot */
};

/* Parses and validates (fail closed): unknown version -> SL_E_UNSUPPORTED,
 * anything malformed -> SL_E_INVALID naming the field. */
int spore_manifest_parse(const char *buf, size_t len, struct spore_manifest *m, sl_error_t *err);
/* Serialises to stable JSON bytes (sorted keys). free() *buf. */
int spore_manifest_write(const struct spore_manifest *m, char **buf, size_t *len, sl_error_t *err);
/* Reads spore/manifest.json beneath dirfd, parses it and returns its digest. */
int spore_manifest_load(int dirfd, struct spore_manifest *m, sl_digest *digest, sl_error_t *err);
void spore_manifest_free(struct spore_manifest *m);
/* Deep copy (for forks). */
int spore_manifest_copy(const struct spore_manifest *src, struct spore_manifest *dst, sl_error_t *err);

/* Calls fn for every chunk digest the spore references (memory, then
 * disks), duplicates included; stops at and returns fn's first nonzero. */
int spore_manifest_each_chunk(const struct spore_manifest *m, int (*fn)(const sl_digest *d, void *arg), void *arg);
/* How many chunk references spore_manifest_each_chunk visits. */
size_t spore_manifest_chunk_refs(const struct spore_manifest *m);
/* Every chunk digest the spore references (memory, then disks), duplicates
 * included, in a new array (free() it; never NULL on success). */
int spore_manifest_chunk_digests(const struct spore_manifest *m, sl_digest **out, size_t *n, sl_error_t *err);

/* chunks/sha256/<hex> for a digest. */
void spore_chunk_path(const sl_digest *d, char out[96]);

#endif
