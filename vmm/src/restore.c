/* Restore: verify a spore, map its chunks MAP_PRIVATE, load state, new generation. */
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sl/file.h"
#include "sl/spore_manifest.h"
#include "platform_linux.h"
#include "vmm_internal.h"
#include "vmm_state.h"

static int check_caps(int kvm_fd, const struct spore_manifest *m, sl_error_t *err)
{
	for (size_t i = 0; i < m->ncaps; i++) {
		const struct vmm_kvm_cap *c = NULL;
		for (unsigned j = 0; j < vmm_required_ncaps && !c; j++)
			if (strcmp(vmm_required_caps[j].name, m->kvm_caps[i]) == 0)
				c = &vmm_required_caps[j];
		if (!c)
			return sl_error_set(err, SL_E_UNSUPPORTED,
					    "platform contract not met: unknown KVM capability \"%s\"", m->kvm_caps[i]);
		if (ioctl(kvm_fd, KVM_CHECK_EXTENSION, c->cap) <= 0)
			return sl_error_set(err, SL_E_UNSUPPORTED,
					    "platform contract not met: KVM lacks capability %s", c->name);
	}
	return 0;
}

/* Reads a state file and checks it against the manifest's digest. */
static int read_state(int dirfd, const struct spore_file_ref *r, char **buf, size_t *len, sl_error_t *err)
{
	if (sl_read_beneath(dirfd, r->path, SPORE_STATE_MAX, buf, len, err) < 0)
		return sl_error_wrap(err, "spore state");
	sl_digest d;
	sl_sha256(*buf, *len, &d);
	if (*len != r->size || !sl_digest_equal(&d, &r->digest)) {
		char want[SL_DIGEST_STRLEN], got[SL_DIGEST_STRLEN];
		sl_digest_format(&r->digest, want);
		sl_digest_format(&d, got);
		free(*buf);
		*buf = NULL;
		return sl_error_set(err, SL_E_INTEGRITY, "%s does not match its digest: want %s (%llu bytes), got %s (%zu bytes)",
				    r->path, want, (unsigned long long)r->size, got, *len);
	}
	return 0;
}

/* A spore opened for restore: the manifest is read, parsed and checked once
 * and serves both the machine shape and the restore. */
struct vmm_spore {
	int dirfd;
	char *dir;
	struct spore_manifest m;
	sl_digest digest;
	uint64_t open_ns;
	int disk_fd[SPORE_MAX_DISKS]; /* private copies made by vmm_spore_disks, -1: none */
	uint64_t disk_shared, disk_copied; /* bytes of chunks reflinked / copied into them */
	const char *disk_where;            /* the directory that holds them */
};

int vmm_spore_open(const char *spore_dir, struct vmm_spore **out, sl_error_t *err)
{
	uint64_t t0 = vmm_now_ns();
	struct vmm_spore *sp = calloc(1, sizeof(*sp));
	if (!sp)
		return sl_error_set(err, SL_E_NOMEM, "spore handle");
	for (unsigned i = 0; i < SPORE_MAX_DISKS; i++)
		sp->disk_fd[i] = -1;
	sp->dirfd = open(spore_dir, O_DIRECTORY | O_RDONLY | O_CLOEXEC);
	if (sp->dirfd < 0) {
		sl_error_sys(err, "open spore %s", spore_dir);
		free(sp);
		return -1;
	}
	sp->dir = strdup(spore_dir);
	if (!sp->dir || spore_manifest_load(sp->dirfd, &sp->m, &sp->digest, err) < 0) {
		if (!sp->dir)
			sl_error_set(err, SL_E_NOMEM, "spore handle");
		else
			sl_error_wrap(err, "%s", spore_dir);
		close(sp->dirfd);
		free(sp->dir);
		free(sp);
		return -1;
	}
	sp->open_ns = vmm_now_ns() - t0;
	*out = sp;
	return 0;
}

void vmm_spore_close(struct vmm_spore *sp)
{
	if (!sp)
		return;
	spore_manifest_free(&sp->m);
	for (unsigned i = 0; i < SPORE_MAX_DISKS; i++)
		if (sp->disk_fd[i] >= 0)
			close(sp->disk_fd[i]);
	close(sp->dirfd);
	free(sp->dir);
	free(sp);
}

