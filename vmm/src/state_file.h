/* Versioned tag-length-value container for vCPU and VM state files. */
#ifndef VMM_STATE_FILE_H
#define VMM_STATE_FILE_H

#include <stddef.h>
#include <stdint.h>
#include "sl/error.h"

#define SF_MAGIC 0x54535053u /* "SPST" little-endian */
#define SF_VERSION 1u
#define SF_MAX_SIZE (4u << 20)
#define SF_MAX_SECTIONS 64u

enum sf_kind { SF_KIND_VCPU = 1, SF_KIND_VM = 2 };

/* Section tags (docs/spore-format.md lists each payload's layout). */
enum sf_tag {
	/* vCPU */
	SF_REGS = 1, SF_SREGS, SF_XSAVE, SF_XCRS, SF_LAPIC, SF_MSRS, SF_MP_STATE,
	SF_EVENTS, SF_DEBUGREGS, SF_TSC_KHZ,
	/* VM */
	SF_PIC_MASTER = 32, SF_PIC_SLAVE, SF_IOAPIC, SF_PIT2, SF_CLOCK, SF_CPUID,
	SF_SERIAL = 48, SF_SPORE_DEV, SF_PLATFORM,
	/* one per virtio device slot of the Linux platform */
	SF_VIRTIO_FIRST = 64, SF_VIRTIO_LAST = 79,
};

struct sf_writer {
	uint8_t *buf;
	size_t len, cap;
	uint32_t nsec;
	int failed;
};

struct sf_section {
	uint32_t tag;
	const uint8_t *data;
	uint64_t len;
};

struct sf_file {
	uint16_t kind;
	uint32_t nsec;
	struct sf_section sec[SF_MAX_SECTIONS];
};

void sf_writer_init(struct sf_writer *w, uint16_t kind);
void sf_add(struct sf_writer *w, uint32_t tag, const void *data, size_t len);
/* Returns the finished buffer (free() it) or NULL with *err set. */
uint8_t *sf_finish(struct sf_writer *w, size_t *len, sl_error_t *err);

/* Validates structure (magic, version, kind, bounds, no duplicate tags, only
 * known tags for the kind); sections point into buf. what names the file. */
int sf_parse(const uint8_t *buf, size_t len, uint16_t kind, const char *what,
	     struct sf_file *out, sl_error_t *err);
/* Finds a section that must exist with exactly `len` bytes (0: any size). */
int sf_get(const struct sf_file *f, uint32_t tag, size_t len, const char *what,
	   const struct sf_section **out, sl_error_t *err);

#endif
