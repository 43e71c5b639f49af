/* Capture: write a paused VM as a spore directory (format v1). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "sl/file.h"
#include "sl/spore_manifest.h"
#include "platform_linux.h"
#include "vmm_internal.h"
#include "vmm_state.h"

struct names {
	char **v;
	size_t n;
};

static void add_name(const char *name, void *arg)
{
	struct names *ns = arg;
	char **nv = realloc(ns->v, (ns->n + 2) * sizeof(char *));
	if (!nv)
		return;
	ns->v = nv;
	ns->v[ns->n] = strdup(name);
	if (ns->v[ns->n])
		ns->n++;
}

static int write_state(int dirfd, const char *path, uint8_t *buf, size_t len,
		       struct spore_file_ref *ref, sl_error_t *err)
{
	snprintf(ref->path, sizeof(ref->path), "%s", path);
	ref->size = len;
	sl_sha256(buf, len, &ref->digest);
	int rc = sl_write_atomic(dirfd, path, buf, len, 0444, err);
	free(buf);
	return rc;
}

/* Chunk files inside the not-yet-visible capture directory are written
 * without a per-file fsync; one syncfs before the directory's rename makes
 * all of them durable before anyone can see them. */
static int write_chunk(int dirfd, const sl_digest *d, const uint8_t *p, sl_error_t *err)
{
	char path[96];
	spore_chunk_path(d, path);
	_cleanup_close_ int fd = openat(dirfd, path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0444);
	if (fd < 0) {
		if (errno == EEXIST) /* the same content twice in one VM */
			return 0;
		return sl_error_sys(err, "create %s", path);
	}
	return sl_write_all(fd, p, VMM_CHUNK_SIZE, err) < 0 ? sl_error_wrap(err, "write %s", path) : 0;
}

static int reuse_chunk(struct vmm_vm *vm, int dirfd, const sl_digest *d, sl_error_t *err)
{
	char path[96];
	spore_chunk_path(d, path);
	if (linkat(vm->src_dirfd, path, dirfd, path, 0) == 0 || errno == EEXIST)
		return 0;
	if (errno != EXDEV && errno != EPERM && errno != EMLINK)
		return sl_error_sys(err, "link %s from the parent spore", path);
	/* Another filesystem: the chunk's bytes are still in guest memory. */
	return -2;
}

/* Reads a disk image in 2 MiB chunks (the last one zero-padded) into the
 * spore's chunk store, leaving out chunks that are all zero. Every chunk
 * is hashed: virtio-blk writes are not tracked (yet), so nothing shows
 * which chunks are unchanged since the restore. */
static int capture_disk(int dirfd, int fd, struct spore_disk *d, struct vmm_capture_stats *st, sl_error_t *err)
{
	struct stat sb;
	if (fstat(fd, &sb) < 0)
		return sl_error_sys(err, "stat the disk image");
	d->size = (uint64_t)sb.st_size & ~511ull;
	if (d->size == 0)
		return sl_error_set(err, SL_E_INVALID, "the disk image is smaller than one sector");
	uint64_t n = (d->size + VMM_CHUNK_SIZE - 1) / VMM_CHUNK_SIZE;
	_cleanup_free_ uint8_t *buf = malloc(VMM_CHUNK_SIZE);
	d->chunks = calloc(n, sizeof(*d->chunks));
	if (!buf || !d->chunks)
		return sl_error_set(err, SL_E_NOMEM, "disk chunk table");
	for (uint64_t c = 0; c < n; c++) {
		off_t off = (off_t)(c * VMM_CHUNK_SIZE);
		size_t want = d->size - (uint64_t)off < VMM_CHUNK_SIZE ? d->size - (uint64_t)off : VMM_CHUNK_SIZE;
		/* A hole that covers the whole chunk reads as zeros: skip it
		 * without reading (sparse images are the common case). */
		off_t data = lseek(fd, off, SEEK_DATA);
		if ((data < 0 && errno == ENXIO) || (data >= 0 && (uint64_t)data >= (uint64_t)off + want)) {
			st->zero_chunks++;
			continue;
		}
		memset(buf + want, 0, VMM_CHUNK_SIZE - want);
		size_t got = 0;
		while (got < want) {
			ssize_t r = pread(fd, buf + got, want - got, off + (off_t)got);
			if (r < 0 && errno == EINTR)
				continue;
			if (r <= 0)
				return r < 0 ? sl_error_sys(err, "read the disk image at %llu", (unsigned long long)(off + got))
					     : sl_error_set(err, SL_E_INVALID, "the disk image shrank during capture");
			got += (size_t)r;
		}
		if (vmm_chunk_is_zero(buf)) {
			st->zero_chunks++;
			continue;
		}
		sl_digest dg;
		sl_sha256(buf, VMM_CHUNK_SIZE, &dg);
		st->bytes_hashed += VMM_CHUNK_SIZE;
		if (write_chunk(dirfd, &dg, buf, err) < 0)
			return -1;
		st->chunks_written++;
		d->chunks[d->nchunks++] = (struct spore_chunk){c, dg};
	}
	return 0;
}

