/* Public interface of the spore VMM library: create, boot or restore, run,
 * pause, capture and stop one KVM virtual machine. */
#ifndef VMM_H
#define VMM_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include "sl/error.h"

#define VMM_MAX_VCPUS 16
#define VMM_CHUNK_SIZE (2u << 20) /* memory chunk size: 2 MiB */
/* RAM stays below the 32-bit MMIO hole (LAPIC, IOAPIC, KVM TSS). */
#define VMM_MAX_MEM_MIB 3072u

struct vmm_vm;

/* What the guest runs on. */
enum vmm_platform {
	VMM_PLATFORM_BARE = 0, /* serial + spore device: ELF kernels (the test guest) */
	VMM_PLATFORM_LINUX,    /* + ACPI, power-off port, VMGenID, virtio-mmio rng/vsock/blk */
};

#define VMM_MAX_DISKS 8
struct vmm_disk {
	const char *path; /* raw image (regular file or block device) */
	bool read_only;
	/* With have_fd, the VM uses (a duplicate of) this open image and path
	 * only names it in messages: a restore's private disk copies. */
	bool have_fd;
	int fd;
};

/* What the machine looks like; fixed for its lifetime. */
struct vmm_machine {
	uint64_t mem_mib; /* guest RAM, a multiple of 2 */
	unsigned vcpus;   /* 1..VMM_MAX_VCPUS */
	enum vmm_platform platform;
	/* vsock: either platform (the bare test guest gets only this device) */
	uint32_t vsock_cid;     /* 0: no vsock device; else the guest's CID (>= 3) */
	const char *vsock_path; /* the vsock device's host Unix socket (docs/vsock.md) */
	/* Linux platform only: */
	unsigned ndisks;        /* virtio-blk disks, /dev/vda, vdb, ... in order */
	struct vmm_disk disks[VMM_MAX_DISKS];
	/* Boot only: describe the virtio devices with virtio_mmio.device= words
	 * on the kernel command line instead of in the DSDT, for kernels built
	 * with CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES (Debian's is not). */
	bool virtio_cmdline;
};

/* Security notices from the VMM's device threads, for the program's log
 * (the library itself never prints). Today: a client of a VM's vsock
 * socket refused for its uid; msg reads "vsock: refused peer uid U" (plus
 * how many more were refused in the second before, if any), path is the
 * socket. Called on the device's thread with its lock held, so the hook
 * must only log. Set once, before vmm_create; NULL drops them. */
typedef void (*vmm_notice_fn)(const char *msg, const char *path);
void vmm_set_notice(vmm_notice_fn fn);

/* Which platform a kernel file needs: an ELF file boots on the bare
 * machine, a bzImage on the Linux platform. */
int vmm_kernel_platform(const char *kernel_path, enum vmm_platform *out, sl_error_t *err);

/* Where guest output goes. */
struct vmm_console {
	int fd;             /* serial output; -1 discards it */
	const char *prefix; /* printed before every line, or NULL */
};

enum vmm_event_kind {
	VMM_EV_NONE = 0,
	VMM_EV_EXIT,     /* the guest asked to stop; code = its exit status */
	VMM_EV_READY,    /* the guest signalled readiness (spore device READY) */
	VMM_EV_SHUTDOWN, /* triple fault or reset: the guest died */
	VMM_EV_ERROR,    /* a vCPU failed; msg says why */
	VMM_EV_OUTPUT,   /* first serial byte since start/restore (timing aid) */
};

struct vmm_event {
	int kind;
	int code;
	char msg[256];
};

/* Timing of the last restore, in nanoseconds, for benchmarks and logs. */
struct vmm_restore_stats {
	uint64_t manifest_ns; /* manifest read, parsed and checked */
	uint64_t files_ns;    /* state files read and verified, CPUID contract */
	uint64_t chunks_ns;   /* chunks mapped and verified */
	uint64_t load_ns;     /* memory slot ready, VM and vCPU state loaded */
	uint64_t chunks;        /* chunk files mapped */
	uint64_t chunks_hashed; /* of which hashed now */
	uint64_t chunks_sealed; /* of which vouched for by a seal */
	uint64_t zero_chunks;
	uint64_t disk_bytes_shared; /* disk chunks reflinked into the VM's private disks (vmm_spore_disks) */
	uint64_t disk_bytes_copied; /* ... and copied where the filesystem cannot share */
	const char *disk_where;     /* the directory that holds them (the spore's, or opts->disk_dir, ...) */
};

/* A spore directory opened for restore; its manifest is read and checked
 * once, for both the machine shape and the restore. */
struct vmm_spore;
int vmm_spore_open(const char *spore_dir, struct vmm_spore **out, sl_error_t *err);
void vmm_spore_close(struct vmm_spore *sp);
/* The machine shape the spore needs: size, platform, vsock CID, disks
 * (read-only flags; no images yet, see vmm_spore_disks). The caller
 * still chooses vsock_path. */
void vmm_spore_shape(const struct vmm_spore *sp, struct vmm_machine *m);


/* How restore makes sure chunk bytes match their digests. */
enum vmm_verify {
	/* Hash every chunk unless a seal in seal_dir shows this very inode,
	 * unchanged since (same size, mtime, birth time, generation; owned by
	 * us or root), matched the digest before. docs/spore-format.md,
	 * "Verification". */
	VMM_VERIFY_SEALED = 0,
	/* Hash every chunk; seals are still written, never trusted. */
	VMM_VERIFY_FULL,
};
struct vmm_restore_opts {
	enum vmm_verify verify;
	const char *seal_dir; /* NULL: no seals; every chunk is hashed */
	/* Where private disk copies go when the spore's directory takes no
	 * file (a read-only bind, as under spore-snapshotter); on the node
	 * cache's filesystem, so disk chunks are reflinked. NULL: $TMPDIR,
	 * /var/tmp, /tmp. */
	const char *disk_dir;
};