void vmm_spore_shape(const struct vmm_spore *sp, struct vmm_machine *m)
{
	m->vcpus = sp->m.vcpus;
	m->mem_mib = sp->m.mem_mib;
	m->platform = sp->m.platform == SPORE_PLATFORM_LINUX ? VMM_PLATFORM_LINUX : VMM_PLATFORM_BARE;
	m->vsock_cid = sp->m.vsock_cid;
	m->ndisks = (unsigned)sp->m.ndisks;
	for (unsigned i = 0; i < m->ndisks; i++)
		m->disks[i] = (struct vmm_disk){.path = NULL, .read_only = sp->m.disks[i].read_only,
						.have_fd = sp->disk_fd[i] >= 0, .fd = sp->disk_fd[i]};
}

/* One chunk on its way in: mapped, then either vouched for by its seal or
 * hashed through the mapping, so the check reads exactly what the guest
 * will see and warms the page cache the guest then uses. */
struct chunk_job {
	const struct spore_chunk *c;
	uint8_t *addr; /* where its bytes are mapped */
	struct vmm_seal_id id;
	bool hash;     /* no valid seal: must be hashed */
	sl_digest got; /* hash result */
};

/* With mem NULL the chunk is mapped anywhere (a check without a VM). */
static int map_chunk(uint8_t *mem, int dirfd, int seal_fd, struct chunk_job *j, sl_error_t *err)
{
	const struct spore_chunk *c = j->c;
	char path[96], want[SL_DIGEST_STRLEN];
	spore_chunk_path(&c->digest, path);
	sl_digest_format(&c->digest, want);
	/* O_NONBLOCK: a FIFO planted as a chunk must fail the type check below,
	 * not block the open forever. */
	int fd = sl_open_beneath(dirfd, path, O_RDONLY | O_CLOEXEC | O_NONBLOCK, 0, err);
	if (fd < 0) {
		if ((*err)->code == SL_E_NOT_FOUND) {
			sl_error_free(err);
			return sl_error_set(err, SL_E_NOT_FOUND, "chunk %llu (%s) is missing: no %s",
					    (unsigned long long)c->index, want, path);
		}
		return sl_error_wrap(err, "chunk %llu", (unsigned long long)c->index);
	}
	if (vmm_seal_stat(fd, &j->id, err) < 0) {
		close(fd);
		return sl_error_wrap(err, "%s", path);
	}
	if (!S_ISREG(j->id.mode) || j->id.size != VMM_CHUNK_SIZE) {
		close(fd);
		return sl_error_set(err, SL_E_INTEGRITY, "chunk %llu (%s): %s is %llu bytes, want %u",
				    (unsigned long long)c->index, want, path, (unsigned long long)j->id.size,
				    VMM_CHUNK_SIZE);
	}
	j->hash = !vmm_seal_check(seal_fd, &j->id, &c->digest);
	if (!mem && !j->hash) {
		close(fd);
		return 0;
	}
	uint8_t *slot = mem ? mem + c->index * VMM_CHUNK_SIZE : NULL;
	void *p = mmap(slot, VMM_CHUNK_SIZE, mem ? PROT_READ | PROT_WRITE : PROT_READ,
		       MAP_PRIVATE | MAP_NORESERVE | (mem ? MAP_FIXED : 0), fd, 0);
	close(fd);
	if (p == MAP_FAILED)
		return sl_error_sys(err, "map chunk %llu", (unsigned long long)c->index);
	j->addr = p;
	if (mem)
		madvise(p, VMM_CHUNK_SIZE, MADV_NOHUGEPAGE);
	return 0;
}

struct hash_pool {
	struct chunk_job *jobs;
	size_t njobs;
	_Atomic size_t next;
};

static void *hash_worker(void *arg)
{
	struct hash_pool *hp = arg;
	for (;;) {
		size_t i = atomic_fetch_add(&hp->next, 1);
		if (i >= hp->njobs)
			return NULL;
		struct chunk_job *j = &hp->jobs[i];
		if (j->hash)
			sl_sha256(j->addr, VMM_CHUNK_SIZE, &j->got);
	}
}

/* Hashes the unsealed chunks on up to one thread per online CPU: restoring
 * a spore the first time on a node is bound by sha256 (about 1.4 ms per
 * chunk here), and chunks are independent. */
