/* Guest RAM: allocation, chunk geometry, zero and dirty detection. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>

#include "sl/file.h"
#include "vmm_internal.h"

int vmm_mem_alloc(struct vmm_vm *vm, sl_error_t *err)
{
	vm->mem_size = vm->machine.mem_mib << 20;
	vm->nchunks = vm->mem_size / VMM_CHUNK_SIZE;
	/* Reserve an extra chunk so the base can be aligned to 2 MiB: chunk
	 * files are then mapped on chunk boundaries of the host mapping too. */
	size_t span = vm->mem_size + VMM_CHUNK_SIZE;
	uint8_t *raw = mmap(NULL, span, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (raw == MAP_FAILED)
		return sl_error_sys(err, "reserve %llu MiB of guest RAM",
				    (unsigned long long)vm->machine.mem_mib);
	uintptr_t base = ((uintptr_t)raw + VMM_CHUNK_SIZE - 1) & ~((uintptr_t)VMM_CHUNK_SIZE - 1);
	if (base > (uintptr_t)raw)
		munmap(raw, base - (uintptr_t)raw);
	uintptr_t end = (uintptr_t)raw + span;
	if (end > base + vm->mem_size)
		munmap((void *)(base + vm->mem_size), end - (base + vm->mem_size));
	vm->mem = (uint8_t *)base;
	void *p = mmap(vm->mem, vm->mem_size, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0);
	if (p == MAP_FAILED)
		return sl_error_sys(err, "map guest RAM");
	/* Huge pages would turn a child's first write into a private 2 MiB copy;
	 * 4 KiB copy-on-write keeps forked children small. */
	madvise(vm->mem, vm->mem_size, MADV_NOHUGEPAGE);
	madvise(vm->mem, vm->mem_size, MADV_DONTFORK);
	/* Named, so memory accounting can tell guest pages from the VMM's own
	 * (vmm_private_mem); kernels without CONFIG_ANON_VMA_NAME refuse, and
	 * then guest pages written into zero chunks count as the VMM's. */
	prctl(PR_SET_VMA, PR_SET_VMA_ANON_NAME, (unsigned long)vm->mem, vm->mem_size,
	      (unsigned long)VMM_RAM_VMA_NAME);
	vm->chunk_digest = calloc(vm->nchunks, sizeof(*vm->chunk_digest));
	vm->chunk_state = calloc(vm->nchunks, 1);
	if (!vm->chunk_digest || !vm->chunk_state)
		return sl_error_set(err, SL_E_NOMEM, "chunk table for %llu chunks",
				    (unsigned long long)vm->nchunks);
	return 0;
}

void vmm_mem_free(struct vmm_vm *vm)
{
	if (vm->mem)
		munmap(vm->mem, vm->mem_size);
	vm->mem = NULL;
	free(vm->chunk_digest);
	free(vm->chunk_state);
	vm->chunk_digest = NULL;
	vm->chunk_state = NULL;
}

void *vmm_gpa(struct vmm_vm *vm, uint64_t gpa, uint64_t len)
{
	if (gpa > vm->mem_size || len > vm->mem_size - gpa)
		return NULL;
	return vm->mem + gpa;
}

bool vmm_chunk_is_zero(const uint8_t *p)
{
	const uint64_t *w = (const uint64_t *)p;
	/* OR in blocks so the loop vectorises and exits early on data. */
	for (size_t i = 0; i < VMM_CHUNK_SIZE / 8; i += 64) {
		uint64_t acc = 0;
		for (size_t j = 0; j < 64; j++)
			acc |= w[i + j];
		if (acc)
			return false;
	}
	return true;
}

#define PM_PRESENT (1ull << 63)
#define PM_SWAPPED (1ull << 62)
#define PM_FILE (1ull << 61)

int vmm_mem_dirty_chunks(struct vmm_vm *vm, uint8_t *dirty, sl_error_t *err)
{
	_cleanup_close_ int own = -1;
	int fd = vm->pagemap_fd;
	if (fd < 0 && (fd = own = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC)) < 0)
		return sl_error_sys(err, "open /proc/self/pagemap");
	const size_t pages = VMM_CHUNK_SIZE / 4096;
	_cleanup_free_ uint64_t *pm = malloc(pages * sizeof(uint64_t));
	if (!pm)
		return sl_error_set(err, SL_E_NOMEM, "pagemap buffer");
	for (uint64_t c = 0; c < vm->nchunks; c++) {
		off_t off = (off_t)(((uintptr_t)vm->mem + c * VMM_CHUNK_SIZE) / 4096 * 8);
		if (sl_pread_all(fd, pm, pages * sizeof(uint64_t), off, err) < 0)
			return sl_error_wrap(err, "read /proc/self/pagemap");
		/* A file-backed chunk is dirty once any page became a private
		 * anonymous copy; an anonymous chunk once any page is populated
		 * (it may still be all zero; the caller checks). */
		bool d = false;
		for (size_t i = 0; i < pages && !d; i++) {
			uint64_t e = pm[i];
			if (!(e & (PM_PRESENT | PM_SWAPPED)))
				continue;
			if (vm->chunk_state[c] == VMM_CHUNK_FILE)
				d = !(e & PM_FILE);
			else
				d = true;
		}
		dirty[c] = d;
	}
	return 0;
}

/* smaps names of guest RAM: the anonymous reservation (named at
 * allocation) and every chunk file mapped over it. */
static bool is_guest_ram(const char *name)
{
	return strcmp(name, "[anon:" VMM_RAM_VMA_NAME "]") == 0 || strstr(name, "/chunks/sha256/") != NULL;
}

int vmm_private_mem(int pid, struct vmm_private_mem *out, sl_error_t *err)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/smaps", pid);
	_cleanup_free_ char *buf = NULL;
	size_t len;
	if (sl_read_path(path, 64 << 20, &buf, &len, err) < 0)
		return -1;
	out->total_kib = out->guest_kib = 0;
	bool guest = false;
	for (char *line = buf; line && *line;) {
		char *nl = strchr(line, '\n');
		if (nl)
			*nl = '\0';
		unsigned long long v, lo, hi;
		int name_at = -1;
		/* "lo-hi perms offset dev inode [name]": a new mapping starts. */
		if (sscanf(line, "%llx-%llx %*s %*s %*s %*s %n", &lo, &hi, &name_at) == 2 && name_at > 0) {
			guest = is_guest_ram(line + name_at);
		} else if (sscanf(line, "Anonymous: %llu kB", &v) == 1) {
			out->total_kib += v;
			if (guest)
				out->guest_kib += v;
		}
		line = nl ? nl + 1 : NULL;
	}
	return 0;
}

int vmm_hold_host_files(struct vmm_vm *vm, sl_error_t *err)
{
	if (vm->pagemap_fd >= 0)
		return 0;
	vm->pagemap_fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (vm->pagemap_fd < 0)
		return sl_error_sys(err, "open /proc/self/pagemap");
	return 0;
}
