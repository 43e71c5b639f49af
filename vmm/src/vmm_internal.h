/* Private machine context shared by the VMM's modules (not installed). */
#ifndef VMM_INTERNAL_H
#define VMM_INTERNAL_H

#include <linux/kvm.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include "sl/digest.h"
#include "sl/error.h"
#include "vmm.h"

/* ---- guest physical layout (see docs/testguest.md) ---- */
#define VMM_GDT_GPA 0x500ull
#define VMM_BOOTINFO_GPA 0x6000ull
#define VMM_PML4_GPA 0x9000ull
#define VMM_PDPT_GPA 0xa000ull
#define VMM_PD_GPA 0xb000ull
#define VMM_CMDLINE_GPA 0x10000ull
#define VMM_CMDLINE_MAX 4096u
#define VMM_LOW_RESERVED 0x100000ull /* kernels load at or above 1 MiB */

/* ---- port I/O bus: devices register a range and handlers ---- */
struct vmm_vm;
struct vmm_pio_ops {
	/* size is 1, 2 or 4; data is little-endian, `size` bytes */
	void (*in)(struct vmm_vm *vm, void *dev, uint16_t port, uint8_t *data, unsigned size);
	void (*out)(struct vmm_vm *vm, void *dev, uint16_t port, const uint8_t *data, unsigned size);
};
struct vmm_pio_range {
	uint16_t base, len;
	const struct vmm_pio_ops *ops;
	void *dev;
};
#define VMM_PIO_MAX 8

/* ---- MMIO bus: the same for guest-physical ranges above RAM ---- */
struct vmm_mmio_ops {
	/* size is 1, 2, 4 or 8; data little-endian; off from the range base */
	void (*read)(struct vmm_vm *vm, void *dev, uint64_t off, uint8_t *data, unsigned size);
	void (*write)(struct vmm_vm *vm, void *dev, uint64_t off, const uint8_t *data, unsigned size);
};
struct vmm_mmio_range {
	uint64_t base, len;
	const struct vmm_mmio_ops *ops;
	void *dev;
};
#define VMM_MMIO_MAX 16

/* ---- devices ---- */
struct vmm_serial {
	pthread_mutex_t lock;
	uint8_t ier, lcr, mcr, scr, dll, dlm, fcr;
	int out_fd;
	char prefix[64];
	size_t prefix_len;
	char line[512];
	size_t line_len;
	bool output_seen; /* first byte since start/restore was reported */
	bool thri;        /* a transmitter-empty interrupt is pending */
};

struct vmm_spore_dev {
	uint32_t gen_lo;
	uint64_t gen_gpa; /* 0: not registered */
	uint64_t counter;
	uint8_t id[16];
};

/* ---- vCPU ---- */
enum { VCPU_RUN = 0, VCPU_PAUSE, VCPU_EXIT };

struct vmm_vcpu {
	struct vmm_vm *vm;
	unsigned index;
	int fd;
	struct kvm_run *run;
	size_t run_size;
	pthread_t thread;
	bool thread_started;
	bool parked; /* protected by vm->lock */
};

/* ---- events ---- */
#define VMM_EVQ 16

struct vmm_vm {
	struct vmm_machine machine;
	int kvm_fd;
	int vm_fd;

	/* guest RAM: [mem, mem + mem_size) is guest physical [0, mem_size) */
	uint8_t *mem;
	uint64_t mem_size;
	uint64_t nchunks;
	/* Per chunk: the digest it was restored from (valid if chunk_from_file),
	 * used by incremental capture to skip unchanged chunks. */
	sl_digest *chunk_digest;
	uint8_t *chunk_state; /* enum vmm_chunk_state */

	struct kvm_cpuid2 *cpuid; /* normalised, vCPU 0's view */
	uint32_t tsc_khz;

	struct vmm_vcpu vcpus[VMM_MAX_VCPUS];

	struct vmm_pio_range pio[VMM_PIO_MAX];
	unsigned npio;
	struct vmm_mmio_range mmio[VMM_MMIO_MAX];
	unsigned nmmio;
	struct vmm_serial serial;
	struct vmm_spore_dev sdev;
	struct vmm_linux *lnx; /* platform devices (platform_linux.c); NULL on a bare machine without vsock */

	/* run control */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	_Atomic int run_state; /* VCPU_RUN / VCPU_PAUSE / VCPU_EXIT */
	unsigned parked;
	bool started;

	/* event queue, signalled through event_fd (eventfd) */
	int event_fd;
	struct vmm_event evq[VMM_EVQ];
	unsigned evq_head, evq_len;

	/* lineage of the running state, recorded by capture */
	bool restored;
	int src_dirfd; /* the spore restored from (chunk reuse on capture) */
	bool src_dirfd_valid;
	char *src_path; /* its path, for vmm_reopen_source */
	int pagemap_fd; /* /proc/self/pagemap held open (vmm_hold_host_files), or -1 */
	char parent_manifest_digest[SL_DIGEST_STRLEN];
	char spore_gen_id[33];
	uint64_t depth;
};

enum vmm_chunk_state {
	VMM_CHUNK_ANON = 0, /* anonymous memory (zero at restore or boot) */
	VMM_CHUNK_FILE = 1, /* mapped MAP_PRIVATE from a verified chunk file */
};