static void hash_chunks(struct chunk_job *jobs, size_t njobs, size_t nhash)
{
	struct hash_pool hp = {.jobs = jobs, .njobs = njobs};
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	size_t nthreads = cpus > 1 ? (size_t)cpus - 1 : 0; /* plus this thread */
	if (nthreads > 7)
		nthreads = 7;
	if (nthreads > nhash - 1)
		nthreads = nhash - 1;
	pthread_t t[7];
	size_t started = 0;
	for (; started < nthreads; started++)
		if (pthread_create(&t[started], NULL, hash_worker, &hp) != 0)
			break;
	hash_worker(&hp);
	for (size_t i = 0; i < started; i++)
		pthread_join(t[i], NULL);
}

/* Maps (into mem, or anywhere when mem is NULL) and verifies every chunk of
 * m, sealing what it hashed. */
static int check_chunks(uint8_t *mem, int dirfd, const struct spore_manifest *m,
			const struct vmm_restore_opts *opts, struct vmm_restore_stats *st, sl_error_t *err)
{
	int seal_fd = -1;
	if (opts && opts->seal_dir && vmm_seal_open(opts->seal_dir, &seal_fd, err) < 0)
		return -1;
	/* Full verification still records seals; it just never trusts them. */
	int check_fd = opts && opts->verify == VMM_VERIFY_SEALED ? seal_fd : -1;
	struct chunk_job *jobs = calloc(m->nchunks ? m->nchunks : 1, sizeof(*jobs));
	int rc = -1;
	size_t nhash = 0, i;
	if (!jobs) {
		sl_error_set(err, SL_E_NOMEM, "chunk table");
		goto out;
	}
	for (i = 0; i < m->nchunks; i++) {
		jobs[i].c = &m->chunks[i];
		if (map_chunk(mem, dirfd, check_fd, &jobs[i], err) < 0)
			goto out;
		nhash += jobs[i].hash;
	}
	if (nhash)
		hash_chunks(jobs, m->nchunks, nhash);
	for (i = 0; i < m->nchunks; i++) {
		const struct spore_chunk *c = jobs[i].c;
		if (jobs[i].hash && !sl_digest_equal(&jobs[i].got, &c->digest)) {
			char want[SL_DIGEST_STRLEN], g[SL_DIGEST_STRLEN], path[96];
			sl_digest_format(&c->digest, want);
			sl_digest_format(&jobs[i].got, g);
			spore_chunk_path(&c->digest, path);
			sl_error_set(err, SL_E_INTEGRITY, "chunk %llu does not match its digest: want %s, got %s (%s)",
				     (unsigned long long)c->index, want, g, path);
			goto out;
		}
	}
	for (i = 0; i < m->nchunks; i++)
		if (jobs[i].hash)
			vmm_seal_record(seal_fd, &jobs[i].id, &jobs[i].c->digest);
	if (st) {
		st->chunks_hashed = nhash;
		st->chunks_sealed = m->nchunks - nhash;
	}
	rc = 0;
out:
	if (jobs && !mem)
		for (i = 0; i < m->nchunks; i++)
			if (jobs[i].addr)
				munmap(jobs[i].addr, VMM_CHUNK_SIZE);
	free(jobs);
	if (seal_fd >= 0)
		close(seal_fd);
	return rc;
}

static int load_chunks(struct vmm_vm *vm, int dirfd, const struct spore_manifest *m,
		       const struct vmm_restore_opts *opts, struct vmm_restore_stats *st, sl_error_t *err)
{
	if (check_chunks(vm->mem, dirfd, m, opts, st, err) < 0)
		return -1;
	for (size_t i = 0; i < m->nchunks; i++) {
		vm->chunk_state[m->chunks[i].index] = VMM_CHUNK_FILE;
		vm->chunk_digest[m->chunks[i].index] = m->chunks[i].digest;
	}
	return 0;
}

/* Verifies a disk's chunks (seals or hashes) like memory chunks. */
static int check_disk_chunks(int dirfd, const struct spore_disk *d, const struct vmm_restore_opts *opts,
			     sl_error_t *err)
{
	struct spore_manifest dm = {.chunks = d->chunks, .nchunks = d->nchunks};
	return check_chunks(NULL, dirfd, &dm, opts, NULL, err);
}