/* Gives the machine private, writable copies of the spore's disks as they
 * were at capture: unlinked temporary files (beside the spore when its
 * filesystem allows, so XFS and btrfs share extents; else in
 * opts->disk_dir, failing if that is set and takes no file; else in
 * $TMPDIR, /var/tmp or /tmp), filled from verified chunks. Each child's writes stay its
 * own. Sets m->disks[i].fd; the files belong to sp (vmm_spore_close
 * closes them; a VM keeps its own duplicates). */
int vmm_spore_disks(struct vmm_spore *sp, const struct vmm_restore_opts *opts, struct vmm_machine *m,
		    sl_error_t *err);

/* Creates the KVM VM with in-kernel irqchip and PIT, guest RAM, devices and
 * vCPUs (not yet running). */
int vmm_create(const struct vmm_machine *m, const struct vmm_console *con,
	       struct vmm_vm **out, sl_error_t *err);
void vmm_destroy(struct vmm_vm *vm);

/* Redirects guest output (before the VM starts): a pooled VMM learns where
 * its guest's console goes only when a restore request arrives. */
int vmm_set_console(struct vmm_vm *vm, const struct vmm_console *con, sl_error_t *err);

/* Loads an ELF kernel and sets up every vCPU at its entry (long mode). */
/* Boots kernel_path, an ELF kernel (vmm_boot_elf) or a Linux bzImage (the
 * 64-bit boot protocol, with ACPI tables describing the machine; initrd
 * optional; cmdline "" or NULL means the default, console=ttyS0 ...). */
int vmm_boot_kernel(struct vmm_vm *vm, const char *kernel_path, const char *initrd_path, const char *cmdline,
		    sl_error_t *err);
int vmm_boot_elf(struct vmm_vm *vm, const char *kernel_path, const char *cmdline,
		 sl_error_t *err);

/* Checks every chunk of a spore against its digest (or seal), as a restore
 * would, without a VM, sealing what it hashed: run once before resuming
 * many children that share the chunk files, so they need not each hash. */
int vmm_spore_verify(struct vmm_spore *sp, const struct vmm_restore_opts *opts,
		     struct vmm_restore_stats *stats, sl_error_t *err);

/* Restores the VM from an opened spore (maps chunks MAP_PRIVATE, verifies
 * them, loads state, gives the guest a new generation). The machine shape
 * must match the spore's (vmm_spore_shape). opts may be NULL (hash every
 * chunk, no seals). */
int vmm_restore(struct vmm_vm *vm, struct vmm_spore *sp, const struct vmm_restore_opts *opts,
		struct vmm_restore_stats *stats, sl_error_t *err);

/* Starts (or, after vmm_pause, continues) the vCPU threads. */
int vmm_start(struct vmm_vm *vm, sl_error_t *err);
/* Stops every vCPU at an instruction boundary with I/O completed. */
int vmm_pause(struct vmm_vm *vm, sl_error_t *err);
int vmm_resume(struct vmm_vm *vm, sl_error_t *err);

/* Writes the paused VM to out_dir as a spore (format v1). out_dir must not
 * exist; it is written to a temp directory and renamed into place. */
struct vmm_capture_stats {
	uint64_t total_ns;
	uint64_t chunks_written;   /* new chunk files */
	uint64_t chunks_reused;    /* unchanged since the restored parent */
	uint64_t zero_chunks;
	uint64_t bytes_hashed;
};
int vmm_capture(struct vmm_vm *vm, const char *out_dir,
		struct vmm_capture_stats *stats, sl_error_t *err);

/* For a VMM about to lose its view of the host's files (a jail's private
 * root): opens now what later calls would open by path (the pagemap a
 * capture reads to find dirty chunks). */
int vmm_hold_host_files(struct vmm_vm *vm, sl_error_t *err);
/* After a change of root: opens the restored spore's directory again by its
 * path, under the same descriptor number. The old descriptor reaches the
 * directory outside the new root, and ".." from it everything above. */
int vmm_reopen_source(struct vmm_vm *vm, sl_error_t *err);
/* The restored spore's directory as given to vmm_spore_open; NULL for a booted VM. */
const char *vmm_source_path(const struct vmm_vm *vm);

/* An fd that becomes readable when an event is queued. */
int vmm_event_fd(struct vmm_vm *vm);
/* Pops the next event; returns 0 with kind VMM_EV_NONE when none is queued. */
int vmm_next_event(struct vmm_vm *vm, struct vmm_event *ev);

/* The guest-visible generation (counter, 128-bit id as 32 hex digits). */
void vmm_generation(struct vmm_vm *vm, uint64_t *counter, char id_hex[33]);

/* Private memory of a VMM process: its anonymous pages (smaps), i.e. its
 * heap, stacks and every guest page the guest wrote. Clean pages mapped
 * from chunk files are page cache shared with every other child of the
 * spore (and counted once, by the cache), so they are not part of it.
 * guest_kib is the part inside guest RAM: the pages the guest wrote. */
struct vmm_private_mem {
	uint64_t total_kib;
	uint64_t guest_kib;
};
int vmm_private_mem(int pid, struct vmm_private_mem *out, sl_error_t *err);

const char *vmm_version(void);

#endif