/* kvm.c */
int vmm_kvm_open(int *kvm_fd, sl_error_t *err);
int vmm_kvm_check_caps(int kvm_fd, sl_error_t *err);
int vmm_kvm_create_vm(struct vmm_vm *vm, sl_error_t *err);
int vmm_kvm_set_memory(struct vmm_vm *vm, sl_error_t *err);
/* In-kernel irqchip and PIT2; after the RAM slot (see vmm_create). */
int vmm_kvm_create_irqchip(struct vmm_vm *vm, sl_error_t *err);
extern const struct vmm_kvm_cap {
	int cap;
	const char *name;
} vmm_required_caps[];
extern const unsigned vmm_required_ncaps;

/* seal.c: what identifies one version of a chunk file's bytes */
struct vmm_seal_id {
	uint32_t mode;
	uint32_t dev_major, dev_minor;
	uint64_t ino;
	uint64_t size;
	uint32_t uid;
	uint32_t generation;
	struct statx_timestamp mtime, btime;
};
/* Opens (creating it 0700 if missing) a seal directory, refusing one that
 * another user owns or can write. */
int vmm_seal_open(const char *dir, int *out_fd, sl_error_t *err);
int vmm_seal_stat(int fd, struct vmm_seal_id *id, sl_error_t *err);
/* True if this exact inode version was sealed as matching d (and its
 * owner is one whose mtime we trust). */
bool vmm_seal_check(int seal_fd, const struct vmm_seal_id *id, const sl_digest *d);
/* Best effort: seals an inode version that just matched d. */
bool vmm_seal_record(int seal_fd, const struct vmm_seal_id *id, const sl_digest *d);

/* memory.c */
#define VMM_RAM_VMA_NAME "spore-guest-ram"
int vmm_mem_alloc(struct vmm_vm *vm, sl_error_t *err);
void vmm_mem_free(struct vmm_vm *vm);
void *vmm_gpa(struct vmm_vm *vm, uint64_t gpa, uint64_t len); /* NULL if out of range */
bool vmm_chunk_is_zero(const uint8_t *p);
/* Marks which chunks were written since they were mapped from files
 * (private copy-on-write pages), via /proc/self/pagemap. */
int vmm_mem_dirty_chunks(struct vmm_vm *vm, uint8_t *dirty, sl_error_t *err);

/* cpuid.c */
int vmm_cpuid_normalise(struct vmm_vm *vm, sl_error_t *err);
int vmm_cpuid_set_vcpu(struct vmm_vm *vm, struct vmm_vcpu *v, sl_error_t *err);
int vmm_cpuid_check_host(int kvm_fd, const struct kvm_cpuid2 *want, sl_error_t *err);
void vmm_cpuid_feature_names(const struct kvm_cpuid2 *c, void (*cb)(const char *name, void *arg), void *arg);
const char *vmm_cpuid_vendor(const struct kvm_cpuid2 *c, char out[13]);

/* msr.c */
int vmm_msr_list(struct vmm_vm *vm, struct vmm_vcpu *probe, const uint32_t **list,
		 unsigned *n, sl_error_t *err);

/* vcpu.c */
int vmm_vcpu_create(struct vmm_vm *vm, unsigned index, sl_error_t *err);
void vmm_vcpu_destroy(struct vmm_vcpu *v);
int vmm_vcpu_start_thread(struct vmm_vcpu *v, sl_error_t *err);
void vmm_vcpu_kick(struct vmm_vcpu *v);

/* mmio.c: ranges must not overlap RAM or each other; exits dispatch here.
 * Unclaimed addresses read as all ones and ignore writes. */
int vmm_mmio_register(struct vmm_vm *vm, uint64_t base, uint64_t len, const struct vmm_mmio_ops *ops, void *dev,
		      sl_error_t *err);
void vmm_mmio_dispatch(struct vmm_vm *vm, struct kvm_run *run);
/* Raises (level 1) or lowers a GSI of the in-kernel IOAPIC. */
int vmm_irq_line(struct vmm_vm *vm, uint32_t gsi, int level, sl_error_t *err);

/* pio.c */
int vmm_pio_register(struct vmm_vm *vm, uint16_t base, uint16_t len,
		     const struct vmm_pio_ops *ops, void *dev, sl_error_t *err);
void vmm_pio_dispatch(struct vmm_vm *vm, struct kvm_run *run);

/* serial.c, spore_dev.c */
int vmm_serial_init(struct vmm_vm *vm, const struct vmm_console *con, sl_error_t *err);
void vmm_serial_flush(struct vmm_vm *vm);
int vmm_spore_dev_init(struct vmm_vm *vm, sl_error_t *err);
/* Writes the generation buffer into guest memory (if registered). */
void vmm_spore_dev_publish(struct vmm_vm *vm);
/* Starts a new generation: counter + 1, a fresh random id. */
int vmm_spore_dev_new_generation(struct vmm_vm *vm, sl_error_t *err);

/* boot_elf.c: everything but the vCPUs, from an ELF image already in memory
 * (name only for messages): every PT_LOAD segment into RAM at or above
 * VMM_LOW_RESERVED, then the GDT, page tables, command line and boot
 * information below it; *entry is the ELF entry point. vmm_boot_elf reads
 * the file (at most 64 MiB), calls this, then sets up the vCPUs. */
int vmm_boot_elf_load(struct vmm_vm *vm, const uint8_t *img, size_t len, const char *name, const char *cmdline,
		      uint64_t *entry, sl_error_t *err);

/* vm.c */
void vmm_post_event(struct vmm_vm *vm, int kind, int code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
uint64_t vmm_now_ns(void);

#endif
