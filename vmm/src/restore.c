/* Restore: verify a spore, map its chunks MAP_PRIVATE, load state, new generation. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "sl/file.h"
#include "sl/spore_manifest.h"
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

/* Maps one chunk file over its slot of guest RAM and verifies the bytes
 * through that mapping, so the check reads exactly what the guest will see
 * and warms the page cache the guest then uses. */
static int map_chunk(struct vmm_vm *vm, int dirfd, const struct spore_chunk *c, sl_error_t *err)
{
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
	struct stat st;
	if (fstat(fd, &st) < 0) {
		close(fd);
		return sl_error_sys(err, "stat %s", path);
	}
	if (!S_ISREG(st.st_mode) || st.st_size != VMM_CHUNK_SIZE) {
		close(fd);
		return sl_error_set(err, SL_E_INTEGRITY, "chunk %llu (%s): %s is %lld bytes, want %u",
				    (unsigned long long)c->index, want, path, (long long)st.st_size, VMM_CHUNK_SIZE);
	}
	uint8_t *slot = vm->mem + c->index * VMM_CHUNK_SIZE;
	void *p = mmap(slot, VMM_CHUNK_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED | MAP_NORESERVE, fd, 0);
	close(fd);
	if (p == MAP_FAILED)
		return sl_error_sys(err, "map chunk %llu", (unsigned long long)c->index);
	madvise(slot, VMM_CHUNK_SIZE, MADV_NOHUGEPAGE);
	sl_digest got;
	sl_sha256(slot, VMM_CHUNK_SIZE, &got);
	if (!sl_digest_equal(&got, &c->digest)) {
		char g[SL_DIGEST_STRLEN];
		sl_digest_format(&got, g);
		return sl_error_set(err, SL_E_INTEGRITY, "chunk %llu does not match its digest: want %s, got %s (%s)",
				    (unsigned long long)c->index, want, g, path);
	}
	vm->chunk_state[c->index] = VMM_CHUNK_FILE;
	vm->chunk_digest[c->index] = c->digest;
	return 0;
}

int vmm_spore_machine(const char *spore_dir, struct vmm_machine *mach, sl_error_t *err)
{
	_cleanup_close_ int dirfd = open(spore_dir, O_DIRECTORY | O_RDONLY | O_CLOEXEC);
	if (dirfd < 0)
		return sl_error_sys(err, "open spore %s", spore_dir);
	struct spore_manifest m;
	if (spore_manifest_load(dirfd, &m, NULL, err) < 0)
		return sl_error_wrap(err, "%s", spore_dir);
	mach->vcpus = m.vcpus;
	mach->mem_mib = m.mem_mib;
	spore_manifest_free(&m);
	return 0;
}

static int restore(struct vmm_vm *vm, int dirfd, struct vmm_restore_stats *st, sl_error_t *err)
{
	uint64_t t0 = vmm_now_ns();
	struct spore_manifest m;
	sl_digest mdig;
	if (spore_manifest_load(dirfd, &m, &mdig, err) < 0)
		return -1;
	int rc = -1;
	_cleanup_free_ char *vmbuf = NULL;
	char *vcbuf[VMM_MAX_VCPUS] = {0};
	size_t vmlen, vclen[VMM_MAX_VCPUS];
	if (m.vcpus != vm->machine.vcpus || m.mem_mib != vm->machine.mem_mib) {
		sl_error_set(err, SL_E_INVALID, "spore needs %u vcpus and %llu MiB, this VM has %u and %llu",
			     m.vcpus, (unsigned long long)m.mem_mib, vm->machine.vcpus,
			     (unsigned long long)vm->machine.mem_mib);
		goto out;
	}
	if (check_caps(vm->kvm_fd, &m, err) < 0 || read_state(dirfd, &m.vm_state, &vmbuf, &vmlen, err) < 0)
		goto out;
	for (unsigned i = 0; i < m.vcpus; i++)
		if (read_state(dirfd, &m.vcpu_state[i], &vcbuf[i], &vclen[i], err) < 0)
			goto out;
	/* The CPUID the guest booted with, checked against this host. */
	if (vmm_vm_load_cpuid(vm, (uint8_t *)vmbuf, vmlen, m.vm_state.path, err) < 0)
		goto out;
	for (size_t i = 0; i < m.nchunks; i++)
		if (map_chunk(vm, dirfd, &m.chunks[i], err) < 0)
			goto out;
	uint64_t t1 = vmm_now_ns();
	if (vmm_slot_join(vm, err) < 0)
		goto out;
	if (vmm_vm_load(vm, (uint8_t *)vmbuf, vmlen, m.vm_state.path, err) < 0)
		goto out;
	for (unsigned i = 0; i < m.vcpus; i++)
		if (vmm_vcpu_load(vm, &vm->vcpus[i], (uint8_t *)vcbuf[i], vclen[i], m.vcpu_state[i].path, err) < 0)
			goto out;
	/* A restored guest is a new instance: it must never see an id it (or
	 * a sibling) already had. */
	if (vmm_spore_dev_new_generation(vm, err) < 0)
		goto out;
	vm->restored = true;
	sl_digest_format(&mdig, vm->parent_manifest_digest);
	snprintf(vm->spore_gen_id, sizeof(vm->spore_gen_id), "%s", m.gen_id);
	vm->depth = m.depth;
	if (st) {
		st->verify_ns = t1 - t0;
		st->map_ns = 0;
		st->state_ns = vmm_now_ns() - t1;
		st->chunks = m.nchunks;
		st->zero_chunks = vm->nchunks - m.nchunks;
	}
	rc = 0;
out:
	for (unsigned i = 0; i < VMM_MAX_VCPUS; i++)
		free(vcbuf[i]);
	spore_manifest_free(&m);
	return rc;
}

int vmm_restore(struct vmm_vm *vm, const char *spore_dir, struct vmm_restore_stats *st, sl_error_t *err)
{
	if (vm->started || vm->restored)
		return sl_error_set(err, SL_E_INVALID, "restore needs a fresh VM");
	int dirfd = open(spore_dir, O_DIRECTORY | O_RDONLY | O_CLOEXEC);
	if (dirfd < 0)
		return sl_error_sys(err, "open spore %s", spore_dir);
	if (restore(vm, dirfd, st, err) < 0) {
		close(dirfd);
		return sl_error_wrap(err, "restore %s", spore_dir);
	}
	vm->src_dirfd = dirfd;
	vm->src_dirfd_valid = true;
	return 0;
}