/* An unlinked file to hold a private disk copy: beside the spore if its
 * filesystem takes one (extents can then be shared), else in the
 * configured disk directory (an error if it takes none: it was asked for),
 * else in $TMPDIR or /var/tmp. Reflinks need only the same filesystem, not
 * the same mount (Linux 5.18 and later), so a disk directory on the node
 * cache's filesystem shares the chunks of a spore seen through a read-only
 * bind. */
static int disk_tmpfile(int dirfd, const char *disk_dir, const char **where, sl_error_t *err)
{
	int fd = openat(dirfd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	*where = "the spore's directory";
	if (fd >= 0)
		return fd;
	if (disk_dir) {
		*where = disk_dir;
		fd = open(disk_dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
		return fd >= 0 ? fd : sl_error_sys(err, "create a private disk file in the disk directory %s", disk_dir);
	}
	const char *dirs[] = {getenv("TMPDIR"), "/var/tmp", "/tmp"};
	for (unsigned i = 0; i < 3; i++) {
		if (!dirs[i] || !dirs[i][0])
			continue;
		fd = open(dirs[i], O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
		if (fd >= 0) {
			*where = dirs[i];
			return fd;
		}
	}
	return sl_error_sys(err, "create a private disk file (spore directory, $TMPDIR, /var/tmp, /tmp)");
}

/* Copies one verified chunk into the disk at its offset. FICLONERANGE shares
 * the chunk file's extents (XFS with reflink=1, btrfs): the pod's disk costs
 * no space until the guest writes it. Across filesystems, or where the
 * filesystem cannot share, copy_file_range copies the bytes. *shared says
 * which happened. */
static int copy_chunk(int dirfd, const struct spore_chunk *c, int out, uint64_t disk_size, bool *shared,
		      sl_error_t *err)
{
	char path[96];
	spore_chunk_path(&c->digest, path);
	_cleanup_close_ int in = sl_open_beneath(dirfd, path, O_RDONLY | O_CLOEXEC | O_NONBLOCK, 0, err);
	if (in < 0)
		return sl_error_wrap(err, "disk chunk %llu", (unsigned long long)c->index);
	loff_t off_in = 0, off_out = (loff_t)(c->index * VMM_CHUNK_SIZE);
	uint64_t left = disk_size - (uint64_t)off_out;
	if (left > VMM_CHUNK_SIZE)
		left = VMM_CHUNK_SIZE;
	*shared = false;
	/* Cloned ranges must be whole filesystem blocks (a disk's last chunk
	 * may be shorter: its tail is copied). */
	if (left % 4096 == 0) {
		struct file_clone_range r = {.src_fd = in, .src_offset = 0, .src_length = left,
					     .dest_offset = (uint64_t)off_out};
		if (ioctl(out, FICLONERANGE, &r) == 0) {
			*shared = true;
			return 0;
		}
	}
	while (left) {
		ssize_t n = copy_file_range(in, &off_in, out, &off_out, left, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return sl_error_sys(err, "copy disk chunk %llu (%s)", (unsigned long long)c->index, path);
		if (n == 0)
			return sl_error_set(err, SL_E_INTEGRITY, "disk chunk %llu (%s) is short", (unsigned long long)c->index,
					    path);
		left -= (uint64_t)n;
	}
	return 0;
}

int vmm_spore_disks(struct vmm_spore *sp, const struct vmm_restore_opts *opts, struct vmm_machine *m,
		    sl_error_t *err)
{
	for (size_t k = 0; k < sp->m.ndisks; k++) {
		const struct spore_disk *d = &sp->m.disks[k];
		if (sp->disk_fd[k] >= 0)
			continue;
		if (check_disk_chunks(sp->dirfd, d, opts, err) < 0)
			return sl_error_wrap(err, "%s: disk %zu", sp->dir, k);
		const char *where;
		int fd = disk_tmpfile(sp->dirfd, opts->disk_dir, &where, err);
		if (fd < 0)
			return -1;
		sp->disk_where = where;
		/* Zero chunks are holes: the file is sparse where the disk was. */
		if (ftruncate(fd, (off_t)d->size) < 0) {
			close(fd);
			return sl_error_sys(err, "disk %zu: size a private copy in %s", k, where);
		}
		for (size_t i = 0; i < d->nchunks; i++) {
			bool shared;
			uint64_t off = d->chunks[i].index * VMM_CHUNK_SIZE;
			uint64_t len = d->size - off < VMM_CHUNK_SIZE ? d->size - off : VMM_CHUNK_SIZE;
			if (copy_chunk(sp->dirfd, &d->chunks[i], fd, d->size, &shared, err) < 0) {
				close(fd);
				return sl_error_wrap(err, "%s: disk %zu", sp->dir, k);
			}
			*(shared ? &sp->disk_shared : &sp->disk_copied) += len;
		}
		sp->disk_fd[k] = fd;
	}
	vmm_spore_shape(sp, m);
	return 0;
}

int vmm_spore_verify(struct vmm_spore *sp, const struct vmm_restore_opts *opts, struct vmm_restore_stats *st,
		     sl_error_t *err)
{
	if (st)
		memset(st, 0, sizeof(*st));
	uint64_t t0 = vmm_now_ns();
	if (check_chunks(NULL, sp->dirfd, &sp->m, opts, st, err) < 0)
		return sl_error_wrap(err, "verify %s", sp->dir);
	for (size_t k = 0; k < sp->m.ndisks; k++)
		if (check_disk_chunks(sp->dirfd, &sp->m.disks[k], opts, err) < 0)
			return sl_error_wrap(err, "verify %s: disk %zu", sp->dir, k);
	if (st) {
		st->chunks = sp->m.nchunks;
		st->chunks_ns = vmm_now_ns() - t0;
	}
	return 0;
}

/* The devices the VM was created with must be the spore's: the guest's
 * drivers hold state about each of them. */
static int check_shape(struct vmm_vm *vm, const struct vmm_spore *sp, sl_error_t *err)
{
	const struct spore_manifest *m = &sp->m;
	const struct vmm_machine *vmm = &vm->machine;
	bool linux_spore = m->platform == SPORE_PLATFORM_LINUX;
	if (linux_spore != (vmm->platform == VMM_PLATFORM_LINUX))
		return sl_error_set(err, SL_E_INVALID, "spore is for the %s platform, this VM is %s",
				    linux_spore ? "Linux" : "bare", linux_spore ? "bare" : "Linux");
	if (m->vsock_cid != vmm->vsock_cid)
		return sl_error_set(err, SL_E_INVALID, "spore has vsock CID %u, this VM %u", m->vsock_cid,
				    vmm->vsock_cid);
	if (m->ndisks != vmm_linux_ndisks(vm))
		return sl_error_set(err, SL_E_INVALID, "spore has %zu disks, this VM %u", m->ndisks, vmm_linux_ndisks(vm));
	for (unsigned i = 0; i < m->ndisks; i++) {
		struct stat st;
		int fd = vmm_linux_disk_fd(vm, i);
		if (m->disks[i].read_only != vmm->disks[i].read_only)
			return sl_error_set(err, SL_E_INVALID, "disk %u: spore has it %s, this VM %s", i,
					    m->disks[i].read_only ? "read-only" : "writable",
					    vmm->disks[i].read_only ? "read-only" : "writable");
		if (fd < 0 || fstat(fd, &st) < 0 || (uint64_t)st.st_size != m->disks[i].size)
			return sl_error_set(err, SL_E_INVALID, "disk %u: the VM's image is not the spore's (%llu bytes)", i,
					    (unsigned long long)m->disks[i].size);
	}
	return 0;
}

static int restore(struct vmm_vm *vm, struct vmm_spore *sp, const struct vmm_restore_opts *opts,
		   struct vmm_restore_stats *st, sl_error_t *err)
{
	uint64_t t0 = vmm_now_ns();
	const struct spore_manifest *m = &sp->m;
	int rc = -1;
	_cleanup_free_ char *vmbuf = NULL;
	char *vcbuf[VMM_MAX_VCPUS] = {0};
	size_t vmlen, vclen[VMM_MAX_VCPUS];
	if (m->vcpus != vm->machine.vcpus || m->mem_mib != vm->machine.mem_mib) {
		sl_error_set(err, SL_E_INVALID, "spore needs %u vcpus and %llu MiB, this VM has %u and %llu",
			     m->vcpus, (unsigned long long)m->mem_mib, vm->machine.vcpus,
			     (unsigned long long)vm->machine.mem_mib);
		goto out;
	}
	if (check_shape(vm, sp, err) < 0)
		goto out;
	if (check_caps(vm->kvm_fd, m, err) < 0 || read_state(sp->dirfd, &m->vm_state, &vmbuf, &vmlen, err) < 0)
		goto out;
	for (unsigned i = 0; i < m->vcpus; i++)
		if (read_state(sp->dirfd, &m->vcpu_state[i], &vcbuf[i], &vclen[i], err) < 0)
			goto out;
	if (vmm_vm_load_cpuid(vm, (uint8_t *)vmbuf, vmlen, m->vm_state.path, err) < 0)
		goto out;
	uint64_t t_files = vmm_now_ns();
	if (load_chunks(vm, sp->dirfd, m, opts, st, err) < 0)
		goto out;
	uint64_t t1 = vmm_now_ns();
	if (vmm_vm_load(vm, (uint8_t *)vmbuf, vmlen, m->vm_state.path, err) < 0)
		goto out;
	for (unsigned i = 0; i < m->vcpus; i++)
		if (vmm_vcpu_load(vm, &vm->vcpus[i], (uint8_t *)vcbuf[i], vclen[i], m->vcpu_state[i].path, err) < 0)
			goto out;
	/* A restored guest is a new instance: it must never see an id it (or
	 * a sibling) already had. */
	if (vmm_spore_dev_new_generation(vm, err) < 0)
		goto out;
	vmm_linux_publish_generation(vm, true);
	if (vmm_linux_restored(vm, err) < 0)
		goto out;
	vm->restored = true;
	sl_digest_format(&sp->digest, vm->parent_manifest_digest);
	snprintf(vm->spore_gen_id, sizeof(vm->spore_gen_id), "%s", m->gen_id);
	vm->depth = m->depth;
	if (st) {
		st->manifest_ns = sp->open_ns;
		st->files_ns = t_files - t0;
		st->chunks_ns = t1 - t_files;
		st->load_ns = vmm_now_ns() - t1;
		st->chunks = m->nchunks;
		st->zero_chunks = vm->nchunks - m->nchunks;
	}
	rc = 0;
out:
	for (unsigned i = 0; i < VMM_MAX_VCPUS; i++)
		free(vcbuf[i]);
	return rc;
}

int vmm_restore(struct vmm_vm *vm, struct vmm_spore *sp, const struct vmm_restore_opts *opts,
		struct vmm_restore_stats *st, sl_error_t *err)
{
	if (vm->started || vm->restored)
		return sl_error_set(err, SL_E_INVALID, "restore needs a fresh VM");
	if (st) {
		memset(st, 0, sizeof(*st));
		st->disk_bytes_shared = sp->disk_shared;
		st->disk_bytes_copied = sp->disk_copied;
		st->disk_where = sp->disk_where;
	}
	int dirfd = fcntl(sp->dirfd, F_DUPFD_CLOEXEC, 0);
	if (dirfd < 0)
		return sl_error_sys(err, "dup spore directory fd");
	char *path = strdup(sp->dir);
	if (!path) {
		close(dirfd);
		return sl_error_set(err, SL_E_NOMEM, "spore path");
	}
	if (restore(vm, sp, opts, st, err) < 0) {
		close(dirfd);
		free(path);
		return sl_error_wrap(err, "restore %s", sp->dir);
	}
	vm->src_path = path;
	vm->src_dirfd = dirfd;
	vm->src_dirfd_valid = true;
	return 0;
}

int vmm_reopen_source(struct vmm_vm *vm, sl_error_t *err)
{
	if (!vm->src_dirfd_valid)
		return 0;
	int fd = open(vm->src_path, O_DIRECTORY | O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return sl_error_sys(err, "reopen the spore directory %s", vm->src_path);
	/* The same number: nothing else holds the old one. */
	if (dup3(fd, vm->src_dirfd, O_CLOEXEC) < 0) {
		int e = errno;
		close(fd);
		return sl_error_errno(err, e, "reopen the spore directory %s", vm->src_path);
	}
	close(fd);
	return 0;
}

const char *vmm_source_path(const struct vmm_vm *vm)
{
	return vm->src_dirfd_valid ? vm->src_path : NULL;
}