static void now_rfc3339(char out[32])
{
	time_t t = time(NULL);
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static int capture_into(struct vmm_vm *vm, int dirfd, struct spore_manifest *m,
			struct vmm_capture_stats *st, sl_error_t *err)
{
	if (sl_mkdir_beneath(dirfd, "spore", 0755, err) < 0 ||
	    sl_mkdir_beneath(dirfd, "chunks/sha256", 0755, err) < 0)
		return -1;
	uint8_t *buf;
	size_t len;
	if (vmm_vm_save(vm, &buf, &len, err) < 0 ||
	    write_state(dirfd, "spore/vm.state", buf, len, &m->vm_state, err) < 0)
		return -1;
	for (unsigned i = 0; i < vm->machine.vcpus; i++) {
		char path[64];
		snprintf(path, sizeof(path), "spore/vcpu-%u.state", i);
		if (vmm_vcpu_save(vm, &vm->vcpus[i], &buf, &len, err) < 0 ||
		    write_state(dirfd, path, buf, len, &m->vcpu_state[i], err) < 0)
			return -1;
	}
	_cleanup_free_ uint8_t *dirty = calloc(vm->nchunks, 1);
	m->chunks = calloc(vm->nchunks ? vm->nchunks : 1, sizeof(*m->chunks));
	if (!dirty || !m->chunks)
		return sl_error_set(err, SL_E_NOMEM, "chunk tables");
	if (vmm_mem_dirty_chunks(vm, dirty, err) < 0)
		return -1;
	for (uint64_t c = 0; c < vm->nchunks; c++) {
		const uint8_t *p = vm->mem + c * VMM_CHUNK_SIZE;
		sl_digest d;
		if (vm->chunk_state[c] == VMM_CHUNK_FILE && !dirty[c] && vm->src_dirfd_valid) {
			d = vm->chunk_digest[c];
			int rc = reuse_chunk(vm, dirfd, &d, err);
			if (rc == -1)
				return -1;
			if (rc == 0) {
				st->chunks_reused++;
				m->chunks[m->nchunks++] = (struct spore_chunk){c, d};
				continue;
			}
		} else if (vm->chunk_state[c] == VMM_CHUNK_ANON && !dirty[c]) {
			st->zero_chunks++; /* never touched since it was zero */
			continue;
		}
		if (vmm_chunk_is_zero(p)) {
			st->zero_chunks++;
			continue;
		}
		sl_sha256(p, VMM_CHUNK_SIZE, &d);
		st->bytes_hashed += VMM_CHUNK_SIZE;
		if (write_chunk(dirfd, &d, p, err) < 0)
			return -1;
		st->chunks_written++;
		m->chunks[m->nchunks++] = (struct spore_chunk){c, d};
	}
	for (unsigned k = 0; k < vmm_linux_ndisks(vm); k++) {
		m->disks[k].read_only = vm->machine.disks[k].read_only;
		m->ndisks = k + 1;
		if (capture_disk(dirfd, vmm_linux_disk_fd(vm, k), &m->disks[k], st, err) < 0)
			return sl_error_wrap(err, "disk %u", k);
	}
	char *mbuf;
	if (spore_manifest_write(m, &mbuf, &len, err) < 0)
		return -1;
	int rc = sl_write_atomic(dirfd, SPORE_MANIFEST_PATH, mbuf, len, 0444, err);
	free(mbuf);
	if (rc < 0)
		return -1;
	if (syncfs(dirfd) < 0)
		return sl_error_sys(err, "syncfs");
	return 0;
}

int vmm_capture(struct vmm_vm *vm, const char *out_dir, struct vmm_capture_stats *stats, sl_error_t *err)
{
	struct vmm_capture_stats st = {0};
	uint64_t t0 = vmm_now_ns();
	if (vm->started && vm->parked < vm->machine.vcpus)
		return sl_error_set(err, SL_E_INVALID, "capture needs a paused VM");
	struct stat sb;
	if (lstat(out_dir, &sb) == 0)
		return sl_error_set(err, SL_E_INVALID, "capture: %s already exists", out_dir);
	char tmp[4096];
	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp.%d", out_dir, getpid()) >= sizeof(tmp))
		return sl_error_set(err, SL_E_INVALID, "capture: path too long");
	if (mkdir(tmp, 0755) < 0)
		return sl_error_sys(err, "capture: mkdir %s", tmp);
	_cleanup_close_ int dirfd = open(tmp, O_DIRECTORY | O_RDONLY | O_CLOEXEC);
	if (dirfd < 0) {
		sl_error_sys(err, "capture: open %s", tmp);
		rmdir(tmp);
		return -1;
	}

	struct spore_manifest m = {.version = SPORE_FORMAT_VERSION, .vcpus = vm->machine.vcpus,
				   .mem_mib = vm->machine.mem_mib, .tsc_khz = vm->tsc_khz,
				   .platform = vm->machine.platform == VMM_PLATFORM_LINUX ? SPORE_PLATFORM_LINUX
											 : SPORE_PLATFORM_BARE,
				   .vsock_cid = vm->machine.vsock_cid};
	now_rfc3339(m.created);
	strcpy(m.arch, "x86_64");
	strcpy(m.hypervisor, "kvm");
	char vendor[13];
	snprintf(m.cpu_vendor, sizeof(m.cpu_vendor), "%s", vmm_cpuid_vendor(vm->cpuid, vendor));
	struct names feats = {0}, caps = {0};
	vmm_cpuid_feature_names(vm->cpuid, add_name, &feats);
	for (unsigned i = 0; i < vmm_required_ncaps; i++)
		add_name(vmm_required_caps[i].name, &caps);
	m.features = feats.v;
	m.nfeatures = feats.n;
	m.kvm_caps = caps.v;
	m.ncaps = caps.n;
	uint64_t counter;
	vmm_generation(vm, &counter, m.gen_id);
	m.gen_counter = counter;
	int rc = 0;
	if (vm->restored) {
		rc = sl_digest_parse(vm->parent_manifest_digest, &m.parent, err);
		m.has_parent = true;
		snprintf(m.gen_parent, sizeof(m.gen_parent), "%s", vm->spore_gen_id);
		m.depth = vm->depth + 1;
	}
	if (rc == 0) {
		/* Device I/O threads must not write guest memory or rings while
		 * they are being saved. */
		vmm_linux_pause_io(vm);
		rc = capture_into(vm, dirfd, &m, &st, err);
		vmm_linux_resume_io(vm);
	}
	spore_manifest_free(&m);
	if (rc == 0 && rename(tmp, out_dir) < 0)
		rc = sl_error_sys(err, "capture: rename %s to %s", tmp, out_dir);
	if (rc < 0) {
		sl_error_t e2 = NULL;
		sl_remove_path(tmp, &e2); /* tmp may be absolute */
		sl_error_free(&e2);
		return sl_error_wrap(err, "capture to %s", out_dir);
	}
	/* Make the rename itself durable. */
	char parent[4096];
	snprintf(parent, sizeof(parent), "%s", out_dir);
	char *slash = strrchr(parent, '/');
	if (slash == parent)
		slash[1] = 0;
	else if (slash)
		*slash = 0;
	else
		strcpy(parent, ".");
	_cleanup_close_ int pfd = open(parent, O_DIRECTORY | O_RDONLY | O_CLOEXEC);
	if (pfd >= 0)
		fsync(pfd);
	st.total_ns = vmm_now_ns() - t0;
	if (stats)
		*stats = st;
	return 0;
}
